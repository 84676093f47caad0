//! A later patch using what an earlier applied patch added (the QEMU report's constraints say
//! a later patch cannot). Patch 1 adds `added_count` and `added_next()`; patch 2 changes
//! `tick()` and uses them. Patch 2 is built on top of patch 1 (`kpatch_gensrc --earlier` with
//! patch 1's assembly: what patch 1 added stays an undefined reference; `kpatch_make --after
//! 0001`), so, stacked over patch 1, it counts on from patch 1's counter: the running value.
//! It is refused without patch 1, and patch 1 cannot be removed while patch 2 stays; a
//! cumulative patch replaces both at once.

use crate::support::*;

/// The number in a `count N` or `count N again` line.
fn count(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count line: {line:?}"))
}

/// The count patch 1 prints, once it has printed at least `at_least`.
fn counting(p: &mut Proc, at_least: u64) -> u64 {
    loop {
        let l = p.wait_for("patch 1's count", |l| {
            l.starts_with("count ") && !l.ends_with(" again")
        });
        if count(&l) >= at_least {
            return count(&l);
        }
    }
}

/// The first count patch 2 prints, and the last one patch 1 printed before it.
fn counts_on(p: &mut Proc, mut last: u64) -> (u64, u64) {
    loop {
        let l = p.wait_for("a count", |l| l.starts_with("count "));
        if l.ends_with(" again") {
            return (last, count(&l));
        }
        last = count(&l);
    }
}

fn patch(dir: &std::path::Path, pid: &str, file: &std::path::Path) -> std::process::Output {
    ctl(dir, &["patch", "-p", pid, file.to_str().unwrap()], &[])
}

fn counts_on_at(opt: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_layered(dir, &Recipe::exe("layered", opt), &[1, 2]);
    let mut p = built.start("plain");
    let pid = p.pid_arg();
    ok(&patch(dir, &pid, built.patch(1)));
    let last = counting(&mut p, 5);
    ok(&patch(dir, &pid, built.patch(2)));
    let (last, first) = counts_on(&mut p, last);
    assert_eq!(
        first,
        last + 1,
        "patch 2 did not go on with patch 1's counter ({last}) but counted {first}"
    );
    let info = ok(&ctl(dir, &["info", "-p", &pid], &[]));
    let after = format!("{:<25} 0001", "Applied after:");
    assert!(info.contains(&after), "{info}");
    // Everything at once: newest first, so patch 2 goes before the patch it needs.
    let out = ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    assert!(
        out.contains("2 patch hunk(s) were successfully cancelled"),
        "{out}"
    );
    p.drain();
    p.wait_line("plain");
    assert_eq!(patch_regions(p.pid()), 0);
}

#[test]
fn a_later_patch_counts_on_with_what_an_earlier_one_added_o0() {
    counts_on_at("-O0");
}

#[test]
fn a_later_patch_counts_on_with_what_an_earlier_one_added_o2() {
    counts_on_at("-O2");
}

#[test]
fn a_patch_built_on_another_needs_it_applied_and_keeps_it_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_layered(dir, &Recipe::exe("layered", "-O2"), &[1, 2]);
    let mut p = built.start("plain");
    let pid = p.pid_arg();

    // Without patch 1: refused, naming what it needs, the process left as it was.
    let before = maps(p.pid());
    fails(
        &patch(dir, &pid, built.patch(2)),
        &["patch 0002 needs patch 0001", "uses added_next from it"],
    );
    assert_eq!(maps(p.pid()), before);
    p.drain();
    p.wait_line("plain");

    ok(&patch(dir, &pid, built.patch(1)));
    let last = counting(&mut p, 3);
    ok(&patch(dir, &pid, built.patch(2)));
    let (_, mut n) = counts_on(&mut p, last);

    // Patch 1 cannot go first: patch 2 runs its code and data.
    let before = maps(p.pid());
    fails(
        &ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]),
        &[
            "cannot remove patch 0001",
            "patch 0002, applied after it, uses added_next from it",
        ],
    );
    assert_eq!(maps(p.pid()), before);
    assert_eq!(info_ids(dir, p.pid()), ["0001", "0002"]);
    p.drain();
    let l = p.wait_for("a count", |l| l.starts_with("count "));
    assert!(l.ends_with(" again") && count(&l) > n, "{l:?} after {n}");
    n = count(&l);

    // Patch 2 first, then patch 1: each step goes on with the same counter.
    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0002"], &[]));
    assert!(counting(&mut p, 0) > n);
    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
    p.drain();
    p.wait_line("plain");
    assert!(info_ids(dir, p.pid()).is_empty());

    // A cumulative patch replaces both at once: the one needed goes with the one needing it.
    ok(&patch(dir, &pid, built.patch(1)));
    ok(&patch(dir, &pid, built.patch(2)));
    p.wait_for("patch 2's count", |l| l.ends_with(" again"));
    let cumulative = dir.join("layered.v1.replace.kpatch");
    let args = [
        "--replace",
        "-b",
        &built.build_id,
        "-i",
        "0003",
        "layered.v1.stripped",
    ];
    run_ok(
        tool("kpatch_make", dir)
            .args(args)
            .arg("-o")
            .arg(&cumulative),
    );
    let out = ok(&patch(dir, &pid, &cumulative));
    assert!(
        out.contains("patch(es) 0002, 0001 replaced by 0003"),
        "{out}"
    );
    assert_eq!(info_ids(dir, p.pid()), ["0003"]);
    // Patch 1's code again, with a counter of its own.
    p.wait_for("a count of its own", |l| l == "count 1");
    ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    p.wait_line("plain");
}
