//! Self-tests of the emulators in `tests/support/`: each is driven over HTTP (or SMTP) the
//! way a client would, so the robot's own tests can trust what they answer.

#[path = "../support/mod.rs"]
mod support;

mod amocrm;
mod bitrix24;
mod smtp;
mod wazzup;
