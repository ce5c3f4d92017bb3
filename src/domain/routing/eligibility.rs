//! Whether a manager can take a lead right now, and if not, the rule that says no.
//!
//! The rules, in the order they are checked: active; not on vacation or a day off; a shift
//! today; inside it; not at lunch; not within the guard (10 minutes) before lunch or the
//! end of the shift; heard from recently; online, not away and not on a call. The schedule
//! comes first, so that the reason also says when the manager will be back, if it can be
//! known.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::roster::{DayOff, Manager, Shift};
use super::rules::RoutingRules;
use crate::domain::presence::{Presence, PresenceState};

/// The last thing heard about a manager's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The reported state.
    pub state: PresenceState,
    /// When it was last reported (a heartbeat renews it).
    pub at: DateTime<Utc>,
}

impl From<&Presence> for Heard {
    fn from(p: &Presence) -> Heard {
        Heard {
            state: p.state,
            at: p.at.with_timezone(&Utc),
        }
    }
}

/// Why a manager cannot take a lead now: one named rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Switched off in the roster.
    Inactive,
    /// On vacation until this day (included).
    Vacation(NaiveDate),
    /// A day off.
    DayOff,
    /// No shift on this weekday.
    Weekend,
    /// The shift begins later today, at this local time.
    BeforeShift(NaiveTime),
    /// The shift is over.
    ShiftOver,
    /// At lunch until this local time.
    AtLunch(NaiveTime),
    /// Lunch begins at this local time, within the guard.
    BeforeLunch(NaiveTime),
    /// The shift ends at this local time, within the guard.
    BeforeEnd(NaiveTime),
    /// No presence report at all.
    NotHeard,
    /// The last report is older than the freshness limit.
    Stale,
    /// Reported offline.
    Offline,
    /// Reported away from the desk.
    Away,
    /// On a call.
    OnCall,
}

impl Reason {
    /// The rule in the head of sales's words.
    pub fn describe(&self) -> String {
        let hm = |t: &NaiveTime| t.format("%H:%M").to_string();
        match self {
            Reason::Inactive => "отключен в managers.toml".into(),
            Reason::Vacation(to) => format!("в отпуске по {}", to.format("%d.%m.%Y")),
            Reason::DayOff => "выходной".into(),
            Reason::Weekend => "в этот день недели не работает".into(),
            Reason::BeforeShift(t) => format!("смена еще не началась (с {})", hm(t)),
            Reason::ShiftOver => "смена закончилась".into(),
            Reason::AtLunch(t) => format!("на обеде до {}", hm(t)),
            Reason::BeforeLunch(t) => format!("скоро обед (в {})", hm(t)),
            Reason::BeforeEnd(t) => format!("скоро конец смены (в {})", hm(t)),
            Reason::NotHeard => "нет сигнала присутствия".into(),
            Reason::Stale => "давно нет сигнала присутствия: не в сети".into(),
            Reason::Offline => "не в сети".into(),
            Reason::Away => "отошел".into(),
            Reason::OnCall => "на звонке".into(),
        }
    }

    /// Whether the manager is at work and only busy for a moment (a call, away from the
    /// desk): such a colleague still counts when judging who is ahead of the others.
    pub fn is_at_work(&self) -> bool {
        matches!(self, Reason::OnCall | Reason::Away)
    }

    /// Whether the reason is the manager's presence rather than their schedule.
    pub fn is_presence(&self) -> bool {
        matches!(
            self,
            Reason::NotHeard | Reason::Stale | Reason::Offline | Reason::Away | Reason::OnCall
        )
    }
}

/// A manager who can take a lead now: where they are in their shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnShift<'a> {
    /// Today's shift.
    pub shift: &'a Shift,
    /// Their local time now.
    pub local: NaiveTime,
}

/// Where a manager is in their schedule now, whatever their presence says.
pub fn schedule<'a>(
    manager: &'a Manager,
    now: DateTime<Utc>,
    rules: &RoutingRules,
) -> Result<OnShift<'a>, Reason> {
    if !manager.active {
        return Err(Reason::Inactive);
    }
    let local = manager.local(now);
    let shift = manager.shift_on(local.date()).map_err(|off| match off {
        DayOff::Vacation(to) => Reason::Vacation(to),
        DayOff::DayOff => Reason::DayOff,
        DayOff::Weekend => Reason::Weekend,
    })?;
    let t = local.time();
    if t < shift.hours.start {
        return Err(Reason::BeforeShift(shift.hours.start));
    }
    if t >= shift.hours.end {
        return Err(Reason::ShiftOver);
    }
    if let Some(lunch) = &shift.lunch {
        if lunch.contains(t) {
            return Err(Reason::AtLunch(lunch.end));
        }
        if t < lunch.start && lunch.start - t <= rules.guard {
            return Err(Reason::BeforeLunch(lunch.start));
        }
    }
    if shift.hours.end - t <= rules.guard {
        return Err(Reason::BeforeEnd(shift.hours.end));
    }
    Ok(OnShift { shift, local: t })
}

/// Whether the presence heard lets a manager take a lead now.
pub fn presence(
    heard: Option<&Heard>,
    now: DateTime<Utc>,
    rules: &RoutingRules,
) -> Result<(), Reason> {
    let heard = heard.ok_or(Reason::NotHeard)?;
    // A report from the future (a reporter's clock ahead of ours) counts as fresh.
    if now - heard.at > rules.fresh_for {
        return Err(Reason::Stale);
    }
    match heard.state {
        PresenceState::Online => Ok(()),
        PresenceState::OnCall => Err(Reason::OnCall),
        PresenceState::Away => Err(Reason::Away),
        PresenceState::Offline => Err(Reason::Offline),
    }
}

/// Whether a manager can take a lead now: every rule of the module, the schedule first.
pub fn check<'a>(
    manager: &'a Manager,
    heard: Option<&Heard>,
    now: DateTime<Utc>,
    rules: &RoutingRules,
) -> Result<OnShift<'a>, Reason> {
    let on = schedule(manager, now, rules)?;
    presence(heard, now, rules)?;
    Ok(on)
}

/// When the schedule lets a manager excluded for `reason` take leads again; `None` when
/// only their presence can tell (a call, offline) or it is too far ahead.
pub fn back_at(manager: &Manager, reason: Reason, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let today = manager.local(now).date();
    match reason {
        Reason::BeforeShift(t) | Reason::AtLunch(t) => Some(manager.instant(today, t)),
        Reason::BeforeLunch(_) => manager
            .shift_on(today)
            .ok()
            .and_then(|s| s.lunch)
            .map(|l| manager.instant(today, l.end)),
        Reason::BeforeEnd(_)
        | Reason::ShiftOver
        | Reason::Weekend
        | Reason::DayOff
        | Reason::Vacation(_) => manager.next_shift_after(today),
        Reason::Inactive => None,
        _ => None,
    }
}
