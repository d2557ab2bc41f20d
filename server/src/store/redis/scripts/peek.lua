-- peek: a dry run of every check; nothing is written. Redis Cluster runs
-- all-or-nothing across slots as peek on every slot, then apply (see
-- cluster.rs): a request's keys on different shards cannot share a script.
-- A check whose key holds something else is answered {-1, message}.
return run_each(#KEYS, function(i) return KEYS[i] end, false)
