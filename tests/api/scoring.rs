//! A new lead's webhook in, the lead scored: its chance, expected profit and priority in
//! the CRM's fields, a priority tag, a row in the ledger; the echo of that write changes
//! nothing; winning the lead puts the profit in the ledger.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use sales_robot::adapters::amocrm::api::{AmoCrm, FieldMapping};
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::crm::Crm;
use sales_robot::adapters::crm::fields::FieldRef;
use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::store::Store;
use sales_robot::config::scoring::{self, ScoringRules};
use sales_robot::domain::event::Source;
use sales_robot::domain::lead::LeadUpdate;
use sales_robot::domain::scoring::{Model, train};
use sales_robot::service::scoring::{ScoreLeads, ScoringSetup};
use sales_robot::synth::Generator;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, eventually, fresh_store, spawn_app_with};
use crate::support::amocrm::{
    AmoEmulator, FIELD_BRAND, FIELD_EXPECTED_PROFIT, FIELD_PRIORITY, FIELD_SCORING, NewLead,
};

const LEAD_FIELDS: [(&str, &str); 4] = [
    ("brand", "Бренд"),
    ("score", "Скоринг"),
    ("priority", "Приоритет"),
    ("expected_profit", "Ожидаемая прибыль"),
];

/// The shipped scoring rules, and a model trained on a year of synthetic leads (once for
/// all the tests here).
pub fn setup() -> ScoringSetup {
    static SETUP: OnceLock<(Arc<ScoringRules>, Arc<Model>)> = OnceLock::new();
    let (rules, model) = SETUP.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let fields: Vec<String> = LEAD_FIELDS.iter().map(|(k, _)| (*k).to_owned()).collect();
        let rules = scoring::load(&dir, Some(&fields)).unwrap().unwrap();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let past: Vec<_> = Generator::new(3, start, 12.0)
            .leads(12, 1_000)
            .into_iter()
            .map(|s| s.lead)
            .collect();
        let (model, _) = train(&rules.features, &rules.margins, &rules.training, &past).unwrap();
        (Arc::new(rules), Arc::new(model))
    });
    ScoringSetup {
        rules: rules.clone(),
        model: model.clone(),
    }
}

pub async fn amo_client(amo: &AmoEmulator) -> AmoCrm {
    amo_client_mapping(amo, &[]).await
}

/// The same, with lead fields mapped besides scoring's (`("meeting_at", "Дата и время
/// встречи")`).
pub async fn amo_client_mapping(amo: &AmoEmulator, more: &[(&str, &str)]) -> AmoCrm {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    std::mem::forget(dir);
    let mapping = FieldMapping {
        leads: LEAD_FIELDS
            .iter()
            .chain(more)
            .map(|(k, v)| ((*k).to_owned(), FieldRef::parse(v)))
            .collect(),
        ..FieldMapping::default()
    };
    AmoCrm::new(
        amo.base_url(),
        Credentials::LongLived(SecretString::from(amo.long_lived_token())),
        store,
        mapping,
    )
    .with_retries(Retries {
        attempts: 2,
        base: Duration::from_millis(20),
        max: Duration::from_millis(50),
    })
}

pub fn added(lead: i64, at: i64) -> String {
    format!(
        "leads[add][0][id]={lead}&leads[add][0][status_id]=60456942&leads[add][0][pipeline_id]=7249526\
         &leads[add][0][last_modified]={at}&account[subdomain]=robotdemo&account[id]=29876543"
    )
}

fn updated(lead: i64, at: i64) -> String {
    format!(
        "leads[update][0][id]={lead}&leads[update][0][status_id]=60456942&leads[update][0][pipeline_id]=7249526\
         &leads[update][0][last_modified]={at}&account[subdomain]=robotdemo&account[id]=29876543"
    )
}

fn won(lead: i64, at: i64) -> String {
    format!(
        "leads[status][0][id]={lead}&leads[status][0][status_id]=142&leads[status][0][old_status_id]=60456942\
         &leads[status][0][last_modified]={at}&account[subdomain]=robotdemo&account[id]=29876543"
    )
}

pub(crate) fn field(lead: &Value, id: i64) -> Option<f64> {
    lead["custom_fields_values"]
        .as_array()?
        .iter()
        .find(|f| f["field_id"] == json!(id))
        .and_then(|f| {
            let v = &f["values"][0]["value"];
            v.as_f64().or_else(|| v.as_str()?.parse().ok())
        })
}

/// Waits until the ledger's one lead is won with `profit`.
async fn won_profit_recorded(store: &Store, profit: f64) -> Result<(), ()> {
    eventually(20, || {
        let store = store.clone();
        async move {
            let rows = store
                .ledger(
                    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
                    Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
                )
                .await
                .unwrap();
            rows.len() == 1
                && rows[0]
                    .outcome
                    .as_ref()
                    .is_some_and(|o| o.won && (o.profit - profit).abs() < 1.0)
        }
    })
    .await
}

pub fn writes(amo: &AmoEmulator) -> usize {
    amo.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/api/v4/leads"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lead_is_scored_into_the_crm_and_the_ledger() {
    let amo = AmoEmulator::start().await;
    let company = amo.seed_company("ООО Сварка-Урал");
    let lead = amo.seed_lead(
        NewLead::new("Аппараты для цеха")
            .price(900_000)
            .company(company)
            .field(FIELD_BRAND, json!("Сварог")),
    );
    let crm = Arc::new(amo_client(&amo).await);
    let handler = Arc::new(ScoreLeads::new(
        crm.clone(),
        setup(),
        Source::Amocrm,
        "deal",
    ));
    let app = spawn_app_with(Backend::Sqlite, handler, |_| {}).await;

    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    let shown = amo.lead(lead).unwrap();
    let chance = field(&shown, FIELD_SCORING).expect("the chance is written");
    let profit = field(&shown, FIELD_EXPECTED_PROFIT).expect("the expected profit is written");
    let priority = field(&shown, FIELD_PRIORITY).expect("the priority is written");
    assert!(chance > 1.0 && chance < 99.0, "{chance}");
    // 900 000 ₽ × Сварог's 22 % × the chance (written to a tenth of a percent).
    assert!(
        (profit - 900_000.0 * 0.22 * chance / 100.0).abs() < 100.0,
        "{profit}"
    );
    let tags: Vec<&str> = shown["_embedded"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tags, [format!("Приоритет {priority}")]);
    let month = app
        .store
        .ledger(
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(month.len(), 1);
    assert_eq!(month[0].scored.lead_id, lead.to_string());
    assert_eq!(f64::from(month[0].scored.priority.number()), priority);
    assert_eq!(writes(&amo), 1, "one write for the whole score");

    // The CRM sends the echo of our write: nothing is written again.
    assert_eq!(
        app.post_amocrm(updated(lead, 1_763_900_060)).await.status(),
        200
    );
    app.wait_for_journal(2, 20).await;
    assert_eq!(writes(&amo), 1, "the echo wrote nothing");

    // The lead is won: its profit goes into the ledger.
    crm.update_lead(
        &lead.to_string(),
        &LeadUpdate {
            status_id: Some("142".into()),
            ..LeadUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        app.post_amocrm(won(lead, 1_763_900_600)).await.status(),
        200
    );
    won_profit_recorded(&app.store, 198_000.0)
        .await
        .expect("the won profit, 900 000 ₽ × 22 %, is in the ledger");
    app.stop().await;
}

/// The scoring setup for the Bitrix24 emulator's portal. Its «Приоритет» is a list of
/// words, not a number: this account keeps the priority in the tag only, and deals have no
/// tags without a mapped field.
pub fn b24_setup() -> ScoringSetup {
    let mut setup = setup();
    let mut rules = (*setup.rules).clone();
    rules.write.priority = None;
    setup.rules = Arc::new(rules);
    setup
}

/// A client of the Bitrix24 emulator through its inbound webhook, with the scoring fields
/// mapped to the portal's `UF_CRM_SCORE` and `UF_CRM_EXPECTED_PROFIT` and to-dos as
/// activities; its tokens and caches in a store of its own under `dir`.
pub async fn b24_client(
    b24: &crate::support::bitrix24::B24Emulator,
    backend: Backend,
    dir: &std::path::Path,
) -> sales_robot::adapters::bitrix24::api::Bitrix24 {
    use sales_robot::adapters::bitrix24::api::{
        Access, Bitrix24, FieldMapping as B24Mapping, RATE,
    };
    use sales_robot::config::TodoVia;

    let store = fresh_store(backend, dir).await;
    let mapping = B24Mapping {
        leads: [
            ("score".to_owned(), FieldRef::parse("UF_CRM_SCORE")),
            (
                "expected_profit".to_owned(),
                FieldRef::parse("UF_CRM_EXPECTED_PROFIT"),
            ),
        ]
        .into(),
        ..B24Mapping::default()
    };
    let access = Access::Webhook(SecretString::from(b24.webhook_url()));
    Bitrix24::new(access, store, RATE, mapping, TodoVia::Activity)
}

/// The same on Bitrix24: a deal's event in, the deal scored into its fields and the ledger,
/// the echo writing nothing, a won deal's profit in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bitrix24_deal_is_scored_into_the_crm_and_the_ledger() {
    use crate::helpers::B24_TOKEN;
    use crate::support::bitrix24::B24Emulator;

    let b24 = B24Emulator::start().await;
    let company = b24.seed_company(json!({"TITLE": "ООО Сварка-Урал"}));
    let deal = b24.seed_deal(
        json!({"TITLE": "Генератор на объект", "OPPORTUNITY": "300000", "COMPANY_ID": company}),
    );
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(b24_client(&b24, Backend::Sqlite, dir.path()).await);
    let handler = Arc::new(ScoreLeads::new(
        crm.clone(),
        b24_setup(),
        Source::Bitrix24,
        "deal",
    ));
    let app = spawn_app_with(Backend::Sqlite, handler, |_| {}).await;
    let event = |name: &str, ts: i64| {
        format!(
            "event={name}&data[FIELDS][ID]={deal}&ts={ts}&auth[domain]=robotdemo.bitrix24.ru\
             &auth[member_id]=m&auth[application_token]={B24_TOKEN}"
        )
    };
    let updates = |b24: &B24Emulator| {
        b24.requests()
            .iter()
            .filter(|r| {
                r.method_name.eq_ignore_ascii_case("crm.deal.update")
                    || r.params.to_string().contains("crm.deal.update")
            })
            .count()
    };

    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALADD", 1_763_900_000))
            .await
            .status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    let shown = b24.deal(deal).unwrap();
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str()?.parse().ok());
    let chance = number(&shown["UF_CRM_SCORE"]).expect("the chance is written");
    let profit = number(&shown["UF_CRM_EXPECTED_PROFIT"]).expect("the expected profit is written");
    assert!(chance > 1.0 && chance < 99.0, "{chance}");
    // No brand: the default margin, 18 %.
    assert!(
        (profit - 300_000.0 * 0.18 * chance / 100.0).abs() < 100.0,
        "{profit}"
    );
    assert_eq!(updates(&b24), 1);

    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALUPDATE", 1_763_900_060))
            .await
            .status(),
        200
    );
    app.wait_for_journal(2, 20).await;
    assert_eq!(updates(&b24), 1, "the echo wrote nothing");

    crm.update_lead(
        &deal.to_string(),
        &LeadUpdate {
            status_id: Some("WON".into()),
            ..LeadUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALUPDATE", 1_763_900_600))
            .await
            .status(),
        200
    );
    won_profit_recorded(&app.store, 54_000.0)
        .await
        .expect("the won profit, 300 000 ₽ × 18 %, is in the ledger");
    app.stop().await;
}
