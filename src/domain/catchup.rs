//! Catch-up: the events a lead's webhooks would have brought, found by comparing the lead
//! as the CRM shows it now with what the robot last knew of it. Webhooks get lost (Bitrix24
//! never retries, amoCRM drops some and disables a failing hook, the robot is sometimes
//! down); a periodic read of what changed since a watermark closes the gap.
//!
//! The events carry the same dedup keys as the webhook path where the CRM allows it (amoCRM's
//! key is the lead's modification time, which a webhook carries as `last_modified`), so that
//! a change seen by both doors is queued once.

use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind, Source, TaskAction, dedup_key};
use crate::domain::lead::{Company, Lead};
use crate::domain::task::{EntityKind, Task};

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
    let event = |kind: EventKind| lead_event(source, account, crm_entity, lead, kind);
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

/// The event of `lead` as its webhook would have brought it, with the same dedup key.
fn lead_event(
    source: Source,
    account: &str,
    crm_entity: Option<&str>,
    lead: &Lead,
    kind: EventKind,
) -> Event {
    // The version part of the key as amoCRM's webhooks make it: the modification time, and
    // for a stage or manager change the new stage or manager too.
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
}

/// The lead as the robot read it just before one of its own writes that did not act on the
/// rest of it: a waiting lead's hand-over reads the lead, then writes only its manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBeforeWrite {
    /// The lead's modification time then, Unix seconds.
    pub updated_at: i64,
    /// Who had modified it last then.
    pub updated_by: Option<String>,
}

/// Whether the robot's read before its own write showed a change the robot had not known of
/// (`known`) and had not made (`own_user`): a person's edit whose webhook was lost. A list
/// read shows the robot as the last editor after that write, so the edit would otherwise
/// pass for the robot's echo and never be acted on.
pub fn unheard(
    known: Option<&Known>,
    read: Option<&ReadBeforeWrite>,
    own_user: Option<&str>,
) -> bool {
    let (Some(known), Some(read)) = (known, read) else {
        return false;
    };
    read.updated_at > known.updated_at
        && (own_user.is_none() || read.updated_by.as_deref() != own_user)
}

/// The edit of `lead` that the robot did not hear (see [`unheard`]): what `leads[update]`
/// would have brought, with no author, so that it is acted on rather than taken for an echo.
pub fn unheard_edit(source: Source, account: &str, crm_entity: Option<&str>, lead: &Lead) -> Event {
    let mut event = lead_event(
        source,
        account,
        crm_entity,
        lead,
        EventKind::LeadUpdated {
            status_id: Some(lead.status_id.clone()),
            old_status_id: None,
            pipeline_id: Some(lead.pipeline_id.clone()),
            responsible_user_id: lead.responsible_user_id.clone(),
        },
    );
    event.modified_by = None;
    event
}

/// Who changed the manager of a lead, as far as catch-up can tell. A list read shows only
/// the lead's last editor, and that may be the robot writing a tag after a person moved the
/// lead to another manager; taken at its word, the person's change would pass for the
/// robot's echo and never be followed. So a change of manager keeps the last editor only
/// when the robot itself handed the lead to that manager (`handed_by_robot`); otherwise its
/// author is unknown, and it is acted on.
pub fn attribute_manager_change(event: &mut Event, handed_by_robot: Option<&str>) {
    if let EventKind::LeadResponsibleChanged {
        responsible_user_id,
        ..
    } = &event.kind
        && handed_by_robot != Some(responsible_user_id.as_str())
    {
        event.modified_by = None;
    }
}

/// The event a company's webhook would have brought (`contacts[update]` with
/// `type=company` in amoCRM, `ONCRMCOMPANYUPDATE` in Bitrix24), given when the robot last
/// saw it changed (`known_updated_at`; `None`: never seen). `None` when the robot is up to
/// date. A company the robot never saw, unchanged since it was made, is a new one.
pub fn missed_company(
    source: Source,
    account: &str,
    company: &Company,
    known_updated_at: Option<i64>,
) -> Option<Event> {
    let kind = match known_updated_at {
        Some(known) if company.updated_at <= known => return None,
        None if company.updated_at <= company.created_at => EventKind::CompanyCreated,
        _ => EventKind::CompanyUpdated,
    };
    Some(changed(
        source,
        account,
        "company",
        &company.id,
        kind,
        company.updated_at,
        company.updated_by.clone(),
    ))
}

/// The event a task's webhook would have brought (amoCRM's `task[add]` or `task[update]`):
/// a task the robot never saw, unchanged since it was made, was added; any other change,
/// completing it above all, is an update, which tells who was at the desk. `None` when the
/// robot is up to date.
pub fn missed_task(
    source: Source,
    account: &str,
    task: &Task,
    known_updated_at: Option<i64>,
) -> Option<Event> {
    let action = match known_updated_at {
        Some(known) if task.updated_at <= known => return None,
        None if task.updated_at <= task.created_at && !task.completed => TaskAction::Added,
        _ => TaskAction::Updated,
    };
    let element_type = task.entity.as_ref().map(|e| {
        match e.kind {
            EntityKind::Lead => "lead",
            EntityKind::Contact => "contact",
            EntityKind::Company => "company",
        }
        .to_owned()
    });
    let kind = EventKind::TaskChanged {
        action,
        element_type,
        element_id: task.entity.as_ref().map(|e| e.id.clone()),
        responsible_user_id: Some(task.responsible_user_id.clone())
            .filter(|r| !r.trim().is_empty()),
        complete_till: (task.deadline > 0).then(|| task.deadline.to_string()),
    };
    Some(changed(
        source,
        account,
        "task",
        &task.id,
        kind,
        task.updated_at,
        task.updated_by.clone(),
    ))
}

/// The event about a company or a task (`entity`) of `account` as its webhook would bring
/// it, keyed by when it changed and saying who changed it. amoCRM's webhooks key by the
/// event's kind, Bitrix24's by the entity and the kind (`company_company_updated`).
fn changed(
    source: Source,
    account: &str,
    entity: &str,
    id: &str,
    kind: EventKind,
    updated_at: i64,
    updated_by: Option<String>,
) -> Event {
    let key_kind = match source {
        Source::Bitrix24 => format!("{entity}_{}", kind.name()),
        _ => kind.name().to_owned(),
    };
    Event {
        source,
        account: account.to_owned(),
        dedup_key: dedup_key(source, account, &key_kind, id, &updated_at.to_string()),
        kind,
        entity_id: id.to_owned(),
        crm_entity: (source == Source::Bitrix24).then(|| entity.to_owned()),
        occurred_at: Some(updated_at),
        modified_by: updated_by,
    }
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
    fn a_change_read_before_the_robots_write_is_unheard_only_when_new_and_not_its_own() {
        let known = Known::of(&lead("10", "5", 100));
        let read = |at: i64, by: &str| ReadBeforeWrite {
            updated_at: at,
            updated_by: Some(by.into()),
        };
        let robot = Some("99");
        assert!(unheard(Some(&known), Some(&read(150, "42")), robot));
        assert!(
            !unheard(Some(&known), Some(&read(150, "99")), robot),
            "its own"
        );
        assert!(
            !unheard(Some(&known), Some(&read(100, "42")), robot),
            "known"
        );
        assert!(!unheard(None, Some(&read(150, "42")), robot), "a new lead");
        assert!(!unheard(Some(&known), None, robot), "no read");
        let edit = unheard_edit(Source::Amocrm, "a", None, &lead("10", "5", 160));
        assert_eq!(edit.kind.name(), "lead_updated");
        assert_eq!(edit.modified_by, None);
        assert_eq!(edit.dedup_key, "amocrm:a:lead_updated:7:160");
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

    #[test]
    fn a_change_of_manager_is_the_robots_only_when_it_handed_the_lead_to_that_manager() {
        let known = Known::of(&lead("10", "5", 100));
        // A person gave the lead to 6, then the robot (user 1) wrote a tag: the robot is
        // the last editor.
        let mut now = lead("10", "6", 200);
        now.updated_by = Some("1".into());
        let found = |handed: Option<&str>| {
            let mut e = missed(Source::Amocrm, "a", None, &now, Some(&known)).remove(0);
            attribute_manager_change(&mut e, handed);
            e
        };
        assert_eq!(found(None).modified_by, None, "the robot never handed it");
        assert_eq!(
            found(Some("5")).modified_by,
            None,
            "the robot handed it to 5"
        );
        assert_eq!(found(Some("6")).modified_by.as_deref(), Some("1"));
        let mut edit = missed(
            Source::Amocrm,
            "a",
            None,
            &lead("10", "5", 300),
            Some(&known),
        );
        edit[0].modified_by = Some("1".into());
        attribute_manager_change(&mut edit[0], None);
        assert_eq!(
            edit[0].modified_by.as_deref(),
            Some("1"),
            "not a change of manager"
        );
    }

    fn company(created_at: i64, updated_at: i64) -> Company {
        Company {
            id: "41300001".into(),
            name: "Ромашка".into(),
            created_at,
            updated_at,
            updated_by: Some("10115308".into()),
            ..Company::default()
        }
    }

    #[test]
    fn a_company_changed_since_the_robot_saw_it_is_an_update_keyed_like_its_webhook() {
        let changed = missed_company(Source::Amocrm, "robotdemo", &company(100, 200), Some(150))
            .expect("changed after the robot saw it");
        assert_eq!(changed.kind, EventKind::CompanyUpdated);
        assert_eq!(
            changed.dedup_key,
            "amocrm:robotdemo:company_updated:41300001:200"
        );
        assert_eq!(changed.modified_by.as_deref(), Some("10115308"));
        assert!(
            missed_company(Source::Amocrm, "robotdemo", &company(100, 200), Some(200)).is_none()
        );
        let new = missed_company(Source::Bitrix24, "p.bitrix24.ru", &company(100, 100), None)
            .expect("never seen");
        assert_eq!(new.kind, EventKind::CompanyCreated);
        assert_eq!(new.crm_entity.as_deref(), Some("company"));
    }

    fn task(created_at: i64, updated_at: i64, completed: bool) -> Task {
        Task {
            id: "5001".into(),
            kind: crate::domain::task::TaskKind::Call,
            text: "Позвонить".into(),
            deadline: 300,
            responsible_user_id: "10115308".into(),
            entity: Some(crate::domain::task::EntityRef::lead("31000001")),
            completed,
            created_at,
            updated_at,
            updated_by: Some("10115308".into()),
        }
    }

    #[test]
    fn a_task_completed_while_the_robot_was_away_is_an_update_by_who_completed_it() {
        let done = missed_task(Source::Amocrm, "robotdemo", &task(100, 200, true), None)
            .expect("never seen");
        let EventKind::TaskChanged {
            action,
            element_type,
            element_id,
            ..
        } = &done.kind
        else {
            panic!("{done:?}");
        };
        assert_eq!(*action, TaskAction::Updated);
        assert_eq!(element_type.as_deref(), Some("lead"));
        assert_eq!(element_id.as_deref(), Some("31000001"));
        assert_eq!(done.occurred_at, Some(200));
        assert_eq!(done.modified_by.as_deref(), Some("10115308"));
        assert_eq!(done.dedup_key, "amocrm:robotdemo:task_changed:5001:200");
        let added = missed_task(Source::Amocrm, "robotdemo", &task(100, 100, false), None).unwrap();
        assert!(matches!(
            added.kind,
            EventKind::TaskChanged {
                action: TaskAction::Added,
                ..
            }
        ));
        assert!(
            missed_task(
                Source::Amocrm,
                "robotdemo",
                &task(100, 200, true),
                Some(200)
            )
            .is_none()
        );
    }
}
