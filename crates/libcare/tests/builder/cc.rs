//! libcare-cc on its own: the original stage keeps assembly and builds exactly what gcc
//! builds; probes and queries pass through; make-style command lines keep working.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;

const LIB_A: &str = "int a_value(void) { return 40; }\n";
const LIB_B: &str = "int a_value(void);\nint main(void) { return a_value() + 2 == 42 ? 0 : 1; }\n";

#[test]
fn original_stage_object_and_binary_are_those_of_plain_gcc() {
    let d = fixture("hello");
    let dir = d.path();
    std::fs::create_dir(dir.join("obj")).unwrap();
    run_ok(
        cc(dir, Some("original")).args(["-O2", "-g", "-c", "foo.c", "-o", "obj/foo.o"]),
        120,
    );
    run_ok(
        cc(dir, Some("original")).args(["-o", "foo", "obj/foo.o"]),
        120,
    );

    // gcc with the option libcare-cc adds for live patching (and without it, when told).
    gcc(
        dir,
        &[
            "-flive-patching=inline-clone",
            "-O2",
            "-g",
            "-c",
            "foo.c",
            "-o",
            "plain.o",
        ],
    );
    gcc(dir, &["-o", "plain", "plain.o"]);
    assert_eq!(read(&dir.join("obj/foo.o")), read(&dir.join("plain.o")));
    assert_eq!(read(&dir.join("foo")), read(&dir.join("plain")));
    run_ok(
        cc(dir, Some("original"))
            .env("KPCC_LIVE_PATCHING", "0")
            .args(["-O2", "-g", "-c", "foo.c", "-o", "plain.o"]),
        120,
    );
    gcc(dir, &["-O2", "-g", "-c", "foo.c", "-o", "obj/foo.o"]);
    assert_eq!(read(&dir.join("obj/foo.o")), read(&dir.join("plain.o")));
    std::fs::remove_file(dir.join(".kpatch_plain.o.original.s")).unwrap();
    run_ok(
        cc(dir, Some("original")).args(["-O2", "-g", "-c", "foo.c", "-o", "obj/foo.o"]),
        120,
    );

    let kept = dir.join("obj/.kpatch_foo.o.original.s");
    let asm = String::from_utf8(read(&kept)).unwrap();
    assert!(asm.contains("print_hello:"), "kept assembly:\n{asm}");
    let out = run_ok(Command::new(dir.join("foo")).arg("2"), 30);
    assert_eq!(out, "Hello world!\nHello world!\n");

    // Nothing but the object, the kept assembly and what we made ourselves.
    assert_eq!(
        files(dir),
        [
            "Makefile",
            "bar.c",
            "foo",
            "foo.c",
            "foo.patch",
            "obj/.kpatch_foo.o.original.s",
            "obj/foo.o",
            "plain",
            "plain.o"
        ]
    );
}

#[test]
fn guide_makefile_compile_and_link_in_one_command() {
    let d = fixture("hello");
    let dir = d.path();
    let out = run_ok(
        Command::new("make")
            .arg(format!("CC={}", libcare_cc().display()))
            .current_dir(dir)
            .env("KPATCH_STAGE", "original")
            .env_remove("MAKEFLAGS")
            .env_remove("KPCC_APPEND_ARGS"),
        120,
    );
    assert!(out.contains("libcare-cc -o foo foo.c"), "{out}");
    gcc(dir, &["-o", "plain", "foo.c"]);
    assert_eq!(read(&dir.join("foo")), read(&dir.join("plain")));
    assert!(dir.join(".kpatch_foo.c.original.s").is_file());
}

#[test]
fn configure_probes_queries_and_unset_stage_pass_through() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("conftest.c"), "int main(void) { return 0; }\n").unwrap();
    std::fs::write(dir.join("x.c"), "int x;\n").unwrap();
    run_ok(
        cc(dir, Some("original")).args(["-c", "conftest.c", "-o", "conftest.o"]),
        60,
    );
    run_ok(cc(dir, Some("configure")).args(["-c", "x.c"]), 60);
    run_ok(cc(dir, None).args(["-c", "x.c", "-o", "y.o"]), 60);
    assert_eq!(
        files(dir),
        ["conftest.c", "conftest.o", "x.c", "x.o", "y.o"]
    );

    let version = run_ok(cc(dir, Some("original")).arg("--version"), 60);
    assert!(
        version.contains("gcc") || version.contains("GCC"),
        "{version}"
    );
    let pre = run_ok(
        cc(dir, Some("patched")).args(["-E", "-DVALUE=1234", "-x", "c", "-"]),
        60,
    );
    // Standard input is null here, so only the predefined line markers come out.
    assert!(pre.contains("<stdin>") || pre.is_empty(), "{pre}");
    let pre = run_ok(cc(dir, Some("patched")).args(["-E", "x.c"]), 60);
    assert!(pre.contains("int x;"), "{pre}");
    assert_eq!(
        files(dir),
        ["conftest.c", "conftest.o", "x.c", "x.o", "y.o"]
    );
}

#[test]
fn several_sources_in_one_compile_command() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("a.c"), LIB_A).unwrap();
    std::fs::write(dir.join("b.c"), LIB_B).unwrap();
    run_ok(
        cc(dir, Some("original")).args(["-O1", "-c", "a.c", "b.c"]),
        120,
    );
    run_ok(
        cc(dir, Some("original")).args(["-o", "prog", "a.o", "b.o"]),
        120,
    );
    assert_eq!(
        files(dir),
        [
            ".kpatch_a.o.original.s",
            ".kpatch_b.o.original.s",
            "a.c",
            "a.o",
            "b.c",
            "b.o",
            "prog"
        ]
    );
    run_ok(&mut Command::new(dir.join("prog")), 30);

    // Compile and link with two sources: the kept files are named after the sources.
    let e = tempfile::tempdir().unwrap();
    std::fs::write(e.path().join("a.c"), LIB_A).unwrap();
    std::fs::write(e.path().join("b.c"), LIB_B).unwrap();
    run_ok(
        cc(e.path(), Some("original")).args(["a.c", "-o", "prog", "b.c"]),
        120,
    );
    gcc(e.path(), &["a.c", "-o", "plain", "b.c"]);
    assert_eq!(read(&e.path().join("prog")), read(&e.path().join("plain")));
    assert!(e.path().join(".kpatch_a.c.original.s").is_file());
    assert!(e.path().join(".kpatch_b.c.original.s").is_file());
}

#[test]
fn dependency_files_are_those_of_plain_gcc() {
    let ours = tempfile::tempdir().unwrap();
    let plain = tempfile::tempdir().unwrap();
    for d in [ours.path(), plain.path()] {
        std::fs::create_dir_all(d.join("inc")).unwrap();
        std::fs::create_dir_all(d.join("obj")).unwrap();
        std::fs::write(d.join("inc/v.h"), "#define V 3\n").unwrap();
        std::fs::write(
            d.join("a.c"),
            "#include \"v.h\"\nint a(void) { return V; }\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.c"),
            "#include \"v.h\"\nint b(void) { return V; }\n",
        )
        .unwrap();
    }
    let one = ["-Iinc", "-MD", "-c", "a.c", "-o", "obj/a.o"];
    let two = ["-Iinc", "-MMD", "-MP", "-c", "a.c", "b.c"];
    run_ok(cc(ours.path(), Some("original")).args(one), 60);
    run_ok(cc(ours.path(), Some("original")).args(two), 60);
    gcc(plain.path(), &one);
    gcc(plain.path(), &two);
    for f in ["obj/a.d", "a.d", "b.d"] {
        assert_eq!(
            String::from_utf8(read(&ours.path().join(f))).unwrap(),
            String::from_utf8(read(&plain.path().join(f))).unwrap(),
            "{f}"
        );
    }
    let ours_files: Vec<String> = files(ours.path())
        .into_iter()
        .filter(|f| !f.contains(".kpatch_"))
        .collect();
    assert_eq!(ours_files, files(plain.path()));
    // Only the kept assembly is extra: no dependency file named after it.
    assert_eq!(
        files(ours.path())
            .into_iter()
            .filter(|f| f.contains(".kpatch_"))
            .collect::<Vec<_>>(),
        [
            ".kpatch_a.o.original.s",
            ".kpatch_b.o.original.s",
            "obj/.kpatch_a.o.original.s"
        ]
    );
}

#[test]
fn patched_stage_needs_the_original_assembly() {
    let d = fixture("hello");
    let out = run(
        cc(d.path(), Some("patched"))
            .env("KPATCH_PATH", tools_dir())
            .args(["-c", "foo.c", "-o", "foo.o"]),
        60,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no original-stage assembly ./.kpatch_foo.o.original.s for foo.o"),
        "{err}"
    );
    assert!(!d.path().join("foo.o").exists());
}

#[test]
fn unknown_stage_is_refused() {
    let d = fixture("hello");
    let out = run(cc(d.path(), Some("orignal")).args(["-c", "foo.c"]), 60);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KPATCH_STAGE=\"orignal\""), "{err}");
    assert!(!d.path().join("foo.o").exists());
}

#[test]
fn real_compiler_is_never_ourselves() {
    let d = fixture("hello");
    let links = tempfile::tempdir().unwrap();
    symlink(libcare_cc(), links.path().join("gcc")).unwrap();
    let path = format!(
        "{}:{}",
        links.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Invoked as `gcc` found first on PATH: the real gcc is the next one.
    run_ok(
        cc(d.path(), Some("original"))
            .env("PATH", &path)
            .arg0("gcc")
            .args(["-c", "foo.c"]),
        60,
    );
    assert!(d.path().join("foo.o").is_file());
    // KPCCREAL naming ourselves is refused rather than looping.
    let out = run(
        cc(d.path(), Some("original"))
            .env("KPCCREAL", links.path().join("gcc"))
            .args(["-c", "foo.c"]),
        60,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is libcare-cc itself"));
}

#[test]
fn compile_errors_keep_gcc_status_and_leave_no_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("bad.c"), "int f(void) { return }\n").unwrap();
    let out = run(cc(d.path(), Some("original")).args(["-c", "bad.c"]), 60);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
    assert_eq!(files(d.path()), ["bad.c"]);
}

#[test]
fn remove_and_append_args() {
    let d = fixture("hello");
    let out = run(
        cc(d.path(), Some("original"))
            .env("KPCC_REMOVE_ARGS", "-g;-DUNUSED")
            .env("KPCC_APPEND_ARGS", "-DAPPENDED=1")
            .env("KPCC_DEBUG", "1")
            .args(["-g", "-DUNUSED", "-c", "foo.c"]),
        60,
    );
    assert!(out.status.success());
    // KPCC_DEBUG=1 shows every command run: the appended option is there, the removed ones not.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("\"-DAPPENDED=1\""), "{log}");
    assert!(
        !log.contains("\"-DUNUSED\"") && !log.contains("\"-g\""),
        "{log}"
    );
    gcc(d.path(), &["-c", "foo.c", "-o", "plain.o"]);
    assert_eq!(
        read(&d.path().join("foo.o")),
        read(&d.path().join("plain.o"))
    );
    let asm = String::from_utf8(read(&d.path().join(".kpatch_foo.o.original.s"))).unwrap();
    assert!(!asm.contains(".debug_info"), "-g was not removed");
}

#[test]
fn asm_dir_and_prefix() {
    let d = fixture("hello");
    let asm_root = tempfile::tempdir().unwrap();
    run_ok(
        cc(d.path(), Some("original"))
            .env("KPATCH_ASM_DIR", asm_root.path())
            .env("KPATCH_PREFIX", "kp_")
            .args(["-c", "foo.c"]),
        60,
    );
    let src = d.path().canonicalize().unwrap();
    let mut want = asm_root.path().as_os_str().to_owned();
    want.push(src.as_os_str());
    let want = Path::new(&want).join("kp_foo.o.original.s");
    assert!(want.is_file(), "{} missing", want.display());
    assert!(!files(d.path()).iter().any(|f| f.contains("kp_")));
}

/// The patched stage end to end through kpatch_gensrc: the object gains `.kpatch` sections
/// and its other sections stay those of the original build.
#[test]
fn patched_stage_combines_with_gensrc() {
    assert!(
        kpatch_tools_present(),
        "kpatch tools are not built next to libcare-cc"
    );
    let d = fixture("hello");
    let dir = d.path();
    // Without -fno-inline, -O2 inlines print_hello into main, which then changes too, and
    // kpatch_gensrc refuses a changed main (it never returns while the process runs).
    run_ok(
        cc(dir, Some("original")).args(["-O2", "-fno-inline", "-c", "foo.c"]),
        120,
    );
    std::fs::copy(dir.join("bar.c"), dir.join("foo.c")).unwrap();
    run_ok(
        cc(dir, Some("patched"))
            .env("KPATCH_PATH", tools_dir())
            .args(["-O2", "-fno-inline", "-c", "foo.c"]),
        120,
    );
    assert!(dir.join(".kpatch_foo.o.patched.s").is_file());
    let combined = String::from_utf8(read(&dir.join(".kpatch_foo.o.s"))).unwrap();
    assert!(combined.contains(".kpatch"), "{combined}");
    let obj = read(&dir.join("foo.o"));
    assert!(
        obj.windows(b".kpatch.text".len())
            .any(|w| w == b".kpatch.text"),
        "no .kpatch.text section in the patched object"
    );
    // A patched link adds -Wl,-q: relocation sections survive in the executable.
    run_ok(
        cc(dir, Some("patched"))
            .env("KPATCH_PATH", tools_dir())
            .args(["-o", "foo", "foo.o"]),
        120,
    );
    let exe = read(&dir.join("foo"));
    assert!(exe
        .windows(b".rela.kpatch".len())
        .any(|w| w == b".rela.kpatch"));
}

/// With `KPCC_KEEP_LIST` (libcare-patch-make sets it), the patched stage first moves aside
/// every file it is about to write and lists it; `stash::restore` puts the original stage's
/// files back and removes what it made new.
#[test]
fn patched_stage_keeps_what_it_overwrites_when_asked() {
    assert!(
        kpatch_tools_present(),
        "kpatch tools are not built next to libcare-cc"
    );
    let d = fixture("hello");
    let dir = d.path().canonicalize().unwrap();
    let flags = ["-O2", "-fno-inline", "-MD", "-c", "foo.c"];
    run_ok(cc(&dir, Some("original")).args(flags), 120);
    let (obj, dep) = (read(&dir.join("foo.o")), read(&dir.join("foo.d")));
    std::fs::copy(dir.join("bar.c"), dir.join("foo.c")).unwrap();
    let list = dir.join("kept");
    let patched = |args: &[&str]| {
        run_ok(
            cc(&dir, Some("patched"))
                .env("KPATCH_PATH", tools_dir())
                .env("KPCC_KEEP_LIST", &list)
                .args(args),
            120,
        )
    };
    patched(&flags);
    assert_eq!(read(&dir.join(".kpatch_foo.o.original-output")), obj);
    assert_eq!(read(&dir.join(".kpatch_foo.d.original-output")), dep);
    assert_ne!(read(&dir.join("foo.o")), obj);
    patched(&["-o", "foo", "foo.o"]);
    assert!(dir.join(".kpatch_foo.no-original-output").is_file());
    let mut listed: Vec<String> = String::from_utf8(read(&list))
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    listed.sort();
    let name = |f: &str| dir.join(f).display().to_string();
    assert_eq!(listed, [name("foo"), name("foo.d"), name("foo.o")]);

    let mut back = kpatch_builder::stash::restore(&list).unwrap();
    back.sort();
    assert_eq!(
        back,
        [dir.join("foo"), dir.join("foo.d"), dir.join("foo.o")]
    );
    assert_eq!(read(&dir.join("foo.o")), obj);
    assert_eq!(read(&dir.join("foo.d")), dep);
    assert!(!dir.join("foo").exists());
    assert!(!list.exists());
    assert!(!files(&dir).iter().any(|f| f.contains("original-output")));
}
