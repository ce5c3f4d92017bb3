//! The workers that take `HandleEvent` jobs (and, when chains run, `RunStep` and
//! `CheckLead` jobs) off their queues, under an apalis `Monitor` that restarts a worker whose backend failed, and stops
//! them gracefully.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;

use crate::adapters::store::Store;
use crate::service::chains::{CheckLead, RunStep, StepJobs};
use crate::service::jobs::{HandleEvent, Jobs};

/// How often an idle worker looks for new jobs: without it apalis only looks again at the
/// next heartbeat, and a webhook would wait seconds for its worker. On Redis too: apalis-redis
/// 1.0 files every job under its scheduled set, even one due now, and wakes no idle worker.
const POLL: Duration = Duration::from_millis(100);

async fn handle_event(job: HandleEvent, jobs: Data<Arc<Jobs>>) -> Result<(), BoxDynError> {
    jobs.run(job).await.map_err(|e| Box::new(e) as BoxDynError)
}

async fn run_step(job: RunStep, steps: Data<Arc<StepJobs>>) -> Result<(), BoxDynError> {
    steps.run(job).await.map_err(|e| Box::new(e) as BoxDynError)
}

async fn check_lead(job: CheckLead, steps: Data<Arc<StepJobs>>) -> Result<(), BoxDynError> {
    steps
        .check(job)
        .await
        .map_err(|e| Box::new(e) as BoxDynError)
}

/// A worker name unique to this start of the worker: apalis-redis refuses a worker whose
/// name was seen alive recently, which a restart under a fixed name would hit (the monitor
/// restarting a worker in the same process too, hence the count).
pub fn unique_name(prefix: &str) -> String {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{host}-{}-{started}-{n}", std::process::id())
}

/// Hands the queue's due delayed jobs to its workers every [`POLL`] (see
/// `Store::promote_due`), until aborted. A failure is logged and tried again.
fn spawn_promoter(store: Store, queue: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = store.promote_due(&queue).await {
                tracing::warn!(queue = %queue, error = %e, "could not hand delayed jobs to the queue; will retry");
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// Runs the workers until `shutdown` resolves, then lets in-flight jobs finish for at most
/// `grace`. Errors when the workers gave up (their backend kept failing).
pub async fn run(
    jobs: Arc<Jobs>,
    concurrency: usize,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MonitorError> {
    run_with_steps(jobs, None, concurrency, grace, shutdown).await
}

/// The same, with workers for the chains' steps and wake-ups beside the events' when
/// `steps` is given.
pub async fn run_with_steps(
    jobs: Arc<Jobs>,
    steps: Option<Arc<StepJobs>>,
    concurrency: usize,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MonitorError> {
    let queue = jobs.queue().to_owned();
    let signal = async move {
        shutdown.await;
        Ok(())
    };
    let monitor = Monitor::new()
        .shutdown_timeout(grace)
        .should_restart(|ctx, err| {
            tracing::error!(worker = ctx.name(), error = %err, "worker stopped; restarting");
            true
        });
    match jobs.store().clone() {
        Store::Sqlite(s) => {
            let backend = SqliteStorage::<HandleEvent>::new(s.pool())
                .with_config(s.queue_config(&queue))
                .poll_with_interval(POLL);
            let mut monitor = monitor.register(move |_| {
                WorkerBuilder::new(unique_name("sales-robot"))
                    .backend(backend.clone())
                    .concurrency(concurrency)
                    .data(jobs.clone())
                    .build(handle_event)
            });
            if let Some(steps) = steps {
                let backend = SqliteStorage::<RunStep>::new(s.pool())
                    .with_config(s.queue_config(steps.queue()))
                    .poll_with_interval(POLL);
                let checks = SqliteStorage::<CheckLead>::new(s.pool())
                    .with_config(s.queue_config(steps.check_queue()))
                    .poll_with_interval(POLL);
                let data = steps.clone();
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(unique_name("sales-robot-steps"))
                        .backend(backend.clone())
                        .concurrency(concurrency)
                        .data(data.clone())
                        .build(run_step)
                });
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(unique_name("sales-robot-checks"))
                        .backend(checks.clone())
                        .concurrency(concurrency)
                        .data(steps.clone())
                        .build(check_lead)
                });
            }
            monitor.run_with_signal(signal).await
        }
        Store::Redis(r) => {
            let mut promoters = vec![spawn_promoter(jobs.store().clone(), queue.clone())];
            let backend = RedisStorage::<HandleEvent>::new(r.connection())
                .with_config(r.queue_config(&queue))
                .poll_with_interval(POLL);
            let mut monitor = monitor.register(move |_| {
                WorkerBuilder::new(unique_name("sales-robot"))
                    .backend(backend.clone())
                    .concurrency(concurrency)
                    .data(jobs.clone())
                    .build(handle_event)
            });
            if let Some(steps) = steps {
                for queue in [steps.queue(), steps.check_queue()] {
                    promoters.push(spawn_promoter(steps.store().clone(), queue.to_owned()));
                }
                let backend = RedisStorage::<RunStep>::new(r.connection())
                    .with_config(r.queue_config(steps.queue()))
                    .poll_with_interval(POLL);
                let checks = RedisStorage::<CheckLead>::new(r.connection())
                    .with_config(r.queue_config(steps.check_queue()))
                    .poll_with_interval(POLL);
                let data = steps.clone();
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(unique_name("sales-robot-steps"))
                        .backend(backend.clone())
                        .concurrency(concurrency)
                        .data(data.clone())
                        .build(run_step)
                });
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(unique_name("sales-robot-checks"))
                        .backend(checks.clone())
                        .concurrency(concurrency)
                        .data(steps.clone())
                        .build(check_lead)
                });
            }
            let ran = monitor.run_with_signal(signal).await;
            for promoter in promoters {
                promoter.abort();
            }
            ran
        }
    }
}
