//! A chain as it would run for one lead from a given moment, sending nothing: each step
//! with its time and what it would become, the messages rendered. The lead is taken as it
//! is now and the client as not answering.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::lead::{ContextError, Needs, Sources, context_of};
use super::{ChainEngine, crm_error, state};
use crate::adapters::store::Store;
use crate::domain::chains::{Channel, Decided, Enrolment};
use crate::domain::priority::Priority;
use crate::service::jobs::HandlerError;

/// One step of a preview.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewStep {
    /// Its index in the chain.
    pub index: usize,
    /// Its title.
    pub title: String,
    /// When it would be carried out.
    pub at: DateTime<Utc>,
    /// What it would do, in words.
    pub action: String,
    /// Why it would do that (the priority, WhatsApp's 24 hours…).
    pub because: String,
    /// The subject of a letter.
    pub subject: Option<String>,
    /// The rendered text of a message, or the text of a task or a note.
    pub text: Option<String>,
}

/// A chain's preview for one lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The chain's name.
    pub chain: String,
    /// The lead's title.
    pub lead_name: String,
    /// The lead's priority, when scored.
    pub priority: Option<Priority>,
    /// The client's zone.
    pub zone: Tz,
    /// The steps, in order.
    pub steps: Vec<PreviewStep>,
}

/// Why there is no preview.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// No chain of that name.
    #[error("there is no chain «{0}»; the chains are: {1}")]
    NoChain(String, String),
    /// No lead of that id.
    #[error("there is no lead {0} in the CRM")]
    NoLead(String),
    /// Reading failed.
    #[error(transparent)]
    Failed(#[from] HandlerError),
}

impl ChainEngine {
    /// `chain` for lead `lead_id` as if enrolled at `at`: every step with its time and its
    /// rendered text. Reads the CRM and the store (the client's last WhatsApp message);
    /// writes nothing and sends nothing.
    pub async fn preview(
        &self,
        store: &Store,
        chain: &str,
        lead_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Preview, PreviewError> {
        let Some(c) = self.chains.chain(chain) else {
            let names: Vec<&str> = self.chains.chains.iter().map(|c| c.name.as_str()).collect();
            return Err(PreviewError::NoChain(chain.to_owned(), names.join("; ")));
        };
        let lead = self
            .crm
            .lead(lead_id)
            .await
            .map_err(crm_error)?
            .ok_or_else(|| PreviewError::NoLead(lead_id.to_owned()))?;
        let (names, seen) = self.read_seen(&lead).await.map_err(crm_error)?;
        let last = state::open_since(store, &seen.phones)
            .await
            .map_err(HandlerError::from)?;
        let placeholders: Vec<String> = c
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                crate::domain::chains::Action::Message { template, .. } => {
                    self.templates.placeholders(template).ok()
                }
                _ => None,
            })
            .flatten()
            .collect();
        let from = Sources {
            crm: self.crm.as_ref(),
            store,
            analogues: &self.chains.analogues,
            seen: &seen,
        };
        let context = context_of(&lead, &names, &from, Needs::of(&placeholders))
            .await
            .map_err(|e| match e {
                ContextError::Crm(e) => crm_error(e),
                ContextError::Store(e) => HandlerError::from(e),
            })?;
        let mut e = Enrolment::new(c, &lead.id, "preview", &seen.facts, at);
        let mut now = at;
        let mut steps = Vec::new();
        while let Some(due) = self.chains.next_step(&e, now, seen.zone) {
            now = due.at;
            let step = &c.steps[due.index];
            let decision = self
                .chains
                .decide_step(step, &seen.facts, seen.priority, last, now);
            let mut subject = None;
            let mut text = None;
            let action = match &decision.action {
                Decided::Send { channel, template } => {
                    match self.templates.render(template, &context) {
                        Ok(r) => {
                            subject = match channel {
                                Channel::Email => Some(r.subject.unwrap_or(step.title.clone())),
                                Channel::Wazzup => None,
                            };
                            text = Some(r.body);
                        }
                        Err(err) => text = Some(format!("(не получается: {err})")),
                    }
                    let to = match channel {
                        Channel::Email => seen.email.clone(),
                        Channel::Wazzup => seen.phones.first().cloned(),
                    };
                    let via = match channel {
                        Channel::Email => "письмо",
                        Channel::Wazzup => "WhatsApp",
                    };
                    format!(
                        "{via} «{template}» → {}",
                        to.unwrap_or_else(|| "нет адреса: шаг не выполнится".into())
                    )
                }
                Decided::SendApproved { name } => format!(
                    "WhatsApp, одобренный шаблон «{name}» → {}",
                    seen.phones
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "нет номера: шаг не выполнится".into())
                ),
                Decided::Task { text: t, .. } => {
                    text = Some(t.clone());
                    "задача менеджеру".into()
                }
                Decided::Note { text: t } => {
                    text = Some(t.clone());
                    "примечание в сделке".into()
                }
                Decided::Move { stage, reason } => match reason {
                    Some(r) => format!("перевод на этап «{stage}», причина «{r}»"),
                    None => format!("перевод на этап «{stage}»"),
                },
                Decided::Skip => "пропуск".into(),
            };
            steps.push(PreviewStep {
                index: due.index,
                title: step.title.clone(),
                at: due.at,
                action,
                because: decision.because.to_string(),
                subject,
                text,
            });
            e.step_done(due.index, now);
        }
        Ok(Preview {
            chain: c.name.clone(),
            lead_name: lead.name.clone(),
            priority: seen.priority,
            zone: seen.zone,
            steps,
        })
    }
}
