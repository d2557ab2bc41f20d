-- Sliding windows (the weighted two-window estimate): check and take hits.
-- The same arithmetic as `sliding_window` in server/src/limiter/algorithm.rs.
--
-- ARGV[1]      now in ms, or empty for Redis's own TIME (tests pin it)
-- KEYS[i]      state of one limit: a hash {s = current window start (ms),
--              p = previous window's count, c = current window's count}
-- ARGV[3i-1]   hits (0: would one more hit be allowed? nothing is taken)
-- ARGV[3i]     limit: hits per period
-- ARGV[3i+1]   period in milliseconds
-- returns      per key {allowed (1/0), remaining, microseconds until the window ends}
--
-- Time is Redis's own (TIME) in production, so server instances with
-- skewed clocks agree.
-- Rejected hits are not counted. The key lives until the end of the next window.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local out = {}
for i, key in ipairs(KEYS) do
  local hits = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local period = tonumber(ARGV[3 * i + 1])
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
  redis.call('HSET', key, 's', string.format('%.17g', start), 'p', previous, 'c', current)
  redis.call('PEXPIRE', key, math.ceil(start + 2 * period - now))
  out[i] = {allowed and 1 or 0, math.floor(math.max(limit - taken, 0)), math.floor((start + period - now) * 1000)}
end
return out
