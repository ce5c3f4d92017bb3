//! `sales-robot bench chains`: the chain engine carrying out steps through the real Redis
//! queue and store, as `serve` runs it (`worker::run_with_steps`, `StepJobs`,
//! `ChainEngine::run_step`, the store's claims and records).
//!
//! The CRM is an in-memory one that answers at once and counts what it is asked to do: the
//! bench measures the engine and Redis, not the CRM. The chain's steps are notes and tasks,
//! so no channel (WhatsApp, e-mail) is needed and nothing leaves the machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use rand::{Rng as _, SeedableRng as _};

use crate::adapters::crm::{Client, Crm, CrmError, LeadFilter};
use crate::adapters::store::{Location, StepState, Store, StoreSettings};
use crate::config::chains as chains_config;
use crate::domain::chains::Enrolment;
use crate::domain::condition::Facts;
use crate::domain::lead::{Company, Contact, Fields, Lead, LeadUpdate};
use crate::domain::manager::Manager;
use crate::domain::product::Product;
use crate::domain::retry::RetryPolicy;
use crate::domain::task::{EntityRef, Named, NewTask, Stage, Task};
use crate::service::chains::step::step_key;
use crate::service::chains::{ChainEngine, Channels, StepJobs};
use crate::service::jobs::{Jobs, Journal};
use crate::service::worker;

/// The chain's name in the bench's `chains.toml`.
const CHAIN: &str = "bench";
/// The queue's heartbeat, `serve`'s default (`[jobs] heartbeat`).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The stage of every lead.
const STAGE: &str = "1. Новый лид";
/// Enrolments (and their first steps) written at once.
const ENROL_IN_FLIGHT: usize = 64;

/// Arguments of `bench chains`.
#[derive(Debug, clap::Args)]
pub struct ChainsArgs {
    /// Leads enrolled in the chain.
    #[arg(long, default_value_t = 100_000)]
    pub enrolments: usize,
    /// Steps of the chain (notes and tasks, each due as soon as the one before is done).
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// The first steps fall due over this many seconds from the start.
    #[arg(long, default_value_t = 5)]
    pub spread: u64,
    /// Steps in flight in the steps' worker (as `concurrency` in `robot.toml`).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Give up when no step was carried out for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub stall: u64,
    /// The Redis to use.
    #[arg(
        long = "redis",
        env = "ROBOT_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
}

/// A CRM that keeps no leads but makes one up for any id, and counts the notes and tasks
/// it is given per lead and text (a step acting twice shows as a count of 2).
#[derive(Default)]
struct CountingCrm {
    acted: AtomicUsize,
    reads: AtomicUsize,
    by_step: Mutex<HashMap<(String, String), u32>>,
}

impl CountingCrm {
    fn count(&self, lead: &str, text: &str) {
        let mut map = self.by_step.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((lead.to_owned(), text.to_owned())).or_default() += 1;
        self.acted.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Crm for CountingCrm {
    async fn lead(&self, id: &str) -> Result<Option<Lead>, CrmError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Lead {
            id: id.to_owned(),
            name: format!("Заявка {id}"),
            status_id: "1".into(),
            pipeline_id: "1".into(),
            responsible_user_id: Some("1".into()),
            // The chain's trigger: without it the engine stops the chain.
            tags: vec![CHAIN.to_owned()],
            ..Lead::default()
        }))
    }
    async fn lead_products(&self, _id: &str) -> Result<Vec<Product>, CrmError> {
        Ok(Vec::new())
    }

    async fn update_lead(&self, _: &str, _: &LeadUpdate) -> Result<(), CrmError> {
        Ok(())
    }
    async fn update_leads(&self, _: &[(String, LeadUpdate)]) -> Result<(), CrmError> {
        Ok(())
    }
    async fn leads(&self, _: &LeadFilter) -> Result<Vec<Lead>, CrmError> {
        Ok(Vec::new())
    }
    async fn client_leads(&self, _: &Client) -> Result<Vec<Lead>, CrmError> {
        Ok(Vec::new())
    }
    async fn create_task(&self, task: &NewTask) -> Result<String, CrmError> {
        self.count(&task.entity.id, &task.text);
        Ok(String::new())
    }
    async fn complete_task(&self, _: &str, _: &str) -> Result<(), CrmError> {
        Ok(())
    }
    async fn open_tasks(&self) -> Result<Vec<Task>, CrmError> {
        Ok(Vec::new())
    }
    async fn tasks_changed(&self, _: i64) -> Result<Vec<Task>, CrmError> {
        Ok(Vec::new())
    }
    async fn add_note(&self, entity: &EntityRef, text: &str) -> Result<(), CrmError> {
        self.count(&entity.id, text);
        Ok(())
    }
    async fn notes(&self, entity: &EntityRef) -> Result<Vec<String>, CrmError> {
        let by_step = self.by_step.lock().unwrap_or_else(|e| e.into_inner());
        Ok(by_step
            .keys()
            .filter(|(lead, _)| *lead == entity.id)
            .map(|(_, text)| text.clone())
            .collect())
    }
    async fn company(&self, _: &str) -> Result<Option<Company>, CrmError> {
        Ok(None)
    }
    async fn companies_changed(&self, _: i64) -> Result<Vec<Company>, CrmError> {
        Ok(Vec::new())
    }
    async fn update_company(&self, _: &str, _: &Fields) -> Result<(), CrmError> {
        Ok(())
    }
    async fn contact(&self, _: &str) -> Result<Option<Contact>, CrmError> {
        Ok(None)
    }
    async fn update_contact(&self, _: &str, _: &Fields) -> Result<(), CrmError> {
        Ok(())
    }
    async fn managers(&self) -> Result<Vec<Manager>, CrmError> {
        Ok(Vec::new())
    }
    async fn stages(&self) -> Result<Vec<Stage>, CrmError> {
        Ok(vec![Stage {
            id: "1".into(),
            name: STAGE.into(),
            pipeline: Named {
                id: "1".into(),
                name: "Продажи".into(),
            },
        }])
    }
    async fn loss_reasons(&self) -> Result<Vec<Named>, CrmError> {
        Ok(Vec::new())
    }
}

/// The text of step `index`.
fn step_text(index: usize) -> String {
    format!("bench step {}", index + 1)
}

/// A `chains.toml` of one chain of `steps` steps, each due at once after the one before;
/// every day is a working day and the window is the whole day but its last minute (a
/// window must end after it starts), in UTC.
fn chains_toml(steps: usize) -> String {
    let mut toml = format!(
        "[calendar]\ntime_zone = \"UTC\"\ndays = \"пн-вс\"\nwindow = \"00:00-23:59\"\n\n\
         [[chains]]\nname = \"{CHAIN}\"\ntrigger = {{ tag = \"bench\" }}\n"
    );
    for i in 0..steps {
        let what = if i % 2 == 0 { "note" } else { "task" };
        toml.push_str(&format!(
            "\n[[chains.steps]]\ntitle = \"step {}\"\nafter = \"0m\"\n{what} = \"{}\"\n",
            i + 1,
            step_text(i)
        ));
    }
    toml
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// `bench chains`.
pub async fn chains(args: ChainsArgs) -> anyhow::Result<()> {
    if args.enrolments == 0 || args.steps == 0 || args.concurrency == 0 {
        bail!("--enrolments, --steps and --concurrency must be at least 1");
    }
    let dir = tempfile::tempdir().context("a temporary folder for chains.toml")?;
    std::fs::write(dir.path().join("chains.toml"), chains_toml(args.steps))?;
    let rules = match chains_config::load(dir.path(), chains_config::Known::default()) {
        Ok(Some(rules)) => rules,
        Ok(None) => bail!("the bench's chains.toml was not read"),
        Err(problems) => bail!("the bench's chains.toml is wrong: {problems:?}"),
    };
    let chain = rules
        .chains
        .chain(CHAIN)
        .context("the bench's chain")?
        .clone();

    let namespace = format!("bench-chains-{}", std::process::id());
    super::bench::clear_namespace(&args.redis_url, &namespace)
        .await
        .context("cannot reach Redis")?;
    let store = Store::open(
        &Location::Redis(args.redis_url.clone()),
        StoreSettings {
            namespace: namespace.clone(),
            dedup_window: Duration::from_secs(3600),
            heartbeat: HEARTBEAT,
        },
    )
    .await
    .context("cannot open the Redis store")?;
    let result = measure(&args, store, rules, &chain).await;
    super::bench::clear_namespace(&args.redis_url, &namespace).await?;
    result
}

async fn measure(
    args: &ChainsArgs,
    store: Store,
    rules: chains_config::ChainRules,
    chain: &crate::domain::chains::Chain,
) -> anyhow::Result<()> {
    let total = args.enrolments * args.steps;
    println!(
        "chains benchmark: {} enrolments × {} steps (notes and tasks, due at once after each other, the first over {} s) = {total} steps, Redis {}, {} steps in flight, {} cores",
        args.enrolments,
        args.steps,
        args.spread,
        args.redis_url,
        args.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "the CRM is in memory and answers at once, and no channel is used: the engine, its queue and Redis are measured, not the CRM"
    );
    let crm = Arc::new(CountingCrm::default());
    let engine = Arc::new(ChainEngine::new(crm.clone(), rules, Channels::default()));
    let steps = Arc::new(StepJobs::new(store.clone(), engine.clone()));
    let jobs = Arc::new(Jobs::new(
        store.clone(),
        Arc::new(Journal),
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    let workers = tokio::spawn(worker::run_with_steps(
        jobs,
        Some(steps),
        args.concurrency,
        Duration::from_secs(10),
        async move { signal.cancelled().await },
    ));

    // The workers run already: each first step falls due at its moment of the spread, as
    // leads come in through the day, and the enrolling goes on while steps are carried out.
    let started = Instant::now();
    let start = Utc::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let spread_ms = (args.spread * 1000).max(1);
    let offsets: Vec<i64> = (0..args.enrolments)
        .map(|_| rng.random_range(0..spread_ms) as i64)
        .collect();
    // The stage at enrolment is the lead's: a change of stage would stop the chain.
    let mut facts = Facts::new();
    facts.insert(
        crate::domain::chains::facts::STAGE.into(),
        crate::domain::lead::FieldValue::Text(STAGE.into()),
    );
    let enrolling = futures::stream::iter(offsets.iter().enumerate().map(|(i, offset)| {
        let (store, engine, facts) = (&store, &engine, &facts);
        async move {
            let mut e = Enrolment::new(chain, &format!("{}", 1_000_000 + i), CHAIN, facts, start);
            e.enrolled_at = start + TimeDelta::milliseconds(*offset);
            let due = e.enrolled_at;
            store.add_enrolment(&e).await?;
            store.save_progress(&e, Some(due)).await?;
            engine
                .schedule(store, &e.key, 0, due, Utc::now(), false)
                .await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(ENROL_IN_FLIGHT)
    .try_collect::<()>();
    let watch = async {
        let mut last = (0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let acted = crm.acted.load(Ordering::Relaxed);
            if acted >= total {
                return Ok(started.elapsed());
            }
            if acted != last.0 {
                last = (acted, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(args.stall) {
                bail!(
                    "stalled: {acted} of {total} steps carried out, none for {} s",
                    args.stall
                );
            }
        }
    };
    let (enrolled, took) = tokio::join!(
        async {
            enrolling.await?;
            anyhow::Ok(started.elapsed())
        },
        watch
    );
    let (enrolled, took) = (enrolled?, took);
    // Let the last steps' records and plans be written before the workers stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let _ = workers.await;
    let took = took?;

    // Every step's record, read back from the store: the claims, and when each step ran
    // against when it was due (the enrolment for the first, the step before for the rest).
    let keys: Vec<(usize, usize)> = (0..args.enrolments)
        .flat_map(|i| (0..args.steps).map(move |s| (i, s)))
        .collect();
    let records: Vec<Option<crate::adapters::store::StepRecord>> =
        futures::stream::iter(keys.iter().map(|&(i, s)| {
            let store = &store;
            async move {
                let key = format!("{CHAIN}:{}:{CHAIN}", 1_000_000 + i);
                store.step_record(&step_key(&key, s)).await
            }
        }))
        .buffered(ENROL_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut done = 0usize;
    let mut lags = Vec::with_capacity(total);
    let (mut firsts, mut laters) = (Vec::new(), Vec::new());
    for (i, offset) in offsets.iter().enumerate() {
        let mut due: DateTime<Utc> = start + TimeDelta::milliseconds(*offset);
        for s in 0..args.steps {
            let Some(r) = &records[i * args.steps + s] else {
                continue;
            };
            if r.state == StepState::Done {
                done += 1;
            }
            let lag = (r.at - due).num_microseconds().unwrap_or(0) as f64 / 1e3;
            lags.push(lag);
            if s == 0 {
                firsts.push(lag)
            } else {
                laters.push(lag)
            }
            due = r.at;
        }
    }
    for v in [&mut lags, &mut firsts, &mut laters] {
        v.sort_by(f64::total_cmp);
    }
    let by_step = crm.by_step.lock().unwrap_or_else(|e| e.into_inner());
    let twice = by_step.values().filter(|n| **n > 1).count();
    let expected_texts: Vec<String> = (0..args.steps).map(step_text).collect();
    let distinct_ok = by_step.len() == total
        && by_step
            .keys()
            .all(|(_, text)| expected_texts.contains(text));
    let acted = crm.acted.load(Ordering::Relaxed);

    println!(
        "enrolled {} leads in {:.2} s ({:.0} /s), while the steps ran",
        args.enrolments,
        enrolled.as_secs_f64(),
        args.enrolments as f64 / enrolled.as_secs_f64()
    );
    println!(
        "{total} steps in {:.2} s: {:.0} steps/s ({} lead reads from the CRM)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        crm.reads.load(Ordering::Relaxed)
    );
    println!(
        "lag behind schedule (run − due): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&lags, 0.50),
        quantile(&lags, 0.99),
        lags.last().copied().unwrap_or_default()
    );
    println!(
        "  first steps (planned ahead, handed to the workers when due): p50 {:.1} ms, p99 {:.1} ms",
        quantile(&firsts, 0.50),
        quantile(&firsts, 0.99)
    );
    println!(
        "  later steps (due as the step before is done, queued at once): p50 {:.1} ms, p99 {:.1} ms",
        quantile(&laters, 0.50),
        quantile(&laters, 0.99)
    );
    println!(
        "records: {done} done of {total} expected; CRM actions: {acted}, {} distinct steps, {twice} acted more than once",
        by_step.len()
    );
    if done == total && acted == total && twice == 0 && distinct_ok {
        println!("check: every step ran exactly once");
        Ok(())
    } else {
        bail!("check failed: not every step ran exactly once")
    }
}
