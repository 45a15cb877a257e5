//! One module per `jota` subcommand.

pub mod bootctl;
pub mod bundle;
pub mod bup;
pub mod keys;
pub mod layout;
pub mod sim;
