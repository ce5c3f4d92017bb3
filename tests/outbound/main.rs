//! The outbound channels of the follow-up chains, WhatsApp through Wazzup and e-mail over
//! SMTP, against the emulators of `tests/support/`.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod mail;
mod secrets;
mod wazzup;
