//! The binary's commands, each a thin call into the layers. This is the binary's edge:
//! errors are `anyhow` here and nowhere below.

pub mod bench;
pub mod bench_chains;
pub mod bench_forecast;
pub mod bench_scoring;
pub mod catchup;
pub mod chains;
pub mod context;
pub mod crm;
pub mod dead;
pub mod replay;
pub mod report;
pub mod route;
pub mod score;
pub mod serve;
pub mod simulate;
pub mod table;
pub mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The robot of a sales department on amoCRM or Bitrix24.
#[derive(Debug, Parser)]
#[command(name = "sales-robot", version, about)]
pub struct Cli {
    /// The folder of rule files.
    #[arg(
        long,
        global = true,
        env = "ROBOT_CONFIG_DIR",
        default_value = "config"
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take webhooks and handle them: the HTTP intake and a worker in one process.
    Serve {
        /// Only take webhooks; leave handling them to `work` processes on the same Redis.
        #[arg(long)]
        no_worker: bool,
    },
    /// Only handle queued jobs (a worker without HTTP), to scale out on Redis.
    Work,
    /// Post webhook bodies from files to a running robot, or print what they parse into.
    Replay(replay::ReplayArgs),
    /// Check the rule files: "ok", or every problem with its file, line and reason.
    CheckConfig,
    /// Jobs that failed every attempt.
    Dead {
        /// `list` or `retry`.
        #[command(subcommand)]
        action: dead::DeadAction,
    },
    /// See the CRM as the robot sees it.
    Crm {
        /// `lead ID` or `check`.
        #[command(subcommand)]
        action: crm::CrmAction,
    },
    /// Connect the robot to a CRM that uses OAuth.
    Auth {
        /// Which CRM.
        #[command(subcommand)]
        action: crm::AuthAction,
    },
    /// Reports over the score ledger: the forecast, the managers' plans, the channels.
    /// Months are calendar months in UTC for now.
    Report {
        /// `forecast`, `plans` or `channels`.
        #[command(subcommand)]
        report: report::ReportKind,
    },
    /// Read what the CRM changed since a day and queue what no webhook brought (after a
    /// downtime, or on the first start).
    Catchup(catchup::CatchupArgs),
    /// Learn the scoring model from past leads (a CSV export), and say how good it is.
    Train(train::TrainArgs),
    /// Score leads: a CSV file gets each lead's chance, expected profit, priority and reasons.
    Score(score::ScoreArgs),
    /// Hand a lead of the CRM to a manager now; with `--dry-run`, only say who would get
    /// it and why not the others.
    Route(route::RouteArgs),
    /// Follow-up chains: preview one for a lead, list the enrolments, stop a lead's chains.
    Chains {
        /// `preview`, `list` or `stop`.
        #[command(subcommand)]
        action: chains::ChainsAction,
    },
    /// Simulate a day of routing on the config's roster and rules.
    Simulate {
        /// What to simulate.
        #[command(subcommand)]
        what: simulate::SimulateWhat,
    },
    /// Measure the robot's speed, or write synthetic leads to measure its scoring on.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_worker } => serve::serve(&cli.config, true, !no_worker).await,
        Command::Work => serve::serve(&cli.config, false, true).await,
        Command::Replay(args) => replay::run(&cli.config, args).await,
        Command::CheckConfig => context::check_config(&cli.config),
        Command::Dead { action } => dead::run(&cli.config, action).await,
        Command::Crm { action } => crm::run(&cli.config, action).await,
        Command::Auth { action } => crm::auth(&cli.config, action).await,
        Command::Report { report } => report::run(&cli.config, report).await,
        Command::Catchup(args) => catchup::run(&cli.config, args).await,
        Command::Train(args) => train::run(&cli.config, args).await,
        Command::Score(args) => score::run(&cli.config, args).await,
        Command::Route(args) => route::run(&cli.config, args).await,
        Command::Chains { action } => chains::run(&cli.config, action).await,
        Command::Simulate { what } => simulate::run(&cli.config, what),
        Command::Bench { what } => bench::run(&cli.config, what).await,
    }
}
