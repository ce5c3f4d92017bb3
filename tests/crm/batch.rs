//! `update_leads`: many lead updates in few requests, in both adapters.

use std::collections::BTreeMap;

use sales_robot::adapters::amocrm::api::AmoCrm;
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::bitrix24::api::{Access, Bitrix24, FieldMapping, RATE, TodoVia};
use sales_robot::adapters::crm::fields::FieldRef;
use sales_robot::adapters::crm::{Crm, CrmError, LeadFilter};
use sales_robot::domain::lead::{FieldValue, LeadUpdate};
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{fast, store};
use crate::support::amocrm::{self as amo_emu, AmoEmulator, NewLead};
use crate::support::bitrix24::B24Emulator;

fn refs(pairs: &[(&str, &str)]) -> BTreeMap<String, FieldRef> {
    pairs
        .iter()
        .map(|(ours, r)| ((*ours).to_owned(), FieldRef::parse(r)))
        .collect()
}

async fn amocrm(emu: &AmoEmulator) -> AmoCrm {
    let mapping = FieldMapping {
        leads: refs(&[("score", "Скоринг"), ("brand", "Бренд")]),
        ..FieldMapping::default()
    };
    let token = SecretString::from(emu.long_lived_token());
    AmoCrm::new(
        emu.base_url(),
        Credentials::LongLived(token),
        store(false).await,
        mapping,
    )
    .with_retries(fast())
}

async fn bitrix24(emu: &B24Emulator, extra: &[(&str, &str)]) -> Bitrix24 {
    let mut leads = refs(&[("priority", "Приоритет"), ("score", "UF_CRM_SCORE")]);
    leads.extend(refs(extra));
    let mapping = FieldMapping {
        leads,
        ..FieldMapping::default()
    };
    let access = Access::Webhook(SecretString::from(emu.webhook_url()));
    Bitrix24::new(access, store(false).await, RATE, mapping, TodoVia::Activity).with_retries(fast())
}

fn b24_methods(emu: &B24Emulator) -> Vec<String> {
    emu.requests().into_iter().map(|r| r.method_name).collect()
}

#[tokio::test]
async fn six_hundred_amocrm_updates_take_three_patches_and_all_read_back() {
    let amo = AmoEmulator::start().await;
    let created = 1_763_000_000;
    let ids: Vec<String> = (0..600)
        .map(|i| {
            amo.seed_lead(
                NewLead::new(&format!("Заявка {i}"))
                    .created_at(created + i)
                    .tag("сайт"),
            )
            .to_string()
        })
        .collect();
    let crm = amocrm(&amo).await;
    let updates: Vec<(String, LeadUpdate)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let update = LeadUpdate {
                budget: Some(1000.0 + i as f64),
                responsible_user_id: (i % 2 == 0).then(|| amo_emu::USER_IVAN.to_string()),
                fields: BTreeMap::from([("score".to_owned(), FieldValue::Number(i as f64))]),
                add_tags: if i % 3 == 0 {
                    vec!["пакет".into()]
                } else {
                    Vec::new()
                },
                ..LeadUpdate::default()
            };
            (id.clone(), update)
        })
        .collect();
    let before = amo.requests().len();
    crm.update_leads(&updates).await.unwrap();
    let sent = amo.requests().split_off(before);
    let patches: Vec<_> = sent.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 3, "250 + 250 + 100");
    assert!(
        patches
            .iter()
            .all(|r| r.path == "/api/v4/leads" && r.status == 200),
        "{patches:?}"
    );
    let tag_reads = sent
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v4/leads")
        .count();
    assert_eq!(tag_reads, 3, "one read of the current tags a chunk");
    assert!(
        !sent.iter().any(|r| r
            .path
            .strip_prefix("/api/v4/leads/")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))),
        "no lead is read or written alone"
    );

    let leads = crm
        .leads(&LeadFilter {
            created_from: Some(created),
            ..LeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(leads.len(), 600);
    for lead in &leads {
        let i = ids.iter().position(|id| *id == lead.id).unwrap();
        assert_eq!(lead.budget, Some(1000.0 + i as f64), "lead {i}");
        let responsible = if i % 2 == 0 {
            amo_emu::USER_IVAN
        } else {
            amo_emu::USER_ELENA
        };
        assert_eq!(lead.responsible_user_id, Some(responsible.to_string()));
        assert_eq!(
            lead.fields.get("score").and_then(FieldValue::as_number),
            Some(i as f64)
        );
        let mut tags = lead.tags.clone();
        tags.sort();
        let expected: &[&str] = if i % 3 == 0 {
            &["пакет", "сайт"]
        } else {
            &["сайт"]
        };
        assert_eq!(tags, expected, "lead {i}: tags are added, not replaced");
    }
}

#[tokio::test]
async fn a_refused_amocrm_request_names_the_lead() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let crm = amocrm(&amo).await;
    let budget = |b: f64| LeadUpdate {
        budget: Some(b),
        ..LeadUpdate::default()
    };
    let updates = vec![(id.clone(), budget(5.0)), ("999999999".into(), budget(6.0))];
    match crm.update_leads(&updates).await {
        Err(CrmError::Rejected(msg)) => assert!(msg.contains("999999999"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hundred_and_twenty_bitrix24_updates_take_three_batches_and_all_read_back() {
    let emu = B24Emulator::start().await;
    let ids: Vec<String> = (0..120)
        .map(|i| {
            emu.seed_deal(json!({"TITLE": format!("Заявка {i}"), "UF_CRM_PRIORITY": 45}))
                .to_string()
        })
        .collect();
    let crm = bitrix24(&emu, &[]).await;
    crm.loss_reasons().await.unwrap(); // the field look-up, out of the count below
    emu.clear_requests();
    let updates: Vec<(String, LeadUpdate)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let update = LeadUpdate {
                budget: Some(1000.0 + i as f64),
                responsible_user_id: Some(if i % 2 == 0 { "2" } else { "3" }.into()),
                status_id: Some(
                    if i == 0 {
                        "C1:PREPARATION"
                    } else {
                        "PREPARATION"
                    }
                    .into(),
                ),
                // The first moves to the other funnel: `crm.item.update` within the batch.
                pipeline_id: (i == 0).then(|| "1".to_owned()),
                fields: BTreeMap::from([
                    ("score".to_owned(), FieldValue::Number(i as f64)),
                    ("priority".to_owned(), FieldValue::Text("Низкий".into())),
                ]),
                ..LeadUpdate::default()
            };
            (id.clone(), update)
        })
        .collect();
    crm.update_leads(&updates).await.unwrap();
    assert_eq!(
        b24_methods(&emu),
        vec!["batch", "batch", "batch"],
        "121 commands: 50 + 50 + 21"
    );
    assert_eq!(emu.query_limit_hits(), 0);

    let deals = crm.leads(&LeadFilter::default()).await.unwrap();
    assert_eq!(deals.len(), 120);
    for deal in &deals {
        let i = ids.iter().position(|id| *id == deal.id).unwrap();
        assert_eq!(deal.budget, Some(1000.0 + i as f64), "deal {i}");
        let responsible = if i % 2 == 0 { "2" } else { "3" };
        assert_eq!(deal.responsible_user_id.as_deref(), Some(responsible));
        assert_eq!(
            deal.fields.get("score"),
            Some(&FieldValue::Number(i as f64))
        );
        assert_eq!(
            deal.fields.get("priority"),
            Some(&FieldValue::Text("Низкий".into()))
        );
        let (pipeline, stage) = if i == 0 {
            ("1", "C1:PREPARATION")
        } else {
            ("0", "PREPARATION")
        };
        assert_eq!(
            (deal.pipeline_id.as_str(), deal.status_id.as_str()),
            (pipeline, stage),
            "deal {i}"
        );
    }
}

#[tokio::test]
async fn an_invalid_update_in_a_bitrix24_batch_is_named_and_the_others_go_through() {
    let emu = B24Emulator::start().await;
    let ids: Vec<i64> = (0..5)
        .map(|i| emu.seed_deal(json!({"TITLE": format!("Заявка {i}")})))
        .collect();
    let crm = bitrix24(&emu, &[]).await;
    let mut updates: Vec<(String, LeadUpdate)> = ids
        .iter()
        .map(|id| {
            let update = LeadUpdate {
                budget: Some(777.0),
                ..LeadUpdate::default()
            };
            (id.to_string(), update)
        })
        .collect();
    // Refused by the portal: a stage it does not have, a deal it does not have.
    updates[1].1.status_id = Some("NOPE".into());
    updates.push((
        "999999".into(),
        LeadUpdate {
            budget: Some(1.0),
            ..LeadUpdate::default()
        },
    ));
    // Refused before sending: a list field without such an item.
    updates[3].1.fields =
        BTreeMap::from([("priority".to_owned(), FieldValue::Text("Срочный".into()))]);
    match crm.update_leads(&updates).await {
        Err(CrmError::Rejected(msg)) => {
            for named in [ids[1].to_string(), ids[3].to_string(), "999999".into()] {
                assert!(msg.contains(&format!("deal {named}:")), "{named}: {msg}");
            }
            assert!(msg.contains("Stage 'NOPE' not found"), "{msg}");
            assert!(msg.contains("Срочный"), "{msg}");
            assert!(!msg.contains(&format!("deal {}:", ids[0])), "{msg}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    for (i, id) in ids.iter().enumerate() {
        let raw = emu.deal(*id).unwrap();
        let written = raw["OPPORTUNITY"] == "777.00";
        assert_eq!(written, i != 1 && i != 3, "deal {i}: {raw}");
    }
}

#[tokio::test]
async fn tags_in_a_bitrix24_batch_add_to_what_the_deals_hold() {
    let emu = B24Emulator::start().await;
    let first = emu.seed_deal(json!({"TITLE": "Заявка", "COMMENTS": "сайт"}));
    let second = emu.seed_deal(json!({"TITLE": "Заявка"}));
    let crm = bitrix24(&emu, &[("tags", "COMMENTS")]).await;
    crm.loss_reasons().await.unwrap(); // the field look-up, out of the count below
    emu.clear_requests();
    let tag = |t: &str| LeadUpdate {
        add_tags: vec![t.to_owned()],
        ..LeadUpdate::default()
    };
    let updates = vec![
        (first.to_string(), tag("пакет")),
        (second.to_string(), tag("пакет")),
        (first.to_string(), tag("второй")),
    ];
    crm.update_leads(&updates).await.unwrap();
    assert_eq!(
        b24_methods(&emu),
        vec!["batch", "batch"],
        "the deals read in one batch, written in another"
    );
    assert_eq!(emu.deal(first).unwrap()["COMMENTS"], "сайт, пакет, второй");
    assert_eq!(emu.deal(second).unwrap()["COMMENTS"], "пакет");
}

#[tokio::test]
async fn empty_updates_send_nothing() {
    let amo = AmoEmulator::start().await;
    let id = amo.seed_lead(NewLead::new("Заявка")).to_string();
    let crm = amocrm(&amo).await;
    let empty = vec![
        (id.clone(), LeadUpdate::default()),
        (id, LeadUpdate::default()),
    ];
    crm.update_leads(&[]).await.unwrap();
    crm.update_leads(&empty).await.unwrap();
    assert_eq!(amo.request_count(), 0, "amoCRM: nothing sent");

    let emu = B24Emulator::start().await;
    let id = emu.seed_deal(json!({"TITLE": "Заявка"})).to_string();
    let crm = bitrix24(&emu, &[]).await;
    let empty = vec![(id, LeadUpdate::default())];
    crm.update_leads(&[]).await.unwrap();
    crm.update_leads(&empty).await.unwrap();
    assert_eq!(emu.request_count(), 0, "Bitrix24: nothing sent");
}
