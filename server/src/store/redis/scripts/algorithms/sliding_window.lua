-- sliding_window(key, now, hits, limit, period, take) -> allowed, remaining, reset_ms
--
-- The weighted two-window estimate; the same arithmetic as `sliding_window`
-- in server/src/model/algorithm.rs.
-- key     a hash {s = current window start (ms), p = previous count, c = current count}
-- hits    0: would one more hit be allowed? nothing is taken
-- take    false: only compute, write nothing
-- Rejected hits are not counted. The key lives until the end of the next window.
local function sliding_window(key, now, hits, limit, period, take)
  local start = math.floor(now / period) * period
  local state = redis.call('HMGET', key, 's', 'p', 'c')
  local stored = tonumber(state[1])
  local previous, current = 0, 0
  if stored == start then
    previous, current = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  elseif stored ~= nil and stored + period == start then
    previous = tonumber(state[3]) or 0
  end
  local estimate = previous * ((period - (now - start)) / period) + current
  local allowed = estimate + math.max(hits, 1) <= limit
  local taken = estimate
  if allowed and hits > 0 then
    taken = estimate + hits
    current = current + hits
  end
  if take then
    redis.call('HSET', key, 's', string.format('%.17g', start), 'p', previous, 'c', current)
    redis.call('PEXPIRE', key, math.min(math.ceil(start + 2 * period - now), 1e15))
  end
  return allowed, math.floor(math.max(limit - taken, 0)), start + period - now
end
