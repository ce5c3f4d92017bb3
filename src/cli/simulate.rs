//! `sales-robot simulate day`: a day of the department on the config's roster and routing
//! rules, each lead routed by the pure decision; prints who got what, how even it came out,
//! how long leads waited and how many rules were broken (there should be none).

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{Datelike, NaiveDate, TimeDelta};

use crate::cli::context;
use crate::cli::table::{Cell, Table};
use crate::config::{managers, routing};
use crate::domain::routing::{Roster, RoutingRules};
use crate::simulate::{self, DayReport, DaySettings};

/// What to simulate.
#[derive(Debug, clap::Subcommand)]
pub enum SimulateWhat {
    /// One working day of leads and presence.
    Day(DayArgs),
}

/// Arguments of `simulate day`.
#[derive(Debug, clap::Args)]
pub struct DayArgs {
    /// How many leads arrive during the day.
    #[arg(long, default_value_t = 500)]
    pub leads: usize,
    /// The seed: the same seed gives the same day.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The date, in the company's time zone (its weekday picks the shifts).
    #[arg(long, default_value = "2026-11-23")]
    pub date: NaiveDate,
}

/// Runs `simulate`.
pub fn run(dir: &Path, what: SimulateWhat) -> anyhow::Result<()> {
    match what {
        SimulateWhat::Day(args) => day(dir, args),
    }
}

/// The roster and routing rules of the config folder; an error when either is missing or
/// wrong.
pub fn rules(dir: &Path) -> anyhow::Result<(Roster, RoutingRules)> {
    context::load(dir)?.routing_rules()?.with_context(|| {
        format!(
            "{}: routing needs {} and {} (the shipped config folder has examples)",
            dir.display(),
            managers::FILE_NAME,
            routing::FILE_NAME
        )
    })
}

fn day(dir: &Path, args: DayArgs) -> anyhow::Result<()> {
    let (roster, rules) = rules(dir)?;
    let settings = DaySettings {
        date: args.date,
        leads: args.leads,
        seed: args.seed,
    };
    let started = Instant::now();
    let report = simulate::day(&roster, &rules, settings);
    let took = started.elapsed();
    print!("{}", describe(&roster, &settings, &report));
    println!(
        "время: {:.2} с на {} решений",
        took.as_secs_f64(),
        report.decisions
    );
    Ok(())
}

/// A wait as people say it: "45 с", "12 мин", "1 ч 05 мин".
pub fn minutes(d: TimeDelta) -> String {
    let s = d.num_seconds();
    if s < 60 {
        format!("{s} с")
    } else if s < 3600 {
        format!("{} мин", s / 60)
    } else {
        format!("{} ч {:02} мин", s / 3600, s % 3600 / 60)
    }
}

fn number(x: f64, digits: usize) -> String {
    format!("{x:.digits$}").replace('.', ",")
}

/// The day's report as printed.
pub fn describe(roster: &Roster, settings: &DaySettings, r: &DayReport) -> String {
    let mut out = format!(
        "день {} ({}), лидов: {}, seed {}; время компании — {}\n\n",
        settings.date,
        ["пн", "вт", "ср", "чт", "пт", "сб", "вс"]
            [settings.date.weekday().num_days_from_monday() as usize],
        r.leads,
        settings.seed,
        roster.zone.name()
    );
    let mut t = Table::new(&[
        "Менеджер",
        "Группа",
        "Вес",
        "Часов",
        "Лидов",
        "Из них переливом",
        "Лидов в час",
    ]);
    for d in &r.managers {
        let m = &roster.managers[d.manager];
        t.row(vec![
            Cell::text(&m.name),
            Cell::text(&roster.groups[m.group].name),
            Cell::text(number(m.weight, 1)),
            Cell::text(number(d.hours, 1)),
            Cell::Count(u64::from(d.leads)),
            Cell::Count(u64::from(d.by_overflow)),
            Cell::ratio(d.per_hour()),
        ]);
    }
    out.push_str(&t.text());
    out.push_str("\nразброс среди менеджеров одной группы с одинаковым весом (max − min):\n");
    if r.spreads.is_empty() {
        out.push_str("  нет групп, где работали двое с одинаковым весом\n");
    }
    for s in &r.spreads {
        out.push_str(&format!(
            "  {}, вес {} ({} чел.): лидов в час {}, нагрузка к концу дня {} лида \
             (без переливов руководителю {})\n",
            roster.groups[s.group].name,
            number(s.weight, 1),
            s.managers,
            number(s.per_hour, 2),
            number(s.load, 1),
            number(s.routed_load, 1)
        ));
    }
    out.push_str(&format!(
        "\nлиды: {} — менеджерам {}, руководителям групп после ожидания {}, \
         переливов в другую группу {}, не отданы человеку (приоритет 5) {}, ждут на конец дня {}",
        r.leads, r.assigned, r.to_group_lead, r.to_other_group, r.not_routed, r.pending
    ));
    if r.pending > 0 {
        out.push_str(&format!(" (дольше всех {})", minutes(r.pending_longest)));
    }
    out.push('\n');
    out.push_str(&format!(
        "ожидание: ждали {} лидов; медиана {}, p95 {}, максимум {}\n",
        r.waits.count,
        minutes(r.waits.median),
        minutes(r.waits.p95),
        minutes(r.waits.max)
    ));
    let breaks: Vec<String> = r
        .breaches
        .iter()
        .map(|(b, n)| format!("{b:?}: {n}"))
        .collect();
    out.push_str(&format!(
        "нарушений правил: {}{}\n",
        r.breaks(),
        if breaks.is_empty() {
            String::new()
        } else {
            format!(" ({})", breaks.join(", "))
        }
    ));
    out
}
