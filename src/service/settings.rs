//! What the HTTP intake and the workers need to know, resolved from the config and the
//! environment at start.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::retry::RetryPolicy;

/// The amoCRM account whose webhooks are taken.
#[derive(Debug, Clone)]
pub struct AmocrmAccount {
    /// `account[subdomain]` must match this.
    pub subdomain: String,
    /// `account[id]` must match this when set.
    pub account_id: Option<String>,
}

/// The Bitrix24 portal whose events are taken.
#[derive(Debug, Clone)]
pub struct Bitrix24Portal {
    /// `auth[domain]` must match this.
    pub domain: String,
    /// `auth[application_token]` must match this (compared in constant time).
    pub application_token: Option<SecretString>,
}

/// The running robot's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The base URL printed in the webhook URLs (else `http://{listen}`).
    pub public_url: Option<String>,
    /// Largest webhook body taken, in bytes.
    pub body_limit: usize,
    /// Longest a request may take before the robot answers 503.
    pub request_timeout: Duration,
    /// The secret path segment of the webhook URLs.
    pub hook_secret: SecretString,
    /// The bearer token of `POST /api/presence`.
    pub presence_token: SecretString,
    /// amoCRM, when its hook is enabled.
    pub amocrm: Option<AmocrmAccount>,
    /// Bitrix24, when its hook is enabled.
    pub bitrix24: Option<Bitrix24Portal>,
    /// Wazzup channels whose messages count (empty: all).
    pub wazzup_channels: Vec<String>,
    /// Jobs handled at once by this process's worker.
    pub concurrency: usize,
    /// How failed jobs are retried.
    pub retry: RetryPolicy,
    /// How long in-flight jobs may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Whether this process runs workers (`serve` does; a pure intake could not).
    pub run_workers: bool,
}

impl Settings {
    /// The base URL for the printed webhook URLs.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_owned()
    }
}
