//! The roster (`managers.toml`): who takes leads, in which group, when they work.
//!
//! Times of a shift are the manager's own wall-clock times in the manager's time zone:
//! managers work remotely (seed interview), so "09:00" in Yekaterinburg is 07:00 in Moscow.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// A group of managers that takes a kind of lead (the seed's junior, middle and senior
/// groups, split by budget).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its name as the head of sales writes it ("Младшая").
    pub name: String,
    /// The group lead (an index into [`Roster::managers`]): where a lead goes when nobody
    /// in the group took it in time, if the routing rules say so.
    pub lead: Option<usize>,
}

/// A time window within one day, `start` before `end` ("09:00-18:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When it begins.
    pub start: NaiveTime,
    /// When it ends (not included).
    pub end: NaiveTime,
}

impl Window {
    /// Whether `t` falls inside: from `start`, up to but not including `end`.
    pub fn contains(&self, t: NaiveTime) -> bool {
        self.start <= t && t < self.end
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).num_seconds()
    }
}

/// One day's work: the hours and the lunch inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    /// From the start to the end of the working day.
    pub hours: Window,
    /// The lunch break, inside the hours.
    pub lunch: Option<Window>,
}

impl Shift {
    /// Seconds of work in the whole shift: the hours less the lunch.
    pub fn work_seconds(&self) -> i64 {
        self.hours.seconds() - self.lunch.map_or(0, |l| l.seconds())
    }

    /// Seconds of work done by the local time `t`: lunch time does not count.
    pub fn worked_seconds_by(&self, t: NaiveTime) -> i64 {
        let clamp = |x: NaiveTime| x.clamp(self.hours.start, self.hours.end);
        let t = clamp(t);
        let lunch = self.lunch.map_or(0, |l| {
            let until = t.clamp(l.start, l.end);
            (until - l.start).num_seconds()
        });
        (t - self.hours.start).num_seconds() - lunch
    }
}

/// A working week: the shift of each weekday, Monday first; `None` is a day off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Week(pub [Option<Shift>; 7]);

impl Week {
    /// The shift of a weekday.
    pub fn on(&self, day: Weekday) -> Option<&Shift> {
        self.0[day.num_days_from_monday() as usize].as_ref()
    }
}

/// A vacation: from the first to the last day, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vacation {
    /// The first day away.
    pub from: NaiveDate,
    /// The last day away.
    pub to: NaiveDate,
}

impl Vacation {
    /// Whether the manager is away on `date`.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.from <= date && date <= self.to
    }
}

/// A manager as routing sees them: the CRM user and their working time.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    /// The CRM's user id.
    pub id: String,
    /// The name as the CRM shows it.
    pub name: String,
    /// Their group (an index into [`Roster::groups`]).
    pub group: usize,
    /// What they know best ("Газовые электростанции"); the routing rules say which leads
    /// that takes.
    pub specialisations: Vec<String>,
    /// The time zone their shift is written in.
    pub zone: Tz,
    /// Their working week.
    pub week: Week,
    /// Single days off (holidays, a day taken), in their own calendar.
    pub days_off: Vec<NaiveDate>,
    /// Vacations.
    pub vacations: Vec<Vacation>,
    /// How much of a full share of leads they take: 1 for most, less for a newcomer.
    pub weight: f64,
    /// Whether they take leads at all (not fired, not on long leave).
    pub active: bool,
}

/// Why a manager does not work on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayOff {
    /// On vacation until this day (included).
    Vacation(NaiveDate),
    /// A day off written in the roster.
    DayOff,
    /// The week has no shift on this weekday.
    Weekend,
}

impl Manager {
    /// The shift on a date of their own calendar, or why there is none.
    pub fn shift_on(&self, date: NaiveDate) -> Result<&Shift, DayOff> {
        if let Some(v) = self.vacations.iter().find(|v| v.covers(date)) {
            return Err(DayOff::Vacation(v.to));
        }
        if self.days_off.contains(&date) {
            return Err(DayOff::DayOff);
        }
        self.week.on(date.weekday()).ok_or(DayOff::Weekend)
    }

    /// The instant `now` in their own time zone.
    pub fn local(&self, now: DateTime<Utc>) -> NaiveDateTime {
        now.with_timezone(&self.zone).naive_local()
    }

    /// The instant of their wall-clock `time` on `date`. A time skipped by a clock change
    /// is taken an hour later; a repeated one, the first time.
    pub fn instant(&self, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        at_local(self.zone, date.and_time(time))
    }

    /// When their next shift begins after the day `date` (their calendar), looking up to
    /// a hundred days ahead; `None` when there is none that soon.
    pub fn next_shift_after(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        let mut day = date;
        for _ in 0..100 {
            day = day.succ_opt()?;
            if let Ok(shift) = self.shift_on(day) {
                return Some(self.instant(day, shift.hours.start));
            }
        }
        None
    }
}

/// The instant of a wall-clock time in a zone.
pub fn at_local(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Inside a gap of a clock change: the same wall time an hour later exists.
        None => zone
            .from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
            .earliest()
            .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

/// Everyone who takes leads, and their groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Roster {
    /// The groups, in the file's order.
    pub groups: Vec<Group>,
    /// The managers, in the file's order; presence and loads given to routing are in the
    /// same order.
    pub managers: Vec<Manager>,
    /// The company's time zone: the default of the managers' zones, and the clock the
    /// company's day is told by.
    pub zone: Tz,
}

impl Roster {
    /// The index of the manager with this CRM user id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.managers.iter().position(|m| m.id == id)
    }

    /// The index of the group with this name.
    pub fn group_named(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// The managers of a group, by index.
    pub fn members(&self, group: usize) -> impl Iterator<Item = usize> + '_ {
        self.managers
            .iter()
            .enumerate()
            .filter(move |(_, m)| m.group == group)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    fn shift() -> Shift {
        Shift {
            hours: Window {
                start: t("09:00"),
                end: t("18:00"),
            },
            lunch: Some(Window {
                start: t("13:00"),
                end: t("14:00"),
            }),
        }
    }

    #[test]
    fn lunch_is_not_work() {
        let s = shift();
        assert_eq!(s.work_seconds(), 8 * 3600);
        assert_eq!(s.worked_seconds_by(t("08:00")), 0);
        assert_eq!(s.worked_seconds_by(t("13:30")), 4 * 3600);
        assert_eq!(s.worked_seconds_by(t("15:00")), 5 * 3600);
        assert_eq!(s.worked_seconds_by(t("20:00")), 8 * 3600);
    }

    #[test]
    fn vacations_and_days_off_take_the_shift_away() {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut week = Week::default();
        week.0[0] = Some(shift());
        let m = Manager {
            id: "1".into(),
            name: "Анна".into(),
            group: 0,
            specialisations: vec![],
            zone: chrono_tz::Europe::Moscow,
            week,
            days_off: vec![date("2026-11-30")],
            vacations: vec![Vacation {
                from: date("2026-12-07"),
                to: date("2026-12-20"),
            }],
            weight: 1.0,
            active: true,
        };
        assert!(m.shift_on(date("2026-11-23")).is_ok());
        assert_eq!(m.shift_on(date("2026-11-24")), Err(DayOff::Weekend));
        assert_eq!(m.shift_on(date("2026-11-30")), Err(DayOff::DayOff));
        assert_eq!(
            m.shift_on(date("2026-12-14")),
            Err(DayOff::Vacation(date("2026-12-20")))
        );
        // From the Monday of the vacation, the next shift is the Monday after it.
        let next = m.next_shift_after(date("2026-12-06")).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-21T06:00:00+00:00");
    }
}
