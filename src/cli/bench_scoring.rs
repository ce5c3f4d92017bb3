//! `sales-robot bench leads` and `bench scoring`: synthetic past leads as a CSV file (to
//! compare the robot with other models on the same files, `benches/scoring_vs_sklearn.py`),
//! and the scoring's own speed measured in-process, where files and parsing cost nothing.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::adapters::csv;
use crate::domain::scoring::{Settings, Value, train};
use crate::synth::{self, Generator, SynthLead};

/// The benchmark's targets, from the product requirement.
const TRAIN_TARGET_SECONDS: f64 = 5.0;
const SCORE_TARGET_PER_SECOND: f64 = 1_000_000.0;

/// Arguments of `bench leads`.
#[derive(Debug, clap::Args)]
pub struct LeadsArgs {
    /// The CSV file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Months of leads.
    #[arg(long, default_value_t = 12)]
    pub months: u32,
    /// Leads a month.
    #[arg(long, default_value_t = 4_000)]
    pub per_month: usize,
    /// Leads in all, spread evenly over the months (instead of `--per-month`).
    #[arg(long, conflicts_with = "per_month")]
    pub leads: Option<usize>,
    /// The random seed: the same seed and flags give the same file.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The month the synthetic market starts, `YYYY-MM` (UTC).
    #[arg(long, default_value = "2024-01", value_parser = month_start)]
    pub start: DateTime<Utc>,
    /// Draw the leads this many months after `--start`: `--offset-months 12` gives the year
    /// after a 12-month file, with the drift carried on (use another `--seed`).
    #[arg(long, default_value_t = 0)]
    pub offset_months: u32,
    /// Months from `--start` over which the market drifts; later leads stay at its end.
    #[arg(long, default_value_t = 12.0)]
    pub drift_months: f64,
    /// `won` is the revenue the client brought over a year instead of 0/1.
    #[arg(long)]
    pub lifetime: bool,
}

/// Arguments of `bench scoring`.
#[derive(Debug, clap::Args)]
pub struct ScoringArgs {
    /// Past leads (a year of them) to train on.
    #[arg(long, default_value_t = 200_000)]
    pub past: usize,
    /// Leads (of the following year) to score per round.
    #[arg(long, default_value_t = 1_000_000)]
    pub score: usize,
    /// Scoring rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The random seed of the past leads (the scored ones take the next).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print one JSON object instead of the text, for scripts.
    #[arg(long)]
    pub json: bool,
}

fn month_start(s: &str) -> Result<DateTime<Utc>, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not a month like 2024-01"))
}

/// When the `i`-th of `total` leads comes, in months after the start: evenly spread over
/// `months` months from `offset`, oldest first.
fn position(offset: u32, months: u32, i: usize, total: usize) -> f64 {
    f64::from(offset) + f64::from(months) * (i as f64 + 0.5) / total as f64
}

/// `total` synthetic leads over `months` months from `offset`.
fn synthetic(generator: &mut Generator, offset: u32, months: u32, total: usize) -> Vec<SynthLead> {
    (0..total)
        .map(|i| generator.lead(position(offset, months, i, total)))
        .collect()
}

/// The header of `bench leads` files.
pub fn header() -> Vec<&'static str> {
    let mut names = vec!["created_at"];
    names.extend(synth::FEATURES);
    names.extend(["budget", "won", "true_chance"]);
    names
}

/// One lead as a CSV record in the order of [`header`]. Rust prints floats without an
/// exponent, with `.` decimals, and whole ones without a fraction (`0`, `1`).
fn row(lead: &SynthLead) -> String {
    let mut cells = Vec::with_capacity(synth::FEATURES.len() + 4);
    cells.push(
        lead.lead
            .created_at
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    cells.extend(lead.lead.observation.iter().map(|v| match v {
        None => String::new(),
        Some(Value::Category(c)) => c.clone(),
        Some(Value::Number(n)) => n.to_string(),
    }));
    cells.push(lead.lead.budget.map(|b| b.to_string()).unwrap_or_default());
    cells.push(lead.lead.won.to_string());
    cells.push(lead.true_chance.to_string());
    csv::record(&cells)
}

/// Writes the synthetic leads file.
pub fn leads(args: LeadsArgs) -> anyhow::Result<()> {
    let total = args
        .leads
        .unwrap_or(args.per_month.saturating_mul(args.months as usize));
    if args.months == 0 || total == 0 {
        bail!("--months and --per-month (or --leads) must be at least 1");
    }
    // NaN and infinity too.
    if !args.drift_months.is_finite() || args.drift_months <= 0.0 {
        bail!("--drift-months must be above 0");
    }
    let mut generator = Generator::new(args.seed, args.start, args.drift_months);
    generator.lifetime = args.lifetime;
    let file =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let cannot = || format!("cannot write {}", args.out.display());
    writeln!(out, "{}", csv::record(&header())).with_context(cannot)?;
    // Written as drawn: a big file needs little memory.
    for i in 0..total {
        let lead = generator.lead(position(args.offset_months, args.months, i, total));
        writeln!(out, "{}", row(&lead)).with_context(cannot)?;
    }
    out.flush().with_context(cannot)?;
    eprintln!(
        "{} synthetic leads written to {} (seed {}, months {}..{} after {})",
        total,
        args.out.display(),
        args.seed,
        args.offset_months,
        args.offset_months + args.months,
        args.start.format("%Y-%m")
    );
    Ok(())
}

/// Leads a second of one scoring loop, as the median over rounds, with a checksum of what
/// it computed so that nothing is optimised away.
fn rate(rounds: usize, leads: usize, mut one_round: impl FnMut() -> f64) -> (f64, f64) {
    // A first, untimed pass warms the caches and the allocator.
    let mut checksum = black_box(one_round());
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            checksum += black_box(one_round());
            leads as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], checksum)
}

/// Trains on a synthetic year and scores the next one, on this thread.
pub fn scoring(args: ScoringArgs) -> anyhow::Result<()> {
    if args.past == 0 || args.score == 0 || args.rounds == 0 {
        bail!("--past, --score and --rounds must be at least 1");
    }
    let start = month_start("2024-01").map_err(anyhow::Error::msg)?;
    let features = synth::features();
    let margins = synth::margins();
    let settings = Settings::default();

    let past: Vec<_> = synthetic(
        &mut Generator::new(args.seed, start, 12.0),
        0,
        12,
        args.past,
    )
    .into_iter()
    .map(|s| s.lead)
    .collect();
    let started = Instant::now();
    let (model, evaluation) =
        train(&features, &margins, &settings, &past).context("training on the synthetic leads")?;
    let train_seconds = started.elapsed().as_secs_f64();
    drop(past);

    // Generated before any clock starts: only the scoring is timed.
    let next = synthetic(
        &mut Generator::new(args.seed + 1, start, 12.0),
        12,
        12,
        args.score,
    );
    let (score_rate, a) = rate(args.rounds, next.len(), || {
        next.iter()
            .map(|s| {
                let score = model.score(&features, &margins, &s.lead.observation, s.lead.budget);
                score.probability + score.expected_profit
            })
            .sum()
    });
    let mut columns = Vec::with_capacity(features.len());
    let (fast_rate, b) = rate(args.rounds, next.len(), || {
        let mut sum = 0.0;
        for s in &next {
            model.encoder.encode_into(&s.lead.observation, &mut columns);
            let margin = margins.of(&features, &s.lead.observation);
            let score = model.score_encoded(&columns, margin, s.lead.budget);
            sum += score.probability + score.expected_profit;
        }
        sum
    });
    let (chance_rate, c) = rate(args.rounds, next.len(), || {
        let mut sum = 0.0;
        for s in &next {
            model.encoder.encode_into(&s.lead.observation, &mut columns);
            sum += model.chance_of(&columns);
        }
        sum
    });
    let checksum = a + b + c;

    if args.json {
        let figures = serde_json::json!({
            "past": args.past,
            "train_seconds": train_seconds,
            "train_target_seconds": TRAIN_TARGET_SECONDS,
            "holdout_auc": evaluation.auc,
            "holdout_brier": evaluation.brier,
            "lambda": evaluation.lambda,
            "half_life_days": evaluation.half_life_days,
            "scored": next.len(),
            "rounds": args.rounds,
            "score_per_second": score_rate,
            "fast_per_second": fast_rate,
            "chance_per_second": chance_rate,
            "score_target_per_second": SCORE_TARGET_PER_SECOND,
            "checksum": checksum,
        });
        println!("{figures}");
        return Ok(());
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "scoring benchmark: synthetic leads, default [model] settings, release={}; \
         training and each scoring loop run on one thread ({} cores on this machine)",
        !cfg!(debug_assertions),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "train  {:>11} past leads  {:>9.2} s       target < {TRAIN_TARGET_SECONDS} s         {}",
        grouped(args.past as f64),
        train_seconds,
        met(train_seconds < TRAIN_TARGET_SECONDS)
    );
    println!(
        "       held out {} newest: AUC {:.4}, Brier {:.5}; penalty {}, half-life {}",
        grouped(evaluation.holdout_leads as f64),
        evaluation.auc,
        evaluation.brier,
        evaluation.lambda,
        evaluation
            .half_life_days
            .map_or("none".to_owned(), |h| format!("{h} days"))
    );
    for (what, r) in [
        ("model.score (encode + margin + score)", score_rate),
        ("encode_into + score_encoded", fast_rate),
        ("encode_into + chance_of (chance only)", chance_rate),
    ] {
        println!(
            "score  {what:<38} {:>11} leads/s   target ≥ {}/s   {}",
            grouped(r),
            grouped(SCORE_TARGET_PER_SECOND),
            met(r >= SCORE_TARGET_PER_SECOND)
        );
    }
    println!(
        "       {} leads of the next year a round, median of {} rounds (checksum {checksum:.6e})",
        grouped(next.len() as f64),
        args.rounds
    );
    Ok(())
}

/// A whole number with its thousands separated by commas: `1,234,567`.
fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_figures_read_and_print_plainly() {
        assert_eq!(
            month_start("2024-03").unwrap().to_rfc3339(),
            "2024-03-01T00:00:00+00:00"
        );
        assert!(month_start("2024-13").is_err());
        assert!(month_start("март").is_err());
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(0.0), "0");
    }

    #[test]
    fn leads_are_spread_evenly_and_oldest_first() {
        let at: Vec<f64> = (0..4).map(|i| position(12, 2, i, 4)).collect();
        assert_eq!(at, [12.25, 12.75, 13.25, 13.75]);
    }
}
