//! The counter key schema, identical to envoyproxy/ratelimit's so both can
//! share one Redis during a migration:
//!
//! `<prefix><domain>_<key1>_<value1>_<key2>_<value2>_..._<window start, Unix seconds>`
//!
//! e.g. `edge_user_alice_1700000040`, or with prefix `fg:`,
//! `fg:edge_user_alice_1700000040`. The request's values are used, so a
//! key-only rule counts each value separately; a `share_threshold` entry
//! uses its wildcard pattern instead, so all matching values share one counter.

use std::fmt::Write;

/// Builds counter keys; holds the configured prefix.
#[derive(Clone, Debug, Default)]
pub struct CacheKey {
    prefix: String,
}

impl CacheKey {
    /// Keys start with `prefix` (may be empty).
    pub fn new(prefix: impl Into<String>) -> Self {
        CacheKey {
            prefix: prefix.into(),
        }
    }

    /// The key for `entries` of `domain` in the window starting at
    /// `window_start` (Unix seconds).
    pub fn build<'a>(
        &self,
        domain: &str,
        entries: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        window_start: u64,
    ) -> String {
        // Exact length: no reallocation while building (20 digits fit any u64).
        let len = self.prefix.len()
            + domain.len()
            + 1
            + entries
                .clone()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
            + 20;
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push_str(domain);
        key.push('_');
        for (k, v) in entries {
            key.push_str(k);
            key.push('_');
            key.push_str(v);
            key.push('_');
        }
        // Writing an integer to a String cannot fail.
        let _ = write!(key, "{window_start}");
        key
    }
}

#[cfg(test)]
mod tests {
    use super::CacheKey;

    #[test]
    fn matches_the_reference_format() {
        let keys = CacheKey::default();
        let key = keys.build(
            "domain",
            [("key2", "value2"), ("subkey2", "subvalue2")].into_iter(),
            1200,
        );
        assert_eq!(key, "domain_key2_value2_subkey2_subvalue2_1200");
    }

    #[test]
    fn prefix_is_prepended_as_is() {
        let key = CacheKey::new("prefix:").build("domain", [("key", "value")].into_iter(), 1234);
        assert_eq!(key, "prefix:domain_key_value_1234");
    }
}
