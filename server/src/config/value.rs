//! Typed setting values, parsed where the settings are read (the serde
//! boundary of [`super::Settings`]): durations written `250ms`, `10s`, `5m`,
//! `1h` or as bare seconds, counts that must be at least 1, and the modes
//! and policies written as words. A value that does not parse stops the
//! server with `invalid setting NAME = "VALUE": REASON` ([`super::Settings::load`]
//! adds the name), so nothing after [`super::Config`] checks them again.
//!
//! Each type reads from text as well as from numbers: environment variables
//! and flags always arrive as text, a YAML file may hold either.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::LogFormat;
use crate::store::FailurePolicy;
use crate::store::redis::RedisMode;
use crate::tls::files::ClientAuth;

/// Why a value was refused (the setting's name is added by the caller).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// What was given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.value, self.reason)
    }
}

fn refused(value: &str, reason: &'static str) -> Refused {
    Refused {
        value: value.to_owned(),
        reason,
    }
}

const DURATION_SYNTAX: &str = "expected a duration such as 250ms, 10s, 5m or 1h";

/// Parses `250ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(value: &str) -> Result<Duration, Refused> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let bad = || refused(value, DURATION_SYNTAX);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(bad)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3_600),
        _ => Err(bad()),
    }
}

/// A duration as written in the settings (zero allowed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        parse_duration(s).map(HumanDuration)
    }
}

/// A duration that must be more than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NonZeroDuration(Duration);

impl NonZeroDuration {
    /// `d`, if it is more than zero.
    pub const fn new(d: Duration) -> Option<Self> {
        if d.is_zero() {
            None
        } else {
            Some(NonZeroDuration(d))
        }
    }

    /// `d`, or the shortest duration if `d` is zero (for built-in
    /// defaults, which are never zero: a test checks them).
    pub const fn or_shortest(d: Duration) -> Self {
        match Self::new(d) {
            Some(d) => d,
            None => NonZeroDuration(Duration::from_nanos(1)),
        }
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for NonZeroDuration {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        Self::new(parse_duration(s)?).ok_or_else(|| refused(s, "must be more than 0"))
    }
}

/// Renders a duration the way the README writes it: whole seconds as `10s`,
/// anything else in milliseconds (`250ms`).
pub fn render_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Deserializes a value written as text (or as a number, read as its
/// digits) through its [`FromStr`].
fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = Refused>,
{
    struct Text<T>(std::marker::PhantomData<T>);
    impl<T: FromStr<Err = Refused>> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a setting value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    deserializer.deserialize_any(Text(std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d)
    }
}

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&render_duration(self.0))
    }
}

impl Serialize for NonZeroDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&render_duration(self.0))
    }
}

/// A count of at least 1 (`NonZeroU32` or `NonZeroUsize`), for
/// `#[serde(deserialize_with)]`: 0 is refused with "must be at least 1".
pub fn at_least_1<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<NonZeroU64>,
{
    let n = u64::deserialize(deserializer)?;
    let n =
        NonZeroU64::new(n).ok_or_else(|| de::Error::custom(refused("0", "must be at least 1")))?;
    T::try_from(n).map_err(|_| de::Error::custom(refused(&n.to_string(), "is too large")))
}

/// `n` as a count of at least 1, or 1 (for built-in defaults, which are
/// never 0: a test checks them).
pub const fn count_u32(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// `n` as a count of at least 1, or 1 (see [`count_u32`]).
pub const fn count(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

impl FromStr for RedisModeValue {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        RedisMode::parse(s)
            .map(RedisModeValue)
            .ok_or_else(|| refused(s, "must be single, sentinel or cluster"))
    }
}

struct RedisModeValue(RedisMode);
struct PolicyValue(FailurePolicy);
struct LogFormatValue(LogFormat);

impl FromStr for PolicyValue {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        FailurePolicy::parse(s)
            .map(PolicyValue)
            .ok_or_else(|| refused(s, "must be fallback, allow or deny"))
    }
}

impl FromStr for LogFormatValue {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormatValue(LogFormat::Text)),
            "json" => Ok(LogFormatValue(LogFormat::Json)),
            _ => Err(refused(s, "must be text or json")),
        }
    }
}

struct ClientAuthValue(ClientAuth);

impl FromStr for ClientAuthValue {
    type Err = Refused;
    fn from_str(s: &str) -> Result<Self, Refused> {
        ClientAuth::parse(s)
            .map(ClientAuthValue)
            .ok_or_else(|| refused(s, "must be require or optional"))
    }
}

/// `L_tls_client_auth`: `require` or `optional` (any case).
pub mod client_auth {
    use super::*;

    /// Reads the policy.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClientAuth, D::Error> {
        from_text(d).map(|ClientAuthValue(a)| a)
    }

    /// Writes the policy as in the settings.
    pub fn serialize<S: Serializer>(a: &ClientAuth, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }
}

/// `redis_mode`: `single`, `sentinel` or `cluster` (any case).
pub mod redis_mode {
    use super::*;

    /// Reads the mode.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RedisMode, D::Error> {
        from_text(d).map(|RedisModeValue(m)| m)
    }

    /// Writes the mode as in the settings.
    pub fn serialize<S: Serializer>(m: &RedisMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }
}

/// `on_store_failure`: `fallback`, `allow` or `deny` (any case).
pub mod failure_policy {
    use super::*;

    /// Reads the policy.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FailurePolicy, D::Error> {
        from_text(d).map(|PolicyValue(p)| p)
    }

    /// Writes the policy as in the settings.
    pub fn serialize<S: Serializer>(p: &FailurePolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{p:?}").to_ascii_lowercase())
    }
}

/// `log_format`: `text` or `json` (any case).
pub mod log_format {
    use super::*;

    /// Reads the format.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        from_text(d).map(|LogFormatValue(f)| f)
    }

    /// Writes the format as in the settings.
    pub fn serialize<S: Serializer>(f: &LogFormat, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match f {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A secret as `<redacted>` (or none), for rendering settings.
pub fn redacted<S: Serializer, T>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// A secret given as text (empty: none) as `<redacted>` or none.
pub fn redacted_text<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    redacted(&Some(v).filter(|v| !v.is_empty()), s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_render_back() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("0s", Duration::ZERO),
            ("2m", Duration::from_secs(120)),
        ] {
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert_eq!(render_duration(Duration::from_secs(300)), "300s");
        assert_eq!(render_duration(Duration::from_millis(50)), "50ms");
        assert_eq!(
            "0s".parse::<NonZeroDuration>().unwrap_err().to_string(),
            "\"0s\": must be more than 0"
        );
        assert_eq!(
            "ten".parse::<HumanDuration>().unwrap_err().to_string(),
            format!("\"ten\": {DURATION_SYNTAX}")
        );
    }
}
