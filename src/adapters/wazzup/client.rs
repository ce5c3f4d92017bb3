//! Wazzup's API v3 behind the [`WhatsApp`] trait: `POST {base}/v3/message` with the account's
//! API key as a bearer token.
//!
//! Sources (Wazzup's own documentation):
//! - Sending: https://wazzup24.com/help/api-en/sending-messages/ and
//!   https://wazzup24.ru/help/api-ru/otpravka-soobshhenij/ — the body (`channelId`,
//!   `chatType`, `chatId` of digits only for WhatsApp, `text` or `contentUri`, `crmMessageId`,
//!   `clearUnanswered`, `templateId` and `templateValues[]`), the answer 201
//!   `{messageId, chatId}`, the error body `{status, requestId, error, description, data}`,
//!   `INVALID_MESSAGE_DATA` with `data.fields`, `WRONG_TRANSPORT`, and
//!   `REPEATED_CRM_MESSAGE_ID` for a `crmMessageId` used within the last 60 seconds (the
//!   older text of the page spells it `repeatedCrmMessageId`), and the table of error codes
//!   (`BAD_CONTACT`: the number may not be on WhatsApp; `CHANNEL_*`; `MESSAGES_IS_SPAM`…).
//! - Limits and errors of every route: https://wazzup24.com/help/api-en/common-errors/ — at
//!   most 500 requests every 5 seconds, then 429; 401 for a missing or wrong key.
//! - Templates: https://wazzup24.in/help/api-en/whatsapp-business-api-templates —
//!   `GET /v3/templates/whatsapp` lists them with their `templateGuid`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::send::{
    Approved, Content, Outgoing, SendError, Sent, WhatsApp, variables_of, whatsapp_chat_id,
};
use crate::adapters::crm::http::{Limiter, Retries, retry_after};
use crate::adapters::store::Store;
use crate::domain::rate::Rate;

/// Wazzup's address.
pub const DEFAULT_BASE_URL: &str = "https://api.wazzup24.com";

/// Wazzup allows 500 requests every 5 seconds, counted in fixed windows. At 90 a second with
/// 10 at once the robot makes at most 460 in any 5 seconds, whatever the windows' edges.
pub const RATE: Rate = Rate {
    per_second: 90.0,
    burst: 10,
};

/// Codes that mean the client cannot be written to.
const RECIPIENT: &[&str] = &[
    "BAD_CONTACT",
    "CHAT_NO_ACCESS",
    "MESSAGES_ABNORMAL_SEND",
    "MESSAGES_INVALID_CONTACT_TYPE",
];

/// Codes that mean the sending channel cannot send, whoever the client.
const CHANNEL: &[&str] = &[
    "CHANNEL_NOT_FOUND",
    "CHANNEL_BLOCKED",
    "CHANNEL_WAPI_REJECTED",
    "CHANNEL_NO_MONEY",
    "CHANNEL_LIMIT_EXCEEDED",
    "BALANCE_IS_EMPTY",
    "MESSAGE_CHANNEL_UNAVAILABLE",
    // The configured channel is not a WhatsApp one.
    "WRONG_TRANSPORT",
];

/// Codes of Wazzup's own failures, which a retry may get past.
const SERVER: &[&str] = &[
    "MESSAGES_CAN_NOT_ADD",
    "UNKNOWN_ERROR",
    "UNKNOWN_ERROR_WITH_TRACE_ID",
];

/// The error body of every route.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<String>,
    description: Option<String>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    message_id: String,
    #[serde(default)]
    chat_id: Option<String>,
}

/// What one answer means.
enum Outcome {
    Done(Result<Sent, SendError>),
    /// Worth another attempt after the wait (the server's own when it gave one).
    Retry {
        why: String,
        wait: Option<Duration>,
    },
}

/// `REPEATED_CRM_MESSAGE_ID` and `repeatedCrmMessageId` alike.
fn is_repeat(code: &str) -> bool {
    code.replace('_', "")
        .eq_ignore_ascii_case("repeatedcrmmessageid")
}

/// Reads one answer of `POST /v3/message`.
fn outcome(status: StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Done(
            serde_json::from_str::<Accepted>(text)
                .map(|a| Sent::Accepted {
                    message_id: a.message_id,
                    chat_id: a.chat_id.unwrap_or_default(),
                })
                .map_err(|e| SendError::Unexpected(format!("{status}: {e}: {}", short(text)))),
        );
    }
    // The body is "either empty or JSON" (common errors).
    let body: ErrorBody = serde_json::from_str(text).unwrap_or_default();
    let code = body.error.clone().unwrap_or_default();
    let description = body
        .description
        .clone()
        .unwrap_or_else(|| short(text).to_owned());
    let said = if code.is_empty() {
        format!("{status} {description}")
    } else {
        format!("{status} {code}: {description}")
    };
    match status.as_u16() {
        401 | 403 => Outcome::Done(Err(SendError::Unauthorized(said))),
        429 => Outcome::Retry {
            why: said,
            wait: retry_after(headers),
        },
        500..=599 => Outcome::Retry {
            why: said,
            wait: None,
        },
        _ if is_repeat(&code) => Outcome::Done(Ok(Sent::AlreadySent)),
        _ if SERVER.contains(&code.as_str()) => Outcome::Retry {
            why: said,
            wait: None,
        },
        _ if RECIPIENT.contains(&code.as_str()) || bad_field(&body, "chatId") => {
            Outcome::Done(Err(SendError::Recipient { code, description }))
        }
        _ if CHANNEL.contains(&code.as_str()) || bad_field(&body, "channelId") => {
            Outcome::Done(Err(SendError::Channel { code, description }))
        }
        _ => Outcome::Done(Err(SendError::Rejected {
            code: if code.is_empty() {
                status.as_u16().to_string()
            } else {
                code
            },
            description,
        })),
    }
}

/// Whether an `INVALID_MESSAGE_DATA` answer names `field` in `data.fields`.
fn bad_field(body: &ErrorBody, field: &str) -> bool {
    body.data
        .as_ref()
        .and_then(|d| d.get("fields"))
        .and_then(Value::as_array)
        .is_some_and(|fields| fields.iter().any(|f| f.as_str() == Some(field)))
}

fn short(text: &str) -> &str {
    match text.char_indices().nth(300) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// A Wazzup account's sending side, through one WhatsApp channel.
#[derive(Debug)]
pub struct WazzupClient {
    http: reqwest::Client,
    base: String,
    channel_id: String,
    // `SecretString` prints as `[REDACTED]`, so the derived `Debug` shows no key.
    key: SecretString,
    limiter: Limiter,
    retries: Retries,
}

impl WazzupClient {
    /// A client of the account whose API key is `key`, sending through the channel
    /// `channel_id`, at `base` ([`DEFAULT_BASE_URL`] but for tests). The rate limit is kept
    /// in `store`, shared with every process on it.
    pub fn new(base: &str, channel_id: &str, key: SecretString, store: Store) -> WazzupClient {
        let base = base.trim().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sales-robot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS");
        let limiter = Limiter::new(store, format!("wazzup:{base}"), RATE);
        WazzupClient {
            http,
            base,
            channel_id: channel_id.trim().to_owned(),
            key,
            limiter,
            retries: Retries::default(),
        }
    }

    /// Retries with other waits (tests make them short). The default ones add up to about
    /// 15 seconds, well within the 60 seconds in which Wazzup recognises a repeated
    /// `crmMessageId`: a retry after a lost answer is then told "already sent".
    pub fn with_retries(mut self, retries: Retries) -> WazzupClient {
        self.retries = retries;
        self
    }

    /// Another rate limit than Wazzup's default.
    pub fn with_rate(mut self, rate: Rate) -> WazzupClient {
        self.limiter = Limiter::new(
            self.limiter.store().clone(),
            self.limiter.bucket().to_owned(),
            rate,
        );
        self
    }

    /// The channel messages go from.
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// The body of `POST /v3/message`.
    fn body(&self, chat_id: &str, message: &Outgoing) -> Value {
        let mut body = json!({
            "channelId": self.channel_id,
            "chatType": "whatsapp",
            "chatId": chat_id,
            "crmMessageId": message.crm_message_id,
            // A robot's message is no manager's answer: the client's unanswered message,
            // if any, stays marked for the manager.
            "clearUnanswered": false,
        });
        match &message.content {
            Content::Text(text) => body["text"] = json!(text),
            Content::Template { id, values } => {
                body["templateId"] = json!(id);
                body["templateValues"] = json!(values);
            }
        }
        body
    }
}

#[async_trait]
impl WhatsApp for WazzupClient {
    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Some(chat_id) = whatsapp_chat_id(&message.phone) else {
            return Err(SendError::Recipient {
                code: "INVALID_PHONE".into(),
                description: format!("`{}` is not a WhatsApp number", message.phone),
            });
        };
        let body = self.body(&chat_id, message);
        let url = format!("{}/v3/message", self.base);
        let mut last = String::new();
        for attempt in 1..=self.retries.attempts {
            self.limiter.turn().await?;
            let sent = self
                .http
                .post(&url)
                .bearer_auth(self.key.expose_secret())
                .json(&body)
                .send()
                .await;
            let wait = match sent {
                Err(e) => {
                    // The request may have reached Wazzup: the retry carries the same
                    // crmMessageId, so it cannot send twice.
                    last = format!("POST /v3/message: {e}");
                    self.retries.backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    match outcome(status, &headers, &text) {
                        Outcome::Done(done) => return done,
                        Outcome::Retry { why, wait } => {
                            last = format!("POST /v3/message: {why}");
                            wait.unwrap_or_else(|| self.retries.backoff(attempt))
                        }
                    }
                }
            };
            if attempt < self.retries.attempts {
                tracing::warn!(error = %last, retry_in = ?wait, "Wazzup send failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(SendError::Unavailable(last))
    }

    async fn approved(&self, name: &str) -> Result<Option<Approved>, SendError> {
        let url = format!("{}/v3/templates/whatsapp", self.base);
        self.limiter.turn().await?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(self.key.expose_secret())
            .send()
            .await
            .map_err(|e| SendError::Unavailable(format!("GET /v3/templates/whatsapp: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => {}
            401 | 403 => return Err(SendError::Unauthorized(format!("{status}"))),
            _ => {
                return Err(SendError::Unavailable(format!(
                    "GET /v3/templates/whatsapp: {status} {}",
                    short(&text)
                )));
            }
        }
        let list: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| SendError::Unexpected(format!("the templates: {e}: {}", short(&text))))?;
        let wanted = name.trim().to_lowercase();
        let named = |t: &Value, key: &str| {
            t.get(key)
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim().to_lowercase() == wanted)
        };
        Ok(list
            .iter()
            .find(|t| named(t, "title") || named(t, "name"))
            .and_then(|t| {
                let id = t.get("templateGuid")?.as_str()?.to_owned();
                let body = t
                    .get("components")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n");
                Some(Approved {
                    id,
                    variables: variables_of(&body),
                })
            }))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderMap;

    use super::*;

    fn read(status: u16, body: &str) -> Outcome {
        outcome(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body,
        )
    }

    fn error(status: u16, body: &str) -> SendError {
        match read(status, body) {
            Outcome::Done(Err(e)) => e,
            Outcome::Done(Ok(sent)) => panic!("{sent:?}"),
            Outcome::Retry { why, .. } => panic!("retry: {why}"),
        }
    }

    #[test]
    fn both_spellings_of_a_repeat_are_already_sent() {
        for code in ["REPEATED_CRM_MESSAGE_ID", "repeatedCrmMessageId"] {
            let body = format!(r#"{{"status":400,"error":"{code}","description":"x"}}"#);
            assert!(matches!(
                read(400, &body),
                Outcome::Done(Ok(Sent::AlreadySent))
            ));
        }
    }

    #[test]
    fn codes_are_sorted_by_whose_fault_it_is() {
        let body = |code: &str| format!(r#"{{"status":400,"error":"{code}","description":"d"}}"#);
        assert!(matches!(
            error(400, &body("BAD_CONTACT")),
            SendError::Recipient { .. }
        ));
        assert!(matches!(
            error(400, &body("CHANNEL_NO_MONEY")),
            SendError::Channel { .. }
        ));
        assert!(matches!(
            error(400, &body("MESSAGES_IS_SPAM")),
            SendError::Rejected { .. }
        ));
        let chat = r#"{"status":400,"error":"INVALID_MESSAGE_DATA","description":"d","data":{"fields":["chatId"]}}"#;
        assert!(matches!(error(400, chat), SendError::Recipient { .. }));
        let text = r#"{"status":400,"error":"INVALID_MESSAGE_DATA","description":"d","data":{"fields":["text"]}}"#;
        assert!(matches!(error(400, text), SendError::Rejected { .. }));
        assert!(matches!(error(401, ""), SendError::Unauthorized(_)));
        assert!(matches!(error(403, ""), SendError::Unauthorized(_)));
        assert!(matches!(error(404, "<html>"), SendError::Rejected { .. }));
    }

    #[test]
    fn limits_and_server_failures_are_retried() {
        for (status, body) in [
            (429, ""),
            (500, ""),
            (503, "<html>"),
            (400, r#"{"error":"MESSAGES_CAN_NOT_ADD"}"#),
        ] {
            assert!(
                matches!(read(status, body), Outcome::Retry { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn an_acceptance_gives_the_message_id() {
        match read(201, r#"{"messageId":"m-1","chatId":"79161234567"}"#) {
            Outcome::Done(Ok(Sent::Accepted {
                message_id,
                chat_id,
            })) => {
                assert_eq!(message_id, "m-1");
                assert_eq!(chat_id, "79161234567");
            }
            _ => panic!("not accepted"),
        }
        assert!(matches!(
            read(201, "{}"),
            Outcome::Done(Err(SendError::Unexpected(_)))
        ));
    }
}
