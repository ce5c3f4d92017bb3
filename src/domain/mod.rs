//! The robot's decisions and the words they are made in. Pure: no I/O, no clock.

pub mod catchup;
pub mod chains;
pub mod condition;
pub mod echo;
pub mod event;
pub mod lead;
pub mod ledger;
pub mod manager;
pub mod presence;
pub mod priority;
pub mod product;
pub mod rate;
pub mod report;
pub mod retry;
pub mod routing;
pub mod scoring;
pub mod task;
