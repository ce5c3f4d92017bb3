//! A manager's presence: online, on a call, away or offline, as telephony or a desktop
//! agent reports it. Routing reads it to hand leads only to someone who can take them now.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
