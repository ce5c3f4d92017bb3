//! What the robot writes into the CRM after scoring a lead: the chance, the expected profit
//! and the priority into the lead's fields, and a priority tag. Only what differs from the
//! lead as it is, so that scoring a lead again (a retried job, the echo of our own write)
//! writes nothing.

use crate::domain::lead::{FieldValue, Lead, LeadUpdate};
use crate::domain::priority::Priority;

use super::assessment::Assessment;

/// Where a score goes: lead fields by the robot's names (mapped in `robot.toml`'s
/// `[fields.leads]`) and a tag (`[crm]` of `scoring.toml`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteBack {
    /// The field for the chance of sale, in percent.
    pub probability: Option<String>,
    /// The field for the expected profit, in roubles.
    pub expected_profit: Option<String>,
    /// The field for the priority, 1 to 5.
    pub priority: Option<String>,
    /// The tag, with `{priority}` standing for the number (`"Приоритет {priority}"`).
    pub priority_tag: Option<String>,
}

impl WriteBack {
    /// The tag of a priority, when tags are written.
    pub fn tag(&self, priority: Priority) -> Option<String> {
        self.priority_tag
            .as_ref()
            .map(|t| t.replace("{priority}", &priority.to_string()))
    }

    /// The changes that bring `lead` to show `assessment`: empty when it already does.
    /// Numbers are written rounded as a person reads them (a chance to a tenth of a
    /// percent, roubles whole), and compared the same way.
    pub fn update(&self, lead: &Lead, assessment: &Assessment) -> LeadUpdate {
        let mut update = LeadUpdate::default();
        let values = [
            (
                &self.probability,
                round(assessment.score.probability * 100.0, 1),
            ),
            (
                &self.expected_profit,
                round(assessment.score.expected_profit, 0),
            ),
            (
                &self.priority,
                f64::from(assessment.decision.priority.number()),
            ),
        ];
        for (field, value) in values {
            let Some(field) = field else { continue };
            let current = lead.fields.get(field).and_then(FieldValue::as_number);
            if current.is_none_or(|c| (c - value).abs() > 1e-9) {
                update
                    .fields
                    .insert(field.clone(), FieldValue::Number(value));
            }
        }
        if let Some(tag) = self.tag(assessment.decision.priority) {
            let key = |t: &str| t.trim().to_lowercase();
            if !lead.tags.iter().any(|t| key(t) == key(&tag)) {
                update.add_tags.push(tag);
            }
            // A priority that changed leaves no tag of the old one behind.
            let stale: Vec<String> = Priority::ALL
                .iter()
                .filter(|p| **p != assessment.decision.priority)
                .filter_map(|p| self.tag(*p))
                .collect();
            update.remove_tags = lead
                .tags
                .iter()
                .filter(|t| stale.iter().any(|s| key(s) == key(t)))
                .cloned()
                .collect();
        }
        if update.changes_tags() {
            update.tags_seen = Some(lead.tags.clone());
        }
        update
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scoring::model::Score;
    use crate::domain::scoring::priorities::Decision;

    fn assessment(p: f64, profit: f64, priority: u8) -> Assessment {
        Assessment {
            score: Score {
                probability: p,
                value_factor: 1.0,
                budget: 100_000.0,
                budget_guessed: false,
                margin: 0.2,
                expected_profit: profit,
                forecast_profit: profit,
            },
            decision: Decision {
                priority: Priority::new(priority).unwrap(),
                why: String::new(),
            },
            reasons: String::new(),
        }
    }

    fn write_back() -> WriteBack {
        WriteBack {
            probability: Some("score".into()),
            expected_profit: Some("expected_profit".into()),
            priority: Some("priority".into()),
            priority_tag: Some("Приоритет {priority}".into()),
        }
    }

    #[test]
    fn a_new_lead_gets_every_field_and_the_tag() {
        let u = write_back().update(&Lead::default(), &assessment(0.23456, 4691.2, 3));
        assert_eq!(u.fields["score"], FieldValue::Number(23.5));
        assert_eq!(u.fields["expected_profit"], FieldValue::Number(4691.0));
        assert_eq!(u.fields["priority"], FieldValue::Number(3.0));
        assert_eq!(u.add_tags, ["Приоритет 3"]);
    }

    #[test]
    fn a_lead_that_already_shows_the_score_gets_nothing() {
        let lead = Lead {
            tags: vec!["приоритет 3".into()],
            fields: [
                ("score".to_owned(), FieldValue::Text("23.5".into())),
                ("expected_profit".to_owned(), FieldValue::Number(4691.0)),
                ("priority".to_owned(), FieldValue::Number(3.0)),
            ]
            .into(),
            ..Lead::default()
        };
        assert!(
            write_back()
                .update(&lead, &assessment(0.2349, 4690.6, 3))
                .is_empty()
        );
        let changed = write_back().update(&lead, &assessment(0.30, 4691.0, 2));
        assert_eq!(changed.fields.len(), 2, "the chance and the priority");
        assert_eq!(changed.add_tags, ["Приоритет 2"]);
        assert_eq!(
            changed.remove_tags,
            ["приоритет 3"],
            "the old priority's tag goes"
        );
    }
}
