//! The patch engine: apply, remove and list `.kpatch` patches in a live process.
//!
//! Data flows one way: a `.kpatch` file and a view of the target become a plan (addresses,
//! relocated bytes, hunks), computed while the target runs; a short commit then writes the
//! jumps with every thread stopped. See docs/internals.md sections 2-4.

pub mod apply;
pub mod coro;
pub mod discover;
pub mod elf_image;
pub mod error;
pub mod fault;
pub mod info;
pub mod layout;
pub mod lock;
pub mod options;
pub mod payload;
pub mod relocate;
pub mod report;
pub mod runs;
pub mod safety;
pub mod scope;
pub mod select;
pub mod storage;
pub mod unapply;
pub mod unwind;
pub mod world;

pub use apply::{patch, AppliedObject, PatchOutcome};
pub use error::{Error, Result};
pub use info::{info, ObjectInfo, PatchInfo};
pub use options::{Options, PatchCheck};
pub use report::{Quiet, Report};
pub use storage::Storage;
pub use unapply::{unpatch, RemovedPatch, UnpatchOutcome};
