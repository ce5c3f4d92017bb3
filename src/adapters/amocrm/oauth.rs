//! amoCRM's OAuth 2: an access token lives 24 hours; the refresh token lives 3 months and is
//! single-use across the whole integration, so reusing one revokes the integration. The pair
//! lives in the store and is refreshed under its lock (see `crm::tokens`).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::adapters::crm::CrmError;
use crate::adapters::crm::http::Limiter;
use crate::adapters::crm::tokens::{KeptTokens, TokenPair, now};
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

/// The answer of `POST /oauth2/access_token`.
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
}

/// Hands out a valid access token, refreshing it when due.
#[derive(Clone)]
pub struct Tokens {
    credentials: Credentials,
    http: reqwest::Client,
    base: String,
    limiter: Limiter,
    kept: KeptTokens,
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
        let kept = KeptTokens::new(
            store,
            format!("amocrm:{account}:tokens"),
            "amoCRM",
            "run `sales-robot auth amocrm --code CODE`",
        );
        Tokens {
            credentials,
            http,
            base: base.to_owned(),
            limiter,
            kept,
        }
    }

    /// The same tokens, their requests under another limit.
    pub fn with_limiter(mut self, limiter: Limiter) -> Tokens {
        self.limiter = limiter;
        self
    }

    fn oauth(&self) -> Option<(&str, &SecretString, &str)> {
        match &self.credentials {
            Credentials::LongLived(_) => None,
            Credentials::OAuth {
                client_id,
                client_secret,
                redirect_uri,
            } => Some((client_id, client_secret, redirect_uri)),
        }
    }

    /// A valid access token.
    pub async fn access(&self) -> Result<SecretString, CrmError> {
        if let Credentials::LongLived(token) = &self.credentials {
            return Ok(token.clone());
        }
        self.kept.access(|current| self.refresh(current)).await
    }

    /// After a 401: a new access token unless another process already replaced `rejected`.
    pub async fn renew(&self, rejected: &SecretString) -> Result<(), CrmError> {
        if self.oauth().is_none() {
            return Err(CrmError::Unauthorized(
                "amoCRM refused the long-lived token (ROBOT_AMOCRM_TOKEN)".into(),
            ));
        }
        self.kept
            .renew(rejected.expose_secret(), |current| self.refresh(current))
            .await
    }

    async fn refresh(&self, current: TokenPair) -> Result<TokenPair, CrmError> {
        let (client_id, client_secret, redirect_uri) =
            self.oauth().expect("only OAuth credentials refresh");
        self.grant(&[
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
            ("grant_type", "refresh_token"),
            ("refresh_token", &current.refresh_token),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    /// Exchanges an authorization code for the first pair and keeps it.
    pub async fn exchange_code(&self, code: &str) -> Result<(), CrmError> {
        let Some((client_id, client_secret, redirect_uri)) = self.oauth() else {
            return Err(CrmError::Rejected(
                "a code is exchanged only for an OAuth integration".into(),
            ));
        };
        let pair = self
            .grant(&[
                ("client_id", client_id),
                ("client_secret", client_secret.expose_secret()),
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ])
            .await?;
        self.kept.keep(pair).await
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<TokenPair, CrmError> {
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
        Ok(TokenPair {
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            expires_at: now() + granted.expires_in,
        })
    }
}
