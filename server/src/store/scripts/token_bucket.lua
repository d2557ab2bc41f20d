-- Token buckets: take hits from each bucket, or reject without taking any.
-- The same arithmetic as `token_bucket` in server/src/limiter/algorithm.rs.
--
-- ARGV[1]      now in ms, or empty for Redis's own TIME (tests pin it)
-- KEYS[i]      state of one bucket: a hash {t = tokens, a = when counted (ms)};
--              no key means a full bucket
-- ARGV[4i-2]   hits (0: would one more hit be allowed? nothing is taken)
-- ARGV[4i-1]   limit: tokens added per period
-- ARGV[4i]     period in milliseconds
-- ARGV[4i+1]   burst: the bucket's size
-- returns      per key {allowed (1/0), tokens left (whole), microseconds until
--              the bucket is full (allowed) or until these hits fit (rejected)}
--
-- Time is Redis's own (TIME) in production, so server instances with
-- skewed clocks agree.
-- The key expires when the bucket would be full again, which is the same as absent.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local out = {}
for i, key in ipairs(KEYS) do
  local hits = tonumber(ARGV[4 * i - 2])
  local limit = tonumber(ARGV[4 * i - 1])
  local period = tonumber(ARGV[4 * i])
  local capacity = tonumber(ARGV[4 * i + 1])
  if limit == 0 or capacity == 0 then
    out[i] = {0, 0, math.floor(period * 1000)}
  else
    local per_ms = limit / period
    local state = redis.call('HMGET', key, 't', 'a')
    local tokens = capacity
    if state[1] then
      tokens = math.min(tonumber(state[1]) + math.max(now - tonumber(state[2]), 0) * per_ms, capacity)
    end
    local wanted = math.max(hits, 1)
    local allowed = tokens >= wanted
    local left, reset = tokens, (wanted - tokens) / per_ms
    if allowed then
      left = tokens - hits
      reset = (capacity - left) / per_ms
      if hits > 0 then
        redis.call('HSET', key, 't', string.format('%.17g', left), 'a', string.format('%.17g', now))
        redis.call('PEXPIRE', key, math.max(math.ceil(reset), 1))
      end
    end
    out[i] = {allowed and 1 or 0, math.floor(left), math.floor(reset * 1000)}
  end
end
return out
