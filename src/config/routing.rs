//! `routing.toml`: how a lead picks its group and its specialists, how long it may wait and
//! where it goes after that, what each priority gets, the guard before lunch and the end of
//! the shift, and the pause of whoever is ahead; checked against the roster of
//! `managers.toml` into [`RoutingRules`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;
use toml::Spanned;

use super::condition::{Checker, RawCondition};
use super::duration::Span;
use super::problem::{Problem, did_you_mean};
use super::rules;
use crate::domain::routing::{Fallback, GroupRule, Roster, RoutingRules, Specialisation, TaskRule};

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "routing.toml";

/// The word of `overflow` that means the group's lead rather than another group.
pub const GROUP_LEAD: &str = "руководитель";

/// Facts every lead has, whatever robot.toml maps: what conditions of `routing.toml` can
/// read besides the mapped lead fields.
pub const BUILT_IN_FACTS: [&str; 9] = [
    "budget",
    "tags",
    "priority",
    "stage",
    "channel",
    "source",
    "category",
    "brand",
    "client_type",
];

/// What `routing.toml` is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// The roster of `managers.toml`.
    pub roster: &'a Roster,
    /// The robot's names of the lead fields mapped in `robot.toml`; `None` when that file
    /// could not be read (then they are not checked).
    pub lead_fields: Option<&'a [String]>,
    /// How long a presence report counts (`presence.fresh_for` of `robot.toml`).
    pub fresh_for: Duration,
}

/// Reads `dir/routing.toml`; `Ok(None)` when there is none (the robot then routes no lead).
pub fn load(dir: &Path, known: Known<'_>) -> Result<Option<RoutingRules>, Vec<Problem>> {
    rules::accept(check(dir, known))
}

/// Every problem of `dir/routing.toml`, warnings included, and the rules when usable.
pub fn check(dir: &Path, known: Known<'_>) -> (Option<RoutingRules>, Vec<Problem>) {
    let file = dir.join(FILE_NAME);
    let text = match rules::read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return (None, Vec::new()),
        Err(p) => return (None, vec![p]),
    };
    let raw: RawRouting = match rules::parse(&file, &text) {
        Ok(raw) => raw,
        Err(p) => return (None, vec![p]),
    };
    let mut problems = Vec::new();
    let rules = raw.check(&file, &text, known, &mut problems);
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
    let usable = !problems.iter().any(Problem::is_error);
    (usable.then_some(rules), problems)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    guard: Option<Spanned<Span>>,
    min_worked: Option<Spanned<Span>>,
    pause_margin: Option<Spanned<f64>>,
    #[serde(default)]
    take_from: Vec<Spanned<crate::config::managers::Id>>,
    recheck: Option<Spanned<Span>>,
    #[serde(default)]
    groups: Vec<Spanned<RawGroupRule>>,
    #[serde(default)]
    specialisations: Vec<Spanned<RawSpecialisation>>,
    #[serde(default)]
    priority: BTreeMap<String, Spanned<RawPriority>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupRule {
    name: Spanned<String>,
    when: Option<Spanned<RawCondition>>,
    wait: Option<Spanned<Span>>,
    overflow: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecialisation {
    name: Spanned<String>,
    when: Spanned<RawCondition>,
    #[serde(default)]
    across_groups: bool,
    wait: Option<Spanned<Span>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    route: Option<Spanned<bool>>,
    task: Option<String>,
    deadline: Option<Spanned<Span>>,
    wait: Option<Spanned<Span>>,
    pause: Option<bool>,
}

/// A wall-clock span as a `TimeDelta`, or the problem: business days are no use here.
fn delta(
    file: &Path,
    text: &str,
    key: &str,
    span: &Spanned<Span>,
    problems: &mut Vec<Problem>,
) -> Option<TimeDelta> {
    match span
        .get_ref()
        .as_std()
        .and_then(|d| TimeDelta::from_std(d).ok())
    {
        Some(d) => Some(d),
        None => {
            problems.push(
                Problem::error(
                    file,
                    format!(
                        "`{key}` is wall-clock time, like \"10m\" or \"2h\", not business days"
                    ),
                )
                .at_offset(text, span.span().start),
            );
            None
        }
    }
}

impl RawRouting {
    fn check(
        self,
        file: &Path,
        text: &str,
        known: Known<'_>,
        problems: &mut Vec<Problem>,
    ) -> RoutingRules {
        let at =
            |offset: usize, message: String| Problem::error(file, message).at_offset(text, offset);
        let roster = known.roster;
        let mut rules = RoutingRules::seed_defaults();
        rules.fresh_for = TimeDelta::from_std(known.fresh_for).unwrap_or(rules.fresh_for);
        if let Some(g) = &self.guard
            && let Some(d) = delta(file, text, "guard", g, problems)
        {
            if d > TimeDelta::hours(2) {
                problems.push(at(
                    g.span().start,
                    format!(
                        "`guard` of {} would keep leads away for hours; the seed's is \"10m\"",
                        g.get_ref()
                    ),
                ));
            }
            rules.guard = d;
        }
        if let Some(m) = &self.min_worked
            && let Some(d) = delta(file, text, "min_worked", m, problems)
        {
            if d <= TimeDelta::zero() {
                problems.push(
                    at(m.span().start, "`min_worked` is above zero".into())
                        .with_hint("with none, one lead a minute after the start of a shift would count as a whole day's"),
                );
            }
            rules.min_worked = d.max(TimeDelta::minutes(1));
        }
        if let Some(m) = &self.pause_margin {
            if *m.get_ref() < 0.0 {
                problems.push(at(
                    m.span().start,
                    "`pause_margin` is a number of leads, 0 or more".into(),
                ));
            } else {
                rules.pause_margin = *m.get_ref();
            }
        }

        for id in &self.take_from {
            let text = id.get_ref().text();
            if text.is_empty() {
                problems.push(at(
                    id.span().start,
                    "`take_from` lists CRM user ids; this one is empty".into(),
                ));
            } else {
                rules.take_from.push(text);
            }
        }
        if let Some(r) = &self.recheck
            && let Some(d) = delta(file, text, "recheck", r, problems)
        {
            if d < TimeDelta::seconds(1) || d > TimeDelta::minutes(10) {
                problems.push(
                    at(
                        r.span().start,
                        format!("`recheck` of {} is out of range", r.get_ref()),
                    )
                    .with_hint(
                        "between \"1s\" and \"10m\"; waiting leads are looked at this often",
                    ),
                );
            } else {
                rules.recheck = d;
            }
        }

        // Priorities.
        for (key, raw) in &self.priority {
            let Some(n) = key.parse::<usize>().ok().filter(|n| (1..=5).contains(n)) else {
                problems.push(at(
                    raw.span().start,
                    format!("[priority.{key}]: priorities are 1 to 5"),
                ));
                continue;
            };
            let r = raw.get_ref();
            let mut rule = rules.priorities[n - 1].clone();
            if let Some(route) = &r.route {
                match (n, *route.get_ref()) {
                    (1, false) => problems.push(
                        at(
                            route.span().start,
                            "[priority.1] is always routed to a person".into(),
                        )
                        .with_hint("the seed: a person must work a priority-1 lead"),
                    ),
                    (5, true) => problems.push(
                        at(
                            route.span().start,
                            "[priority.5] is never routed to a person".into(),
                        )
                        .with_hint("the seed: nobody works priority 5 by hand; chains do"),
                    ),
                    (_, route) => rule.route = route,
                }
            }
            rule.task = match (&r.task, &r.deadline) {
                (Some(task), Some(deadline)) => delta(file, text, "deadline", deadline, problems)
                    .map(|d| TaskRule {
                        text: task.clone(),
                        deadline: d,
                    }),
                (None, None) => None,
                _ => {
                    problems.push(at(
                        raw.span().start,
                        format!("[priority.{n}] needs both `task` and `deadline`, or neither"),
                    ));
                    None
                }
            };
            if let Some(w) = &r.wait {
                rule.wait = delta(file, text, "wait", w, problems);
            }
            if let Some(pause) = r.pause {
                rule.pause = pause;
            }
            rules.priorities[n - 1] = rule;
        }
        let first_written = self
            .priority
            .get("1")
            .is_some_and(|r| r.get_ref().task.is_some() || r.get_ref().deadline.is_some());
        if rules.priorities[0].task.is_none() && !first_written {
            problems.push(
                Problem::error(file, "[priority.1] needs a first task: `task` and `deadline`")
                    .with_hint("the seed: a priority-1 lead gets a task with a short deadline, like deadline = \"15m\""),
            );
        }

        // Conditions read the lead's facts.
        let mut fields: Vec<String> = BUILT_IN_FACTS.iter().map(|s| (*s).to_owned()).collect();
        fields.extend(known.lead_fields.unwrap_or_default().iter().cloned());
        fields.sort();
        fields.dedup();
        let checker = Checker {
            file,
            text,
            known: &fields,
        };
        let group_names: Vec<&str> = roster.groups.iter().map(|g| g.name.as_str()).collect();
        let find_group = |name: &Spanned<String>, what: &str, problems: &mut Vec<Problem>| {
            let wanted = name.get_ref().trim();
            let found = group_names.iter().position(|g| *g == wanted);
            if found.is_none() {
                let hint = did_you_mean(wanted, group_names.iter().copied())
                    .map(|m| format!("did you mean `{m}`?"))
                    .unwrap_or_else(|| {
                        format!(
                            "the groups of managers.toml are: {}",
                            group_names.join(", ")
                        )
                    });
                problems.push(
                    at(
                        name.span().start,
                        format!("{what} `{wanted}` is not a group of managers.toml"),
                    )
                    .with_hint(hint),
                );
            }
            found
        };

        // Groups, in order.
        let mut catch_all: Option<String> = None;
        for raw in &self.groups {
            let r = raw.get_ref();
            let Some(group) = find_group(&r.name, "group", problems) else {
                continue;
            };
            if rules.groups.iter().any(|g| g.group == group) {
                problems.push(at(
                    r.name.span().start,
                    format!("group `{}` has two [[groups]] rules", group_names[group]),
                ));
                continue;
            }
            if let Some(before) = &catch_all {
                problems.push(
                    at(
                        r.name.span().start,
                        format!(
                            "no lead reaches group `{}`: `{before}` above it takes every lead",
                            group_names[group]
                        ),
                    )
                    .with_hint("the group without `when` goes last"),
                );
            }
            let when = r.when.as_ref().and_then(|w| checker.check(w, problems));
            if r.when.is_none() && catch_all.is_none() {
                catch_all = Some(group_names[group].to_owned());
            }
            let wait = r
                .wait
                .as_ref()
                .and_then(|w| delta(file, text, "wait", w, problems));
            let overflow = match &r.overflow {
                None => None,
                Some(o) if o.get_ref().trim() == GROUP_LEAD => {
                    if roster.groups[group].lead.is_none() {
                        problems.push(
                            at(o.span().start, format!("group `{}` overflows to its lead, but managers.toml names none", group_names[group]))
                                .with_hint(format!("add lead = \"<name or id>\" to the group `{}` in managers.toml", group_names[group])),
                        );
                    }
                    Some(Fallback::GroupLead)
                }
                Some(o) => {
                    let mut targets = group_names.clone();
                    targets.push(GROUP_LEAD);
                    let wanted = o.get_ref().trim();
                    match group_names.iter().position(|g| *g == wanted) {
                        Some(g) if g == group => {
                            problems.push(at(
                                o.span().start,
                                format!("group `{wanted}` overflows to itself"),
                            ));
                            None
                        }
                        Some(g) => Some(Fallback::Group(g)),
                        None => {
                            let hint = did_you_mean(wanted, targets.iter().copied())
                                .map(|m| format!("did you mean `{m}`?"))
                                .unwrap_or_else(|| format!("`overflow` names a group of managers.toml or \"{GROUP_LEAD}\""));
                            problems.push(at(o.span().start, format!("`overflow` names `{wanted}`, which is neither a group nor \"{GROUP_LEAD}\"")).with_hint(hint));
                            None
                        }
                    }
                }
            };
            match (&r.wait, &r.overflow) {
                (Some(w), None) => problems.push(
                    at(w.span().start, format!("group `{}` has a `wait` but no `overflow`: where should the lead go after it?", group_names[group]))
                        .with_hint(format!("add overflow = \"<another group>\" or \"{GROUP_LEAD}\"; without both, a lead waits for the group as long as it takes")),
                ),
                (None, Some(o)) => problems.push(
                    at(o.span().start, format!("group `{}` has an `overflow` but no `wait`", group_names[group]))
                        .with_hint("say how long a lead waits for the group first, like wait = \"15m\""),
                ),
                _ => {}
            }
            rules.groups.push(GroupRule {
                group,
                when,
                wait,
                overflow,
            });
        }
        if self.groups.is_empty() {
            problems.push(
                Problem::error(file, "no [[groups]]: routing needs to know which group takes which lead")
                    .with_hint("declare each as [[groups]] with name and when; the last one without when takes the rest"),
            );
        } else if catch_all.is_none() {
            problems.push(
                Problem::error(
                    file,
                    "every [[groups]] has a `when`: a lead that matches none would never be routed",
                )
                .with_hint("leave the last group without `when`: it takes the rest"),
            );
        }
        for (g, name) in group_names.iter().enumerate() {
            if !self.groups.is_empty() && rules.group_rule(g).is_none() {
                problems.push(Problem::warning(
                    file,
                    format!("group `{name}` of managers.toml has no [[groups]] rule here: leads reach it only by overflow, and then wait for it as long as it takes"),
                ));
            }
        }
        // Overflow that goes round in a circle would pass a lead on forever; each circle is
        // reported once, at the first group of it in the file.
        let mut circles: Vec<Vec<usize>> = Vec::new();
        for start in &rules.groups {
            let mut seen = vec![start.group];
            let mut next = start.overflow;
            while let Some(Fallback::Group(g)) = next {
                if let Some(from) = seen.iter().position(|s| *s == g) {
                    let mut circle = seen[from..].to_vec();
                    circle.sort();
                    if !circles.contains(&circle) {
                        circles.push(circle);
                        let names: Vec<&str> =
                            seen[from..].iter().map(|g| group_names[*g]).collect();
                        let raw = self
                            .groups
                            .iter()
                            .find(|r| find_name(r, &group_names) == Some(start.group));
                        let p = Problem::error(
                            file,
                            format!(
                                "overflow goes round in a circle: {} → {}",
                                names.join(" → "),
                                group_names[g]
                            ),
                        )
                        .with_hint(format!(
                            "end the chain with overflow = \"{GROUP_LEAD}\", or with no overflow"
                        ));
                        problems.push(match raw {
                            Some(r) => p.at_offset(text, r.span().start),
                            None => p,
                        });
                    }
                    break;
                }
                seen.push(g);
                next = rules.group_rule(g).and_then(|r| r.overflow);
            }
        }

        // Specialisations.
        let mut offered: Vec<&str> = roster
            .managers
            .iter()
            .flat_map(|m| m.specialisations.iter().map(String::as_str))
            .collect();
        offered.sort();
        offered.dedup();
        for raw in &self.specialisations {
            let r = raw.get_ref();
            let name = r.name.get_ref().trim().to_owned();
            if rules.specialisations.iter().any(|s| s.name == name) {
                problems.push(at(
                    r.name.span().start,
                    format!("specialisation `{name}` has two rules"),
                ));
                continue;
            }
            let members: Vec<usize> = roster
                .managers
                .iter()
                .enumerate()
                .filter(|(_, m)| m.specialisations.contains(&name))
                .map(|(i, _)| i)
                .collect();
            if members.is_empty() {
                let hint = did_you_mean(&name, offered.iter().copied())
                    .map(|m| format!("did you mean `{m}`?"))
                    .unwrap_or_else(|| {
                        "give it to managers in managers.toml: specialisations = [\"…\"]".into()
                    });
                problems.push(
                    at(
                        r.name.span().start,
                        format!("no manager of managers.toml has the specialisation `{name}`"),
                    )
                    .with_hint(hint),
                );
            }
            let when = checker.check(&r.when, problems);
            let wait = r
                .wait
                .as_ref()
                .and_then(|w| delta(file, text, "wait", w, problems))
                .unwrap_or(TimeDelta::zero());
            if let Some(when) = when {
                rules.specialisations.push(Specialisation {
                    name,
                    when,
                    members,
                    across_groups: r.across_groups,
                    wait,
                });
            }
        }
        for s in offered {
            if !self
                .specialisations
                .iter()
                .any(|r| r.get_ref().name.get_ref().trim() == s)
            {
                problems.push(Problem::warning(
                    file,
                    format!("managers.toml gives the specialisation `{s}`, but no [[specialisations]] here says which leads need it"),
                ));
            }
        }
        rules
    }
}

fn find_name(raw: &Spanned<RawGroupRule>, groups: &[&str]) -> Option<usize> {
    let wanted = raw.get_ref().name.get_ref().trim();
    groups.iter().position(|g| *g == wanted)
}

#[cfg(test)]
mod tests;
