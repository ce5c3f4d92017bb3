//! Bitrix24's OAuth 2 for an application: the access token lives an hour, the refresh token
//! 180 days, and every renewal hands out a new refresh token and spends the old one. The pair
//! lives in the store and is renewed under its lock (see `crm::tokens`), so that two replicas
//! never spend one refresh token twice (the second would get `invalid_grant`).
//!
//! Follows the official docs (github.com/bitrix24/b24restdocs): `settings/oauth/index.md` (the
//! pair, `client_endpoint`, `auth=`), `settings/oauth/auto-renewal.md` (GET
//! `oauth.bitrix.info/oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token`,
//! the answer's `access_token`, `refresh_token`, `expires_in`) and
//! `settings/oauth/error-codes.md` (`invalid_grant`, `invalid_client`, `PAYMENT_REQUIRED`).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::adapters::crm::CrmError;
use crate::adapters::crm::tokens::{KeptTokens, TokenPair, now};
use crate::adapters::store::Store;

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

/// Hands out a valid access token of a Bitrix24 application, renewing it when due.
#[derive(Clone)]
pub struct Tokens {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    kept: KeptTokens,
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
        let kept = KeptTokens::new(
            store,
            format!("bitrix24:{portal}:tokens"),
            "Bitrix24",
            "authorise the application first (`sales-robot auth bitrix24`)",
        );
        Tokens {
            http,
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            kept,
        }
    }

    /// Keeps a pair obtained elsewhere (the installation event, `auth bitrix24`). It is taken to
    /// live the documented hour; if it is older, the first call's `expired_token` renews it.
    pub async fn set(&self, access: &str, refresh: &str) -> Result<(), CrmError> {
        let pair = TokenPair {
            access_token: access.to_owned(),
            refresh_token: refresh.to_owned(),
            expires_at: now() + an_hour(),
        };
        self.kept.keep(pair).await
    }

    /// A valid access token.
    pub async fn access(&self) -> Result<SecretString, CrmError> {
        self.kept.access(|current| self.grant(current)).await
    }

    /// After `expired_token`: a new access token, unless another process already replaced
    /// `rejected` (then its pair is taken from the store).
    pub async fn renew(&self, rejected: &SecretString) -> Result<(), CrmError> {
        self.kept
            .renew(rejected.expose_secret(), |current| self.grant(current))
            .await
    }

    async fn grant(&self, current: TokenPair) -> Result<TokenPair, CrmError> {
        let response = self
            .http
            .get(&self.token_url)
            .query(&[
                ("grant_type", "refresh_token"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("refresh_token", current.refresh_token.as_str()),
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
        Ok(TokenPair {
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            expires_at: now() + granted.expires_in,
        })
    }
}
