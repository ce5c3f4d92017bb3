//! From the config folder and the environment to the running parts: the store, the
//! settings, the secrets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::adapters::amocrm::api::{AmoCrm, FieldMapping};
use crate::adapters::amocrm::oauth::Credentials;
use crate::adapters::bitrix24::api::{Access, Bitrix24};
use crate::adapters::crm::Crm;
use crate::adapters::crm::fields::FieldRef;
use crate::adapters::mail::{Mailer, SmtpMailer};
use crate::adapters::model_file;
use crate::adapters::store::{Location, Store, StoreSettings};
use crate::adapters::wazzup::client::WazzupClient;
use crate::adapters::wazzup::send::WhatsApp;
use crate::config::chains::ChainRules;
use crate::config::scoring::ScoringRules;
use crate::config::{
    self, B24Entity, CrmKind, Env, RobotConfig, Secrets, Severity, StorageBackend,
};
use crate::domain::event::Source;
use crate::domain::rate::Rate;
use crate::domain::retry::RetryPolicy;
use crate::domain::routing::{Roster, RoutingRules};
use crate::service::catchup::CatchUp;
use crate::service::chains::{ChainEngine, Channels, StepJobs};
use crate::service::jobs::EventHandler;
use crate::service::jobs::{Jobs, Journal};
use crate::service::robot::Robot;
use crate::service::routing::{RouteLeads, RoutingSetup};
use crate::service::scoring::{ScoreLeads, ScoringSetup};
use crate::service::secrets::{self, Origin};
use crate::service::settings::{AmocrmAccount, Bitrix24Portal, Settings};

/// A loaded configuration with the secrets from the environment.
#[derive(Debug)]
pub struct Context {
    /// The service config.
    pub config: RobotConfig,
    /// Secrets given in the environment.
    pub secrets: Secrets,
    /// The config folder.
    pub dir: PathBuf,
}

/// Loads the config folder; a bad config is an error listing every problem.
pub fn load(dir: &Path) -> anyhow::Result<Context> {
    let env = Env::from_process();
    let config = config::load(dir, &env)
        .map_err(|e| anyhow::anyhow!("the configuration has problems:\n{e}"))?;
    Ok(Context {
        config,
        secrets: Secrets::from_env(&env),
        dir: dir.to_owned(),
    })
}

/// `check-config`: prints "ok" or every problem; fails when there is an error.
pub fn check_config(dir: &Path) -> anyhow::Result<()> {
    let problems = config::check(dir, &Env::from_process());
    for p in &problems {
        println!("{p}");
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    if errors > 0 {
        bail!("{errors} problem(s) in {}", dir.display());
    }
    println!("ok: {} checked", dir.display());
    Ok(())
}

fn span(s: config::Span) -> Duration {
    // Every span of robot.toml is checked to be calendar time when it is loaded.
    s.as_std().unwrap_or_default()
}

impl Context {
    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.config.server.data_dir.clone()
    }

    /// The address to listen on.
    pub fn listen(&self) -> std::net::SocketAddr {
        self.config.server.listen
    }

    /// Where the store lives.
    pub fn location(&self) -> Location {
        match self.config.storage_backend() {
            StorageBackend::Sqlite { path } => Location::Sqlite(path),
            StorageBackend::Redis { url } => Location::Redis(url),
        }
    }

    /// The store, for logs (no password).
    pub fn storage_description(&self) -> String {
        format!("{:?}", self.config.storage_backend())
    }

    /// Opens the store.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        let settings = StoreSettings {
            namespace: self.config.storage.namespace.clone(),
            dedup_window: span(self.config.storage.dedup_window),
            heartbeat: span(self.config.jobs.heartbeat),
        };
        Store::open(&self.location(), settings)
            .await
            .with_context(|| format!("cannot open the store {}", self.storage_description()))
    }

    /// The running settings; generates and keeps the hook secret and the presence token
    /// when the environment gives none. Also says where the hook secret came from.
    pub fn settings(&self, run_workers: bool) -> anyhow::Result<(Settings, Origin)> {
        let c = &self.config;
        let dir = &c.server.data_dir;
        let (hook_secret, origin) =
            secrets::load_or_create(dir, "hook_secret", self.secrets.hook_secret.clone())
                .with_context(|| format!("cannot keep the hook secret in {}", dir.display()))?;
        let (presence_token, _) =
            secrets::load_or_create(dir, "presence_token", self.secrets.presence_token.clone())
                .with_context(|| format!("cannot keep the presence token in {}", dir.display()))?;
        let settings = Settings {
            listen: c.server.listen,
            public_url: c.server.public_url.clone(),
            body_limit: c.server.body_limit,
            request_timeout: span(c.server.request_timeout),
            hook_secret,
            presence_token,
            amocrm: c.amocrm.as_ref().map(|a| AmocrmAccount {
                subdomain: a.subdomain.clone(),
                account_id: a.account_id.map(|id| id.to_string()),
            }),
            bitrix24: c.bitrix24.as_ref().map(|b| Bitrix24Portal {
                domain: b.domain.clone(),
                application_token: self.secrets.bitrix24_app_token.clone(),
            }),
            wazzup_channels: c.wazzup.channel_ids.clone(),
            concurrency: c.jobs.concurrency,
            retry: RetryPolicy {
                max_attempts: c.jobs.max_attempts,
                base: span(c.jobs.backoff_base),
                max: span(c.jobs.backoff_max),
            },
            shutdown_grace: span(c.jobs.shutdown_grace),
            run_workers,
        };
        Ok((settings, origin))
    }
}

/// The configured CRM, ready to call.
pub struct ConnectedCrm {
    /// The client.
    pub crm: Arc<dyn Crm>,
    /// The source its webhooks come as.
    pub source: Source,
    /// The `crm_entity` of the events about its leads: `deal` or `lead` (Bitrix24 only).
    pub lead_entity: &'static str,
    /// What it is, for people: "amoCRM https://robotdemo.amocrm.ru (long-lived token)".
    pub description: String,
    /// The client itself, for what the trait does not cover (checks, the OAuth code).
    pub client: Client,
}

/// The CRM client by kind.
#[derive(Clone)]
pub enum Client {
    /// amoCRM.
    Amocrm(Arc<AmoCrm>),
    /// Bitrix24.
    Bitrix24(Arc<Bitrix24>),
}

impl Client {
    /// The mapped custom fields the account lacks.
    pub async fn missing_fields(&self) -> Result<Vec<String>, crate::adapters::crm::CrmError> {
        match self {
            Client::Amocrm(c) => c.check_fields().await,
            Client::Bitrix24(c) => c.check_fields().await,
        }
    }
}

impl Context {
    /// The configured CRM when its credentials are in the environment; `Ok(None)` when they
    /// are not (then the robot only records events), with the reason.
    pub fn crm(&self, store: &Store) -> anyhow::Result<Result<ConnectedCrm, String>> {
        let mapping = |table: &std::collections::BTreeMap<String, config::FieldName>| {
            table
                .iter()
                .map(|(ours, name)| (ours.clone(), FieldRef::parse(name.as_str())))
                .collect()
        };
        let fields = FieldMapping {
            leads: mapping(&self.config.fields.leads),
            contacts: mapping(&self.config.fields.contacts),
            companies: mapping(&self.config.fields.companies),
        };
        match self.config.crm.kind {
            CrmKind::Amocrm => {
                let Some(amo) = &self.config.amocrm else {
                    return Ok(Err("there is no [amocrm] section in robot.toml".into()));
                };
                let (credentials, how) = if let Some(token) = &self.secrets.amocrm_token {
                    (Credentials::LongLived(token.clone()), "long-lived token")
                } else if let (Some(client_id), Some(redirect_uri), Some(secret)) = (
                    &amo.client_id,
                    &amo.redirect_uri,
                    &self.secrets.amocrm_client_secret,
                ) {
                    let credentials = Credentials::OAuth {
                        client_id: client_id.clone(),
                        client_secret: secret.clone(),
                        redirect_uri: redirect_uri.clone(),
                    };
                    (credentials, "OAuth integration")
                } else {
                    return Ok(Err(format!(
                        "set {} (a long-lived token), or amocrm.client_id, amocrm.redirect_uri and {}",
                        config::AMOCRM_TOKEN_VAR,
                        config::AMOCRM_CLIENT_SECRET_VAR
                    )));
                };
                // A couple of percent under the limit, so that network jitter never lands
                // one request too many within a second.
                let rate = Rate {
                    per_second: amo.rate_per_second / 1.02,
                    burst: 1,
                };
                let client = Arc::new(
                    AmoCrm::new(&amo.base_url(), credentials, store.clone(), fields)
                        .with_rate(rate),
                );
                Ok(Ok(ConnectedCrm {
                    crm: client.clone(),
                    source: Source::Amocrm,
                    lead_entity: B24Entity::Deal.name(),
                    description: format!("amoCRM {} ({how})", amo.base_url()),
                    client: Client::Amocrm(client),
                }))
            }
            CrmKind::Bitrix24 => {
                let Some(b24) = &self.config.bitrix24 else {
                    return Ok(Err("there is no [bitrix24] section in robot.toml".into()));
                };
                let (access, how) = if let Some(webhook) = &self.secrets.bitrix24_webhook {
                    let url = webhook.expose_secret();
                    let host = url
                        .split("://")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or_default();
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        anyhow::bail!(
                            "{} is not a URL (it should look like https://portal/rest/1/…/)",
                            config::BITRIX24_WEBHOOK_VAR
                        );
                    }
                    if !host.eq_ignore_ascii_case(&b24.domain) {
                        tracing::warn!(webhook_host = %host, domain = %b24.domain, "the Bitrix24 webhook is on another host than bitrix24.domain");
                    }
                    (Access::Webhook(webhook.clone()), "inbound webhook")
                } else if let (Some(client_id), Some(secret)) =
                    (&b24.client_id, &self.secrets.bitrix24_client_secret)
                {
                    let access = Access::OAuth {
                        client_endpoint: b24.client_endpoint(),
                        token_url: b24.token_url.trim().to_owned(),
                        client_id: client_id.trim().to_owned(),
                        client_secret: secret.clone(),
                    };
                    (access, "OAuth application")
                } else {
                    return Ok(Err(format!(
                        "set {} (the portal's inbound webhook URL, https://portal/rest/1/…/), \
                         or bitrix24.client_id and {} (a local application)",
                        config::BITRIX24_WEBHOOK_VAR,
                        config::BITRIX24_CLIENT_SECRET_VAR
                    )));
                };
                let rate = Rate {
                    per_second: b24.rate_per_second,
                    burst: b24.burst,
                };
                let client = Arc::new(
                    Bitrix24::new(access, store.clone(), rate, fields, b24.todo_via)
                        .with_entity(b24.entity),
                );
                Ok(Ok(ConnectedCrm {
                    crm: client.clone(),
                    source: Source::Bitrix24,
                    lead_entity: b24.entity.name(),
                    description: format!("Bitrix24 {} ({how})", b24.domain),
                    client: Client::Bitrix24(client),
                }))
            }
        }
    }

    /// What the workers do with an event: score and route the leads, as far as the config
    /// and the model allow; else load its record through the CRM; or only record it when no
    /// CRM is connected. Says which, for the start-up message.
    pub fn handler(&self, store: &Store) -> anyhow::Result<Handling> {
        let connected = match self.crm(store)? {
            Ok(connected) => connected,
            Err(why) => {
                return Ok(Handling {
                    handler: Arc::new(Journal),
                    what: format!("not connected ({why}): events are recorded only"),
                    client: None,
                    routing: None,
                    steps: None,
                    chains: "off (no CRM connected)".into(),
                });
            }
        };
        let mut what = vec![connected.description.clone()];
        let scoring = match self.scoring()? {
            Ok(setup) => {
                what.push(format!(
                    "each new or changed lead is scored (model of {} leads up to {})",
                    setup.model.trained_on,
                    setup.model.trained_until.format("%Y-%m-%d")
                ));
                Some(ScoreLeads::new(
                    connected.crm.clone(),
                    setup,
                    connected.source,
                    connected.lead_entity,
                ))
            }
            Err(why) => {
                what.push(format!("leads are not scored ({why})"));
                None
            }
        };
        let routing = match self.routing_rules()? {
            Some((roster, rules)) => {
                what.push(format!(
                    "new leads are routed to {} managers in {} groups",
                    roster.managers.iter().filter(|m| m.active).count(),
                    roster.groups.len()
                ));
                Some(Arc::new(RouteLeads::new(
                    connected.crm.clone(),
                    RoutingSetup {
                        roster: Arc::new(roster),
                        rules: Arc::new(rules),
                    },
                )))
            }
            None => {
                what.push(format!(
                    "leads are not routed (there is no {} or {})",
                    config::managers::FILE_NAME,
                    config::routing::FILE_NAME
                ));
                None
            }
        };
        let mut robot = Robot::new(
            connected.crm.clone(),
            connected.source,
            connected.lead_entity,
            scoring,
            routing.clone(),
        )
        .with_own_user(self.config.crm.robot_user_id.map(|id| id.to_string()));
        let (steps, chains) = match self.chain_rules()? {
            Some(rules) => {
                let (channels, said) = self.channels(store)?;
                let count = rules.chains.chains.len();
                let engine = Arc::new(ChainEngine::new(connected.crm.clone(), rules, channels));
                robot = robot.with_chains(engine.clone());
                (
                    Some(Arc::new(StepJobs::new(store.clone(), engine))),
                    format!("{count} chains run; {said}"),
                )
            }
            None => (
                None,
                format!("off (there is no {})", config::chains::FILE_NAME),
            ),
        };
        Ok(Handling {
            handler: Arc::new(robot),
            what: what.join("; "),
            client: Some(connected.client),
            routing,
            steps,
            chains,
        })
    }

    /// `chains.toml` and its templates, checked against the other rule files; `None` when
    /// there is no chains file, an error listing every problem when it is wrong.
    pub fn chain_rules(&self) -> anyhow::Result<Option<ChainRules>> {
        let fields: Vec<String> = self.config.fields.leads.keys().cloned().collect();
        let refusals: Option<Vec<String>> = self
            .scoring_rules()?
            .map(|r| r.priority.refusals.into_iter().map(|r| r.name).collect());
        let zone = config::managers::load(&self.dir)
            .ok()
            .flatten()
            .map(|r| r.zone);
        let known = config::chains::Known {
            lead_fields: Some(&fields),
            refusals: refusals.as_deref(),
            zone,
        };
        config::chains::load(&self.dir, known).map_err(|problems| {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "{} has problems:\n{}",
                config::chains::FILE_NAME,
                listed.join("\n")
            )
        })
    }

    /// The channels chains write through, as far as the config and the secrets give them,
    /// and what they are for the start-up message. A channel not given is left out: a step
    /// that needs it fails clearly and the manager gets a task.
    pub fn channels(&self, store: &Store) -> anyhow::Result<(Channels, String)> {
        let mut said = Vec::new();
        let whatsapp: Option<Arc<dyn WhatsApp>> = match (
            &self.secrets.wazzup_key,
            &self.config.wazzup.send_channel_id,
        ) {
            (Some(key), Some(channel)) => {
                said.push(format!("WhatsApp through Wazzup channel {channel}"));
                Some(Arc::new(WazzupClient::new(
                    &self.config.wazzup.base_url,
                    channel,
                    key.clone(),
                    store.clone(),
                )))
            }
            _ => {
                said.push(format!(
                    "no WhatsApp (set {} and [wazzup] send_channel_id)",
                    config::WAZZUP_KEY_VAR
                ));
                None
            }
        };
        let from = self.config.smtp.from.clone();
        let mailer: Option<Arc<dyn Mailer>> = match (&self.secrets.smtp_url, &from) {
            (Some(url), Some(from)) => {
                let mailer = SmtpMailer::new(url, from, span(self.config.smtp.timeout))
                    .with_context(|| format!("cannot use {}", config::SMTP_URL_VAR))?;
                said.push(format!("e-mail from {from}"));
                Some(Arc::new(mailer))
            }
            _ => {
                said.push(format!(
                    "no e-mail (set {} and [smtp] from)",
                    config::SMTP_URL_VAR
                ));
                None
            }
        };
        let channels = Channels {
            whatsapp,
            mailer,
            mail_domain: Channels::domain_of(from.as_deref().unwrap_or_default()),
        };
        Ok((channels, said.join(", ")))
    }

    /// `managers.toml` and `routing.toml`, checked; `None` when either file is missing, an
    /// error listing every problem when one is wrong.
    pub fn routing_rules(&self) -> anyhow::Result<Option<(Roster, RoutingRules)>> {
        let listed = |problems: Vec<config::Problem>| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let roster = match config::managers::load(&self.dir) {
            Ok(Some(roster)) => roster,
            Ok(None) => return Ok(None),
            Err(problems) => bail!(
                "{} has problems:\n{}",
                config::managers::FILE_NAME,
                listed(problems)
            ),
        };
        let fields: Vec<String> = self.config.fields.leads.keys().cloned().collect();
        let known = config::routing::Known {
            roster: &roster,
            lead_fields: Some(&fields),
            fresh_for: self
                .config
                .presence
                .fresh_for
                .as_std()
                .context("presence.fresh_for is not wall-clock time")?,
        };
        match config::routing::load(&self.dir, known) {
            Ok(Some(rules)) => Ok(Some((roster, rules))),
            Ok(None) => Ok(None),
            Err(problems) => bail!(
                "{} has problems:\n{}",
                config::routing::FILE_NAME,
                listed(problems)
            ),
        }
    }
}

/// What the workers do with events, as [`Context::handler`] sets it up.
pub struct Handling {
    /// The handler.
    pub handler: Arc<dyn EventHandler>,
    /// What it does, for the start-up message.
    pub what: String,
    /// The CRM client, when one is connected.
    pub client: Option<Client>,
    /// The routing, when there is a roster: `serve` looks at its waiting leads periodically.
    pub routing: Option<Arc<RouteLeads>>,
    /// The chains' steps, when chains run: `serve` runs a worker for their queue.
    pub steps: Option<Arc<StepJobs>>,
    /// Whether chains run and through which channels, for the start-up message.
    pub chains: String,
}

impl Context {
    /// The connected CRM, or an error saying why there is none: for the commands that
    /// cannot work without it.
    pub fn connected(&self, store: &Store) -> anyhow::Result<ConnectedCrm> {
        self.crm(store)?
            .map_err(|why| anyhow::anyhow!("the CRM is not connected: {why}"))
    }

    /// `scoring.toml`, checked against the lead fields `robot.toml` maps; `None` when there
    /// is none, an error listing every problem when it is wrong.
    pub fn scoring_rules(&self) -> anyhow::Result<Option<ScoringRules>> {
        let fields: Vec<String> = self.config.fields.leads.keys().cloned().collect();
        config::scoring::load(&self.dir, Some(&fields)).map_err(|problems| {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "{} has problems:\n{}",
                config::scoring::FILE_NAME,
                listed.join("\n")
            )
        })
    }

    /// The trained model's file in the data folder.
    pub fn model_path(&self) -> PathBuf {
        self.data_dir().join(model_file::DEFAULT_NAME)
    }

    /// The scoring rules and the trained model: `Ok(Err(why))` when the robot cannot
    /// score (no scoring.toml, or no model yet), an error when scoring.toml is wrong or
    /// the model does not fit it.
    pub fn scoring(&self) -> anyhow::Result<Result<ScoringSetup, String>> {
        let Some(rules) = self.scoring_rules()? else {
            return Ok(Err(format!("there is no {}", config::scoring::FILE_NAME)));
        };
        let path = self.model_path();
        let model = match model_file::load(&path) {
            Ok(model) => model,
            Err(model_file::ModelFileError::Missing(_)) => {
                return Ok(Err(format!(
                    "no trained model at {}: run `sales-robot train --deals FILE.csv`",
                    path.display()
                )));
            }
            Err(e) => bail!(e),
        };
        if let Some(mismatch) = model.mismatch(&rules.features) {
            bail!("{}: {mismatch}; train it again", path.display());
        }
        Ok(Ok(ScoringSetup {
            rules: Arc::new(rules),
            model: Arc::new(model),
        }))
    }
}

impl Context {
    /// The catch-up of the connected CRM into `jobs`, with how often it runs; `None` when
    /// no CRM is connected or `[catchup] every` is zero.
    pub fn catchup(
        &self,
        store: &Store,
        jobs: Arc<Jobs>,
    ) -> anyhow::Result<Option<(CatchUp, Duration)>> {
        let every = span(self.config.catchup.every);
        if every.is_zero() {
            return Ok(None);
        }
        let Ok(connected) = self.crm(store)? else {
            return Ok(None);
        };
        let (account, entity) = match self.config.crm.kind {
            CrmKind::Amocrm => (
                self.config.amocrm.as_ref().map(|a| a.subdomain.clone()),
                None,
            ),
            CrmKind::Bitrix24 => (
                self.config.bitrix24.as_ref().map(|b| b.domain.clone()),
                Some(connected.lead_entity),
            ),
        };
        let Some(account) = account else {
            return Ok(None);
        };
        let catchup = CatchUp::new(
            connected.crm,
            jobs,
            connected.source,
            &account,
            entity,
            span(self.config.catchup.overlap),
        )
        .with_own_user(self.config.crm.robot_user_id.map(|id| id.to_string()));
        Ok(Some((catchup, every)))
    }
}

/// Checks the field mapping against the account in the background: a CRM that is down must
/// not keep the robot from starting, and the head of sales reads the warnings in the log.
pub fn check_fields_in_background(client: Client) {
    tokio::spawn(async move {
        match client.missing_fields().await {
            Ok(missing) if missing.is_empty() => {
                tracing::info!("every mapped custom field exists in the CRM")
            }
            Ok(missing) => {
                for m in missing {
                    tracing::warn!("[fields] in robot.toml: {m} (see `sales-robot crm check`)");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check the custom fields against the CRM")
            }
        }
    });
}

/// The secrets `replay` posts with: from the environment, else those `serve` keeps in the
/// data folder of this config.
pub struct ReplaySecrets {
    /// The hook secret.
    pub hook: SecretString,
    /// The presence token.
    pub presence: SecretString,
}

/// Finds the secrets for `replay`.
pub fn secrets_for_replay(dir: &Path) -> anyhow::Result<ReplaySecrets> {
    let env = Env::from_process();
    let given = Secrets::from_env(&env);
    let data_dir = config::load(dir, &env)
        .map(|c| c.server.data_dir)
        .unwrap_or_else(|_| PathBuf::from("data"));
    let read =
        |name: &str, from_env: Option<SecretString>, var: &str| -> anyhow::Result<SecretString> {
            if let Some(s) = from_env {
                return Ok(s);
            }
            let path = data_dir.join(name);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "set {var}, or run `serve` once so that it keeps one in {}",
                    path.display()
                )
            })?;
            Ok(SecretString::from(text.trim().to_owned()))
        };
    Ok(ReplaySecrets {
        hook: read("hook_secret", given.hook_secret, config::HOOK_SECRET_VAR)?,
        presence: read(
            "presence_token",
            given.presence_token,
            config::PRESENCE_TOKEN_VAR,
        )?,
    })
}

/// The jobs of the configured store, for the commands that manage the queue.
pub async fn jobs(dir: &Path) -> anyhow::Result<Jobs> {
    let ctx = load(dir)?;
    let store = ctx.open_store().await?;
    let (settings, _) = ctx.settings(false)?;
    let handling = ctx.handler(&store)?;
    Ok(Jobs::new(store, handling.handler, settings.retry))
}
