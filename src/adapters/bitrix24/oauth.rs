//! Bitrix24's OAuth 2 for an application: the access token lives an hour, the refresh token
//! 180 days, and every renewal hands out a new refresh token and spends the old one. Two
//! replicas renewing at once would spend one refresh token twice and the second would be
//! refused (`invalid_grant`), leaving that replica without a token: so the renewal runs under a
//! lock in the store, and the new pair is written there before the lock is let go.
//!
//! Follows the official docs (github.com/bitrix24/b24restdocs): `settings/oauth/index.md` (the
//! pair, `client_endpoint`, `auth=`), `settings/oauth/auto-renewal.md` (GET
//! `oauth.bitrix.info/oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token`,
//! the answer's `access_token`, `refresh_token`, `expires_in`) and
//! `settings/oauth/error-codes.md` (`invalid_grant`, `invalid_client`, `PAYMENT_REQUIRED`).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::adapters::crm::CrmError;
use crate::adapters::store::Store;

/// A token pair as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
struct Pair {
    access_token: String,
    refresh_token: String,
    /// Unix seconds.
    expires_at: i64,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The answer of the authorization server.
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    refresh_token: String,
    #[serde(default = "an_hour")]
    expires_in: i64,
}

fn an_hour() -> i64 {
    3600
}

/// A token this close to expiry is renewed before it is used.
const EARLY: i64 = 60;
/// How long one renewal may hold the lock.
const LOCK: Duration = Duration::from_secs(30);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Hands out a valid access token of a Bitrix24 application, renewing it when due.
#[derive(Clone)]
pub struct Tokens {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    store: Store,
    name: String,
    cached: Arc<Mutex<Option<Pair>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens of the application `client_id` on `portal` (its host), renewed at `token_url`
    /// (`https://oauth.bitrix.info/oauth/token/`) and kept in `store`.
    pub fn new(
        http: reqwest::Client,
        token_url: &str,
        client_id: &str,
        client_secret: SecretString,
        store: Store,
        portal: &str,
    ) -> Tokens {
        Tokens {
            http,
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            store,
            name: format!("bitrix24:{portal}:tokens"),
            cached: Arc::default(),
        }
    }

    /// Keeps a pair obtained elsewhere (the installation event, `auth bitrix24`). It is taken to
    /// live the documented hour; if it is older, the first call's `expired_token` renews it.
    pub async fn set(&self, access: &str, refresh: &str) -> Result<(), CrmError> {
        let pair = Pair {
            access_token: access.to_owned(),
            refresh_token: refresh.to_owned(),
            expires_at: now() + an_hour(),
        };
        self.keep(&pair).await?;
        *self.cached.lock().await = Some(pair);
        Ok(())
    }

    async fn keep(&self, pair: &Pair) -> Result<(), CrmError> {
        let text = serde_json::to_string(pair).expect("a pair serialises");
        Ok(self.store.set_value(&self.name, &text).await?)
    }

    async fn stored(&self) -> Result<Option<Pair>, CrmError> {
        match self.store.value(&self.name).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                CrmError::Unexpected(format!("the stored Bitrix24 tokens do not read: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// A valid access token.
    pub async fn access(&self) -> Result<SecretString, CrmError> {
        let mut cached = self.cached.lock().await;
        if let Some(pair) = cached.as_ref().filter(|p| p.expires_at - now() > EARLY) {
            return Ok(SecretString::from(pair.access_token.clone()));
        }
        let pair = self.refreshed(None).await?;
        let access = SecretString::from(pair.access_token.clone());
        *cached = Some(pair);
        Ok(access)
    }

    /// After `expired_token`: a new access token, unless another process already replaced
    /// `rejected` (then its pair is taken from the store).
    pub async fn renew(&self, rejected: &SecretString) -> Result<(), CrmError> {
        let mut cached = self.cached.lock().await;
        let pair = self.refreshed(Some(rejected.expose_secret())).await?;
        *cached = Some(pair);
        Ok(())
    }

    /// The stored pair if it is fresh and not the rejected one, else a new one made under the
    /// lock; waits while another process renews.
    async fn refreshed(&self, rejected: Option<&str>) -> Result<Pair, CrmError> {
        let usable =
            |p: &Pair| p.expires_at - now() > EARLY && Some(p.access_token.as_str()) != rejected;
        let lock = format!("{}:refresh", self.name);
        let deadline = tokio::time::Instant::now() + LOCK;
        loop {
            if let Some(pair) = self.stored().await?.filter(usable) {
                return Ok(pair);
            }
            if let Some(token) = self.store.try_lock(&lock, LOCK).await? {
                let result = async {
                    // Another process may have renewed between the read and the lock.
                    let current = self.stored().await?;
                    if let Some(pair) = current.clone().filter(usable) {
                        return Ok(pair);
                    }
                    let Some(current) = current else {
                        return Err(CrmError::Unauthorized(
                            "no Bitrix24 tokens yet: authorise the application first \
                             (`sales-robot auth bitrix24`)"
                                .into(),
                        ));
                    };
                    let pair = self.grant(&current.refresh_token).await?;
                    // Kept before the lock goes, so that nobody renews with the spent token.
                    self.keep(&pair).await?;
                    Ok(pair)
                }
                .await;
                self.store.unlock(&lock, &token).await?;
                return result;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CrmError::Unavailable(
                    "another process has been renewing the Bitrix24 token for 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn grant(&self, refresh_token: &str) -> Result<Pair, CrmError> {
        let response = self
            .http
            .get(&self.token_url)
            .query(&[
                ("grant_type", "refresh_token"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            // The URL holds the secret and the refresh token: never in a message.
            .map_err(|e| CrmError::Unavailable(format!("Bitrix24 OAuth: {}", e.without_url())))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(CrmError::Unavailable(format!(
                "Bitrix24 OAuth answered {status}"
            )));
        }
        if !status.is_success() {
            // `{"error": "invalid_grant", …}`: it says why and holds no secret.
            return Err(CrmError::Unauthorized(format!(
                "Bitrix24 OAuth answered {status}: {}; re-authorise the application",
                text.chars().take(300).collect::<String>()
            )));
        }
        let granted: Granted = serde_json::from_str(&text)
            .map_err(|e| CrmError::Unexpected(format!("Bitrix24 OAuth answer: {e}")))?;
        Ok(Pair {
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            expires_at: now() + granted.expires_in,
        })
    }
}
