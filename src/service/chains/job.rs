//! The `RunStep` job: one step of one enrolment, queued for its time on a queue of its own
//! (`<namespace>:chain_step`), beside `handle_event`; and [`StepJobs`], which runs it and
//! the wake-ups of [`super::wake`].
//!
//! Delivery is at least once; the step itself is idempotent (see [`super::step`]). A step
//! that fails for a reason that can pass (the CRM or a channel down) is queued again with
//! a short backoff, at most [`RETRY_MAX`] apart, so that a WhatsApp message whose answer was
//! lost is resent within Wazzup's 60-second guard; after [`ATTEMPTS`] tries it is looked at
//! again every [`LATER`] until it goes, never dropped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::wake::CHECK_LEAD;
use super::{ChainEngine, StepRun};
use crate::adapters::store::{Enqueued, QueueItem, Store, StoreError};
use crate::service::metrics;

/// The job's name: its queue is `<namespace>:chain_step`.
pub const RUN_STEP: &str = "chain_step";
/// Tries in quick succession before waiting [`LATER`].
pub const ATTEMPTS: u32 = 6;
/// The longest wait between quick tries.
pub const RETRY_MAX: Duration = Duration::from_secs(40);
/// The wait after the quick tries.
pub const LATER: Duration = Duration::from_secs(3600);

/// Step `index` of enrolment `enrolment`, and which try this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    /// The enrolment's key.
    pub enrolment: String,
    /// The step's index in the chain.
    pub index: usize,
    /// 1 for the first try.
    pub attempt: u32,
}

impl RunStep {
    /// The job's dedup key: the step, and the try for retries.
    pub fn key(&self) -> String {
        let step = super::step::step_key(&self.enrolment, self.index);
        if self.attempt <= 1 {
            step
        } else {
            format!("{step}#try{}", self.attempt)
        }
    }
}

/// Runs the chains' jobs with the engine, on the engine's clock: `RunStep`, and the
/// wake-ups (`CheckLead`, see [`super::wake`]).
pub struct StepJobs {
    store: Store,
    engine: Arc<ChainEngine>,
    queue: String,
    checks: String,
}

impl std::fmt::Debug for StepJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepJobs")
            .field("queue", &self.queue)
            .finish()
    }
}

impl StepJobs {
    /// Step jobs of `engine` on `store`.
    pub fn new(store: Store, engine: Arc<ChainEngine>) -> StepJobs {
        let queue = store.queue_name(RUN_STEP);
        let checks = store.queue_name(CHECK_LEAD);
        StepJobs {
            store,
            engine,
            queue,
            checks,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The full queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The full name of the wake-ups' queue (`CheckLead` jobs, see [`super::wake`]).
    pub fn check_queue(&self) -> &str {
        &self.checks
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<ChainEngine> {
        &self.engine
    }

    /// Runs one job. A failure is queued again (see the module's comment); an error here
    /// (the store is down) makes the queue deliver the job again.
    pub async fn run(&self, job: RunStep) -> Result<(), StoreError> {
        let now = self.engine.now();
        let error = match self
            .engine
            .run_step(&self.store, &job.enrolment, job.index, now)
            .await
        {
            Ok(run) => {
                let outcome = match &run {
                    StepRun::Settled(state) => state.as_str(),
                    StepRun::NotYet(_) => "not_yet",
                    StepRun::Held(_) => "held",
                    StepRun::InFlight(_) => "in_flight",
                    StepRun::Stopped(_) => "stopped",
                    StepRun::Stale | StepRun::Gone => "nothing",
                };
                ::metrics::counter!(metrics::JOBS, "job" => RUN_STEP, "outcome" => outcome)
                    .increment(1);
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        let wait = backoff(job.attempt);
        tracing::warn!(key = %job.enrolment, step = job.index, attempt = job.attempt, error = %error, retry_in = ?wait, "chain step failed; will retry");
        ::metrics::counter!(metrics::JOBS, "job" => RUN_STEP, "outcome" => "retry").increment(1);
        let next = RunStep {
            attempt: job.attempt + 1,
            ..job
        };
        let key = retry_key(next.key(), next.attempt, wait);
        let pushed = self
            .store
            .enqueue(QueueItem {
                queue: &self.queue,
                payload: serde_json::to_vec(&next)?,
                key: &key,
                run_after: Some(wait),
            })
            .await?;
        if pushed == Enqueued::Duplicate {
            tracing::debug!(key = %key, "the retry was queued already");
        }
        Ok(())
    }
}

/// How long to wait after try `attempt` (1 for the first) failed: quick tries with a
/// doubling wait up to [`RETRY_MAX`], then [`LATER`].
pub(super) fn backoff(attempt: u32) -> Duration {
    if attempt < ATTEMPTS {
        let base = Duration::from_secs(5) * 2u32.saturating_pow(attempt.saturating_sub(1));
        base.min(RETRY_MAX)
    } else {
        LATER
    }
}

/// The dedup key of try `attempt`, whose own key is `key`, queued `wait` from now. Past the
/// quick tries the key carries the time too, so that the hourly tries never collide with
/// keys remembered from before.
pub(super) fn retry_key(key: String, attempt: u32, wait: Duration) -> String {
    if attempt > ATTEMPTS {
        let at = Utc::now() + TimeDelta::from_std(wait).unwrap_or_default();
        format!("{key}@{}", at.timestamp())
    } else {
        key
    }
}
