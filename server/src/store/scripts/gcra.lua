-- GCRA (a leaky bucket as a meter): admit hits while the theoretical arrival
-- time (TAT) stays within the burst tolerance. The same arithmetic as `gcra`
-- in server/src/limiter/algorithm.rs.
--
-- ARGV[1]      now in ms, or empty for Redis's own TIME (tests pin it)
-- KEYS[i]      the TAT of one limit, in ms (no key: now)
-- ARGV[4i-2]   hits (0: would one more hit be allowed? nothing is taken)
-- ARGV[4i-1]   limit: hits per period (emission interval T = period / limit)
-- ARGV[4i]     period in milliseconds
-- ARGV[4i+1]   burst: hits allowed at once (tolerance = burst * T)
-- returns      per key {allowed (1/0), hits still allowed now, microseconds until
--              the TAT is reached (allowed) or until these hits fit (rejected)}
--
-- Time is Redis's own (TIME) in production, so server instances with
-- skewed clocks agree.
-- A rejection does not move the TAT; the key expires when the TAT passes.
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
  local burst = tonumber(ARGV[4 * i + 1])
  if limit == 0 or burst == 0 then
    out[i] = {0, 0, math.floor(period * 1000)}
  else
    local interval = period / limit
    local tolerance = interval * burst
    local tat = now
    local stored = tonumber(redis.call('GET', key))
    if stored ~= nil then
      tat = math.max(stored, now)
    end
    local wanted = math.max(hits, 1)
    local allowed = tat + wanted * interval - now <= tolerance
    local new_tat, reset = tat, tat + wanted * interval - tolerance - now
    if allowed then
      new_tat = tat + hits * interval
      reset = new_tat - now
      if hits > 0 then
        redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.max(math.ceil(reset), 1))
      end
    end
    out[i] = {allowed and 1 or 0, math.floor(math.max((now + tolerance - new_tat) / interval, 0)), math.floor(reset * 1000)}
  end
end
return out
