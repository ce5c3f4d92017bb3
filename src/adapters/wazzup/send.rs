//! Sending WhatsApp messages through Wazzup, behind one small trait, so that the follow-up
//! chains can be tested against an emulator and never see HTTP.
//!
//! What a send can end in, from Wazzup's API v3 (`POST /v3/message`, see [`super::client`]):
//! accepted (Wazzup gives its message id), already sent (the same `crmMessageId` came within
//! Wazzup's guard window), or one of the errors of [`SendError`]. Acceptance is not delivery:
//! delivery, reading and late failures (`24_HOURS_EXCEEDED` for free text outside WhatsApp
//! Business's 24-hour window, a number without WhatsApp) come later as status webhooks, which
//! [`super::webhook`] parses.

use async_trait::async_trait;

use crate::adapters::store::StoreError;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Free text (up to 10,000 characters on WhatsApp). On a WhatsApp Business API channel
    /// it reaches the client only within 24 hours of the client's last message.
    Text(String),
    /// An approved WhatsApp Business template, the only way to write first on such a
    /// channel: its Wazzup id (`templateGuid` of `GET /v3/templates/whatsapp`) and the
    /// values of its variables in order.
    Template {
        /// The template's id in Wazzup.
        id: String,
        /// The values of `{{1}}`, `{{2}}`… in order.
        values: Vec<String>,
    },
}

/// One message to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The client's phone in any common writing (`+7 (916) 123-45-67`, `8 916 123 45 67`);
    /// see [`whatsapp_chat_id`].
    pub phone: String,
    /// The text or the template.
    pub content: Content,
    /// Our idempotency key, the same on every retry of one chain step (at most 100
    /// characters, assumed): Wazzup refuses a second message with it, and the robot reads
    /// that refusal as [`Sent::AlreadySent`].
    pub crm_message_id: String,
}

/// A send that went well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Wazzup took the message.
    Accepted {
        /// Wazzup's id of the message: its status webhooks carry it.
        message_id: String,
        /// The chat, as Wazzup writes it.
        chat_id: String,
    },
    /// Wazzup had already taken a message with this `crmMessageId` (a retry after a lost
    /// answer): nothing new was sent. Wazzup does not say its id again.
    AlreadySent,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The client cannot get it: the number is not on WhatsApp, is not a phone at all, or
    /// its chat is closed to the channel. Permanent: the step is marked failed and the
    /// manager gets a task; retrying would only fail again.
    #[error("the client cannot be written to ({code}): {description}")]
    Recipient {
        /// Wazzup's error code (`BAD_CONTACT`, `CHAT_NO_ACCESS`…), or `INVALID_PHONE` when
        /// the robot saw that the phone cannot be a WhatsApp number and sent nothing.
        code: String,
        /// What Wazzup said.
        description: String,
    },
    /// The message itself was refused (too long, judged spam, a template Meta restricted,
    /// a field Wazzup did not accept). Permanent: it would be refused again.
    #[error("Wazzup refused the message ({code}): {description}")]
    Rejected {
        /// Wazzup's error code.
        code: String,
        /// What Wazzup said.
        description: String,
    },
    /// The sending channel cannot send now: not found in the account, switched off, not
    /// paid, its phone offline. A person must act in Wazzup; until then jobs are retried
    /// later, and nothing is lost.
    #[error("the Wazzup channel cannot send ({code}): {description}")]
    Channel {
        /// Wazzup's error code (`CHANNEL_BLOCKED`, `CHANNEL_NO_MONEY`…).
        code: String,
        /// What Wazzup said.
        description: String,
    },
    /// The API key was refused (401, 403): a person must give the right one.
    #[error("Wazzup refused the API key: {0}")]
    Unauthorized(String),
    /// Wazzup could not be reached, or answered 5xx, or kept answering 429, after every
    /// retry: try again later.
    #[error("Wazzup is unavailable: {0}")]
    Unavailable(String),
    /// Wazzup answered something that does not read as its documented shape.
    #[error("Wazzup answered an unexpected shape: {0}")]
    Unexpected(String),
    /// The robot's own store (the shared rate limit) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SendError {
    /// Whether sending the same message again can never succeed: the chain step is failed
    /// for good (and a person told), rather than retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SendError::Recipient { .. } | SendError::Rejected { .. }
        )
    }
}

/// An approved WhatsApp Business template, as Wazzup lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// Its id in Wazzup (`templateGuid`), what [`Content::Template`] takes.
    pub id: String,
    /// How many variables (`{{1}}`, `{{2}}`…) its text has.
    pub variables: usize,
}

/// Sends WhatsApp messages.
#[async_trait]
pub trait WhatsApp: Send + Sync {
    /// Sends one message, retrying what can be retried (429, 5xx, the network) within
    /// Wazzup's guard against repeats, so that a retry never sends twice.
    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError>;

    /// The approved template called `name` (its title or its name in Wazzup, ignoring
    /// case), `None` when the account has none so called. The default knows none.
    async fn approved(&self, name: &str) -> Result<Option<Approved>, SendError> {
        let _ = name;
        Ok(None)
    }
}

/// How many variables a template's text has: the highest `{{n}}` in it.
pub fn variables_of(text: &str) -> usize {
    let mut most = 0;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        if let Ok(n) = rest[..end].trim().parse::<usize>() {
            most = most.max(n);
        }
        rest = &rest[end + 2..];
    }
    most
}

/// The chat id Wazzup wants for a WhatsApp number: digits only, with the country code. A
/// Russian number written with the trunk prefix (`8 916 …`, 11 digits) gets its country code
/// 7, since CRMs hold many of them so and WhatsApp knows numbers only internationally.
/// `None` for what cannot be a phone (E.164 allows 15 digits at most; fewer than 10 is no
/// number with a country code).
pub fn whatsapp_chat_id(phone: &str) -> Option<String> {
    if phone.chars().any(char::is_alphabetic) {
        return None;
    }
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix('8') {
        Some(rest) if digits.len() == 11 && !phone.trim_start().starts_with('+') => {
            format!("7{rest}")
        }
        _ => digits,
    };
    (10..=15).contains(&digits.len()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_digits_with_the_country_code() {
        assert_eq!(
            whatsapp_chat_id("+7 (916) 123-45-67").as_deref(),
            Some("79161234567")
        );
        assert_eq!(
            whatsapp_chat_id("8 916 123 45 67").as_deref(),
            Some("79161234567")
        );
        assert_eq!(
            whatsapp_chat_id("79161234567").as_deref(),
            Some("79161234567")
        );
        // An international number that happens to start with 8 keeps it.
        assert_eq!(
            whatsapp_chat_id("+86 138 0013 8000").as_deref(),
            Some("8613800138000")
        );
        for bad in [
            "",
            "123",
            "not a phone",
            "+7 916 ext 12",
            "1234567890123456",
        ] {
            assert_eq!(whatsapp_chat_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_templates_variables_are_counted_by_the_highest_number() {
        assert_eq!(variables_of("Здравствуйте, {{1}}! Заказ {{2}}, {{1}}."), 2);
        assert_eq!(variables_of("Без переменных"), 0);
        assert_eq!(variables_of("{{ 3 }} и {{x}} и {{"), 3);
    }

    #[test]
    fn only_the_client_and_the_message_are_permanent() {
        let e = |code: &str| SendError::Recipient {
            code: code.into(),
            description: String::new(),
        };
        assert!(e("BAD_CONTACT").is_permanent());
        assert!(
            SendError::Rejected {
                code: "MESSAGES_IS_SPAM".into(),
                description: String::new()
            }
            .is_permanent()
        );
        assert!(!SendError::Unavailable("429".into()).is_permanent());
        assert!(!SendError::Unauthorized("401".into()).is_permanent());
        assert!(
            !SendError::Channel {
                code: "CHANNEL_BLOCKED".into(),
                description: String::new()
            }
            .is_permanent()
        );
    }
}
