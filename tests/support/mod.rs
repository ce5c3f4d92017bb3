//! Emulators of the outside APIs, for tests.

pub mod amocrm;
pub mod bitrix24;
pub mod smtp;
pub mod wazzup;
