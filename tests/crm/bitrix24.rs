//! The Bitrix24 adapter against its emulator: every trait call, batches, paging, the leaky
//! bucket shared through Redis, retries, OAuth renewal, refused webhooks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sales_robot::adapters::bitrix24::api::{
    Access, B24Entity, Bitrix24, FieldMapping, RATE, TodoVia,
};
use sales_robot::adapters::crm::fields::FieldRef;
use sales_robot::adapters::crm::{Client, Crm, CrmError, LeadFilter};
use sales_robot::adapters::store::Store;
use sales_robot::domain::lead::{Closed, FieldValue, LeadUpdate, closed};
use sales_robot::domain::task::{EntityKind, EntityRef, NewTask, TaskKind};
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{fast, store};
use crate::support::bitrix24::{AuthKind, B24Emulator};

/// Seeded by the emulator: contacts 201–203 (203 is Андрей Кузнецов), companies 11–13.
const KUZNETSOV: i64 = 203;
const SOKOLOVA: i64 = 201;
const SVARKA: i64 = 11;
const URAL: i64 = 12;
/// ИП Кузнецов: a company with no deals.
const KUZNETSOV_CO: i64 = 13;

fn mapping() -> FieldMapping {
    let refs = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(ours, r)| ((*ours).to_owned(), FieldRef::parse(r)))
            .collect::<BTreeMap<_, _>>()
    };
    FieldMapping {
        leads: refs(&[
            ("priority", "Приоритет"),
            ("score", "UF_CRM_SCORE"),
            ("category", "Категория клиента"),
            ("loss_reason", "UF_CRM_LOSS_REASON"),
        ]),
        companies: refs(&[("inn", "ИНН")]),
        ..FieldMapping::default()
    }
}

fn webhook(emu: &B24Emulator, store: Store, todo_via: TodoVia) -> Bitrix24 {
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    Bitrix24::new(access, store, RATE, mapping(), todo_via).with_retries(fast())
}

async fn client(emu: &B24Emulator) -> Bitrix24 {
    webhook(emu, store(false).await, TodoVia::Activity)
}

fn oauth(emu: &B24Emulator, store: Store) -> Bitrix24 {
    let (client_id, client_secret) = emu.oauth_client();
    let access = Access::OAuth {
        client_endpoint: emu.rest_url(),
        token_url: emu.oauth_token_url(),
        client_id,
        client_secret: SecretString::from(client_secret),
    };
    Bitrix24::new(access, store, RATE, mapping(), TodoVia::Activity).with_retries(fast())
}

/// The methods the portal was asked for, in order (`batch` for a batch).
fn methods(emu: &B24Emulator) -> Vec<String> {
    emu.requests().into_iter().map(|r| r.method_name).collect()
}

#[tokio::test]
async fn a_deal_comes_with_its_contacts_company_and_fields_by_our_names() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({
        "TITLE": "Заявка с сайта svarka-pro.ru",
        "OPPORTUNITY": 150000,
        "ASSIGNED_BY_ID": 2,
        "COMPANY_ID": SVARKA,
        "CONTACT_IDS": [KUZNETSOV, SOKOLOVA],
        "UF_CRM_PRIORITY": 45,
        "UF_CRM_SCORE": 42,
        "UF_CRM_CATEGORY": 52,
    }));
    let crm = client(&emu).await;
    crm.check_fields().await.unwrap(); // the field look-up, out of the count below
    let lead = crm
        .lead(&id.to_string())
        .await
        .unwrap()
        .expect("the deal exists");
    assert_eq!(lead.name, "Заявка с сайта svarka-pro.ru");
    assert_eq!(lead.budget, Some(150_000.0));
    assert_eq!(lead.status_id, "NEW");
    assert_eq!(lead.pipeline_id, "0");
    assert_eq!(lead.responsible_user_id.as_deref(), Some("2"));
    assert!(lead.created_at > 1_700_000_000, "{}", lead.created_at);
    assert_eq!(
        lead.fields.get("priority"),
        Some(&FieldValue::Text("Высокий".into())),
        "a list field reads as its label"
    );
    assert_eq!(
        lead.fields.get("category"),
        Some(&FieldValue::Text("Строительство".into()))
    );
    assert_eq!(lead.fields.get("score"), Some(&FieldValue::Number(42.0)));
    assert_eq!(lead.contacts.len(), 2);
    let main = lead.main_contact().unwrap();
    assert_eq!(main.id, KUZNETSOV.to_string(), "the primary contact first");
    assert_eq!(main.name, "Андрей Кузнецов");
    assert_eq!(main.first_name.as_deref(), Some("Андрей"));
    assert_eq!(main.phones, vec!["+7 912 345-67-89".to_owned()]);
    assert_eq!(main.emails, vec!["a.kuznetsov@example.ru".to_owned()]);
    assert!(!lead.contacts[1].is_main);
    let company = lead.company.as_ref().expect("the company");
    assert_eq!(company.name, "ООО Сварка-Про");
    assert_eq!(
        company.fields.get("inn"),
        Some(&FieldValue::Text("6671234567".into()))
    );

    emu.clear_requests();
    crm.lead(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(
        methods(&emu),
        vec!["batch", "batch"],
        "deal and links, then contacts and company: two requests"
    );
    assert_eq!(
        crm.lead("999999").await.unwrap(),
        None,
        "a missing deal is not an error"
    );
    assert_eq!(
        crm.contact(&SOKOLOVA.to_string())
            .await
            .unwrap()
            .map(|c| c.name),
        Some("Мария Соколова".to_owned())
    );
    assert_eq!(crm.company("999999").await.unwrap(), None);
}

#[tokio::test]
async fn an_update_writes_the_responsible_the_stage_a_number_and_a_list_field() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка", "UF_CRM_PRIORITY": 45}));
    let key = id.to_string();
    let crm = client(&emu).await;
    let update = LeadUpdate {
        responsible_user_id: Some("3".into()),
        status_id: Some("PREPARATION".into()),
        budget: Some(99_500.0),
        loss_reason_id: Some("62".into()),
        fields: BTreeMap::from([
            ("score".to_owned(), FieldValue::Number(0.37)),
            ("priority".to_owned(), FieldValue::Text("Низкий".into())),
        ]),
        ..LeadUpdate::default()
    };
    crm.update_lead(&key, &update).await.unwrap();
    let raw = emu.deal(id).unwrap();
    assert_eq!(raw["ASSIGNED_BY_ID"], "3");
    assert_eq!(raw["STAGE_ID"], "PREPARATION");
    assert_eq!(raw["OPPORTUNITY"], "99500.00");
    assert_eq!(
        raw["UF_CRM_PRIORITY"], "47",
        "the label went as the item's id"
    );
    assert_eq!(raw["UF_CRM_SCORE"], "0.37");
    let lead = crm.lead(&key).await.unwrap().unwrap();
    assert_eq!(
        lead.fields.get("priority"),
        Some(&FieldValue::Text("Низкий".into()))
    );
    assert_eq!(lead.loss_reason.as_deref(), Some("Выбрали конкурента"));

    match crm
        .update_lead(
            &key,
            &LeadUpdate {
                fields: BTreeMap::from([(
                    "priority".to_owned(),
                    FieldValue::Text("Срочный".into()),
                )]),
                ..LeadUpdate::default()
            },
        )
        .await
    {
        Err(CrmError::Rejected(msg)) => assert!(msg.contains("Высокий, Средний, Низкий"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }

    // Another funnel: `crm.item.update`, since `crm.deal.update` cannot move it.
    crm.update_lead(
        &key,
        &LeadUpdate {
            pipeline_id: Some("1".into()),
            status_id: Some("C1:PREPARATION".into()),
            ..LeadUpdate::default()
        },
    )
    .await
    .unwrap();
    let raw = emu.deal(id).unwrap();
    assert_eq!(
        (raw["CATEGORY_ID"].as_str(), raw["STAGE_ID"].as_str()),
        (Some("1"), Some("C1:PREPARATION"))
    );

    // Deals have no tags: without a mapped `tags` field they are skipped, sending nothing.
    let before = emu.request_count();
    let tags_only = LeadUpdate {
        add_tags: vec!["сайт".into()],
        ..LeadUpdate::default()
    };
    crm.update_lead(&key, &tags_only).await.unwrap();
    crm.update_lead(&key, &LeadUpdate::default()).await.unwrap();
    assert_eq!(emu.request_count(), before, "an empty update sends nothing");

    // With a mapped text field they are added to what it holds.
    let mut m = mapping();
    m.leads.insert("tags".into(), FieldRef::parse("COMMENTS"));
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    let tagged = Bitrix24::new(access, store(false).await, RATE, m, TodoVia::Activity);
    tagged.update_lead(&key, &tags_only).await.unwrap();
    let also = LeadUpdate {
        add_tags: vec!["приоритет 2".into(), "сайт".into()],
        ..LeadUpdate::default()
    };
    tagged.update_lead(&key, &also).await.unwrap();
    assert_eq!(emu.deal(id).unwrap()["COMMENTS"], "сайт, приоритет 2");
    assert_eq!(
        tagged.lead(&key).await.unwrap().unwrap().tags,
        vec!["сайт".to_owned(), "приоритет 2".to_owned()]
    );
    let regrade = LeadUpdate {
        add_tags: vec!["приоритет 1".into()],
        remove_tags: vec!["Приоритет 2".into()],
        ..LeadUpdate::default()
    };
    tagged.update_lead(&key, &regrade).await.unwrap();
    assert_eq!(emu.deal(id).unwrap()["COMMENTS"], "сайт, приоритет 1");
}

#[tokio::test]
async fn listing_reads_every_page_to_the_end() {
    let emu = B24Emulator::start().await;
    for i in 0..120 {
        let created = format!("2026-11-{:02}T10:{:02}:00+03:00", 1 + i / 60, i % 60);
        emu.seed_deal(json!({
            "TITLE": format!("Заявка {i}"),
            "DATE_CREATE": created,
            "DATE_MODIFY": created,
            "ASSIGNED_BY_ID": if i % 2 == 0 { 2 } else { 3 },
        }));
    }
    let crm = client(&emu).await;
    let from = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00+03:00")
        .unwrap()
        .timestamp();
    emu.clear_requests();
    let all = crm
        .leads(&LeadFilter {
            created_from: Some(from),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 120);
    assert_eq!(all[0].name, "Заявка 0");
    assert_eq!(all[119].name, "Заявка 119");
    let lists = methods(&emu)
        .iter()
        .filter(|m| *m == "crm.deal.list")
        .count();
    assert_eq!(lists, 3, "50 + 50 + 20");
    let ivan = crm
        .leads(&LeadFilter {
            created_from: Some(from),
            responsible_user_id: Some("2".into()),
            status_id: Some("NEW".into()),
            pipeline_id: Some("0".into()),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ivan.len(), 60);
    let second_day = crm
        .leads(&LeadFilter {
            created_from: Some(from + 86_400),
            created_to: Some(from + 2 * 86_400),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(second_day.len(), 60);
    let none = crm
        .leads(&LeadFilter {
            updated_from: Some(from + 365 * 86_400),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

fn call_task(emu_now: i64, deal: &str) -> NewTask {
    NewTask {
        kind: TaskKind::Call,
        text: "Позвонить клиенту: новая заявка с сайта\nУточнить объём".into(),
        deadline: emu_now + 3600,
        responsible_user_id: "2".into(),
        entity: EntityRef::lead(deal),
    }
}

#[tokio::test]
async fn a_todo_a_task_and_a_timeline_comment_are_created() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let now = chrono::Utc::now().timestamp();
    let task = call_task(now, &id);

    let crm = client(&emu).await;
    let todo = crm.create_task(&task).await.unwrap();
    let activity = emu
        .activities()
        .into_iter()
        .find(|a| a["ID"] == todo.as_str())
        .expect("the to-do");
    assert_eq!(activity["OWNER_TYPE_ID"], "2");
    assert_eq!(activity["OWNER_ID"], id.as_str());
    assert_eq!(activity["RESPONSIBLE_ID"], "2");
    assert_eq!(
        activity["SUBJECT"],
        "Позвонить клиенту: новая заявка с сайта"
    );
    assert_eq!(activity["DESCRIPTION"], task.text.as_str());
    let deadline = chrono::DateTime::parse_from_rfc3339(activity["DEADLINE"].as_str().unwrap());
    assert_eq!(deadline.unwrap().timestamp(), task.deadline);

    let tasks = webhook(&emu, store(false).await, TodoVia::Task);
    let task_id = tasks.create_task(&task).await.unwrap();
    let created = emu
        .tasks()
        .into_iter()
        .find(|t| t["id"] == task_id.as_str())
        .expect("the task");
    assert_eq!(created["ufCrmTask"], json!([format!("D_{id}")]));
    assert_eq!(created["responsibleId"], "2");

    crm.add_note(&EntityRef::lead(&id), "Робот: назначен ответственный")
        .await
        .unwrap();
    let contact = EntityRef {
        kind: EntityKind::Contact,
        id: KUZNETSOV.to_string(),
    };
    crm.add_note(&contact, "Робот: клиент просил перезвонить")
        .await
        .unwrap();
    let comments = emu.comments_of(id.parse().unwrap());
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0]["COMMENT"], "Робот: назначен ответственный");
    // Read back as the robot reads it after a crash: the deal's comments only.
    assert_eq!(
        crm.notes(&EntityRef::lead(&id)).await.unwrap(),
        ["Робот: назначен ответственный"]
    );
    assert_eq!(
        crm.notes(&contact).await.unwrap(),
        ["Робот: клиент просил перезвонить"]
    );
    assert!(
        emu.comments()
            .iter()
            .any(|c| c["ENTITY_TYPE"] == "contact" && c["ENTITY_ID"] == "203")
    );
    match crm
        .add_note(&EntityRef::lead("999999"), "нет такой сделки")
        .await
    {
        Err(CrmError::Rejected(_)) => {}
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_todo_is_listed_open_and_completed() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let now = chrono::Utc::now().timestamp();
    for via in [TodoVia::Activity, TodoVia::Task] {
        let crm = webhook(&emu, store(false).await, via);
        let task = call_task(now, &id);
        let task_id = crm.create_task(&task).await.unwrap();
        let open = crm.open_tasks().await.unwrap();
        assert!(
            open.iter().any(|t| t.id == task_id
                && t.text == task.text
                && t.entity == Some(EntityRef::lead(&id))),
            "{via:?}: {open:?}"
        );
        crm.complete_task(&task_id, "Дозвонились").await.unwrap();
        assert!(
            !crm.open_tasks()
                .await
                .unwrap()
                .iter()
                .any(|t| t.id == task_id),
            "{via:?}"
        );
        // Completed again (a manager closed it first): nothing to do, not an error.
        crm.complete_task(&task_id, "Дозвонились").await.unwrap();
    }
}

#[tokio::test]
async fn open_tasks_are_the_to_dos_not_every_open_activity() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let call = emu.seed_activity(json!({"TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL", "OWNER_TYPE_ID": 2, "OWNER_ID": id, "COMPLETED": "N"}));
    let crm = webhook(&emu, store(false).await, TodoVia::Activity);
    let task_id = crm
        .create_task(&call_task(chrono::Utc::now().timestamp(), &id))
        .await
        .unwrap();
    let open = crm.open_tasks().await.unwrap();
    assert!(open.iter().any(|t| t.id == task_id));
    assert!(
        !open.iter().any(|t| t.id == call.to_string()),
        "a call is not the robot's to-do: {open:?}"
    );
}

#[tokio::test]
async fn managers_stages_and_loss_reasons() {
    let emu = B24Emulator::start().await;
    let crm = client(&emu).await;
    let managers = crm.managers().await.unwrap();
    let elena = managers.iter().find(|m| m.id == "1").expect("user 1");
    assert_eq!(elena.name, "Елена Прекрасная");
    assert!(elena.active);
    assert_eq!(elena.email.as_deref(), Some("user1@b24-demo.example"));
    let petr = managers.iter().find(|m| m.name == "Пётр Сидоров").unwrap();
    assert!(!petr.active, "a dismissed user is not active");

    let stages = crm.stages().await.unwrap();
    assert!(
        stages.iter().any(|s| s.id == "PREPARATION"
            && s.name == "Подготовка документов"
            && s.pipeline.name == "Продажи"
            && s.pipeline.id == "0"),
        "{stages:?}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s.id == "C1:NEW" && s.pipeline.name == "Повторные продажи"),
        "{stages:?}"
    );
    assert!(
        !stages.iter().any(|s| s.id == "CALL" || s.id == "CONVERTED"),
        "only deal stages: {stages:?}"
    );
    assert_eq!(stages[0].id, "NEW", "by funnel, then by the stages' order");

    let reasons = crm.loss_reasons().await.unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.id == "62" && r.name == "Выбрали конкурента"),
        "{reasons:?}"
    );
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    let unmapped = Bitrix24::new(
        access,
        store(false).await,
        RATE,
        FieldMapping::default(),
        TodoVia::Activity,
    );
    assert!(unmapped.loss_reasons().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_fields_the_portal_lacks_are_named() {
    let emu = B24Emulator::start().await;
    let mut m = mapping();
    m.leads.insert("turnover".into(), FieldRef::parse("Оборот"));
    m.companies
        .insert("okved".into(), FieldRef::parse("UF_CRM_OKVED"));
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    let crm = Bitrix24::new(access, store(false).await, RATE, m, TodoVia::Activity);
    let missing = crm.check_fields().await.unwrap();
    assert_eq!(
        missing,
        vec![
            "deal field `turnover`: the portal has no field named «Оборот»".to_owned(),
            "company field `okved`: the portal has no field with id UF_CRM_OKVED".to_owned(),
        ]
    );
    assert_eq!(
        methods(&emu),
        vec!["batch"],
        "every kind's fields in one request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_redis_never_overflow_the_bucket() {
    let emu = B24Emulator::start().await;
    emu.set_bucket(50, 2.0);
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let shared = store(true).await;
    let clients: Vec<Arc<Bitrix24>> = (0..2)
        .map(|_| Arc::new(webhook(&emu, shared.clone(), TodoVia::Activity)))
        .collect();
    let started = Instant::now();
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let crm = clients[i % 2].clone();
            let id = id.clone();
            tokio::spawn(async move {
                let update = LeadUpdate {
                    budget: Some(i as f64 + 1.0),
                    ..LeadUpdate::default()
                };
                crm.update_lead(&id, &update).await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(emu.query_limit_hits(), 0, "no QUERY_LIMIT_EXCEEDED at all");
    assert_eq!(emu.request_count(), 60);
    // 49 at once (one kept in reserve), then 2 a second: 11 more take 5.5 s.
    assert!(
        elapsed >= Duration::from_millis(4500) && elapsed < Duration::from_secs(9),
        "{elapsed:?}"
    );
    eprintln!("60 calls through a bucket of 50 at 2/s: {elapsed:?}");
}

#[tokio::test]
async fn the_limits_and_failures_are_waited_out() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let crm = client(&emu).await;
    assert!(crm.lead(&id).await.unwrap().is_some());

    // A bucket smaller than the client thinks: the portal answers QUERY_LIMIT_EXCEEDED,
    // and the client waits for it to drain.
    emu.set_bucket(3, 20.0);
    let calls: Vec<_> = (0..8).map(|_| crm.managers()).collect();
    for result in futures::future::join_all(calls).await {
        assert!(!result.unwrap().is_empty());
    }
    assert!(emu.query_limit_hits() > 0, "the limit was hit");
    emu.set_bucket(50, 2.0);

    emu.fail_next(2, 502);
    assert!(
        crm.lead(&id).await.unwrap().is_some(),
        "two nginx 502 pages, then success"
    );
    emu.fail_next(1, 500);
    assert!(
        crm.managers().await.is_ok(),
        "Bitrix24's JSON 500 is retried"
    );
    emu.fail_next(5, 503); // as many as the attempts
    match crm.managers().await {
        Err(CrmError::Unavailable(msg)) => assert!(msg.contains("503"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // The method's time budget is spent for a while: 429, waited out.
    emu.exhaust_method("user.get");
    let restore = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        emu.restore_method("user.get");
    };
    let (managers, ()) = tokio::join!(crm.managers(), restore);
    assert!(!managers.unwrap().is_empty());
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.method_name == "user.get" && r.status == 429)
    );
}

#[tokio::test]
async fn a_refused_webhook_is_a_clear_error() {
    let emu = B24Emulator::start().await;
    let wrong = emu.webhook_url().replace(&emu.webhook_code(), "wrongcode");
    let crm = Bitrix24::new(
        Access::Webhook(SecretString::from(wrong)),
        store(false).await,
        RATE,
        mapping(),
        TodoVia::Activity,
    )
    .with_retries(fast());
    match crm.lead("1001").await {
        Err(CrmError::Unauthorized(msg)) => {
            assert!(msg.contains("ROBOT_BITRIX24_WEBHOOK"), "{msg}");
            assert!(msg.contains("INVALID_CREDENTIALS"), "{msg}");
            assert!(!msg.contains("wrongcode"), "the code is a secret: {msg}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(emu.request_count(), 1, "not retried");

    let crm = client(&emu).await;
    emu.deny_rest_api(true);
    match crm.managers().await {
        Err(CrmError::Unauthorized(msg)) => assert!(msg.contains("ACCESS_DENIED"), "{msg}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let crm = oauth(&emu, store(false).await);
    let (access, refresh) = emu.issue_oauth_tokens();
    crm.tokens().unwrap().set(&access, &refresh).await.unwrap();
    assert!(crm.lead(&id).await.unwrap().is_some());
    assert!(
        emu.requests()
            .iter()
            .filter(|r| r.method_name != "oauth/token")
            .all(|r| r.auth == AuthKind::OAuth)
    );
    emu.expire_access_tokens();
    assert!(
        crm.lead(&id).await.unwrap().is_some(),
        "expired_token renews the token and retries"
    );
    assert!(crm.lead(&id).await.unwrap().is_some());
    let refreshes: Vec<u16> = emu
        .requests()
        .iter()
        .filter(|r| r.method_name == "oauth/token")
        .map(|r| r.status)
        .collect();
    assert_eq!(refreshes, vec![200], "one renewal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_refreshing_at_once_never_reuse_the_refresh_token() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let shared = store(true).await;
    let first = Arc::new(oauth(&emu, shared.clone()));
    let second = Arc::new(oauth(&emu, shared));
    let (access, refresh) = emu.issue_oauth_tokens();
    first
        .tokens()
        .unwrap()
        .set(&access, &refresh)
        .await
        .unwrap();
    for round in 0..3 {
        emu.expire_access_tokens();
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let crm = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let id = id.clone();
                tokio::spawn(async move { crm.lead(&id).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().unwrap().is_some(), "round {round}");
        }
    }
    let refreshes: Vec<u16> = emu
        .requests()
        .iter()
        .filter(|r| r.method_name == "oauth/token")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        refreshes,
        vec![200, 200, 200],
        "one renewal a round, never an invalid_grant"
    );
}

/// A client of a portal whose sales work in CRM leads, with fields leads have.
async fn lead_client(emu: &B24Emulator) -> Bitrix24 {
    let refs = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(ours, r)| ((*ours).to_owned(), FieldRef::parse(r)))
            .collect::<BTreeMap<_, _>>()
    };
    let m = FieldMapping {
        leads: refs(&[("score", "Скоринг"), ("comment", "COMMENTS")]),
        companies: refs(&[("inn", "ИНН")]),
        ..FieldMapping::default()
    };
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    Bitrix24::new(access, store(false).await, RATE, m, TodoVia::Activity)
        .with_retries(fast())
        .with_entity(B24Entity::Lead)
}

#[tokio::test]
async fn a_crm_lead_comes_with_its_contact_company_and_fields() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_lead(json!({
        "TITLE": "Лид с сайта svarka-pro.ru",
        "OPPORTUNITY": 70000,
        "ASSIGNED_BY_ID": 3,
        "STATUS_ID": "IN_PROCESS",
        "COMPANY_ID": SVARKA,
        "CONTACT_ID": KUZNETSOV,
        "UF_CRM_SCORE": 17,
    }));
    let crm = lead_client(&emu).await;
    assert!(crm.check_fields().await.unwrap().is_empty());
    let lead = crm
        .lead(&id.to_string())
        .await
        .unwrap()
        .expect("the lead exists");
    assert_eq!(lead.name, "Лид с сайта svarka-pro.ru");
    assert_eq!(lead.budget, Some(70_000.0));
    assert_eq!(lead.status_id, "IN_PROCESS");
    assert_eq!(lead.pipeline_id, "0", "leads have one pipeline");
    assert_eq!(lead.responsible_user_id.as_deref(), Some("3"));
    assert_eq!(lead.fields.get("score"), Some(&FieldValue::Number(17.0)));
    let main = lead.main_contact().expect("the contact");
    assert_eq!(main.name, "Андрей Кузнецов");
    assert_eq!(main.phones, vec!["+7 912 345-67-89".to_owned()]);
    let company = lead.company.as_ref().expect("the company");
    assert_eq!(company.name, "ООО Сварка-Про");
    emu.clear_requests();
    crm.lead(&id.to_string()).await.unwrap().unwrap();
    let asked = emu
        .requests()
        .iter()
        .map(|r| r.params.to_string())
        .collect::<Vec<_>>();
    assert!(asked[0].contains("crm.lead.get"), "{asked:?}");
    assert!(!asked.iter().any(|p| p.contains("crm.deal")), "{asked:?}");
    assert_eq!(methods(&emu), vec!["batch", "batch"]);
    assert_eq!(crm.lead("999999").await.unwrap(), None);

    // Its to-dos and timeline comments are the lead's (owner type 1), not a deal's.
    let todo = crm
        .create_task(&call_task(chrono::Utc::now().timestamp(), &id.to_string()))
        .await
        .unwrap();
    let activity = emu
        .activities()
        .into_iter()
        .find(|a| a["ID"] == todo.as_str())
        .expect("the to-do");
    assert_eq!(activity["OWNER_TYPE_ID"], "1");
    assert_eq!(activity["OWNER_ID"], id.to_string().as_str());
    let open = crm.open_tasks().await.unwrap();
    assert_eq!(
        open.iter()
            .find(|t| t.id == todo)
            .and_then(|t| t.entity.clone()),
        Some(EntityRef::lead(id.to_string()))
    );
    crm.add_note(&EntityRef::lead(id.to_string()), "Робот: лид в работе")
        .await
        .unwrap();
    assert!(
        emu.comments()
            .iter()
            .any(|c| c["ENTITY_TYPE"] == "lead" && c["ENTITY_ID"] == id.to_string().as_str()),
        "{:?}",
        emu.comments()
    );
}

#[tokio::test]
async fn a_crm_lead_update_writes_its_status_and_a_field() {
    let emu = B24Emulator::start().await;
    let id = emu.seed_lead(json!({"TITLE": "Лид"}));
    let other = emu.seed_lead(json!({"TITLE": "Ещё лид"}));
    let crm = lead_client(&emu).await;
    let update = LeadUpdate {
        status_id: Some("PROCESSED".into()),
        responsible_user_id: Some("2".into()),
        fields: BTreeMap::from([("score".to_owned(), FieldValue::Number(64.0))]),
        ..LeadUpdate::default()
    };
    crm.update_lead(&id.to_string(), &update).await.unwrap();
    let raw = emu.lead(id).unwrap();
    assert_eq!(raw["STATUS_ID"], "PROCESSED");
    assert_eq!(raw["ASSIGNED_BY_ID"], "2");
    assert_eq!(raw["UF_CRM_SCORE"], "64");

    // In a batch too, and a funnel asked for is skipped: leads have none.
    let moves = LeadUpdate {
        status_id: Some("IN_PROCESS".into()),
        pipeline_id: Some("0".into()),
        fields: BTreeMap::from([("comment".to_owned(), FieldValue::Text("звонок".into()))]),
        ..LeadUpdate::default()
    };
    crm.update_leads(&[(id.to_string(), moves.clone()), (other.to_string(), moves)])
        .await
        .unwrap();
    for lead in [id, other] {
        let raw = emu.lead(lead).unwrap();
        assert_eq!(raw["STATUS_ID"], "IN_PROCESS");
        assert_eq!(raw["COMMENTS"], "звонок");
    }
    assert!(
        !methods(&emu).iter().any(|m| m == "crm.item.update"),
        "{:?}",
        methods(&emu)
    );
}

#[tokio::test]
async fn crm_leads_are_listed_page_by_page() {
    let emu = B24Emulator::start().await;
    for i in 0..70 {
        let created = format!("2026-11-01T10:{:02}:00+03:00", i % 60);
        emu.seed_lead(json!({
            "TITLE": format!("Лид {i}"),
            "DATE_CREATE": created,
            "STATUS_ID": if i % 2 == 0 { "NEW" } else { "IN_PROCESS" },
        }));
    }
    emu.seed_deal(json!({"TITLE": "Сделка"}));
    let crm = lead_client(&emu).await;
    let from = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00+03:00")
        .unwrap()
        .timestamp();
    emu.clear_requests();
    let all = crm
        .leads(&LeadFilter {
            created_from: Some(from),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 70);
    assert!(all.iter().all(|l| l.name.starts_with("Лид ")));
    let lists = methods(&emu)
        .iter()
        .filter(|m| *m == "crm.lead.list")
        .count();
    assert_eq!(lists, 2, "50 + 20");
    let new = crm
        .leads(&LeadFilter {
            created_from: Some(from),
            status_id: Some("NEW".into()),
            pipeline_id: Some("0".into()),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(new.len(), 35);
    let elsewhere = crm
        .leads(&LeadFilter {
            pipeline_id: Some("1".into()),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert!(elsewhere.is_empty(), "leads have no other funnel");
}

#[tokio::test]
async fn the_stages_of_crm_leads_are_the_lead_statuses() {
    let emu = B24Emulator::start().await;
    let crm = lead_client(&emu).await;
    let stages = crm.stages().await.unwrap();
    let ids: Vec<&str> = stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"]
    );
    assert_eq!(stages[0].name, "Не обработан");
    assert!(
        stages
            .iter()
            .all(|s| s.pipeline.id == "0" && s.pipeline.name == "Лиды"),
        "{stages:?}"
    );
    assert!(
        !methods(&emu).iter().any(|m| m.contains("category")),
        "no funnels are asked for: {:?}",
        methods(&emu)
    );
}

#[tokio::test]
async fn a_client_history_is_every_deal_of_the_company_or_of_the_primary_contact() {
    let emu = B24Emulator::start().await;
    let won = emu.seed_deal(json!({
        "TITLE": "Аппараты, первая поставка",
        "COMPANY_ID": SVARKA,
        "STAGE_ID": "WON",
        "OPPORTUNITY": 240000,
        "CONTACT_IDS": [KUZNETSOV],
        "DATE_CREATE": "2025-06-15T12:00:00+03:00",
    }));
    // Lost in the other funnel: the stage carries its prefix.
    let lost = emu.seed_deal(json!({
        "TITLE": "Повторная поставка",
        "COMPANY_ID": SVARKA,
        "CATEGORY_ID": 1,
        "STAGE_ID": "C1:LOSE",
        "OPPORTUNITY": 30000,
    }));
    let open = emu.seed_deal(json!({
        "TITLE": "Проволока",
        "COMPANY_ID": SVARKA,
        "STAGE_ID": "PREPARATION",
        "CONTACT_IDS": [SOKOLOVA, KUZNETSOV],
    }));
    emu.seed_deal(json!({"TITLE": "Чужая сделка", "COMPANY_ID": URAL, "STAGE_ID": "WON"}));
    emu.seed_lead(json!({"TITLE": "Лид той же компании", "COMPANY_ID": SVARKA}));
    let crm = client(&emu).await;

    emu.clear_requests();
    let leads = crm
        .client_leads(&Client::Company(SVARKA.to_string()))
        .await
        .unwrap();
    assert_eq!(methods(&emu), ["crm.deal.list"], "one page, one request");
    let params = &emu.requests()[0].params;
    assert_eq!(params["filter"]["COMPANY_ID"], json!(SVARKA));
    let select = params["select"].to_string();
    assert!(
        select.contains("STAGE_ID") && !select.contains("UF_") && !select.contains('*'),
        "only the fields the history needs: {select}"
    );
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, [won, lost, open].map(|id| id.to_string()));
    let outcomes: Vec<Option<Closed>> = leads.iter().map(|l| closed(&l.status_id)).collect();
    assert_eq!(outcomes, [Some(Closed::Won), Some(Closed::Lost), None]);
    assert_eq!(leads[0].budget, Some(240_000.0));
    assert_eq!(
        leads[0].created_at,
        chrono::DateTime::parse_from_rfc3339("2025-06-15T12:00:00+03:00")
            .unwrap()
            .timestamp()
    );
    let pipelines: Vec<&str> = leads.iter().map(|l| l.pipeline_id.as_str()).collect();
    assert_eq!(pipelines, ["0", "1", "0"]);
    assert!(
        leads
            .iter()
            .all(|l| l.fields.is_empty() && l.contacts.is_empty())
    );

    // By `CONTACT_ID` the list finds the deals where the person is the primary contact only:
    // Кузнецов is the second contact of `open` (see `client_leads`).
    emu.clear_requests();
    let his: Vec<String> = crm
        .client_leads(&Client::Contact(KUZNETSOV.to_string()))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(his, [won.to_string()]);
    let hers: Vec<String> = crm
        .client_leads(&Client::Contact(SOKOLOVA.to_string()))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(hers, [open.to_string()]);
    assert_eq!(methods(&emu), ["crm.deal.list", "crm.deal.list"]);
}

#[tokio::test]
async fn a_client_without_deals_costs_one_request_and_a_bad_id_none() {
    let emu = B24Emulator::start().await;
    let crm = client(&emu).await;
    for client in [
        Client::Company(KUZNETSOV_CO.to_string()),
        Client::Company("999999".into()),
        Client::Contact("999999".into()),
    ] {
        emu.clear_requests();
        assert_eq!(
            crm.client_leads(&client).await.unwrap(),
            vec![],
            "{client:?}"
        );
        assert_eq!(methods(&emu), ["crm.deal.list"], "{client:?}");
    }
    emu.clear_requests();
    // "0" is Bitrix24's "no company": as a filter it would match every deal without one.
    for bad in ["0", "", "11 OR 1"] {
        match crm.client_leads(&Client::Company(bad.into())).await {
            Err(CrmError::Rejected(_)) => {}
            other => panic!("{bad:?}: expected Rejected, got {other:?}"),
        }
    }
    assert_eq!(emu.request_count(), 0, "nothing is sent for a bad id");
}

#[tokio::test]
async fn a_client_with_more_deals_than_a_page_gets_them_all() {
    let emu = B24Emulator::start().await;
    for i in 0..60 {
        let stage = match i % 3 {
            0 => "WON",
            1 => "LOSE",
            _ => "EXECUTING",
        };
        emu.seed_deal(
            json!({"TITLE": format!("Поставка {i}"), "COMPANY_ID": URAL, "STAGE_ID": stage}),
        );
    }
    emu.seed_deal(json!({"TITLE": "Без компании"}));
    let crm = client(&emu).await;
    emu.clear_requests();
    let leads = crm
        .client_leads(&Client::Company(URAL.to_string()))
        .await
        .unwrap();
    assert_eq!(leads.len(), 60);
    let won = leads
        .iter()
        .filter(|l| closed(&l.status_id) == Some(Closed::Won))
        .count();
    assert_eq!(won, 20);
    assert_eq!(methods(&emu), ["crm.deal.list", "crm.deal.list"], "50 + 10");
}

#[tokio::test]
async fn a_client_history_on_a_lead_portal_is_its_crm_leads() {
    let emu = B24Emulator::start().await;
    let converted = emu.seed_lead(json!({"TITLE": "Лид 1", "COMPANY_ID": SVARKA,
                                          "STATUS_ID": "CONVERTED", "OPPORTUNITY": 85000}));
    let junk = emu.seed_lead(
        json!({"TITLE": "Лид 2", "COMPANY_ID": SVARKA, "STATUS_ID": "JUNK",
                                     "CONTACT_ID": KUZNETSOV}),
    );
    let open = emu.seed_lead(json!({"TITLE": "Лид 3", "COMPANY_ID": SVARKA,
                                     "STATUS_ID": "IN_PROCESS"}));
    emu.seed_deal(json!({"TITLE": "Сделка той же компании", "COMPANY_ID": SVARKA}));
    let crm = lead_client(&emu).await;
    emu.clear_requests();
    let leads = crm
        .client_leads(&Client::Company(SVARKA.to_string()))
        .await
        .unwrap();
    assert_eq!(methods(&emu), ["crm.lead.list"]);
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, [converted, junk, open].map(|id| id.to_string()));
    let outcomes: Vec<Option<Closed>> = leads.iter().map(|l| closed(&l.status_id)).collect();
    assert_eq!(outcomes, [Some(Closed::Won), Some(Closed::Lost), None]);
    assert!(leads.iter().all(|l| l.pipeline_id == "0"));
    assert_eq!(leads[0].budget, Some(85_000.0));
    let his = crm
        .client_leads(&Client::Contact(KUZNETSOV.to_string()))
        .await
        .unwrap();
    assert_eq!(
        his.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [junk.to_string()]
    );
}

/// The catch-up's reads: companies and the robot's kind of to-dos changed since a moment,
/// each with who changed it last, done ones included, and nothing older.
#[tokio::test]
async fn companies_and_to_dos_changed_since_are_listed_with_who_changed_them() {
    let emu = B24Emulator::start().await;
    let maria = emu.add_user(json!({"NAME": "Мария", "LAST_NAME": "Иванова"}));
    let deal = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    let since = (now - chrono::Duration::seconds(60)).timestamp();
    emu.edit_company(
        SVARKA,
        json!({"TITLE": "ООО «Сварка-Про»", "MODIFY_BY_ID": maria}),
    );
    let old = emu.seed_activity(json!({"OWNER_TYPE_ID": 2, "OWNER_ID": deal,
        "CREATED": stamp(now - chrono::Duration::hours(3)),
        "LAST_UPDATED": stamp(now - chrono::Duration::hours(2))}));
    let done = emu.seed_activity(json!({"OWNER_TYPE_ID": 2, "OWNER_ID": deal,
        "RESPONSIBLE_ID": maria, "COMPLETED": "Y", "EDITOR_ID": maria,
        "CREATED": stamp(now - chrono::Duration::hours(1)), "LAST_UPDATED": stamp(now)}));
    let call = emu.seed_activity(json!({"TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL",
        "OWNER_TYPE_ID": 2, "OWNER_ID": deal, "LAST_UPDATED": stamp(now)}));

    let crm = client(&emu).await;
    let companies = crm.companies_changed(since).await.unwrap();
    let ids: Vec<&str> = companies.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [SVARKA.to_string()], "only the company changed since");
    assert_eq!(companies[0].name, "ООО «Сварка-Про»");
    assert_eq!(
        companies[0].updated_by.as_deref(),
        Some(maria.to_string().as_str())
    );
    assert!(companies[0].updated_at >= since);

    let tasks = crm.tasks_changed(since).await.unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [done.to_string()],
        "not {old} (older), not {call} (a call)"
    );
    let task = &tasks[0];
    assert!(task.completed);
    assert_eq!(task.entity, Some(EntityRef::lead(&deal)));
    assert_eq!(task.updated_by.as_deref(), Some(maria.to_string().as_str()));
    assert!(task.updated_at > task.created_at);

    // Through tasks.task.list: a task the robot completes is listed as done by the robot.
    let crm = webhook(&emu, store(false).await, TodoVia::Task);
    let task_id = crm
        .create_task(&call_task(now.timestamp(), &deal))
        .await
        .unwrap();
    crm.complete_task(&task_id, "Дозвонились").await.unwrap();
    let tasks = crm.tasks_changed(since).await.unwrap();
    let task = tasks.iter().find(|t| t.id == task_id).expect("listed");
    assert!(task.completed, "{task:?}");
    assert_eq!(task.updated_by.as_deref(), Some("1"));
    assert!(
        crm.tasks_changed(now.timestamp() + 3_600)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_deals_products_are_its_product_rows() {
    let emu = B24Emulator::start().await;
    let crm = client(&emu).await;
    let deal = emu.seed_deal(json!({"TITLE": "Сварка для цеха"}));
    emu.set_deal_products(
        deal,
        &[
            ("Инвертор САИ-250 ПРОФ", 18_900.0, 2.0),
            ("Маска хамелеон", 2_450.5, 1.0),
        ],
    );
    let products = crm.lead_products(&deal.to_string()).await.unwrap();
    assert_eq!(products.len(), 2, "{products:?}");
    assert_eq!(products[0].name, "Инвертор САИ-250 ПРОФ");
    assert_eq!(products[0].quantity, Some(2.0));
    assert_eq!(products[0].price, Some(18_900.0));
    assert_eq!(products[1].name, "Маска хамелеон");
    assert_eq!(products[1].price, Some(2_450.5));
    // Setting the rows made the deal's sum theirs, as on the portal.
    assert_eq!(emu.deal(deal).unwrap()["OPPORTUNITY"], json!("40250.50"));

    let bare = emu.seed_deal(json!({"TITLE": "Без товаров"}));
    assert!(
        crm.lead_products(&bare.to_string())
            .await
            .unwrap()
            .is_empty()
    );
}
