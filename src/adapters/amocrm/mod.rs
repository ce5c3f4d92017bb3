//! amoCRM (Kommo): its webhooks now; its REST API v4 in a later step.

pub mod webhook;
