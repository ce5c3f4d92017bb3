//! sales-robot: the robot of a sales department on amoCRM or Bitrix24.
//!
//! Layers (see the README's architecture section): `domain` holds pure decisions,
//! `adapters` talk to the outside world, `service` wires them into the HTTP intake and the
//! job workers, `config` turns rule files into typed rules, `cli` is the binary's commands.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod domain;
pub mod service;
pub mod simulate;
pub mod synth;
