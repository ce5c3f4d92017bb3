//! `sales-robot bench intake`: the intake's throughput and latency on each backend, beside a
//! trivial 200-OK route of the same server under the same load (the same bodies, posted the
//! same way), so that the figures say how much the intake itself costs on this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::{bench_chains, bench_forecast, bench_scoring};
use crate::adapters::store::{Location, Store, StoreSettings};
use crate::domain::retry::RetryPolicy;
use crate::service::app::Application;
use crate::service::jobs::Journal;
use crate::service::settings::{AmocrmAccount, Settings};

/// What to measure.
#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Webhooks per second and latency of the intake, against a trivial route.
    Intake(IntakeArgs),
    /// Write synthetic past leads with their true chances as CSV, to compare models on.
    Leads(bench_scoring::LeadsArgs),
    /// Training time and leads scored per second, in-process on one thread.
    Scoring(bench_scoring::ScoringArgs),
    /// The time of one routing decision on a large roster, and of a simulated day.
    Routing(RoutingArgs),
    /// Chain steps per second and their lag behind schedule, through the real Redis queue
    /// and store (the CRM in memory).
    Chains(bench_chains::ChainsArgs),
    /// The month's forecast against the actual on a held-out synthetic year.
    Forecast(bench_forecast::ForecastArgs),
}

/// Arguments of `bench routing`.
#[derive(Debug, clap::Args)]
pub struct RoutingArgs {
    /// Managers in the made-up roster the single decisions are timed on.
    #[arg(long, default_value_t = 200)]
    pub managers: usize,
    /// Decisions timed in each round.
    #[arg(long, default_value_t = 20_000)]
    pub decisions: usize,
    /// Leads of the simulated day (on the config's roster and rules).
    #[arg(long, default_value_t = 100_000)]
    pub leads: usize,
}

/// Which backends to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backends {
    /// SQLite and Redis.
    Both,
    /// SQLite only.
    Sqlite,
    /// Redis only.
    Redis,
}

/// Arguments of `bench intake`.
#[derive(Debug, clap::Args)]
pub struct IntakeArgs {
    /// Webhooks per run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Backends to measure.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    pub backend: Backends,
    /// Rounds of each route, alternated; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The Redis to use.
    #[arg(
        long,
        env = "ROBOT_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
}

/// Runs a benchmark.
pub async fn run(dir: &std::path::Path, what: BenchWhat) -> anyhow::Result<()> {
    match what {
        BenchWhat::Intake(args) => intake(args).await,
        BenchWhat::Leads(args) => bench_scoring::leads(args),
        BenchWhat::Scoring(args) => bench_scoring::scoring(args),
        BenchWhat::Routing(args) => routing(dir, args),
        BenchWhat::Chains(args) => bench_chains::chains(args).await,
        BenchWhat::Forecast(args) => bench_forecast::forecast(args),
    }
}

/// `bench routing`: single decisions on a made-up roster of `--managers` (everyone online,
/// so that the whole roster is looked at; and everyone on a call, the path that explains
/// the wait), then `simulate day` with `--leads` on the config's roster.
fn routing(dir: &std::path::Path, args: RoutingArgs) -> anyhow::Result<()> {
    use chrono::{NaiveDate, TimeDelta, TimeZone};
    use rand::{Rng, SeedableRng};

    use crate::domain::condition::Facts;
    use crate::domain::lead::FieldValue;
    use crate::domain::presence::PresenceState;
    use crate::domain::priority::Priority;
    use crate::domain::routing::{Board, Heard, Request, Router};
    use crate::simulate::{self, DaySettings};

    let (roster, rules) = simulate::synthetic(args.managers, 1);
    let router = Router {
        roster: &roster,
        rules: &rules,
    };
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).context("a date")?;
    let now = chrono_tz::Europe::Moscow
        .from_local_datetime(&date.and_hms_opt(11, 20, 0).context("a time")?)
        .earliest()
        .context("a moment")?
        .with_timezone(&chrono::Utc);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let received: Vec<u32> = roster
        .managers
        .iter()
        .map(|_| rng.random_range(0..20))
        .collect();
    let leads: Vec<(Facts, Priority)> = (0..64)
        .map(|i| {
            let mut f = Facts::new();
            let budget = [5_000.0, 60_000.0, 250_000.0, 2_500_000.0][i % 4];
            f.insert("budget".into(), FieldValue::Number(budget));
            let category = [
                "Расходные материалы",
                "Сварочное оборудование",
                "Компрессоры",
                "Газовые электростанции",
            ][i / 4 % 4];
            f.insert("category".into(), FieldValue::Text(category.into()));
            (
                f,
                Priority::new(1 + (i % 4) as u8).unwrap_or(Priority::FIRST),
            )
        })
        .collect();
    let mut time = |state: PresenceState, roll_call: bool| {
        let presence: Vec<Option<Heard>> = roster
            .managers
            .iter()
            .map(|_| {
                Some(Heard {
                    state,
                    at: now - TimeDelta::seconds(30),
                })
            })
            .collect();
        let board = Board {
            presence: &presence,
            received: &received,
        };
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                for i in 0..args.decisions {
                    let (facts, priority) = &leads[i % leads.len()];
                    let request = Request {
                        facts,
                        priority: *priority,
                        waited: TimeDelta::zero(),
                        group: None,
                    };
                    if roll_call {
                        std::hint::black_box(router.roll_call(&request, &board, now));
                    } else {
                        std::hint::black_box(router.decide(&request, &board, now, &mut rng));
                    }
                }
                started.elapsed().as_secs_f64() / args.decisions.max(1) as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        (
            rounds[rounds.len() / 2],
            rounds[0],
            rounds[rounds.len() - 1],
        )
    };
    let active = roster.managers.iter().filter(|m| m.active).count();
    println!(
        "one decision, {} managers ({active} active) in {} groups, {} decisions a round, 5 rounds:",
        roster.managers.len(),
        roster.groups.len(),
        args.decisions
    );
    for (what, state, roll_call) in [
        (
            "everyone online (a manager is chosen)",
            PresenceState::Online,
            false,
        ),
        (
            "everyone on a call (the lead waits)",
            PresenceState::OnCall,
            false,
        ),
        (
            "the roll call of every manager (for a dry run)",
            PresenceState::Online,
            true,
        ),
    ] {
        let (median, best, worst) = time(state, roll_call);
        println!(
            "  {what}: median {:.1} µs (rounds {:.1}–{:.1} µs)",
            median * 1e6,
            best * 1e6,
            worst * 1e6
        );
    }

    let (roster, rules) = crate::cli::simulate::rules(dir)?;
    let settings = DaySettings {
        date,
        leads: args.leads,
        seed: 1,
    };
    let started = Instant::now();
    let report = simulate::day(&roster, &rules, settings);
    let took = started.elapsed();
    println!(
        "simulate day --leads {} on {} ({} managers): {:.2} s, {} decisions, {} rule breaks",
        args.leads,
        dir.display(),
        roster.managers.len(),
        took.as_secs_f64(),
        report.decisions,
        report.breaks()
    );
    Ok(())
}

/// Figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Answers that were not 2xx.
    pub failures: usize,
}

impl Figures {
    /// The median of each figure over several runs; failures are summed.
    pub fn median(runs: &[Figures]) -> Figures {
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        Figures {
            rate: mid(runs.iter().map(|f| f.rate).collect()),
            p50: Duration::from_secs_f64(mid(runs.iter().map(|f| f.p50.as_secs_f64()).collect())),
            p99: Duration::from_secs_f64(mid(runs.iter().map(|f| f.p99.as_secs_f64()).collect())),
            failures: runs.iter().map(|f| f.failures).sum(),
        }
    }
}

/// A realistic amoCRM status-change body for lead `id`.
pub fn status_body(id: usize) -> Vec<u8> {
    format!(
        "account%5Bsubdomain%5D=robotdemo&account%5Bid%5D=29876543\
         &leads%5Bstatus%5D%5B0%5D%5Bid%5D={lead}&leads%5Bstatus%5D%5B0%5D%5Bname%5D=%D0%97%D0%B0%D1%8F%D0%B2%D0%BA%D0%B0+{id}\
         &leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=61234568&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=61234567\
         &leads%5Bstatus%5D%5B0%5D%5Bprice%5D=150000&leads%5Bstatus%5D%5B0%5D%5Bresponsible_user_id%5D=8123456\
         &leads%5Bstatus%5D%5B0%5D%5Blast_modified%5D=1763900000&leads%5Bstatus%5D%5B0%5D%5Bmodified_user_id%5D=8123456\
         &leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=7654321&leads%5Bstatus%5D%5B0%5D%5Baccount_id%5D=29876543\
         &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bid%5D=512345&leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bname%5D=%D0%9A%D0%B0%D1%82%D0%B5%D0%B3%D0%BE%D1%80%D0%B8%D1%8F\
         &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bvalues%5D%5B0%5D%5Bvalue%5D=%D0%AD%D0%BB%D0%B5%D0%BA%D1%82%D1%80%D0%BE%D0%B4%D1%8B\
         &leads%5Bstatus%5D%5B0%5D%5Bcreated_at%5D=1763890000&leads%5Bstatus%5D%5B0%5D%5Bupdated_at%5D=1763900000",
        lead = 40_000_000 + id
    )
    .into_bytes()
}

/// Fires `bodies` at `url` (or GETs it when `bodies` is `None`) with `concurrency` in flight.
pub async fn fire(
    url: &str,
    requests: usize,
    concurrency: usize,
    bodies: Option<Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>>,
) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("a client");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url, bodies) =
            (client.clone(), next.clone(), url.to_owned(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                let request = match &bodies {
                    Some(make) => client
                        .post(&url)
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .body(make(i)),
                    None => client.get(&url),
                };
                let ok = match request.send().await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.expect("a load task");
        all.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        rate: requests as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        failures,
    }
}

fn settings() -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        public_url: None,
        body_limit: 1 << 20,
        request_timeout: Duration::from_secs(10),
        hook_secret: SecretString::from("bench-secret"),
        presence_token: SecretString::from("bench-presence"),
        amocrm: Some(AmocrmAccount {
            subdomain: "robotdemo".into(),
            account_id: Some("29876543".into()),
        }),
        bitrix24: None,
        wazzup_channels: Vec::new(),
        concurrency: 4,
        retry: RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        shutdown_grace: Duration::from_secs(5),
        // The intake alone is measured: no worker competes for the store.
        run_workers: false,
    }
}

pub(super) async fn clear_namespace(url: &str, namespace: &str) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use redis::AsyncCommands as _;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // A run leaves up to millions of keys: `KEYS` would block Redis past the client's
    // timeout, so they are walked with `SCAN` and let go of with `UNLINK`.
    let keys: Vec<String> = {
        let mut scan = conn
            .scan_options::<String>(
                redis::ScanOptions::default()
                    .with_pattern(format!("{namespace}:*"))
                    .with_count(5_000),
            )
            .await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        keys
    };
    for chunk in keys.chunks(2_000) {
        let _: () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

async fn intake(args: IntakeArgs) -> anyhow::Result<()> {
    if args.requests == 0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--requests, --concurrency and --rounds must be at least 1");
    }
    let dir = tempfile::tempdir().context("a temporary folder for the SQLite file")?;
    let mut backends = Vec::new();
    if args.backend != Backends::Redis {
        backends.push(("sqlite", Location::Sqlite(dir.path().join("bench.db"))));
    }
    if args.backend != Backends::Sqlite {
        backends.push(("redis", Location::Redis(args.redis_url.clone())));
    }
    println!(
        "intake benchmark: {} amoCRM status webhooks per run, {} in flight, {} cores, load generator in the same process",
        args.requests,
        args.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<8} {:<10} {:>10} {:>10} {:>10} {:>9}",
        "backend", "route", "req/s", "p50 ms", "p99 ms", "non-2xx"
    );
    for (name, location) in backends {
        let namespace = format!("bench-{}-{}", std::process::id(), name);
        let store = Store::open(
            &location,
            StoreSettings {
                namespace: namespace.clone(),
                dedup_window: Duration::from_secs(3600),
                heartbeat: Duration::from_secs(10),
            },
        )
        .await
        .with_context(|| format!("cannot open the {name} store"))?;
        // The trivial route takes the same bodies and answers 200 without looking at them.
        let trivial_route = axum::Router::new().route(
            "/bench/ok",
            axum::routing::post(|_: axum::body::Bytes| async { axum::http::StatusCode::OK }),
        );
        let app = Application::build(settings(), store.clone(), Arc::new(Journal))
            .await?
            .merge(trivial_route);
        let addr = app.local_addr();
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run(stop.clone()));
        let hook = format!("http://{addr}/hooks/amocrm/bench-secret");
        let trivial = format!("http://{addr}/bench/ok");
        // Warm up connections and caches; the warm-up bodies use other lead ids.
        let warm: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> =
            Arc::new(|i| status_body(10_000_000 + i));
        fire(&hook, 1000.min(args.requests), args.concurrency, Some(warm)).await;
        // Rounds alternate the two routes, so that a passing load on the machine hits both
        // alike; the medians are reported.
        let (mut hooks, mut plains) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let offset = round * args.requests;
            let bodies: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> =
                Arc::new(move |i| status_body(offset + i));
            hooks.push(fire(&hook, args.requests, args.concurrency, Some(bodies.clone())).await);
            plains.push(fire(&trivial, args.requests, args.concurrency, Some(bodies)).await);
        }
        let (webhooks, plain) = (Figures::median(&hooks), Figures::median(&plains));
        let queued = store
            .queue_depth(&store.queue_name(crate::service::jobs::HANDLE_EVENT))
            .await?;
        for (route, f) in [("webhook", webhooks), ("trivial", plain)] {
            println!(
                "{name:<8} {route:<10} {:>10.0} {:>10.2} {:>10.2} {:>9}",
                f.rate,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.failures
            );
        }
        let ratios: Vec<String> = hooks
            .iter()
            .zip(&plains)
            .map(|(h, p)| format!("{:.0} %", 100.0 * h.rate / p.rate))
            .collect();
        println!(
            "{name:<8} webhook throughput = {:.0} % of the trivial route's (median of {} rounds; each round: {}); {} jobs queued",
            100.0 * webhooks.rate / plain.rate,
            args.rounds,
            ratios.join(", "),
            queued
        );
        stop.cancel();
        let _ = server.await;
        if let Location::Redis(url) = &location {
            clear_namespace(url, &namespace).await?;
        }
    }
    Ok(())
}
