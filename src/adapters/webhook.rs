//! What every webhook parser returns, and how a body can be wrong.

use crate::domain::event::Event;

use super::form::{FormError, KeyError};

/// The account a webhook says it comes from, for intake to check against the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// amoCRM subdomain, Bitrix24 domain, Wazzup channel.
    pub account: Option<String>,
    /// amoCRM account id.
    pub account_id: Option<String>,
    /// Bitrix24 `auth[application_token]`.
    pub token: Option<String>,
}

/// A parsed webhook body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The events it carries, in body order.
    pub events: Vec<Event>,
    /// Names of event types the robot does not handle (accepted, counted, not enqueued).
    pub ignored: Vec<String>,
    /// Who says they sent it.
    pub caller: Caller,
    /// A health check of the sender (Wazzup's `{"test": true}`): answer 200, enqueue nothing.
    pub is_check: bool,
}

/// Why a webhook body cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Not a form body at all.
    #[error("the body is not a form: {0}")]
    Form(#[from] FormError),
    /// A key is missing or malformed.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// Not valid JSON of the expected shape.
    #[error("the body is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
}

impl WebhookError {
    /// The bracketed key or JSON path the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            WebhookError::Key(k) => Some(&k.key),
            _ => None,
        }
    }
}
