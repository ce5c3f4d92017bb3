//! A manager's presence: online, on a call, away or offline, as telephony or a desktop
//! agent reports it. Routing reads it to hand leads only to someone who can take them now.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind, TaskAction};

/// Where a manager is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// At the desk and free.
    Online,
    /// Talking to a client: no new lead now.
    OnCall,
    /// Stepped away.
    Away,
    /// Not working.
    Offline,
}

impl PresenceState {
    /// The snake_case name, as in the presence API.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::OnCall => "on_call",
            PresenceState::Away => "away",
            PresenceState::Offline => "offline",
        }
    }
}

/// One presence report of one manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// The manager's CRM user id.
    pub manager_id: String,
    /// The reported state.
    pub state: PresenceState,
    /// When the state began, as the reporter says.
    pub at: DateTime<FixedOffset>,
}

impl Presence {
    /// Whether this report should replace `current`: reports can arrive out of order, and
    /// an older one must not overwrite a newer one.
    pub fn supersedes(&self, current: Option<&Presence>) -> bool {
        current.is_none_or(|c| self.at >= c.at)
    }
}

/// What a CRM event says about a manager's presence, when it says something: a call note
/// lands when a call ends, and a task is completed by someone at the desk, so both mean the
/// manager who made them is online at that moment. The report ages like any heartbeat: the
/// routing's freshness limit applies to it.
pub fn heard_from_crm(event: &Event) -> Option<Presence> {
    let at_desk = match &event.kind {
        // amoCRM's call notes: 10 incoming, 11 outgoing (by number or by name).
        EventKind::NoteAdded { note_type, .. } => {
            matches!(note_type.as_str(), "10" | "11" | "call_in" | "call_out")
        }
        EventKind::TaskChanged {
            action: TaskAction::Updated,
            ..
        } => true,
        _ => false,
    };
    if !at_desk {
        return None;
    }
    let manager = event.modified_by.as_deref()?.trim();
    let at = DateTime::from_timestamp(event.occurred_at?, 0)?;
    (!manager.is_empty() && manager != "0").then(|| Presence {
        manager_id: manager.to_owned(),
        state: PresenceState::Online,
        at: at.fixed_offset(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Source;

    fn event(kind: EventKind, by: Option<&str>) -> Event {
        Event {
            source: Source::Amocrm,
            account: "robotdemo".into(),
            kind,
            entity_id: "31000001".into(),
            crm_entity: None,
            occurred_at: Some(1_763_884_800),
            modified_by: by.map(str::to_owned),
            dedup_key: "k".into(),
        }
    }

    fn note(note_type: &str) -> EventKind {
        EventKind::NoteAdded {
            note_id: "1".into(),
            entity_type: "lead".into(),
            note_type: note_type.into(),
        }
    }

    #[test]
    fn a_call_note_or_a_task_done_means_the_manager_is_at_the_desk() {
        let heard = heard_from_crm(&event(note("10"), Some("8123401"))).unwrap();
        assert_eq!(heard.manager_id, "8123401");
        assert_eq!(heard.state, PresenceState::Online);
        assert_eq!(heard.at.timestamp(), 1_763_884_800);
        assert!(heard_from_crm(&event(note("call_out"), Some("8123401"))).is_some());
        let done = EventKind::TaskChanged {
            action: TaskAction::Updated,
            element_type: Some("lead".into()),
            element_id: Some("31000001".into()),
            responsible_user_id: Some("8123401".into()),
            complete_till: None,
        };
        assert!(heard_from_crm(&event(done, Some("8123401"))).is_some());
    }

    #[test]
    fn other_notes_and_events_without_their_author_say_nothing() {
        assert!(heard_from_crm(&event(note("4"), Some("8123401"))).is_none());
        assert!(heard_from_crm(&event(note("10"), None)).is_none());
        assert!(heard_from_crm(&event(note("10"), Some("0"))).is_none());
        let added = EventKind::TaskChanged {
            action: TaskAction::Added,
            element_type: None,
            element_id: None,
            responsible_user_id: None,
            complete_till: None,
        };
        assert!(heard_from_crm(&event(added, Some("8123401"))).is_none());
    }

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn a_newer_report_supersedes_an_older_one_and_not_the_reverse() {
        let older = Presence {
            manager_id: "1".into(),
            state: PresenceState::Online,
            at: at("2026-11-23T09:00:00+03:00"),
        };
        let newer = Presence {
            state: PresenceState::OnCall,
            at: at("2026-11-23T06:05:00Z"),
            ..older.clone()
        };
        assert!(newer.supersedes(Some(&older)));
        assert!(!older.supersedes(Some(&newer)));
        assert!(older.supersedes(None));
    }
}
