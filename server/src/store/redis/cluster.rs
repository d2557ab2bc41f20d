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
//! Under load, calls whose checks stand alone are coalesced: one script
//! per primary per batch, over the checks of all the slots it serves
//! (`batch.rs`, with the [`SlotOwners`] map). A call's checks on two
//! primaries are then in two scripts, as they are alone.
//!
//! Failures: if one slot's call fails, the request fails (`UNAVAILABLE`),
//! though the other slots may already have counted it. And redis-rs retries
//! a command after a timeout or a dropped connection (while a primary fails
//! over), so a hit can then be counted twice: counts are exact while the
//! cluster is healthy and may over-count (never under-count) during a
//! failover. `redis_command_timeout` bounds the whole call, retries included.

use std::collections::HashMap;

use redis::cluster_routing::Slot;

use crate::store::Check;

/// Which primary serves each slot (as `CLUSTER SLOTS` said when asked), by
/// index: what coalescing groups a batch's checks by, one script per
/// primary (see `batch.rs`). It may be stale: a script that meets a key its
/// node does not serve answers that check with [`NOT_LOCAL`], and the check
/// goes again on its own.
#[derive(Debug)]
pub(super) struct SlotOwners {
    owner: HashMap<Slot, u16>,
}

/// What Redis says when a script touches a key another node serves. It says
/// it before running the command, so that check wrote nothing.
pub(super) const NOT_LOCAL: &str = "non local key";

impl SlotOwners {
    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, ..], ..], ..]`.
    /// `None` when it is not one, or when a slot has no primary.
    pub(super) fn parse(reply: &redis::Value) -> Option<SlotOwners> {
        use redis::Value;
        let int = |v: &Value| match v {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        };
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut nodes: Vec<&[Value]> = Vec::new();
        let mut owner = HashMap::new();
        for range in ranges {
            let Value::Array(range) = range else {
                return None;
            };
            let [start, end, Value::Array(primary), ..] = range.as_slice() else {
                return None;
            };
            let address = primary.get(..2)?;
            let index = match nodes.iter().position(|n| *n == address) {
                Some(i) => i,
                None => {
                    nodes.push(address);
                    nodes.len() - 1
                }
            };
            let index = u16::try_from(index).ok()?;
            for slot in u16::try_from(int(start)?).ok()?..=u16::try_from(int(end)?).ok()? {
                owner.insert(Slot::new(slot)?, index);
            }
        }
        // Every slot served (Slot::new refuses numbers past the last).
        (owner.len() == 16_384).then_some(SlotOwners { owner })
    }

    /// The checks' indexes grouped by the primary that serves their slot,
    /// in order of first appearance.
    pub(super) fn by_node<'c>(&self, checks: impl Iterator<Item = &'c Check>) -> Vec<Group> {
        let mut nodes: Vec<(u16, Group)> = Vec::new();
        for (i, check) in checks.enumerate() {
            let slot = Slot::for_key(check.key.as_bytes());
            let node = self.owner.get(&slot).copied().unwrap_or(u16::MAX);
            match nodes.iter_mut().find(|(n, _)| *n == node) {
                Some((_, group)) => group.push(i),
                None => nodes.push((node, vec![i])),
            }
        }
        nodes.into_iter().map(|(_, group)| group).collect()
    }
}

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

    /// A `CLUSTER SLOTS` reply: `(start, end, primary port)` per range.
    fn cluster_slots(ranges: &[(i64, i64, i64)]) -> redis::Value {
        use redis::Value;
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port)| {
                    let node = Value::Array(vec![
                        Value::BulkString(b"127.0.0.1".to_vec()),
                        Value::Int(port),
                        Value::BulkString(format!("id{port}").into_bytes()),
                    ]);
                    Value::Array(vec![Value::Int(start), Value::Int(end), node])
                })
                .collect(),
        )
    }

    #[test]
    fn checks_group_by_the_primary_that_serves_their_slot() {
        // Two ranges on one primary, as after a resharding.
        let reply = cluster_slots(&[
            (0, 5_000, 7000),
            (5_001, 10_000, 7001),
            (10_001, 16_383, 7000),
        ]);
        let owners = SlotOwners::parse(&reply).unwrap();
        // Slots 12182 ("foo") and 3300 ("b") on 7000, 7365 ("c") on 7001.
        let checks = [check("foo"), check("c"), check("b"), check("{c}x")];
        assert_eq!(owners.by_node(checks.iter()), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn a_slot_map_with_a_hole_or_of_another_shape_is_refused() {
        let hole = cluster_slots(&[(0, 5_000, 7000), (5_002, 16_383, 7001)]);
        assert!(SlotOwners::parse(&hole).is_none());
        let past_the_end = cluster_slots(&[(0, 16_384, 7000)]);
        assert!(SlotOwners::parse(&past_the_end).is_none());
        assert!(SlotOwners::parse(&redis::Value::Int(1)).is_none());
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
