//! The robot's handler of events: for an event about a lead it reads the lead once, scores
//! it (when there is a model), routes it (when there is a roster), then looks at its
//! follow-up chains (when there is `chains.toml`); a client's WhatsApp message and a
//! WhatsApp message's delivery status go to the chains; a presence change looks at the
//! waiting leads again; every event goes into the journal.

use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;

use crate::adapters::crm::Crm;
use crate::adapters::store::Store;
use crate::domain::echo::is_own_echo;
use crate::domain::event::{Event, EventKind, Source};
use crate::domain::presence::heard_from_crm;
use crate::service::catchup::remember;
use crate::service::chains::ChainEngine;
use crate::service::entities::{LoadEntity, Record, record_of};
use crate::service::jobs::{EventHandler, HandlerError, Journal};
use crate::service::routing::{RouteLeads, Routed};
use crate::service::scoring::{ScoreLeads, Scoring, concerns_scoring};

/// The counter of events recognised as the echoes of the robot's own writes.
pub const ECHOES: &str = "robot_echoes_total";

/// Scoring and routing of one CRM's leads.
pub struct Robot {
    crm: Arc<dyn Crm>,
    source: Source,
    lead_entity: String,
    scoring: Option<ScoreLeads>,
    routing: Option<Arc<RouteLeads>>,
    chains: Option<Arc<ChainEngine>>,
    loader: LoadEntity,
    own_user: Option<String>,
}

impl Robot {
    /// The robot of `crm`, which sends events as `source`, whose leads are the events with
    /// `crm_entity` equal to `lead_entity`; it scores with `scoring` and routes with
    /// `routing`, each when given.
    pub fn new(
        crm: Arc<dyn Crm>,
        source: Source,
        lead_entity: &str,
        scoring: Option<ScoreLeads>,
        routing: Option<Arc<RouteLeads>>,
    ) -> Robot {
        let loader = LoadEntity::new(crm.clone(), source).with_lead_entity(lead_entity);
        Robot {
            crm,
            source,
            lead_entity: lead_entity.to_owned(),
            scoring,
            routing,
            chains: None,
            loader,
            own_user: None,
        }
    }

    /// Takes changes of leads made by the CRM user `id` as the echoes of the robot's own
    /// writes: its edits and manager changes are not read again. A stage change is still
    /// read: the ledger needs a won or lost lead's outcome whoever closed it.
    pub fn with_own_user(mut self, id: Option<String>) -> Robot {
        self.own_user = id.filter(|id| !id.trim().is_empty());
        self
    }

    fn is_own_echo(&self, event: &Event) -> bool {
        is_own_echo(event, self.own_user.as_deref())
    }

    /// The same robot running the follow-up chains of `engine` too.
    pub fn with_chains(mut self, engine: Arc<ChainEngine>) -> Robot {
        self.chains = Some(engine);
        self
    }

    async fn on_lead(&self, kind: &EventKind, id: &str, store: &Store) -> Result<(), HandlerError> {
        let lead = self
            .crm
            .lead(id)
            .await
            .map_err(|e| HandlerError::Other(e.to_string()))?;
        let Some(lead) = lead else {
            tracing::info!(lead = %id, "the lead is gone from the CRM");
            return Ok(());
        };
        // The job is queued durably, so from here on catch-up need not bring this version.
        remember(store, self.source, &lead).await?;
        let mut priority = None;
        if let Some(scoring) = &self.scoring
            && concerns_scoring(kind)
        {
            match scoring.score(&lead, store, Utc::now(), false).await? {
                Scoring::Scored(a) => priority = Some(a.decision.priority),
                Scoring::Unchanged(p) => priority = Some(p),
                Scoring::Closed(_) | Scoring::Gone => {}
            }
        }
        if let Some(routing) = &self.routing {
            // Another worker holds the lead (or died holding it, until its lock runs out):
            // the job is tried again later rather than leaving the lead to chance.
            if routing.on_lead(kind, &lead, priority, store).await? == Routed::Busy {
                return Err(HandlerError::Other(format!(
                    "another worker is routing lead {}; tried again later",
                    lead.id
                )));
            }
        }
        if let Some(chains) = &self.chains {
            chains.on_lead(kind, &lead, store).await?;
        }
        Ok(())
    }
}

impl EventHandler for Robot {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(routing) = &self.routing
                && event.source == self.source
                && let Some(heard) = heard_from_crm(event)
                && routing.is_manager(&heard.manager_id)
                && store.set_presence(&heard).await?
            {
                tracing::debug!(manager = %heard.manager_id, "the CRM shows the manager at the desk");
                routing.drain(store).await?;
            }
            match (
                &event.kind,
                record_of(event, self.source, &self.lead_entity),
            ) {
                (EventKind::PresenceChanged { .. }, _) => {
                    if let Some(routing) = &self.routing {
                        let drained = routing.drain(store).await?;
                        if !drained.assigned.is_empty() {
                            tracing::info!(manager = %event.entity_id, assigned = drained.assigned.len(), "a presence change let waiting leads go");
                        }
                    }
                }
                (_, Some(_)) if self.is_own_echo(event) => {
                    tracing::debug!(entity = %event.entity_id, kind = event.kind.name(), "the echo of the robot's own write: not read again");
                    ::metrics::counter!(ECHOES).increment(1);
                }
                (EventKind::ClientReplied { .. }, _) => {
                    if let Some(chains) = &self.chains {
                        let stopped = chains.on_reply(event, store).await?;
                        if !stopped.is_empty() {
                            tracing::info!(chat = %event.entity_id, stopped = stopped.len(), "the client wrote; their chains stopped");
                        }
                    }
                }
                (EventKind::MessageStatus { .. }, _) => {
                    if let Some(chains) = &self.chains {
                        let read = chains.on_status(event, store).await?;
                        tracing::debug!(message = %event.entity_id, read = ?read, "a Wazzup status read back");
                    }
                }
                (kind, Some(Record::Lead(id))) => self.on_lead(kind, &id, store).await?,
                (_, Some(_)) => return self.loader.handle(event, store).await,
                (_, None) => {}
            }
            Journal.handle(event, store).await
        })
    }
}
