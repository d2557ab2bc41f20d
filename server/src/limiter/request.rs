//! Request validation: the first step of the request path. A protobuf
//! `RateLimitRequest` becomes a [`Request`] only if it is well formed, so the
//! rest of the path never meets an empty domain, an empty key or an
//! oversized request.

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest};

use crate::model::Unit;

/// Bounds on what one request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most descriptors in one request.
    pub max_descriptors: usize,
    /// Most entries in one descriptor.
    pub max_entries: usize,
    /// Longest domain, key or value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_descriptors: 64,
            max_entries: 32,
            max_value_bytes: 1024,
        }
    }
}

/// Why a request was refused. Each message says what is wrong, for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The reference service's message, kept for compatibility.
    #[error("rate limit domain must not be empty")]
    EmptyDomain,
    /// The reference service's message, kept for compatibility.
    #[error("rate limit descriptor list must not be empty")]
    NoDescriptors,
    /// More descriptors than allowed.
    #[error("too many descriptors: {count} (at most {max})")]
    TooManyDescriptors {
        /// Descriptors sent.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// More entries than allowed.
    #[error("descriptor {index} has too many entries: {count} (at most {max})")]
    TooManyEntries {
        /// Descriptor index.
        index: usize,
        /// Entries sent.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An entry with an empty key.
    #[error("descriptor {index} entry {entry} has an empty key")]
    EmptyKey {
        /// Descriptor index.
        index: usize,
        /// Entry index.
        entry: usize,
    },
    /// A string over the size limit.
    #[error("{what} is {len} bytes long (at most {max})")]
    TooLong {
        /// Which string, e.g. `descriptor 0 entry 1 value`.
        what: String,
        /// Its length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A limit override whose unit is not a known unit.
    #[error("descriptor {index} limit override has an invalid unit ({unit})")]
    BadOverrideUnit {
        /// Descriptor index.
        index: usize,
        /// The unit number sent.
        unit: i32,
    },
    /// A descriptor's `hits_addend` above [`MAX_HITS`].
    #[error("descriptor {index} hits_addend {hits} is above the maximum {max}", max = MAX_HITS)]
    TooManyHits {
        /// Descriptor index.
        index: usize,
        /// The hits sent.
        hits: u64,
    },
}

/// The most hits one descriptor may add: 2^53 - 1, the largest integer
/// Redis's Lua (doubles) and every JSON client represent exactly, and far
/// from overflowing a 64-bit counter.
pub const MAX_HITS: u64 = (1 << 53) - 1;

/// A limit sent in the request, which replaces the configured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// Hits per window.
    pub requests_per_unit: u32,
    /// The window.
    pub unit: Unit,
}

/// One validated descriptor, borrowing from the protobuf request.
#[derive(Clone, Debug)]
pub struct Descriptor<'a> {
    /// The entries, in order.
    pub entries: &'a [Entry],
    /// Hits to count (0 checks without consuming).
    pub hits: u64,
    /// The caller's limit, if sent.
    pub limit_override: Option<Override>,
    /// `is_negative_hits`: the caller gives budget back. Not supported yet:
    /// such a descriptor is not counted and answers OK without a limit.
    pub negative: bool,
}

impl Descriptor<'_> {
    /// The entries as (key, value) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }
}

/// A validated request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The rules domain.
    pub domain: &'a str,
    /// The descriptors, in request order.
    pub descriptors: Vec<Descriptor<'a>>,
}

impl<'a> Request<'a> {
    /// Validates `proto` against `limits`.
    pub fn parse(
        proto: &'a RateLimitRequest,
        limits: &RequestLimits,
    ) -> Result<Self, RequestError> {
        if proto.domain.is_empty() {
            return Err(RequestError::EmptyDomain);
        }
        check_len("domain", &proto.domain, limits)?;
        if proto.descriptors.is_empty() {
            return Err(RequestError::NoDescriptors);
        }
        if proto.descriptors.len() > limits.max_descriptors {
            return Err(RequestError::TooManyDescriptors {
                count: proto.descriptors.len(),
                max: limits.max_descriptors,
            });
        }
        // 0 (absent) means 1, as in the reference service.
        let request_hits = u64::from(proto.hits_addend.max(1));
        let mut descriptors = Vec::with_capacity(proto.descriptors.len());
        for (index, d) in proto.descriptors.iter().enumerate() {
            descriptors.push(Descriptor::parse(index, d, request_hits, limits)?);
        }
        Ok(Request {
            domain: &proto.domain,
            descriptors,
        })
    }
}

impl<'a> Descriptor<'a> {
    /// Validates descriptor `index`; `request_hits` is the request's
    /// `hits_addend`, which the descriptor's own replaces.
    fn parse(
        index: usize,
        d: &'a RateLimitDescriptor,
        request_hits: u64,
        limits: &RequestLimits,
    ) -> Result<Self, RequestError> {
        check_entries(index, &d.entries, limits)?;
        let hits = d.hits_addend.unwrap_or(request_hits);
        if hits > MAX_HITS {
            return Err(RequestError::TooManyHits { index, hits });
        }
        let limit_override = match &d.limit {
            None => None,
            Some(o) => Some(Override {
                requests_per_unit: o.requests_per_unit,
                unit: override_unit(o.unit).ok_or(RequestError::BadOverrideUnit {
                    index,
                    unit: o.unit,
                })?,
            }),
        };
        Ok(Descriptor {
            entries: &d.entries,
            hits,
            limit_override,
            negative: d.is_negative_hits,
        })
    }
}

/// Descriptor `index` has at most `max_entries` entries, each with a key,
/// and no key or value longer than `max_value_bytes`.
fn check_entries(
    index: usize,
    entries: &[Entry],
    limits: &RequestLimits,
) -> Result<(), RequestError> {
    if entries.len() > limits.max_entries {
        return Err(RequestError::TooManyEntries {
            index,
            count: entries.len(),
            max: limits.max_entries,
        });
    }
    for (entry, e) in entries.iter().enumerate() {
        if e.key.is_empty() {
            return Err(RequestError::EmptyKey { index, entry });
        }
        for (part, text) in [("key", &e.key), ("value", &e.value)] {
            if text.len() > limits.max_value_bytes {
                let what = format!("descriptor {index} entry {entry} {part}");
                return Err(RequestError::TooLong {
                    what,
                    len: text.len(),
                    max: limits.max_value_bytes,
                });
            }
        }
    }
    Ok(())
}

fn check_len(what: &str, s: &str, limits: &RequestLimits) -> Result<(), RequestError> {
    if s.len() > limits.max_value_bytes {
        return Err(RequestError::TooLong {
            what: what.to_owned(),
            len: s.len(),
            max: limits.max_value_bytes,
        });
    }
    Ok(())
}

/// `envoy.type.v3.RateLimitUnit` by number (it has no WEEK).
fn override_unit(unit: i32) -> Option<Unit> {
    Some(match unit {
        1 => Unit::Second,
        2 => Unit::Minute,
        3 => Unit::Hour,
        4 => Unit::Day,
        5 => Unit::Month,
        6 => Unit::Year,
        _ => return None,
    })
}
