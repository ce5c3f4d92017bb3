//! Follow-up chains (issue 6; seeds `003_…`, the call-centre procedure ОП-2, and `004_…`,
//! the one-button "out of stock" letters and the refusal-reason letters): what a head of
//! sales writes in `chains.toml`, and the pure decisions an engine asks about them.
//!
//! - [`model`]: [`Chain`], its [`Trigger`], [`Step`]s with their [`Action`], [`Stop`]s;
//! - [`facts`]: the facts about a lead that chains read (stage, outcome, reason, meeting);
//! - [`trigger`]: which chains a lead enrols in when its facts change ([`Chains::enrol`]);
//! - [`enrolment`]: one lead in one chain, and how far it got ([`Enrolment`]);
//! - [`calendar`]: business days, holidays, time zones, the [`SendWindow`];
//! - [`schedule`]: when the next step is due, with no burst after a pause
//!   ([`Chains::next_step`]);
//! - [`gate`]: what a step becomes for the lead's priority and WhatsApp's 24 hours
//!   ([`Chains::decide_step`]);
//! - [`session`]: WhatsApp's session as known, closed early by the messenger's word
//!   ([`session::last_open_message`]);
//! - [`delivery`]: what a delivery status means for the step that sent the message
//!   ([`delivery::read_status`]);
//! - [`stop`]: whether an enrolment stops, and why ([`Chains::should_stop`]);
//! - [`throttle`]: messages a minute per channel, one a day per client ([`Throttle`]);
//! - [`template`]: the texts, rendered over a typed context ([`Templates::render`]);
//! - [`wake`]: what a wake-up planned by [`Chains::check_at`] does when the queue brings
//!   it ([`wake()`](wake::wake)).
//!
//! An engine's loop over one enrolment: `next_step` → wait until `at` → `should_stop`?
//! → `decide_step` → for a message, `Throttle::check` → carry it out →
//! `Enrolment::step_done` → `next_step` again. Only one step per run.

pub mod calendar;
pub mod delivery;
pub mod enrolment;
pub mod facts;
pub mod gate;
pub mod model;
pub mod schedule;
pub mod session;
pub mod stop;
pub mod template;
pub mod throttle;
pub mod trigger;
pub mod wake;

#[cfg(test)]
mod tests;

pub use calendar::{Calendar, SendWindow};
pub use delivery::{Delivery, read_status};
pub use enrolment::Enrolment;
pub use gate::{Because, Decided, Gate, GateError, Gates, Messages, Moves, StepDecision};
pub use model::{Action, Chain, Chains, Channel, Delay, Otherwise, Step};
pub use schedule::Due;
pub use stop::{Stop, StopReason};
pub use template::{
    CompanyView, ContactView, LeadView, ManagerView, MessageView, ProductView, PurchaseView,
    Rendered, TemplateContext, TemplateError, Templates, UnknownPlaceholder,
};
pub use throttle::{Hold, Sent, Throttle};
pub use trigger::Trigger;
pub use wake::Wake;
