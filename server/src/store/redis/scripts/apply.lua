-- apply: every check takes its hits (when its algorithm allows them).
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = reply(run(i, key, true))
end
return out
