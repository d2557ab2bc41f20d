-- capacity(key, now, hits, total, period, max_clients, client, params, take)
--   -> allowed, remaining, reset_ms, limit, verdict
--
-- A capacity rule's fair shares and priority classes; the same arithmetic,
-- in the same order, as `decide` in server/src/model/capacity.rs (see
-- there for the rules).
-- key     one hash per rule, holding one window and what the previous left:
--           s          the window's start (ms)
--           t, G       hits admitted; of those, within their clients' shares
--           W, pW      weights of the clients seen in this window; in the previous
--           n          clients seen in this window
--           a<k> d<k>  per class k (0: the most important): admitted, asked for
--           pd<k>      per class: asked for in the previous window
--           u:<c> g:<c> per client: admitted; of those, within its share
--         A new window replaces the hash (DEL, then the carried-over fields):
--         O(clients of the ended window) once per window, O(classes) per call.
-- params  "<weight> <class> <max_share of class 0> <of class 1> ..."
-- hits    0: would one hit be admitted? nothing is written
-- take    false: only compute, write nothing
-- verdict 0 guaranteed, 1 borrowed, 2 over the total, 3 over the class cap,
--         4 over the share; limit: the share, or the bound that rejected.
-- The key lives until the end of the next window.
local function capacity(key, now, hits, total, period, max_clients, client, params, take)
  local p = {}
  for x in string.gmatch(params, '%S+') do
    p[#p + 1] = tonumber(x)
  end
  local weight, class = p[1], p[2]
  local shares = {}
  for i = 3, #p do
    shares[#shares + 1] = p[i]
  end
  local classes = math.max(#shares, 1)
  if class > classes - 1 then
    class = classes - 1
  end
  take = take and hits > 0
  hits = math.max(hits, 1)
  if not (weight > 0 and weight < math.huge) then
    weight = 1
  end

  local start = math.floor(now / period) * period
  local fields = {'s', 't', 'G', 'W', 'pW', 'n'}
  for k = 0, classes - 1 do
    fields[#fields + 1] = 'a' .. k
    fields[#fields + 1] = 'd' .. k
    fields[#fields + 1] = 'pd' .. k
  end
  local v = redis.call('HMGET', key, unpack(fields))
  local num = function(x) return tonumber(x) or 0 end
  local stored = tonumber(v[1])
  local t, G, W, pW, n = num(v[2]), num(v[3]), num(v[4]), num(v[5]), num(v[6])
  local a, d, pd = {}, {}, {}
  for k = 0, classes - 1 do
    a[k], d[k], pd[k] = num(v[7 + 3 * k]), num(v[8 + 3 * k]), num(v[9 + 3 * k])
  end
  -- A later window (a clock that stepped back) is kept as the current one.
  local rolled = stored == nil or stored < start
  if rolled then
    local consecutive = stored ~= nil and stored + period == start
    for k = 0, classes - 1 do
      pd[k] = consecutive and d[k] or 0
      a[k], d[k] = 0, 0
    end
    pW = consecutive and W or 0
    t, G, W, n = 0, 0, 0, 0
    stored = start
  end

  local used, guaranteed, seen = 0, 0, false
  local function load(name)
    if rolled then
      return 0, 0, false
    end
    local c = redis.call('HMGET', key, 'u:' .. name, 'g:' .. name)
    return num(c[1]), num(c[2]), c[1] ~= false
  end
  used, guaranteed, seen = load(client)
  if not seen and n >= max_clients then
    client = '\0other'
    used, guaranteed, seen = load(client)
  end
  local weight_now = W
  if not seen then
    weight_now = W + weight
  end
  local active = math.max(weight_now, pW)
  local after = t + hits

  local reserved = 0
  for j = 0, class - 1 do
    reserved = reserved + math.max(pd[j] - a[j], 0)
  end
  reserved = math.min(reserved, total)
  local max_share = shares[class + 1] or 1
  local class_cap = math.max(max_share * total - reserved, 0)
  local share = total * weight / active
  local held = math.max((total - share) - (G - guaranteed), 0)

  local verdict
  if after > total then
    verdict = 2
  elseif after > class_cap then
    verdict = 3
  elseif used + hits <= share then
    verdict = 0
  elseif after + held > class_cap then
    verdict = 4
  else
    verdict = 1
  end
  local limit
  if verdict == 2 then
    limit = total
  elseif verdict == 3 then
    limit = math.floor(class_cap)
  else
    limit = math.floor(share)
  end
  local admitted = verdict < 2
  local used_after, total_after = used, t
  if admitted and take then
    used_after, total_after = used + hits, after
  end
  local remaining = 0
  if admitted then
    local room = math.max(class_cap - total_after, 0)
    local own = math.max(share - used_after, 0)
    local borrow = math.max(room - held, 0)
    remaining = math.floor(math.min(math.max(own, borrow), room))
  end

  if take then
    if rolled then
      redis.call('DEL', key)
    end
    -- Demand counts every ask: it saturates like a fixed-window count.
    d[class] = math.min(d[class] + hits, COUNT_MAX)
    if not seen then
      W = weight_now
      n = n + 1
    end
    if admitted then
      t = after
      a[class] = a[class] + hits
      used = used + hits
      if verdict == 0 then
        guaranteed = guaranteed + hits
        G = G + hits
      end
    end
    -- What this call changed; and on a new window, what it carries over.
    local set = {
      't', t, 'G', G, 'n', n, 'W', string.format('%.17g', W),
      'u:' .. client, used, 'g:' .. client, guaranteed,
      'a' .. class, a[class], 'd' .. class, d[class],
    }
    if rolled then
      set[#set + 1] = 's'
      set[#set + 1] = string.format('%.17g', stored)
      set[#set + 1] = 'pW'
      set[#set + 1] = string.format('%.17g', pW)
      for k = 0, classes - 1 do
        set[#set + 1] = 'pd' .. k
        set[#set + 1] = pd[k]
      end
    end
    redis.call('HSET', key, unpack(set))
    redis.call('PEXPIRE', key, math.min(math.ceil(stored + 2 * period - now), 1e15))
  end
  return admitted, remaining, start + period - now, limit, verdict
end
