//! OAuth token pairs kept in the store, shared by every replica. Both CRMs' refresh tokens
//! are single-use: two replicas refreshing at once would spend one twice (amoCRM then revokes
//! the integration). So a refresh runs under a lock in the store, re-reads the pair under it
//! (another replica may have just refreshed), and writes the new pair before letting go.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::adapters::crm::CrmError;
use crate::adapters::store::Store;

/// A token pair as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenPair {
    /// The bearer token.
    pub access_token: String,
    /// The single-use token that buys the next pair.
    pub refresh_token: String,
    /// When the access token expires, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token this close to expiry is refreshed before it is used.
const EARLY: i64 = 60;
/// How long one refresh may hold the lock.
const LOCK: Duration = Duration::from_secs(30);

/// Now, Unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The token pair of one integration, kept in the store under a name.
#[derive(Clone)]
pub struct KeptTokens {
    store: Store,
    name: String,
    /// "amoCRM", "Bitrix24": for messages.
    label: &'static str,
    /// What to do when there is no pair at all (how to authorise).
    missing: &'static str,
    cached: Arc<Mutex<Option<TokenPair>>>,
}

impl std::fmt::Debug for KeptTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptTokens")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KeptTokens {
    /// The pair kept under `name`; `missing` tells a person how to authorise when there is none.
    pub fn new(
        store: Store,
        name: String,
        label: &'static str,
        missing: &'static str,
    ) -> KeptTokens {
        KeptTokens {
            store,
            name,
            label,
            missing,
            cached: Arc::default(),
        }
    }

    /// Keeps a pair (from a code exchange or an installation) as the current one.
    pub async fn keep(&self, pair: TokenPair) -> Result<(), CrmError> {
        self.store
            .set_value(
                &self.name,
                &serde_json::to_string(&pair).expect("a pair serialises"),
            )
            .await?;
        *self.cached.lock().await = Some(pair);
        Ok(())
    }

    async fn stored(&self) -> Result<Option<TokenPair>, CrmError> {
        match self.store.value(&self.name).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                CrmError::Unexpected(format!("the stored {} tokens do not read: {e}", self.label))
            }),
            None => Ok(None),
        }
    }

    /// A valid access token; `grant` buys a new pair with the current one's refresh token.
    pub async fn access<G, F>(&self, grant: G) -> Result<SecretString, CrmError>
    where
        G: FnOnce(TokenPair) -> F,
        F: Future<Output = Result<TokenPair, CrmError>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some(pair) = cached.as_ref().filter(|p| p.expires_at - now() > EARLY) {
            return Ok(SecretString::from(pair.access_token.clone()));
        }
        let pair = self.refreshed(None, grant).await?;
        let access = SecretString::from(pair.access_token.clone());
        *cached = Some(pair);
        Ok(access)
    }

    /// After the CRM refused `rejected`: a new pair, unless another process already replaced it.
    pub async fn renew<G, F>(&self, rejected: &str, grant: G) -> Result<(), CrmError>
    where
        G: FnOnce(TokenPair) -> F,
        F: Future<Output = Result<TokenPair, CrmError>>,
    {
        let mut cached = self.cached.lock().await;
        let pair = self.refreshed(Some(rejected), grant).await?;
        *cached = Some(pair);
        Ok(())
    }

    /// The stored pair if it is fresh (and not the rejected one), else a new one made under
    /// the lock; waits while another process refreshes.
    async fn refreshed<G, F>(&self, rejected: Option<&str>, grant: G) -> Result<TokenPair, CrmError>
    where
        G: FnOnce(TokenPair) -> F,
        F: Future<Output = Result<TokenPair, CrmError>>,
    {
        let usable = |p: &TokenPair| {
            p.expires_at - now() > EARLY && Some(p.access_token.as_str()) != rejected
        };
        let lock = format!("{}:refresh", self.name);
        let deadline = tokio::time::Instant::now() + LOCK;
        let mut grant = Some(grant);
        loop {
            if let Some(pair) = self.stored().await?.filter(usable) {
                return Ok(pair);
            }
            if let Some(token) = self.store.try_lock(&lock, LOCK).await? {
                let result = async {
                    // Another process may have refreshed between the read and the lock.
                    let current = self.stored().await?;
                    if let Some(pair) = current.clone().filter(usable) {
                        return Ok(pair);
                    }
                    let Some(current) = current else {
                        return Err(CrmError::Unauthorized(format!(
                            "no {} tokens yet: {}",
                            self.label, self.missing
                        )));
                    };
                    let grant = grant.take().expect("the lock is taken once per call");
                    let pair = grant(current).await?;
                    // Kept before the lock goes, so that nobody refreshes with the spent token.
                    let text = serde_json::to_string(&pair).expect("a pair serialises");
                    self.store.set_value(&self.name, &text).await?;
                    Ok(pair)
                }
                .await;
                self.store.unlock(&lock, &token).await?;
                return result;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CrmError::Unavailable(format!(
                    "another process has been refreshing the {} token for 30 s",
                    self.label
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
