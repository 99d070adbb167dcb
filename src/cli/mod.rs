//! The command line: `parse` turns words into a `Command` (no I/O), `commands` carries
//! it out, `explain` tells what the policy would do with a command. Exit codes: 0 ok,
//! 1 failure, 2 usage.

mod commands;
mod explain;
mod flags;
mod parse;

pub use self::commands::main;
