-- capacity(key, now, hits, total, period, max_clients, client, params, take)
--   -> allowed, remaining, reset_ms, limit, verdict
--
-- A capacity rule's guarantees and priority classes; the same arithmetic,
-- in the same order, as `decide` in server/src/model/capacity.rs (see
-- there for the rules).
-- key     one hash per rule, holding one window and what the previous left:
--           s          the window's start (ms)
--           t, G       hits admitted; of those, within their clients' guarantees
--           W, pW      weights of the clients seen in this window; in the previous
--           E          guaranteed hits the previous window's clients are expected to ask for
--           X          guaranteed hits admitted beyond their clients' own expectations
--           f          how far into the window (0 to 1) its first counted call came
--           n          clients seen in this window
--           b<k> q<k>  per class k (0: the most important): hits admitted and
--                      asked for above their clients' guarantees
--           r<k>       per class: the previous window's priority demand that
--                      could have been admitted
--           u:<c> g:<c> d:<c> w:<c> k:<c>
--                      per client: admitted; of those, within its guarantee;
--                      asked for; its weight; the class of its last call
--           e:<c>      per client of the previous window: the guaranteed hits
--                      it is expected to ask for (its part of E)
--         A new window replaces the hash (HGETALL, DEL, then the carried-over
--         fields): O(clients of the ended window) once per window,
--         O(classes) per call.
-- params  "<weight> <class> <guaranteed share> <max_share of class 0> ..."
-- hits    0: would one hit be admitted? nothing is written
-- take    false: only compute, write nothing
-- verdict 0 guaranteed, 1 borrowed, 2 over the total, 3 over the class cap,
--         4 over the guarantee; limit: the guarantee, or the bound that rejected.
-- The key lives until the end of the next window.

-- What an ended window (its fields `old`, as HGETALL gives them) leaves the
-- next (`expected_next` in Rust): the guaranteed hits its clients are
-- expected to ask for, per client min(⌊guarantee⌋, ⌊demand × scale⌋ +
-- ⌊guarantee / 10⌋) at its final weight W (⌊guarantee⌋ if `partial`: less
-- than half the window was seen); per class, the guaranteed
-- hits admitted above those final guarantees (a client's, in the class of
-- its last call); and per client, its own expected hits.
local function capacity_expected(old, pool, W, scale, partial, classes)
  local over, each = {}, {}
  for k = 0, classes - 1 do
    over[k] = 0
  end
  if not (W > 0) then
    return 0, over, each
  end
  local demand, weight, class, guaranteed = {}, {}, {}, {}
  for i = 1, #old, 2 do
    local f, v = old[i], old[i + 1]
    local p, c = string.sub(f, 1, 2), string.sub(f, 3)
    if p == 'd:' then
      demand[c] = tonumber(v)
    elseif p == 'w:' then
      weight[c] = tonumber(v)
    elseif p == 'k:' then
      class[c] = tonumber(v)
    elseif p == 'g:' then
      guaranteed[c] = tonumber(v)
    end
  end
  local expected = 0
  for c, d in pairs(demand) do
    local guarantee = pool * (weight[c] or 1) / W
    local whole = math.floor(guarantee)
    local asked = math.min(math.floor(d * scale), COUNT_MAX)
    local expects = whole
    if not partial then
      expects = math.min(whole, asked + math.floor(guarantee / 10))
    end
    expected = expected + expects
    each[c] = expects
    local k = math.min(class[c] or 0, classes - 1)
    over[k] = over[k] + math.max((guaranteed[c] or 0) - whole, 0)
  end
  return expected, over, each
end

local function capacity(key, now, hits, total, period, max_clients, client, params, take)
  local p = {}
  for x in string.gmatch(params, '%S+') do
    p[#p + 1] = tonumber(x)
  end
  local weight, class, gshare = p[1], p[2], p[3]
  local shares = {}
  for i = 4, #p do
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
  local pool = gshare * total

  local start = math.floor(now / period) * period
  local fields = {'s', 't', 'G', 'W', 'pW', 'E', 'n', 'f', 'X'}
  for k = 0, classes - 1 do
    fields[#fields + 1] = 'b' .. k
    fields[#fields + 1] = 'q' .. k
    fields[#fields + 1] = 'r' .. k
  end
  local v = redis.call('HMGET', key, unpack(fields))
  local num = function(x) return tonumber(x) or 0 end
  local stored = tonumber(v[1])
  local t, G, W, pW, E, n = num(v[2]), num(v[3]), num(v[4]), num(v[5]), num(v[6]), num(v[7])
  local first, X = num(v[8]), num(v[9])
  local b, q, r = {}, {}, {}
  for k = 0, classes - 1 do
    b[k], q[k], r[k] = num(v[10 + 3 * k]), num(v[11 + 3 * k]), num(v[12 + 3 * k])
  end
  -- Per client of the previous window, its expected hits: read from the
  -- hash, or on a new window computed below.
  local each = nil
  -- A later window (a clock that stepped back) is kept as the current one.
  local rolled = stored == nil or stored < start
  if rolled then
    local consecutive = stored ~= nil and stored + period == start
    if consecutive then
      local scale, partial = 1, false
      if pW <= 0 then
        scale, partial = 1 / (1 - math.min(first, 0.5)), first > 0.5
      end
      local over
      E, over, each = capacity_expected(redis.call('HGETALL', key), pool, W, scale, partial, classes)
      local room = math.max(total - E, 0)
      for k = 0, classes - 1 do
        r[k] = math.min(math.floor(q[k] * scale) + over[k], room)
        room = room - r[k]
      end
      pW = W
    else
      E, pW, each = 0, 0, {}
      for k = 0, classes - 1 do
        r[k] = 0
      end
    end
    for k = 0, classes - 1 do
      b[k], q[k] = 0, 0
    end
    t, G, W, n, X = 0, 0, 0, 0, 0
    stored = start
  end

  -- A client's use of the window, and its expected hits (nil: the previous
  -- window did not see it).
  local used, guaranteed, demand, seen, expects = 0, 0, 0, false, nil
  local function load(name)
    if rolled then
      return 0, 0, 0, false, each[name]
    end
    local c = redis.call('HMGET', key, 'u:' .. name, 'g:' .. name, 'd:' .. name, 'e:' .. name)
    return num(c[1]), num(c[2]), num(c[3]), c[1] ~= false, tonumber(c[4])
  end
  used, guaranteed, demand, seen, expects = load(client)
  if not seen and n >= max_clients then
    client = '\0other'
    used, guaranteed, demand, seen, expects = load(client)
  end
  -- Of this call's hits, if guaranteed, those within the client's expectation.
  local within = hits
  if expects ~= nil then
    within = math.min(hits, math.max(expects - guaranteed, 0))
  end
  local weight_now = W
  if not seen then
    weight_now = W + weight
  end
  local active = math.max(weight_now, pW)
  local after = t + hits

  local guarantee = pool * weight / active
  local eligible = guaranteed + hits <= guarantee
  local class_cap
  if pW <= 0 then
    class_cap = (shares[class + 1] or 1) * total
  else
    local reserved = 0
    for j = 0, class - 1 do
      reserved = reserved + math.max(r[j] - b[j], 0)
    end
    class_cap = total - math.min(reserved, total)
  end
  -- The guaranteed hits held back from the priority part (`held` in Rust):
  -- the smaller of the unused guarantees and what is expected and not yet
  -- admitted within the clients' expectations.
  local unused, left = math.max(pool - G, 0), math.huge
  if pW > 0 then
    local expected = E + pool * math.max(weight_now - pW, 0) / active
    left = math.max(expected - (G - X), 0)
  end
  local held = math.min(unused, left)
  -- A guaranteed call's hits beyond its client's expectation must leave
  -- what is held for the others: what would be held after it.
  local held_if_guaranteed = math.min(math.max(unused - hits, 0), math.max(left - within, 0))

  local verdict
  if after > total then
    verdict = 2
  elseif eligible and (within == hits or after + held_if_guaranteed <= total) then
    verdict = 0
  elseif eligible then
    -- Its demand rose past its expectation, into the others' part.
    verdict = 4
  elseif after > class_cap then
    verdict = 3
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
    limit = math.floor(guarantee)
  end
  local admitted = verdict < 2
  local remaining = 0
  if admitted then
    local mine, total_after, held_after = guaranteed, t, held
    if take then
      total_after = after
      if verdict == 0 then
        mine, held_after = guaranteed + hits, held_if_guaranteed
      end
    end
    local room = math.max(total - total_after, 0)
    local own = math.max(guarantee - mine, 0)
    if expects ~= nil then
      -- Past its expectation, only what the others' part leaves.
      own = math.min(own, math.max(expects - mine, 0) + math.max(room - held_after, 0))
    end
    local borrow = math.max(class_cap - total_after - held_after, 0)
    remaining = math.floor(math.min(math.max(own, borrow), room))
  end

  if take then
    if rolled then
      redis.call('DEL', key)
      -- Each client's expected hits, a bounded number of fields per HSET.
      local batch = {}
      for c, e in pairs(each) do
        batch[#batch + 1] = 'e:' .. c
        batch[#batch + 1] = e
        if #batch >= 512 then
          redis.call('HSET', key, unpack(batch))
          batch = {}
        end
      end
      if #batch > 0 then
        redis.call('HSET', key, unpack(batch))
      end
    end
    -- Demand counts every ask: it saturates like a fixed-window count.
    if not eligible then
      q[class] = math.min(q[class] + hits, COUNT_MAX)
    end
    demand = math.min(demand + hits, COUNT_MAX)
    if n == 0 then
      -- How far into the window its first counted call came (0 to 1).
      local elapsed = (now - stored) / period
      if not (elapsed >= 0) then
        elapsed = 0
      elseif elapsed > 1 then
        elapsed = 1
      end
      first = elapsed
    end
    if not seen then
      W = weight_now
      n = n + 1
    end
    if admitted then
      t = after
      used = used + hits
      if verdict == 0 then
        guaranteed = guaranteed + hits
        G = G + hits
        X = X + hits - within
      else
        b[class] = b[class] + hits
      end
    end
    -- What this call changed; and on a new window, what it carries over.
    local set = {
      't', t, 'G', G, 'X', X, 'n', n, 'W', string.format('%.17g', W), 'f', string.format('%.17g', first),
      'u:' .. client, used, 'g:' .. client, guaranteed, 'd:' .. client, demand,
      'k:' .. client, class, 'b' .. class, b[class], 'q' .. class, q[class],
    }
    if not seen then
      set[#set + 1] = 'w:' .. client
      set[#set + 1] = string.format('%.17g', weight)
    end
    if rolled then
      set[#set + 1] = 's'
      set[#set + 1] = string.format('%.17g', stored)
      set[#set + 1] = 'pW'
      set[#set + 1] = string.format('%.17g', pW)
      set[#set + 1] = 'E'
      set[#set + 1] = E
      for k = 0, classes - 1 do
        set[#set + 1] = 'r' .. k
        set[#set + 1] = r[k]
      end
    end
    redis.call('HSET', key, unpack(set))
    redis.call('PEXPIRE', key, math.min(math.ceil(stored + 2 * period - now), 1e15))
  end
  return admitted, remaining, start + period - now, limit, verdict
end
