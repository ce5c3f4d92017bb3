//! From expected profit to a priority (seed: "берем эти баллы и делим их на пять
//! категорий"), and the leads the company refuses itself, which are priority 5 whatever
//! they would earn.

use crate::domain::condition::{Condition, Facts};
use crate::domain::priority::Priority;

/// A kind of lead the company does not work (the seed has nine).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Its name, shown as the reason for priority 5.
    pub name: String,
    /// Which leads it takes.
    pub when: Condition,
}

/// The priority rules of `scoring.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityRules {
    /// The least expected profit, in roubles, for priorities 1, 2, 3 and 4 (descending); a
    /// lead below the fourth does not pay for a person's work and is priority 5.
    pub thresholds: [f64; 4],
    /// Refusals, checked in order before the thresholds.
    pub refusals: Vec<Refusal>,
}

/// A priority and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The priority.
    pub priority: Priority,
    /// Why, in the head of sales's words.
    pub why: String,
}

impl PriorityRules {
    /// The priority of a lead with this expected profit and these facts.
    pub fn decide(&self, expected_profit: f64, facts: &Facts) -> Decision {
        if let Some(refusal) = self.refusals.iter().find(|r| r.when.holds(facts)) {
            return Decision {
                priority: Priority::FIFTH,
                why: format!("отказ: {}", refusal.name),
            };
        }
        let rank = self
            .thresholds
            .iter()
            .position(|t| expected_profit >= *t)
            .unwrap_or(4);
        let priority = Priority::new(rank as u8 + 1).unwrap_or(Priority::FIFTH);
        let why = match self.thresholds.get(rank) {
            Some(t) => format!(
                "ожидаемая прибыль {} ₽ не ниже порога {} ₽",
                rub(expected_profit),
                rub(*t)
            ),
            None => format!(
                "ожидаемая прибыль {} ₽ ниже порога приоритета 4 ({} ₽): работа не окупается",
                rub(expected_profit),
                rub(self.thresholds[3])
            ),
        };
        Decision { priority, why }
    }
}

/// Roubles in whole numbers with thin groups, as a head of sales reads them: 1 234 567.
pub fn rub(amount: f64) -> String {
    let whole = amount.round() as i64;
    let digits = whole.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    if whole < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::condition::Test;
    use crate::domain::lead::FieldValue;

    fn rules() -> PriorityRules {
        PriorityRules {
            thresholds: [100_000.0, 30_000.0, 10_000.0, 1_000.0],
            refusals: vec![Refusal {
                name: "Физлицо с мелким заказом".into(),
                when: Condition::All(vec![
                    Condition::Fact {
                        field: "client_type".into(),
                        test: Test::Eq(crate::domain::condition::Operand::Text("Физлицо".into())),
                    },
                    Condition::Fact {
                        field: "budget".into(),
                        test: Test::Lt(5_000.0),
                    },
                ]),
            }],
        }
    }

    #[test]
    fn thresholds_give_one_to_four_and_below_the_last_five() {
        let none = Facts::new();
        let p = |e: f64| rules().decide(e, &none).priority.number();
        assert_eq!(p(250_000.0), 1);
        assert_eq!(p(100_000.0), 1);
        assert_eq!(p(99_999.0), 2);
        assert_eq!(p(10_000.0), 3);
        assert_eq!(p(1_000.0), 4);
        assert_eq!(p(999.0), 5);
        assert!(rules().decide(999.0, &none).why.contains("не окупается"));
    }

    #[test]
    fn a_refusal_is_five_whatever_the_profit() {
        let facts: Facts = [
            ("client_type".to_owned(), FieldValue::Text("Физлицо".into())),
            ("budget".to_owned(), FieldValue::Number(3_000.0)),
        ]
        .into();
        let d = rules().decide(500_000.0, &facts);
        assert_eq!(d.priority, Priority::FIFTH);
        assert_eq!(d.why, "отказ: Физлицо с мелким заказом");
    }

    #[test]
    fn roubles_read_in_groups_of_three() {
        assert_eq!(rub(1_234_567.4), "1 234 567");
        assert_eq!(rub(950.0), "950");
        assert_eq!(rub(-12_000.0), "-12 000");
    }
}
