-- Fixed-window counters: add hits to each counter and return the new counts.
--
-- KEYS[i]      counter key (see server/src/store/key.rs)
-- ARGV[2i-1]   hits to add to KEYS[i]; 0 reads the counter without creating it
-- ARGV[2i]     TTL in seconds for KEYS[i]: the window length plus jitter
-- returns      an array: the count of KEYS[i] after the update, in KEYS order
--
-- The TTL is set in the same atomic step that creates the key (the count then
-- equals the hits just added), so no key is ever left without a TTL, and an
-- existing key's TTL is never pushed back. A hits value of 0 never creates a
-- key, so it cannot create one without a TTL either.
local counts = {}
for i, key in ipairs(KEYS) do
  local hits = tonumber(ARGV[2 * i - 1])
  local count
  if hits == 0 then
    count = tonumber(redis.call('GET', key) or '0')
  else
    count = redis.call('INCRBY', key, hits)
    if count == hits then
      redis.call('EXPIRE', key, ARGV[2 * i])
    end
  end
  counts[i] = count
end
return counts
