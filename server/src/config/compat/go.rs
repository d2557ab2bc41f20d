//! Values as Go reads them (`strconv`, `time.ParseDuration`, envconfig),
//! so that a value envoyproxy/ratelimit would refuse is refused here too,
//! and printed with its secrets redacted.

use std::time::Duration;

use super::variables::Kind;

/// Go's `strconv.ParseBool`, which envoyproxy/ratelimit's settings use.
pub(super) fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(text, 0, 64)`: a sign, then decimal, `0x`, `0o`,
/// `0b` or a leading-`0` octal, with `_` allowed between digits of a
/// prefixed number.
pub(super) fn go_int(text: &str) -> Option<i64> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_owned(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned(), true)
    } else {
        (10, lower.clone(), false)
    };
    if digits.is_empty()
        || (!prefixed && digits.contains('_'))
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let digits = digits.replace('_', "");
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(&digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Go's `strconv.ParseFloat` for the forms settings use (Rust's parser
/// takes the same decimal, exponent, `inf` and `NaN` forms).
pub(super) fn go_float(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0`.
/// Returns whether it is negative, and its size.
pub(super) fn go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        nanos += number.parse::<f64>().ok()? * per_unit;
    }
    // Go's limit: about 290 years.
    if nanos > i64::MAX as f64 {
        return None;
    }
    Some((negative, Duration::from_nanos(nanos.round() as u64)))
}

/// Whether `value` parses as `kind` the way envconfig parses it.
pub(super) fn parses(kind: Kind, value: &str) -> Result<(), String> {
    let ok = match kind {
        Kind::Text | Kind::Secret | Kind::List => true,
        Kind::Bool => go_bool(value).is_some(),
        Kind::Int => go_int(value).is_some(),
        Kind::Float => go_float(value).is_some(),
        Kind::Duration => go_duration(value).is_some(),
        Kind::Map => {
            value.trim().is_empty() || value.split(',').all(|pair| pair.split(':').count() == 2)
        }
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        Kind::Bool => "not a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)",
        Kind::Int => "not an integer",
        Kind::Float => "not a number",
        Kind::Duration => "not a Go duration such as 300ms, 10s, 1m30s or 2h",
        _ => "not a map of k:v pairs separated by commas",
    }
    .to_owned())
}

/// `value` as it may be printed: secrets redacted, passwords in URLs too.
pub(super) fn shown(kind: Kind, value: &str) -> String {
    if kind == Kind::Secret {
        return "<redacted>".to_owned();
    }
    value
        .split(',')
        .map(|part| match part.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                let host = rest.rsplit('@').next().unwrap_or_default();
                format!("{scheme}://<redacted>@{host}")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
