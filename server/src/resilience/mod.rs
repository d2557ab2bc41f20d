//! Staying up when Redis is not: the pieces that sit between the limiter and
//! the Redis store on the request path.
//!
//! - [`breaker`]: a circuit breaker, so that no call waits on a dead store.
//! - [`deadline`]: the caller's `grpc-timeout`, carried to the store.
//! - [`overlimit`]: keys known to be over their limit, answered locally.
//! - [`retry`]: retries with exponential backoff and jitter, within the
//!   request's deadline.
//! - [`store`]: [`store::ResilientStore`] puts them together with a health
//!   check and a failure policy (count locally, allow or deny).

pub mod breaker;
pub mod deadline;
pub mod overlimit;
pub mod retry;
pub mod store;
