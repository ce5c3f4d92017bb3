//! A trained model: the chance of a sale for a lead, its expected profit, and which
//! features moved it most.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::encode::{Encoder, NONE};
use super::feature::{Feature, FeatureKind, Observation, Value};
use super::glm::{Coefficients, Family};
use super::margin::Margins;

/// What the model learns (`[model] learn` in `scoring.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "learn", rename_all = "snake_case")]
pub enum Learn {
    /// One sale: `won` is 1 or 0 (or the won amount).
    Sale,
    /// The client's value over `months` months (the seed's LTV): `won` is the revenue
    /// the client brought over that time, 0 when lost. The model learns the chance of a
    /// sale and, for won clients, how many times the first budget they bring.
    Value {
        /// The horizon the revenue was counted over.
        months: u32,
    },
}

/// A feature as the model was trained on it, to notice a rule file that changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    /// Its name.
    pub name: String,
    /// Its title, for the reasons.
    pub title: String,
    /// Labels or amounts.
    pub kind: FeatureKind,
}

/// A trained scoring model, as saved to the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// What was learned.
    pub learn: Learn,
    /// The features, in order.
    pub features: Vec<Trained>,
    /// Features into columns.
    pub encoder: Encoder,
    /// The chance of a sale (logistic).
    pub chance: Coefficients,
    /// How many times the first budget a won client brings (log-linear), when learning
    /// value.
    pub value: Option<Coefficients>,
    /// The median budget of past leads: used, and said, when a lead has none yet.
    pub typical_budget: f64,
    /// How many past leads it learned from.
    pub trained_on: usize,
    /// The newest of them.
    pub trained_until: DateTime<Utc>,
    /// The penalty chosen on held-out data.
    pub lambda: f64,
    /// The half-life of past leads' weight chosen on held-out data, in days.
    pub half_life_days: Option<f64>,
}

/// One feature's push on a lead's chance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    /// The feature's index.
    pub feature: usize,
    /// In log-odds against a typical lead (weights are centred on the past leads' average
    /// when learned): positive raises the chance.
    pub shift: f64,
}

/// A lead's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The chance of a sale, 0 to 1 (never exactly either).
    pub probability: f64,
    /// How many times the first budget a won client brings; 1 when learning one sale.
    pub value_factor: f64,
    /// The budget used: the lead's, or the typical one when it has none.
    pub budget: f64,
    /// Whether the budget was the typical one.
    pub budget_guessed: bool,
    /// The brand's margin.
    pub margin: f64,
    /// budget × margin × probability × value factor: what the priority is based on.
    pub expected_profit: f64,
    /// budget × margin × probability: the lead's part of the month's forecast.
    pub forecast_profit: f64,
}

impl Model {
    /// The chance of a sale for already encoded columns: the fast path of scoring.
    #[inline]
    pub fn chance_of(&self, columns: &[u32]) -> f64 {
        Family::Logistic.mean(self.chance.eta(columns))
    }

    /// The value factor for encoded columns.
    pub fn value_of(&self, columns: &[u32]) -> f64 {
        self.value
            .as_ref()
            .map_or(1.0, |v| Family::LogLinear.mean(v.eta(columns)))
    }

    /// Scores one lead.
    pub fn score(
        &self,
        features: &[Feature],
        margins: &Margins,
        observation: &Observation,
        budget: Option<f64>,
    ) -> Score {
        let columns = self.encoder.encode(observation);
        self.score_encoded(&columns, margins.of(features, observation), budget)
    }

    /// Scores encoded columns with a known margin.
    pub fn score_encoded(&self, columns: &[u32], margin: f64, budget: Option<f64>) -> Score {
        let probability = self.chance_of(columns);
        let value_factor = self.value_of(columns);
        let known = budget.filter(|b| b.is_finite() && *b > 0.0);
        let used = known.unwrap_or(self.typical_budget);
        let forecast_profit = used * margin * probability;
        Score {
            probability,
            value_factor,
            budget: used,
            budget_guessed: known.is_none(),
            margin,
            expected_profit: forecast_profit * value_factor,
            forecast_profit,
        }
    }

    /// Each feature's push on the lead's chance, the strongest first.
    pub fn effects(&self, observation: &Observation) -> Vec<Effect> {
        let columns = self.encoder.encode(observation);
        let mut effects: Vec<Effect> = columns
            .iter()
            .enumerate()
            .map(|(f, c)| {
                let weight = if *c == NONE {
                    0.0
                } else {
                    self.chance.weights[*c as usize]
                };
                Effect {
                    feature: f,
                    shift: weight,
                }
            })
            .collect();
        effects.sort_by(|a, b| b.shift.abs().total_cmp(&a.shift.abs()));
        effects
    }

    /// The few features that moved the chance most, in the rule file's words:
    /// `Канал «почта» ↑; Бренд «Сварог» ↓`. Effects too small to matter are left out.
    pub fn reasons(&self, observation: &Observation, how_many: usize) -> String {
        self.effects(observation)
            .into_iter()
            .filter(|e| e.shift.abs() >= 0.1)
            .take(how_many)
            .map(|e| {
                let title = &self.features[e.feature].title;
                let arrow = if e.shift > 0.0 { "↑" } else { "↓" };
                match &observation[e.feature] {
                    Some(Value::Category(c)) => format!("{title} «{c}» {arrow}"),
                    Some(Value::Number(n)) => format!("{title} {} {arrow}", short_number(*n)),
                    None => format!("{title} не указано {arrow}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The names of the features the rule file declares that differ from the model's,
    /// empty when the model fits the file.
    pub fn mismatch(&self, features: &[Feature]) -> Option<String> {
        let file: Vec<(&str, FeatureKind)> =
            features.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        let model: Vec<(&str, FeatureKind)> = self
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
            .collect();
        (file != model).then(|| {
            let names = |v: &[(&str, FeatureKind)]| {
                v.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            };
            format!(
                "the model was trained on the features [{}], but scoring.toml now declares [{}]",
                names(&model),
                names(&file)
            )
        })
    }
}

fn short_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n:.2}")
    }
}
