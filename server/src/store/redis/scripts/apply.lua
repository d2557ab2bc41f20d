-- apply: every check takes its hits (when its algorithm allows them).
-- A check whose key holds something else (a string, a hash) is answered
-- {-1, message} and the others go on: calls coalesced into one script
-- (batch.rs) must not fail each other.
return run_each(#KEYS, function(i) return KEYS[i] end, true)
