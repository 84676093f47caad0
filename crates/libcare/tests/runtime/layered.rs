//! A later patch using what an earlier applied patch added (the report's constraints refuse
//! it). Patch 1 adds `added_count` and `added_next()`; patch 2 changes `tick()` and uses them.
//! Stacked over patch 1, patch 2 must count on from patch 1's counter.
//!
//! Not supported yet: a patch is built against the original binary, so patch 2 carries its own
//! `added_count` and `added_next` (new to the original) and starts again from 0. It needs
//! (1) the builder to take patch 1's source as the base of patch 2, leaving the symbols only
//! patch 1 defines undefined in patch 2 (kpatch_gensrc: not new; kpatch_strip --rel-fixup:
//! not in the original, kept as undefined references), and (2) the engine to resolve undefined
//! symbols of a patch against the symbol tables of the patches applied to the same object
//! (their ELF images, `.symtab` included, are in the process), and to refuse removing a patch
//! whose symbols a later one uses.

use crate::support::*;

/// The number in a `count N` or `count N again` line.
fn count(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count line: {line:?}"))
}

#[test]
#[ignore = "needs the builder and engine changes in this file's documentation"]
fn a_later_patch_counts_on_with_what_an_earlier_one_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("layered", "-O2"), &[1, 2]);
    let mut p = built.start("plain");
    let pid = p.pid_arg();
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[],
    ));
    let mut last = 0;
    while last < 5 {
        last = count(&p.wait_for("a count", |l| l.starts_with("count ")));
    }
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(2).to_str().unwrap()],
        &[],
    ));
    let first = loop {
        let l = p.wait_for("a count", |l| l.starts_with("count "));
        if l.ends_with(" again") {
            break count(&l);
        }
        last = count(&l);
    };
    assert!(
        first > last,
        "patch 2 started a counter of its own ({first}) instead of going on from patch 1's ({last})"
    );
}
