//! `*` patterns in descriptor values: each `*` matches zero or more characters,
//! and the literal segments must appear in order (`foo*`, `bar*b`,
//! `/api/*/action`).
//!
//! On the request path, [`WildcardSet::find`] runs when a value has no exact
//! rule. The set indexes its patterns by their literal prefix, so a value is
//! tried only against the patterns whose prefix it starts with: a domain of
//! 1,000 `tenant-<i>-*` patterns costs a few hash lookups, not 1,000 matches.

use std::collections::HashMap;

/// A compiled value pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildcard {
    /// The literal pieces between `*`s; the first is a required prefix and the
    /// last a required suffix.
    segments: Vec<Box<str>>,
}

impl Wildcard {
    /// Compiles `pattern`, or returns `None` if it contains no `*`.
    pub fn new(pattern: &str) -> Option<Wildcard> {
        if !pattern.contains('*') {
            return None;
        }
        Some(Wildcard {
            segments: pattern.split('*').map(Box::from).collect(),
        })
    }

    /// The literal text before the first `*`.
    pub fn prefix(&self) -> &str {
        self.segments.first().map_or("", |s| s)
    }

    /// True if `value` matches the pattern.
    pub fn matches(&self, value: &str) -> bool {
        let Some((first, rest)) = self.segments.split_first() else {
            return true;
        };
        let Some((last, middle)) = rest.split_last() else {
            return value == &**first;
        };
        if value.len() < first.len() + last.len()
            || !value.starts_with(&**first)
            || !value.ends_with(&**last)
        {
            return false;
        }
        let mut remaining = &value[first.len()..value.len() - last.len()];
        for segment in middle {
            match remaining.find(&**segment) {
                Some(at) => remaining = &remaining[at + segment.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Patterns in config order, each with what it leads to; the first pattern
/// (in config order) that matches a value wins.
#[derive(Debug)]
pub(super) struct WildcardSet<T> {
    items: Vec<(Wildcard, T)>,
    /// Indices into `items` (ascending) by literal prefix.
    by_prefix: HashMap<Box<str>, Vec<usize>>,
    /// The distinct prefix lengths, ascending.
    prefix_lens: Vec<usize>,
}

impl<T> Default for WildcardSet<T> {
    fn default() -> Self {
        WildcardSet {
            items: Vec::new(),
            by_prefix: HashMap::new(),
            prefix_lens: Vec::new(),
        }
    }
}

impl<T> WildcardSet<T> {
    /// Adds a pattern after the ones already in the set.
    pub(super) fn push(&mut self, pattern: Wildcard, item: T) {
        let prefix = pattern.prefix();
        if let Err(at) = self.prefix_lens.binary_search(&prefix.len()) {
            self.prefix_lens.insert(at, prefix.len());
        }
        self.by_prefix
            .entry(prefix.into())
            .or_default()
            .push(self.items.len());
        self.items.push((pattern, item));
    }

    /// The patterns and their items, in config order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(Wildcard, T)> {
        self.items.iter()
    }

    /// The item of the first pattern (in config order) matching `value`.
    pub(super) fn find(&self, value: &str) -> Option<&T> {
        let mut best: Option<usize> = None;
        for &len in &self.prefix_lens {
            let Some(prefix) = value.get(..len) else {
                // Longer than the value (lengths ascend), or not on a
                // character boundary (no prefix of this length then).
                if len > value.len() {
                    break;
                }
                continue;
            };
            let Some(group) = self.by_prefix.get(prefix) else {
                continue;
            };
            // A group ascends: its first match is its earliest, and once
            // past the best so far nothing in it can win.
            let first = group
                .iter()
                .take_while(|i| best.is_none_or(|b| **i < b))
                .find(|i| self.items[**i].0.matches(value));
            if let Some(&i) = first {
                best = Some(i);
            }
        }
        best.map(|i| &self.items[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Wildcard, WildcardSet};

    fn m(pattern: &str, value: &str) -> bool {
        Wildcard::new(pattern).unwrap().matches(value)
    }

    #[test]
    fn a_set_finds_the_first_matching_pattern_in_config_order() {
        let mut set = WildcardSet::default();
        for (i, p) in ["team-*-eu", "*.com", "team-*", "te*", "*", "tëam*"]
            .into_iter()
            .enumerate()
        {
            set.push(Wildcard::new(p).unwrap(), i);
        }
        assert_eq!(set.find("team-a-eu"), Some(&0));
        // "*.com" (index 1) comes before "team-*" (index 2) in config order.
        assert_eq!(set.find("team-a.com"), Some(&1));
        assert_eq!(set.find("team-b"), Some(&2));
        assert_eq!(set.find("tea"), Some(&3));
        assert_eq!(set.find("x"), Some(&4));
        assert_eq!(set.find(""), Some(&4));
        // A multi-byte prefix: lengths that cut a character are skipped.
        assert_eq!(set.find("tëam"), Some(&4), "'*' precedes 'tëam*'");
        let mut accents = WildcardSet::default();
        accents.push(Wildcard::new("tëam*").unwrap(), "accent");
        accents.push(Wildcard::new("t*").unwrap(), "t");
        assert_eq!(accents.find("tëamx"), Some(&"accent"));
        assert_eq!(accents.find("ë"), None);
        assert_eq!(set.iter().count(), 6);
    }

    #[test]
    fn the_index_agrees_with_a_linear_scan() {
        let patterns = ["a*", "ab*", "*b", "a*b", "*", "abc*d", "b*", "ab", "x*y*z"];
        let values = [
            "", "a", "ab", "abc", "abcd", "b", "ba", "xyz", "xaybz", "zzz",
        ];
        // Every order of a few patterns, so config order is exercised.
        for start in 0..patterns.len() {
            let order: Vec<&str> = patterns[start..]
                .iter()
                .chain(&patterns[..start])
                .copied()
                .filter(|p| p.contains('*'))
                .collect();
            let mut set = WildcardSet::default();
            for (i, p) in order.iter().enumerate() {
                set.push(Wildcard::new(p).unwrap(), i);
            }
            for value in values {
                let linear = order
                    .iter()
                    .position(|p| Wildcard::new(p).unwrap().matches(value));
                assert_eq!(set.find(value).copied(), linear, "{order:?} {value:?}");
            }
        }
    }

    #[test]
    fn plain_values_are_not_patterns() {
        assert!(Wildcard::new("foo").is_none());
    }

    #[test]
    fn trailing_leading_and_inner_stars() {
        assert!(m("foo*", "foo") && m("foo*", "foobar"));
        assert!(!m("foo*", "fo") && !m("foo*", "xfoo"));
        assert!(m("*bar", "bar") && m("*bar", "foobar") && !m("*bar", "barx"));
        assert!(m("bar*b", "barb") && m("bar*b", "barxyzb") && !m("bar*b", "bar"));
        assert!(m("/api/*/action", "/api/v1/action") && !m("/api/*/action", "/api/v1/other"));
    }

    #[test]
    fn several_stars_match_segments_in_order() {
        assert!(m("foo*bar*baz", "foobarbaz"));
        assert!(m("foo*bar*baz", "foo1bar2baz"));
        assert!(!m("foo*bar*baz", "foobazbar"));
        assert!(m("*", "") && m("**", "anything"));
    }

    #[test]
    fn prefix_and_suffix_may_not_overlap() {
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
    }
}
