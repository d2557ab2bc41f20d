-- gcra(key, now, hits, limit, period, burst, take) -> allowed, remaining, reset_ms
--
-- GCRA (a leaky bucket as a meter), emission interval T = period / limit and
-- tolerance burst * T; the same arithmetic as `gcra` in
-- server/src/model/algorithm.rs.
-- key     the theoretical arrival time (TAT) in ms; no key means now
-- hits    0: would one more hit be allowed? nothing is taken
-- take    false: only compute, write nothing
-- reset   allowed: until the TAT is reached; rejected: exactly when these hits fit.
-- A rejection does not move the TAT. The key expires when the TAT passes.
local function gcra(key, now, hits, limit, period, burst, take)
  if limit == 0 or burst == 0 then
    return false, 0, period
  end
  local interval = period / limit
  local tolerance = interval * burst
  -- Time ahead of now: `tat - now` is exact, `tat + x - now` rounds at the
  -- epoch's magnitude; a hit due within 1 us (the TAT's own rounding) is due.
  local ahead = 0
  local stored = tonumber(redis.call('GET', key))
  if stored ~= nil then
    ahead = math.max(stored - now, 0)
  end
  local wanted = math.max(hits, 1)
  if ahead + wanted * interval > tolerance + 1e-3 then
    -- More hits than the burst never fit: report when the meter is empty.
    local reset = math.max(ahead + math.min(wanted, burst) * interval - tolerance, 0)
    return false, math.floor(math.max((tolerance - ahead) / interval + 1e-9, 0)), reset
  end
  local new_ahead = ahead + hits * interval
  if take and hits > 0 then
    redis.call('SET', key, string.format('%.17g', now + new_ahead), 'PX', math.min(math.max(math.ceil(new_ahead), 1), 1e15))
  end
  return true, math.floor(math.max((tolerance - new_ahead) / interval + 1e-9, 0)), new_ahead
end
