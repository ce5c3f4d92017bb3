//! `sales-robot report forecast|plans|channels --month YYYY-MM`: the head of sales's reports
//! over the score ledger, printed as a table and, with `--csv`, written for a spreadsheet.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::adapters::spend;
use crate::cli::context;
use crate::cli::table::{Cell, Table};
use crate::domain::report::{self, Channel, ChannelFigures, Month, PlanFact};

/// Which report.
#[derive(Debug, clap::Subcommand)]
pub enum ReportKind {
    /// The month's forecast (the sum of the forecast profit of the leads created in it)
    /// against the profit of those won, and how many are won, lost and still open.
    Forecast(MonthArgs),
    /// Each manager's plan (the forecast profit of the leads he received in the month)
    /// against his fact (the profit of those he won), the biggest plan first.
    Plans(MonthArgs),
    /// For each source and channel: the leads, their expected profit by priority (П1–П5),
    /// what was won, and with `--spend` the money spent and the expected profit per rouble.
    Channels {
        /// The month and the CSV output.
        #[command(flatten)]
        month: MonthArgs,
        /// A CSV file with the header `source,channel,spend`: roubles spent in the month on
        /// a channel of a source, or on the whole source when the channel is empty (the
        /// source's channels are then shown together). Semicolons and decimal commas, as
        /// Russian Excel saves them, are read too.
        #[arg(long, value_name = "FILE.csv")]
        spend: Option<PathBuf>,
    },
}

/// The month of a report and where its CSV goes.
#[derive(Debug, clap::Args)]
pub struct MonthArgs {
    /// The month: the leads created in it count. A calendar month in UTC for now.
    #[arg(long, value_name = "YYYY-MM")]
    pub month: Month,
    /// Also write the rows as CSV (plain numbers, a header line) to FILE; `-` prints only
    /// the CSV, to standard output.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

/// Runs `report`.
pub async fn run(config_dir: &Path, kind: ReportKind) -> anyhow::Result<()> {
    // A bad spend file is found before anything else is opened.
    let spend = match &kind {
        ReportKind::Channels {
            spend: Some(path), ..
        } => spend::read(path)?,
        _ => Vec::new(),
    };
    let args = match &kind {
        ReportKind::Forecast(a) | ReportKind::Plans(a) => a,
        ReportKind::Channels { month, .. } => month,
    };
    let month = args.month;
    let store = context::load(config_dir)?.open_store().await?;
    let rows = store
        .ledger(month.start(), month.end())
        .await
        .context("cannot read the score ledger")?;
    let (title, table) = match &kind {
        ReportKind::Forecast(_) => (
            format!("Прогноз на {month} (лиды, созданные в этом месяце, UTC)"),
            forecast_table(month, &report::forecast(&rows)),
        ),
        ReportKind::Plans(_) => (
            format!("Планы менеджеров на {month}"),
            plans_table(&report::plans(&rows)),
        ),
        ReportKind::Channels { spend: file, .. } => (
            format!("Источники и каналы за {month}"),
            channels_table(&report::channels(&rows, &spend), file.is_some()),
        ),
    };
    show(&title, &table, args.csv.as_deref())
}

fn forecast_table(month: Month, f: &report::Forecast) -> Table {
    let mut t = Table::new(&[
        "Месяц",
        "Лидов",
        "Прогноз",
        "Факт",
        "Факт / прогноз",
        "Выиграно",
        "Проиграно",
        "В работе",
        "Прогноз по открытым",
    ]);
    t.row(vec![
        Cell::text(month.to_string()),
        Cell::Count(f.leads),
        Cell::Money(f.forecast),
        Cell::Money(f.won_profit),
        Cell::percent(f.accuracy()),
        Cell::Count(f.won),
        Cell::Count(f.lost),
        Cell::Count(f.open),
        Cell::Money(f.open_forecast),
    ]);
    t
}

fn plans_table(p: &report::Plans) -> Table {
    let mut t = Table::new(&["Менеджер", "Лидов", "План", "Факт", "Факт / план"]);
    let cells = |who: String, f: &PlanFact| {
        vec![
            Cell::Text(who),
            Cell::Count(f.leads),
            Cell::Money(f.plan),
            Cell::Money(f.fact),
            Cell::percent(f.percent()),
        ]
    };
    for m in &p.managers {
        let who = m
            .manager_id
            .clone()
            .unwrap_or_else(|| "без менеджера".into());
        t.row(cells(who, &m.figures));
    }
    t.total(cells("Итого".into(), &p.total));
    t
}

fn channels_table(c: &report::Channels, with_spend: bool) -> Table {
    let mut headers = vec![
        "Источник",
        "Канал",
        "Лидов",
        "П1",
        "П2",
        "П3",
        "П4",
        "П5",
        "Ожидаемая прибыль",
        "Факт",
    ];
    if with_spend {
        headers.extend(["Расход", "Прибыль на 1 ₽"]);
    }
    let mut t = Table::new(&headers);
    let cells = |source: String, channel: String, f: &ChannelFigures, per_rouble: Option<f64>| {
        let mut cells = vec![
            Cell::Text(source),
            Cell::Text(channel),
            Cell::Count(f.leads),
        ];
        cells.extend(f.expected_by_priority.iter().map(|&e| Cell::Money(e)));
        cells.extend([Cell::Money(f.expected()), Cell::Money(f.won_profit)]);
        if with_spend {
            cells.extend([Cell::money(f.spend), Cell::ratio(per_rouble)]);
        }
        cells
    };
    for row in &c.rows {
        let source = row.source.clone().unwrap_or_else(|| "(не указан)".into());
        let channel = match &row.channel {
            Channel::Named(name) => name.clone(),
            Channel::Unknown => "(не указан)".into(),
            Channel::All => "все каналы".into(),
        };
        t.row(cells(
            source,
            channel,
            &row.figures,
            row.figures.per_rouble(),
        ));
    }
    t.total(cells(
        "Итого".into(),
        String::new(),
        &c.total,
        c.per_rouble(),
    ));
    t
}

/// Prints the table, and writes the CSV where asked; `-` prints the CSV instead.
fn show(title: &str, table: &Table, csv: Option<&Path>) -> anyhow::Result<()> {
    match csv {
        Some(path) if path == Path::new("-") => return to_stdout(&table.csv()),
        Some(path) => std::fs::write(path, table.csv())
            .with_context(|| format!("cannot write the CSV to {}", path.display()))?,
        None => {}
    }
    to_stdout(&format!("{title}\n\n{}", table.text()))
}

fn to_stdout(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // Piped into `head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
