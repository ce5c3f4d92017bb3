//! The binary as a person runs it: `serve` killed and restarted, stopped with SIGTERM,
//! `replay`, `check-config`, `dead`, `report`, `train`/`score`, `bench leads`.

mod process;
#[path = "../support/mod.rs"]
mod support;

mod bench;
mod catchup;
mod chain_restart;
mod chains;
mod check_config;
mod crash;
mod crm;
mod replay;
mod report;
mod routing;
mod scoring;
