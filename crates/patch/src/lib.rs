//! The patch engine: apply, remove and list `.kpatch` patches in a live process.
//!
//! Data flows one way: a `.kpatch` file and a view of the target become a plan (addresses,
//! relocated bytes, hunks), computed while the target runs; a short commit then writes the
//! jumps with every thread stopped. See docs/internals.md sections 2-4.

pub mod elf_image;
pub mod error;
pub mod layout;
pub mod payload;
pub mod relocate;
pub mod scope;
pub mod storage;
pub mod unwind;

pub use error::{Error, Result};
