//! libcare-patch-make: the user guide's "通过脚本制作" walkthrough, a two-source project with a
//! shared library under `make -j 2`, failures that name their step and leave the sources as
//! they were; successive runs that leave the tree as the original build left it (only the
//! changed files rebuilt in the patched stage, nothing in the original stage, the installed
//! original byte-identical to a plain build), also after a failure, a termination, a kill,
//! a hand edit, and with an archive made by `ar`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;
use kpatch_builder::elfinfo;
use libcare_test_support::build_id;

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
            "  replaces print_hello: foo.c: changed".to_string(),
        ],
    );
    assert!(!out.contains("Fixing up relocation"), "{out}");
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

    // --sign signs every patch it makes with an OpenSSH Ed25519 key.
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", "release"])
            .current_dir(&dir),
        30,
    );
    let out = run_ok(
        patch_make_in(&dir).args(["-u", "-i", "0003", "--sign", "release"]),
        300,
    );
    assert!(
        out.contains(&format!("{} is signed with key SHA256:", patch.display())),
        "{out}"
    );
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(dir.join("release.pub"), keys.join("release.pub")).unwrap();
    let ring = kpatch_trust::Keyring::load(&keys, true).unwrap();
    let signed = std::fs::read(&patch).unwrap();
    assert!(ring.verify(&signed).unwrap().is_some(), "signed by release");
    check_header(&patch, "0003", &bid);
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
    // foo was linked by the patched build before the signal: the original is back.
    no_kept_outputs_left(dir);
    assert_eq!(
        run_ok(Command::new(dir.join("foo")).arg("1"), 30),
        "Hello world!\n"
    );
}

/// The lines of `text` strictly between the line `from` and the next line `to`.
fn between<'a>(text: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == from)
        .unwrap_or_else(|| panic!("no line {from:?} in:\n{text}"));
    let len = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with(to))
        .unwrap_or_else(|| panic!("no line {to:?} after {from:?} in:\n{text}"));
    lines[start + 1..start + 1 + len].to_vec()
}

/// The compiler commands make printed (the Makefiles here name `gcc` or `$(CC)`).
fn compiles<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("gcc ") || l.contains("libcare-cc "))
        .collect()
}

/// One version of a file: what `make` looks at (modification time) and what it holds, plus
/// the inode, which shows that the very file came back rather than a copy.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    ino: u64,
    mtime: SystemTime,
    content: Vec<u8>,
}

fn version(path: &Path) -> Version {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Version {
        ino: meta.ino(),
        mtime: meta.modified().expect("mtime"),
        content: read(path),
    }
}

fn versions(dir: &Path, files: &[&str]) -> Vec<(String, Version)> {
    files
        .iter()
        .map(|f| (f.to_string(), version(&dir.join(f))))
        .collect()
}

/// `make clean` and a plain `make` (the real compiler, none of our variables) in `dir`.
fn plain_rebuild(dir: &Path) {
    // With the option libcare-cc adds, where libcare-cc puts it.
    let cc = "CC=gcc -flive-patching=inline-clone";
    for args in [&["clean", cc][..], &[cc][..]] {
        let mut c = Command::new("make");
        c.args(args).current_dir(dir);
        for v in [
            "KPATCH_STAGE",
            "KPCC_APPEND_ARGS",
            "KPCC_KEEP_LIST",
            "CC",
            "MAKEFLAGS",
            "MAKELEVEL",
        ] {
            c.env_remove(v);
        }
        run_ok(&mut c, 300);
    }
}

/// No kept original output or marker is left anywhere under `dir`.
fn no_kept_outputs_left(dir: &Path) {
    let left: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.contains("original-output"))
        .collect();
    assert!(left.is_empty(), "kept outputs left in the tree: {left:?}");
}

/// Starts `exe` (which prints `before` over and over), applies the patches in `patchroot`,
/// expects `after`, and takes them off again.
fn patch_live(dir: &Path, exe: &Path, patchroot: &Path, before: &str, after: &str) {
    let mut target = libcare_test_support::Proc::spawn(exe, &[]);
    let pid = target.pid().to_string();
    target.wait_line(before);
    let out = libcare_test_support::run_ok(libcare_test_support::tool("libcare-ctl", dir).args([
        "patch",
        "-p",
        &pid,
        &patchroot.to_string_lossy(),
    ]));
    assert!(
        libcare_test_support::stdout(&out).contains("successfully applied"),
        "{}",
        libcare_test_support::stdout(&out)
    );
    target.drain();
    target.wait_line(after);
    libcare_test_support::run_ok(
        libcare_test_support::tool("libcare-ctl", dir).args(["unpatch", "-p", &pid]),
    );
    target.drain();
    target.wait_line(before);
    assert!(target.alive());
}

#[test]
fn second_run_rebuilds_only_the_changed_units_and_keeps_the_original_build() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("multi");
    let dir = d.path().canonicalize().unwrap();
    let outputs = [
        "src/main.o",
        "src/main.d",
        "src/util.o",
        "src/util.d",
        "lib/hello.o",
        "lib/hello.d",
        "libhello.so",
        "app",
    ];
    let installed = ["lpmake/usr/bin/app", "lpmake/usr/lib/libhello.so"];

    run_ok(
        patch_make_in(&dir).args(["-j", "2", "--clean", "--id=7", "change.patch"]),
        600,
    );
    let first = versions(&dir, &outputs);
    let first_installed = versions(&dir, &installed);
    let bids: Vec<String> = installed.iter().map(|f| build_id(&dir.join(f))).collect();
    no_kept_outputs_left(&dir);
    assert!(!dir.join(".lpmaketmp/kept-outputs").exists());

    let (out, err) = run_both(patch_make_in(&dir).args(["-j", "2", "--id=8", "change.patch"]));
    assert!(err.is_empty(), "{err}");
    // The original stage has nothing to do: no compile, no link.
    let original = between(
        &out,
        "BUILDING ORIGINAL CODE",
        "INSTALLING ORIGINAL OBJECTS",
    );
    assert!(
        original.iter().all(|l| l.starts_with("make")),
        "the original stage did something:\n{out}"
    );
    // The patched stage compiles the two changed files and links what uses them; main.c is
    // not compiled again.
    let patched = between(&out, "BUILDING PATCHED CODE", "INSTALLING PATCHED OBJECTS");
    let mut built = compiles(&patched);
    built.sort();
    assert_eq!(
        built,
        [
            "gcc -O2 -g -Wall -Iinclude -MMD -MP -c src/util.c -o src/util.o",
            "gcc -O2 -g -Wall -Iinclude -fPIC -MD -c -o lib/hello.o lib/hello.c",
            "gcc -o app src/main.o src/util.o -L. -lhello -Wl,-rpath,'$ORIGIN/../lib:$ORIGIN'",
            "gcc -shared -o libhello.so lib/hello.o",
        ],
        "{out}"
    );

    // The tree is as the original stage left it: the very same files, times and contents.
    assert_eq!(versions(&dir, &outputs), first);
    no_kept_outputs_left(&dir);
    no_backups_left(&dir);
    // The original install is the original build, again; the patches are remade for it.
    let second_installed = versions(&dir, &installed);
    for ((name, a), (_, b)) in first_installed.iter().zip(&second_installed) {
        assert!(a.content == b.content, "{name} changed between runs");
        assert!(!has_kpatch(&dir.join(name)), "{name} is a patched build");
    }
    for (f, bid) in installed.iter().zip(&bids) {
        assert_eq!(&build_id(&dir.join(f)), bid);
        check_header(&dir.join(format!("patchroot/{bid}.kpatch")), "8", bid);
    }
    assert!(has_kpatch(
        &dir.join(".lpmaketmp/patched/usr/lib/libhello.so")
    ));

    // The second run's patches apply to the installed original.
    patch_live(
        &dir,
        &dir.join("lpmake/usr/bin/app"),
        &dir.join("patchroot"),
        "library says hello 1",
        "patched library says hello 2",
    );

    // A hand edit between runs: make's own logic rebuilds main.c in the original stage, and
    // the patched stage still rebuilds only the changed files.
    let main_c = dir.join("src/main.c");
    let mut text = read(&main_c);
    text.extend_from_slice(b"/* edited by hand */\n");
    std::fs::write(&main_c, text).unwrap();
    let out = run_ok(
        patch_make_in(&dir).args(["-j", "2", "--id=9", "change.patch"]),
        600,
    );
    let original = between(
        &out,
        "BUILDING ORIGINAL CODE",
        "INSTALLING ORIGINAL OBJECTS",
    );
    let mut built = compiles(&original);
    built.sort();
    assert_eq!(
        built,
        [
            "gcc -O2 -g -Wall -Iinclude -MMD -MP -c src/main.c -o src/main.o",
            "gcc -o app src/main.o src/util.o -L. -lhello -Wl,-rpath,'$ORIGIN/../lib:$ORIGIN'",
        ],
        "{out}"
    );
    let patched = between(&out, "BUILDING PATCHED CODE", "INSTALLING PATCHED OBJECTS");
    assert!(
        !compiles(&patched).iter().any(|l| l.contains("main.c")),
        "{out}"
    );

    // What was installed as the original is what a plain build of the original makes.
    let lpmake: Vec<Vec<u8>> = installed.iter().map(|f| read(&dir.join(f))).collect();
    plain_rebuild(&dir);
    same_bytes(&dir.join("app"), &lpmake[0], "lpmake/usr/bin/app");
    same_bytes(
        &dir.join("libhello.so"),
        &lpmake[1],
        "lpmake/usr/lib/libhello.so",
    );
}

/// `path` holds `want` (`what` names the file that holds `want`).
fn same_bytes(path: &Path, want: &[u8], what: &str) {
    assert!(
        read(path) == want,
        "{what} is not byte-identical to {} (a plain build of the original)",
        path.display()
    );
}

/// Runs `cmd` to success; returns its standard output and error.
fn run_both(cmd: &mut Command) -> (String, String) {
    let out = run(cmd, 600);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{o}\n{e}");
    (o, e)
}

/// A project whose library is a static archive made by `ar`: the patched stage rewrites it
/// without libcare-cc, so the driver marks it out of date; the next original build remakes it
/// from the original object, and the installed original is not the patched program.
#[test]
fn an_archive_rewritten_by_ar_is_remade_from_the_original_objects() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().canonicalize().unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "CFLAGS = -O2\n\nall: app\n\n\
         app: main.o libutil.a\n\t$(CC) -o $@ main.o libutil.a\n\n\
         libutil.a: util.o\n\tar rcs $@ $^\n\n\
         %.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n\
         install: app\n\tmkdir -p $(DESTDIR)\n\tcp app $(DESTDIR)/\n\n\
         clean:\n\trm -f app *.o libutil.a\n\n.PHONY: all install clean\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.c"),
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         int util_value(void);\n\
         int main(int argc, char **argv)\n{\n\
         \tint n = argc > 1 ? atoi(argv[1]) : -1;\n\
         \tfor (int i = 0; n < 0 || i < n; i++) {\n\
         \t\tprintf(\"util %d\\n\", util_value());\n\t\tfflush(stdout);\n\
         \t\tif (n < 0)\n\t\t\tusleep(100000);\n\t}\n\treturn 0;\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("util.c"),
        "int util_value(void)\n{\n\treturn 1;\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("util.patch"),
        "--- util.c\n+++ util.c\n@@ -1,4 +1,4 @@\n int util_value(void)\n {\n-\treturn 1;\n+\treturn 2;\n }\n",
    )
    .unwrap();
    for id in ["1", "2"] {
        let (out, err) = run_both(patch_make_in(&dir).args(["-i", id, "util.patch"]));
        assert!(
            err.contains("warning: the patched build rewrote without libcare-cc")
                && err.contains(&dir.join("libutil.a").display().to_string()),
            "{err}"
        );
        assert_eq!(
            std::fs::metadata(dir.join("libutil.a"))
                .unwrap()
                .modified()
                .unwrap(),
            SystemTime::UNIX_EPOCH
        );
        if id == "2" {
            // The archive is remade from the original object and the program relinked; the
            // object itself is up to date.
            let original = between(&out, "BUILDING ORIGINAL CODE", "INSTALLING ORIGINAL");
            assert!(original.contains(&"ar rcs libutil.a util.o"), "{out}");
            assert!(
                !original.iter().any(|l| l.contains("-c -o util.o")),
                "{out}"
            );
        }
        assert!(
            !has_kpatch(&dir.join("lpmake/app")),
            "run {id}: the installed original is a patched build"
        );
        assert_eq!(
            run_ok(Command::new(dir.join("lpmake/app")).arg("1"), 30),
            "util 1\n"
        );
        assert_eq!(
            run_ok(Command::new(dir.join("app")).arg("1"), 30),
            "util 1\n"
        );
    }
    let lpmake = read(&dir.join("lpmake/app"));
    patch_live(
        &dir,
        &dir.join("lpmake/app"),
        &dir.join("patchroot"),
        "util 1",
        "util 2",
    );
    plain_rebuild(&dir);
    same_bytes(&dir.join("app"), &lpmake, "lpmake/app");
}

/// A patched build that fails leaves the original build as it was.
#[test]
fn a_failed_patched_build_puts_the_original_outputs_back() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("hello");
    let dir = d.path();
    run_ok(patch_make_in(dir).args(["-i", "1", "foo.patch"]), 600);
    let before = versions(dir, &["foo", "foo.c"]);
    std::fs::write(
        dir.join("broken.patch"),
        "--- foo.c\n+++ foo.c\n@@ -4,7 +4,7 @@\n \n void print_hello(void)\n {\n-    printf(\"Hello world!\\n\");\n+    printf(\"Hello world!\\n\") syntax error;\n     fflush(stdout);\n }\n \n",
    )
    .unwrap();
    let out = run(patch_make_in(dir).args(["-i", "2", "broken.patch"]), 600);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("building patched code failed"), "{err}");
    assert_eq!(versions(dir, &["foo", "foo.c"]), before);
    no_kept_outputs_left(dir);
    no_backups_left(dir);
}

/// The pids of the live (not zombie) processes in process group `pgid`, from /proc.
fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
            v.push(pid);
        }
    }
    v
}

/// A run killed outright (no chance to clean up) during the patched build: the next run
/// restores the sources and the kept outputs it left, rebuilds what the patched build made,
/// and installs the true original.
#[test]
fn a_killed_run_is_cleaned_up_by_the_next_one() {
    killed_run(false);
}

/// The same, with the list of kept outputs removed by hand in between: the kept output is a
/// stray, removed (it would stop the next patched stage from keeping that output), and the
/// patched output left in its place is rebuilt since the restored source is newer.
#[test]
fn a_killed_run_is_cleaned_up_even_without_its_list_of_kept_outputs() {
    killed_run(true);
}

fn killed_run(lose_list: bool) {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("hello");
    let dir = d.path().canonicalize().unwrap();
    let foo_c = read(&dir.join("foo.c"));
    // The patched build links foo, announces itself, then waits (bounded) for the test.
    std::fs::write(
        dir.join("Makefile"),
        "all: foo\n\nfoo: foo.c\n\t$(CC) -o foo foo.c\n\
         \t@if [ \"$$KPATCH_STAGE\" = patched ] && [ ! -f go ]; then touch started; i=0; \\\n\
         \t  while [ ! -f go ] && [ $$i -lt 600 ]; do sleep 0.05; i=$$((i+1)); done; fi\n\n\
         install: foo\n\tmkdir -p $$DESTDIR\n\tcp foo $$DESTDIR\n\n\
         clean:\n\trm -f foo\n",
    )
    .unwrap();
    let mut cmd = patch_make_in(&dir);
    cmd.args(["--clean", "-i", "1", "foo.patch"])
        .process_group(0);
    let driver = Running::start(&mut cmd);
    let pgid = driver.pid();
    wait_for_file(&dir.join("started"), 300);
    assert!(dir.join(".kpatch_foo.original-output").exists());
    run_ok(
        Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]),
        30,
    );
    let out = driver.wait(60);
    assert!(!out.status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !live_group_members(pgid).is_empty() {
        assert!(Instant::now() < deadline, "the killed build did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(
        read(&dir.join("foo.c")),
        foo_c,
        "the run was killed patched"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let list = dir.join(".lpmaketmp/kept-outputs");
    if lose_list {
        std::fs::remove_file(&list).unwrap();
    }

    let out = run(patch_make_in(&dir).args(["-i", "2", "foo.patch"]), 600);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{err}");
    let restored = |f: &str| {
        err.contains(&format!(
            "restored {} from a backup left by an earlier run",
            dir.join(f).display()
        ))
    };
    assert!(restored("foo.c"), "{err}");
    if lose_list {
        assert!(!restored("foo"), "{err}");
        assert!(
            err.contains(&format!(
                "warning: removed {}, an output kept by an interrupted earlier run whose list {} is gone",
                dir.join(".kpatch_foo.original-output").display(),
                list.display()
            )),
            "{err}"
        );
    } else {
        assert!(restored("foo"), "{err}");
    }
    // The restored source is newer than anything the killed build made: rebuilt.
    let original = between(&stdout, "BUILDING ORIGINAL CODE", "INSTALLING ORIGINAL");
    assert_eq!(compiles(&original).len(), 1, "{stdout}");
    assert_eq!(read(&dir.join("foo.c")), foo_c);
    assert_eq!(
        run_ok(Command::new(dir.join("lpmake/foo")).arg("1"), 30),
        "Hello world!\n"
    );
    no_kept_outputs_left(&dir);
    no_backups_left(&dir);
}

/// The kpatch steps run inside libcare-patch-make make the very file the `kpatch_strip` and
/// `kpatch_make` binaries make; instead of kpatch_strip's notes, what each patch replaces is
/// listed, with why.
#[test]
fn patches_are_those_the_tools_make() {
    assert!(kpatch_tools_present(), "kpatch tools are not built");
    let d = fixture("multi");
    let dir = d.path().canonicalize().unwrap();
    let epoch = "1700000000";
    let out = run_ok(
        patch_make_in(&dir).env("SOURCE_DATE_EPOCH", epoch).args([
            "-j",
            "2",
            "--clean",
            "-i",
            "0001",
            "change.patch",
        ]),
        600,
    );
    let by_hand = tempfile::tempdir().unwrap();
    for exe in ["usr/bin/app", "usr/lib/libhello.so"] {
        let original = dir.join("lpmake").join(exe);
        let patched = dir.join(".lpmaketmp/patched").join(exe);
        let bid = build_id(&original);
        let stripped = by_hand.path().join("stripped");
        let kpatch = by_hand.path().join("kpatch");
        let tool = |name: &str| {
            let mut c = Command::new(tools_dir().join(name));
            c.env("SOURCE_DATE_EPOCH", epoch);
            c
        };
        run_ok(
            tool("kpatch_strip")
                .arg("--strip")
                .arg(&patched)
                .arg(&stripped),
            60,
        );
        run_ok(
            tool("kpatch_strip")
                .arg("--rel-fixup")
                .arg(&original)
                .arg(&stripped),
            60,
        );
        run_ok(
            Command::new("strip").arg("--strip-unneeded").arg(&stripped),
            60,
        );
        run_ok(
            tool("kpatch_strip")
                .arg("--undo-link")
                .arg(&original)
                .arg(&stripped),
            60,
        );
        run_ok(
            tool("kpatch_make")
                .args(["-b", &bid, "-i", "0001", "-o"])
                .arg(&kpatch)
                .arg(&stripped),
            60,
        );
        let made = dir.join(format!("patchroot/{bid}.kpatch"));
        same_bytes(&made, &read(&kpatch), exe);
        // What each patch replaces, and why, follows the line naming it.
        let listed = format!("patch for {} is in {}", original.display(), made.display());
        let why = match exe {
            "usr/bin/app" => "  replaces util_value: util.c: only numbers differ",
            _ => "  replaces hello_message: hello.c: changed",
        };
        assert_in_order(&out, &[listed, why.to_string()]);
        same_bytes(&with_suffix(&patched, ".stripped"), &read(&stripped), exe);
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
