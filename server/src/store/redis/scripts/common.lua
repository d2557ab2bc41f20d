-- The part both drivers share: time, argument layout, dispatch.
--
-- ARGV[1]        now in ms, or empty for Redis's own TIME (production; tests pin it)
-- per key i, 8 arguments from ARGV[2 + 8(i-1)]:
--   algorithm    'f' fixed window, 's' sliding window, 't' token bucket, 'g' GCRA,
--                'c' capacity
--   hits         to take (0: check only)
--   limit        hits per period (capacity: the total)
--   period       ms
--   burst        token bucket and GCRA; capacity: the most clients tracked
--   ttl          fixed window: key TTL in seconds (window + jitter); capacity: the client
--   reset_ms     fixed window: time until the window ends; capacity: its
--                params (see capacity.lua)
--   veto         all_or_nothing: '1' if this check's rejection stops the others
-- returns        per key {allowed (1/0), remaining, microseconds until reset},
--                and for capacity also {..., limit, verdict}
--
-- Every key a call touches is in KEYS, so on Redis Cluster one call's keys
-- must share a slot.
-- Scripts that read TIME and then write must replicate their effects, not
-- themselves: the default from Redis 7 on, and opted into here for 5 and 6.
if redis.replicate_commands then
  redis.replicate_commands()
end


local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function run(i, key, take, hits)
  local b = 2 + 8 * (i - 1)
  local algorithm = ARGV[b]
  hits = hits or ARGV[b + 1]
  local limit, period, burst = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if algorithm == 'f' then
    return fixed_window(key, hits, limit, ARGV[b + 5], tonumber(ARGV[b + 6]), take)
  elseif algorithm == 's' then
    return sliding_window(key, now, tonumber(hits), limit, period, take)
  elseif algorithm == 't' then
    return token_bucket(key, now, tonumber(hits), limit, period, burst, take)
  elseif algorithm == 'g' then
    return gcra(key, now, tonumber(hits), limit, period, burst, take)
  elseif algorithm == 'c' then
    return capacity(key, now, tonumber(hits), limit, period, burst, ARGV[b + 5], ARGV[b + 6], take)
  end
  error('unknown algorithm ' .. tostring(algorithm))
end

local function vetoes(i)
  return ARGV[2 + 8 * (i - 1) + 7] == '1'
end

local function reply(allowed, remaining, reset_ms, limit, verdict)
  local out = {allowed and 1 or 0, remaining, math.floor(math.max(reset_ms, 0) * 1000)}
  if verdict ~= nil then
    out[4], out[5] = limit, verdict
  end
  return out
end

-- The reply for a check that raised an error (its key holds something its
-- algorithm cannot use): {-1, message}. The call fails, the store is fine.
local function failed(e)
  return {-1, type(e) == 'table' and (e.err or 'error') or tostring(e)}
end

-- Runs check i of 1..n on key_of(i), writing when `take`: each check's own
-- reply, a failed one as {-1, message} so that checks coalesced into one
-- script (batch.rs) do not fail each other.
local function run_each(n, key_of, take)
  local out = {}
  for i = 1, n do
    local ok, allowed, remaining, reset_ms, limit, verdict = pcall(run, i, key_of(i), take)
    if ok then
      out[i] = reply(allowed, remaining, reset_ms, limit, verdict)
    else
      out[i] = failed(allowed)
    end
  end
  return out
end
