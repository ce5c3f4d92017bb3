//! `cargo bench --bench crm`: lead updates pushed through the CRM adapters against the
//! emulators at the CRMs' real limits. The floor is what the limit allows at best (amoCRM:
//! requests ÷ 7 per second; Bitrix24: the bucket's 50 at once, then (requests − 50) ÷ 2 per
//! second); the run should end within 5 % of it and see no 429 (no QUERY_LIMIT_EXCEEDED) at
//! all, also with two clients (two replicas) drawing on one limit in Redis. A last line per
//! CRM sends the same number of updates, to as many leads, through one `update_leads`.
//!
//! The "2 processes" lines start this binary twice more as children, each with its own
//! client, sharing the limit in one Redis: two replicas as the robot runs them.
//!
//! `CRM_BENCH_UPDATES` sets the number of updates (500 by default); `CRM_BENCH_ONLY=amocrm` or
//! `bitrix24` runs one half; `ROBOT_TEST_REDIS_URL` the Redis (127.0.0.1:6379 by default).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sales_robot::adapters::amocrm::api::{AmoCrm, FieldMapping};
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::bitrix24::api::{Access, Bitrix24, RATE, TodoVia};
use sales_robot::adapters::crm::Crm;
use sales_robot::adapters::store::{Location, Store, StoreSettings};
use sales_robot::domain::lead::LeadUpdate;
use secrecy::SecretString;
use serde_json::json;

use support::amocrm::{AmoEmulator, NewLead};
use support::bitrix24::B24Emulator;

/// Bitrix24's bucket on ordinary plans, as the emulator keeps it.
const B24_BURST: u32 = 50;
const B24_DRAIN: f64 = 2.0;

async fn redis_store(tag: &str) -> Store {
    store_in(&format!("bench-crm-{tag}-{}", std::process::id())).await
}

async fn store_in(namespace: &str) -> Store {
    let url =
        std::env::var("ROBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let settings = StoreSettings {
        namespace: namespace.to_owned(),
        dedup_window: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(10),
    };
    Store::open(&Location::Redis(url), settings)
        .await
        .expect("Redis answers")
}

/// Pushes `updates` lead updates through `clients` (round robin, 8 in flight each).
async fn push(clients: &[Arc<dyn Crm>], leads: &[String], updates: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for lane in 0..8 {
            let client = client.clone();
            let leads = leads.to_vec();
            let mine: Vec<usize> = (0..updates)
                .filter(|i| i % (clients.len() * 8) == c * 8 + lane)
                .collect();
            tasks.push(tokio::spawn(async move {
                for i in mine {
                    let update = LeadUpdate {
                        budget: Some(1000.0 + i as f64),
                        ..LeadUpdate::default()
                    };
                    client
                        .update_lead(&leads[i % leads.len()], &update)
                        .await
                        .expect("the update goes through");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("a lane");
    }
    started.elapsed()
}

async fn amocrm(updates: usize, replicas: usize) {
    let amo = AmoEmulator::start().await;
    let leads: Vec<String> = (0..50)
        .map(|i| {
            amo.seed_lead(NewLead::new(&format!("Заявка {i}")))
                .to_string()
        })
        .collect();
    let store = redis_store(&format!("amo{replicas}")).await;
    let token = SecretString::from(amo.long_lived_token());
    let clients: Vec<Arc<dyn Crm>> = (0..replicas)
        .map(|_| {
            Arc::new(AmoCrm::new(
                amo.base_url(),
                Credentials::LongLived(token.clone()),
                store.clone(),
                FieldMapping::default(),
            )) as Arc<dyn Crm>
        })
        .collect();
    // Let the emulator's rolling second empty after the seeding reads.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = amo.api_request_count();
    let elapsed = push(&clients, &leads, updates).await;
    let requests = amo.api_request_count() - before;
    let floor = Duration::from_secs_f64(requests as f64 / 7.0);
    println!(
        "amoCRM   {replicas} client(s) {updates:>5} updates {requests:>5} requests  {:>7.2} s  floor {:>7.2} s  ratio {:.3}  429s {}  blocked {}",
        elapsed.as_secs_f64(),
        floor.as_secs_f64(),
        elapsed.as_secs_f64() / floor.as_secs_f64(),
        amo.too_many_requests(),
        amo.blocked()
    );
}

/// The updates of the batch line: one for each lead, as a burst of changes brings them.
fn burst(leads: &[String]) -> Vec<(String, LeadUpdate)> {
    leads
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let update = LeadUpdate {
                budget: Some(1000.0 + i as f64),
                ..LeadUpdate::default()
            };
            (id.clone(), update)
        })
        .collect()
}

async fn amocrm_batch(updates: usize) {
    let amo = AmoEmulator::start().await;
    let leads: Vec<String> = (0..updates)
        .map(|i| {
            amo.seed_lead(NewLead::new(&format!("Заявка {i}")))
                .to_string()
        })
        .collect();
    let crm = AmoCrm::new(
        amo.base_url(),
        Credentials::LongLived(SecretString::from(amo.long_lived_token())),
        redis_store("amo-batch").await,
        FieldMapping::default(),
    );
    let burst = burst(&leads);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = amo.api_request_count();
    let started = Instant::now();
    crm.update_leads(&burst)
        .await
        .expect("the batch goes through");
    let elapsed = started.elapsed();
    println!(
        "amoCRM   batch       {updates:>5} updates {:>5} requests  {:>7.2} s  429s {}",
        amo.api_request_count() - before,
        elapsed.as_secs_f64(),
        amo.too_many_requests(),
    );
}

fn b24_client(b24: &B24Emulator, store: Store) -> Bitrix24 {
    let access = Access::Webhook(SecretString::from(b24.webhook_url()));
    Bitrix24::new(
        access,
        store,
        RATE,
        FieldMapping::default(),
        TodoVia::Activity,
    )
}

/// Requests the portal took (those it refused with QUERY_LIMIT_EXCEEDED are not counted) and
/// the refusals, since `before`.
fn b24_counts(b24: &B24Emulator, before: (usize, usize)) -> (usize, usize) {
    let hits = b24.query_limit_hits() - before.1;
    (b24.request_count() - before.0 - hits, hits)
}

async fn bitrix24(updates: usize, clients: usize) {
    let b24 = B24Emulator::start().await;
    b24.set_bucket(B24_BURST, B24_DRAIN);
    let leads: Vec<String> = (0..50)
        .map(|i| {
            b24.seed_deal(json!({"TITLE": format!("Заявка {i}")}))
                .to_string()
        })
        .collect();
    let store = redis_store(&format!("b24-{clients}")).await;
    let crms: Vec<Arc<dyn Crm>> = (0..clients)
        .map(|_| Arc::new(b24_client(&b24, store.clone())) as Arc<dyn Crm>)
        .collect();
    let before = (b24.request_count(), b24.query_limit_hits());
    let elapsed = push(&crms, &leads, updates).await;
    let (requests, hits) = b24_counts(&b24, before);
    // The bucket takes its burst at once; only the rest waits for the drain.
    let floor = requests.saturating_sub(B24_BURST as usize) as f64 / B24_DRAIN;
    let ratio = if floor > 0.0 {
        format!("{:.3}", elapsed.as_secs_f64() / floor)
    } else {
        "-".to_owned()
    };
    println!(
        "Bitrix24 {clients} client(s) {updates:>5} updates {requests:>5} requests  {:>7.2} s  floor {floor:>7.2} s  ratio {ratio}  QUERY_LIMIT_EXCEEDED {hits}",
        elapsed.as_secs_f64(),
    );
}

async fn bitrix24_batch(updates: usize) {
    let b24 = B24Emulator::start().await;
    b24.set_bucket(B24_BURST, B24_DRAIN);
    let leads: Vec<String> = (0..updates)
        .map(|i| {
            b24.seed_deal(json!({"TITLE": format!("Заявка {i}")}))
                .to_string()
        })
        .collect();
    let crm = b24_client(&b24, redis_store("b24-batch").await);
    let burst = burst(&leads);
    let before = (b24.request_count(), b24.query_limit_hits());
    let started = Instant::now();
    crm.update_leads(&burst)
        .await
        .expect("the batch goes through");
    let elapsed = started.elapsed();
    let (requests, hits) = b24_counts(&b24, before);
    println!(
        "Bitrix24 batch       {updates:>5} updates {requests:>5} requests  {:>7.2} s  QUERY_LIMIT_EXCEEDED {hits}",
        elapsed.as_secs_f64(),
    );
}

/// Two replicas as two OS processes: this bench binary started again as a child that pushes
/// its share of the updates through its own client, on the same Redis limit.
async fn in_processes(
    crm: &str,
    url: &str,
    secret: &str,
    leads: &[String],
    updates: usize,
) -> Duration {
    let namespace = format!("bench-crm-{crm}-procs-{}", std::process::id());
    let started = Instant::now();
    let children: Vec<_> = (0..2)
        .map(|part| {
            std::process::Command::new(std::env::current_exe().expect("the bench binary"))
                .env("CRM_BENCH_CHILD", crm)
                .env("CRM_BENCH_URL", url)
                .env("CRM_BENCH_SECRET", secret)
                .env("CRM_BENCH_NAMESPACE", &namespace)
                .env("CRM_BENCH_LEADS", leads.join(","))
                .env("CRM_BENCH_UPDATES", updates.to_string())
                .env("CRM_BENCH_PART", part.to_string())
                .spawn()
                .expect("a child process")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().expect("the child ends").success(),
            "a child failed"
        );
    }
    started.elapsed()
}

/// The child's side of [`in_processes`].
async fn child(crm: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set for a child"));
    let store = store_in(&var("CRM_BENCH_NAMESPACE")).await;
    let leads: Vec<String> = var("CRM_BENCH_LEADS")
        .split(',')
        .map(str::to_owned)
        .collect();
    let updates: usize = var("CRM_BENCH_UPDATES").parse().expect("a number");
    let part: usize = var("CRM_BENCH_PART").parse().expect("0 or 1");
    let secret = SecretString::from(var("CRM_BENCH_SECRET"));
    let client: Arc<dyn Crm> = match crm {
        "amocrm" => Arc::new(AmoCrm::new(
            &var("CRM_BENCH_URL"),
            Credentials::LongLived(secret),
            store,
            FieldMapping::default(),
        )),
        _ => Arc::new(Bitrix24::new(
            Access::Webhook(secret),
            store,
            RATE,
            FieldMapping::default(),
            TodoVia::Activity,
        )),
    };
    let mine: Vec<String> = (0..updates)
        .filter(|i| i % 2 == part)
        .map(|i| leads[i % leads.len()].clone())
        .collect();
    // Half the updates each, through the same shared limit.
    push(&[client], &mine, mine.len()).await;
}

async fn amocrm_processes(updates: usize) {
    let amo = AmoEmulator::start().await;
    let leads: Vec<String> = (0..50)
        .map(|i| {
            amo.seed_lead(NewLead::new(&format!("Заявка {i}")))
                .to_string()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = amo.api_request_count();
    let elapsed = in_processes(
        "amocrm",
        amo.base_url(),
        &amo.long_lived_token(),
        &leads,
        updates,
    )
    .await;
    let requests = amo.api_request_count() - before;
    let floor = requests as f64 / 7.0;
    println!(
        "amoCRM   2 processes {updates:>5} updates {requests:>5} requests  {:>7.2} s  floor {floor:>7.2} s  ratio {:.3}  429s {}  blocked {}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / floor,
        amo.too_many_requests(),
        amo.blocked()
    );
}

async fn bitrix24_processes(updates: usize) {
    let b24 = B24Emulator::start().await;
    b24.set_bucket(B24_BURST, B24_DRAIN);
    let leads: Vec<String> = (0..50)
        .map(|i| {
            b24.seed_deal(json!({"TITLE": format!("Заявка {i}")}))
                .to_string()
        })
        .collect();
    let before = (b24.request_count(), b24.query_limit_hits());
    let elapsed = in_processes(
        "bitrix24",
        &b24.base_url(),
        &b24.webhook_url(),
        &leads,
        updates,
    )
    .await;
    let (requests, hits) = b24_counts(&b24, before);
    let floor = requests.saturating_sub(B24_BURST as usize) as f64 / B24_DRAIN;
    let ratio = if floor > 0.0 {
        format!("{:.3}", elapsed.as_secs_f64() / floor)
    } else {
        "-".to_owned()
    };
    println!(
        "Bitrix24 2 processes {updates:>5} updates {requests:>5} requests  {:>7.2} s  floor {floor:>7.2} s  ratio {ratio}  QUERY_LIMIT_EXCEEDED {hits}",
        elapsed.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() {
    if let Ok(crm) = std::env::var("CRM_BENCH_CHILD") {
        child(&crm).await;
        return;
    }
    let updates: usize = std::env::var("CRM_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let only = std::env::var("CRM_BENCH_ONLY").unwrap_or_default();
    let (amo, b24) = match only.trim().to_ascii_lowercase().as_str() {
        "" => (true, true),
        "amocrm" => (true, false),
        "bitrix24" => (false, true),
        other => panic!("CRM_BENCH_ONLY is amocrm or bitrix24, not «{other}»"),
    };
    println!(
        "CRM adapter benchmark: {updates} lead updates against the emulators at the real limits"
    );
    if amo {
        amocrm(updates, 1).await;
        amocrm(updates, 2).await;
        amocrm_processes(updates).await;
        amocrm_batch(updates).await;
    }
    if b24 {
        bitrix24(updates, 1).await;
        bitrix24(updates, 2).await;
        bitrix24_processes(updates).await;
        bitrix24_batch(updates).await;
    }
}
