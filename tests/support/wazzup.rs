//! An in-process emulator of Wazzup's API v3 for sending, and of the webhooks Wazzup posts,
//! for tests: a real HTTP server on 127.0.0.1 with an account in memory behind a mutex.
//!
//! Where each shape and rule comes from (Wazzup's own documentation):
//! - `POST /v3/message`: https://wazzup24.com/help/api-en/sending-messages/ and
//!   https://wazzup24.ru/help/api-ru/otpravka-soobshhenij/ — the fields (`channelId`*,
//!   `chatType`* of `whatsapp`, `whatsgroup`, `viber`, `instagram`, `telegram`, `telegroup`,
//!   `vk`, `avito`, `max`, `maxgroup`; `chatId` of digits only for WhatsApp; `text` or
//!   `contentUri`, never both; `refMessageId`, `crmUserId`, `crmMessageId`, `username`,
//!   `phone`, `clearUnanswered`, `templateId`, `templateValues[]`, `buttonsObject`), text
//!   limits (WhatsApp 10,000 characters), the answer `201 {messageId, chatId}`, the error
//!   body `{status, requestId, error, description, data}`, `INVALID_MESSAGE_DATA` with
//!   `data.fields`, `WRONG_TRANSPORT` with `data.{channelId, transport, chatType}`,
//!   `REPEATED_CRM_MESSAGE_ID` with `data.crmMessageId` for an id used within the last 60
//!   seconds, and the table of codes (`MESSAGE_ONLY_TEXT_OR_CONTENT`,
//!   `MESSAGE_NOTHING_TO_SEND`, `MESSAGES_TEXT_CAN_NOT_BE_BLANK`, `MESSAGE_TEXT_TOO_LONG`,
//!   `MESSAGES_TOO_LONG_WABA`, `CHANNEL_NOT_FOUND`, `CHANNEL_BLOCKED`, `CHANNEL_NO_MONEY`,
//!   `MESSAGE_CHANNEL_UNAVAILABLE`, `BAD_CONTACT` "Number may not be on WhatsApp").
//! - Every route: https://wazzup24.com/help/api-en/common-errors/ — at most 500 requests
//!   every 5 seconds, the counter reset every 5 seconds, then 429; 401 for a missing or wrong
//!   key; an error body "either empty or JSON".
//! - `GET /v3/channels` (`channelId`, `transport` of `whatsapp`, `wapi`, `instagram`,
//!   `tgapi`, `telegram`, `vk`, `avito`; `plainId`; `state` of `active`, `disabled`,
//!   `phoneUnavailable`, `notEnoughMoney`…):
//!   https://wazzup24.com/help/api-en/working-with-channels/
//! - `GET /v3/templates/whatsapp` (`templateGuid`, `title`, `name`, `category`, `language`,
//!   `status`, `components[{type, text}]`):
//!   https://wazzup24.in/help/api-en/whatsapp-business-api-templates
//! - Webhooks: https://wazzup24.com/help/webhooks/ — `PATCH /v3/webhooks` with `webhooksUri`
//!   (at most 200 characters) and `subscriptions.messagesAndStatuses`; a test POST
//!   `{"test": true}` that must get 200, else "Webhooks request not valid. Response status
//!   must be 200"; POSTs of JSON with `messages[]` and/or `statuses[]`, `Authorization:
//!   Bearer {crmKey}` only when a crmKey was given, 30 s to answer. Message fields
//!   (`messageId`, `dateTime`, `channelId`, `chatType`, `chatId`, `type`, `isEcho`,
//!   `contact{name}`, `text`, `status`) and status fields (`messageId`, `timestamp`,
//!   `status` of `sent`, `delivered`, `read`, `error`, and `error{error, description}`
//!   with `24_HOURS_EXCEEDED`) as in the fixtures under `fixtures/wazzup/`.
//! - Statuses of outgoing messages: https://wazzup24.com/help/api-documentation-en/webhooks/
//!   ("Webhook about updating the status of outgoing messages") — `{"statuses": [{messageId,
//!   timestamp, status, error?}]}`, `error{error, description, data?}` only with `status:
//!   "error"`; no `crmMessageId` in a status. Error codes from the same page's `messages`
//!   table: `BAD_CONTACT` "the account with this chatId does not exist", `24_HOURS_EXCEEDED`
//!   "the 24-hour WABA dialogue is closed". Assumed: when told to
//!   ([`WazzupEmulator::post_statuses`]), a status comes a moment after the 201, as
//!   WhatsApp's answer reaches Wazzup; a number the emulator knows as without WhatsApp
//!   ([`WazzupEmulator::add_number_without_whatsapp`]) is taken and then fails
//!   `BAD_CONTACT`, as Wazzup reports it for the account that does not exist.
//!
//! Choices where the sources are silent are marked "assumed" in comments.

// Each test target uses a different part of this support module.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The account's API key.
pub const API_KEY: &str = "6f1b3c67a0d84e2b9c5a7f3e1d2c4b8a";
/// A WhatsApp channel (a phone connected to Wazzup): free text goes at any time.
pub const CHANNEL_WHATSAPP: &str = "0c3f6b1e-8d2a-4c55-9f1e-5a7d2b9c4e10";
/// A WhatsApp Business API channel: free text reaches a client only within 24 hours of the
/// client's last message; templates go at any time.
pub const CHANNEL_WABA: &str = "7d2e4a91-3b6c-4f08-a5e1-c9b0d8f2e376";
/// A Telegram channel, for sends of the wrong transport.
pub const CHANNEL_TELEGRAM: &str = "b3f9a2c4-61d7-4e85-9a0b-2c7e5f1d8a49";
/// An approved WhatsApp Business template with two variables.
pub const TEMPLATE_FOLLOW_UP: &str = "e2a7c5f1-94b3-4d60-8c1e-3b5a7d9f0c24";

const CHAT_TYPES: &[&str] = &[
    "whatsapp",
    "whatsgroup",
    "viber",
    "instagram",
    "telegram",
    "telegroup",
    "vk",
    "avito",
    "max",
    "maxgroup",
];
const FIELDS: &[&str] = &[
    "channelId",
    "chatType",
    "chatId",
    "text",
    "contentUri",
    "refMessageId",
    "crmUserId",
    "crmMessageId",
    "username",
    "phone",
    "clearUnanswered",
    "templateId",
    "templateValues",
    "buttonsObject",
];
const REPEAT_WINDOW: Duration = Duration::from_secs(60);
const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One message Wazzup took.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub message_id: String,
    pub channel_id: String,
    pub chat_type: String,
    pub chat_id: String,
    pub text: Option<String>,
    pub template_id: Option<String>,
    pub template_values: Vec<String>,
    pub crm_message_id: Option<String>,
    pub clear_unanswered: Option<bool>,
    /// `sent`, or `error` when it will never reach the client.
    pub status: String,
    /// Why it failed (`24_HOURS_EXCEEDED`), reported by the status webhook.
    pub error: Option<(String, String)>,
    /// The emulator's Unix time in milliseconds.
    pub at_ms: u64,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// A channel of the account.
#[derive(Debug, Clone)]
pub struct Channel {
    pub channel_id: String,
    /// `whatsapp`, `wapi`, `tgapi`…
    pub transport: String,
    pub plain_id: String,
    /// `active`, `disabled`, `phoneUnavailable`, `notEnoughMoney`…
    pub state: String,
}

/// A webhook the emulator posted, and what the receiver answered.
#[derive(Debug, Clone)]
pub struct Posted {
    pub body: Value,
    /// The receiver's status, `None` when it could not be reached.
    pub status: Option<u16>,
}

struct Template {
    guid: String,
    title: String,
    text: String,
}

struct Account {
    channels: Vec<Channel>,
    templates: Vec<Template>,
    sent: Vec<SentMessage>,
    requests: Vec<RecordedRequest>,
    invalid_numbers: HashSet<String>,
    /// Numbers taken with 201 whose messages then fail `BAD_CONTACT` in a status.
    without_whatsapp: HashSet<String>,
    /// Whether each message taken gets its status webhook on its own.
    post_statuses: bool,
    /// The ids the next messages taken get, before random ones.
    next_ids: VecDeque<String>,
    failures: VecDeque<u16>,
    /// Requests let through before the queued failures start.
    failures_after: usize,
    /// Sends carried out whose answer is then replaced by this status.
    lost_answers: VecDeque<u16>,
    /// crmMessageId → when it was used.
    crm_ids: HashMap<String, u64>,
    /// (channel, chat) → the client's last message.
    last_inbound: HashMap<(String, String), u64>,
    rate_limit: usize,
    rate_window: Duration,
    window_start: u64,
    window_count: usize,
    total_429: usize,
    clock_offset: Duration,
    webhooks_uri: Option<String>,
    crm_key: Option<String>,
    posted: Vec<Posted>,
}

impl Account {
    fn seeded() -> Account {
        let channel = |id: &str, transport: &str, plain: &str| Channel {
            channel_id: id.into(),
            transport: transport.into(),
            plain_id: plain.into(),
            state: "active".into(),
        };
        Account {
            channels: vec![
                channel(CHANNEL_WHATSAPP, "whatsapp", "79251112233"),
                channel(CHANNEL_WABA, "wapi", "74951234567"),
                channel(CHANNEL_TELEGRAM, "tgapi", "robotdemo_sales"),
            ],
            templates: vec![Template {
                guid: TEMPLATE_FOLLOW_UP.into(),
                title: "Напоминание о КП".into(),
                text: "Здравствуйте, {{1}}! Мы отправили вам предложение по заказу {{2}}. \
                       Удобно обсудить сегодня?"
                    .into(),
            }],
            sent: Vec::new(),
            requests: Vec::new(),
            invalid_numbers: HashSet::new(),
            without_whatsapp: HashSet::new(),
            post_statuses: false,
            next_ids: VecDeque::new(),
            failures: VecDeque::new(),
            failures_after: 0,
            lost_answers: VecDeque::new(),
            crm_ids: HashMap::new(),
            last_inbound: HashMap::new(),
            rate_limit: 500,
            rate_window: Duration::from_secs(5),
            window_start: 0,
            window_count: 0,
            total_429: 0,
            clock_offset: Duration::ZERO,
            webhooks_uri: None,
            crm_key: None,
            posted: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        (SystemTime::now() + self.clock_offset)
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    }

    fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.channel_id == id)
    }
}

/// The emulator. It serves until dropped.
pub struct WazzupEmulator {
    base_url: String,
    state: Arc<Mutex<Account>>,
    server: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for WazzupEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WazzupEmulator {
    /// Binds 127.0.0.1 on a random port and serves the seeded account: three channels
    /// ([`CHANNEL_WHATSAPP`], [`CHANNEL_WABA`], [`CHANNEL_TELEGRAM`]) and one template.
    pub async fn start() -> WazzupEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Wazzup emulator");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(Account::seeded()));
        let app = Router::new().fallback(dispatch).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WazzupEmulator {
            base_url,
            state,
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// `http://127.0.0.1:PORT`, standing for `https://api.wazzup24.com`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The account's API key.
    pub fn api_key(&self) -> &'static str {
        API_KEY
    }

    fn lock(&self) -> MutexGuard<'_, Account> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- what happened ------------------------------------------------------------------

    /// Every message taken, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many 429 answers the rate limit gave.
    pub fn too_many_requests(&self) -> usize {
        self.lock().total_429
    }

    /// Every webhook posted, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.lock().posted.clone()
    }

    // --- the account --------------------------------------------------------------------

    /// Numbers that are not on WhatsApp: sends to them answer `BAD_CONTACT`.
    pub fn add_invalid_number(&self, chat_id: &str) {
        self.lock().invalid_numbers.insert(chat_id.to_owned());
    }

    /// Numbers with no WhatsApp that Wazzup finds out only after taking the message: the
    /// send answers 201, and the status says `error` with `BAD_CONTACT`.
    pub fn add_number_without_whatsapp(&self, chat_id: &str) {
        self.lock().without_whatsapp.insert(chat_id.to_owned());
    }

    /// From now on, each message taken gets its `statuses` webhook on its own a moment
    /// after the 201: `error` with its error (`24_HOURS_EXCEEDED`, `BAD_CONTACT`), else
    /// `delivered`.
    pub fn post_statuses(&self) {
        self.lock().post_statuses = true;
    }

    /// The next message taken gets `message_id`: a test can post its status before the
    /// sender has the 201, as a slow answer can make it.
    pub fn next_message_id(&self, message_id: &str) {
        self.lock().next_ids.push_back(message_id.to_owned());
    }

    /// WhatsApp's session with `chat_id` on `channel_id` is open now, as if the client had
    /// written in a way the robot did not see (from the phone, another integration).
    pub fn open_session(&self, channel_id: &str, chat_id: &str) {
        let mut acc = self.lock();
        let now = acc.now_ms();
        acc.last_inbound
            .insert((channel_id.to_owned(), chat_id.to_owned()), now);
    }

    /// WhatsApp's session with `chat_id` on `channel_id` is closed now: free text to it is
    /// taken, then fails `24_HOURS_EXCEEDED`, whatever the robot believes.
    pub fn close_session(&self, channel_id: &str, chat_id: &str) {
        self.lock()
            .last_inbound
            .remove(&(channel_id.to_owned(), chat_id.to_owned()));
    }

    /// Adds an approved WhatsApp Business template with its title and text (`{{1}}`…).
    pub fn add_template(&self, guid: &str, title: &str, text: &str) {
        self.lock().templates.push(Template {
            guid: guid.to_owned(),
            title: title.to_owned(),
            text: text.to_owned(),
        });
    }

    /// A channel's state (`disabled`, `phoneUnavailable`, `notEnoughMoney`, `active`).
    pub fn set_channel_state(&self, channel_id: &str, state: &str) {
        let mut acc = self.lock();
        let channel = acc
            .channels
            .iter_mut()
            .find(|c| c.channel_id == channel_id)
            .expect("a seeded channel");
        channel.state = state.to_owned();
    }

    /// Where webhooks go, as `PATCH /v3/webhooks` would set it but without the test POST;
    /// `crm_key` (the key the CRM integration gave Wazzup) becomes their bearer token.
    pub fn set_webhooks(&self, uri: &str, crm_key: Option<&str>) {
        let mut acc = self.lock();
        acc.webhooks_uri = Some(uri.to_owned());
        acc.crm_key = crm_key.map(str::to_owned);
    }

    // --- faults and limits --------------------------------------------------------------

    /// Answers the next `n` calls with `status` and an empty body, before anything else.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut acc = self.lock();
        for _ in 0..n {
            acc.failures.push_back(status);
        }
    }

    /// Lets the next `pass` requests through, then answers the `n` after them with
    /// `status`: Wazzup failing in the middle of what the robot does.
    pub fn fail_after(&self, pass: usize, n: usize, status: u16) {
        let mut acc = self.lock();
        acc.failures_after = pass;
        for _ in 0..n {
            acc.failures.push_back(status);
        }
    }

    /// Forgets the failures still queued: Wazzup answers again.
    pub fn recover(&self) {
        let mut acc = self.lock();
        acc.failures.clear();
        acc.failures_after = 0;
    }

    /// Carries out the next `n` sends (a message taken is recorded) but answers `status`
    /// instead of 201: the client never learns the message went, as when a gateway times
    /// out after Wazzup took it.
    pub fn lose_next_answers(&self, n: usize, status: u16) {
        let mut acc = self.lock();
        for _ in 0..n {
            acc.lost_answers.push_back(status);
        }
    }

    /// At most `limit` requests in each fixed `window` (500 in 5 s, as Wazzup).
    pub fn set_rate_limit(&self, limit: usize, window: Duration) {
        let mut acc = self.lock();
        acc.rate_limit = limit;
        acc.rate_window = window;
    }

    /// Moves the emulator's clock forward (the 60-second guard, the 24-hour window).
    pub fn advance_clock(&self, by: Duration) {
        self.lock().clock_offset += by;
    }

    // --- webhooks -----------------------------------------------------------------------

    async fn post(&self, body: Value) -> Option<u16> {
        post_webhook(&self.state, &self.http, body).await
    }

    /// The client wrote `text` at `at` (by the client's phone): posts the `messages`
    /// webhook dated so, and the 24-hour window counts from then. A message written long
    /// ago, or delivered late, leaves the window closed now.
    pub async fn client_wrote_at(
        &self,
        channel_id: &str,
        chat_id: &str,
        text: &str,
        at: SystemTime,
    ) -> (String, Option<u16>) {
        let message_id = uuid();
        let ms = at
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let body = {
            let mut acc = self.lock();
            acc.last_inbound
                .insert((channel_id.to_owned(), chat_id.to_owned()), ms);
            let chat_type = chat_type_of(acc.channel(channel_id).map(|c| c.transport.as_str()));
            incoming(&message_id, ms, channel_id, chat_type, chat_id, text)
        };
        let status = self.post(body).await;
        (message_id, status)
    }

    /// The client writes `text` to the channel: posts the `messages` webhook of an incoming
    /// message (which also opens WhatsApp Business's 24-hour window for the chat). Returns
    /// the message's id and the receiver's answer.
    pub async fn client_writes(
        &self,
        channel_id: &str,
        chat_id: &str,
        text: &str,
    ) -> (String, Option<u16>) {
        let message_id = uuid();
        let body = {
            let mut acc = self.lock();
            let now = acc.now_ms();
            acc.last_inbound
                .insert((channel_id.to_owned(), chat_id.to_owned()), now);
            let chat_type = chat_type_of(acc.channel(channel_id).map(|c| c.transport.as_str()));
            incoming(&message_id, now, channel_id, chat_type, chat_id, text)
        };
        let status = self.post(body).await;
        (message_id, status)
    }

    /// Posts the echo of a message the robot sent (`isEcho: true`), as Wazzup reports every
    /// outgoing message of the channel. Returns the receiver's answer.
    pub async fn post_echo(&self, message_id: &str) -> Option<u16> {
        let body = {
            let acc = self.lock();
            let m = acc
                .sent
                .iter()
                .find(|m| m.message_id == message_id)
                .expect("a sent message");
            let text = m.text.clone().unwrap_or_else(|| {
                acc.templates
                    .iter()
                    .find(|t| Some(&t.guid) == m.template_id.as_ref())
                    .map(|t| render(&t.text, &m.template_values))
                    .unwrap_or_default()
            });
            json!({ "messages": [{
                "messageId": m.message_id,
                "dateTime": iso(m.at_ms),
                "channelId": m.channel_id,
                "chatType": m.chat_type,
                "chatId": m.chat_id,
                "type": "text",
                "isEcho": true,
                "contact": { "name": "Андрей Ковалёв" },
                "text": text,
                "status": "sent",
            }]})
        };
        self.post(body).await
    }

    /// Posts the `statuses` webhook of a message the robot sent: `sent`, `delivered`,
    /// `read`, or `error` with the message's own error (`24_HOURS_EXCEEDED` for free text
    /// outside the window; assumed `UNKNOWN_ERROR` otherwise). Returns the receiver's answer.
    pub async fn post_status(&self, message_id: &str, status: &str) -> Option<u16> {
        let body = status_body(&self.lock(), message_id, status);
        self.post(body).await
    }
}

/// The `messages` webhook of a client's text message.
fn incoming(
    message_id: &str,
    at_ms: u64,
    channel_id: &str,
    chat_type: &str,
    chat_id: &str,
    text: &str,
) -> Value {
    json!({ "messages": [{
        "messageId": message_id,
        "dateTime": iso(at_ms),
        "channelId": channel_id,
        "chatType": chat_type,
        "chatId": chat_id,
        "type": "text",
        "isEcho": false,
        "contact": { "name": "Андрей Ковалёв" },
        "text": text,
        "status": "inbound",
    }]})
}

/// The `statuses` webhook of a message taken: `status`, and with `error` the message's own
/// error (assumed `UNKNOWN_ERROR` for a message that had none).
fn status_body(acc: &Account, message_id: &str, status: &str) -> Value {
    let m = acc
        .sent
        .iter()
        .find(|m| m.message_id == message_id)
        .expect("a sent message");
    let mut entry = json!({
        "messageId": message_id,
        "timestamp": iso(acc.now_ms()),
        "status": status,
    });
    if status == "error" {
        let (code, description) = m
            .error
            .clone()
            .unwrap_or_else(|| ("UNKNOWN_ERROR".into(), "Unknown error".into()));
        entry["error"] = json!({ "error": code, "description": description });
    }
    json!({ "statuses": [entry] })
}

/// Posts a webhook to the receiver the account names, and records it with the answer.
async fn post_webhook(state: &Mutex<Account>, http: &reqwest::Client, body: Value) -> Option<u16> {
    let (uri, key) = {
        let acc = state.lock().unwrap_or_else(|p| p.into_inner());
        (acc.webhooks_uri.clone(), acc.crm_key.clone())
    };
    let uri = uri.expect("no webhooks URI: call set_webhooks or PATCH /v3/webhooks");
    let mut request = http.post(uri).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let status = request.send().await.ok().map(|r| r.status().as_u16());
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .posted
        .push(Posted { body, status });
    status
}

// ---------------------------------------------------------------------------------------
// The routes.

async fn dispatch(
    AxumState(state): AxumState<Arc<Mutex<Account>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    // The webhooks check POSTs to the receiver, so it must run without the lock held.
    let pending_check = {
        let mut acc = state.lock().unwrap_or_else(|p| p.into_inner());
        match answer_locked(&mut acc, &method, &path, &headers, &body) {
            Answer::Done(response) => {
                let taken = response.status() == StatusCode::CREATED && path == "/v3/message";
                let status = (taken && acc.post_statuses).then(|| {
                    let m = acc.sent.last().expect("the message just taken");
                    let status = if m.error.is_some() {
                        "error"
                    } else {
                        "delivered"
                    };
                    status_body(&acc, &m.message_id.clone(), status)
                });
                acc.requests.push(RecordedRequest {
                    method: method.to_string(),
                    path: path.clone(),
                    status: response.status().as_u16(),
                    body: json_body.clone(),
                });
                Err((response, status))
            }
            Answer::CheckWebhooks { uri, crm_key } => Ok((uri, crm_key)),
        }
    };
    let pending_check = match pending_check {
        Ok(check) => check,
        Err((response, status)) => {
            if let Some(body) = status {
                tokio::spawn(async move {
                    // WhatsApp's answer reaches Wazzup a moment after the 201.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    post_webhook(&state, &reqwest::Client::new(), body).await;
                });
            }
            return response;
        }
    };
    let (uri, crm_key) = pending_check;
    let mut check = reqwest::Client::new()
        .post(&uri)
        .timeout(Duration::from_secs(30))
        .json(&json!({ "test": true }));
    if let Some(key) = &crm_key {
        check = check.bearer_auth(key);
    }
    let passed = matches!(check.send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
    let mut acc = state.lock().unwrap_or_else(|p| p.into_inner());
    let response = if passed {
        acc.webhooks_uri = Some(uri);
        acc.crm_key = crm_key;
        // Assumed: the documentation shows no body for a successful PATCH.
        (StatusCode::OK, axum::Json(json!({ "ok": true }))).into_response()
    } else {
        error(
            StatusCode::BAD_REQUEST,
            "testPostNotPassed",
            "Webhooks request not valid. Response status must be 200",
            None,
        )
    };
    acc.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        body: json_body,
    });
    response
}

enum Answer {
    Done(Response),
    /// `PATCH /v3/webhooks` must POST its test to the receiver first.
    CheckWebhooks {
        uri: String,
        crm_key: Option<String>,
    },
}

fn answer_locked(
    acc: &mut Account,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    if !acc.failures.is_empty() && acc.failures_after > 0 {
        acc.failures_after -= 1;
    } else if let Some(status) = acc.failures.pop_front() {
        let status = StatusCode::from_u16(status).expect("a status code");
        return Answer::Done(status.into_response());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(API_KEY) {
        // "401 Unauthorized. Failed to pass the API key or passed the wrong key"; assumed:
        // no body.
        return Answer::Done(StatusCode::UNAUTHORIZED.into_response());
    }
    let now = acc.now_ms();
    let window = acc.rate_window.as_millis() as u64;
    if now.saturating_sub(acc.window_start) >= window {
        acc.window_start = now - now % window.max(1);
        acc.window_count = 0;
    }
    acc.window_count += 1;
    if acc.window_count > acc.rate_limit {
        acc.total_429 += 1;
        // Assumed: no body and no Retry-After, which the documentation does not mention.
        return Answer::Done(StatusCode::TOO_MANY_REQUESTS.into_response());
    }
    Answer::Done(match (method.as_str(), path) {
        ("POST", "/v3/message") => {
            let response = send_message(acc, body);
            match acc.lost_answers.pop_front() {
                Some(status) if response.status() == StatusCode::CREATED => {
                    StatusCode::from_u16(status)
                        .expect("a status code")
                        .into_response()
                }
                Some(status) => {
                    acc.lost_answers.push_front(status);
                    response
                }
                None => response,
            }
        }
        ("GET", "/v3/channels") => channels(acc),
        ("GET", "/v3/templates/whatsapp") => templates(acc),
        ("PATCH", "/v3/webhooks") => return webhooks(acc, body),
        // Assumed: the documentation shows no body for an unknown route.
        _ => StatusCode::NOT_FOUND.into_response(),
    })
}

fn request_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

fn uuid() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    // Version 4, variant 10.
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .expect("a time")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn chat_type_of(transport: Option<&str>) -> &'static str {
    match transport {
        Some("tgapi") | Some("telegram") => "telegram",
        Some("instagram") => "instagram",
        Some("vk") => "vk",
        Some("avito") => "avito",
        _ => "whatsapp",
    }
}

/// The template's text with `{{1}}`, `{{2}}`… filled in.
fn render(text: &str, values: &[String]) -> String {
    values
        .iter()
        .enumerate()
        .fold(text.to_owned(), |t, (i, v)| {
            t.replace(&format!("{{{{{}}}}}", i + 1), v)
        })
}

fn placeholders(text: &str) -> usize {
    (1..)
        .take_while(|i| text.contains(&format!("{{{{{i}}}}}")))
        .count()
}

/// The error body of every route.
fn error(status: StatusCode, code: &str, description: &str, data: Option<Value>) -> Response {
    let mut body = json!({
        "status": status.as_u16(),
        "requestId": request_id(),
        "error": code,
        "description": description,
    });
    if let Some(data) = data {
        body["data"] = data;
    }
    (status, axum::Json(body)).into_response()
}

fn invalid(fields: &[&str]) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_MESSAGE_DATA",
        "Message data is invalid",
        Some(json!({ "fields": fields })),
    )
}

fn bad(code: &str, description: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, description, None)
}

fn send_message(acc: &mut Account, body: &[u8]) -> Response {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        // Assumed: a body that is no JSON object is a validation error.
        return bad("VALIDATION_ERROR", "Request body must be a JSON object");
    };
    let mut wrong: Vec<&str> = Vec::new();
    // Assumed: unknown keys are refused. Wazzup may ignore them, but a misspelt key would
    // then pass here and fail there.
    wrong.extend(
        m.keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .map(String::as_str),
    );
    let string = |key: &str| m.get(key).and_then(Value::as_str);
    let typed = |key: &str, ok: fn(&Value) -> bool| m.get(key).is_none_or(ok);
    let channel_id = string("channelId").unwrap_or_default().to_owned();
    if !is_uuid(&channel_id) {
        wrong.push("channelId");
    }
    let chat_type = string("chatType").unwrap_or_default().to_owned();
    if !CHAT_TYPES.contains(&chat_type.as_str()) {
        wrong.push("chatType");
    }
    for key in [
        "chatId",
        "text",
        "contentUri",
        "refMessageId",
        "crmUserId",
        "crmMessageId",
        "username",
        "phone",
        "templateId",
    ] {
        if !typed(key, Value::is_string) {
            wrong.push(key);
        }
    }
    if !typed("clearUnanswered", Value::is_boolean) {
        wrong.push("clearUnanswered");
    }
    let values_ok = typed("templateValues", |v| {
        v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    });
    if !values_ok {
        wrong.push("templateValues");
    }
    let chat_id = string("chatId").map(str::to_owned);
    let whatsapp = chat_type == "whatsapp" || chat_type == "viber";
    match &chat_id {
        Some(id) if whatsapp && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit())) => {
            wrong.push("chatId")
        }
        // Only Telegram may go by `phone` or `username` instead.
        None if chat_type != "telegram" => wrong.push("chatId"),
        _ => {}
    }
    if !wrong.is_empty() {
        wrong.sort_unstable();
        wrong.dedup();
        return invalid(&wrong);
    }

    let Some(channel) = acc.channel(&channel_id).cloned() else {
        return bad(
            "CHANNEL_NOT_FOUND",
            "The channel through which the message is sent is not found in the integration",
        );
    };
    let fits = match channel.transport.as_str() {
        "whatsapp" | "wapi" => matches!(chat_type.as_str(), "whatsapp" | "whatsgroup"),
        "tgapi" | "telegram" => matches!(chat_type.as_str(), "telegram" | "telegroup"),
        other => chat_type == other,
    };
    if !fits {
        return error(
            StatusCode::BAD_REQUEST,
            "WRONG_TRANSPORT",
            &format!(
                "You can't send message to {chat_type} chat from {} transport",
                channel.transport
            ),
            Some(json!({
                "channelId": channel_id,
                "transport": channel.transport,
                "chatType": chat_type,
            })),
        );
    }
    match channel.state.as_str() {
        "active" => {}
        "notEnoughMoney" => {
            return bad(
                "CHANNEL_NO_MONEY",
                "The channel is not paid and has the status of \"Not Paid\"",
            );
        }
        "phoneUnavailable" => {
            return bad(
                "MESSAGE_CHANNEL_UNAVAILABLE",
                "The channel from which the message is sent is not available",
            );
        }
        _ => {
            return bad(
                "CHANNEL_BLOCKED",
                "The channel through which the message is sent is off",
            );
        }
    }

    let text = string("text").map(str::to_owned);
    let content_uri = string("contentUri");
    let template_id = string("templateId").map(str::to_owned);
    let template_values: Vec<String> = m
        .get("templateValues")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if text.is_some() && content_uri.is_some() {
        return bad(
            "MESSAGE_ONLY_TEXT_OR_CONTENT",
            "The message can contain text or content",
        );
    }
    if let Some(id) = &template_id {
        // Assumed: templates belong to WhatsApp Business channels, and an unknown one or
        // a wrong count of values is invalid data.
        let Some(template) = acc.templates.iter().find(|t| &t.guid == id) else {
            return invalid(&["templateId"]);
        };
        if channel.transport != "wapi" {
            return invalid(&["templateId"]);
        }
        if template_values.len() != placeholders(&template.text) {
            return invalid(&["templateValues"]);
        }
    } else {
        match (&text, content_uri) {
            (None, None) => return bad("MESSAGE_NOTHING_TO_SEND", "No message text was found"),
            (Some(t), _) if t.trim().is_empty() => {
                return bad(
                    "MESSAGES_TEXT_CAN_NOT_BE_BLANK",
                    "The text message cannot be empty",
                );
            }
            (Some(t), _) if channel.transport == "wapi" && t.chars().count() > 4096 => {
                return bad(
                    "MESSAGES_TOO_LONG_WABA",
                    "The WABA message text is too long",
                );
            }
            (Some(t), _) if t.chars().count() > 10_000 => {
                return bad(
                    "MESSAGE_TEXT_TOO_LONG",
                    "The length of the text message exceeds 10 000 characters",
                );
            }
            _ => {}
        }
    }

    let now = acc.now_ms();
    let crm_message_id = string("crmMessageId").map(str::to_owned);
    if let Some(id) = &crm_message_id
        && acc
            .crm_ids
            .get(id)
            .is_some_and(|at| now.saturating_sub(*at) < REPEAT_WINDOW.as_millis() as u64)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "REPEATED_CRM_MESSAGE_ID",
            "You have already sent message with same crmMessageId",
            Some(json!({ "crmMessageId": id })),
        );
    }
    let chat_id = chat_id.unwrap_or_default();
    if acc.invalid_numbers.contains(&chat_id) {
        return bad(
            "BAD_CONTACT",
            "Message not sent. Number may not be on WhatsApp or uses an old version. Try later.",
        );
    }

    // Free text on a WhatsApp Business channel outside the client's 24-hour window is taken,
    // then fails: its status webhook says why.
    let window_open = acc
        .last_inbound
        .get(&(channel_id.clone(), chat_id.clone()))
        .is_some_and(|at| now.saturating_sub(*at) < SERVICE_WINDOW.as_millis() as u64);
    let error = if acc.without_whatsapp.contains(&chat_id) {
        Some((
            "BAD_CONTACT".to_owned(),
            "The account with this chatId does not exist".to_owned(),
        ))
    } else {
        (channel.transport == "wapi" && template_id.is_none() && !window_open).then(|| {
            (
                "24_HOURS_EXCEEDED".to_owned(),
                "The 24-hour WABA dialogue is closed".to_owned(),
            )
        })
    };
    let message_id = acc.next_ids.pop_front().unwrap_or_else(uuid);
    if let Some(id) = &crm_message_id {
        acc.crm_ids.insert(id.clone(), now);
    }
    acc.sent.push(SentMessage {
        message_id: message_id.clone(),
        channel_id,
        chat_type,
        chat_id: chat_id.clone(),
        text,
        template_id,
        template_values,
        crm_message_id,
        clear_unanswered: m.get("clearUnanswered").and_then(Value::as_bool),
        status: if error.is_some() { "error" } else { "sent" }.into(),
        error,
        at_ms: now,
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({ "messageId": message_id, "chatId": chat_id })),
    )
        .into_response()
}

fn channels(acc: &Account) -> Response {
    let list: Vec<Value> = acc
        .channels
        .iter()
        .map(|c| {
            json!({
                "channelId": c.channel_id,
                "transport": c.transport,
                "plainId": c.plain_id,
                "state": c.state,
            })
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

fn templates(acc: &Account) -> Response {
    let list: Vec<Value> = acc
        .templates
        .iter()
        .map(|t| {
            json!({
                "templateGuid": t.guid,
                "title": t.title,
                "name": "kp_reminder",
                "category": "UTILITY",
                "language": "ru",
                "status": "APPROVED",
                "channels": [CHANNEL_WABA],
                "components": [{ "type": "BODY", "text": t.text }],
            })
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

/// The test POST a `PATCH /v3/webhooks` calls for, or the answer refusing it.
fn webhooks(acc: &Account, body: &[u8]) -> Answer {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Answer::Done(bad(
            "VALIDATION_ERROR",
            "Request body must be a JSON object",
        ));
    };
    let uri = m.get("webhooksUri").and_then(Value::as_str).unwrap_or("");
    let subscriptions_ok = m.get("subscriptions").is_none_or(|s| {
        s.as_object()
            .is_some_and(|o| o.values().all(Value::is_boolean))
    });
    let mut fields = Vec::new();
    if uri.is_empty() || uri.chars().count() > 200 || !uri.starts_with("http") {
        fields.push("webhooksUri");
    }
    if !subscriptions_ok {
        fields.push("subscriptions");
    }
    if !fields.is_empty() {
        // Assumed: the same shape as the message route's invalid data.
        return Answer::Done(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Validation error of the parameter passed to the query",
            Some(json!({ "fields": fields })),
        ));
    }
    Answer::CheckWebhooks {
        uri: uri.to_owned(),
        crm_key: acc.crm_key.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// A receiver of the webhooks, standing for the robot's intake in emulator tests.

/// A webhook as the receiver got it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: Vec<u8>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
}

/// An HTTP server on 127.0.0.1 that keeps every POST and answers a set status.
pub struct WebhookSink {
    url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    status: Arc<Mutex<u16>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WebhookSink {
    /// Answers 200 until told otherwise.
    pub async fn start() -> WebhookSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook sink");
        let url = format!("http://{}/hooks/wazzup", listener.local_addr().unwrap());
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let status = Arc::new(Mutex::new(200u16));
        let (d, s) = (deliveries.clone(), status.clone());
        let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                d.lock().unwrap().push(Delivery {
                    body: body.to_vec(),
                    authorization: text(header::AUTHORIZATION),
                    content_type: text(header::CONTENT_TYPE),
                });
                let status = *s.lock().unwrap();
                StatusCode::from_u16(status).unwrap()
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookSink {
            url,
            deliveries,
            status,
            server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }
}
