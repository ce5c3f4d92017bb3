//! The condition language as written in rule files (see RULES.md):
//! `{ field = "budget", lt = 100000 }`, `{ tag = "нет в наличии" }`,
//! `{ all = [...] }`, `{ any = [...] }`, `{ not = {...} }`, checked into a
//! [`Condition`] with every mistake placed at its line.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::problem::{Problem, did_you_mean};
use crate::domain::condition::{Condition, Operand, TAGS, Test};

/// A condition as parsed, with positions kept for the checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    all: Option<Vec<Spanned<RawCondition>>>,
    any: Option<Vec<Spanned<RawCondition>>>,
    not: Option<Box<Spanned<RawCondition>>>,
    tag: Option<String>,
    field: Option<Spanned<String>>,
    eq: Option<RawOperand>,
    ne: Option<RawOperand>,
    lt: Option<f64>,
    le: Option<f64>,
    gt: Option<f64>,
    ge: Option<f64>,
    #[serde(rename = "in")]
    is_in: Option<Vec<RawOperand>>,
    not_in: Option<Vec<RawOperand>>,
    contains: Option<String>,
    exists: Option<bool>,
}

/// A value to compare with: a number or text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawOperand {
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
}

impl From<RawOperand> for Operand {
    fn from(raw: RawOperand) -> Operand {
        match raw {
            RawOperand::Number(n) => Operand::Number(n),
            RawOperand::Text(t) => Operand::Text(t),
        }
    }
}

/// The operators, as the file spells them.
pub const OPERATORS: [&str; 10] = [
    "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "exists",
];

/// Where a condition's mistakes are reported, and which fact names exist.
pub struct Checker<'a> {
    /// The rule file.
    pub file: &'a Path,
    /// Its text, to turn positions into lines.
    pub text: &'a str,
    /// The fact names a condition may read.
    pub known: &'a [String],
}

impl Checker<'_> {
    /// The condition, or `None` after reporting what is wrong into `problems`.
    pub fn check(
        &self,
        raw: &Spanned<RawCondition>,
        problems: &mut Vec<Problem>,
    ) -> Option<Condition> {
        let at = raw.span().start;
        let r = raw.get_ref();
        let err = |message: String| Problem::error(self.file, message).at_offset(self.text, at);
        let groups = [r.all.is_some(), r.any.is_some(), r.not.is_some()];
        let tests = self.tests(r);
        let kinds = groups.iter().filter(|g| **g).count()
            + usize::from(r.tag.is_some())
            + usize::from(r.field.is_some());
        if kinds != 1 {
            problems.push(err(if kinds == 0 {
                "a condition needs `field` with an operator, `tag`, `all`, `any` or `not`".into()
            } else {
                "a condition has one of `field`, `tag`, `all`, `any`, `not`; to combine them, \
                 put them in `all = [...]` or `any = [...]`"
                    .into()
            }));
            return None;
        }
        if let Some(list) = r.all.as_ref().or(r.any.as_ref()) {
            let checked: Vec<Option<Condition>> =
                list.iter().map(|c| self.check(c, problems)).collect();
            let checked: Option<Vec<Condition>> = checked.into_iter().collect();
            return checked.map(|cs| {
                if r.all.is_some() {
                    Condition::All(cs)
                } else {
                    Condition::Any(cs)
                }
            });
        }
        if let Some(inner) = &r.not {
            return self
                .check(inner, problems)
                .map(|c| Condition::Not(Box::new(c)));
        }
        if let Some(tag) = &r.tag {
            if !tests.is_empty() {
                problems.push(err(
                    "`tag` takes no operator: `{ tag = \"…\" }` means the lead has the tag".into(),
                ));
                return None;
            }
            return Some(Condition::tag(tag.clone()));
        }
        let field = r.field.as_ref()?;
        let name = field.get_ref();
        let mut ok = true;
        if !self.known.iter().any(|k| k == name) && name != TAGS {
            let hint = did_you_mean(name, self.known.iter().map(String::as_str))
                .map(|m| format!("did you mean `{m}`?"))
                .unwrap_or_else(|| format!("known fields: {}", self.known.join(", ")));
            problems.push(
                Problem::error(self.file, format!("unknown field `{name}` in a condition"))
                    .at_offset(self.text, field.span().start)
                    .with_hint(hint),
            );
            ok = false;
        }
        match tests.len() {
            1 if ok => Some(Condition::Fact {
                field: name.clone(),
                test: tests.into_iter().next()?,
            }),
            1 => None,
            0 => {
                problems.push(err(format!(
                    "`field = \"{name}\"` needs an operator: one of {}",
                    OPERATORS.join(", ")
                )));
                None
            }
            _ => {
                problems.push(err(format!(
                    "`field = \"{name}\"` has several operators; write one, or combine \
                     conditions with `all = [...]`"
                )));
                None
            }
        }
    }

    fn tests(&self, r: &RawCondition) -> Vec<Test> {
        let op = |o: &Option<RawOperand>| o.clone().map(Operand::from);
        let list = |o: &Option<Vec<RawOperand>>| {
            o.clone()
                .map(|v| v.into_iter().map(Operand::from).collect::<Vec<_>>())
        };
        [
            op(&r.eq).map(Test::Eq),
            op(&r.ne).map(Test::Ne),
            r.lt.map(Test::Lt),
            r.le.map(Test::Le),
            r.gt.map(Test::Gt),
            r.ge.map(Test::Ge),
            list(&r.is_in).map(Test::In),
            list(&r.not_in).map(Test::NotIn),
            r.contains.clone().map(Test::Contains),
            r.exists.map(Test::Exists),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Rule {
        when: Spanned<RawCondition>,
    }

    fn check(text: &str) -> (Option<Condition>, Vec<Problem>) {
        let rule: Rule = toml::from_str(text).unwrap();
        let known = [
            "budget".to_owned(),
            "category".to_owned(),
            "stage".to_owned(),
        ];
        let checker = Checker {
            file: Path::new("config/x.toml"),
            text,
            known: &known,
        };
        let mut problems = Vec::new();
        (checker.check(&rule.when, &mut problems), problems)
    }

    #[test]
    fn the_rules_md_examples_read() {
        let (c, p) = check(
            "when = { all = [ { field = \"budget\", lt = 100000 }, { field = \"category\", \
             in = [\"Электроды\", \"Проволока\"] } ] }",
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(c, Some(Condition::All(v)) if v.len() == 2));
        let (c, p) = check(
            "when = { any = [ { tag = \"нет в наличии\" }, { field = \"stage\", eq = \"Нет товара\" } ] }",
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(c, Some(Condition::Any(v)) if v.len() == 2));
    }

    #[test]
    fn mistakes_are_placed_and_explained() {
        let (c, p) = check("# x\nwhen = { field = \"budjet\", lt = 5 }");
        assert!(c.is_none());
        assert_eq!(p[0].line, Some(2));
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `budget`?"));
        let (_, p) = check("when = { field = \"budget\" }");
        assert!(
            p[0].message.contains("needs an operator"),
            "{}",
            p[0].message
        );
        let (_, p) = check("when = { field = \"budget\", lt = 5, gt = 1 }");
        assert!(p[0].message.contains("several operators"));
        let (_, p) = check("when = { field = \"budget\", lt = 5, tag = \"x\" }");
        assert!(p[0].message.contains("one of"));
        let err = toml::from_str::<Rule>("when = { field = \"budget\", less = 5 }")
            .err()
            .unwrap();
        assert!(err.message().contains("unknown field `less`"));
    }
}
