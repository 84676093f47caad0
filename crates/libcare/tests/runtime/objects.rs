//! Several objects in one run: a directory storage with patches for an executable and for its
//! shared library, matched by build-id, applied together or not at all.

use std::path::Path;

use crate::support::*;

/// Builds libboth.so and both (linked against it) in `dir` with patches of `version`, and a
/// storage directory holding both patches under their build-ids.
fn build_both(dir: &Path, version: u32) -> (Built, Built, std::path::PathBuf) {
    let lib = build(
        dir,
        &Recipe {
            ldflags: &[],
            shared: true,
            ..Recipe::exe("libboth", "-O2")
        },
        &[version],
    );
    let exe = build(
        dir,
        &Recipe {
            ldflags: &["-pthread", "-L.", "-lboth", "-Wl,-rpath,$ORIGIN"],
            ..Recipe::exe("both", "-O2")
        },
        &[version],
    );
    let storage = dir.join(format!("storage-v{version}"));
    std::fs::create_dir_all(&storage).expect("storage dir");
    for b in [&lib, &exe] {
        std::fs::copy(
            b.patch(version),
            storage.join(format!("{}.kpatch", b.build_id)),
        )
        .expect("copy patch");
    }
    (lib, exe, storage)
}

#[test]
fn an_executable_and_its_library_are_patched_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (lib, exe, storage) = build_both(dir, 1);
    let mut p = Proc::spawn(&exe.binary, &[]);
    let pid = p.pid_arg();
    p.wait_line("exe UNPATCHED lib UNPATCHED");
    let out = ok(&ctl(
        dir,
        &["patch", "-p", &pid, storage.to_str().unwrap()],
        &[],
    ));
    assert!(
        out.contains(&format!(
            "2 patch hunk(s) have been successfully applied to PID '{pid}'"
        )),
        "{out}"
    );
    p.drain();
    p.wait_line("exe PATCHED lib PATCHED");
    let info = ok(&ctl(dir, &["info", "-p", &pid], &[]));
    for bid in [&lib.build_id, &exe.build_id] {
        assert!(info.contains(bid.as_str()), "info lacks {bid}:\n{info}");
    }
    let out = ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    assert!(
        out.contains("2 patch hunk(s) were successfully cancelled"),
        "{out}"
    );
    p.drain();
    p.wait_line("exe UNPATCHED lib UNPATCHED");
    assert_eq!(patch_regions(p.pid()), 0);
}

/// The library's patch replaces lib_loop(), which its thread never leaves: the run fails, and
/// the executable's patch, which alone could have applied, is not applied either.
#[test]
fn when_the_library_part_fails_neither_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (_lib, exe, storage) = build_both(dir, 2);
    let mut p = Proc::spawn(&exe.binary, &[]);
    let pid = p.pid_arg();
    p.wait_line("exe UNPATCHED lib UNPATCHED");
    let maps_before = maps(p.pid());
    let out = ctl(
        dir,
        &["patch", "-p", &pid, storage.to_str().unwrap()],
        &[("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT)],
    );
    fails(&out, &["safety check failed", "lib_loop (libboth.so)"]);
    p.drain();
    for line in p.lines_for(std::time::Duration::from_millis(200)) {
        assert_eq!(line, "exe UNPATCHED lib UNPATCHED");
    }
    assert_eq!(maps(p.pid()), maps_before);
    assert!(info_ids(dir, p.pid()).is_empty());
}
