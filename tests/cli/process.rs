//! Runs the `sales-robot` binary with a config of its own and talks to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "cli-test-hook-secret-4242";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sales-robot")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn redis_url() -> String {
    std::env::var("ROBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Which store the robot runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Redis,
}

/// A robot process's environment: the shipped config, a data folder of its own, a port of
/// its own, and on Redis a namespace of its own.
pub struct Robot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub namespace: String,
    pub backend: Backend,
}

impl Robot {
    pub fn new(backend: Backend) -> Robot {
        use rand::Rng;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let namespace = format!("cli-test-{:016x}", rand::rng().random::<u64>());
        let mut env = vec![
            (
                "ROBOT_DATA_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
            ("ROBOT_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            ("ROBOT_HOOK_SECRET".to_owned(), SECRET.to_owned()),
            ("ROBOT_JOBS_HEARTBEAT".to_owned(), "1s".to_owned()),
            ("ROBOT_STORAGE_NAMESPACE".to_owned(), namespace.clone()),
        ];
        if backend == Backend::Redis {
            env.push(("ROBOT_STORAGE_URL".to_owned(), redis_url()));
        }
        Robot {
            dir,
            port,
            env,
            namespace,
            backend,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(repo())
            .args(args)
            .env("ROBOT_CONFIG_DIR", repo().join("config"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Starts `serve` and waits until it answers.
    pub fn serve(&self, log: &Path) -> Child {
        self.serve_with(&["serve"], log)
    }

    /// Starts `serve` with other arguments and waits until it answers.
    pub fn serve_with(&self, args: &[&str], log: &Path) -> Child {
        let mut child = self
            .command(args)
            .stdout(Stdio::from(
                std::fs::File::create(log.with_extension("out")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .expect("serve starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "serve did not listen on {} within 20 s: {}",
            self.port,
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Opens the same store the robot uses, to look at what it did.
    pub async fn store(&self) -> sales_robot::adapters::store::Store {
        use sales_robot::adapters::store::{Location, Store, StoreSettings};
        let location = match self.backend {
            Backend::Sqlite => Location::Sqlite(self.dir.path().join("robot.db")),
            Backend::Redis => Location::Redis(redis_url()),
        };
        let settings = StoreSettings {
            namespace: self.namespace.clone(),
            dedup_window: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(1),
        };
        Store::open(&location, settings).await.unwrap()
    }
}

impl Drop for Robot {
    fn drop(&mut self) {
        if self.backend == Backend::Redis
            && let Ok(client) = redis::Client::open(redis_url())
            && let Ok(mut conn) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.namespace))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

/// Waits until the log at `path` holds `text`, at most `secs`; fails with the log.
pub async fn wait_for_log(path: &Path, text: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{text}` is not in the log after {secs} s: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and waits for the exit, at most `secs`.
pub fn terminate(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the robot did not stop within {secs} s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A realistic amoCRM body for a new lead `id`.
pub fn lead_add(id: u64) -> String {
    format!(
        "account%5Bsubdomain%5D=robotdemo&account%5Bid%5D=29876543&leads%5Badd%5D%5B0%5D%5Bid%5D={id}\
         &leads%5Badd%5D%5B0%5D%5Bname%5D=%D0%97%D0%B0%D1%8F%D0%B2%D0%BA%D0%B0&leads%5Badd%5D%5B0%5D%5Bstatus_id%5D=61234567\
         &leads%5Badd%5D%5B0%5D%5Bpipeline_id%5D=7654321&leads%5Badd%5D%5B0%5D%5Blast_modified%5D=1763900000"
    )
}
