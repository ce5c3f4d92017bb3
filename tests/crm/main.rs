//! The CRM adapters against the emulators of `tests/support/`.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod helpers;

mod amocrm;
mod batch;
mod bitrix24;
