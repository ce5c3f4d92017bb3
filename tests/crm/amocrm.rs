//! The amoCRM adapter: every trait call, paging, tokens, the rate limit, failures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sales_robot::adapters::amocrm::api::{AmoCrm, FieldMapping};
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::crm::fields::FieldRef;
use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::crm::{Client, Crm, CrmError, LeadFilter};
use sales_robot::adapters::store::Store;
use sales_robot::domain::lead::{Closed, FieldValue, LeadUpdate, closed};
use sales_robot::domain::task::{EntityRef, NewTask, TaskKind};
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{fast, store};
use crate::support::amocrm::{self as emu, AmoEmulator, NewContact, NewLead};

fn mapping() -> FieldMapping {
    FieldMapping {
        leads: BTreeMap::from([
            ("category".to_owned(), FieldRef::parse("Категория")),
            ("brand".to_owned(), FieldRef::parse("Бренд")),
            ("score".to_owned(), FieldRef::parse("Скоринг")),
            (
                "priority".to_owned(),
                FieldRef::parse(&emu::FIELD_PRIORITY.to_string()),
            ),
        ]),
        ..FieldMapping::default()
    }
}

async fn long_lived(emulator: &AmoEmulator) -> AmoCrm {
    let token = SecretString::from(emulator.long_lived_token());
    AmoCrm::new(
        emulator.base_url(),
        Credentials::LongLived(token),
        store(false).await,
        mapping(),
    )
    .with_retries(fast())
}

fn oauth(emulator: &AmoEmulator, store: Store) -> AmoCrm {
    let client = emulator.oauth_client();
    let credentials = Credentials::OAuth {
        client_id: client.client_id,
        client_secret: SecretString::from(client.client_secret),
        redirect_uri: client.redirect_uri,
    };
    AmoCrm::new(emulator.base_url(), credentials, store, mapping()).with_retries(fast())
}

#[tokio::test]
async fn a_lead_comes_with_its_contacts_company_and_fields_by_our_names() {
    let amo = AmoEmulator::start().await;
    let olga = amo.seed_contact(
        NewContact::new("Ольга Смирнова")
            .phone("+79161234567")
            .email("olga@svarka.ru"),
    );
    let alexey = amo.seed_contact(NewContact::new("Алексей Петров").phone("+79031112233"));
    let company = amo.seed_company("ООО Сварка-Про");
    let id = amo.seed_lead(
        NewLead::new("Заявка с сайта svarka-pro.ru")
            .price(150_000)
            .field(emu::FIELD_BRAND, json!("Сварог"))
            .field(emu::FIELD_SCORING, json!(42))
            .contact(alexey)
            .contact(olga)
            .company(company)
            .tag("сайт"),
    );
    let crm = long_lived(&amo).await;
    let lead = crm
        .lead(&id.to_string())
        .await
        .unwrap()
        .expect("the lead exists");
    assert_eq!(lead.name, "Заявка с сайта svarka-pro.ru");
    assert_eq!(lead.budget, Some(150_000.0));
    assert_eq!(
        lead.fields.get("brand"),
        Some(&FieldValue::Text("Сварог".into()))
    );
    assert_eq!(
        lead.fields.get("score").and_then(FieldValue::as_number),
        Some(42.0)
    );
    assert_eq!(lead.tags, vec!["сайт".to_owned()]);
    assert_eq!(lead.contacts.len(), 2);
    let main = lead.main_contact().unwrap();
    assert_eq!(
        main.name, "Алексей Петров",
        "the first linked contact is the main one"
    );
    assert_eq!(main.first_name.as_deref(), Some("Алексей"));
    assert_eq!(main.phones, vec!["+79031112233".to_owned()]);
    assert_eq!(
        lead.company.as_ref().map(|c| c.name.as_str()),
        Some("ООО Сварка-Про")
    );
    assert_eq!(
        crm.lead("999999999").await.unwrap(),
        None,
        "a missing lead is not an error"
    );
}

#[tokio::test]
async fn an_update_writes_the_fields_the_responsible_and_the_tags() {
    let amo = AmoEmulator::start().await;
    let id = amo
        .seed_lead(NewLead::new("Заявка").tag("сайт"))
        .to_string();
    let crm = long_lived(&amo).await;
    let update = LeadUpdate {
        responsible_user_id: Some(emu::USER_IVAN.to_string()),
        fields: BTreeMap::from([
            ("score".to_owned(), FieldValue::Number(0.37)),
            ("brand".to_owned(), FieldValue::Text("Kemppi".into())),
        ]),
        add_tags: vec!["приоритет 2".into()],
        ..LeadUpdate::default()
    };
    crm.update_lead(&id, &update).await.unwrap();
    let lead = crm.lead(&id).await.unwrap().unwrap();
    assert_eq!(lead.responsible_user_id, Some(emu::USER_IVAN.to_string()));
    assert_eq!(
        lead.fields.get("score").and_then(FieldValue::as_number),
        Some(0.37)
    );
    assert_eq!(
        lead.fields.get("brand"),
        Some(&FieldValue::Text("Kemppi".into()))
    );
    let mut tags = lead.tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec!["приоритет 2".to_owned(), "сайт".to_owned()],
        "tags are added, not replaced"
    );
    // A priority that changed: the old tag goes, the new one comes, the others stay.
    let regrade = LeadUpdate {
        add_tags: vec!["приоритет 1".into()],
        remove_tags: vec!["Приоритет 2".into()],
        ..LeadUpdate::default()
    };
    crm.update_lead(&id, &regrade).await.unwrap();
    let mut tags = crm.lead(&id).await.unwrap().unwrap().tags;
    tags.sort();
    assert_eq!(tags, vec!["приоритет 1".to_owned(), "сайт".to_owned()]);
    let before = amo.api_request_count();
    crm.update_lead(&id, &LeadUpdate::default()).await.unwrap();
    assert_eq!(
        amo.api_request_count(),
        before,
        "an empty update sends nothing"
    );
}

#[tokio::test]
async fn listing_reads_every_page_to_the_end() {
    let amo = AmoEmulator::start().await;
    for i in 0..260 {
        amo.seed_lead(NewLead::new(&format!("Заявка {i}")).created_at(1_763_000_000 + i));
    }
    let crm = long_lived(&amo).await;
    let all = crm
        .leads(&LeadFilter {
            created_from: Some(1_763_000_000),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 260);
    let none = crm
        .leads(&LeadFilter {
            created_from: Some(1_900_000_000),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty(), "a 204 is an empty list");
}

#[tokio::test]
async fn tasks_notes_users_stages_and_reasons() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let crm = long_lived(&amo).await;
    let task = NewTask {
        kind: TaskKind::Call,
        text: "Позвонить клиенту: новая заявка с сайта".into(),
        deadline: amo.now() + 600,
        responsible_user_id: emu::USER_ELENA.to_string(),
        entity: EntityRef::lead(&id),
    };
    let task_id = crm.create_task(&task).await.unwrap();
    let open = crm.open_tasks().await.unwrap();
    assert!(
        open.iter().any(|t| t.id == task_id
            && t.text == task.text
            && t.entity == Some(EntityRef::lead(&id)))
    );
    crm.complete_task(&task_id, "Дозвонились").await.unwrap();
    assert!(
        !crm.open_tasks()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == task_id)
    );

    crm.add_note(&EntityRef::lead(&id), "Робот: назначен ответственный")
        .await
        .unwrap();
    let notes = amo.notes_of(id.parse().unwrap());
    assert!(
        notes
            .iter()
            .any(|n| n.to_string().contains("Робот: назначен ответственный")),
        "{notes:?}"
    );
    // Read back as the robot reads it after a crash.
    assert_eq!(
        crm.notes(&EntityRef::lead(&id)).await.unwrap(),
        ["Робот: назначен ответственный"]
    );

    let managers = crm.managers().await.unwrap();
    assert!(
        managers.iter().any(|m| m.name == "Елена Прекрасная"),
        "{managers:?}"
    );
    let stages = crm.stages().await.unwrap();
    assert!(
        stages
            .iter()
            .any(|s| s.name == "Квалификация" && s.pipeline.name == "Продажи"),
        "{stages:?}"
    );
    let reasons = crm.loss_reasons().await.unwrap();
    assert!(
        reasons.iter().any(|r| r.name == "Нет контакта"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn the_fields_the_account_lacks_are_named() {
    let amo = AmoEmulator::start().await;
    let mut m = mapping();
    m.leads.insert("turnover".into(), FieldRef::parse("Оборот"));
    let token = SecretString::from(amo.long_lived_token());
    let crm = AmoCrm::new(
        amo.base_url(),
        Credentials::LongLived(token),
        store(false).await,
        m,
    );
    let missing = crm.check_fields().await.unwrap();
    assert_eq!(
        missing,
        vec!["lead field `turnover`: the account has no field named «Оборот»".to_owned()]
    );
}

#[tokio::test]
async fn a_code_is_exchanged_and_an_expired_token_is_refreshed_once() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let crm = oauth(&amo, store(false).await);
    crm.tokens().exchange_code(&amo.issue_code()).await.unwrap();
    assert!(crm.lead(&id).await.unwrap().is_some());
    amo.expire_access_tokens();
    assert!(
        crm.lead(&id).await.unwrap().is_some(),
        "a 401 renews the token and retries"
    );
    assert_eq!(amo.refresh_reuses(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_refreshing_at_once_never_reuse_the_refresh_token() {
    let amo = AmoEmulator::start().await;
    amo.disable_rate_limit();
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let shared = store(true).await;
    let first = Arc::new(oauth(&amo, shared.clone()));
    let second = Arc::new(oauth(&amo, shared));
    first
        .tokens()
        .exchange_code(&amo.issue_code())
        .await
        .unwrap();
    for round in 0..3 {
        amo.expire_access_tokens();
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
    assert_eq!(
        amo.refresh_reuses(),
        0,
        "a reused refresh token would have revoked the integration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_stay_under_seven_requests_a_second() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let shared = store(true).await;
    let token = SecretString::from(amo.long_lived_token());
    let replicas: Vec<Arc<AmoCrm>> = (0..2)
        .map(|_| {
            Arc::new(AmoCrm::new(
                amo.base_url(),
                Credentials::LongLived(token.clone()),
                shared.clone(),
                mapping(),
            ))
        })
        .collect();
    let started = Instant::now();
    let calls: Vec<_> = (0..28)
        .map(|i| {
            let crm = replicas[i % 2].clone();
            let id = id.clone();
            tokio::spawn(async move {
                crm.update_lead(
                    &id,
                    &LeadUpdate {
                        budget: Some(i as f64),
                        ..LeadUpdate::default()
                    },
                )
                .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(amo.too_many_requests(), 0, "no 429 at all");
    assert!(!amo.blocked());
    // 28 writes plus the field look-ups: at 7 a second that takes about 4 s.
    assert!(elapsed >= Duration::from_millis(3500), "{elapsed:?}");
}

#[tokio::test]
async fn a_5xx_is_retried_and_a_revoked_integration_is_a_clear_error() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let crm = long_lived(&amo).await;
    assert!(crm.lead(&id).await.unwrap().is_some());
    amo.fail_next(2, 502);
    assert!(
        crm.lead(&id).await.unwrap().is_some(),
        "two 502s then success"
    );
    amo.fail_next(5, 503); // as many as the attempts
    match crm.lead(&id).await {
        Err(CrmError::Unavailable(msg)) => assert!(msg.contains("503"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    amo.revoke_all();
    match crm.lead(&id).await {
        Err(CrmError::Unauthorized(msg)) => assert!(msg.contains("long-lived"), "{msg}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_without_getting_the_account_blocked() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    // The account allows less than the robot thinks (another integration shares it): 429s come.
    amo.set_rate_limit(3);
    let token = SecretString::from(amo.long_lived_token());
    let crm = Arc::new(
        AmoCrm::new(
            amo.base_url(),
            Credentials::LongLived(token),
            store(false).await,
            mapping(),
        )
        .with_retries(Retries {
            attempts: 8,
            base: Duration::from_millis(300),
            max: Duration::from_secs(2),
        }),
    );
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let (crm, id) = (crm.clone(), id.clone());
            tokio::spawn(async move {
                crm.update_lead(
                    &id,
                    &LeadUpdate {
                        budget: Some(f64::from(i)),
                        ..LeadUpdate::default()
                    },
                )
                .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .unwrap()
            .expect("every update goes through in the end");
    }
    assert!(amo.too_many_requests() > 0, "the storm happened");
    assert!(
        !amo.blocked(),
        "backing off kept the account from the 403 block"
    );
}

#[tokio::test]
async fn a_client_history_is_every_lead_of_the_company_or_of_the_contact() {
    let amo = AmoEmulator::start().await;
    let company = amo.seed_company("ООО Сварка-Про");
    let other = amo.seed_company("ООО Другие");
    let olga = amo.seed_contact(NewContact::new("Ольга Смирнова").phone("+79161234567"));
    let won = amo.seed_lead(
        NewLead::new("Аппараты, первая поставка")
            .price(240_000)
            .status(emu::STATUS_WON)
            .company(company)
            .created_at(1_750_000_000),
    );
    let lost = amo.seed_lead(
        NewLead::new("Электроды")
            .price(30_000)
            .status(emu::STATUS_LOST)
            .loss_reason(emu::LOSS_TOO_EXPENSIVE)
            .company(company),
    );
    let open = amo.seed_lead(
        NewLead::new("Проволока")
            .status(emu::STATUS_NEGOTIATION)
            .company(company)
            .contact(olga),
    );
    amo.seed_lead(
        NewLead::new("Чужая заявка")
            .company(other)
            .status(emu::STATUS_WON),
    );
    let her_own = amo.seed_lead(NewLead::new("Ольга, лично").contact(olga));
    let crm = long_lived(&amo).await;

    let before = amo.api_request_count();
    let mut leads = crm
        .client_leads(&Client::Company(company.to_string()))
        .await
        .unwrap();
    assert_eq!(
        amo.api_request_count() - before,
        2,
        "the company with its lead ids, then the leads: {:?}",
        amo.requests()
    );
    leads.sort_by_key(|l| l.id.parse::<i64>().unwrap());
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, [won, lost, open].map(|id| id.to_string()));
    let outcomes: Vec<Option<Closed>> = leads.iter().map(|l| closed(&l.status_id)).collect();
    assert_eq!(outcomes, [Some(Closed::Won), Some(Closed::Lost), None]);
    assert_eq!(leads[0].budget, Some(240_000.0));
    assert_eq!(leads[0].created_at, 1_750_000_000);
    assert!(
        leads
            .iter()
            .all(|l| l.pipeline_id == emu::PIPELINE_SALES.to_string())
    );
    assert_eq!(leads[2].budget, None, "no price is no budget");

    let before = amo.api_request_count();
    let mut hers: Vec<String> = crm
        .client_leads(&Client::Contact(olga.to_string()))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    hers.sort();
    assert_eq!(hers, [open, her_own].map(|id| id.to_string()));
    assert_eq!(amo.api_request_count() - before, 2);
}

#[tokio::test]
async fn a_client_without_leads_or_missing_costs_one_request_and_a_bad_id_none() {
    let amo = AmoEmulator::start().await;
    let idle = amo.seed_company("ООО Без заявок");
    let crm = long_lived(&amo).await;
    for client in [
        Client::Company(idle.to_string()),
        Client::Company("999999999".into()),
        Client::Contact(emu::CONTACT_ALEXEY.to_string()),
        Client::Contact("999999999".into()),
    ] {
        let before = amo.api_request_count();
        assert_eq!(
            crm.client_leads(&client).await.unwrap(),
            vec![],
            "{client:?}"
        );
        assert_eq!(amo.api_request_count() - before, 1, "{client:?}");
    }
    let before = amo.api_request_count();
    for bad in ["", "0", "12/notes"] {
        match crm.client_leads(&Client::Company(bad.into())).await {
            Err(CrmError::Rejected(_)) => {}
            other => panic!("{bad:?}: expected Rejected, got {other:?}"),
        }
    }
    assert_eq!(
        amo.api_request_count(),
        before,
        "nothing is sent for a bad id"
    );
}

#[tokio::test]
async fn a_client_with_more_leads_than_a_page_gets_them_all() {
    let amo = AmoEmulator::start().await;
    let company = amo.seed_company("АО «Большой клиент»");
    for i in 0..260 {
        let status = match i % 3 {
            0 => emu::STATUS_WON,
            1 => emu::STATUS_LOST,
            _ => emu::STATUS_FIRST_CONTACT,
        };
        amo.seed_lead(
            NewLead::new(&format!("Заявка {i}"))
                .company(company)
                .status(status),
        );
    }
    amo.seed_lead(NewLead::new("Без компании"));
    let crm = long_lived(&amo).await;
    let (before, seen) = (amo.api_request_count(), amo.request_count());
    let leads = crm
        .client_leads(&Client::Company(company.to_string()))
        .await
        .unwrap();
    assert_eq!(leads.len(), 260);
    let won = leads
        .iter()
        .filter(|l| closed(&l.status_id) == Some(Closed::Won))
        .count();
    assert_eq!(won, 87);
    let pages: Vec<usize> = amo
        .requests()
        .iter()
        .skip(seen)
        .filter(|r| r.path == "/api/v4/leads")
        .map(|r| {
            r.query
                .as_deref()
                .unwrap_or_default()
                .matches("filter")
                .count()
        })
        .collect();
    assert_eq!(
        pages,
        [250, 10],
        "250 ids a request, each answered in one page"
    );
    assert_eq!(amo.api_request_count() - before, 3);
}

/// The catch-up's reads: companies and tasks changed since a moment, each with who changed
/// it last, and nothing older.
#[tokio::test]
async fn companies_and_tasks_changed_since_are_listed_with_who_changed_them() {
    let amo = AmoEmulator::start().await;
    let crm = long_lived(&amo).await;
    let lead = amo.seed_lead(NewLead::new("Заявка"));
    let old_task = amo.seed_task(lead, emu::USER_MARIA, amo.now() - 7_200);
    let since = amo.now() - 60;
    amo.edit_company(
        emu::COMPANY_ROMASHKA,
        "ООО «Ромашка и сыновья»",
        emu::USER_MARIA,
    );
    let task = amo.seed_task(lead, emu::USER_MARIA, amo.now() - 600);
    amo.complete_task_as(task, emu::USER_MARIA, amo.now());

    let companies = crm.companies_changed(since).await.unwrap();
    assert_eq!(companies.len(), 1, "{companies:?}");
    let romashka = &companies[0];
    assert_eq!(romashka.id, emu::COMPANY_ROMASHKA.to_string());
    assert_eq!(romashka.name, "ООО «Ромашка и сыновья»");
    assert_eq!(
        romashka.updated_by.as_deref(),
        Some(emu::USER_MARIA.to_string().as_str())
    );
    assert!(romashka.updated_at >= since && romashka.created_at < since);

    let tasks = crm.tasks_changed(since).await.unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [task.to_string()], "only the task changed since");
    assert!(!ids.contains(&old_task.to_string().as_str()));
    let done = &tasks[0];
    assert!(done.completed, "a completed task is listed too");
    assert_eq!(done.entity, Some(EntityRef::lead(lead.to_string())));
    assert_eq!(
        done.updated_by.as_deref(),
        Some(emu::USER_MARIA.to_string().as_str())
    );
    assert!(done.updated_at > done.created_at);
}

#[tokio::test]
async fn a_leads_products_come_from_its_catalog_links_in_order() {
    let emulator = AmoEmulator::start().await;
    let crm = long_lived(&emulator).await;
    let lead = emulator.seed_lead(NewLead::new("Сварка для цеха"));
    let inverter = emulator.seed_product("Инвертор САИ-250 ПРОФ", Some("Ресанта"), 18_900.0);
    let mask = emulator.seed_product("Маска хамелеон", None, 2_450.5);
    emulator.link_product(lead, inverter, 2.0);
    emulator.link_product(lead, mask, 1.0);
    let products = crm.lead_products(&lead.to_string()).await.unwrap();
    assert_eq!(products.len(), 2, "{products:?}");
    assert_eq!(products[0].name, "Инвертор САИ-250 ПРОФ");
    assert_eq!(products[0].brand.as_deref(), Some("Ресанта"));
    assert_eq!(products[0].quantity, Some(2.0));
    assert_eq!(products[0].price, Some(18_900.0));
    assert_eq!(products[1].name, "Маска хамелеон");
    assert_eq!(products[1].brand, None);
    assert_eq!(products[1].price, Some(2_450.5));

    let bare = emulator.seed_lead(NewLead::new("Без товаров"));
    assert!(
        crm.lead_products(&bare.to_string())
            .await
            .unwrap()
            .is_empty()
    );
}
