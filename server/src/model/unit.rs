//! The time unit of a limit's window, as rules name it and the RLS wire
//! reports it.

use std::time::Duration;

/// The time unit of a limit's window. Windows are aligned to the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3,600 s.
    Hour,
    /// 86,400 s (days reset at 00:00 UTC).
    Day,
    /// 604,800 s (weeks start on Thursday 00:00 UTC, as the epoch did).
    Week,
    /// 30 days, not calendar months (as the reference service).
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Parses a unit name, case-insensitively (`second`, `MINUTE`, ...).
    pub fn parse(name: &str) -> Option<Unit> {
        Some(match name.to_ascii_uppercase().as_str() {
            "SECOND" => Unit::Second,
            "MINUTE" => Unit::Minute,
            "HOUR" => Unit::Hour,
            "DAY" => Unit::Day,
            "WEEK" => Unit::Week,
            "MONTH" => Unit::Month,
            "YEAR" => Unit::Year,
            _ => return None,
        })
    }

    /// The window length.
    pub fn window(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 2_592_000,
            Unit::Year => 31_536_000,
        })
    }

    /// The upper-case name, as in the RLS `Unit` enum.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Unit;

    /// The window lengths are envoyproxy/ratelimit's `utils.UnitToDivider`
    /// (src/utils/utilities.go), which its keys' window starts use: a
    /// different length would put the two services' counters under
    /// different keys.
    #[test]
    fn windows_are_the_reference_dividers() {
        let dividers = [
            (Unit::Second, 1),
            (Unit::Minute, 60),
            (Unit::Hour, 60 * 60),
            (Unit::Day, 60 * 60 * 24),
            (Unit::Week, 60 * 60 * 24 * 7),
            (Unit::Month, 60 * 60 * 24 * 30),
            (Unit::Year, 60 * 60 * 24 * 365),
        ];
        for (unit, divider) in dividers {
            assert_eq!(unit.window().as_secs(), divider, "{}", unit.name());
        }
    }
}
