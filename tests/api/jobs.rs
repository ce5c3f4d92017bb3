//! The `HandleEvent` job: retried with backoff, dead-lettered, re-queued by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sales_robot::adapters::store::Store;
use sales_robot::domain::event::Event;
use sales_robot::domain::retry::RetryPolicy;
use sales_robot::service::jobs::{EventHandler, HandlerError, Journal};

use crate::helpers::{Backend, eventually, fixture, spawn_app_with};
use crate::on_both_backends;

/// Fails the first `fail` times, then records the event like the journal handler.
struct Flaky {
    fail: u32,
    calls: AtomicU32,
    first_call: std::sync::Mutex<Vec<Instant>>,
}

impl Flaky {
    fn new(fail: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail,
            calls: AtomicU32::new(0),
            first_call: Default::default(),
        })
    }
}

impl EventHandler for Flaky {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.first_call.lock().unwrap().push(Instant::now());
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(HandlerError::Other("the CRM answered 502".into()));
            }
            Journal.handle(event, store).await
        })
    }
}

async fn a_failing_event_is_retried_with_backoff_then_handled(backend: Backend) {
    let flaky = Flaky::new(2);
    let app = spawn_app_with(backend, flaky.clone(), |s| {
        s.retry = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
    })
    .await;
    assert_eq!(
        app.post_amocrm(fixture("amocrm/lead_add.form"))
            .await
            .status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    let times = flaky.first_call.lock().unwrap().clone();
    // Waits of 1 s then 2 s (the queue's resolution is a second, so allow for it).
    assert!(
        times[1] - times[0] >= Duration::from_millis(900),
        "{times:?}"
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(1000),
        "{times:?}"
    );
    assert!(app.store.dead_letters().await.unwrap().is_empty());
    app.stop().await;
}
on_both_backends!(a_failing_event_is_retried_with_backoff_then_handled);

async fn an_event_that_always_fails_is_dead_lettered_and_can_be_requeued(backend: Backend) {
    let flaky = Flaky::new(3);
    let app = spawn_app_with(backend, flaky.clone(), |s| {
        s.retry = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
    })
    .await;
    assert_eq!(
        app.post_amocrm(fixture("amocrm/lead_add.form"))
            .await
            .status(),
        200
    );
    let store = app.store.clone();
    eventually(20, || {
        let store = store.clone();
        async move { !store.dead_letters().await.unwrap().is_empty() }
    })
    .await
    .expect("the event reaches the dead letters");
    let dead = app.store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("502"), "{:?}", dead[0]);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    assert_eq!(app.store.journal_len().await.unwrap(), 0);
    app.wait_for_metric(r#"outcome="dead""#, 10).await;

    // A person fixed the cause and re-queues it: the 4th call succeeds.
    let letter = app
        .jobs
        .retry_dead(&dead[0].id)
        .await
        .unwrap()
        .expect("the letter exists");
    assert_eq!(letter.id, dead[0].id);
    app.wait_for_journal(1, 10).await;
    assert!(app.store.dead_letters().await.unwrap().is_empty());
    assert!(app.jobs.retry_dead("999999").await.unwrap().is_none());
    app.stop().await;
}
on_both_backends!(an_event_that_always_fails_is_dead_lettered_and_can_be_requeued);

async fn finished_jobs_are_forgotten_after_the_dedup_window(backend: Backend) {
    let app = spawn_app_with(backend, std::sync::Arc::new(Journal), |_| {}).await;
    assert_eq!(
        app.post_amocrm(fixture("amocrm/leads_add_two.form"))
            .await
            .status(),
        200
    );
    app.wait_for_journal(2, 10).await;
    let now = chrono::Utc::now();
    // Within the window nothing goes.
    let early = app.store.sweep(now, &[app.jobs.queue()]).await.unwrap();
    assert_eq!(early, 0);
    // Past it, both journal records and both finished jobs go (the window is an hour here).
    let store = app.store.clone();
    let queue = app.jobs.queue().to_owned();
    // A job is marked done just after its handler records the event, so the records and
    // the jobs may go in different sweeps: count across them.
    let swept = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    eventually(10, || {
        let (store, queue, swept) = (store.clone(), queue.clone(), swept.clone());
        let later = now + chrono::Duration::hours(2);
        async move {
            let now_swept = store.sweep(later, &[&queue]).await.unwrap();
            let total = swept.fetch_add(now_swept, std::sync::atomic::Ordering::SeqCst) + now_swept;
            total >= 4
        }
    })
    .await
    .expect("two records and two jobs are swept");
    assert_eq!(app.store.journal_len().await.unwrap(), 0);
    app.stop().await;
}
on_both_backends!(finished_jobs_are_forgotten_after_the_dedup_window);

/// `n` distinct `lead_created` events' jobs, each keyed by its event.
fn lead_jobs(n: usize) -> Vec<sales_robot::service::jobs::HandleEvent> {
    use sales_robot::domain::event::{EventKind, Source};
    (0..n)
        .map(|i| sales_robot::service::jobs::HandleEvent {
            event: Event {
                source: Source::Amocrm,
                account: "shop".into(),
                kind: EventKind::LeadCreated {
                    status_id: None,
                    pipeline_id: None,
                    responsible_user_id: None,
                },
                entity_id: i.to_string(),
                crm_entity: None,
                occurred_at: None,
                modified_by: None,
                dedup_key: format!("burst-{i}"),
            },
            attempt: 1,
        })
        .collect()
}

/// Queues `jobs` all at once, each after `delay`.
async fn enqueue_all(
    app: &crate::helpers::TestApp,
    jobs: Vec<sales_robot::service::jobs::HandleEvent>,
    delay: Option<Duration>,
) {
    use sales_robot::adapters::store::{Enqueued, QueueItem};
    let queue = app.jobs.queue().to_owned();
    let enqueues = jobs.into_iter().map(|job| {
        let (store, queue) = (app.store.clone(), queue.clone());
        async move {
            store
                .enqueue(QueueItem {
                    queue: &queue,
                    payload: serde_json::to_vec(&job).unwrap(),
                    key: &job.key(),
                    run_after: delay,
                })
                .await
                .unwrap()
        }
    });
    let outcomes = futures::future::join_all(enqueues).await;
    assert!(outcomes.iter().all(|o| *o == Enqueued::New));
}

/// How many jobs a burst test queues: ten thousand on Redis, past the limit it is about;
/// SQLite's queue fetches with a `LIMIT` and has no such limit, and a thousand there shows
/// the same behaviour at a cost CI can pay.
fn burst(backend: Backend) -> usize {
    match backend {
        Backend::Redis => 10_000,
        Backend::Sqlite => 1_000,
    }
}

/// Ten thousand delayed jobs falling due in the same second: apalis-redis alone moves every
/// due job in one Lua call and fails past about 8,000, which stopped the queue for good.
async fn ten_thousand_delayed_jobs_due_at_once_all_run(backend: Backend) {
    let n = burst(backend);
    let app = spawn_app_with(backend, Arc::new(Journal), |_| {}).await;
    let started = Instant::now();
    let delay = Duration::from_secs(4);
    enqueue_all(&app, lead_jobs(n), Some(delay)).await;
    assert!(
        started.elapsed() < delay,
        "the enqueues took {:?}: not all of them fell due together",
        started.elapsed()
    );
    assert_eq!(app.queue_depth().await, n as u64);
    app.wait_for_journal(n as u64, 120).await;
    assert_eq!(app.store.journal_len().await.unwrap(), n as u64);
    app.stop().await;
}
on_both_backends!(ten_thousand_delayed_jobs_due_at_once_all_run);

/// Holds every job until opened, then records it like the journal handler.
struct Gate(tokio::sync::Semaphore);

impl EventHandler for Gate {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let _pass = self.0.acquire().await.expect("the gate stays");
            Journal.handle(event, store).await
        })
    }
}

/// A burst of ten thousand jobs due now while the workers are stuck (a bulk import in the
/// CRM while it answers slowly): they all run once the workers can take them.
async fn a_burst_queued_while_the_workers_are_busy_all_runs(backend: Backend) {
    let n = burst(backend);
    let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
    let app = spawn_app_with(backend, gate.clone(), |_| {}).await;
    enqueue_all(&app, lead_jobs(n), None).await;
    // Let the workers look at the queue a few times with all of it due.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.store.journal_len().await.unwrap(), 0);
    gate.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
    app.wait_for_journal(n as u64, 120).await;
    assert_eq!(app.store.journal_len().await.unwrap(), n as u64);
    app.stop().await;
}
on_both_backends!(a_burst_queued_while_the_workers_are_busy_all_runs);
