//! The `HandleEvent` job: one event from the queue, handled at least once, retried with
//! backoff, dead-lettered when it keeps failing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::adapters::store::{DeadLetter, Enqueued, QueueItem, Store, StoreError};
use crate::domain::event::Event;
use crate::domain::retry::{AfterFailure, RetryPolicy};
use crate::service::metrics;

/// The job's name: its queue is `<namespace>:handle_event`.
pub const HANDLE_EVENT: &str = "handle_event";

/// One event to handle, and which attempt this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleEvent {
    /// The event.
    pub event: Event,
    /// 1 for the first try.
    pub attempt: u32,
}

impl HandleEvent {
    /// The key that makes the job unique: the event's dedup key, and the attempt for
    /// retries, so that a retry scheduled twice (a crash in between) runs once.
    pub fn key(&self) -> String {
        if self.attempt <= 1 {
            self.event.dedup_key.clone()
        } else {
            format!("{}#{}", self.event.dedup_key, self.attempt)
        }
    }
}

/// Handling an event failed; the job will be retried.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else a handler reports.
    #[error("{0}")]
    Other(String),
}

/// What the robot does with an event. Later capabilities (scoring, routing, chains) plug in
/// here; the default records it in the journal.
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. Must be idempotent: it may run more than once for one event.
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// Records every event in the store's journal and logs it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Journal;

impl EventHandler for Journal {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let first = store.record_handled(event, Utc::now()).await?;
            if first {
                tracing::info!(source = %event.source, kind = event.kind.name(), entity = %event.entity_id, key = %event.dedup_key, "event handled");
            } else {
                tracing::debug!(key = %event.dedup_key, "event already handled");
            }
            Ok(())
        })
    }
}

/// Everything a job needs: the store, the handler, the retry policy.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    handler: Arc<dyn EventHandler>,
    retry: RetryPolicy,
    queue: String,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("queue", &self.queue)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Jobs {
    /// Jobs on `store`, handled by `handler`.
    pub fn new(store: Store, handler: Arc<dyn EventHandler>, retry: RetryPolicy) -> Jobs {
        let queue = store.queue_name(HANDLE_EVENT);
        Jobs {
            store,
            handler,
            retry,
            queue,
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

    /// Puts an event on the queue (first attempt), unless it is a duplicate.
    pub async fn enqueue(&self, event: &Event) -> Result<Enqueued, StoreError> {
        self.push(
            &HandleEvent {
                event: event.clone(),
                attempt: 1,
            },
            None,
        )
        .await
    }

    async fn push(
        &self,
        job: &HandleEvent,
        after: Option<Duration>,
    ) -> Result<Enqueued, StoreError> {
        let key = job.key();
        self.store
            .enqueue(QueueItem {
                queue: &self.queue,
                payload: serde_json::to_vec(job)?,
                key: &key,
                run_after: after,
            })
            .await
    }

    /// Runs one job: handles the event; on failure schedules the next attempt after the
    /// backoff, or dead-letters it after the last. An error here (the store is down) makes
    /// the queue deliver the job again.
    pub async fn run(&self, job: HandleEvent) -> Result<(), StoreError> {
        let error = match self.handler.handle(&job.event, &self.store).await {
            Ok(()) => {
                ::metrics::counter!(metrics::JOBS, "job" => HANDLE_EVENT, "outcome" => "ok")
                    .increment(1);
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        match self.retry.after_failure(job.attempt) {
            AfterFailure::RetryAfter { attempt, wait } => {
                tracing::warn!(key = %job.event.dedup_key, attempt = job.attempt, error = %error, retry_in = ?wait, "event failed; will retry");
                self.push(
                    &HandleEvent {
                        event: job.event,
                        attempt,
                    },
                    Some(wait),
                )
                .await?;
                ::metrics::counter!(metrics::JOBS, "job" => HANDLE_EVENT, "outcome" => "retry")
                    .increment(1);
            }
            AfterFailure::DeadLetter => {
                let payload = serde_json::to_string(&job)?;
                let id = self
                    .store
                    .add_dead(&self.queue, &payload, &error, job.attempt, Utc::now())
                    .await?;
                tracing::error!(key = %job.event.dedup_key, attempts = job.attempt, error = %error, dead_letter = %id, "event failed every attempt; dead-lettered");
                ::metrics::counter!(metrics::JOBS, "job" => HANDLE_EVENT, "outcome" => "dead")
                    .increment(1);
            }
        }
        Ok(())
    }

    /// Puts a dead letter back on the queue as a fresh first attempt. Returns the letter, or
    /// `None` when there is no such id.
    pub async fn retry_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let Some(letter) = self.store.take_dead(id).await? else {
            return Ok(None);
        };
        let mut job: HandleEvent = serde_json::from_str(&letter.payload)?;
        job.attempt = 1;
        // A fresh key: the first attempt's key is still remembered within the dedup window.
        job.event.dedup_key = format!("{}#requeued-{}", job.event.dedup_key, letter.id);
        if let Err(e) = self.push(&job, None).await {
            // Put it back rather than lose it.
            self.store
                .add_dead(
                    &letter.queue,
                    &letter.payload,
                    &letter.error,
                    letter.attempts,
                    letter.failed_at,
                )
                .await?;
            return Err(e);
        }
        Ok(Some(letter))
    }
}
