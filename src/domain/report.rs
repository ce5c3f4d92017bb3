//! The head of sales's reports over the score ledger: the month's forecast against what was
//! won, each manager's personal plan against the fact, and what each marketing channel
//! brought for the money spent on it.
//!
//! Each report is a pure sum over the ledger rows of one month (`Month`): the store reads
//! the rows, these functions add them up, the command prints them.

mod channels;
mod forecast;
mod month;
mod plans;
#[cfg(test)]
mod sample;

pub use self::channels::{Channel, ChannelFigures, ChannelRow, Channels, Spend, channels};
pub use self::forecast::{Forecast, forecast};
pub use self::month::{Month, MonthError};
pub use self::plans::{ManagerPlan, PlanFact, Plans, plans};

use std::cmp::Ordering;

use crate::domain::ledger::LedgerRow;

/// Names in order, the missing ones last: a line without a manager or a source goes below
/// the named ones, and equal figures keep the same order every time.
fn none_last(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// `fact` as a percentage of `plan`, or `None` when there is no plan to compare with (a
/// month without leads must not read as 0 % or as infinity).
pub fn percent(fact: f64, plan: f64) -> Option<f64> {
    (plan != 0.0).then(|| fact / plan * 100.0)
}

/// The profit a row brought: its won profit, or 0 while it is open or when it was lost.
fn won_profit(row: &LedgerRow) -> f64 {
    match &row.outcome {
        Some(outcome) if outcome.won => outcome.profit,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentage_needs_a_plan() {
        assert_eq!(percent(97.0, 100.0), Some(97.0));
        assert_eq!(percent(0.0, 0.0), None);
        assert_eq!(percent(5.0, 0.0), None);
    }
}
