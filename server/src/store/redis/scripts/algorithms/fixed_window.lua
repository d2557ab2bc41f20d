-- fixed_window(key, hits, limit, ttl, reset_ms, take) -> allowed, remaining, reset_ms
--
-- The reference's fixed window; `key` carries the window start.
-- hits      the ARGV string (passed as is to INCRBY, so up to 2^53 stays exact)
-- ttl       seconds: the window plus jitter, set when the key is created (or
--           when another writer left it without one)
-- reset_ms  time until the window ends, computed by the caller's clock
-- take      false: only compute (count + hits), write nothing
-- Counts every taken hit, allowed or not, as the reference does.
local function fixed_window(key, hits, limit, ttl, reset_ms, take)
  local n = tonumber(hits)
  local count
  if take and n > 0 then
    count = redis.call('INCRBY', key, hits)
    if count == n or redis.call('TTL', key) == -1 then
      redis.call('EXPIRE', key, ttl)
    end
  else
    local value = redis.call('GET', key)
    count = tonumber(value or '0')
    if count == nil then
      error('counter ' .. key .. ' does not hold an integer')
    end
    count = count + n
  end
  return count <= limit, math.max(limit - count, 0), reset_ms
end
