//! The thin shell: HTTP intake, the job handlers and workers, start and stop.

pub mod app;
pub mod catchup;
pub mod chains;
pub mod entities;
pub mod health;
pub mod intake;
pub mod jobs;
pub mod metrics;
pub mod robot;
pub mod routing;
pub mod scoring;
pub mod secrets;
pub mod settings;
pub mod worker;
