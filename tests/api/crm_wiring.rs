//! An event's lead is loaded through the CRM before anything is decided.

use std::sync::Arc;
use std::time::Duration;

use sales_robot::adapters::amocrm::api::{AmoCrm, FieldMapping};
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::crm::http::Retries;
use sales_robot::domain::event::Source;
use sales_robot::domain::retry::RetryPolicy;
use sales_robot::service::entities::LoadEntity;
use secrecy::SecretString;

use crate::helpers::{Backend, fresh_store, spawn_app_with};
use crate::support::amocrm::{AmoEmulator, NewLead};

fn status_body(lead: i64) -> String {
    format!(
        "leads[status][0][id]={lead}&leads[status][0][status_id]=142&leads[status][0][old_status_id]=1\
         &leads[status][0][last_modified]=1763900000&account[subdomain]=robotdemo&account[id]=29876543"
    )
}

async fn crm_handler(amo: &AmoEmulator) -> Arc<LoadEntity> {
    let dir = tempfile::tempdir().unwrap();
    // The CRM's rate limit lives in a store of its own here; in `serve` it is the robot's.
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    std::mem::forget(dir);
    let crm = AmoCrm::new(
        amo.base_url(),
        Credentials::LongLived(SecretString::from(amo.long_lived_token())),
        store,
        FieldMapping::default(),
    )
    .with_retries(Retries {
        attempts: 2,
        base: Duration::from_millis(20),
        max: Duration::from_millis(50),
    });
    Arc::new(LoadEntity::new(Arc::new(crm), Source::Amocrm))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_makes_the_worker_read_its_lead_from_the_crm() {
    let amo = AmoEmulator::start().await;
    let lead = amo.seed_lead(NewLead::new("Заявка"));
    let app = spawn_app_with(Backend::Sqlite, crm_handler(&amo).await, |_| {}).await;
    assert_eq!(app.post_amocrm(status_body(lead)).await.status(), 200);
    app.wait_for_journal(1, 10).await;
    let reads = amo
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v4/leads/{lead}"))
        .count();
    assert_eq!(reads, 1, "the lead was read once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lead_is_a_normal_outcome() {
    let amo = AmoEmulator::start().await;
    let app = spawn_app_with(Backend::Sqlite, crm_handler(&amo).await, |_| {}).await;
    assert_eq!(
        app.post_amocrm(status_body(987_654_321)).await.status(),
        200
    );
    app.wait_for_journal(1, 10).await;
    assert!(app.store.dead_letters().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_delays_the_event_and_loses_nothing() {
    let amo = AmoEmulator::start().await;
    let lead = amo.seed_lead(NewLead::new("Заявка"));
    // Two attempts of the adapter per job attempt: the first job attempt meets only 502s.
    amo.fail_next(2, 502);
    let app = spawn_app_with(Backend::Sqlite, crm_handler(&amo).await, |s| {
        s.retry = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(2),
        };
    })
    .await;
    assert_eq!(app.post_amocrm(status_body(lead)).await.status(), 200);
    app.wait_for_journal(1, 15).await;
    assert!(app.store.dead_letters().await.unwrap().is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"outcome="retry""#),
        "the job was retried: {metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitrix24_event_makes_the_worker_read_its_deal() {
    use sales_robot::adapters::bitrix24::api::{Access, Bitrix24, RATE};
    use sales_robot::config::TodoVia;

    use crate::helpers::B24_TOKEN;
    use crate::support::bitrix24::B24Emulator;

    let b24 = B24Emulator::start().await;
    let deal = b24.seed_deal(serde_json::json!({"TITLE": "Заявка", "OPPORTUNITY": "5000"}));
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    let access = Access::Webhook(SecretString::from(b24.webhook_url()));
    let crm = Bitrix24::new(
        access,
        store,
        RATE,
        FieldMapping::default(),
        TodoVia::Activity,
    );
    let handler = Arc::new(LoadEntity::new(Arc::new(crm), Source::Bitrix24));
    let app = spawn_app_with(Backend::Sqlite, handler, |_| {}).await;
    let body = format!(
        "event=ONCRMDEALADD&data[FIELDS][ID]={deal}&ts=1763900000&auth[domain]=robotdemo.bitrix24.ru\
         &auth[member_id]=m&auth[application_token]={B24_TOKEN}"
    );
    assert_eq!(app.post_bitrix24(body).await.status(), 200);
    app.wait_for_journal(1, 10).await;
    let read = b24.requests().iter().any(|r| {
        r.method_name.eq_ignore_ascii_case("batch") && r.params.to_string().contains("crm.deal.get")
    });
    assert!(
        read,
        "the deal was read through the REST API: {:?}",
        b24.requests()
            .iter()
            .map(|r| r.method_name.clone())
            .collect::<Vec<_>>()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitrix24_lead_event_makes_the_worker_read_its_lead() {
    use sales_robot::adapters::bitrix24::api::{Access, B24Entity, Bitrix24, RATE};
    use sales_robot::config::TodoVia;

    use crate::helpers::B24_TOKEN;
    use crate::support::bitrix24::B24Emulator;

    let b24 = B24Emulator::start().await;
    let lead = b24.seed_lead(serde_json::json!({"TITLE": "Заявка", "OPPORTUNITY": "5000"}));
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    let access = Access::Webhook(SecretString::from(b24.webhook_url()));
    let crm = Bitrix24::new(
        access,
        store,
        RATE,
        FieldMapping::default(),
        TodoVia::Activity,
    )
    .with_entity(B24Entity::Lead);
    let handler = Arc::new(
        LoadEntity::new(Arc::new(crm), Source::Bitrix24).with_lead_entity(B24Entity::Lead.name()),
    );
    let app = spawn_app_with(Backend::Sqlite, handler, |_| {}).await;
    let body = format!(
        "event=ONCRMLEADADD&data[FIELDS][ID]={lead}&ts=1763900000&auth[domain]=robotdemo.bitrix24.ru\
         &auth[member_id]=m&auth[application_token]={B24_TOKEN}"
    );
    assert_eq!(app.post_bitrix24(body).await.status(), 200);
    app.wait_for_journal(1, 10).await;
    let read = b24.requests().iter().any(|r| {
        r.method_name.eq_ignore_ascii_case("batch") && r.params.to_string().contains("crm.lead.get")
    });
    assert!(
        read,
        "the lead was read through the REST API: {:?}",
        b24.requests()
            .iter()
            .map(|r| r.method_name.clone())
            .collect::<Vec<_>>()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_integration_sends_the_event_to_the_dead_letters_not_away() {
    let amo = AmoEmulator::start().await;
    let lead = amo.seed_lead(NewLead::new("Заявка"));
    let handler = crm_handler(&amo).await;
    amo.revoke_all();
    let app = spawn_app_with(Backend::Sqlite, handler, |s| {
        s.retry = RetryPolicy {
            max_attempts: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
    })
    .await;
    assert_eq!(app.post_amocrm(status_body(lead)).await.status(), 200);
    let store = app.store.clone();
    crate::helpers::eventually(15, || {
        let store = store.clone();
        async move { !store.dead_letters().await.unwrap().is_empty() }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the event waits in the dead letters; requests: {:?}",
            amo.requests()
                .iter()
                .map(|r| (r.path.clone(), r.status))
                .collect::<Vec<_>>()
        )
    });
    let dead = app.store.dead_letters().await.unwrap();
    assert!(
        dead[0].error.contains("long-lived token"),
        "a person can tell what to fix: {}",
        dead[0].error
    );
    assert!(
        dead[0].payload.contains(&lead.to_string()),
        "the event itself is kept for `dead retry`"
    );
    app.stop().await;
}
