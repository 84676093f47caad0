//! libcare-patch-make: the user guide's "通过脚本制作" walkthrough, a two-source project with a
//! shared library under `make -j 2`, failures that name their step and leave the sources as
//! they were.

mod driver_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use driver_support::*;
use kpatch_driver::elfinfo;

/// libcare-patch-make in `dir`, with none of our variables inherited from the test's caller.
fn patch_make_in(dir: &Path) -> Command {
    let mut c = Command::new(patch_make());
    c.current_dir(dir);
    for v in [
        "KPATCH_STAGE",
        "KPATCH_PATH",
        "KPCCREAL",
        "KPCXXREAL",
        "KPCC_APPEND_ARGS",
        "KPCC_REMOVE_ARGS",
        "KPCC_DEBUG",
        "LPMAKE_ORIGINAL_DIR",
        "LPMAKE_PATCHED_DIR",
        "LPMAKE_PATCHROOT",
        "MAKEFLAGS",
        "MAKELEVEL",
        "CC",
        "CXX",
    ] {
        c.env_remove(v);
    }
    c
}

fn build_id(path: &Path) -> String {
    elfinfo::inspect(path)
        .expect("readable ELF")
        .and_then(|i| i.build_id)
        .unwrap_or_else(|| panic!("{} has no build-id", path.display()))
}

fn has_kpatch(path: &Path) -> bool {
    elfinfo::inspect(path)
        .expect("readable ELF")
        .is_some_and(|i| i.has_kpatch)
}

/// Checks the `.kpatch` header fields the driver is responsible for.
fn check_header(patch: &Path, id: &str, bid: &str) {
    let data = read(patch);
    assert!(data.len() > 504, "{} is too short", patch.display());
    assert_eq!(&data[0..8], b"KPATCH1\0", "magic of {}", patch.display());
    let field = |at: usize, len: usize| {
        let raw = &data[at..at + len];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    assert_eq!(field(8, 8), id, "patch id of {}", patch.display());
    assert_eq!(field(88, 41), bid, "build-id of {}", patch.display());
}

/// Lines of `text` equal to each of `want`, in that order.
fn assert_in_order(text: &str, want: &[String]) {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for w in want {
        match lines[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => panic!("missing line {w:?} (in order) in:\n{text}"),
        }
    }
}

fn no_backups_left(dir: &Path) {
    let left: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".lpmakeorig") || f.ends_with(".rej") || f.ends_with(".orig"))
        .collect();
    assert!(left.is_empty(), "left in the tree: {left:?}");
}

#[test]
fn patch_id_must_have_one_to_seven_characters() {
    let d = fixture("hello");
    for args in [
        vec!["-i", "12345678", "foo.patch"],
        vec!["--id=", "foo.patch"],
        vec!["foo.patch"],
    ] {
        let out = run(patch_make_in(d.path()).args(&args), 30);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Invalid patch-id!"), "{args:?}: {err}");
    }
    assert!(!d.path().join("lpmake").exists());
}

#[test]
fn missing_tools_stop_before_anything_is_built() {
    let d = fixture("hello");
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        patch_make_in(d.path())
            .env("KPATCH_PATH", empty.path())
            .args(["--clean", "-i", "0001", "foo.patch"]),
        30,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("setup failed: kpatch tools are missing"),
        "{err}"
    );
    assert!(err.contains("kpatch_gensrc"), "{err}");
    assert!(!d.path().join("lpmake").exists());
    assert!(!d.path().join("foo").exists());
}

#[test]
fn malformed_patch_is_reported_before_building() {
    let d = fixture("hello");
    std::fs::write(
        d.path().join("bad.patch"),
        "--- foo.c\n+++ foo.c\n@@ -1 +1\n",
    )
    .unwrap();
    let out = run(
        patch_make_in(d.path()).args(["-i", "0001", "bad.patch"]),
        30,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("applying bad.patch failed"), "{err}");
    assert!(err.contains("line 3: malformed hunk header"), "{err}");
    assert!(!d.path().join("foo").exists());
}

#[test]
fn guide_walkthrough_with_the_script() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("hello");
    let dir = d.path().canonicalize().unwrap();
    let cc_link_before = std::fs::read_link("/usr/bin/cc").ok();
    let foo_c = read(&dir.join("foo.c"));

    let out = run_ok(
        patch_make_in(&dir).args(["--clean", "-i", "0001", "foo.patch"]),
        600,
    );
    let bid = build_id(&dir.join("lpmake/foo"));
    let patch = dir.join(format!("patchroot/{bid}.kpatch"));
    let libcare_cc = tools_dir().join("libcare-cc");
    assert_in_order(
        &out,
        &[
            "rm -f foo".to_string(),
            "BUILDING ORIGINAL CODE".to_string(),
            format!("{} -o foo foo.c", libcare_cc.display()),
            format!("INSTALLING ORIGINAL OBJECTS INTO {}/lpmake", dir.display()),
            "mkdir $DESTDIR || :".to_string(),
            "cp foo $DESTDIR".to_string(),
            "applying foo.patch...".to_string(),
            "patching file foo.c".to_string(),
            "BUILDING PATCHED CODE".to_string(),
            format!("{} -o foo foo.c", libcare_cc.display()),
            format!(
                "INSTALLING PATCHED OBJECTS INTO {}/.lpmaketmp/patched",
                dir.display()
            ),
            "MAKING PATCHES".to_string(),
            format!(
                "patch for {}/lpmake/foo is in {}",
                dir.display(),
                patch.display()
            ),
        ],
    );
    check_header(&patch, "0001", &bid);

    // The tree is as it was (content), the system compiler link untouched.
    assert_eq!(read(&dir.join("foo.c")), foo_c);
    no_backups_left(&dir);
    assert_eq!(std::fs::read_link("/usr/bin/cc").ok(), cc_link_before);
    // Both installs run the original code: the patched build only adds .kpatch sections.
    for exe in ["lpmake/foo", ".lpmaketmp/patched/foo"] {
        assert_eq!(
            run_ok(Command::new(dir.join(exe)).arg("1"), 30),
            "Hello world!\n",
            "{exe}"
        );
    }
    assert!(has_kpatch(&dir.join(".lpmaketmp/patched/foo")));
    assert!(!has_kpatch(&dir.join("lpmake/foo")));
    // The original stage builds what plain gcc builds.
    gcc(&dir, &["-o", "plain", "foo.c"]);
    assert_eq!(read(&dir.join("lpmake/foo")), read(&dir.join("plain")));

    // -u remakes the patches from the install trees without building; -b overrides the id.
    let other = "0123456789abcdef0123456789abcdef01234567";
    let out = run_ok(
        patch_make_in(&dir).args(["-u", "-i", "0002", "-b", other]),
        300,
    );
    assert!(!out.contains("BUILDING"), "{out}");
    assert!(out.contains("MAKING PATCHES"), "{out}");
    check_header(
        &dir.join(format!("patchroot/{other}.kpatch")),
        "0002",
        other,
    );
}

#[test]
fn failing_patch_names_the_step_and_restores_the_sources() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("hello");
    let dir = d.path();
    let before: Vec<(String, Vec<u8>)> = ["foo.c", "bar.c", "Makefile"]
        .iter()
        .map(|f| (f.to_string(), read(&dir.join(f))))
        .collect();
    // The first section applies, the second does not.
    let text = String::from_utf8(read(&dir.join("foo.patch"))).unwrap()
        + "--- Makefile\n+++ Makefile\n@@ -1,3 +1,3 @@\n-not: there\n+all: bar\n \n foo: foo.c\n";
    std::fs::write(dir.join("two.patch"), text).unwrap();

    let out = run(patch_make_in(dir).args(["-i", "1", "two.patch"]), 600);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("applying"), "{err}");
    assert!(err.contains("two.patch failed"), "{err}");
    assert!(err.contains("Makefile"), "{err}");
    assert!(err.contains("Hunk #1 FAILED"), "{err}");
    assert!(stdout.contains("BUILDING ORIGINAL CODE"), "{stdout}");
    assert!(!stdout.contains("BUILDING PATCHED CODE"), "{stdout}");
    for (f, content) in before {
        assert_eq!(read(&dir.join(&f)), content, "{f} was not restored");
    }
    no_backups_left(dir);
}

#[test]
fn two_sources_and_a_shared_library_under_make_j2() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("multi");
    let dir = d.path().canonicalize().unwrap();
    let sources: Vec<(PathBuf, Vec<u8>)> = ["src/main.c", "src/util.c", "lib/hello.c"]
        .iter()
        .map(|f| (dir.join(f), read(&dir.join(f))))
        .collect();

    let out = run_ok(
        patch_make_in(&dir).args(["-j", "2", "--clean", "--id=7", "change.patch"]),
        600,
    );
    let app = dir.join("lpmake/usr/bin/app");
    let lib = dir.join("lpmake/usr/lib/libhello.so");
    let mut made = Vec::new();
    for exe in [&app, &lib] {
        let bid = build_id(exe);
        let patch = dir.join(format!("patchroot/{bid}.kpatch"));
        assert!(
            out.contains(&format!(
                "patch for {} is in {}",
                exe.display(),
                patch.display()
            )),
            "{out}"
        );
        check_header(&patch, "7", &bid);
        made.push(patch);
    }
    // The Makefile says `CC = gcc`: the private PATH links still routed it through libcare-cc.
    assert!(dir.join("src/.kpatch_main.o.original.s").is_file());
    assert!(dir.join("lib/.kpatch_hello.o.original.s").is_file());
    // Only the changed files were rebuilt and combined in the patched stage.
    assert!(dir.join("src/.kpatch_util.o.s").is_file());
    assert!(!dir.join("src/.kpatch_main.o.s").exists());

    for (path, content) in sources {
        assert_eq!(read(&path), content, "{} was not restored", path.display());
    }
    no_backups_left(&dir);
    for exe in [&app, &dir.join(".lpmaketmp/patched/usr/bin/app")] {
        assert_eq!(
            run_ok(Command::new(exe).arg("1"), 30),
            "library says hello 1\n",
            "{}",
            exe.display()
        );
    }
    assert!(has_kpatch(
        &dir.join(".lpmaketmp/patched/usr/lib/libhello.so")
    ));
}

#[test]
fn termination_during_the_patched_build_restores_the_sources() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("hello");
    let dir = d.path();
    let foo_c = read(&dir.join("foo.c"));
    // The patched build announces itself, then waits (bounded) for the test's go-ahead.
    std::fs::write(
        dir.join("Makefile"),
        "all: foo\n\nfoo: foo.c\n\t$(CC) -o foo foo.c\n\
         \t@if [ \"$$KPATCH_STAGE\" = patched ]; then touch started; i=0; \\\n\
         \t  while [ ! -f go ] && [ $$i -lt 600 ]; do sleep 0.05; i=$$((i+1)); done; fi\n\n\
         install: foo\n\tmkdir -p $$DESTDIR\n\tcp foo $$DESTDIR\n\n\
         clean:\n\trm -f foo\n",
    )
    .unwrap();
    let driver = Running::start(patch_make_in(dir).args(["-i", "1", "foo.patch"]));
    wait_for_file(&dir.join("started"), 300);
    assert_ne!(
        read(&dir.join("foo.c")),
        foo_c,
        "the patch is applied by now"
    );
    // Only the driver gets the signal: it must wait for make, then stop and clean up.
    run_ok(
        Command::new("kill").args(["-TERM", &driver.pid().to_string()]),
        30,
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let out = driver.wait(120);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("building patched code failed: interrupted"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("MAKING PATCHES"));
    assert_eq!(read(&dir.join("foo.c")), foo_c);
    no_backups_left(dir);
}
