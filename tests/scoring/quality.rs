//! What a head of sales would check before trusting the numbers: are the chances as good
//! as the true ones allow, and does the month's forecast come true?

use chrono::{Datelike, TimeZone, Utc};
use sales_robot::domain::scoring::metrics::brier;
use sales_robot::domain::scoring::{Settings, train};
use sales_robot::synth::{self, Generator};

/// Learn on a year; predict the next year month by month.
#[test]
fn chances_near_the_oracle_and_forecasts_within_three_percent() {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut generator = Generator::new(7, start, 12.0);
    let past: Vec<_> = generator.leads(12, 10_000);
    let leads: Vec<_> = past.iter().map(|s| s.lead.clone()).collect();
    let features = synth::features();
    let margins = synth::margins();
    let (model, evaluation) = train(&features, &margins, &Settings::default(), &leads).unwrap();
    eprintln!(
        "held out {} leads: AUC {:.3}, Brier {:.4}, actual/expected profit {:.3}",
        evaluation.holdout_leads,
        evaluation.auc,
        evaluation.brier,
        evaluation.profit_ratio()
    );

    // The next year: drawn on from where the past ended.
    let mut next = Generator::new(8, start, 12.0);
    let year: Vec<_> = (0..12)
        .flat_map(|m| {
            (0..PER_MONTH).map(move |i| 12.0 + f64::from(m) + i as f64 / PER_MONTH as f64)
        })
        .map(|at| next.lead(at))
        .collect();
    let p: Vec<f64> = year
        .iter()
        .map(|s| {
            model
                .score(&features, &margins, &s.lead.observation, s.lead.budget)
                .probability
        })
        .collect();
    let truth: Vec<f64> = year.iter().map(|s| s.true_chance).collect();
    let won: Vec<bool> = year.iter().map(|s| s.lead.is_won()).collect();
    let (ours, oracle) = (brier(&p, &won), brier(&truth, &won));
    eprintln!(
        "brier {ours:.5} oracle {oracle:.5} ratio {:.4}",
        ours / oracle
    );
    assert!(
        ours <= oracle * 1.02,
        "Brier {ours} vs the oracle's {oracle}"
    );

    // Per month: the forecast (Σ budget × margin × chance), the actual won profit, the
    // oracle's forecast (the same sum with the true chances) and the variance that chance
    // alone gives the actual.
    let mut months = std::collections::BTreeMap::<u32, [f64; 4]>::new();
    for (s, p) in year.iter().zip(&p) {
        let budget = s.lead.budget.unwrap();
        let profit = budget * s.margin;
        let m = months.entry(s.lead.created_at.month()).or_default();
        m[0] += profit * p;
        m[1] += s.lead.revenue(budget) * s.margin;
        m[2] += profit * s.true_chance;
        m[3] += profit * profit * s.true_chance * (1.0 - s.true_chance);
    }
    let mut year_total = [0.0; 2];
    for (month, [forecast, actual, oracle, variance]) in &months {
        let (model_error, off) = (forecast / oracle - 1.0, actual / forecast - 1.0);
        let noise = variance.sqrt() / oracle;
        eprintln!(
            "month {month:>2}: actual/forecast {:>6.1} %   forecast/oracle {:>6.1} %   chance alone moves the actual by ±{:.1} % (1 sd)",
            (1.0 + off) * 100.0,
            (1.0 + model_error) * 100.0,
            noise * 100.0
        );
        // The model's own error: its forecast against the best one possible.
        assert!(
            model_error.abs() <= 0.03,
            "month {month}: forecast/oracle off by {model_error}"
        );
        // Against the actual, within 3 % plus what luck alone can do to one month.
        assert!(
            off.abs() <= 0.03 + 3.5 * noise,
            "month {month}: actual/forecast off by {off}"
        );
        year_total[0] += forecast;
        year_total[1] += actual;
    }
    let year_off = year_total[1] / year_total[0] - 1.0;
    eprintln!("year: actual/forecast {:.1} %", (1.0 + year_off) * 100.0);
    assert!(
        year_off.abs() <= 0.03,
        "the year's actual/forecast off by {year_off}"
    );
}

/// Leads a month in the held-out year: five times the seed company's 4,000, so that one
/// month's actual is not mostly luck (at 20,000 a month chance alone moves it by about
/// 2 %, at 4,000 by about 4 %; the seed reports 94–106 %).
const PER_MONTH: usize = 20_000;

/// The interview's lifetime value: a company with real production that buys small and
/// often must score above a reseller: its lifetime factor, not only its chance.
#[test]
fn learning_value_puts_production_above_a_reseller() {
    use sales_robot::domain::scoring::{Learn, Value};
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut generator = Generator::new(21, start, 12.0);
    generator.lifetime = true;
    let leads: Vec<_> = generator
        .leads(12, 3_000)
        .into_iter()
        .map(|s| s.lead)
        .collect();
    let features = synth::features();
    let margins = synth::margins();
    let settings = Settings {
        learn: Learn::Value { months: 12 },
        ..Settings::default()
    };
    let (model, _) = train(&features, &margins, &settings, &leads).unwrap();
    let company = |activity: &str| {
        let cat = |s: &str| Some(Value::Category(s.into()));
        vec![
            cat("svarka-market.ru"),
            cat("почта"),
            cat("Расходные материалы"),
            cat("Сварог"),
            cat("Юрлицо"),
            cat(activity),
            cat("профильная"),
            Some(Value::Number(150e6)),
            Some(Value::Number(0.0)),
            None,
        ]
    };
    let score =
        |activity: &str| model.score(&features, &margins, &company(activity), Some(20_000.0));
    let (production, reseller) = (score("производство"), score("торговля"));
    eprintln!(
        "production: chance {:.3}, factor {:.2}, expected {:.0}; reseller: chance {:.3}, factor {:.2}, expected {:.0}",
        production.probability,
        production.value_factor,
        production.expected_profit,
        reseller.probability,
        reseller.value_factor,
        reseller.expected_profit
    );
    assert!(production.value_factor > 2.0 * reseller.value_factor);
    assert!(production.expected_profit > 2.0 * reseller.expected_profit);
    // The month's forecast stays one sale: the lifetime factor is for the priority only.
    assert!((production.forecast_profit - 20_000.0 * 0.22 * production.probability).abs() < 1e-6);
}
