//! An `Event`: one thing that happened in the CRM, in WhatsApp or at a manager's desk,
//! normalised from whichever webhook brought it. Intake turns every webhook body into
//! zero or more events; the queue carries them; the worker decides on them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who told the robot about the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An amoCRM (Kommo) webhook.
    Amocrm,
    /// A Bitrix24 outbound event.
    Bitrix24,
    /// A Wazzup webhook (WhatsApp and other messengers).
    Wazzup,
    /// A presence post from telephony or a desktop agent.
    Presence,
}

impl Source {
    /// The name used in URLs, metrics and dedup keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Amocrm => "amocrm",
            Source::Bitrix24 => "bitrix24",
            Source::Wazzup => "wazzup",
            Source::Presence => "presence",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task webhook says happened to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// The task was created.
    Added,
    /// The task was changed (text, deadline, completed…).
    Updated,
    /// The task was deleted.
    Deleted,
}

/// What happened, with the facts of that kind of event. Ids are kept as the CRM writes
/// them (strings), so that one type serves every CRM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A new lead (amoCRM lead, Bitrix24 deal or lead).
    LeadCreated {
        /// Stage the lead was created in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_id: Option<String>,
        /// Pipeline of that stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline_id: Option<String>,
        /// Responsible user at creation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responsible_user_id: Option<String>,
    },
    /// A lead's fields changed.
    LeadUpdated {
        /// Stage after the change, when the webhook says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_id: Option<String>,
        /// Stage before the change, when the webhook says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_status_id: Option<String>,
        /// Pipeline after the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline_id: Option<String>,
        /// Responsible user after the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responsible_user_id: Option<String>,
    },
    /// A lead moved to another stage (won and lost are stages too).
    LeadStatusChanged {
        /// The new stage.
        status_id: String,
        /// The stage it left.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_status_id: Option<String>,
        /// The new pipeline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline_id: Option<String>,
        /// The pipeline it left.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_pipeline_id: Option<String>,
    },
    /// A lead got another responsible manager.
    LeadResponsibleChanged {
        /// The new responsible user.
        responsible_user_id: String,
        /// The previous responsible user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_responsible_user_id: Option<String>,
    },
    /// A lead was deleted.
    LeadDeleted,
    /// A deleted lead was restored.
    LeadRestored,
    /// A new contact (a person).
    ContactCreated,
    /// A contact's fields changed.
    ContactUpdated,
    /// A contact was deleted.
    ContactDeleted,
    /// A new company.
    CompanyCreated,
    /// A company's fields changed.
    CompanyUpdated,
    /// A company was deleted.
    CompanyDeleted,
    /// A note on a lead, contact or company; `entity_id` is the entity the note is on.
    NoteAdded {
        /// The note's own id.
        note_id: String,
        /// `lead`, `contact` or `company`.
        entity_type: String,
        /// The CRM's note type (amoCRM: 10 = incoming call, 11 = outgoing call, 4 = common…).
        note_type: String,
    },
    /// A task was added, changed or deleted; `entity_id` is the task's id.
    TaskChanged {
        /// What happened to the task.
        action: TaskAction,
        /// Type of the entity the task is on (`lead`, `contact`, `company`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        element_type: Option<String>,
        /// Id of the entity the task is on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        element_id: Option<String>,
        /// Responsible user of the task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responsible_user_id: Option<String>,
        /// Deadline, as the CRM wrote it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        complete_till: Option<String>,
    },
    /// A request landed in amoCRM's "unsorted" (a form, a call, a chat) before becoming a lead.
    UnsortedCreated {
        /// Where it came from: `forms`, `sip`, `mail`, `chats`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        /// The lead amoCRM created for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lead_id: Option<String>,
        /// Its pipeline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline_id: Option<String>,
    },
    /// An activity (call, e-mail, meeting, to-do) was added in Bitrix24; `entity_id` is its id.
    ActivityAdded,
    /// A client wrote to us (not our own echo); `entity_id` is the chat id (digits of the phone).
    ClientReplied {
        /// `whatsapp`, `telegram`, `instagram`…
        chat_type: String,
        /// The messenger channel the message came in on.
        channel_id: String,
        /// The messenger's message id.
        message_id: String,
        /// The contact's phone in digits, when the chat is a phone number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        /// What the client wrote: the text, or the kind of a message without one
        /// («[аудио]»), for the templates' last messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// When the client wrote it, to the millisecond where the messenger says: two
        /// messages of one second keep their order in the conversation kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        written_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A delivery status of a message we sent; `entity_id` is the message id.
    MessageStatus {
        /// `sent`, `delivered`, `read`, `error`…
        status: String,
        /// The error code when `status` is `error` (e.g. `24_HOURS_EXCEEDED`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// What the messenger said about the error, for the manager.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// A manager's presence changed; `entity_id` is the manager's CRM user id.
    PresenceChanged {
        /// The new state.
        state: crate::domain::presence::PresenceState,
        /// When it happened, RFC 3339.
        at: chrono::DateTime<chrono::FixedOffset>,
    },
}

impl EventKind {
    /// The snake_case name of the kind, as written in JSON and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::LeadCreated { .. } => "lead_created",
            EventKind::LeadUpdated { .. } => "lead_updated",
            EventKind::LeadStatusChanged { .. } => "lead_status_changed",
            EventKind::LeadResponsibleChanged { .. } => "lead_responsible_changed",
            EventKind::LeadDeleted => "lead_deleted",
            EventKind::LeadRestored => "lead_restored",
            EventKind::ContactCreated => "contact_created",
            EventKind::ContactUpdated => "contact_updated",
            EventKind::ContactDeleted => "contact_deleted",
            EventKind::CompanyCreated => "company_created",
            EventKind::CompanyUpdated => "company_updated",
            EventKind::CompanyDeleted => "company_deleted",
            EventKind::NoteAdded { .. } => "note_added",
            EventKind::TaskChanged { .. } => "task_changed",
            EventKind::UnsortedCreated { .. } => "unsorted_created",
            EventKind::ActivityAdded => "activity_added",
            EventKind::ClientReplied { .. } => "client_replied",
            EventKind::MessageStatus { .. } => "message_status",
            EventKind::PresenceChanged { .. } => "presence_changed",
        }
    }
}

/// One normalised event, ready for the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Who sent it.
    pub source: Source,
    /// The account it belongs to: amoCRM subdomain, Bitrix24 domain, Wazzup channel.
    pub account: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The entity it is about (lead, contact, company, task, chat, message, manager).
    pub entity_id: String,
    /// Which kind of CRM record `entity_id` names where the CRM has more than one kind of
    /// lead (Bitrix24: `deal` or `lead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_entity: Option<String>,
    /// When the CRM says it happened (Unix seconds), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<i64>,
    /// Which CRM user made the change, when the CRM says (lets the robot spot its own echoes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<String>,
    /// Identifies the event across retries, replays and the catch-up path; see [`dedup_key`].
    pub dedup_key: String,
}

/// Builds the key under which an event is deduplicated: the source, the account, the kind,
/// the entity and what versions it (a modification time, a stage, a message id). Two
/// deliveries of the same change give the same key whatever bytes they came in.
pub fn dedup_key(
    source: Source,
    account: &str,
    kind: &str,
    entity_id: &str,
    version: &str,
) -> String {
    format!("{source}:{account}:{kind}:{entity_id}:{version}")
}

/// A short stable fingerprint of some text, for events that carry no version of their own
/// (a deletion has no modification time): the same fields give the same fingerprint.
pub fn fingerprint(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_event() -> Event {
        Event {
            source: Source::Amocrm,
            account: "robotdemo".into(),
            kind: EventKind::LeadStatusChanged {
                status_id: "142".into(),
                old_status_id: Some("61234567".into()),
                pipeline_id: Some("7654321".into()),
                old_pipeline_id: None,
            },
            entity_id: "31234567".into(),
            crm_entity: None,
            occurred_at: Some(1_763_900_000),
            modified_by: None,
            dedup_key: dedup_key(
                Source::Amocrm,
                "robotdemo",
                "lead_status_changed",
                "31234567",
                "1763900000-142",
            ),
        }
    }

    #[test]
    fn event_serialises_flat_with_its_kind() {
        let json = serde_json::to_value(status_event()).unwrap();
        assert_eq!(json["source"], "amocrm");
        assert_eq!(json["kind"], "lead_status_changed");
        assert_eq!(json["status_id"], "142");
        assert_eq!(json["entity_id"], "31234567");
        assert!(json.get("old_pipeline_id").is_none());
    }

    #[test]
    fn event_round_trips_through_json() {
        let event = status_event();
        let back: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(back, event);
        let unit = Event {
            kind: EventKind::LeadDeleted,
            ..status_event()
        };
        let back: Event = serde_json::from_str(&serde_json::to_string(&unit).unwrap()).unwrap();
        assert_eq!(back, unit);
    }

    #[test]
    fn kind_name_matches_its_serde_tag() {
        let event = status_event();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], event.kind.name());
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        assert_eq!(fingerprint("a=1"), fingerprint("a=1"));
        assert_ne!(fingerprint("a=1"), fingerprint("a=2"));
        assert_eq!(fingerprint("x").len(), 16);
    }
}
