//! Everything the robot says about one lead: the score, the priority and why.

use crate::domain::condition::Facts;
use crate::domain::lead::FieldValue;

use super::feature::{Feature, Observation};
use super::margin::Margins;
use super::model::{Model, Score};
use super::priorities::{Decision, PriorityRules};

/// The rules a lead is scored by: the file's features, margins and priorities, and the
/// trained model.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    /// The features, as the model was trained on them.
    pub features: &'a [Feature],
    /// Brand margins.
    pub margins: &'a Margins,
    /// Thresholds and refusals.
    pub priority: &'a PriorityRules,
    /// The model.
    pub model: &'a Model,
}

/// A lead's score, priority and reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Chance, budget used, margin, expected profit.
    pub score: Score,
    /// The priority and why.
    pub decision: Decision,
    /// The features that moved the chance most, in the file's words.
    pub reasons: String,
}

impl Scorer<'_> {
    /// Scores a lead. `facts` are what else is known about it (its fields, tags, budget),
    /// for the refusal conditions; the features, the chance and the profits are added.
    pub fn assess(
        &self,
        observation: &Observation,
        budget: Option<f64>,
        mut facts: Facts,
    ) -> Assessment {
        let score = self
            .model
            .score(self.features, self.margins, observation, budget);
        for (feature, value) in self.features.iter().zip(observation) {
            if let Some(v) = value {
                facts.insert(feature.name.clone(), v.to_fact());
            }
        }
        if let Some(b) = budget {
            facts.insert("budget".into(), FieldValue::Number(b));
        }
        for (name, value) in [
            ("probability", score.probability),
            ("expected_profit", score.expected_profit),
            ("forecast_profit", score.forecast_profit),
        ] {
            facts.insert(name.into(), FieldValue::Number(value));
        }
        let decision = self.priority.decide(score.expected_profit, &facts);
        let mut reasons = self.model.reasons(observation, 3);
        if score.budget_guessed {
            let guess = format!(
                "бюджет не указан, взят типичный {} ₽",
                super::priorities::rub(score.budget)
            );
            reasons = if reasons.is_empty() {
                guess
            } else {
                format!("{reasons}; {guess}")
            };
        }
        Assessment {
            score,
            decision,
            reasons,
        }
    }
}
