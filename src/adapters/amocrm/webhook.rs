//! amoCRM webhooks: form bodies in the old v2 shapes (`leads[status][0][status_id]=…`),
//! several entities and event types per body, the `account[…]` block anywhere in it.
//! Formats: see `fixtures/README.md`.

use crate::adapters::form::{Field, Node};
use crate::adapters::webhook::{Caller, Parsed, WebhookError};
use crate::domain::event::{Event, EventKind, Source, TaskAction, dedup_key, fingerprint};

/// Parses one amoCRM webhook body into events.
pub fn parse(body: &[u8]) -> Result<Parsed, WebhookError> {
    let tree = Node::parse(body)?;
    let root = Field::root(&tree);
    let account = root
        .child("account")
        .ok_or_else(|| missing("account[subdomain]"))?;
    let subdomain = account.req("subdomain")?.to_owned();
    let mut parsed = Parsed {
        caller: Caller {
            account: Some(subdomain.clone()),
            account_id: account.opt_id("id")?.map(str::to_owned),
            token: None,
        },
        ..Parsed::default()
    };
    for section in root.children() {
        let entity = section.name().to_owned();
        if entity == "account" {
            continue;
        }
        for action in section.children() {
            let name = format!("{entity}[{}]", action.name());
            let items = action.children();
            let mut known = true;
            for item in &items {
                match entity_event(&entity, action.name(), item)? {
                    Some(mut event) => {
                        event.account = subdomain.clone();
                        event.dedup_key = dedup_key(
                            Source::Amocrm,
                            &subdomain,
                            event.kind.name(),
                            &event.entity_id,
                            &event.dedup_key,
                        );
                        parsed.events.push(event);
                    }
                    None => known = false,
                }
            }
            if !known || items.is_empty() {
                parsed.ignored.push(name);
            }
        }
    }
    Ok(parsed)
}

fn missing(key: &str) -> WebhookError {
    WebhookError::Key(crate::adapters::form::KeyError {
        key: key.to_owned(),
        reason: "missing key",
    })
}

/// What versions an entity's change: its modification time, else a fingerprint of its fields.
fn version(item: &Field<'_>) -> String {
    item.opt("last_modified")
        .or_else(|| item.opt("updated_at"))
        .map(str::to_owned)
        .unwrap_or_else(|| fingerprint(&item.node().canonical()))
}

fn occurred_at(item: &Field<'_>) -> Option<i64> {
    item.opt("last_modified")
        .or_else(|| item.opt("updated_at"))
        .and_then(|v| v.parse().ok())
}

fn owned(v: Option<&str>) -> Option<String> {
    v.map(str::to_owned)
}

/// amoCRM's numeric element types, as notes and tasks carry them.
fn element_type_name(code: &str) -> &str {
    match code {
        "1" => "contact",
        "2" => "lead",
        "3" => "company",
        "12" => "customer",
        other => other,
    }
}

/// The event of one entity under `entity[action]`, or `None` for a pair the robot does not
/// handle (counted as ignored by the caller). The returned `dedup_key` holds only the
/// version part; the caller completes it.
fn entity_event(
    entity: &str,
    action: &str,
    item: &Field<'_>,
) -> Result<Option<Event>, WebhookError> {
    let lead = |kind: EventKind, version: String| -> Result<Option<Event>, WebhookError> {
        Ok(Some(event(kind, item.req_id("id")?, item, version)))
    };
    match (entity, action) {
        ("leads", "add") => lead(
            EventKind::LeadCreated {
                status_id: owned(item.opt_id("status_id")?),
                pipeline_id: owned(item.opt_id("pipeline_id")?),
                responsible_user_id: owned(item.opt_id("responsible_user_id")?),
            },
            version(item),
        ),
        ("leads", "update") => lead(
            EventKind::LeadUpdated {
                status_id: owned(item.opt_id("status_id")?),
                old_status_id: owned(item.opt_id("old_status_id")?),
                pipeline_id: owned(item.opt_id("pipeline_id")?),
                responsible_user_id: owned(item.opt_id("responsible_user_id")?),
            },
            version(item),
        ),
        ("leads", "status") => {
            let status_id = item.req_id("status_id")?;
            lead(
                EventKind::LeadStatusChanged {
                    status_id: status_id.to_owned(),
                    old_status_id: owned(item.opt_id("old_status_id")?),
                    pipeline_id: owned(item.opt_id("pipeline_id")?),
                    old_pipeline_id: owned(item.opt_id("old_pipeline_id")?),
                },
                format!("{}-{status_id}", version(item)),
            )
        }
        ("leads", "responsible") => {
            let responsible = item.req_id("responsible_user_id")?;
            lead(
                EventKind::LeadResponsibleChanged {
                    responsible_user_id: responsible.to_owned(),
                    old_responsible_user_id: owned(item.opt_id("old_responsible_user_id")?),
                },
                format!("{}-{responsible}", version(item)),
            )
        }
        ("leads", "delete") => lead(EventKind::LeadDeleted, version(item)),
        ("leads", "restore") => lead(EventKind::LeadRestored, version(item)),
        ("contacts" | "companies", "add" | "update" | "delete" | "restore") => {
            // v2 webhooks send companies under `contacts[…]` with `type=company`.
            let is_company = entity == "companies" || item.opt("type") == Some("company");
            let kind = match (is_company, action) {
                (false, "add") => EventKind::ContactCreated,
                (false, "update" | "restore") => EventKind::ContactUpdated,
                (false, _) => EventKind::ContactDeleted,
                (true, "add") => EventKind::CompanyCreated,
                (true, "update" | "restore") => EventKind::CompanyUpdated,
                (true, _) => EventKind::CompanyDeleted,
            };
            lead(kind, version(item))
        }
        ("leads" | "contacts" | "companies", "note") => {
            // The note's fields sit under `[i][note][…]`; accept them flat too.
            let note = item.child("note").unwrap_or_else(|| item.clone());
            let note_id = note.req_id("id")?;
            let entity_type = match (entity, item.opt("type")) {
                ("leads", _) => "lead".to_owned(),
                ("companies", _) | (_, Some("company")) => "company".to_owned(),
                _ => note
                    .opt("element_type")
                    .map(element_type_name)
                    .unwrap_or("contact")
                    .to_owned(),
            };
            let element_id = note.req_id("element_id")?;
            let kind = EventKind::NoteAdded {
                note_id: note_id.to_owned(),
                entity_type,
                note_type: note.req("note_type")?.to_owned(),
            };
            Ok(Some(event(kind, element_id, &note, note_id.to_owned())))
        }
        ("task", "add" | "update" | "delete") => {
            let action = match action {
                "add" => TaskAction::Added,
                "update" => TaskAction::Updated,
                _ => TaskAction::Deleted,
            };
            let kind = EventKind::TaskChanged {
                action,
                element_type: item
                    .opt("element_type")
                    .map(|c| element_type_name(c).to_owned()),
                element_id: owned(item.opt_id("element_id")?),
                responsible_user_id: owned(item.opt_id("responsible_user_id")?),
                complete_till: owned(item.opt("complete_till")),
            };
            lead(kind, version(item))
        }
        ("unsorted", "add") => {
            let uid = item.req("uid")?;
            let lead_id = match item.opt_id("lead_id")? {
                Some(id) => Some(id.to_owned()),
                // The lead amoCRM made for the request also appears under `data[leads][0][id]`.
                None => item
                    .child("data")
                    .and_then(|d| d.child("leads"))
                    .and_then(|l| l.children().into_iter().next())
                    .map(|l| l.opt_id("id"))
                    .transpose()?
                    .flatten()
                    .map(str::to_owned),
            };
            let kind = EventKind::UnsortedCreated {
                category: owned(item.opt("category")),
                lead_id,
                pipeline_id: owned(item.opt_id("pipeline_id")?),
            };
            Ok(Some(event(kind, uid, item, uid.to_owned())))
        }
        _ => Ok(None),
    }
}

fn event(kind: EventKind, entity_id: &str, item: &Field<'_>, version: String) -> Event {
    Event {
        source: Source::Amocrm,
        account: String::new(),
        kind,
        entity_id: entity_id.to_owned(),
        crm_entity: None,
        occurred_at: occurred_at(item),
        // Leads and tasks name the user as `modified_user_id`; notes as `modified_by`
        // (`created_by` on a fresh one).
        modified_by: item
            .opt("modified_user_id")
            .or_else(|| item.opt("modified_by"))
            .or_else(|| item.opt("created_by"))
            .map(str::to_owned),
        dedup_key: version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "account[subdomain]=robotdemo&account[id]=29876543";

    fn parse_str(body: &str) -> Parsed {
        parse(body.as_bytes()).unwrap()
    }

    /// The catch-up brings a change no webhook brought with the very key the webhook would
    /// have had, so that a change seen through both doors is handled once.
    #[test]
    fn the_catch_up_keys_a_change_as_the_webhook_does() {
        use crate::domain::catchup::{Known, missed};
        use crate::domain::lead::Lead;
        let lead = |status: &str, responsible: &str, updated_at| Lead {
            id: "31000001".into(),
            status_id: status.into(),
            pipeline_id: "7000001".into(),
            responsible_user_id: Some(responsible.into()),
            updated_at,
            ..Lead::default()
        };
        let before = Known::of(&lead("61000001", "8100001", 1_763_800_000));
        let keys = |l: &Lead| -> Vec<String> {
            missed(Source::Amocrm, "robotdemo", None, l, Some(&before))
                .into_iter()
                .map(|e| e.dedup_key)
                .collect()
        };
        let status = parse_str(&format!(
            "leads[status][0][id]=31000001&leads[status][0][status_id]=142&leads[status][0][old_status_id]=61000001\
             &leads[status][0][pipeline_id]=7000001&leads[status][0][last_modified]=1763900000&{ACCOUNT}"
        ));
        assert_eq!(
            keys(&lead("142", "8100001", 1_763_900_000)),
            [status.events[0].dedup_key.clone()]
        );
        let moved = parse_str(&format!(
            "leads[responsible][0][id]=31000001&leads[responsible][0][responsible_user_id]=8100002\
             &leads[responsible][0][old_responsible_user_id]=8100001&leads[responsible][0][last_modified]=1763900000&{ACCOUNT}"
        ));
        assert_eq!(
            keys(&lead("61000001", "8100002", 1_763_900_000)),
            [moved.events[0].dedup_key.clone()]
        );
    }

    #[test]
    fn a_status_change_carries_its_stages_and_pipeline() {
        let p = parse_str(&format!(
            "leads[status][0][id]=31000001&leads[status][0][status_id]=142&leads[status][0][old_status_id]=61000001\
             &leads[status][0][pipeline_id]=7000001&leads[status][0][old_pipeline_id]=7000001\
             &leads[status][0][last_modified]=1763900000&leads[status][0][modified_user_id]=8100001&{ACCOUNT}"
        ));
        assert_eq!(p.events.len(), 1);
        let e = &p.events[0];
        assert_eq!(e.entity_id, "31000001");
        assert_eq!(e.occurred_at, Some(1_763_900_000));
        assert_eq!(e.modified_by.as_deref(), Some("8100001"));
        assert_eq!(
            e.dedup_key,
            "amocrm:robotdemo:lead_status_changed:31000001:1763900000-142"
        );
        assert_eq!(
            e.kind,
            EventKind::LeadStatusChanged {
                status_id: "142".into(),
                old_status_id: Some("61000001".into()),
                pipeline_id: Some("7000001".into()),
                old_pipeline_id: Some("7000001".into()),
            }
        );
        assert_eq!(p.caller.account.as_deref(), Some("robotdemo"));
        assert_eq!(p.caller.account_id.as_deref(), Some("29876543"));
    }

    #[test]
    fn every_entity_of_a_body_becomes_an_event_whatever_the_key_order() {
        let body = format!(
            "{ACCOUNT}&leads[add][1][id]=2&leads[add][1][last_modified]=5&leads[add][0][id]=1&leads[add][0][last_modified]=5\
             &contacts[update][0][id]=9&contacts[update][0][type]=company&contacts[update][0][last_modified]=6"
        );
        let p = parse_str(&body);
        let kinds: Vec<_> = p
            .events
            .iter()
            .map(|e| (e.kind.name(), e.entity_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("company_updated", "9"),
                ("lead_created", "1"),
                ("lead_created", "2")
            ]
        );
    }

    #[test]
    fn a_missing_id_names_its_key() {
        let err = parse(format!("leads[add][0][name]=x&{ACCOUNT}").as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "missing key `leads[add][0][id]`");
    }

    #[test]
    fn a_body_without_the_account_block_is_refused() {
        let err = parse(b"leads[add][0][id]=1").unwrap_err();
        assert_eq!(err.key(), Some("account[subdomain]"));
    }

    #[test]
    fn unknown_event_types_are_ignored_not_refused() {
        let p = parse_str(&format!("customers[add][0][id]=5&{ACCOUNT}"));
        assert!(p.events.is_empty());
        assert_eq!(p.ignored, vec!["customers[add]".to_owned()]);
    }

    #[test]
    fn a_deletion_without_a_time_is_keyed_by_its_fields() {
        let a = parse_str(&format!(
            "leads[delete][0][id]=7&leads[delete][0][status_id]=1&{ACCOUNT}"
        ));
        let b = parse_str(&format!(
            "{ACCOUNT}&leads[delete][0][status_id]=1&leads[delete][0][id]=7"
        ));
        assert_eq!(a.events[0].dedup_key, b.events[0].dedup_key);
        assert_eq!(a.events[0].kind, EventKind::LeadDeleted);
    }

    #[test]
    fn a_call_note_is_on_its_lead() {
        let p = parse_str(&format!(
            "leads[note][0][note][id]=501&leads[note][0][note][note_type]=10&leads[note][0][note][element_id]=31000001\
             &leads[note][0][note][element_type]=2&{ACCOUNT}"
        ));
        let e = &p.events[0];
        assert_eq!(e.entity_id, "31000001");
        assert_eq!(
            e.kind,
            EventKind::NoteAdded {
                note_id: "501".into(),
                entity_type: "lead".into(),
                note_type: "10".into()
            }
        );
    }

    #[test]
    fn a_non_numeric_id_is_refused() {
        let err = parse(format!("leads[add][0][id]=abc&{ACCOUNT}").as_bytes()).unwrap_err();
        assert_eq!(err.key(), Some("leads[add][0][id]"));
    }
}
