//! The month's forecast against what came true, on a synthetic year the model never saw:
//! the check a head of sales makes before trusting the forecast report.

use super::Generator;
use crate::domain::scoring::{Feature, Margins, Model};

/// One month of the held-out year.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MonthCheck {
    /// The month of the held-out year, 1–12.
    pub month: u32,
    /// The forecast: Σ budget × margin × the model's chance.
    pub forecast: f64,
    /// The won profit.
    pub actual: f64,
    /// The best forecast possible: the same sum with the true chances.
    pub oracle: f64,
    /// How far chance alone moves the actual from the oracle, as a share of it (one
    /// standard deviation).
    pub luck: f64,
    /// The month's leads.
    pub leads: usize,
    /// The model's Brier score on the month's leads.
    pub brier: f64,
    /// The Brier score of the true chances: the best possible.
    pub best_brier: f64,
}

impl MonthCheck {
    /// The actual as a share of the forecast (1.0 = spot on).
    pub fn actual_ratio(&self) -> f64 {
        self.actual / self.forecast
    }

    /// The forecast as a share of the best one possible.
    pub fn model_ratio(&self) -> f64 {
        self.forecast / self.oracle
    }
}

/// Scores `per_month` leads a month for the twelve months that follow `after_months`
/// months of `generator`'s time, and sums each month's forecast, actual, oracle and luck.
/// The leads are made and scored one by one: a year of millions takes no memory.
pub fn held_out_year(
    model: &Model,
    features: &[Feature],
    margins: &Margins,
    generator: &mut Generator,
    after_months: u32,
    per_month: usize,
) -> Vec<MonthCheck> {
    let mut months: Vec<MonthCheck> = Vec::with_capacity(12);
    let mut variance = [0.0f64; 12];
    for m in 0..12u32 {
        let mut check = MonthCheck {
            month: m + 1,
            ..MonthCheck::default()
        };
        for i in 0..per_month {
            let at = f64::from(after_months + m) + i as f64 / per_month as f64;
            let s = generator.lead(at);
            let budget = s.lead.budget.unwrap_or_default();
            let profit = budget * s.margin;
            let p = model
                .score(features, margins, &s.lead.observation, s.lead.budget)
                .probability;
            check.forecast += profit * p;
            check.actual += s.lead.revenue(budget) * s.margin;
            check.oracle += profit * s.true_chance;
            variance[m as usize] += profit * profit * s.true_chance * (1.0 - s.true_chance);
            let won = if s.lead.is_won() { 1.0 } else { 0.0 };
            check.brier += (p - won) * (p - won);
            check.best_brier += (s.true_chance - won) * (s.true_chance - won);
        }
        check.luck = variance[m as usize].sqrt() / check.oracle;
        check.leads = per_month;
        check.brier /= per_month as f64;
        check.best_brier /= per_month as f64;
        months.push(check);
    }
    months
}
