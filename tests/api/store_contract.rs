//! One contract, two backends: what the rest of the robot relies on from the store.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use sales_robot::adapters::store::{Enqueued, QueueItem};
use sales_robot::domain::event::{Event, EventKind, Source};
use sales_robot::domain::ledger::{LedgerRow, Outcome, Scored};
use sales_robot::domain::presence::{Presence, PresenceState};
use sales_robot::domain::priority::Priority;

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

fn scored(lead: &str, created_at: &str, forecast: f64) -> Scored {
    let created_at = chrono::DateTime::parse_from_rfc3339(created_at)
        .unwrap()
        .with_timezone(&Utc);
    Scored {
        lead_id: lead.into(),
        created_at,
        scored_at: created_at + chrono::Duration::minutes(1),
        manager_id: Some("8123456".into()),
        channel: Some("whatsapp".into()),
        source: Some("svarka.ru".into()),
        budget: forecast * 5.0,
        probability: 0.4,
        expected_profit: forecast * 1.5,
        forecast_profit: forecast,
        priority: Priority::new(2).unwrap(),
    }
}

fn outcome(lead: &str, won: bool, profit: f64) -> Outcome {
    Outcome {
        lead_id: lead.into(),
        closed_at: Utc.with_ymd_and_hms(2026, 11, 20, 15, 30, 0).unwrap(),
        won,
        profit,
    }
}

fn november() -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    )
}

async fn scoring_a_lead_again_keeps_its_outcome(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let (from, to) = november();
    store
        .record_score(&scored("501", "2026-11-10T09:00:00Z", 100_000.0))
        .await
        .unwrap();
    store
        .record_outcome(&outcome("501", true, 90_000.0))
        .await
        .unwrap();
    let rescored = scored("501", "2026-11-10T09:00:00.123456Z", 120_000.0);
    store.record_score(&rescored).await.unwrap();
    let rows = store.ledger(from, to).await.unwrap();
    assert_eq!(
        rows,
        [LedgerRow {
            scored: rescored.clone(),
            outcome: Some(outcome("501", true, 90_000.0)),
        }],
        "one row per lead: the new prediction, the outcome kept"
    );
    // A lead reopened and closed again has its last outcome.
    store
        .record_outcome(&outcome("501", false, 0.0))
        .await
        .unwrap();
    let rows = store.ledger(from, to).await.unwrap();
    assert_eq!(rows[0].outcome, Some(outcome("501", false, 0.0)));
    assert_eq!(rows[0].scored, rescored);

    // Scores and outcomes written at the same time by several workers: none is lost.
    let writes = (0..20).flat_map(|i| {
        let lead = format!("9{i:02}");
        let (a, b) = (store.clone(), store.clone());
        let (s, o) = (
            scored(&lead, "2026-11-11T09:00:00Z", 1_000.0),
            outcome(&lead, true, 900.0),
        );
        [
            tokio::spawn(async move { a.record_score(&s).await.unwrap() }),
            tokio::spawn(async move { b.record_outcome(&o).await.unwrap() }),
        ]
    });
    for write in writes.collect::<Vec<_>>() {
        write.await.unwrap();
    }
    let rows = store.ledger(from, to).await.unwrap();
    assert_eq!(rows.len(), 21);
    assert!(rows.iter().all(|r| r.outcome.is_some()), "{rows:?}");
}
on_both_backends!(scoring_a_lead_again_keeps_its_outcome);

async fn an_outcome_before_the_score_waits_for_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let (from, to) = november();
    store
        .record_outcome(&outcome("777", true, 50_000.0))
        .await
        .unwrap();
    assert!(
        store.ledger(from, to).await.unwrap().is_empty(),
        "a lead never scored is in no month"
    );
    store
        .record_score(&scored("777", "2026-11-02T10:00:00Z", 40_000.0))
        .await
        .unwrap();
    let rows = store.ledger(from, to).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].scored.forecast_profit, 40_000.0);
    assert_eq!(rows[0].outcome, Some(outcome("777", true, 50_000.0)));
}
on_both_backends!(an_outcome_before_the_score_waits_for_it);

async fn the_ledger_reads_a_month_by_created_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let (from, to) = november();
    for (lead, at) in [
        ("before", "2026-10-31T23:59:59.999999Z"),
        ("last", "2026-11-30T23:59:59.999999Z"),
        ("b", "2026-11-15T12:00:00Z"),
        ("a", "2026-11-15T12:00:00Z"),
        ("first", "2026-11-01T00:00:00Z"),
        ("after", "2026-12-01T00:00:00Z"),
        ("moved", "2026-11-20T08:00:00Z"),
    ] {
        store
            .record_score(&scored(lead, at, 1_000.0))
            .await
            .unwrap();
    }
    // Scored again with another created time, a lead moves to that month.
    store
        .record_score(&scored("moved", "2026-12-02T08:00:00Z", 1_000.0))
        .await
        .unwrap();
    let ids = |rows: Vec<LedgerRow>| {
        rows.into_iter()
            .map(|r| r.scored.lead_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.ledger(from, to).await.unwrap()),
        ["first", "a", "b", "last"],
        "[from, to): by created time, then by lead id"
    );
    let december = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        ids(store.ledger(to, december).await.unwrap()),
        ["after", "moved"]
    );
    assert!(store.ledger(to, to).await.unwrap().is_empty());
    // The sweep forgets the journal, never the ledger.
    store
        .sweep(december + chrono::Duration::days(400), &[])
        .await
        .unwrap();
    assert_eq!(store.ledger(from, to).await.unwrap().len(), 4);
}
on_both_backends!(the_ledger_reads_a_month_by_created_time);
