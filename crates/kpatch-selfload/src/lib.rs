//! Start-up patching: a process that executes a program with a patch in the storage, or loads
//! a library with one, is patched before that code runs (docs/internals.md section 6).
//!
//! [`Context::patch_at_startup`] does the work on a thread held at the right moment (and, in a
//! process the service follows, reports the objects each `dlopen` and `dlclose` adds or
//! removes to the engine); [`SelfLoad`] (`libcare-server --self-load`) finds such threads with
//! fanotify, with nothing in the target's environment; [`serve_execve`] is LibcarePlus's
//! `execve` wrapper protocol. The caller's trust rules ([`Guard`], and the engine's check of each
//! patch file) apply to all of them.

mod buildid;
mod error;
mod files;
mod flow;
mod guard;
mod ldso;
mod service;
mod watch;
mod wrapper;

pub use error::{Error, Result};
pub use files::DEFAULT_SEARCH_DIRS;
pub use flow::{Context, Log, Outcome, Start, DEFAULT_HOLD_LIMIT, HANG_STEP};
pub use guard::{Guard, Record, Recorded};
pub use service::{Config, SelfLoad};
pub use wrapper::{serve_execve, serve_startup};
