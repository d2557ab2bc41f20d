//! The model: the arithmetic of a decision, with no I/O and no imports from
//! the rest of the crate. It sits under every step of the request path:
//! [`crate::rules`] names limits in its terms ([`Unit`], [`algorithm::Algorithm`],
//! [`capacity::CapacityRule`], [`FailurePolicy`]); [`crate::store`] runs its
//! algorithms over stored state ([`algorithm`], [`capacity::decide`]); the
//! [`crate::limiter`] turns its [`algorithm::Outcome`]s into a decision.

pub mod algorithm;
pub mod capacity;
mod failure;
pub mod quota;
mod unit;

pub use failure::FailurePolicy;
pub use unit::Unit;

/// The most a stored count holds: 2^53 - 1, exact in Redis's Lua (doubles)
/// and in every JSON client. Counts saturate here in both stores, whatever
/// the hits (at most [`crate::limiter::MAX_HITS`] a call) and however many
/// calls add them, so no caller can push a counter into an overflow error;
/// every limit (at most `u32::MAX`) is far below it.
pub const MAX_COUNT: u64 = (1 << 53) - 1;
