//! `sales-robot dead list|retry ID`: the jobs that failed every attempt.

use std::path::Path;

use anyhow::bail;

use crate::cli::context;

/// What to do with the dead letters.
#[derive(Debug, clap::Subcommand)]
pub enum DeadAction {
    /// Print every dead letter: id, when, attempts, error, the event.
    List,
    /// Put a dead letter back on the queue as a fresh job.
    Retry {
        /// The dead letter's id (from `dead list`).
        id: String,
    },
}

/// Runs `dead`.
pub async fn run(config_dir: &Path, action: DeadAction) -> anyhow::Result<()> {
    let jobs = context::jobs(config_dir).await?;
    match action {
        DeadAction::List => {
            let letters = jobs.store().dead_letters().await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                println!(
                    "{}\t{}\tattempts={}\t{}\t{}",
                    l.id,
                    l.failed_at.to_rfc3339(),
                    l.attempts,
                    l.error,
                    l.payload
                );
            }
        }
        DeadAction::Retry { id } => match jobs.retry_dead(&id).await? {
            Some(letter) => println!("re-queued dead letter {} ({})", letter.id, letter.error),
            None => bail!("there is no dead letter with id {id}; see `sales-robot dead list`"),
        },
    }
    Ok(())
}
