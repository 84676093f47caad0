//! The compiler wrapper (`libcare-cc`) and the one-command patch builder
//! (`libcare-patch-make`). See docs/internals.md section 1 for the pipeline they drive.
//!
//! - [`cc`]: classify a gcc command line; in the `original` stage keep each source's
//!   assembly and build from it, in the `patched` stage combine it with the patched assembly
//!   through `kpatch_gensrc`; anything else goes to the real compiler unchanged.
//! - [`patch_make`]: original build and install, apply the patch files, patched build and
//!   install, then `kpatch_strip`/`strip`/`kpatch_make` for every changed executable.
//! - [`patchfile`]: unified diffs, finding the file each section changes, applying with GNU
//!   `patch`, restoring the tree.

pub mod build_env;
pub mod cc;
pub mod elfinfo;
pub mod patch_make;
pub mod patchfile;
pub mod tools;
