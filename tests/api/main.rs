//! End-to-end tests of the robot over HTTP, on both backends.

mod helpers;

mod health;
mod intake;
mod jobs;
mod presence;
mod store_contract;
