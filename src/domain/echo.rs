//! The robot's own writes come back as webhooks (`leads[update]`, `ONCRMDEALUPDATE`) and as
//! changes the catch-up reads. Acting on them again would rewrite the lead for ever and
//! burn the rate limit, so they are recognised by who made them: the CRM user the robot
//! writes as.

use crate::domain::event::{Event, EventKind};

/// Whether `event` is the echo of a write the robot made as the CRM user `own_user`.
///
/// Only the kinds the robot's writes cause count: a lead, company or contact updated, a
/// lead given to a manager, a task set or changed. A stage change is never an echo: the
/// chains' final move is the robot's, and other chains start on the stage it enters.
pub fn is_own_echo(event: &Event, own_user: Option<&str>) -> bool {
    let caused_by_writes = matches!(
        event.kind,
        EventKind::LeadUpdated { .. }
            | EventKind::LeadResponsibleChanged { .. }
            | EventKind::CompanyUpdated
            | EventKind::ContactUpdated
            | EventKind::TaskChanged { .. }
    );
    let Some(own) = own_user.map(str::trim).filter(|u| !u.is_empty()) else {
        return false;
    };
    caused_by_writes && event.modified_by.as_deref().map(str::trim) == Some(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Source;

    fn by(kind: EventKind, who: Option<&str>) -> Event {
        Event {
            source: Source::Bitrix24,
            account: "robotdemo.bitrix24.ru".into(),
            kind,
            entity_id: "4021".into(),
            crm_entity: Some("deal".into()),
            occurred_at: Some(1_763_884_800),
            modified_by: who.map(str::to_owned),
            dedup_key: "k".into(),
        }
    }

    fn updated() -> EventKind {
        EventKind::LeadUpdated {
            status_id: None,
            old_status_id: None,
            pipeline_id: None,
            responsible_user_id: None,
        }
    }

    #[test]
    fn an_update_by_the_robots_own_user_is_an_echo_and_a_persons_is_not() {
        assert!(is_own_echo(&by(updated(), Some("1")), Some("1")));
        assert!(!is_own_echo(&by(updated(), Some("17")), Some("1")));
        assert!(!is_own_echo(&by(updated(), None), Some("1")));
    }

    #[test]
    fn without_a_configured_user_nothing_is_an_echo() {
        assert!(!is_own_echo(&by(updated(), Some("1")), None));
        assert!(!is_own_echo(&by(updated(), Some("")), Some(" ")));
    }

    #[test]
    fn a_stage_change_by_the_robot_is_still_acted_on() {
        let moved = EventKind::LeadStatusChanged {
            status_id: "LOSE".into(),
            old_status_id: Some("NEW".into()),
            pipeline_id: None,
            old_pipeline_id: None,
        };
        assert!(!is_own_echo(&by(moved, Some("1")), Some("1")));
    }
}
