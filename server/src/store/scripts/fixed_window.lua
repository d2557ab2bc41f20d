-- Fixed-window counters: add hits to each counter and return the new counts.
--
-- KEYS[i]      counter key (see server/src/store/key.rs)
-- ARGV[2i-1]   hits to add to KEYS[i], a decimal integer below 2^53; 0 reads
--              the counter without creating it
-- ARGV[2i]     TTL in seconds for KEYS[i]: the window length plus jitter
-- returns      an array: the count of KEYS[i] after the update, in KEYS order
--
-- The TTL is set in the same atomic step that creates the key (the count then
-- equals the hits just added), so Floodgate never leaves a key without a TTL,
-- and an existing key's TTL is never pushed back. A key that another writer
-- left without a TTL (envoyproxy/ratelimit's non-atomic INCRBY + EXPIRE can,
-- and both may share one Redis during a migration) gets one on its next hit.
-- A hits value of 0 never creates a key.
local counts = {}
for i, key in ipairs(KEYS) do
  local hits = ARGV[2 * i - 1]
  local count
  if hits == '0' then
    local value = redis.call('GET', key)
    count = tonumber(value or '0')
    if count == nil then
      return redis.error_reply('ERR counter ' .. key .. ' does not hold an integer')
    end
  else
    count = redis.call('INCRBY', key, hits)
    if count == tonumber(hits) or redis.call('TTL', key) == -1 then
      redis.call('EXPIRE', key, ARGV[2 * i])
    end
  end
  counts[i] = count
end
return counts
