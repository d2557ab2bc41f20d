//! The counter key schema, identical to envoyproxy/ratelimit's so both can
//! share one Redis during a migration:
//!
//! `<prefix><domain>_<key1>_<value1>_<key2>_<value2>_..._<window start, Unix seconds>`
//!
//! e.g. `edge_user_alice_1700000040`, or with prefix `fg:`,
//! `fg:edge_user_alice_1700000040`. The request's values are used, so a
//! key-only rule counts each value separately; a `share_threshold` entry
//! uses its wildcard pattern instead, so all matching values share one counter.
//!
//! Other algorithms, and further limits of one descriptor (`rate_limits`),
//! keep their state under the same prefix with a suffix instead of the window
//! start: `edge_user_alice_tb0` (token bucket), `_gcra0`, `_sw0`, and
//! `edge_user_alice_1700000040_1` for a second fixed window. A capacity
//! rule keeps one window's state (a hash, with what the previous window
//! left) under the entries down to its node: `shop_service_checkout_cap0`.
//!
//! On Redis Cluster the descriptor part is a hash tag, so that all keys of
//! one descriptor share a slot (see `store::redis::cluster`):
//! `fg:{edge_user_alice}_1700000040`, `fg:{edge_user_alice}_tb0`.
//!
//! # Against envoyproxy/ratelimit's fixed window
//!
//! Compared with its `GenerateCacheKey` (src/limiter/cache_key.go) and
//! `fixedRateLimitCacheImpl.DoLimit` (src/redis/fixed_cache_impl.go); the
//! e2e test `from_envoy_ratelimit` plays its Redis commands against ours.
//!
//! - Same: prefix as is, the request's entries in order (a limit only
//!   matches at the descriptor's last entry there, so these are the
//!   matched path), `share_threshold` patterns per entry index, the window
//!   start `now / divider * divider` in local Unix seconds with its
//!   dividers (`Unit::window`), one integer per key that `INCRBY` adds
//!   every taken hit to (refused ones too), over when the count after the
//!   hit is above the limit. SECOND limits use the same key: there is no
//!   per-second key variant, only, with `REDIS_PERSECOND`, another Redis,
//!   which Floodgate does not have (its per-second keys stay in the one
//!   Redis, where envoyproxy/ratelimit keeps them by default).
//! - Different, deliberately and safely: the TTL (window + jitter) is set
//!   once, when a hit creates the key, where the reference runs `EXPIRE`
//!   after every `INCRBY`; both outlive the window the key names, which no
//!   one reads once it ended. Jitter is a hash of the key below
//!   `expiration_jitter_max`, not a random draw. A zero-hit call reads with
//!   `GET` instead of `INCRBY key 0`, so it creates no key. Counts stop at
//!   2^53 - 1. On Redis Cluster the hash tag makes the keys differ, so
//!   counters are not shared there. Further limits and other algorithms
//!   (suffixes above) are extensions the reference never reads.
//! - The format is ambiguous where a key or value contains `_`
//!   (`a_b`=`c` and `a`=`b_c` share a key); it is kept so, for the
//!   reference has the same keys.

use std::fmt::{self, Write};

use crate::model::algorithm::Algorithm;

/// How a key ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySuffix {
    /// The reference's fixed-window key: the window start.
    Window(u64),
    /// A further fixed-window limit of the same descriptor: start and index.
    WindowIndex(u64, usize),
    /// The state of another algorithm, for the limit at this index; the
    /// state lives across windows, so no window start.
    Algorithm(Algorithm, usize),
    /// A capacity rule's window state (one per descriptor node).
    Capacity,
    /// The RLQS state of a bucket's limit at this index
    /// ([`crate::store::quota`]).
    Quota(usize),
}

impl fmt::Display for KeySuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySuffix::Window(start) => write!(f, "{start}"),
            KeySuffix::WindowIndex(start, index) => write!(f, "{start}_{index}"),
            KeySuffix::Algorithm(algorithm, index) => {
                let tag = match algorithm {
                    Algorithm::FixedWindow => "fw",
                    Algorithm::SlidingWindow => "sw",
                    Algorithm::TokenBucket => "tb",
                    Algorithm::Gcra => "gcra",
                };
                write!(f, "{tag}{index}")
            }
            KeySuffix::Capacity => write!(f, "cap0"),
            KeySuffix::Quota(index) => write!(f, "rlqs{index}"),
        }
    }
}

/// Builds counter keys; holds the configured prefix.
#[derive(Clone, Debug, Default)]
pub struct CacheKey {
    prefix: String,
    hash_tag: bool,
}

impl CacheKey {
    /// Keys start with `prefix` (may be empty).
    pub fn new(prefix: impl Into<String>) -> Self {
        CacheKey {
            prefix: prefix.into(),
            hash_tag: false,
        }
    }

    /// Wraps the descriptor part in `{}` (Redis Cluster hash tag).
    pub fn with_hash_tag(mut self, on: bool) -> Self {
        self.hash_tag = on;
        self
    }

    /// The key for `entries` of `domain`, ending with `suffix`.
    pub fn build<'a>(
        &self,
        domain: &str,
        entries: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        suffix: KeySuffix,
    ) -> String {
        // Exact length but for the suffix (24 bytes fit any of them).
        let len = self.prefix.len()
            + domain.len()
            + 1
            + entries
                .clone()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
            + 26;
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        if self.hash_tag {
            key.push('{');
            push_in_tag(&mut key, domain);
            for (k, v) in entries {
                key.push('_');
                push_in_tag(&mut key, k);
                key.push('_');
                push_in_tag(&mut key, v);
            }
            key.push_str("}_");
        } else {
            key.push_str(domain);
            key.push('_');
            for (k, v) in entries {
                key.push_str(k);
                key.push('_');
                key.push_str(v);
                key.push('_');
            }
        }
        // Writing to a String cannot fail.
        let _ = write!(key, "{suffix}");
        key
    }
}

/// Appends `text` inside a hash tag. A `}` from a client's value would end
/// the tag early (and send every value that starts with one to one slot),
/// so it becomes `\)`, and `\` becomes `\\` to keep keys distinct.
fn push_in_tag(key: &mut String, text: &str) {
    if !text.contains(['}', '\\']) {
        key.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '}' => key.push_str("\\)"),
            '\\' => key.push_str("\\\\"),
            c => key.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CacheKey, KeySuffix};

    #[test]
    fn matches_the_reference_format() {
        let keys = CacheKey::default();
        let key = keys.build(
            "domain",
            [("key2", "value2"), ("subkey2", "subvalue2")].into_iter(),
            KeySuffix::Window(1200),
        );
        assert_eq!(key, "domain_key2_value2_subkey2_subvalue2_1200");
    }

    #[test]
    fn prefix_is_prepended_as_is() {
        let key = CacheKey::new("prefix:").build(
            "domain",
            [("key", "value")].into_iter(),
            KeySuffix::Window(1234),
        );
        assert_eq!(key, "prefix:domain_key_value_1234");
    }

    #[test]
    fn cluster_keys_tag_the_descriptor() {
        let keys = CacheKey::new("fg:").with_hash_tag(true);
        let entries = [("user", "alice"), ("path", "/a")];
        let window = keys.build("edge", entries.into_iter(), KeySuffix::Window(60));
        let bucket = keys.build(
            "edge",
            entries.into_iter(),
            KeySuffix::Algorithm(crate::model::algorithm::Algorithm::TokenBucket, 1),
        );
        assert_eq!(window, "fg:{edge_user_alice_path_/a}_60");
        assert_eq!(bucket, "fg:{edge_user_alice_path_/a}_tb1");
        // A client's `}` cannot end the tag early; escaping keeps keys apart.
        let key = |v: &str| keys.build("edge", [("user", v)].into_iter(), KeySuffix::Window(60));
        assert_eq!(key("}x"), "fg:{edge_user_\\)x}_60");
        assert_ne!(key("\\)x"), key("}x"));
    }
}
