//! The amoCRM REST API v4 behind the `Crm` trait.
//!
//! Shapes from the official API v4 reference (amocrm.ru/developers/content/crm_platform) and
//! the official PHP client (amocrm/amocrm-api-php): `_embedded` lists, `custom_fields_values`,
//! embedded contacts that carry only `{id, is_main}`, 204 for an empty list, tasks created as
//! an array, notes under `/{entity}/{id}/notes`. The products of a lead are its links to
//! catalog elements (`GET /api/v4/leads/{id}/links`, `to_entity_type = catalog_elements`
//! with `metadata.quantity` and `metadata.catalog_id`), read from their catalogs
//! (`GET /api/v4/catalogs/{catalog_id}/elements?filter[id][]=…`, the price in the field
//! coded `PRICE`): crm_platform/entity-links-api and crm_platform/catalogs-api.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::oauth::{Credentials, Tokens};
use crate::adapters::crm::fields::{AccountField, FieldRef, ResolvedFields};
use crate::adapters::crm::http::{Limiter, Retries, retry_after};
use crate::adapters::crm::{Client, Crm, CrmError, LeadFilter, merged};
use crate::adapters::store::Store;
use crate::domain::lead::{Company, Contact, FieldValue, Fields, Lead, LeadUpdate};
use crate::domain::manager::Manager;
use crate::domain::product::Product;
use crate::domain::rate::Rate;
use crate::domain::task::{EntityKind, EntityRef, Named, NewTask, Stage, Task, TaskKind};

/// amoCRM's limit: 7 requests a second per integration. The robot keeps 2 % under it, so
/// that the jitter of the network never lets eight land within one second.
pub const RATE: Rate = Rate {
    per_second: 7.0 / 1.02,
    burst: 1,
};

/// The largest page amoCRM serves.
const PAGE: usize = 250;
/// The most leads one `PATCH /api/v4/leads` takes.
const BATCH: usize = 250;

/// Our names of custom fields, per kind of record, as the config maps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldMapping {
    /// Lead fields.
    pub leads: BTreeMap<String, FieldRef>,
    /// Contact fields.
    pub contacts: BTreeMap<String, FieldRef>,
    /// Company fields.
    pub companies: BTreeMap<String, FieldRef>,
}

#[derive(Debug, Default)]
struct Resolved {
    leads: ResolvedFields,
    contacts: ResolvedFields,
    companies: ResolvedFields,
}

/// An amoCRM account.
#[derive(Debug)]
pub struct AmoCrm {
    http: reqwest::Client,
    base: String,
    tokens: Tokens,
    limiter: Limiter,
    retries: Retries,
    mapping: FieldMapping,
    resolved: OnceCell<Resolved>,
}

fn entity_path(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Lead => "leads",
        EntityKind::Contact => "contacts",
        EntityKind::Company => "companies",
    }
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn embedded<'a>(v: &'a Value, list: &str) -> &'a [Value] {
    v.pointer(&format!("/_embedded/{list}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The first value of a catalog element's field, found by its code or by its name.
fn element_field<'a>(element: &'a Value, code: &str, names: &[&str]) -> Option<&'a Value> {
    element
        .get("custom_fields_values")?
        .as_array()?
        .iter()
        .find(|f| {
            f.get("field_code").and_then(Value::as_str) == Some(code)
                || f.get("field_name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.iter().any(|want| n.eq_ignore_ascii_case(want)))
        })?
        .pointer("/values/0/value")
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    }
}

/// The names of a lead's `_embedded.tags`.
fn tag_names(lead: &Value) -> Vec<String> {
    embedded(lead, "tags")
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The CRM's own explanation of an error (problem+json `title`/`detail`, validation errors).
fn problem(text: &str) -> String {
    let short: String = text.chars().take(500).collect();
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let mut parts: Vec<String> = ["title", "detail"]
                .iter()
                .filter_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
                .collect();
            if let Some(errors) = v.get("validation-errors") {
                parts.push(errors.to_string());
            }
            if parts.is_empty() {
                short
            } else {
                parts.join(": ")
            }
        }
        Err(_) => short,
    }
}

impl AmoCrm {
    /// A client of the account at `base` (`https://robotdemo.amocrm.ru`); its rate limit is
    /// kept in `store`, shared with every process on it.
    pub fn new(
        base: &str,
        credentials: Credentials,
        store: Store,
        mapping: FieldMapping,
    ) -> AmoCrm {
        let base = base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sales-robot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS");
        let limiter = Limiter::new(store.clone(), format!("amocrm:{base}"), RATE);
        let tokens = Tokens::new(credentials, http.clone(), &base, store, limiter.clone());
        AmoCrm {
            http,
            base,
            tokens,
            limiter,
            retries: Retries::default(),
            mapping,
            resolved: OnceCell::new(),
        }
    }

    /// Another rate limit than amoCRM's default (a plan with another limit).
    pub fn with_rate(mut self, rate: Rate) -> AmoCrm {
        self.limiter = Limiter::new(
            self.limiter.store().clone(),
            self.limiter.bucket().to_owned(),
            rate,
        );
        self.tokens = self.tokens.with_limiter(self.limiter.clone());
        self
    }

    /// Retries with other waits (tests make them short).
    pub fn with_retries(mut self, retries: Retries) -> AmoCrm {
        self.retries = retries;
        self
    }

    /// The token keeper (for `auth amocrm --code`).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// One API call: a turn under the rate limit, the bearer token, retries on 429, 5xx and
    /// network errors, one token renewal on 401. `None` is amoCRM's 204 (nothing there).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CrmError> {
        let mut renewed = false;
        let mut last = String::new();
        for attempt in 1..=self.retries.attempts {
            self.limiter.turn().await?;
            let token = self.tokens.access().await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token.expose_secret())
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let wait = match request.send().await {
                Err(e) => {
                    last = format!("{method} {path}: {e}");
                    self.retries.backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    match status.as_u16() {
                        204 => return Ok(None),
                        200..=299 => {
                            if text.trim().is_empty() {
                                return Ok(None);
                            }
                            return serde_json::from_str(&text).map(Some).map_err(|e| {
                                CrmError::Unexpected(format!("{method} {path}: {e}"))
                            });
                        }
                        401 if !renewed => {
                            renewed = true;
                            self.tokens.renew(&token).await?;
                            continue;
                        }
                        401 => {
                            return Err(CrmError::Unauthorized(format!(
                                "{method} {path}: {}",
                                problem(&text)
                            )));
                        }
                        429 => {
                            last = format!("{method} {path}: 429 {}", problem(&text));
                            retry_after(&headers).unwrap_or_else(|| self.retries.backoff(attempt))
                        }
                        // 403 after too many 429s: the account is blocked for a while.
                        403 | 500..=599 => {
                            last = format!("{method} {path}: {status} {}", problem(&text));
                            self.retries.backoff(attempt)
                        }
                        404 => return Ok(None),
                        _ => {
                            return Err(CrmError::Rejected(format!(
                                "{method} {path}: {status} {}",
                                problem(&text)
                            )));
                        }
                    }
                }
            };
            if attempt < self.retries.attempts {
                tracing::warn!(error = %last, retry_in = ?wait, "amoCRM call failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(CrmError::Unavailable(last))
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Option<Value>, CrmError> {
        self.call(Method::GET, path, query, None).await
    }

    /// Every page of a list, to the end (a 204 or a short page ends it).
    async fn all_pages(
        &self,
        path: &str,
        list: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Value>, CrmError> {
        let mut items = Vec::new();
        for page in 1.. {
            let mut q = query.to_vec();
            q.push(("page".into(), page.to_string()));
            q.push(("limit".into(), PAGE.to_string()));
            let Some(body) = self.get(path, &q).await? else {
                break;
            };
            let batch = embedded(&body, list);
            items.extend_from_slice(batch);
            if batch.len() < PAGE || body.pointer("/_links/next").is_none() {
                break;
            }
        }
        Ok(items)
    }

    async fn resolved(&self) -> Result<&Resolved, CrmError> {
        self.resolved
            .get_or_try_init(|| async {
                let (resolved, missing) = self.resolve_fields().await?;
                if !missing.is_empty() {
                    tracing::warn!(missing = ?missing, "custom fields of the config that the amoCRM account does not have are skipped");
                }
                Ok(resolved)
            })
            .await
    }

    async fn account_fields(&self, entity: &str) -> Result<Vec<AccountField>, CrmError> {
        let fields = self
            .all_pages(
                &format!("/api/v4/{entity}/custom_fields"),
                "custom_fields",
                &[],
            )
            .await?;
        Ok(fields
            .iter()
            .filter_map(|f| {
                Some(AccountField {
                    id: id_of(f.get("id")?)?,
                    name: f.get("name")?.as_str()?.to_owned(),
                    numeric: f.get("type").and_then(Value::as_str) == Some("numeric"),
                })
            })
            .collect())
    }

    async fn resolve_fields(&self) -> Result<(Resolved, Vec<String>), CrmError> {
        let mut missing = Vec::new();
        let mut resolve = async |wanted: &BTreeMap<String, FieldRef>, entity: &str, what: &str| {
            if wanted.is_empty() {
                return Ok::<_, CrmError>(ResolvedFields::default());
            }
            let (resolved, absent) =
                ResolvedFields::resolve(wanted, &self.account_fields(entity).await?);
            missing.extend(absent.into_iter().map(|m| format!("{what} {m}")));
            Ok(resolved)
        };
        let leads = resolve(&self.mapping.leads, "leads", "lead field").await?;
        let contacts = resolve(&self.mapping.contacts, "contacts", "contact field").await?;
        let companies = resolve(&self.mapping.companies, "companies", "company field").await?;
        Ok((
            Resolved {
                leads,
                contacts,
                companies,
            },
            missing,
        ))
    }

    /// What of the config the account lacks: custom fields, for `crm check`.
    pub async fn check_fields(&self) -> Result<Vec<String>, CrmError> {
        Ok(self.resolve_fields().await?.1)
    }

    fn read_fields(v: &Value, resolved: &ResolvedFields) -> Fields {
        let text = |x: &Value| {
            x.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| x.to_string())
        };
        let mut fields = Fields::new();
        for f in v
            .get("custom_fields_values")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let Some(id) = f.get("field_id").and_then(id_of) else {
                continue;
            };
            let (Some(ours), Some(field)) = (resolved.ours(&id), resolved.field_by_id(&id)) else {
                continue;
            };
            let values: Vec<&Value> = f
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(|x| x.get("value")).collect())
                .unwrap_or_default();
            let value = match values.as_slice() {
                [] => continue,
                [Value::Number(n)] => FieldValue::Number(n.as_f64().unwrap_or_default()),
                // Numeric fields may come back as strings ("87"): read them as numbers.
                [one] if field.numeric => match FieldValue::Text(text(one)).as_number() {
                    Some(n) => FieldValue::Number(n),
                    None => FieldValue::Text(text(one)),
                },
                [one] => FieldValue::Text(text(one)),
                many => FieldValue::Many(many.iter().map(|x| text(x)).collect()),
            };
            fields.insert(ours.to_owned(), value);
        }
        fields
    }

    fn write_fields(fields: &Fields, resolved: &ResolvedFields) -> Vec<Value> {
        fields
            .iter()
            .filter_map(|(ours, value)| {
                let Some(field) = resolved.field(ours) else {
                    tracing::warn!(field = %ours, "not mapped to an amoCRM field: not written");
                    return None;
                };
                let id: Value = field
                    .id
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(field.id.clone()));
                let values: Vec<Value> = match value {
                    FieldValue::Many(items) => items.iter().map(|i| json!({"value": i})).collect(),
                    v if field.numeric => vec![json!({"value": v.as_number().unwrap_or_default()})],
                    v => vec![json!({"value": v.as_text()})],
                };
                Some(json!({"field_id": id, "values": values}))
            })
            .collect()
    }

    fn multitext(v: &Value, code: &str) -> Vec<String> {
        v.get("custom_fields_values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| f.get("field_code").and_then(Value::as_str) == Some(code))
            .flat_map(|f| {
                f.get("values")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    fn read_contact(v: &Value, resolved: &ResolvedFields) -> Option<Contact> {
        Some(Contact {
            id: id_of(v.get("id")?)?,
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            first_name: v
                .get("first_name")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            phones: Self::multitext(v, "PHONE"),
            emails: Self::multitext(v, "EMAIL"),
            is_main: false,
            fields: Self::read_fields(v, resolved),
        })
    }

    fn read_company(v: &Value, resolved: &ResolvedFields) -> Option<Company> {
        Some(Company {
            id: id_of(v.get("id")?)?,
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            responsible_user_id: v.get("responsible_user_id").and_then(id_of),
            fields: Self::read_fields(v, resolved),
            created_at: v
                .get("created_at")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            updated_at: v
                .get("updated_at")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            updated_by: v.get("updated_by").and_then(id_of).filter(|u| u != "0"),
        })
    }

    fn read_lead(v: &Value, resolved: &ResolvedFields) -> Option<Lead> {
        let int = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or_default();
        Some(Lead {
            id: id_of(v.get("id")?)?,
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            budget: v.get("price").and_then(Value::as_f64).filter(|p| *p > 0.0),
            status_id: v.get("status_id").and_then(id_of).unwrap_or_default(),
            pipeline_id: v.get("pipeline_id").and_then(id_of).unwrap_or_default(),
            responsible_user_id: v.get("responsible_user_id").and_then(id_of),
            tags: tag_names(v),
            fields: Self::read_fields(v, resolved),
            loss_reason: embedded(v, "loss_reason")
                .first()
                .and_then(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
                .or_else(|| v.get("loss_reason_id").and_then(id_of)),
            contacts: Vec::new(),
            company: None,
            created_at: int("created_at"),
            updated_at: int("updated_at"),
            updated_by: v.get("updated_by").and_then(id_of),
        })
    }

    /// One lead's changes as `PATCH /api/v4/leads/{id}` takes them, and as each element of
    /// `PATCH /api/v4/leads` does with its `id`. `current_tags` are the lead's tags now:
    /// `_embedded.tags` replaces them, so added tags go with all the others.
    fn lead_body(
        update: &LeadUpdate,
        resolved: &ResolvedFields,
        current_tags: &[String],
    ) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        if let Some(v) = &update.responsible_user_id {
            body.insert("responsible_user_id".into(), numeric(v));
        }
        if let Some(v) = &update.status_id {
            body.insert("status_id".into(), numeric(v));
        }
        if let Some(v) = &update.pipeline_id {
            body.insert("pipeline_id".into(), numeric(v));
        }
        if let Some(v) = update.budget {
            body.insert("price".into(), json!(v.round() as i64));
        }
        if let Some(v) = &update.loss_reason_id {
            body.insert("loss_reason_id".into(), numeric(v));
        }
        let fields = Self::write_fields(&update.fields, resolved);
        if !fields.is_empty() {
            body.insert("custom_fields_values".into(), Value::from(fields));
        }
        if update.changes_tags() {
            let tags = update.tags_after(current_tags);
            body.insert(
                "_embedded".into(),
                json!({"tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>()}),
            );
        }
        body
    }

    /// Writes mapped fields of a record; nothing to write sends nothing.
    async fn patch_fields(
        &self,
        path: &str,
        fields: &Fields,
        resolved: &ResolvedFields,
    ) -> Result<(), CrmError> {
        let values = Self::write_fields(fields, resolved);
        if values.is_empty() {
            return Ok(());
        }
        self.patch(path, json!({"custom_fields_values": values}))
            .await
    }

    async fn patch(&self, path: &str, body: Value) -> Result<(), CrmError> {
        self.call(Method::PATCH, path, &[], Some(&body))
            .await
            .map(|_| ())
    }

    /// The leads of `ids` as `GET /api/v4/leads?filter[id][]=…` lists them, one request per
    /// 250 ids: a page of 250 holds all of them, so no second page is asked for. Unknown and
    /// deleted leads are simply not in the answer.
    async fn leads_by_id(&self, ids: &[String]) -> Result<Vec<Value>, CrmError> {
        let mut leads = Vec::new();
        for chunk in ids.chunks(PAGE) {
            let mut query: Vec<(String, String)> = chunk
                .iter()
                .map(|id| ("filter[id][]".to_owned(), id.clone()))
                .collect();
            query.push(("limit".into(), PAGE.to_string()));
            let found = self
                .get("/api/v4/leads", &query)
                .await?
                .unwrap_or(Value::Null);
            leads.extend_from_slice(embedded(&found, "leads"));
        }
        Ok(leads)
    }
}

fn task_type(kind: TaskKind) -> u64 {
    // amoCRM's built-in task types: 1 call, 2 meeting, 3 letter.
    match kind {
        TaskKind::Call => 1,
        TaskKind::Meeting => 2,
        TaskKind::Letter => 3,
        TaskKind::Other => 1,
    }
}

fn task_kind(code: Option<i64>) -> TaskKind {
    match code {
        Some(1) => TaskKind::Call,
        Some(2) => TaskKind::Meeting,
        Some(3) => TaskKind::Letter,
        _ => TaskKind::Other,
    }
}

/// A task as `/api/v4/tasks` shows it.
fn read_task(t: &Value) -> Option<Task> {
    let entity = match (
        t.get("entity_type").and_then(Value::as_str),
        t.get("entity_id").and_then(id_of),
    ) {
        (Some("leads"), Some(id)) => Some(EntityRef {
            kind: EntityKind::Lead,
            id,
        }),
        (Some("contacts"), Some(id)) => Some(EntityRef {
            kind: EntityKind::Contact,
            id,
        }),
        (Some("companies"), Some(id)) => Some(EntityRef {
            kind: EntityKind::Company,
            id,
        }),
        _ => None,
    };
    let int = |k: &str| t.get(k).and_then(Value::as_i64).unwrap_or_default();
    Some(Task {
        id: id_of(t.get("id")?)?,
        kind: task_kind(t.get("task_type_id").and_then(Value::as_i64)),
        text: t
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        deadline: int("complete_till"),
        responsible_user_id: t
            .get("responsible_user_id")
            .and_then(id_of)
            .unwrap_or_default(),
        entity,
        completed: t
            .get("is_completed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created_at: int("created_at"),
        updated_at: int("updated_at"),
        updated_by: t.get("updated_by").and_then(id_of).filter(|u| u != "0"),
    })
}

fn numeric(id: &str) -> Value {
    id.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}

#[async_trait]
impl Crm for AmoCrm {
    async fn lead(&self, id: &str) -> Result<Option<Lead>, CrmError> {
        let resolved = self.resolved().await?;
        let with = [(
            "with".to_owned(),
            "contacts,companies,loss_reason".to_owned(),
        )];
        let Some(body) = self.get(&format!("/api/v4/leads/{id}"), &with).await? else {
            return Ok(None);
        };
        let Some(mut lead) = Self::read_lead(&body, &resolved.leads) else {
            return Err(CrmError::Unexpected(format!(
                "lead {id} has no id in amoCRM's answer"
            )));
        };
        // Embedded contacts carry only their ids: one more read fetches them all.
        let linked: Vec<(String, bool)> = embedded(&body, "contacts")
            .iter()
            .filter_map(|c| {
                Some((
                    id_of(c.get("id")?)?,
                    c.get("is_main").and_then(Value::as_bool).unwrap_or(false),
                ))
            })
            .collect();
        if !linked.is_empty() {
            let query: Vec<(String, String)> = linked
                .iter()
                .map(|(id, _)| ("filter[id][]".to_owned(), id.clone()))
                .collect();
            let found = self
                .get("/api/v4/contacts", &query)
                .await?
                .unwrap_or(Value::Null);
            let mut contacts: Vec<Contact> = embedded(&found, "contacts")
                .iter()
                .filter_map(|c| Self::read_contact(c, &resolved.contacts))
                .collect();
            for c in &mut contacts {
                c.is_main = linked.iter().any(|(id, main)| *id == c.id && *main);
            }
            contacts.sort_by_key(|c| !c.is_main);
            lead.contacts = contacts;
        }
        if let Some(company_id) = embedded(&body, "companies")
            .first()
            .and_then(|c| c.get("id"))
            .and_then(id_of)
        {
            lead.company = self.company(&company_id).await?;
        }
        Ok(Some(lead))
    }

    async fn lead_products(&self, id: &str) -> Result<Vec<Product>, CrmError> {
        let Some(body) = self.get(&format!("/api/v4/leads/{id}/links"), &[]).await? else {
            return Ok(Vec::new());
        };
        // (element, catalog, quantity) in the order of the links.
        let linked: Vec<(String, String, Option<f64>)> = embedded(&body, "links")
            .iter()
            .filter(|l| l.get("to_entity_type").and_then(Value::as_str) == Some("catalog_elements"))
            .filter_map(|l| {
                Some((
                    id_of(l.get("to_entity_id")?)?,
                    id_of(l.pointer("/metadata/catalog_id")?)?,
                    l.pointer("/metadata/quantity").and_then(number_of),
                ))
            })
            .collect();
        let mut elements: HashMap<String, Value> = HashMap::new();
        let catalogs: BTreeMap<&str, Vec<&str>> =
            linked
                .iter()
                .fold(BTreeMap::new(), |mut by, (element, catalog, _)| {
                    by.entry(catalog.as_str())
                        .or_default()
                        .push(element.as_str());
                    by
                });
        for (catalog, ids) in catalogs {
            let query: Vec<(String, String)> = ids
                .iter()
                .map(|id| ("filter[id][]".to_owned(), (*id).to_owned()))
                .collect();
            let found = self
                .get(&format!("/api/v4/catalogs/{catalog}/elements"), &query)
                .await?
                .unwrap_or(Value::Null);
            for element in embedded(&found, "elements") {
                if let Some(id) = element.get("id").and_then(id_of) {
                    elements.insert(id, element.clone());
                }
            }
        }
        Ok(linked
            .iter()
            .filter_map(|(id, _, quantity)| {
                let element = elements.get(id)?;
                Some(Product {
                    name: element.get("name")?.as_str()?.to_owned(),
                    brand: element_field(element, "BRAND", &["Бренд", "Производитель"])
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    quantity: *quantity,
                    price: element_field(element, "PRICE", &["Цена"]).and_then(number_of),
                })
            })
            .collect())
    }

    async fn update_lead(&self, id: &str, update: &LeadUpdate) -> Result<(), CrmError> {
        if update.is_empty() {
            return Ok(());
        }
        let resolved = self.resolved().await?;
        let current = if !update.changes_tags() {
            Vec::new()
        } else if let Some(seen) = &update.tags_seen {
            seen.clone()
        } else {
            let lead = self
                .get(&format!("/api/v4/leads/{id}"), &[])
                .await?
                .unwrap_or(Value::Null);
            tag_names(&lead)
        };
        let body = Self::lead_body(update, &resolved.leads, &current);
        self.patch(&format!("/api/v4/leads/{id}"), Value::Object(body))
            .await
    }

    async fn update_leads(&self, updates: &[(String, LeadUpdate)]) -> Result<(), CrmError> {
        let updates = merged(updates);
        if updates.is_empty() {
            return Ok(());
        }
        let resolved = self.resolved().await?;
        let mut refused = Vec::new();
        for chunk in updates.chunks(BATCH) {
            // The current tags of the chunk's leads whose tags change, in one read.
            let growing: Vec<String> = chunk
                .iter()
                .filter(|(_, u)| u.changes_tags() && u.tags_seen.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            let mut tags: HashMap<String, Vec<String>> = chunk
                .iter()
                .filter_map(|(id, u)| Some((id.clone(), u.tags_seen.clone()?)))
                .collect();
            if !growing.is_empty() {
                for lead in self.leads_by_id(&growing).await? {
                    if let Some(id) = lead.get("id").and_then(id_of) {
                        tags.insert(id, tag_names(&lead));
                    }
                }
            }
            let body: Vec<Value> = chunk
                .iter()
                .map(|(id, update)| {
                    let current = tags.get(id).map(Vec::as_slice).unwrap_or_default();
                    let mut lead = Self::lead_body(update, &resolved.leads, current);
                    lead.insert("id".into(), numeric(id));
                    // Echoed in `validation-errors`, so that a refusal names the lead.
                    lead.insert("request_id".into(), Value::from(id.as_str()));
                    Value::Object(lead)
                })
                .collect();
            // amoCRM refuses a request whole: the other chunks still go, and the refusals
            // are reported together at the end.
            match self
                .call(
                    Method::PATCH,
                    "/api/v4/leads",
                    &[],
                    Some(&Value::from(body)),
                )
                .await
            {
                Ok(_) => {}
                Err(CrmError::Rejected(why)) => refused.push(format!(
                    "{why} (each refused lead's id is its request_id; none of the {} leads \
                     of this request written)",
                    chunk.len()
                )),
                Err(e) => return Err(e),
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(CrmError::Rejected(refused.join("; ")))
        }
    }

    async fn leads(&self, filter: &LeadFilter) -> Result<Vec<Lead>, CrmError> {
        let resolved = self.resolved().await?;
        let mut q: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push((k.to_owned(), v.clone()));
            }
        };
        add(
            "filter[created_at][from]",
            &filter.created_from.map(|t| t.to_string()),
        );
        add(
            "filter[created_at][to]",
            &filter.created_to.map(|t| t.to_string()),
        );
        add(
            "filter[updated_at][from]",
            &filter.updated_from.map(|t| t.to_string()),
        );
        add("filter[responsible_user_id]", &filter.responsible_user_id);
        if filter.pipeline_id.is_some() || filter.status_id.is_some() {
            add("filter[statuses][0][pipeline_id]", &filter.pipeline_id);
            add("filter[statuses][0][status_id]", &filter.status_id);
        }
        let items = self.all_pages("/api/v4/leads", "leads", &q).await?;
        Ok(items
            .iter()
            .filter_map(|v| Self::read_lead(v, &resolved.leads))
            .collect())
    }

    async fn client_leads(&self, client: &Client) -> Result<Vec<Lead>, CrmError> {
        let id = client.checked_id()?;
        let entity = match client {
            Client::Company(_) => "companies",
            Client::Contact(_) => "contacts",
        };
        // `with=leads` embeds the linked leads' ids, nothing more, and the docs give that list
        // no page or cap (developers.kommo.com/reference/get-company and get-contact,
        // `_embedded[leads]`). Their stages and budgets come from the leads listing by id, as
        // integrators do it (amocrm/amocrm-api-php#419). A missing record answers 204.
        let with = [("with".to_owned(), "leads".to_owned())];
        let Some(record) = self.get(&format!("/api/v4/{entity}/{id}"), &with).await? else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let ids: Vec<String> = embedded(&record, "leads")
            .iter()
            .filter_map(|lead| lead.get("id").and_then(id_of))
            .filter(|id| seen.insert(id.clone()))
            .collect();
        // No custom fields: the history needs none, and mapping them costs the account's
        // field lists the first time.
        let none = ResolvedFields::default();
        Ok(self
            .leads_by_id(&ids)
            .await?
            .iter()
            .filter_map(|v| Self::read_lead(v, &none))
            .collect())
    }

    async fn create_task(&self, task: &NewTask) -> Result<String, CrmError> {
        let body = json!([{
            "text": task.text,
            "complete_till": task.deadline,
            "task_type_id": task_type(task.kind),
            "responsible_user_id": numeric(&task.responsible_user_id),
            "entity_id": numeric(&task.entity.id),
            "entity_type": entity_path(task.entity.kind),
        }]);
        let answer = self
            .call(Method::POST, "/api/v4/tasks", &[], Some(&body))
            .await?
            .unwrap_or(Value::Null);
        embedded(&answer, "tasks")
            .first()
            .and_then(|t| t.get("id"))
            .and_then(id_of)
            .ok_or_else(|| {
                CrmError::Unexpected("amoCRM created a task but did not say its id".into())
            })
    }

    async fn complete_task(&self, id: &str, result: &str) -> Result<(), CrmError> {
        self.patch(
            &format!("/api/v4/tasks/{id}"),
            json!({"is_completed": true, "result": {"text": result}}),
        )
        .await
    }

    async fn open_tasks(&self) -> Result<Vec<Task>, CrmError> {
        let items = self
            .all_pages(
                "/api/v4/tasks",
                "tasks",
                &[("filter[is_completed]".into(), "0".into())],
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(read_task)
            .filter(|t| !t.completed)
            .collect())
    }

    async fn tasks_changed(&self, from: i64) -> Result<Vec<Task>, CrmError> {
        // Tasks filter on `updated_at` like the other lists:
        // https://www.amocrm.ru/developers/content/crm_platform/tasks-api
        let items = self
            .all_pages(
                "/api/v4/tasks",
                "tasks",
                &[
                    ("filter[updated_at][from]".into(), from.to_string()),
                    ("order[updated_at]".into(), "asc".into()),
                ],
            )
            .await?;
        Ok(items.iter().filter_map(read_task).collect())
    }

    async fn add_note(&self, entity: &EntityRef, text: &str) -> Result<(), CrmError> {
        let body = json!([{"note_type": "common", "params": {"text": text}}]);
        self.call(
            Method::POST,
            &format!("/api/v4/{}/{}/notes", entity_path(entity.kind), entity.id),
            &[],
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn notes(&self, entity: &EntityRef) -> Result<Vec<String>, CrmError> {
        // GET /api/v4/{entity}/{id}/notes, text notes only (`common`), 250 a page:
        // https://www.amocrm.ru/developers/content/crm_platform/events-and-notes#notes-entity-list
        let items = self
            .all_pages(
                &format!("/api/v4/{}/{}/notes", entity_path(entity.kind), entity.id),
                "notes",
                &[("filter[note_type]".into(), "common".into())],
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|n| n.pointer("/params/text").and_then(Value::as_str))
            .map(str::to_owned)
            .collect())
    }

    async fn company(&self, id: &str) -> Result<Option<Company>, CrmError> {
        let resolved = self.resolved().await?;
        Ok(self
            .get(&format!("/api/v4/companies/{id}"), &[])
            .await?
            .and_then(|v| Self::read_company(&v, &resolved.companies)))
    }

    async fn companies_changed(&self, from: i64) -> Result<Vec<Company>, CrmError> {
        // `filter[updated_at][from]`, as for leads:
        // https://www.amocrm.ru/developers/content/crm_platform/filters-api
        let resolved = self.resolved().await?;
        let items = self
            .all_pages(
                "/api/v4/companies",
                "companies",
                &[
                    ("filter[updated_at][from]".into(), from.to_string()),
                    ("order[updated_at]".into(), "asc".into()),
                ],
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|v| Self::read_company(v, &resolved.companies))
            .collect())
    }

    async fn update_company(&self, id: &str, fields: &Fields) -> Result<(), CrmError> {
        let resolved = self.resolved().await?;
        self.patch_fields(
            &format!("/api/v4/companies/{id}"),
            fields,
            &resolved.companies,
        )
        .await
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, CrmError> {
        let resolved = self.resolved().await?;
        Ok(self
            .get(&format!("/api/v4/contacts/{id}"), &[])
            .await?
            .and_then(|v| Self::read_contact(&v, &resolved.contacts)))
    }

    async fn update_contact(&self, id: &str, fields: &Fields) -> Result<(), CrmError> {
        let resolved = self.resolved().await?;
        self.patch_fields(
            &format!("/api/v4/contacts/{id}"),
            fields,
            &resolved.contacts,
        )
        .await
    }

    async fn managers(&self) -> Result<Vec<Manager>, CrmError> {
        let users = self.all_pages("/api/v4/users", "users", &[]).await?;
        Ok(users
            .iter()
            .filter_map(|u| {
                Some(Manager {
                    id: id_of(u.get("id")?)?,
                    name: u
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    email: u.get("email").and_then(Value::as_str).map(str::to_owned),
                    active: u
                        .pointer("/rights/is_active")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                })
            })
            .collect())
    }

    async fn stages(&self) -> Result<Vec<Stage>, CrmError> {
        let pipelines = self
            .all_pages("/api/v4/leads/pipelines", "pipelines", &[])
            .await?;
        Ok(pipelines
            .iter()
            .flat_map(|p| {
                let pipeline = Named {
                    id: p.get("id").and_then(id_of).unwrap_or_default(),
                    name: p
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                };
                embedded(p, "statuses")
                    .iter()
                    .filter_map(|s| {
                        Some(Stage {
                            id: id_of(s.get("id")?)?,
                            name: s
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            pipeline: pipeline.clone(),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    async fn loss_reasons(&self) -> Result<Vec<Named>, CrmError> {
        let reasons = self
            .all_pages("/api/v4/leads/loss_reasons", "loss_reasons", &[])
            .await?;
        Ok(reasons
            .iter()
            .filter_map(|r| {
                Some(Named {
                    id: id_of(r.get("id")?)?,
                    name: r
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
            })
            .collect())
    }
}
