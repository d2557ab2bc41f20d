//! Redis Cluster: a request's checks, grouped by hash slot.
//!
//! A Lua script may only touch keys of one slot, and a request's descriptors
//! hash to different slots (that is the point: load spreads over shards). So
//! the checks are grouped by slot and each group is one `EVALSHA`, all
//! groups sent at once on the cluster connection (pipelined per node): a
//! request costs one round trip in time, one command per slot it touches.
//!
//! Which keys share a slot: every key of one descriptor, the limits of its
//! `rate_limits` and its successive windows, carry the descriptor as a hash
//! tag (`{edge_user_alice}_1700000040`, see [`crate::store::key`]). One
//! descriptor's limits are therefore always one script, and all-or-nothing
//! over them is atomic. Different descriptors, and different values of one
//! descriptor, land anywhere: a hot domain spreads over every shard.
//!
//! All-or-nothing over checks in different slots cannot be one script. It
//! runs in two steps instead: `peek` on every slot (nothing written), then
//! `apply` with the hits if no vetoing check would be rejected, or with the
//! hits of the rejected checks only. Another instance can take budget
//! between the steps, so across slots the group is best effort: each counter
//! is still exact, but a check that passed the peek can be rejected in the
//! apply while the others take their hits.
//!
//! Failures: if one slot's call fails, the request fails (`UNAVAILABLE`),
//! though the other slots may already have counted it. And redis-rs retries
//! a command after a timeout or a dropped connection (while a primary fails
//! over), so a hit can then be counted twice: counts are exact while the
//! cluster is healthy and may over-count (never under-count) during a
//! failover. `redis_command_timeout` bounds the whole call, retries included.

use redis::cluster_routing::Slot;

use crate::store::Check;

/// One script call: the indexes (into the request's checks) of one slot's keys.
pub(super) type Group = Vec<usize>;

/// The checks' indexes grouped by slot, in order of first appearance.
pub(super) fn by_slot(checks: &[Check]) -> Vec<Group> {
    let mut slots: Vec<(Slot, Group)> = Vec::with_capacity(checks.len());
    for (i, check) in checks.iter().enumerate() {
        let slot = Slot::for_key(check.key.as_bytes());
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(i),
            None => slots.push((slot, vec![i])),
        }
    }
    slots.into_iter().map(|(_, group)| group).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Limit;

    fn check(key: &str) -> Check {
        Check {
            key: key.to_owned(),
            hits: 1,
            limit: Limit::FixedWindow {
                limit: 1,
                period_ms: 1_000.0,
                reset_after: Duration::ZERO,
            },
            veto: true,
        }
    }

    #[test]
    fn one_descriptors_keys_share_a_group() {
        let checks = [
            check("{edge_user_alice}_1700000040"),
            check("{edge_user_bob}_1700000040"),
            check("{edge_user_alice}_1700000000_1"),
            check("{edge_user_alice}_tb2"),
        ];
        let groups = by_slot(&checks);
        assert_eq!(groups, vec![vec![0, 2, 3], vec![1]]);
    }

    #[test]
    fn slots_are_redis_slots() {
        // Known values from the Redis Cluster specification and redis-cli.
        let slot = |key: &str| Slot::for_key(key.as_bytes());
        assert_eq!(Some(slot("foo")), Slot::new(12182));
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(Some(slot("123456789")), Slot::new(0x31C3));
    }
}
