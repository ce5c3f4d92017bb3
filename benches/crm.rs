//! `cargo bench --bench crm`: lead updates pushed through the CRM adapters against the
//! emulators at the CRMs' real limits. The floor is what the limit allows at best (amoCRM:
//! requests ÷ 7 per second); the run should end within 5 % of it and see no 429 at all, also
//! with two clients (two replicas) drawing on one limit in Redis.
//!
//! `CRM_BENCH_UPDATES` sets the number of updates (500 by default); `ROBOT_TEST_REDIS_URL`
//! the Redis (127.0.0.1:6379 by default).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sales_robot::adapters::amocrm::api::{AmoCrm, FieldMapping};
use sales_robot::adapters::amocrm::oauth::Credentials;
use sales_robot::adapters::crm::Crm;
use sales_robot::adapters::store::{Location, Store, StoreSettings};
use sales_robot::domain::lead::LeadUpdate;
use secrecy::SecretString;

use support::amocrm::{AmoEmulator, NewLead};

async fn redis_store(tag: &str) -> Store {
    let url =
        std::env::var("ROBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let settings = StoreSettings {
        namespace: format!("bench-crm-{tag}-{}", std::process::id()),
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

#[tokio::main]
async fn main() {
    let updates: usize = std::env::var("CRM_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    println!(
        "CRM adapter benchmark: {updates} lead updates against the emulators at the real limits"
    );
    amocrm(updates, 1).await;
    amocrm(updates, 2).await;
}
