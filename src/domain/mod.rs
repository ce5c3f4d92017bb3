//! The robot's decisions and the words they are made in. Pure: no I/O, no clock.

pub mod event;
pub mod presence;
pub mod retry;
