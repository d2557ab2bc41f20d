-- apply_node: apply.lua for the checks of many slots that one Redis Cluster
-- primary serves (coalescing per node, batch.rs). Needs Redis 7 (the
-- shebang's flag, which the store puts first: allow-cross-slot-keys lets a
-- script touch keys of several slots of its node). Declared keys must share
-- one slot, so KEYS holds only the first check's key (it routes the call,
-- and MOVED/ASK follow it); every check's key comes after the checks'
-- arguments: ARGV[2 + 8n + i] for check i of n.
-- A key the node does not serve (a stale slot map) fails before anything is
-- written for it: that check is answered {-1, message} like any failed
-- check, the others go on, and the store sends it again on its own.
local n = (#ARGV - 1) / 9
return run_each(n, function(i) return ARGV[1 + 8 * n + i] end, true)
