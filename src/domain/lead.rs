//! A lead as the robot sees it, whichever CRM holds it: an amoCRM lead or a Bitrix24 deal,
//! with its contacts and company, and custom fields under the robot's own names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The value of a custom field, in the robot's words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A number (a score, a turnover, a count).
    Number(f64),
    /// Text, or the label of a chosen list item.
    Text(String),
    /// Several labels or values (a multi-select, several phones).
    Many(Vec<String>),
}

impl FieldValue {
    /// The value as text (a number in its shortest form, several values joined by ", ").
    pub fn as_text(&self) -> String {
        match self {
            FieldValue::Number(n) => n.to_string(),
            FieldValue::Text(t) => t.clone(),
            FieldValue::Many(v) => v.join(", "),
        }
    }

    /// The value as a number, when it is one or is text that reads as one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FieldValue::Number(n) => Some(*n),
            FieldValue::Text(t) => t.trim().replace(' ', "").replace(',', ".").parse().ok(),
            FieldValue::Many(_) => None,
        }
    }
}

/// Custom fields by the robot's names (`category`, `brand`, `score`…), as mapped in the config.
pub type Fields = BTreeMap<String, FieldValue>;

/// A person at the client.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// The CRM's id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// The first name, where the CRM keeps it apart (amoCRM's `first_name`, Bitrix24's
    /// `NAME`): how a letter addresses the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Phones as the CRM holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// E-mail addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// The lead's main contact.
    #[serde(default)]
    pub is_main: bool,
    /// Mapped custom fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: Fields,
}

/// The client's company.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Company {
    /// The CRM's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Who owns it in the CRM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<String>,
    /// Mapped custom fields (INN, OKVED, turnover…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: Fields,
    /// When it was created, Unix seconds (0 when the CRM did not say).
    #[serde(default)]
    pub created_at: i64,
    /// When it last changed, Unix seconds (0 when the CRM did not say).
    #[serde(default)]
    pub updated_at: i64,
    /// The CRM user who changed it last, when the CRM says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// A lead (amoCRM) or deal (Bitrix24).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lead {
    /// The CRM's id.
    pub id: String,
    /// Its title.
    pub name: String,
    /// The budget in roubles, when filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// The stage.
    pub status_id: String,
    /// The pipeline (funnel) of the stage.
    pub pipeline_id: String,
    /// The responsible manager's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Mapped custom fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: Fields,
    /// Why it was lost, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_reason: Option<String>,
    /// Its contacts, the main one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// Its company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<Company>,
    /// Created, Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// Last changed, Unix seconds.
    #[serde(default)]
    pub updated_at: i64,
    /// Who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// What to change on a lead; `None` leaves a value as it is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LeadUpdate {
    /// A new responsible manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<String>,
    /// A new stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    /// The pipeline of the new stage, when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    /// A new budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// The loss reason (its id in the CRM), with a move to the lost stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_reason_id: Option<String>,
    /// Tags to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_tags: Vec<String>,
    /// Tags to take off (a priority tag that no longer holds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
    /// Mapped custom fields to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: Fields,
    /// The record's tags as the caller read them just before deciding the update: the
    /// adapter adds and takes off tags from these instead of reading the record again.
    /// `None`: the adapter reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_seen: Option<Vec<String>>,
}

impl LeadUpdate {
    /// Whether it changes nothing (then no request is sent).
    pub fn is_empty(&self) -> bool {
        LeadUpdate {
            tags_seen: None,
            ..self.clone()
        } == LeadUpdate::default()
    }

    /// Whether it adds or takes off tags: both CRMs replace a record's tags whole, so the
    /// current ones must be read first.
    pub fn changes_tags(&self) -> bool {
        !self.add_tags.is_empty() || !self.remove_tags.is_empty()
    }

    /// The tags a record with `current` tags has after this update: the removed ones go
    /// (ignoring case and spaces), the added ones come at the end, none twice.
    pub fn tags_after(&self, current: &[String]) -> Vec<String> {
        let key = |t: &str| t.trim().to_lowercase();
        let removed: Vec<String> = self.remove_tags.iter().map(|t| key(t)).collect();
        let mut tags: Vec<String> = current
            .iter()
            .filter(|t| !removed.contains(&key(t)))
            .cloned()
            .collect();
        for tag in &self.add_tags {
            if !tags.iter().any(|t| key(t) == key(tag)) {
                tags.push(tag.clone());
            }
        }
        tags
    }
}

impl Lead {
    /// The main contact, or the first.
    pub fn main_contact(&self) -> Option<&Contact> {
        self.contacts
            .iter()
            .find(|c| c.is_main)
            .or_else(|| self.contacts.first())
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;

    #[test]
    fn tags_after_an_update_drop_the_removed_and_add_the_new_once() {
        let update = LeadUpdate {
            add_tags: vec!["Приоритет 2".into(), "сайт".into()],
            remove_tags: vec!["приоритет 3".into()],
            ..LeadUpdate::default()
        };
        let current = [
            "Сайт".to_owned(),
            "Приоритет 3".to_owned(),
            "опт".to_owned(),
        ];
        assert_eq!(update.tags_after(&current), ["Сайт", "опт", "Приоритет 2"]);
        assert!(update.changes_tags());
        assert!(!LeadUpdate::default().changes_tags());
    }
}

/// How a closed lead ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Closed {
    /// Sold.
    Won,
    /// Lost, refused or junk.
    Lost,
}

/// How a lead ended, by its stage; `None` while it is open.
///
/// - amoCRM: every pipeline has the system stages "Closed – Won" (id 142) and "Closed – Lost"
///   (id 143), the same ids in all pipelines (developers.kommo.com/reference/
///   leads-pipelines-and-stages).
/// - Bitrix24 deals: the system stages `WON` (semantics `S`), `LOSE` and `APOLOGY` ("failure
///   reason analysis", also `F`); in another funnel they read `C<n>:WON`, `C<n>:LOSE`…
///   (b24restdocs `api-reference/crm/status/crm-status-list.md`, `crm/deals/crm-deal-get.md`
///   on `STAGE_ID` and `STAGE_SEMANTIC_ID`).
/// - Bitrix24 CRM leads: `CONVERTED` (success) and `JUNK` (failure) (b24restdocs
///   `tutorials/crm/how-to-get-lists/how-to-get-stages-with-semantics.md`).
///
/// Only these system ids are known here: a portal's own closing stages (`UC_…` with
/// semantics `S` or `F`) need the stage list to be told apart, and read as open.
pub fn closed(status_id: &str) -> Option<Closed> {
    let id = status_id.trim();
    // `C<n>:` is the funnel prefix of a deal stage outside the default funnel.
    let stage = match id.split_once(':') {
        Some((funnel, stage))
            if funnel.len() > 1
                && funnel.starts_with('C')
                && funnel[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            stage
        }
        _ => id,
    };
    match stage {
        "142" | "WON" | "CONVERTED" => Some(Closed::Won),
        "143" | "LOSE" | "APOLOGY" | "JUNK" => Some(Closed::Lost),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_from_text_the_way_a_manager_types_them() {
        assert_eq!(
            FieldValue::Text("150 000,50".into()).as_number(),
            Some(150000.5)
        );
        assert_eq!(FieldValue::Number(3.0).as_text(), "3");
        assert_eq!(
            FieldValue::Many(vec!["a".into(), "b".into()]).as_text(),
            "a, b"
        );
    }

    #[test]
    fn the_main_contact_is_found_or_the_first_is_taken() {
        let a = Contact {
            id: "1".into(),
            ..Contact::default()
        };
        let b = Contact {
            id: "2".into(),
            is_main: true,
            ..Contact::default()
        };
        let lead = Lead {
            contacts: vec![a.clone(), b],
            ..Lead::default()
        };
        assert_eq!(lead.main_contact().unwrap().id, "2");
        let lead = Lead {
            contacts: vec![a],
            ..Lead::default()
        };
        assert_eq!(lead.main_contact().unwrap().id, "1");
        assert!(LeadUpdate::default().is_empty());
    }

    #[test]
    fn the_closing_stages_of_both_crms_are_told_apart_from_open_ones() {
        for won in ["142", "WON", "C1:WON", "C12:WON", "CONVERTED", " WON "] {
            assert_eq!(closed(won), Some(Closed::Won), "{won}");
        }
        for lost in ["143", "LOSE", "APOLOGY", "C1:LOSE", "C7:APOLOGY", "JUNK"] {
            assert_eq!(closed(lost), Some(Closed::Lost), "{lost}");
        }
        for open in [
            "",
            "60456942",
            "1142",
            "NEW",
            "C1:NEW",
            "PREPARATION",
            "IN_PROCESS",
            "UC_3ZX1",
            "won",
            "X1:WON",
            "C:WON",
            "CA:WON",
            "WON:C1",
            "C1:C2:WON",
        ] {
            assert_eq!(closed(open), None, "{open}");
        }
    }
}
