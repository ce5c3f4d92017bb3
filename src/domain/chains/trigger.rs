//! What enrols a lead in a chain: it enters a stage, it is lost with a reason, a tag or a
//! field is set (the "out of stock" button), or a meeting time passed with no visit.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::enrolment::Enrolment;
use super::facts;
use super::model::Chains;
use crate::domain::condition::Facts;

/// How long after a missed meeting (past its grace) a lead may still be enrolled: the seed
/// calls a no-show back "the same day", and a meeting missed a week ago is no news.
pub const MISSED_MEETING_FRESH: Duration = Duration::from_secs(24 * 3600);

/// What starts a chain for a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The lead enters this stage (it was in another one before).
    Enters(String),
    /// The lead is lost with this refusal reason.
    Lost(String),
    /// The lead gets this tag (a button in the CRM that puts a tag).
    Tag(String),
    /// This field of the lead gets a value (a checkbox, a date).
    Set(String),
    /// The meeting time passed by `grace` and the lead still sits in `stage`: the client
    /// did not come.
    MeetingMissed {
        /// The stage of a booked meeting ("5. Встреча назначена").
        stage: String,
        /// How long after the meeting time the lead counts as a no-show.
        grace: Duration,
    },
}

impl Trigger {
    /// What started the chain, when the change from `before` to `after` (the lead's facts)
    /// fires this trigger at `now`; `None` when it does not. The cause makes the
    /// enrolment's key: the same cause again is the same enrolment.
    pub fn fires(&self, before: &Facts, after: &Facts, now: DateTime<Utc>) -> Option<String> {
        match self {
            Trigger::Enters(stage) => (facts::is(after, facts::STAGE, stage)
                && !facts::is(before, facts::STAGE, stage))
            .then(|| format!("stage={}", stage.trim())),
            Trigger::Lost(reason) => {
                let lost = |f: &Facts| {
                    facts::is(f, facts::OUTCOME, facts::LOST)
                        && facts::is(f, facts::LOSS_REASON, reason)
                };
                (lost(after) && !lost(before)).then(|| format!("lost={}", reason.trim()))
            }
            Trigger::Tag(tag) => (facts::has_tag(after, tag) && !facts::has_tag(before, tag))
                .then(|| format!("tag={}", tag.trim())),
            Trigger::Set(field) => {
                let set = |f: &Facts| facts::text(f, field);
                match (set(before), set(after)) {
                    (None, Some(value)) => Some(format!("{field}={value}")),
                    _ => None,
                }
            }
            Trigger::MeetingMissed { stage, grace } => {
                if !facts::is(after, facts::STAGE, stage) {
                    return None;
                }
                let meeting = facts::instant(after, facts::MEETING_AT)?;
                let missed = meeting + delta(*grace);
                (missed <= now && now < missed + delta(MISSED_MEETING_FRESH))
                    .then(|| format!("meeting={}", meeting.timestamp()))
            }
        }
    }

    /// When to look at the lead again for this trigger to fire by the clock alone: for a
    /// missed meeting, the meeting time plus the grace, while the lead sits in the stage.
    pub fn check_at(&self, facts: &Facts) -> Option<DateTime<Utc>> {
        match self {
            Trigger::MeetingMissed { stage, grace } if facts::is(facts, facts::STAGE, stage) => {
                facts::instant(facts, facts::MEETING_AT).map(|m| m + delta(*grace))
            }
            _ => None,
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Chains {
    /// The chains the lead `lead_id` enrols in at `now`, given its facts before and after
    /// what happened (the facts before are empty for a new lead): every chain whose trigger
    /// fires and whose `when` holds, unless it would stop at once (the lead is won, the
    /// manager's stop tag is on it).
    pub fn enrol(
        &self,
        lead_id: &str,
        before: &Facts,
        after: &Facts,
        now: DateTime<Utc>,
    ) -> Vec<Enrolment> {
        self.chains
            .iter()
            .filter(|c| c.when.as_ref().is_none_or(|w| w.holds(after)))
            .filter_map(|c| {
                let cause = c.trigger.fires(before, after, now)?;
                let enrolment = Enrolment::new(c, lead_id, &cause, after, now);
                c.should_stop(&enrolment, None, after, &self.stop_tag)
                    .is_none()
                    .then_some(enrolment)
            })
            .collect()
    }

    /// The earliest moment the clock alone may enrol the lead in some chain (a missed
    /// meeting): when the engine should look at it again, with no event.
    pub fn check_at(&self, facts: &Facts, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.chains
            .iter()
            .filter_map(|c| c.trigger.check_at(facts))
            .filter(|t| *t > now)
            .min()
    }
}
