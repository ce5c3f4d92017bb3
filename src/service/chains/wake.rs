//! Wake-ups: a `CheckLead` job puts the engine's look at a lead on the queue for the moment
//! the clock alone may enrol it (a missed meeting: its time plus the grace), since no event
//! need come then. The queue is its own (`<namespace>:chain_check`), run by the workers of
//! the steps, so a wake-up is as durable as a step: it survives a restart on both backends.
//!
//! - **Planned** by every look at a lead ([`ChainEngine::look`]) for which
//!   `Chains::check_at` gives a moment. The job's key is the lead and the moment, and the
//!   moment is kept per lead in the store, so seeing the lead again queues nothing, however
//!   long the wait (the queue's own keys last only the dedup window). A meeting moved gives
//!   a new moment and a new wake-up; the old one finds that nothing fires.
//! - **Run**: the lead is read again from the CRM and looked at as an event would look at
//!   it, with no event: a trigger that fires now enrols it (a no-show: the lead still in the
//!   meeting's stage, the meeting time plus the grace passed, within the day) and its first
//!   step is planned; the enrolment's key is the cause's, so running twice enrols once. A
//!   lead gone from the CRM: nothing. A wake-up that comes early is planned again; one that
//!   comes a day late does nothing (`domain::chains::wake`).
//! - **Failures** that can pass (the CRM down) are tried again as a step's are, until the
//!   moment is a day old.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::enrol::Enrolled;
use super::job::{backoff, retry_key};
use super::{ChainEngine, StepJobs, crm_error, state};
use crate::adapters::store::{Enqueued, QueueItem, Store, StoreError};
use crate::domain::chains::wake::{Wake, wake};
use crate::service::jobs::HandlerError;
use crate::service::metrics;

/// The job's name: its queue is `<namespace>:chain_check`.
pub const CHECK_LEAD: &str = "chain_check";

/// Look at lead `lead_id` at moment `at`, and which try this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLead {
    /// The lead's CRM id.
    pub lead_id: String,
    /// The moment it was planned for.
    pub at: DateTime<Utc>,
    /// 1 for the first try.
    pub attempt: u32,
}

impl CheckLead {
    /// The job's dedup key: the lead and the moment, and the try for retries.
    pub fn key(&self) -> String {
        let key = format!("{}@{}", self.lead_id, self.at.timestamp());
        if self.attempt <= 1 {
            key
        } else {
            format!("{key}#try{}", self.attempt)
        }
    }
}

/// What a wake-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// It came too early: planned again for its moment.
    NotYet(DateTime<Utc>),
    /// It came a day or more after its moment: nothing can fire, nothing was done.
    Outdated,
    /// The lead is gone from the CRM: nothing was done.
    Gone,
    /// The lead was looked at: what that did to its chains.
    Looked(Enrolled),
}

impl ChainEngine {
    /// Puts a wake-up of `lead_id` for `at` on its queue (as seen at `now`), unless the
    /// last one queued for the lead is for the same moment. Whether one was queued.
    pub async fn plan_check(
        &self,
        store: &Store,
        lead_id: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if state::planned_check(store, lead_id).await? == Some(at.timestamp()) {
            return Ok(false);
        }
        let job = CheckLead {
            lead_id: lead_id.to_owned(),
            at,
            attempt: 1,
        };
        let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
        // Queued before the moment is kept: a crash in between queues it again under the
        // same key, which the queue drops.
        enqueue(store, &job, &job.key(), wait).await?;
        state::save_planned_check(store, lead_id, at).await?;
        tracing::debug!(lead = %lead_id, at = %at, "wake-up planned");
        Ok(true)
    }

    /// Runs the wake-up of `lead_id` planned for `at`, as of `now`: the whole of one
    /// `CheckLead` job.
    pub async fn check_lead(
        &self,
        store: &Store,
        lead_id: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Checked, HandlerError> {
        let as_of = match wake(at, now) {
            Wake::NotYet(at) => {
                let job = CheckLead {
                    lead_id: lead_id.to_owned(),
                    at,
                    attempt: 1,
                };
                let key = format!("{}#early@{}", job.key(), now.timestamp());
                let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                enqueue(store, &job, &key, wait).await?;
                return Ok(Checked::NotYet(at));
            }
            Wake::Outdated => return Ok(Checked::Outdated),
            Wake::Look(as_of) => as_of,
        };
        let Some(lead) = self.crm.lead(lead_id).await.map_err(crm_error)? else {
            tracing::info!(lead = %lead_id, "woke for a lead gone from the CRM; nothing to do");
            return Ok(Checked::Gone);
        };
        let looked = self.look(None, &lead, store, as_of).await?;
        if !looked.enrolled.is_empty() {
            tracing::info!(lead = %lead_id, enrolled = ?looked.enrolled, "a wake-up enrolled the lead");
        }
        Ok(Checked::Looked(looked))
    }
}

async fn enqueue(
    store: &Store,
    job: &CheckLead,
    key: &str,
    wait: Duration,
) -> Result<Enqueued, StoreError> {
    let queue = store.queue_name(CHECK_LEAD);
    store
        .enqueue(QueueItem {
            queue: &queue,
            payload: serde_json::to_vec(job)?,
            key,
            run_after: (!wait.is_zero()).then_some(wait),
        })
        .await
}

impl StepJobs {
    /// Runs one wake-up. A failure is queued again as a step's is (see [`super::job`]); an
    /// error here (the store is down) makes the queue deliver the job again.
    pub async fn check(&self, job: CheckLead) -> Result<(), StoreError> {
        let engine = self.engine();
        let now = engine.now();
        let error = match engine
            .check_lead(self.store(), &job.lead_id, job.at, now)
            .await
        {
            Ok(checked) => {
                let outcome = match &checked {
                    Checked::NotYet(_) => "not_yet",
                    Checked::Outdated => "outdated",
                    Checked::Gone => "gone",
                    Checked::Looked(l) if l.enrolled.is_empty() => "nothing",
                    Checked::Looked(_) => "enrolled",
                };
                ::metrics::counter!(metrics::JOBS, "job" => CHECK_LEAD, "outcome" => outcome)
                    .increment(1);
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        let wait = backoff(job.attempt);
        tracing::warn!(lead = %job.lead_id, at = %job.at, attempt = job.attempt, error = %error, retry_in = ?wait, "wake-up failed; will retry");
        ::metrics::counter!(metrics::JOBS, "job" => CHECK_LEAD, "outcome" => "retry").increment(1);
        let next = CheckLead {
            attempt: job.attempt + 1,
            ..job
        };
        let key = retry_key(next.key(), next.attempt, wait);
        if enqueue(self.store(), &next, &key, wait).await? == Enqueued::Duplicate {
            tracing::debug!(key = %key, "the retry was queued already");
        }
        Ok(())
    }
}
