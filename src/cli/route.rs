//! `sales-robot route --lead ID [--dry-run]`: who gets a lead of the CRM now, and where
//! every other manager stands. With `--dry-run` it reads the CRM and the store and writes to
//! neither; without, it hands the lead out as `serve` does a new one (responsible user,
//! first task, note) or puts it on the pending list.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};

use crate::cli::context;
use crate::cli::simulate::{minutes, rules};
use crate::domain::priority::Priority;
use crate::domain::routing::{Board, Decision, Heard, OverflowTo, Request, Router, Scope, Verdict};
use crate::service::routing::{RouteLeads, Routed, RoutingSetup};
use crate::service::scoring::{ScoreLeads, routing_facts};

/// Arguments of `route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The lead's id in the CRM.
    #[arg(long, value_name = "ID")]
    pub lead: String,
    /// Only say who would get it and why; nothing is written. Without it the lead is
    /// handed out now, as `serve` hands out a new lead.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide as of this moment (RFC 3339, such as 2026-11-23T11:00:00+03:00) instead of
    /// now; presence and today's loads are still read from the store as they are.
    #[arg(long, value_name = "TIME")]
    pub at: Option<DateTime<chrono::FixedOffset>>,
}

/// Runs `route`.
pub async fn run(dir: &Path, args: RouteArgs) -> anyhow::Result<()> {
    let now = args.at.map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let (roster, routing) = rules(dir)?;
    let ctx = context::load(dir)?;
    let store = ctx.open_store().await?;
    let connected = ctx.connected(&store)?;
    let description = connected.description.clone();
    let crm = connected.crm.clone();

    // The priority comes from the scoring when the robot can score; otherwise the middle.
    let (lead, priority, why_priority) = match ctx.scoring()? {
        Ok(setup) => {
            let scoring = ScoreLeads::new(
                connected.crm,
                setup,
                connected.source,
                connected.lead_entity,
            );
            let Some((lead, _, a)) = scoring.explain(&args.lead).await? else {
                anyhow::bail!("there is no lead {} in {description}", args.lead);
            };
            (lead, a.decision.priority, a.decision.why)
        }
        Err(why) => {
            let Some(lead) = connected.crm.lead(&args.lead).await? else {
                anyhow::bail!("there is no lead {} in {description}", args.lead);
            };
            (
                lead,
                Priority::new(3)?,
                format!("not scored ({why}): taken as 3"),
            )
        }
    };

    if !args.dry_run {
        let router = RouteLeads::new(
            crm,
            RoutingSetup {
                roster: Arc::new(roster),
                rules: Arc::new(routing),
            },
        )
        .with_clock(Arc::new(move || now));
        println!("lead {} «{}»", lead.id, lead.name);
        println!("priority {priority}: {why_priority}");
        let routed = router
            .route_now(&lead, priority, &store)
            .await
            .context("routing failed")?;
        match routed {
            Routed::Assigned { manager, reasons } => {
                println!("given to {manager}: {}", reasons.join("; "));
            }
            Routed::Waiting { until, why } => {
                println!("waits for a manager: {why}");
                if let Some(t) = until {
                    println!("looked at again by {} at the latest", t.to_rfc3339());
                }
            }
            Routed::NotRouted { why } => println!("not given to a person: {why}"),
            Routed::AlreadyGiven { manager } => {
                println!("already given to {manager}: nothing new was written")
            }
            Routed::Kept => println!("kept by its manager"),
            Routed::Closed => println!("the lead is closed: nothing to route"),
            Routed::Busy => println!("a worker of `serve` is routing this lead right now"),
        }
        return Ok(());
    }
    let mut presence: Vec<Option<Heard>> = Vec::with_capacity(roster.managers.len());
    let mut received = Vec::with_capacity(roster.managers.len());
    // Each manager's count is of their own calendar day.
    let mut loads: HashMap<chrono::NaiveDate, HashMap<String, u32>> = HashMap::new();
    for m in &roster.managers {
        let heard = store
            .presence(&m.id)
            .await
            .with_context(|| format!("cannot read the presence of {}", m.name))?;
        presence.push(heard.as_ref().map(Heard::from));
        let day = m.local(now).date();
        let today = match loads.entry(day) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(store.loads(day).await.context("cannot read the loads")?)
            }
        };
        received.push(today.get(&m.id).copied().unwrap_or(0));
    }
    // A lead already waiting has waited since it was put on the pending list.
    let waited = store
        .pending()
        .await
        .context("cannot read the pending leads")?
        .into_iter()
        .find(|p| p.lead_id == lead.id)
        .map_or(TimeDelta::zero(), |p| {
            (now - p.since).max(TimeDelta::zero())
        });

    let facts = routing_facts(&lead);
    let request = Request {
        facts: &facts,
        priority,
        waited,
        group: None,
    };
    let board = Board {
        presence: &presence,
        received: &received,
    };
    let router = Router {
        roster: &roster,
        rules: &routing,
    };
    let decision = router.decide(&request, &board, now, &mut rand::rng());
    let call = router.roll_call(&request, &board, now);

    let local = |t: DateTime<Utc>| t.with_timezone(&roster.zone).format("%Y-%m-%d %H:%M %Z");
    println!("lead {} «{}»", lead.id, lead.name);
    println!("priority {priority}: {why_priority}");
    if !waited.is_zero() {
        println!("waiting for {}", minutes(waited));
    }
    match call.group {
        Some(g) => println!("group «{}»", roster.groups[g].name),
        None => println!("no group of routing.toml takes it"),
    }
    println!("at {}:", local(now));
    match &decision {
        Decision::Assign {
            manager,
            reasons,
            task,
        } => {
            let m = &roster.managers[*manager];
            println!("  would go to {} (id {})", m.name, m.id);
            for r in reasons {
                println!("    {r}");
            }
            if let Some(t) = task {
                println!("  first task «{}», due {}", t.text, local(t.due));
            }
        }
        Decision::Wait { until, why } => {
            println!("  would wait: {why}");
            match until {
                Some(t) => println!("  to be tried again at {} at the latest", local(*t)),
                None => println!("  to be tried again when a manager's presence changes"),
            }
        }
        Decision::Overflow { to, why } => {
            let target = match to {
                OverflowTo::Group(g) => format!("group «{}»", roster.groups[*g].name),
                OverflowTo::Manager(m) => format!("group lead {}", roster.managers[*m].name),
            };
            println!("  would overflow to the {target}: {why}");
        }
        Decision::NotRouted { why } => println!("  would not be routed: {why}"),
    }
    println!("roll call:");
    let width = roster
        .managers
        .iter()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    for line in &call.lines {
        let m = &roster.managers[line.manager];
        let scope = match line.scope {
            Scope::Specialist(s) => format!("specialist «{}»", routing.specialisations[s].name),
            Scope::Group => "group".into(),
            Scope::Outside => "other group".into(),
        };
        let load = |l: f64| format!("{l:.1}").replace('.', ",");
        let verdict = match line.verdict {
            Verdict::Excluded(r) => format!("excluded: {}", r.describe()),
            Verdict::Paused(l) => format!("paused, ahead of the others: load {}", load(l)),
            Verdict::Free(l) => format!("can take it: load {}", load(l)),
        };
        let name = format!("{:<width$}", m.name);
        println!(
            "  {name}  {:<10} {:<24} today {:>3}  {verdict}",
            roster.groups[m.group].name, scope, received[line.manager]
        );
    }
    println!("dry run: nothing was written to the CRM or the store");
    Ok(())
}
