//! What the store keeps for follow-up chains: the enrolments with their progress and how
//! they stopped, and one record per step that makes a step happen once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::chains::Enrolment;

/// Why and when an enrolment stopped before its last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// When, by the engine's clock.
    pub at: DateTime<Utc>,
    /// Why, for people and logs ("the client wrote").
    pub reason: String,
}

/// One enrolment as stored: its progress, when its next step is due, and its stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentRecord {
    /// The enrolment with its progress (the next step, when the last one was done).
    pub enrolment: Enrolment,
    /// When the next step is due as last planned; `None` when none is planned (finished,
    /// or not planned yet).
    pub due_at: Option<DateTime<Utc>>,
    /// Set once the enrolment stopped; a stopped enrolment takes no more steps.
    pub stopped: Option<Stopped>,
}

impl EnrolmentRecord {
    /// Whether it still takes steps (it may be finished all the same).
    pub fn is_running(&self) -> bool {
        self.stopped.is_none()
    }
}

/// Where one step of one enrolment stands. A step is claimed before its action is carried
/// out and recorded right after, so that a second run of it (a job delivered twice, a
/// retry) finds the claim and does not act again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Claimed by a worker that is carrying it out, or that died doing so.
    Claimed,
    /// Carried out.
    Done,
    /// Passed over (the gates, its condition, no approved template and nothing else to do).
    Skipped,
    /// Could not be carried out (a bad number, a channel not configured); the manager was
    /// told.
    Failed,
    /// Claimed by a worker that died before recording it, and not safe to carry out again:
    /// nobody knows whether it went.
    Uncertain,
    /// Given back by its worker, which knows that nothing went out (a refusal before
    /// sending, the server not taking the letter): it may be claimed again.
    Released,
}

impl StepState {
    /// Its word, as stored and listed.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Claimed => "claimed",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
            StepState::Uncertain => "uncertain",
            StepState::Released => "released",
        }
    }

    /// The state of its word.
    pub fn parse(word: &str) -> Option<StepState> {
        Some(match word {
            "claimed" => StepState::Claimed,
            "done" => StepState::Done,
            "skipped" => StepState::Skipped,
            "failed" => StepState::Failed,
            "uncertain" => StepState::Uncertain,
            "released" => StepState::Released,
            _ => return None,
        })
    }
}

/// The record of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Where it stands.
    pub state: StepState,
    /// When it was claimed, by the wall clock: Wazzup's guard against a repeated
    /// `crmMessageId` runs on real time, whatever clock the engine decides by.
    pub claimed_at: DateTime<Utc>,
    /// When it was carried out (or claimed), by the engine's clock.
    pub at: DateTime<Utc>,
    /// Through what it acts: `wazzup`, `email` or `crm`.
    pub via: String,
    /// What happened, for people: the message's id, the error.
    pub detail: String,
}
