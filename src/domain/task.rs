//! Tasks for managers (call the client, send the offer) and notes on a lead's timeline.

use serde::{Deserialize, Serialize};

/// Which kind of CRM record a task or note is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A lead (Bitrix24: a deal).
    Lead,
    /// A contact.
    Contact,
    /// A company.
    Company,
}

/// A reference to one CRM record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityRef {
    /// Its kind.
    pub kind: EntityKind,
    /// Its id.
    pub id: String,
}

impl EntityRef {
    /// The lead `id`.
    pub fn lead(id: impl Into<String>) -> EntityRef {
        EntityRef {
            kind: EntityKind::Lead,
            id: id.into(),
        }
    }
}

/// What a task asks the manager to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Call the client.
    Call,
    /// Meet the client.
    Meeting,
    /// Write to the client.
    Letter,
    /// Anything else.
    Other,
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// What it asks for.
    pub kind: TaskKind,
    /// The text the manager reads (the checklist).
    pub text: String,
    /// The deadline, Unix seconds.
    pub deadline: i64,
    /// Who must do it.
    pub responsible_user_id: String,
    /// The record it is about.
    pub entity: EntityRef,
}

/// A task as the CRM holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The CRM's id.
    pub id: String,
    /// What it asks for.
    pub kind: TaskKind,
    /// Its text.
    pub text: String,
    /// The deadline, Unix seconds.
    pub deadline: i64,
    /// Who must do it.
    pub responsible_user_id: String,
    /// The record it is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityRef>,
    /// Whether it is done.
    pub completed: bool,
    /// When it was created, Unix seconds (0 when the CRM did not say).
    #[serde(default)]
    pub created_at: i64,
    /// When it last changed (completed, moved), Unix seconds (0 when the CRM did not say).
    #[serde(default)]
    pub updated_at: i64,
    /// The CRM user who changed it last, when the CRM says: who completed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// A named thing of the account: a stage, a loss reason, a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// The CRM's id.
    pub id: String,
    /// The name as the CRM shows it ("Квалификация", "Нет контакта").
    pub name: String,
}

/// A stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The stage's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its pipeline.
    pub pipeline: Named,
}
