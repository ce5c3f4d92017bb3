//! `chains.toml` and `templates/`: the follow-up chains, checked into [`Chains`] and
//! [`Templates`]. Every template a step names must exist and use only placeholders the
//! context has; every stage and refusal reason must be one the account has (the
//! `[account]` lists of the file, and the refusals of `scoring.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::condition::{Checker, RawCondition};
use super::duration::Span;
use super::managers::{parse_date, parse_days, parse_time, parse_window, zone};
use super::problem::{Problem, did_you_mean};
use super::rules;
use crate::domain::chains::template::SUBJECT;
use crate::domain::chains::{
    Action, Calendar, Chain, Chains, Channel, Delay, Gate, Gates, Messages, Moves, Otherwise,
    SendWindow, Step, Stop, TemplateContext, Templates, Throttle, Trigger, facts,
};
use crate::domain::condition::Condition;
use crate::domain::priority::Priority;
use crate::domain::product::{Analogue, Product};

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "chains.toml";

/// The folder of the templates, beside the file.
pub const TEMPLATES_DIR: &str = "templates";

/// The endings a template file may have.
pub const TEMPLATE_EXTENSIONS: [&str; 2] = ["txt", "j2"];

/// The words of `stop = [...]`.
pub const STOPS: [&str; 7] = [
    "reply", "call", "stage", "meeting", "won", "lost", "manager",
];

/// What `chains.toml` is checked against, from the other rule files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The robot's names of the lead fields mapped in `robot.toml`; `None` when that file
    /// could not be read.
    pub lead_fields: Option<&'a [String]>,
    /// The names of the refusals of `scoring.toml`, which are refusal reasons of the
    /// account too; `None` when there is no usable scoring file.
    pub refusals: Option<&'a [String]>,
    /// The account's time zone (`managers.toml`), for a file that names none.
    pub zone: Option<Tz>,
}

/// The checked chains and their templates.
#[derive(Debug)]
pub struct ChainRules {
    /// The chains and the rules they share.
    pub chains: Chains,
    /// The templates of `templates/`.
    pub templates: Templates,
}

/// Reads `dir/chains.toml` and `dir/templates/`; `Ok(None)` when there is no chains file.
pub fn load(dir: &Path, known: Known<'_>) -> Result<Option<ChainRules>, Vec<Problem>> {
    rules::accept(check(dir, known))
}

/// Every problem of `dir/chains.toml` and its templates, and the rules when usable.
pub fn check(dir: &Path, known: Known<'_>) -> (Option<ChainRules>, Vec<Problem>) {
    let file = dir.join(FILE_NAME);
    let text = match rules::read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return (None, Vec::new()),
        Err(p) => return (None, vec![p]),
    };
    let raw: RawFile = match rules::parse(&file, &text) {
        Ok(raw) => raw,
        Err(p) => return (None, vec![p]),
    };
    let mut problems = Vec::new();
    let templates = read_templates(&dir.join(TEMPLATES_DIR), &mut problems);
    let ctx = Ctx {
        file: &file,
        text: &text,
        known,
    };
    let chains = ctx.check(raw, &templates, &mut problems);
    problems.sort_by_key(|p| (p.file.clone(), p.line.is_none(), p.line, p.column));
    let usable = !problems.iter().any(Problem::is_error);
    let templates = templates.templates;
    (usable.then_some(ChainRules { chains, templates }), problems)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    calendar: RawCalendar,
    #[serde(default)]
    account: RawAccount,
    #[serde(default)]
    priority: BTreeMap<String, Spanned<RawGate>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    whatsapp: RawWhatsapp,
    stop_tag: Option<String>,
    #[serde(default)]
    chains: Vec<Spanned<RawChain>>,
    #[serde(default)]
    analogues: Vec<Spanned<RawAnalogue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalogue {
    product: Spanned<String>,
    brand: Option<String>,
    offer: Vec<Spanned<RawOffer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffer {
    name: Spanned<String>,
    brand: Option<String>,
    price: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    time_zone: Option<Spanned<String>>,
    days: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    #[serde(default)]
    regions: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    stages: Option<Vec<String>>,
    loss_reasons: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    messages: Spanned<String>,
    tasks: bool,
    moves: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    per_minute: BTreeMap<String, Spanned<u32>>,
    per_client_per_day: u32,
    lease: Option<Spanned<Span>>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            per_minute: BTreeMap::new(),
            per_client_per_day: 1,
            lease: None,
        }
    }
}

/// How long a claimed step may be at work when the file does not say.
const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhatsapp {
    session: Option<Spanned<Span>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: Spanned<String>,
    trigger: Spanned<RawTrigger>,
    when: Option<Spanned<RawCondition>>,
    stop: Option<Vec<Spanned<String>>>,
    stop_when: Option<Spanned<RawCondition>>,
    window: Option<Spanned<String>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    enters: Option<Spanned<String>>,
    lost: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    set: Option<Spanned<String>>,
    missed_meeting: Option<Spanned<String>>,
    grace: Option<Spanned<Span>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    title: Option<String>,
    after: Spanned<Span>,
    at: Option<Spanned<String>>,
    when: Option<Spanned<RawCondition>>,
    wazzup: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    approved: Option<Spanned<String>>,
    otherwise: Option<Spanned<String>>,
    call: Option<Spanned<String>>,
    task: Option<Spanned<String>>,
    within: Option<Spanned<Span>>,
    note: Option<Spanned<String>>,
    #[serde(rename = "move")]
    move_to: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
}

/// The templates read from the folder, and where each came from.
struct Read {
    templates: Templates,
    files: BTreeMap<String, PathBuf>,
}

fn read_templates(folder: &Path, problems: &mut Vec<Problem>) -> Read {
    let mut read = Read {
        templates: Templates::new(),
        files: BTreeMap::new(),
    };
    let Ok(entries) = fs::read_dir(folder) else {
        return read;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| TEMPLATE_EXTENSIONS.contains(&e))
        })
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if let Some(other) = read.files.get(&name) {
            problems.push(
                Problem::error(
                    &path,
                    format!(
                        "two templates are named `{name}`: this one and {}",
                        other.display()
                    ),
                )
                .with_hint("keep one of them: a step names a template without its ending"),
            );
            continue;
        }
        let text = match rules::read(&path) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        match read.templates.add(&name, text) {
            Ok(()) => {}
            Err(e) => {
                problems.push(template_problem(&path, &e));
                continue;
            }
        }
        read.files.insert(name, path);
    }
    read
}

fn template_problem(path: &Path, e: &crate::domain::chains::TemplateError) -> Problem {
    use crate::domain::chains::TemplateError as E;
    let (line, message) = match e {
        E::Syntax { line, message, .. } | E::Render { line, message, .. } => {
            (*line, message.clone())
        }
        E::Missing(name) => (None, format!("no template `{name}`")),
    };
    let p = Problem::error(path, message);
    match line {
        Some(line) => p.at(line, 1),
        None => p,
    }
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    known: Known<'a>,
}

impl Ctx<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> Problem {
        Problem::error(self.file, message).at_offset(self.text, offset)
    }

    fn check(&self, raw: RawFile, read: &Read, problems: &mut Vec<Problem>) -> Chains {
        let calendar = self.calendar(&raw.calendar, problems);
        let window = self
            .window(raw.calendar.window.as_ref(), problems)
            .unwrap_or_else(default_window);
        let gates = self.gates(&raw.priority, problems);
        let throttle = self.throttle(&raw.limits, problems);
        let session = self.wall_clock(
            raw.whatsapp.session.as_ref(),
            "`session` in [whatsapp] is wall-clock time, like \"24h\"",
            Duration::from_secs(24 * 3600),
            problems,
        );
        let lease = self.wall_clock(
            raw.limits.lease.as_ref(),
            "`lease` in [limits] is wall-clock time, like \"5m\"",
            DEFAULT_LEASE,
            problems,
        );
        let account = Account::new(&raw.account, self.known.refusals);
        let mut chains: Vec<Chain> = Vec::new();
        let mut names = BTreeSet::new();
        for rc in &raw.chains {
            let name = rc.get_ref().name.get_ref().trim().to_owned();
            if !names.insert(name.clone()) {
                problems.push(self.at(
                    rc.get_ref().name.span().start,
                    format!("chain `{name}` is declared twice"),
                ));
                continue;
            }
            if let Some(chain) = self.chain(rc, &account, read, problems) {
                chains.push(chain);
            }
        }
        let analogues = self.analogues(&raw.analogues, problems);
        Chains {
            chains,
            analogues,
            calendar,
            window,
            gates,
            throttle,
            session,
            stop_tag: raw.stop_tag.unwrap_or_default().trim().to_owned(),
            lease,
        }
    }

    /// The `[[analogues]]` rows: each names a product and offers at least one named thing
    /// at a price that is not negative.
    fn analogues(
        &self,
        raw: &[Spanned<RawAnalogue>],
        problems: &mut Vec<Problem>,
    ) -> Vec<Analogue> {
        let text = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut out = Vec::new();
        for row in raw {
            let r = row.get_ref();
            let product = r.product.get_ref().trim();
            if product.is_empty() {
                problems.push(self.at(
                    r.product.span().start,
                    "`product` of [[analogues]] is empty: write a part of the product's name",
                ));
                continue;
            }
            if r.offer.is_empty() {
                problems.push(self.at(row.span().start, format!("[[analogues]] for `{product}` offers nothing: give `offer = [{{ name = \"…\", brand = \"…\", price = … }}]`")));
                continue;
            }
            let mut offer = Vec::new();
            for o in &r.offer {
                let o = o.get_ref();
                let name = o.name.get_ref().trim();
                if name.is_empty() {
                    problems.push(self.at(o.name.span().start, "an analogue's `name` is empty"));
                    continue;
                }
                if let Some(price) = &o.price
                    && (*price.get_ref() < 0.0 || !price.get_ref().is_finite())
                {
                    problems.push(self.at(
                        price.span().start,
                        "an analogue's `price` is a sum in roubles, not below 0",
                    ));
                    continue;
                }
                offer.push(Product {
                    name: name.to_owned(),
                    brand: text(&o.brand),
                    quantity: None,
                    price: o.price.as_ref().map(|p| *p.get_ref()),
                });
            }
            out.push(Analogue {
                product: product.to_owned(),
                brand: text(&r.brand),
                offer,
            });
        }
        out
    }

    /// A key of wall-clock time (hours, minutes: not business days, not 0), or `default`
    /// when it is not set; `wrong` is said at the key when it is not such a time.
    fn wall_clock(
        &self,
        key: Option<&Spanned<Span>>,
        wrong: &str,
        default: Duration,
        problems: &mut Vec<Problem>,
    ) -> Duration {
        let Some(s) = key else {
            return default;
        };
        match s.get_ref().as_std() {
            Some(d) if !d.is_zero() => d,
            _ => {
                problems.push(self.at(s.span().start, wrong));
                default
            }
        }
    }

    fn calendar(&self, raw: &RawCalendar, problems: &mut Vec<Problem>) -> Calendar {
        let account_zone = self.known.zone.unwrap_or(super::managers::DEFAULT_ZONE);
        let zone_of = |name: &Spanned<String>, problems: &mut Vec<Problem>| {
            zone(self.file, self.text, name, problems)
        };
        let mut calendar = Calendar::weekdays(
            raw.time_zone
                .as_ref()
                .and_then(|z| zone_of(z, problems))
                .unwrap_or(account_zone),
        );
        if let Some(days) = &raw.days {
            match parse_days(days.get_ref()) {
                Ok(list) if !list.is_empty() => {
                    calendar.workdays = [false; 7];
                    for d in list {
                        calendar.workdays[d] = true;
                    }
                }
                Ok(_) => {
                    problems.push(self.at(days.span().start, "`days` in [calendar] names no day"))
                }
                Err(word) => problems.push(
                    self.at(
                        days.span().start,
                        format!(
                            "`{word}` in `days` of [calendar] is not a weekday or a range of them"
                        ),
                    )
                    .with_hint(
                        "weekdays are пн, вт, ср, чт, пт, сб, вс; write a range like \"пн-пт\"",
                    ),
                ),
            }
        }
        for h in &raw.holidays {
            match parse_date(h.get_ref()) {
                Some(d) => {
                    calendar.holidays.insert(d);
                }
                None => problems.push(self.at(
                    h.span().start,
                    format!(
                        "`{}` in `holidays` is not a date: write it like \"2026-01-07\"",
                        h.get_ref()
                    ),
                )),
            }
        }
        for (region, name) in &raw.regions {
            if let Some(z) = zone_of(name, problems) {
                calendar.regions.insert(region.trim().to_lowercase(), z);
            }
        }
        calendar
    }

    fn window(
        &self,
        raw: Option<&Spanned<String>>,
        problems: &mut Vec<Problem>,
    ) -> Option<SendWindow> {
        let raw = raw?;
        let window = parse_window(raw.get_ref()).and_then(|(a, b)| SendWindow::new(a, b));
        if window.is_none() {
            problems.push(
                self.at(
                    raw.span().start,
                    format!(
                        "`{}` is not a send window: write it like \"09:00-19:00\", the start \
                         before the end",
                        raw.get_ref()
                    ),
                )
                .with_hint("a window does not cross midnight"),
            );
        }
        window
    }

    fn gates(
        &self,
        raw: &BTreeMap<String, Spanned<RawGate>>,
        problems: &mut Vec<Problem>,
    ) -> Gates {
        let mut gates = Gates::seed();
        for (key, g) in raw {
            let at = g.span().start;
            let Some(priority) = key.parse::<u8>().ok().and_then(|n| Priority::new(n).ok()) else {
                problems.push(self.at(
                    at,
                    format!("[priority] has rows for priorities 1 to 5, not `{key}`"),
                ));
                continue;
            };
            let g = g.get_ref();
            let messages = match g.messages.get_ref().as_str() {
                "send" => Some(Messages::Send),
                "task" => Some(Messages::Task),
                "skip" => Some(Messages::Skip),
                other => {
                    problems.push(self.at(
                        g.messages.span().start,
                        format!("`messages` is \"send\", \"task\" or \"skip\", not \"{other}\""),
                    ));
                    None
                }
            };
            let moves = match g.moves.get_ref().as_str() {
                "move" => Some(Moves::Move),
                "task" => Some(Moves::Task),
                "skip" => Some(Moves::Skip),
                other => {
                    problems.push(self.at(
                        g.moves.span().start,
                        format!("`moves` is \"move\", \"task\" or \"skip\", not \"{other}\""),
                    ));
                    None
                }
            };
            let (Some(messages), Some(moves)) = (messages, moves) else {
                continue;
            };
            let gate = Gate {
                messages,
                tasks: g.tasks,
                moves,
            };
            if let Err(e) = gates.set(priority, gate) {
                problems.push(
                    self.at(at, format!("[priority] {priority}: {e}"))
                        .with_hint("the seed interview: priority 1 is worked by people only, priority 5 by the robot only"),
                );
            }
        }
        gates
    }

    fn throttle(&self, raw: &RawLimits, problems: &mut Vec<Problem>) -> Throttle {
        let mut per_minute = BTreeMap::new();
        for (key, limit) in &raw.per_minute {
            let channel = match key.as_str() {
                "wazzup" => Channel::Wazzup,
                "email" => Channel::Email,
                other => {
                    problems.push(
                        self.at(
                            limit.span().start,
                            format!("`per_minute` in [limits] names the channel `{other}`, which is not one"),
                        )
                        .with_hint_opt(
                            did_you_mean(other, ["wazzup", "email"])
                                .map(|m| format!("did you mean `{m}`?")),
                        ),
                    );
                    continue;
                }
            };
            if *limit.get_ref() == 0 {
                problems.push(self.at(
                    limit.span().start,
                    format!("`{key}` in `per_minute` of [limits] is 0: nothing would ever go out"),
                ));
                continue;
            }
            per_minute.insert(channel, *limit.get_ref());
        }
        Throttle {
            per_minute,
            per_client_per_day: raw.per_client_per_day,
        }
    }

    fn condition(
        &self,
        raw: &Spanned<RawCondition>,
        problems: &mut Vec<Problem>,
    ) -> Option<Condition> {
        let mut known: Vec<String> = facts::BUILT_IN.iter().map(|s| (*s).to_owned()).collect();
        known.extend(self.known.lead_fields.unwrap_or_default().iter().cloned());
        known.sort();
        known.dedup();
        Checker {
            file: self.file,
            text: self.text,
            known: &known,
        }
        .check(raw, problems)
    }

    fn chain(
        &self,
        raw: &Spanned<RawChain>,
        account: &Account,
        read: &Read,
        problems: &mut Vec<Problem>,
    ) -> Option<Chain> {
        let c = raw.get_ref();
        let name = c.name.get_ref().trim().to_owned();
        let before = problems.len();
        let trigger = self.trigger(&name, &c.trigger, account, problems);
        let when = c.when.as_ref().and_then(|w| self.condition(w, problems));
        let mut stops = Vec::new();
        match &c.stop {
            None => stops = Stop::all(),
            Some(list) => {
                for s in list {
                    let stop = match s.get_ref().trim() {
                        "reply" => Stop::Reply,
                        "call" => Stop::Call,
                        "stage" => Stop::Stage,
                        "meeting" => Stop::Meeting,
                        "won" => Stop::Won,
                        "lost" => Stop::Lost,
                        "manager" => Stop::Manager,
                        other => {
                            problems.push(
                                self.at(
                                    s.span().start,
                                    format!(
                                        "`{other}` is not a stop condition: the list holds {}",
                                        STOPS.join(", ")
                                    ),
                                )
                                .with_hint_opt(
                                    did_you_mean(other, STOPS)
                                        .map(|m| format!("did you mean `{m}`?")),
                                ),
                            );
                            continue;
                        }
                    };
                    stops.push(stop);
                }
            }
        }
        if let Some(w) = &c.stop_when
            && let Some(cond) = self.condition(w, problems)
        {
            stops.push(Stop::When(cond));
        }
        let window = self.window(c.window.as_ref(), problems);
        if c.steps.is_empty() {
            problems.push(
                self.at(c.name.span().start, format!("chain `{name}` has no steps"))
                    .with_hint("add [[chains.steps]] below it, each with `after` and what it does"),
            );
        }
        let steps: Vec<Step> = c
            .steps
            .iter()
            .filter_map(|s| self.step(s, account, read, problems))
            .collect();
        if problems.len() > before {
            return None;
        }
        Some(Chain {
            name,
            trigger: trigger?,
            when,
            steps,
            stops,
            window,
        })
    }

    fn trigger(
        &self,
        chain: &str,
        raw: &Spanned<RawTrigger>,
        account: &Account,
        problems: &mut Vec<Problem>,
    ) -> Option<Trigger> {
        let t = raw.get_ref();
        let given = [&t.enters, &t.lost, &t.tag, &t.set, &t.missed_meeting]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            problems.push(self.at(
                raw.span().start,
                format!(
                    "the trigger of chain `{chain}` needs exactly one of `enters`, `lost`, \
                         `tag`, `set`, `missed_meeting` ({given} given)"
                ),
            ));
            return None;
        }
        if t.grace.is_some() && t.missed_meeting.is_none() {
            problems.push(self.at(raw.span().start, "`grace` goes with `missed_meeting` only"));
            return None;
        }
        if let Some(stage) = &t.enters {
            account.stage(self, stage, problems);
            return Some(Trigger::Enters(stage.get_ref().trim().to_owned()));
        }
        if let Some(reason) = &t.lost {
            account.reason(self, reason, problems);
            return Some(Trigger::Lost(reason.get_ref().trim().to_owned()));
        }
        if let Some(tag) = &t.tag {
            return Some(Trigger::Tag(tag.get_ref().trim().to_owned()));
        }
        if let Some(field) = &t.set {
            let known = self.known.lead_fields;
            let name = field.get_ref().trim();
            if known.is_some_and(|k| !k.iter().any(|f| f == name))
                && !facts::BUILT_IN.contains(&name)
            {
                problems.push(
                    self.at(
                        field.span().start,
                        format!("`set` names the lead field `{name}`, which robot.toml's [fields.leads] does not map"),
                    )
                    .with_hint_opt(
                        did_you_mean(name, known.unwrap_or_default().iter().map(String::as_str))
                            .map(|m| format!("did you mean `{m}`?")),
                    ),
                );
                return None;
            }
            return Some(Trigger::Set(name.to_owned()));
        }
        let stage = t.missed_meeting.as_ref()?;
        account.stage(self, stage, problems);
        let grace = match &t.grace {
            None => Duration::from_secs(30 * 60),
            Some(g) => match g.get_ref().as_std() {
                Some(d) => d,
                None => {
                    problems
                        .push(self.at(g.span().start, "`grace` is wall-clock time, like \"30m\""));
                    return None;
                }
            },
        };
        Some(Trigger::MeetingMissed {
            stage: stage.get_ref().trim().to_owned(),
            grace,
        })
    }

    fn step(
        &self,
        raw: &Spanned<RawStep>,
        account: &Account,
        read: &Read,
        problems: &mut Vec<Problem>,
    ) -> Option<Step> {
        let s = raw.get_ref();
        let at_step = raw.span().start;
        let actions = [&s.wazzup, &s.email, &s.call, &s.task, &s.note, &s.move_to]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if actions != 1 {
            problems.push(self.at(
                at_step,
                format!(
                    "a step does one thing: exactly one of `wazzup`, `email`, `call`, `task`, \
                     `note`, `move` ({actions} given)"
                ),
            ));
            return None;
        }
        let misplaced = |key: &str, given: bool, belongs: &str, problems: &mut Vec<Problem>| {
            if given {
                problems.push(self.at(at_step, format!("`{key}` goes with {belongs} only")));
            }
            given
        };
        let mut bad = false;
        bad |= misplaced(
            "approved",
            s.approved.is_some() && s.wazzup.is_none(),
            "`wazzup`",
            problems,
        );
        bad |= misplaced(
            "otherwise",
            s.otherwise.is_some() && s.wazzup.is_none(),
            "`wazzup`",
            problems,
        );
        bad |= misplaced(
            "within",
            s.within.is_some() && s.call.is_none() && s.task.is_none(),
            "`call` and `task`",
            problems,
        );
        bad |= misplaced(
            "reason",
            s.reason.is_some() && s.move_to.is_none(),
            "`move`",
            problems,
        );
        let after = match *s.after.get_ref() {
            Span::Calendar(d) => Delay::Calendar(d),
            Span::BusinessDays(n) => Delay::BusinessDays(n),
        };
        let at = match &s.at {
            None => None,
            Some(t) => match parse_time(t.get_ref()) {
                Some(t) => Some(t),
                None => {
                    problems.push(self.at(
                        t.span().start,
                        format!(
                            "`at` is a time of day like \"10:00\", not \"{}\"",
                            t.get_ref()
                        ),
                    ));
                    bad = true;
                    None::<NaiveTime>
                }
            },
        };
        let when = s.when.as_ref().and_then(|w| self.condition(w, problems));
        let within = match &s.within {
            None => Duration::from_secs(2 * 3600),
            Some(w) => match w.get_ref().as_std() {
                Some(d) => d,
                None => {
                    problems
                        .push(self.at(w.span().start, "`within` is wall-clock time, like \"2h\""));
                    bad = true;
                    Duration::ZERO
                }
            },
        };
        let message = |channel, t: &Spanned<String>, problems: &mut Vec<Problem>| {
            let name = t.get_ref().trim().to_owned();
            self.template(channel, t, read, problems);
            name
        };
        let action = if let Some(t) = &s.wazzup {
            let otherwise = match s
                .otherwise
                .as_ref()
                .map(|o| (o.span().start, o.get_ref().trim()))
            {
                None => Otherwise::Skip,
                Some((_, "email")) => Otherwise::Email,
                Some((_, "task")) => Otherwise::Task,
                Some((_, "skip")) => Otherwise::Skip,
                Some((offset, other)) => {
                    problems.push(self.at(
                        offset,
                        format!("`otherwise` is \"email\", \"task\" or \"skip\", not \"{other}\""),
                    ));
                    bad = true;
                    Otherwise::Skip
                }
            };
            Action::Message {
                channel: Channel::Wazzup,
                template: message(Channel::Wazzup, t, problems),
                approved: s
                    .approved
                    .as_ref()
                    .map(|a| a.get_ref().trim().to_owned())
                    .filter(|a| !a.is_empty()),
                otherwise,
            }
        } else if let Some(t) = &s.email {
            Action::Message {
                channel: Channel::Email,
                template: message(Channel::Email, t, problems),
                approved: None,
                otherwise: Otherwise::Skip,
            }
        } else if let Some(text) = &s.call {
            Action::Call {
                text: text.get_ref().trim().to_owned(),
                within,
            }
        } else if let Some(text) = &s.task {
            Action::Task {
                text: text.get_ref().trim().to_owned(),
                within,
            }
        } else if let Some(text) = &s.note {
            Action::Note {
                text: text.get_ref().trim().to_owned(),
            }
        } else {
            let stage = s.move_to.as_ref()?;
            account.stage(self, stage, problems);
            if let Some(reason) = &s.reason {
                account.reason(self, reason, problems);
            }
            Action::Move {
                stage: stage.get_ref().trim().to_owned(),
                reason: s.reason.as_ref().map(|r| r.get_ref().trim().to_owned()),
            }
        };
        if bad {
            return None;
        }
        let title = s.title.clone().unwrap_or_else(|| match &action {
            Action::Message { template, .. } => template.clone(),
            Action::Call { text, .. } | Action::Task { text, .. } | Action::Note { text } => {
                text.clone()
            }
            Action::Move { stage, .. } => stage.clone(),
        });
        Some(Step {
            title,
            after,
            at,
            when,
            action,
        })
    }

    /// Checks that the template named at `raw` exists, uses only known placeholders and
    /// renders; an e-mail's starts with its subject.
    fn template(
        &self,
        channel: Channel,
        raw: &Spanned<String>,
        read: &Read,
        problems: &mut Vec<Problem>,
    ) {
        let name = raw.get_ref().trim();
        let Some(path) = read.files.get(name) else {
            let shown = TEMPLATE_EXTENSIONS
                .iter()
                .map(|e| format!("{TEMPLATES_DIR}/{name}.{e}"))
                .collect::<Vec<_>>()
                .join(" or ");
            problems.push(
                self.at(
                    raw.span().start,
                    format!("no template `{name}`: expected {shown}"),
                )
                .with_hint_opt(
                    did_you_mean(name, read.files.keys().map(String::as_str))
                        .map(|m| format!("did you mean `{m}`?")),
                ),
            );
            return;
        };
        let templates = &read.templates;
        let known = TemplateContext::known_paths();
        let mut clean = true;
        match templates.unknown_placeholders(name) {
            Ok(unknown) => {
                for u in unknown {
                    clean = false;
                    let p = Problem::error(
                        path,
                        format!("unknown placeholder `{{{{ {} }}}}`", u.path),
                    )
                    .with_hint(
                        did_you_mean(&u.path, known.iter().map(String::as_str))
                            .map(|m| format!("did you mean `{m}`?"))
                            .unwrap_or_else(|| {
                                "a template sees lead, contact, company, manager, products, \
                                 analogues, purchases and messages"
                                    .into()
                            }),
                    );
                    problems.push(match u.line {
                        Some(line) => p.at(line, 1),
                        None => p,
                    });
                }
            }
            Err(e) => problems.push(template_problem(path, &e)),
        }
        if !clean {
            return;
        }
        match templates.render(name, &TemplateContext::sample()) {
            Ok(rendered) => {
                if channel == Channel::Email && rendered.subject.is_none() {
                    problems.push(
                        Problem::error(path, "a letter's template starts with its subject")
                            .at(1, 1)
                            .with_hint(format!("write the first line as `{SUBJECT} …`")),
                    );
                }
            }
            Err(e) => problems.push(template_problem(path, &e)),
        }
    }
}

fn default_window() -> SendWindow {
    SendWindow {
        start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN),
        end: NaiveTime::from_hms_opt(19, 0, 0).unwrap_or(NaiveTime::MIN),
    }
}

/// The stages and refusal reasons the account has, as far as the configuration knows.
struct Account {
    stages: Option<Vec<String>>,
    reasons: Option<Vec<String>>,
}

impl Account {
    fn new(raw: &RawAccount, refusals: Option<&[String]>) -> Account {
        let reasons = match (&raw.loss_reasons, refusals) {
            (None, None) => None,
            (listed, refusals) => {
                let mut all: BTreeSet<String> = listed.iter().flatten().cloned().collect();
                all.extend(refusals.unwrap_or_default().iter().cloned());
                Some(all.into_iter().collect())
            }
        };
        Account {
            stages: raw.stages.clone(),
            reasons,
        }
    }

    fn stage(&self, ctx: &Ctx<'_>, name: &Spanned<String>, problems: &mut Vec<Problem>) {
        Self::known(
            ctx,
            "stage",
            "`stages` in [account]",
            &self.stages,
            name,
            problems,
        );
    }

    fn reason(&self, ctx: &Ctx<'_>, name: &Spanned<String>, problems: &mut Vec<Problem>) {
        Self::known(
            ctx,
            "refusal reason",
            "`loss_reasons` in [account] or the [[refuse]] names of scoring.toml",
            &self.reasons,
            name,
            problems,
        );
    }

    fn known(
        ctx: &Ctx<'_>,
        what: &str,
        lists: &str,
        list: &Option<Vec<String>>,
        name: &Spanned<String>,
        problems: &mut Vec<Problem>,
    ) {
        let Some(list) = list else { return };
        let wanted = name.get_ref();
        if list.iter().any(|s| facts::same(s, wanted)) {
            return;
        }
        problems.push(
            ctx.at(
                name.span().start,
                format!("the account has no {what} `{}`", wanted.trim()),
            )
            .with_hint(
                did_you_mean(wanted, list.iter().map(String::as_str))
                    .map(|m| format!("did you mean `{m}`?"))
                    .unwrap_or_else(|| format!("the account's names are in {lists}")),
            ),
        );
    }
}

#[cfg(test)]
mod tests;
