//! When the robot may write to a client: business days (weekends and a holiday list), the
//! send window of a day, and the client's time zone (from the contact's region, else the
//! account's).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::domain::routing::roster::at_local;

/// How far ahead a search for a business day looks: a calendar with no business day in a
/// year is a broken one, and the search must end.
const HORIZON_DAYS: u32 = 400;

/// The hours of a day when a step may be carried out ("09:00-19:00"), on the client's
/// clock: a step due at night waits for the morning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// The first moment of the window.
    pub start: NaiveTime,
    /// The end of the window (not included).
    pub end: NaiveTime,
}

impl SendWindow {
    /// The window from `start` to `end`; `None` unless `start` is before `end`.
    pub fn new(start: NaiveTime, end: NaiveTime) -> Option<SendWindow> {
        (start < end).then_some(SendWindow { start, end })
    }

    /// Whether the local time `t` falls inside: from `start`, up to but not including `end`.
    pub fn contains(&self, t: NaiveTime) -> bool {
        self.start <= t && t < self.end
    }
}

/// The account's work calendar: which weekdays are business days, the holidays, the
/// account's time zone and the zones of the regions clients live in.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// Business weekdays, Monday first.
    pub workdays: [bool; 7],
    /// Days off besides the weekends (public holidays).
    pub holidays: BTreeSet<NaiveDate>,
    /// The account's zone: the default for a client whose region is unknown.
    pub zone: Tz,
    /// Regions as the CRM writes them ("Новосибирская область"), lower-cased, with their
    /// zones.
    pub regions: BTreeMap<String, Tz>,
}

impl Calendar {
    /// Monday to Friday, no holidays, no regions, in `zone`.
    pub fn weekdays(zone: Tz) -> Calendar {
        Calendar {
            workdays: [true, true, true, true, true, false, false],
            holidays: BTreeSet::new(),
            zone,
            regions: BTreeMap::new(),
        }
    }

    /// Whether `date` is a business day: a workday of the week and not a holiday.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        self.workdays[date.weekday().num_days_from_monday() as usize]
            && !self.holidays.contains(&date)
    }

    /// The `n`-th business day after `date`; for `n = 0`, `date` itself when it is a
    /// business day, else the next one. `None` when the calendar has no business day that
    /// soon (a calendar without workdays).
    pub fn add_business_days(&self, date: NaiveDate, n: u32) -> Option<NaiveDate> {
        let mut day = date;
        if n == 0 {
            return self.first_business_day_from(day);
        }
        let mut left = n;
        for _ in 0..HORIZON_DAYS.saturating_add(n.saturating_mul(2)) {
            day = day.succ_opt()?;
            if self.is_business_day(day) {
                left -= 1;
                if left == 0 {
                    return Some(day);
                }
            }
        }
        None
    }

    /// `date` when it is a business day, else the next business day.
    pub fn first_business_day_from(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut day = date;
        for _ in 0..HORIZON_DAYS {
            if self.is_business_day(day) {
                return Some(day);
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The client's zone: their region's, when the region is listed (case and surrounding
    /// spaces do not matter), else the account's.
    pub fn zone_for(&self, region: Option<&str>) -> Tz {
        region
            .and_then(|r| self.regions.get(&r.trim().to_lowercase()))
            .copied()
            .unwrap_or(self.zone)
    }

    /// The earliest instant at or after `t` that is inside `window` on a business day, on
    /// the clock of `zone`. A calendar without business days gives `t` itself (such a
    /// calendar is refused when the rule file is read).
    pub fn fit(&self, window: SendWindow, t: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        let local = t.with_timezone(&zone).naive_local();
        let mut day = local.date();
        if self.is_business_day(day) {
            if local.time() < window.start {
                return at_local(zone, day.and_time(window.start));
            }
            if window.contains(local.time()) {
                return t;
            }
        }
        for _ in 0..HORIZON_DAYS {
            let Some(next) = day.succ_opt() else { break };
            day = next;
            if self.is_business_day(day) {
                return at_local(zone, day.and_time(window.start));
            }
        }
        t
    }

    /// When the next local day begins in `zone` after `t`: the moment a "one a day" limit
    /// frees up.
    pub fn next_day(&self, t: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        let date = t.with_timezone(&zone).date_naive();
        let next = date.succ_opt().unwrap_or(date);
        at_local(zone, next.and_time(NaiveTime::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::{Asia, Europe};

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn time(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    fn moscow(s: &str) -> DateTime<Utc> {
        let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        Europe::Moscow
            .from_local_datetime(&local)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn calendar() -> Calendar {
        let mut c = Calendar::weekdays(Europe::Moscow);
        // 9 March 2026 is a Monday off (8 March falls on a Sunday).
        c.holidays.insert(date("2026-03-09"));
        c.regions
            .insert("новосибирская область".into(), Asia::Novosibirsk);
        c
    }

    fn window() -> SendWindow {
        SendWindow::new(time("09:00"), time("19:00")).unwrap()
    }

    #[test]
    fn a_window_must_start_before_it_ends() {
        assert!(SendWindow::new(time("19:00"), time("09:00")).is_none());
        assert!(SendWindow::new(time("09:00"), time("09:00")).is_none());
        let w = window();
        assert!(w.contains(time("09:00")));
        assert!(!w.contains(time("19:00")));
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let c = calendar();
        // Friday 6 March + 1 business day: Saturday, Sunday and the Monday holiday pass.
        assert_eq!(
            c.add_business_days(date("2026-03-06"), 1),
            Some(date("2026-03-10"))
        );
        assert_eq!(
            c.add_business_days(date("2026-03-03"), 2),
            Some(date("2026-03-05"))
        );
        assert_eq!(
            c.add_business_days(date("2026-03-07"), 0),
            Some(date("2026-03-10"))
        );
        assert_eq!(
            c.add_business_days(date("2026-03-04"), 0),
            Some(date("2026-03-04"))
        );
        let never = Calendar {
            workdays: [false; 7],
            ..calendar()
        };
        assert_eq!(never.add_business_days(date("2026-03-04"), 1), None);
    }

    #[test]
    fn a_moment_outside_the_window_waits_for_the_next_opening() {
        let c = calendar();
        let z = Europe::Moscow;
        // Inside: unchanged.
        let t = moscow("2026-03-04 12:30");
        assert_eq!(c.fit(window(), t, z), t);
        // Early morning: the same day's opening.
        assert_eq!(
            c.fit(window(), moscow("2026-03-04 06:10"), z),
            moscow("2026-03-04 09:00")
        );
        // Night: the next morning.
        assert_eq!(
            c.fit(window(), moscow("2026-03-04 22:00"), z),
            moscow("2026-03-05 09:00")
        );
        // Friday evening: past the weekend and the holiday, Tuesday morning.
        assert_eq!(
            c.fit(window(), moscow("2026-03-06 19:00"), z),
            moscow("2026-03-10 09:00")
        );
    }

    #[test]
    fn the_window_is_on_the_clients_clock() {
        let c = calendar();
        let nsk = c.zone_for(Some(" Новосибирская область "));
        assert_eq!(nsk, Asia::Novosibirsk);
        assert_eq!(c.zone_for(Some("Тверская область")), Europe::Moscow);
        assert_eq!(c.zone_for(None), Europe::Moscow);
        // 06:00 in Moscow is already 10:00 in Novosibirsk: inside its window.
        let t = moscow("2026-03-04 06:00");
        assert_eq!(c.fit(window(), t, nsk), t);
        // 16:00 in Moscow is 20:00 there: the next Novosibirsk morning, 05:00 in Moscow.
        assert_eq!(
            c.fit(window(), moscow("2026-03-04 16:00"), nsk),
            moscow("2026-03-05 05:00")
        );
    }

    #[test]
    fn the_next_day_begins_at_local_midnight() {
        let c = calendar();
        assert_eq!(
            c.next_day(moscow("2026-03-04 12:00"), Europe::Moscow),
            moscow("2026-03-05 00:00")
        );
    }
}
