//! The outside world: webhook formats of the CRMs and messengers, the stores, sending
//! WhatsApp messages and e-mail, and the files a person hands the robot (the marketing spend).

pub mod amocrm;
pub mod bitrix24;
pub mod crm;
pub mod csv;
pub mod form;
pub mod leads_file;
pub mod mail;
pub mod model_file;
pub mod spend;
pub mod store;
pub mod wazzup;
pub mod webhook;
