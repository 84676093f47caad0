//! The compiler wrapper (`libcare-cc`) and the one-command patch builder
//! (`libcare-patch-make`). See docs/internals.md section 1 for the pipeline they drive.
//!
//! - [`cc`]: classify a gcc command line; in the `original` stage keep each source's
//!   assembly and build from it, in the `patched` stage combine it with the patched assembly
//!   through `kpatch_gensrc`; anything else goes to the real compiler unchanged.
//! - [`patch_make`]: original build and install, apply the patch files, patched build and
//!   install, then [`post`] for every changed executable.
//! - [`post`]: the `kpatch_strip`/`strip`/`kpatch_make` sequence, the kpatch steps in process.
//! - [`patchfile`]: unified diffs, finding the file each section changes, applying with GNU
//!   `patch`, restoring the tree.
//! - [`stash`]: the patched stage's `libcare-cc` moves each original output it overwrites
//!   aside; the driver puts them back, so the original build survives a run.
//! - [`tree_state`]: what else the patched stage rewrote, marked out of date.
//! - [`report`]: what each patch replaces, and why.

mod build_env;
pub mod cc;
pub mod elfinfo;
mod install_guard;
mod patch_check;
pub mod patch_make;
mod patchfile;
mod post;
pub mod report;
pub mod stash;
mod tools;
mod tree_state;
