//! Scoring in `serve`: a new lead, or a change of what its score depends on, is scored; the
//! chance, the expected profit and the priority go into the CRM and the ledger; a won or
//! lost lead's outcome goes into the ledger for the forecast and the plans.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::adapters::crm::{Client, Crm, CrmError};
use crate::adapters::store::Store;
use crate::config::scoring::ScoringRules;
use crate::domain::condition::Facts;
use crate::domain::event::{Event, EventKind, Source};
use crate::domain::lead::{Closed, FieldValue, Lead, closed};
use crate::domain::ledger::{Outcome, Scored};
use crate::domain::priority::Priority;
use crate::domain::scoring::{Assessment, History, Model, Observation, Scorer, observe};

use crate::service::catchup::remember;
use crate::service::entities::{Record, record_of};
use crate::service::jobs::{EventHandler, HandlerError, Journal};

/// The scoring rules and the trained model.
#[derive(Debug, Clone)]
pub struct ScoringSetup {
    /// `scoring.toml`.
    pub rules: Arc<ScoringRules>,
    /// The model file's contents.
    pub model: Arc<Model>,
}

/// What happened to a lead's score.
#[derive(Debug, Clone, PartialEq)]
pub enum Scoring {
    /// Scored (the CRM written only where the lead differed).
    Scored(Box<Assessment>),
    /// Its score's inputs have not changed since it was last scored: the echo of the
    /// robot's own write, or a change of something the score does not read. Its priority
    /// is still this one.
    Unchanged(Priority),
    /// Won or lost: the outcome is in the ledger.
    Closed(Closed),
    /// The lead is gone from the CRM.
    Gone,
}

/// Loads the lead an event names, scores it and writes the result; records every event in
/// the journal.
pub struct ScoreLeads {
    crm: Arc<dyn Crm>,
    setup: ScoringSetup,
    source: Source,
    lead_entity: String,
}

impl ScoreLeads {
    /// Scores leads of `crm`, which sends events as `source`, whose leads are events with
    /// `crm_entity` equal to `lead_entity` (see [`record_of`]).
    pub fn new(crm: Arc<dyn Crm>, setup: ScoringSetup, source: Source, lead_entity: &str) -> Self {
        ScoreLeads {
            crm,
            setup,
            source,
            lead_entity: lead_entity.to_owned(),
        }
    }

    /// Scores one lead and writes the result where it differs; `force` scores it even when
    /// nothing it reads has changed since the last time.
    pub async fn score_lead(
        &self,
        id: &str,
        store: &Store,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<Scoring, HandlerError> {
        let crm_error = |e: CrmError| HandlerError::Other(e.to_string());
        let Some(lead) = self.crm.lead(id).await.map_err(crm_error)? else {
            return Ok(Scoring::Gone);
        };
        // The job is queued durably, so from here on catch-up need not bring this version.
        remember(store, self.source, &lead).await?;
        self.score(&lead, store, now, force).await
    }

    /// Scores a lead already read from the CRM, as [`ScoreLeads::score_lead`] does.
    pub async fn score(
        &self,
        lead: &Lead,
        store: &Store,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<Scoring, HandlerError> {
        let crm_error = |e: CrmError| HandlerError::Other(e.to_string());
        let rules = &self.setup.rules;
        if let Some(how) = closed(&lead.status_id) {
            let won = how == Closed::Won;
            let observation = observe(&rules.features, lead, &rules.okved, History::default());
            let margin = rules.margins.of(&rules.features, &observation);
            let profit = if won {
                lead.budget.unwrap_or(0.0) * margin
            } else {
                0.0
            };
            let closed_at = time_or(lead.updated_at, now);
            store
                .record_outcome(&Outcome {
                    lead_id: lead.id.clone(),
                    closed_at,
                    won,
                    profit,
                })
                .await?;
            tracing::info!(lead = %lead.id, won, profit, "outcome recorded in the ledger");
            return Ok(Scoring::Closed(how));
        }
        let history = history_of(self.crm.as_ref(), lead)
            .await
            .map_err(crm_error)?;
        let observation = observe(&rules.features, lead, &rules.okved, history);
        let inputs = self.fingerprint(&observation, lead);
        let key = format!("score-inputs:{}", lead.id);
        let assessment = self.assess(lead, &observation);
        if !force && store.value(&key).await?.as_deref() == Some(inputs.as_str()) {
            return Ok(Scoring::Unchanged(assessment.decision.priority));
        }
        let update = rules.write.update(lead, &assessment);
        if !update.is_empty() {
            self.crm
                .update_lead(&lead.id, &update)
                .await
                .map_err(crm_error)?;
        }
        let fact = |name: &str| fact_of(&rules.features, &observation, lead, name);
        let created_at = time_or(lead.created_at, now);
        store
            .record_score(&Scored {
                lead_id: lead.id.clone(),
                created_at,
                scored_at: now,
                manager_id: lead.responsible_user_id.clone(),
                channel: fact(&rules.report.channel),
                source: fact(&rules.report.source),
                budget: assessment.score.budget,
                probability: assessment.score.probability,
                expected_profit: assessment.score.expected_profit,
                forecast_profit: assessment.score.forecast_profit,
                priority: assessment.decision.priority,
            })
            .await?;
        // Last: a crash before this line scores the lead again on the retry, which writes
        // nothing the CRM already shows.
        store.set_value(&key, &inputs).await?;
        tracing::info!(
            lead = %lead.id, probability = assessment.score.probability,
            expected_profit = assessment.score.expected_profit,
            priority = assessment.decision.priority.number(), why = %assessment.decision.why,
            reasons = %assessment.reasons, written = !update.is_empty(), "lead scored"
        );
        Ok(Scoring::Scored(Box::new(assessment)))
    }

    /// A lead's score without writing anything: for `score --lead`.
    pub async fn explain(
        &self,
        id: &str,
    ) -> Result<Option<(Lead, Observation, Assessment)>, CrmError> {
        let Some(lead) = self.crm.lead(id).await? else {
            return Ok(None);
        };
        let rules = &self.setup.rules;
        let history = history_of(self.crm.as_ref(), &lead).await?;
        let observation = observe(&rules.features, &lead, &rules.okved, history);
        let assessment = self.assess(&lead, &observation);
        Ok(Some((lead, observation, assessment)))
    }

    fn assess(&self, lead: &Lead, observation: &Observation) -> Assessment {
        let rules = &self.setup.rules;
        let scorer = Scorer {
            features: &rules.features,
            margins: &rules.margins,
            priority: &rules.priority,
            model: &self.setup.model,
        };
        scorer.assess(observation, lead.budget, facts_of(lead))
    }
}

/// The client's earlier requests as of `lead`: the company's leads, else the main
/// contact's, created before it.
pub async fn history_of(crm: &dyn Crm, lead: &Lead) -> Result<History, CrmError> {
    let Some(client) = Client::of(lead) else {
        return Ok(History::default());
    };
    let leads = crm.client_leads(&client).await?;
    Ok(History::before(
        lead.created_at,
        leads
            .iter()
            .filter(|l| l.id != lead.id)
            .map(|l| (l.created_at, closed(&l.status_id) == Some(Closed::Won))),
    ))
}

/// Which events can change a lead's score or close it.
pub(crate) fn concerns_scoring(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::LeadCreated { .. }
            | EventKind::LeadUpdated { .. }
            | EventKind::LeadStatusChanged { .. }
            | EventKind::LeadResponsibleChanged { .. }
            | EventKind::LeadRestored
            | EventKind::UnsortedCreated { .. }
    )
}

impl EventHandler for ScoreLeads {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if concerns_scoring(&event.kind)
                && let Some(Record::Lead(id)) = record_of(event, self.source, &self.lead_entity)
            {
                match self.score_lead(&id, store, Utc::now(), false).await? {
                    Scoring::Unchanged(_) => {
                        tracing::debug!(lead = %id, "nothing the score reads has changed")
                    }
                    Scoring::Gone => tracing::info!(lead = %id, "the lead is gone from the CRM"),
                    Scoring::Scored(_) | Scoring::Closed(_) => {}
                }
            }
            Journal.handle(event, store).await
        })
    }
}

/// A CRM time (Unix seconds; 0 when the CRM gave none), or `now`.
fn time_or(unix: i64, now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0)
        .filter(|_| unix > 0)
        .unwrap_or(now)
}

/// What the refusal conditions can read about a lead besides its features.
fn facts_of(lead: &Lead) -> Facts {
    let mut facts: Facts = lead.fields.clone();
    if !lead.tags.is_empty() {
        facts.insert("tags".into(), FieldValue::Many(lead.tags.clone()));
    }
    if let Some(r) = &lead.responsible_user_id {
        facts.insert("responsible".into(), FieldValue::Text(r.clone()));
    }
    facts
}

/// What routing's conditions read about a lead: its fields, tags and manager, and its
/// budget as `budget` (routing.toml splits the groups by it).
pub fn routing_facts(lead: &Lead) -> Facts {
    let mut facts = facts_of(lead);
    if let Some(b) = lead.budget {
        facts.insert("budget".into(), FieldValue::Number(b));
    }
    facts
}

/// A fact by name: a feature's value, else a lead field's.
fn fact_of(
    features: &[crate::domain::scoring::Feature],
    observation: &Observation,
    lead: &Lead,
    name: &str,
) -> Option<String> {
    features
        .iter()
        .position(|f| f.name == name)
        .and_then(|i| observation[i].as_ref())
        .map(|v| v.to_fact().as_text())
        .or_else(|| lead.fields.get(name).map(FieldValue::as_text))
        .filter(|t| !t.trim().is_empty())
}

impl ScoreLeads {
    /// A digest of everything the score and its ledger row depend on: the features, the
    /// budget, the tags, the facts the refusals read and the manager. The robot's own priority tag is left out, so that the
    /// echo of writing it does not look like a change.
    fn fingerprint(&self, observation: &Observation, lead: &Lead) -> String {
        let rules = &self.setup.rules;
        let own: Vec<String> = crate::domain::priority::Priority::ALL
            .iter()
            .filter_map(|p| rules.write.tag(*p))
            .map(|t| t.trim().to_lowercase())
            .collect();
        let mut tags: Vec<String> = lead
            .tags
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !own.contains(t))
            .collect();
        tags.sort();
        let facts = facts_of(lead);
        let read: std::collections::BTreeMap<&str, Option<&FieldValue>> = rules
            .priority
            .refusals
            .iter()
            .flat_map(|r| r.when.fields())
            .filter(|f| *f != "tags")
            .map(|f| (f, facts.get(f)))
            .collect();
        // The manager too: a lead handed over by hand counts in the new manager's plan.
        let text = serde_json::json!({
            "features": observation, "budget": lead.budget, "tags": tags, "facts": read,
            "responsible": lead.responsible_user_id,
        })
        .to_string();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}
