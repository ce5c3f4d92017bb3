//! Durations as every rule file writes them: `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"3d"`
//! (calendar) and `"3bd"` (business days), per `RULES.md`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a duration string may look like; shown whenever one does not parse.
const EXAMPLES: &str = r#""500ms", "30s", "10m", "2h", "3d" or "3bd" (business days)"#;

/// A duration written in a rule file.
///
/// Business days are a variant of their own rather than a number of hours: how long "3bd" is
/// depends on the work calendar (weekends, holidays), which only the caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    /// Wall-clock time: `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"3d"`; a day is 24 hours.
    Calendar(Duration),
    /// Business days: `"3bd"`.
    BusinessDays(u32),
}

impl Span {
    /// `n` milliseconds.
    pub const fn millis(n: u64) -> Self {
        Span::Calendar(Duration::from_millis(n))
    }

    /// `n` seconds.
    pub const fn seconds(n: u64) -> Self {
        Span::Calendar(Duration::from_secs(n))
    }

    /// `n` minutes.
    pub const fn minutes(n: u64) -> Self {
        Span::Calendar(Duration::from_secs(n.saturating_mul(60)))
    }

    /// `n` hours.
    pub const fn hours(n: u64) -> Self {
        Span::Calendar(Duration::from_secs(n.saturating_mul(3_600)))
    }

    /// `n` calendar days of 24 hours.
    pub const fn days(n: u64) -> Self {
        Span::Calendar(Duration::from_secs(n.saturating_mul(86_400)))
    }

    /// `n` business days.
    pub const fn business_days(n: u32) -> Self {
        Span::BusinessDays(n)
    }

    /// The wall-clock length, or `None` for business days (they need a work calendar).
    ///
    /// Every span in [`RobotConfig`](super::RobotConfig) is checked to be calendar time
    /// when it is loaded, so there this is always `Some`.
    pub const fn as_std(&self) -> Option<Duration> {
        match self {
            Span::Calendar(d) => Some(*d),
            Span::BusinessDays(_) => None,
        }
    }

    /// Whether this is wall-clock time (anything but `"…bd"`).
    pub const fn is_calendar(&self) -> bool {
        matches!(self, Span::Calendar(_))
    }

    /// Whether the span has no length at all (`"0s"`, `"0bd"`).
    pub const fn is_zero(&self) -> bool {
        match self {
            Span::Calendar(d) => d.is_zero(),
            Span::BusinessDays(n) => *n == 0,
        }
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    /// Not a whole number followed by a known unit.
    #[error("`{0}` is not a duration: write a whole number and a unit, like {EXAMPLES}")]
    Format(String),
    /// A bare number: which unit was meant cannot be guessed.
    #[error("`{0}` has no unit: write e.g. \"{0}s\", \"{0}m\" or \"{0}h\"")]
    MissingUnit(String),
    /// The number does not fit.
    #[error("`{0}` is too long a duration")]
    TooLong(String),
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, SpanError> {
        let text = s.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(SpanError::Format(s.to_owned()));
        }
        let too_long = || SpanError::TooLong(s.to_owned());
        let n: u64 = number.parse().map_err(|_| too_long())?;
        let secs = |per: u64| {
            n.checked_mul(per)
                .map(Duration::from_secs)
                .ok_or_else(too_long)
        };
        Ok(match unit {
            "ms" => Span::Calendar(Duration::from_millis(n)),
            "s" => Span::Calendar(secs(1)?),
            "m" => Span::Calendar(secs(60)?),
            "h" => Span::Calendar(secs(3_600)?),
            "d" => Span::Calendar(secs(86_400)?),
            "bd" => Span::BusinessDays(u32::try_from(n).map_err(|_| too_long())?),
            "" => return Err(SpanError::MissingUnit(number.to_owned())),
            _ => return Err(SpanError::Format(s.to_owned())),
        })
    }
}

/// Writes the largest unit that holds the span exactly, so `"60m"` comes back as `"1h"`;
/// parsing the output gives the same span (below a millisecond is dropped: no rule file can
/// write it).
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self {
            Span::BusinessDays(n) => return write!(f, "{n}bd"),
            Span::Calendar(d) => *d,
        };
        let millis = d.as_millis();
        if millis % 1_000 != 0 {
            return write!(f, "{millis}ms");
        }
        let secs = d.as_secs();
        for (per, unit) in [(86_400, "d"), (3_600, "h"), (60, "m")] {
            if secs != 0 && secs % per == 0 {
                return write!(f, "{}{unit}", secs / per);
            }
        }
        write!(f, "{secs}s")
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;

        impl Visitor<'_> for SpanVisitor {
            type Value = Span;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration like {EXAMPLES}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                v.parse().map_err(E::custom)
            }

            // A bare `timeout = 10` is the likeliest slip: say which units exist.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                Err(E::custom(SpanError::MissingUnit(v.to_string())))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Err(E::custom(SpanError::MissingUnit(v.to_string())))
            }
        }

        deserializer.deserialize_any(SpanVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!("500ms".parse(), Ok(Span::millis(500)));
        assert_eq!("30s".parse(), Ok(Span::seconds(30)));
        assert_eq!("10m".parse(), Ok(Span::minutes(10)));
        assert_eq!("2h".parse(), Ok(Span::hours(2)));
        assert_eq!("3d".parse(), Ok(Span::days(3)));
        assert_eq!("3bd".parse(), Ok(Span::business_days(3)));
        assert_eq!(" 7d ".parse(), Ok(Span::days(7)));
    }

    #[test]
    fn rejects_what_a_person_might_write() {
        for bad in ["", "m", "10 m", "10min", "1h30m", "-5s", "1.5h", "3BD"] {
            assert!(
                matches!(bad.parse::<Span>(), Err(SpanError::Format(_))),
                "{bad:?} should not parse"
            );
        }
        assert_eq!(
            "10".parse::<Span>(),
            Err(SpanError::MissingUnit("10".into()))
        );
        assert!(matches!(
            "99999999999999999999s".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
        assert!(matches!(
            "5000000000bd".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "500ms", "1500ms", "30s", "90s", "10m", "2h", "3d", "3bd", "0s", "0bd",
        ] {
            let span: Span = s.parse().unwrap();
            assert_eq!(span.to_string(), s);
            assert_eq!(span.to_string().parse::<Span>(), Ok(span));
        }
        assert_eq!(Span::minutes(60).to_string(), "1h");
        assert_eq!(Span::hours(48).to_string(), "2d");
    }

    #[test]
    fn calendar_and_business_days_differ() {
        assert_eq!(Span::hours(1).as_std(), Some(Duration::from_secs(3_600)));
        assert_eq!(Span::business_days(3).as_std(), None);
        assert!(!Span::business_days(3).is_calendar());
        assert_ne!(Span::days(3), Span::business_days(3));
    }

    #[test]
    fn serde_uses_the_string_form() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            wait: Span,
        }
        let t: T = toml::from_str(r#"wait = "2h""#).unwrap();
        assert_eq!(t.wait, Span::hours(2));
        assert_eq!(toml::to_string(&t).unwrap().trim(), r#"wait = "2h""#);
        let err = toml::from_str::<T>("wait = 10").unwrap_err();
        assert!(err.message().contains("has no unit"), "{err}");
    }
}
