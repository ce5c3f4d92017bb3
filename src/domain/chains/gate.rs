//! What a step becomes for a given lead: the priority gates (seed interview: no robot
//! writes to a priority-1 client, priority 5 gets messages only) and WhatsApp's 24-hour
//! rule (outside 24 hours since the client's last message only an approved template may be
//! sent).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::model::{Action, Chains, Channel, Otherwise, Step};
use crate::domain::condition::Facts;
use crate::domain::priority::Priority;
use crate::domain::task::TaskKind;

/// What the robot does with a message step for a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messages {
    /// Sends it.
    Send,
    /// Asks the manager to write, in a task.
    Task,
    /// Does nothing.
    Skip,
}

/// What the robot does with a move to a stage for a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moves {
    /// Moves the lead.
    Move,
    /// Asks the manager to move it, in a task.
    Task,
    /// Does nothing.
    Skip,
}

/// What a priority lets the robot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Messages to the client.
    pub messages: Messages,
    /// Whether call and other tasks are created for the manager.
    pub tasks: bool,
    /// Moves to a stage.
    pub moves: Moves,
}

/// A gate that breaks a rule of the seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The robot would write to a priority-1 client.
    #[error(
        "no robot writes to a priority-1 client: its messages can only become tasks for the manager or be skipped"
    )]
    FirstWritten,
    /// The robot would create tasks for a priority-5 lead.
    #[error("priority 5 gets messages only: no tasks for the manager")]
    FifthTasked,
}

/// The gates of the five priorities, and of a lead not yet scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    by_priority: [Gate; 5],
}

impl Gates {
    /// The seed's rules: priority 1 only tasks for the manager (messages and moves become
    /// tasks), 2–4 everything, 5 messages and moves with no tasks.
    pub fn seed() -> Gates {
        let all = Gate {
            messages: Messages::Send,
            tasks: true,
            moves: Moves::Move,
        };
        Gates {
            by_priority: [
                Gate {
                    messages: Messages::Task,
                    tasks: true,
                    moves: Moves::Task,
                },
                all,
                all,
                all,
                Gate {
                    tasks: false,
                    ..all
                },
            ],
        }
    }

    /// The gate of `priority`. A lead with no priority yet is treated as priority 1: the
    /// robot does not write to a client it has not scored.
    pub fn of(&self, priority: Option<Priority>) -> Gate {
        let n = priority.map_or(1, Priority::number);
        self.by_priority[usize::from(n - 1)]
    }

    /// Sets the gate of `priority`, refusing one that breaks the seed's rules for
    /// priorities 1 and 5.
    pub fn set(&mut self, priority: Priority, gate: Gate) -> Result<(), GateError> {
        if priority == Priority::FIRST && gate.messages == Messages::Send {
            return Err(GateError::FirstWritten);
        }
        if priority == Priority::FIFTH && gate.tasks {
            return Err(GateError::FifthTasked);
        }
        self.by_priority[usize::from(priority.number() - 1)] = gate;
        Ok(())
    }
}

impl Default for Gates {
    fn default() -> Self {
        Gates::seed()
    }
}

/// What to do with a step for this lead now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Render the template and send it through the channel.
    Send {
        /// The channel.
        channel: Channel,
        /// The template's name.
        template: String,
    },
    /// Send WhatsApp's approved template of this name (in Wazzup).
    SendApproved {
        /// Its name.
        name: String,
    },
    /// Create a task for the lead's responsible manager.
    Task {
        /// Call, write or other.
        kind: TaskKind,
        /// What the manager reads.
        text: String,
        /// How long the manager has.
        within: Duration,
    },
    /// Add a note to the lead.
    Note {
        /// Its text.
        text: String,
    },
    /// Move the lead to a stage.
    Move {
        /// The stage, as the CRM shows it.
        stage: String,
        /// The refusal reason.
        reason: Option<String>,
    },
    /// Nothing: the step is passed over and the chain goes on.
    Skip,
}

/// Why a step became what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    /// The step as the file writes it.
    AsWritten,
    /// The lead's priority allows no more (the priority, `None` when not scored).
    Priority(Option<Priority>),
    /// WhatsApp's 24 hours since the client's last message have passed (or the client
    /// never wrote).
    OutsideWhatsappWindow {
        /// The client's last message.
        last_message: Option<DateTime<Utc>>,
    },
    /// The step's condition does not hold for the lead.
    StepCondition,
}

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Because::AsWritten => f.write_str("as written"),
            Because::Priority(Some(p)) => write!(f, "priority {p}"),
            Because::Priority(None) => f.write_str("the lead is not scored yet"),
            Because::OutsideWhatsappWindow {
                last_message: Some(t),
            } => write!(
                f,
                "the client last wrote at {}, over 24 hours ago",
                t.to_rfc3339()
            ),
            Because::OutsideWhatsappWindow { last_message: None } => {
                f.write_str("the client never wrote in WhatsApp")
            }
            Because::StepCondition => f.write_str("the step's condition does not hold"),
        }
    }
}

/// What a step becomes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDecision {
    /// What to do.
    pub action: Decided,
    /// Why.
    pub because: Because,
}

impl StepDecision {
    fn new(action: Decided, because: Because) -> StepDecision {
        StepDecision { action, because }
    }
}

/// How long the manager has for a task that stands in for a message or a move.
const STAND_IN_TASK: Duration = Duration::from_secs(4 * 3600);

impl Chains {
    /// What `step` becomes for a lead with these facts and this priority, when the client
    /// last wrote in WhatsApp at `last_client_message` (`None`: never), at `now`.
    pub fn decide_step(
        &self,
        step: &Step,
        facts: &Facts,
        priority: Option<Priority>,
        last_client_message: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StepDecision {
        decide_step(
            step,
            facts,
            self.gates.of(priority),
            priority,
            self.session,
            last_client_message,
            now,
        )
    }
}

/// What `step` becomes under `gate` (the lead's priority's), with WhatsApp's free-form
/// window of `session` after the client's last message; see [`Chains::decide_step`].
pub fn decide_step(
    step: &Step,
    facts: &Facts,
    gate: Gate,
    priority: Option<Priority>,
    session: Duration,
    last_client_message: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StepDecision {
    use StepDecision as D;
    if step.when.as_ref().is_some_and(|w| !w.holds(facts)) {
        return D::new(Decided::Skip, Because::StepCondition);
    }
    let gated = Because::Priority(priority);
    let task = |kind, text: String, within| Decided::Task { kind, text, within };
    match &step.action {
        Action::Message {
            channel,
            template,
            approved,
            otherwise,
        } => {
            let write = || {
                task(
                    TaskKind::Letter,
                    format!(
                        "Написать клиенту ({}): {}",
                        channel_words(*channel),
                        step.title
                    ),
                    STAND_IN_TASK,
                )
            };
            match gate.messages {
                Messages::Skip => return D::new(Decided::Skip, gated),
                Messages::Task => return D::new(write(), gated),
                Messages::Send => {}
            }
            let send = |channel| Decided::Send {
                channel,
                template: template.clone(),
            };
            if *channel == Channel::Email {
                return D::new(send(Channel::Email), Because::AsWritten);
            }
            let session = TimeDelta::from_std(session).unwrap_or(TimeDelta::MAX);
            let open = last_client_message.is_some_and(|t| t <= now && now - t < session);
            if open {
                return D::new(send(Channel::Wazzup), Because::AsWritten);
            }
            let outside = Because::OutsideWhatsappWindow {
                last_message: last_client_message,
            };
            if let Some(name) = approved {
                return D::new(Decided::SendApproved { name: name.clone() }, outside);
            }
            match otherwise {
                Otherwise::Email => D::new(send(Channel::Email), outside),
                Otherwise::Task if gate.tasks => D::new(write(), outside),
                Otherwise::Task | Otherwise::Skip => D::new(Decided::Skip, outside),
            }
        }
        Action::Call { .. } | Action::Task { .. } if !gate.tasks => D::new(Decided::Skip, gated),
        Action::Call { text, within } => D::new(
            task(TaskKind::Call, text.clone(), *within),
            Because::AsWritten,
        ),
        Action::Task { text, within } => D::new(
            task(TaskKind::Other, text.clone(), *within),
            Because::AsWritten,
        ),
        Action::Note { text } => D::new(Decided::Note { text: text.clone() }, Because::AsWritten),
        Action::Move { stage, reason } => {
            let moved = Decided::Move {
                stage: stage.clone(),
                reason: reason.clone(),
            };
            match gate.moves {
                Moves::Move => D::new(moved, Because::AsWritten),
                Moves::Task if gate.tasks => {
                    let why = reason
                        .as_ref()
                        .map(|r| format!(", причина отказа «{r}»"))
                        .unwrap_or_default();
                    D::new(
                        task(
                            TaskKind::Other,
                            format!("Перевести сделку на этап «{stage}»{why}: {}", step.title),
                            STAND_IN_TASK,
                        ),
                        gated,
                    )
                }
                Moves::Task | Moves::Skip => D::new(Decided::Skip, gated),
            }
        }
    }
}

fn channel_words(channel: Channel) -> &'static str {
    match channel {
        Channel::Wazzup => "WhatsApp",
        Channel::Email => "письмо",
    }
}
