//! The thin shell: HTTP intake, the job handlers and workers, start and stop.

pub mod jobs;
pub mod metrics;
pub mod secrets;
pub mod worker;
