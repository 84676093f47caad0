//! Patch files: parsing unified diffs, finding the files they change, applying them with GNU
//! `patch` and putting the source tree back.

pub mod apply;
pub mod diff;
pub mod line_keep;
pub mod target;

pub use apply::{
    apply_patch, backed_up_files, originals, read_patch, restore_sources, ApplyError, RestoreError,
    RestoredTime,
};
