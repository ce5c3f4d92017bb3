//! Ledger rows for the reports' tests.

use chrono::{DateTime, TimeZone, Utc};

use crate::domain::ledger::{LedgerRow, Outcome, Scored};
use crate::domain::priority::Priority;

/// A lead scored on 2026-11-10, open, with the given forecast; expected profit is twice the
/// forecast (a lifetime factor of 2), so that the two sums never agree by accident.
pub fn lead(id: &str, forecast: f64) -> LedgerRow {
    let created_at: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 10, 9, 0, 0).unwrap();
    LedgerRow {
        scored: Scored {
            lead_id: id.to_owned(),
            created_at,
            scored_at: created_at,
            manager_id: None,
            channel: None,
            source: None,
            budget: forecast * 10.0,
            probability: 0.5,
            expected_profit: forecast * 2.0,
            forecast_profit: forecast,
            priority: Priority::new(3).unwrap(),
        },
        outcome: None,
    }
}

/// Builders on a sample row.
pub trait Sample {
    /// Won with this profit.
    fn won(self, profit: f64) -> Self;
    /// Lost.
    fn lost(self) -> Self;
    /// Of this manager.
    fn manager(self, id: &str) -> Self;
    /// From this source and channel.
    fn from(self, source: &str, channel: Option<&str>) -> Self;
    /// Of this priority.
    fn priority(self, n: u8) -> Self;
}

impl Sample for LedgerRow {
    fn won(mut self, profit: f64) -> Self {
        self.outcome = Some(outcome(&self, true, profit));
        self
    }
    fn lost(mut self) -> Self {
        self.outcome = Some(outcome(&self, false, 0.0));
        self
    }
    fn manager(mut self, id: &str) -> Self {
        self.scored.manager_id = Some(id.to_owned());
        self
    }
    fn from(mut self, source: &str, channel: Option<&str>) -> Self {
        self.scored.source = Some(source.to_owned());
        self.scored.channel = channel.map(str::to_owned);
        self
    }
    fn priority(mut self, n: u8) -> Self {
        self.scored.priority = Priority::new(n).unwrap();
        self
    }
}

fn outcome(row: &LedgerRow, won: bool, profit: f64) -> Outcome {
    Outcome {
        lead_id: row.scored.lead_id.clone(),
        closed_at: row.scored.created_at + chrono::Duration::days(3),
        won,
        profit,
    }
}
