//! End-to-end tests of the robot over HTTP, on both backends.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod catchup;
mod chains;
mod chains_bitrix24;
mod chains_statuses;
mod crm_wiring;
mod health;
mod intake;
mod jobs;
mod presence;
mod routing;
mod scoring;
mod store_contract;
