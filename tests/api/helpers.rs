//! `spawn_app`: a robot on a random port, on a fresh SQLite file or a fresh Redis
//! namespace, with helpers to post what the CRMs post.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sales_robot::adapters::store::{Location, Store, StoreSettings};
use sales_robot::domain::event::Event;
use sales_robot::domain::retry::RetryPolicy;
use sales_robot::service::app::Application;
use sales_robot::service::jobs::{EventHandler, HandlerError, Jobs, Journal};
use sales_robot::service::settings::{AmocrmAccount, Bitrix24Portal, Settings};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Redis,
}

pub const SECRET: &str = "test-hook-secret-0123456789";
pub const PRESENCE_TOKEN: &str = "test-presence-token";
pub const B24_TOKEN: &str = "b24-demo-application-token";

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("ROBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other test uses.
pub fn unique_namespace() -> String {
    use rand::Rng;
    format!("test-{:016x}", rand::rng().random::<u64>())
}

pub fn fixture(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// Opens a fresh store on `backend` (a temp SQLite file or a fresh Redis namespace).
pub async fn fresh_store(backend: Backend, dir: &std::path::Path) -> Store {
    let location = match backend {
        Backend::Sqlite => Location::Sqlite(dir.join("robot.db")),
        Backend::Redis => Location::Redis(redis_url()),
    };
    let settings = StoreSettings {
        namespace: unique_namespace(),
        dedup_window: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(2),
    };
    Store::open(&location, settings)
        .await
        .expect("the test store opens (is Redis running on 127.0.0.1:6379?)")
}

pub fn test_settings() -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        public_url: None,
        body_limit: 64 * 1024,
        request_timeout: Duration::from_secs(10),
        hook_secret: SecretString::from(SECRET),
        presence_token: SecretString::from(PRESENCE_TOKEN),
        amocrm: Some(AmocrmAccount {
            subdomain: "robotdemo".into(),
            account_id: Some("29876543".into()),
        }),
        bitrix24: Some(Bitrix24Portal {
            domain: "robotdemo.bitrix24.ru".into(),
            application_token: Some(SecretString::from(B24_TOKEN)),
        }),
        wazzup_channels: Vec::new(),
        concurrency: 4,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(2),
        },
        shutdown_grace: Duration::from_secs(5),
        run_workers: true,
    }
}

pub struct TestApp {
    pub address: String,
    pub store: Store,
    pub jobs: Arc<Jobs>,
    busy: Arc<AtomicUsize>,
    pub client: reqwest::Client,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<Result<(), sales_robot::service::app::AppError>>>,
    _dir: tempfile::TempDir,
}

/// A robot with the journal handler and the test settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Arc::new(Journal), |_| {}).await
}

/// A robot whose workers run the chains' steps of `engine` too.
pub async fn spawn_app_with_steps(
    backend: Backend,
    handler: Arc<dyn EventHandler>,
    engine: Arc<sales_robot::service::chains::ChainEngine>,
) -> TestApp {
    spawn(backend, handler, Some(engine), |_| {}).await
}

/// A robot with another handler or other settings.
pub async fn spawn_app_with(
    backend: Backend,
    handler: Arc<dyn EventHandler>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn(backend, handler, None, tweak).await
}

async fn spawn(
    backend: Backend,
    handler: Arc<dyn EventHandler>,
    engine: Option<Arc<sales_robot::service::chains::ChainEngine>>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(backend, dir.path()).await;
    let mut settings = test_settings();
    tweak(&mut settings);
    let busy = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(Counted {
        inner: handler,
        busy: busy.clone(),
    });
    let steps = engine.map(|e| {
        Arc::new(sales_robot::service::chains::StepJobs::new(
            store.clone(),
            e,
        ))
    });
    let app = Application::build(settings, store.clone(), handler)
        .await
        .expect("the app builds")
        .with_steps(steps);
    let address = format!("http://{}", app.local_addr());
    let jobs = app.jobs();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    TestApp {
        address,
        store,
        jobs,
        busy,
        client: reqwest::Client::new(),
        stop,
        server: Some(server),
        _dir: dir,
    }
}

/// The test's handler, counting the events being handled at the moment: the queue stops
/// counting a job when a worker takes it, before its handler has written anything.
struct Counted {
    inner: Arc<dyn EventHandler>,
    busy: Arc<AtomicUsize>,
}

impl EventHandler for Counted {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
        store: &'a Store,
    ) -> futures::future::BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.busy.fetch_add(1, Ordering::SeqCst);
            let result = self.inner.handle(event, store).await;
            self.busy.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

impl TestApp {
    /// Events whose handler is running now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    pub async fn post_form(
        &self,
        route: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{route}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_amocrm(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_form(&format!("/hooks/amocrm/{SECRET}"), body)
            .await
    }

    pub async fn post_bitrix24(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_form(&format!("/hooks/bitrix24/{SECRET}"), body)
            .await
    }

    pub async fn post_wazzup(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}/hooks/wazzup/{SECRET}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_presence(
        &self,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/api/presence", self.address))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the request is sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Waits until `/metrics` shows `text`: a job's counter moves a moment after its last
    /// write.
    pub async fn wait_for_metric(&self, text: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let metrics = self.metrics().await;
            if metrics.contains(text) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{text}` is not in the metrics after {secs} s:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn queue_depth(&self) -> u64 {
        self.store.queue_depth(self.jobs.queue()).await.unwrap()
    }

    /// Waits until the journal holds `n` events (or fails after `secs`).
    pub async fn wait_for_journal(&self, n: u64, secs: u64) {
        let store = self.store.clone();
        eventually(secs, move || {
            let store = store.clone();
            async move { store.journal_len().await.unwrap() >= n }
        })
        .await
        .unwrap_or_else(|_| panic!("the journal did not reach {n} events within {secs} s"));
    }

    /// Stops the robot gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Store::Redis(_) = self.store {
            let ns = self.store.settings().namespace.clone();
            // Leave the shared Redis as we found it.
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut conn) = client.get_connection()
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{ns}:*"))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        }
    }
}

/// Polls `check` every 50 ms until it is true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(())
}

/// Runs a test body on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name($crate::helpers::Backend::Redis).await
            }
        }
    };
}
