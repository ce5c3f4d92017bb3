//! `sales-robot score --leads FILE.csv`: the file with each lead's chance, expected profit,
//! priority and reasons added.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::adapters::{csv, leads_file, model_file};
use crate::cli::context;
use crate::cli::train::rules;
use crate::domain::condition::Facts;
use crate::domain::lead::FieldValue;
use crate::domain::scoring::Scorer;
use crate::domain::scoring::priorities::rub;
use crate::service::scoring::ScoreLeads;

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Leads as CSV: a column per feature of scoring.toml and `budget`; other columns are
    /// kept, and conditions of scoring.toml can read them by name.
    #[arg(
        long,
        value_name = "FILE.csv",
        required_unless_present = "lead",
        conflicts_with = "lead"
    )]
    pub leads: Option<PathBuf>,
    /// Instead of a file: one lead of the CRM, by its id, explained feature by feature
    /// (nothing is written to the CRM).
    #[arg(long, value_name = "ID")]
    pub lead: Option<String>,
    /// The trained model (default: scoring-model.json in the data folder).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Where to write the scored CSV (default: standard output).
    #[arg(long, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
}

/// Runs `score`.
pub async fn run(dir: &Path, args: ScoreArgs) -> anyhow::Result<()> {
    match (&args.leads, &args.lead) {
        (_, Some(id)) => explain(dir, id).await,
        (Some(file), None) => score_file(dir, file, &args),
        (None, None) => anyhow::bail!("say which leads: --leads FILE.csv or --lead ID"),
    }
}

/// `score --lead ID`: one lead of the CRM, explained.
async fn explain(dir: &Path, id: &str) -> anyhow::Result<()> {
    let ctx = context::load(dir)?;
    let setup = ctx
        .scoring()?
        .map_err(|why| anyhow::anyhow!("cannot score: {why}"))?;
    let store = ctx.open_store().await?;
    let connected = ctx.connected(&store)?;
    let rules = setup.rules.clone();
    let model = setup.model.clone();
    let scoring = ScoreLeads::new(
        connected.crm,
        setup,
        connected.source,
        connected.lead_entity,
    );
    let Some((lead, observation, a)) = scoring.explain(id).await? else {
        anyhow::bail!("there is no lead {id} in {}", connected.description);
    };
    println!("lead {} «{}»", lead.id, lead.name);
    println!(
        "chance of sale {:.1} %; expected profit {} ₽ = budget {} ₽{} × margin {:.0} % × chance{}",
        a.score.probability * 100.0,
        rub(a.score.expected_profit),
        rub(a.score.budget),
        if a.score.budget_guessed {
            " (typical: none given)"
        } else {
            ""
        },
        a.score.margin * 100.0,
        if (a.score.value_factor - 1.0).abs() > 1e-9 {
            format!(" × lifetime factor {:.2}", a.score.value_factor)
        } else {
            String::new()
        }
    );
    println!("priority {}: {}", a.decision.priority, a.decision.why);
    println!("features (effect on the odds against a typical lead):");
    for e in model.effects(&observation) {
        let f = &rules.features[e.feature];
        let value = match &observation[e.feature] {
            Some(v) => v.to_fact().as_text(),
            None => "(not filled in)".into(),
        };
        println!("  {:<28} {:<30} ×{:.2}", f.title, value, e.shift.exp());
    }
    Ok(())
}

/// `score --leads FILE.csv`.
fn score_file(dir: &Path, leads: &Path, args: &ScoreArgs) -> anyhow::Result<()> {
    let ctx = context::load(dir)?;
    let rules = rules(&ctx)?;
    let model_path = args.model.clone().unwrap_or_else(|| ctx.model_path());
    let model = model_file::load(&model_path)?;
    if let Some(mismatch) = model.mismatch(&rules.features) {
        anyhow::bail!("{}: {mismatch}; train it again", model_path.display());
    }
    let started = Instant::now();
    let file = leads_file::read(leads)?;
    let observed = file.observations(&rules.features)?;
    let scorer = Scorer {
        features: &rules.features,
        margins: &rules.margins,
        priority: &rules.priority,
        model: &model,
    };
    let mut out = String::new();
    let mut header = file.header.clone();
    header.extend(["probability", "expected_profit", "priority", "reasons"].map(String::from));
    out.push_str(&csv::record(&header));
    out.push('\n');
    for ((_, cells), (observation, budget)) in file.rows.iter().zip(&observed) {
        let facts: Facts = file
            .header
            .iter()
            .zip(cells)
            .filter(|(_, c)| !c.trim().is_empty())
            .map(|(h, c)| (h.clone(), FieldValue::Text(c.trim().to_owned())))
            .collect();
        let a = scorer.assess(observation, *budget, facts);
        let mut row = cells.clone();
        row.resize(file.header.len(), String::new());
        let reasons = if a.decision.priority.number() == 5 {
            format!("{}; {}", a.decision.why, a.reasons)
        } else {
            a.reasons
        };
        row.extend([
            format!("{:.6}", a.score.probability),
            format!("{:.2}", a.score.expected_profit),
            a.decision.priority.to_string(),
            reasons,
        ]);
        out.push_str(&csv::record(&row));
        out.push('\n');
    }
    match &args.out {
        Some(path) => std::fs::write(path, &out)
            .with_context(|| format!("{}: cannot write", path.display()))?,
        None => std::io::stdout().write_all(out.as_bytes())?,
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "scored {} leads in {:.2} s ({:.0} leads/s, reading and writing the files included)",
        observed.len(),
        took,
        observed.len() as f64 / took.max(1e-9)
    );
    Ok(())
}
