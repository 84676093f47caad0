//! End-to-end tests of the patch builders, `libcare-cc` and `libcare-patch-make`, and of the
//! cases of tests/fixtures/cases built both by them and by hand, then patched live: one test
//! binary, one module per area.

mod support;

mod cases;
mod cc;
mod guide_live;
mod install_guard;
mod ipa;
mod layered;
mod livepatch_example;
mod patch_make;
