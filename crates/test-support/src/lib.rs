//! What the workspace's tests share, written once: commands run to completion with their
//! output in the failure message, C fixtures compiled with gcc once per test run, spawned
//! processes read line by line with deadlines and killed (and reaped) when dropped, even when
//! a test panics, the workspace's built binaries, a patch built by hand with the user guide's
//! steps, storages and `libcare-ctl` runs, and PID namespaces for `-p all` tests.
//!
//! It depends on no crate of the workspace, so that any of them can take it as a
//! dev-dependency. Everything is re-exported here: `use libcare_test_support::*;`.
#![forbid(unsafe_code)]

pub mod command;
pub mod ctl;
pub mod fixtures;
pub mod gensrc_lite;
pub mod handmade;
pub mod namespace;
pub mod process;
pub mod readelf;
pub mod storage;
pub mod tools;
pub mod wait;

pub use command::{assert_status, assert_success, gcc, run, run_ok, stderr, stdout, Running};
pub use ctl::{ctl, fails, info_ids, maps, ok, patch_regions, rx_anonymous_regions};
pub use fixtures::{compiled, copy_tree, fixtures};
pub use handmade::{build_id, gensrc, kpatch_make, strip_steps};
pub use namespace::{assert_pid_namespace_init, run_in_pid_namespace};
pub use process::{Proc, Target};
pub use readelf::{readelf_allowing, readelf_clean};
pub use storage::{put_flat, put_level, put_script, set_latest};
pub use tools::{audit_log, bin, bin_dir, lock_dir, no_keys_dir, tool};
pub use wait::{wait_for_file, wait_until, DEADLINE};
