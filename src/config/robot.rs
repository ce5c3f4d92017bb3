//! The typed contents of `robot.toml` and the checks that serde alone cannot make.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Places;
use super::duration::Span;
use super::env::{AMOCRM_TOKEN_VAR, BITRIX24_WEBHOOK_VAR};
use super::problem::{Problem, Severity};

/// Everything `robot.toml` says. Every key has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RobotConfig {
    /// `[server]`: the HTTP intake.
    pub server: ServerConfig,
    /// `[storage]`: where events, dedup keys and queues live.
    pub storage: StorageConfig,
    /// `[jobs]`: the background workers.
    pub jobs: JobsConfig,
    /// `[crm]`: which CRM the robot works in.
    pub crm: CrmConfig,
    /// `[amocrm]`: present means the amoCRM webhook is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amocrm: Option<AmocrmConfig>,
    /// `[bitrix24]`: present means the Bitrix24 webhook is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrix24: Option<Bitrix24Config>,
    /// `[fields]`: the robot's names of custom fields mapped to the CRM's fields.
    pub fields: FieldsConfig,
    /// `[wazzup]`: the messenger gateway's webhook and sending.
    pub wazzup: WazzupConfig,
    /// `[smtp]`: the mail server for e-mails.
    pub smtp: SmtpConfig,
    /// `[presence]`: managers' presence heartbeats.
    pub presence: PresenceConfig,
    /// `[catchup]`: reading what the CRM changed, for the webhooks that never came.
    pub catchup: CatchupConfig,
}

impl RobotConfig {
    /// The storage backend, with a relative SQLite path resolved inside `server.data_dir`.
    pub fn storage_backend(&self) -> StorageBackend {
        self.storage.backend(&self.server.data_dir)
    }

    /// A configuration with every optional key present, so that serializing it lists every
    /// key and its type: the environment overrides and the "did you mean" lists come from it.
    pub(crate) fn full_sample() -> Self {
        Self {
            server: ServerConfig {
                public_url: Some("https://robot.example".into()),
                ..ServerConfig::default()
            },
            amocrm: Some(AmocrmConfig {
                account_id: Some(1),
                base_url: Some("https://robotdemo.amocrm.ru".into()),
                client_id: Some("integration".into()),
                redirect_uri: Some("https://robot.example/oauth".into()),
                ..AmocrmConfig::new("robotdemo")
            }),
            bitrix24: Some(Bitrix24Config {
                client_id: Some("local.0123456789abcd.00000000".into()),
                client_endpoint: Some("https://robotdemo.bitrix24.ru/rest/".into()),
                ..Bitrix24Config::new("robotdemo.bitrix24.ru")
            }),
            wazzup: WazzupConfig {
                channel_ids: vec!["channel".into()],
                send_channel_id: Some("channel".into()),
                ..WazzupConfig::default()
            },
            smtp: SmtpConfig {
                from: Some("sales@example.ru".into()),
                ..SmtpConfig::default()
            },
            ..Self::default()
        }
    }
}

/// `[server]`: where the robot listens for webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Base URL the outside world reaches the robot at; used to print the webhook URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Directory of the SQLite file and the generated secrets (relative to the working
    /// directory).
    pub data_dir: PathBuf,
    /// Largest webhook body accepted, in bytes.
    pub body_limit: usize,
    /// How long one request may take before it is answered with an error.
    pub request_timeout: Span,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            public_url: None,
            data_dir: PathBuf::from("data"),
            body_limit: 1_048_576,
            request_timeout: Span::seconds(10),
        }
    }
}

impl ServerConfig {
    /// The base of the webhook URLs: `public_url` without a trailing `/`, or
    /// `http://{listen}` when it is not set.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Parses `listen` with a message that shows the expected form (serde's own says only
/// "invalid socket address syntax").
fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address and port like \"127.0.0.1:8080\" or \"0.0.0.0:8080\" \
             (host names are not accepted here)"
        ))
    })
}

/// `[storage]`: the store shared by the intake and the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `"sqlite://PATH"` or `"redis://host:port[/db]"` / `"rediss://…"`.
    pub url: StorageUrl,
    /// How long an event's dedup key is remembered.
    pub dedup_window: Span,
    /// Prefix of keys and queue names, so that two robots can share one Redis.
    pub namespace: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: StorageUrl::sqlite("robot.db"),
            dedup_window: Span::days(7),
            namespace: "sales-robot".into(),
        }
    }
}

impl StorageConfig {
    /// The backend to open; a relative SQLite path is taken inside `data_dir`.
    pub fn backend(&self, data_dir: &Path) -> StorageBackend {
        match &self.url.kind {
            UrlKind::Sqlite(path) => StorageBackend::Sqlite {
                path: data_dir.join(path),
            },
            UrlKind::Redis => StorageBackend::Redis {
                url: self.url.raw.clone(),
            },
        }
    }
}

/// The store to open, resolved from [`StorageConfig::url`].
#[derive(Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// A SQLite file.
    Sqlite {
        /// The file, already resolved against `data_dir` when it was relative.
        path: PathBuf,
    },
    /// A Redis server.
    Redis {
        /// The URL as written, password included: give it to the client, not to logs.
        url: String,
    },
}

// By hand, so a Redis password does not reach the logs.
impl fmt::Debug for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageBackend::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
            StorageBackend::Redis { url } => {
                f.debug_struct("Redis").field("url", &redact(url)).finish()
            }
        }
    }
}

/// A checked `storage.url`. Displays with any password replaced by `***`; the URL as written
/// is [`StorageUrl::as_str`].
#[derive(Clone, PartialEq, Eq)]
pub struct StorageUrl {
    raw: String,
    kind: UrlKind,
}

#[derive(Clone, PartialEq, Eq)]
enum UrlKind {
    Sqlite(PathBuf),
    Redis,
}

impl StorageUrl {
    /// A SQLite file; a relative path is taken inside `data_dir`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            raw: format!("sqlite://{}", path.display()),
            kind: UrlKind::Sqlite(path),
        }
    }

    /// The URL exactly as written, password included.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether this is a Redis URL (`redis://` or `rediss://`).
    pub fn is_redis(&self) -> bool {
        self.kind == UrlKind::Redis
    }

    /// Whether the URL carries a password (`redis://:secret@host`).
    pub fn has_password(&self) -> bool {
        self.is_redis() && redact(&self.raw) != self.raw
    }
}

/// Why a storage URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageUrlError {
    /// `sqlite://` with nothing after it.
    #[error("`sqlite://` needs a file name, like \"sqlite://robot.db\"")]
    EmptyPath,
    /// A Redis URL whose host, port or database number is wrong.
    #[error("`{url}` is not a Redis URL like \"redis://127.0.0.1:6379/0\": {reason}")]
    Redis {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No `scheme://` at all.
    #[error(
        "`{0}` does not say which store: write \"sqlite://{0}\" for a SQLite file or \
         \"redis://{0}\" for Redis"
    )]
    NoScheme(String),
    /// A scheme the robot cannot use.
    #[error(
        "the storage URL must start with \"sqlite://\" or \"redis://\" (\"rediss://\" for TLS), \
         not `{0}`"
    )]
    Scheme(String),
}

impl FromStr for StorageUrl {
    type Err = StorageUrlError;

    fn from_str(s: &str) -> Result<Self, StorageUrlError> {
        let raw = s.trim();
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StorageUrlError::EmptyPath);
            }
            return Ok(Self {
                raw: raw.to_owned(),
                kind: UrlKind::Sqlite(PathBuf::from(path)),
            });
        }
        let redis = ["redis://", "rediss://"]
            .iter()
            .find_map(|scheme| raw.strip_prefix(scheme));
        if let Some(rest) = redis {
            check_redis(rest).map_err(|reason| StorageUrlError::Redis {
                url: redact(raw),
                reason: reason.into(),
            })?;
            return Ok(Self {
                raw: raw.to_owned(),
                kind: UrlKind::Redis,
            });
        }
        match raw.split_once(':') {
            Some((scheme, _)) if !scheme.contains(['/', '\\', '.']) && scheme.len() > 1 => {
                Err(StorageUrlError::Scheme(format!("{scheme}:")))
            }
            _ => Err(StorageUrlError::NoScheme(raw.to_owned())),
        }
    }
}

/// Checks `[user[:password]@]host[:port][/db][?options]`, the part after `redis://`.
fn check_redis(rest: &str) -> Result<(), &'static str> {
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err("the database after `/` must be a number");
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("`[` without `]`")?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err("the port must be a number from 1 to 65535"),
        }
    }
    Ok(())
}

/// The URL with the password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.raw))
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({:?})", redact(&self.raw))
    }
}

impl Serialize for StorageUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for StorageUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[jobs]`: the background workers and their retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Attempts before an event goes to the dead-letter list.
    pub max_attempts: u32,
    /// First retry delay; it doubles with every attempt, up to `backoff_max`.
    pub backoff_base: Span,
    /// Longest delay between two attempts.
    pub backoff_max: Span,
    /// How long running jobs may take to finish when the robot stops.
    pub shutdown_grace: Span,
    /// How often a worker tells the queue it is alive; a worker silent for three beats is
    /// taken for dead and its jobs are handed to another.
    pub heartbeat: Span,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_attempts: 8,
            backoff_base: Span::seconds(10),
            backoff_max: Span::hours(1),
            shutdown_grace: Span::seconds(30),
            heartbeat: Span::seconds(10),
        }
    }
}

/// `[crm]`: which CRM the robot reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CrmConfig {
    /// The CRM; its section (`[amocrm]` or `[bitrix24]`) must be present when this is set.
    pub kind: CrmKind,
    /// The CRM user the robot writes as, when it is a technical user of its own: a change
    /// that user made is the echo of the robot's own write, and is not read again. Leave
    /// it out when people work under the integration's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robot_user_id: Option<u64>,
}

/// A CRM the robot works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    /// amoCRM (Kommo), configured by `[amocrm]`.
    #[default]
    Amocrm,
    /// Bitrix24, configured by `[bitrix24]`.
    Bitrix24,
}

impl CrmKind {
    /// The name as written in `robot.toml`, which is also its section's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Amocrm => "amocrm",
            CrmKind::Bitrix24 => "bitrix24",
        }
    }
}

impl fmt::Display for CrmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[amocrm]`: the amoCRM account whose webhooks are accepted and whose API the robot calls.
/// Its credentials are secrets: see [`Secrets`](super::Secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmocrmConfig {
    /// `robotdemo` for `robotdemo.amocrm.ru`; checked against `account[subdomain]`.
    pub subdomain: String,
    /// The account's number; checked against `account[id]` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<u64>,
    /// The API's address when it is not `https://{subdomain}.amocrm.ru` (a Kommo account,
    /// a test double); read it through [`AmocrmConfig::base_url`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The OAuth integration's id; without it the robot uses the long-lived token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The redirect URI registered with the OAuth integration; required with `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// Requests a second the robot allows itself, shared by all its processes.
    #[serde(default = "AmocrmConfig::default_rate")]
    pub rate_per_second: f64,
}

impl AmocrmConfig {
    /// amoCRM's own limit per account: faster, and it answers 429 and then blocks the
    /// account's API for a while.
    pub const DEFAULT_RATE_PER_SECOND: f64 = 7.0;

    /// The account `subdomain` with every other key at its default.
    pub fn new(subdomain: impl Into<String>) -> Self {
        Self {
            subdomain: subdomain.into(),
            account_id: None,
            base_url: None,
            client_id: None,
            redirect_uri: None,
            rate_per_second: Self::DEFAULT_RATE_PER_SECOND,
        }
    }

    fn default_rate() -> f64 {
        Self::DEFAULT_RATE_PER_SECOND
    }

    /// The API's address without a trailing `/`: `base_url` when set, otherwise
    /// `https://{subdomain}.amocrm.ru`.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => format!("https://{}.amocrm.ru", self.subdomain.trim()),
        }
    }
}

/// `[bitrix24]`: the Bitrix24 portal whose events are accepted and whose REST API the robot
/// calls, through the inbound webhook or as a local application with OAuth (their secrets:
/// see [`Secrets`](super::Secrets)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitrix24Config {
    /// `robotdemo.bitrix24.ru`; checked against `auth[domain]`.
    pub domain: String,
    /// The local application's id; with its secret it connects the robot by OAuth when no
    /// inbound webhook is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The portal's REST address for the application when it is not
    /// `https://{domain}/rest/` (a test double); read it through
    /// [`Bitrix24Config::client_endpoint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_endpoint: Option<String>,
    /// Where the application's tokens are renewed.
    #[serde(default = "Bitrix24Config::default_token_url")]
    pub token_url: String,
    /// Requests a second the robot allows itself once the burst is spent.
    #[serde(default = "Bitrix24Config::default_rate")]
    pub rate_per_second: f64,
    /// Requests that may go at once before the rate applies.
    #[serde(default = "Bitrix24Config::default_burst")]
    pub burst: u32,
    /// Which REST method makes the robot's to-dos.
    #[serde(default)]
    pub todo_via: TodoVia,
    /// Which CRM records are the robot's leads: deals, or the portal's own leads.
    #[serde(default)]
    pub entity: B24Entity,
}

impl Bitrix24Config {
    /// Bitrix24's limit on ordinary plans: 2 requests a second once the bucket of 50 is
    /// empty; beyond it the portal answers `QUERY_LIMIT_EXCEEDED`.
    pub const DEFAULT_RATE_PER_SECOND: f64 = 2.0;
    /// The size of that bucket.
    pub const DEFAULT_BURST: u32 = 50;
    /// Bitrix24's authorization server, the same for every cloud portal.
    pub const DEFAULT_TOKEN_URL: &str = "https://oauth.bitrix.info/oauth/token/";

    /// The portal `domain` with every other key at its default.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            client_id: None,
            client_endpoint: None,
            token_url: Self::DEFAULT_TOKEN_URL.into(),
            rate_per_second: Self::DEFAULT_RATE_PER_SECOND,
            burst: Self::DEFAULT_BURST,
            todo_via: TodoVia::default(),
            entity: B24Entity::default(),
        }
    }

    fn default_rate() -> f64 {
        Self::DEFAULT_RATE_PER_SECOND
    }

    fn default_burst() -> u32 {
        Self::DEFAULT_BURST
    }

    fn default_token_url() -> String {
        Self::DEFAULT_TOKEN_URL.into()
    }

    /// The application's REST address: `client_endpoint` when set, otherwise
    /// `https://{domain}/rest/`.
    pub fn client_endpoint(&self) -> String {
        match &self.client_endpoint {
            Some(url) => url.trim().to_owned(),
            None => format!("https://{}/rest/", self.domain.trim()),
        }
    }
}

/// How the robot makes a to-do for a manager in Bitrix24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TodoVia {
    /// A to-do in the record's timeline (`crm.activity.todo.add`).
    #[default]
    Activity,
    /// A task in the Tasks module, bound to the record (`tasks.task.add`).
    Task,
}

/// Which Bitrix24 records the robot works as its leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum B24Entity {
    /// Deals (`crm.deal.*`), with their funnels.
    #[default]
    Deal,
    /// CRM leads (`crm.lead.*`), for portals whose sales work in leads: one pipeline of lead
    /// statuses, no funnels.
    Lead,
}

impl B24Entity {
    /// The name the REST methods and the events use: `deal` or `lead`.
    pub fn name(self) -> &'static str {
        match self {
            B24Entity::Deal => "deal",
            B24Entity::Lead => "lead",
        }
    }
}

/// `[fields]`: the robot's names of custom fields (`category`, `score`…) mapped to the
/// CRM's fields, per kind of record. The robot checks at start that the account has them.
///
/// Not settable from the environment: a map has no sensible single variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FieldsConfig {
    /// `[fields.leads]`: fields of leads (deals in Bitrix24).
    pub leads: BTreeMap<String, FieldName>,
    /// `[fields.contacts]`: fields of contacts.
    pub contacts: BTreeMap<String, FieldName>,
    /// `[fields.companies]`: fields of companies.
    pub companies: BTreeMap<String, FieldName>,
}

impl FieldsConfig {
    /// The sub-tables by name, in the order the file shows them.
    pub fn tables(&self) -> [(&'static str, &BTreeMap<String, FieldName>); 3] {
        [
            ("leads", &self.leads),
            ("contacts", &self.contacts),
            ("companies", &self.companies),
        ]
    }
}

/// A CRM field as `[fields]` names it: its name as the CRM shows it ("Категория") or its id
/// (amoCRM's number, Bitrix24's `UF_CRM_…` code). An id written as a number is kept as its
/// decimal text, so both spellings of an id read the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FieldName(pub String);

impl FieldName {
    /// The name or id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FieldName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "the field's name in quotes, like \"Категория\", or its id, like 512399",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldName, E> {
                Ok(FieldName(v.to_owned()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldName, E> {
                Ok(FieldName(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldName, E> {
                u64::try_from(v)
                    .map(|v| FieldName(v.to_string()))
                    .map_err(|_| E::custom(format!("{v} is not a field id: ids are not negative")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[wazzup]`: the messenger gateway. Its API key is a secret: see
/// [`Secrets`](super::Secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WazzupConfig {
    /// When not empty, webhook messages from other channels are ignored.
    pub channel_ids: Vec<String>,
    /// The WhatsApp channel messages are sent from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_channel_id: Option<String>,
    /// The API's address (another one only for a test double).
    pub base_url: String,
}

impl WazzupConfig {
    /// Wazzup's API.
    pub const DEFAULT_BASE_URL: &str = "https://api.wazzup24.com";
}

impl Default for WazzupConfig {
    fn default() -> Self {
        Self {
            channel_ids: Vec::new(),
            send_channel_id: None,
            base_url: Self::DEFAULT_BASE_URL.into(),
        }
    }
}

/// `[smtp]`: the mail server e-mails are sent through. Its address, with the login and
/// password, is a secret: see [`Secrets`](super::Secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// The sender of e-mails, `sales@example.ru` or `Отдел продаж <sales@example.ru>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// How long one exchange with the server may take.
    pub timeout: Span,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            from: None,
            timeout: Span::seconds(30),
        }
    }
}

/// `[presence]`: managers' presence heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How long a heartbeat counts as current.
    pub fresh_for: Span,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            fresh_for: Span::minutes(2),
        }
    }
}

/// `[catchup]`: the periodic read of what the CRM changed since the last one, which brings
/// the events whose webhooks were lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatchupConfig {
    /// How often; `"0s"` switches catch-up off.
    pub every: Span,
    /// How far before the last change seen each read starts again, for changes made in the
    /// same moment.
    pub overlap: Span,
}

impl Default for CatchupConfig {
    fn default() -> Self {
        Self {
            every: Span::minutes(5),
            overlap: Span::minutes(1),
        }
    }
}

/// The checks beyond types: each problem is placed at the key's line, or names the
/// environment variable the value came from. Sections that `at` says did not deserialize
/// hold defaults in `c` and are not checked.
pub(crate) fn validate(c: &RobotConfig, at: &dyn Places) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut fail = |section: &str, key: &str, message: String, hint: Option<&str>| {
        if at.was_read(section) {
            let p = at.problem(section, key, message);
            problems.push(p.with_hint_opt(hint.map(Into::into)));
        }
    };

    let spans = [
        ("server", "request_timeout", c.server.request_timeout, true),
        ("storage", "dedup_window", c.storage.dedup_window, true),
        ("jobs", "backoff_base", c.jobs.backoff_base, true),
        ("jobs", "backoff_max", c.jobs.backoff_max, true),
        ("jobs", "shutdown_grace", c.jobs.shutdown_grace, false),
        ("jobs", "heartbeat", c.jobs.heartbeat, true),
        ("presence", "fresh_for", c.presence.fresh_for, true),
        ("catchup", "every", c.catchup.every, false),
        ("catchup", "overlap", c.catchup.overlap, false),
        ("smtp", "timeout", c.smtp.timeout, true),
    ];
    for (section, key, span, must_be_positive) in spans {
        if let Span::BusinessDays(n) = span {
            fail(
                section,
                key,
                format!("`{span}` is business days, but this needs wall-clock time"),
                Some(&format!(
                    "write calendar time such as \"{n}d\", \"{}h\" or \"30m\"",
                    u64::from(n) * 24
                )),
            );
        } else if must_be_positive && span.is_zero() {
            fail(section, key, "must be longer than zero".into(), None);
        }
    }

    if let Some(url) = &c.server.public_url {
        if !is_web_address(url) {
            fail(
                "server",
                "public_url",
                format!("`{url}` is not a web address"),
                Some("write it with http:// or https://, like \"https://robot.example.ru\""),
            );
        }
    } else if c.server.listen.ip().is_unspecified() && at.was_read("server") {
        let p = at
            .problem(
                "server",
                "listen",
                format!(
                    "the webhook URLs will be printed as http://{}, which CRMs cannot reach",
                    c.server.listen
                ),
            )
            .with_hint("set `public_url` in [server] to the address the CRM should call");
        warnings.push(Problem {
            severity: Severity::Warning,
            ..p
        });
    }
    if c.server.body_limit == 0 {
        fail(
            "server",
            "body_limit",
            "must be more than 0 bytes".into(),
            None,
        );
    }

    if c.storage.url.has_password() && at.set_in_file("storage", "url") {
        fail(
            "storage",
            "url",
            "a password must not be written in robot.toml".into(),
            Some("set the whole URL in the ROBOT_STORAGE_URL environment variable instead"),
        );
    }
    let ns = &c.storage.namespace;
    if ns.is_empty() || ns.contains(char::is_whitespace) {
        fail(
            "storage",
            "namespace",
            format!("`{ns}` cannot be a name prefix: it must be non-empty, without spaces"),
            Some("e.g. \"sales-robot\""),
        );
    }

    if c.jobs.concurrency == 0 {
        fail(
            "jobs",
            "concurrency",
            "must be at least 1, or no job would ever run".into(),
            None,
        );
    }
    if c.jobs.max_attempts == 0 {
        fail("jobs", "max_attempts", "must be at least 1".into(), None);
    }
    if let (Some(base), Some(max)) = (c.jobs.backoff_base.as_std(), c.jobs.backoff_max.as_std())
        && base > max
    {
        // Point at whichever of the two the user actually wrote.
        let key = if at.is_set("jobs", "backoff_max") || !at.is_set("jobs", "backoff_base") {
            "backoff_max"
        } else {
            "backoff_base"
        };
        fail(
            "jobs",
            key,
            format!(
                "{} for `backoff_base` is longer than {} for `backoff_max`",
                c.jobs.backoff_base, c.jobs.backoff_max
            ),
            Some("the first retry delay cannot exceed the longest one"),
        );
    }

    if let Some(amo) = &c.amocrm {
        let sub = amo.subdomain.trim();
        if sub.is_empty() {
            fail(
                "amocrm",
                "subdomain",
                "is empty".into(),
                Some("write the account's subdomain: `robotdemo` for robotdemo.amocrm.ru"),
            );
        } else if !sub
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            let first = sub
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split(['.', '/'])
                .next()
                .unwrap_or_default();
            fail(
                "amocrm",
                "subdomain",
                format!("`{sub}` is not a subdomain: write only the first part of the address"),
                Some(&format!("did you mean `{first}`?")),
            );
        }
        if amo.account_id == Some(0) {
            fail(
                "amocrm",
                "account_id",
                "0 is not an account number".into(),
                Some("remove the line to skip the account number check"),
            );
        }
        if let Some(url) = &amo.base_url
            && !is_web_address(url)
        {
            fail(
                "amocrm",
                "base_url",
                format!("`{url}` is not a web address"),
                Some(&format!(
                    "write it with https://, like \"https://{}.amocrm.ru\", or remove the line \
                     to use that address",
                    if sub.is_empty() { "robotdemo" } else { sub }
                )),
            );
        }
        match (amo.client_id.as_deref().map(str::trim), &amo.redirect_uri) {
            (Some(""), _) => fail(
                "amocrm",
                "client_id",
                "is empty".into(),
                Some(&format!(
                    "write the integration's id, or remove the line to use the long-lived \
                     token in {AMOCRM_TOKEN_VAR}"
                )),
            ),
            (Some(_), None) => fail(
                "amocrm",
                "client_id",
                "an OAuth integration needs `redirect_uri` too".into(),
                Some("add `redirect_uri` with the address written in the integration's settings"),
            ),
            _ => {}
        }
        if let Some(uri) = &amo.redirect_uri
            && !is_web_address(uri)
        {
            fail(
                "amocrm",
                "redirect_uri",
                format!("`{uri}` is not a web address"),
                Some("copy it from the integration's settings, https:// included"),
            );
        }
        if !is_rate(amo.rate_per_second) {
            fail(
                "amocrm",
                "rate_per_second",
                format!(
                    "{} is not a rate: it must be more than 0 requests a second",
                    amo.rate_per_second
                ),
                Some("amoCRM allows up to 7"),
            );
        }
    }
    if let Some(b24) = &c.bitrix24 {
        let domain = b24.domain.trim();
        let bare = domain
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if domain.is_empty() {
            fail(
                "bitrix24",
                "domain",
                "is empty".into(),
                Some("write the portal's address, like `robotdemo.bitrix24.ru`"),
            );
        } else if bare != domain || !bare.contains('.') || bare.contains(['/', ' ']) {
            fail(
                "bitrix24",
                "domain",
                format!("`{domain}` is not a portal address"),
                Some(&format!(
                    "write only the host, like `robotdemo.bitrix24.ru`{}",
                    if bare != domain && !bare.contains('/') {
                        format!(": did you mean `{bare}`?")
                    } else {
                        String::new()
                    }
                )),
            );
        }
    }
    if let Some(b24) = &c.bitrix24 {
        if b24
            .client_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            fail(
                "bitrix24",
                "client_id",
                "is empty".into(),
                Some(&format!(
                    "write the application's id (client_id), or remove the line to use the \
                     inbound webhook in {BITRIX24_WEBHOOK_VAR}"
                )),
            );
        }
        if let Some(url) = &b24.client_endpoint
            && !is_web_address(url.trim())
        {
            fail(
                "bitrix24",
                "client_endpoint",
                format!("`{url}` is not a web address"),
                Some(
                    "write it with https://, like \"https://robotdemo.bitrix24.ru/rest/\", or \
                      remove the line to use the portal's own",
                ),
            );
        }
        if !is_web_address(b24.token_url.trim()) {
            fail(
                "bitrix24",
                "token_url",
                format!("`{}` is not a web address", b24.token_url),
                Some(&format!(
                    "write it with https://, or remove the line to use \"{}\"",
                    Bitrix24Config::DEFAULT_TOKEN_URL
                )),
            );
        }
        if !is_rate(b24.rate_per_second) {
            fail(
                "bitrix24",
                "rate_per_second",
                format!(
                    "{} is not a rate: it must be more than 0 requests a second",
                    b24.rate_per_second
                ),
                Some("Bitrix24 allows 2 on ordinary plans"),
            );
        }
        if b24.burst == 0 {
            fail(
                "bitrix24",
                "burst",
                "must be at least 1, or no request would ever go".into(),
                Some("Bitrix24 allows 50 on ordinary plans"),
            );
        }
    }

    if c.wazzup.channel_ids.iter().any(|id| id.trim().is_empty()) {
        fail(
            "wazzup",
            "channel_ids",
            "a channel id is empty".into(),
            Some("list the channel ids from Wazzup, or leave the list empty for all channels"),
        );
    }
    if let Some(id) = &c.wazzup.send_channel_id {
        if !is_uuid(id.trim()) {
            fail(
                "wazzup",
                "send_channel_id",
                format!("`{id}` is not a Wazzup channel id"),
                Some(
                    "copy the channel's id from Wazzup (GET /v3/channels), like \
                     \"0c3f6b1e-8d2a-4c55-9f1e-5a7d2b9c4e10\", or remove the line",
                ),
            );
        } else if !c.wazzup.channel_ids.is_empty()
            && !c.wazzup.channel_ids.iter().any(|c| c.trim() == id.trim())
        {
            fail(
                "wazzup",
                "send_channel_id",
                format!(
                    "the robot would send from `{id}`, but `channel_ids` does not list it, so \
                     the clients' replies there would be ignored"
                ),
                Some("add it to `channel_ids`, or leave `channel_ids` empty for all channels"),
            );
        }
    }
    if !is_web_address(c.wazzup.base_url.trim()) {
        fail(
            "wazzup",
            "base_url",
            format!("`{}` is not a web address", c.wazzup.base_url),
            Some(&format!(
                "remove the line to use \"{}\"",
                WazzupConfig::DEFAULT_BASE_URL
            )),
        );
    }
    if let Some(from) = &c.smtp.from
        && from.trim().parse::<lettre::message::Mailbox>().is_err()
    {
        fail(
            "smtp",
            "from",
            format!("`{from}` is not an e-mail address"),
            Some(
                "write it like \"sales@example.ru\" or \"Отдел продаж <sales@example.ru>\", \
                 or remove the line",
            ),
        );
    }
    // Only the section the robot is told to use must be there; a defaulted `kind` asks for
    // nothing, so that a file without any CRM (intake only) stays valid.
    if at.is_set("crm", "kind") && at.was_read("crm") && at.was_read(c.crm.kind.as_str()) {
        let (chosen, other, other_there) = match c.crm.kind {
            CrmKind::Amocrm => (c.amocrm.is_some(), CrmKind::Bitrix24, c.bitrix24.is_some()),
            CrmKind::Bitrix24 => (c.bitrix24.is_some(), CrmKind::Amocrm, c.amocrm.is_some()),
        };
        if !chosen {
            let kind = c.crm.kind;
            let hint = if other_there {
                format!("did you mean kind = \"{other}\"? The file has [{other}]")
            } else {
                match kind {
                    CrmKind::Amocrm => "add [amocrm] with the account's `subdomain`".into(),
                    CrmKind::Bitrix24 => "add [bitrix24] with the portal's `domain`".into(),
                }
            };
            problems.push(
                at.at_key(
                    "crm",
                    "kind",
                    format!("crm.kind is `{kind}` but there is no [{kind}] section"),
                )
                .with_hint(hint),
            );
        }
    }

    if at.was_read("fields") {
        for (table, map) in c.fields.tables() {
            for (ours, theirs) in map {
                let subject = ["fields", table];
                if !is_identifier(ours) {
                    let lower = ours.to_lowercase();
                    let hint = if is_identifier(&lower) {
                        format!("did you mean `{lower}`?")
                    } else {
                        "on the left goes the robot's own name for the field, like `category`; \
                         on the right the CRM's, like \"Категория\""
                            .into()
                    };
                    problems.push(
                        at.nested(
                            &subject,
                            ours,
                            "must be the robot's own name: a small Latin letter, then small \
                             Latin letters, digits or `_`"
                                .into(),
                        )
                        .with_hint(hint),
                    );
                } else if theirs.as_str().trim().is_empty() {
                    problems.push(
                        at.nested(&subject, ours, "the CRM's field is empty".into())
                            .with_hint(
                                "write the field's name as the CRM shows it, or its id".to_owned(),
                            ),
                    );
                }
            }
        }
    }

    problems.extend(warnings);
    problems
}

/// Whether `url` is an `http://` or `https://` address with a host.
fn is_web_address(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    matches!(rest, Some(host) if !host.is_empty() && !host.starts_with('/')
        && !host.contains(char::is_whitespace))
}

/// Whether `id` is written like a UUID (`8-4-4-4-12` hex digits), as Wazzup's ids are.
fn is_uuid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `rate` can pace requests: TOML also allows `nan` and `inf`.
fn is_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

/// `[a-z][a-z0-9_]*`: the robot's own names, which conditions and templates refer to.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        let sqlite: StorageUrl = "sqlite://robot.db".parse().unwrap();
        let cfg = StorageConfig {
            url: sqlite,
            ..StorageConfig::default()
        };
        assert_eq!(
            cfg.backend(Path::new("data")),
            StorageBackend::Sqlite {
                path: PathBuf::from("data/robot.db")
            }
        );
        let abs = StorageConfig {
            url: "sqlite:///var/lib/robot/robot.db".parse().unwrap(),
            ..StorageConfig::default()
        };
        assert_eq!(
            abs.backend(Path::new("data")),
            StorageBackend::Sqlite {
                path: PathBuf::from("/var/lib/robot/robot.db")
            }
        );
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://redis/2",
            "rediss://user:pw@[::1]:6380/0?protocol=resp3",
        ] {
            let url: StorageUrl = ok.parse().unwrap();
            assert!(url.is_redis(), "{ok}");
        }
        for bad in [
            "postgres://x",
            "robot.db",
            "sqlite://",
            "redis://",
            "redis://host:port",
            "redis://host/db",
        ] {
            assert!(bad.parse::<StorageUrl>().is_err(), "{bad}");
        }
        assert!(
            "robot.db"
                .parse::<StorageUrl>()
                .unwrap_err()
                .to_string()
                .contains("sqlite://robot.db")
        );
    }

    #[test]
    fn redis_passwords_stay_out_of_logs() {
        let url: StorageUrl = "redis://:hunter2@redis:6379/0".parse().unwrap();
        assert!(url.has_password());
        assert_eq!(url.as_str(), "redis://:hunter2@redis:6379/0");
        assert!(!url.to_string().contains("hunter2"));
        assert!(!format!("{url:?}").contains("hunter2"));
        let cfg = StorageConfig {
            url,
            ..StorageConfig::default()
        };
        assert!(!format!("{:?}", cfg.backend(Path::new("."))).contains("hunter2"));
        let plain: StorageUrl = "redis://user@redis".parse().unwrap();
        assert!(!plain.has_password());
    }

    #[test]
    fn base_url() {
        let mut s = ServerConfig::default();
        assert_eq!(s.base_url(), "http://127.0.0.1:8080");
        s.public_url = Some("https://robot.example.ru/".into());
        assert_eq!(s.base_url(), "https://robot.example.ru");
    }
}
