//! Prometheus metrics. One recorder per process (the `metrics` facade is global), shared by
//! every server the process starts.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Webhook bodies by source and outcome (`accepted`, `duplicate`, `rejected`).
pub const WEBHOOKS: &str = "robot_webhooks_total";
/// Events put on the queue, by kind.
pub const EVENTS_ENQUEUED: &str = "robot_events_enqueued_total";
/// Event types the robot does not handle, by source and name.
pub const EVENTS_IGNORED: &str = "robot_events_ignored_total";
/// Jobs run, by job and outcome (`ok`, `retry`, `dead`, `redelivered`).
pub const JOBS: &str = "robot_jobs_total";
/// Time from a webhook's arrival to its answer, by source.
pub const INTAKE_SECONDS: &str = "robot_intake_duration_seconds";
/// Jobs waiting in the queue.
pub const QUEUE_DEPTH: &str = "robot_queue_depth";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders `/metrics`.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(INTAKE_SECONDS.to_owned()), &buckets)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test binary embedding us): then
            // our handle still renders what passes through ours, which is nothing; accept it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
