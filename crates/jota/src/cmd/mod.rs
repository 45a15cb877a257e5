//! One module per `jota` subcommand.

pub mod bootctl;
pub mod bup;
pub mod layout;
pub mod sim;
