//! One module per `jota` subcommand.

pub mod agent;
pub mod bootctl;
pub mod bundle;
pub mod bup;
pub mod install;
pub mod keys;
pub mod layout;
pub mod sim;
pub mod status;
