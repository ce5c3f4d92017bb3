//! The running robot: the HTTP intake and the workers in one process, started and stopped
//! together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::adapters::store::Store;
use crate::service::chains::StepJobs;
use crate::service::jobs::{EventHandler, Jobs};
use crate::service::settings::Settings;
use crate::service::{health, intake, metrics, worker};

/// The robot failed while running.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The workers gave up (their store kept failing).
    #[error("workers stopped: {0}")]
    Workers(String),
}

/// A built robot, bound to its port, not yet running.
pub struct Application {
    listener: TcpListener,
    router: Router,
    jobs: Arc<Jobs>,
    steps: Option<Arc<StepJobs>>,
    settings: Arc<Settings>,
}

/// The routes, for the server and for tests that call it in process.
pub fn router(intake: Arc<intake::Intake>) -> Router {
    let settings = intake.settings.clone();
    let routes = Router::new()
        .route("/hooks/amocrm/{secret}", post(intake::amocrm_hook))
        .route("/hooks/bitrix24/{secret}", post(intake::bitrix24_hook))
        .route("/hooks/wazzup/{secret}", post(intake::wazzup_hook))
        .route("/api/presence", post(intake::presence))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::render))
        .with_state(intake);
    with_limits(routes, &settings)
}

/// The limits every route runs under: the body size, and the time after which a request
/// stuck on a store that hangs gets 503, so that the sender retries.
fn with_limits(routes: Router, settings: &Settings) -> Router {
    routes
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
}

impl Application {
    /// Binds the port and wires the routes; `handler` is what the workers do with events.
    pub async fn build(
        settings: Settings,
        store: Store,
        handler: Arc<dyn EventHandler>,
    ) -> std::io::Result<Application> {
        metrics::handle();
        let listener = TcpListener::bind(settings.listen).await?;
        let jobs = Arc::new(Jobs::new(store, handler, settings.retry));
        let settings = Arc::new(settings);
        let router = router(Arc::new(intake::Intake::new(
            jobs.clone(),
            settings.clone(),
        )));
        Ok(Application {
            listener,
            router,
            jobs,
            steps: None,
            settings,
        })
    }

    /// Runs the chains' steps too: a worker for their queue beside the events'.
    pub fn with_steps(mut self, steps: Option<Arc<StepJobs>>) -> Application {
        self.steps = steps;
        self
    }

    /// Adds routes of the caller's (the intake benchmark adds a trivial one).
    /// They run under the same limits as the robot's own.
    pub fn merge(mut self, routes: Router) -> Application {
        self.router = self.router.merge(with_limits(routes, &self.settings));
        self
    }

    /// The address it is bound to (the port is chosen by the OS when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The webhook URLs to paste into each service, with the secret in them.
    pub fn webhook_urls(&self) -> Vec<(&'static str, String)> {
        let base = self.settings.base_url(self.local_addr());
        let secret = self.settings.hook_secret.expose_secret();
        let mut urls = Vec::new();
        if self.settings.amocrm.is_some() {
            urls.push(("amoCRM", format!("{base}/hooks/amocrm/{secret}")));
        }
        if self.settings.bitrix24.is_some() {
            urls.push(("Bitrix24", format!("{base}/hooks/bitrix24/{secret}")));
        }
        urls.push(("Wazzup", format!("{base}/hooks/wazzup/{secret}")));
        urls.push(("presence", format!("{base}/api/presence")));
        urls
    }

    /// The jobs (queue and store) of this robot.
    pub fn jobs(&self) -> Arc<Jobs> {
        self.jobs.clone()
    }

    /// Serves until `stop` is cancelled: stops taking requests, lets in-flight jobs finish
    /// within the grace period, and returns.
    pub async fn run(self, stop: CancellationToken) -> Result<(), AppError> {
        let workers = self.settings.run_workers.then(|| {
            let stop = stop.clone();
            tokio::spawn(worker::run_with_steps(
                self.jobs.clone(),
                self.steps.clone(),
                self.settings.concurrency,
                self.settings.shutdown_grace,
                async move { stop.cancelled().await },
            ))
        });
        let sweeper = tokio::spawn(sweep_periodically(self.jobs.clone(), stop.clone()));
        let http_stop = stop.clone();
        let http = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
        // If the server failed on its own, stop the workers too.
        stop.cancel();
        sweeper.abort();
        let worker_result = match workers {
            Some(handle) => match handle.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AppError::Workers(e.to_string())),
                Err(e) => Err(AppError::Workers(e.to_string())),
            },
            None => Ok(()),
        };
        http?;
        worker_result
    }
}

/// Forgets dedup keys and journal records older than the window, and values kept only
/// for a while whose time is up, now and then.
async fn sweep_periodically(jobs: Arc<Jobs>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let steps = jobs.store().queue_name(crate::service::chains::RUN_STEP);
                let checks = jobs.store().queue_name(crate::service::chains::CHECK_LEAD);
                match jobs.store().sweep(chrono::Utc::now(), &[jobs.queue(), &steps, &checks]).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "swept records older than the dedup window"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
                }
            }
        }
    }
}
