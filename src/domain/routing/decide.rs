//! The decision for one lead: a manager, a wait, an overflow, or no person at all.
//!
//! The seed's dispatcher robot: look at the lead, pick its group (and its specialists
//! first), then the manager of that group who can take it now (see `eligibility`) and is
//! not ahead of the others (see `load`); exact ties go to a random one.

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;

use super::eligibility::{self, Heard, Reason};
use super::load::{load, worked_share};
use super::roster::Roster;
use super::rules::{Fallback, RoutingRules};
use crate::domain::condition::Facts;
use crate::domain::priority::Priority;

/// A lead to route.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What is known about it, for the conditions of the groups and specialisations.
    pub facts: &'a Facts,
    /// Its priority.
    pub priority: Priority,
    /// How long it has waited for its current group (zero for a new lead).
    pub waited: TimeDelta,
    /// The group it was overflowed to; `None` lets its facts choose.
    pub group: Option<usize>,
}

/// The state of the department now, in the roster's order of managers.
#[derive(Debug, Clone, Copy)]
pub struct Board<'a> {
    /// The last presence heard from each manager.
    pub presence: &'a [Option<Heard>],
    /// Leads each manager received today (their own calendar day).
    pub received: &'a [u32],
}

/// The first task of a routed lead.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstTask {
    /// What it says.
    pub text: String,
    /// When it is due.
    pub due: DateTime<Utc>,
}

/// Where an overflowed lead goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowTo {
    /// Another group (an index into the roster's groups): route it again there.
    Group(usize),
    /// A person (the group lead; an index into the roster's managers): give it to them.
    Manager(usize),
}

/// What to do with a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Give it to this manager (an index into the roster's managers).
    Assign {
        /// The manager.
        manager: usize,
        /// Why, in Russian, for the log and a note in the CRM.
        reasons: Vec<String>,
        /// The first task, when its priority gets one.
        task: Option<FirstTask>,
    },
    /// Nobody can take it now: look again at `until` at the latest (the first moment the
    /// schedule brings someone back, or the wait limit), or when a presence changes.
    Wait {
        /// When to look again, if known.
        until: Option<DateTime<Utc>>,
        /// Why, in Russian.
        why: String,
    },
    /// It waited for its group as long as allowed: it goes to the fallback.
    Overflow {
        /// The fallback.
        to: OverflowTo,
        /// Why, in Russian.
        why: String,
    },
    /// Its priority is not routed to a person (priority 5: chains only).
    NotRouted {
        /// Why, in Russian.
        why: String,
    },
}

/// Where one manager stands for a lead, as `route --dry-run` lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Excluded by this rule.
    Excluded(Reason),
    /// Can take it, but is clearly ahead of the others: paused, with this load.
    Paused(f64),
    /// Can take it, with this load.
    Free(f64),
}

/// Why a manager is considered for a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A specialist of this specialisation (an index into the rules' specialisations).
    Specialist(usize),
    /// A member of the lead's group.
    Group,
    /// Neither.
    Outside,
}

/// One line of a roll call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// The manager (an index into the roster's managers).
    pub manager: usize,
    /// Why they are considered, if they are.
    pub scope: Scope,
    /// Where they stand.
    pub verdict: Verdict,
}

/// Every manager and where they stand for a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct RollCall {
    /// The lead's group, when one takes it.
    pub group: Option<usize>,
    /// One line per manager, in the roster's order.
    pub lines: Vec<Standing>,
}

/// The roster and the rules, ready to route.
#[derive(Debug, Clone, Copy)]
pub struct Router<'a> {
    /// Who takes leads.
    pub roster: &'a Roster,
    /// How.
    pub rules: &'a RoutingRules,
}

/// One manager as seen now: the load when the schedule lets them work, and whether they
/// can take a lead.
#[derive(Debug, Clone, Copy)]
struct Look {
    manager: usize,
    load: Option<f64>,
    verdict: Result<(), Reason>,
}

enum Pick {
    Chosen {
        manager: usize,
        load: f64,
        free: usize,
        tied: usize,
        paused: Vec<(usize, f64)>,
    },
    Nobody {
        paused: usize,
    },
}

/// Loads closer than this are a tie: they come from the same counts and shares.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn leads(n: f64) -> String {
    format!("{n:.1}").replace('.', ",")
}

impl Router<'_> {
    /// Decides what to do with a lead now; `rng` breaks exact ties.
    pub fn decide(
        &self,
        request: &Request<'_>,
        board: &Board<'_>,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Decision {
        let priority = self.rules.priority(request.priority);
        if !priority.route {
            return Decision::NotRouted {
                why: format!(
                    "приоритет {}: лид не отдается менеджеру, с ним работают цепочки",
                    request.priority
                ),
            };
        }
        let Some(group) = self.group_of(request) else {
            return Decision::Wait {
                until: None,
                why: "лид не подходит ни одной группе routing.toml".into(),
            };
        };
        let group_name = &self.roster.groups[group].name;
        let mut why_group = format!("группа «{group_name}»");
        if request.group.is_some() {
            why_group.push_str(" (после перелива)");
        }
        let mut until: Option<DateTime<Utc>> = None;
        let mut earliest = |t: Option<DateTime<Utc>>| {
            if let Some(t) = t {
                until = Some(until.map_or(t, |u: DateTime<Utc>| u.min(t)));
            }
        };

        // Specialists first; they are not paused: their leads are theirs.
        for (s, spec) in self.specialisations(request.facts) {
            let looks: Vec<Look> = spec
                .members
                .iter()
                .filter(|&&m| spec.across_groups || self.roster.managers[m].group == group)
                .map(|&m| self.look(m, board, now))
                .collect();
            if looks.is_empty() {
                continue;
            }
            match self.pick(&looks, false, rng) {
                Pick::Chosen {
                    manager,
                    load,
                    free,
                    tied,
                    ..
                } => {
                    let mut reasons = vec![
                        why_group,
                        format!("специализация «{}»", self.rules.specialisations[s].name),
                    ];
                    reasons.extend(self.why_chosen(load, free, tied, &[]));
                    return self.assign(manager, reasons, request.priority, now);
                }
                Pick::Nobody { .. } if request.waited < spec.wait => {
                    for l in &looks {
                        if let Err(r) = l.verdict {
                            earliest(eligibility::back_at(
                                &self.roster.managers[l.manager],
                                r,
                                now,
                            ));
                        }
                    }
                    earliest(Some(now + (spec.wait - request.waited)));
                    return Decision::Wait {
                        until,
                        why: format!("ждем специалиста «{}»: {}", spec.name, self.summary(&looks)),
                    };
                }
                Pick::Nobody { .. } => {}
            }
        }

        let looks: Vec<Look> = self
            .roster
            .members(group)
            .map(|m| self.look(m, board, now))
            .collect();
        let paused_count = match self.pick(&looks, priority.pause, rng) {
            Pick::Chosen {
                manager,
                load,
                free,
                tied,
                paused,
            } => {
                let mut reasons = vec![why_group];
                reasons.extend(self.why_chosen(load, free, tied, &paused));
                return self.assign(manager, reasons, request.priority, now);
            }
            Pick::Nobody { paused } => paused,
        };

        let limit = self.rules.wait_limit(group, request.priority);
        let mut lead_away = None;
        if let Some(limit) = limit.filter(|l| request.waited >= *l) {
            let to = match self.rules.group_rule(group).and_then(|g| g.overflow) {
                Some(Fallback::Group(g)) => Some(OverflowTo::Group(g)),
                // The group lead takes it whatever their presence (a call ends), but not
                // outside their working hours: a lead at night waits for the morning.
                Some(Fallback::GroupLead) => self.roster.groups[group].lead.and_then(|m| {
                    let lead = &self.roster.managers[m];
                    match eligibility::schedule(lead, now, self.rules) {
                        Ok(_) => Some(OverflowTo::Manager(m)),
                        Err(r) => {
                            earliest(eligibility::back_at(lead, r, now));
                            lead_away = Some(format!(
                                "руководитель группы {}: {}",
                                lead.name,
                                r.describe()
                            ));
                            None
                        }
                    }
                }),
                None => None,
            };
            if let Some(to) = to {
                let target = match to {
                    OverflowTo::Group(g) => format!("группе «{}»", self.roster.groups[g].name),
                    OverflowTo::Manager(m) => {
                        format!("руководителю группы, {}", self.roster.managers[m].name)
                    }
                };
                return Decision::Overflow {
                    to,
                    why: format!(
                        "группа «{group_name}» не взяла лид за {} мин: передан {target}",
                        limit.num_minutes()
                    ),
                };
            }
        }
        for l in &looks {
            if let Err(r) = l.verdict {
                earliest(eligibility::back_at(
                    &self.roster.managers[l.manager],
                    r,
                    now,
                ));
            }
        }
        if let Some(limit) = limit.filter(|l| request.waited < *l) {
            earliest(Some(now + (limit - request.waited)));
        }
        let mut why = format!(
            "в группе «{group_name}» сейчас никто не может взять лид: {}",
            self.summary(&looks)
        );
        if paused_count > 0 {
            why.push_str(&format!(
                "; на паузе как опережающие других: {paused_count}"
            ));
        }
        if let Some(away) = lead_away {
            why.push_str(&format!("; {away}"));
        }
        Decision::Wait { until, why }
    }

    /// Every manager with the rule that excludes them or their load, for a dry run.
    pub fn roll_call(
        &self,
        request: &Request<'_>,
        board: &Board<'_>,
        now: DateTime<Utc>,
    ) -> RollCall {
        let group = self.group_of(request);
        let mut scope = vec![Scope::Outside; self.roster.managers.len()];
        if let Some(g) = group {
            for m in self.roster.members(g) {
                scope[m] = Scope::Group;
            }
            for (s, spec) in self.specialisations(request.facts) {
                for &m in &spec.members {
                    if matches!(scope[m], Scope::Specialist(_)) {
                        continue;
                    }
                    if spec.across_groups || self.roster.managers[m].group == g {
                        scope[m] = Scope::Specialist(s);
                    }
                }
            }
        }
        let looks: Vec<Look> = (0..self.roster.managers.len())
            .map(|m| self.look(m, board, now))
            .collect();
        let pause = self.rules.priority(request.priority).pause;
        let reference = group.and_then(|g| {
            let members: Vec<Look> = looks
                .iter()
                .copied()
                .filter(|l| self.roster.managers[l.manager].group == g)
                .collect();
            self.reference(&members)
        });
        let lines = looks
            .iter()
            .map(|l| {
                let verdict = match (l.verdict, l.load) {
                    (Err(r), _) => Verdict::Excluded(r),
                    (Ok(()), Some(load)) => match reference {
                        Some(min)
                            if pause
                                && scope[l.manager] == Scope::Group
                                && self.is_paused(load, min) =>
                        {
                            Verdict::Paused(load)
                        }
                        _ => Verdict::Free(load),
                    },
                    (Ok(()), None) => Verdict::Excluded(Reason::ShiftOver),
                };
                Standing {
                    manager: l.manager,
                    scope: scope[l.manager],
                    verdict,
                }
            })
            .collect();
        RollCall { group, lines }
    }

    /// The lead's group: the one it was overflowed to, or the first whose condition holds.
    pub fn group_of(&self, request: &Request<'_>) -> Option<usize> {
        let given = request.group.filter(|g| *g < self.roster.groups.len());
        given.or_else(|| {
            self.rules
                .groups
                .iter()
                .find(|g| g.when.as_ref().is_none_or(|c| c.holds(request.facts)))
                .map(|g| g.group)
        })
    }

    fn specialisations<'s>(
        &'s self,
        facts: &'s Facts,
    ) -> impl Iterator<Item = (usize, &'s super::rules::Specialisation)> + 's {
        self.rules
            .specialisations
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.when.holds(facts))
    }

    fn look(&self, manager: usize, board: &Board<'_>, now: DateTime<Utc>) -> Look {
        let m = &self.roster.managers[manager];
        match eligibility::schedule(m, now, self.rules) {
            Err(r) => Look {
                manager,
                load: None,
                verdict: Err(r),
            },
            Ok(on) => {
                let share = worked_share(on.shift, on.local, self.rules.min_worked);
                let received = board.received.get(manager).copied().unwrap_or(0);
                let heard = board.presence.get(manager).and_then(Option::as_ref);
                Look {
                    manager,
                    load: Some(load(received, share, m.weight)),
                    verdict: eligibility::presence(heard, now, self.rules),
                }
            }
        }
    }

    /// The least load among those at work (free, or busy for a moment): the one others are
    /// compared with for the pause.
    fn reference(&self, looks: &[Look]) -> Option<f64> {
        looks
            .iter()
            .filter(|l| l.verdict.is_ok() || l.verdict.is_err_and(|r| r.is_at_work()))
            .filter_map(|l| l.load)
            .min_by(f64::total_cmp)
    }

    fn is_paused(&self, load: f64, reference: f64) -> bool {
        load > reference + self.rules.pause_margin
            && !same(load, reference + self.rules.pause_margin)
    }

    fn pick(&self, looks: &[Look], pause: bool, rng: &mut impl Rng) -> Pick {
        let reference = if pause { self.reference(looks) } else { None };
        let mut paused = Vec::new();
        let mut free = 0;
        let mut best: Option<f64> = None;
        for l in looks {
            let (Ok(()), Some(load)) = (l.verdict, l.load) else {
                continue;
            };
            if reference.is_some_and(|r| self.is_paused(load, r)) {
                paused.push((l.manager, load));
                continue;
            }
            free += 1;
            best = Some(best.map_or(load, |b: f64| b.min(load)));
        }
        let Some(best) = best else {
            return Pick::Nobody {
                paused: paused.len(),
            };
        };
        let tied: Vec<usize> = looks
            .iter()
            .filter(|l| l.verdict.is_ok() && !paused.iter().any(|(p, _)| *p == l.manager))
            .filter(|l| l.load.is_some_and(|x| same(x, best)))
            .map(|l| l.manager)
            .collect();
        let manager = if tied.len() > 1 {
            tied[rng.random_range(0..tied.len())]
        } else {
            tied[0]
        };
        Pick::Chosen {
            manager,
            load: best,
            free,
            tied: tied.len(),
            paused,
        }
    }

    fn why_chosen(
        &self,
        load: f64,
        free: usize,
        tied: usize,
        paused: &[(usize, f64)],
    ) -> Vec<String> {
        let mut out = vec![format!(
            "свободен: в сети, не на звонке, до обеда и конца смены больше {} мин",
            self.rules.guard.num_minutes()
        )];
        out.push(if free > 1 {
            format!(
                "наименьшая нагрузка среди {free} свободных: {} лида к концу смены",
                leads(load)
            )
        } else {
            format!(
                "единственный свободный; нагрузка {} лида к концу смены",
                leads(load)
            )
        });
        if tied > 1 {
            out.push(format!(
                "одинаковая нагрузка у {tied} менеджеров: выбран случайно"
            ));
        }
        if !paused.is_empty() {
            let names: Vec<String> = paused
                .iter()
                .map(|(m, l)| format!("{} ({})", self.roster.managers[*m].name, leads(*l)))
                .collect();
            out.push(format!(
                "на паузе как опережающие других: {}",
                names.join(", ")
            ));
        }
        out
    }

    fn assign(
        &self,
        manager: usize,
        mut reasons: Vec<String>,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Decision {
        let task = self.rules.priority(priority).task.as_ref().map(|t| {
            let due = now + t.deadline;
            let m = &self.roster.managers[manager];
            reasons.push(format!(
                "приоритет {priority}: задача «{}» до {}",
                t.text,
                m.local(due).format("%H:%M")
            ));
            FirstTask {
                text: t.text.clone(),
                due,
            }
        });
        Decision::Assign {
            manager,
            reasons,
            task,
        }
    }

    /// "на звонке — 2, на обеде до 14:00 — 1": why the managers looked at cannot take it.
    fn summary(&self, looks: &[Look]) -> String {
        if looks.is_empty() {
            return "в группе нет менеджеров".into();
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        for l in looks {
            let text = match l.verdict {
                Err(r) => r.describe(),
                Ok(()) => "опережает других".into(),
            };
            match counts.iter_mut().find(|(t, _)| *t == text) {
                Some((_, n)) => *n += 1,
                None => counts.push((text, 1)),
            }
        }
        counts
            .iter()
            .map(|(t, n)| format!("{t} — {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
