//! One module per `jota` subcommand.

pub mod bup;
pub mod layout;
