//! When a chain's next step is due.
//!
//! Each step waits its delay after the previous step was carried out (the first after the
//! enrolment), lands at its time of day when it has one, and is moved into the send window
//! of a business day on the client's clock: a step due at night waits for the morning.
//!
//! A chain that falls behind (the robot was stopped, the queue was long) does not catch up
//! in a burst. A step whose planned moment has passed is due at the first moment of the
//! window from now on, and the step after it counts its delay from when this one was really
//! carried out: however long the pause, one step goes out, then the next keeps its distance.
//! The engine carries out one step per run and records it with
//! [`Enrolment::step_done`](super::Enrolment::step_done) before asking for the next.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::calendar::{Calendar, SendWindow};
use super::enrolment::Enrolment;
use super::model::{Chain, Chains, Delay, Step};
use crate::domain::routing::roster::at_local;

/// How late a step may be carried out and still count as on time: a job fires a little
/// after its moment.
pub const ON_TIME: TimeDelta = TimeDelta::minutes(15);

/// The next step of an enrolment and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The step's index in the chain.
    pub index: usize,
    /// When to carry it out.
    pub at: DateTime<Utc>,
    /// Whether its planned moment passed more than [`ON_TIME`] ago, so it was planned
    /// again from now.
    pub late: bool,
}

impl Step {
    /// When this step is planned if the one before it was carried out at `from`: the delay
    /// (business days on the client's calendar), the time of day, then the send window.
    /// Never before `from`.
    pub fn planned(
        &self,
        from: DateTime<Utc>,
        window: SendWindow,
        calendar: &Calendar,
        zone: Tz,
    ) -> DateTime<Utc> {
        let local = from.with_timezone(&zone).naive_local();
        let moment = match self.after {
            Delay::Calendar(d) => {
                let t = from + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
                match self.at {
                    Some(at) => {
                        let date = t.with_timezone(&zone).date_naive();
                        at_local(zone, date.and_time(at))
                    }
                    None => t,
                }
            }
            Delay::BusinessDays(n) => {
                let date = calendar
                    .add_business_days(local.date(), n)
                    .unwrap_or(local.date());
                at_local(zone, date.and_time(self.at.unwrap_or(local.time())))
            }
        };
        calendar.fit(window, moment.max(from), zone)
    }
}

impl Chain {
    /// The next step of `enrolment` and when it is due, seen at `now`; `None` when the
    /// chain is done. `zone` is the client's (see [`Calendar::zone_for`]).
    pub fn next_step(
        &self,
        enrolment: &Enrolment,
        now: DateTime<Utc>,
        window: SendWindow,
        calendar: &Calendar,
        zone: Tz,
    ) -> Option<Due> {
        let index = enrolment.next;
        let step = self.steps.get(index)?;
        let planned = step.planned(enrolment.counted_from(), window, calendar, zone);
        if planned + ON_TIME >= now {
            return Some(Due {
                index,
                at: planned,
                late: false,
            });
        }
        Some(Due {
            index,
            at: calendar.fit(window, now, zone),
            late: true,
        })
    }
}

impl Chains {
    /// The next step of `enrolment` and when it is due (see [`Chain::next_step`]), with the
    /// chain's window and the file's calendar; `None` when the chain is done or gone.
    pub fn next_step(&self, enrolment: &Enrolment, now: DateTime<Utc>, zone: Tz) -> Option<Due> {
        let chain = self.chain(&enrolment.chain)?;
        chain.next_step(enrolment, now, self.window_of(chain), &self.calendar, zone)
    }
}
