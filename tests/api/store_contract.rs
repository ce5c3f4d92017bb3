//! One contract, two backends: what the rest of the robot relies on from the store.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use sales_robot::adapters::store::{Enqueued, QueueItem};
use sales_robot::domain::event::{Event, EventKind, Source};
use sales_robot::domain::presence::{Presence, PresenceState};

use crate::helpers::{Backend, fresh_store};
use crate::on_both_backends;

fn event(key: &str) -> Event {
    Event {
        source: Source::Amocrm,
        account: "robotdemo".into(),
        kind: EventKind::LeadDeleted,
        entity_id: "1".into(),
        crm_entity: None,
        occurred_at: None,
        modified_by: None,
        dedup_key: key.into(),
    }
}

async fn enqueue_dedups_by_key_and_counts_depth(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let q = store.queue_name("contract");
    let item = |key: &'static str, after: Option<Duration>| QueueItem {
        queue: &q,
        payload: b"{}".to_vec(),
        key,
        run_after: after,
    };
    assert_eq!(store.enqueue(item("a", None)).await.unwrap(), Enqueued::New);
    assert_eq!(
        store.enqueue(item("a", None)).await.unwrap(),
        Enqueued::Duplicate
    );
    assert_eq!(
        store
            .enqueue(item("b", Some(Duration::from_secs(60))))
            .await
            .unwrap(),
        Enqueued::New
    );
    assert_eq!(
        store.queue_depth(&q).await.unwrap(),
        2,
        "due and scheduled jobs both count"
    );
    let other = store.queue_name("other");
    assert_eq!(store.queue_depth(&other).await.unwrap(), 0);
}
on_both_backends!(enqueue_dedups_by_key_and_counts_depth);

async fn the_journal_records_an_event_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
    assert!(store.record_handled(&event("k1"), at).await.unwrap());
    assert!(!store.record_handled(&event("k1"), at).await.unwrap());
    assert!(
        store
            .record_handled(&event("k2"), at + chrono::Duration::seconds(1))
            .await
            .unwrap()
    );
    assert_eq!(store.journal_len().await.unwrap(), 2);
    let latest = store.journal(1).await.unwrap();
    assert_eq!(latest[0].event.dedup_key, "k2");
    assert_eq!(latest[0].handled_at, at + chrono::Duration::seconds(1));
    // The sweep forgets what is older than the window (an hour in the tests).
    assert!(
        store
            .sweep(at + chrono::Duration::hours(2), &[])
            .await
            .unwrap()
            >= 2
    );
    assert_eq!(store.journal_len().await.unwrap(), 0);
}
on_both_backends!(the_journal_records_an_event_once);

async fn presence_keeps_the_newest_report(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = |m| {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-11-23T09:{m:02}:00+03:00")).unwrap()
    };
    let p = |state, m| Presence {
        manager_id: "7".into(),
        state,
        at: at(m),
    };
    assert!(
        store
            .set_presence(&p(PresenceState::Online, 0))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_presence(&p(PresenceState::OnCall, 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_presence(&p(PresenceState::Away, 1))
            .await
            .unwrap()
    );
    assert_eq!(
        store.presence("7").await.unwrap().unwrap().state,
        PresenceState::OnCall
    );
    assert!(store.presence("8").await.unwrap().is_none());
}
on_both_backends!(presence_keeps_the_newest_report);

async fn dead_letters_are_listed_and_taken_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
    let a = store
        .add_dead("q", "{\"a\":1}", "boom", 8, at)
        .await
        .unwrap();
    let b = store
        .add_dead("q", "{\"b\":2}", "bang", 8, at)
        .await
        .unwrap();
    let list = store.dead_letters().await.unwrap();
    assert_eq!(
        list.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(list[0].error, "boom");
    assert_eq!(list[0].failed_at, at);
    let taken = store.take_dead(&a).await.unwrap().unwrap();
    assert_eq!(taken.payload, "{\"a\":1}");
    assert!(store.take_dead(&a).await.unwrap().is_none());
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
}
on_both_backends!(dead_letters_are_listed_and_taken_once);

async fn a_rate_limit_is_shared_by_whoever_uses_the_store(backend: Backend) {
    use sales_robot::domain::rate::Rate;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let rate = Rate {
        per_second: 2.0,
        burst: 3,
    };
    for _ in 0..3 {
        assert_eq!(
            store.admit("crm", rate).await.unwrap(),
            None,
            "the burst goes at once"
        );
    }
    let wait = store
        .admit("crm", rate)
        .await
        .unwrap()
        .expect("the fourth waits");
    assert!(
        wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    assert_eq!(
        store.admit("other", rate).await.unwrap(),
        None,
        "limits are by name"
    );
    tokio::time::sleep(wait).await;
    assert_eq!(store.admit("crm", rate).await.unwrap(), None);
}
on_both_backends!(a_rate_limit_is_shared_by_whoever_uses_the_store);

async fn values_and_locks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    assert_eq!(store.value("tokens").await.unwrap(), None);
    store.set_value("tokens", "a").await.unwrap();
    store.set_value("tokens", "b").await.unwrap();
    assert_eq!(store.value("tokens").await.unwrap().as_deref(), Some("b"));

    let token = store
        .try_lock("refresh", Duration::from_millis(300))
        .await
        .unwrap()
        .expect("free");
    assert!(
        store
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "taken"
    );
    store.unlock("refresh", "not-the-token").await.unwrap();
    assert!(
        store
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "still taken"
    );
    store.unlock("refresh", &token).await.unwrap();
    let again = store
        .try_lock("refresh", Duration::from_millis(200))
        .await
        .unwrap()
        .expect("released");
    // An expired lock can be taken by another holder.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    let _ = again;
}
on_both_backends!(values_and_locks);
