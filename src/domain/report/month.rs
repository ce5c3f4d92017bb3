//! The calendar month a report covers, written `YYYY-MM`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

/// A calendar month in UTC: the leads created from its first instant up to, not including,
/// the first instant of the next month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

/// A month written wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    /// Not of the shape `YYYY-MM`.
    #[error("a month is written YYYY-MM, such as 2026-11, not {0:?}")]
    Shape(String),
    /// The shape is right but the month is not 01 to 12.
    #[error("{0:?} is not a month: months go from 01 to 12")]
    NoSuchMonth(String),
}

impl Month {
    /// The month `month` (1 to 12) of `year` (1 to 9999).
    pub fn new(year: i32, month: u32) -> Result<Month, MonthError> {
        if !(1..=9999).contains(&year) {
            return Err(MonthError::Shape(format!("{year}-{month:02}")));
        }
        if !(1..=12).contains(&month) {
            return Err(MonthError::NoSuchMonth(format!("{year:04}-{month:02}")));
        }
        Ok(Month { year, month })
    }

    /// Its first instant, 00:00 UTC of the 1st.
    pub fn start(self) -> DateTime<Utc> {
        first_instant(self.year, self.month)
    }

    /// The first instant of the next month: the end of this one, not included.
    pub fn end(self) -> DateTime<Utc> {
        if self.month == 12 {
            first_instant(self.year + 1, 1)
        } else {
            first_instant(self.year, self.month + 1)
        }
    }

    /// Whether `at` falls within the month.
    pub fn contains(self, at: DateTime<Utc>) -> bool {
        self.start() <= at && at < self.end()
    }
}

fn first_instant(year: i32, month: u32) -> DateTime<Utc> {
    // Every year from 1 to 10000 and every month 1 to 12 has a 1st at midnight in UTC.
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the 1st of a month at midnight exists in UTC")
}

impl FromStr for Month {
    type Err = MonthError;

    fn from_str(s: &str) -> Result<Month, MonthError> {
        let shape = || MonthError::Shape(s.to_owned());
        let text = s.trim();
        let (year, month) = text.split_once('-').ok_or_else(shape)?;
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(shape());
        }
        let year: i32 = year.parse().map_err(|_| shape())?;
        let month: u32 = month.parse().map_err(|_| shape())?;
        if year == 0 {
            return Err(shape());
        }
        if !(1..=12).contains(&month) {
            return Err(MonthError::NoSuchMonth(text.to_owned()));
        }
        Month::new(year, month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_month_runs_from_its_first_instant_to_the_next_months() {
        let m: Month = "2026-11".parse().unwrap();
        assert_eq!(m.start(), at("2026-11-01T00:00:00Z"));
        assert_eq!(m.end(), at("2026-12-01T00:00:00Z"));
        assert_eq!(m.to_string(), "2026-11");
        assert!(m.contains(at("2026-11-01T00:00:00Z")));
        assert!(m.contains(at("2026-11-30T23:59:59.999Z")));
        assert!(!m.contains(at("2026-12-01T00:00:00Z")));
        assert!(!m.contains(at("2026-10-31T23:59:59Z")));
    }

    #[test]
    fn december_ends_in_the_next_year() {
        let m: Month = "2026-12".parse().unwrap();
        assert_eq!(m.end(), at("2027-01-01T00:00:00Z"));
        assert_eq!(
            "2024-02".parse::<Month>().unwrap().end(),
            at("2024-03-01T00:00:00Z")
        );
    }

    #[test]
    fn only_yyyy_mm_is_a_month() {
        for bad in [
            "",
            "2026",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "november",
            "2026-1a",
            "0000-05",
        ] {
            let err = bad.parse::<Month>().unwrap_err();
            assert_eq!(err, MonthError::Shape(bad.to_owned()), "{bad}");
            assert!(err.to_string().contains("YYYY-MM"), "{err}");
        }
        let err = "2026-13".parse::<Month>().unwrap_err();
        assert_eq!(err, MonthError::NoSuchMonth("2026-13".into()));
        assert!(err.to_string().contains("01 to 12"), "{err}");
        assert!("2026-00".parse::<Month>().is_err());
        assert_eq!(
            " 2026-03 ".parse::<Month>().unwrap(),
            Month::new(2026, 3).unwrap()
        );
    }
}
