//! Bitrix24: its outbound events now; its REST API in a later step.

pub mod webhook;
