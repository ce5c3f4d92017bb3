//! A wake-up: the engine's look at a lead at the moment the clock alone may enrol it
//! ([`Chains::check_at`](super::Chains::check_at): a missed meeting's time plus its grace),
//! with no event about the lead. This decides what a wake-up delivered at `now` does: the
//! queue may bring it a little early (Redis schedules to the second) or late (the robot
//! was down).

use chrono::{DateTime, TimeDelta, Utc};

use super::trigger::MISSED_MEETING_FRESH;

/// How early a wake-up may come and still count as on time: the look is then taken as of
/// its moment. Anything earlier is planned again.
pub const EARLY: TimeDelta = TimeDelta::seconds(60);

/// What a wake-up planned for one moment does when it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// It came too early: plan it again for this moment.
    NotYet(DateTime<Utc>),
    /// Look at the lead as of this time (the later of the moment and now).
    Look(DateTime<Utc>),
    /// So long after its moment that nothing the clock fired then can fire now: nothing to
    /// do, and a wake-up that keeps failing gives up here.
    Outdated,
}

/// What the wake-up planned for `at` does when it comes at `now`.
pub fn wake(at: DateTime<Utc>, now: DateTime<Utc>) -> Wake {
    let fresh = TimeDelta::from_std(MISSED_MEETING_FRESH).unwrap_or(TimeDelta::MAX);
    if at > now + EARLY {
        Wake::NotYet(at)
    } else if now >= at + fresh {
        Wake::Outdated
    } else {
        Wake::Look(now.max(at))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_wake_up_looks_at_its_moment_or_waits_for_it() {
        let at = Utc.with_ymd_and_hms(2026, 3, 3, 10, 30, 0).unwrap();
        let secs = TimeDelta::seconds;
        // A second early (Redis): as of its moment.
        assert_eq!(wake(at, at - secs(1)), Wake::Look(at));
        assert_eq!(wake(at, at - EARLY), Wake::Look(at));
        // Minutes early (a clock that jumped): again at its moment.
        assert_eq!(wake(at, at - EARLY - secs(1)), Wake::NotYet(at));
        // Late: as of now, while a no-show is still news.
        assert_eq!(wake(at, at + secs(3600)), Wake::Look(at + secs(3600)));
        let day = secs(24 * 3600);
        assert_eq!(wake(at, at + day - secs(1)), Wake::Look(at + day - secs(1)));
        assert_eq!(wake(at, at + day), Wake::Outdated);
    }
}
