//! One module per `jota` subcommand.

pub mod agent;
pub mod bootctl;
pub mod bundle;
pub mod bup;
pub mod demo;
pub mod fleet;
pub mod install;
pub mod keys;
pub mod layout;
pub mod loadgen;
pub mod server;
pub mod sim;
pub mod status;
