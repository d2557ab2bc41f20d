//! What a request is counted as: descriptors of ordered key/value entries,
//! built with [`Descriptor::new`] and [`Descriptor::entry`], as Envoy's
//! rate-limit filter sends them.

use floodgate_proto::RateLimitDescriptor;
use floodgate_proto::rate_limit_descriptor::Entry;

/// One descriptor: ordered key/value entries, optionally with its own hit
/// count.
///
/// ```
/// use floodgate_client::Descriptor;
///
/// let d = Descriptor::new().entry("tenant", "acme").entry("user", "alice").hits(2);
/// assert_eq!(d.entries().len(), 2);
/// assert_eq!(d.hit_count(), Some(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Descriptor {
    entries: Vec<(String, String)>,
    hits: Option<u64>,
}

impl Descriptor {
    /// An empty descriptor; add entries with [`Descriptor::entry`].
    pub fn new() -> Self {
        Descriptor::default()
    }

    /// Appends an entry (from the most general to the most specific).
    pub fn entry(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// Counts `hits` for this descriptor (0 checks without consuming).
    pub fn hits(mut self, hits: u64) -> Self {
        self.hits = Some(hits);
        self
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The hit count set with [`Descriptor::hits`], if any.
    pub fn hit_count(&self) -> Option<u64> {
        self.hits
    }

    /// The hits this descriptor asks for (one unless set).
    pub(crate) fn hits_or_one(&self) -> u64 {
        self.hits.unwrap_or(1)
    }

    /// A zero-hit check consumes nothing: the memo never answers it.
    pub(crate) fn is_check_only(&self) -> bool {
        self.hits == Some(0)
    }

    /// The key that names this descriptor in `domain` for the memo and the
    /// per-key throttles. Every part is length-prefixed, so no value (which
    /// may come from a client's header) can spell another descriptor's key.
    pub(crate) fn memo_key(&self, domain: &str) -> String {
        length_prefixed(
            std::iter::once(domain).chain(
                self.entries
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            ),
        )
    }

    pub(crate) fn to_proto(&self) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: self
                .entries
                .iter()
                .map(|(key, value)| Entry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            hits_addend: self.hits,
            ..RateLimitDescriptor::default()
        }
    }
}

/// `parts` as one string, each written `<length>:<part>`, so that no part
/// can spell the boundary between two others.
pub(crate) fn length_prefixed<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for part in parts {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}:{part}", part.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_collide_across_entry_boundaries() {
        let a = Descriptor::new().entry("a", "b").entry("c", "d");
        // A value that spells the rest of `a`'s key in any separator style.
        let b = Descriptor::new().entry("a", "b1:c1:d");
        let c = Descriptor::new().entry("a", "b\u{0}c\u{1}d");
        let d = Descriptor::new().entry("a", "bc").entry("", "d");
        for other in [&b, &c, &d] {
            assert_ne!(a.memo_key("x"), other.memo_key("x"));
        }
        assert_ne!(a.memo_key("x"), a.memo_key("y"));
        assert_eq!(a.memo_key("x"), a.clone().hits(5).memo_key("x"));
    }

    #[test]
    fn the_wire_form_keeps_order_and_hits() {
        let p = Descriptor::new()
            .entry("k1", "v1")
            .entry("k2", "v2")
            .hits(3)
            .to_proto();
        let pairs: Vec<_> = p
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(pairs, [("k1", "v1"), ("k2", "v2")]);
        assert_eq!(p.hits_addend, Some(3));
        assert_eq!(Descriptor::new().to_proto().hits_addend, None);
    }
}
