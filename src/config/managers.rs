//! `managers.toml`: the roster. Groups, and for each manager the CRM user, the group, the
//! specialisations, the time zone, the week's shifts and lunches, days off, vacations, a
//! weight and whether they take leads; checked into a [`Roster`].

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::problem::{Problem, did_you_mean};
use super::rules;
use crate::domain::routing::{Group, Manager, Roster, Shift, Vacation, Week, Window};

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "managers.toml";

/// The zone managers work in when the file names none.
pub const DEFAULT_ZONE: Tz = chrono_tz::Europe::Moscow;

/// Reads `dir/managers.toml`; `Ok(None)` when there is none (the robot then routes no
/// lead).
pub fn load(dir: &Path) -> Result<Option<Roster>, Vec<Problem>> {
    let file = dir.join(FILE_NAME);
    let text = match rules::read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(p) => return Err(vec![p]),
    };
    let raw: RawRoster = rules::parse(&file, &text).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let roster = raw.check(&file, &text, &mut problems);
    if problems.iter().any(Problem::is_error) {
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(problems);
    }
    for warning in &problems {
        tracing::warn!("{warning}");
    }
    Ok(Some(roster))
}

/// Every problem of `dir/managers.toml`, warnings included, and the roster when it is
/// usable.
pub fn check(dir: &Path) -> (Option<Roster>, Vec<Problem>) {
    let file = dir.join(FILE_NAME);
    let text = match rules::read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return (None, Vec::new()),
        Err(p) => return (None, vec![p]),
    };
    let raw: RawRoster = match rules::parse(&file, &text) {
        Ok(raw) => raw,
        Err(p) => return (None, vec![p]),
    };
    let mut problems = Vec::new();
    let roster = raw.check(&file, &text, &mut problems);
    let usable = !problems.iter().any(Problem::is_error);
    (usable.then_some(roster), problems)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    managers: Vec<Spanned<RawManager>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    lead: Option<Spanned<Id>>,
}

/// A CRM user id, written as a number or text, or (for references) a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Id {
    Number(i64),
    Text(String),
}

impl Id {
    pub(crate) fn text(&self) -> String {
        match self {
            Id::Number(n) => n.to_string(),
            Id::Text(t) => t.trim().to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    id: Spanned<Id>,
    name: Spanned<String>,
    group: Spanned<String>,
    #[serde(default)]
    specialisations: Vec<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    week: Spanned<Vec<Spanned<RawShift>>>,
    #[serde(default)]
    days_off: Vec<Spanned<String>>,
    #[serde(default)]
    vacations: Vec<Spanned<RawVacation>>,
    weight: Option<Spanned<f64>>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    days: Spanned<String>,
    hours: Spanned<String>,
    lunch: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVacation {
    from: Spanned<String>,
    to: Spanned<String>,
}

/// Weekdays as the file writes them, Monday first: Russian, or English.
const DAYS: [[&str; 2]; 7] = [
    ["пн", "mon"],
    ["вт", "tue"],
    ["ср", "wed"],
    ["чт", "thu"],
    ["пт", "fri"],
    ["сб", "sat"],
    ["вс", "sun"],
];

/// A time of day: "09:00" (or "9:00").
pub fn parse_time(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// A window "09:00-18:00" as two times, in the order written (not yet checked).
pub(crate) fn parse_window(s: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = s.split_once(['-', '–', '—'])?;
    Some((parse_time(a)?, parse_time(b)?))
}

/// A date "2026-12-31".
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

fn weekday(word: &str) -> Option<usize> {
    let w = word.trim().to_lowercase();
    DAYS.iter().position(|names| names.contains(&w.as_str()))
}

/// "пн-пт", "сб", "пн, ср, пт": the weekdays, Monday = 0; or the word that is not a day.
pub(crate) fn parse_days(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once(['-', '–']) {
            Some((a, b)) => {
                let a = weekday(a).ok_or_else(|| a.trim().to_owned())?;
                let b = weekday(b).ok_or_else(|| b.trim().to_owned())?;
                if a > b {
                    return Err(part.trim().to_owned());
                }
                out.extend(a..=b);
            }
            None => out.push(weekday(part).ok_or_else(|| part.trim().to_owned())?),
        }
    }
    Ok(out)
}

/// A time zone by its IANA name, or the problem with a near name.
pub fn zone(
    file: &Path,
    text: &str,
    name: &Spanned<String>,
    problems: &mut Vec<Problem>,
) -> Option<Tz> {
    match name.get_ref().trim().parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            let hint = did_you_mean(
                name.get_ref(),
                chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()),
            )
            .map(|m| format!("did you mean `{m}`?"))
            .unwrap_or_else(|| {
                "write an IANA name like \"Europe/Moscow\" or \"Asia/Yekaterinburg\"".into()
            });
            problems.push(
                Problem::error(file, format!("unknown time zone `{}`", name.get_ref()))
                    .at_offset(text, name.span().start)
                    .with_hint(hint),
            );
            None
        }
    }
}

impl RawRoster {
    fn check(self, file: &Path, text: &str, problems: &mut Vec<Problem>) -> Roster {
        let at =
            |offset: usize, message: String| Problem::error(file, message).at_offset(text, offset);
        let company_zone = self
            .time_zone
            .as_ref()
            .and_then(|z| zone(file, text, z, problems))
            .unwrap_or(DEFAULT_ZONE);

        let mut groups: Vec<Group> = Vec::new();
        for g in &self.groups {
            let name = g.get_ref().name.get_ref().trim().to_owned();
            if name.is_empty() {
                problems.push(at(
                    g.get_ref().name.span().start,
                    "a group needs a name".into(),
                ));
            } else if groups.iter().any(|o| o.name == name) {
                problems.push(at(
                    g.get_ref().name.span().start,
                    format!("group `{name}` is declared twice"),
                ));
            }
            groups.push(Group { name, lead: None });
        }
        if self.groups.is_empty() {
            problems.push(
                Problem::error(file, "no [[groups]]: managers take leads in groups")
                    .with_hint("declare each as [[groups]] with a name, like name = \"Младшая\""),
            );
        }
        let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();

        let mut managers: Vec<Manager> = Vec::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for raw in &self.managers {
            let r = raw.get_ref();
            let id = r.id.get_ref().text();
            let name = r.name.get_ref().trim().to_owned();
            if id.is_empty() {
                problems.push(at(
                    r.id.span().start,
                    "a manager needs the CRM's user id".into(),
                ));
            } else if ids.insert(id.clone(), managers.len()).is_some() {
                problems.push(at(
                    r.id.span().start,
                    format!("two managers have the id {id}"),
                ));
            }
            if managers.iter().any(|m| m.name == name) {
                problems.push(
                    at(
                        r.name.span().start,
                        format!("two managers are named `{name}`"),
                    )
                    .with_hint(
                        "group leads are named by name: tell them apart, or name the lead by id",
                    ),
                );
            }
            let group = match group_names
                .iter()
                .position(|g| *g == r.group.get_ref().trim())
            {
                Some(g) => g,
                None => {
                    let hint = did_you_mean(r.group.get_ref(), group_names.iter().copied())
                        .map(|m| format!("did you mean `{m}`?"))
                        .unwrap_or_else(|| format!("the groups are: {}", group_names.join(", ")));
                    problems.push(
                        at(
                            r.group.span().start,
                            format!("manager `{name}` is in group `{}`, which [[groups]] does not declare", r.group.get_ref()),
                        )
                        .with_hint(hint),
                    );
                    0
                }
            };
            let zone = match &r.time_zone {
                Some(z) => zone(file, text, z, problems).unwrap_or(company_zone),
                None => company_zone,
            };
            let week = self.week(file, text, &name, &r.week, problems);
            let days_off = r
                .days_off
                .iter()
                .filter_map(|d| {
                    let date = parse_date(d.get_ref());
                    if date.is_none() {
                        problems.push(at(
                            d.span().start,
                            format!(
                                "`{}` in `days_off` is not a date: write it like \"2026-12-31\"",
                                d.get_ref()
                            ),
                        ));
                    }
                    date
                })
                .collect();
            let vacations = vacations(file, text, &name, &r.vacations, problems);
            let weight = match &r.weight {
                None => 1.0,
                Some(w) if *w.get_ref() > 0.0 && *w.get_ref() <= 10.0 => *w.get_ref(),
                Some(w) => {
                    problems.push(
                        at(w.span().start, format!("the weight of `{name}` is {}; it is above 0", w.get_ref()))
                            .with_hint("1 is a full share of leads, 0.5 half of it (a newcomer); to take no leads, write active = false"),
                    );
                    1.0
                }
            };
            managers.push(Manager {
                id,
                name,
                group,
                specialisations: r
                    .specialisations
                    .iter()
                    .map(|s| s.get_ref().trim().to_owned())
                    .collect(),
                zone,
                week,
                days_off,
                vacations,
                weight,
                active: r.active,
            });
        }

        // Group leads, by id or by name.
        for (g, raw) in self.groups.iter().enumerate() {
            let Some(lead) = &raw.get_ref().lead else {
                continue;
            };
            let wanted = lead.get_ref().text();
            let found = ids
                .get(&wanted)
                .copied()
                .or_else(|| managers.iter().position(|m| m.name == wanted));
            match found {
                Some(m) => groups[g].lead = Some(m),
                None => {
                    let hint = did_you_mean(&wanted, managers.iter().map(|m| m.name.as_str()))
                        .map(|m| format!("did you mean `{m}`?"))
                        .unwrap_or_else(|| "name a manager of this file by name or id".into());
                    problems.push(
                        at(
                            lead.span().start,
                            format!(
                                "the lead of group `{}`, `{wanted}`, is not a manager of this file",
                                groups[g].name
                            ),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
        for (g, group) in groups.iter().enumerate() {
            if !managers.iter().any(|m| m.group == g && m.active) {
                problems.push(
                    Problem::warning(
                        file,
                        format!(
                            "group `{}` has no active manager: its leads will wait",
                            group.name
                        ),
                    )
                    .at_offset(text, self.groups[g].get_ref().name.span().start),
                );
            }
        }
        Roster {
            groups,
            managers,
            zone: company_zone,
        }
    }

    fn week(
        &self,
        file: &Path,
        text: &str,
        name: &str,
        raw: &Spanned<Vec<Spanned<RawShift>>>,
        problems: &mut Vec<Problem>,
    ) -> Week {
        let at =
            |offset: usize, message: String| Problem::error(file, message).at_offset(text, offset);
        let mut week = Week::default();
        if raw.get_ref().is_empty() {
            problems.push(
                at(raw.span().start, format!("`{name}` has no shift in `week`"))
                    .with_hint("write week = [ { days = \"пн-пт\", hours = \"09:00-18:00\", lunch = \"13:00-14:00\" } ]; to take no leads, write active = false"),
            );
        }
        for s in raw.get_ref() {
            let s = s.get_ref();
            let days = match parse_days(s.days.get_ref()) {
                Ok(days) => days,
                Err(word) => {
                    let all = DAYS.iter().flatten().copied();
                    let hint = did_you_mean(&word, all)
                        .map(|m| format!("did you mean `{m}`?"))
                        .unwrap_or_else(|| "weekdays are пн, вт, ср, чт, пт, сб, вс; write a range like \"пн-пт\" or a list like \"пн, ср\"".into());
                    problems.push(
                        at(
                            s.days.span().start,
                            format!("`{word}` in `days` is not a weekday or a range of them"),
                        )
                        .with_hint(hint),
                    );
                    continue;
                }
            };
            let Some((start, end)) = parse_window(s.hours.get_ref()) else {
                problems.push(at(
                    s.hours.span().start,
                    format!(
                        "`{}` in `hours` is not a window: write it like \"09:00-18:00\"",
                        s.hours.get_ref()
                    ),
                ));
                continue;
            };
            if end <= start {
                problems.push(
                    at(s.hours.span().start, format!("the shift {} of `{name}` ends before it starts", s.hours.get_ref()))
                        .with_hint("a shift lies within one day; a night shift is two: one to \"23:59\", one from \"00:00\""),
                );
                continue;
            }
            let hours = Window { start, end };
            let lunch = match &s.lunch {
                None => None,
                Some(l) => {
                    match parse_window(l.get_ref()) {
                        None => {
                            problems.push(at(
                            l.span().start,
                            format!("`{}` in `lunch` is not a window: write it like \"13:00-14:00\"", l.get_ref()),
                        ));
                            None
                        }
                        Some((a, b)) if b <= a => {
                            problems.push(at(
                                l.span().start,
                                format!(
                                    "the lunch {} of `{name}` ends before it starts",
                                    l.get_ref()
                                ),
                            ));
                            None
                        }
                        Some((a, b)) if a <= start || b >= end => {
                            problems.push(
                                at(
                                    l.span().start,
                                    format!(
                                        "the lunch {} of `{name}` is not inside the shift {}",
                                        l.get_ref(),
                                        s.hours.get_ref()
                                    ),
                                )
                                .with_hint(
                                    "lunch begins after the shift starts and ends before it ends",
                                ),
                            );
                            None
                        }
                        Some((a, b)) => Some(Window { start: a, end: b }),
                    }
                }
            };
            for d in days {
                if week.0[d].is_some() {
                    let day = DAYS[d][0];
                    problems.push(at(
                        s.days.span().start,
                        format!("`{name}` has two shifts on {day}: each weekday goes in one line of `week`"),
                    ));
                }
                week.0[d] = Some(Shift { hours, lunch });
            }
        }
        week
    }
}

fn vacations(
    file: &Path,
    text: &str,
    name: &str,
    raw: &[Spanned<RawVacation>],
    problems: &mut Vec<Problem>,
) -> Vec<Vacation> {
    let at = |offset: usize, message: String| Problem::error(file, message).at_offset(text, offset);
    let mut out: Vec<Vacation> = Vec::new();
    for v in raw {
        let r = v.get_ref();
        let date = |d: &Spanned<String>, problems: &mut Vec<Problem>| {
            let parsed = parse_date(d.get_ref());
            if parsed.is_none() {
                problems.push(at(
                    d.span().start,
                    format!(
                        "`{}` is not a date: write it like \"2026-07-06\"",
                        d.get_ref()
                    ),
                ));
            }
            parsed
        };
        let (Some(from), Some(to)) = (date(&r.from, problems), date(&r.to, problems)) else {
            continue;
        };
        if to < from {
            problems.push(at(
                v.span().start,
                format!("the vacation of `{name}` from {from} to {to} ends before it begins"),
            ));
            continue;
        }
        let vacation = Vacation { from, to };
        if let Some(other) = out.iter().find(|o| o.from <= to && from <= o.to) {
            problems.push(
                at(
                    v.span().start,
                    format!(
                        "the vacations of `{name}` from {from} to {to} and from {} to {} overlap",
                        other.from, other.to
                    ),
                )
                .with_hint("join them into one, or correct the dates"),
            );
            continue;
        }
        out.push(vacation);
    }
    out
}

#[cfg(test)]
mod tests;
