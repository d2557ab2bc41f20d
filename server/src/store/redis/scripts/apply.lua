-- apply: every check takes its hits (when its algorithm allows them).
-- A check whose key holds something else (a string, a hash) is answered
-- {-1, message} and the others go on: calls coalesced into one script
-- (batch.rs) must not fail each other.
local out = {}
for i, key in ipairs(KEYS) do
  local ok, allowed, remaining, reset_ms, limit, verdict = pcall(run, i, key, true)
  if ok then
    out[i] = reply(allowed, remaining, reset_ms, limit, verdict)
  else
    out[i] = failed(allowed)
  end
end
return out
