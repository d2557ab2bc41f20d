-- peek: a dry run of every check; nothing is written. Redis Cluster runs
-- all-or-nothing across slots as peek on every slot, then apply (see
-- cluster.rs): a request's keys on different shards cannot share a script.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = reply(run(i, key, false))
end
return out
