//! The month's forecast against the fact: the sum of what each lead created in the month
//! was expected to bring, beside what the won ones did bring.

use crate::domain::ledger::LedgerRow;

/// The forecast of one month's leads and how it is coming true.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forecast {
    /// Leads created in the month.
    pub leads: u64,
    /// Of them, won.
    pub won: u64,
    /// Of them, lost.
    pub lost: u64,
    /// Of them, not closed yet.
    pub open: u64,
    /// The forecast: the sum of every lead's forecast profit, in roubles.
    pub forecast: f64,
    /// The fact: the profit of the won leads, in roubles.
    pub won_profit: f64,
    /// The part of the forecast still to come: the forecast profit of the open leads. In a
    /// month not yet closed the fact is behind the forecast by about this much.
    pub open_forecast: f64,
}

impl Forecast {
    /// The fact as a percentage of the forecast (the seed company's is 94–106 % once the
    /// month's leads are closed); `None` without a forecast.
    pub fn accuracy(&self) -> Option<f64> {
        super::percent(self.won_profit, self.forecast)
    }
}

/// Adds up the forecast of the given rows (one month's, as the store returns them).
pub fn forecast(rows: &[LedgerRow]) -> Forecast {
    let mut f = Forecast::default();
    for row in rows {
        f.leads += 1;
        f.forecast += row.scored.forecast_profit;
        match &row.outcome {
            Some(outcome) if outcome.won => {
                f.won += 1;
                f.won_profit += outcome.profit;
            }
            Some(_) => f.lost += 1,
            None => {
                f.open += 1;
                f.open_forecast += row.scored.forecast_profit;
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Sample, lead};
    use super::*;

    #[test]
    fn the_forecast_sums_every_lead_and_the_fact_only_the_won() {
        let rows = [
            lead("1", 100_000.0).won(120_000.0),
            lead("2", 50_000.0).lost(),
            lead("3", 250_000.0).won(160_000.0),
            lead("4", 100_000.0),
        ];
        let f = forecast(&rows);
        assert_eq!((f.leads, f.won, f.lost, f.open), (4, 2, 1, 1));
        assert_eq!(f.forecast, 500_000.0);
        assert_eq!(f.won_profit, 280_000.0);
        assert_eq!(f.open_forecast, 100_000.0);
        assert!((f.accuracy().unwrap() - 56.0).abs() < 1e-9);
    }

    #[test]
    fn a_month_without_outcomes_has_no_fact_yet() {
        let f = forecast(&[lead("1", 100_000.0), lead("2", 30_000.0)]);
        assert_eq!((f.won, f.lost, f.open), (0, 0, 2));
        assert_eq!(f.won_profit, 0.0);
        assert_eq!(f.open_forecast, f.forecast);
        assert_eq!(f.accuracy(), Some(0.0));
    }

    #[test]
    fn an_empty_month_has_no_accuracy() {
        let f = forecast(&[]);
        assert_eq!(f, Forecast::default());
        assert_eq!(f.accuracy(), None);
    }

    #[test]
    fn a_lost_lead_brings_nothing_even_with_a_profit_written() {
        let mut row = lead("1", 100_000.0).lost();
        row.outcome.as_mut().unwrap().profit = 40_000.0;
        assert_eq!(forecast(&[row]).won_profit, 0.0);
    }
}
