//! What every adapter test needs: short retries, and a fresh store for the rate limit and
//! the tokens.

use std::time::Duration;

use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::store::{Location, Store, StoreSettings};

/// Retries with short waits, so that failure tests stay quick.
pub fn fast() -> Retries {
    Retries {
        attempts: 5,
        base: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

/// A fresh store: a namespace of its own on the tests' Redis (`redis`), else a new SQLite file.
pub async fn store(redis: bool) -> Store {
    use rand::Rng;
    let location = if redis {
        Location::Redis(
            std::env::var("ROBOT_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
    } else {
        let dir = tempfile::tempdir().unwrap().keep();
        Location::Sqlite(dir.join("robot.db"))
    };
    let settings = StoreSettings {
        namespace: format!("crm-test-{:016x}", rand::rng().random::<u64>()),
        dedup_window: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(2),
    };
    Store::open(&location, settings).await.unwrap()
}
