//! Arbitrary bytes as an ELF file, through the same checks as elf-edit's proptests.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/elf-edit/tests/exercise/mod.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| exercise::exercise(data));
