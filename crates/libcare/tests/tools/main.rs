//! The build tools' command lines end to end (`kpatch_gensrc`, `kpatch_strip`, `kpatch_make`,
//! `libcare-dump`) and the user guide's manual walkthrough: one test binary, one module per
//! tool.

mod gensrc_cli;
mod guide_manual;
mod kpatch_make;
mod kpatch_strip;
mod libcare_dump;
