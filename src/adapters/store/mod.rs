//! The robot's store: the durable queue (apalis on SQLite or Redis) and the little state the
//! CRM cannot hold (handled events, presence, dead letters, the score ledger, routing's
//! loads and pending leads). One URL picks the backend; both behave the same, and one
//! contract test suite runs against each.

mod batch;
mod chains;
mod later;
mod redis;
mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::chains::Enrolment;
use crate::domain::event::Event;
use crate::domain::ledger::{LedgerRow, Outcome, Scored};
use crate::domain::presence::Presence;
use crate::domain::priority::Priority;
use crate::domain::rate::Rate;

pub use self::chains::{EnrolmentRecord, StepRecord, StepState, Stopped};
pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;

/// The Unix second at which a job delayed by `delay` may run. The queues count in whole
/// seconds; rounding up keeps a backoff from running early.
fn not_before(delay: Duration) -> u64 {
    let at = std::time::SystemTime::now() + delay;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// A random token for a lock.
fn lock_token() -> String {
    use rand::Rng;
    hex::encode(rand::rng().random::<[u8; 16]>())
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A Redis server URL.
    Redis(String),
}

/// How the store behaves, from the config.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Prefix of every key and queue name, so that robots can share one Redis.
    pub namespace: String,
    /// How long an event's dedup key is remembered.
    pub dedup_window: Duration,
    /// How often workers say they are alive; a worker silent for three beats is dead and
    /// its jobs go back to the queue.
    pub heartbeat: Duration,
}

/// The store could not do what was asked. Intake answers 503 to these: the sender retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The queue refused the job.
    #[error("queue: {0}")]
    Queue(String),
    /// Stored data did not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// What enqueueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job is in the queue, committed.
    New,
    /// A job with the same key was enqueued within the dedup window: nothing was added.
    Duplicate,
}

/// One job for the queue, already serialised.
#[derive(Debug, Clone)]
pub struct QueueItem<'a> {
    /// The queue (one per job type).
    pub queue: &'a str,
    /// The job as JSON.
    pub payload: Vec<u8>,
    /// The dedup key: a second item with the same key within the window is dropped.
    pub key: &'a str,
    /// Run no sooner than this from now.
    pub run_after: Option<Duration>,
}

/// A job in a queue that waits for its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// When it may run (to the second).
    pub due: DateTime<Utc>,
    /// The job as JSON.
    pub payload: Vec<u8>,
}

/// An event the worker has handled, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When it was handled.
    pub handled_at: DateTime<Utc>,
    /// The event.
    pub event: Event,
}

/// A job that failed every attempt, kept for a person to look at and re-queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id on the dead-letter list.
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// The job as JSON.
    pub payload: String,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was given up.
    pub failed_at: DateTime<Utc>,
}

/// What claiming a lead for a manager did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lead is the manager's now, and their count for the day went up by one.
    Claimed,
    /// The lead was already given that day, to this manager: nothing changed.
    AlreadyAssigned(String),
    /// The manager's count is no longer the one the decision saw (another worker gave them
    /// a lead meanwhile): nothing changed; decide again with fresh loads.
    Moved {
        /// Their count now.
        count: u32,
    },
}

/// A lead waiting for a manager who can take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The lead's CRM id.
    pub lead_id: String,
    /// Its priority.
    pub priority: Priority,
    /// When it began to wait.
    pub since: DateTime<Utc>,
}

/// How long a day's loads and assignments are kept on Redis: a week, enough to look back.
const LOADS_KEPT_SECS: u64 = 8 * 24 * 3600;

/// The store, on one of its backends.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// Redis, for several processes.
    Redis(RedisStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            Store::Sqlite($s) => $body,
            Store::Redis($s) => $body,
        }
    };
}

impl Store {
    /// Opens the store (creating the SQLite file and tables, or connecting to Redis).
    pub async fn open(location: &Location, settings: StoreSettings) -> Result<Store, StoreError> {
        Ok(match location {
            Location::Sqlite(path) => Store::Sqlite(SqliteStore::open(path, settings).await?),
            Location::Redis(url) => Store::Redis(RedisStore::open(url, settings).await?),
        })
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        each!(self, _s => match self { Store::Sqlite(_) => "sqlite", Store::Redis(_) => "redis" })
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &StoreSettings {
        each!(self, s => s.settings())
    }

    /// The full name of a queue, with the namespace.
    pub fn queue_name(&self, job: &str) -> String {
        format!("{}:{job}", self.settings().namespace)
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        each!(self, s => s.ping().await)
    }

    /// Adds a job to a queue, durably, unless its key was seen within the dedup window.
    /// Returns only once the job is committed.
    pub async fn enqueue(&self, item: QueueItem<'_>) -> Result<Enqueued, StoreError> {
        let job = batch::Job {
            queue: item.queue.to_owned(),
            payload: item.payload,
            key: item.key.to_owned(),
            run_after: item.run_after,
        };
        each!(self, s => s.batcher().enqueue(job).await)
    }

    /// Hands a queue's delayed jobs that are due to its workers. On Redis delayed jobs
    /// wait apart until then (apalis-redis cannot promote many at once); on SQLite the
    /// queue does it itself and this does nothing.
    pub async fn promote_due(&self, queue: &str) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Redis(s) => s.promote_due(queue).await,
        }
    }

    /// Jobs waiting in a queue (due now or scheduled).
    pub async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        each!(self, s => s.queue_depth(queue).await)
    }

    /// The jobs of a queue that wait for a later time, the soonest first: on SQLite the
    /// pending ones, on Redis the delayed ones not yet handed to the workers.
    pub async fn waiting(&self, queue: &str) -> Result<Vec<Waiting>, StoreError> {
        each!(self, s => s.waiting(queue).await)
    }

    /// Records that an event was handled. Returns false when it already was (a redelivery).
    pub async fn record_handled(
        &self,
        event: &Event,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.record_handled(event, at).await)
    }

    /// The latest handled events, newest first.
    pub async fn journal(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        each!(self, s => s.journal(limit).await)
    }

    /// How many events were handled in all.
    pub async fn journal_len(&self) -> Result<u64, StoreError> {
        each!(self, s => s.journal_len().await)
    }

    /// Stores a presence report unless a newer one is already there. Returns whether it
    /// was stored.
    pub async fn set_presence(&self, presence: &Presence) -> Result<bool, StoreError> {
        each!(self, s => s.set_presence(presence).await)
    }

    /// The latest presence report of a manager.
    pub async fn presence(&self, manager_id: &str) -> Result<Option<Presence>, StoreError> {
        each!(self, s => s.presence(manager_id).await)
    }

    /// Leads each manager (by CRM user id) received on `day`; a manager with none is absent.
    pub async fn loads(&self, day: NaiveDate) -> Result<HashMap<String, u32>, StoreError> {
        each!(self, s => s.loads(day).await)
    }

    /// Gives `lead_id` to `manager_id` on `day`, atomically, if the manager's count for
    /// the day is still `expected` (what the decision saw) and the lead was not given that
    /// day: then the count goes up by one. A lead is counted once however many workers
    /// claim it, and two workers that picked the same least-loaded manager cannot both
    /// have them: the second gets [`Claim::Moved`] and decides again.
    pub async fn claim_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
        expected: u32,
    ) -> Result<Claim, StoreError> {
        each!(self, s => s.claim_lead(day, lead_id, manager_id, expected).await)
    }

    /// Takes a lead given on `day` back from its manager (their count goes down by one).
    /// Returns who had it, or `None` when it was not given that day.
    pub async fn release_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
    ) -> Result<Option<String>, StoreError> {
        each!(self, s => s.release_lead(day, lead_id).await)
    }

    /// Moves a lead to `manager_id` on `day`, as a person did by hand: the load follows,
    /// down for whoever had it, up for the new manager, whatever the counts. Returns who
    /// had it before.
    pub async fn reassign(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
    ) -> Result<Option<String>, StoreError> {
        each!(self, s => s.reassign(day, lead_id, manager_id).await)
    }

    /// Puts a lead on the pending list. A lead already there keeps the time it began to
    /// wait and takes the new priority.
    pub async fn add_pending(
        &self,
        lead_id: &str,
        priority: Priority,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        each!(self, s => s.add_pending(lead_id, priority, since).await)
    }

    /// The pending list in the order to retry it: priority 1 first, then the oldest.
    pub async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let mut list = each!(self, s => s.pending().await)?;
        list.sort_by(|a, b| {
            (a.priority, a.since, &a.lead_id).cmp(&(b.priority, b.since, &b.lead_id))
        });
        Ok(list)
    }

    /// Takes a lead off the pending list; returns whether it was there.
    pub async fn remove_pending(&self, lead_id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.remove_pending(lead_id).await)
    }

    /// Puts a job on the dead-letter list; returns its id there.
    pub async fn add_dead(
        &self,
        queue: &str,
        payload: &str,
        error: &str,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        each!(self, s => s.add_dead(queue, payload, error, attempts, at).await)
    }

    /// The dead-letter list, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        each!(self, s => s.dead_letters().await)
    }

    /// Removes a dead letter and returns it (to be re-queued).
    pub async fn take_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        each!(self, s => s.take_dead(id).await)
    }

    /// Whether a request under the rate limit `bucket` may go now (`None`), or how long to
    /// wait first. The limit's state lives in the store, so every process sharing the store
    /// shares the limit.
    pub async fn admit(&self, bucket: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        each!(self, s => s.admit(bucket, rate).await)
    }

    /// A small value kept by name (an OAuth token pair, a watermark).
    pub async fn value(&self, name: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.value(name).await)
    }

    /// Keeps a small value by name.
    pub async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        each!(self, s => s.set_value(name, value).await)
    }

    /// Keeps a small value by name for at most `ttl`, after which it reads as absent and
    /// the store drops it (Redis by itself; SQLite at the periodic sweep): for what matters
    /// only for a while, such as which step sent a message whose status may still come.
    pub async fn set_value_for(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        each!(self, s => s.set_value_for(name, value, ttl).await)
    }

    /// Forgets a named value; nothing happens when there is none.
    pub async fn remove_value(&self, name: &str) -> Result<(), StoreError> {
        each!(self, s => s.remove_value(name).await)
    }

    /// Takes the lock `name` for at most `ttl` unless another holder has it. Returns the
    /// token to release it with, or `None` when it is taken.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        each!(self, s => s.try_lock(name, ttl).await)
    }

    /// Releases a lock taken with `token` (a lock that expired and went to another holder
    /// is left alone).
    pub async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        each!(self, s => s.unlock(name, token).await)
    }

    /// Records a lead's score in the ledger. Scoring a lead again replaces its prediction
    /// (the created time included) and keeps the outcome already recorded.
    pub async fn record_score(&self, scored: &Scored) -> Result<(), StoreError> {
        each!(self, s => s.record_score(scored).await)
    }

    /// Records how a lead ended, replacing an outcome recorded before (a lead reopened and
    /// closed again). A lead not scored yet keeps its outcome until it is: the CRM may close
    /// a lead before the robot scores it, and the score then finds the outcome waiting.
    pub async fn record_outcome(&self, outcome: &Outcome) -> Result<(), StoreError> {
        each!(self, s => s.record_outcome(outcome).await)
    }

    /// The scored leads created in `[from, to)`, by created time and then lead id, each
    /// with its outcome once known. Leads with an outcome but no score are not listed.
    pub async fn ledger(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        each!(self, s => s.ledger(from, to).await)
    }

    /// Forgets what is older than the dedup window: handled events of the journal and the
    /// finished jobs of `queues` (and so their dedup keys). Returns how many records went.
    /// The score ledger is never swept: forecasts are compared over months and years.
    pub async fn sweep(&self, now: DateTime<Utc>, queues: &[&str]) -> Result<u64, StoreError> {
        each!(self, s => s.sweep(now, queues).await)
    }

    // Follow-up chains.

    /// Adds an enrolment unless one with its key is there: enrolling twice (a redelivered
    /// event) is the same enrolment. Returns whether it was added.
    pub async fn add_enrolment(&self, enrolment: &Enrolment) -> Result<bool, StoreError> {
        each!(self, s => s.add_enrolment(enrolment).await)
    }

    /// The enrolment of this key.
    pub async fn enrolment(&self, key: &str) -> Result<Option<EnrolmentRecord>, StoreError> {
        each!(self, s => s.enrolment(key).await)
    }

    /// The enrolments of a lead, running or not, in the order of their keys.
    pub async fn enrolments_of(&self, lead_id: &str) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let mut list = each!(self, s => s.enrolments_of(lead_id).await)?;
        list.sort_by(|a, b| a.enrolment.key.cmp(&b.enrolment.key));
        Ok(list)
    }

    /// Every enrolment, in the order of their keys.
    pub async fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let mut list = each!(self, s => s.enrolments().await)?;
        list.sort_by(|a, b| a.enrolment.key.cmp(&b.enrolment.key));
        Ok(list)
    }

    /// Saves an enrolment's progress and when its next step is due. Progress never goes
    /// back: a save whose next step is behind the stored one changes nothing (a late
    /// duplicate of a job). The stop is kept apart and is never undone by a save. Returns
    /// whether it was saved; false also when there is no such enrolment.
    pub async fn save_progress(
        &self,
        enrolment: &Enrolment,
        due_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.save_progress(enrolment, due_at).await)
    }

    /// Stops an enrolment, unless it is stopped already (the first reason stays). Returns
    /// whether this call stopped it.
    pub async fn stop_enrolment(&self, key: &str, stopped: &Stopped) -> Result<bool, StoreError> {
        each!(self, s => s.stop_enrolment(key, stopped).await)
    }

    /// Claims a step, atomically: `None` when this call claimed it (with `record`), else the
    /// record someone made before. A step nobody recorded, or one given back
    /// ([`StepState::Released`]), can be claimed.
    pub async fn claim_step(
        &self,
        key: &str,
        record: &StepRecord,
    ) -> Result<Option<StepRecord>, StoreError> {
        each!(self, s => s.claim_step(key, record).await)
    }

    /// Replaces a step's record, only when the step stands at `from` (a compare-and-set:
    /// of two workers that found one claimed step, one settles it). Returns whether it did.
    pub async fn settle_step(
        &self,
        key: &str,
        from: StepState,
        record: &StepRecord,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.settle_step(key, from, record).await)
    }

    /// The record of a step.
    pub async fn step_record(&self, key: &str) -> Result<Option<StepRecord>, StoreError> {
        each!(self, s => s.step_record(key).await)
    }

    /// Adds `member` to the set `name`; returns whether it was new.
    pub async fn add_member(&self, name: &str, member: &str) -> Result<bool, StoreError> {
        each!(self, s => s.add_member(name, member).await)
    }

    /// The members of the set `name`, sorted.
    pub async fn members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut list = each!(self, s => s.members(name).await)?;
        list.sort();
        Ok(list)
    }

    /// Appends `item` to the list `name` and keeps only its last `keep` items, in one step:
    /// a short history (a client's last messages) that never grows.
    pub async fn push_capped(&self, name: &str, item: &str, keep: usize) -> Result<(), StoreError> {
        each!(self, s => s.push_capped(name, item, keep.max(1)).await)
    }

    /// The items of the list `name`, the oldest first; empty when there is none.
    pub async fn list(&self, name: &str) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.list(name).await)
    }

    /// Adds `by` to the counter `name` and returns its new value, atomically. A counter
    /// that did not exist (or expired) starts from 0 and lives `ttl` from then.
    pub async fn bump(&self, name: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        each!(self, s => s.bump(name, by, ttl).await)
    }

    /// The counter `name`; 0 when absent or expired.
    pub async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        each!(self, s => s.counter(name).await)
    }
}
