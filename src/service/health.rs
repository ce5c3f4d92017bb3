//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::intake::Intake;
use crate::service::metrics;

/// The process lives (also the trivial route the intake benchmark compares against).
pub async fn healthz() -> &'static str {
    "ok"
}

/// The store answers: the robot can take webhooks.
pub async fn readyz(State(intake): State<Arc<Intake>>) -> Response {
    match intake.jobs.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
            .into_response(),
    }
}

/// Prometheus text.
pub async fn render(State(intake): State<Arc<Intake>>) -> Response {
    if let Ok(depth) = intake.jobs.store().queue_depth(intake.jobs.queue()).await {
        ::metrics::gauge!(metrics::QUEUE_DEPTH, "queue" => intake.jobs.queue().to_owned())
            .set(depth as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::handle().render(),
    )
        .into_response()
}
