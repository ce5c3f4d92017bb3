//! An in-process Bitrix24 REST emulator for tests: one portal in memory, served over real HTTP on
//! 127.0.0.1, so that the robot's client runs unchanged against it.
//!
//! Where each shape comes from (read, not copied):
//! - Calls, auth and encodings: github.com/bitrix24/b24restdocs (apidocs.bitrix24.com),
//!   `settings/how-to-call-rest-api/general-principles.md` (webhook `/rest/USER_ID/CODE/method`,
//!   OAuth `auth=`, JSON or form bodies, optional `.json` suffix), `api-reference/data-types.md`
//!   (the `time` object).
//! - Limits: `limits.md` (leaky bucket X=50/Y=2, Enterprise 250/5, 503 `QUERY_LIMIT_EXCEEDED`;
//!   429 `OPERATION_TIME_LIMIT`, `operating`, `operating_reset_at`; batch counts as one request).
//! - Errors: `_includes/system-errors.md` (statuses of the system codes), `crm-item-import.md` and
//!   `chats/im-chat-get.md` (401 `INVALID_CREDENTIALS` "Invalid request credentials" for a wrong
//!   webhook code), helpdesk.bitrix24.com/open/21269128 (same code for a deleted or mistyped
//!   webhook), error phrases as collected by bitrix24/b24phpsdk `src/Core/ApiLevelErrorHandler.php`
//!   and bitrix24/b24pysdk `b24pysdk/error/` (status per code; "Method is blocked due to
//!   operation time limit.").
//! - Product rows: dev.1c-bitrix.ru/rest_help/crm/cdeals/crm_deal_productrows_get.php and
//!   `_set.php` (`id`, `rows` of `PRODUCT_ID`/`PRODUCT_NAME`/`PRICE`/`QUANTITY`; a set replaces
//!   every row and recomputes the deal's sum), row fields as `crm.item.productrow.get` lists
//!   them (`productName`, `price` with discounts and taxes in, `quantity`, `measureName`).
//! - Batch: `settings/how-to-call-rest-api/batch.md` (`halt`, `cmd`, 50 commands,
//!   `result`/`result_error`/`result_total`/`result_next`/`result_time`, `$result[..]` references,
//!   `ERROR_BATCH_LENGTH_EXCEEDED`, `ERROR_BATCH_METHOD_NOT_ALLOWED`).
//! - Lists: `settings/how-to-call-rest-api/list-methods-pecularities.md` and
//!   `settings/performance/huge-data.md` (50 a page, `start`, `next`, `total`, `start=-1`),
//!   `api-reference/crm/deals/crm-deal-list.md` (filter prefixes, `order`, `select` masks).
//! - A client's deals or leads: the list methods filter on the record's own `COMPANY_ID` and
//!   `CONTACT_ID`, and `crm-deal-list.md` says the filter does not take `CONTACT_IDS`. A deal's
//!   `CONTACT_ID` is "the contact, deprecated" (`crm-deal-get.md`); taken here as the primary
//!   one, the first of `CONTACT_IDS`, which `crm.deal.contact.items.get` marks `IS_PRIMARY`
//!   (assumed), so a deal where the person is a secondary contact is not found by it.
//! - Methods: `api-reference/crm/deals/crm-deal-{get,list,add,update,fields}.md`,
//!   `deals/contacts/crm-deal-contact-items-get.md`, `crm/universal/crm-item-{get,update}.md`
//!   (camelCase, `ufCrm_…`, `fm`), `crm/leads/…`, `crm/contacts/crm-contact-{get,update}.md`
//!   (multifields and their `DELETE`), `crm/companies/…`, `crm/companies/crm-company-fields.md`
//!   (`listLabel`), `crm/_include/user-fields-for-examples-cut.md` (enumeration `items`),
//!   `crm/timeline/activities/todo/crm-activity-todo-add.md`,
//!   `crm/timeline/comments/crm-timeline-comment-add.md`, `tasks/tasks-task-add.md`,
//!   `user/user-get.md`, `crm/status/crm-status-list.md`, `crm/universal/category/crm-category-list.md`,
//!   `crm/outdated/category-old/crm-deal-category-list.md`.
//! - Activities: `crm/timeline/activities/activity-base/crm-activity-{list,get,update,fields}.md`
//!   (the answer's fields, `select` with `COMMUNICATIONS`/`FILES` only when named, the filter
//!   prefixes, default order by `START_TIME`, `BINDINGS` and its duplicates, "Activity is not
//!   found", the update's read-only fields and its phrases incl. "Use
//!   crm.activity.configurable.update for this activity provider"; `DEADLINE` follows
//!   `START_TIME` for meetings and calls, `END_TIME` otherwise), `crm/data-types.md`
//!   (`TYPE_ID` 6 = provider activities, `STATUS` 1 pending / 2 completed),
//!   `crm/timeline/activities/todo/index.md` (to-dos are `PROVIDER_ID` `CRM_TODO` in
//!   `crm.activity.list`; `crm.activity.todo.update` cannot complete them), and the Russian docs
//!   github.com/bitrix-tools/b24-rest-docs `tutorials/crm/how-to-edit-crm-objects/
//!   how-to-transfer-fired-employee-activities.md` (`PROVIDER_TYPE_ID` `TODO`; a to-do is
//!   completed by `crm.activity.update` with `COMPLETED: Y` alone) and
//!   `how-to-change-date-in-activity.md` (a to-do's `DEADLINE` with the portal's offset). A
//!   to-do's deadline is its `END_TIME`, and without a title its subject is the description's
//!   first line (read in Bitrix24's crm module, `Activity\Entity\ToDo`, as mirrored in
//!   avshatalov48/bitrix24-core-corp).
//! - Tasks: `tasks/tasks-task-list.md` (`{"result": {"tasks": […]}, "total", "next"}`, default
//!   order `ID` descending, the sortable keys and "Invalid sorting key (internal error)",
//!   `REAL_STATUS` = `status`, `STATUS` = `subStatus` with meta-statuses), `tasks/fields.md`
//!   (camelCase fields, `status` 2 pending … 5 completed, `ufCrmTask`),
//!   `tasks/status/{index,tasks-task-complete}.md` (`taskId`; `0` "wrong task id"; `0` "Action
//!   on the task is not allowed" for a missing task too; completion control), a closed task
//!   cannot be completed again (Bitrix24's `TaskCompleteRule`, same mirror),
//!   `tasks/tasks-task-approve.md`, `tasks/deprecated/task-items-get-list.md` (status 4
//!   "supposedly completed"), `tasks/comment-item/task-comment-item-add.md` (`TASKID`,
//!   `FIELDS[POST_MESSAGE]`, the id as the result, `ERROR_CORE` phrases), `tasks/tasks-new.md`
//!   (the method still works with the new task card); its arguments are read by position
//!   (b24phpsdk `src/Core/ApiClient.php`, "strict order of arguments"; `_parseRestParams` of
//!   the tasks module's REST service in the same mirror).
//! - OAuth: `settings/oauth/{index,auto-renewal,error-codes}.md` (refresh by `grant_type=refresh_token`,
//!   1 h access token, `expired_token` 401, `invalid_grant`), b24phpsdk `handleOAuthError`
//!   (400 `invalid_grant`, 401 `invalid_client`).

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use rand::Rng;
use serde_json::{Map, Value, json};

/// The portal's user behind the webhook and the OAuth tokens: "Елена Прекрасная".
pub const WEBHOOK_USER_ID: i64 = 1;
/// The real page size of every list method.
pub const PAGE_SIZE: usize = 50;
/// The real cap on commands in one `batch`.
pub const BATCH_LIMIT: usize = 50;
/// Entity type ids of the universal API (`crm.item.*`, `ownerTypeId`).
pub const LEAD_TYPE: i64 = 1;
pub const DEAL_TYPE: i64 = 2;
pub const CONTACT_TYPE: i64 = 3;
pub const COMPANY_TYPE: i64 = 4;

/// How a recorded request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Webhook,
    OAuth,
    /// A call to the OAuth server (`/oauth/token/`).
    OAuthServer,
    None,
}

/// One HTTP request the emulator answered, in arrival order.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `crm.deal.get`, `batch`, … (lower case, without `.json`); `oauth/token` for the OAuth server.
    pub method_name: String,
    pub at: Instant,
    pub status: u16,
    /// The merged query and body parameters, without `auth`.
    pub params: Value,
    pub auth: AuthKind,
}

/// A running emulator; it stops when dropped.
///
/// The portal starts with users 1 "Елена Прекрасная" (head of sales, behind the webhook and the
/// tokens), 2 "Иван Петров", 3 "Ольга Смирнова" and 4 "Пётр Сидоров" (dismissed: `ACTIVE`
/// false); companies 11 "ООО Сварка-Про", 12 "АО «УралМеталлСтрой»", 13 "ИП Кузнецов Андрей
/// Викторович"; contacts 201–203 (203 is "Андрей Кузнецов", +7 912 345-67-89); lead 501; the
/// "Продажи" funnel (0) and "Повторные продажи" (1, stages `C1:…`); no deals (ids from 1001).
pub struct B24Emulator {
    addr: SocketAddr,
    portal: Arc<Mutex<Portal>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for B24Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl B24Emulator {
    /// Starts a seeded portal on a random port of 127.0.0.1.
    pub async fn start() -> Self {
        let portal = Arc::new(Mutex::new(Portal::seeded()));
        let app = Router::new()
            .route("/rest", any(rest_entry))
            .route("/rest/", any(rest_entry))
            .route("/rest/{*path}", any(rest_entry))
            .route("/oauth/token", any(oauth_entry))
            .route("/oauth/token/", any(oauth_entry))
            .with_state(portal.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        portal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client_endpoint = format!("http://{addr}/rest/");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            portal,
            server,
        }
    }

    fn portal(&self) -> MutexGuard<'_, Portal> {
        // A panicking test must not hide the state from the next assertion.
        self.portal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/rest/1/<code>/`: append `crm.deal.get` or `crm.deal.get.json`.
    pub fn webhook_url(&self) -> String {
        let p = self.portal();
        format!(
            "{}/rest/{}/{}/",
            self.base_url(),
            p.webhook_user,
            p.webhook_code
        )
    }

    /// The webhook's secret code alone.
    pub fn webhook_code(&self) -> String {
        self.portal().webhook_code.clone()
    }

    /// The OAuth `client_endpoint`: `http://127.0.0.1:PORT/rest/` (methods take `auth=`).
    pub fn rest_url(&self) -> String {
        format!("{}/rest/", self.base_url())
    }

    /// Where the refresh goes (oauth.bitrix.info in real life).
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth/token/", self.base_url())
    }

    /// `(client_id, client_secret)` of the local application.
    pub fn oauth_client(&self) -> (String, String) {
        let p = self.portal();
        (p.client_id.clone(), p.client_secret.clone())
    }

    /// Issues a fresh `(access_token, refresh_token)` pair for the webhook user.
    pub fn issue_oauth_tokens(&self) -> (String, String) {
        self.portal().issue_tokens(WEBHOOK_USER_ID)
    }

    /// Every access token issued so far answers `expired_token` from now on.
    pub fn expire_access_tokens(&self) {
        let past = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        for token in self.portal().access_tokens.values_mut() {
            token.expires_at = past;
        }
    }

    /// Lifetime of access tokens issued from now on (1 h by default, like the real portal).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.portal().access_ttl = ttl;
    }

    /// Sets the leaky bucket (real: 50 and 2 per second; Enterprise 250 and 5) and empties it.
    pub fn set_bucket(&self, burst: u32, per_second: f64) {
        let mut p = self.portal();
        p.bucket = Bucket::new(burst, per_second);
    }

    /// How many requests got 503 `QUERY_LIMIT_EXCEEDED`.
    pub fn query_limit_hits(&self) -> usize {
        self.portal().query_limit_hits
    }

    /// The next `n` REST requests get `status` (500: Bitrix24's JSON `INTERNAL_SERVER_ERROR`;
    /// any other: the bare nginx HTML page a proxy gives, as a client must expect non-JSON).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut p = self.portal();
        p.fail_next = n;
        p.fail_status = status;
    }

    /// The method's time budget is spent: it answers 429 `OPERATION_TIME_LIMIT` (also inside
    /// `batch`) until `restore_method`; other methods keep working, as on the real portal.
    pub fn exhaust_method(&self, method: &str) {
        self.portal().exhausted.insert(method.to_ascii_lowercase());
    }

    pub fn restore_method(&self, method: &str) {
        self.portal().exhausted.remove(&method.to_ascii_lowercase());
    }

    /// Every call answers 403 `ACCESS_DENIED` (REST is for paid plans only) while set.
    pub fn deny_rest_api(&self, denied: bool) {
        self.portal().rest_denied = denied;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.portal().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.portal().requests.len()
    }

    pub fn clear_requests(&self) {
        self.portal().requests.clear();
    }

    /// Adds a deal as a manager would in the UI. `fields` are `crm.deal.add` fields (upper case);
    /// unlike the API, read-only ones such as `DATE_CREATE`, `DATE_MODIFY`, `CREATED_BY_ID`
    /// and `CATEGORY_ID` are taken as given, so a test can build any history.
    pub fn seed_deal(&self, fields: Value) -> i64 {
        self.seed(Kind::Deal, fields)
    }

    pub fn seed_lead(&self, fields: Value) -> i64 {
        self.seed(Kind::Lead, fields)
    }

    pub fn seed_contact(&self, fields: Value) -> i64 {
        self.seed(Kind::Contact, fields)
    }

    /// Sets a deal's product rows as a manager would (`crm.deal.productrows.set`): each
    /// `(name, price, quantity)`.
    pub fn set_deal_products(&self, deal: i64, rows: &[(&str, f64, f64)]) {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(name, price, quantity)| {
                json!({"PRODUCT_NAME": name, "PRICE": price, "QUANTITY": quantity})
            })
            .collect();
        let mut params = Map::new();
        params.insert("id".into(), json!(deal));
        params.insert("rows".into(), Value::Array(rows));
        self.portal()
            .product_rows_set(Kind::Deal, &params, WEBHOOK_USER_ID)
            .unwrap_or_else(|e| panic!("product rows of {deal}: {}", e.description));
    }

    pub fn seed_company(&self, fields: Value) -> i64 {
        self.seed(Kind::Company, fields)
    }

    fn seed(&self, kind: Kind, fields: Value) -> i64 {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.portal()
            .create(kind, &fields, WEBHOOK_USER_ID, Mode::Seed)
            .unwrap_or_else(|e| panic!("seed {kind:?}: {}", e.description))
    }

    /// Changes a deal as a manager would in the UI (same rules as `seed_deal`).
    pub fn edit_deal(&self, id: i64, fields: Value) {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.portal()
            .update(Kind::Deal, id, &fields, WEBHOOK_USER_ID, Mode::Seed)
            .unwrap_or_else(|e| panic!("edit deal {id}: {}", e.description));
    }

    /// Changes a company as a manager would in the UI (same rules as `edit_deal`): pass
    /// `MODIFY_BY_ID` to say who.
    pub fn edit_company(&self, id: i64, fields: Value) {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.portal()
            .update(Kind::Company, id, &fields, WEBHOOK_USER_ID, Mode::Seed)
            .unwrap_or_else(|e| panic!("edit company {id}: {}", e.description));
    }

    /// The deal as `crm.deal.get` shows it.
    pub fn deal(&self, id: i64) -> Option<Value> {
        self.portal().render_old(Kind::Deal, id)
    }

    pub fn lead(&self, id: i64) -> Option<Value> {
        self.portal().render_old(Kind::Lead, id)
    }

    pub fn contact(&self, id: i64) -> Option<Value> {
        self.portal().render_old(Kind::Contact, id)
    }

    pub fn company(&self, id: i64) -> Option<Value> {
        self.portal().render_old(Kind::Company, id)
    }

    /// The contacts bound to a deal, primary first.
    pub fn deal_contact_ids(&self, id: i64) -> Vec<i64> {
        self.portal()
            .records(Kind::Deal)
            .get(&id)
            .map(|r| r.contact_ids.clone())
            .unwrap_or_default()
    }

    /// Every activity, oldest first, with every field `crm.activity.get` shows (plus the
    /// `PING_OFFSETS` and `COLOR_ID` a to-do was added with), as it stands now.
    pub fn activities(&self) -> Vec<Value> {
        self.portal().activities.clone()
    }

    /// Adds an activity as the UI or another integration would: a to-do of the webhook user
    /// unless `fields` (upper case, as `crm.activity.get` shows them) say otherwise, e.g.
    /// `{"TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL", "OWNER_TYPE_ID": 3, "OWNER_ID": 203}`.
    /// Every field is taken as given; numbers are stored as the strings the API answers.
    pub fn seed_activity(&self, fields: Value) -> i64 {
        let mut p = self.portal();
        let id = p.next_activity_id;
        p.next_activity_id += 1;
        let mut activity = activity_record(id, WEBHOOK_USER_ID);
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            let v = match v {
                Value::Number(n) => Value::String(n.to_string()),
                other => other,
            };
            activity.insert(k, v);
        }
        p.activities.push(Value::Object(activity));
        id
    }

    /// Every task, oldest first, as `tasks.task.get` would show it now (camelCase).
    pub fn tasks(&self) -> Vec<Value> {
        self.portal().tasks.clone()
    }

    /// Adds a task as a manager would in the UI: `tasks.task.add` fields (`TITLE`,
    /// `RESPONSIBLE_ID`, `DEADLINE`, `UF_CRM_TASK`, `CREATED_BY`, `STATUS`, `TASK_CONTROL`).
    pub fn seed_task(&self, fields: Value) -> i64 {
        let fields = fields.as_object().cloned().unwrap_or_default();
        let task = self
            .portal()
            .new_task(&fields, WEBHOOK_USER_ID)
            .unwrap_or_else(|e| panic!("seed task: {}", e.description));
        as_i64(&task["id"]).unwrap_or_default()
    }

    /// Comments added through `task.commentitem.add`, oldest first
    /// (`ID`, `TASK_ID`, `AUTHOR_ID`, `POST_MESSAGE`, `POST_DATE`).
    pub fn task_comments(&self) -> Vec<Value> {
        self.portal().task_comments.clone()
    }

    /// Every timeline comment, oldest first.
    pub fn comments(&self) -> Vec<Value> {
        self.portal().comments.clone()
    }

    /// Timeline comments on one deal, oldest first.
    pub fn comments_of(&self, deal_id: i64) -> Vec<Value> {
        self.portal()
            .comments
            .iter()
            .filter(|c| c["ENTITY_TYPE"] == "deal" && as_i64(&c["ENTITY_ID"]) == Some(deal_id))
            .cloned()
            .collect()
    }

    /// Adds a portal user (`user.get` fields: `NAME`, `LAST_NAME`, `ACTIVE`, …); returns the id.
    pub fn add_user(&self, fields: Value) -> i64 {
        let mut p = self.portal();
        let id = p.users.len() as i64 + 1;
        let mut user = user_record(id, "", "", "", true);
        if let Some(given) = fields.as_object() {
            for (k, v) in given {
                user.insert(k.clone(), v.clone());
            }
        }
        user.insert("ID".into(), Value::String(id.to_string()));
        p.users.push(Value::Object(user));
        id
    }

    pub fn users(&self) -> Vec<Value> {
        self.portal().users.clone()
    }

    /// Adds a stage to a funnel's directory (`DEAL_STAGE`, `DEAL_STAGE_1`, `STATUS`) right
    /// before the stage `before`, as an administrator does in the funnel's settings. A stage
    /// made in the interface gets an id such as `UC_7P2K9D` (`crm-status-list.md`'s
    /// examples); the test names its own.
    pub fn add_stage(&self, entity_id: &str, status_id: &str, name: &str, before: &str) {
        let mut p = self.portal();
        let next = p.statuses.iter().map(|s| s.id).max().unwrap_or(0) + 2;
        let at = p
            .statuses
            .iter()
            .find(|s| s.entity_id == entity_id && s.status_id == before)
            .map(|s| (s.sort, s.category_id))
            .expect("the stage to add before");
        for s in p
            .statuses
            .iter_mut()
            .filter(|s| s.entity_id == entity_id && s.sort >= at.0)
        {
            s.sort += 10;
        }
        p.statuses.push(Status {
            id: next,
            entity_id: entity_id.to_owned(),
            status_id: status_id.to_owned(),
            name: name.to_owned(),
            sort: at.0,
            semantics: None,
            color: "#39A8EF",
            category_id: at.1,
        });
    }

    /// Renames a stage, as an administrator does (the failed stage as «Отказ. Сделка
    /// закрыта»).
    pub fn rename_stage(&self, entity_id: &str, status_id: &str, name: &str) {
        let mut p = self.portal();
        for s in p
            .statuses
            .iter_mut()
            .filter(|s| s.entity_id == entity_id && s.status_id == status_id)
        {
            s.name = name.to_owned();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP layer

type Shared = Arc<Mutex<Portal>>;

enum Reply {
    Json(u16, Value),
    Html(u16, String),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(status, body) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body.to_string(),
            )
                .into_response(),
            Reply::Html(status, body) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "text/html")],
                body,
            )
                .into_response(),
        }
    }
}

async fn rest_entry(
    State(portal): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let mut params = parse_params(uri.query(), &headers, &body);
    let order = KeyOrder::of_request(uri.query(), &headers, &body);
    let auth = params.remove("auth").and_then(|v| scalar_string(&v));
    let path = uri.path().trim_start_matches("/rest");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut portal = portal.lock().unwrap_or_else(|e| e.into_inner());
    portal.handle_rest(&segments, params, auth, &order)
}

async fn oauth_entry(
    State(portal): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let params = parse_params(uri.query(), &headers, &body);
    let mut portal = portal.lock().unwrap_or_else(|e| e.into_inner());
    portal.handle_oauth(params)
}

/// Query parameters, then the body over them (PHP's `$_REQUEST` merge): JSON when the content
/// type says so, otherwise a form.
fn parse_params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    let mut params = parse_form(query.unwrap_or(""));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = String::from_utf8_lossy(body);
    let looks_json = content_type.contains("json")
        || (content_type.is_empty() && text.trim_start().starts_with('{'));
    let from_body = if body.is_empty() {
        Map::new()
    } else if looks_json {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    } else {
        // multipart/form-data is not emulated; the robot sends JSON or forms.
        parse_form(&text)
    };
    for (k, v) in from_body {
        params.insert(k, v);
    }
    params
}

/// Parses `a[b][]=1&c=2` the way PHP does, into nested objects; objects keyed 0..n become arrays.
fn parse_form(text: &str) -> Map<String, Value> {
    let mut root = Value::Object(Map::new());
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        let value = Value::String(percent_decode(v));
        let (base, mut rest) = match key.find('[') {
            Some(i) if i > 0 => (&key[..i], &key[i..]),
            _ => (key.as_str(), ""),
        };
        if base.is_empty() {
            continue;
        }
        let mut path = vec![base];
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            path.push(&inner[..end]);
            rest = &inner[end + 1..];
        }
        put_path(&mut root, &path, value);
    }
    match normalize_lists(root) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn put_path(slot: &mut Value, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *slot = value;
        return;
    };
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    let Value::Object(map) = slot else { return };
    let key = if first.is_empty() {
        // `x[]`: the next integer key, as PHP appends.
        let next = map
            .keys()
            .filter_map(|k| k.parse::<u64>().ok())
            .max()
            .map_or(0, |m| m + 1);
        next.to_string()
    } else {
        (*first).to_string()
    };
    put_path(map.entry(key).or_insert(Value::Null), rest, value);
}

fn normalize_lists(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let is_list = !map.is_empty()
                && map
                    .keys()
                    .all(|k| k.parse::<usize>().is_ok_and(|n| n.to_string() == *k));
            let mut entries: Vec<(String, Value)> = map
                .into_iter()
                .map(|(k, v)| (k, normalize_lists(v)))
                .collect();
            if is_list {
                entries.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(0));
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(entries.into_iter().collect())
            }
        }
        other => other,
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Errors and outcomes

#[derive(Debug, Clone)]
struct ApiError {
    status: u16,
    code: String,
    description: String,
}

impl ApiError {
    fn new(status: u16, code: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            description: description.into(),
        }
    }

    /// The old `crm.deal.*`-style methods answer 400 with an empty code and a phrase.
    fn old(description: &str) -> Self {
        Self::new(400, "", description)
    }

    fn method_not_found() -> Self {
        Self::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    fn missing(param: &str) -> Self {
        Self::new(
            400,
            "100",
            format!("Could not find value for parameter {{{param}}}"),
        )
    }

    fn time_limit() -> Self {
        Self::new(
            429,
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit.",
        )
    }

    fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

struct Outcome {
    result: Value,
    total: Option<usize>,
    next: Option<usize>,
}

impl Outcome {
    fn one(result: Value) -> Self {
        Self {
            result,
            total: None,
            next: None,
        }
    }

    /// One page of 50 from `start`; `start < 0` skips the count, as the real `start=-1` does.
    fn page(items: Vec<Value>, start: i64) -> Self {
        if start < 0 {
            let page = items.into_iter().take(PAGE_SIZE).collect();
            return Self {
                result: Value::Array(page),
                total: None,
                next: None,
            };
        }
        let start = start as usize;
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(start).take(PAGE_SIZE).collect();
        let next = (start + PAGE_SIZE < total).then_some(start + PAGE_SIZE);
        Self {
            result: Value::Array(page),
            total: Some(total),
            next,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The leaky bucket

struct Bucket {
    burst: f64,
    per_second: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            level: 0.0,
            at: Instant::now(),
        }
    }

    /// Drains by the time elapsed, then takes the request if one more fits. A refused request
    /// adds nothing, so a client that backs off recovers at the drain rate.
    fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level - elapsed * self.per_second).max(0.0);
        self.at = now;
        if self.level + 1.0 > self.burst + 1e-9 {
            return false;
        }
        self.level += 1.0;
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The CRM model

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Lead,
    Deal,
    Contact,
    Company,
}

impl Kind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "lead" => Some(Kind::Lead),
            "deal" => Some(Kind::Deal),
            "contact" => Some(Kind::Contact),
            "company" => Some(Kind::Company),
            _ => None,
        }
    }

    fn from_type_id(id: i64) -> Option<Self> {
        match id {
            LEAD_TYPE => Some(Kind::Lead),
            DEAL_TYPE => Some(Kind::Deal),
            CONTACT_TYPE => Some(Kind::Contact),
            COMPANY_TYPE => Some(Kind::Company),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Lead => "lead",
            Kind::Deal => "deal",
            Kind::Contact => "contact",
            Kind::Company => "company",
        }
    }

    fn fields(self) -> &'static [F] {
        match self {
            Kind::Lead => LEAD_FIELDS,
            Kind::Deal => DEAL_FIELDS,
            Kind::Contact => CONTACT_FIELDS,
            Kind::Company => COMPANY_FIELDS,
        }
    }

    fn user_fields(self) -> &'static [Uf] {
        match self {
            Kind::Lead => LEAD_UF,
            Kind::Deal => DEAL_UF,
            Kind::Contact => &[],
            Kind::Company => COMPANY_UF,
        }
    }

    /// The phrases of the docs' error tables for a missing record.
    fn not_found_on_update(self) -> &'static str {
        match self {
            Kind::Company => "Company is not found",
            Kind::Contact => "Contact is not found",
            Kind::Lead | Kind::Deal => "Not found",
        }
    }

    fn default_title(self, id: i64) -> String {
        match self {
            Kind::Lead => format!("Лид #{id}"),
            Kind::Deal => format!("Сделка #{id}"),
            Kind::Contact => String::new(),
            Kind::Company => format!("Компания #{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Str,
    Char,
    Double,
    /// Amounts: strings with two decimals, as `OPPORTUNITY: "1000000.00"`.
    Money,
    DateTime,
    Date,
    Status(&'static str),
    Category,
    User,
    Company,
    Contact,
    Lead,
    Currency,
    Multi,
}

impl Ty {
    fn api_name(self) -> &'static str {
        match self {
            Ty::Int => "integer",
            Ty::Str => "string",
            Ty::Char => "char",
            Ty::Double | Ty::Money => "double",
            Ty::DateTime => "datetime",
            Ty::Date => "date",
            Ty::Status(_) => "crm_status",
            Ty::Category => "crm_category",
            Ty::User => "user",
            Ty::Company => "crm_company",
            Ty::Contact => "crm_contact",
            Ty::Lead => "crm_lead",
            Ty::Currency => "crm_currency",
            Ty::Multi => "crm_multifield",
        }
    }

    fn is_id(self) -> bool {
        matches!(
            self,
            Ty::Int | Ty::Category | Ty::User | Ty::Company | Ty::Contact | Ty::Lead
        )
    }
}

struct F {
    name: &'static str,
    ty: Ty,
    read_only: bool,
    title: &'static str,
}

const fn rw(name: &'static str, ty: Ty, title: &'static str) -> F {
    F {
        name,
        ty,
        read_only: false,
        title,
    }
}

const fn ro(name: &'static str, ty: Ty, title: &'static str) -> F {
    F {
        name,
        ty,
        read_only: true,
        title,
    }
}

const DEAL_FIELDS: &[F] = &[
    ro("ID", Ty::Int, "ID"),
    rw("TITLE", Ty::Str, "Название"),
    rw("TYPE_ID", Ty::Status("DEAL_TYPE"), "Тип"),
    rw("CATEGORY_ID", Ty::Category, "Воронка"),
    rw("STAGE_ID", Ty::Status("DEAL_STAGE"), "Стадия сделки"),
    ro("STAGE_SEMANTIC_ID", Ty::Str, "Группа стадии"),
    ro("IS_NEW", Ty::Char, "Новая сделка"),
    rw("IS_RECURRING", Ty::Char, "Регулярная сделка"),
    rw("IS_RETURN_CUSTOMER", Ty::Char, "Повторная сделка"),
    rw("IS_REPEATED_APPROACH", Ty::Char, "Повторное обращение"),
    rw("PROBABILITY", Ty::Int, "Вероятность"),
    rw("CURRENCY_ID", Ty::Currency, "Валюта"),
    rw("OPPORTUNITY", Ty::Money, "Сумма"),
    rw(
        "IS_MANUAL_OPPORTUNITY",
        Ty::Char,
        "Сумма заполняется вручную",
    ),
    rw("TAX_VALUE", Ty::Money, "Ставка налога"),
    rw("COMPANY_ID", Ty::Company, "Компания"),
    rw("CONTACT_ID", Ty::Contact, "Контакт"),
    rw("BEGINDATE", Ty::Date, "Дата начала"),
    rw("CLOSEDATE", Ty::Date, "Дата завершения"),
    rw("OPENED", Ty::Char, "Доступна для всех"),
    rw("CLOSED", Ty::Char, "Закрыта"),
    rw("COMMENTS", Ty::Str, "Комментарий"),
    rw("ASSIGNED_BY_ID", Ty::User, "Ответственный"),
    ro("CREATED_BY_ID", Ty::User, "Кем создана"),
    ro("MODIFY_BY_ID", Ty::User, "Кем изменена"),
    ro("DATE_CREATE", Ty::DateTime, "Дата создания"),
    ro("DATE_MODIFY", Ty::DateTime, "Дата изменения"),
    rw("SOURCE_ID", Ty::Status("SOURCE"), "Источник"),
    rw("SOURCE_DESCRIPTION", Ty::Str, "Дополнительно об источнике"),
    ro("LEAD_ID", Ty::Lead, "Лид"),
    rw("ADDITIONAL_INFO", Ty::Str, "Дополнительная информация"),
    rw("ORIGINATOR_ID", Ty::Str, "Внешний источник"),
    rw(
        "ORIGIN_ID",
        Ty::Str,
        "Идентификатор элемента во внешнем источнике",
    ),
    ro("MOVED_BY_ID", Ty::User, "Кем перемещена"),
    ro("MOVED_TIME", Ty::DateTime, "Дата перемещения"),
    ro("LAST_ACTIVITY_BY", Ty::User, "Автор последней активности"),
    ro("LAST_ACTIVITY_TIME", Ty::DateTime, "Последняя активность"),
    rw("UTM_SOURCE", Ty::Str, "Рекламная система"),
    rw("UTM_MEDIUM", Ty::Str, "Тип трафика"),
    rw("UTM_CAMPAIGN", Ty::Str, "Обозначение рекламной кампании"),
    rw("UTM_CONTENT", Ty::Str, "Содержание кампании"),
    rw("UTM_TERM", Ty::Str, "Условие поиска кампании"),
];

const LEAD_FIELDS: &[F] = &[
    ro("ID", Ty::Int, "ID"),
    rw("TITLE", Ty::Str, "Название лида"),
    rw("NAME", Ty::Str, "Имя"),
    rw("SECOND_NAME", Ty::Str, "Отчество"),
    rw("LAST_NAME", Ty::Str, "Фамилия"),
    rw("COMPANY_TITLE", Ty::Str, "Название компании"),
    rw("COMPANY_ID", Ty::Company, "Компания"),
    rw("CONTACT_ID", Ty::Contact, "Контакт"),
    rw("IS_RETURN_CUSTOMER", Ty::Char, "Повторный лид"),
    rw("POST", Ty::Str, "Должность"),
    rw("ADDRESS", Ty::Str, "Адрес"),
    rw("SOURCE_ID", Ty::Status("SOURCE"), "Источник"),
    rw("SOURCE_DESCRIPTION", Ty::Str, "Дополнительно об источнике"),
    rw("STATUS_ID", Ty::Status("STATUS"), "Стадия"),
    rw("STATUS_DESCRIPTION", Ty::Str, "Дополнительно о стадии"),
    ro("STATUS_SEMANTIC_ID", Ty::Str, "Группа стадии"),
    rw("CURRENCY_ID", Ty::Currency, "Валюта"),
    rw("OPPORTUNITY", Ty::Money, "Сумма"),
    rw(
        "IS_MANUAL_OPPORTUNITY",
        Ty::Char,
        "Сумма заполняется вручную",
    ),
    rw("OPENED", Ty::Char, "Доступен для всех"),
    rw("COMMENTS", Ty::Str, "Комментарий"),
    ro("HAS_PHONE", Ty::Char, "Задан телефон"),
    ro("HAS_EMAIL", Ty::Char, "Задан e-mail"),
    ro("HAS_IMOL", Ty::Char, "Задана открытая линия"),
    rw("ASSIGNED_BY_ID", Ty::User, "Ответственный"),
    ro("CREATED_BY_ID", Ty::User, "Кем создан"),
    ro("MODIFY_BY_ID", Ty::User, "Кем изменен"),
    ro("DATE_CREATE", Ty::DateTime, "Дата создания"),
    ro("DATE_MODIFY", Ty::DateTime, "Дата изменения"),
    ro("DATE_CLOSED", Ty::DateTime, "Дата закрытия"),
    ro("MOVED_BY_ID", Ty::User, "Кем перемещен"),
    ro("MOVED_TIME", Ty::DateTime, "Дата перемещения"),
    rw("UTM_SOURCE", Ty::Str, "Рекламная система"),
    rw("UTM_MEDIUM", Ty::Str, "Тип трафика"),
    rw("UTM_CAMPAIGN", Ty::Str, "Обозначение рекламной кампании"),
    rw("UTM_CONTENT", Ty::Str, "Содержание кампании"),
    rw("UTM_TERM", Ty::Str, "Условие поиска кампании"),
    rw("PHONE", Ty::Multi, "Телефон"),
    rw("EMAIL", Ty::Multi, "E-mail"),
    rw("WEB", Ty::Multi, "Сайт"),
    rw("IM", Ty::Multi, "Мессенджер"),
];

const CONTACT_FIELDS: &[F] = &[
    ro("ID", Ty::Int, "ID"),
    rw("HONORIFIC", Ty::Status("HONORIFIC"), "Обращение"),
    rw("NAME", Ty::Str, "Имя"),
    rw("SECOND_NAME", Ty::Str, "Отчество"),
    rw("LAST_NAME", Ty::Str, "Фамилия"),
    rw("BIRTHDATE", Ty::Date, "Дата рождения"),
    rw("TYPE_ID", Ty::Status("CONTACT_TYPE"), "Тип контакта"),
    rw("SOURCE_ID", Ty::Status("SOURCE"), "Источник"),
    rw("SOURCE_DESCRIPTION", Ty::Str, "Дополнительно об источнике"),
    rw("POST", Ty::Str, "Должность"),
    rw("ADDRESS", Ty::Str, "Адрес"),
    rw("COMMENTS", Ty::Str, "Комментарий"),
    rw("OPENED", Ty::Char, "Доступен для всех"),
    rw("EXPORT", Ty::Char, "Участвует в экспорте контактов"),
    ro("HAS_PHONE", Ty::Char, "Задан телефон"),
    ro("HAS_EMAIL", Ty::Char, "Задан e-mail"),
    ro("HAS_IMOL", Ty::Char, "Задана открытая линия"),
    rw("ASSIGNED_BY_ID", Ty::User, "Ответственный"),
    ro("CREATED_BY_ID", Ty::User, "Кем создан"),
    ro("MODIFY_BY_ID", Ty::User, "Кем изменен"),
    ro("DATE_CREATE", Ty::DateTime, "Дата создания"),
    ro("DATE_MODIFY", Ty::DateTime, "Дата изменения"),
    rw("COMPANY_ID", Ty::Company, "Компания"),
    ro("LEAD_ID", Ty::Lead, "Лид"),
    rw("ORIGINATOR_ID", Ty::Str, "Внешний источник"),
    rw(
        "ORIGIN_ID",
        Ty::Str,
        "Идентификатор элемента во внешнем источнике",
    ),
    rw("PHONE", Ty::Multi, "Телефон"),
    rw("EMAIL", Ty::Multi, "E-mail"),
    rw("WEB", Ty::Multi, "Сайт"),
    rw("IM", Ty::Multi, "Мессенджер"),
];

const COMPANY_FIELDS: &[F] = &[
    ro("ID", Ty::Int, "ID"),
    rw("TITLE", Ty::Str, "Название компании"),
    rw("COMPANY_TYPE", Ty::Status("COMPANY_TYPE"), "Тип компании"),
    rw("INDUSTRY", Ty::Status("INDUSTRY"), "Сфера деятельности"),
    rw("EMPLOYEES", Ty::Status("EMPLOYEES"), "Кол-во сотрудников"),
    rw("CURRENCY_ID", Ty::Currency, "Валюта"),
    rw("REVENUE", Ty::Money, "Годовой оборот"),
    rw("ADDRESS", Ty::Str, "Адрес"),
    rw("COMMENTS", Ty::Str, "Комментарий"),
    rw("OPENED", Ty::Char, "Доступна для всех"),
    rw("IS_MY_COMPANY", Ty::Char, "Моя компания"),
    ro("HAS_PHONE", Ty::Char, "Задан телефон"),
    ro("HAS_EMAIL", Ty::Char, "Задан e-mail"),
    ro("HAS_IMOL", Ty::Char, "Задана открытая линия"),
    rw("ASSIGNED_BY_ID", Ty::User, "Ответственный"),
    ro("CREATED_BY_ID", Ty::User, "Кем создана"),
    ro("MODIFY_BY_ID", Ty::User, "Кем изменена"),
    ro("DATE_CREATE", Ty::DateTime, "Дата создания"),
    ro("DATE_MODIFY", Ty::DateTime, "Дата изменения"),
    ro("LEAD_ID", Ty::Lead, "Лид"),
    rw("ORIGINATOR_ID", Ty::Str, "Внешний источник"),
    rw(
        "ORIGIN_ID",
        Ty::Str,
        "Идентификатор элемента во внешнем источнике",
    ),
    rw("PHONE", Ty::Multi, "Телефон"),
    rw("EMAIL", Ty::Multi, "E-mail"),
    rw("WEB", Ty::Multi, "Сайт"),
    rw("IM", Ty::Multi, "Мессенджер"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UfTy {
    Double,
    Enumeration,
    Str,
    /// `datetime`: ISO 8601 with the portal's offset, as the standard date fields.
    DateTime,
}

/// A user field (`UF_CRM_…`) with its list items `(ID, VALUE)`.
struct Uf {
    name: &'static str,
    ty: UfTy,
    label: &'static str,
    items: &'static [(i64, &'static str)],
}

const DEAL_UF: &[Uf] = &[
    Uf {
        name: "UF_CRM_SCORE",
        ty: UfTy::Double,
        label: "Скоринг",
        items: &[],
    },
    Uf {
        name: "UF_CRM_PRIORITY",
        ty: UfTy::Enumeration,
        label: "Приоритет",
        items: &[(45, "Высокий"), (46, "Средний"), (47, "Низкий")],
    },
    Uf {
        name: "UF_CRM_EXPECTED_PROFIT",
        ty: UfTy::Double,
        label: "Ожидаемая прибыль",
        items: &[],
    },
    // A date with time, as the seed's «Дата и время встречи» (the types of user fields:
    // dev.1c-bitrix.ru/rest_help/users/userfield/user_userfield_add.php, `datetime`).
    Uf {
        name: "UF_CRM_MEETING_AT",
        ty: UfTy::DateTime,
        label: "Дата и время встречи",
        items: &[],
    },
    // The robot's priority 1–5 as a number; the list «Приоритет» above has no such values.
    Uf {
        name: "UF_CRM_ROBOT_PRIORITY",
        ty: UfTy::Double,
        label: "Приоритет робота",
        items: &[],
    },
    Uf {
        name: "UF_CRM_CATEGORY",
        ty: UfTy::Enumeration,
        label: "Категория клиента",
        items: &[
            (51, "Производство"),
            (52, "Строительство"),
            (53, "Оптовая торговля"),
            (54, "Госзаказчик"),
        ],
    },
    Uf {
        name: "UF_CRM_LOSS_REASON",
        ty: UfTy::Enumeration,
        label: "Причина проигрыша",
        items: &[
            (61, "Дорого"),
            (62, "Выбрали конкурента"),
            (63, "Нет бюджета"),
            (64, "Клиент пропал"),
            (65, "Не наш профиль"),
            (66, "Нет контакта"),
        ],
    },
];

const LEAD_UF: &[Uf] = &[Uf {
    name: "UF_CRM_SCORE",
    ty: UfTy::Double,
    label: "Скоринг",
    items: &[],
}];

const COMPANY_UF: &[Uf] = &[Uf {
    name: "UF_CRM_INN",
    ty: UfTy::Str,
    label: "ИНН",
    items: &[],
}];

#[derive(Debug, Clone, Default)]
struct Record {
    /// Upper-case fields as the old methods show them; every value a string or null.
    fields: Map<String, Value>,
    /// Deals only: bound contacts, primary first (`CONTACT_IDS`, not shown by `crm.deal.get`).
    contact_ids: Vec<i64>,
}

/// One entry of the `crm.status` directory (stages, sources, types).
#[derive(Debug, Clone)]
struct Status {
    id: i64,
    entity_id: String,
    status_id: String,
    name: String,
    sort: i64,
    /// `S` success, `F` failure, `None` in progress.
    semantics: Option<&'static str>,
    color: &'static str,
    category_id: Option<i64>,
}

struct Category {
    id: i64,
    name: &'static str,
    sort: i64,
    created: String,
}

/// Whose rules an edit follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `crm.deal.update` and the like: read-only fields and `CATEGORY_ID` ignored.
    Old,
    /// `crm.*.add` and `crm.item.update`: read-only fields ignored, the funnel may be set.
    Api,
    /// A manager in the UI (test seeding): every field as given.
    Seed,
}

struct AccessToken {
    user_id: i64,
    expires_at: Instant,
}

struct Portal {
    webhook_user: i64,
    webhook_code: String,
    client_id: String,
    client_secret: String,
    member_id: String,
    client_endpoint: String,
    access_tokens: HashMap<String, AccessToken>,
    /// Unused refresh tokens and their users; a refresh spends its token.
    refresh_tokens: HashMap<String, i64>,
    access_ttl: Duration,
    bucket: Bucket,
    query_limit_hits: usize,
    fail_next: usize,
    fail_status: u16,
    exhausted: HashSet<String>,
    /// Seconds each method has spent, for `time.operating`.
    operating: HashMap<String, f64>,
    rest_denied: bool,
    requests: Vec<RecordedRequest>,

    leads: BTreeMap<i64, Record>,
    deals: BTreeMap<i64, Record>,
    contacts: BTreeMap<i64, Record>,
    companies: BTreeMap<i64, Record>,
    next_id: HashMap<Kind, i64>,
    next_multifield_id: i64,
    statuses: Vec<Status>,
    categories: Vec<Category>,
    users: Vec<Value>,
    activities: Vec<Value>,
    next_activity_id: i64,
    tasks: Vec<Value>,
    next_task_id: i64,
    task_comments: Vec<Value>,
    next_task_comment_id: i64,
    comments: Vec<Value>,
    next_comment_id: i64,
    /// The product rows of deals and leads, by owner.
    product_rows: HashMap<(Kind, i64), Vec<Value>>,
    next_product_row_id: i64,
}

fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let n = rng.random_range(0..36u32);
            char::from_digit(n, 36).unwrap_or('0')
        })
        .collect()
}

fn user_record(
    id: i64,
    name: &str,
    last_name: &str,
    position: &str,
    active: bool,
) -> Map<String, Value> {
    let email = format!("user{id}@b24-demo.example");
    let value = json!({
        "ID": id.to_string(),
        "XML_ID": format!("{}", 40_000 + id),
        "ACTIVE": active,
        "NAME": name,
        "LAST_NAME": last_name,
        "SECOND_NAME": "",
        "EMAIL": email,
        "LAST_LOGIN": "2026-11-20T09:12:44+03:00",
        "DATE_REGISTER": "2025-02-03T00:00:00+03:00",
        "TIME_ZONE": "",
        "IS_ONLINE": if active { "Y" } else { "N" },
        "PERSONAL_GENDER": "",
        "PERSONAL_MOBILE": "",
        "PERSONAL_CITY": "Екатеринбург",
        "WORK_PHONE": "",
        "WORK_POSITION": position,
        "UF_EMPLOYMENT_DATE": "",
        "UF_DEPARTMENT": [1],
        "USER_TYPE": "employee",
    });
    value.as_object().cloned().unwrap_or_default()
}

impl Portal {
    fn seeded() -> Self {
        let mut portal = Portal {
            webhook_user: WEBHOOK_USER_ID,
            webhook_code: random_token(16),
            client_id: format!("local.{}.{}", random_token(13), random_token(8)),
            client_secret: random_token(50),
            member_id: random_token(32),
            client_endpoint: String::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_ttl: Duration::from_secs(3600),
            bucket: Bucket::new(50, 2.0),
            query_limit_hits: 0,
            fail_next: 0,
            fail_status: 502,
            exhausted: HashSet::new(),
            operating: HashMap::new(),
            rest_denied: false,
            requests: Vec::new(),
            leads: BTreeMap::new(),
            deals: BTreeMap::new(),
            contacts: BTreeMap::new(),
            companies: BTreeMap::new(),
            // Real ids are never small or aligned between entities; neither are these.
            next_id: HashMap::from([
                (Kind::Lead, 501),
                (Kind::Deal, 1001),
                (Kind::Contact, 201),
                (Kind::Company, 11),
            ]),
            next_multifield_id: 3101,
            statuses: Vec::new(),
            categories: vec![
                Category {
                    id: 0,
                    name: "Продажи",
                    sort: 100,
                    created: "2025-02-03T10:00:00+03:00".into(),
                },
                Category {
                    id: 1,
                    name: "Повторные продажи",
                    sort: 200,
                    created: "2025-06-16T12:30:00+03:00".into(),
                },
            ],
            users: Vec::new(),
            activities: Vec::new(),
            next_activity_id: 7001,
            tasks: Vec::new(),
            next_task_id: 3711,
            task_comments: Vec::new(),
            next_task_comment_id: 4101,
            comments: Vec::new(),
            next_comment_id: 9001,
            product_rows: HashMap::new(),
            next_product_row_id: 7001,
        };
        portal.seed_directory();
        portal.seed_people();
        portal
    }

    fn seed_directory(&mut self) {
        type Entry = (
            &'static str,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let process = "#39A8EF";
        let deal_stages: &[Entry] = &[
            ("NEW", "Новая", None, process),
            ("PREPARATION", "Подготовка документов", None, "#2FC6F6"),
            ("EXECUTING", "В работе", None, "#FFA900"),
            ("WON", "Сделка успешна", Some("S"), "#7BD500"),
            ("LOSE", "Сделка провалена", Some("F"), "#FF5752"),
        ];
        let repeat_stages: &[Entry] = &[
            ("C1:NEW", "Новая", None, process),
            ("C1:PREPARATION", "Подготовка документов", None, "#2FC6F6"),
            ("C1:WON", "Сделка успешна", Some("S"), "#7BD500"),
            ("C1:LOSE", "Сделка провалена", Some("F"), "#FF5752"),
        ];
        let lead_statuses: &[Entry] = &[
            ("NEW", "Не обработан", None, process),
            ("IN_PROCESS", "В работе", None, "#FFA900"),
            ("PROCESSED", "Обработан", None, "#2FC6F6"),
            ("CONVERTED", "Качественный лид", Some("S"), "#7BD500"),
            ("JUNK", "Некачественный лид", Some("F"), "#FF5752"),
        ];
        let plain = |ids: &[(&'static str, &'static str)]| -> Vec<Entry> {
            ids.iter().map(|(s, n)| (*s, *n, None, "")).collect()
        };
        let sources = plain(&[
            ("CALL", "Звонок"),
            ("EMAIL", "Электронная почта"),
            ("WEB", "Веб-сайт"),
            ("ADVERTISING", "Реклама"),
            ("PARTNER", "Существующий клиент"),
            ("RECOMMENDATION", "По рекомендации"),
            ("TRADE_SHOW", "Выставка"),
            ("WEBFORM", "CRM-форма"),
            ("CALLBACK", "Обратный звонок"),
            ("OTHER", "Другое"),
        ]);
        let deal_types = plain(&[
            ("SALE", "Продажа"),
            ("COMPLEX", "Комплексная продажа"),
            ("GOODS", "Продажа товара"),
            ("SERVICES", "Продажа услуги"),
            ("SERVICE", "Сервисное обслуживание"),
        ]);
        let contact_types = plain(&[
            ("CLIENT", "Клиенты"),
            ("SUPPLIER", "Поставщики"),
            ("PARTNER", "Партнеры"),
            ("OTHER", "Другое"),
        ]);
        let company_types = plain(&[
            ("CUSTOMER", "Клиент"),
            ("SUPPLIER", "Поставщик"),
            ("COMPETITOR", "Конкурент"),
            ("PARTNER", "Партнер"),
            ("OTHER", "Другое"),
        ]);
        let industries = plain(&[
            ("IT", "Информационные технологии"),
            ("TELECOM", "Телекоммуникации и связь"),
            ("MANUFACTURING", "Производство"),
            ("BANKING", "Банковские услуги"),
            ("CONSULTING", "Консалтинг"),
            ("FINANCE", "Финансы"),
            ("GOVERNMENT", "Правительство"),
            ("DELIVERY", "Доставка"),
            ("OTHER", "Другое"),
        ]);
        let employees = plain(&[
            ("EMPLOYEES_1", "менее 50"),
            ("EMPLOYEES_2", "50-250"),
            ("EMPLOYEES_3", "250-500"),
            ("EMPLOYEES_4", "более 500"),
        ]);
        let honorifics = plain(&[("HNR_RU_1", "Г-н"), ("HNR_RU_2", "Г-жа")]);
        let groups: Vec<(&str, Option<i64>, Vec<Entry>)> = vec![
            ("DEAL_STAGE", None, deal_stages.to_vec()),
            ("DEAL_STAGE_1", Some(1), repeat_stages.to_vec()),
            ("STATUS", None, lead_statuses.to_vec()),
            ("SOURCE", None, sources),
            ("DEAL_TYPE", None, deal_types),
            ("CONTACT_TYPE", None, contact_types),
            ("COMPANY_TYPE", None, company_types),
            ("INDUSTRY", None, industries),
            ("EMPLOYEES", None, employees),
            ("HONORIFIC", None, honorifics),
        ];
        let mut id = 101;
        for (entity, category, entries) in groups {
            for (i, (status_id, name, semantics, color)) in entries.into_iter().enumerate() {
                self.statuses.push(Status {
                    id,
                    entity_id: entity.to_owned(),
                    status_id: status_id.to_owned(),
                    name: name.to_owned(),
                    sort: (i as i64 + 1) * 10,
                    semantics,
                    color,
                    category_id: category,
                });
                id += 2;
            }
        }
    }

    fn seed_people(&mut self) {
        let people = [
            ("Елена", "Прекрасная", "Руководитель отдела продаж", true),
            ("Иван", "Петров", "Менеджер по продажам", true),
            ("Ольга", "Смирнова", "Менеджер по продажам", true),
            ("Пётр", "Сидоров", "Менеджер по продажам", false),
        ];
        for (i, (name, last, position, active)) in people.into_iter().enumerate() {
            let user = user_record(i as i64 + 1, name, last, position, active);
            self.users.push(Value::Object(user));
        }
        let seed = |portal: &mut Portal, kind: Kind, fields: Value| -> i64 {
            let fields = fields.as_object().cloned().unwrap_or_default();
            portal
                .create(kind, &fields, WEBHOOK_USER_ID, Mode::Seed)
                .unwrap_or_default()
        };
        let old = "2026-10-01T10:00:00+03:00";
        let svarka = seed(
            self,
            Kind::Company,
            json!({"TITLE": "ООО Сварка-Про", "COMPANY_TYPE": "CUSTOMER", "INDUSTRY": "MANUFACTURING",
                   "EMPLOYEES": "EMPLOYEES_2", "ASSIGNED_BY_ID": 2, "UF_CRM_INN": "6671234567",
                   "ADDRESS": "г. Екатеринбург, ул. Монтажников, 4",
                   "PHONE": [{"VALUE": "+7 343 200-10-20", "VALUE_TYPE": "WORK"}],
                   "EMAIL": [{"VALUE": "info@svarka-pro.example", "VALUE_TYPE": "WORK"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        let ural = seed(
            self,
            Kind::Company,
            json!({"TITLE": "АО «УралМеталлСтрой»", "COMPANY_TYPE": "CUSTOMER", "INDUSTRY": "MANUFACTURING",
                   "EMPLOYEES": "EMPLOYEES_4", "ASSIGNED_BY_ID": 3, "UF_CRM_INN": "6658000111",
                   "PHONE": [{"VALUE": "+7 343 310-00-00", "VALUE_TYPE": "WORK"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        let kuznetsov_co = seed(
            self,
            Kind::Company,
            json!({"TITLE": "ИП Кузнецов Андрей Викторович", "COMPANY_TYPE": "CUSTOMER", "INDUSTRY": "OTHER",
                   "EMPLOYEES": "EMPLOYEES_1", "ASSIGNED_BY_ID": 2,
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        seed(
            self,
            Kind::Contact,
            json!({"NAME": "Мария", "LAST_NAME": "Соколова", "SECOND_NAME": "Игоревна", "POST": "Снабженец",
                   "COMPANY_ID": svarka, "TYPE_ID": "CLIENT", "SOURCE_ID": "CALL", "ASSIGNED_BY_ID": 2,
                   "PHONE": [{"VALUE": "+7 912 600-11-22", "VALUE_TYPE": "MOBILE"}],
                   "EMAIL": [{"VALUE": "sokolova@svarka-pro.example", "VALUE_TYPE": "WORK"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        seed(
            self,
            Kind::Contact,
            json!({"NAME": "Дмитрий", "LAST_NAME": "Волков", "POST": "Главный инженер",
                   "COMPANY_ID": ural, "TYPE_ID": "CLIENT", "SOURCE_ID": "TRADE_SHOW", "ASSIGNED_BY_ID": 3,
                   "PHONE": [{"VALUE": "+7 343 310-00-15", "VALUE_TYPE": "WORK"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        seed(
            self,
            Kind::Contact,
            json!({"NAME": "Андрей", "LAST_NAME": "Кузнецов", "SECOND_NAME": "Викторович",
                   "COMPANY_ID": kuznetsov_co, "TYPE_ID": "CLIENT", "SOURCE_ID": "WEB", "ASSIGNED_BY_ID": 2,
                   "PHONE": [{"VALUE": "+7 912 345-67-89", "VALUE_TYPE": "MOBILE"}],
                   "EMAIL": [{"VALUE": "a.kuznetsov@example.ru", "VALUE_TYPE": "HOME"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
        seed(
            self,
            Kind::Lead,
            json!({"TITLE": "Заявка с сайта: сварочный полуавтомат", "NAME": "Сергей", "LAST_NAME": "Морозов",
                   "SOURCE_ID": "WEB", "STATUS_ID": "NEW", "OPPORTUNITY": 85000, "ASSIGNED_BY_ID": 2,
                   "PHONE": [{"VALUE": "+7 900 111-22-33", "VALUE_TYPE": "MOBILE"}],
                   "DATE_CREATE": old, "DATE_MODIFY": old}),
        );
    }

    fn records(&self, kind: Kind) -> &BTreeMap<i64, Record> {
        match kind {
            Kind::Lead => &self.leads,
            Kind::Deal => &self.deals,
            Kind::Contact => &self.contacts,
            Kind::Company => &self.companies,
        }
    }

    fn records_mut(&mut self, kind: Kind) -> &mut BTreeMap<i64, Record> {
        match kind {
            Kind::Lead => &mut self.leads,
            Kind::Deal => &mut self.deals,
            Kind::Contact => &mut self.contacts,
            Kind::Company => &mut self.companies,
        }
    }

    fn issue_tokens(&mut self, user_id: i64) -> (String, String) {
        let access = random_token(70);
        let refresh = random_token(70);
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                user_id,
                expires_at: Instant::now() + self.access_ttl,
            },
        );
        self.refresh_tokens.insert(refresh.clone(), user_id);
        (access, refresh)
    }

    // -- the HTTP entries -----------------------------------------------------------------

    fn handle_rest(
        &mut self,
        segments: &[&str],
        params: Map<String, Value>,
        auth: Option<String>,
        order: &KeyOrder,
    ) -> Reply {
        let (method, cred) = match segments {
            [user, code, method] if user.parse::<i64>().is_ok() => (
                method_name(method),
                Credential::Webhook((*user).to_owned(), (*code).to_owned()),
            ),
            [method] => (method_name(method), Credential::OAuth(auth)),
            _ => (segments.join("/"), Credential::OAuth(auth)),
        };
        let kind = match cred {
            Credential::Webhook(..) => AuthKind::Webhook,
            Credential::OAuth(Some(_)) => AuthKind::OAuth,
            Credential::OAuth(None) => AuthKind::None,
        };
        let reply = self.answer_rest(segments.len(), &method, &cred, &params, order);
        let status = match &reply {
            Reply::Json(s, _) | Reply::Html(s, _) => *s,
        };
        self.requests.push(RecordedRequest {
            method_name: method,
            at: Instant::now(),
            status,
            params: Value::Object(params),
            auth: kind,
        });
        reply
    }

    fn answer_rest(
        &mut self,
        segment_count: usize,
        method: &str,
        cred: &Credential,
        params: &Map<String, Value>,
        order: &KeyOrder,
    ) -> Reply {
        let started = SystemTime::now();
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return injected_failure(self.fail_status);
        }
        if self.rest_denied {
            let e = ApiError::new(
                403,
                "ACCESS_DENIED",
                "REST API is available only on commercial plans",
            );
            return Reply::Json(e.status, e.body());
        }
        if !self.bucket.admit(Instant::now()) {
            self.query_limit_hits += 1;
            let e = ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests");
            return Reply::Json(e.status, e.body());
        }
        let user = match self.authenticate(cred) {
            Ok(user) => user,
            Err(e) => return Reply::Json(e.status, e.body()),
        };
        if !(1..=3).contains(&segment_count) || method.is_empty() {
            let e = ApiError::method_not_found();
            return Reply::Json(e.status, e.body());
        }
        let outcome = if method == "batch" {
            // The outer call is not counted in `operating`; its commands are (limits.md).
            Ok(Outcome::one(self.batch(params, user, order)))
        } else if self.exhausted.contains(method) {
            Err(ApiError::time_limit())
        } else {
            self.call(method, params, user, order)
        };
        let finished = SystemTime::now();
        match outcome {
            Ok(out) => {
                let operating = self.spend(method, started, finished);
                let mut body = Map::new();
                body.insert("result".into(), out.result);
                if let Some(next) = out.next {
                    body.insert("next".into(), json!(next));
                }
                if let Some(total) = out.total {
                    body.insert("total".into(), json!(total));
                }
                body.insert("time".into(), time_object(started, finished, operating));
                Reply::Json(200, Value::Object(body))
            }
            Err(e) => Reply::Json(e.status, e.body()),
        }
    }

    fn authenticate(&self, cred: &Credential) -> Result<i64, ApiError> {
        match cred {
            Credential::Webhook(user, code) => {
                if user.parse::<i64>().ok() == Some(self.webhook_user) && *code == self.webhook_code
                {
                    Ok(self.webhook_user)
                } else {
                    Err(ApiError::new(
                        401,
                        "INVALID_CREDENTIALS",
                        "Invalid request credentials",
                    ))
                }
            }
            Credential::OAuth(Some(token)) => match self.access_tokens.get(token) {
                Some(t) if t.expires_at > Instant::now() => Ok(t.user_id),
                Some(_) => Err(ApiError::new(
                    401,
                    "expired_token",
                    "The access token provided has expired.",
                )),
                None => Err(ApiError::new(
                    401,
                    "NO_AUTH_FOUND",
                    "Wrong authorization data",
                )),
            },
            Credential::OAuth(None) => Err(ApiError::new(
                401,
                "NO_AUTH_FOUND",
                "Wrong authorization data",
            )),
        }
    }

    /// Adds the call's time to its method and answers the method's running total.
    fn spend(&mut self, method: &str, started: SystemTime, finished: SystemTime) -> f64 {
        let took = finished
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64();
        let total = self.operating.entry(method.to_owned()).or_insert(0.0);
        *total += took;
        *total
    }

    fn handle_oauth(&mut self, params: Map<String, Value>) -> Reply {
        let text = |k: &str| params.get(k).and_then(scalar_string).unwrap_or_default();
        let reply = if text("grant_type") != "refresh_token" {
            Reply::Json(
                400,
                json!({"error": "invalid_request", "error_description": "grant_type must be refresh_token here"}),
            )
        } else if text("client_id") != self.client_id || text("client_secret") != self.client_secret
        {
            Reply::Json(
                401,
                json!({"error": "invalid_client", "error_description": "Invalid client data"}),
            )
        } else if let Some(user) = self.refresh_tokens.remove(&text("refresh_token")) {
            let (access, refresh) = self.issue_tokens(user);
            let now = unix_now();
            Reply::Json(
                200,
                json!({
                    "access_token": access,
                    "expires": now as i64 + self.access_ttl.as_secs() as i64,
                    "expires_in": self.access_ttl.as_secs(),
                    "scope": "crm,task,user",
                    "domain": "oauth.bitrix.info",
                    "server_endpoint": "https://oauth.bitrix.info/rest/",
                    "status": "L",
                    "client_endpoint": self.client_endpoint,
                    "member_id": self.member_id,
                    "user_id": user,
                    "refresh_token": refresh,
                }),
            )
        } else {
            Reply::Json(
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid grant"}),
            )
        };
        let status = match &reply {
            Reply::Json(s, _) | Reply::Html(s, _) => *s,
        };
        let mut shown = params.clone();
        for secret in ["client_secret", "refresh_token"] {
            if shown.contains_key(secret) {
                shown.insert(secret.into(), Value::String("***".into()));
            }
        }
        self.requests.push(RecordedRequest {
            method_name: "oauth/token".into(),
            at: Instant::now(),
            status,
            params: Value::Object(shown),
            auth: AuthKind::OAuthServer,
        });
        reply
    }

    // -- batch ----------------------------------------------------------------------------

    fn batch(&mut self, params: &Map<String, Value>, user: i64, order: &KeyOrder) -> Value {
        let halt = truthy(get_ci(params, "halt"));
        let mut commands: Vec<(String, String)> = match get_ci(params, "cmd") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), scalar_string(v).unwrap_or_default()))
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), scalar_string(v).unwrap_or_default()))
                .collect(),
            _ => Vec::new(),
        };
        // In the order sent: a later command may read an earlier one's result.
        commands.sort_by_key(|(k, _)| order.rank_of_cmd(k));
        let mut results: Vec<(String, Value)> = Vec::new();
        let mut errors: Vec<(String, Value)> = Vec::new();
        let mut totals: Vec<(String, Value)> = Vec::new();
        let mut nexts: Vec<(String, Value)> = Vec::new();
        let mut times: Vec<(String, Value)> = Vec::new();
        for (index, (key, line)) in commands.iter().enumerate() {
            let (method, query) = line.split_once('?').unwrap_or((line.as_str(), ""));
            let method = method_name(method);
            let mut sub = parse_form(query);
            let mut sub_order = KeyOrder::default();
            sub_order.read_form(query);
            sub.remove("auth");
            substitute_results(&mut sub, &results);
            let started = SystemTime::now();
            let outcome = if index >= BATCH_LIMIT {
                Err(ApiError::new(
                    400,
                    "ERROR_BATCH_LENGTH_EXCEEDED",
                    "Max batch length exceeded",
                ))
            } else if method == "batch" {
                Err(ApiError::new(
                    405,
                    "ERROR_BATCH_METHOD_NOT_ALLOWED",
                    "Method is not allowed for batch usage",
                ))
            } else if self.exhausted.contains(&method) {
                Err(ApiError::time_limit())
            } else {
                self.call(&method, &sub, user, &sub_order)
            };
            let finished = SystemTime::now();
            match outcome {
                Ok(out) => {
                    let operating = self.spend(&method, started, finished);
                    results.push((key.clone(), out.result));
                    if let Some(total) = out.total {
                        totals.push((key.clone(), json!(total)));
                    }
                    if let Some(next) = out.next {
                        nexts.push((key.clone(), json!(next)));
                    }
                    times.push((key.clone(), time_object(started, finished, operating)));
                }
                Err(e) => {
                    errors.push((key.clone(), e.body()));
                    if halt {
                        break;
                    }
                }
            }
        }
        json!({
            "result": php_array(results),
            "result_error": php_array(errors),
            "result_total": php_array(totals),
            "result_next": php_array(nexts),
            "result_time": php_array(times),
        })
    }

    // -- method dispatch ------------------------------------------------------------------

    fn call(
        &mut self,
        method: &str,
        p: &Map<String, Value>,
        user: i64,
        order: &KeyOrder,
    ) -> Result<Outcome, ApiError> {
        let parts: Vec<&str> = method.split('.').collect();
        if let ["crm", entity, op] = parts.as_slice()
            && let Some(kind) = Kind::from_name(entity)
        {
            return match *op {
                "get" => self.old_get(kind, p).map(Outcome::one),
                "list" => self.old_list(kind, p, order),
                "add" => self.old_add(kind, p, user).map(Outcome::one),
                "update" => self.old_update(kind, p, user).map(Outcome::one),
                "fields" => Ok(Outcome::one(self.old_fields(kind))),
                _ => Err(ApiError::method_not_found()),
            };
        }
        match method {
            "crm.deal.contact.items.get" => self.deal_contacts(p).map(Outcome::one),
            "crm.deal.productrows.get" => self.product_rows_get(Kind::Deal, p).map(Outcome::one),
            "crm.lead.productrows.get" => self.product_rows_get(Kind::Lead, p).map(Outcome::one),
            "crm.deal.productrows.set" => {
                self.product_rows_set(Kind::Deal, p, user).map(Outcome::one)
            }
            "crm.lead.productrows.set" => {
                self.product_rows_set(Kind::Lead, p, user).map(Outcome::one)
            }
            "crm.item.get" => self.item_get(p).map(Outcome::one),
            "crm.item.update" => self.item_update(p, user).map(Outcome::one),
            "crm.activity.todo.add" => self.todo_add(p, user).map(Outcome::one),
            "crm.activity.list" => self.activity_list(p, order),
            "crm.activity.get" => self.activity_get(p).map(Outcome::one),
            "crm.activity.update" => self.activity_update(p, user).map(Outcome::one),
            "tasks.task.add" => self.task_add(p, user).map(Outcome::one),
            "tasks.task.list" => self.task_list(p, order),
            "tasks.task.complete" => self.task_complete(p, user).map(Outcome::one),
            "task.commentitem.add" => self.task_comment_add(p, user, order).map(Outcome::one),
            "crm.timeline.comment.add" => self.comment_add(p, user).map(Outcome::one),
            "crm.timeline.comment.list" => self.comment_list(p),
            "user.get" => Ok(self.user_get(p)),
            "user.current" | "profile" => Ok(Outcome::one(
                self.users
                    .iter()
                    .find(|u| as_i64(&u["ID"]) == Some(user))
                    .cloned()
                    .unwrap_or(Value::Null),
            )),
            "crm.status.list" => Ok(self.status_list(p, order)),
            "crm.dealcategory.list" => Ok(self.dealcategory_list(p)),
            "crm.category.list" => self.category_list(p),
            _ => Err(ApiError::method_not_found()),
        }
    }

    // -- old CRM methods (crm.deal.*, crm.lead.*, crm.contact.*, crm.company.*) -----------

    fn old_id(p: &Map<String, Value>) -> Result<i64, ApiError> {
        get_ci(p, "id")
            .and_then(as_i64)
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::old("ID is not defined or invalid."))
    }

    fn old_get(&self, kind: Kind, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let id = Self::old_id(p)?;
        self.render_old(kind, id)
            .ok_or_else(|| ApiError::old("Not found"))
    }

    fn old_add(
        &mut self,
        kind: Kind,
        p: &Map<String, Value>,
        user: i64,
    ) -> Result<Value, ApiError> {
        let fields = match get_ci(p, "fields") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(ApiError::old("Parameter 'fields' must be array.")),
        };
        // A funnel can be chosen when adding, only not changed by `crm.deal.update` later.
        self.create(kind, &fields, user, Mode::Api)
            .map(|id| json!(id))
    }

    fn old_update(
        &mut self,
        kind: Kind,
        p: &Map<String, Value>,
        user: i64,
    ) -> Result<Value, ApiError> {
        let id = Self::old_id(p)?;
        let fields = match get_ci(p, "fields") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(ApiError::old("Parameter 'fields' must be array.")),
        };
        if !self.records(kind).contains_key(&id) {
            return Err(ApiError::old(kind.not_found_on_update()));
        }
        self.update(kind, id, &fields, user, Mode::Old)?;
        Ok(Value::Bool(true))
    }

    fn old_list(
        &self,
        kind: Kind,
        p: &Map<String, Value>,
        key_order: &KeyOrder,
    ) -> Result<Outcome, ApiError> {
        let filter = match get_ci(p, "filter") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(_) => return Err(ApiError::old("Parameter 'filter' must be array.")),
        };
        let order = match get_ci(p, "order") {
            None => Vec::new(),
            Some(Value::Object(m)) => order_keys(m, key_order),
            Some(Value::Array(a)) if a.is_empty() => Vec::new(),
            Some(_) => return Err(ApiError::old("Parameter 'order' must be array.")),
        };
        let select: Vec<String> = match get_ci(p, "select") {
            Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
            Some(Value::Object(m)) => m.values().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        };
        let start = get_ci(p, "start").and_then(as_i64).unwrap_or(0);
        let mut rows: Vec<&Record> = self
            .records(kind)
            .values()
            .filter(|r| {
                filter_matches(
                    &|f| r.fields.get(f).cloned().unwrap_or(Value::Null),
                    &filter,
                )
            })
            .collect();
        sort_rows(&mut rows, &order, |r, f| {
            r.fields.get(f).cloned().unwrap_or(Value::Null)
        });
        let items = rows
            .into_iter()
            .map(|r| select_fields(kind, r, &select))
            .collect();
        Ok(Outcome::page(items, start))
    }

    fn old_fields(&self, kind: Kind) -> Value {
        let mut out = Map::new();
        for f in kind.fields() {
            let mut d = json!({
                "type": f.ty.api_name(),
                "isRequired": false,
                "isReadOnly": f.read_only,
                "isImmutable": f.name == "CATEGORY_ID",
                "isMultiple": f.ty == Ty::Multi,
                "isDynamic": false,
                "title": f.title,
            });
            if let Ty::Status(entity) = f.ty {
                d["statusType"] = json!(entity);
            }
            out.insert(f.name.to_owned(), d);
        }
        if kind == Kind::Deal {
            out.insert(
                "CONTACT_IDS".into(),
                json!({"type": "crm_contact", "isRequired": false, "isReadOnly": false,
                       "isImmutable": false, "isMultiple": true, "isDynamic": false, "title": "Контакты"}),
            );
        }
        for uf in kind.user_fields() {
            let (ty, settings) = match uf.ty {
                UfTy::Double => (
                    "double",
                    json!({"PRECISION": 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": ""}),
                ),
                UfTy::Enumeration => (
                    "enumeration",
                    json!({"DISPLAY": "LIST", "LIST_HEIGHT": 1, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"}),
                ),
                // Assumed: the settings crm.userfield.settings.fields lists for `datetime`.
                UfTy::DateTime => (
                    "datetime",
                    json!({"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}, "USE_SECOND": "Y",
                           "USE_TIMEZONE": "N"}),
                ),
                UfTy::Str => (
                    "string",
                    json!({"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0, "DEFAULT_VALUE": ""}),
                ),
            };
            let mut d = json!({
                "type": ty,
                "isRequired": false,
                "isReadOnly": false,
                "isImmutable": false,
                "isMultiple": false,
                "isDynamic": true,
                "title": uf.name,
                "listLabel": uf.label,
                "formLabel": uf.label,
                "filterLabel": uf.label,
                "settings": settings,
            });
            if uf.ty == UfTy::Enumeration {
                d["items"] = Value::Array(
                    uf.items
                        .iter()
                        .map(|(id, v)| json!({"ID": id.to_string(), "VALUE": v}))
                        .collect(),
                );
            }
            out.insert(uf.name.to_owned(), d);
        }
        Value::Object(out)
    }

    fn render_old(&self, kind: Kind, id: i64) -> Option<Value> {
        let record = self.records(kind).get(&id)?;
        let mut out = Map::new();
        for (k, v) in &record.fields {
            // Multifields show only when set, like `crm.contact.get`.
            if matches!(v, Value::Array(a) if a.is_empty()) {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        Some(Value::Object(out))
    }

    fn owner_exists(&self, kind: Kind, id: i64) -> bool {
        match kind {
            Kind::Deal => self.deals.contains_key(&id),
            Kind::Lead => self.leads.contains_key(&id),
            _ => false,
        }
    }

    fn product_rows_get(&self, kind: Kind, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let id = Self::old_id(p)?;
        if !self.owner_exists(kind, id) {
            return Err(ApiError::old("Not found."));
        }
        Ok(Value::Array(
            self.product_rows
                .get(&(kind, id))
                .cloned()
                .unwrap_or_default(),
        ))
    }

    /// Replaces the rows, and the owner's sum becomes theirs.
    fn product_rows_set(
        &mut self,
        kind: Kind,
        p: &Map<String, Value>,
        user: i64,
    ) -> Result<Value, ApiError> {
        let id = Self::old_id(p)?;
        if !self.owner_exists(kind, id) {
            return Err(ApiError::old("Not found."));
        }
        let given: Vec<Value> = match get_ci(p, "rows") {
            Some(Value::Array(rows)) => rows.clone(),
            Some(Value::Object(rows)) => rows.values().cloned().collect(),
            None => Vec::new(),
            Some(_) => return Err(ApiError::old("Parameter 'rows' must be array.")),
        };
        let owner_type = if kind == Kind::Deal { "D" } else { "L" };
        let mut rows = Vec::new();
        let mut sum = 0.0;
        for (i, row) in given.iter().enumerate() {
            let field = |k: &str| get_ci(row.as_object().unwrap_or(&Map::new()), k).cloned();
            let price = field("PRICE").as_ref().and_then(as_f64).unwrap_or(0.0);
            let quantity = field("QUANTITY").as_ref().and_then(as_f64).unwrap_or(1.0);
            let name = field("PRODUCT_NAME")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            sum += price * quantity;
            let row_id = self.next_product_row_id;
            self.next_product_row_id += 1;
            rows.push(json!({
                "ID": row_id.to_string(),
                "OWNER_ID": id.to_string(),
                "OWNER_TYPE": owner_type,
                "PRODUCT_ID": field("PRODUCT_ID").and_then(|v| as_i64(&v)).unwrap_or(0),
                "PRODUCT_NAME": name,
                "ORIGINAL_PRODUCT_NAME": name,
                "PRODUCT_DESCRIPTION": null,
                "PRICE": price,
                "PRICE_EXCLUSIVE": price,
                "PRICE_NETTO": price,
                "PRICE_BRUTTO": price,
                "PRICE_ACCOUNT": format!("{price:.2}"),
                "QUANTITY": quantity,
                "DISCOUNT_TYPE_ID": 2,
                "DISCOUNT_RATE": 0,
                "DISCOUNT_SUM": 0,
                "TAX_RATE": null,
                "TAX_INCLUDED": "N",
                "CUSTOMIZED": "Y",
                "MEASURE_CODE": 796,
                "MEASURE_NAME": "шт",
                "SORT": (i + 1) * 10,
                "TYPE": 1,
            }));
        }
        self.product_rows.insert((kind, id), rows);
        let mut fields = Map::new();
        fields.insert("OPPORTUNITY".into(), json!(format!("{sum:.2}")));
        self.update(kind, id, &fields, user, Mode::Api)?;
        Ok(json!(true))
    }

    fn deal_contacts(&self, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let id = Self::old_id(p)?;
        let deal = self
            .deals
            .get(&id)
            .ok_or_else(|| ApiError::old("Not found."))?;
        Ok(Value::Array(
            deal.contact_ids
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({"CONTACT_ID": c, "SORT": (i + 1) * 10, "ROLE_ID": 0,
                           "IS_PRIMARY": if i == 0 { "Y" } else { "N" }})
                })
                .collect(),
        ))
    }

    // -- creation and edits ---------------------------------------------------------------

    fn create(
        &mut self,
        kind: Kind,
        fields: &Map<String, Value>,
        user: i64,
        mode: Mode,
    ) -> Result<i64, ApiError> {
        let id = *self.next_id.get(&kind).unwrap_or(&1);
        let now = now_string();
        let today = today_string(0);
        let mut record = Record::default();
        for f in kind.fields() {
            let value = if f.ty == Ty::Multi {
                Value::Array(Vec::new())
            } else {
                Value::Null
            };
            record.fields.insert(f.name.to_owned(), value);
        }
        for uf in kind.user_fields() {
            record.fields.insert(uf.name.to_owned(), Value::Null);
        }
        let mut set = |k: &str, v: Value| {
            record.fields.insert(k.to_owned(), v);
        };
        set("ID", json!(id.to_string()));
        set("ASSIGNED_BY_ID", json!(user.to_string()));
        set("CREATED_BY_ID", json!(user.to_string()));
        set("DATE_CREATE", json!(now));
        set("OPENED", json!("Y"));
        match kind {
            Kind::Deal => {
                for (k, v) in [
                    ("TITLE", ""),
                    ("TYPE_ID", "SALE"),
                    ("CATEGORY_ID", "0"),
                    ("STAGE_ID", "NEW"),
                    ("CURRENCY_ID", "RUB"),
                    ("OPPORTUNITY", "0.00"),
                    ("IS_MANUAL_OPPORTUNITY", "N"),
                    ("TAX_VALUE", "0.00"),
                    ("COMPANY_ID", "0"),
                    ("CLOSED", "N"),
                    ("IS_RECURRING", "N"),
                    ("IS_RETURN_CUSTOMER", "N"),
                    ("IS_REPEATED_APPROACH", "N"),
                ] {
                    set(k, json!(v));
                }
                set("BEGINDATE", json!(today));
                set("CLOSEDATE", json!(today_string(7)));
                set("LAST_ACTIVITY_TIME", json!(now));
                set("LAST_ACTIVITY_BY", json!(user.to_string()));
            }
            Kind::Lead => {
                for (k, v) in [
                    ("TITLE", ""),
                    ("STATUS_ID", "NEW"),
                    ("CURRENCY_ID", "RUB"),
                    ("OPPORTUNITY", "0.00"),
                    ("IS_MANUAL_OPPORTUNITY", "N"),
                    ("IS_RETURN_CUSTOMER", "N"),
                ] {
                    set(k, json!(v));
                }
            }
            Kind::Contact => {
                set("TYPE_ID", json!("CLIENT"));
                set("EXPORT", json!("Y"));
                set("COMPANY_ID", Value::Null);
            }
            Kind::Company => {
                set("TITLE", json!(""));
                set("COMPANY_TYPE", json!("CUSTOMER"));
                set("CURRENCY_ID", json!("RUB"));
                set("REVENUE", json!("0.00"));
                set("IS_MY_COMPANY", json!("N"));
            }
        }
        let stamped = self.apply(kind, &mut record, fields, mode)?;
        self.settle(kind, &mut record, None, user, &stamped);
        if record
            .fields
            .get("TITLE")
            .is_some_and(|t| t.as_str() == Some(""))
        {
            record
                .fields
                .insert("TITLE".into(), json!(kind.default_title(id)));
        }
        self.next_id.insert(kind, id + 1);
        self.records_mut(kind).insert(id, record);
        Ok(id)
    }

    fn update(
        &mut self,
        kind: Kind,
        id: i64,
        fields: &Map<String, Value>,
        user: i64,
        mode: Mode,
    ) -> Result<(), ApiError> {
        let Some(before) = self.records(kind).get(&id).cloned() else {
            return Err(ApiError::old(kind.not_found_on_update()));
        };
        let mut record = before.clone();
        let stamped = self.apply(kind, &mut record, fields, mode)?;
        let previous_stage = stage_of(kind, &before).map(str::to_owned);
        self.settle(kind, &mut record, previous_stage, user, &stamped);
        self.records_mut(kind).insert(id, record);
        Ok(())
    }

    /// Writes the known, writable fields into `record` (values turned into strings, like the
    /// portal stores them) and silently drops the rest, as the docs say updates do. Answers
    /// which read-only stamps the caller set itself (seeding only).
    fn apply(
        &mut self,
        kind: Kind,
        record: &mut Record,
        fields: &Map<String, Value>,
        mode: Mode,
    ) -> Result<HashSet<String>, ApiError> {
        let mut stamped = HashSet::new();
        let category_given = fields.get("CATEGORY_ID").and_then(as_i64);
        if kind == Kind::Deal
            && mode != Mode::Old
            && let Some(category) = category_given
        {
            if !self.categories.iter().any(|c| c.id == category) {
                return Err(ApiError::old("Category not found"));
            }
            record
                .fields
                .insert("CATEGORY_ID".into(), json!(category.to_string()));
            if !fields.contains_key("STAGE_ID") {
                let first = self
                    .stages_of(Kind::Deal, category)
                    .first()
                    .map(|s| s.status_id.clone());
                record.fields.insert("STAGE_ID".into(), json!(first));
            }
        }
        for (key, value) in fields {
            if kind == Kind::Deal && key == "CONTACT_IDS" {
                let ids: Vec<i64> = match value {
                    Value::Array(a) => a.iter().filter_map(as_i64).collect(),
                    other => as_i64(other).into_iter().collect(),
                };
                record.contact_ids = ids;
                continue;
            }
            if let Some(f) = kind.fields().iter().find(|f| f.name == key) {
                if f.name == "CATEGORY_ID" {
                    continue; // handled above; `crm.deal.update` cannot move funnels
                }
                if f.read_only && mode != Mode::Seed {
                    continue;
                }
                if f.read_only {
                    stamped.insert(f.name.to_owned());
                }
                if f.ty == Ty::Multi {
                    let current = record
                        .fields
                        .entry(f.name.to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    apply_multifield(current, f.name, value, &mut self.next_multifield_id);
                    continue;
                }
                let Some(normalized) = normalize(f.ty, value) else {
                    continue;
                };
                if stage_field(kind) == Some(f.name) {
                    let category = category_of(kind, record);
                    let wanted = normalized.as_str().unwrap_or("");
                    if !self
                        .stages_of(kind, category)
                        .iter()
                        .any(|s| s.status_id == wanted)
                    {
                        return Err(ApiError::old(&format!("Stage '{wanted}' not found")));
                    }
                }
                if kind == Kind::Deal && f.name == "CONTACT_ID" {
                    record.contact_ids = as_i64(&normalized).into_iter().collect();
                }
                record.fields.insert(f.name.to_owned(), normalized);
            } else if let Some(uf) = kind.user_fields().iter().find(|u| u.name == key)
                && let Some(normalized) = normalize_uf(uf, value)
            {
                record.fields.insert(uf.name.to_owned(), normalized);
            }
        }
        Ok(stamped)
    }

    /// Derived fields: stage group, closed flag, who moved it, when it changed, `HAS_PHONE`.
    fn settle(
        &self,
        kind: Kind,
        record: &mut Record,
        previous_stage: Option<String>,
        user: i64,
        stamped: &HashSet<String>,
    ) {
        let now = now_string();
        let user_s = json!(user.to_string());
        let stage = stage_of(kind, record).map(str::to_owned);
        if let Some(stage) = &stage {
            let category = category_of(kind, record);
            let stages = self.stages_of(kind, category);
            let semantics = stages
                .iter()
                .find(|s| &s.status_id == stage)
                .and_then(|s| s.semantics)
                .unwrap_or("P");
            let is_first = stages.first().is_some_and(|s| &s.status_id == stage);
            let moved = previous_stage.as_deref() != Some(stage.as_str());
            match kind {
                Kind::Deal => {
                    record
                        .fields
                        .insert("STAGE_SEMANTIC_ID".into(), json!(semantics));
                    record.fields.insert(
                        "CLOSED".into(),
                        json!(if semantics == "P" { "N" } else { "Y" }),
                    );
                    record
                        .fields
                        .insert("IS_NEW".into(), json!(if is_first { "Y" } else { "N" }));
                }
                Kind::Lead => {
                    record
                        .fields
                        .insert("STATUS_SEMANTIC_ID".into(), json!(semantics));
                    if semantics != "P" && moved {
                        record.fields.insert("DATE_CLOSED".into(), json!(now));
                    }
                }
                _ => {}
            }
            if moved && !stamped.contains("MOVED_TIME") {
                record.fields.insert("MOVED_TIME".into(), json!(now));
                record.fields.insert("MOVED_BY_ID".into(), user_s.clone());
            }
        }
        if kind == Kind::Deal {
            let first = record.contact_ids.first().map(|c| json!(c.to_string()));
            record
                .fields
                .insert("CONTACT_ID".into(), first.unwrap_or(Value::Null));
        } else {
            for (flag, multi) in [
                ("HAS_PHONE", "PHONE"),
                ("HAS_EMAIL", "EMAIL"),
                ("HAS_IMOL", "IM"),
            ] {
                let has = record
                    .fields
                    .get(multi)
                    .is_some_and(|v| matches!(v, Value::Array(a) if !a.is_empty()));
                record
                    .fields
                    .insert(flag.into(), json!(if has { "Y" } else { "N" }));
            }
        }
        if !stamped.contains("DATE_MODIFY") {
            record.fields.insert("DATE_MODIFY".into(), json!(now));
        }
        if !stamped.contains("MODIFY_BY_ID") {
            record.fields.insert("MODIFY_BY_ID".into(), user_s);
        }
    }

    fn stages_of(&self, kind: Kind, category: i64) -> Vec<&Status> {
        let entity = match (kind, category) {
            (Kind::Lead, _) => "STATUS".to_owned(),
            (_, 0) => "DEAL_STAGE".to_owned(),
            (_, c) => format!("DEAL_STAGE_{c}"),
        };
        let mut stages: Vec<&Status> = self
            .statuses
            .iter()
            .filter(|s| s.entity_id == entity)
            .collect();
        stages.sort_by_key(|s| s.sort);
        stages
    }

    // -- universal methods (crm.item.*) ---------------------------------------------------

    fn item_kind(p: &Map<String, Value>) -> Result<Kind, ApiError> {
        p.get("entityTypeId")
            .and_then(as_i64)
            .and_then(Kind::from_type_id)
            .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Smart process not found"))
    }

    fn item_get(&self, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let kind = Self::item_kind(p)?;
        let id = p.get("id").and_then(as_i64).unwrap_or(0);
        let record = self
            .records(kind)
            .get(&id)
            .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Element not found"))?;
        Ok(json!({"item": render_item(kind, record)}))
    }

    fn item_update(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let kind = Self::item_kind(p)?;
        let id = p.get("id").and_then(as_i64).unwrap_or(0);
        if !self.records(kind).contains_key(&id) {
            return Err(ApiError::new(400, "NOT_FOUND", "Element not found"));
        }
        let Some(Value::Object(given)) = p.get("fields") else {
            return Err(ApiError::missing("fields"));
        };
        // camelCase back to the stored names; a name that matches nothing is dropped.
        let mut fields = Map::new();
        for (key, value) in given {
            let upper = if kind == Kind::Deal && key == "contactIds" {
                Some("CONTACT_IDS".to_owned())
            } else if key == "fm" {
                None
            } else {
                kind.fields()
                    .iter()
                    .map(|f| f.name)
                    .chain(kind.user_fields().iter().map(|u| u.name))
                    .find(|name| camel_name(kind, name) == *key)
                    .map(str::to_owned)
            };
            if let Some(upper) = upper {
                fields.insert(upper, value.clone());
            }
        }
        self.update(kind, id, &fields, user, Mode::Api)?;
        let record = &self.records(kind)[&id];
        Ok(json!({"item": render_item(kind, record)}))
    }

    // -- timeline, activities, tasks ------------------------------------------------------

    fn todo_add(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let owner_type = p
            .get("ownerTypeId")
            .and_then(as_i64)
            .ok_or_else(|| ApiError::missing("ownerTypeId"))?;
        let owner_id = p
            .get("ownerId")
            .and_then(as_i64)
            .ok_or_else(|| ApiError::missing("ownerId"))?;
        let deadline = p
            .get("deadline")
            .and_then(scalar_string)
            .ok_or_else(|| ApiError::missing("deadline"))?;
        let kind = Kind::from_type_id(owner_type)
            .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Not found."))?;
        if !self.records(kind).contains_key(&owner_id) {
            return Err(ApiError::new(400, "NOT_FOUND", "Not found."));
        }
        let deadline = parse_datetime(&deadline)
            .ok_or_else(|| ApiError::new(400, "WRONG_DATETIME_FORMAT", "Wrong datetime format"))?;
        let id = self.next_activity_id;
        self.next_activity_id += 1;
        let text = |k: &str| p.get(k).and_then(scalar_string).unwrap_or_default();
        let responsible = p.get("responsibleId").and_then(as_i64).unwrap_or(user);
        let description = text("description");
        let title = text("title");
        // Without a title the portal makes one of the description's first line.
        let subject = if title.trim().is_empty() {
            subject_of(&description)
        } else {
            title
        };
        let deadline = format_datetime(deadline);
        let mut activity = activity_record(id, user);
        for (k, v) in [
            ("OWNER_TYPE_ID", json!(owner_type.to_string())),
            ("OWNER_ID", json!(owner_id.to_string())),
            ("SUBJECT", json!(subject)),
            ("DESCRIPTION", json!(description)),
            // The to-do's deadline is its END_TIME, and DEADLINE follows it.
            ("START_TIME", json!(deadline)),
            ("END_TIME", json!(deadline)),
            ("DEADLINE", json!(deadline)),
            ("RESPONSIBLE_ID", json!(responsible.to_string())),
            (
                "PING_OFFSETS",
                p.get("pingOffsets").cloned().unwrap_or(json!([])),
            ),
            ("COLOR_ID", json!(p.get("colorId").and_then(scalar_string))),
        ] {
            activity.insert(k.into(), v);
        }
        self.activities.push(Value::Object(activity));
        Ok(json!({"id": id}))
    }

    fn activity_index(&self, p: &Map<String, Value>) -> Result<usize, ApiError> {
        let id = Self::old_id(p)?;
        self.activities
            .iter()
            .position(|a| as_i64(&a["ID"]) == Some(id))
            .ok_or_else(|| ApiError::old("Activity is not found"))
    }

    fn activity_get(&self, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let index = self.activity_index(p)?;
        Ok(render_activity(&self.activities[index], &[]))
    }

    fn activity_list(
        &self,
        p: &Map<String, Value>,
        key_order: &KeyOrder,
    ) -> Result<Outcome, ApiError> {
        let mut filter = match get_ci(p, "filter") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(_) => return Err(ApiError::old("Parameter 'filter' must be array.")),
        };
        // The default order is by START_TIME (the method's docs), then by ID.
        let order = match get_ci(p, "order") {
            Some(Value::Object(m)) if !m.is_empty() => order_keys(m, key_order),
            Some(Value::Object(_) | Value::Array(_)) | None => vec![("START_TIME".into(), false)],
            Some(_) => return Err(ApiError::old("Parameter 'order' must be array.")),
        };
        let select = string_list(get_ci(p, "select"));
        let start = get_ci(p, "start").and_then(as_i64).unwrap_or(0);
        // `BINDINGS`: a row for every pair an activity matches, duplicates included, as the
        // docs warn. An activity here has one binding, its owner.
        let bindings: Option<Vec<Map<String, Value>>> = filter.remove("BINDINGS").map(|b| {
            let pairs: Vec<&Value> = match &b {
                Value::Array(a) => a.iter().collect(),
                Value::Object(m) => m.values().collect(),
                _ => Vec::new(),
            };
            pairs
                .into_iter()
                .filter_map(|v| v.as_object().cloned())
                .collect()
        });
        let get = |a: &Value, f: &str| a.get(f).cloned().unwrap_or(Value::Null);
        let mut rows: Vec<&Value> = Vec::new();
        for a in &self.activities {
            if !filter_matches(&|f| get(a, f), &filter) {
                continue;
            }
            match &bindings {
                None => rows.push(a),
                Some(pairs) => {
                    for pair in pairs {
                        if filter_matches(&|f| get(a, f), pair) {
                            rows.push(a);
                        }
                    }
                }
            }
        }
        sort_rows(&mut rows, &order, get);
        let items = rows
            .into_iter()
            .map(|a| render_activity(a, &select))
            .collect();
        Ok(Outcome::page(items, start))
    }

    fn activity_update(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let index = self.activity_index(p)?;
        let fields = match get_ci(p, "fields") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(ApiError::old("Parameter 'fields' must be array.")),
        };
        if self.activities[index]["PROVIDER_ID"] == "CONFIGURABLE_REST_APP" {
            return Err(ApiError::old(
                "Use crm.activity.configurable.update for this activity provider",
            ));
        }
        if fields
            .get("SUBJECT")
            .is_some_and(|s| scalar_string(s).unwrap_or_default().trim().is_empty())
        {
            return Err(ApiError::old("The field SUBJECT is not defined or empty"));
        }
        if let Some(r) = fields.get("RESPONSIBLE_ID")
            && !as_i64(r).is_some_and(|id| self.users.iter().any(|u| as_i64(&u["ID"]) == Some(id)))
        {
            return Err(ApiError::old(
                "The field RESPONSIBLE_ID is not defined or invalid",
            ));
        }
        let activity = &mut self.activities[index];
        let type_id = as_i64(&activity["TYPE_ID"]).unwrap_or(0);
        for (key, value) in &fields {
            let normalized = match key.as_str() {
                "COMPLETED" => match bool_of(value) {
                    Some(done) => {
                        activity["STATUS"] = json!(if done { "2" } else { "1" });
                        json!(if done { "Y" } else { "N" })
                    }
                    None => continue,
                },
                "START_TIME" | "END_TIME" => {
                    let Some(d) = scalar_string(value).and_then(|s| parse_datetime(&s)) else {
                        continue;
                    };
                    // DEADLINE is not set directly: START_TIME for meetings and calls,
                    // END_TIME for the rest (crm.activity.fields).
                    let drives_deadline = if matches!(type_id, 1 | 2) {
                        key == "START_TIME"
                    } else {
                        key == "END_TIME"
                    };
                    if drives_deadline {
                        activity["DEADLINE"] = json!(format_datetime(d));
                    }
                    json!(format_datetime(d))
                }
                "RESPONSIBLE_ID" | "PRIORITY" | "STATUS" | "DESCRIPTION_TYPE" | "DIRECTION"
                | "NOTIFY_TYPE" => match as_i64(value) {
                    Some(n) => json!(n.to_string()),
                    None => continue,
                },
                "SUBJECT" | "DESCRIPTION" | "LOCATION" | "ORIGINATOR_ID" | "ORIGIN_ID" => {
                    json!(scalar_string(value).unwrap_or_default())
                }
                // Read-only or immutable (ID, OWNER_*, TYPE_ID, PROVIDER_ID, DEADLINE, …):
                // silently kept as they are.
                _ => continue,
            };
            activity[key.as_str()] = normalized;
        }
        activity["LAST_UPDATED"] = json!(now_string());
        activity["EDITOR_ID"] = json!(user.to_string());
        Ok(Value::Bool(true))
    }

    fn task_add(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let Some(Value::Object(fields)) = get_ci(p, "fields") else {
            return Err(ApiError::missing("fields"));
        };
        let task = self.new_task(fields, user)?;
        Ok(json!({"task": task}))
    }

    /// Creates a task from `tasks.task.add` fields and answers it as the method does.
    fn new_task(&mut self, fields: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let text = |k: &str| fields.get(k).and_then(scalar_string).unwrap_or_default();
        if text("TITLE").trim().is_empty() {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                "Task title is not specified<br>",
            ));
        }
        let deadline = match fields.get("DEADLINE").and_then(scalar_string) {
            Some(d) if !d.is_empty() => Some(
                parse_datetime(&d)
                    .map(format_datetime)
                    .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Wrong deadline<br>"))?,
            ),
            _ => None,
        };
        let status = match fields.get("STATUS") {
            None => 2,
            Some(v) => as_i64(v)
                .filter(|s| (1..=7).contains(s))
                .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Incorrect status<br>"))?,
        };
        let links: Vec<Value> = match fields.get("UF_CRM_TASK") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(scalar_string)
                .map(Value::String)
                .collect(),
            Some(v) => scalar_string(v).into_iter().map(Value::String).collect(),
            None => Vec::new(),
        };
        let id = self.next_task_id;
        self.next_task_id += 1;
        let now = now_string();
        let responsible = fields
            .get("RESPONSIBLE_ID")
            .and_then(as_i64)
            .unwrap_or(user);
        let created_by = fields.get("CREATED_BY").and_then(as_i64).unwrap_or(user);
        let closed = status == 5;
        let task = json!({
            "id": id.to_string(),
            "parentId": null,
            "title": text("TITLE"),
            "description": text("DESCRIPTION"),
            "priority": fields.get("PRIORITY").and_then(scalar_string).unwrap_or_else(|| "1".into()),
            "status": status.to_string(),
            "groupId": "0",
            "createdBy": created_by.to_string(),
            "createdDate": now,
            "responsibleId": responsible.to_string(),
            "changedBy": user.to_string(),
            "changedDate": now,
            "statusChangedBy": null,
            "statusChangedDate": now,
            "closedBy": if closed { json!(user.to_string()) } else { Value::Null },
            "closedDate": if closed { json!(now) } else { Value::Null },
            "activityDate": now,
            "deadline": deadline,
            "taskControl": if truthy(fields.get("TASK_CONTROL")) { "Y" } else { "N" },
            "commentsCount": null,
            "ufCrmTask": links,
        });
        self.tasks.push(task.clone());
        Ok(task)
    }

    fn task_list(&self, p: &Map<String, Value>, key_order: &KeyOrder) -> Result<Outcome, ApiError> {
        let filter: Map<String, Value> = match p.get("filter") {
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(k, _)| !k.starts_with("::")) // sub-filters (favourites) are not emulated
                .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                .collect(),
            _ => Map::new(),
        };
        // By default the newest first: ID descending (the method's docs).
        let order = match p.get("order") {
            Some(Value::Object(m)) if !m.is_empty() => order_keys(m, key_order)
                .into_iter()
                .map(|(k, desc)| (k.to_ascii_uppercase(), desc))
                .collect(),
            _ => vec![("ID".to_owned(), true)],
        };
        if order
            .iter()
            .any(|(k, _)| !TASK_SORT_KEYS.contains(&k.as_str()))
        {
            return Err(ApiError::new(
                400,
                "0",
                "Invalid sorting key (internal error)",
            ));
        }
        let select = string_list(p.get("select"));
        let start = p.get("start").and_then(as_i64).unwrap_or(0);
        let mut rows: Vec<&Value> = self
            .tasks
            .iter()
            .filter(|t| filter_matches(&|f| task_value(t, f), &filter))
            .collect();
        sort_rows(&mut rows, &order, task_value);
        let items = rows
            .into_iter()
            .map(|t| self.render_task(t, &select))
            .collect();
        let mut out = Outcome::page(items, start);
        out.result = json!({"tasks": out.result});
        Ok(out)
    }

    /// A task as `tasks.task.list` shows it: every stored field without `select`, else `id`
    /// and the selected ones, with the user card `RESPONSIBLE_ID` and `CREATED_BY` bring.
    fn render_task(&self, t: &Value, select: &[String]) -> Value {
        if select.is_empty() {
            return t.clone();
        }
        let mut out = Map::new();
        out.insert("id".into(), t["id"].clone());
        for name in select {
            let upper = name.to_ascii_uppercase();
            match upper.as_str() {
                "STATUS" => {
                    out.insert("status".into(), t["status"].clone());
                    out.insert("subStatus".into(), task_value(t, "STATUS"));
                }
                "REAL_STATUS" => {
                    out.insert("status".into(), t["status"].clone());
                }
                "RESPONSIBLE_ID" | "CREATED_BY" => {
                    let key = task_key(&upper);
                    out.insert(key.clone(), t[key.as_str()].clone());
                    let card = if upper == "CREATED_BY" {
                        "creator"
                    } else {
                        "responsible"
                    };
                    out.insert(card.into(), self.user_card(&t[key.as_str()]));
                }
                _ => {
                    let key = task_key(&upper);
                    if let Some(v) = t.get(&key) {
                        out.insert(key, v.clone());
                    }
                }
            }
        }
        Value::Object(out)
    }

    fn user_card(&self, id: &Value) -> Value {
        let user = self.users.iter().find(|u| loose_eq(&u["ID"], id));
        let text = |k: &str| user.and_then(|u| u[k].as_str()).unwrap_or("").to_owned();
        let id = scalar_string(id).unwrap_or_default();
        json!({
            "id": id,
            "name": format!("{} {}", text("NAME"), text("LAST_NAME")).trim(),
            "link": format!("/company/personal/user/{id}/"),
            "icon": "/bitrix/images/tasks/default_avatar.png",
            "workPosition": text("WORK_POSITION"),
        })
    }

    fn task_complete(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        let raw = p.get("taskId").ok_or_else(|| ApiError::missing("taskId"))?;
        let id = as_i64(raw)
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::new(400, "0", "wrong task id"))?;
        let not_allowed = || ApiError::new(400, "0", "Action on the task is not allowed");
        // A missing task, and a closed one, answer alike (the tasks' completion rule).
        let task = self
            .tasks
            .iter_mut()
            .find(|t| as_i64(&t["id"]) == Some(id))
            .ok_or_else(not_allowed)?;
        if task["status"] == "5" {
            return Err(not_allowed());
        }
        // With completion control, the creator accepts the work; the others only hand it in.
        let by_creator = as_i64(&task["createdBy"]) == Some(user);
        let status = if task["taskControl"] == "Y" && !by_creator {
            "4"
        } else {
            "5"
        };
        let now = now_string();
        let user_s = json!(user.to_string());
        task["status"] = json!(status);
        task["statusChangedBy"] = user_s.clone();
        task["statusChangedDate"] = json!(now);
        task["changedBy"] = user_s.clone();
        task["changedDate"] = json!(now);
        task["activityDate"] = json!(now);
        if status == "5" {
            task["closedBy"] = user_s;
            task["closedDate"] = json!(now);
        }
        Ok(json!({"task": task.clone()}))
    }

    /// `task.commentitem.add` reads its arguments by position, TASKID then FIELDS, whatever
    /// they are called (b24phpsdk `ApiClient`: "strict order of arguments").
    fn task_comment_add(
        &mut self,
        p: &Map<String, Value>,
        user: i64,
        order: &KeyOrder,
    ) -> Result<Value, ApiError> {
        let mut args: Vec<&Value> = order
            .params
            .iter()
            .filter(|k| !k.eq_ignore_ascii_case("auth"))
            .filter_map(|k| p.get(k))
            .collect();
        if args.is_empty() {
            args = ["TASKID", "FIELDS"]
                .iter()
                .filter_map(|k| get_ci(p, k))
                .collect();
        }
        let core = |text: String| ApiError::new(400, "ERROR_CORE", text);
        let wrong = |n: usize, name: &str, ty: &str| {
            core(format!(
                "TASKS_ERROR_EXCEPTION_#256; Param #{n} ({name}) for method ctaskcommentitem::add() \
                 expected to be of type \"{ty}\", but given something else.; 256/TE/WRONG_ARGUMENTS<br>"
            ))
        };
        let task_id = args
            .first()
            .and_then(|v| as_i64(v))
            .ok_or_else(|| wrong(0, "taskId", "integer"))?;
        let Some(Value::Object(fields)) = args.get(1) else {
            return Err(wrong(1, "arFields", "array"));
        };
        let allowed = [
            "POST_MESSAGE",
            "AUTHOR_ID",
            "POST_DATE",
            "UF_FORUM_MESSAGE_DOC",
        ];
        if let Some(bad) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(core(format!(
                "TASKS_ERROR_EXCEPTION_#256; Param #1 (arFields) for method ctaskcommentitem::add() \
                 must not contain key \"{bad}\".; 256/TE/WRONG_ARGUMENTS<br>"
            )));
        }
        let Some(task) = self
            .tasks
            .iter_mut()
            .find(|t| as_i64(&t["id"]) == Some(task_id))
        else {
            return Err(core(
                "Insufficient permissions to add a comment.<br>".into(),
            ));
        };
        let message = fields
            .get("POST_MESSAGE")
            .and_then(scalar_string)
            .unwrap_or_default();
        if message.trim().is_empty() {
            return Err(core("Comment text is not specified<br>".into()));
        }
        let count = task["commentsCount"]
            .as_str()
            .and_then(|c| c.parse::<i64>().ok());
        task["commentsCount"] = json!((count.unwrap_or(0) + 1).to_string());
        let id = self.next_task_comment_id;
        self.next_task_comment_id += 1;
        let author = fields.get("AUTHOR_ID").and_then(as_i64).unwrap_or(user);
        let date = fields
            .get("POST_DATE")
            .and_then(scalar_string)
            .and_then(|d| parse_datetime(&d))
            .map_or_else(now_string, format_datetime);
        self.task_comments.push(json!({
            "ID": id.to_string(),
            "TASK_ID": task_id.to_string(),
            "AUTHOR_ID": author.to_string(),
            "POST_MESSAGE": message,
            "POST_DATE": date,
        }));
        Ok(json!(id))
    }

    fn comment_add(&mut self, p: &Map<String, Value>, user: i64) -> Result<Value, ApiError> {
        // Since crm 23.100.0 only the lower-case `fields` key is taken (the method's docs).
        let Some(Value::Object(fields)) = p.get("fields") else {
            return Err(ApiError::missing("fields"));
        };
        let entity_type = fields
            .get("ENTITY_TYPE")
            .and_then(scalar_string)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let entity_id = fields.get("ENTITY_ID").and_then(as_i64).unwrap_or(0);
        let Some(kind) = Kind::from_name(&entity_type) else {
            return Err(ApiError::new(
                400,
                "OWNER_NOT_FOUND",
                "Owner of the item not found",
            ));
        };
        if !self.records(kind).contains_key(&entity_id) {
            return Err(ApiError::new(400, "NOT_FOUND", "Not found."));
        }
        let comment = fields
            .get("COMMENT")
            .and_then(scalar_string)
            .unwrap_or_default();
        if comment.trim().is_empty() {
            return Err(ApiError::new(400, "INVALID_ARG_VALUE", "Empty comment"));
        }
        let id = self.next_comment_id;
        self.next_comment_id += 1;
        self.comments.push(json!({
            "ID": id.to_string(),
            "ENTITY_ID": entity_id.to_string(),
            "ENTITY_TYPE": entity_type,
            "COMMENT": comment,
            "AUTHOR_ID": user.to_string(),
            "CREATED": now_string(),
        }));
        Ok(json!(id))
    }

    /// `crm.timeline.comment.list`: the comments of one record, 50 a page. ENTITY_ID and
    /// ENTITY_TYPE are both required in the filter, and `select` picks fields (the docs:
    /// https://dev.1c-bitrix.ru/rest_help/crm/timeline/comment/crm_timeline_comment_list.php).
    fn comment_list(&self, p: &Map<String, Value>) -> Result<Outcome, ApiError> {
        let filter = match get_ci(p, "filter") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let entity_id = filter.get("ENTITY_ID").and_then(as_i64);
        let entity_type = filter
            .get("ENTITY_TYPE")
            .and_then(scalar_string)
            .map(|t| t.to_ascii_lowercase());
        let (Some(entity_id), Some(entity_type)) = (entity_id, entity_type) else {
            return Err(ApiError::new(
                400,
                "INVALID_ARG_VALUE",
                "ENTITY_ID and ENTITY_TYPE are required in filter",
            ));
        };
        let select = string_list(get_ci(p, "select"));
        let items = self
            .comments
            .iter()
            .filter(|c| {
                c["ENTITY_TYPE"] == entity_type.as_str()
                    && as_i64(&c["ENTITY_ID"]) == Some(entity_id)
            })
            .map(|c| match (&select[..], c) {
                ([], _) => c.clone(),
                (fields, Value::Object(all)) if !fields.iter().any(|f| f == "*") => Value::Object(
                    all.iter()
                        .filter(|(k, _)| fields.iter().any(|f| f.eq_ignore_ascii_case(k)))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => c.clone(),
            })
            .collect();
        let start = get_ci(p, "start").and_then(as_i64).unwrap_or(0);
        Ok(Outcome::page(items, start))
    }

    // -- directories ----------------------------------------------------------------------

    fn user_get(&self, p: &Map<String, Value>) -> Outcome {
        // Filters come as `FILTER`/`filter` or, the legacy way, as top-level keys.
        let mut filter = match get_ci(p, "filter") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for (k, v) in p {
            let reserved = ["filter", "sort", "order", "start", "admin_mode", "select"];
            if !reserved.iter().any(|r| k.eq_ignore_ascii_case(r)) {
                filter.insert(k.clone(), v.clone());
            }
        }
        let sort = get_ci(p, "sort")
            .and_then(scalar_string)
            .unwrap_or_else(|| "ID".into());
        let desc = get_ci(p, "order")
            .and_then(scalar_string)
            .is_some_and(|o| o.eq_ignore_ascii_case("desc"));
        let mut users: Vec<&Value> = self
            .users
            .iter()
            .filter(|u| filter_matches(&|f| u.get(f).cloned().unwrap_or(Value::Null), &filter))
            .collect();
        sort_rows(&mut users, &[(sort, desc)], |u, f| {
            u.get(f).cloned().unwrap_or(Value::Null)
        });
        let start = get_ci(p, "start").and_then(as_i64).unwrap_or(0);
        Outcome::page(users.into_iter().cloned().collect(), start)
    }

    fn status_list(&self, p: &Map<String, Value>, key_order: &KeyOrder) -> Outcome {
        let filter = match get_ci(p, "filter") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let order = match get_ci(p, "order") {
            Some(Value::Object(m)) => Some(order_keys(m, key_order)),
            _ => None,
        };
        let mut rows: Vec<Value> = self
            .statuses
            .iter()
            .map(render_status)
            .filter(|s| filter_matches(&|f| s.get(f).cloned().unwrap_or(Value::Null), &filter))
            .collect();
        // Without `order`, the directory's own: by entity, then `SORT`.
        if let Some(order) = order {
            let mut refs: Vec<&Value> = rows.iter().collect();
            sort_rows(&mut refs, &order, |s, f| {
                s.get(f).cloned().unwrap_or(Value::Null)
            });
            rows = refs.into_iter().cloned().collect();
        }
        let total = rows.len();
        Outcome {
            result: Value::Array(rows),
            total: Some(total),
            next: None,
        }
    }

    fn dealcategory_list(&self, p: &Map<String, Value>) -> Outcome {
        let filter = match get_ci(p, "filter") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        // The deprecated method lists only the added funnels, not the default one.
        let rows: Vec<Value> = self
            .categories
            .iter()
            .filter(|c| c.id != 0)
            .map(|c| {
                json!({"ID": c.id.to_string(), "CREATED_DATE": c.created, "NAME": c.name,
                       "IS_LOCKED": "N", "SORT": c.sort.to_string()})
            })
            .filter(|c| filter_matches(&|f| c.get(f).cloned().unwrap_or(Value::Null), &filter))
            .collect();
        Outcome::page(rows, get_ci(p, "start").and_then(as_i64).unwrap_or(0))
    }

    fn category_list(&self, p: &Map<String, Value>) -> Result<Outcome, ApiError> {
        if p.get("entityTypeId").and_then(as_i64) != Some(DEAL_TYPE) {
            return Err(ApiError::new(400, "NOT_FOUND", "Smart process not found"));
        }
        let mut categories: Vec<&Category> = self.categories.iter().collect();
        categories.sort_by_key(|c| c.sort);
        let rows: Vec<Value> = categories
            .into_iter()
            .map(|c| {
                json!({"id": c.id, "name": c.name, "sort": c.sort, "entityTypeId": DEAL_TYPE,
                       "isDefault": if c.id == 0 { "Y" } else { "N" }, "originId": "", "originatorId": ""})
            })
            .collect();
        let total = rows.len();
        Ok(Outcome {
            result: json!({"categories": rows}),
            total: Some(total),
            next: None,
        })
    }
}

enum Credential {
    Webhook(String, String),
    OAuth(Option<String>),
}

fn render_status(s: &Status) -> Value {
    let stage_like = s.entity_id.starts_with("DEAL_STAGE") || s.entity_id == "STATUS";
    let mut v = json!({
        "ID": s.id.to_string(),
        "ENTITY_ID": s.entity_id,
        "STATUS_ID": s.status_id,
        "NAME": s.name,
        "NAME_INIT": s.name,
        "SORT": s.sort.to_string(),
        "SYSTEM": if s.semantics.is_some() || s.sort == 10 { "Y" } else { "N" },
        "CATEGORY_ID": s.category_id.map(|c| c.to_string()),
    });
    if stage_like {
        let extra = match s.semantics {
            Some("S") => "success",
            Some("F") => "failure",
            _ => "process",
        };
        v["COLOR"] = json!(s.color);
        v["SEMANTICS"] = json!(s.semantics);
        v["EXTRA"] = json!({"SEMANTICS": extra, "COLOR": s.color});
    }
    v
}

fn stage_field(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Deal => Some("STAGE_ID"),
        Kind::Lead => Some("STATUS_ID"),
        _ => None,
    }
}

fn stage_of(kind: Kind, record: &Record) -> Option<&str> {
    record.fields.get(stage_field(kind)?)?.as_str()
}

fn category_of(kind: Kind, record: &Record) -> i64 {
    if kind != Kind::Deal {
        return 0;
    }
    record
        .fields
        .get("CATEGORY_ID")
        .and_then(as_i64)
        .unwrap_or(0)
}

/// Multifield edits as `crm.contact.update` documents them: an item with `ID` changes that
/// value, or deletes it when it has `DELETE: Y`, an empty `VALUE` or no `VALUE`; an item
/// without `ID` adds a value.
fn apply_multifield(current: &mut Value, type_id: &str, input: &Value, next_id: &mut i64) {
    if !current.is_array() {
        *current = Value::Array(Vec::new());
    }
    let Value::Array(values) = current else {
        return;
    };
    let items: Vec<&Value> = match input {
        Value::Array(a) => a.iter().collect(),
        Value::Object(m) => m.values().collect(),
        _ => return,
    };
    for item in items {
        let Some(item) = item.as_object() else {
            continue;
        };
        let value = item.get("VALUE").and_then(scalar_string);
        if let Some(id) = item.get("ID").and_then(as_i64) {
            let Some(pos) = values.iter().position(|v| as_i64(&v["ID"]) == Some(id)) else {
                continue;
            };
            let delete = item.get("DELETE").and_then(scalar_string).as_deref() == Some("Y")
                || value.as_deref().is_none_or(str::is_empty);
            if delete {
                values.remove(pos);
            } else {
                values[pos]["VALUE"] = json!(value);
                if let Some(vt) = item.get("VALUE_TYPE").and_then(scalar_string) {
                    values[pos]["VALUE_TYPE"] = json!(vt);
                }
            }
        } else if let Some(value) = value.filter(|v| !v.is_empty()) {
            let value_type = item
                .get("VALUE_TYPE")
                .and_then(scalar_string)
                .unwrap_or_else(|| "WORK".into());
            values.push(json!({"ID": next_id.to_string(), "VALUE_TYPE": value_type,
                               "VALUE": value, "TYPE_ID": type_id}));
            *next_id += 1;
        }
    }
}

/// A value as the portal stores it for the field's type; `None` drops it.
fn normalize(ty: Ty, value: &Value) -> Option<Value> {
    if value.is_null() || value.as_str() == Some("") {
        return Some(match ty {
            Ty::Money => json!("0.00"),
            _ => Value::Null,
        });
    }
    match ty {
        t if t.is_id() => as_i64(value).map(|n| json!(n.to_string())),
        Ty::Money => as_f64(value).map(|n| json!(format!("{n:.2}"))),
        Ty::Double => as_f64(value).map(|n| json!(number_string(n))),
        Ty::Char => bool_of(value).map(|b| json!(if b { "Y" } else { "N" })),
        Ty::DateTime | Ty::Date => scalar_string(value)
            .and_then(|s| parse_datetime(&s))
            .map(|d| json!(format_datetime(d))),
        _ => scalar_string(value).map(Value::String),
    }
}

fn normalize_uf(uf: &Uf, value: &Value) -> Option<Value> {
    if value.is_null() || value.as_str() == Some("") {
        return Some(Value::Null);
    }
    match uf.ty {
        UfTy::Double => as_f64(value).map(|n| json!(number_string(n))),
        UfTy::Str => scalar_string(value).map(Value::String),
        UfTy::DateTime => scalar_string(value)
            .and_then(|s| parse_datetime(&s))
            .map(|d| json!(format_datetime(d))),
        // A list field takes the item's numeric ID; anything else is ignored (NOTES.md).
        UfTy::Enumeration => as_i64(value)
            .filter(|id| uf.items.iter().any(|(item, _)| item == id))
            .map(|id| json!(id.to_string())),
    }
}

/// The `select` of the old list methods: `*` (plain fields), `UF_*`, names; `ID` always.
fn select_fields(kind: Kind, record: &Record, select: &[String]) -> Value {
    let mut out = Map::new();
    let wants_all = select.is_empty();
    let plain = |name: &str| {
        kind.fields()
            .iter()
            .any(|f| f.name == name && f.ty != Ty::Multi)
    };
    for (k, v) in &record.fields {
        let is_uf = k.starts_with("UF_");
        let chosen = k == "ID"
            || (wants_all && (is_uf || plain(k)))
            || select.iter().any(|s| s == k)
            || (select.iter().any(|s| s == "*") && plain(k))
            || (select.iter().any(|s| s == "UF_*") && is_uf);
        if chosen {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The universal API's view: camelCase names, numbers as numbers, multifields in `fm`.
fn render_item(kind: Kind, record: &Record) -> Value {
    let mut out = Map::new();
    let mut fm = Vec::new();
    for f in kind.fields() {
        let value = record.fields.get(f.name).cloned().unwrap_or(Value::Null);
        if f.ty == Ty::Multi {
            for v in value.as_array().into_iter().flatten() {
                fm.push(json!({"id": as_i64(&v["ID"]), "valueType": v["VALUE_TYPE"],
                               "value": v["VALUE"], "typeId": v["TYPE_ID"]}));
            }
            continue;
        }
        let typed = match f.ty {
            t if t.is_id() => as_i64(&value).map_or(Value::Null, |n| json!(n)),
            Ty::Money | Ty::Double => as_f64(&value).map_or(Value::Null, |n| json!(n)),
            _ => value,
        };
        out.insert(camel_name(kind, f.name), typed);
    }
    for uf in kind.user_fields() {
        let value = record.fields.get(uf.name).cloned().unwrap_or(Value::Null);
        let typed = match uf.ty {
            UfTy::Double => as_f64(&value).map_or(Value::Null, |n| json!(n)),
            UfTy::Enumeration => as_i64(&value).map_or(Value::Null, |n| json!(n)),
            UfTy::Str | UfTy::DateTime => value,
        };
        out.insert(camel_name(kind, uf.name), typed);
    }
    if kind == Kind::Deal {
        out.insert("contactIds".into(), json!(record.contact_ids));
    } else {
        out.insert("fm".into(), Value::Array(fm));
    }
    Value::Object(out)
}

/// Upper-case names as `crm.item.*` spells them: the renamed system fields, then the general
/// rule, which keeps `_` before a digit (`UF_CRM_1721244707107` → `ufCrm_1721244707107`).
fn camel_name(kind: Kind, upper: &str) -> String {
    let renamed = match upper {
        "ID" => Some("id"),
        "DATE_CREATE" => Some("createdTime"),
        "DATE_MODIFY" => Some("updatedTime"),
        "CREATED_BY_ID" => Some("createdBy"),
        "MODIFY_BY_ID" => Some("updatedBy"),
        "MOVED_BY_ID" => Some("movedBy"),
        "BEGINDATE" => Some("begindate"),
        "CLOSEDATE" => Some("closedate"),
        "DATE_CLOSED" => Some("dateClosed"),
        "STATUS_ID" if kind == Kind::Lead => Some("stageId"),
        "STATUS_SEMANTIC_ID" if kind == Kind::Lead => Some("stageSemanticId"),
        _ => None,
    };
    if let Some(name) = renamed {
        return name.to_owned();
    }
    let lower = upper.to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut chars = lower.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('_', Some(n)) if n.is_ascii_alphabetic() => {
                let n = chars.next().unwrap_or_default();
                out.push(n.to_ascii_uppercase());
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Activities and tasks

/// What `crm.activity.get` and `crm.activity.list` show of an activity (the docs' answers);
/// `COMMUNICATIONS` and `FILES` only when `select` names them.
const ACTIVITY_FIELDS: &[&str] = &[
    "ID",
    "OWNER_ID",
    "OWNER_TYPE_ID",
    "TYPE_ID",
    "PROVIDER_ID",
    "PROVIDER_TYPE_ID",
    "PROVIDER_GROUP_ID",
    "ASSOCIATED_ENTITY_ID",
    "SUBJECT",
    "CREATED",
    "LAST_UPDATED",
    "START_TIME",
    "END_TIME",
    "DEADLINE",
    "COMPLETED",
    "STATUS",
    "RESPONSIBLE_ID",
    "PRIORITY",
    "NOTIFY_TYPE",
    "NOTIFY_VALUE",
    "DESCRIPTION",
    "DESCRIPTION_TYPE",
    "DIRECTION",
    "LOCATION",
    "SETTINGS",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "AUTHOR_ID",
    "EDITOR_ID",
    "PROVIDER_PARAMS",
    "PROVIDER_DATA",
    "RESULT_MARK",
    "RESULT_VALUE",
    "RESULT_SUM",
    "RESULT_CURRENCY_ID",
    "RESULT_STATUS",
    "RESULT_STREAM",
    "RESULT_SOURCE_ID",
    "AUTOCOMPLETE_RULE",
];

/// A fresh activity of `user`: an open to-do (`TYPE_ID` 6, provider `CRM_TODO`, type `TODO`,
/// `STATUS` 1 "pending") with no owner yet; the caller fills in the rest.
fn activity_record(id: i64, user: i64) -> Map<String, Value> {
    let now = now_string();
    let user = user.to_string();
    let value = json!({
        "ID": id.to_string(),
        "OWNER_ID": "0",
        "OWNER_TYPE_ID": "0",
        "TYPE_ID": "6",
        "PROVIDER_ID": "CRM_TODO",
        "PROVIDER_TYPE_ID": "TODO",
        "PROVIDER_GROUP_ID": null,
        "ASSOCIATED_ENTITY_ID": "0",
        "SUBJECT": "",
        "CREATED": now,
        "LAST_UPDATED": now,
        "START_TIME": null,
        "END_TIME": null,
        "DEADLINE": null,
        "COMPLETED": "N",
        "STATUS": "1",
        "RESPONSIBLE_ID": user,
        "PRIORITY": "2",
        "NOTIFY_TYPE": "0",
        "NOTIFY_VALUE": "0",
        "DESCRIPTION": "",
        "DESCRIPTION_TYPE": "1",
        "DIRECTION": "0",
        "LOCATION": "",
        "SETTINGS": [],
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "AUTHOR_ID": user,
        "EDITOR_ID": user,
        "PROVIDER_PARAMS": [],
        "PROVIDER_DATA": null,
        "RESULT_MARK": "0",
        "RESULT_VALUE": null,
        "RESULT_SUM": null,
        "RESULT_CURRENCY_ID": null,
        "RESULT_STATUS": "0",
        "RESULT_STREAM": "0",
        "RESULT_SOURCE_ID": null,
        "AUTOCOMPLETE_RULE": "0",
    });
    value.as_object().cloned().unwrap_or_default()
}

/// `select` of `crm.activity.*`: nothing or `*` is every field; `ID` always comes.
fn render_activity(activity: &Value, select: &[String]) -> Value {
    let all = select.is_empty() || select.iter().any(|s| s == "*");
    let mut out = Map::new();
    for field in ACTIVITY_FIELDS {
        if *field == "ID" || all || select.iter().any(|s| s == field) {
            let value = activity.get(*field).cloned().unwrap_or(Value::Null);
            out.insert((*field).to_owned(), value);
        }
    }
    for field in ["COMMUNICATIONS", "FILES"] {
        if select.iter().any(|s| s == field) {
            let value = activity.get(field).cloned().unwrap_or(json!([]));
            out.insert(field.to_owned(), value);
        }
    }
    Value::Object(out)
}

/// A to-do's subject made of its description: the first line, cut to 500 characters, with
/// "..." when more lines follow.
fn subject_of(description: &str) -> String {
    match description.split_once('\n') {
        Some((first, _)) => {
            let first: String = first.chars().take(500).collect();
            format!("{}...", first.trim_end_matches('.'))
        }
        None => description.chars().take(500).collect(),
    }
}

/// `select` as a list of names, whether sent as a JSON array or `select[]=…`.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
        Some(Value::Object(m)) => m.values().filter_map(scalar_string).collect(),
        Some(v) => scalar_string(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The keys `tasks.task.list` sorts by; any other is "Invalid sorting key".
const TASK_SORT_KEYS: &[&str] = &[
    "ID",
    "TITLE",
    "TIME_SPENT_IN_LOGS",
    "DATE_START",
    "CREATED_DATE",
    "CHANGED_DATE",
    "CLOSED_DATE",
    "ACTIVITY_DATE",
    "START_DATE_PLAN",
    "END_DATE_PLAN",
    "DEADLINE",
    "REAL_STATUS",
    "STATUS_COMPLETE",
    "PRIORITY",
    "MARK",
    "CREATED_BY_LAST_NAME",
    "RESPONSIBLE_LAST_NAME",
    "GROUP_ID",
    "TIME_ESTIMATE",
    "ALLOW_CHANGE_DEADLINE",
    "ALLOW_TIME_TRACKING",
    "MATCH_WORK_TIME",
    "FAVORITE",
    "SORTING",
    "IS_PINNED",
    "IS_PINNED_IN_GROUP",
];

/// A task field's camelCase key: `RESPONSIBLE_ID` → `responsibleId`, `UF_CRM_TASK` →
/// `ufCrmTask`.
fn task_key(upper: &str) -> String {
    let mut out = String::with_capacity(upper.len());
    let mut capital = false;
    for c in upper.chars() {
        if c == '_' {
            capital = !out.is_empty();
        } else if capital {
            out.push(c.to_ascii_uppercase());
            capital = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A task's value for a filter or sort key of `tasks.task.list`: `REAL_STATUS` is the status,
/// `STATUS` the same with the meta-status -1 for an overdue open task.
fn task_value(task: &Value, upper: &str) -> Value {
    match upper {
        "REAL_STATUS" | "STATUS_COMPLETE" => task["status"].clone(),
        "STATUS" => {
            let open = matches!(task["status"].as_str(), Some("2" | "3"));
            let overdue = task["deadline"]
                .as_str()
                .and_then(parse_datetime)
                .is_some_and(|d| d < Utc::now());
            if open && overdue {
                json!("-1")
            } else {
                task["status"].clone()
            }
        }
        _ => task.get(task_key(upper)).cloned().unwrap_or(Value::Null),
    }
}

// ---------------------------------------------------------------------------------------------
// Filters and order of the list methods

const FILTER_OPS: &[&str] = &[
    "!=%", "!%=", ">=", "<=", "!=", "!@", "=%", "%=", "!%", ">", "<", "@", "%", "!", "=",
];

fn filter_matches(get: &dyn Fn(&str) -> Value, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(raw, want)| {
        let op = FILTER_OPS
            .iter()
            .find(|op| raw.starts_with(**op))
            .copied()
            .unwrap_or("");
        let have = get(&raw[op.len()..]);
        let listed = |w: &Value| match w {
            Value::Array(items) => items.iter().any(|i| loose_eq(&have, i)),
            one => loose_eq(&have, one),
        };
        let text = scalar_string(&have).unwrap_or_default().to_lowercase();
        let needle = scalar_string(want).unwrap_or_default().to_lowercase();
        match op {
            "" | "=" | "@" => listed(want),
            "!" | "!=" | "!@" => !listed(want),
            ">" => !have.is_null() && cmp_loose(&have, want).is_gt(),
            ">=" => !have.is_null() && cmp_loose(&have, want).is_ge(),
            "<" => !have.is_null() && cmp_loose(&have, want).is_lt(),
            "<=" => !have.is_null() && cmp_loose(&have, want).is_le(),
            "%" => text.contains(&needle),
            "!%" => !text.contains(&needle),
            "=%" | "%=" => like(&text, &needle),
            "!=%" | "!%=" => !like(&text, &needle),
            _ => true,
        }
    })
}

/// SQL LIKE with `%` only.
fn like(text: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return text == pattern;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

fn order_keys(m: &Map<String, Value>, key_order: &KeyOrder) -> Vec<(String, bool)> {
    let mut keys: Vec<(String, bool)> = m
        .iter()
        .map(|(k, v)| {
            let desc = scalar_string(v).is_some_and(|d| d.eq_ignore_ascii_case("desc"));
            (k.clone(), desc)
        })
        .collect();
    keys.sort_by_key(|(k, _)| KeyOrder::rank(&key_order.order, k));
    keys
}

/// The order in which the client wrote the keys of `cmd` and `order`, and the top-level
/// parameters themselves: PHP arrays and JSON objects keep it, `serde_json::Map` does not, and
/// a batch, a sort and the positional arguments of the old `task.*` methods depend on it.
#[derive(Debug, Clone, Default)]
struct KeyOrder {
    cmd: Vec<String>,
    order: Vec<String>,
    params: Vec<String>,
}

impl KeyOrder {
    fn of_request(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut order = KeyOrder::default();
        order.read_form(query.unwrap_or(""));
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
            || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if json {
            use serde::de::DeserializeSeed;
            let mut de = serde_json::Deserializer::from_slice(body);
            let _ = TopLevelKeys(&mut order).deserialize(&mut de);
        } else {
            order.read_form(&String::from_utf8_lossy(body));
        }
        order
    }

    fn read_form(&mut self, text: &str) {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let key = percent_decode(pair.split_once('=').map_or(pair, |(k, _)| k));
            self.note_param(key.split_once('[').map_or(key.as_str(), |(base, _)| base));
            if let Some((base, rest)) = key.split_once('[')
                && let Some((first, _)) = rest.split_once(']')
            {
                self.note(base, first);
            }
        }
    }

    fn note(&mut self, param: &str, key: &str) {
        let list = if param.eq_ignore_ascii_case("cmd") {
            &mut self.cmd
        } else if param.eq_ignore_ascii_case("order") {
            &mut self.order
        } else {
            return;
        };
        if !list.iter().any(|k| k == key) {
            list.push(key.to_owned());
        }
    }

    fn note_param(&mut self, param: &str) {
        if !param.is_empty() && !self.params.iter().any(|p| p == param) {
            self.params.push(param.to_owned());
        }
    }

    fn rank(list: &[String], key: &str) -> usize {
        list.iter().position(|k| k == key).unwrap_or(usize::MAX)
    }

    fn rank_of_cmd(&self, key: &str) -> (usize, usize) {
        // Numbered commands with no recorded order run by their number.
        (
            Self::rank(&self.cmd, key),
            key.parse::<usize>().unwrap_or(usize::MAX),
        )
    }
}

/// Reads a JSON body's top level, noting the keys of `cmd` and `order` in their written order.
struct TopLevelKeys<'a>(&'a mut KeyOrder);

impl<'de> serde::de::DeserializeSeed<'de> for TopLevelKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevelKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(param) = map.next_key::<String>()? {
            self.0.note_param(&param);
            let keys: Keys = map.next_value()?;
            for key in keys.0 {
                self.0.note(&param, &key);
            }
        }
        Ok(())
    }
}

/// The keys of an object (or the indexes of an array) in their written order; none for scalars.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Keys((0..n).map(|i: usize| i.to_string()).collect()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }

            fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }

            fn visit_unit<E>(self) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Sorts by the asked keys, then by `ID` ascending (the real default).
fn sort_rows<T>(rows: &mut [&T], order: &[(String, bool)], get: impl Fn(&T, &str) -> Value) {
    rows.sort_by(|a, b| {
        for (field, desc) in order {
            let o = cmp_loose(&get(a, field), &get(b, field));
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        cmp_loose(&get(a, "ID"), &get(b, "ID"))
    });
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(items), other) | (other, Value::Array(items)) => {
            items.iter().any(|i| loose_eq(i, other))
        }
        (Value::Null, x) | (x, Value::Null) => x.is_null() || x.as_str() == Some(""),
        (Value::Bool(x), y) | (y, Value::Bool(x)) => bool_of(y) == Some(*x),
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            _ => scalar_string(a) == scalar_string(b),
        },
    }
}

fn cmp_loose(a: &Value, b: &Value) -> std::cmp::Ordering {
    let date = |v: &Value| v.as_str().and_then(parse_datetime);
    if let (Some(x), Some(y)) = (date(a), date(b)) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) {
        return x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
    }
    scalar_string(a)
        .unwrap_or_default()
        .cmp(&scalar_string(b).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Method names are case-insensitive and may end in `.json`.
fn method_name(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    lower
        .strip_suffix(".json")
        .map(str::to_owned)
        .unwrap_or(lower)
        .trim()
        .to_owned()
}

/// PHP's `json_encode` of an array: `[]` when empty, a list when keyed 0..n, else an object.
fn php_array(entries: Vec<(String, Value)>) -> Value {
    if entries.is_empty() {
        return json!([]);
    }
    if entries
        .iter()
        .enumerate()
        .all(|(i, (k, _))| *k == i.to_string())
    {
        return Value::Array(entries.into_iter().map(|(_, v)| v).collect());
    }
    Value::Object(entries.into_iter().collect())
}

/// Replaces `$result[cmd][FIELD]…` in batch parameters with earlier commands' values.
fn substitute_results(params: &mut Map<String, Value>, results: &[(String, Value)]) {
    fn walk(v: &mut Value, results: &[(String, Value)]) {
        match v {
            Value::String(s) if s.contains("$result[") => *s = expand(s, results),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, results)),
            Value::Object(m) => m.values_mut().for_each(|x| walk(x, results)),
            _ => {}
        }
    }
    fn expand(s: &str, results: &[(String, Value)]) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find("$result[") {
            out.push_str(&rest[..pos]);
            let mut tail = &rest[pos + "$result".len()..];
            let mut path = Vec::new();
            while let Some(inner) = tail.strip_prefix('[') {
                let Some(end) = inner.find(']') else { break };
                path.push(&inner[..end]);
                tail = &inner[end + 1..];
            }
            let found = path.split_first().and_then(|(cmd, keys)| {
                let mut v = &results.iter().find(|(k, _)| k == cmd)?.1;
                for key in keys {
                    v = match v {
                        Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                        Value::Object(m) => m.get(*key)?,
                        _ => return None,
                    };
                }
                scalar_string(v)
            });
            out.push_str(&found.unwrap_or_default());
            rest = tail;
        }
        out.push_str(rest);
        out
    }
    for v in params.values_mut() {
        walk(v, results);
    }
}

fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    }
}

fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "1" => Some(true),
            "n" | "no" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    v.and_then(bool_of).unwrap_or(false)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_owned()),
        _ => None,
    }
}

fn number_string(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// The portal's time zone (Moscow): the dates it writes carry this offset.
fn portal_tz() -> FixedOffset {
    FixedOffset::east_opt(3 * 3600).expect("valid offset")
}

fn now_string() -> String {
    format_datetime(Utc::now().with_timezone(&portal_tz()))
}

fn today_string(plus_days: i64) -> String {
    let day =
        Utc::now().with_timezone(&portal_tz()).date_naive() + chrono::Duration::days(plus_days);
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    portal_tz()
        .from_local_datetime(&midnight)
        .single()
        .map(format_datetime)
        .unwrap_or_default()
}

fn format_datetime(d: DateTime<FixedOffset>) -> String {
    d.with_timezone(&portal_tz())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// ISO 8601 with or without an offset (then the portal's zone), or the portal's
/// `DD.MM.YYYY[ HH:MM:SS]` format: what the docs say filters and fields take.
fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, fmt) {
            return Some(d);
        }
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%d.%m.%Y %H:%M:%S",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
    .or_else(|| {
        ["%Y-%m-%d", "%d.%m.%Y"]
            .iter()
            .find_map(|fmt| NaiveDate::parse_from_str(s, fmt).ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })?;
    portal_tz().from_local_datetime(&naive).single()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn time_object(started: SystemTime, finished: SystemTime, operating: f64) -> Value {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let date =
        |t: SystemTime| format_datetime(DateTime::<Utc>::from(t).with_timezone(&portal_tz()));
    let (start, finish) = (secs(started), secs(finished));
    json!({
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": date(started),
        "date_finish": date(finished),
        // The oldest one-minute basket leaves the 10-minute window then.
        "operating_reset_at": start as i64 + 600,
        "operating": operating,
    })
}

/// What a client sees when something before the portal fails: Bitrix24's own JSON for a 500,
/// the front proxy's HTML page for anything else.
fn injected_failure(status: u16) -> Reply {
    if status == 500 {
        return Reply::Json(
            500,
            json!({"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}),
        );
    }
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Reply::Html(
        status,
        format!(
            "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        ),
    )
}
