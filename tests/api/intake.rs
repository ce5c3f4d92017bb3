//! The webhook routes: what is accepted, what is refused, and that nothing is enqueued twice.

use serde_json::Value;

use crate::helpers::{B24_TOKEN, Backend, SECRET, fixture, spawn_app};
use crate::on_both_backends;

async fn amocrm_bodies_are_queued_and_handled(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.post_amocrm(fixture("amocrm/leads_add_two.form")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    let r = app
        .post_amocrm(fixture("amocrm/lead_status_change.form"))
        .await;
    assert_eq!(r.status(), 200);
    app.wait_for_journal(3, 10).await;
    let journal = app.store.journal(10).await.unwrap();
    let kinds: Vec<_> = journal.iter().map(|e| e.event.kind.name()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "lead_created").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"lead_status_changed"), "{kinds:?}");
    app.stop().await;
}
on_both_backends!(amocrm_bodies_are_queued_and_handled);

async fn the_same_event_twice_is_enqueued_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let first: Value = app
        .post_amocrm(fixture("amocrm/lead_add.form"))
        .await
        .json()
        .await
        .unwrap();
    // A retry of amoCRM: same change, same body.
    let second = app.post_amocrm(fixture("amocrm/lead_add.form")).await;
    assert_eq!(
        second.status(),
        200,
        "a duplicate is still a success for the sender"
    );
    let second: Value = second.json().await.unwrap();
    assert_eq!(
        (first["accepted"].as_u64(), second["accepted"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(second["duplicates"], 1);
    app.wait_for_journal(1, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.store.journal_len().await.unwrap(), 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"robot_webhooks_total{source="amocrm",outcome="duplicate"}"#),
        "{metrics}"
    );
    app.stop().await;
}
on_both_backends!(the_same_event_twice_is_enqueued_once);

async fn the_same_change_in_another_body_is_a_duplicate_too(backend: Backend) {
    let app = spawn_app(backend).await;
    // The account block moved to the front and a field added: the change is the same.
    let a = "leads[update][0][id]=31000001&leads[update][0][last_modified]=1763900000&account[subdomain]=robotdemo&account[id]=29876543";
    let b = "account[subdomain]=robotdemo&account[id]=29876543&leads[update][0][last_modified]=1763900000&leads[update][0][id]=31000001&leads[update][0][name]=x";
    let first: Value = app.post_amocrm(a).await.json().await.unwrap();
    let second: Value = app.post_amocrm(b).await.json().await.unwrap();
    assert_eq!(
        (first["accepted"].as_u64(), second["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    app.stop().await;
}
on_both_backends!(the_same_change_in_another_body_is_a_duplicate_too);

async fn a_wrong_secret_is_not_found_and_enqueues_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .post_form(
            "/hooks/amocrm/not-the-secret",
            fixture("amocrm/lead_add.form"),
        )
        .await;
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap();
    assert!(!text.contains(SECRET));
    assert_eq!(app.queue_depth().await, 0);
    app.stop().await;
}
on_both_backends!(a_wrong_secret_is_not_found_and_enqueues_nothing);

async fn a_body_without_the_lead_id_is_a_400_naming_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .post_amocrm(fixture("bad/amocrm_lead_without_id.form"))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("leads[add][0][id]"),
        "{body}"
    );
    assert_eq!(app.queue_depth().await, 0);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"robot_webhooks_total{source="amocrm",outcome="rejected"}"#));
    app.stop().await;
}
on_both_backends!(a_body_without_the_lead_id_is_a_400_naming_the_key);

#[tokio::test]
async fn junk_is_a_400_and_another_account_a_403() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.post_amocrm(fixture("bad/not_a_form.form")).await;
    assert_eq!(r.status(), 400);
    let r = app
        .post_amocrm("leads[add][0][id]=1&account[subdomain]=someoneelse&account[id]=1")
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "wrong_account");
    let r = app
        .post_amocrm("leads[add][0][id]=1&account[subdomain]=robotdemo&account[id]=1")
        .await;
    assert_eq!(r.status(), 403, "the account id is checked when configured");
    assert_eq!(app.queue_depth().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut body =
        String::from("account[subdomain]=robotdemo&leads[add][0][id]=1&leads[add][0][name]=");
    body.push_str(&"x".repeat(70 * 1024));
    let r = app.post_amocrm(body).await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_types_are_accepted_and_counted() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app
        .post_amocrm("customers[add][0][id]=5&account[subdomain]=robotdemo&account[id]=29876543")
        .await;
    assert_eq!(
        r.status(),
        200,
        "a 4xx here would count towards amoCRM disabling the hook"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["ignored"].as_u64()),
        (Some(0), Some(1))
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"robot_events_ignored_total{source="amocrm",name="customers[add]"}"#),
        "{metrics}"
    );
    app.stop().await;
}

async fn bitrix24_events_need_the_application_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let good = fixture("bitrix24/deal_add.form");
    let forged = String::from_utf8(good.clone())
        .unwrap()
        .replace(B24_TOKEN, "forged-token");
    assert_ne!(
        forged.as_bytes(),
        &good[..],
        "the fixture carries the demo token"
    );
    let r = app.post_bitrix24(forged).await;
    assert_eq!(r.status(), 401);
    assert_eq!(app.queue_depth().await, 0);
    let r = app.post_bitrix24(good).await;
    assert_eq!(r.status(), 200);
    app.wait_for_journal(1, 10).await;
    let e = &app.store.journal(1).await.unwrap()[0].event;
    assert_eq!(
        (e.kind.name(), e.crm_entity.as_deref()),
        ("lead_created", Some("deal"))
    );
    app.stop().await;
}
on_both_backends!(bitrix24_events_need_the_application_token);

#[tokio::test]
async fn a_bitrix24_body_without_the_event_name_is_a_400() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app
        .post_bitrix24(fixture("bad/bitrix24_without_event.form"))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("`event`"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wazzup_status_without_its_message_is_a_400_and_an_unknown_status_is_taken() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app
        .post_wazzup(fixture("bad/wazzup_status_without_message_id.json"))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("`messageId`"),
        "{body}"
    );
    let r = app
        .post_wazzup(r#"{"statuses":[{"messageId":"m-1","timestamp":"2025-11-24T07:30:02.417Z","status":"played"}]}"#)
        .await;
    assert_eq!(
        r.status(),
        200,
        "a status Wazzup adds one day is no bad body"
    );
    app.wait_for_journal(1, 10).await;
    let e = &app.store.journal(1).await.unwrap()[0].event;
    assert_eq!(e.kind.name(), "message_status");
    app.stop().await;
}

async fn wazzup_replies_are_events_and_echoes_are_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.post_wazzup(fixture("wazzup/test.json")).await;
    assert_eq!(r.status(), 200, "Wazzup's check must get a 200");
    let r = app.post_wazzup(fixture("wazzup/echo_message.json")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 0, "an echo is not the client's reply");
    let r = app
        .post_wazzup(fixture("wazzup/incoming_message.json"))
        .await;
    assert_eq!(r.status(), 200);
    app.wait_for_journal(1, 10).await;
    let e = &app.store.journal(1).await.unwrap()[0].event;
    assert_eq!(e.kind.name(), "client_replied");
    assert!(e.entity_id.bytes().all(|b| b.is_ascii_digit()));
    app.stop().await;
}
on_both_backends!(wazzup_replies_are_events_and_echoes_are_not);

#[tokio::test]
async fn every_fixture_of_every_source_is_accepted() {
    let app = spawn_app(Backend::Sqlite).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (folder, route) in [
        ("amocrm", "amocrm"),
        ("bitrix24", "bitrix24"),
        ("wazzup", "wazzup"),
    ] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let r = app
                .post_form(&format!("/hooks/{route}/{SECRET}"), body)
                .await;
            assert_eq!(r.status(), 200, "{}", path.display());
        }
    }
    app.stop().await;
}
