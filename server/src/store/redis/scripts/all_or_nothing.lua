-- all_or_nothing: a dry run of every check first. If none that vetoes
-- (see common.lua) would be rejected, all take their hits. Otherwise only the rejected ones are applied (a fixed
-- window still counts them, as the reference's
-- STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT does); the others take nothing and
-- report their state without these hits.
-- A check whose key holds something else fails the dry run: nothing is
-- written, it is answered {-1, message} and the others {-1, ''} (not run).
local dry, all = {}, true
for i, key in ipairs(KEYS) do
  local ok, allowed = pcall(run, i, key, false)
  if not ok then
    local out = {}
    for j = 1, #KEYS do
      out[j] = {-1, ''}
    end
    out[i] = failed(allowed)
    return out
  end
  dry[i] = allowed
  all = all and (allowed or not vetoes(i))
end
local out = {}
for i, key in ipairs(KEYS) do
  if all or not dry[i] then
    out[i] = reply(run(i, key, true))
  else
    local _, remaining, reset_ms, limit, verdict = run(i, key, false, '0')
    out[i] = reply(true, remaining, reset_ms, limit, verdict)
  end
end
return out
