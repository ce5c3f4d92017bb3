//! `sales-robot train --deals FILE.csv`: learns the scoring model from past leads, says how
//! good it is on the newest of them, and writes it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::adapters::{leads_file, model_file};
use crate::cli::context;
use crate::config::scoring::{self, ScoringRules};
use crate::domain::scoring::priorities::rub;
use crate::domain::scoring::{Evaluation, train};

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Past leads as CSV: `created_at`, a column per feature of scoring.toml, `budget` and
    /// `won` (1 or 0, or the won amount).
    #[arg(long, value_name = "FILE.csv")]
    pub deals: PathBuf,
    /// Where to write the model (default: scoring-model.json in the data folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The scoring rules of the config folder; an error when there are none or they are wrong.
pub fn rules(dir: &Path) -> anyhow::Result<ScoringRules> {
    let ctx = context::load(dir)?;
    let fields: Vec<String> = ctx.config.fields.leads.keys().cloned().collect();
    match scoring::load(dir, Some(&fields)) {
        Ok(Some(rules)) => Ok(rules),
        Ok(None) => anyhow::bail!(
            "{}: there is no {}; the scoring needs one (the shipped config folder has an example)",
            dir.display(),
            scoring::FILE_NAME
        ),
        Err(problems) => {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "{} has problems:\n{}",
                scoring::FILE_NAME,
                listed.join("\n")
            )
        }
    }
}

/// The default model file: in the data folder.
pub fn default_model(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(context::load(dir)?
        .data_dir()
        .join(model_file::DEFAULT_NAME))
}

/// Runs `train`.
pub fn run(dir: &Path, args: TrainArgs) -> anyhow::Result<()> {
    let rules = rules(dir)?;
    let out = match args.out {
        Some(out) => out,
        None => default_model(dir)?,
    };
    let started = Instant::now();
    let file = leads_file::read(&args.deals)?;
    let leads = file.past_leads(&rules.features)?;
    let read_in = started.elapsed();
    let learning = Instant::now();
    let (model, evaluation) = train(&rules.features, &rules.margins, &rules.training, &leads)
        .with_context(|| format!("{}: cannot train", args.deals.display()))?;
    let learned_in = learning.elapsed();
    print!("{}", describe(&evaluation));
    model_file::save(&out, &model)?;
    println!(
        "model: learned from all {} leads (penalty {}, half-life {}), written to {}",
        model.trained_on,
        model.lambda,
        model
            .half_life_days
            .map_or("none".to_owned(), |d| format!("{d:.0} days")),
        out.display()
    );
    println!(
        "time: read in {:.2} s, learned in {:.2} s (one thread)",
        read_in.as_secs_f64(),
        learned_in.as_secs_f64()
    );
    Ok(())
}

/// The measurement on held-out leads, as printed.
pub fn describe(e: &Evaluation) -> String {
    let mut out = format!(
        "held out: the newest {} leads (from {}), predicted by a model learned from the {} before\n\
         AUC {:.4}   Brier {:.4}   log loss {:.4}\n\
         calibration by decile of predicted chance:\n  decile  leads  predicted  actual\n",
        e.holdout_leads,
        e.holdout_from.format("%Y-%m-%d"),
        e.train_leads,
        e.auc,
        e.brier,
        e.log_loss
    );
    for d in &e.calibration {
        out.push_str(&format!(
            "  {:>6}  {:>5}  {:>8.1} %  {:>5.1} %\n",
            d.decile,
            d.leads,
            d.predicted * 100.0,
            d.actual * 100.0
        ));
    }
    out.push_str(&format!(
        "profit of the held-out leads: expected {} ₽, actual {} ₽, actual/expected {:.1} %\n",
        rub(e.expected_profit),
        rub(e.actual_profit),
        e.profit_ratio() * 100.0
    ));
    out
}
