//! `POST /api/presence`.

use serde_json::json;

use crate::helpers::{Backend, PRESENCE_TOKEN, spawn_app};
use crate::on_both_backends;

async fn presence_needs_the_token_and_keeps_the_newest_report(backend: Backend) {
    let app = spawn_app(backend).await;
    let online =
        json!({"manager_id": 8123456, "state": "online", "at": "2026-11-23T09:00:00+03:00"});
    assert_eq!(app.post_presence(None, &online).await.status(), 401);
    assert_eq!(
        app.post_presence(Some("wrong"), &online).await.status(),
        401
    );
    assert_eq!(
        app.post_presence(Some(PRESENCE_TOKEN), &online)
            .await
            .status(),
        200
    );
    let on_call =
        json!({"manager_id": "8123456", "state": "on_call", "at": "2026-11-23T09:05:00+03:00"});
    assert_eq!(
        app.post_presence(Some(PRESENCE_TOKEN), &on_call)
            .await
            .status(),
        200
    );
    // A late report of the earlier state must not overwrite the newer one.
    assert_eq!(
        app.post_presence(Some(PRESENCE_TOKEN), &online)
            .await
            .status(),
        200
    );
    let p = app
        .store
        .presence("8123456")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(p.state.as_str(), "on_call");
    app.wait_for_journal(2, 10).await;
    let kinds: Vec<_> = app
        .store
        .journal(5)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind.name())
        .collect();
    assert!(kinds.iter().all(|k| *k == "presence_changed"), "{kinds:?}");
    app.stop().await;
}
on_both_backends!(presence_needs_the_token_and_keeps_the_newest_report);

#[tokio::test]
async fn a_bad_presence_report_says_what_is_wrong() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app
        .post_presence(
            Some(PRESENCE_TOKEN),
            &json!({"manager_id": 1, "state": "sleeping", "at": "2026-11-23T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("sleeping"),
        "{body}"
    );
    let r = app
        .post_presence(
            Some(PRESENCE_TOKEN),
            &json!({"manager_id": 1, "state": "online"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("at"), "{body}");
    app.stop().await;
}
