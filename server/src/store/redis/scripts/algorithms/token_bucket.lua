-- token_bucket(key, now, hits, limit, period, burst, take) -> allowed, remaining, reset_ms
--
-- A bucket of `burst` tokens refilled at `limit` per `period` ms; the same
-- arithmetic as `token_bucket` in server/src/model/algorithm.rs.
-- key     a hash {t = tokens, a = when counted (ms)}; no key means a full bucket
-- hits    0: would one more hit be allowed? nothing is taken
-- take    false: only compute, write nothing
-- reset   allowed: until the bucket is full again; rejected: until these hits fit.
-- A request takes all its hits or none. The key expires when the bucket would
-- be full again, which is the same as absent.
local function token_bucket(key, now, hits, limit, period, burst, take)
  if limit == 0 or burst == 0 then
    return false, 0, period
  end
  local per_ms = limit / period
  local state = redis.call('HMGET', key, 't', 'a')
  local tokens = burst
  if state[1] then
    tokens = math.min(tonumber(state[1]) + math.max(now - tonumber(state[2]), 0) * per_ms, burst)
  end
  local wanted = math.max(hits, 1)
  -- A token short by rounding alone (what 1 us of refill brings) still counts.
  local slack = math.max(1e-9, 1e-3 * per_ms)
  if tokens + slack < wanted then
    -- More hits than the bucket holds never fit: report when it is full.
    return false, math.floor(tokens + 1e-9), math.max(math.min(wanted, burst) - tokens, 0) / per_ms
  end
  local left = math.max(tokens - hits, 0)
  local reset = (burst - left) / per_ms
  if take and hits > 0 then
    redis.call('HSET', key, 't', string.format('%.17g', left), 'a', string.format('%.17g', now))
    redis.call('PEXPIRE', key, math.min(math.max(math.ceil(reset), 1), 1e15))
  end
  return true, math.floor(left + 1e-9), reset
end
