//! The one condition language of the rule files: scoring's refusals, routing's groups,
//! chains' triggers and stops and the regulation all select leads with it.
//!
//! A condition is a test of one fact (`budget < 100000`, `category in [..]`, a tag), or
//! `all`/`any`/`not` of conditions. Facts are the robot's own names for what it knows about
//! a lead ([`Facts`]); a fact that is missing makes every comparison false except `ne`,
//! `not_in` and `exists = false`, so an empty field never matches by accident.

use std::collections::BTreeMap;

use crate::domain::lead::FieldValue;

/// What is known about a lead, by the robot's names: `budget`, `stage`, `channel`,
/// `category`, `tags`, features and mapped custom fields.
pub type Facts = BTreeMap<String, FieldValue>;

/// A value a condition compares with, as written in the rule file.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A number (`100000`).
    Number(f64),
    /// Text (`"Электроды"`).
    Text(String),
}

/// How one fact is tested.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Equal: numbers by value, text ignoring case and surrounding spaces; a list fact
    /// is equal when one of its items is.
    Eq(Operand),
    /// Not equal (true for a missing fact).
    Ne(Operand),
    /// Less than (numbers only).
    Lt(f64),
    /// Less than or equal.
    Le(f64),
    /// Greater than.
    Gt(f64),
    /// Greater than or equal.
    Ge(f64),
    /// Equal to one of these.
    In(Vec<Operand>),
    /// Equal to none of these (true for a missing fact).
    NotIn(Vec<Operand>),
    /// Text that contains this, ignoring case; for a list fact, an item equal to it.
    Contains(String),
    /// The fact is present and not empty (`true`), or absent or empty (`false`).
    Exists(bool),
}

/// A condition over a lead's [`Facts`].
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every one holds (true when empty).
    All(Vec<Condition>),
    /// At least one holds (false when empty).
    Any(Vec<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// A test of the fact named `field`.
    Fact {
        /// The robot's name of the fact.
        field: String,
        /// The test.
        test: Test,
    },
}

/// The fact holding the lead's tags.
pub const TAGS: &str = "tags";

impl Condition {
    /// The condition `tag = "…"`: the lead has this tag.
    pub fn tag(name: impl Into<String>) -> Condition {
        Condition::Fact {
            field: TAGS.into(),
            test: Test::Contains(name.into()),
        }
    }

    /// Whether it holds for these facts.
    pub fn holds(&self, facts: &Facts) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.holds(facts)),
            Condition::Any(any) => any.iter().any(|c| c.holds(facts)),
            Condition::Not(c) => !c.holds(facts),
            Condition::Fact { field, test } => test.holds(facts.get(field)),
        }
    }

    /// Every fact name it reads, for checking names when a rule file is loaded.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().for_each(|c| c.collect_fields(out));
            }
            Condition::Not(c) => c.collect_fields(out),
            Condition::Fact { field, .. } => out.push(field),
        }
    }
}

impl Test {
    /// Whether `value` (absent when `None`) passes.
    pub fn holds(&self, value: Option<&FieldValue>) -> bool {
        let value = value.filter(|v| !is_empty(v));
        match self {
            Test::Exists(want) => value.is_some() == *want,
            Test::Ne(x) => !value.is_some_and(|v| equals(v, x)),
            Test::NotIn(xs) => !value.is_some_and(|v| xs.iter().any(|x| equals(v, x))),
            _ => value.is_some_and(|v| self.holds_for(v)),
        }
    }

    fn holds_for(&self, v: &FieldValue) -> bool {
        let num = || v.as_number();
        match self {
            Test::Eq(x) => equals(v, x),
            Test::In(xs) => xs.iter().any(|x| equals(v, x)),
            Test::Lt(x) => num().is_some_and(|n| n < *x),
            Test::Le(x) => num().is_some_and(|n| n <= *x),
            Test::Gt(x) => num().is_some_and(|n| n > *x),
            Test::Ge(x) => num().is_some_and(|n| n >= *x),
            Test::Contains(s) => match v {
                FieldValue::Many(items) => items.iter().any(|i| same_text(i, s)),
                other => other.as_text().to_lowercase().contains(&s.to_lowercase()),
            },
            Test::Exists(_) | Test::Ne(_) | Test::NotIn(_) => unreachable!("handled in holds"),
        }
    }
}

fn is_empty(v: &FieldValue) -> bool {
    match v {
        FieldValue::Number(n) => n.is_nan(),
        FieldValue::Text(t) => t.trim().is_empty(),
        FieldValue::Many(items) => items.is_empty(),
    }
}

fn same_text(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

fn equals(v: &FieldValue, x: &Operand) -> bool {
    match (v, x) {
        (FieldValue::Many(items), x) => items
            .iter()
            .any(|i| equals(&FieldValue::Text(i.clone()), x)),
        (v, Operand::Number(n)) => v.as_number() == Some(*n),
        (v, Operand::Text(t)) => same_text(&v.as_text(), t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, FieldValue)]) -> Facts {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn fact(field: &str, test: Test) -> Condition {
        Condition::Fact {
            field: field.into(),
            test,
        }
    }

    fn text(s: &str) -> Operand {
        Operand::Text(s.into())
    }

    #[test]
    fn the_rules_md_examples() {
        let small_consumables = Condition::All(vec![
            fact("budget", Test::Lt(100_000.0)),
            fact(
                "category",
                Test::In(vec![text("Электроды"), text("Проволока")]),
            ),
        ]);
        let lead = facts(&[
            ("budget", FieldValue::Number(3_000.0)),
            ("category", FieldValue::Text("электроды ".into())),
        ]);
        assert!(small_consumables.holds(&lead));
        let big = facts(&[
            ("budget", FieldValue::Number(3_000_000.0)),
            ("category", FieldValue::Text("Электроды".into())),
        ]);
        assert!(!small_consumables.holds(&big));

        let out_of_stock = Condition::Any(vec![
            Condition::tag("нет в наличии"),
            fact("stage", Test::Eq(text("Нет товара"))),
        ]);
        let tagged = facts(&[(
            TAGS,
            FieldValue::Many(vec!["опт".into(), "Нет в наличии".into()]),
        )]);
        assert!(out_of_stock.holds(&tagged));
        assert!(!out_of_stock.holds(&facts(&[])));
    }

    #[test]
    fn a_missing_or_empty_fact_never_matches_by_accident() {
        let none = facts(&[("brand", FieldValue::Text("  ".into()))]);
        assert!(!fact("budget", Test::Lt(10.0)).holds(&none));
        assert!(!fact("brand", Test::Eq(text(""))).holds(&none));
        assert!(fact("brand", Test::Ne(text("Fubag"))).holds(&none));
        assert!(fact("brand", Test::NotIn(vec![text("Fubag")])).holds(&none));
        assert!(fact("brand", Test::Exists(false)).holds(&none));
        assert!(!fact("brand", Test::Exists(true)).holds(&none));
    }

    #[test]
    fn numbers_compare_as_numbers_even_when_written_as_text() {
        let lead = facts(&[("turnover", FieldValue::Text("1 500 000,5".into()))]);
        assert!(fact("turnover", Test::Gt(1_000_000.0)).holds(&lead));
        assert!(fact("turnover", Test::Le(1_500_000.5)).holds(&lead));
        assert!(fact("turnover", Test::Eq(Operand::Number(1_500_000.5))).holds(&lead));
        let word = facts(&[("turnover", FieldValue::Text("большой".into()))]);
        assert!(!fact("turnover", Test::Gt(0.0)).holds(&word));
    }

    #[test]
    fn all_any_not_and_the_names_they_read() {
        let c = Condition::Not(Box::new(Condition::Any(vec![
            fact("channel", Test::Contains("почт".into())),
            Condition::All(vec![]),
        ])));
        assert!(
            !c.holds(&facts(&[])),
            "an empty `all` holds, so `not any` fails"
        );
        assert_eq!(c.fields(), ["channel"]);
        assert!(!Condition::Any(vec![]).holds(&facts(&[])));
    }
}
