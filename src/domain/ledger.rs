//! The score ledger: what the robot predicted for each lead, and later what came of it.
//!
//! The forecast, the managers' personal plans and the marketing report are sums over it
//! (seed interview: "складываем эти вероятности — и получаем прогноз на месяц").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::priority::Priority;

/// A lead as scored: one row per lead; scoring the lead again replaces the prediction and
/// keeps its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The CRM's id of the lead.
    pub lead_id: String,
    /// When the lead was created: it counts in this month's forecast.
    pub created_at: DateTime<Utc>,
    /// When it was last scored.
    pub scored_at: DateTime<Utc>,
    /// The responsible manager's CRM user id, when one is set.
    pub manager_id: Option<String>,
    /// The channel it came by (e-mail, WhatsApp, phone, form…).
    pub channel: Option<String>,
    /// The source (the shop, the site, the campaign).
    pub source: Option<String>,
    /// The budget in roubles.
    pub budget: f64,
    /// The chance of a sale, 0 to 1.
    pub probability: f64,
    /// What the priority is based on: budget × margin × probability, times the client's
    /// lifetime factor when the model learns lifetime value.
    pub expected_profit: f64,
    /// What this lead adds to the month's forecast: budget × margin × probability.
    pub forecast_profit: f64,
    /// The priority given.
    pub priority: Priority,
}

/// How a lead ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The CRM's id of the lead.
    pub lead_id: String,
    /// When it was won or lost.
    pub closed_at: DateTime<Utc>,
    /// Won (true) or lost.
    pub won: bool,
    /// The profit made: the won budget × the brand's margin; 0 when lost.
    pub profit: f64,
}

/// One lead of the ledger: the prediction and, once known, the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// The prediction.
    pub scored: Scored,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
}
