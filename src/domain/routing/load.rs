//! A manager's load: leads received today, counted "to the end of the shift".
//!
//! Everyone starts the day at a different time (seed: "у всех разное начало дня, поэтому
//! считаем к финалу"), so comparing today's counts would bury whoever came early. The load
//! is the leads received divided by the share of the shift already worked (lunch does not
//! count), that is, how many leads the manager would end the day with at this pace;
//! divided by the manager's weight, so that a newcomer at 0.5 is even with the others at
//! half their count. At the end of the shift it is simply leads ÷ weight.

use chrono::{NaiveTime, TimeDelta};

use super::roster::Shift;

/// The share of the shift worked by the local time `t`, never below `min_worked` of it,
/// so that one lead at 11:05 for someone who came at 11:00 does not count as a hundred.
pub fn worked_share(shift: &Shift, t: NaiveTime, min_worked: TimeDelta) -> f64 {
    let total = shift.work_seconds().max(1) as f64;
    let worked = shift.worked_seconds_by(t) as f64;
    let floor = min_worked.num_seconds() as f64;
    (worked.max(floor) / total).clamp(f64::MIN_POSITIVE, 1.0)
}

/// The load of a manager who received `received` leads today, has worked `share` of the
/// shift and has this weight: the leads they are on course to end the day with, per unit
/// of weight.
pub fn load(received: u32, share: f64, weight: f64) -> f64 {
    f64::from(received) / share / weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::roster::Window;

    fn t(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    fn shift(from: &str, to: &str) -> Shift {
        Shift {
            hours: Window {
                start: t(from),
                end: t(to),
            },
            lunch: Some(Window {
                start: t("14:00"),
                end: t("15:00"),
            }),
        }
    }

    #[test]
    fn a_late_starter_is_not_buried_and_the_day_ends_even() {
        let hour = TimeDelta::hours(1);
        let early = shift("09:00", "18:00");
        let late = shift("11:00", "20:00");
        // At 11:05 the late starter's five minutes count as an hour.
        let share = worked_share(&late, t("11:05"), hour);
        assert!((share - 1.0 / 8.0).abs() < 1e-9);
        // At 13:00, 12 leads in 4 hours is on course for 24; 4 in 2 hours for 16: behind.
        let a = load(12, worked_share(&early, t("13:00"), hour), 1.0);
        let b = load(4, worked_share(&late, t("13:00"), hour), 1.0);
        assert!(
            (a - 24.0).abs() < 1e-9 && (b - 16.0).abs() < 1e-9,
            "{a} {b}"
        );
        // Lunch does not count as work: at 15:00 the early one has worked 5 hours, not 6.
        assert!((worked_share(&early, t("15:00"), hour) - 5.0 / 8.0).abs() < 1e-9);
        // At the end, the load is the count per weight.
        assert_eq!(load(10, worked_share(&early, t("19:00"), hour), 0.5), 20.0);
    }
}
