//! Arbitrary text as GNU assembler: errors are fine, panics are not. The first byte chooses
//! the dialect (x86_64 or aarch64).

#![no_main]

use kpatch_asm::{AsmFile, Dialect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let dialect = if choice & 1 == 0 {
        Dialect::x86_64()
    } else {
        Dialect::aarch64()
    };
    if let Ok(file) = AsmFile::parse("fuzz.s", &text, dialect) {
        assert!(file.lines.len() <= text.len() + 1);
    }
    let _ = Dialect::detect(&text);
});
