-- RLQS: folds one instance's report into a rule's shared state and returns
-- the instance's share. The same arithmetic, in the same order, as
-- `report` and `split` in server/src/model/quota.rs (read those first).
--
-- KEYS[1]: the state, a hash: `w` window start (ms), `u` requests used in
-- it, and per instance `d:<id>` its demand (requests/s), `t:<id>` the time
-- of its last report (ms).
-- ARGV: instance, allowed, demand, now (ms; 0: Redis's TIME), limit,
-- window (ms), stale (ms), most instances, and the operation: `report`,
-- `peek` (only read the instance's share, as `peek` in the model: count
-- nothing, write nothing) or `leave` (forget the instance; the reply's
-- share is 0).
-- Reply: {used, rate (a string: a double), instances, ms left in window}.
local key = KEYS[1]
local instance = ARGV[1]
local allowed = tonumber(ARGV[2])
local demand = tonumber(ARGV[3])
local now_ms = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local window_ms = math.max(tonumber(ARGV[6]), 1)
local stale_ms = tonumber(ARGV[7])
local max_instances = tonumber(ARGV[8])
local op = ARGV[9]
if op == 'leave' then
  redis.call('HDEL', key, 'd:' .. instance, 't:' .. instance)
  return {0, '0', 0, 0}
end
local peek = op == 'peek'
local max_count = 9007199254740991

if now_ms <= 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local start = math.floor(now_ms / window_ms) * window_ms

local w, used = nil, 0
local demands, seen = {}, {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local field, value = flat[i], flat[i + 1]
  if field == 'w' then
    w = tonumber(value)
  elseif field == 'u' then
    used = tonumber(value)
  else
    local kind, id = string.sub(field, 1, 2), string.sub(field, 3)
    if kind == 'd:' then
      demands[id] = tonumber(value)
    elseif kind == 't:' then
      seen[id] = tonumber(value)
    end
  end
end
if w ~= start then
  used = 0
end
if demand ~= demand or demand < 0 then
  demand = 0
end
if peek then
  if seen[instance] == nil or demands[instance] == nil or seen[instance] < now_ms - stale_ms then
    demands[instance] = demand
    seen[instance] = now_ms
  end
else
  used = math.min(used + allowed, max_count)
  demands[instance] = demand
  seen[instance] = now_ms
end

-- Live instances, in id order (the model's BTreeMap order); past the most
-- instances, the one seen longest ago goes first, ties by least id (as the
-- model).
local horizon = now_ms - stale_ms
local ids = {}
for id, t in pairs(seen) do
  if t >= horizon and demands[id] ~= nil then
    ids[#ids + 1] = id
  end
end
table.sort(ids)
while not peek and #ids > max_instances do
  local oldest = nil
  for i, id in ipairs(ids) do
    if id ~= instance and (oldest == nil or seen[id] < seen[ids[oldest]]) then
      oldest = i
    end
  end
  if oldest == nil then break end
  table.remove(ids, oldest)
end

-- Water-filling: in order of demand (then id), each gets what it asks or
-- an equal part of what is left; what is left over is split equally.
local n = #ids
local order = {}
for i = 1, n do order[i] = i end
table.sort(order, function(a, b)
  local da, db = demands[ids[a]], demands[ids[b]]
  if da ~= db then return da < db end
  return a < b
end)
local left = limit * 1000 / window_ms
local shares = {}
for k, i in ipairs(order) do
  local fair = left / (n - k + 1)
  local share = math.min(math.max(demands[ids[i]], 0), fair)
  shares[i] = share
  left = left - share
end
local rate = 0
for i, id in ipairs(ids) do
  local share = shares[i]
  if left > 0 then share = share + left / n end
  if id == instance then rate = share end
end

local left_ms = math.floor(start + window_ms - now_ms)
if peek then
  return {used, string.format('%.17g', rate), n, left_ms}
end

-- Write the state back, whole, to outlive the window and the stale horizon.
redis.call('DEL', key)
local fields = {'w', start, 'u', used}
for _, id in ipairs(ids) do
  fields[#fields + 1] = 'd:' .. id
  fields[#fields + 1] = string.format('%.17g', demands[id])
  fields[#fields + 1] = 't:' .. id
  fields[#fields + 1] = string.format('%.17g', seen[id])
end
redis.call('HSET', key, unpack(fields))
local ttl = math.max(start + window_ms - now_ms, stale_ms, 1)
redis.call('PEXPIRE', key, math.ceil(ttl))
return {used, string.format('%.17g', rate), n, left_ms}
