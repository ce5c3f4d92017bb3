//! The outside world: webhook formats of the CRMs and messengers, and the stores.

pub mod amocrm;
pub mod bitrix24;
pub mod crm;
pub mod form;
pub mod store;
pub mod wazzup;
pub mod webhook;
