//! Shared pieces of the command-line programs.

pub mod ctl;
pub mod ctl_args;
