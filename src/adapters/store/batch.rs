//! Group commit for the queue: enqueues that arrive while one is being written go together
//! in the next write. Under load this turns many small writes into a few large ones (one
//! script call on Redis, one transaction on SQLite); alone, an enqueue goes at once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Enqueued, StoreError};

/// The most jobs written together.
const MAX_BATCH: usize = 128;

/// A job to enqueue, owned so that it can wait in the batch.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub queue: String,
    pub payload: Vec<u8>,
    pub key: String,
    pub run_after: Option<Duration>,
}

impl Job {
    /// The apalis task for this job, with its dedup key and its time.
    pub fn task(&self) -> apalis::prelude::TaskBuilder<Vec<u8>> {
        let mut builder =
            apalis::prelude::TaskBuilder::new(self.payload.clone()).idempotency_key(&self.key);
        if let Some(delay) = self.run_after {
            builder = builder.run_at_timestamp(super::not_before(delay));
        }
        builder
    }
}

/// The jobs of a batch grouped by queue: each queue with the positions of its jobs.
pub(super) fn by_queue(jobs: &[Job]) -> Vec<(&str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match groups.iter_mut().find(|(q, _)| *q == job.queue) {
            Some((_, members)) => members.push(i),
            None => groups.push((&job.queue, vec![i])),
        }
    }
    groups
}

struct Pending {
    job: Job,
    reply: oneshot::Sender<Result<Enqueued, String>>,
}

/// The handle that enqueues through the batch writer.
#[derive(Clone, Debug)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.job.key)
            .finish()
    }
}

impl Batcher {
    /// Starts the writer: `write` stores a batch and says, job by job, what happened.
    pub(super) fn spawn<W, F>(write: W) -> Batcher
    where
        W: Fn(Vec<Job>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<Enqueued>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (jobs, replies): (Vec<Job>, Vec<_>) =
                    batch.into_iter().map(|p| (p.job, p.reply)).unzip();
                match write(jobs).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx }
    }

    /// Enqueues one job; returns once the batch holding it is committed.
    pub(super) async fn enqueue(&self, job: Job) -> Result<Enqueued, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { job, reply })
            .await
            .map_err(|_| StoreError::Queue("the queue writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Queue("the queue writer has stopped".into()))?
            .map_err(StoreError::Queue)
    }
}
