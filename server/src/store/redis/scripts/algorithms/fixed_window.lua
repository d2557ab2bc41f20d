-- fixed_window(key, hits, limit, ttl, reset_ms, take) -> allowed, remaining, reset_ms
--
-- The reference's fixed window; `key` carries the window start.
-- hits      the ARGV string (passed as is to INCRBY, so up to 2^53 stays exact)
-- ttl       seconds: the window plus jitter, set when the key is created (or
--           when another writer left it without one)
-- reset_ms  time until the window ends, computed by the caller's clock
-- take      false: only compute (count + hits), write nothing
-- Counts every taken hit, allowed or not, as the reference does. A count
-- saturates at COUNT_MAX (2^53 - 1, exact in Lua's doubles and in JSON; the
-- memory store's MAX_COUNT): past it, the key is set to COUNT_MAX with the
-- TTL it had, so INCRBY never overflows. A key holding anything INCRBY
-- refuses to add to (`1.5`, `abc`) raises an error: its check fails, no other.

-- Shared by every algorithm (this file comes first in each driver).
local COUNT_MAX = 9007199254740991

-- What INCRBY would make of a stored value: 0 when absent, the count
-- (at most COUNT_MAX) when it is a decimal integer, else an error.
local function stored_count(key, value)
  if not value then
    return 0
  end
  if value ~= '0' and not string.match(value, '^-?[1-9]%d*$') then
    error('counter ' .. key .. ' holds a value that is not an integer')
  end
  local n = tonumber(value)
  if n < -COUNT_MAX then
    error('counter ' .. key .. ' holds a value that is not an integer in range')
  end
  return math.min(n, COUNT_MAX)
end

local function fixed_window(key, hits, limit, ttl, reset_ms, take)
  local n = tonumber(hits)
  local count
  if take and n > 0 then
    local added = redis.pcall('INCRBY', key, hits)
    local created = added == n
    if type(added) == 'number' and added <= COUNT_MAX then
      count = added
    else
      -- Past the ceiling, or refused (past 2^63, or not an integer at all).
      if type(added) ~= 'number' then
        stored_count(key, redis.call('GET', key))
      end
      count = COUNT_MAX
      local pttl = redis.call('PTTL', key)
      if pttl > 0 then
        redis.call('SET', key, '9007199254740991', 'PX', pttl)
      else
        redis.call('SET', key, '9007199254740991')
      end
    end
    if created or redis.call('TTL', key) == -1 then
      redis.call('EXPIRE', key, ttl)
    end
  else
    count = math.min(stored_count(key, redis.call('GET', key)) + n, COUNT_MAX)
  end
  return count <= limit, math.max(limit - count, 0), reset_ms
end
