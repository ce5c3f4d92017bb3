//! A manager: a CRM user who takes leads.

use serde::{Deserialize, Serialize};

/// A CRM user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    /// The CRM's user id.
    pub id: String,
    /// The name as the CRM shows it ("Елена Прекрасная").
    pub name: String,
    /// E-mail, when the CRM gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the user can work (not fired, not blocked).
    pub active: bool,
}
