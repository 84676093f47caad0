//! `libcare-patch-make --after`: a patch built on top of an earlier one with the make driver
//! (tests/fixtures/driver/layered). fix1.patch adds a counter and a function to util.c;
//! fix2.patch, made against the sources fix1 leaves, changes main.c to print that counter.
//! The second run applies fix1.patch first, builds what it changes into the `earlier` stage's
//! assembly, and makes a patch that takes the counter from patch 0001 at run time (through
//! util.c's placeholder, since main.c only declares it): applied over 0001, it prints 0001's
//! running count; 0001 cannot go first, and removing 0002, then 0001, brings the original
//! output back.

use std::path::Path;

use crate::support::{fixture, kpatch_tools_present, read, run_ok};
use libcare_test_support::{build_id, ctl, fails, info_ids, maps, ok, tool, Proc};

/// `libcare-patch-make ARGS` in `dir`, with none of the caller's build variables.
fn patch_make(dir: &Path, args: &[&str]) -> String {
    let mut c = tool("libcare-patch-make", dir);
    c.args(args);
    for v in [
        "MAKEFLAGS",
        "MAKELEVEL",
        "KPATCH_PATH",
        "KPATCH_STAGE",
        "CC",
        "CFLAGS",
    ] {
        c.env_remove(v);
    }
    run_ok(&mut c, 300)
}

/// The number in a `count N` or `total N` line.
fn number(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn a_patch_made_on_top_of_an_earlier_one_uses_what_it_added() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("layered");
    let dir = d.path().canonicalize().unwrap();
    let sources = ["main.c", "util.c"].map(|f| (dir.join(f), read(&dir.join(f))));

    patch_make(&dir, &["--clean", "-i", "0001", "fix1.patch"]);
    let exe = dir.join("lpmake/counter");
    let bid = build_id(&exe);
    let stored = dir.join(format!("patchroot/{bid}.kpatch"));
    let first = dir.join("0001.kpatch");
    std::fs::rename(&stored, &first).unwrap();

    let out = patch_make(
        &dir,
        &["-i", "0002", "--after", "0001=fix1.patch", "fix2.patch"],
    );
    assert!(
        out.contains("BUILDING CODE OF EARLIER PATCHES 0001"),
        "{out}"
    );
    assert!(out.contains("replaces report: main.c: changed"), "{out}");
    // Nothing of fix1 again: util.c is as patch 0001 left it.
    assert!(
        !out.contains("tick") && !out.contains("added_next"),
        "{out}"
    );
    assert_eq!(build_id(&exe), bid, "the original was rebuilt differently");
    for (path, content) in &sources {
        assert_eq!(&read(path), content, "{} was not restored", path.display());
    }

    let mut p = Proc::spawn(&exe, &[]);
    let pid = p.pid_arg();
    p.wait_line("plain");
    let second = stored.to_str().unwrap();
    fails(
        &ctl(&dir, &["patch", "-p", &pid, second], &[]),
        &["patch 0002 needs patch 0001", "uses added_count from it"],
    );
    ok(&ctl(
        &dir,
        &["patch", "-p", &pid, first.to_str().unwrap()],
        &[],
    ));
    p.wait_for("a count", |l| l.starts_with("count ") && number(l) >= 3);
    ok(&ctl(&dir, &["patch", "-p", &pid, second], &[]));
    // report() now prints patch 0001's counter, as tick() has just counted it.
    let mut count = String::new();
    let total = loop {
        let l = p.wait_for("a count or total", |l| {
            l.starts_with("count ") || l.starts_with("total ")
        });
        if l.starts_with("total ") {
            break l;
        }
        count = l;
    };
    assert_eq!(number(&total), number(&count), "{count:?}, then {total:?}");
    // Patch 0001 cannot go first: refused, the process left as it was, still printing totals.
    let before = maps(p.pid());
    fails(
        &ctl(&dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]),
        &[
            "cannot remove patch 0001",
            "patch 0002, applied after it, uses added_count from it",
            "remove 0002 first",
        ],
    );
    assert_eq!(
        maps(p.pid()),
        before,
        "the refused unpatch changed the process"
    );
    assert_eq!(info_ids(&dir, p.pid()), ["0001", "0002"]);
    p.drain();
    p.wait_for("a total", |l| l.starts_with("total "));

    // The right order: 0002 (report() prints nothing again: two counts in a row), then 0001.
    ok(&ctl(&dir, &["unpatch", "-p", &pid, "-i", "0002"], &[]));
    let mut last_was_count = false;
    p.wait_for("two counts in a row", |l| {
        let twice = last_was_count && l.starts_with("count ");
        last_was_count = l.starts_with("count ");
        twice
    });
    ok(&ctl(&dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
    assert!(info_ids(&dir, p.pid()).is_empty());
    p.drain();
    p.wait_line("plain");
}
