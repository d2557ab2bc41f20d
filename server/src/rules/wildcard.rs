//! `*` patterns in descriptor values: each `*` matches zero or more characters,
//! and the literal segments must appear in order (`foo*`, `bar*b`,
//! `/api/*/action`).

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

#[cfg(test)]
mod tests {
    use super::Wildcard;

    fn m(pattern: &str, value: &str) -> bool {
        Wildcard::new(pattern).unwrap().matches(value)
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
