//! A crash right after the answer loses nothing; SIGTERM stops cleanly; secrets stay out of
//! the logs.

use std::time::Duration;

use crate::process::{Backend, Robot, SECRET, lead_add, terminate};

const LEADS: u64 = 60;

/// `how` is how the robot that gets killed runs: with its worker (jobs may be in flight at
/// the kill) or without (every job is still queued at the kill).
async fn killed_right_after_answering_loses_nothing(backend: Backend, how: &[&str]) {
    let robot = Robot::new(backend);
    let log = robot.dir.path().join("first.log");
    let mut first = robot.serve_with(how, &log);
    let client = reqwest::Client::new();
    for i in 0..LEADS {
        let r = client
            .post(format!("{}/hooks/amocrm/{SECRET}", robot.base()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(lead_add(50_000_000 + i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The moment the last answer is in: no chance to finish anything.
    first.kill().unwrap();
    first.wait().unwrap();
    let store = robot.store().await;
    let handled_before = store.journal_len().await.unwrap();
    if how.contains(&"--no-worker") {
        assert_eq!(handled_before, 0, "nothing is handled without a worker");
    }

    let mut second = robot.serve(&robot.dir.path().join("second.log"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let handled = store.journal_len().await.unwrap();
        if handled == LEADS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the restart {handled} of {LEADS} events were handled ({handled_before} before the kill)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = terminate(&mut second, 30);
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status}");
    assert_eq!(
        store.journal_len().await.unwrap(),
        LEADS,
        "each event handled once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_answering_loses_nothing_on_sqlite() {
    killed_right_after_answering_loses_nothing(Backend::Sqlite, &["serve"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_answering_loses_nothing_on_redis() {
    killed_right_after_answering_loses_nothing(Backend::Redis, &["serve"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_every_job_still_queued_loses_nothing_on_sqlite() {
    killed_right_after_answering_loses_nothing(Backend::Sqlite, &["serve", "--no-worker"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_every_job_still_queued_loses_nothing_on_redis() {
    killed_right_after_answering_loses_nothing(Backend::Redis, &["serve", "--no-worker"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let mut robot = Robot::new(Backend::Sqlite);
    let presence = "cli-test-presence-token-777";
    let b24 = "b24-demo-application-token";
    robot
        .env
        .push(("ROBOT_PRESENCE_TOKEN".into(), presence.into()));
    robot
        .env
        .push(("ROBOT_BITRIX24_APP_TOKEN".into(), b24.into()));
    robot.env.push(("ROBOT_LOG".into(), "debug".into()));
    let log = robot.dir.path().join("serve.log");
    let mut child = robot.serve(&log);
    let client = reqwest::Client::new();
    let fixtures = crate::process::repo().join("fixtures");
    let posts = [
        (
            format!("/hooks/amocrm/{SECRET}"),
            std::fs::read(fixtures.join("amocrm/lead_add.form")).unwrap(),
        ),
        (
            format!("/hooks/amocrm/{SECRET}"),
            std::fs::read(fixtures.join("bad/amocrm_lead_without_id.form")).unwrap(),
        ),
        ("/hooks/amocrm/wrong-secret".to_owned(), b"x=1".to_vec()),
        (
            format!("/hooks/bitrix24/{SECRET}"),
            std::fs::read(fixtures.join("bitrix24/deal_add.form")).unwrap(),
        ),
    ];
    for (path, body) in posts {
        client
            .post(format!("{}{path}", robot.base()))
            .body(body)
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("{}/api/presence", robot.base()))
        .bearer_auth(presence)
        .json(
            &serde_json::json!({"manager_id": 1, "state": "online", "at": "2026-11-23T09:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    crate::process::wait_for_log(&log, "event handled", 15).await;
    assert!(terminate(&mut child, 30).success());
    let logs = std::fs::read_to_string(&log).unwrap();
    for secret in [SECRET, presence, b24] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs");
    }
    // The webhook URLs, secret included, are printed on standard output for the person who
    // pastes them into the CRM: that is not the log.
    let out = std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(out.contains(&format!("/hooks/amocrm/{SECRET}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_http_handles_what_another_process_queued() {
    use sales_robot::domain::event::{Event, EventKind, Source};
    use sales_robot::service::jobs::{Jobs, Journal};
    let robot = Robot::new(Backend::Redis);
    let store = robot.store().await;
    let jobs = Jobs::new(
        store.clone(),
        std::sync::Arc::new(Journal),
        sales_robot::domain::retry::RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        },
    );
    for i in 0..5 {
        let event = Event {
            source: Source::Amocrm,
            account: "robotdemo".into(),
            kind: EventKind::LeadDeleted,
            entity_id: i.to_string(),
            crm_entity: None,
            occurred_at: None,
            modified_by: None,
            dedup_key: format!("work-test-{i}"),
        };
        jobs.enqueue(&event).await.unwrap();
    }
    let mut worker = robot
        .command(&["work"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.journal_len().await.unwrap() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not handle the queued events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(terminate(&mut worker, 30).success());
}
