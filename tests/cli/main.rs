//! The binary as a person runs it: `serve` killed and restarted, stopped with SIGTERM,
//! `replay`, `check-config`, `dead`.

mod process;

mod check_config;
mod crash;
mod replay;
