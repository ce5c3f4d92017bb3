//! amoCRM (Kommo): its webhooks, and its REST API v4 behind the `Crm` trait.

pub mod api;
pub mod oauth;
pub mod webhook;
