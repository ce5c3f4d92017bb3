//! The first step of handling an event: load from the CRM the record it names, so that every
//! decision starts from the full lead (a webhook carries ids, not the lead). A record that is
//! gone (deleted) is a normal outcome; a CRM that is down fails the job, which is retried.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::adapters::crm::Crm;
use crate::adapters::store::Store;
use crate::domain::event::{Event, EventKind, Source};
use crate::service::jobs::{EventHandler, HandlerError, Journal};

/// Which record an event names, if it names one the CRM holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A lead (a deal in Bitrix24, or a CRM lead where the portal works in leads).
    Lead(String),
    /// A contact.
    Contact(String),
    /// A company.
    Company(String),
}

/// The CRM record an event is about, for events from `crm` (the configured CRM); `None` for
/// events about other things (a chat, a manager) or records the robot does not load (a
/// deleted lead, a Bitrix24 CRM lead when deals are the leads, a deal when leads are).
/// `lead_entity` is the `crm_entity` of the events that name the robot's leads.
pub fn record_of(event: &Event, crm: Source, lead_entity: &str) -> Option<Record> {
    if event.source != crm
        || event
            .crm_entity
            .as_deref()
            .is_some_and(|e| e != lead_entity && e != "contact" && e != "company")
    {
        return None;
    }
    let id = event.entity_id.clone();
    match &event.kind {
        EventKind::LeadCreated { .. }
        | EventKind::LeadUpdated { .. }
        | EventKind::LeadStatusChanged { .. }
        | EventKind::LeadResponsibleChanged { .. }
        | EventKind::LeadRestored => Some(Record::Lead(id)),
        EventKind::NoteAdded { entity_type, .. } if entity_type == "lead" => Some(Record::Lead(id)),
        EventKind::UnsortedCreated {
            lead_id: Some(lead),
            ..
        } => Some(Record::Lead(lead.clone())),
        EventKind::ContactCreated | EventKind::ContactUpdated => Some(Record::Contact(id)),
        EventKind::CompanyCreated | EventKind::CompanyUpdated => Some(Record::Company(id)),
        _ => None,
    }
}

/// Loads the record an event names through the CRM, then records the event in the journal.
pub struct LoadEntity {
    crm: Arc<dyn Crm>,
    source: Source,
    lead_entity: String,
}

impl LoadEntity {
    /// Loads from `crm`, which is the CRM that sends events as `source`; Bitrix24 events about
    /// deals name its leads.
    pub fn new(crm: Arc<dyn Crm>, source: Source) -> LoadEntity {
        LoadEntity {
            crm,
            source,
            lead_entity: "deal".into(),
        }
    }

    /// Takes events whose `crm_entity` is `entity` (`deal` or `lead`) as naming the robot's
    /// leads, as the Bitrix24 client is set up; events about the other kind are not loaded.
    pub fn with_lead_entity(mut self, entity: &str) -> LoadEntity {
        self.lead_entity = entity.to_owned();
        self
    }
}

impl EventHandler for LoadEntity {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let crm_error = |e: crate::adapters::crm::CrmError| HandlerError::Other(e.to_string());
            match record_of(event, self.source, &self.lead_entity) {
                Some(Record::Lead(id)) => match self.crm.lead(&id).await.map_err(crm_error)? {
                    Some(lead) => {
                        crate::service::catchup::remember(store, self.source, &lead).await?;
                        tracing::info!(
                        lead = %lead.id, stage = %lead.status_id, responsible = ?lead.responsible_user_id,
                        budget = ?lead.budget, contacts = lead.contacts.len(), "lead loaded"
                        )
                    }
                    None => {
                        tracing::info!(lead = %id, "the lead is gone from the CRM (deleted): nothing to load")
                    }
                },
                Some(Record::Contact(id)) => {
                    let found = self.crm.contact(&id).await.map_err(crm_error)?;
                    tracing::info!(contact = %id, found = found.is_some(), "contact loaded");
                }
                Some(Record::Company(id)) => {
                    let found = self.crm.company(&id).await.map_err(crm_error)?;
                    if let Some(company) = &found {
                        crate::service::catchup::remember_company(store, self.source, company)
                            .await?;
                    }
                    tracing::info!(company = %id, found = found.is_some(), "company loaded");
                }
                None => {}
            }
            Journal.handle(event, store).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::dedup_key;

    fn event(source: Source, kind: EventKind, crm_entity: Option<&str>) -> Event {
        Event {
            source,
            account: "a".into(),
            kind,
            entity_id: "7".into(),
            crm_entity: crm_entity.map(str::to_owned),
            occurred_at: None,
            modified_by: None,
            dedup_key: dedup_key(source, "a", "k", "7", "1"),
        }
    }

    #[test]
    fn lead_events_of_the_configured_crm_name_their_lead() {
        let created = EventKind::LeadCreated {
            status_id: None,
            pipeline_id: None,
            responsible_user_id: None,
        };
        assert_eq!(
            record_of(
                &event(Source::Amocrm, created.clone(), None),
                Source::Amocrm,
                "deal"
            ),
            Some(Record::Lead("7".into()))
        );
        assert_eq!(
            record_of(
                &event(Source::Amocrm, created.clone(), None),
                Source::Bitrix24,
                "deal"
            ),
            None
        );
        assert_eq!(
            record_of(
                &event(Source::Bitrix24, created.clone(), Some("deal")),
                Source::Bitrix24,
                "deal"
            ),
            Some(Record::Lead("7".into()))
        );
        assert_eq!(
            record_of(
                &event(Source::Bitrix24, created, Some("lead")),
                Source::Bitrix24,
                "deal"
            ),
            None
        );
        assert_eq!(
            record_of(
                &event(Source::Amocrm, EventKind::LeadDeleted, None),
                Source::Amocrm,
                "deal"
            ),
            None
        );
        assert_eq!(
            record_of(
                &event(Source::Amocrm, EventKind::CompanyUpdated, None),
                Source::Amocrm,
                "deal"
            ),
            Some(Record::Company("7".into()))
        );
        // A portal whose sales work in CRM leads: lead events name the lead, deal events nothing.
        let created = EventKind::LeadCreated {
            status_id: None,
            pipeline_id: None,
            responsible_user_id: None,
        };
        assert_eq!(
            record_of(
                &event(Source::Bitrix24, created.clone(), Some("lead")),
                Source::Bitrix24,
                "lead"
            ),
            Some(Record::Lead("7".into()))
        );
        assert_eq!(
            record_of(
                &event(Source::Bitrix24, created, Some("deal")),
                Source::Bitrix24,
                "lead"
            ),
            None
        );
        assert_eq!(
            record_of(
                &event(Source::Bitrix24, EventKind::ContactUpdated, Some("contact")),
                Source::Bitrix24,
                "lead"
            ),
            Some(Record::Contact("7".into()))
        );
        let unsorted = EventKind::UnsortedCreated {
            category: None,
            lead_id: Some("9".into()),
            pipeline_id: None,
        };
        assert_eq!(
            record_of(
                &event(Source::Amocrm, unsorted, None),
                Source::Amocrm,
                "deal"
            ),
            Some(Record::Lead("9".into()))
        );
    }
}
