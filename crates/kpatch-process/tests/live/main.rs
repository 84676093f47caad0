//! Tests against real processes: C fixtures from tests/fixtures/process, compiled with gcc at
//! test time, each run as a child that is killed when its test ends, passed or not.

mod harness;

mod calls;
mod guardian;
mod memory;
mod open;
mod returns;
mod signals;
mod syscalls;
mod threads;
mod written;
