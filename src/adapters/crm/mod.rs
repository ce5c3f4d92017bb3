//! The CRM, behind one trait: the rest of the robot never knows whether it talks to amoCRM
//! or Bitrix24, and never has to think about their rate limits, tokens or retries.

pub mod fields;
pub mod http;

use async_trait::async_trait;

use crate::adapters::store::StoreError;
use crate::domain::lead::{Company, Contact, Fields, Lead, LeadUpdate};
use crate::domain::manager::Manager;
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

/// What the robot needs from a CRM.
#[async_trait]
pub trait Crm: Send + Sync {
    /// A lead with its contacts and company; `None` when it does not exist (deleted).
    async fn lead(&self, id: &str) -> Result<Option<Lead>, CrmError>;
    /// Changes a lead. An empty update sends nothing.
    async fn update_lead(&self, id: &str, update: &LeadUpdate) -> Result<(), CrmError>;
    /// Leads matching the filter, every page to the end.
    async fn leads(&self, filter: &LeadFilter) -> Result<Vec<Lead>, CrmError>;
    /// Creates a task; returns its id.
    async fn create_task(&self, task: &NewTask) -> Result<String, CrmError>;
    /// Marks a task done, with a result text.
    async fn complete_task(&self, id: &str, result: &str) -> Result<(), CrmError>;
    /// Open tasks (not completed), every page.
    async fn open_tasks(&self) -> Result<Vec<Task>, CrmError>;
    /// Adds a note (a timeline comment) to a record.
    async fn add_note(&self, entity: &EntityRef, text: &str) -> Result<(), CrmError>;
    /// A company; `None` when it does not exist.
    async fn company(&self, id: &str) -> Result<Option<Company>, CrmError>;
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
