//! `sales-robot bench forecast`: the month's forecast against the actual on a held-out
//! synthetic year, at a volume where one month's actual is not mostly luck.

use std::time::Instant;

use anyhow::{Context as _, bail};
use chrono::{TimeZone, Utc};

use crate::domain::scoring::{Settings, train};
use crate::synth::forecast::held_out_year;
use crate::synth::{self, Generator};

/// How far a month's actual may be from its forecast.
const WITHIN: f64 = 0.03;

/// Arguments of `bench forecast`.
#[derive(Debug, clap::Args)]
pub struct ForecastArgs {
    /// Past leads a month in the training year.
    #[arg(long, default_value_t = 10_000)]
    pub train_per_month: usize,
    /// Leads a month in the held-out year.
    #[arg(long, default_value_t = 200_000)]
    pub per_month: usize,
    /// The generator's seed (the held-out year uses the next one).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `bench forecast`: fails when a month is off by more than 3 %.
pub fn forecast(args: ForecastArgs) -> anyhow::Result<()> {
    if args.train_per_month == 0 || args.per_month == 0 {
        bail!("--train-per-month and --per-month must be at least 1");
    }
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .context("the synthetic year's start")?;
    let (features, margins) = (synth::features(), synth::margins());
    let past: Vec<_> = Generator::new(args.seed, start, 12.0)
        .leads(12, args.train_per_month)
        .into_iter()
        .map(|s| s.lead)
        .collect();
    let clock = Instant::now();
    let (model, _) = train(&features, &margins, &Settings::default(), &past)
        .context("training on the synthetic year")?;
    println!(
        "trained on {} synthetic leads (12 months × {}) in {:.1} s; the next year: {} leads a month, drawn on from where the past ended",
        past.len(),
        args.train_per_month,
        clock.elapsed().as_secs_f64(),
        args.per_month
    );
    let clock = Instant::now();
    let months = held_out_year(
        &model,
        &features,
        &margins,
        &mut Generator::new(args.seed + 1, start, 12.0),
        12,
        args.per_month,
    );
    println!(
        "made and scored {} leads in {:.1} s",
        12 * args.per_month,
        clock.elapsed().as_secs_f64()
    );
    println!("month  forecast, ₽        actual, ₽   actual/forecast  forecast/best  luck (1 sd)");
    let mut worst: f64 = 0.0;
    let (mut forecast, mut actual) = (0.0, 0.0);
    for m in &months {
        println!(
            "{:>5}  {:>13.0}  {:>15.0}  {:>14.1} %  {:>11.1} %  ±{:.1} %",
            m.month,
            m.forecast,
            m.actual,
            m.actual_ratio() * 100.0,
            m.model_ratio() * 100.0,
            m.luck * 100.0
        );
        worst = worst.max((m.actual_ratio() - 1.0).abs());
        forecast += m.forecast;
        actual += m.actual;
    }
    println!(
        "year: actual/forecast {:.1} %; the worst month off by {:.1} % (the target: within {:.0} %)",
        actual / forecast * 100.0,
        worst * 100.0,
        WITHIN * 100.0
    );
    if worst <= WITHIN {
        println!("check: every month within ±3 % of its forecast");
        Ok(())
    } else {
        bail!("check failed: a month is off by more than 3 %")
    }
}
