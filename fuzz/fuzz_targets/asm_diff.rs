//! Two assembler files (the input after its first byte, split at the first NUL byte) diffed
//! and combined as `kpatch_gensrc` does; the first byte's bits choose `--force-gotpcrel` and
//! `--force-global`. Errors are fine, panics are not; a file compared with itself has nothing
//! to patch.

#![no_main]

use kpatch_asm::{diff, gensrc, AsmFile, Dialect, DiffOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = match rest.iter().position(|&c| c == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let dialect = Dialect::detect(&a).map_or_else(Dialect::x86_64, Dialect::for_arch);
    let (Ok(orig), Ok(patched)) = (
        AsmFile::parse("orig.s", &a, dialect.clone()),
        AsmFile::parse("patched.s", &b, dialect),
    ) else {
        return;
    };
    let opts = DiffOptions {
        force_gotpcrel: flags & 1 != 0,
        force_global: flags & 2 != 0,
        ..DiffOptions::default()
    };
    let _ = gensrc(&orig, &patched, &opts);
    if flags & 4 != 0 {
        if let Ok(same) = diff(&orig, &orig, &opts) {
            assert!(same.is_empty(), "a file differs from itself");
        }
    }
});
