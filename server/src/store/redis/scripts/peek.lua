-- peek: a dry run of every check; nothing is written. Redis Cluster runs
-- all-or-nothing across slots as peek on every slot, then apply (see
-- cluster.rs): a request's keys on different shards cannot share a script.
-- A check whose key holds something else is answered {-1, message}.
local out = {}
for i, key in ipairs(KEYS) do
  local ok, allowed, remaining, reset_ms, limit, verdict = pcall(run, i, key, false)
  if ok then
    out[i] = reply(allowed, remaining, reset_ms, limit, verdict)
  else
    out[i] = failed(allowed)
  end
end
return out
