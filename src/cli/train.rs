//! `sales-robot train --deals FILE.csv`: learns the scoring model from past leads, says how
//! good it is on the newest of them, and writes it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::adapters::crm::LeadFilter;
use crate::adapters::{leads_file, model_file};
use crate::cli::context::{self, Context};
use crate::config::scoring::{self, ScoringRules};
use crate::domain::lead::{Lead, closed};
use crate::domain::scoring::priorities::rub;
use crate::domain::scoring::{Evaluation, PastLead, train};
use crate::service::scoring::history_of;

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Past leads as CSV: `created_at`, a column per feature of scoring.toml, `budget` and
    /// `won` (1 or 0, or the won amount).
    #[arg(
        long,
        value_name = "FILE.csv",
        required_unless_present = "from_crm",
        conflicts_with = "from_crm"
    )]
    pub deals: Option<PathBuf>,
    /// Instead of a file: the won and lost leads of the connected CRM created since
    /// `--since`, read through its API within the rate limit.
    #[arg(long, requires = "since")]
    pub from_crm: bool,
    /// With `--from-crm`: the first day of leads to learn from (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub since: Option<chrono::NaiveDate>,
    /// Where to write the model (default: scoring-model.json in the data folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The scoring rules of the config folder; an error when there are none or they are wrong.
pub fn rules(ctx: &Context) -> anyhow::Result<ScoringRules> {
    ctx.scoring_rules()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: there is no {}; the scoring needs one (the shipped config folder has an example)",
            ctx.dir.display(),
            scoring::FILE_NAME
        )
    })
}

/// Runs `train`.
pub async fn run(dir: &Path, args: TrainArgs) -> anyhow::Result<()> {
    let ctx = context::load(dir)?;
    let rules = rules(&ctx)?;
    let out = args.out.unwrap_or_else(|| ctx.model_path());
    let started = Instant::now();
    let (leads, from) = match (&args.deals, args.since) {
        (Some(deals), _) => {
            let file = leads_file::read(deals)?;
            (
                file.past_leads(&rules.features)?,
                deals.display().to_string(),
            )
        }
        (None, Some(since)) => (from_crm(&ctx, &rules, since).await?, "the CRM".to_owned()),
        (None, None) => anyhow::bail!(
            "say where the past leads are: --deals FILE.csv or --from-crm --since DATE"
        ),
    };
    let read_in = started.elapsed();
    let learning = Instant::now();
    let (model, evaluation) = train(&rules.features, &rules.margins, &rules.training, &leads)
        .with_context(|| format!("{from}: cannot train"))?;
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

/// The won and lost leads of the CRM created since `since`, with their features as the
/// robot sees them in `serve` (the client's history included). Costs a read of each closed
/// lead and of each client's leads, within the CRM's rate limit.
async fn from_crm(
    ctx: &Context,
    rules: &ScoringRules,
    since: chrono::NaiveDate,
) -> anyhow::Result<Vec<PastLead>> {
    let store = ctx.open_store().await?;
    let connected = ctx.connected(&store)?;
    let from = since
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp();
    let listed = connected
        .crm
        .leads(&LeadFilter {
            created_from: Some(from),
            ..LeadFilter::default()
        })
        .await?;
    let closed_ones: Vec<&Lead> = listed
        .iter()
        .filter(|l| closed(&l.status_id).is_some())
        .collect();
    eprintln!(
        "{}: {} leads created since {since}, {} of them won or lost; reading those",
        connected.description,
        listed.len(),
        closed_ones.len()
    );
    let mut past = Vec::with_capacity(closed_ones.len());
    for (i, listed) in closed_ones.iter().enumerate() {
        let Some(lead) = connected.crm.lead(&listed.id).await? else {
            continue;
        };
        let history = history_of(connected.crm.as_ref(), &lead).await?;
        past.push(PastLead::from_crm(
            &rules.features,
            &rules.okved,
            &lead,
            history,
        ));
        if (i + 1) % 100 == 0 {
            eprintln!("  {} of {} read", i + 1, closed_ones.len());
        }
    }
    Ok(past.into_iter().flatten().collect())
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
