//! Routing (seed interview `004_…`, "Как автоматизировано распределение заявок"): each lead
//! to a manager of the right group who can take it right now, and an even day for
//! everyone.
//!
//! - [`roster`]: the managers, their groups, shifts, lunches, days off and vacations;
//! - [`rules`]: how a lead picks a group and specialists, waits, overflow, priorities;
//! - [`eligibility`]: whether a manager can take a lead now, each rule a named reason;
//! - [`load`]: the load, counted to the end of the shift;
//! - [`decide`]: the decision for one lead, and the roll call for a dry run.

pub mod decide;
pub mod eligibility;
pub mod load;
pub mod roster;
pub mod rules;

#[cfg(test)]
mod tests;

pub use decide::{
    Board, Decision, FirstTask, OverflowTo, Request, RollCall, Router, Scope, Standing, Verdict,
};
pub use eligibility::{Heard, Reason};
pub use roster::{Group, Manager, Roster, Shift, Vacation, Week, Window};
pub use rules::{Fallback, GroupRule, PriorityRule, RoutingRules, Specialisation, TaskRule};
