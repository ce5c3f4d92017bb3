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
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"outcome="dead""#), "{metrics}");

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
