//! An enrolment: one lead going through one chain, and how far it has got.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facts;
use super::model::Chain;
use crate::domain::condition::Facts;

/// One lead in one chain: what the engine stores between steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// Identifies the enrolment across retries: the chain, the lead and what started it
    /// (the stage, the reason, the tag, the meeting time). Enrolling twice with one key is
    /// the same enrolment.
    pub key: String,
    /// The chain's name.
    pub chain: String,
    /// The lead's CRM id.
    pub lead_id: String,
    /// When the lead was enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// The stage at enrolment: a later change of stage stops chains that say so.
    pub stage: Option<String>,
    /// The meeting time at enrolment: a new one means a meeting was booked.
    pub meeting_at: Option<DateTime<Utc>>,
    /// Whether the lead was already lost at enrolment (a refusal-reason chain).
    pub lost: bool,
    /// The index of the next step to carry out.
    pub next: usize,
    /// When the last step was carried out (or skipped); the next one counts its delay
    /// from here.
    pub last_step_at: Option<DateTime<Utc>>,
}

impl Enrolment {
    /// A lead enrolled in `chain` at `now`, because of `cause`, with the lead's facts at
    /// that moment.
    pub fn new(
        chain: &Chain,
        lead_id: &str,
        cause: &str,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Enrolment {
        Enrolment {
            key: format!("{}:{lead_id}:{cause}", chain.name),
            chain: chain.name.clone(),
            lead_id: lead_id.to_owned(),
            enrolled_at: now,
            stage: facts::text(facts, facts::STAGE),
            meeting_at: facts::instant(facts, facts::MEETING_AT),
            lost: facts::is(facts, facts::OUTCOME, facts::LOST),
            next: 0,
            last_step_at: None,
        }
    }

    /// Records that step `index` was carried out (or skipped) at `at`: the next step counts
    /// from then. A record for another step than the next one is ignored, so a retried job
    /// cannot advance the enrolment twice.
    pub fn step_done(&mut self, index: usize, at: DateTime<Utc>) {
        if index == self.next {
            self.next += 1;
            self.last_step_at = Some(at);
        }
    }

    /// Whether every step of `chain` is done.
    pub fn is_finished(&self, chain: &Chain) -> bool {
        self.next >= chain.steps.len()
    }

    /// When the step now due counts its delay from: the last step, or the enrolment.
    pub fn counted_from(&self) -> DateTime<Utc> {
        self.last_step_at.unwrap_or(self.enrolled_at)
    }
}
