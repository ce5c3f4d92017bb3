//! Catch-up: the events a lead's webhooks would have brought, found by comparing the lead
//! as the CRM shows it now with what the robot last knew of it. Webhooks get lost (Bitrix24
//! never retries, amoCRM drops some and disables a failing hook, the robot is sometimes
//! down); a periodic read of what changed since a watermark closes the gap.
//!
//! The events carry the same dedup keys as the webhook path where the CRM allows it (amoCRM's
//! key is the lead's modification time, which a webhook carries as `last_modified`), so that
//! a change seen by both doors is queued once.

use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind, Source, dedup_key};
use crate::domain::lead::Lead;

/// What the robot last knew of a lead: enough to tell which events it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The stage.
    pub status_id: String,
    /// The responsible manager.
    pub responsible_user_id: Option<String>,
    /// The modification time, Unix seconds.
    pub updated_at: i64,
}

impl Known {
    /// What a lead shows now.
    pub fn of(lead: &Lead) -> Known {
        Known {
            status_id: lead.status_id.clone(),
            responsible_user_id: lead.responsible_user_id.clone(),
            updated_at: lead.updated_at,
        }
    }
}

/// The events the webhooks would have brought for `lead`, given what the robot knew of it
/// (`None`: never seen, so it is new to the robot). Empty when the robot is up to date.
///
/// `account` is the webhook's account (amoCRM's subdomain, Bitrix24's portal domain) and
/// `crm_entity` the Bitrix24 entity (`deal` or `lead`), so that the events look exactly
/// like the webhook's.
pub fn missed(
    source: Source,
    account: &str,
    crm_entity: Option<&str>,
    lead: &Lead,
    known: Option<&Known>,
) -> Vec<Event> {
    // The version part of the key as amoCRM's webhooks make it: the modification time, and
    // for a stage or manager change the new stage or manager too.
    let event = |kind: EventKind| {
        let version = match &kind {
            EventKind::LeadStatusChanged { status_id, .. } => {
                format!("{}-{status_id}", lead.updated_at)
            }
            EventKind::LeadResponsibleChanged {
                responsible_user_id,
                ..
            } => format!("{}-{responsible_user_id}", lead.updated_at),
            _ => lead.updated_at.to_string(),
        };
        let key = dedup_key(source, account, kind.name(), &lead.id, &version);
        Event {
            source,
            account: account.to_owned(),
            kind,
            entity_id: lead.id.clone(),
            crm_entity: crm_entity.map(str::to_owned),
            occurred_at: Some(lead.updated_at),
            modified_by: lead.updated_by.clone(),
            dedup_key: key,
        }
    };
    let Some(known) = known else {
        return vec![event(EventKind::LeadCreated {
            status_id: Some(lead.status_id.clone()),
            pipeline_id: Some(lead.pipeline_id.clone()),
            responsible_user_id: lead.responsible_user_id.clone(),
        })];
    };
    if lead.updated_at <= known.updated_at {
        return Vec::new();
    }
    let mut events = Vec::new();
    if lead.status_id != known.status_id {
        events.push(event(EventKind::LeadStatusChanged {
            status_id: lead.status_id.clone(),
            old_status_id: Some(known.status_id.clone()),
            pipeline_id: Some(lead.pipeline_id.clone()),
            old_pipeline_id: None,
        }));
    }
    if lead.responsible_user_id != known.responsible_user_id {
        events.push(event(EventKind::LeadResponsibleChanged {
            responsible_user_id: lead.responsible_user_id.clone().unwrap_or_default(),
            old_responsible_user_id: known.responsible_user_id.clone(),
        }));
    }
    if events.is_empty() {
        events.push(event(EventKind::LeadUpdated {
            status_id: Some(lead.status_id.clone()),
            old_status_id: None,
            pipeline_id: Some(lead.pipeline_id.clone()),
            responsible_user_id: lead.responsible_user_id.clone(),
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(status: &str, responsible: &str, updated_at: i64) -> Lead {
        Lead {
            id: "7".into(),
            status_id: status.into(),
            pipeline_id: "1".into(),
            responsible_user_id: Some(responsible.into()),
            created_at: 100,
            updated_at,
            ..Lead::default()
        }
    }

    #[test]
    fn a_lead_never_seen_is_new_and_keyed_like_its_webhook() {
        let events = missed(
            Source::Amocrm,
            "robotdemo",
            None,
            &lead("10", "5", 100),
            None,
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind.name(), "lead_created");
        assert_eq!(events[0].dedup_key, "amocrm:robotdemo:lead_created:7:100");
    }

    #[test]
    fn a_known_lead_yields_what_changed_and_nothing_when_up_to_date() {
        let known = Known::of(&lead("10", "5", 100));
        assert!(
            missed(
                Source::Amocrm,
                "a",
                None,
                &lead("10", "5", 100),
                Some(&known)
            )
            .is_empty()
        );
        let moved = missed(
            Source::Amocrm,
            "a",
            None,
            &lead("142", "6", 200),
            Some(&known),
        );
        let kinds: Vec<&str> = moved.iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["lead_status_changed", "lead_responsible_changed"]);
        let edited = missed(
            Source::Bitrix24,
            "p.bitrix24.ru",
            Some("deal"),
            &lead("10", "5", 150),
            Some(&known),
        );
        assert_eq!(edited[0].kind.name(), "lead_updated");
        assert_eq!(edited[0].crm_entity.as_deref(), Some("deal"));
    }
}
