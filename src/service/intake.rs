//! The webhook routes: authenticate, parse, enqueue durably, answer. Nothing here calls
//! the CRM or decides anything: the CRM wants a fast answer, and a crash after the answer
//! must lose nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::adapters::store::Enqueued;
use crate::adapters::webhook::{Parsed, WebhookError};
use crate::adapters::{amocrm, bitrix24, wazzup};
use crate::domain::event::{Event, EventKind, Source, dedup_key};
use crate::domain::presence::{Presence, PresenceState};
use crate::service::jobs::Jobs;
use crate::service::metrics;
use crate::service::settings::Settings;

/// Shared by the intake routes.
pub struct Intake {
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) settings: Arc<Settings>,
    ignored_seen: Mutex<HashSet<String>>,
}

impl Intake {
    /// Intake over these jobs and settings.
    pub fn new(jobs: Arc<Jobs>, settings: Arc<Settings>) -> Intake {
        Intake {
            jobs,
            settings,
            ignored_seen: Mutex::new(HashSet::new()),
        }
    }
}

/// Why a request is refused; every variant is an answer with a JSON body.
#[derive(Debug)]
enum Refusal {
    NotFound,
    Unauthorized(&'static str),
    Forbidden(String),
    TooLarge(usize),
    BadRequest(WebhookError),
    BadPresence(String),
    Unreadable(String),
    StoreDown(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error, detail) = match self {
            // Says nothing about whether the route or the secret was wrong.
            Refusal::NotFound => (StatusCode::NOT_FOUND, "not_found", String::new()),
            Refusal::Unauthorized(what) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", what.to_owned())
            }
            Refusal::Forbidden(d) => (StatusCode::FORBIDDEN, "wrong_account", d),
            Refusal::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the limit of {limit} bytes"),
            ),
            Refusal::BadRequest(e) => (StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
            Refusal::BadPresence(d) => (StatusCode::BAD_REQUEST, "bad_request", d),
            Refusal::Unreadable(d) => (StatusCode::BAD_REQUEST, "bad_request", d),
            Refusal::StoreDown(d) => {
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "store_unavailable", "detail": format!("the queue is not reachable, retry later: {d}")})),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                return resp;
            }
        };
        (status, Json(json!({"error": error, "detail": detail}))).into_response()
    }
}

/// The answer to an accepted body.
#[derive(serde::Serialize)]
struct Answer {
    accepted: usize,
    duplicates: usize,
    ignored: usize,
}

fn secret_ok(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn body_or_refusal(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Refusal> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge(limit)
        } else {
            Refusal::Unreadable(r.body_text())
        }
    })
}

impl Intake {
    fn check_secret(&self, given: &str) -> Result<(), Refusal> {
        if secret_ok(given, self.settings.hook_secret.expose_secret()) {
            Ok(())
        } else {
            Err(Refusal::NotFound)
        }
    }

    fn note_ignored(&self, source: Source, parsed: &Parsed) {
        for name in &parsed.ignored {
            ::metrics::counter!(metrics::EVENTS_IGNORED, "source" => source.as_str(), "name" => name.clone()).increment(1);
            let first = self
                .ignored_seen
                .lock()
                .map(|mut seen| seen.insert(format!("{source}:{name}")))
                .unwrap_or(false);
            if first {
                tracing::info!(%source, name, "event type not handled by the robot: accepted and counted (logged once)");
            }
        }
    }

    /// Enqueues every event of a body (together: they go in one write); the answer says how
    /// many were new.
    async fn enqueue_all(&self, events: &[Event]) -> Result<(usize, usize), Refusal> {
        let (mut new, mut dup) = (0, 0);
        let outcomes = futures::future::join_all(events.iter().map(|e| self.jobs.enqueue(e))).await;
        for (event, outcome) in events.iter().zip(outcomes) {
            match outcome {
                Ok(Enqueued::New) => {
                    new += 1;
                    ::metrics::counter!(metrics::EVENTS_ENQUEUED, "kind" => event.kind.name())
                        .increment(1);
                }
                Ok(Enqueued::Duplicate) => dup += 1,
                Err(e) => {
                    tracing::error!(error = %e, key = %event.dedup_key, "enqueue failed: answering 503 so that the sender retries");
                    return Err(Refusal::StoreDown(e.to_string()));
                }
            }
        }
        Ok((new, dup))
    }

    async fn take(&self, source: Source, parsed: Parsed) -> Result<Response, Refusal> {
        self.note_ignored(source, &parsed);
        if parsed.is_check {
            return Ok((StatusCode::OK, Json(json!({"ok": true}))).into_response());
        }
        let (new, dup) = self.enqueue_all(&parsed.events).await?;
        let outcome = if new == 0 && dup > 0 {
            "duplicate"
        } else {
            "accepted"
        };
        ::metrics::counter!(metrics::WEBHOOKS, "source" => source.as_str(), "outcome" => outcome)
            .increment(1);
        Ok((
            StatusCode::OK,
            Json(Answer {
                accepted: new,
                duplicates: dup,
                ignored: parsed.ignored.len(),
            }),
        )
            .into_response())
    }

    fn check_amocrm(&self, parsed: &Parsed) -> Result<(), Refusal> {
        let Some(account) = &self.settings.amocrm else {
            return Err(Refusal::NotFound);
        };
        let given = parsed.caller.account.as_deref().unwrap_or_default();
        if !given.eq_ignore_ascii_case(&account.subdomain) {
            return Err(Refusal::Forbidden(format!(
                "account[subdomain] `{given}` is not the configured account"
            )));
        }
        if let (Some(want), Some(got)) = (&account.account_id, &parsed.caller.account_id)
            && want != got
        {
            return Err(Refusal::Forbidden(format!(
                "account[id] `{got}` is not the configured account"
            )));
        }
        Ok(())
    }

    fn check_bitrix24(&self, parsed: &Parsed) -> Result<(), Refusal> {
        let Some(portal) = &self.settings.bitrix24 else {
            return Err(Refusal::NotFound);
        };
        let Some(expected) = &portal.application_token else {
            tracing::warn!(
                "a Bitrix24 event came but ROBOT_BITRIX24_APP_TOKEN is not set: refused"
            );
            return Err(Refusal::Unauthorized("application token is not configured"));
        };
        let given = parsed.caller.token.as_deref().unwrap_or_default();
        if !secret_ok(given, expected.expose_secret()) {
            return Err(Refusal::Unauthorized(
                "auth[application_token] does not match",
            ));
        }
        let domain = parsed.caller.account.as_deref().unwrap_or_default();
        if !domain.eq_ignore_ascii_case(&portal.domain) {
            return Err(Refusal::Forbidden(format!(
                "auth[domain] `{domain}` is not the configured portal"
            )));
        }
        Ok(())
    }
}

fn finish(source: Source, started: Instant, result: Result<Response, Refusal>) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(refusal) => {
            if !matches!(refusal, Refusal::StoreDown(_)) {
                ::metrics::counter!(metrics::WEBHOOKS, "source" => source.as_str(), "outcome" => "rejected").increment(1);
                tracing::info!(%source, reason = %refusal.reason(), "webhook refused");
            }
            refusal.into_response()
        }
    };
    ::metrics::histogram!(metrics::INTAKE_SECONDS, "source" => source.as_str())
        .record(started.elapsed().as_secs_f64());
    response
}

impl Refusal {
    /// Why, in words for the log (never the secret that was tried).
    fn reason(&self) -> String {
        match self {
            Refusal::NotFound => {
                "wrong secret, or the hook of a CRM that is not configured".to_owned()
            }
            Refusal::Unauthorized(what) => (*what).to_owned(),
            Refusal::TooLarge(limit) => format!("body over {limit} bytes"),
            Refusal::BadRequest(e) => e.to_string(),
            Refusal::BadPresence(d)
            | Refusal::Forbidden(d)
            | Refusal::Unreadable(d)
            | Refusal::StoreDown(d) => d.clone(),
        }
    }
}

/// What every webhook route does: the secret, the body, the source's own parsing and checks,
/// then the queue.
async fn hook(
    intake: &Intake,
    source: Source,
    secret: &str,
    body: Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&Intake, &[u8]) -> Result<Parsed, Refusal>,
) -> Response {
    let started = Instant::now();
    let result = async {
        intake.check_secret(secret)?;
        let body = body_or_refusal(body, intake.settings.body_limit)?;
        let parsed = parse(intake, &body)?;
        intake.take(source, parsed).await
    }
    .await;
    finish(source, started, result)
}

/// `POST /hooks/amocrm/{secret}`
pub async fn amocrm_hook(
    State(intake): State<Arc<Intake>>,
    Path(secret): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    hook(&intake, Source::Amocrm, &secret, body, |intake, body| {
        let parsed = amocrm::webhook::parse(body).map_err(Refusal::BadRequest)?;
        intake.check_amocrm(&parsed)?;
        Ok(parsed)
    })
    .await
}

/// `POST /hooks/bitrix24/{secret}`
pub async fn bitrix24_hook(
    State(intake): State<Arc<Intake>>,
    Path(secret): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    hook(&intake, Source::Bitrix24, &secret, body, |intake, body| {
        let parsed = bitrix24::webhook::parse(body).map_err(Refusal::BadRequest)?;
        intake.check_bitrix24(&parsed)?;
        Ok(parsed)
    })
    .await
}

/// `POST /hooks/wazzup/{secret}`
pub async fn wazzup_hook(
    State(intake): State<Arc<Intake>>,
    Path(secret): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    hook(&intake, Source::Wazzup, &secret, body, |intake, body| {
        wazzup::webhook::parse(body, &intake.settings.wazzup_channels).map_err(Refusal::BadRequest)
    })
    .await
}

/// The body of `POST /api/presence`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceReport {
    /// The manager's CRM user id (a number or a string).
    pub manager_id: serde_json::Value,
    /// `online`, `on_call`, `away` or `offline`.
    pub state: PresenceState,
    /// When the state began, RFC 3339.
    pub at: chrono::DateTime<chrono::FixedOffset>,
}

/// Turns a presence report into the stored presence and its event.
pub fn presence_event(report: PresenceReport) -> Result<(Presence, Event), String> {
    let manager_id = match &report.manager_id {
        serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
        serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        other => {
            return Err(format!(
                "manager_id must be the manager's CRM user id, got {other}"
            ));
        }
    };
    let presence = Presence {
        manager_id: manager_id.clone(),
        state: report.state,
        at: report.at,
    };
    let event = Event {
        source: Source::Presence,
        account: "presence".to_owned(),
        dedup_key: dedup_key(
            Source::Presence,
            "presence",
            "presence_changed",
            &manager_id,
            &format!("{}-{}", report.at.timestamp_millis(), report.state.as_str()),
        ),
        entity_id: manager_id,
        crm_entity: None,
        occurred_at: Some(report.at.timestamp()),
        modified_by: None,
        kind: EventKind::PresenceChanged {
            state: report.state,
            at: report.at,
        },
    };
    Ok((presence, event))
}

/// Parses a presence body.
pub fn parse_presence(body: &[u8]) -> Result<(Presence, Event), String> {
    let report: PresenceReport = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a presence report: {e}"))?;
    presence_event(report)
}

/// `POST /api/presence` with `Authorization: Bearer <token>`.
pub async fn presence(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !secret_ok(token.trim(), intake.settings.presence_token.expose_secret()) {
            return Err(Refusal::Unauthorized(
                "a valid `Authorization: Bearer` token is required",
            ));
        }
        let body = body_or_refusal(body, intake.settings.body_limit)?;
        let (presence, event) = parse_presence(&body).map_err(Refusal::BadPresence)?;
        intake
            .jobs
            .store()
            .set_presence(&presence)
            .await
            .map_err(|e| Refusal::StoreDown(e.to_string()))?;
        intake
            .take(
                Source::Presence,
                Parsed {
                    events: vec![event],
                    ..Parsed::default()
                },
            )
            .await
    }
    .await;
    finish(Source::Presence, started, result)
}
