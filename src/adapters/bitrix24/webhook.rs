//! Bitrix24 outbound events: `event=ONCRMDEALADD&data[FIELDS][ID]=…&ts=…&auth[…]=…`, form
//! encoded. An event carries only the id; the worker reads the record itself.
//! Formats: see `fixtures/README.md`.

use crate::adapters::form::{Field, Node};
use crate::adapters::webhook::{Caller, Parsed, WebhookError};
use crate::domain::event::{Event, EventKind, Source, dedup_key, fingerprint};

/// The robot's event for a Bitrix24 event name, with the kind of CRM record it is about.
fn kind_of(name: &str) -> Option<(EventKind, &'static str)> {
    let lead_created = || EventKind::LeadCreated {
        status_id: None,
        pipeline_id: None,
        responsible_user_id: None,
    };
    let lead_updated = || EventKind::LeadUpdated {
        status_id: None,
        old_status_id: None,
        pipeline_id: None,
        responsible_user_id: None,
    };
    Some(match name {
        "ONCRMDEALADD" => (lead_created(), "deal"),
        "ONCRMDEALUPDATE" => (lead_updated(), "deal"),
        "ONCRMDEALDELETE" => (EventKind::LeadDeleted, "deal"),
        "ONCRMLEADADD" => (lead_created(), "lead"),
        "ONCRMLEADUPDATE" => (lead_updated(), "lead"),
        "ONCRMLEADDELETE" => (EventKind::LeadDeleted, "lead"),
        "ONCRMCONTACTADD" => (EventKind::ContactCreated, "contact"),
        "ONCRMCONTACTUPDATE" => (EventKind::ContactUpdated, "contact"),
        "ONCRMCONTACTDELETE" => (EventKind::ContactDeleted, "contact"),
        "ONCRMCOMPANYADD" => (EventKind::CompanyCreated, "company"),
        "ONCRMCOMPANYUPDATE" => (EventKind::CompanyUpdated, "company"),
        "ONCRMCOMPANYDELETE" => (EventKind::CompanyDeleted, "company"),
        "ONCRMACTIVITYADD" => (EventKind::ActivityAdded, "activity"),
        _ => return None,
    })
}

/// Parses one Bitrix24 event body.
pub fn parse(body: &[u8]) -> Result<Parsed, WebhookError> {
    let tree = Node::parse(body)?;
    let root = Field::root(&tree);
    let name = root.req("event")?.to_ascii_uppercase();
    let auth = root.child("auth").ok_or_else(|| missing("auth[domain]"))?;
    let domain = auth.req("domain")?.to_owned();
    let caller = Caller {
        account: Some(domain.clone()),
        account_id: auth.opt("member_id").map(str::to_owned),
        token: auth.opt("application_token").map(str::to_owned),
    };
    let Some((kind, crm_entity)) = kind_of(&name) else {
        return Ok(Parsed {
            ignored: vec![name],
            caller,
            ..Parsed::default()
        });
    };
    let fields = root
        .child("data")
        .and_then(|d| d.child("FIELDS"))
        .ok_or_else(|| missing("data[FIELDS][ID]"))?;
    let id = fields.req_id("ID")?;
    let occurred_at = root.opt("ts").and_then(|t| t.parse().ok());
    let version = match root.opt("ts") {
        Some(ts) => ts.to_owned(),
        None => fingerprint(&fields.node().canonical()),
    };
    let event = Event {
        source: Source::Bitrix24,
        account: domain.clone(),
        entity_id: id.to_owned(),
        crm_entity: Some(crm_entity.to_owned()),
        occurred_at,
        modified_by: None,
        dedup_key: dedup_key(
            Source::Bitrix24,
            &domain,
            &format!("{crm_entity}_{}", kind.name()),
            id,
            &version,
        ),
        kind,
    };
    Ok(Parsed {
        events: vec![event],
        caller,
        ..Parsed::default()
    })
}

fn missing(key: &str) -> WebhookError {
    WebhookError::Key(crate::adapters::form::KeyError {
        key: key.to_owned(),
        reason: "missing key",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str =
        "auth[domain]=robotdemo.bitrix24.ru&auth[member_id]=abc&auth[application_token]=tok";

    #[test]
    fn a_deal_add_becomes_a_lead_created_on_a_deal() {
        let p = parse(
            format!("event=ONCRMDEALADD&data[FIELDS][ID]=4711&ts=1763900000&{AUTH}").as_bytes(),
        )
        .unwrap();
        let e = &p.events[0];
        assert_eq!(e.kind.name(), "lead_created");
        assert_eq!(e.crm_entity.as_deref(), Some("deal"));
        assert_eq!(e.entity_id, "4711");
        assert_eq!(
            e.dedup_key,
            "bitrix24:robotdemo.bitrix24.ru:deal_lead_created:4711:1763900000"
        );
        assert_eq!(p.caller.token.as_deref(), Some("tok"));
    }

    #[test]
    fn the_event_name_is_required() {
        let err = parse(format!("data[FIELDS][ID]=1&{AUTH}").as_bytes()).unwrap_err();
        assert_eq!(err.key(), Some("event"));
    }

    #[test]
    fn the_id_is_required_for_a_known_event() {
        let err = parse(format!("event=ONCRMDEALUPDATE&ts=1&{AUTH}").as_bytes()).unwrap_err();
        assert_eq!(err.key(), Some("data[FIELDS][ID]"));
    }

    #[test]
    fn unknown_events_are_ignored() {
        let p =
            parse(format!("event=ONCRMPRODUCTADD&data[FIELDS][ID]=1&{AUTH}").as_bytes()).unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.ignored, vec!["ONCRMPRODUCTADD".to_owned()]);
    }
}
