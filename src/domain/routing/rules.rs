//! The routing rules (`routing.toml`): which group and which specialists a lead goes to,
//! how long it may wait, where it goes after that, and what each priority gets.

use chrono::TimeDelta;

use crate::domain::condition::Condition;
use crate::domain::priority::Priority;
use crate::domain::routing::roster::Roster;

/// How leads pick a group, in the file's order: the first whose condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRule {
    /// The group (an index into the roster's groups).
    pub group: usize,
    /// Which leads it takes; `None` takes every lead that reaches it.
    pub when: Option<Condition>,
    /// How long a lead may wait for a free manager of the group before the overflow.
    pub wait: Option<TimeDelta>,
    /// Where a lead goes after the wait; with none it waits for the group as long as it
    /// takes.
    pub overflow: Option<Fallback>,
}

/// Where a lead goes when its group kept it waiting too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Another group (an index into the roster's groups), with its own wait and overflow.
    Group(usize),
    /// The group's lead, named in the roster.
    GroupLead,
}

/// Leads that need a specialist (gas power stations, big compressors…).
#[derive(Debug, Clone, PartialEq)]
pub struct Specialisation {
    /// Its name, as the roster gives it to managers.
    pub name: String,
    /// Which leads need it.
    pub when: Condition,
    /// Its specialists (indices into the roster's managers).
    pub members: Vec<usize>,
    /// Whether a specialist of another group takes the lead too; otherwise only the
    /// specialists of the lead's group do.
    pub across_groups: bool,
    /// How long a lead waits for a specialist before its group takes it.
    pub wait: TimeDelta,
}

/// The first task a routed lead gets.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRule {
    /// What it says ("Связаться с клиентом").
    pub text: String,
    /// How long the manager has to do it.
    pub deadline: TimeDelta,
}

/// What leads of one priority get.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityRule {
    /// Whether a person gets them (always for priority 1, never for 5).
    pub route: bool,
    /// The first task, if any.
    pub task: Option<TaskRule>,
    /// The longest wait before the overflow, when shorter than the group's.
    pub wait: Option<TimeDelta>,
    /// Whether a manager clearly ahead of the others is passed over for these leads;
    /// off for leads too valuable to wait for fairness.
    pub pause: bool,
}

impl Default for PriorityRule {
    fn default() -> Self {
        PriorityRule {
            route: true,
            task: None,
            wait: None,
            pause: true,
        }
    }
}

/// All of `routing.toml`, resolved against the roster.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRules {
    /// Groups in the order leads try them.
    pub groups: Vec<GroupRule>,
    /// Specialisations, in the file's order.
    pub specialisations: Vec<Specialisation>,
    /// What priorities 1 to 5 get.
    pub priorities: [PriorityRule; 5],
    /// No lead in the last minutes before a lunch or the end of a shift (the seed's 10).
    pub guard: TimeDelta,
    /// The least part of a shift counted as worked, so that someone who came at 11:00 is
    /// not buried in leads at 11:05 (see `load`).
    pub min_worked: TimeDelta,
    /// How many leads (counted to the end of the shift) a manager may be ahead of the least
    /// loaded colleague at work before being paused.
    pub pause_margin: f64,
    /// A presence report older than this means the manager is offline.
    pub fresh_for: TimeDelta,
    /// CRM users whose new leads the robot hands out although they are in the roster (the
    /// user a web form gives its leads to). Leads of anyone outside the roster, or of an
    /// inactive manager, are handed out anyway; a roster manager's own leads are theirs.
    pub take_from: Vec<String>,
    /// How often waiting leads are looked at again when no presence change wakes them: a
    /// shift starting or a lunch ending is noticed within this.
    pub recheck: TimeDelta,
}

impl RoutingRules {
    /// What leads of this priority get.
    pub fn priority(&self, p: Priority) -> &PriorityRule {
        &self.priorities[usize::from(p.number()) - 1]
    }

    /// The rule of a group, when `routing.toml` has one.
    pub fn group_rule(&self, group: usize) -> Option<&GroupRule> {
        self.groups.iter().find(|g| g.group == group)
    }

    /// How long a lead of this priority may wait for this group before the overflow;
    /// `None` when it waits as long as it takes (the group has no overflow).
    pub fn wait_limit(&self, group: usize, priority: Priority) -> Option<TimeDelta> {
        let rule = self.group_rule(group)?;
        rule.overflow?;
        let group_wait = rule.wait.unwrap_or(TimeDelta::zero());
        Some(match self.priority(priority).wait {
            Some(w) => w.min(group_wait),
            None => group_wait,
        })
    }

    /// The defaults of the seed: a 10-minute guard, an hour counted as worked at least,
    /// a pause one lead ahead, presence fresh for 2 minutes, priority 5 not routed; no
    /// groups or specialisations.
    pub fn seed_defaults() -> RoutingRules {
        let mut priorities: [PriorityRule; 5] = Default::default();
        priorities[4].route = false;
        RoutingRules {
            groups: Vec::new(),
            specialisations: Vec::new(),
            priorities,
            guard: TimeDelta::minutes(10),
            min_worked: TimeDelta::hours(1),
            pause_margin: 1.0,
            fresh_for: TimeDelta::minutes(2),
            take_from: Vec::new(),
            recheck: TimeDelta::seconds(30),
        }
    }

    /// Whether the robot hands out a new lead whose responsible user is `responsible`: a
    /// lead a manager of the roster made for their own client stays theirs.
    pub fn takes(&self, roster: &Roster, responsible: Option<&str>) -> bool {
        let Some(who) = responsible.map(str::trim).filter(|r| !r.is_empty()) else {
            return true;
        };
        if self.take_from.iter().any(|t| t == who) {
            return true;
        }
        !roster.managers.iter().any(|m| m.active && m.id == who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::roster::{Group, Manager, Week};

    fn roster() -> Roster {
        let manager = |id: &str, active: bool| Manager {
            id: id.into(),
            name: id.into(),
            group: 0,
            specialisations: Vec::new(),
            zone: chrono_tz::Europe::Moscow,
            week: Week::default(),
            days_off: Vec::new(),
            vacations: Vec::new(),
            weight: 1.0,
            active,
        };
        Roster {
            groups: vec![Group {
                name: "Младшая".into(),
                lead: None,
            }],
            managers: vec![manager("1", true), manager("2", false), manager("3", true)],
            zone: chrono_tz::Europe::Moscow,
        }
    }

    #[test]
    fn a_managers_own_lead_stays_theirs_and_the_rest_is_handed_out() {
        let mut rules = RoutingRules::seed_defaults();
        rules.take_from = vec!["3".into()];
        let roster = roster();
        assert!(
            !rules.takes(&roster, Some("1")),
            "an active manager's own lead"
        );
        assert!(
            rules.takes(&roster, Some("2")),
            "an inactive manager's lead"
        );
        assert!(
            rules.takes(&roster, Some("3")),
            "the web form's user, listed in take_from"
        );
        assert!(
            rules.takes(&roster, Some("99")),
            "the administrator, outside the roster"
        );
        assert!(rules.takes(&roster, None));
        assert!(rules.takes(&roster, Some(" ")));
    }
}
