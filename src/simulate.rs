//! A day of the sales department, simulated: leads arrive at realistic times, managers work
//! their shifts, take calls and sometimes drop offline, and each lead is routed by the pure
//! decision ([`Router::decide`]). Everything comes from one seed, so a day can be replayed.
//!
//! What the day is made of:
//! - leads: more in the morning and after lunch, budgets and categories for all three
//!   groups and the specialisations, priorities 1 to 5;
//! - presence: online from a few minutes before the shift to a few after, away at lunch,
//!   calls that come and go, and now and then an hour offline, half of the time announced
//!   and half of the time by the desktop agent simply falling silent;
//! - waiting leads are tried again, the highest priority and the oldest first, whenever a
//!   presence changes or the decision named a moment to look again, and overflow at their
//!   limit.
//!
//! The rule breaks are counted by [`breach`], which reads the schedule and the presence
//! timeline on its own, without the eligibility code, so that a bug there shows up here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::condition::Facts;
use crate::domain::lead::FieldValue;
use crate::domain::presence::PresenceState;
use crate::domain::priority::Priority;
use crate::domain::routing::roster::at_local;
use crate::domain::routing::{
    Board, Decision, Fallback, Group, GroupRule, Heard, Manager, OverflowTo, PriorityRule, Request,
    Roster, Router, RoutingRules, Shift, Specialisation, TaskRule, Week, Window,
};

/// What day to simulate.
#[derive(Debug, Clone, Copy)]
pub struct DaySettings {
    /// The date, in the company's time zone.
    pub date: NaiveDate,
    /// How many leads arrive.
    pub leads: usize,
    /// The seed of everything random.
    pub seed: u64,
}

/// A lead of the simulated day.
#[derive(Debug, Clone)]
pub struct SimLead {
    /// When it arrives.
    pub at: DateTime<Utc>,
    /// Its facts: budget, category, brand, tags.
    pub facts: Facts,
    /// Its priority.
    pub priority: Priority,
}

/// From this moment on, a manager's presence is this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    /// When.
    pub at: DateTime<Utc>,
    /// Whose (an index into the roster's managers).
    pub manager: usize,
    /// The state reported.
    pub state: PresenceState,
    /// Whether the agent keeps sending heartbeats; when it falls silent, the last report
    /// ages until routing takes it as offline.
    pub beating: bool,
}

/// Why a lead should not have gone to a manager, judged independently of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Breach {
    /// Inactive, on vacation or a day off, or no shift that day.
    NotWorking,
    /// Outside the shift's hours.
    OutsideShift,
    /// At lunch.
    AtLunch,
    /// Within the guard before lunch or the end of the shift.
    InGuard,
    /// Offline (said so, or silent for longer than the freshness limit).
    Offline,
    /// On a call.
    OnCall,
    /// Away from the desk.
    Away,
}

/// How one manager's day went.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerDay {
    /// The manager (an index into the roster's managers).
    pub manager: usize,
    /// Leads received.
    pub leads: u32,
    /// Of them, leads received as the group lead after an overflow.
    pub by_overflow: u32,
    /// Hours of work in the day's shift (lunch excluded); 0 on a day off.
    pub hours: f64,
}

impl ManagerDay {
    /// Leads per worked hour; `None` for someone who did not work.
    pub fn per_hour(&self) -> Option<f64> {
        (self.hours > 0.0).then(|| f64::from(self.leads) / self.hours)
    }
}

/// The spread among managers of one group with the same weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// The group.
    pub group: usize,
    /// The weight.
    pub weight: f64,
    /// How many managers of that weight worked.
    pub managers: usize,
    /// Max − min of leads per worked hour.
    pub per_hour: f64,
    /// Max − min of the load at the end of the day (leads ÷ weight).
    pub load: f64,
    /// The same without the leads received as a group lead after an overflow, which
    /// bypass the choice of the least loaded.
    pub routed_load: f64,
}

/// Wait lengths.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Waits {
    /// Leads that waited at all before they were given to someone.
    pub count: usize,
    /// The median wait of those.
    pub median: TimeDelta,
    /// The 95th percentile.
    pub p95: TimeDelta,
    /// The longest.
    pub max: TimeDelta,
}

/// What happened in the day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayReport {
    /// The leads that arrived.
    pub leads: usize,
    /// Each manager, in the roster's order.
    pub managers: Vec<ManagerDay>,
    /// Spreads per group and weight, for weights held by two managers or more.
    pub spreads: Vec<Spread>,
    /// Waits of the leads given to someone.
    pub waits: Waits,
    /// Leads given to a manager by the decision.
    pub assigned: usize,
    /// Leads given to a group lead after an overflow.
    pub to_group_lead: usize,
    /// Overflows to another group.
    pub to_other_group: usize,
    /// Leads not routed to a person (priority 5).
    pub not_routed: usize,
    /// Leads still waiting at the end of the day.
    pub pending: usize,
    /// Of them, the longest wait so far.
    pub pending_longest: TimeDelta,
    /// Leads given by the decision to someone who could not take them, by rule.
    pub breaches: BTreeMap<Breach, usize>,
    /// Leads whose priority is routed yet were assigned against their rules (priority 5
    /// given to a person).
    pub fifth_routed: usize,
    /// Decisions made.
    pub decisions: usize,
}

impl DayReport {
    /// All rule breaks.
    pub fn breaks(&self) -> usize {
        self.breaches.values().sum::<usize>() + self.fifth_routed
    }
}

/// A day of the roster and rules: leads, presence, routing, and what came of it.
pub fn day(roster: &Roster, rules: &RoutingRules, settings: DaySettings) -> DayReport {
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let leads = leads(roster, settings, &mut rng);
    let presence = presence(roster, settings.date, 0.35, &mut rng);
    run(roster, rules, &leads, &presence, settings.date, &mut rng)
}

/// Leads of a day in the company's zone: 07:00 to 21:00, most of them from 09:00 to 12:00
/// and from 14:00 to 17:00; sorted by arrival.
pub fn leads(roster: &Roster, settings: DaySettings, rng: &mut impl Rng) -> Vec<SimLead> {
    // (from hour, to hour, relative intensity)
    const PROFILE: [(u32, u32, f64); 7] = [
        (7, 9, 0.6),
        (9, 12, 3.0),
        (12, 13, 2.0),
        (13, 14, 1.4),
        (14, 17, 2.6),
        (17, 19, 1.3),
        (19, 21, 0.4),
    ];
    let total: f64 = PROFILE.iter().map(|(a, b, w)| f64::from(b - a) * w).sum();
    let start = at_local(
        roster.zone,
        settings.date.and_time(NaiveTime::MIN) + TimeDelta::hours(7),
    );
    let mut out: Vec<SimLead> = (0..settings.leads)
        .map(|_| {
            let mut x = rng.random::<f64>() * total;
            let mut seconds = 0.0;
            for (a, b, w) in PROFILE {
                let span = f64::from(b - a);
                if x <= span * w {
                    seconds += x / w * 3600.0;
                    break;
                }
                x -= span * w;
                seconds += span * 3600.0;
            }
            let at = start + TimeDelta::milliseconds((seconds * 1000.0) as i64);
            let (facts, priority) = lead_facts(rng);
            SimLead {
                at,
                facts,
                priority,
            }
        })
        .collect();
    out.sort_by_key(|l| l.at);
    out
}

/// A lead's budget, category, brand and tags, and a priority that leans on the budget.
fn lead_facts(rng: &mut impl Rng) -> (Facts, Priority) {
    // (category, share, median budget ₽, spread of the budget's logarithm)
    const CATEGORIES: [(&str, f64, f64, f64); 6] = [
        ("Расходные материалы", 0.34, 12_000.0, 1.0),
        ("Сварочное оборудование", 0.28, 110_000.0, 1.0),
        ("Компрессоры", 0.12, 250_000.0, 0.9),
        ("Генераторы", 0.11, 300_000.0, 0.9),
        ("Газовые электростанции", 0.05, 1_500_000.0, 0.8),
        ("Плазменная резка", 0.10, 400_000.0, 1.2),
    ];
    const BRANDS: [&str; 6] = [
        "Сварог",
        "Fubag",
        "Kemppi",
        "ESAB",
        "Aurora",
        "Собственная марка",
    ];
    let mut x = rng.random::<f64>();
    let &(category, _, median, sigma) = CATEGORIES
        .iter()
        .find(|c| {
            x -= c.1;
            x <= 0.0
        })
        .unwrap_or(&CATEGORIES[0]);
    let normal = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
    let budget = (median * (sigma * normal).exp()).round().max(500.0);
    let mut facts = Facts::new();
    facts.insert("budget".into(), FieldValue::Number(budget));
    facts.insert("category".into(), FieldValue::Text(category.into()));
    facts.insert(
        "brand".into(),
        FieldValue::Text(BRANDS[rng.random_range(0..BRANDS.len())].into()),
    );
    // Projects with a technical brief: the senior group's work.
    if budget >= 300_000.0 && rng.random_bool(0.25) {
        facts.insert(
            "tags".into(),
            FieldValue::Many(vec!["техническое задание".into()]),
        );
    }
    let lean = (budget.log10() - 3.0).clamp(0.0, 3.5) / 3.5; // 0 for 1 000 ₽, 1 for 3 M₽
    let p = rng.random::<f64>() * 0.7 + lean * 0.3;
    let priority = match p {
        p if p > 0.82 => 1,
        p if p > 0.62 => 2,
        p if p > 0.38 => 3,
        p if p > 0.12 => 4,
        _ => 5,
    };
    (facts, Priority::new(priority).unwrap_or(Priority::FIFTH))
}

/// Each manager's presence through the day, sorted by time; `offline_chance` is each one's
/// chance of dropping offline for a while.
pub fn presence(
    roster: &Roster,
    date: NaiveDate,
    offline_chance: f64,
    rng: &mut impl Rng,
) -> Vec<PresenceChange> {
    let mut out = Vec::new();
    let minutes = |n: i64| TimeDelta::minutes(n);
    for (i, m) in roster.managers.iter().enumerate() {
        // The manager's own date that overlaps most of the company's day.
        let shift = match m.shift_on(date) {
            Ok(s) if m.active => *s,
            _ => continue,
        };
        let start = m.instant(date, shift.hours.start);
        let end = m.instant(date, shift.hours.end);
        let arrive = start - minutes(rng.random_range(0..=10));
        let leave = end + minutes(rng.random_range(0..=15));
        let mut changes: Vec<(DateTime<Utc>, PresenceState, bool)> =
            vec![(arrive, PresenceState::Online, true)];
        let lunch = shift
            .lunch
            .map(|l| (m.instant(date, l.start), m.instant(date, l.end)));
        if let Some((a, b)) = lunch {
            changes.push((a, PresenceState::Away, true));
            changes.push((
                b + minutes(rng.random_range(-3..=3)),
                PresenceState::Online,
                true,
            ));
        }
        // Calls: about one every 25 minutes, 1 to 45 minutes long, 7 on average.
        let mut t = arrive;
        loop {
            t += TimeDelta::seconds((exponential(rng, 25.0) * 60.0) as i64);
            if t >= leave {
                break;
            }
            let length = exponential(rng, 7.0).clamp(1.0, 45.0);
            let over = t + TimeDelta::seconds((length * 60.0) as i64);
            if lunch.is_some_and(|(a, b)| t < b && over > a) {
                continue;
            }
            changes.push((t, PresenceState::OnCall, true));
            changes.push((over, PresenceState::Online, true));
            t = over;
        }
        // Now and then an hour offline: said so, or the agent just falls silent.
        if rng.random_bool(offline_chance) {
            let span = (leave - arrive).num_minutes().max(60);
            let from = arrive + minutes(rng.random_range(0..span - 30));
            let to = from + minutes(rng.random_range(15..=75));
            let silent = rng.random_bool(0.5);
            changes.retain(|(at, _, _)| *at < from || *at >= to);
            let state_before = changes
                .iter()
                .filter(|(at, _, _)| *at < from)
                .max_by_key(|(at, _, _)| *at)
                .map_or(PresenceState::Online, |c| c.1);
            if silent {
                changes.push((from, state_before, false));
            } else {
                changes.push((from, PresenceState::Offline, true));
            }
            if to < leave {
                let back = if lunch.is_some_and(|(a, b)| to >= a && to < b) {
                    PresenceState::Away
                } else {
                    PresenceState::Online
                };
                changes.push((to, back, true));
            }
        }
        changes.push((leave, PresenceState::Offline, true));
        changes.sort_by_key(|c| c.0);
        out.extend(
            changes
                .into_iter()
                .map(|(at, state, beating)| PresenceChange {
                    at,
                    manager: i,
                    state,
                    beating,
                }),
        );
    }
    out.sort_by_key(|c| (c.at, c.manager));
    out
}

fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// What is known of a manager's presence now.
#[derive(Debug, Clone, Copy)]
struct Now {
    state: PresenceState,
    beating: bool,
    /// When the current state began, or when the agent fell silent.
    since: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// A presence change (an index into the changes).
    Presence(usize),
    /// A lead arrives (an index into the leads).
    Lead(usize),
    /// A waiting lead's own wait for specialists or for its group runs out.
    Due(usize),
    /// Try every waiting lead: someone's shift or lunch lets them work again, or the
    /// periodic sweep (loads fall as the day goes on, and a pause can lift by itself).
    Sweep,
}

/// How often every waiting lead is tried even when nothing happened.
const SWEEP: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Clone)]
struct Waiting {
    lead: usize,
    group: Option<usize>,
    entered: DateTime<Utc>,
    /// The group its facts choose, and the specialisations it matches (as bits): with its
    /// priority, what makes two waiting leads decide alike.
    own_group: Option<usize>,
    specs: u64,
    /// The waits (for specialists, for the group) at which its decision can change, from
    /// `entered`, in order.
    thresholds: Vec<TimeDelta>,
    /// When a `Due` is queued for it.
    due: Option<DateTime<Utc>>,
}

impl Waiting {
    fn thresholds(&mut self, rules: &RoutingRules, priority: Priority) {
        let group = self.group.or(self.own_group);
        let mut t: Vec<TimeDelta> = rules
            .specialisations
            .iter()
            .enumerate()
            .filter(|(k, s)| self.specs & (1 << (k % 64)) != 0 && s.wait > TimeDelta::zero())
            .map(|(_, s)| s.wait)
            .chain(group.and_then(|g| rules.wait_limit(g, priority)))
            .collect();
        t.sort();
        t.dedup();
        self.thresholds = t;
    }

    /// How many of its thresholds it has passed by `t`: leads alike in everything else
    /// decide alike while this is the same.
    fn stage(&self, t: DateTime<Utc>) -> usize {
        let waited = t - self.entered;
        self.thresholds.iter().filter(|th| waited >= **th).count()
    }

    /// The next moment its decision can change by its own waiting.
    fn next_threshold(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let waited = t - self.entered;
        self.thresholds
            .iter()
            .find(|th| **th > waited)
            .map(|th| self.entered + *th)
    }
}

/// Runs the day: every lead and presence change in time order, the decision for each lead,
/// and the tally.
///
/// A new lead is decided at once; every waiting lead is tried again, the highest priority
/// and the oldest first, when a presence changes, when a decision said someone's schedule
/// brings them back, and every five minutes; a lead is also tried when its own wait runs
/// out. Within one such pass, leads that would decide alike are not asked again after one
/// of them had to wait, until someone takes a lead: nothing else changes within a moment.
pub fn run(
    roster: &Roster,
    rules: &RoutingRules,
    leads: &[SimLead],
    changes: &[PresenceChange],
    date: NaiveDate,
    rng: &mut impl Rng,
) -> DayReport {
    let router = Router { roster, rules };
    let n = roster.managers.len();
    let mut queue: BinaryHeap<Reverse<(DateTime<Utc>, Happening)>> = BinaryHeap::new();
    for (i, c) in changes.iter().enumerate() {
        queue.push(Reverse((c.at, Happening::Presence(i))));
    }
    for (i, l) in leads.iter().enumerate() {
        queue.push(Reverse((l.at, Happening::Lead(i))));
    }
    let day_start = at_local(roster.zone, date.and_time(NaiveTime::MIN));
    let day_end = at_local(
        roster.zone,
        date.succ_opt().unwrap_or(date).and_time(NaiveTime::MIN),
    );
    let mut sweep = day_start;
    while sweep < day_end {
        queue.push(Reverse((sweep, Happening::Sweep)));
        sweep += SWEEP;
    }
    let mut sweeps: HashSet<DateTime<Utc>> = HashSet::new();
    let mut now_of: Vec<Option<Now>> = vec![None; n];
    let mut received = vec![0u32; n];
    let mut by_overflow = vec![0u32; n];
    let key_of = |i: usize| (leads[i].priority, leads[i].at, i);
    let mut waiting: BTreeMap<(Priority, DateTime<Utc>, usize), Waiting> = BTreeMap::new();
    let mut report = DayReport {
        leads: leads.len(),
        managers: Vec::new(),
        spreads: Vec::new(),
        waits: Waits::default(),
        assigned: 0,
        to_group_lead: 0,
        to_other_group: 0,
        not_routed: 0,
        pending: 0,
        pending_longest: TimeDelta::zero(),
        breaches: BTreeMap::new(),
        fifth_routed: 0,
        decisions: 0,
    };
    let mut waits: Vec<TimeDelta> = Vec::new();
    let mut heard: Vec<Option<Heard>> = vec![None; n];

    while let Some(Reverse((t, first))) = queue.pop() {
        if t >= day_end {
            break;
        }
        let mut happenings = vec![first];
        while let Some(Reverse((t2, _))) = queue.peek() {
            if *t2 != t {
                break;
            }
            if let Some(Reverse((_, h))) = queue.pop() {
                happenings.push(h);
            }
        }
        let mut everyone = false;
        let mut these: Vec<(Priority, DateTime<Utc>, usize)> = Vec::new();
        for h in happenings {
            match h {
                Happening::Presence(i) => {
                    let c = changes[i];
                    now_of[c.manager] = Some(Now {
                        state: c.state,
                        beating: c.beating,
                        since: t,
                    });
                    everyone = true;
                }
                Happening::Lead(i) => {
                    let l = &leads[i];
                    let request = Request {
                        facts: &l.facts,
                        priority: l.priority,
                        waited: TimeDelta::zero(),
                        group: None,
                    };
                    let specs = rules
                        .specialisations
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.when.holds(&l.facts))
                        .fold(0u64, |bits, (k, _)| bits | (1 << (k % 64)));
                    let mut w = Waiting {
                        lead: i,
                        group: None,
                        entered: t,
                        own_group: router.group_of(&request),
                        specs,
                        thresholds: Vec::new(),
                        due: None,
                    };
                    w.thresholds(rules, l.priority);
                    waiting.insert(key_of(i), w);
                    these.push(key_of(i));
                }
                Happening::Due(i) => {
                    if waiting.get(&key_of(i)).is_some_and(|w| w.due == Some(t)) {
                        these.push(key_of(i));
                    }
                }
                Happening::Sweep => everyone = true,
            }
        }
        // What the decision sees: heartbeats renew the report until the agent falls silent.
        for (m, p) in now_of.iter().enumerate() {
            heard[m] = p.map(|p| Heard {
                state: p.state,
                at: if p.beating { t } else { p.since },
            });
        }

        let keys: Vec<(Priority, DateTime<Utc>, usize)> = if everyone {
            waiting.keys().copied().collect()
        } else {
            these.sort();
            these.dedup();
            these
        };
        let mut alike_waits: HashSet<(Option<usize>, u64, Priority, usize)> = HashSet::new();
        for key in keys {
            let Some(mut w) = waiting.remove(&key) else {
                continue;
            };
            let lead = &leads[w.lead];
            let mut hops = 0;
            let outcome = loop {
                let alike = (w.group.or(w.own_group), w.specs, lead.priority, w.stage(t));
                if alike_waits.contains(&alike) {
                    break None;
                }
                let request = Request {
                    facts: &lead.facts,
                    priority: lead.priority,
                    waited: t - w.entered,
                    group: w.group,
                };
                let board = Board {
                    presence: &heard,
                    received: &received,
                };
                report.decisions += 1;
                match router.decide(&request, &board, t, rng) {
                    Decision::Overflow {
                        to: OverflowTo::Group(g),
                        ..
                    } if hops < 8 => {
                        report.to_other_group += 1;
                        w.group = Some(g);
                        w.entered = t;
                        w.thresholds(rules, lead.priority);
                        hops += 1;
                    }
                    Decision::Wait { until, .. } => {
                        alike_waits.insert(alike);
                        let own = w.next_threshold(t);
                        if let Some(u) = until.filter(|u| *u > t && Some(*u) != own)
                            && sweeps.insert(u)
                        {
                            queue.push(Reverse((u, Happening::Sweep)));
                        }
                        break None;
                    }
                    other => break Some(other),
                }
            };
            match outcome {
                None => {
                    // Its own wait running out may change its decision: look then.
                    if let Some(next) = w.next_threshold(t)
                        && w.due != Some(next)
                    {
                        w.due = Some(next);
                        queue.push(Reverse((next, Happening::Due(w.lead))));
                    }
                    waiting.insert(key, w);
                }
                Some(Decision::Assign { manager, .. }) => {
                    received[manager] += 1;
                    report.assigned += 1;
                    waits.push(t - lead.at);
                    if lead.priority == Priority::FIFTH {
                        report.fifth_routed += 1;
                    }
                    let now = now_of[manager];
                    if let Some(b) = breach(&roster.managers[manager], rules, now, t) {
                        *report.breaches.entry(b).or_default() += 1;
                    }
                    alike_waits.clear();
                }
                Some(Decision::Overflow {
                    to: OverflowTo::Manager(m),
                    ..
                }) => {
                    received[m] += 1;
                    by_overflow[m] += 1;
                    report.to_group_lead += 1;
                    waits.push(t - lead.at);
                    alike_waits.clear();
                }
                Some(Decision::NotRouted { .. }) => report.not_routed += 1,
                // Only when overflows went round more than eight groups: leave it waiting.
                Some(_) => {
                    waiting.insert(key, w);
                }
            }
        }
    }

    report.pending = waiting.len();
    report.pending_longest = waiting
        .values()
        .map(|w| day_end - leads[w.lead].at)
        .max()
        .unwrap_or_default();
    report.waits = wait_figures(waits);
    report.managers = roster
        .managers
        .iter()
        .enumerate()
        .map(|(i, m)| ManagerDay {
            manager: i,
            leads: received[i],
            by_overflow: by_overflow[i],
            hours: match m.shift_on(date) {
                Ok(s) if m.active => s.work_seconds() as f64 / 3600.0,
                _ => 0.0,
            },
        })
        .collect();
    report.spreads = spreads(roster, &report.managers);
    report
}

fn wait_figures(waits: Vec<TimeDelta>) -> Waits {
    let mut waited: Vec<TimeDelta> = waits
        .into_iter()
        .filter(|w| *w > TimeDelta::zero())
        .collect();
    waited.sort();
    let at = |q: f64| {
        waited
            .get(((waited.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Waits {
        count: waited.len(),
        median: at(0.5),
        p95: at(0.95),
        max: waited.last().copied().unwrap_or_default(),
    }
}

/// Spreads among managers who worked, per group and weight.
pub fn spreads(roster: &Roster, days: &[ManagerDay]) -> Vec<Spread> {
    let mut out = Vec::new();
    for g in 0..roster.groups.len() {
        let mut weights: Vec<f64> = roster
            .members(g)
            .map(|m| roster.managers[m].weight)
            .collect();
        weights.sort_by(f64::total_cmp);
        weights.dedup();
        for w in weights {
            let same: Vec<&ManagerDay> = days
                .iter()
                .filter(|d| {
                    let m = &roster.managers[d.manager];
                    m.group == g && m.weight == w && d.hours > 0.0
                })
                .collect();
            if same.len() < 2 {
                continue;
            }
            let range = |xs: Vec<f64>| {
                let max = xs.iter().copied().fold(f64::MIN, f64::max);
                let min = xs.iter().copied().fold(f64::MAX, f64::min);
                max - min
            };
            out.push(Spread {
                group: g,
                weight: w,
                managers: same.len(),
                per_hour: range(same.iter().filter_map(|d| d.per_hour()).collect()),
                load: range(same.iter().map(|d| f64::from(d.leads) / w).collect()),
                routed_load: range(
                    same.iter()
                        .map(|d| f64::from(d.leads - d.by_overflow) / w)
                        .collect(),
                ),
            });
        }
    }
    out
}

/// Whether giving a lead to `manager` at `t` broke a rule, judged from the roster and the
/// presence timeline directly, in minutes of the manager's own clock.
fn breach(
    manager: &Manager,
    rules: &RoutingRules,
    now: Option<Now>,
    t: DateTime<Utc>,
) -> Option<Breach> {
    let local = t.with_timezone(&manager.zone);
    let date = local.date_naive();
    let minute = |x: NaiveTime| i64::from(x.hour() * 60 + x.minute());
    let at = i64::from(local.hour() * 60 + local.minute()) * 60 + i64::from(local.second());
    let guard = rules.guard.num_seconds();
    let on_vacation = manager
        .vacations
        .iter()
        .any(|v| v.from <= date && date <= v.to);
    let day = manager.week.0[date.weekday().num_days_from_monday() as usize];
    let Some(shift) =
        day.filter(|_| manager.active && !on_vacation && !manager.days_off.contains(&date))
    else {
        return Some(Breach::NotWorking);
    };
    let (start, end) = (minute(shift.hours.start) * 60, minute(shift.hours.end) * 60);
    if at < start || at >= end {
        return Some(Breach::OutsideShift);
    }
    if at > end - guard - 1 {
        return Some(Breach::InGuard);
    }
    if let Some(l) = shift.lunch {
        let (a, b) = (minute(l.start) * 60, minute(l.end) * 60);
        if at >= a && at < b {
            return Some(Breach::AtLunch);
        }
        if at < a && at > a - guard - 1 {
            return Some(Breach::InGuard);
        }
    }
    let Some(now) = now else {
        return Some(Breach::Offline);
    };
    if !now.beating && (t - now.since) > rules.fresh_for {
        return Some(Breach::Offline);
    }
    match now.state {
        PresenceState::Online => None,
        PresenceState::Offline => Some(Breach::Offline),
        PresenceState::OnCall => Some(Breach::OnCall),
        PresenceState::Away => Some(Breach::Away),
    }
}

/// A made-up department of `managers` people in groups of about forty, for benchmarks and
/// tests: shifts starting from 08:00 to 11:00 in four time zones, lunches, a few newcomers
/// at half weight, two specialisations across groups, budget groups with overflow.
pub fn synthetic(managers: usize, seed: u64) -> (Roster, RoutingRules) {
    use crate::domain::condition::{Condition, Operand, Test};
    let mut rng = StdRng::seed_from_u64(seed);
    let groups = managers.div_ceil(40).max(3);
    let zones: [Tz; 4] = [
        chrono_tz::Europe::Moscow,
        chrono_tz::Europe::Samara,
        chrono_tz::Asia::Yekaterinburg,
        chrono_tz::Asia::Novosibirsk,
    ];
    let hm = |h: u32, m: u32| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
    let roster = Roster {
        groups: (0..groups)
            .map(|g| Group {
                name: format!("Группа {}", g + 1),
                lead: Some(g),
            })
            .collect(),
        managers: (0..managers)
            .map(|i| {
                let start = rng.random_range(8..=11);
                let lunch = rng.random_range(start + 3..=start + 5);
                let shift = Shift {
                    hours: Window {
                        start: hm(start, 0),
                        end: hm(start + 9, 0),
                    },
                    lunch: Some(Window {
                        start: hm(lunch, 0),
                        end: hm(lunch, 45),
                    }),
                };
                let mut week = Week::default();
                for d in 0..5 {
                    week.0[d] = Some(shift);
                }
                Manager {
                    id: format!("{}", 9_000_000 + i),
                    name: format!("Менеджер {}", i + 1),
                    group: i % groups,
                    specialisations: match i % 17 {
                        3 => vec!["Газовые электростанции".into()],
                        5 => vec!["Большие компрессоры".into()],
                        _ => vec![],
                    },
                    zone: zones[rng.random_range(0..zones.len())],
                    week,
                    days_off: vec![],
                    vacations: vec![],
                    weight: if rng.random_bool(0.15) { 0.5 } else { 1.0 },
                    active: rng.random_bool(0.97),
                }
            })
            .collect(),
        zone: chrono_tz::Europe::Moscow,
    };
    let fact = |field: &str, test: Test| Condition::Fact {
        field: field.into(),
        test,
    };
    let members = |name: &str| -> Vec<usize> {
        roster
            .managers
            .iter()
            .enumerate()
            .filter(|(_, m)| m.specialisations.iter().any(|s| s == name))
            .map(|(i, _)| i)
            .collect()
    };
    let mut rules = RoutingRules::seed_defaults();
    rules.groups = (0..groups)
        .map(|g| GroupRule {
            group: g,
            when: (g + 1 < groups).then(|| {
                fact(
                    "budget",
                    Test::Lt(100_000.0 * 10f64.powi(i32::try_from(g).unwrap_or(0))),
                )
            }),
            wait: Some(TimeDelta::minutes(15)),
            overflow: Some(if g + 1 < groups {
                Fallback::Group(g + 1)
            } else {
                Fallback::GroupLead
            }),
        })
        .collect();
    rules.specialisations = vec![
        Specialisation {
            name: "Газовые электростанции".into(),
            when: fact(
                "category",
                Test::Eq(Operand::Text("Газовые электростанции".into())),
            ),
            members: members("Газовые электростанции"),
            across_groups: true,
            wait: TimeDelta::minutes(5),
        },
        Specialisation {
            name: "Большие компрессоры".into(),
            when: Condition::All(vec![
                fact("category", Test::Eq(Operand::Text("Компрессоры".into()))),
                fact("budget", Test::Ge(300_000.0)),
            ]),
            members: members("Большие компрессоры"),
            across_groups: false,
            wait: TimeDelta::zero(),
        },
    ];
    rules.priorities[0] = PriorityRule {
        route: true,
        task: Some(TaskRule {
            text: "Связаться с клиентом".into(),
            deadline: TimeDelta::minutes(15),
        }),
        wait: Some(TimeDelta::minutes(5)),
        pause: false,
    };
    (roster, rules)
}

#[cfg(test)]
mod tests;
