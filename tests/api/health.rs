//! `/healthz`, `/readyz`, `/metrics`, and a store that goes away.

use std::process::{Command, Stdio};
use std::time::Duration;

use sales_robot::adapters::store::{Location, Store, StoreSettings};
use sales_robot::service::app::Application;
use sales_robot::service::jobs::Journal;
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, SECRET, fixture, spawn_app, test_settings};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.post_amocrm(fixture("amocrm/lead_add.form")).await;
    let metrics = app.metrics().await;
    for name in [
        "robot_webhooks_total",
        "robot_events_enqueued_total",
        "robot_intake_duration_seconds_bucket",
        "robot_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    app.wait_for_metric(r#"robot_jobs_total{job="handle_event",outcome="ok"}"#, 10)
        .await;
    app.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis of the test's own, to be stopped under the robot's feet.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the README's test command installs it)");
        OwnRedis { child, port }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_store_that_is_down_gets_503_with_retry_after() {
    let mut redis = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let settings = StoreSettings {
        namespace: "down-test".into(),
        dedup_window: Duration::from_secs(60),
        heartbeat: Duration::from_secs(2),
    };
    let mut store = None;
    for _ in 0..50 {
        if let Ok(s) = Store::open(&Location::Redis(url.clone()), settings.clone()).await {
            store = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = store.expect("the test's own redis starts");
    let mut s = test_settings();
    s.run_workers = false;
    s.request_timeout = Duration::from_secs(20);
    let app = Application::build(s, store, Arc::new(Journal))
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{base}/hooks/amocrm/{SECRET}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fixture("amocrm/lead_add.form"))
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);

    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let r = post().await.unwrap();
    assert_eq!(r.status(), 503, "the sender must retry");
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    stop.cancel();
    server.await.unwrap().unwrap();
}
