//! Follow-up chains in `serve`: the engine that enrols leads, runs each step as a job at
//! its time, and stops a chain when the client answers.
//!
//! - [`enrol`]: what an event about a lead does to its chains (enrol, stop), and what a
//!   client's WhatsApp message does (it is remembered for the 24 hours, and stops);
//! - [`step`]: one step carried out once: re-read the lead, stop?, decide, throttle, claim,
//!   act, record, plan the next;
//! - [`delivery`]: Wazzup's delivery statuses read back into the steps that sent the
//!   messages (free text outside the session sent again in the closed-session form, other
//!   errors fail the step);
//! - [`job`]: the `RunStep` job on its own queue, and its retries;
//! - [`wake`]: the `CheckLead` job, a wake-up at the moment the clock alone may enrol a
//!   lead (a missed meeting), on its own queue;
//! - [`preview`]: a chain for one lead, step by step, sending nothing;
//! - [`lead`]: what the engine reads of a lead (facts, phones, the client's zone, the
//!   template context) and the account's names;
//! - [`state`]: the store's keys of the engine.
//!
//! Decisions are the domain's (`domain::chains`); this module only reads, asks and acts.

pub mod delivery;
pub mod enrol;
pub mod job;
pub mod lead;
pub mod preview;
pub mod state;
pub mod step;
pub mod wake;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::adapters::crm::{Crm, CrmError};
use crate::adapters::mail::Mailer;
use crate::adapters::store::{Enqueued, QueueItem, Store, StoreError};
use crate::adapters::wazzup::send::WhatsApp;
use crate::config::chains::ChainRules;
use crate::domain::chains::{Chains, Channel, Templates};
use crate::domain::lead::Lead;
use crate::service::jobs::HandlerError;
use crate::service::routing::Clock;

pub use delivery::ReadBack;
pub use job::{RUN_STEP, RunStep, StepJobs};
pub use lead::Names;
pub use step::StepRun;
pub use wake::{CHECK_LEAD, CheckLead, Checked};

/// The channels the engine writes to clients through; either may be missing, and a step
/// that needs a missing one fails clearly (and the manager gets a task).
#[derive(Clone, Default)]
pub struct Channels {
    /// WhatsApp through Wazzup.
    pub whatsapp: Option<Arc<dyn WhatsApp>>,
    /// E-mail.
    pub mailer: Option<Arc<dyn Mailer>>,
    /// The domain of the letters' `Message-ID`s (the sender's).
    pub mail_domain: String,
}

impl Channels {
    /// Whether `channel` can be written through.
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Wazzup => self.whatsapp.is_some(),
            Channel::Email => self.mailer.is_some(),
        }
    }

    /// The domain of an e-mail sender `Name <user@domain>` or `user@domain`.
    pub fn domain_of(from: &str) -> String {
        from.rsplit('@')
            .next()
            .map(|d| d.trim().trim_end_matches('>').trim())
            .filter(|d| !d.is_empty() && !d.contains(' '))
            .unwrap_or("sales-robot.invalid")
            .to_owned()
    }
}

/// Runs the chains of `chains.toml` over one CRM's leads.
pub struct ChainEngine {
    crm: Arc<dyn Crm>,
    chains: Arc<Chains>,
    templates: Arc<Templates>,
    channels: Channels,
    clock: Clock,
    names: lead::NamesCache,
}

impl std::fmt::Debug for ChainEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainEngine")
            .field("chains", &self.chains.chains.len())
            .field("wazzup", &self.channels.whatsapp.is_some())
            .field("email", &self.channels.mailer.is_some())
            .finish_non_exhaustive()
    }
}

fn crm_error(e: CrmError) -> HandlerError {
    HandlerError::Other(e.to_string())
}

impl ChainEngine {
    /// The engine of `rules` on `crm`, writing through `channels`, on the real clock.
    pub fn new(crm: Arc<dyn Crm>, rules: ChainRules, channels: Channels) -> ChainEngine {
        ChainEngine {
            crm,
            chains: Arc::new(rules.chains),
            templates: Arc::new(rules.templates),
            channels,
            clock: Arc::new(Utc::now),
            names: lead::NamesCache::default(),
        }
    }

    /// The same, deciding at the times `clock` gives (a test's controlled days).
    pub fn with_clock(mut self, clock: Clock) -> ChainEngine {
        self.clock = clock;
        self
    }

    /// The time now, by the engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The chains it runs.
    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    /// The templates of the messages.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The channels it writes through.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The CRM it reads and writes.
    pub fn crm(&self) -> &Arc<dyn Crm> {
        &self.crm
    }

    /// The account's names (read once, again when the lead sits in a stage not known yet)
    /// and what the engine reads of `lead` with them.
    pub(crate) async fn read_seen(
        &self,
        lead: &Lead,
    ) -> Result<(Arc<lead::Names>, lead::Seen), CrmError> {
        let names = self
            .names
            .get(self.crm.as_ref(), Some(&lead.status_id))
            .await?;
        let seen = lead::seen(lead, &names, &self.chains.calendar);
        Ok((names, seen))
    }

    /// Puts step `index` of enrolment `key` on the steps' queue for `at` (as seen at
    /// `now`). The first plan of a step has the key `{enrolment}#{index}`, so that planning
    /// it twice (a redelivered event) queues it once; a plan again (held by a throttle,
    /// taken too early) is keyed by its time too.
    pub async fn schedule(
        &self,
        store: &Store,
        key: &str,
        index: usize,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        again: bool,
    ) -> Result<Enqueued, StoreError> {
        let job = RunStep {
            enrolment: key.to_owned(),
            index,
            attempt: 1,
        };
        let dedup = if again {
            format!("{}@{}", job.key(), at.timestamp())
        } else {
            job.key()
        };
        let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
        let queue = store.queue_name(RUN_STEP);
        store
            .enqueue(QueueItem {
                queue: &queue,
                payload: serde_json::to_vec(&job)?,
                key: &dedup,
                run_after: (!wait.is_zero()).then_some(wait),
            })
            .await
    }
}
