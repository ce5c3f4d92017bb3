//! What ends a chain before its last step: the client answers or calls, the stage
//! changes, a meeting is booked, the lead is won or lost, the manager stops it, or a
//! condition of the file holds.

use std::fmt;

use super::enrolment::Enrolment;
use super::facts;
use super::model::{Chain, Chains};
use super::trigger::Trigger;
use crate::domain::condition::{Condition, Facts};
use crate::domain::event::EventKind;

/// amoCRM's note types of an incoming call: the number webhooks carry, the word of API v4.
const INCOMING_CALL_NOTES: [&str; 2] = ["10", "call_in"];

/// A stop condition of a chain, as the file lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// The client wrote (WhatsApp or another messenger).
    Reply,
    /// The client called.
    Call,
    /// The lead left the stage it was enrolled in.
    Stage,
    /// A meeting was booked (the meeting time is new).
    Meeting,
    /// The lead was won.
    Won,
    /// The lead was lost after it was enrolled.
    Lost,
    /// The manager stopped it: the stop tag, or the trigger's tag or field taken off.
    Manager,
    /// This condition holds for the lead.
    When(Condition),
}

impl Stop {
    /// The stops a chain has when the file lists none: all but a condition.
    pub fn all() -> Vec<Stop> {
        vec![
            Stop::Reply,
            Stop::Call,
            Stop::Stage,
            Stop::Meeting,
            Stop::Won,
            Stop::Lost,
            Stop::Manager,
        ]
    }
}

/// Why an enrolment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The client wrote.
    ClientReplied,
    /// The client called.
    ClientCalled,
    /// The lead moved from the stage it was enrolled in.
    StageChanged {
        /// The stage at enrolment.
        from: Option<String>,
        /// The stage now.
        to: Option<String>,
    },
    /// A meeting was booked.
    MeetingBooked,
    /// The lead was won.
    Won,
    /// The lead was lost.
    Lost,
    /// The manager put the stop tag on the lead.
    ManagerStopped,
    /// The tag or field that started the chain was taken off.
    TriggerUndone,
    /// The chain's stop condition holds.
    Condition,
    /// The chain is no longer in the rule file.
    ChainRemoved,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::ClientReplied => f.write_str("the client wrote"),
            StopReason::ClientCalled => f.write_str("the client called"),
            StopReason::StageChanged { from, to } => write!(
                f,
                "the stage changed from {} to {}",
                from.as_deref().unwrap_or("none"),
                to.as_deref().unwrap_or("none")
            ),
            StopReason::MeetingBooked => f.write_str("a meeting was booked"),
            StopReason::Won => f.write_str("the lead was won"),
            StopReason::Lost => f.write_str("the lead was lost"),
            StopReason::ManagerStopped => f.write_str("the manager put the stop tag"),
            StopReason::TriggerUndone => f.write_str("what started the chain was taken off"),
            StopReason::Condition => f.write_str("the chain's stop condition holds"),
            StopReason::ChainRemoved => f.write_str("the chain is no longer in the rule file"),
        }
    }
}

impl Chain {
    /// Whether `enrolment` stops, given what just happened (`event`, when there is one)
    /// and the lead's facts now; the reason, or `None` to go on. The lead being won is
    /// looked at first, then the manager, then the rest in the order of [`Stop`].
    pub fn should_stop(
        &self,
        enrolment: &Enrolment,
        event: Option<&EventKind>,
        facts: &Facts,
        stop_tag: &str,
    ) -> Option<StopReason> {
        let has = |s: &Stop| self.stops.contains(s);
        if has(&Stop::Won) && facts::is(facts, facts::OUTCOME, facts::WON) {
            return Some(StopReason::Won);
        }
        if has(&Stop::Manager) {
            if !stop_tag.trim().is_empty() && facts::has_tag(facts, stop_tag) {
                return Some(StopReason::ManagerStopped);
            }
            let undone = match &self.trigger {
                Trigger::Tag(tag) => !facts::has_tag(facts, tag),
                Trigger::Set(field) => facts::text(facts, field).is_none(),
                _ => false,
            };
            if undone {
                return Some(StopReason::TriggerUndone);
            }
        }
        match event {
            Some(EventKind::ClientReplied { .. }) if has(&Stop::Reply) => {
                return Some(StopReason::ClientReplied);
            }
            Some(EventKind::NoteAdded { note_type, .. })
                if has(&Stop::Call) && INCOMING_CALL_NOTES.contains(&note_type.trim()) =>
            {
                return Some(StopReason::ClientCalled);
            }
            _ => {}
        }
        if has(&Stop::Lost) && !enrolment.lost && facts::is(facts, facts::OUTCOME, facts::LOST) {
            return Some(StopReason::Lost);
        }
        let meeting = facts::instant(facts, facts::MEETING_AT);
        if has(&Stop::Meeting) && meeting.is_some() && meeting != enrolment.meeting_at {
            return Some(StopReason::MeetingBooked);
        }
        let stage = facts::text(facts, facts::STAGE);
        let moved = match (&enrolment.stage, &stage) {
            (Some(a), Some(b)) => !facts::same(a, b),
            // A stage that is not known now says nothing about a move.
            (_, None) => false,
            (None, Some(_)) => true,
        };
        if has(&Stop::Stage) && moved {
            return Some(StopReason::StageChanged {
                from: enrolment.stage.clone(),
                to: stage,
            });
        }
        let condition = self.stops.iter().any(|s| match s {
            Stop::When(c) => c.holds(facts),
            _ => false,
        });
        condition.then_some(StopReason::Condition)
    }
}

impl Chains {
    /// Whether `enrolment` stops (see [`Chain::should_stop`]); a chain that is gone from the
    /// file stops its enrolments.
    pub fn should_stop(
        &self,
        enrolment: &Enrolment,
        event: Option<&EventKind>,
        facts: &Facts,
    ) -> Option<StopReason> {
        match self.chain(&enrolment.chain) {
            Some(chain) => chain.should_stop(enrolment, event, facts, &self.stop_tag),
            None => Some(StopReason::ChainRemoved),
        }
    }
}
