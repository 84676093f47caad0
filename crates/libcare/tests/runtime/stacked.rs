//! Stacked patches: 0001 and 0002 both replace version(). Removed newest first, or oldest first
//! (where the peer's target later crashes), the process prints the right version at each step
//! and never dies. A patch-id already applied is refused.

use std::time::Duration;

use crate::support::*;

fn expect_version(p: &mut Proc, v: &str) {
    p.drain();
    let want = format!("version {v}");
    p.wait_line(&want);
    for line in p.lines_for(Duration::from_millis(100)) {
        assert_eq!(line, want);
    }
}

fn stacked(order: [&str; 2], after_first: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("stacked", "-O2"), &[1, 2]);
    let mut p = Proc::spawn(&built.binary, &[]);
    let pid = p.pid_arg();
    expect_version(&mut p, "v0");
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[],
    ));
    expect_version(&mut p, "v1");
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(2).to_str().unwrap()],
        &[],
    ));
    expect_version(&mut p, "v2");
    assert_eq!(info_ids(dir, p.pid()), vec!["0001", "0002"]);

    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", order[0]], &[]));
    expect_version(&mut p, after_first);
    assert_eq!(info_ids(dir, p.pid()), vec![order[1]]);
    assert_eq!(patch_regions(p.pid()), 1);

    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", order[1]], &[]));
    expect_version(&mut p, "v0");
    assert!(info_ids(dir, p.pid()).is_empty());
    assert_eq!(patch_regions(p.pid()), 0);

    // Both again, then everything at once.
    for v in [1, 2] {
        ok(&ctl(
            dir,
            &["patch", "-p", &pid, built.patch(v).to_str().unwrap()],
            &[],
        ));
    }
    expect_version(&mut p, "v2");
    let out = ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    assert!(
        out.contains("2 patch hunk(s) were successfully cancelled"),
        "{out}"
    );
    expect_version(&mut p, "v0");
    assert!(p.alive());
}

#[test]
fn stacked_patches_removed_newest_first() {
    stacked(["0002", "0001"], "v1");
}

#[test]
fn stacked_patches_removed_oldest_first() {
    stacked(["0001", "0002"], "v2");
}

#[test]
fn a_patch_id_already_applied_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("stacked", "-O2"), &[1]);
    let mut p = Proc::spawn(&built.binary, &[]);
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();
    ok(&ctl(dir, &["patch", "-p", &pid, patch], &[]));
    expect_version(&mut p, "v1");
    let maps_before = maps(p.pid());
    let out = ctl(dir, &["patch", "-p", &pid, patch], &[]);
    fails(&out, &["patch-id 0001 is already applied"]);
    assert_eq!(maps(p.pid()), maps_before);
    assert_eq!(info_ids(dir, p.pid()), vec!["0001"]);
    expect_version(&mut p, "v1");
    let out = ctl(dir, &["unpatch", "-p", &pid, "-i", "0009"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stdout(&out).contains("Failed to find target patch with patch_id=0009"));
    expect_version(&mut p, "v1");
}
