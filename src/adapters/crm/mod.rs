//! The CRM, behind one trait: the rest of the robot never knows whether it talks to amoCRM
//! or Bitrix24, and never has to think about their rate limits, tokens or retries.

pub mod fields;
pub mod http;
pub mod tokens;

use std::collections::HashMap;

use async_trait::async_trait;

use crate::adapters::store::StoreError;
use crate::domain::lead::{Company, Contact, Fields, Lead, LeadUpdate};
use crate::domain::manager::Manager;
use crate::domain::product::Product;
use crate::domain::task::{EntityRef, Named, NewTask, Stage, Task};

/// Why a CRM call failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The CRM could not be reached, or answered 5xx, or kept answering 429, after every
    /// retry: try again later (the job is retried).
    #[error("the CRM is unavailable: {0}")]
    Unavailable(String),
    /// The credentials were refused and could not be renewed: a person must act (re-authorise
    /// the integration). Jobs are retried and dead-lettered meanwhile; nothing is lost.
    #[error("the CRM refused the credentials: {0}")]
    Unauthorized(String),
    /// The CRM refused the request itself (a validation error); the message is the CRM's.
    #[error("the CRM refused the request: {0}")]
    Rejected(String),
    /// The CRM answered something that does not read as its documented shape.
    #[error("the CRM answered an unexpected shape: {0}")]
    Unexpected(String),
    /// The robot's own store failed (tokens, rate limit).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which leads to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadFilter {
    /// Created at or after, Unix seconds.
    pub created_from: Option<i64>,
    /// Created before, Unix seconds.
    pub created_to: Option<i64>,
    /// Changed at or after, Unix seconds (the catch-up reads by this).
    pub updated_from: Option<i64>,
    /// In this stage.
    pub status_id: Option<String>,
    /// In this pipeline.
    pub pipeline_id: Option<String>,
    /// Of this manager.
    pub responsible_user_id: Option<String>,
}

/// Whose leads to read: a company, or a person by one of their contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// A company, by its id in the CRM.
    Company(String),
    /// A contact (a person), by its id in the CRM.
    Contact(String),
}

impl Client {
    /// Whose lead it is: its company's, else its main contact's; `None` for a lead with
    /// neither.
    pub fn of(lead: &Lead) -> Option<Client> {
        match (&lead.company, lead.contacts.first()) {
            (Some(company), _) => Some(Client::Company(company.id.clone())),
            (None, Some(contact)) => Some(Client::Contact(contact.id.clone())),
            (None, None) => None,
        }
    }

    /// The CRM's id of the company or contact.
    pub fn id(&self) -> &str {
        match self {
            Client::Company(id) | Client::Contact(id) => id,
        }
    }

    /// The id as both CRMs write theirs, a positive integer; anything else is refused before
    /// a request is sent (Bitrix24 would read "0" as "no company" and match every lead
    /// without one, and an id goes into amoCRM's URL path).
    pub fn checked_id(&self) -> Result<&str, CrmError> {
        let id = self.id().trim();
        if id.bytes().all(|b| b.is_ascii_digit()) && id.bytes().any(|b| b != b'0') {
            Ok(id)
        } else {
            Err(CrmError::Rejected(format!("{self:?}: not a CRM id")))
        }
    }
}

/// The non-empty updates of `updates`, one per lead, in the order each lead first comes:
/// later values win, tags and fields add up. A batch then never carries a lead twice, so no
/// change of it depends on how the CRM orders the elements of one request, and a lead whose
/// tags grow twice is read once.
pub fn merged(updates: &[(String, LeadUpdate)]) -> Vec<(String, LeadUpdate)> {
    let mut out: Vec<(String, LeadUpdate)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (id, update) in updates.iter().filter(|(_, u)| !u.is_empty()) {
        let Some(&i) = at.get(id.as_str()) else {
            at.insert(id, out.len());
            out.push((id.clone(), update.clone()));
            continue;
        };
        let into = &mut out[i].1;
        let later = update.clone();
        into.responsible_user_id = later
            .responsible_user_id
            .or(into.responsible_user_id.take());
        into.status_id = later.status_id.or(into.status_id.take());
        into.pipeline_id = later.pipeline_id.or(into.pipeline_id.take());
        into.budget = later.budget.or(into.budget);
        into.loss_reason_id = later.loss_reason_id.or(into.loss_reason_id.take());
        // A later add undoes an earlier removal, and a later removal an earlier add.
        for tag in later.add_tags {
            into.remove_tags.retain(|t| t != &tag);
            if !into.add_tags.contains(&tag) {
                into.add_tags.push(tag);
            }
        }
        for tag in later.remove_tags {
            into.add_tags.retain(|t| t != &tag);
            if !into.remove_tags.contains(&tag) {
                into.remove_tags.push(tag);
            }
        }
        into.fields.extend(later.fields);
        // The earliest read is the one the first change was decided on.
        into.tags_seen = into.tags_seen.take().or(later.tags_seen);
    }
    out
}

/// What the robot needs from a CRM.
#[async_trait]
pub trait Crm: Send + Sync {
    /// A lead with its contacts and company; `None` when it does not exist (deleted).
    async fn lead(&self, id: &str) -> Result<Option<Lead>, CrmError>;
    /// Changes a lead. An empty update sends nothing.
    async fn update_lead(&self, id: &str, update: &LeadUpdate) -> Result<(), CrmError>;
    /// Changes many leads, each `(id, update)` as [`Crm::update_lead`] would: a burst of
    /// changes (a re-scoring, a manager's leads handed over) costs fewer requests, since the
    /// CRM takes many in one (amoCRM 250 a request, Bitrix24 50 commands a `batch`). Empty
    /// updates are skipped, and an all-empty slice sends nothing; several updates of one lead
    /// are merged in order (see [`merged`]). A refusal does not stop the other requests
    /// (amoCRM refuses a request whole, Bitrix24 one command): the error names the refused
    /// leads afterwards.
    async fn update_leads(&self, updates: &[(String, LeadUpdate)]) -> Result<(), CrmError>;
    /// Leads matching the filter, every page to the end.
    async fn leads(&self, filter: &LeadFilter) -> Result<Vec<Lead>, CrmError>;
    /// Every lead of the client (all pipelines, open and closed), every page: the client's
    /// history. Each lead has its id, name, stage, pipeline, budget, manager and dates;
    /// contacts, company and custom fields are not read, to keep it to the fewest requests.
    /// A client that does not exist has no leads.
    async fn client_leads(&self, client: &Client) -> Result<Vec<Lead>, CrmError>;
    /// The products of a lead's request (amoCRM: the catalog elements linked to it;
    /// Bitrix24: its product rows), in the CRM's order; none when it has none.
    async fn lead_products(&self, id: &str) -> Result<Vec<Product>, CrmError>;
    /// Creates a task; returns its id.
    async fn create_task(&self, task: &NewTask) -> Result<String, CrmError>;
    /// Marks a task done, with a result text.
    async fn complete_task(&self, id: &str, result: &str) -> Result<(), CrmError>;
    /// Open tasks (not completed), every page.
    async fn open_tasks(&self) -> Result<Vec<Task>, CrmError>;
    /// Tasks (open and done) created or changed at or after `from` (Unix seconds), every
    /// page: what the catch-up reads for the task webhooks that did not come.
    async fn tasks_changed(&self, from: i64) -> Result<Vec<Task>, CrmError>;
    /// Adds a note (a timeline comment) to a record.
    async fn add_note(&self, entity: &EntityRef, text: &str) -> Result<(), CrmError>;
    /// The texts of a record's notes (timeline comments), every page: how the robot finds
    /// out, after its worker died in the middle of adding one, whether it got there.
    async fn notes(&self, entity: &EntityRef) -> Result<Vec<String>, CrmError>;
    /// A company; `None` when it does not exist.
    async fn company(&self, id: &str) -> Result<Option<Company>, CrmError>;
    /// Companies created or changed at or after `from` (Unix seconds), every page: what
    /// the catch-up reads for the company webhooks that did not come.
    async fn companies_changed(&self, from: i64) -> Result<Vec<Company>, CrmError>;
    /// Sets mapped fields of a company.
    async fn update_company(&self, id: &str, fields: &Fields) -> Result<(), CrmError>;
    /// A contact; `None` when it does not exist.
    async fn contact(&self, id: &str) -> Result<Option<Contact>, CrmError>;
    /// Sets mapped fields of a contact.
    async fn update_contact(&self, id: &str, fields: &Fields) -> Result<(), CrmError>;
    /// The account's users.
    async fn managers(&self) -> Result<Vec<Manager>, CrmError>;
    /// The stages of every pipeline.
    async fn stages(&self) -> Result<Vec<Stage>, CrmError>;
    /// The loss (refusal) reasons.
    async fn loss_reasons(&self) -> Result<Vec<Named>, CrmError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::FieldValue;

    #[test]
    fn a_client_id_is_a_positive_integer() {
        assert_eq!(Client::Company(" 11 ".into()).checked_id().unwrap(), "11");
        assert_eq!(Client::Contact("203".into()).checked_id().unwrap(), "203");
        for bad in ["", "0", "00", "-1", "1/../2", "12a"] {
            assert!(
                matches!(
                    Client::Company(bad.into()).checked_id(),
                    Err(CrmError::Rejected(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn updates_of_one_lead_merge_in_order_and_empty_ones_go() {
        let update = |budget: Option<f64>, tag: &str, field: (&str, f64)| LeadUpdate {
            budget,
            add_tags: vec![tag.to_owned()],
            fields: [(field.0.to_owned(), FieldValue::Number(field.1))].into(),
            ..LeadUpdate::default()
        };
        let updates = vec![
            ("1".to_owned(), update(Some(10.0), "a", ("score", 1.0))),
            ("2".to_owned(), LeadUpdate::default()),
            ("3".to_owned(), update(None, "c", ("score", 3.0))),
            ("1".to_owned(), update(None, "b", ("brand", 2.0))),
            ("1".to_owned(), update(Some(30.0), "a", ("score", 4.0))),
        ];
        let merged = merged(&updates);
        let ids: Vec<&str> = merged.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["1", "3"]);
        let one = &merged[0].1;
        assert_eq!(one.budget, Some(30.0));
        assert_eq!(one.add_tags, ["a", "b"]);
        assert_eq!(one.fields.get("score"), Some(&FieldValue::Number(4.0)));
        assert_eq!(one.fields.get("brand"), Some(&FieldValue::Number(2.0)));
    }
}
