//! `sales-robot catchup --since DATE`: read what the CRM changed since that day and queue
//! the events no webhook brought, now; the periodic catch-up goes on from there.

use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};

use crate::cli::context;
use crate::service::jobs::{Jobs, Journal};

/// Arguments of `catchup`.
#[derive(Debug, clap::Args)]
pub struct CatchupArgs {
    /// The first day of changes to read (YYYY-MM-DD, UTC); the periodic catch-up then goes
    /// on from the last change read.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub since: NaiveDate,
}

/// Runs `catchup`.
pub async fn run(dir: &Path, args: CatchupArgs) -> anyhow::Result<()> {
    let ctx = context::load(dir)?;
    let store = ctx.open_store().await?;
    let (settings, _) = ctx.settings(false)?;
    // Only queued here: a running worker handles the events.
    let jobs = Arc::new(Jobs::new(store.clone(), Arc::new(Journal), settings.retry));
    let Some((catchup, _)) = ctx.catchup(&store, jobs)? else {
        anyhow::bail!("no CRM is connected (or [catchup] every = \"0s\"): nothing to read");
    };
    let since = args
        .since
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    catchup.start_from(since).await?;
    let round = catchup.round(Utc::now()).await?;
    println!(
        "{} leads changed since {}; {} events queued that no webhook had brought; the \
         watermark is now {}",
        round.leads,
        args.since,
        round.found,
        chrono::DateTime::from_timestamp(round.watermark, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    );
    println!(
        "{} companies changed, {} events queued; {} tasks changed, {} events queued; {} of \
         the robot's own changes left alone",
        round.companies, round.found_companies, round.tasks, round.found_tasks, round.echoes
    );
    Ok(())
}
