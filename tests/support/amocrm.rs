//! An in-process emulator of the amoCRM (Kommo) API v4 and its OAuth 2 token endpoint, for
//! tests: a real HTTP server on 127.0.0.1 with an in-memory account behind a mutex.
//!
//! Where each shape and rule comes from:
//! - Entity routes, `with`, `page`/`limit` (max 250), filters, `application/hal+json` and
//!   `application/problem+json`, pipelines with system statuses 142/143, users and rights,
//!   custom fields (a list page holds up to 50 by default), tasks (`text` and `complete_till`,
//!   completion via `is_completed` + `result.text`), notes: the official docs,
//!   https://www.amocrm.ru/developers/content/crm_platform/leads-api (also `leads_pipelines`,
//!   `users-api`, `custom-fields`, `contacts-api`) and https://developers.kommo.com/reference/
//!   (`leads-list`, `getting-a-lead-by-its-id`, `add-tasks`, `edit-task`, `tasks-list`).
//! - Field names and optionality of leads, contacts, tasks, notes (note types as strings such
//!   as `common`, `call_in`), loss reasons (`_embedded.loss_reason` is an array),
//!   `_embedded.contacts` items with `is_main`, `_embedded.companies` items, multitext values
//!   with `enum_id`/`enum_code`, filter keys (`filter[statuses][i][pipeline_id|status_id]`,
//!   `filter[updated_at][from|to]`, `filter[is_completed]`, `filter[entity_id]`), `_links.next`
//!   and `_links.prev`, and 204 meaning "nothing": amocrm/amocrm-api-php
//!   (src/AmoCRM/Models/LeadModel.php, ContactModel.php, TaskModel.php, NoteModel.php,
//!   Factories/NoteFactory.php, Leads/LossReasons/LossReasonModel.php,
//!   Leads/Pipelines/PipelineModel.php, Filters/LeadsFilter.php, Filters/TasksFilter.php,
//!   EntitiesServices/BaseEntity.php, Client/AmoCRMApiRequest.php).
//! - A captured list answer (`_page`, `_links.self` keeping the query, `custom_fields_values:
//!   null` when empty, `score`, `account_id`, `labor_cost`, `_embedded.tags`/`companies` always
//!   present): gormonn/amo-crm-test client/react/src/shared/mock.ts.
//! - 204 or 404 both meaning "not found" to a client: iqtek/amocrm_api_client
//!   (make_amocrm_request/.../MakeAmocrmRequestFunctionImpl.py); the JSON token request and
//!   the `title`/`detail`/`hint` of OAuth errors: its GetTokensByRefreshTokenFunction.py.
//! - Error bodies: validation errors (`validation-errors[].request_id/errors[].code/path/detail`,
//!   title "Bad Request", type https://httpstatus.es/400) from the docs' error page
//!   (https://www.amocrm.com/developers/content/api/errors); the 401 body
//!   (`"detail":"Неверный логин или пароль"`) from amocrm/amocrm-api-php#333; a 404 with
//!   `"detail":"Pipeline not found"` from amocrm/amocrm-api-php#92.
//! - OAuth: a reused refresh token answers 401 `{"hint":"Token has been revoked","title":
//!   "Некорректный запрос","type":"https://developers.amocrm.ru/v3/errors/OAuthProblemJson"}`
//!   (amocrm/amocrm-api-php#123, #269, #315: "refresh токен долгоживущий, но одноразовый");
//!   a wrong client answers 401 "Некорректный клиент" / "Авторизация клиента не прошла" (#235).
//!   The other hints and the revocation of the old access token on refresh follow
//!   league/oauth2-server, whose hints those bodies carry.
//! - Products: a lead's links (`GET /api/v4/leads/{id}/links`: `to_entity_id`,
//!   `to_entity_type`, `metadata.quantity`/`catalog_id` for catalog elements,
//!   `metadata.main_contact` for contacts, `null` for a company) from
//!   crm_platform/entity-links-api; the catalog's elements
//!   (`GET /api/v4/catalogs/{id}/elements`, `filter[id]`, `custom_fields_values` with the
//!   field codes `SKU`, `PRICE`) from crm_platform/catalogs-api.
//! - A company's or contact's `with=leads` (and a company's `with=contacts`): the linked
//!   records as bare `{id, _links}`, all of them, since the docs give the embedded list no
//!   page or cap (developers.kommo.com/reference/get-company and get-contact); a client then
//!   reads the leads by `filter[id][]`, 250 a page (amocrm/amocrm-api-php#419).
//! - Limits: 7 requests/s per integration, then 429, then a 403 block served as an nginx HTML
//!   page (amocrm/amocrm-api-php#318, #434; the docs' "recommendations" page); 250 entities a
//!   batch (andrey-tech/amocrm-api-php#3); limit at most 250 (amocrm/amocrm-api-php#210).
//!
//! Choices where the sources are silent are marked "assumed" in comments.

// Each test target uses a different part of this support module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// The seeded account: ids tests can refer to.

pub const ACCOUNT_ID: i64 = 31_296_422;
pub const SUBDOMAIN: &str = "robotdemo";

pub const USER_ELENA: i64 = 10_091_426;
pub const USER_IVAN: i64 = 10_091_431;
pub const USER_MARIA: i64 = 10_115_308;
/// A technical user an account creates for the integration, so that the robot's writes
/// can be told from a person's: amoCRM stamps an API write with the user who authorised
/// the integration (`modified_user_id`, `updated_by`).
pub const USER_ROBOT: i64 = 8_100_001;

pub const PIPELINE_SALES: i64 = 7_249_526;
pub const STATUS_UNSORTED: i64 = 60_456_938;
pub const STATUS_FIRST_CONTACT: i64 = 60_456_942;
pub const STATUS_QUALIFICATION: i64 = 60_456_946;
pub const STATUS_NEGOTIATION: i64 = 60_456_950;
pub const STATUS_WON: i64 = 142;
pub const STATUS_LOST: i64 = 143;

pub const LOSS_NO_CONTACT: i64 = 13_384_761;
pub const LOSS_TOO_EXPENSIVE: i64 = 13_384_763;
pub const LOSS_OUT_OF_STOCK: i64 = 13_384_765;

pub const FIELD_CATEGORY: i64 = 1_278_890;
pub const FIELD_BRAND: i64 = 1_278_892;
pub const FIELD_SCORING: i64 = 1_278_894;
pub const FIELD_PRIORITY: i64 = 1_278_896;
pub const FIELD_EXPECTED_PROFIT: i64 = 1_278_898;
pub const CATEGORY_ELECTRONICS: i64 = 2_934_101;
pub const CATEGORY_FURNITURE: i64 = 2_934_103;
pub const CATEGORY_CLOTHES: i64 = 2_934_105;

pub const FIELD_PHONE: i64 = 1_104_561;
pub const FIELD_EMAIL: i64 = 1_104_563;

pub const CONTACT_ALEXEY: i64 = 41_200_001;
pub const CONTACT_OLGA: i64 = 41_200_002;
pub const COMPANY_ROMASHKA: i64 = 41_300_001;

pub const TASK_TYPE_FOLLOW_UP: i64 = 1;
pub const TASK_TYPE_MEETING: i64 = 2;
/// The id of the products catalog «Товары».
pub const CATALOG_PRODUCTS: i64 = 4_521;

const MAX_BATCH: usize = 250;
const MAX_LIMIT: usize = 250;
const DEFAULT_LIMIT: usize = 50;
const CODE_LIFETIME: Duration = Duration::from_secs(20 * 60);
const REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
const LONG_LIVED_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
const OAUTH_PROBLEM: &str = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson";
const NOTE_TYPES: &[&str] = &[
    "common",
    "call_in",
    "call_out",
    "service_message",
    "extended_service_message",
    "message_cashier",
    "geolocation",
    "sms_in",
    "sms_out",
    "attachment",
];

// ---------------------------------------------------------------------------------------
// Public types.

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: Option<String>,
    pub at: SystemTime,
    /// The status the emulator answered.
    pub status: u16,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// The integration registered in the account.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

/// A lead for [`AmoEmulator::seed_lead`]; the defaults put it in the first stage of the main
/// pipeline, with Елена Прекрасная responsible.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub name: String,
    pub price: i64,
    pub pipeline_id: i64,
    pub status_id: i64,
    pub responsible_user_id: i64,
    pub loss_reason_id: Option<i64>,
    /// In the API's write form: `{"field_id", "values": [{"value"} | {"enum_id"}]}`.
    pub custom_fields_values: Vec<Value>,
    /// The first one is the main contact.
    pub contacts: Vec<i64>,
    pub company_id: Option<i64>,
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

impl NewLead {
    pub fn new(name: &str) -> Self {
        NewLead {
            name: name.to_owned(),
            price: 0,
            pipeline_id: PIPELINE_SALES,
            status_id: STATUS_FIRST_CONTACT,
            responsible_user_id: USER_ELENA,
            loss_reason_id: None,
            custom_fields_values: Vec::new(),
            contacts: Vec::new(),
            company_id: None,
            tags: Vec::new(),
            created_at: None,
            updated_at: None,
        }
    }
    pub fn price(mut self, price: i64) -> Self {
        self.price = price;
        self
    }
    pub fn status(mut self, status_id: i64) -> Self {
        self.status_id = status_id;
        self
    }
    pub fn responsible(mut self, user_id: i64) -> Self {
        self.responsible_user_id = user_id;
        self
    }
    pub fn loss_reason(mut self, loss_reason_id: i64) -> Self {
        self.loss_reason_id = Some(loss_reason_id);
        self
    }
    /// `value` is either a whole value object (`{"enum_id": …}`) or a scalar for `{"value": …}`.
    pub fn field(mut self, field_id: i64, value: Value) -> Self {
        let value = if value.is_object() {
            value
        } else {
            json!({ "value": value })
        };
        self.custom_fields_values
            .push(json!({ "field_id": field_id, "values": [value] }));
        self
    }
    pub fn contact(mut self, contact_id: i64) -> Self {
        self.contacts.push(contact_id);
        self
    }
    pub fn company(mut self, company_id: i64) -> Self {
        self.company_id = Some(company_id);
        self
    }
    pub fn tag(mut self, name: &str) -> Self {
        self.tags.push(name.to_owned());
        self
    }
    pub fn created_at(mut self, unix: i64) -> Self {
        self.created_at = Some(unix);
        self
    }
    pub fn updated_at(mut self, unix: i64) -> Self {
        self.updated_at = Some(unix);
        self
    }
}

/// A contact for [`AmoEmulator::seed_contact`].
#[derive(Debug, Clone)]
pub struct NewContact {
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub responsible_user_id: i64,
}

impl NewContact {
    pub fn new(name: &str) -> Self {
        NewContact {
            name: name.to_owned(),
            phone: None,
            email: None,
            responsible_user_id: USER_ELENA,
        }
    }
    pub fn phone(mut self, phone: &str) -> Self {
        self.phone = Some(phone.to_owned());
        self
    }
    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.to_owned());
        self
    }
}

/// The emulator. It serves until dropped.
pub struct AmoEmulator {
    base_url: String,
    state: Arc<Mutex<Account>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AmoEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AmoEmulator {
    /// Binds 127.0.0.1 on a random port and serves the seeded account.
    pub async fn start() -> AmoEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the amoCRM emulator");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(Account::seeded(base_url.clone())));
        let app = Router::new().fallback(dispatch).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AmoEmulator {
            base_url,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, standing for `https://SUBDOMAIN.amocrm.ru`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn lock(&self) -> MutexGuard<'_, Account> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // --- the account's data -------------------------------------------------------------

    /// Adds a lead as if a manager had made it; panics on a value the API would refuse.
    pub fn seed_lead(&self, lead: NewLead) -> i64 {
        self.lock().seed_lead(lead)
    }

    /// Adds a product to the catalog «Товары» (with a «Бренд» field of its own); returns
    /// the element's id.
    pub fn seed_product(&self, name: &str, brand: Option<&str>, price: f64) -> i64 {
        let mut acc = self.lock();
        let id = acc.new_id();
        acc.products.insert(
            id,
            CatalogElement {
                name: name.to_owned(),
                sku: format!("SKU-{id}"),
                brand: brand.map(str::to_owned),
                price,
            },
        );
        id
    }

    /// Links a product of the catalog to a lead, as a manager adding it to the request.
    pub fn link_product(&self, lead: i64, element: i64, quantity: f64) {
        let mut acc = self.lock();
        assert!(acc.products.contains_key(&element), "no product {element}");
        acc.lead_products
            .entry(lead)
            .or_default()
            .push((element, quantity));
    }

    pub fn seed_contact(&self, contact: NewContact) -> i64 {
        self.lock().seed_contact(contact)
    }

    /// Adds a user (a manager) to the account, so that leads and tasks can be given to them.
    pub fn add_user(&self, id: i64, name: &str) {
        self.lock().users.push(User {
            id,
            name: name.to_owned(),
            email: format!("{id}@robotdemo.example"),
            is_admin: false,
        });
    }

    pub fn seed_company(&self, name: &str) -> i64 {
        self.lock().seed_company(name)
    }

    /// A manager renames a company in amoCRM's own interface, at the emulator's now: it
    /// shows as changed by `user`, and no webhook is sent.
    pub fn edit_company(&self, id: i64, name: &str, user: i64) {
        let mut acc = self.lock();
        let now = acc.now();
        let company = acc.companies.get_mut(&id).expect("a seeded company");
        company.name = name.to_owned();
        company.updated_by = user;
        company.updated_at = now;
    }

    /// A call task on a lead, made in amoCRM's interface by `user` for `responsible` at
    /// `at` (Unix seconds); returns its id.
    pub fn seed_task(&self, lead: i64, responsible: i64, at: i64) -> i64 {
        let mut acc = self.lock();
        let id = acc.new_id();
        acc.tasks.insert(
            id,
            Task {
                id,
                text: "Перезвонить".to_owned(),
                responsible_user_id: responsible,
                created_by: responsible,
                updated_by: responsible,
                created_at: at,
                updated_at: at,
                entity_id: Some(lead),
                entity_type: Some("leads".to_owned()),
                duration: 0,
                is_completed: false,
                task_type_id: TASK_TYPE_FOLLOW_UP,
                result: None,
                complete_till: at + 3_600,
            },
        );
        id
    }

    /// `user` completes a task in amoCRM's interface at `at`; no webhook is sent.
    pub fn complete_task_as(&self, id: i64, user: i64, at: i64) {
        let mut acc = self.lock();
        let task = acc.tasks.get_mut(&id).expect("a seeded task");
        task.is_completed = true;
        task.result = Some("Дозвонилась".to_owned());
        task.updated_by = user;
        task.updated_at = at;
    }

    /// Adds a stage to the sales pipeline, before the won and lost ones (an account's own
    /// stages, such as «4. Квалификация пройдена»).
    pub fn add_status(&self, id: i64, name: &str) {
        let mut acc = self.lock();
        let pipeline = acc
            .pipelines
            .iter_mut()
            .find(|p| p.id == PIPELINE_SALES)
            .expect("the sales pipeline");
        let sort = pipeline
            .statuses
            .iter()
            .filter(|s| s.id != STATUS_WON && s.id != STATUS_LOST)
            .map(|s| s.sort)
            .max()
            .unwrap_or(0)
            + 10;
        pipeline.statuses.push(Status {
            id,
            name: name.to_owned(),
            sort,
            color: "#99ccff",
            kind: 0,
        });
        pipeline.statuses.sort_by_key(|s| s.sort);
    }

    /// Adds a loss reason to the account, as an administrator does.
    pub fn add_loss_reason(&self, id: i64, name: &str) {
        let mut acc = self.lock();
        let sort = acc.loss_reasons.iter().map(|r| r.sort).max().unwrap_or(0) + 1;
        acc.loss_reasons.push(LossReason {
            id,
            name: name.to_owned(),
            sort,
        });
    }

    /// Adds a custom field of leads, as an administrator does (a `date_time` field
    /// «Дата и время встречи»).
    pub fn add_lead_field(&self, id: i64, name: &str, kind: &'static str) {
        let mut acc = self.lock();
        let sort = acc.lead_fields.iter().map(|f| f.sort).max().unwrap_or(0) + 1;
        acc.lead_fields.push(FieldDef {
            id,
            name: name.to_owned(),
            code: None,
            kind,
            sort,
            entity_type: "leads",
            enums: Vec::new(),
        });
    }

    /// A manager sets a custom field of a lead in amoCRM's own interface (`value` as the
    /// API's write form takes it), at the emulator's now; no webhook is sent.
    pub fn edit_lead_field(&self, lead: i64, field_id: i64, value: Value, user: i64) {
        let mut acc = self.lock();
        let now = acc.now();
        let defs = acc.lead_fields.clone();
        let input = json!([{ "field_id": field_id, "values": [{ "value": value }] }]);
        let mut errors = Vec::new();
        let l = acc.leads.get_mut(&lead).expect("a seeded lead");
        l.custom_fields_values =
            apply_custom_fields(&defs, &l.custom_fields_values, &input, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        l.updated_by = user;
        l.updated_at = now;
    }

    /// A manager deletes a lead in amoCRM's own interface; no webhook is sent.
    pub fn delete_lead(&self, id: i64) {
        let mut acc = self.lock();
        let now = acc.now();
        let lead = acc.leads.get_mut(&id).expect("a seeded lead");
        lead.is_deleted = true;
        lead.updated_at = now;
    }

    /// Renames a stage of the sales pipeline, as an administrator does (the lost stage as
    /// «Отказ. Сделка закрыта»).
    pub fn rename_status(&self, id: i64, name: &str) {
        let mut acc = self.lock();
        for p in &mut acc.pipelines {
            for s in p.statuses.iter_mut().filter(|s| s.id == id) {
                s.name = name.to_owned();
            }
        }
    }

    /// The lead as `GET /api/v4/leads/{id}?with=contacts,loss_reason` would show it, deleted or not.
    pub fn lead(&self, id: i64) -> Option<Value> {
        let acc = self.lock();
        let with = With::parse("contacts,loss_reason");
        acc.leads.get(&id).map(|lead| acc.render_lead(lead, &with))
    }

    pub fn contact(&self, id: i64) -> Option<Value> {
        let acc = self.lock();
        acc.contacts
            .get(&id)
            .map(|c| acc.render_contact(c, &With::parse("leads")))
    }

    /// Every task, completed or not, in creation order.
    pub fn tasks(&self) -> Vec<Value> {
        let acc = self.lock();
        acc.tasks.values().map(|t| acc.render_task(t)).collect()
    }

    /// Every note of every lead.
    pub fn notes(&self) -> Vec<Value> {
        let acc = self.lock();
        acc.notes
            .values()
            .filter(|n| n.entity_type == "leads")
            .map(|n| acc.render_note(n))
            .collect()
    }

    /// The notes of a lead, in creation order.
    pub fn notes_of(&self, lead_id: i64) -> Vec<Value> {
        let acc = self.lock();
        acc.notes
            .values()
            .filter(|n| n.entity_type == "leads" && n.entity_id == lead_id)
            .map(|n| acc.render_note(n))
            .collect()
    }

    // --- what happened ------------------------------------------------------------------

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Every request that reached the emulator, the token endpoint included.
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Requests under `/api/v4/`.
    pub fn api_request_count(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/"))
            .count()
    }

    /// How many 429 answers were given.
    pub fn too_many_requests(&self) -> usize {
        self.lock().total_429
    }

    /// Whether repeated 429s got the account blocked (every request then answers 403).
    pub fn blocked(&self) -> bool {
        self.lock().blocked
    }

    /// How many times a refresh token was presented again after its use; each time the
    /// integration's OAuth tokens were revoked, as amoCRM does.
    pub fn refresh_reuses(&self) -> usize {
        self.lock().refresh_reuses
    }

    // --- OAuth and tokens ---------------------------------------------------------------

    pub fn oauth_client(&self) -> OAuthClient {
        self.lock().client.clone()
    }

    /// An authorization code, as the redirect after the user's consent would bring.
    pub fn issue_code(&self) -> String {
        let mut acc = self.lock();
        let code = format!("def50200{}", random_hex(48));
        let expires = acc.now_st() + CODE_LIFETIME;
        acc.codes.insert(
            code.clone(),
            Code {
                expires,
                used: false,
            },
        );
        code
    }

    /// An access and refresh token pair, as a code exchange would give, without a request.
    pub fn issue_tokens(&self) -> (String, String) {
        self.lock().issue_pair()
    }

    /// A long-lived token (private integrations); refresh-token reuse does not revoke it.
    pub fn long_lived_token(&self) -> String {
        let mut acc = self.lock();
        let token = acc.jwt(LONG_LIVED_LIFETIME);
        let expires = acc.now_st() + LONG_LIVED_LIFETIME;
        acc.access.insert(
            token.clone(),
            AccessToken {
                expires,
                revoked: false,
                long_lived: true,
            },
        );
        token
    }

    /// The lifetime of access tokens issued from now on (24 h by default).
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lock().access_lifetime = lifetime;
    }

    /// Makes every OAuth access token issued so far expired (long-lived ones stay).
    pub fn expire_access_tokens(&self) {
        let mut acc = self.lock();
        let past = acc.now_st() - Duration::from_secs(1);
        for token in acc.access.values_mut().filter(|t| !t.long_lived) {
            token.expires = past;
        }
    }

    /// Revokes every token, long-lived ones and refresh tokens included.
    pub fn revoke_all(&self) {
        let mut acc = self.lock();
        acc.access.values_mut().for_each(|t| t.revoked = true);
        acc.refresh.values_mut().for_each(|t| t.revoked = true);
    }

    /// Moves the emulator's clock (token expiry and timestamps) forward.
    pub fn advance_clock(&self, by: Duration) {
        self.lock().clock_offset += by;
    }

    /// The emulator's current Unix time.
    pub fn now(&self) -> i64 {
        self.lock().now()
    }

    // --- faults and limits --------------------------------------------------------------

    /// Answers the next `n` calls under `/api/v4/` with `status` (a 5xx comes as nginx's HTML
    /// page, as a gateway would send it), before authentication and rate limiting.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut acc = self.lock();
        for _ in 0..n {
            acc.failures.push_back(status);
        }
    }

    /// Answers the next `n` token requests with `status` without looking at them.
    pub fn fail_next_token_requests(&self, n: usize, status: u16) {
        let mut acc = self.lock();
        for _ in 0..n {
            acc.token_failures.push_back(status);
        }
    }

    /// Carries out the next `n` token requests (a refresh token is spent, new tokens are
    /// issued) but answers 504: the client never sees the new pair. The real-world way to
    /// reuse a refresh token by retrying.
    pub fn lose_next_token_answers(&self, n: usize) {
        self.lock().lost_token_answers += n;
    }

    /// Requests allowed per rolling second for the integration (7 by default).
    pub fn set_rate_limit(&self, per_second: usize) {
        self.lock().rate_limit = per_second;
    }

    /// The user the integration's token acts as (Elena, who installed it, by default).
    pub fn set_api_user(&self, user: i64) {
        self.lock().api_user = user;
    }

    pub fn disable_rate_limit(&self) {
        self.lock().rate_limit = usize::MAX;
    }

    /// More than `n` 429s within a minute block the account (20 by default).
    pub fn set_block_threshold(&self, n: usize) {
        self.lock().block_after = n;
    }
}

// ---------------------------------------------------------------------------------------
// State.

#[derive(Debug, Clone)]
struct Lead {
    id: i64,
    name: String,
    price: i64,
    responsible_user_id: i64,
    status_id: i64,
    pipeline_id: i64,
    loss_reason_id: Option<i64>,
    created_by: i64,
    updated_by: i64,
    created_at: i64,
    updated_at: i64,
    closed_at: Option<i64>,
    is_deleted: bool,
    /// In the read form, with `field_name`, `field_code`, `field_type`.
    custom_fields_values: Vec<Value>,
    tags: Vec<i64>,
    /// (contact id, is_main)
    contacts: Vec<(i64, bool)>,
    company_id: Option<i64>,
}

/// An element of the products catalog.
#[derive(Debug, Clone)]
struct CatalogElement {
    name: String,
    sku: String,
    brand: Option<String>,
    price: f64,
}

#[derive(Debug, Clone)]
struct Contact {
    id: i64,
    name: String,
    first_name: String,
    last_name: String,
    responsible_user_id: i64,
    created_by: i64,
    updated_by: i64,
    created_at: i64,
    updated_at: i64,
    custom_fields_values: Vec<Value>,
    company_id: Option<i64>,
}

#[derive(Debug, Clone)]
struct Company {
    id: i64,
    name: String,
    responsible_user_id: i64,
    updated_by: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct Task {
    id: i64,
    text: String,
    responsible_user_id: i64,
    created_by: i64,
    updated_by: i64,
    created_at: i64,
    updated_at: i64,
    entity_id: Option<i64>,
    entity_type: Option<String>,
    duration: i64,
    is_completed: bool,
    task_type_id: i64,
    result: Option<String>,
    complete_till: i64,
}

#[derive(Debug, Clone)]
struct Note {
    id: i64,
    entity_id: i64,
    entity_type: String,
    note_type: String,
    params: Value,
    created_by: i64,
    responsible_user_id: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct User {
    id: i64,
    name: String,
    email: String,
    is_admin: bool,
}

#[derive(Debug, Clone)]
struct Status {
    id: i64,
    name: String,
    sort: i64,
    color: &'static str,
    /// 1 is the "unsorted" stage, 0 any other.
    kind: i64,
}

#[derive(Debug, Clone)]
struct Pipeline {
    id: i64,
    name: String,
    is_main: bool,
    statuses: Vec<Status>,
}

#[derive(Debug, Clone)]
struct LossReason {
    id: i64,
    name: String,
    sort: i64,
}

#[derive(Debug, Clone)]
struct FieldDef {
    id: i64,
    name: String,
    code: Option<&'static str>,
    kind: &'static str,
    sort: i64,
    entity_type: &'static str,
    /// (id, value, code)
    enums: Vec<(i64, String, Option<&'static str>)>,
}

#[derive(Debug, Clone)]
struct Code {
    expires: SystemTime,
    used: bool,
}

#[derive(Debug, Clone)]
struct AccessToken {
    expires: SystemTime,
    revoked: bool,
    long_lived: bool,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    expires: SystemTime,
    used: bool,
    revoked: bool,
    access: String,
}

struct Account {
    base_url: String,
    clock_offset: Duration,
    next_id: i64,
    users: Vec<User>,
    pipelines: Vec<Pipeline>,
    loss_reasons: Vec<LossReason>,
    lead_fields: Vec<FieldDef>,
    contact_fields: Vec<FieldDef>,
    leads: BTreeMap<i64, Lead>,
    contacts: BTreeMap<i64, Contact>,
    companies: BTreeMap<i64, Company>,
    tasks: BTreeMap<i64, Task>,
    notes: BTreeMap<i64, Note>,
    tags: BTreeMap<i64, String>,
    /// The products catalog («Товары», [`CATALOG_PRODUCTS`]): its elements by id.
    products: BTreeMap<i64, CatalogElement>,
    /// Each lead's linked catalog elements: (element, quantity), in the order linked.
    lead_products: BTreeMap<i64, Vec<(i64, f64)>>,
    client: OAuthClient,
    codes: HashMap<String, Code>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    access_lifetime: Duration,
    refresh_reuses: usize,
    requests: Vec<RecordedRequest>,
    failures: VecDeque<u16>,
    token_failures: VecDeque<u16>,
    lost_token_answers: usize,
    rate_limit: usize,
    api_user: i64,
    window: VecDeque<Instant>,
    recent_429: VecDeque<Instant>,
    total_429: usize,
    block_after: usize,
    blocked: bool,
}

impl Account {
    fn seeded(base_url: String) -> Account {
        let status = |id, name: &str, sort, color, kind| Status {
            id,
            name: name.to_owned(),
            sort,
            color,
            kind,
        };
        let pipelines = vec![Pipeline {
            id: PIPELINE_SALES,
            name: "Продажи".to_owned(),
            is_main: true,
            statuses: vec![
                status(STATUS_UNSORTED, "Неразобранное", 10, "#c1c1c1", 1),
                status(STATUS_FIRST_CONTACT, "Первичный контакт", 20, "#99ccff", 0),
                status(STATUS_QUALIFICATION, "Квалификация", 30, "#ffff99", 0),
                status(STATUS_NEGOTIATION, "Переговоры", 40, "#ffcc66", 0),
                status(STATUS_WON, "Успешно реализовано", 10000, "#CCFF66", 0),
                status(STATUS_LOST, "Закрыто и не реализовано", 11000, "#D5D8DB", 0),
            ],
        }];
        let user = |id, name: &str, email: &str, is_admin| User {
            id,
            name: name.to_owned(),
            email: email.to_owned(),
            is_admin,
        };
        let reason = |id, name: &str, sort| LossReason {
            id,
            name: name.to_owned(),
            sort,
        };
        let field = |id, name: &str, kind, sort, enums: Vec<(i64, &str)>| FieldDef {
            id,
            name: name.to_owned(),
            code: None,
            kind,
            sort,
            entity_type: "leads",
            enums: enums
                .into_iter()
                .map(|(id, v)| (id, v.to_owned(), None))
                .collect(),
        };
        let lead_fields = vec![
            field(
                FIELD_CATEGORY,
                "Категория",
                "select",
                510,
                vec![
                    (CATEGORY_ELECTRONICS, "Электроника"),
                    (CATEGORY_FURNITURE, "Мебель"),
                    (CATEGORY_CLOTHES, "Одежда"),
                ],
            ),
            field(FIELD_BRAND, "Бренд", "text", 511, vec![]),
            field(FIELD_SCORING, "Скоринг", "numeric", 512, vec![]),
            field(FIELD_PRIORITY, "Приоритет", "numeric", 513, vec![]),
            field(
                FIELD_EXPECTED_PROFIT,
                "Ожидаемая прибыль",
                "numeric",
                514,
                vec![],
            ),
        ];
        let multitext = |id, name: &str, code, sort, enums: &[(i64, &'static str)]| FieldDef {
            id,
            name: name.to_owned(),
            code: Some(code),
            kind: "multitext",
            sort,
            entity_type: "contacts",
            enums: enums
                .iter()
                .map(|&(id, c)| (id, c.to_owned(), Some(c)))
                .collect(),
        };
        let contact_fields = vec![
            multitext(
                FIELD_PHONE,
                "Телефон",
                "PHONE",
                4,
                &[
                    (2_204_001, "WORK"),
                    (2_204_003, "WORKDD"),
                    (2_204_005, "MOB"),
                    (2_204_007, "FAX"),
                    (2_204_009, "HOME"),
                    (2_204_011, "OTHER"),
                ],
            ),
            multitext(
                FIELD_EMAIL,
                "Email",
                "EMAIL",
                6,
                &[
                    (2_204_013, "WORK"),
                    (2_204_015, "PRIV"),
                    (2_204_017, "OTHER"),
                ],
            ),
        ];
        let mut acc = Account {
            base_url,
            clock_offset: Duration::ZERO,
            next_id: 50_000_001,
            users: vec![
                user(USER_ELENA, "Елена Прекрасная", "elena@robotdemo.ru", true),
                user(USER_IVAN, "Иван Петров", "ivan@robotdemo.ru", false),
                user(USER_MARIA, "Мария Сидорова", "maria@robotdemo.ru", false),
            ],
            pipelines,
            loss_reasons: vec![
                reason(LOSS_NO_CONTACT, "Нет контакта", 1),
                reason(LOSS_TOO_EXPENSIVE, "Дорого", 2),
                reason(LOSS_OUT_OF_STOCK, "Нет товара", 3),
            ],
            lead_fields,
            contact_fields,
            leads: BTreeMap::new(),
            contacts: BTreeMap::new(),
            companies: BTreeMap::new(),
            tasks: BTreeMap::new(),
            notes: BTreeMap::new(),
            tags: BTreeMap::new(),
            products: BTreeMap::new(),
            lead_products: BTreeMap::new(),
            client: OAuthClient {
                client_id: format!(
                    "{}-{}-{}-{}-{}",
                    random_hex(4),
                    random_hex(2),
                    random_hex(2),
                    random_hex(2),
                    random_hex(6)
                ),
                client_secret: random_hex(32),
                redirect_uri: "https://robot.example.ru/oauth/amocrm".to_owned(),
            },
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            access_lifetime: Duration::from_secs(24 * 3600),
            refresh_reuses: 0,
            requests: Vec::new(),
            failures: VecDeque::new(),
            token_failures: VecDeque::new(),
            lost_token_answers: 0,
            rate_limit: 7,
            api_user: USER_ELENA,
            window: VecDeque::new(),
            recent_429: VecDeque::new(),
            total_429: 0,
            block_after: 20,
            blocked: false,
        };
        let now = acc.now();
        acc.companies.insert(
            COMPANY_ROMASHKA,
            Company {
                id: COMPANY_ROMASHKA,
                name: "ООО «Ромашка»".to_owned(),
                responsible_user_id: USER_ELENA,
                updated_by: USER_ELENA,
                created_at: now - 86_400,
                updated_at: now - 86_400,
            },
        );
        let alexey = acc.contact_from(
            CONTACT_ALEXEY,
            NewContact::new("Алексей Смирнов")
                .phone("+7 916 123-45-67")
                .email("a.smirnov@example.ru"),
        );
        let olga = acc.contact_from(
            CONTACT_OLGA,
            NewContact::new("Ольга Кузнецова").phone("+7 495 765-43-21"),
        );
        acc.contacts.insert(CONTACT_ALEXEY, alexey);
        let mut olga = olga;
        olga.company_id = Some(COMPANY_ROMASHKA);
        acc.contacts.insert(CONTACT_OLGA, olga);
        acc
    }

    fn now_st(&self) -> SystemTime {
        SystemTime::now() + self.clock_offset
    }

    fn now(&self) -> i64 {
        unix(self.now_st())
    }

    fn new_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn href(&self, path: &str) -> Value {
        json!({ "self": { "href": format!("{}{}", self.base_url, path) } })
    }

    // --- tokens -------------------------------------------------------------------------

    /// Real access tokens are RS256 JWTs carrying `exp`; clients may read it, so these look
    /// the same (the signature is random).
    fn jwt(&self, lifetime: Duration) -> String {
        let now = self.now();
        let header = json!({ "typ": "JWT", "alg": "RS256" });
        let payload = json!({
            "aud": self.client.client_id,
            "jti": random_hex(20),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime.as_secs() as i64,
            "sub": USER_ELENA.to_string(),
            "account_id": ACCOUNT_ID,
            "base_domain": "amocrm.ru",
            "api_domain": "api-b.amocrm.ru",
            "scopes": ["crm", "notifications"],
        });
        format!(
            "{}.{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(payload.to_string().as_bytes()),
            base64url(random_hex(64).as_bytes())
        )
    }

    fn issue_pair(&mut self) -> (String, String) {
        let lifetime = self.access_lifetime;
        let access = self.jwt(lifetime);
        let refresh = format!("def50200{}", random_hex(96));
        let now = self.now_st();
        self.access.insert(
            access.clone(),
            AccessToken {
                expires: now + lifetime,
                revoked: false,
                long_lived: false,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshToken {
                expires: now + REFRESH_LIFETIME,
                used: false,
                revoked: false,
                access: access.clone(),
            },
        );
        (access, refresh)
    }

    fn token_answer(&mut self) -> Reply {
        let (access, refresh) = self.issue_pair();
        let expires_in = self.access_lifetime.as_secs_f64().ceil() as u64;
        Reply::json_plain(
            StatusCode::OK,
            json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "access_token": access,
                "refresh_token": refresh,
            }),
        )
    }

    // --- seeding ------------------------------------------------------------------------

    fn contact_from(&self, id: i64, c: NewContact) -> Contact {
        let now = self.now();
        let mut fields = Vec::new();
        let def = |id| {
            self.contact_fields
                .iter()
                .find(|f| f.id == id)
                .expect("field")
        };
        if let Some(phone) = c.phone {
            let (enum_id, code) = enum_by_code(def(FIELD_PHONE), "WORK");
            fields.push(cf_read(
                def(FIELD_PHONE),
                vec![json!({ "value": phone, "enum_id": enum_id, "enum_code": code })],
            ));
        }
        if let Some(email) = c.email {
            let (enum_id, code) = enum_by_code(def(FIELD_EMAIL), "WORK");
            fields.push(cf_read(
                def(FIELD_EMAIL),
                vec![json!({ "value": email, "enum_id": enum_id, "enum_code": code })],
            ));
        }
        let mut parts = c.name.splitn(2, ' ');
        let first_name = parts.next().unwrap_or_default().to_owned();
        let last_name = parts.next().unwrap_or_default().to_owned();
        Contact {
            id,
            name: c.name,
            first_name,
            last_name,
            responsible_user_id: c.responsible_user_id,
            created_by: c.responsible_user_id,
            updated_by: c.responsible_user_id,
            created_at: now - 3_600,
            updated_at: now - 3_600,
            custom_fields_values: fields,
            company_id: None,
        }
    }

    fn seed_contact(&mut self, c: NewContact) -> i64 {
        let id = self.new_id();
        let contact = self.contact_from(id, c);
        self.contacts.insert(id, contact);
        id
    }

    fn seed_company(&mut self, name: &str) -> i64 {
        let id = self.new_id();
        let now = self.now();
        self.companies.insert(
            id,
            Company {
                id,
                name: name.to_owned(),
                responsible_user_id: USER_ELENA,
                updated_by: USER_ELENA,
                created_at: now,
                updated_at: now,
            },
        );
        id
    }

    fn seed_lead(&mut self, l: NewLead) -> i64 {
        let mut input = json!({
            "name": l.name,
            "price": l.price,
            "pipeline_id": l.pipeline_id,
            "status_id": l.status_id,
            "responsible_user_id": l.responsible_user_id,
            "custom_fields_values": l.custom_fields_values,
            "_embedded": {
                "tags": l.tags.iter().map(|t| json!({ "name": t })).collect::<Vec<_>>(),
                "contacts": l.contacts.iter().enumerate()
                    .map(|(i, id)| json!({ "id": id, "is_main": i == 0 }))
                    .collect::<Vec<_>>(),
                "companies": l.company_id.map(|id| vec![json!({ "id": id })]).unwrap_or_default(),
            },
        });
        if let Some(reason) = l.loss_reason_id {
            input["loss_reason_id"] = json!(reason);
        }
        let id = self.new_id();
        let now = self.now();
        let base = self.blank_lead(id, l.responsible_user_id, now);
        let mut errors = Vec::new();
        let mut lead =
            self.lead_with_changes(&input, &base, l.responsible_user_id, true, &mut errors);
        assert!(
            errors.is_empty(),
            "seed_lead: the API would refuse this lead: {errors:?}"
        );
        lead.created_at = l.created_at.unwrap_or(now);
        lead.updated_at = l.updated_at.unwrap_or(now);
        if lead.name.is_empty() {
            lead.name = format!("Сделка #{id}");
        }
        if lead.closed_at.is_some() {
            lead.closed_at = Some(lead.updated_at);
        }
        self.leads.insert(id, lead);
        id
    }

    fn blank_lead(&self, id: i64, user: i64, now: i64) -> Lead {
        Lead {
            id,
            name: String::new(),
            price: 0,
            responsible_user_id: user,
            status_id: STATUS_FIRST_CONTACT,
            pipeline_id: PIPELINE_SALES,
            loss_reason_id: None,
            created_by: user,
            updated_by: user,
            created_at: now,
            updated_at: now,
            closed_at: None,
            is_deleted: false,
            custom_fields_values: Vec::new(),
            tags: Vec::new(),
            contacts: Vec::new(),
            company_id: None,
        }
    }

    // --- the gate every request passes --------------------------------------------------

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Reply {
        if self.blocked {
            // What integrators report after a block: nginx's page, not JSON.
            return Reply::html(StatusCode::FORBIDDEN, nginx_page(403, "Forbidden"));
        }
        if path == "/oauth2/access_token" || path == "/oauth2/access_token/" {
            if method != Method::POST {
                return problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method Not Allowed",
                    "Use POST",
                );
            }
            if let Some(status) = self.token_failures.pop_front() {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return Reply::html(
                    code,
                    nginx_page(status, code.canonical_reason().unwrap_or("Error")),
                );
            }
            let reply = self.oauth(headers, body);
            if self.lost_token_answers > 0 {
                self.lost_token_answers -= 1;
                return Reply::html(
                    StatusCode::GATEWAY_TIMEOUT,
                    nginx_page(504, "Gateway Time-out"),
                );
            }
            return reply;
        }
        if !path.starts_with("/api/v4/") {
            return problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path");
        }
        if let Some(status) = self.failures.pop_front() {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if code.is_server_error() {
                let reason = code.canonical_reason().unwrap_or("Error");
                return Reply::html(code, nginx_page(status, reason));
            }
            return problem(
                code,
                code.canonical_reason().unwrap_or("Error"),
                "Injected failure",
            );
        }
        let user = match self.authenticate(headers) {
            Some(user) => user,
            None => {
                return problem(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Неверный логин или пароль",
                );
            }
        };
        if let Some(reply) = self.rate_limit() {
            return reply;
        }
        let query = Query::parse(raw_query);
        let json_body = if body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(body)
        };
        let json_body = match json_body {
            Ok(v) => v,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    &format!("Body is not JSON: {e}"),
                );
            }
        };
        self.route(method, path, raw_query, &query, &json_body, user)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<i64> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = self.access.get(token.trim())?;
        (!token.revoked && token.expires > self.now_st()).then_some(self.api_user)
    }

    /// A rolling one-second window for the integration: the request that would be the
    /// (limit+1)-th within a second gets 429 and is not counted.
    fn rate_limit(&mut self) -> Option<Reply> {
        let now = Instant::now();
        while self
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        if self.window.len() < self.rate_limit {
            self.window.push_back(now);
            return None;
        }
        self.total_429 += 1;
        while self
            .recent_429
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent_429.pop_front();
        }
        self.recent_429.push_back(now);
        if self.recent_429.len() > self.block_after {
            self.blocked = true;
        }
        Some(problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "Превышен лимит запросов: не более 7 запросов в секунду",
        ))
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        raw_query: Option<&str>,
        q: &Query,
        body: &Value,
        user: i64,
    ) -> Reply {
        let segments: Vec<&str> = path
            .trim_start_matches("/api/v4/")
            .trim_end_matches('/')
            .split('/')
            .collect();
        let id = |s: &str| s.parse::<i64>().ok();
        let get = method == Method::GET;
        let patch = method == Method::PATCH;
        let post = method == Method::POST;
        match segments.as_slice() {
            ["account"] if get => self.get_account(q),
            ["users"] if get => self.list_users(q, path, raw_query),
            ["users", uid] if get => {
                match id(uid).and_then(|i| self.users.iter().find(|u| u.id == i)) {
                    Some(u) => Reply::json(StatusCode::OK, self.render_user(u)),
                    None => Reply::empty(StatusCode::NO_CONTENT),
                }
            }
            ["leads", "pipelines"] if get => self.list_pipelines(),
            ["leads", "pipelines", pid] if get => match id(pid).and_then(|i| self.pipeline(i)) {
                Some(p) => Reply::json(StatusCode::OK, self.render_pipeline(p)),
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Pipeline not found"),
            },
            ["leads", "pipelines", pid, "statuses"] if get => {
                match id(pid).and_then(|i| self.pipeline(i)) {
                    Some(p) => {
                        let statuses: Vec<Value> = p
                            .statuses
                            .iter()
                            .map(|s| self.render_status(p.id, s))
                            .collect();
                        Reply::json(
                            StatusCode::OK,
                            json!({
                                "_total_items": statuses.len(),
                                "_links": self.href(path),
                                "_embedded": { "statuses": statuses },
                            }),
                        )
                    }
                    None => problem(StatusCode::NOT_FOUND, "Not Found", "Pipeline not found"),
                }
            }
            ["leads", "loss_reasons"] if get => {
                let items = self
                    .loss_reasons
                    .iter()
                    .map(|r| self.render_loss_reason(r))
                    .collect();
                self.paged(q, path, raw_query, "loss_reasons", items, true)
            }
            ["leads", "loss_reasons", rid] if get => {
                match id(rid).and_then(|i| self.loss_reasons.iter().find(|r| r.id == i)) {
                    Some(r) => Reply::json(StatusCode::OK, self.render_loss_reason(r)),
                    None => Reply::empty(StatusCode::NO_CONTENT),
                }
            }
            ["leads", "custom_fields"] if get => {
                let items = self
                    .lead_fields
                    .iter()
                    .map(|f| self.render_field(f))
                    .collect();
                self.paged(q, path, raw_query, "custom_fields", items, true)
            }
            ["contacts", "custom_fields"] if get => {
                let items = self
                    .contact_fields
                    .iter()
                    .map(|f| self.render_field(f))
                    .collect();
                self.paged(q, path, raw_query, "custom_fields", items, true)
            }
            ["leads", lid, "links"] if get => match id(lid).and_then(|i| self.leads.get(&i)) {
                Some(lead) => self.lead_links(lead, path),
                None => Reply::empty(StatusCode::NO_CONTENT),
            },
            ["catalogs", cid, "elements"] if get => {
                if id(cid) != Some(CATALOG_PRODUCTS) {
                    return problem(StatusCode::NOT_FOUND, "Not Found", "Catalog not found");
                }
                let wanted = q.ints("filter[id]");
                let items = self
                    .products
                    .iter()
                    .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
                    .map(|(id, e)| render_element(*id, e))
                    .collect();
                self.paged(q, path, raw_query, "elements", items, false)
            }
            ["leads", "notes"] if post => self.add_notes(None, body, user),
            ["leads", lid, "notes"] if post => match id(lid) {
                Some(lead_id) => self.add_notes(Some(lead_id), body, user),
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path"),
            },
            ["leads", lid, "notes"] if get => match id(lid) {
                Some(lead_id) => self.list_notes(lead_id, q, path, raw_query),
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path"),
            },
            ["leads"] if get => self.list_leads(q, path, raw_query),
            ["leads"] if patch => self.patch_leads(body, user, None),
            ["leads"] if post => self.add_leads(body, user),
            ["leads", lid] if get => match id(lid) {
                // A missing (or deleted) lead is "no content", not 404.
                Some(i) => match self.leads.get(&i) {
                    Some(lead) if !lead.is_deleted => {
                        Reply::json(StatusCode::OK, self.render_lead(lead, &q.with()))
                    }
                    _ => Reply::empty(StatusCode::NO_CONTENT),
                },
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path"),
            },
            ["leads", lid] if patch => match id(lid) {
                Some(lead_id) => self.patch_leads(body, user, Some(lead_id)),
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path"),
            },
            ["contacts"] if get => self.list_contacts(q, path, raw_query),
            ["contacts", cid] if get => match id(cid).and_then(|i| self.contacts.get(&i)) {
                Some(c) => Reply::json(StatusCode::OK, self.render_contact(c, &q.with())),
                None => Reply::empty(StatusCode::NO_CONTENT),
            },
            ["companies"] if get => {
                let with = q.with();
                // The list's time filters (filters-api: `filter[updated_at][from|to]`).
                let updated = q.range("filter[updated_at]");
                let created = q.range("filter[created_at]");
                let mut companies: Vec<&Company> = self
                    .companies
                    .values()
                    .filter(|c| in_range(Some(c.updated_at), updated))
                    .filter(|c| in_range(Some(c.created_at), created))
                    .collect();
                sort_by_order(q, &mut companies, |c, key| match key {
                    "updated_at" => Some(c.updated_at),
                    "id" => Some(c.id),
                    _ => None,
                });
                let items = companies
                    .into_iter()
                    .map(|c| self.render_company(c, &with))
                    .collect();
                self.paged(q, path, raw_query, "companies", items, false)
            }
            ["companies", cid] if get => match id(cid).and_then(|i| self.companies.get(&i)) {
                Some(c) => Reply::json(StatusCode::OK, self.render_company(c, &q.with())),
                None => Reply::empty(StatusCode::NO_CONTENT),
            },
            ["tasks"] if get => self.list_tasks(q, path, raw_query),
            ["tasks"] if post => self.add_tasks(body, user),
            ["tasks"] if patch => self.patch_tasks(body, user, None),
            ["tasks", tid] if get => match id(tid).and_then(|i| self.tasks.get(&i)) {
                Some(t) => Reply::json(StatusCode::OK, self.render_task(t)),
                None => Reply::empty(StatusCode::NO_CONTENT),
            },
            ["tasks", tid] if patch => match id(tid) {
                Some(task_id) => self.patch_tasks(body, user, Some(task_id)),
                None => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown path"),
            },
            _ => problem(StatusCode::NOT_FOUND, "Not Found", "Unknown method or path"),
        }
    }

    // --- OAuth --------------------------------------------------------------------------

    fn oauth(&mut self, headers: &HeaderMap, body: &Bytes) -> Reply {
        // amoCRM's docs post JSON; OAuth libraries post a form: take both.
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let params: HashMap<String, String> = if is_form {
            Query::parse(std::str::from_utf8(body).ok())
                .pairs
                .into_iter()
                .collect()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k, s)),
                        Value::Number(n) => Some((k, n.to_string())),
                        _ => None,
                    })
                    .collect(),
                _ => HashMap::new(),
            }
        };
        let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        let invalid_request = |status: StatusCode, hint: &str| {
            oauth_error(
                status,
                "Некорректный запрос",
                "В запросе отсутствует ряд параметров или параметры невалидны",
                Some(hint),
            )
        };
        let Some(client_id) = param("client_id") else {
            return invalid_request(StatusCode::BAD_REQUEST, "Check the `client_id` parameter");
        };
        if client_id != self.client.client_id
            || param("client_secret").as_deref() != Some(self.client.client_secret.as_str())
        {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "Некорректный клиент",
                "Авторизация клиента не прошла",
                None,
            );
        }
        let Some(grant_type) = param("grant_type") else {
            return invalid_request(StatusCode::BAD_REQUEST, "Check the `grant_type` parameter");
        };
        let now = self.now_st();
        match grant_type.as_str() {
            "authorization_code" => {
                if param("redirect_uri").as_deref() != Some(self.client.redirect_uri.as_str()) {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "Некорректный клиент",
                        "Авторизация клиента не прошла",
                        None,
                    );
                }
                let Some(code) = param("code") else {
                    return invalid_request(StatusCode::BAD_REQUEST, "Check the `code` parameter");
                };
                let Some(entry) = self.codes.get_mut(&code) else {
                    return invalid_request(
                        StatusCode::BAD_REQUEST,
                        "Cannot decrypt the authorization code",
                    );
                };
                if entry.used {
                    return invalid_request(
                        StatusCode::BAD_REQUEST,
                        "Authorization code has been revoked",
                    );
                }
                if entry.expires <= now {
                    return invalid_request(
                        StatusCode::BAD_REQUEST,
                        "Authorization code has expired",
                    );
                }
                entry.used = true;
                self.token_answer()
            }
            "refresh_token" => {
                let Some(token) = param("refresh_token") else {
                    return invalid_request(
                        StatusCode::BAD_REQUEST,
                        "Check the `refresh_token` parameter",
                    );
                };
                let Some(entry) = self.refresh.get(&token).cloned() else {
                    return invalid_request(
                        StatusCode::UNAUTHORIZED,
                        "Cannot decrypt the refresh token",
                    );
                };
                if entry.used {
                    // The complaint every public client's issues carry: a second use of a
                    // refresh token kills every token of the integration.
                    self.refresh_reuses += 1;
                    for t in self.access.values_mut().filter(|t| !t.long_lived) {
                        t.revoked = true;
                    }
                    self.refresh.values_mut().for_each(|t| t.revoked = true);
                    return invalid_request(StatusCode::UNAUTHORIZED, "Token has been revoked");
                }
                if entry.revoked {
                    return invalid_request(StatusCode::UNAUTHORIZED, "Token has been revoked");
                }
                if entry.expires <= now {
                    return invalid_request(StatusCode::UNAUTHORIZED, "Token has expired");
                }
                if let Some(t) = self.refresh.get_mut(&token) {
                    t.used = true;
                }
                // league/oauth2-server revokes the access token the refresh token came with.
                if let Some(old) = self.access.get_mut(&entry.access) {
                    old.revoked = true;
                }
                self.token_answer()
            }
            _ => oauth_error(
                StatusCode::BAD_REQUEST,
                "Неподдерживаемый тип авторизации",
                "The authorization grant type is not supported by the authorization server.",
                Some("Check that all required parameters have been provided"),
            ),
        }
    }

    // --- reference data -----------------------------------------------------------------

    fn pipeline(&self, id: i64) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    fn get_account(&self, q: &Query) -> Reply {
        let mut account = json!({
            "id": ACCOUNT_ID,
            "name": "Демо-аккаунт робота",
            "subdomain": SUBDOMAIN,
            "created_at": 1_694_765_317,
            "created_by": USER_ELENA,
            "updated_at": 1_694_765_317,
            "updated_by": USER_ELENA,
            "current_user_id": USER_ELENA,
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": "disabled",
            "is_unsorted_on": true,
            "mobile_feature_version": 0,
            "is_loss_reason_enabled": true,
            "is_helpbot_enabled": false,
            "is_technical_account": false,
            "contact_name_display_order": 1,
            "_links": self.href("/api/v4/account"),
        });
        let with = q.with();
        let mut embedded = Map::new();
        if with.has("task_types") {
            embedded.insert(
                "task_types".into(),
                json!([
                    { "id": TASK_TYPE_FOLLOW_UP, "name": "Связаться", "color": null, "icon_id": null, "code": "FOLLOW_UP" },
                    { "id": TASK_TYPE_MEETING, "name": "Встреча", "color": null, "icon_id": null, "code": "MEETING" },
                ]),
            );
        }
        if with.has("datetime_settings") {
            account["datetime_settings"] = json!({
                "date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y", "short_time_pattern": "H:i",
                "date_format": "d.m.Y", "time_format": "H:i:s", "timezone": "Europe/Moscow", "timezone_offset": "+03:00",
            });
        }
        if !embedded.is_empty() {
            account["_embedded"] = Value::Object(embedded);
        }
        Reply::json(StatusCode::OK, account)
    }

    fn list_users(&self, q: &Query, path: &str, raw_query: Option<&str>) -> Reply {
        let items = self.users.iter().map(|u| self.render_user(u)).collect();
        self.paged(q, path, raw_query, "users", items, true)
    }

    fn render_user(&self, u: &User) -> Value {
        let all = json!({ "view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A" });
        json!({
            "id": u.id,
            "name": u.name,
            "email": u.email,
            "lang": "ru",
            "rights": {
                "leads": all,
                "contacts": all,
                "companies": all,
                "tasks": { "edit": "A", "delete": "A" },
                "mail_access": true,
                "catalog_access": true,
                "files_access": true,
                "status_rights": [],
                "catalog_rights": null,
                "is_admin": u.is_admin,
                "is_free": false,
                "is_active": true,
                "group_id": null,
                "role_id": null,
            },
            "_links": self.href(&format!("/api/v4/users/{}", u.id)),
        })
    }

    fn list_pipelines(&self) -> Reply {
        let items: Vec<Value> = self
            .pipelines
            .iter()
            .map(|p| self.render_pipeline(p))
            .collect();
        Reply::json(
            StatusCode::OK,
            json!({
                "_total_items": items.len(),
                "_links": self.href("/api/v4/leads/pipelines"),
                "_embedded": { "pipelines": items },
            }),
        )
    }

    fn render_pipeline(&self, p: &Pipeline) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "sort": 1,
            "is_main": p.is_main,
            "is_unsorted_on": true,
            "is_archive": false,
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/leads/pipelines/{}", p.id)),
            "_embedded": {
                "statuses": p.statuses.iter().map(|s| self.render_status(p.id, s)).collect::<Vec<_>>(),
            },
        })
    }

    fn render_status(&self, pipeline_id: i64, s: &Status) -> Value {
        json!({
            "id": s.id,
            "name": s.name,
            "sort": s.sort,
            "is_editable": s.id != STATUS_WON && s.id != STATUS_LOST && s.kind == 0,
            "pipeline_id": pipeline_id,
            "color": s.color,
            "type": s.kind,
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/leads/pipelines/{pipeline_id}/statuses/{}", s.id)),
        })
    }

    fn render_loss_reason(&self, r: &LossReason) -> Value {
        json!({
            "id": r.id,
            "name": r.name,
            "sort": r.sort,
            "created_at": 1_694_765_317,
            "updated_at": 1_694_765_317,
            "_links": self.href(&format!("/api/v4/leads/loss_reasons/{}", r.id)),
        })
    }

    fn render_field(&self, f: &FieldDef) -> Value {
        let enums: Value = if f.enums.is_empty() {
            Value::Null
        } else {
            f.enums
                .iter()
                .enumerate()
                .map(|(i, (id, value, _))| json!({ "id": id, "value": value, "sort": (i as i64 + 1) * 500 }))
                .collect()
        };
        json!({
            "id": f.id,
            "name": f.name,
            "type": f.kind,
            "account_id": ACCOUNT_ID,
            "code": f.code,
            "sort": f.sort,
            "is_api_only": false,
            "enums": enums,
            "group_id": null,
            "required_statuses": [],
            "is_deletable": f.code.is_none(),
            "is_predefined": f.code.is_some(),
            "entity_type": f.entity_type,
            "remind": null,
            "triggers": [],
            "currency": null,
            "hidden_statuses": [],
            "chained_lists": null,
            "_links": self.href(&format!("/api/v4/{}/custom_fields/{}", f.entity_type, f.id)),
        })
    }

    // --- leads --------------------------------------------------------------------------

    fn render_lead(&self, l: &Lead, with: &With) -> Value {
        let closest_task_at = self
            .tasks
            .values()
            .filter(|t| {
                !t.is_completed
                    && t.entity_type.as_deref() == Some("leads")
                    && t.entity_id == Some(l.id)
            })
            .map(|t| t.complete_till)
            .min();
        let mut embedded = Map::new();
        embedded.insert(
            "tags".into(),
            l.tags
                .iter()
                .map(|id| json!({ "id": id, "name": self.tags.get(id), "color": null }))
                .collect(),
        );
        embedded.insert(
            "companies".into(),
            l.company_id
                .map(|id| vec![json!({ "id": id, "_links": self.href(&format!("/api/v4/companies/{id}")) })])
                .unwrap_or_default()
                .into(),
        );
        if with.has("contacts") {
            embedded.insert(
                "contacts".into(),
                l.contacts
                    .iter()
                    .map(|(id, is_main)| {
                        json!({ "id": id, "is_main": is_main, "_links": self.href(&format!("/api/v4/contacts/{id}")) })
                    })
                    .collect(),
            );
        }
        if with.has("loss_reason")
            && let Some(reason) = l
                .loss_reason_id
                .and_then(|id| self.loss_reasons.iter().find(|r| r.id == id))
        {
            embedded.insert(
                "loss_reason".into(),
                json!([self.render_loss_reason(reason)]),
            );
        }
        let mut lead = json!({
            "id": l.id,
            "name": l.name,
            "price": l.price,
            "responsible_user_id": l.responsible_user_id,
            "group_id": 0,
            "status_id": l.status_id,
            "pipeline_id": l.pipeline_id,
            "loss_reason_id": l.loss_reason_id,
            "created_by": l.created_by,
            "updated_by": l.updated_by,
            "created_at": l.created_at,
            "updated_at": l.updated_at,
            "closed_at": l.closed_at,
            "closest_task_at": closest_task_at,
            "is_deleted": l.is_deleted,
            // The real API answers null, not [], when no field is filled.
            "custom_fields_values": if l.custom_fields_values.is_empty() { Value::Null } else { json!(l.custom_fields_values) },
            "score": null,
            "account_id": ACCOUNT_ID,
            "labor_cost": null,
            "_links": self.href(&format!("/api/v4/leads/{}", l.id)),
            "_embedded": embedded,
        });
        if with.has("is_price_modified_by_robot") {
            lead["is_price_modified_by_robot"] = json!(false);
        }
        lead
    }

    fn list_leads(&self, q: &Query, path: &str, raw_query: Option<&str>) -> Reply {
        let ids = q.ints("filter[id]");
        let responsible = q.ints("filter[responsible_user_id]");
        let pipelines = q.ints("filter[pipeline_id]");
        let statuses = q.statuses();
        let updated = q.range("filter[updated_at]");
        let created = q.range("filter[created_at]");
        let closed = q.range("filter[closed_at]");
        let search = q.get("query").map(str::to_owned);
        let mut leads: Vec<&Lead> = self
            .leads
            .values()
            .filter(|l| !l.is_deleted)
            .filter(|l| ids.is_empty() || ids.contains(&l.id))
            .filter(|l| responsible.is_empty() || responsible.contains(&l.responsible_user_id))
            .filter(|l| pipelines.is_empty() || pipelines.contains(&l.pipeline_id))
            .filter(|l| {
                statuses.is_empty()
                    || statuses.iter().any(|(p, s)| {
                        p.is_none_or(|p| p == l.pipeline_id) && s.is_none_or(|s| s == l.status_id)
                    })
            })
            .filter(|l| in_range(Some(l.updated_at), updated))
            .filter(|l| in_range(Some(l.created_at), created))
            .filter(|l| closed.is_none() || in_range(l.closed_at, closed))
            .filter(|l| {
                search
                    .as_deref()
                    .is_none_or(|s| matches_search(s, &l.name, &l.custom_fields_values))
            })
            .collect();
        sort_by_order(q, &mut leads, |l, key| match key {
            "updated_at" => Some(l.updated_at),
            "created_at" => Some(l.created_at),
            "id" => Some(l.id),
            _ => None,
        });
        let with = q.with();
        let items = leads
            .into_iter()
            .map(|l| self.render_lead(l, &with))
            .collect();
        self.paged(q, path, raw_query, "leads", items, false)
    }

    fn add_leads(&mut self, body: &Value, user: i64) -> Reply {
        let items = match batch_items(body) {
            Ok(items) => items,
            Err(reply) => return reply,
        };
        let now = self.now();
        let mut all_errors = Vec::new();
        let mut created = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut errors = Vec::new();
            let base = self.blank_lead(0, user, now);
            let lead = self.lead_with_changes(item, &base, user, true, &mut errors);
            push_errors(&mut all_errors, item, i, errors);
            created.push((request_id(item, i), lead));
        }
        if !all_errors.is_empty() {
            return validation(all_errors);
        }
        let mut answers = Vec::new();
        for (rid, mut lead) in created {
            lead.id = self.new_id();
            if lead.name.is_empty() {
                // What amoCRM names a lead created without a name.
                lead.name = format!("Сделка #{}", lead.id);
            }
            answers.push(json!({
                "id": lead.id,
                "request_id": rid,
                "_links": self.href(&format!("/api/v4/leads/{}", lead.id)),
            }));
            self.leads.insert(lead.id, lead);
        }
        Reply::json(
            StatusCode::OK,
            json!({ "_links": self.href("/api/v4/leads"), "_embedded": { "leads": answers } }),
        )
    }

    /// `PATCH /api/v4/leads` (an array, `single` None) or `/api/v4/leads/{id}` (an object).
    /// All or nothing: one invalid lead refuses the whole batch.
    fn patch_leads(&mut self, body: &Value, user: i64, single: Option<i64>) -> Reply {
        let items: Vec<Value> = match single {
            Some(id) => {
                if !body.is_object() {
                    return problem(StatusCode::BAD_REQUEST, "Bad Request", "Expected an object");
                }
                let mut item = body.clone();
                item["id"] = json!(id);
                vec![item]
            }
            None => match batch_items(body) {
                Ok(items) => items,
                Err(reply) => return reply,
            },
        };
        let now = self.now();
        let mut all_errors = Vec::new();
        let mut changed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut errors = Vec::new();
            let current = item
                .get("id")
                .and_then(Value::as_i64)
                .and_then(|id| self.leads.get(&id))
                .filter(|l| !l.is_deleted)
                .cloned();
            match current {
                None => errors.push(verr("NotFound", "id", "Entity not found")),
                Some(current) => {
                    let mut lead = self.lead_with_changes(item, &current, user, false, &mut errors);
                    lead.updated_at = now;
                    lead.updated_by = user;
                    changed.push((request_id(item, i), lead));
                }
            }
            push_errors(&mut all_errors, item, i, errors);
        }
        if !all_errors.is_empty() {
            return validation(all_errors);
        }
        let mut answers = Vec::new();
        for (rid, lead) in changed {
            answers.push(json!({
                "id": lead.id,
                "updated_at": lead.updated_at,
                "request_id": rid,
                "_links": self.href(&format!("/api/v4/leads/{}", lead.id)),
            }));
            self.leads.insert(lead.id, lead);
        }
        if single.is_some() {
            let mut one = answers.remove(0);
            if let Some(map) = one.as_object_mut() {
                map.remove("request_id");
            }
            return Reply::json(StatusCode::OK, one);
        }
        Reply::json(
            StatusCode::OK,
            json!({ "_links": self.href("/api/v4/leads"), "_embedded": { "leads": answers } }),
        )
    }

    /// The lead `current` would become with `input` applied; problems go to `errors`.
    fn lead_with_changes(
        &mut self,
        input: &Value,
        current: &Lead,
        user: i64,
        creating: bool,
        errors: &mut Vec<Value>,
    ) -> Lead {
        let mut lead = current.clone();
        let Some(obj) = input.as_object() else {
            errors.push(verr(
                "InvalidType",
                "",
                "This value should be of type object.",
            ));
            return lead;
        };
        if let Some(name) = obj.get("name") {
            match name.as_str() {
                Some(s) => lead.name = s.to_owned(),
                None => errors.push(verr(
                    "InvalidType",
                    "name",
                    "This value should be of type string.",
                )),
            }
        }
        if let Some(price) = obj.get("price") {
            match price.as_i64() {
                Some(p) if p >= 0 => lead.price = p,
                Some(_) => errors.push(verr(
                    "GreaterThanOrEqual",
                    "price",
                    "This value should be greater than or equal to 0.",
                )),
                None if price.is_null() => lead.price = 0,
                None => errors.push(verr(
                    "InvalidType",
                    "price",
                    "This value should be of type int.",
                )),
            }
        }
        if let Some(v) = obj.get("responsible_user_id") {
            match v.as_i64() {
                Some(u) if self.users.iter().any(|x| x.id == u) => lead.responsible_user_id = u,
                Some(_) => errors.push(verr(
                    "NotSupportedChoice",
                    "responsible_user_id",
                    "The value you selected is not a valid choice.",
                )),
                None => errors.push(verr(
                    "InvalidType",
                    "responsible_user_id",
                    "This value should be of type int.",
                )),
            }
        }
        // Stage and pipeline: 142 and 143 belong to every pipeline; a pipeline alone moves the
        // lead to that pipeline's first stage.
        let new_pipeline = match obj.get("pipeline_id") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(p) if self.pipeline(p).is_some() => Some(p),
                Some(_) => {
                    errors.push(verr(
                        "NotSupportedChoice",
                        "pipeline_id",
                        "The value you selected is not a valid choice.",
                    ));
                    None
                }
                None => {
                    errors.push(verr(
                        "InvalidType",
                        "pipeline_id",
                        "This value should be of type int.",
                    ));
                    None
                }
            },
        };
        let pipeline_id = new_pipeline.unwrap_or(lead.pipeline_id);
        match obj.get("status_id") {
            None | Some(Value::Null) => {
                if new_pipeline.is_some_and(|p| p != current.pipeline_id)
                    && let Some(first) = self.pipeline(pipeline_id).and_then(|p| {
                        p.statuses
                            .iter()
                            .filter(|s| s.kind == 0 && s.id != STATUS_WON && s.id != STATUS_LOST)
                            .min_by_key(|s| s.sort)
                    })
                {
                    lead.status_id = first.id;
                }
            }
            Some(v) => match v.as_i64() {
                Some(s)
                    if s == STATUS_WON
                        || s == STATUS_LOST
                        || self
                            .pipeline(pipeline_id)
                            .is_some_and(|p| p.statuses.iter().any(|x| x.id == s)) =>
                {
                    lead.status_id = s
                }
                Some(_) => errors.push(verr(
                    "NotSupportedChoice",
                    "status_id",
                    "The value you selected is not a valid choice.",
                )),
                None => errors.push(verr(
                    "InvalidType",
                    "status_id",
                    "This value should be of type int.",
                )),
            },
        }
        lead.pipeline_id = pipeline_id;
        let closed = |s: i64| s == STATUS_WON || s == STATUS_LOST;
        if closed(lead.status_id) && (creating || !closed(current.status_id)) {
            lead.closed_at = Some(self.now());
        } else if !closed(lead.status_id) {
            lead.closed_at = None;
        }
        if let Some(v) = obj.get("loss_reason_id") {
            match v {
                Value::Null => lead.loss_reason_id = None,
                v => match v.as_i64() {
                    Some(0) => lead.loss_reason_id = None,
                    Some(r) if self.loss_reasons.iter().any(|x| x.id == r) => {
                        lead.loss_reason_id = Some(r)
                    }
                    Some(_) => errors.push(verr(
                        "NotSupportedChoice",
                        "loss_reason_id",
                        "The value you selected is not a valid choice.",
                    )),
                    None => errors.push(verr(
                        "InvalidType",
                        "loss_reason_id",
                        "This value should be of type int.",
                    )),
                },
            }
        }
        if let Some(v) = obj.get("custom_fields_values") {
            let defs = self.lead_fields.clone();
            lead.custom_fields_values =
                apply_custom_fields(&defs, &lead.custom_fields_values, v, errors);
        }
        if let Some(embedded) = obj.get("_embedded").and_then(Value::as_object) {
            if let Some(tags) = embedded.get("tags") {
                match tags.as_array() {
                    Some(tags) => {
                        let mut ids = Vec::new();
                        for (i, tag) in tags.iter().enumerate() {
                            if let Some(id) = tag.get("id").and_then(Value::as_i64) {
                                if self.tags.contains_key(&id) {
                                    ids.push(id);
                                } else {
                                    errors.push(verr(
                                        "NotFound",
                                        &format!("_embedded.tags.{i}.id"),
                                        "Tag not found",
                                    ));
                                }
                            } else if let Some(name) = tag.get("name").and_then(Value::as_str) {
                                let existing = self
                                    .tags
                                    .iter()
                                    .find(|(_, n)| n.as_str() == name)
                                    .map(|(id, _)| *id);
                                let id = match existing {
                                    Some(id) => id,
                                    None => {
                                        let id = self.new_id();
                                        self.tags.insert(id, name.to_owned());
                                        id
                                    }
                                };
                                ids.push(id);
                            } else {
                                errors.push(verr(
                                    "NotBlank",
                                    &format!("_embedded.tags.{i}"),
                                    "Either id or name is required.",
                                ));
                            }
                        }
                        ids.dedup();
                        lead.tags = ids;
                    }
                    None if tags.is_null() => lead.tags.clear(),
                    None => errors.push(verr(
                        "InvalidType",
                        "_embedded.tags",
                        "This value should be of type array.",
                    )),
                }
            }
            // Links to contacts and companies are set on creation; editing them goes through
            // the links API, which this emulator does not model.
            if creating {
                if let Some(contacts) = embedded.get("contacts").and_then(Value::as_array) {
                    lead.contacts.clear();
                    for (i, c) in contacts.iter().enumerate() {
                        match c.get("id").and_then(Value::as_i64) {
                            Some(id) if self.contacts.contains_key(&id) => {
                                let is_main = c
                                    .get("is_main")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(lead.contacts.is_empty());
                                lead.contacts.push((id, is_main));
                            }
                            _ => errors.push(verr(
                                "NotFound",
                                &format!("_embedded.contacts.{i}.id"),
                                "Contact not found",
                            )),
                        }
                    }
                }
                if let Some(companies) = embedded.get("companies").and_then(Value::as_array) {
                    for (i, c) in companies.iter().enumerate() {
                        match c.get("id").and_then(Value::as_i64) {
                            Some(id) if self.companies.contains_key(&id) => {
                                lead.company_id = Some(id)
                            }
                            _ => errors.push(verr(
                                "NotFound",
                                &format!("_embedded.companies.{i}.id"),
                                "Company not found",
                            )),
                        }
                    }
                }
            }
        }
        if creating {
            lead.created_by = user;
            lead.updated_by = user;
        }
        lead
    }

    // --- contacts and companies ---------------------------------------------------------

    fn render_contact(&self, c: &Contact, with: &With) -> Value {
        let mut embedded = Map::new();
        embedded.insert("tags".into(), json!([]));
        embedded.insert(
            "companies".into(),
            c.company_id
                .map(|id| vec![json!({ "id": id, "_links": self.href(&format!("/api/v4/companies/{id}")) })])
                .unwrap_or_default()
                .into(),
        );
        if with.has("leads") {
            embedded.insert(
                "leads".into(),
                self.leads
                    .values()
                    .filter(|l| l.contacts.iter().any(|(id, _)| *id == c.id))
                    .map(|l| json!({ "id": l.id, "_links": self.href(&format!("/api/v4/leads/{}", l.id)) }))
                    .collect(),
            );
        }
        json!({
            "id": c.id,
            "name": c.name,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "responsible_user_id": c.responsible_user_id,
            "group_id": 0,
            "created_by": c.created_by,
            "updated_by": c.updated_by,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "closest_task_at": null,
            "is_deleted": false,
            "is_unsorted": false,
            "custom_fields_values": if c.custom_fields_values.is_empty() { Value::Null } else { json!(c.custom_fields_values) },
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/contacts/{}", c.id)),
            "_embedded": embedded,
        })
    }

    fn list_contacts(&self, q: &Query, path: &str, raw_query: Option<&str>) -> Reply {
        let ids = q.ints("filter[id]");
        let search = q.get("query").map(str::to_owned);
        let with = q.with();
        let items = self
            .contacts
            .values()
            .filter(|c| ids.is_empty() || ids.contains(&c.id))
            .filter(|c| {
                search
                    .as_deref()
                    .is_none_or(|s| matches_search(s, &c.name, &c.custom_fields_values))
            })
            .map(|c| self.render_contact(c, &with))
            .collect();
        self.paged(q, path, raw_query, "contacts", items, false)
    }

    /// `with=leads` and `with=contacts` embed the linked records as bare `{id, _links}`, like a
    /// contact's `with=leads`: every one of them, since the docs give the embedded lists no
    /// page or cap (developers.kommo.com/reference/get-company: "GET parameter “with” is
    /// required" for `_embedded[leads]` and `_embedded[contacts]`).
    fn render_company(&self, c: &Company, with: &With) -> Value {
        let mut embedded = Map::new();
        embedded.insert("tags".into(), json!([]));
        if with.has("leads") {
            embedded.insert(
                "leads".into(),
                self.leads
                    .values()
                    .filter(|l| l.company_id == Some(c.id))
                    .map(|l| json!({ "id": l.id, "_links": self.href(&format!("/api/v4/leads/{}", l.id)) }))
                    .collect(),
            );
        }
        if with.has("contacts") {
            embedded.insert(
                "contacts".into(),
                self.contacts
                    .values()
                    .filter(|k| k.company_id == Some(c.id))
                    .map(|k| json!({ "id": k.id, "_links": self.href(&format!("/api/v4/contacts/{}", k.id)) }))
                    .collect(),
            );
        }
        json!({
            "id": c.id,
            "name": c.name,
            "responsible_user_id": c.responsible_user_id,
            "group_id": 0,
            "created_by": c.responsible_user_id,
            "updated_by": c.updated_by,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "closest_task_at": null,
            "is_deleted": false,
            "custom_fields_values": null,
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/companies/{}", c.id)),
            "_embedded": embedded,
        })
    }

    // --- tasks --------------------------------------------------------------------------

    fn render_task(&self, t: &Task) -> Value {
        json!({
            "id": t.id,
            "created_by": t.created_by,
            "updated_by": t.updated_by,
            "created_at": t.created_at,
            "updated_at": t.updated_at,
            "responsible_user_id": t.responsible_user_id,
            "group_id": 0,
            "entity_id": t.entity_id,
            "entity_type": t.entity_type,
            "duration": t.duration,
            "is_completed": t.is_completed,
            "task_type_id": t.task_type_id,
            "text": t.text,
            // Assumed from the PHP backend: an empty result is an empty array, not an object.
            "result": match &t.result { Some(text) => json!({ "text": text }), None => json!([]) },
            "complete_till": t.complete_till,
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/tasks/{}", t.id)),
        })
    }

    fn list_tasks(&self, q: &Query, path: &str, raw_query: Option<&str>) -> Reply {
        let ids = q.ints("filter[id]");
        let entity_ids = q.ints("filter[entity_id]");
        let responsible = q.ints("filter[responsible_user_id]");
        let types = {
            let mut t = q.ints("filter[task_type]");
            t.extend(q.ints("filter[task_type_id]"));
            t
        };
        let entity_type = q.get("filter[entity_type]").map(str::to_owned);
        let completed = q
            .get("filter[is_completed]")
            .map(|v| v == "1" || v == "true");
        let updated = q.range("filter[updated_at]");
        let mut tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .filter(|t| {
                entity_ids.is_empty() || t.entity_id.is_some_and(|e| entity_ids.contains(&e))
            })
            .filter(|t| responsible.is_empty() || responsible.contains(&t.responsible_user_id))
            .filter(|t| types.is_empty() || types.contains(&t.task_type_id))
            .filter(|t| {
                entity_type
                    .as_deref()
                    .is_none_or(|e| t.entity_type.as_deref() == Some(e))
            })
            .filter(|t| completed.is_none_or(|c| t.is_completed == c))
            .filter(|t| in_range(Some(t.updated_at), updated))
            .collect();
        sort_by_order(q, &mut tasks, |t, key| match key {
            "complete_till" => Some(t.complete_till),
            "created_at" => Some(t.created_at),
            "id" => Some(t.id),
            _ => None,
        });
        let items = tasks.into_iter().map(|t| self.render_task(t)).collect();
        self.paged(q, path, raw_query, "tasks", items, false)
    }

    fn task_fields(
        &self,
        obj: &Map<String, Value>,
        task: &mut Task,
        creating: bool,
        errors: &mut Vec<Value>,
    ) {
        match obj.get("text") {
            Some(Value::String(s)) if !s.trim().is_empty() => task.text = s.clone(),
            Some(Value::String(_)) | Some(Value::Null) => {
                errors.push(verr("NotBlank", "text", "This value should not be blank."))
            }
            Some(_) => errors.push(verr(
                "InvalidType",
                "text",
                "This value should be of type string.",
            )),
            None if creating => {
                errors.push(verr("NotBlank", "text", "This value should not be blank."))
            }
            None => {}
        }
        match obj.get("complete_till") {
            Some(v) if v.as_i64().is_some() => task.complete_till = v.as_i64().unwrap_or_default(),
            Some(Value::Null) => errors.push(verr(
                "NotBlank",
                "complete_till",
                "This value should not be blank.",
            )),
            Some(_) => errors.push(verr(
                "InvalidType",
                "complete_till",
                "This value should be of type int.",
            )),
            None if creating => errors.push(verr(
                "NotBlank",
                "complete_till",
                "This value should not be blank.",
            )),
            None => {}
        }
        if let Some(v) = obj.get("task_type_id") {
            match v.as_i64() {
                Some(t) if t == TASK_TYPE_FOLLOW_UP || t == TASK_TYPE_MEETING => {
                    task.task_type_id = t
                }
                _ => errors.push(verr(
                    "NotSupportedChoice",
                    "task_type_id",
                    "The value you selected is not a valid choice.",
                )),
            }
        }
        if let Some(v) = obj.get("responsible_user_id") {
            match v.as_i64() {
                Some(u) if self.users.iter().any(|x| x.id == u) => task.responsible_user_id = u,
                _ => errors.push(verr(
                    "NotSupportedChoice",
                    "responsible_user_id",
                    "The value you selected is not a valid choice.",
                )),
            }
        }
        if let Some(v) = obj.get("duration") {
            match v.as_i64() {
                Some(d) if d >= 0 => task.duration = d,
                _ => errors.push(verr(
                    "InvalidType",
                    "duration",
                    "This value should be of type int.",
                )),
            }
        }
        if let Some(v) = obj.get("is_completed") {
            match v.as_bool() {
                Some(b) => task.is_completed = b,
                None => errors.push(verr(
                    "InvalidType",
                    "is_completed",
                    "This value should be of type bool.",
                )),
            }
        }
        if let Some(v) = obj.get("result") {
            match v.get("text").and_then(Value::as_str) {
                Some(text) => task.result = Some(text.to_owned()),
                None if v.is_null() => {}
                None => errors.push(verr(
                    "InvalidType",
                    "result.text",
                    "This value should be of type string.",
                )),
            }
        }
        if creating {
            let entity_type = obj.get("entity_type").and_then(Value::as_str);
            let entity_id = obj.get("entity_id").and_then(Value::as_i64);
            match (entity_type, entity_id) {
                (None, None) => {}
                (Some(t), Some(id)) => {
                    let exists = match t {
                        "leads" => self.leads.get(&id).is_some_and(|l| !l.is_deleted),
                        "contacts" => self.contacts.contains_key(&id),
                        "companies" => self.companies.contains_key(&id),
                        "customers" => false,
                        _ => {
                            errors.push(verr(
                                "NotSupportedChoice",
                                "entity_type",
                                "The value you selected is not a valid choice.",
                            ));
                            true
                        }
                    };
                    if !exists {
                        errors.push(verr("NotFound", "entity_id", "Entity not found"));
                    }
                    task.entity_type = Some(t.to_owned());
                    task.entity_id = Some(id);
                }
                (None, Some(_)) => errors.push(verr(
                    "NotBlank",
                    "entity_type",
                    "This value should not be blank.",
                )),
                (Some(_), None) => errors.push(verr(
                    "NotBlank",
                    "entity_id",
                    "This value should not be blank.",
                )),
            }
        }
    }

    fn add_tasks(&mut self, body: &Value, user: i64) -> Reply {
        let items = match batch_items(body) {
            Ok(items) => items,
            Err(reply) => return reply,
        };
        let now = self.now();
        let mut all_errors = Vec::new();
        let mut created = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut errors = Vec::new();
            let mut task = Task {
                id: 0,
                text: String::new(),
                responsible_user_id: user,
                created_by: user,
                updated_by: user,
                created_at: now,
                updated_at: now,
                entity_id: None,
                entity_type: None,
                duration: 0,
                is_completed: false,
                task_type_id: TASK_TYPE_FOLLOW_UP,
                result: None,
                complete_till: 0,
            };
            match item.as_object() {
                Some(obj) => self.task_fields(obj, &mut task, true, &mut errors),
                None => errors.push(verr(
                    "InvalidType",
                    "",
                    "This value should be of type object.",
                )),
            }
            push_errors(&mut all_errors, item, i, errors);
            created.push((request_id(item, i), task));
        }
        if !all_errors.is_empty() {
            return validation(all_errors);
        }
        let mut answers = Vec::new();
        for (rid, mut task) in created {
            task.id = self.new_id();
            answers.push(json!({
                "id": task.id,
                "request_id": rid,
                "_links": self.href(&format!("/api/v4/tasks/{}", task.id)),
            }));
            self.tasks.insert(task.id, task);
        }
        Reply::json(
            StatusCode::OK,
            json!({ "_links": self.href("/api/v4/tasks"), "_embedded": { "tasks": answers } }),
        )
    }

    fn patch_tasks(&mut self, body: &Value, user: i64, single: Option<i64>) -> Reply {
        let items: Vec<Value> = match single {
            Some(id) => {
                if !body.is_object() {
                    return problem(StatusCode::BAD_REQUEST, "Bad Request", "Expected an object");
                }
                let mut item = body.clone();
                item["id"] = json!(id);
                vec![item]
            }
            None => match batch_items(body) {
                Ok(items) => items,
                Err(reply) => return reply,
            },
        };
        let now = self.now();
        let mut all_errors = Vec::new();
        let mut changed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut errors = Vec::new();
            let current = item
                .get("id")
                .and_then(Value::as_i64)
                .and_then(|id| self.tasks.get(&id));
            match (current, item.as_object()) {
                (Some(current), Some(obj)) => {
                    let mut task = current.clone();
                    self.task_fields(obj, &mut task, false, &mut errors);
                    task.updated_at = now;
                    task.updated_by = user;
                    changed.push((request_id(item, i), task));
                }
                _ => errors.push(verr("NotFound", "id", "Entity not found")),
            }
            push_errors(&mut all_errors, item, i, errors);
        }
        if !all_errors.is_empty() {
            return validation(all_errors);
        }
        let mut answers = Vec::new();
        for (rid, task) in changed {
            answers.push(json!({
                "id": task.id,
                "updated_at": task.updated_at,
                "request_id": rid,
                "_links": self.href(&format!("/api/v4/tasks/{}", task.id)),
            }));
            self.tasks.insert(task.id, task);
        }
        if single.is_some() {
            let mut one = answers.remove(0);
            if let Some(map) = one.as_object_mut() {
                map.remove("request_id");
            }
            return Reply::json(StatusCode::OK, one);
        }
        Reply::json(
            StatusCode::OK,
            json!({ "_links": self.href("/api/v4/tasks"), "_embedded": { "tasks": answers } }),
        )
    }

    // --- notes --------------------------------------------------------------------------

    fn render_note(&self, n: &Note) -> Value {
        json!({
            "id": n.id,
            "entity_id": n.entity_id,
            "created_by": n.created_by,
            "updated_by": n.created_by,
            "created_at": n.created_at,
            "updated_at": n.updated_at,
            "responsible_user_id": n.responsible_user_id,
            "group_id": 0,
            "note_type": n.note_type,
            "params": n.params,
            "account_id": ACCOUNT_ID,
            "_links": self.href(&format!("/api/v4/{}/{}/notes/{}", n.entity_type, n.entity_id, n.id)),
        })
    }

    fn list_notes(&self, lead_id: i64, q: &Query, path: &str, raw_query: Option<&str>) -> Reply {
        if !self.leads.contains_key(&lead_id) {
            return Reply::empty(StatusCode::NO_CONTENT);
        }
        let types: Vec<String> = q
            .pairs
            .iter()
            .filter(|(k, _)| k == "filter[note_type]" || k.starts_with("filter[note_type]["))
            .map(|(_, v)| v.clone())
            .collect();
        let items = self
            .notes
            .values()
            .filter(|n| n.entity_type == "leads" && n.entity_id == lead_id)
            .filter(|n| types.is_empty() || types.contains(&n.note_type))
            .map(|n| self.render_note(n))
            .collect();
        self.paged(q, path, raw_query, "notes", items, false)
    }

    fn add_notes(&mut self, lead_id: Option<i64>, body: &Value, user: i64) -> Reply {
        let items = match batch_items(body) {
            Ok(items) => items,
            Err(reply) => return reply,
        };
        let now = self.now();
        let mut all_errors = Vec::new();
        let mut created = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut errors = Vec::new();
            let entity_id = lead_id.or_else(|| item.get("entity_id").and_then(Value::as_i64));
            match entity_id {
                Some(id) if self.leads.get(&id).is_some_and(|l| !l.is_deleted) => {}
                _ => errors.push(verr("NotFound", "entity_id", "Entity not found")),
            }
            let note_type = item
                .get("note_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !NOTE_TYPES.contains(&note_type.as_str()) {
                errors.push(verr(
                    "NotSupportedChoice",
                    "note_type",
                    "The value you selected is not a valid choice.",
                ));
            }
            let params = item.get("params").cloned().unwrap_or(Value::Null);
            // Assumed from the docs' parameter tables: what each common type cannot do without.
            let required: &[&str] = match note_type.as_str() {
                "common" | "sms_in" | "sms_out" => &["text"],
                "call_in" | "call_out" => &["uniq", "duration", "source", "phone"],
                "service_message" => &["service", "text"],
                _ => &[],
            };
            if !params.is_object() {
                errors.push(verr(
                    "NotBlank",
                    "params",
                    "This value should not be blank.",
                ));
            } else {
                for key in required {
                    let present = params
                        .get(*key)
                        .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
                    if !present {
                        errors.push(verr(
                            "NotBlank",
                            &format!("params.{key}"),
                            "This value should not be blank.",
                        ));
                    }
                }
            }
            push_errors(&mut all_errors, item, i, errors);
            created.push((
                request_id(item, i),
                Note {
                    id: 0,
                    entity_id: entity_id.unwrap_or_default(),
                    entity_type: "leads".to_owned(),
                    note_type,
                    params,
                    created_by: item
                        .get("created_by")
                        .and_then(Value::as_i64)
                        .unwrap_or(user),
                    responsible_user_id: item
                        .get("responsible_user_id")
                        .and_then(Value::as_i64)
                        .unwrap_or(user),
                    created_at: now,
                    updated_at: now,
                },
            ));
        }
        if !all_errors.is_empty() {
            return validation(all_errors);
        }
        let mut answers = Vec::new();
        for (rid, mut note) in created {
            note.id = self.new_id();
            answers.push(json!({
                "id": note.id,
                "entity_id": note.entity_id,
                "request_id": rid,
                "_links": self.href(&format!("/api/v4/leads/{}/notes/{}", note.entity_id, note.id)),
            }));
            self.notes.insert(note.id, note);
        }
        Reply::json(
            StatusCode::OK,
            json!({ "_links": self.href("/api/v4/leads/notes"), "_embedded": { "notes": answers } }),
        )
    }

    // --- paging -------------------------------------------------------------------------

    /// A page of `items`: 204 when it is empty; `_links.next` whenever the page is full, so a
    /// client walking `next` ends on a 204, as against the real API (assumed rule).
    /// A lead's links: its catalog elements, contacts and company, as the links API lists
    /// them.
    fn lead_links(&self, lead: &Lead, path: &str) -> Reply {
        let mut links: Vec<Value> = self
            .lead_products
            .get(&lead.id)
            .into_iter()
            .flatten()
            .map(|(element, quantity)| {
                json!({
                    "to_entity_id": element,
                    "to_entity_type": "catalog_elements",
                    "metadata": { "quantity": quantity, "catalog_id": CATALOG_PRODUCTS },
                })
            })
            .collect();
        links.extend(lead.contacts.iter().map(|(id, main)| {
            json!({
                "to_entity_id": id,
                "to_entity_type": "contacts",
                "metadata": { "main_contact": main },
            })
        }));
        links.extend(lead.company_id.map(
            |id| json!({ "to_entity_id": id, "to_entity_type": "companies", "metadata": null }),
        ));
        Reply::json(
            StatusCode::OK,
            json!({
                "_total_items": links.len(),
                "_links": self.href(path),
                "_embedded": { "links": links },
            }),
        )
    }

    fn paged(
        &self,
        q: &Query,
        path: &str,
        raw_query: Option<&str>,
        key: &str,
        items: Vec<Value>,
        totals: bool,
    ) -> Reply {
        let (page, limit) = match q.paging() {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let total = items.len();
        let chunk: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .collect();
        if chunk.is_empty() {
            return Reply::empty(StatusCode::NO_CONTENT);
        }
        let href = |p: usize| json!({ "href": format!("{}{}?{}", self.base_url, path, with_page(raw_query, p)) });
        let mut links = Map::new();
        links.insert("self".into(), href(page));
        if chunk.len() == limit {
            links.insert("next".into(), href(page + 1));
        }
        if page > 1 {
            links.insert("prev".into(), href(page - 1));
        }
        let mut body = json!({ "_page": page, "_links": links, "_embedded": { key: chunk } });
        if totals {
            body["_total_items"] = json!(total);
            body["_page_count"] = json!(total.div_ceil(limit));
        }
        Reply::json(StatusCode::OK, body)
    }
}

/// A catalog element as `GET /api/v4/catalogs/{id}/elements` renders it.
fn render_element(id: i64, e: &CatalogElement) -> Value {
    let field = |fid: i64, name: &str, code: Value, kind: &str, value: Value| {
        json!({
            "field_id": fid, "field_name": name, "field_code": code, "field_type": kind,
            "values": [{ "value": value }],
        })
    };
    let mut fields = vec![
        field(271207, "Артикул", json!("SKU"), "text", json!(e.sku)),
        field(
            271211,
            "Цена",
            json!("PRICE"),
            "numeric",
            json!(e.price.to_string()),
        ),
    ];
    if let Some(brand) = &e.brand {
        fields.push(field(271215, "Бренд", Value::Null, "text", json!(brand)));
    }
    json!({
        "id": id,
        "name": e.name,
        "created_by": 0,
        "updated_by": 0,
        "created_at": 1_760_000_000,
        "updated_at": 1_760_000_000,
        "is_deleted": null,
        "custom_fields_values": fields,
        "catalog_id": CATALOG_PRODUCTS,
        "account_id": ACCOUNT_ID,
    })
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing.

async fn dispatch(
    AxumState(state): AxumState<Arc<Mutex<Account>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut acc = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let reply = acc.handle(&method, &path, query.as_deref(), &headers, &body);
    let at = acc.now_st();
    acc.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        at,
        status: reply.status.as_u16(),
        body: serde_json::from_slice(&body).ok(),
    });
    drop(acc);
    reply.into_response()
}

struct Reply {
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/hal+json"),
            body: body.to_string().into_bytes(),
        }
    }
    fn json_plain(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            body: body.to_string().into_bytes(),
        }
    }
    fn problem(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/problem+json"),
            body: body.to_string().into_bytes(),
        }
    }
    fn html(status: StatusCode, body: String) -> Reply {
        Reply {
            status,
            content_type: Some("text/html"),
            body: body.into_bytes(),
        }
    }
    fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            content_type: None,
            body: Vec::new(),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        match self.content_type {
            Some(ct) => {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            None => {
                response.headers_mut().remove(header::CONTENT_TYPE);
            }
        }
        response
    }
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Reply {
    Reply::problem(
        status,
        json!({
            "title": title,
            "type": format!("https://httpstatus.es/{}", status.as_u16()),
            "status": status.as_u16(),
            "detail": detail,
        }),
    )
}

fn oauth_error(status: StatusCode, title: &str, detail: &str, hint: Option<&str>) -> Reply {
    let mut body = json!({
        "title": title,
        "type": OAUTH_PROBLEM,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(hint) = hint {
        body["hint"] = json!(hint);
    }
    Reply::problem(status, body)
}

fn verr(code: &str, path: &str, detail: &str) -> Value {
    json!({ "code": code, "path": path, "detail": detail })
}

/// 400 with `validation-errors`, one entry per refused element of the batch.
fn validation(errors: Vec<Value>) -> Reply {
    Reply::problem(
        StatusCode::BAD_REQUEST,
        json!({
            "validation-errors": errors,
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Request validation failed",
        }),
    )
}

fn push_errors(all: &mut Vec<Value>, item: &Value, index: usize, errors: Vec<Value>) {
    if !errors.is_empty() {
        all.push(json!({ "request_id": request_id(item, index), "errors": errors }));
    }
}

/// The client's `request_id`, or the element's index, as the API echoes it.
fn request_id(item: &Value, index: usize) -> String {
    match item.get("request_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => index.to_string(),
    }
}

/// The elements of a batch body: an array of 1 to 250 objects.
fn batch_items(body: &Value) -> Result<Vec<Value>, Reply> {
    match body.as_array() {
        Some(items) if items.is_empty() => Err(problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Empty request",
        )),
        Some(items) if items.len() > MAX_BATCH => Err(problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("Too many entities in one request: at most {MAX_BATCH}"),
        )),
        Some(items) => Ok(items.clone()),
        None => Err(problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Expected an array of entities",
        )),
    }
}

fn nginx_page(status: u16, reason: &str) -> String {
    format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

// ---------------------------------------------------------------------------------------
// Query strings: PHP-style bracketed keys.

struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let pairs = match raw {
            Some(raw) if !raw.is_empty() => reqwest::Url::parse(&format!("http://q/?{raw}"))
                .map(|url| {
                    url.query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Query { pairs }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key=1`, `key=1,2`, `key[]=1`, `key[0]=1`.
    fn ints(&self, key: &str) -> Vec<i64> {
        let indexed = format!("{key}[");
        self.pairs
            .iter()
            .filter(|(k, _)| {
                k == key
                    || k.strip_prefix(&indexed)
                        .and_then(|rest| rest.strip_suffix(']'))
                        .is_some_and(|inner| inner.chars().all(|c| c.is_ascii_digit()))
            })
            .flat_map(|(_, v)| {
                v.split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect::<Vec<i64>>()
            })
            .collect()
    }

    /// `key[from]`/`key[to]` (inclusive), or `key=value` for one moment.
    fn range(&self, key: &str) -> Option<(Option<i64>, Option<i64>)> {
        let from = self
            .get(&format!("{key}[from]"))
            .and_then(|v| v.parse().ok());
        let to = self.get(&format!("{key}[to]")).and_then(|v| v.parse().ok());
        if from.is_some() || to.is_some() {
            return Some((from, to));
        }
        self.get(key)
            .and_then(|v| v.parse().ok())
            .map(|v| (Some(v), Some(v)))
    }

    /// `filter[statuses][i][pipeline_id]` and `…[status_id]` grouped by `i`.
    fn statuses(&self) -> Vec<(Option<i64>, Option<i64>)> {
        let mut groups: BTreeMap<String, (Option<i64>, Option<i64>)> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix("filter[statuses][") else {
                continue;
            };
            let Some((index, field)) = rest.split_once("][") else {
                continue;
            };
            let entry = groups.entry(index.to_owned()).or_default();
            match field.trim_end_matches(']') {
                "pipeline_id" => entry.0 = v.parse().ok(),
                "status_id" => entry.1 = v.parse().ok(),
                _ => {}
            }
        }
        groups.into_values().collect()
    }

    fn with(&self) -> With {
        With::parse(self.get("with").unwrap_or_default())
    }

    fn paging(&self) -> Result<(usize, usize), Reply> {
        let bad = |path: &str, code: &str, detail: &str| {
            validation(vec![
                json!({ "request_id": "0", "errors": [verr(code, path, detail)] }),
            ])
        };
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(0) => {
                    return Err(bad(
                        "limit",
                        "GreaterThan",
                        "This value should be greater than 0.",
                    ));
                }
                Ok(n) if n > MAX_LIMIT => {
                    return Err(bad(
                        "limit",
                        "LessThanOrEqual",
                        "This value should be less than or equal to 250.",
                    ));
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(bad(
                        "limit",
                        "InvalidType",
                        "This value should be of type int.",
                    ));
                }
            },
        };
        let page = match self.get("page") {
            None => 1,
            Some(v) => match v.parse::<usize>() {
                Ok(0) => {
                    return Err(bad(
                        "page",
                        "GreaterThan",
                        "This value should be greater than 0.",
                    ));
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(bad(
                        "page",
                        "InvalidType",
                        "This value should be of type int.",
                    ));
                }
            },
        };
        Ok((page, limit))
    }
}

struct With(Vec<String>);

impl With {
    fn parse(raw: &str) -> With {
        With(
            raw.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|w| w == name)
    }
}

/// The query string with `page` replaced, for `_links`.
fn with_page(raw_query: Option<&str>, page: usize) -> String {
    let mut parts: Vec<String> = raw_query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("page={page}"));
    parts.join("&")
}

fn in_range(value: Option<i64>, range: Option<(Option<i64>, Option<i64>)>) -> bool {
    match range {
        None => true,
        Some((from, to)) => {
            value.is_some_and(|v| from.is_none_or(|f| v >= f) && to.is_none_or(|t| v <= t))
        }
    }
}

/// `order[field]=asc|desc`; without it, by id ascending (assumed).
fn sort_by_order<T>(q: &Query, items: &mut [&T], key: impl Fn(&T, &str) -> Option<i64>) {
    let order = q.pairs.iter().find_map(|(k, v)| {
        let field = k.strip_prefix("order[")?.strip_suffix(']')?;
        Some((field.to_owned(), v.eq_ignore_ascii_case("desc")))
    });
    if let Some((field, desc)) = order
        && items
            .first()
            .is_some_and(|first| key(first, &field).is_some())
    {
        items.sort_by_key(|item| key(item, &field).unwrap_or_default());
        if desc {
            items.reverse();
        }
    }
}

/// `query=`: a substring of the name or of any field value; digits alone match a phone
/// whatever its formatting.
fn matches_search(query: &str, name: &str, fields: &[Value]) -> bool {
    let needle = query.trim().to_lowercase();
    if needle.is_empty() {
        return true;
    }
    let digits: String = needle.chars().filter(char::is_ascii_digit).collect();
    let phone_like = !digits.is_empty()
        && needle
            .chars()
            .all(|c| c.is_ascii_digit() || "+-() ".contains(c));
    let hit = |text: &str| {
        let text_lower = text.to_lowercase();
        if text_lower.contains(&needle) {
            return true;
        }
        if phone_like {
            let text_digits: String = text.chars().filter(char::is_ascii_digit).collect();
            let tail = |s: &str| s.chars().rev().take(10).collect::<String>();
            return !text_digits.is_empty() && tail(&text_digits) == tail(&digits);
        }
        false
    };
    hit(name)
        || fields.iter().any(|f| {
            f.get("values").and_then(Value::as_array).is_some_and(|vs| {
                vs.iter()
                    .any(|v| v.get("value").and_then(Value::as_str).is_some_and(hit))
            })
        })
}

// ---------------------------------------------------------------------------------------
// Custom fields.

fn cf_read(def: &FieldDef, values: Vec<Value>) -> Value {
    json!({
        "field_id": def.id,
        "field_name": def.name,
        "field_code": def.code,
        "field_type": def.kind,
        "values": values,
    })
}

fn enum_by_code(def: &FieldDef, code: &str) -> (i64, &'static str) {
    def.enums
        .iter()
        .find_map(|(id, _, c)| c.filter(|c| *c == code).map(|c| (*id, c)))
        .expect("seeded enum")
}

/// Writes `input` (the API's write form) over `current` (the read form): fields named in
/// the input are replaced, `values: null` or `[]` clears a field, the others stay.
fn apply_custom_fields(
    defs: &[FieldDef],
    current: &[Value],
    input: &Value,
    errors: &mut Vec<Value>,
) -> Vec<Value> {
    let Some(items) = input.as_array() else {
        if input.is_null() {
            return current.to_vec();
        }
        errors.push(verr(
            "InvalidType",
            "custom_fields_values",
            "This value should be of type array.",
        ));
        return current.to_vec();
    };
    let mut result = current.to_vec();
    for (i, item) in items.iter().enumerate() {
        let path = format!("custom_fields_values.{i}");
        let def = item
            .get("field_id")
            .and_then(Value::as_i64)
            .and_then(|id| defs.iter().find(|d| d.id == id))
            .or_else(|| {
                item.get("field_code")
                    .and_then(Value::as_str)
                    .and_then(|code| defs.iter().find(|d| d.code == Some(code)))
            });
        let Some(def) = def else {
            errors.push(verr(
                "NotSupportedChoice",
                &format!("{path}.field_id"),
                "The value you selected is not a valid choice.",
            ));
            continue;
        };
        result.retain(|f| f.get("field_id").and_then(Value::as_i64) != Some(def.id));
        let values = match item.get("values") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(values)) if values.is_empty() => continue,
            Some(Value::Array(values)) => values,
            Some(_) => {
                errors.push(verr(
                    "InvalidType",
                    &format!("{path}.values"),
                    "This value should be of type array.",
                ));
                continue;
            }
        };
        let mut out = Vec::new();
        for (j, value) in values.iter().enumerate() {
            let vpath = format!("{path}.values.{j}");
            match normalize_value(def, value) {
                Ok(v) => out.push(v),
                Err((code, sub, detail)) => {
                    errors.push(verr(code, &format!("{vpath}.{sub}"), detail))
                }
            }
        }
        if def.kind == "select" && out.len() > 1 {
            errors.push(verr(
                "Count",
                &format!("{path}.values"),
                "This collection should contain 1 element or less.",
            ));
        }
        result.push(cf_read(def, out));
    }
    result
}

type ValueError = (&'static str, &'static str, &'static str);

/// One value as the API stores it. Numbers come back as strings (assumed from the PHP
/// backend; clients should take both).
fn normalize_value(def: &FieldDef, value: &Value) -> Result<Value, ValueError> {
    let not_valid = (
        "NotSupportedChoice",
        "enum_id",
        "The value you selected is not a valid choice.",
    );
    let raw = value.get("value");
    match def.kind {
        "select" => {
            let by_id = value
                .get("enum_id")
                .and_then(Value::as_i64)
                .and_then(|id| def.enums.iter().find(|(e, _, _)| *e == id));
            let by_value = || {
                raw.and_then(Value::as_str)
                    .and_then(|v| def.enums.iter().find(|(_, text, _)| text == v))
            };
            match by_id.or_else(by_value) {
                Some((id, text, code)) => {
                    Ok(json!({ "value": text, "enum_id": id, "enum_code": code }))
                }
                None => Err(not_valid),
            }
        }
        "multitext" => {
            let Some(text) = raw.and_then(Value::as_str).filter(|s| !s.is_empty()) else {
                return Err(("NotBlank", "value", "This value should not be blank."));
            };
            let by_id = value
                .get("enum_id")
                .and_then(Value::as_i64)
                .and_then(|id| def.enums.iter().find(|(e, _, _)| *e == id));
            let by_code = value
                .get("enum_code")
                .and_then(Value::as_str)
                .and_then(|c| def.enums.iter().find(|(_, _, code)| *code == Some(c)));
            let chosen = if value.get("enum_id").is_some() || value.get("enum_code").is_some() {
                by_id.or(by_code).ok_or(not_valid)?
            } else {
                def.enums.first().ok_or(not_valid)?
            };
            Ok(json!({ "value": text, "enum_id": chosen.0, "enum_code": chosen.2 }))
        }
        // A date is kept and read back as Unix seconds, and written as seconds or as text
        // (amocrm/amocrm-api-php, DateCustomFieldValueModel::setValue takes a number or
        // runs strtotime; DateTimeCustomFieldValueModel::toApi sends "Y-m-d H:i:s").
        // Assumed: the text is taken in UTC, or with the offset RFC 3339 gives.
        "date" | "date_time" => {
            let secs = match raw {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse::<i64>().ok().or_else(|| {
                    chrono::DateTime::parse_from_rfc3339(s.trim())
                        .map(|t| t.timestamp())
                        .ok()
                        .or_else(|| {
                            chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
                                .map(|t| t.and_utc().timestamp())
                                .ok()
                        })
                }),
                _ => None,
            };
            match secs {
                Some(secs) => Ok(json!({ "value": secs })),
                None => Err(("InvalidType", "value", "This value should be of type date.")),
            }
        }
        "numeric" => {
            let text = match raw {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => s.trim().to_owned(),
                _ => {
                    return Err((
                        "InvalidType",
                        "value",
                        "This value should be of type numeric.",
                    ));
                }
            };
            Ok(json!({ "value": text }))
        }
        _ => match raw {
            Some(Value::String(s)) => Ok(json!({ "value": s })),
            Some(Value::Number(n)) => Ok(json!({ "value": n.to_string() })),
            _ => Err((
                "InvalidType",
                "value",
                "This value should be of type string.",
            )),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Base64url without padding, for the JWT-shaped tokens.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
