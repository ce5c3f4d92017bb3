//! `sales-robot chains preview CHAIN --lead ID [--at TIME]`: every step of a chain for a
//! lead with its time and its text, sending nothing; `chains list [--lead ID]`: the
//! enrolments in the store; `chains stop --lead ID`: stops a lead's chains.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};

use crate::cli::context;
use crate::service::chains::{ChainEngine, Channels};

/// What to do with chains.
#[derive(Debug, clap::Subcommand)]
pub enum ChainsAction {
    /// Show a chain as it would run for a lead: each step's time and rendered text.
    /// Nothing is sent or written.
    Preview {
        /// The chain's name, as in chains.toml.
        chain: String,
        /// The lead's id in the CRM.
        #[arg(long, value_name = "ID")]
        lead: String,
        /// As if the lead were enrolled at this moment (RFC 3339, such as
        /// 2026-03-03T14:00:00+03:00) instead of now.
        #[arg(long, value_name = "TIME")]
        at: Option<DateTime<chrono::FixedOffset>>,
    },
    /// The enrolments the robot keeps: each with its next step and when it is due.
    List {
        /// Only this lead's.
        #[arg(long, value_name = "ID")]
        lead: Option<String>,
    },
    /// Stops every running chain of a lead.
    Stop {
        /// The lead's id in the CRM.
        #[arg(long, value_name = "ID")]
        lead: String,
    },
}

/// Runs `chains`.
pub async fn run(dir: &Path, action: ChainsAction) -> anyhow::Result<()> {
    let ctx = context::load(dir)?;
    let store = ctx.open_store().await?;
    let Some(rules) = ctx.chain_rules()? else {
        bail!(
            "there is no {} in {}",
            crate::config::chains::FILE_NAME,
            dir.display()
        );
    };
    match action {
        ChainsAction::Preview { chain, lead, at } => {
            let connected = ctx.connected(&store)?;
            // No channel is needed: nothing is sent.
            let engine = ChainEngine::new(connected.crm, rules, Channels::default());
            let at = at.map_or_else(Utc::now, |t| t.with_timezone(&Utc));
            let preview = engine
                .preview(&store, &chain, &lead, at)
                .await
                .context("cannot preview the chain")?;
            println!("chain «{}»", preview.chain);
            println!(
                "lead {lead} «{}», priority {}, client's time zone {}",
                preview.lead_name,
                preview
                    .priority
                    .map_or_else(|| "not scored (taken as 1)".to_owned(), |p| p.to_string()),
                preview.zone
            );
            println!(
                "enrolled at {} (nothing is sent)",
                at.with_timezone(&preview.zone).format("%Y-%m-%d %H:%M")
            );
            for s in &preview.steps {
                println!();
                println!(
                    "{}. {}  {} — {}",
                    s.index + 1,
                    s.at.with_timezone(&preview.zone)
                        .format("%a %Y-%m-%d %H:%M"),
                    s.title,
                    s.action
                );
                if s.because != "as written" {
                    println!("   because: {}", s.because);
                }
                if let Some(subject) = &s.subject {
                    println!("   Тема: {subject}");
                }
                if let Some(text) = &s.text {
                    for line in text.lines() {
                        println!("   | {line}");
                    }
                }
            }
        }
        ChainsAction::List { lead } => {
            let list = match &lead {
                Some(id) => store.enrolments_of(id).await?,
                None => store.enrolments().await?,
            };
            if list.is_empty() {
                println!("no enrolments");
            }
            for r in list {
                let e = &r.enrolment;
                let steps = rules.chains.chain(&e.chain).map_or(0, |c| c.steps.len());
                let state = match (&r.stopped, r.due_at) {
                    (Some(s), _) => format!(
                        "stopped {}: {}",
                        s.at.format("%Y-%m-%d %H:%M UTC"),
                        s.reason
                    ),
                    (None, Some(due)) => format!(
                        "step {} of {steps} due {}",
                        e.next + 1,
                        due.format("%Y-%m-%d %H:%M UTC")
                    ),
                    (None, None) if e.next >= steps => "finished".to_owned(),
                    (None, None) => format!("step {} of {steps} not planned yet", e.next + 1),
                };
                println!("lead {}  «{}»  {state}", e.lead_id, e.chain);
            }
        }
        ChainsAction::Stop { lead } => {
            let connected = ctx.connected(&store)?;
            let engine = Arc::new(ChainEngine::new(connected.crm, rules, Channels::default()));
            let stopped = engine
                .stop_lead(&store, &lead, "stopped by hand (`chains stop`)")
                .await?;
            if stopped.is_empty() {
                println!("lead {lead} has no running chain");
            }
            for key in stopped {
                println!("stopped {key}");
            }
        }
    }
    Ok(())
}
