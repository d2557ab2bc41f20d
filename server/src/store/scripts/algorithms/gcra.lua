-- gcra(key, now, hits, limit, period, burst, take) -> allowed, remaining, reset_ms
--
-- GCRA (a leaky bucket as a meter), emission interval T = period / limit and
-- tolerance burst * T; the same arithmetic as `gcra` in
-- server/src/limiter/algorithm.rs.
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
  local tat = now
  local stored = tonumber(redis.call('GET', key))
  if stored ~= nil then
    tat = math.max(stored, now)
  end
  local wanted = math.max(hits, 1)
  if tat + wanted * interval - now > tolerance then
    return false, math.floor(math.max((now + tolerance - tat) / interval, 0)), tat + wanted * interval - tolerance - now
  end
  local new_tat = tat + hits * interval
  if take and hits > 0 then
    redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.max(math.ceil(new_tat - now), 1))
  end
  return true, math.floor(math.max((now + tolerance - new_tat) / interval, 0)), new_tat - now
end
