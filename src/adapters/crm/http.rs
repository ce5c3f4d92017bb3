//! How the robot calls a CRM's HTTP API: one turn under the shared rate limit per request,
//! and retries that wait (the server's `Retry-After`, else exponential backoff with
//! jitter), so that a burst of work never gets the account blocked.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::adapters::store::{Store, StoreError};
use crate::domain::rate::Rate;

/// A rate limit kept in the store, shared by every process on it.
#[derive(Clone, Debug)]
pub struct Limiter {
    store: Store,
    bucket: String,
    rate: Rate,
}

impl Limiter {
    /// The limit `rate` under the name `bucket`.
    pub fn new(store: Store, bucket: impl Into<String>, rate: Rate) -> Limiter {
        Limiter {
            store,
            bucket: bucket.into(),
            rate,
        }
    }

    /// Waits until a request may go.
    pub async fn turn(&self) -> Result<(), StoreError> {
        while let Some(wait) = self.store.admit(&self.bucket, self.rate).await? {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// The limit.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The store the limit lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The limit's name in the store.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts in all.
    pub attempts: u32,
    /// The first wait; it doubles.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

impl Retries {
    /// The wait before attempt `attempt + 1`: doubling, capped, with full jitter so that
    /// replicas that failed together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

/// The server's `Retry-After` in seconds, when it sent one (capped at a minute).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let r = Retries {
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        for _ in 0..50 {
            let first = r.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let late = r.backoff(10);
            assert!(late >= Duration::from_millis(250) && late <= Duration::from_millis(500));
        }
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
