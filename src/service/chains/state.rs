//! The engine's keys in the store, beside the enrolments and step records the store keeps
//! with methods of their own:
//! - `chains:facts:{lead}` (a value): the lead's facts as last seen, to tell what changed;
//! - `chains:check:{lead}` (a value): the moment of the lead's last wake-up put on the
//!   queue (Unix seconds), so that seeing the lead again queues none;
//! - `chains:replied:{phone}` (a value): when the client last wrote in WhatsApp, for the
//!   24 hours;
//! - `chains:closed:{phone}` (a value): when Wazzup last said the session was closed (a
//!   `24_HOURS_EXCEEDED` status);
//! - `chains:wazzup:{messageId}` (a value kept a week): the step that sent a WhatsApp
//!   message, so that its delivery status can be read back;
//! - `chains:wazzup:early:{messageId}` (a value kept a week): an error status that came
//!   before the robot had recorded the send it is about;
//! - `chains:phone:{phone}` (a set): the leads of a phone, to stop their chains on a reply;
//! - `chains:messages:{phone}` (a capped list): the last WhatsApp messages with the client,
//!   theirs and the robot's, for the templates;
//! - `chains:sent:{channel}:{minute}` and `chains:client:{client}:{day}` (counters): the
//!   throttles.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::adapters::store::{Store, StoreError};
use crate::domain::chains::Channel;
use crate::domain::chains::session::last_open_message;
use crate::domain::condition::Facts;

/// The facts of `lead` as last seen.
pub async fn facts(store: &Store, lead: &str) -> Result<Option<Facts>, StoreError> {
    Ok(match store.value(&format!("chains:facts:{lead}")).await? {
        Some(v) => Some(serde_json::from_str(&v)?),
        None => None,
    })
}

/// Keeps the facts of `lead` as seen now.
pub async fn save_facts(store: &Store, lead: &str, facts: &Facts) -> Result<(), StoreError> {
    store
        .set_value(
            &format!("chains:facts:{lead}"),
            &serde_json::to_string(facts)?,
        )
        .await
}

fn check_key(lead: &str) -> String {
    format!("chains:check:{lead}")
}

/// The moment of the last wake-up queued for `lead`.
pub async fn planned_check(store: &Store, lead: &str) -> Result<Option<i64>, StoreError> {
    Ok(store
        .value(&check_key(lead))
        .await?
        .and_then(|v| v.parse().ok()))
}

/// Keeps the moment of the wake-up just queued for `lead`.
pub async fn save_planned_check(
    store: &Store,
    lead: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    store
        .set_value(&check_key(lead), &at.timestamp().to_string())
        .await
}

fn replied_key(phone: &str) -> String {
    format!("chains:replied:{phone}")
}

/// When the client of `phone` last wrote.
pub async fn last_reply(store: &Store, phone: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(store
        .value(&replied_key(phone))
        .await?
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// The latest message of any of `phones`.
pub async fn last_reply_of(
    store: &Store,
    phones: &[String],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut latest = None;
    for phone in phones {
        latest = latest.max(last_reply(store, phone).await?);
    }
    Ok(latest)
}

/// Records that the client of `phone` wrote at `at`, unless a later message is known (a
/// webhook delivered late does not move the time back).
pub async fn record_reply(store: &Store, phone: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    if last_reply(store, phone).await?.is_some_and(|t| t >= at) {
        return Ok(());
    }
    store.set_value(&replied_key(phone), &at.to_rfc3339()).await
}

fn closed_key(phone: &str) -> String {
    format!("chains:closed:{phone}")
}

fn time_value(v: Option<String>) -> Option<DateTime<Utc>> {
    v.and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// When Wazzup last said the session with any of `phones` was closed.
pub async fn closed_of(
    store: &Store,
    phones: &[String],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut latest = None;
    for phone in phones {
        latest = latest.max(time_value(store.value(&closed_key(phone)).await?));
    }
    Ok(latest)
}

/// When the client of any of `phones` last wrote, as far as WhatsApp's session goes: that
/// message, unless Wazzup has said since that the session is closed.
pub async fn open_since(
    store: &Store,
    phones: &[String],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let last = last_reply_of(store, phones).await?;
    let closed = closed_of(store, phones).await?;
    Ok(last_open_message(last, closed))
}

/// Records that Wazzup said the session with `phone` was closed at `at` (a later close
/// known already stays).
pub async fn record_closed(
    store: &Store,
    phone: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = closed_key(phone);
    if time_value(store.value(&key).await?).is_some_and(|t| t >= at) {
        return Ok(());
    }
    store.set_value(&key, &at.to_rfc3339()).await
}

/// A WhatsApp message a chain step sent, as kept under Wazzup's id of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentStep {
    /// The key of the record that settled the send: the step's (`{enrolment}#{index}`),
    /// or that of its second form for a closed session (`…#closed`).
    pub record: String,
    /// The enrolment.
    pub enrolment: String,
    /// The step's index in its chain.
    pub index: usize,
    /// The phone it went to.
    pub phone: String,
    /// Whether it was already what the step allows for a closed session: a second
    /// `24_HOURS_EXCEEDED` then fails the step rather than trying again.
    pub closed_form: bool,
}

/// How long the robot remembers which step sent a WhatsApp message, and an error status
/// that came before the send was recorded. Wazzup posts a message's statuses within
/// minutes to hours of the send; a week covers a robot that was down for days, and the
/// store does not grow with every message ever sent.
pub const SENT_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

fn sent_key(message_id: &str) -> String {
    format!("chains:wazzup:{message_id}")
}

fn early_key(message_id: &str) -> String {
    format!("chains:wazzup:early:{message_id}")
}

/// Keeps which step sent Wazzup's message `message_id`.
pub async fn record_sent(
    store: &Store,
    message_id: &str,
    sent: &SentStep,
) -> Result<(), StoreError> {
    store
        .set_value_for(
            &sent_key(message_id),
            &serde_json::to_string(sent)?,
            SENT_KEPT,
        )
        .await
}

/// The step that sent Wazzup's message `message_id`; `None` for a message the robot did
/// not send (a manager's) or does not know yet.
pub async fn sent_step(store: &Store, message_id: &str) -> Result<Option<SentStep>, StoreError> {
    Ok(match store.value(&sent_key(message_id)).await? {
        Some(v) => Some(serde_json::from_str(&v)?),
        None => None,
    })
}

/// An error status kept until the send it is about is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyStatus {
    /// `error`.
    pub status: String,
    /// Its code.
    pub error: Option<String>,
    /// What Wazzup said.
    pub description: Option<String>,
}

/// Keeps an error status of a message not known yet.
pub async fn keep_early(
    store: &Store,
    message_id: &str,
    early: &EarlyStatus,
) -> Result<(), StoreError> {
    store
        .set_value_for(
            &early_key(message_id),
            &serde_json::to_string(early)?,
            SENT_KEPT,
        )
        .await
}

/// The error status kept for `message_id`, if one came before its send was recorded.
pub async fn early_status(
    store: &Store,
    message_id: &str,
) -> Result<Option<EarlyStatus>, StoreError> {
    Ok(match store.value(&early_key(message_id)).await? {
        Some(v) => Some(serde_json::from_str(&v)?),
        None => None,
    })
}

/// How many of the last messages with a client are kept, and shown to a template.
pub const MESSAGES_KEPT: usize = 10;

/// One message between the client and the company, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Whether the client wrote it (otherwise the robot did).
    pub from_client: bool,
    /// Its text; a message with no text (a picture, a voice) is kept as what it was.
    pub text: String,
}

fn messages_key(phone: &str) -> String {
    format!("chains:messages:{phone}")
}

/// Keeps a message of the conversation with the client of `phone`.
pub async fn record_message(store: &Store, phone: &str, said: &Said) -> Result<(), StoreError> {
    store
        .push_capped(
            &messages_key(phone),
            &serde_json::to_string(said)?,
            MESSAGES_KEPT,
        )
        .await
}

/// The last messages with the clients of `phones`, the oldest first, at most
/// [`MESSAGES_KEPT`]. A webhook delivered late takes its place by its time.
pub async fn messages_of(store: &Store, phones: &[String]) -> Result<Vec<Said>, StoreError> {
    let mut all = Vec::new();
    for phone in phones {
        for item in store.list(&messages_key(phone)).await? {
            all.push(serde_json::from_str::<Said>(&item)?);
        }
    }
    all.sort_by_key(|s| s.at);
    let skip = all.len().saturating_sub(MESSAGES_KEPT);
    Ok(all.split_off(skip))
}

fn phone_set(phone: &str) -> String {
    format!("chains:phone:{phone}")
}

/// Remembers that `lead` is a lead of `phone`.
pub async fn index_phone(store: &Store, phone: &str, lead: &str) -> Result<(), StoreError> {
    store.add_member(&phone_set(phone), lead).await.map(|_| ())
}

/// The leads of `phone`.
pub async fn leads_of_phone(store: &Store, phone: &str) -> Result<Vec<String>, StoreError> {
    store.members(&phone_set(phone)).await
}

/// The counter of messages through `channel` in the minute of `now`.
pub fn channel_counter(channel: Channel, now: DateTime<Utc>) -> String {
    format!("chains:sent:{channel}:{}", now.timestamp().div_euclid(60))
}

/// The counter of messages to `client` on the client's `day`.
pub fn client_counter(client: &str, day: NaiveDate) -> String {
    format!("chains:client:{client}:{day}")
}

/// How long a minute's counter is kept.
pub const MINUTE_KEPT: Duration = Duration::from_secs(180);
/// How long a day's counter is kept.
pub const DAY_KEPT: Duration = Duration::from_secs(3 * 24 * 3600);
