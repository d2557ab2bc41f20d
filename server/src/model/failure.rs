//! The failure policy: what a decision answers when the counter store
//! cannot be reached. Named in the rules (a domain's `on_store_failure`)
//! and the settings; applied by [`crate::resilience::store`].

/// What to answer when the store cannot be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Count in a local in-memory store (per server instance).
    #[default]
    Fallback,
    /// Fail open: allow.
    Allow,
    /// Fail closed: reject.
    Deny,
}

impl FailurePolicy {
    /// Parses `fallback`, `allow` or `deny`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fallback" => Some(FailurePolicy::Fallback),
            "allow" => Some(FailurePolicy::Allow),
            "deny" => Some(FailurePolicy::Deny),
            _ => None,
        }
    }
}
