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

async fn delayed_jobs_are_listed_with_their_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let q = store.queue_name("contract");
    let hours = |n: u64| Some(Duration::from_secs(n * 3600));
    for (key, after) in [("later", hours(2)), ("sooner", hours(1))] {
        let item = QueueItem {
            queue: &q,
            payload: format!("{{\"key\":\"{key}\"}}").into_bytes(),
            key,
            run_after: after,
        };
        assert_eq!(store.enqueue(item).await.unwrap(), Enqueued::New);
    }
    let waiting = store.waiting(&q).await.unwrap();
    let payloads: Vec<_> = waiting
        .iter()
        .map(|w| String::from_utf8(w.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads, [r#"{"key":"sooner"}"#, r#"{"key":"later"}"#]);
    let in_an_hour = Utc::now() + chrono::TimeDelta::hours(1);
    assert!((waiting[0].due - in_an_hour).num_seconds().abs() <= 2);
    assert!(
        store
            .waiting(&store.queue_name("other"))
            .await
            .unwrap()
            .is_empty()
    );
}
on_both_backends!(delayed_jobs_are_listed_with_their_time);

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

/// A value kept for a while (which step sent a WhatsApp message) reads back until its time
/// is up, then reads as absent, and the sweep leaves nothing of it; a value kept for good
/// stays.
async fn a_value_kept_for_a_while_is_forgotten(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    store.set_value("kept", "for good").await.unwrap();
    store
        .set_value_for("sent:1", "step 0", Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(
        store.value("sent:1").await.unwrap().as_deref(),
        Some("step 0")
    );
    // Kept again: the new value and the new time hold.
    store
        .set_value_for("sent:1", "step 1", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .set_value_for("sent:2", "step 2", Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.value("sent:2").await.unwrap(), None, "its time is up");
    assert_eq!(
        store.value("sent:1").await.unwrap().as_deref(),
        Some("step 1")
    );
    store.sweep(Utc::now(), &[]).await.unwrap();
    assert_eq!(store.value("sent:2").await.unwrap(), None);
    store
        .set_value_for("sent:2", "again", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.value("sent:2").await.unwrap().as_deref(),
        Some("again"),
        "a name whose value was forgotten can be kept again"
    );
    store.remove_value("sent:1").await.unwrap();
    assert_eq!(store.value("sent:1").await.unwrap(), None);
    assert_eq!(
        store.value("kept").await.unwrap().as_deref(),
        Some("for good")
    );
}
on_both_backends!(a_value_kept_for_a_while_is_forgotten);

async fn values_and_locks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    assert_eq!(store.value("tokens").await.unwrap(), None);
    store.set_value("tokens", "a").await.unwrap();
    store.set_value("tokens", "b").await.unwrap();
    assert_eq!(store.value("tokens").await.unwrap().as_deref(), Some("b"));
    store.remove_value("tokens").await.unwrap();
    assert_eq!(store.value("tokens").await.unwrap(), None);
    store.remove_value("tokens").await.unwrap();
    store.set_value("tokens", "b").await.unwrap();

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

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

async fn a_lead_is_claimed_once_and_the_load_follows_it(backend: Backend) {
    use sales_robot::adapters::store::Claim;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let day = day();
    assert!(store.loads(day).await.unwrap().is_empty());
    assert_eq!(
        store.claim_lead(day, "L1", "A", 0).await.unwrap(),
        Claim::Claimed
    );
    // The same lead again, by any worker and for anyone: who has it, counted once.
    assert_eq!(
        store.claim_lead(day, "L1", "A", 1).await.unwrap(),
        Claim::AlreadyAssigned("A".into())
    );
    assert_eq!(
        store.claim_lead(day, "L1", "B", 0).await.unwrap(),
        Claim::AlreadyAssigned("A".into())
    );
    // A decision that saw an older count loses and learns the new one.
    assert_eq!(
        store.claim_lead(day, "L2", "A", 0).await.unwrap(),
        Claim::Moved { count: 1 }
    );
    assert_eq!(
        store.claim_lead(day, "L2", "A", 1).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.claim_lead(day, "L3", "B", 0).await.unwrap(),
        Claim::Claimed
    );
    let loads = store.loads(day).await.unwrap();
    assert_eq!((loads["A"], loads["B"]), (2, 1));
    // Days are apart.
    let next = day.succ_opt().unwrap();
    assert!(store.loads(next).await.unwrap().is_empty());
    assert_eq!(
        store.claim_lead(next, "L1", "B", 0).await.unwrap(),
        Claim::Claimed
    );

    // Reassigned by hand: the load follows the lead.
    assert_eq!(
        store.reassign(day, "L2", "B").await.unwrap().as_deref(),
        Some("A")
    );
    let loads = store.loads(day).await.unwrap();
    assert_eq!((loads["A"], loads["B"]), (1, 2));
    assert_eq!(
        store.claim_lead(day, "L2", "A", 1).await.unwrap(),
        Claim::AlreadyAssigned("B".into())
    );
    assert_eq!(
        store.release_lead(day, "L1").await.unwrap().as_deref(),
        Some("A")
    );
    assert_eq!(store.release_lead(day, "L1").await.unwrap(), None);
    let loads = store.loads(day).await.unwrap();
    assert_eq!(loads.get("A"), None, "a manager at zero has no count");
    assert_eq!(loads["B"], 2);
    // A lead given to nobody yet can be given by hand.
    assert_eq!(store.reassign(day, "L9", "C").await.unwrap(), None);
    assert_eq!(store.loads(day).await.unwrap()["C"], 1);
    // Once released, the lead can be claimed again.
    assert_eq!(
        store.claim_lead(day, "L1", "A", 0).await.unwrap(),
        Claim::Claimed
    );
    if backend == Backend::Redis {
        // A day's counts and claims go by themselves after a week or so.
        let mut conn = redis::Client::open(crate::helpers::redis_url())
            .unwrap()
            .get_connection()
            .unwrap();
        let ns = &store.settings().namespace;
        for what in ["loads", "assigned"] {
            let ttl: i64 = redis::cmd("TTL")
                .arg(format!("{ns}:routing:2026-11-23:{what}"))
                .query(&mut conn)
                .unwrap();
            assert!((7 * 86_400..=8 * 86_400).contains(&ttl), "{what}: {ttl}");
        }
    }
}
on_both_backends!(a_lead_is_claimed_once_and_the_load_follows_it);

async fn pending_leads_come_by_priority_then_age(backend: Backend) {
    use sales_robot::adapters::store::Pending;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = |m| Utc.with_ymd_and_hms(2026, 11, 23, 9, m, 0).unwrap();
    let p = |n| Priority::new(n).unwrap();
    assert!(store.pending().await.unwrap().is_empty());
    store.add_pending("old3", p(3), at(1)).await.unwrap();
    store.add_pending("new1", p(1), at(5)).await.unwrap();
    store.add_pending("new3", p(3), at(4)).await.unwrap();
    store.add_pending("old1", p(1), at(2)).await.unwrap();
    // Added again later: it keeps its place in time.
    store.add_pending("old3", p(3), at(9)).await.unwrap();
    let list = store.pending().await.unwrap();
    let ids: Vec<&str> = list.iter().map(|l| l.lead_id.as_str()).collect();
    assert_eq!(ids, ["old1", "new1", "old3", "new3"]);
    assert_eq!(
        list[2],
        Pending {
            lead_id: "old3".into(),
            priority: p(3),
            since: at(1),
        }
    );
    // A new priority moves it, still with its first time.
    store.add_pending("new3", p(2), at(8)).await.unwrap();
    let list = store.pending().await.unwrap();
    assert_eq!(list[2].lead_id, "new3");
    assert_eq!(list[2].since, at(4));
    assert!(store.remove_pending("new1").await.unwrap());
    assert!(!store.remove_pending("new1").await.unwrap());
    assert_eq!(store.pending().await.unwrap().len(), 3);
}
on_both_backends!(pending_leads_come_by_priority_then_age);

/// Workers claiming at once, each deciding "the least loaded" from the loads it read and
/// deciding again when its claim finds the count moved: every lead goes once, and nobody
/// gets ahead by more than one lead. Each lead is offered by two workers.
async fn concurrent_claims_stay_fair_and_never_give_a_lead_twice(backend: Backend) {
    use sales_robot::adapters::store::Claim;
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 50;
    const LEADS: usize = WORKERS * PER_WORKER / 2;
    let managers = ["m1", "m2", "m3", "m4", "m5"];
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let day = day();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..PER_WORKER {
                let lead = format!("L{}", (w * PER_WORKER / 2 + i) % LEADS);
                loop {
                    let loads = store.loads(day).await.unwrap();
                    let count = |m: &str| loads.get(m).copied().unwrap_or(0);
                    let least = managers.iter().map(|m| count(m)).min().unwrap();
                    let tied: Vec<&str> = managers
                        .iter()
                        .copied()
                        .filter(|m| count(m) == least)
                        .collect();
                    let pick = tied[rand::random_range(0..tied.len())];
                    match store.claim_lead(day, &lead, pick, least).await.unwrap() {
                        Claim::Claimed => {
                            won.push(lead.clone());
                            break;
                        }
                        Claim::AlreadyAssigned(_) => break,
                        Claim::Moved { .. } => continue,
                    }
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    won.sort();
    let before = won.len();
    won.dedup();
    assert_eq!(before, won.len(), "a lead was claimed twice");
    assert_eq!(won.len(), LEADS, "every lead was claimed");
    let loads = store.loads(day).await.unwrap();
    let counts: Vec<u32> = managers.iter().map(|m| loads[*m]).collect();
    assert_eq!(counts.iter().sum::<u32>() as usize, LEADS, "{counts:?}");
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "{counts:?}");
}
on_both_backends!(concurrent_claims_stay_fair_and_never_give_a_lead_twice);

fn enrolment(key: &str, lead: &str) -> sales_robot::domain::chains::Enrolment {
    sales_robot::domain::chains::Enrolment {
        key: key.into(),
        chain: "ОП-2".into(),
        lead_id: lead.into(),
        enrolled_at: Utc.with_ymd_and_hms(2026, 3, 3, 11, 0, 0).unwrap(),
        stage: Some("4. Квалификация пройдена".into()),
        meeting_at: None,
        lost: false,
        next: 0,
        last_step_at: None,
    }
}

async fn an_enrolment_is_made_once_moves_forward_only_and_stops_once(backend: Backend) {
    use sales_robot::adapters::store::Stopped;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 11, 30, 0).unwrap();
    let e = enrolment("ОП-2:7:stage=4", "7");
    assert!(store.add_enrolment(&e).await.unwrap());
    // Enrolling again (a redelivered event) changes nothing, progress included.
    let mut ahead = e.clone();
    ahead.step_done(0, at);
    assert!(store.save_progress(&ahead, Some(at)).await.unwrap());
    assert!(!store.add_enrolment(&e).await.unwrap());
    let got = store.enrolment(&e.key).await.unwrap().unwrap();
    assert_eq!(got.enrolment.next, 1);
    assert_eq!(got.due_at, Some(at));
    assert!(got.is_running());
    // A late duplicate cannot take progress back.
    assert!(!store.save_progress(&e, None).await.unwrap());
    assert_eq!(
        store
            .enrolment(&e.key)
            .await
            .unwrap()
            .unwrap()
            .enrolment
            .next,
        1
    );
    // Nor can a save of something never enrolled create it.
    assert!(
        !store
            .save_progress(&enrolment("other", "9"), None)
            .await
            .unwrap()
    );
    assert!(store.enrolment("other").await.unwrap().is_none());

    assert!(store.add_enrolment(&enrolment("b:7", "7")).await.unwrap());
    assert!(store.add_enrolment(&enrolment("c:8", "8")).await.unwrap());
    let keys = |list: Vec<sales_robot::adapters::store::EnrolmentRecord>| -> Vec<String> {
        list.into_iter().map(|r| r.enrolment.key).collect()
    };
    assert_eq!(
        keys(store.enrolments_of("7").await.unwrap()),
        ["b:7", "ОП-2:7:stage=4"]
    );
    assert_eq!(
        keys(store.enrolments().await.unwrap()),
        ["b:7", "c:8", "ОП-2:7:stage=4"]
    );
    assert!(store.enrolments_of("nobody").await.unwrap().is_empty());

    let first = Stopped {
        at,
        reason: "the client wrote".into(),
    };
    let second = Stopped {
        at,
        reason: "the stage changed".into(),
    };
    assert!(store.stop_enrolment(&e.key, &first).await.unwrap());
    assert!(!store.stop_enrolment(&e.key, &second).await.unwrap());
    assert!(!store.stop_enrolment("nothing", &first).await.unwrap());
    // Saving progress after the stop keeps the stop.
    let mut further = ahead.clone();
    further.step_done(1, at);
    assert!(store.save_progress(&further, None).await.unwrap());
    let got = store.enrolment(&e.key).await.unwrap().unwrap();
    assert_eq!(got.stopped, Some(first));
    assert_eq!(got.enrolment.next, 2);
    assert!(!got.is_running());
}
on_both_backends!(an_enrolment_is_made_once_moves_forward_only_and_stops_once);

async fn a_step_is_claimed_once_and_settled_once(backend: Backend) {
    use sales_robot::adapters::store::{StepRecord, StepState};
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 11, 30, 0).unwrap();
    let record = |state, detail: &str| StepRecord {
        state,
        claimed_at: at,
        at,
        via: "email".into(),
        detail: detail.into(),
    };
    let claim = record(StepState::Claimed, "");
    assert_eq!(store.claim_step("k#0", &claim).await.unwrap(), None);
    assert_eq!(
        store
            .claim_step("k#0", &record(StepState::Claimed, "second"))
            .await
            .unwrap(),
        Some(claim.clone()),
        "the second claimer sees the first claim"
    );
    let sent = record(StepState::Done, "sent");
    let unsure = record(StepState::Uncertain, "");
    assert!(
        store
            .settle_step("k#0", StepState::Claimed, &sent)
            .await
            .unwrap()
    );
    assert!(
        !store
            .settle_step("k#0", StepState::Claimed, &unsure)
            .await
            .unwrap(),
        "settled once"
    );
    assert!(
        !store
            .settle_step("none", StepState::Claimed, &sent)
            .await
            .unwrap()
    );
    assert_eq!(store.step_record("k#0").await.unwrap(), Some(sent));
    assert_eq!(store.step_record("none").await.unwrap(), None);
    // Many claimers at once: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let r = record(StepState::Claimed, &format!("w{i}"));
        tasks.push(tokio::spawn(async move {
            store.claim_step("race", &r).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap().is_none());
    }
    assert_eq!(winners, 1);
}
on_both_backends!(a_step_is_claimed_once_and_settled_once);

async fn sets_and_counters(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    assert!(store.add_member("phone:79161234567", "7").await.unwrap());
    assert!(!store.add_member("phone:79161234567", "7").await.unwrap());
    assert!(store.add_member("phone:79161234567", "12").await.unwrap());
    assert_eq!(
        store.members("phone:79161234567").await.unwrap(),
        ["12", "7"]
    );
    assert!(store.members("phone:none").await.unwrap().is_empty());

    let ttl = Duration::from_millis(400);
    assert_eq!(store.counter("c").await.unwrap(), 0);
    assert_eq!(store.bump("c", 1, ttl).await.unwrap(), 1);
    assert_eq!(store.bump("c", 2, ttl).await.unwrap(), 3);
    assert_eq!(store.bump("c", -1, ttl).await.unwrap(), 2);
    assert_eq!(store.counter("c").await.unwrap(), 2);
    // Its lifetime counts from its first bump, and then it starts again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.counter("c").await.unwrap(), 0);
    assert_eq!(store.bump("c", 1, ttl).await.unwrap(), 1);
}
on_both_backends!(sets_and_counters);

async fn a_capped_list_keeps_its_last_items_in_order(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    assert!(store.list("messages:7916").await.unwrap().is_empty());
    for i in 1..=5 {
        store
            .push_capped("messages:7916", &format!("m{i}"), 3)
            .await
            .unwrap();
    }
    store
        .push_capped("messages:7903", "other", 3)
        .await
        .unwrap();
    assert_eq!(
        store.list("messages:7916").await.unwrap(),
        ["m3", "m4", "m5"]
    );
    assert_eq!(store.list("messages:7903").await.unwrap(), ["other"]);
}
on_both_backends!(a_capped_list_keeps_its_last_items_in_order);
