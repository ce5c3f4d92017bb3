//! amoCRM's OAuth 2: an access token lives 24 hours; the refresh token lives 3 months and is
//! single-use across the whole integration, so reusing one revokes the integration. Two
//! replicas that refresh at once would do exactly that: the refresh runs under a lock in the
//! store, and the new pair is written there before the lock is let go.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::adapters::crm::CrmError;
use crate::adapters::crm::http::Limiter;
use crate::adapters::store::Store;

/// How the robot authenticates to amoCRM.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A long-lived token from the integration's settings (`ROBOT_AMOCRM_TOKEN`).
    LongLived(SecretString),
    /// An OAuth integration; its token pair lives in the store.
    OAuth {
        /// The integration id.
        client_id: String,
        /// The integration's secret key.
        client_secret: SecretString,
        /// The redirect URI registered with the integration.
        redirect_uri: String,
    },
}

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

/// The answer of `POST /oauth2/access_token`.
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
}

/// A refresh this close to expiry is done before the token is used.
const EARLY: i64 = 60;
/// How long one refresh may hold the lock.
const LOCK: Duration = Duration::from_secs(30);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Hands out a valid access token, refreshing it when due.
#[derive(Clone)]
pub struct Tokens {
    credentials: Credentials,
    http: reqwest::Client,
    base: String,
    store: Store,
    limiter: Limiter,
    name: String,
    cached: Arc<Mutex<Option<Pair>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens for the account at `base` (`https://robotdemo.amocrm.ru`).
    pub fn new(
        credentials: Credentials,
        http: reqwest::Client,
        base: &str,
        store: Store,
        limiter: Limiter,
    ) -> Tokens {
        let account = base
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .replace(['/', ':'], "_");
        Tokens {
            credentials,
            http,
            base: base.to_owned(),
            store,
            limiter,
            name: format!("amocrm:{account}:tokens"),
            cached: Arc::default(),
        }
    }

    /// The same tokens, their requests under another limit.
    pub fn with_limiter(mut self, limiter: Limiter) -> Tokens {
        self.limiter = limiter;
        self
    }

    async fn stored(&self) -> Result<Option<Pair>, CrmError> {
        match self.store.value(&self.name).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                CrmError::Unexpected(format!("the stored amoCRM tokens do not read: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// A valid access token.
    pub async fn access(&self) -> Result<SecretString, CrmError> {
        let (client_id, client_secret, redirect_uri) = match &self.credentials {
            Credentials::LongLived(token) => return Ok(token.clone()),
            Credentials::OAuth {
                client_id,
                client_secret,
                redirect_uri,
            } => (client_id, client_secret, redirect_uri),
        };
        let mut cached = self.cached.lock().await;
        if let Some(pair) = cached.as_ref().filter(|p| p.expires_at - now() > EARLY) {
            return Ok(SecretString::from(pair.access_token.clone()));
        }
        let pair = self
            .refreshed(None, client_id, client_secret, redirect_uri)
            .await?;
        let access = SecretString::from(pair.access_token.clone());
        *cached = Some(pair);
        Ok(access)
    }

    /// After a 401: a new access token unless another process already replaced `rejected`.
    pub async fn renew(&self, rejected: &SecretString) -> Result<(), CrmError> {
        let Credentials::OAuth {
            client_id,
            client_secret,
            redirect_uri,
        } = &self.credentials
        else {
            return Err(CrmError::Unauthorized(
                "amoCRM refused the long-lived token (ROBOT_AMOCRM_TOKEN)".into(),
            ));
        };
        let mut cached = self.cached.lock().await;
        let pair = self
            .refreshed(
                Some(rejected.expose_secret()),
                client_id,
                client_secret,
                redirect_uri,
            )
            .await?;
        *cached = Some(pair);
        Ok(())
    }

    /// The stored pair if it is fresh (and not the rejected token), else a new one made under
    /// the lock; waits while another process refreshes.
    async fn refreshed(
        &self,
        rejected: Option<&str>,
        client_id: &str,
        client_secret: &SecretString,
        redirect_uri: &str,
    ) -> Result<Pair, CrmError> {
        let usable =
            |p: &Pair| p.expires_at - now() > EARLY && Some(p.access_token.as_str()) != rejected;
        let deadline = tokio::time::Instant::now() + LOCK;
        loop {
            if let Some(pair) = self.stored().await?.filter(usable) {
                return Ok(pair);
            }
            let lock = format!("{}:refresh", self.name);
            if let Some(token) = self.store.try_lock(&lock, LOCK).await? {
                let result = async {
                    // Another process may have finished a refresh between the read and the lock.
                    let current = self.stored().await?;
                    if let Some(pair) = current.clone().filter(usable) {
                        return Ok(pair);
                    }
                    let Some(current) = current else {
                        return Err(CrmError::Unauthorized(
                            "no amoCRM tokens yet: run `sales-robot auth amocrm --code CODE`"
                                .into(),
                        ));
                    };
                    let pair = self
                        .grant(&[
                            ("client_id", client_id),
                            ("client_secret", client_secret.expose_secret()),
                            ("grant_type", "refresh_token"),
                            ("refresh_token", &current.refresh_token),
                            ("redirect_uri", redirect_uri),
                        ])
                        .await?;
                    self.store
                        .set_value(
                            &self.name,
                            &serde_json::to_string(&pair).expect("a pair serialises"),
                        )
                        .await?;
                    Ok(pair)
                }
                .await;
                self.store.unlock(&lock, &token).await?;
                return result;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CrmError::Unavailable(
                    "another process has been refreshing the amoCRM token for 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Exchanges an authorization code for the first pair and keeps it.
    pub async fn exchange_code(&self, code: &str) -> Result<(), CrmError> {
        let Credentials::OAuth {
            client_id,
            client_secret,
            redirect_uri,
        } = &self.credentials
        else {
            return Err(CrmError::Rejected(
                "a code is exchanged only for an OAuth integration".into(),
            ));
        };
        let pair = self
            .grant(&[
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose_secret()),
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri.as_str()),
            ])
            .await?;
        self.store
            .set_value(
                &self.name,
                &serde_json::to_string(&pair).expect("a pair serialises"),
            )
            .await?;
        *self.cached.lock().await = Some(pair);
        Ok(())
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<Pair, CrmError> {
        self.limiter.turn().await?;
        let body: serde_json::Map<String, serde_json::Value> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
            .collect();
        let response = self
            .http
            .post(format!("{}/oauth2/access_token", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable(format!("amoCRM OAuth: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(CrmError::Unavailable(format!(
                "amoCRM OAuth answered {status}"
            )));
        }
        if !status.is_success() {
            // The body says why (an expired or reused refresh token); it holds no secret.
            return Err(CrmError::Unauthorized(format!(
                "amoCRM OAuth answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let granted: Granted = serde_json::from_str(&text)
            .map_err(|e| CrmError::Unexpected(format!("amoCRM OAuth answer: {e}")))?;
        Ok(Pair {
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            expires_at: now() + granted.expires_in,
        })
    }
}
