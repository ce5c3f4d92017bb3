//! The Bitrix24 REST API behind the `Crm` trait. For the robot a "lead" is a Bitrix24 deal, or
//! a Bitrix24 CRM lead on portals whose sales work in leads ([`B24Entity`]).
//!
//! Follows the official docs, github.com/bitrix24/b24restdocs (apidocs.bitrix24.com):
//! - calls: `settings/how-to-call-rest-api/general-principles.md` (inbound webhook
//!   `…/rest/USER_ID/CODE/method`, OAuth `client_endpoint` + `auth=`, JSON bodies);
//! - limits: `limits.md` (leaky bucket of 50 draining at 2/s, 503 `QUERY_LIMIT_EXCEEDED`;
//!   429 `OPERATION_TIME_LIMIT`; a `batch` counts as one request);
//! - `settings/how-to-call-rest-api/batch.md` (`cmd`, `halt`, 50 commands, `result`,
//!   `result_error`, `result_next`; commands run in the order written);
//! - lists: `settings/how-to-call-rest-api/list-methods-pecularities.md` (50 a page, `start`,
//!   `next`, `total`), `api-reference/crm/deals/crm-deal-list.md` (filter prefixes, `select`
//!   with `*` and `UF_*`);
//! - `crm/deals/crm-deal-{get,update,fields}.md`, `deals/contacts/crm-deal-contact-items-get.md`,
//!   `crm/universal/crm-item-update.md` (moving a deal to another funnel, which
//!   `crm.deal.update` cannot), `crm/contacts/crm-contact-{get,update}.md` (`PHONE`/`EMAIL`
//!   multifields), `crm/companies/crm-company-{get,update,fields}.md` (`listLabel`,
//!   `formLabel`), `crm/_include/user-fields-for-examples-cut.md` (enumeration `items`: a list
//!   field takes and gives the item's `ID`);
//! - to-dos and tasks: `crm/timeline/activities/todo/crm-activity-todo-add.md`,
//!   `activity-base/crm-activity-{list,get,update}.md` (`COMPLETED`), `tasks/tasks-task-add.md`
//!   (`UF_CRM_TASK` `D_<id>`), `tasks/tasks-task-list.md` (`REAL_STATUS` 5 = completed),
//!   `tasks/status/tasks-task-complete.md`, `tasks/comment-item/task-comment-item-add.md`;
//! - `crm/timeline/comments/crm-timeline-comment-add.md` (lower-case `fields`), `user/user-get.md`
//!   (`ACTIVE`, `USER_TYPE`), `crm/status/crm-status-list.md` (`DEAL_STAGE`, `DEAL_STAGE_<n>`),
//!   `crm/universal/category/crm-category-list.md`, `crm/outdated/category-old/crm-deal-category-list.md`;
//! - leads: `crm/leads/crm-lead-{get,update,list,fields}.md` (`STATUS_ID`, no funnels,
//!   `CONTACT_ID`/`CONTACT_IDS`), `crm/status/crm-status-list.md` (`ENTITY_ID` `STATUS`);
//! - errors: `_includes/system-errors.md`, `settings/oauth/index.md` (`expired_token`), and the
//!   phrases the old methods answer ("Not found", "Company is not found").

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::oauth::Tokens;
pub use crate::adapters::amocrm::api::FieldMapping;
use crate::adapters::crm::fields::{AccountField, ResolvedFields};
use crate::adapters::crm::http::{Limiter, Retries, retry_after};
use crate::adapters::crm::{Client, Crm, CrmError, LeadFilter, merged};
use crate::adapters::store::Store;
use crate::config::BITRIX24_WEBHOOK_VAR;
pub use crate::config::{B24Entity, TodoVia};
use crate::domain::lead::{Company, Contact, FieldValue, Fields, Lead, LeadUpdate};
use crate::domain::manager::Manager;
use crate::domain::product::Product;
use crate::domain::rate::Rate;
use crate::domain::task::{EntityKind, EntityRef, Named, NewTask, Stage, Task, TaskKind};

/// Bitrix24's limit on ordinary plans: a bucket of 50 requests draining at 2 a second
/// (Enterprise: 250 and 5; pass that to [`Bitrix24::new`] instead).
pub const RATE: Rate = Rate {
    per_second: 2.0,
    burst: 50,
};

/// The most commands one `batch` takes.
const BATCH: usize = 50;
/// How many `QUERY_LIMIT_EXCEEDED` answers one call waits out before giving up: the bucket
/// drains at a known pace, so these are not failures and do not use up the retries.
const LIMIT_HITS: u32 = 20;
/// `ownerTypeId` / `OWNER_TYPE_ID` of the CRM's object types.
const LEAD_TYPE: u64 = 1;
const DEAL_TYPE: u64 = 2;
const CONTACT_TYPE: u64 = 3;
const COMPANY_TYPE: u64 = 4;

/// How the robot authenticates to the portal.
#[derive(Debug, Clone)]
pub enum Access {
    /// An inbound webhook: its whole URL, `https://portal.bitrix24.ru/rest/1/abc…/`
    /// (`ROBOT_BITRIX24_WEBHOOK`); the code in it is the secret.
    Webhook(SecretString),
    /// An application with OAuth; its token pair lives in the store (see [`Tokens::set`]).
    OAuth {
        /// The portal's REST address, `https://portal.bitrix24.ru/rest/`.
        client_endpoint: String,
        /// Where tokens are renewed, `https://oauth.bitrix.info/oauth/token/`.
        token_url: String,
        /// The application's `client_id`.
        client_id: String,
        /// The application's `client_secret`.
        client_secret: SecretString,
    },
}

#[derive(Debug)]
enum Auth {
    Webhook(SecretString),
    // Boxed: the token keeper is large and a webhook client has none.
    OAuth {
        endpoint: String,
        tokens: Box<Tokens>,
    },
}

/// One method's answer: `result`, and for lists `next` and `total`.
#[derive(Debug, Clone, Default)]
struct Answer {
    result: Value,
    next: Option<u64>,
}

/// Why a call gave no answer: the record is not there (a read answers `None`), or a real error.
#[derive(Debug)]
enum Failure {
    NotFound(String),
    Crm(CrmError),
}

impl From<CrmError> for Failure {
    fn from(e: CrmError) -> Self {
        Failure::Crm(e)
    }
}

impl From<crate::adapters::store::StoreError> for Failure {
    fn from(e: crate::adapters::store::StoreError) -> Self {
        Failure::Crm(e.into())
    }
}

trait Found<T> {
    /// For reads: a missing record is `None`.
    fn found(self) -> Result<Option<T>, CrmError>;
    /// For writes: a missing record is a refusal.
    fn required(self) -> Result<T, CrmError>;
}

impl<T> Found<T> for Result<T, Failure> {
    fn found(self) -> Result<Option<T>, CrmError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(Failure::Crm(e)) => Err(e),
        }
    }

    fn required(self) -> Result<T, CrmError> {
        match self {
            Ok(v) => Ok(v),
            Err(Failure::NotFound(what)) => Err(CrmError::Rejected(what)),
            Err(Failure::Crm(e)) => Err(e),
        }
    }
}

/// What an error answer means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The bucket is full: wait for it to drain.
    Limit,
    /// The method's time budget is spent: wait longer.
    TimeLimit,
    /// The OAuth access token expired: renew it.
    Expired,
    /// The credentials or the plan were refused: a person must act.
    Auth,
    /// The server or a proxy failed: back off and retry.
    Server,
    /// The record does not exist.
    NotFound,
    /// The portal has no such method (module off, scope missing).
    NoMethod,
    /// The request was refused as it is.
    Rejected,
}

fn classify(status: Option<u16>, code: &str, description: &str) -> Class {
    match code {
        "QUERY_LIMIT_EXCEEDED" => return Class::Limit,
        "OPERATION_TIME_LIMIT" => return Class::TimeLimit,
        "expired_token" | "invalid_token" => return Class::Expired,
        "INVALID_CREDENTIALS"
        | "NO_AUTH_FOUND"
        | "ACCESS_DENIED"
        | "insufficient_scope"
        | "PAYMENT_REQUIRED"
        | "invalid_client"
        | "authorization_error" => return Class::Auth,
        "ERROR_METHOD_NOT_FOUND" => return Class::NoMethod,
        "INTERNAL_SERVER_ERROR" => return Class::Server,
        _ => {}
    }
    // The old methods answer a bare phrase: "Not found", "Not found.", "Company is not found".
    // "Stage 'X' not found" is a bad value, not a missing record.
    let phrase = description.trim().trim_end_matches('.');
    if code == "NOT_FOUND"
        || phrase.eq_ignore_ascii_case("not found")
        || phrase.to_ascii_lowercase().ends_with(" is not found")
    {
        return Class::NotFound;
    }
    match status {
        Some(429) => Class::TimeLimit,
        Some(401 | 403) => Class::Auth,
        Some(500..=599) => Class::Server,
        _ => Class::Rejected,
    }
}

/// `error` and `error_description` of an error body, or a short text of a non-JSON one.
fn error_of(body: Option<&Value>, text: &str) -> (String, String) {
    let field = |k: &str| {
        body.and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (code, description) = (field("error"), field("error_description"));
    if code.is_empty() && description.is_empty() {
        // A proxy's HTML page: its first characters are enough to recognise it.
        let short: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        return (String::new(), short.chars().take(200).collect());
    }
    (code, description)
}

fn describe(code: &str, description: &str) -> String {
    match (code.is_empty(), description.is_empty()) {
        (false, false) => format!("{code}: {description}"),
        (false, true) => code.to_owned(),
        _ => description.to_owned(),
    }
}

/// Percent-encodes a query value (everything but the unreserved characters).
fn encode(text: &str, keep_brackets: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_brackets && matches!(b, b'[' | b']'));
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `batch` command: `method?key=value&…`, form encoded as PHP's `parse_str` reads it.
fn command(method: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return method.to_owned();
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, true), encode(v, false)))
        .collect();
    format!("{method}?{}", query.join("&"))
}

/// The `batch` body with the commands in the order given. serde_json's `Map` would sort the
/// keys, and a batch runs its commands in the order they are written.
fn batch_body(commands: &[(String, String)], halt: bool) -> String {
    let mut body = format!("{{\"halt\":{},\"cmd\":{{", u8::from(halt));
    for (i, (key, cmd)) in commands.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&Value::from(key.as_str()).to_string());
        body.push(':');
        body.push_str(&Value::from(cmd.as_str()).to_string());
    }
    body.push_str("}}");
    body
}

/// An entry of a batch answer's part, which PHP turns into a list when its keys are 0..n.
fn part<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// A record id that means something (Bitrix24 writes "0" for "none").
fn real_id(v: Option<&Value>) -> Option<String> {
    v.and_then(id_of).filter(|id| id != "0")
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    }
}

/// Ids go as numbers where they are numbers: the portal takes both, numbers are what its docs show.
fn numeric(id: &str) -> Value {
    id.trim()
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}

fn unix(v: &Value, key: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        .map(|d| d.timestamp())
        .unwrap_or_default()
}

/// ISO 8601 with the offset, as the docs' filters and `deadline` take dates.
fn iso(unix: i64) -> String {
    Utc.timestamp_opt(unix, 0)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A person's name as the portal shows it: first name, then last name.
fn person_name(v: &Value) -> String {
    ["NAME", "LAST_NAME"]
        .iter()
        .map(|k| text(v, k))
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn multifield(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|item| text(item, "VALUE"))
        .filter(|s| !s.is_empty())
        .collect()
}

/// `ownerTypeId` of the records the robot works as leads.
fn lead_type(entity: B24Entity) -> u64 {
    match entity {
        B24Entity::Deal => DEAL_TYPE,
        B24Entity::Lead => LEAD_TYPE,
    }
}

/// The field of a lead's stage: deals have `STAGE_ID`, CRM leads `STATUS_ID`.
fn stage_field(entity: B24Entity) -> &'static str {
    match entity {
        B24Entity::Deal => "STAGE_ID",
        B24Entity::Lead => "STATUS_ID",
    }
}

/// The old CRM method `op` of the robot's leads: `crm.deal.get`, `crm.lead.list`…
fn method_of(entity: B24Entity, op: &str) -> String {
    format!("crm.{}.{op}", entity.name())
}

fn owner_type(kind: EntityKind, entity: B24Entity) -> u64 {
    match kind {
        EntityKind::Lead => lead_type(entity),
        EntityKind::Contact => CONTACT_TYPE,
        EntityKind::Company => COMPANY_TYPE,
    }
}

fn entity_of_owner(
    type_id: Option<u64>,
    id: Option<String>,
    entity: B24Entity,
) -> Option<EntityRef> {
    let kind = match type_id? {
        // Only the configured kind: a CRM lead's to-do on a deal portal is not the robot's.
        t if t == lead_type(entity) => EntityKind::Lead,
        CONTACT_TYPE => EntityKind::Contact,
        COMPANY_TYPE => EntityKind::Company,
        _ => return None,
    };
    Some(EntityRef { kind, id: id? })
}

/// `ENTITY_TYPE` of `crm.timeline.comment.add`.
fn timeline_type(kind: EntityKind, entity: B24Entity) -> &'static str {
    match kind {
        EntityKind::Lead => entity.name(),
        EntityKind::Contact => "contact",
        EntityKind::Company => "company",
    }
}

/// The prefix of a lead's task binding: `D_` a deal, `L_` a CRM lead.
fn lead_prefix(entity: B24Entity) -> &'static str {
    match entity {
        B24Entity::Deal => "D",
        B24Entity::Lead => "L",
    }
}

/// A task's CRM binding, `D_1001`, as `UF_CRM_TASK` holds it.
fn task_binding(record: &EntityRef, entity: B24Entity) -> String {
    let prefix = match record.kind {
        EntityKind::Lead => lead_prefix(entity),
        EntityKind::Contact => "C",
        EntityKind::Company => "CO",
    };
    format!("{prefix}_{}", record.id)
}

fn entity_of_binding(binding: &str, entity: B24Entity) -> Option<EntityRef> {
    let (prefix, id) = binding.split_once('_')?;
    let kind = match prefix {
        p if p == lead_prefix(entity) => EntityKind::Lead,
        "C" => EntityKind::Contact,
        "CO" => EntityKind::Company,
        _ => return None,
    };
    Some(EntityRef {
        kind,
        id: id.to_owned(),
    })
}

/// An activity's kind by `TYPE_ID` (1 meeting, 2 call, 4 e-mail; a to-do is 6).
fn activity_kind(type_id: Option<u64>) -> TaskKind {
    match type_id {
        Some(1) => TaskKind::Meeting,
        Some(2) => TaskKind::Call,
        Some(4) => TaskKind::Letter,
        _ => TaskKind::Other,
    }
}

/// The title of a to-do: the first line of its text, short enough for the timeline.
fn title_of(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut title: String = first.trim().chars().take(250).collect();
    if title.is_empty() {
        title = "Задача".into();
    }
    title
}

/// The host of a URL, naming the portal in the rate limit's and the tokens' keys.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

fn with_slash(url: &str) -> String {
    let url = url.trim();
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

/// What the robot must know of a field to read and write it.
#[derive(Debug, Clone, PartialEq)]
enum FieldKind {
    Number,
    /// A list: its items as `(ID, VALUE)`.
    List(Vec<(String, String)>),
    Text,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldInfo {
    kind: FieldKind,
    multiple: bool,
}

/// The mapped fields of one kind of record: our names, their fields, and how to treat them.
#[derive(Debug, Default)]
struct Schema {
    ours: Vec<String>,
    resolved: ResolvedFields,
    info: BTreeMap<String, FieldInfo>,
}

impl Schema {
    /// The portal's field code and its treatment for our name.
    fn get(&self, ours: &str) -> Option<(&str, &FieldInfo)> {
        let code = self.resolved.field(ours)?.id.as_str();
        Some((code, self.info.get(code)?))
    }

    /// A field's value in the robot's words; `None` when empty.
    fn read_value(raw: &Value, info: &FieldInfo) -> Option<FieldValue> {
        let scalars: Vec<&Value> = match raw {
            Value::Null => return None,
            Value::Array(items) => items.iter().filter(|v| !v.is_null()).collect(),
            one => vec![one],
        };
        let texts: Vec<String> = scalars
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_owned()),
                _ => None,
            })
            .filter(|s| !s.trim().is_empty())
            .collect();
        if texts.is_empty() {
            return None;
        }
        let many = info.multiple || raw.is_array();
        Some(match &info.kind {
            FieldKind::List(items) => {
                // The portal gives the item's id; the robot works with its label.
                let labels: Vec<String> = texts
                    .iter()
                    .map(|id| {
                        items
                            .iter()
                            .find(|(item, _)| item == id.trim())
                            .map_or_else(|| id.clone(), |(_, label)| label.clone())
                    })
                    .collect();
                match (many, labels.as_slice()) {
                    (false, [one]) => FieldValue::Text(one.clone()),
                    _ => FieldValue::Many(labels),
                }
            }
            FieldKind::Number if !many => match FieldValue::Text(texts[0].clone()).as_number() {
                Some(n) => FieldValue::Number(n),
                None => FieldValue::Text(texts[0].clone()),
            },
            _ if many => FieldValue::Many(texts),
            _ => match scalars[0] {
                Value::Number(n) => FieldValue::Number(n.as_f64().unwrap_or_default()),
                _ => FieldValue::Text(texts[0].clone()),
            },
        })
    }

    /// The mapped fields of a record.
    fn read(&self, v: &Value) -> Fields {
        let mut fields = Fields::new();
        for ours in &self.ours {
            let Some((code, info)) = self.get(ours) else {
                continue;
            };
            if let Some(value) = v.get(code).and_then(|raw| Self::read_value(raw, info)) {
                fields.insert(ours.clone(), value);
            }
        }
        fields
    }

    /// A value as the portal takes it: list labels become item ids, numbers go as numbers.
    fn write_value(
        ours: &str,
        code: &str,
        info: &FieldInfo,
        value: &FieldValue,
    ) -> Result<Value, CrmError> {
        let texts: Vec<String> = match value {
            FieldValue::Many(items) => items.clone(),
            one => vec![one.as_text()],
        };
        let shape = |values: Vec<Value>| match (info.multiple, values.len()) {
            (true, _) => Value::Array(values),
            (false, 1) => values.into_iter().next().unwrap_or(Value::Null),
            (false, _) => Value::Array(values),
        };
        match &info.kind {
            FieldKind::List(items) => {
                let mut ids = Vec::new();
                for label in &texts {
                    let wanted = label.trim();
                    let found = items
                        .iter()
                        .find(|(_, v)| v.trim().to_lowercase() == wanted.to_lowercase())
                        .or_else(|| items.iter().find(|(id, _)| id == wanted));
                    match found {
                        Some((id, _)) => ids.push(numeric(id)),
                        None => {
                            let known: Vec<&str> = items.iter().map(|(_, v)| v.as_str()).collect();
                            return Err(CrmError::Rejected(format!(
                                "the list field `{ours}` ({code}) has no item «{wanted}»; it has: {}",
                                known.join(", ")
                            )));
                        }
                    }
                }
                Ok(shape(ids))
            }
            FieldKind::Number => {
                let mut numbers = Vec::new();
                for t in &texts {
                    if t.trim().is_empty() {
                        // An empty value clears the field.
                        numbers.push(Value::from(""));
                        continue;
                    }
                    let n = FieldValue::Text(t.clone()).as_number().ok_or_else(|| {
                        CrmError::Rejected(format!(
                            "the number field `{ours}` ({code}) cannot take «{t}»"
                        ))
                    })?;
                    numbers.push(json!(n));
                }
                Ok(shape(numbers))
            }
            FieldKind::Text if info.multiple => {
                Ok(Value::Array(texts.into_iter().map(Value::from).collect()))
            }
            FieldKind::Text => Ok(Value::from(value.as_text())),
        }
    }

    /// The `fields` of an update for mapped values; unmapped names are skipped with a warning.
    fn write(&self, values: &Fields, what: &str) -> Result<Map<String, Value>, CrmError> {
        let mut out = Map::new();
        for (ours, value) in values {
            let Some((code, info)) = self.get(ours) else {
                tracing::warn!(field = %ours, "not mapped to a Bitrix24 {what} field: not written");
                continue;
            };
            out.insert(code.to_owned(), Self::write_value(ours, code, info, value)?);
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Resolved {
    deals: Schema,
    contacts: Schema,
    companies: Schema,
}

/// A Bitrix24 portal.
#[derive(Debug)]
pub struct Bitrix24 {
    http: reqwest::Client,
    auth: Auth,
    limiter: Limiter,
    retries: Retries,
    mapping: FieldMapping,
    todo_via: TodoVia,
    entity: B24Entity,
    resolved: OnceCell<Resolved>,
}

impl Bitrix24 {
    /// A client of the portal behind `access`. Its rate limit is kept in `store`, shared with
    /// every process on it; pass [`RATE`] unless the portal is on another plan.
    pub fn new(
        access: Access,
        store: Store,
        rate: Rate,
        mapping: FieldMapping,
        todo_via: TodoVia,
    ) -> Bitrix24 {
        let http = reqwest::Client::builder()
            // The portal stops a request at 60 s; a little more lets its own answer arrive.
            .timeout(Duration::from_secs(65))
            .user_agent(concat!("sales-robot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS");
        let (auth, portal) = match access {
            Access::Webhook(url) => {
                let portal = host_of(url.expose_secret());
                let url = SecretString::from(with_slash(url.expose_secret()));
                (Auth::Webhook(url), portal)
            }
            Access::OAuth {
                client_endpoint,
                token_url,
                client_id,
                client_secret,
            } => {
                let portal = host_of(&client_endpoint);
                let tokens = Tokens::new(
                    http.clone(),
                    &token_url,
                    &client_id,
                    client_secret,
                    store.clone(),
                    &portal,
                );
                let endpoint = with_slash(&client_endpoint);
                let tokens = Box::new(tokens);
                (Auth::OAuth { endpoint, tokens }, portal)
            }
        };
        // One request of the bucket is kept in reserve: the portal counts a request when it
        // arrives, and a later request that travels faster than the first of a burst would
        // otherwise find the bucket still full.
        let reserved = Rate {
            per_second: rate.per_second,
            burst: rate.burst.saturating_sub(1).max(1),
        };
        let limiter = Limiter::new(store, format!("bitrix24:{portal}"), reserved);
        Bitrix24 {
            http,
            auth,
            limiter,
            retries: Retries::default(),
            mapping,
            todo_via,
            entity: B24Entity::Deal,
            resolved: OnceCell::new(),
        }
    }

    /// Works with `entity` as the robot's leads (deals unless told otherwise).
    pub fn with_entity(mut self, entity: B24Entity) -> Bitrix24 {
        self.entity = entity;
        self
    }

    /// Retries with other waits (tests make them short).
    pub fn with_retries(mut self, retries: Retries) -> Bitrix24 {
        self.retries = retries;
        self
    }

    /// The token keeper of an OAuth application (`None` for a webhook).
    pub fn tokens(&self) -> Option<&Tokens> {
        match &self.auth {
            Auth::OAuth { tokens, .. } => Some(tokens),
            Auth::Webhook(_) => None,
        }
    }

    fn refused(&self, method: &str, code: &str, description: &str) -> CrmError {
        let why = describe(code, description);
        CrmError::Unauthorized(match self.auth {
            Auth::Webhook(_) => format!(
                "{method}: Bitrix24 refused the inbound webhook ({why}): check {BITRIX24_WEBHOOK_VAR} \
                 (the URL with its user id and code), that the webhook still exists and has the \
                 crm, task and user permissions, and that the plan allows the REST API"
            ),
            Auth::OAuth { .. } => format!(
                "{method}: Bitrix24 refused the application's token ({why}): re-authorise the \
                 application and check its permissions"
            ),
        })
    }

    /// The wait after `QUERY_LIMIT_EXCEEDED`: about one drain interval, with jitter so that
    /// replicas that hit the limit together do not come back together.
    fn drain_wait(&self) -> Duration {
        let interval = 1.0 / self.limiter.rate().per_second.max(0.01);
        Duration::from_secs_f64(interval * rand::rng().random_range(1.0..2.0))
    }

    /// One call with a JSON body already written: a turn under the rate limit, the webhook or
    /// the token, retries on the limits, 5xx and network errors, one renewal of an expired token.
    async fn send(&self, method: &str, body: &str) -> Result<Answer, Failure> {
        let mut attempt = 0;
        let mut limit_hits = 0;
        let mut renewed = false;
        loop {
            let last: String;
            self.limiter.turn().await?;
            let (url, token) = match &self.auth {
                Auth::Webhook(base) => (format!("{}{method}", base.expose_secret()), None),
                Auth::OAuth { endpoint, tokens } => {
                    (format!("{endpoint}{method}"), Some(tokens.access().await?))
                }
            };
            let mut request = self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_owned());
            if let Some(token) = &token {
                request = request.query(&[("auth", token.expose_secret())]);
            }
            let wait = match request.send().await {
                // `without_url`: the URL holds the webhook code or the token.
                Err(e) => {
                    last = format!("{method}: {}", e.without_url());
                    attempt += 1;
                    self.retries.backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    let parsed: Option<Value> = serde_json::from_str(&text).ok();
                    if let Some(body) = parsed.as_ref().filter(|_| (200..300).contains(&status))
                        && let Some(result) = body.get("result")
                    {
                        return Ok(Answer {
                            result: result.clone(),
                            next: body.get("next").and_then(Value::as_u64),
                        });
                    }
                    let (code, description) = error_of(parsed.as_ref(), &text);
                    last = format!("{method}: {status} {}", describe(&code, &description));
                    match classify(Some(status), &code, &description) {
                        Class::Limit if limit_hits < LIMIT_HITS => {
                            limit_hits += 1;
                            retry_after(&headers).unwrap_or_else(|| self.drain_wait())
                        }
                        Class::Limit => return Err(CrmError::Unavailable(last).into()),
                        Class::TimeLimit => {
                            attempt += 1;
                            // The budget is counted over 10 minutes: a short wait rarely helps.
                            retry_after(&headers)
                                .unwrap_or_else(|| self.retries.backoff(attempt + 2))
                        }
                        Class::Expired => match (&self.auth, &token) {
                            (Auth::OAuth { tokens, .. }, Some(token)) if !renewed => {
                                renewed = true;
                                tokens.renew(token).await?;
                                continue;
                            }
                            _ => return Err(self.refused(method, &code, &description).into()),
                        },
                        Class::Auth => {
                            return Err(self.refused(method, &code, &description).into());
                        }
                        Class::Server => {
                            attempt += 1;
                            self.retries.backoff(attempt)
                        }
                        Class::NotFound => return Err(Failure::NotFound(last)),
                        Class::NoMethod => {
                            return Err(CrmError::Rejected(format!(
                                "{last} (the portal has no method {method}: is its module on and \
                                 its permission granted?)"
                            ))
                            .into());
                        }
                        Class::Rejected if (200..300).contains(&status) && parsed.is_none() => {
                            return Err(CrmError::Unexpected(last).into());
                        }
                        Class::Rejected => return Err(CrmError::Rejected(last).into()),
                    }
                }
            };
            if attempt >= self.retries.attempts {
                return Err(CrmError::Unavailable(last).into());
            }
            tracing::warn!(error = %last, retry_in = ?wait, "Bitrix24 call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn request(&self, method: &str, params: &Value) -> Result<Answer, Failure> {
        self.send(method, &params.to_string()).await
    }

    /// Calls a REST method with `params` and answers its `result` (for `crm check` and the like).
    pub async fn call(&self, method: &str, params: &Value) -> Result<Value, CrmError> {
        self.request(method, params)
            .await
            .required()
            .map(|a| a.result)
    }

    /// Runs `commands` (key, `method?query`) in one request per 50, in order; answers each
    /// command's own outcome by its key.
    async fn batch(
        &self,
        commands: &[(String, String)],
        halt: bool,
    ) -> Result<BTreeMap<String, Result<Answer, Failure>>, CrmError> {
        let mut outcomes = BTreeMap::new();
        for chunk in commands.chunks(BATCH) {
            let answer = self
                .send("batch", &batch_body(chunk, halt))
                .await
                .required()?;
            let r = &answer.result;
            let results = r.get("result").unwrap_or(&Value::Null);
            let errors = r.get("result_error").unwrap_or(&Value::Null);
            let nexts = r.get("result_next").unwrap_or(&Value::Null);
            for (key, cmd) in chunk {
                let method = cmd.split('?').next().unwrap_or(cmd);
                let outcome = if let Some(result) = part(results, key) {
                    Ok(Answer {
                        result: result.clone(),
                        next: part(nexts, key).and_then(Value::as_u64),
                    })
                } else if let Some(error) = part(errors, key) {
                    let (code, description) = error_of(Some(error), "");
                    let what = format!("{method}: {}", describe(&code, &description));
                    Err(match classify(None, &code, &description) {
                        Class::NotFound => Failure::NotFound(what),
                        Class::Limit | Class::TimeLimit | Class::Server => {
                            Failure::Crm(CrmError::Unavailable(what))
                        }
                        Class::Auth | Class::Expired => {
                            Failure::Crm(self.refused(method, &code, &description))
                        }
                        Class::NoMethod | Class::Rejected => Failure::Crm(CrmError::Rejected(what)),
                    })
                } else {
                    Err(Failure::Crm(CrmError::Unavailable(format!(
                        "{method}: not run (an earlier command of the batch failed)"
                    ))))
                };
                outcomes.insert(key.clone(), outcome);
            }
        }
        Ok(outcomes)
    }

    /// Every page of a list method to the end, by `start` and `next`; `items` picks the rows
    /// out of a page's `result`.
    async fn list_all(
        &self,
        method: &str,
        params: Value,
        items: impl Fn(&Value) -> Vec<Value>,
    ) -> Result<Vec<Value>, CrmError> {
        self.list_from(method, params, items, 0).await
    }

    /// The pages of a list from `start` on.
    async fn list_from(
        &self,
        method: &str,
        params: Value,
        items: impl Fn(&Value) -> Vec<Value>,
        mut start: u64,
    ) -> Result<Vec<Value>, CrmError> {
        let mut rows = Vec::new();
        loop {
            let mut page = params.clone();
            page["start"] = json!(start);
            let answer = self.request(method, &page).await.required()?;
            rows.extend(items(&answer.result));
            match answer.next {
                Some(next) if next > start => start = next,
                _ => break,
            }
        }
        Ok(rows)
    }

    /// The deal funnels, the default one (id 0) first.
    async fn funnels(&self) -> Result<Vec<Named>, CrmError> {
        let categories = |r: &Value| r.get("categories").map(rows).unwrap_or_default();
        let params = json!({"entityTypeId": DEAL_TYPE});
        match self.list_all("crm.category.list", params, categories).await {
            Ok(list) => Ok(list
                .iter()
                .filter_map(|c| {
                    Some(Named {
                        id: id_of(c.get("id")?)?,
                        name: text(c, "name"),
                    })
                })
                .collect()),
            // Portals without the universal API: the old method lists the added funnels only.
            Err(CrmError::Rejected(msg)) if msg.contains("ERROR_METHOD_NOT_FOUND") => {
                let old = self
                    .list_all("crm.dealcategory.list", json!({}), rows)
                    .await?;
                Ok(std::iter::once(Named {
                    id: "0".into(),
                    name: "Общая".into(),
                })
                .chain(old.iter().filter_map(|c| {
                    Some(Named {
                        id: id_of(c.get("ID")?)?,
                        name: text(c, "NAME"),
                    })
                }))
                .collect())
            }
            Err(e) => Err(e),
        }
    }

    async fn resolved(&self) -> Result<&Resolved, CrmError> {
        self.resolved
            .get_or_try_init(|| async {
                let (resolved, missing) = self.resolve_fields().await?;
                if !missing.is_empty() {
                    tracing::warn!(missing = ?missing, "custom fields of the config that the Bitrix24 portal does not have are skipped");
                }
                Ok(resolved)
            })
            .await
    }

    /// Reads `crm.deal.fields` (`crm.lead.fields` for leads), `crm.contact.fields` and
    /// `crm.company.fields` (those mapped) in one batch and resolves the mapping against them.
    async fn resolve_fields(&self) -> Result<(Resolved, Vec<String>), CrmError> {
        let kinds = [
            (self.entity.name(), &self.mapping.leads),
            ("contact", &self.mapping.contacts),
            ("company", &self.mapping.companies),
        ];
        let commands: Vec<(String, String)> = kinds
            .iter()
            .filter(|(_, wanted)| !wanted.is_empty())
            .map(|(kind, _)| ((*kind).to_owned(), format!("crm.{kind}.fields")))
            .collect();
        let mut answers = if commands.is_empty() {
            BTreeMap::new()
        } else {
            self.batch(&commands, false).await?
        };
        let mut missing = Vec::new();
        let mut schemas = Vec::new();
        for (kind, wanted) in kinds {
            let Some(answer) = answers.remove(kind) else {
                schemas.push(Schema::default());
                continue;
            };
            let described = answer.required()?.result;
            let (account, info) = account_fields(&described);
            let (resolved, m) = ResolvedFields::resolve(wanted, &account);
            missing.extend(
                m.into_iter()
                    .map(|m| format!("{kind} field {}", m.replace("the account", "the portal"))),
            );
            schemas.push(Schema {
                ours: wanted.keys().cloned().collect(),
                resolved,
                info,
            });
        }
        let mut schemas = schemas.into_iter();
        let mut next = || schemas.next().unwrap_or_default();
        Ok((
            Resolved {
                deals: next(),
                contacts: next(),
                companies: next(),
            },
            missing,
        ))
    }

    /// What of the config the portal lacks: mapped fields it does not have, for `crm check`.
    pub async fn check_fields(&self) -> Result<Vec<String>, CrmError> {
        Ok(self.resolve_fields().await?.1)
    }

    fn read_deal(v: &Value, schema: &Schema, entity: B24Entity) -> Option<Lead> {
        let fields = schema.read(v);
        let tags = match fields.get("tags") {
            Some(FieldValue::Many(items)) => items.clone(),
            Some(one) => one
                .as_text()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        Some(Lead {
            id: id_of(v.get("ID")?)?,
            name: text(v, "TITLE"),
            budget: v.get("OPPORTUNITY").and_then(number).filter(|n| *n > 0.0),
            status_id: text(v, stage_field(entity)),
            // CRM leads have no `CATEGORY_ID`: their one pipeline is "0".
            pipeline_id: v
                .get("CATEGORY_ID")
                .and_then(id_of)
                .unwrap_or_else(|| "0".into()),
            responsible_user_id: real_id(v.get("ASSIGNED_BY_ID")),
            tags,
            loss_reason: fields.get("loss_reason").map(FieldValue::as_text),
            fields,
            contacts: Vec::new(),
            company: None,
            created_at: unix(v, "DATE_CREATE"),
            updated_at: unix(v, "DATE_MODIFY"),
            updated_by: real_id(v.get("MODIFY_BY_ID")),
        })
    }

    fn read_contact(v: &Value, schema: &Schema) -> Option<Contact> {
        Some(Contact {
            id: id_of(v.get("ID")?)?,
            name: person_name(v),
            first_name: Some(text(v, "NAME")).filter(|n| !n.trim().is_empty()),
            phones: multifield(v, "PHONE"),
            emails: multifield(v, "EMAIL"),
            is_main: false,
            fields: schema.read(v),
        })
    }

    /// The robot's kind of to-dos: the open ones (`since` none), or every one, open or
    /// done, changed at or after `since`. `crm.activity.list` filters on `LAST_UPDATED`
    /// (https://apidocs.bitrix24.ru/api-reference/crm/timeline/activities/activity-base/crm-activity-list.html),
    /// `tasks.task.list` on `CHANGED_DATE`
    /// (https://apidocs.bitrix24.ru/api-reference/tasks/tasks-task-list.html).
    async fn todos(&self, since: Option<i64>) -> Result<Vec<Task>, CrmError> {
        match self.todo_via {
            TodoVia::Activity => {
                // Only the robot's kind of activity: without PROVIDER_ID the portal lists
                // every call, e-mail and app activity the webhook user can see.
                let filter = match since {
                    None => json!({"COMPLETED": "N", "PROVIDER_ID": "CRM_TODO"}),
                    Some(t) => json!({">=LAST_UPDATED": iso(t), "PROVIDER_ID": "CRM_TODO"}),
                };
                let params = json!({
                    "filter": filter,
                    "select": ["ID", "OWNER_TYPE_ID", "OWNER_ID", "TYPE_ID", "SUBJECT",
                               "DESCRIPTION", "DEADLINE", "RESPONSIBLE_ID", "COMPLETED",
                               "CREATED", "LAST_UPDATED", "EDITOR_ID"],
                    "order": {"ID": "ASC"},
                });
                let items = self.list_all("crm.activity.list", params, rows).await?;
                Ok(items
                    .iter()
                    .filter(|a| since.is_some() || text(a, "COMPLETED") != "Y")
                    .filter_map(|a| {
                        let description = text(a, "DESCRIPTION");
                        Some(Task {
                            id: id_of(a.get("ID")?)?,
                            kind: activity_kind(
                                a.get("TYPE_ID").and_then(number).map(|n| n as u64),
                            ),
                            text: if description.trim().is_empty() {
                                text(a, "SUBJECT")
                            } else {
                                description
                            },
                            deadline: unix(a, "DEADLINE"),
                            responsible_user_id: text(a, "RESPONSIBLE_ID"),
                            entity: entity_of_owner(
                                a.get("OWNER_TYPE_ID").and_then(number).map(|n| n as u64),
                                real_id(a.get("OWNER_ID")),
                                self.entity,
                            ),
                            completed: text(a, "COMPLETED") == "Y",
                            created_at: unix(a, "CREATED"),
                            updated_at: unix(a, "LAST_UPDATED"),
                            updated_by: real_id(a.get("EDITOR_ID")),
                        })
                    })
                    .collect())
            }
            TodoVia::Task => {
                let filter = match since {
                    None => json!({"!REAL_STATUS": 5}),
                    Some(t) => json!({">=CHANGED_DATE": iso(t)}),
                };
                let params = json!({
                    "filter": filter,
                    "select": ["ID", "TITLE", "DESCRIPTION", "DEADLINE", "RESPONSIBLE_ID",
                               "UF_CRM_TASK", "STATUS", "CREATED_DATE", "CHANGED_DATE",
                               "CHANGED_BY"],
                    "order": {"ID": "ASC"},
                });
                let items = self
                    .list_all("tasks.task.list", params, |r| {
                        r.get("tasks").map(rows).unwrap_or_default()
                    })
                    .await?;
                Ok(items
                    .iter()
                    .filter(|t| since.is_some() || text(t, "status") != "5")
                    .filter_map(|t| {
                        let description = text(t, "description");
                        Some(Task {
                            id: id_of(t.get("id")?)?,
                            kind: TaskKind::Other,
                            text: if description.trim().is_empty() {
                                text(t, "title")
                            } else {
                                description
                            },
                            deadline: unix(t, "deadline"),
                            responsible_user_id: text(t, "responsibleId"),
                            entity: t
                                .get("ufCrmTask")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .find_map(|b| entity_of_binding(b, self.entity)),
                            completed: text(t, "status") == "5",
                            created_at: unix(t, "createdDate"),
                            updated_at: unix(t, "changedDate"),
                            updated_by: real_id(t.get("changedBy")),
                        })
                    })
                    .collect())
            }
        }
    }

    fn read_company(v: &Value, schema: &Schema) -> Option<Company> {
        Some(Company {
            id: id_of(v.get("ID")?)?,
            name: text(v, "TITLE"),
            responsible_user_id: real_id(v.get("ASSIGNED_BY_ID")),
            fields: schema.read(v),
            created_at: unix(v, "DATE_CREATE"),
            updated_at: unix(v, "DATE_MODIFY"),
            updated_by: real_id(v.get("MODIFY_BY_ID")),
        })
    }

    async fn update(
        &self,
        entity: &str,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), CrmError> {
        self.request(
            &format!("crm.{entity}.update"),
            &json!({"id": numeric(id), "fields": fields}),
        )
        .await
        .required()
        .map(|_| ())
    }

    async fn comment(&self, kind: EntityKind, id: &str, text: &str) -> Result<(), CrmError> {
        // Lower-case `fields`: the only spelling the method takes since crm 23.100.0.
        let params = json!({"fields": {
            "ENTITY_TYPE": timeline_type(kind, self.entity),
            "ENTITY_ID": numeric(id),
            "COMMENT": text,
        }});
        self.request("crm.timeline.comment.add", &params)
            .await
            .required()
            .map(|_| ())
    }

    async fn complete_activity(&self, id: &str, result: &str) -> Result<(), CrmError> {
        // `crm.activity.update` is marked deprecated for `crm.activity.todo.update`, which
        // cannot complete a to-do: `COMPLETED=Y` through it is still the documented way.
        let commands = vec![
            (
                "activity".to_owned(),
                command("crm.activity.get", &[("id", id)]),
            ),
            (
                "done".to_owned(),
                command(
                    "crm.activity.update",
                    &[("id", id), ("fields[COMPLETED]", "Y")],
                ),
            ),
        ];
        let mut outcomes = self.batch(&commands, true).await?;
        let activity = match outcomes.remove("activity").map(Found::found) {
            Some(Ok(Some(answer))) => answer.result,
            Some(Ok(None)) => {
                tracing::warn!(task = %id, "the Bitrix24 to-do to complete is gone");
                return Ok(());
            }
            Some(Err(e)) => return Err(e),
            None => Value::Null,
        };
        outcomes.remove("done").map(Found::required).transpose()?;
        // An activity has no result of its own: the result goes to its record's timeline.
        if !result.trim().is_empty()
            && let Some(owner) = entity_of_owner(
                activity
                    .get("OWNER_TYPE_ID")
                    .and_then(number)
                    .map(|n| n as u64),
                real_id(activity.get("OWNER_ID")),
                self.entity,
            )
        {
            let subject = text(&activity, "SUBJECT");
            self.comment(
                owner.kind,
                &owner.id,
                &format!("«{subject}» — выполнено: {result}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn complete_task_item(&self, id: &str, result: &str) -> Result<(), CrmError> {
        let mut commands = Vec::new();
        if !result.trim().is_empty() {
            commands.push((
                "result".to_owned(),
                command(
                    "task.commentitem.add",
                    &[("TASKID", id), ("FIELDS[POST_MESSAGE]", result)],
                ),
            ));
        }
        commands.push((
            "done".to_owned(),
            command("tasks.task.complete", &[("taskId", id)]),
        ));
        let mut outcomes = self.batch(&commands, false).await?;
        if let Some(Err(e)) = outcomes.remove("result").map(Found::required) {
            // The result is a courtesy; the completion is what matters.
            tracing::warn!(task = %id, error = %e, "could not write the result to the Bitrix24 task");
        }
        match outcomes.remove("done").map(Found::found) {
            Some(Ok(Some(_))) | None => Ok(()),
            Some(Ok(None)) => {
                tracing::warn!(task = %id, "the Bitrix24 task to complete is gone");
                Ok(())
            }
            // The portal's answer for a task that is gone or already closed (a manager closed
            // it in the UI): the wish is fulfilled either way.
            Some(Err(CrmError::Rejected(message)))
                if message.contains("Action on the task is not allowed") =>
            {
                tracing::info!(task = %id, "the Bitrix24 task is already closed or gone");
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }
}

/// The portal's description of a kind's fields, as the names a config may use (the code and
/// every label) and how each field is read and written.
fn account_fields(described: &Value) -> (Vec<AccountField>, BTreeMap<String, FieldInfo>) {
    let mut account = Vec::new();
    let mut info = BTreeMap::new();
    let Some(fields) = described.as_object() else {
        return (account, info);
    };
    for (code, d) in fields {
        let ty = d.get("type").and_then(Value::as_str).unwrap_or_default();
        let kind = match ty {
            "double" | "integer" => FieldKind::Number,
            "enumeration" => FieldKind::List(
                d.get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| Some((id_of(i.get("ID")?)?, text(i, "VALUE"))))
                    .collect(),
            ),
            _ => FieldKind::Text,
        };
        let numeric = kind == FieldKind::Number;
        let mut names: Vec<String> = vec![code.clone()];
        for key in ["title", "listLabel", "formLabel", "filterLabel"] {
            let name = text(d, key);
            if !name.trim().is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            account.push(AccountField {
                id: code.clone(),
                name,
                numeric,
            });
        }
        info.insert(
            code.clone(),
            FieldInfo {
                kind,
                multiple: d
                    .get("isMultiple")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        );
    }
    (account, info)
}

/// The error of a batch update from the deals that failed, each named: a refused credential
/// first (a person must act), then a passing failure (the whole burst is retried: its updates
/// set values, so running them again is harmless), else the refusals.
fn refusal(failed: Vec<(String, CrmError)>, total: usize, what: &str) -> Result<(), CrmError> {
    if failed.is_empty() {
        return Ok(());
    }
    let mut unauthorized = None;
    let mut unavailable = false;
    let mut lines = Vec::new();
    for (id, e) in &failed {
        let why = match e {
            CrmError::Unauthorized(why) => {
                unauthorized.get_or_insert_with(|| why.clone());
                why.clone()
            }
            CrmError::Unavailable(why) => {
                unavailable = true;
                why.clone()
            }
            CrmError::Store(e) => {
                unavailable = true;
                e.to_string()
            }
            CrmError::Rejected(why) | CrmError::Unexpected(why) => why.clone(),
        };
        lines.push(format!("{what} {id}: {why}"));
    }
    if let Some(why) = unauthorized {
        return Err(CrmError::Unauthorized(why));
    }
    // A deal whose move and update both failed is named once.
    let mut ids: Vec<&str> = Vec::new();
    for (id, _) in &failed {
        if !ids.contains(&id.as_str()) {
            ids.push(id);
        }
    }
    let text = format!(
        "{} of {total} {what}s not updated ({}): {}",
        ids.len(),
        ids.join(", "),
        lines.join("; ")
    );
    Err(if unavailable {
        CrmError::Unavailable(text)
    } else {
        CrmError::Rejected(text)
    })
}

/// What one update asks of the portal for a deal.
#[derive(Debug, Default)]
struct DealChange {
    /// The `crm.item.update` fields of a move to another funnel, which `crm.deal.update`
    /// cannot do.
    moved: Option<Map<String, Value>>,
    /// The `crm.deal.update` fields.
    fields: Map<String, Value>,
}

/// Whether an update needs the deal fields' descriptions (mapped fields, the loss reason, tags).
fn needs_schema(update: &LeadUpdate) -> bool {
    !update.fields.is_empty() || update.loss_reason_id.is_some() || update.changes_tags()
}

/// The mapped `tags` field when the update adds tags: deals have no tags, so they live in a
/// field whose value is replaced whole, and the deal must be read first.
fn tags_field<'a>(update: &LeadUpdate, schema: &'a Schema) -> Option<(&'a str, &'a FieldInfo)> {
    if !update.changes_tags() {
        return None;
    }
    schema.get("tags")
}

/// One deal's change. `schema` is the deal fields' (an empty one when the update needs
/// none); `current` is the deal as `crm.deal.get` gives it, read when [`tags_field`] says so.
fn deal_change(
    update: &LeadUpdate,
    schema: &Schema,
    current: Option<&Value>,
    entity: B24Entity,
) -> Result<DealChange, CrmError> {
    let mut fields = Map::new();
    if let Some(v) = &update.responsible_user_id {
        fields.insert("ASSIGNED_BY_ID".into(), numeric(v));
    }
    if let Some(v) = update.budget {
        fields.insert("OPPORTUNITY".into(), json!(v));
    }
    fields.extend(schema.write(&update.fields, entity.name())?);
    if let Some(reason) = &update.loss_reason_id {
        match schema.get("loss_reason") {
            // The reason's id is the list item's id, as `loss_reasons` gives it.
            Some((code, info)) => {
                let value = match &info.kind {
                    FieldKind::List(_) => numeric(reason),
                    _ => Value::from(reason.as_str()),
                };
                fields.insert(code.to_owned(), value);
            }
            None => tracing::warn!(
                "no `loss_reason` deal field is mapped: the loss reason is not written"
            ),
        }
    }
    if update.changes_tags() {
        match tags_field(update, schema) {
            Some((code, info)) => {
                let tags = match current
                    .and_then(|c| c.get(code))
                    .and_then(|v| Schema::read_value(v, info))
                {
                    Some(FieldValue::Many(items)) => items,
                    Some(one) => one
                        .as_text()
                        .split(',')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect(),
                    None => Vec::new(),
                };
                let tags = update.tags_after(&tags);
                let value = Schema::write_value("tags", code, info, &FieldValue::Many(tags))?;
                fields.insert(code.to_owned(), value);
            }
            None => tracing::debug!(
                tags = ?update.add_tags,
                "Bitrix24 deals have no tags and no `tags` field is mapped: skipped"
            ),
        }
    }
    let mut moved = None;
    // CRM leads have one pipeline, "0": there is nowhere to move them.
    let pipeline = match (entity, &update.pipeline_id) {
        (B24Entity::Lead, Some(p)) => {
            if p != "0" {
                tracing::warn!(pipeline = %p, "Bitrix24 leads have no funnels: the move is skipped");
            }
            None
        }
        (_, p) => p.as_ref(),
    };
    match (pipeline, &update.status_id) {
        (Some(pipeline), stage) => {
            let mut to = Map::new();
            to.insert("categoryId".into(), numeric(pipeline));
            if let Some(stage) = stage {
                to.insert("stageId".into(), Value::from(stage.as_str()));
            }
            moved = Some(to);
        }
        (None, Some(stage)) => {
            fields.insert(stage_field(entity).into(), Value::from(stage.as_str()));
        }
        (None, None) => {}
    }
    Ok(DealChange { moved, fields })
}

/// The `crm.item.update` parameters of a deal's move to another funnel.
fn move_params(id: &str, moved: Map<String, Value>) -> Value {
    json!({"entityTypeId": DEAL_TYPE, "id": numeric(id), "fields": moved})
}

/// Flattens JSON parameters into form pairs, `fields[UF_CRM_X][0]=47`, as PHP's `parse_str`
/// rebuilds them.
fn form_pairs(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}[{k}]")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                form_pairs(&key(k), v, out);
            }
        }
        // An empty list would vanish from a form: an empty value clears the field instead.
        Value::Array(items) if items.is_empty() => out.push((prefix.to_owned(), String::new())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                form_pairs(&key(&i.to_string()), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Number(n) => out.push((prefix.to_owned(), n.to_string())),
        // The CRM's yes/no fields take Y and N.
        Value::Bool(b) => out.push((prefix.to_owned(), if *b { "Y" } else { "N" }.to_owned())),
        Value::Null => out.push((prefix.to_owned(), String::new())),
    }
}

/// One `batch` command from the parameters a direct call would send as JSON.
fn command_of(method: &str, params: &Value) -> String {
    let mut pairs = Vec::new();
    form_pairs("", params, &mut pairs);
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    command(method, &refs)
}

/// A CRM lead's contacts from its own fields, the first as the main one: `CONTACT_IDS` where
/// the portal gives it, else the single `CONTACT_ID` (the emulator has no
/// `crm.lead.contact.items.get`, and the fields save a request).
fn lead_contacts(lead: &Value) -> Vec<(String, bool)> {
    let mut ids: Vec<String> = match lead.get("CONTACT_IDS") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| real_id(Some(v))).collect(),
        _ => Vec::new(),
    };
    if ids.is_empty() {
        ids.extend(real_id(lead.get("CONTACT_ID")));
    }
    ids.dedup();
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| (id, i == 0))
        .collect()
}

fn rows(result: &Value) -> Vec<Value> {
    result.as_array().cloned().unwrap_or_default()
}

#[async_trait]
impl Crm for Bitrix24 {
    async fn lead(&self, id: &str) -> Result<Option<Lead>, CrmError> {
        let resolved = self.resolved().await?;
        let mut first = vec![(
            "deal".to_owned(),
            command(&method_of(self.entity, "get"), &[("id", id)]),
        )];
        // A CRM lead names its contacts in its own fields (read below).
        if self.entity == B24Entity::Deal {
            first.push((
                "links".to_owned(),
                command("crm.deal.contact.items.get", &[("id", id)]),
            ));
        }
        let mut outcomes = self.batch(&first, true).await?;
        let Some(deal) = outcomes
            .remove("deal")
            .map(Found::found)
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let Some(mut lead) = Self::read_deal(&deal.result, &resolved.deals, self.entity) else {
            return Err(CrmError::Unexpected(format!(
                "{} {id} has no ID in Bitrix24's answer",
                self.entity.name()
            )));
        };
        let links: Vec<(String, bool)> = match self.entity {
            B24Entity::Deal => outcomes
                .remove("links")
                .map(Found::found)
                .transpose()?
                .flatten()
                .map(|a| rows(&a.result))
                .unwrap_or_default()
                .iter()
                .filter_map(|l| {
                    Some((
                        real_id(l.get("CONTACT_ID"))?,
                        l.get("IS_PRIMARY").and_then(Value::as_str) == Some("Y"),
                    ))
                })
                .collect(),
            B24Entity::Lead => lead_contacts(&deal.result),
        };
        // The contacts and the company in one more request.
        let mut second: Vec<(String, String)> = links
            .iter()
            .map(|(c, _)| {
                (
                    format!("contact_{c}"),
                    command("crm.contact.get", &[("id", c)]),
                )
            })
            .collect();
        let company_id = real_id(deal.result.get("COMPANY_ID"));
        if let Some(company) = &company_id {
            second.push((
                "company".to_owned(),
                command("crm.company.get", &[("id", company)]),
            ));
        }
        if second.is_empty() {
            return Ok(Some(lead));
        }
        let mut outcomes = self.batch(&second, false).await?;
        for (contact_id, primary) in &links {
            let key = format!("contact_{contact_id}");
            // A contact deleted since it was linked is simply left out.
            if let Some(answer) = outcomes
                .remove(&key)
                .map(Found::found)
                .transpose()?
                .flatten()
                && let Some(mut contact) = Self::read_contact(&answer.result, &resolved.contacts)
            {
                contact.is_main = *primary;
                lead.contacts.push(contact);
            }
        }
        lead.contacts.sort_by_key(|c| !c.is_main);
        if let Some(answer) = outcomes
            .remove("company")
            .map(Found::found)
            .transpose()?
            .flatten()
        {
            lead.company = Self::read_company(&answer.result, &resolved.companies);
        }
        Ok(Some(lead))
    }

    async fn lead_products(&self, id: &str) -> Result<Vec<Product>, CrmError> {
        // `crm.deal.productrows.get` / `crm.lead.productrows.get`: the rows with
        // `PRODUCT_NAME`, `PRICE` (one, discounts and taxes in) and `QUANTITY`. A row has no
        // brand: Bitrix24 keeps it, where at all, in the catalog's own properties.
        let result = self
            .call(
                &method_of(self.entity, "productrows.get"),
                &json!({"id": numeric(id)}),
            )
            .await?;
        Ok(rows(&result)
            .iter()
            .filter_map(|row| {
                Some(Product {
                    name: row.get("PRODUCT_NAME")?.as_str()?.trim().to_owned(),
                    brand: None,
                    quantity: row.get("QUANTITY").and_then(number),
                    price: row.get("PRICE").and_then(number),
                })
            })
            .filter(|p| !p.name.is_empty())
            .collect())
    }

    async fn update_lead(&self, id: &str, update: &LeadUpdate) -> Result<(), CrmError> {
        if update.is_empty() {
            return Ok(());
        }
        let none = Schema::default();
        let schema = if needs_schema(update) {
            &self.resolved().await?.deals
        } else {
            &none
        };
        let current = match tags_field(update, schema) {
            Some(_) => Some(
                self.request(&method_of(self.entity, "get"), &json!({"id": numeric(id)}))
                    .await
                    .required()?
                    .result,
            ),
            None => None,
        };
        let change = deal_change(update, schema, current.as_ref(), self.entity)?;
        if let Some(moved) = change.moved {
            self.request("crm.item.update", &move_params(id, moved))
                .await
                .required()?;
        }
        if change.fields.is_empty() {
            return Ok(());
        }
        self.update(self.entity.name(), id, change.fields).await
    }

    async fn update_leads(&self, updates: &[(String, LeadUpdate)]) -> Result<(), CrmError> {
        let updates = merged(updates);
        if updates.is_empty() {
            return Ok(());
        }
        let none = Schema::default();
        let schema = if updates.iter().any(|(_, u)| needs_schema(u)) {
            &self.resolved().await?.deals
        } else {
            &none
        };
        let mut failed: Vec<(String, CrmError)> = Vec::new();
        let (get, set) = (
            method_of(self.entity, "get"),
            method_of(self.entity, "update"),
        );
        // The deals whose tags grow are read first, 50 to a batch: the field is replaced whole.
        let reads: Vec<(String, String)> = updates
            .iter()
            .filter(|(_, u)| tags_field(u, schema).is_some())
            .map(|(id, _)| (format!("get{id}"), command(&get, &[("id", id)])))
            .collect();
        let mut current = if reads.is_empty() {
            BTreeMap::new()
        } else {
            self.batch(&reads, false).await?
        };
        let mut commands: Vec<(String, String)> = Vec::new();
        let mut deal_of: BTreeMap<String, &str> = BTreeMap::new();
        for (id, update) in &updates {
            let deal = match current.remove(&format!("get{id}")).map(Found::required) {
                Some(Ok(answer)) => Some(answer.result),
                Some(Err(e)) => {
                    failed.push((id.clone(), e));
                    continue;
                }
                None => None,
            };
            let change = match deal_change(update, schema, deal.as_ref(), self.entity) {
                Ok(change) => change,
                Err(e) => {
                    failed.push((id.clone(), e));
                    continue;
                }
            };
            // The move goes first, as in `update_lead`: a stage of the new funnel needs it.
            if let Some(moved) = change.moved {
                let key = format!("move{id}");
                commands.push((
                    key.clone(),
                    command_of("crm.item.update", &move_params(id, moved)),
                ));
                deal_of.insert(key, id);
            }
            if !change.fields.is_empty() {
                let key = format!("deal{id}");
                let params = json!({"id": numeric(id), "fields": change.fields});
                commands.push((key.clone(), command_of(&set, &params)));
                deal_of.insert(key, id);
            }
        }
        if !commands.is_empty() {
            // No halt: one refused deal must not hold back the others of its batch.
            for (key, outcome) in self.batch(&commands, false).await? {
                if let Err(e) = outcome.required() {
                    failed.push((deal_of.get(&key).copied().unwrap_or_default().to_owned(), e));
                }
            }
        }
        refusal(failed, updates.len(), self.entity.name())
    }

    async fn leads(&self, filter: &LeadFilter) -> Result<Vec<Lead>, CrmError> {
        let resolved = self.resolved().await?;
        let mut f = Map::new();
        let mut add = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                f.insert(k.to_owned(), v);
            }
        };
        add(">=DATE_CREATE", filter.created_from.map(|t| iso(t).into()));
        add("<DATE_CREATE", filter.created_to.map(|t| iso(t).into()));
        add(">=DATE_MODIFY", filter.updated_from.map(|t| iso(t).into()));
        add(
            stage_field(self.entity),
            filter.status_id.as_deref().map(Value::from),
        );
        match self.entity {
            B24Entity::Deal => add("CATEGORY_ID", filter.pipeline_id.as_deref().map(numeric)),
            // The one pipeline of CRM leads is "0": any other holds none.
            B24Entity::Lead if filter.pipeline_id.as_deref().is_some_and(|p| p != "0") => {
                return Ok(Vec::new());
            }
            B24Entity::Lead => {}
        }
        add(
            "ASSIGNED_BY_ID",
            filter.responsible_user_id.as_deref().map(numeric),
        );
        let params = json!({
            "filter": f,
            "select": ["*", "UF_*"],
            "order": {"ID": "ASC"},
        });
        let items = self
            .list_all(&method_of(self.entity, "list"), params, rows)
            .await?;
        Ok(items
            .iter()
            .filter_map(|v| Self::read_deal(v, &resolved.deals, self.entity))
            .collect())
    }

    async fn client_leads(&self, client: &Client) -> Result<Vec<Lead>, CrmError> {
        let id = client.checked_id()?;
        // `crm.deal.list` (`crm.lead.list`) filters on the record's own `COMPANY_ID` and
        // `CONTACT_ID`. The docs call `CONTACT_ID` deprecated, the one contact of old
        // (crm-deal-get.md), and say the list cannot filter on `CONTACT_IDS`, pointing to
        // `crm.item.list` for that (crm-deal-list.md). So a person's deals here are those
        // where they are the primary contact; a deal that names them only among its other
        // contacts is missed. Chosen anyway: it stays one request per 50 in the upper-case
        // shape every other read here takes, and a company's history has no such gap.
        let key = match client {
            Client::Company(_) => "COMPANY_ID",
            Client::Contact(_) => "CONTACT_ID",
        };
        let mut filter = Map::new();
        filter.insert(key.to_owned(), numeric(id));
        // Only what the history needs: no custom fields, no multifields.
        let mut select = vec![
            "ID",
            "TITLE",
            stage_field(self.entity),
            "OPPORTUNITY",
            "ASSIGNED_BY_ID",
            "DATE_CREATE",
            "DATE_MODIFY",
            "MODIFY_BY_ID",
        ];
        if self.entity == B24Entity::Deal {
            select.push("CATEGORY_ID");
        }
        let params = json!({"filter": filter, "select": select, "order": {"ID": "ASC"}});
        let items = self
            .list_all(&method_of(self.entity, "list"), params, rows)
            .await?;
        let none = Schema::default();
        Ok(items
            .iter()
            .filter_map(|v| Self::read_deal(v, &none, self.entity))
            .collect())
    }

    async fn create_task(&self, task: &NewTask) -> Result<String, CrmError> {
        let answer = match self.todo_via {
            TodoVia::Activity => {
                let params = json!({
                    "ownerTypeId": owner_type(task.entity.kind, self.entity),
                    "ownerId": numeric(&task.entity.id),
                    "deadline": iso(task.deadline),
                    "title": title_of(&task.text),
                    "description": task.text,
                    "responsibleId": numeric(&task.responsible_user_id),
                });
                self.request("crm.activity.todo.add", &params)
                    .await
                    .required()?
                    .result
                    .get("id")
                    .and_then(id_of)
            }
            TodoVia::Task => {
                let params = json!({"fields": {
                    "TITLE": title_of(&task.text),
                    "DESCRIPTION": task.text,
                    "DEADLINE": iso(task.deadline),
                    "RESPONSIBLE_ID": numeric(&task.responsible_user_id),
                    "UF_CRM_TASK": [task_binding(&task.entity, self.entity)],
                }});
                let result = self
                    .request("tasks.task.add", &params)
                    .await
                    .required()?
                    .result;
                result.pointer("/task/id").and_then(id_of)
            }
        };
        answer.ok_or_else(|| {
            CrmError::Unexpected("Bitrix24 created a to-do but did not say its id".into())
        })
    }

    async fn complete_task(&self, id: &str, result: &str) -> Result<(), CrmError> {
        match self.todo_via {
            TodoVia::Activity => self.complete_activity(id, result).await,
            TodoVia::Task => self.complete_task_item(id, result).await,
        }
    }

    async fn open_tasks(&self) -> Result<Vec<Task>, CrmError> {
        self.todos(None).await
    }

    async fn tasks_changed(&self, from: i64) -> Result<Vec<Task>, CrmError> {
        self.todos(Some(from)).await
    }

    async fn add_note(&self, entity: &EntityRef, text: &str) -> Result<(), CrmError> {
        self.comment(entity.kind, &entity.id, text).await
    }

    async fn notes(&self, entity: &EntityRef) -> Result<Vec<String>, CrmError> {
        // `crm.timeline.comment.list` needs both ENTITY_ID and ENTITY_TYPE in the filter:
        // https://dev.1c-bitrix.ru/rest_help/crm/timeline/comment/crm_timeline_comment_list.php
        let params = json!({
            "filter": {
                "ENTITY_ID": numeric(&entity.id),
                "ENTITY_TYPE": timeline_type(entity.kind, self.entity),
            },
            "select": ["ID", "COMMENT"],
        });
        let items = self
            .list_all("crm.timeline.comment.list", params, rows)
            .await?;
        Ok(items.iter().map(|c| text(c, "COMMENT")).collect())
    }

    async fn company(&self, id: &str) -> Result<Option<Company>, CrmError> {
        let resolved = self.resolved().await?;
        Ok(self
            .request("crm.company.get", &json!({"id": numeric(id)}))
            .await
            .found()?
            .and_then(|a| Self::read_company(&a.result, &resolved.companies)))
    }

    async fn companies_changed(&self, from: i64) -> Result<Vec<Company>, CrmError> {
        // `crm.company.list` filters on `DATE_MODIFY` as the deal list does:
        // https://apidocs.bitrix24.ru/api-reference/crm/companies/crm-company-list.html
        let resolved = self.resolved().await?;
        let params = json!({
            "filter": {">=DATE_MODIFY": iso(from)},
            "select": ["*", "UF_*"],
            "order": {"ID": "ASC"},
        });
        let items = self.list_all("crm.company.list", params, rows).await?;
        Ok(items
            .iter()
            .filter_map(|v| Self::read_company(v, &resolved.companies))
            .collect())
    }

    async fn update_company(&self, id: &str, fields: &Fields) -> Result<(), CrmError> {
        let values = self.resolved().await?.companies.write(fields, "company")?;
        if values.is_empty() {
            return Ok(());
        }
        self.update("company", id, values).await
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, CrmError> {
        let resolved = self.resolved().await?;
        Ok(self
            .request("crm.contact.get", &json!({"id": numeric(id)}))
            .await
            .found()?
            .and_then(|a| Self::read_contact(&a.result, &resolved.contacts)))
    }

    async fn update_contact(&self, id: &str, fields: &Fields) -> Result<(), CrmError> {
        let values = self.resolved().await?.contacts.write(fields, "contact")?;
        if values.is_empty() {
            return Ok(());
        }
        self.update("contact", id, values).await
    }

    async fn managers(&self) -> Result<Vec<Manager>, CrmError> {
        // Employees only: extranet guests and e-mail users never take deals.
        let params = json!({"filter": {"USER_TYPE": "employee"}, "sort": "ID", "order": "ASC"});
        let users = self.list_all("user.get", params, rows).await?;
        Ok(users
            .iter()
            .filter_map(|u| {
                let id = id_of(u.get("ID")?)?;
                let name = person_name(u);
                let email = Some(text(u, "EMAIL")).filter(|e| !e.is_empty());
                Some(Manager {
                    name: if name.is_empty() {
                        email.clone().unwrap_or_else(|| id.clone())
                    } else {
                        name
                    },
                    id,
                    email,
                    active: match u.get("ACTIVE") {
                        Some(Value::Bool(b)) => *b,
                        Some(v) => id_of(v).is_some_and(|s| s == "Y" || s == "1" || s == "true"),
                        None => true,
                    },
                })
            })
            .collect())
    }

    async fn stages(&self) -> Result<Vec<Stage>, CrmError> {
        // Each funnel's stages are a directory of their own (`DEAL_STAGE`, `DEAL_STAGE_<n>`);
        // one batch reads them all. The whole `crm.status.list` would be pages of sources,
        // types and industries too. CRM leads have one pipeline, the `STATUS` directory.
        let (funnels, entities): (Vec<Named>, Vec<String>) = match self.entity {
            B24Entity::Deal => self
                .funnels()
                .await?
                .into_iter()
                .map(|f| {
                    let entity = match f.id.as_str() {
                        "0" => "DEAL_STAGE".to_owned(),
                        n => format!("DEAL_STAGE_{n}"),
                    };
                    (f, entity)
                })
                .unzip(),
            B24Entity::Lead => (
                vec![Named {
                    id: "0".into(),
                    name: "Лиды".into(),
                }],
                vec!["STATUS".into()],
            ),
        };
        let commands: Vec<(String, String)> = entities
            .iter()
            .map(|entity| {
                let filter = [
                    ("filter[ENTITY_ID]", entity.as_str()),
                    ("order[SORT]", "ASC"),
                ];
                (entity.clone(), command("crm.status.list", &filter))
            })
            .collect();
        let mut outcomes = self.batch(&commands, false).await?;
        let mut stages = Vec::new();
        for (funnel, entity) in funnels.iter().zip(&entities) {
            let answer = outcomes
                .remove(entity)
                .map(Found::required)
                .transpose()?
                .unwrap_or_default();
            let mut statuses = rows(&answer.result);
            if let Some(next) = answer.next {
                // A funnel of more than 50 stages: read on from where the batch stopped.
                let params = json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}});
                statuses.extend(
                    self.list_from("crm.status.list", params, rows, next)
                        .await?,
                );
            }
            let mut found: Vec<(i64, Stage)> = statuses
                .iter()
                .map(|s| {
                    let sort = s.get("SORT").and_then(number).unwrap_or_default() as i64;
                    let stage = Stage {
                        id: text(s, "STATUS_ID"),
                        name: text(s, "NAME"),
                        pipeline: funnel.clone(),
                    };
                    (sort, stage)
                })
                .collect();
            found.sort_by_key(|(sort, _)| *sort);
            stages.extend(found.into_iter().map(|(_, s)| s));
        }
        Ok(stages)
    }

    async fn loss_reasons(&self) -> Result<Vec<Named>, CrmError> {
        let schema = &self.resolved().await?.deals;
        Ok(match schema.get("loss_reason") {
            Some((
                _,
                FieldInfo {
                    kind: FieldKind::List(items),
                    ..
                },
            )) => items
                .iter()
                .map(|(id, name)| Named {
                    id: id.clone(),
                    name: name.clone(),
                })
                .collect(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_commands_in_order_and_encodes_their_values() {
        let commands = vec![
            ("z".to_owned(), command("crm.deal.get", &[("id", "7")])),
            (
                "a".to_owned(),
                command(
                    "task.commentitem.add",
                    &[("FIELDS[POST_MESSAGE]", "Дозвонились & ок")],
                ),
            ),
        ];
        let body = batch_body(&commands, true);
        assert!(
            body.starts_with(r#"{"halt":1,"cmd":{"z":"crm.deal.get?id=7","a":"#),
            "{body}"
        );
        assert!(body.contains("FIELDS[POST_MESSAGE]=%D0%94"), "{body}");
        assert!(body.contains("%20%26%20"), "{body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["cmd"]["z"], "crm.deal.get?id=7");
    }

    #[test]
    fn json_parameters_become_a_batch_command_as_php_reads_it() {
        let params = json!({"id": 7, "fields": {"UF_CRM_TAGS": ["a", "b & c"], "UF_CRM_X": [],
                            "OPPORTUNITY": 99.5}});
        assert_eq!(
            command_of("crm.deal.update", &params),
            "crm.deal.update?fields[OPPORTUNITY]=99.5&fields[UF_CRM_TAGS][0]=a\
             &fields[UF_CRM_TAGS][1]=b%20%26%20c&fields[UF_CRM_X]=&id=7"
        );
    }

    #[test]
    fn errors_are_told_apart() {
        assert_eq!(
            classify(Some(503), "QUERY_LIMIT_EXCEEDED", "Too many requests"),
            Class::Limit
        );
        assert_eq!(classify(Some(400), "", "Not found"), Class::NotFound);
        assert_eq!(
            classify(Some(400), "", "Company is not found"),
            Class::NotFound
        );
        assert_eq!(
            classify(Some(400), "", "Stage 'X' not found"),
            Class::Rejected
        );
        assert_eq!(classify(Some(401), "expired_token", ""), Class::Expired);
        assert_eq!(classify(Some(401), "INVALID_CREDENTIALS", ""), Class::Auth);
        assert_eq!(classify(Some(502), "", "<html>"), Class::Server);
        assert_eq!(
            classify(Some(404), "ERROR_METHOD_NOT_FOUND", ""),
            Class::NoMethod
        );
    }

    #[test]
    fn list_fields_read_labels_and_write_ids() {
        let info = FieldInfo {
            kind: FieldKind::List(vec![
                ("45".into(), "Высокий".into()),
                ("47".into(), "Низкий".into()),
            ]),
            multiple: false,
        };
        assert_eq!(
            Schema::read_value(&json!("45"), &info),
            Some(FieldValue::Text("Высокий".into()))
        );
        assert_eq!(
            Schema::write_value(
                "priority",
                "UF_CRM_P",
                &info,
                &FieldValue::Text("низкий".into())
            )
            .unwrap(),
            json!(47)
        );
        assert!(matches!(
            Schema::write_value("priority", "UF_CRM_P", &info, &FieldValue::Text("Срочный".into())),
            Err(CrmError::Rejected(msg)) if msg.contains("Высокий, Низкий")
        ));
        assert_eq!(
            host_of("https://robot.bitrix24.ru/rest/1/abc/"),
            "robot.bitrix24.ru"
        );
        assert_eq!(
            entity_of_binding("D_1001", B24Entity::Deal),
            Some(EntityRef::lead("1001"))
        );
        assert_eq!(
            entity_of_binding("L_501", B24Entity::Lead),
            Some(EntityRef::lead("501"))
        );
        assert_eq!(entity_of_binding("D_1001", B24Entity::Lead), None);
    }
}
