//! What a chain is, in the words of the rule file: a trigger, steps, and what stops it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::NaiveTime;

use super::calendar::{Calendar, SendWindow};
use super::gate::Gates;
use super::stop::Stop;
use super::throttle::Throttle;
use super::trigger::Trigger;
use crate::domain::condition::Condition;

/// How long a step waits after the one before it (the first step: after the enrolment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// Wall-clock time: `"30m"`, `"3h"`, `"3d"`.
    Calendar(Duration),
    /// Business days of the [`Calendar`]: `"1bd"` is the next business day.
    BusinessDays(u32),
}

/// A channel the robot writes to a client through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// WhatsApp and other messengers, through Wazzup.
    Wazzup,
    /// E-mail.
    Email,
}

impl Channel {
    /// The channel's name in the rule file: `wazzup` or `email`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Wazzup => "wazzup",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Wazzup step does when the client's last message is older than WhatsApp's
/// 24 hours and the step names no approved template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// Send the same text as an e-mail.
    Email,
    /// Ask the manager to write, in a task.
    Task,
    /// Send nothing.
    Skip,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A message to the client, the text from a template of `templates/`.
    Message {
        /// Through which channel.
        channel: Channel,
        /// The template's name (its file name without `.txt` or `.j2`).
        template: String,
        /// For WhatsApp: the approved template (its name in Wazzup) sent instead when the
        /// client has not written in the last 24 hours.
        approved: Option<String>,
        /// For WhatsApp outside the 24 hours, when no approved template is named.
        otherwise: Otherwise,
    },
    /// A call task for the lead's responsible manager.
    Call {
        /// What the manager reads: the goal of the call.
        text: String,
        /// How long the manager has for it.
        within: Duration,
    },
    /// Another task for the manager (write, check, prepare an offer).
    Task {
        /// What the manager reads.
        text: String,
        /// How long the manager has for it.
        within: Duration,
    },
    /// A note on the lead's timeline.
    Note {
        /// Its text.
        text: String,
    },
    /// A move of the lead to a stage, with a refusal reason when the stage is the lost one.
    Move {
        /// The stage, as the CRM shows it ("Отказ. Сделка закрыта").
        stage: String,
        /// The refusal reason ("Нет контакта").
        reason: Option<String>,
    },
}

impl Action {
    /// Whether it writes to the client (what the priority gates and throttles are about).
    pub fn is_message(&self) -> bool {
        matches!(self, Action::Message { .. })
    }
}

/// One step of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// How the head of sales calls it ("Шаблон «Игнор»"): in tasks, notes and logs.
    pub title: String,
    /// How long after the previous step (or the enrolment, for the first).
    pub after: Delay,
    /// At this time of the client's day, when given (`after = "1bd", at = "10:00"`: the
    /// next business day at ten).
    pub at: Option<NaiveTime>,
    /// Carried out only when this holds for the lead at that time; skipped otherwise.
    pub when: Option<Condition>,
    /// What it does.
    pub action: Action,
}

/// One follow-up chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Its name, unique in the file ("ОП-2. Встреча не назначена").
    pub name: String,
    /// What enrols a lead.
    pub trigger: Trigger,
    /// What else must hold for the lead at that moment.
    pub when: Option<Condition>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// What ends it before its last step.
    pub stops: Vec<Stop>,
    /// Its own send window, when it differs from the file's.
    pub window: Option<SendWindow>,
}

/// Every chain of `chains.toml` and the rules they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Chains {
    /// The chains, in the file's order.
    pub chains: Vec<Chain>,
    /// Business days, holidays and zones.
    pub calendar: Calendar,
    /// The send window of chains that name none.
    pub window: SendWindow,
    /// What each priority lets the robot do.
    pub gates: Gates,
    /// How many messages may go out.
    pub throttle: Throttle,
    /// How long after a client's last WhatsApp message a free-form message may be sent
    /// (24 hours by WhatsApp's rule).
    pub session: Duration,
    /// The tag a manager puts on a lead to stop every chain on it.
    pub stop_tag: String,
    /// How long a claimed step may be at work before its worker is taken for dead and the
    /// step looked at again: longer than any send with its retries.
    pub lease: Duration,
    /// What the company offers instead of products it does not have (`[[analogues]]`).
    pub analogues: Vec<crate::domain::product::Analogue>,
}

impl Chains {
    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The send window of `chain`: its own, or the file's.
    pub fn window_of(&self, chain: &Chain) -> SendWindow {
        chain.window.unwrap_or(self.window)
    }

    /// The templates each chain's steps use, by chain name: for checks and listings.
    pub fn templates(&self) -> BTreeMap<&str, Vec<&str>> {
        self.chains
            .iter()
            .map(|c| {
                let used = c
                    .steps
                    .iter()
                    .filter_map(|s| match &s.action {
                        Action::Message { template, .. } => Some(template.as_str()),
                        _ => None,
                    })
                    .collect();
                (c.name.as_str(), used)
            })
            .collect()
    }
}
