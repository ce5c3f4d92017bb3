//! Wazzup (WhatsApp and other messengers): its webhooks, and sending WhatsApp messages.

pub mod client;
pub mod send;
pub mod webhook;
