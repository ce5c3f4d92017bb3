//! Bitrix24: its outbound events, and its REST API behind the `Crm` trait.

pub mod api;
pub mod oauth;
pub mod webhook;
