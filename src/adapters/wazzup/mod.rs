//! Wazzup (WhatsApp and other messengers): its webhooks now; sending in a later step.

pub mod webhook;
