//! Every change the patch builder supports, end to end, at -O0 and at -O2 with debug
//! information: for each case under tests/fixtures/cases/ the original program is built and
//! started, a patch is made from the case's diff (by hand with kpatch_gensrc, kpatch_strip and
//! kpatch_make, or with libcare-patch-make for project-shaped cases), applied with
//! `libcare-ctl patch`, and removed again, watching the program's output change each time.
//! Cases that must be refused check the failing step, its exit status and the name in its
//! message instead.
//!
//! Every C case also runs with clang; the C++ cases (`cxx_*`) run with g++ and clang++.
//!
//! A case directory holds the sources, `change.diff` (applied with `patch -p1`) and a
//! `manifest` of `key: value` lines; a key may carry tags, `@O0` or `@O2` and `@gcc` or
//! `@clang`, to apply to that level or compiler only (`patched@clang@O2:`):
//!
//! - `mode: manual | make`;
//! - `before:` / `after:` the line the program prints every ~50 ms without / with the patch;
//! - `program:` (make mode) the installed program, relative to `lpmake/`;
//! - `cflags:`, `libs:` (manual mode) extra compiler flags and libraries;
//! - `patched:` / `not_patched:` functions that must / must not be in the patch(es);
//! - `min_functions:` how many functions the patch(es) must hold at least;
//! - `objects:` how many objects the patch changes (default 1);
//! - `refuse:` the step that must fail (`gensrc`, `strip`, `patch-make`), with one or more
//!   `message:` texts its output must contain.
//!
//! Manual mode builds `main.c` (or `main.cpp`) into `prog` and, when the case has one, `lib.c`
//! (`lib.cpp`) into `libcase.so`, which `prog` is linked against; each file the diff changes
//! gets its own patch. Make mode hands libcare-patch-make the compilers as `KPCCREAL` and
//! `KPCXXREAL`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libcare_test_support::*;
use object::{Object, ObjectSection};

/// Optimisation levels every case runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    O0,
    O2,
}

impl Opt {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Opt::O0 => &["-O0"],
            Opt::O2 => &["-O2", "-g"],
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Opt::O0 => "O0",
            Opt::O2 => "O2",
        }
    }
}

/// The compiler family a case is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compiler {
    Gcc,
    Clang,
}

impl Compiler {
    fn cc(self) -> &'static str {
        match self {
            Compiler::Gcc => "gcc",
            Compiler::Clang => "clang",
        }
    }

    fn cxx(self) -> &'static str {
        match self {
            Compiler::Gcc => "g++",
            Compiler::Clang => "clang++",
        }
    }

    /// The compiler for `source`, by its extension.
    fn for_source(self, source: &str) -> &'static str {
        if source.ends_with(".cpp") {
            self.cxx()
        } else {
            self.cc()
        }
    }

    fn tag(self) -> &'static str {
        self.cc()
    }
}

/// One build configuration of a case.
#[derive(Debug, Clone, Copy)]
struct Build {
    cc: Compiler,
    opt: Opt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Manual,
    Make,
}

/// A case's manifest, for one optimisation level.
#[derive(Debug)]
struct Manifest {
    mode: Mode,
    before: String,
    after: String,
    program: String,
    cflags: Vec<String>,
    libs: Vec<String>,
    patched: Vec<String>,
    not_patched: Vec<String>,
    min_functions: usize,
    objects: usize,
    refuse: Option<String>,
    messages: Vec<String>,
}

fn cases_dir() -> PathBuf {
    fixtures().join("cases")
}

impl Manifest {
    /// The defaults of every key.
    fn empty() -> Manifest {
        Manifest {
            mode: Mode::Manual,
            before: String::new(),
            after: String::new(),
            program: "prog".into(),
            cflags: Vec::new(),
            libs: Vec::new(),
            patched: Vec::new(),
            not_patched: Vec::new(),
            min_functions: 0,
            objects: 1,
            refuse: None,
            messages: Vec::new(),
        }
    }

    fn load(case: &str, b: Build) -> Manifest {
        let path = cases_dir().join(case).join("manifest");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut m = Manifest::empty();
        let words = |v: &str| -> Vec<String> {
            v.split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{}:{}: not `key: value`", path.display(), n + 1));
            let value = value.trim();
            let mut tags = key.split('@');
            let key = tags.next().unwrap_or_default();
            if !tags.all(|t| t == b.opt.tag() || t == b.cc.tag()) {
                continue;
            }
            match key {
                "mode" => {
                    m.mode = match value {
                        "manual" => Mode::Manual,
                        "make" => Mode::Make,
                        other => panic!("{}: unknown mode {other}", path.display()),
                    }
                }
                "before" => m.before = value.into(),
                "after" => m.after = value.into(),
                "program" => m.program = value.into(),
                "cflags" => m.cflags.extend(words(value)),
                "libs" => m.libs.extend(words(value)),
                "patched" => m.patched.extend(words(value)),
                "not_patched" => m.not_patched.extend(words(value)),
                "objects" => m.objects = value.parse().expect("objects: a number"),
                "min_functions" => {
                    m.min_functions = value.parse().expect("min_functions: a number")
                }
                "refuse" => m.refuse = Some(value.into()),
                "message" => m.messages.push(value.into()),
                other => panic!("{}:{}: unknown key {other}", path.display(), n + 1),
            }
        }
        m
    }
}

/// A step of a patch build that failed.
#[derive(Debug)]
struct Failure {
    step: String,
    output: Output,
}

impl Failure {
    fn text(&self) -> String {
        format!("{}{}", stdout(&self.output), stderr(&self.output))
    }
}

/// Runs one step of a build, naming it for refusals.
fn step(name: &str, cmd: &mut Command) -> Result<Output, Failure> {
    let out = run(cmd);
    if out.status.success() {
        Ok(out)
    } else {
        Err(Failure {
            step: name.to_string(),
            output: out,
        })
    }
}

/// A directory for one run of one case.
struct Work {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// The function filter file the tools read (`LIBCARE_CONF`): by default one that does not
    /// exist, so tests never depend on /etc/libcare.conf.
    filter: PathBuf,
    /// Extra arguments for kpatch_gensrc in manual mode.
    gensrc_args: Vec<String>,
}

impl Work {
    fn new() -> Work {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().canonicalize().expect("canonical tempdir");
        Work {
            filter: dir.join("no-libcare.conf"),
            _tmp: tmp,
            dir,
            gensrc_args: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn tool(&self, name: &str, cwd: &Path) -> Command {
        let mut c = tool(name, cwd);
        c.env("LIBCARE_CONF", &self.filter);
        c
    }
}

/// Copies the case's files (not the manifest) to `to`.
fn copy_case(case: &str, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", cases_dir().join(case).display()))
            .arg(to),
    );
    let _ = std::fs::remove_file(to.join("manifest"));
}

fn apply_diff(dir: &Path) {
    run_ok(
        Command::new("patch")
            .args(["-p1", "-s", "-i", "change.diff"])
            .current_dir(dir),
    );
}

/// An object the manual pipeline builds: a source file and what it becomes.
struct Unit {
    source: String,
    output: &'static str,
    shared: bool,
}

impl Unit {
    /// The program's or the library's unit of the case in `dir`: `STEM.c`, or `STEM.cpp`.
    fn find(dir: &Path, stem: &str, output: &'static str, shared: bool) -> Option<Unit> {
        ["c", "cpp"].iter().find_map(|ext| {
            let source = format!("{stem}.{ext}");
            dir.join(&source).exists().then_some(Unit {
                source,
                output,
                shared,
            })
        })
    }
}

/// Builds the original objects into `build/` and a patch for every changed one into
/// `patches/`, with the tools run by hand as the user guide's first walkthrough does.
fn manual_build(w: &Work, m: &Manifest, b: Build) -> Result<(), Failure> {
    let (orig, patched, build) = (w.path("orig"), w.path("patched"), w.path("build"));
    std::fs::create_dir_all(&build).expect("mkdir build");
    std::fs::create_dir_all(w.path("patches")).expect("mkdir patches");
    let opt = b.opt;
    let library = Unit::find(&orig, "lib", "libcase.so", true);
    let has_lib = library.is_some();
    let program =
        Unit::find(&orig, "main", "prog", false).expect("the case has main.c or main.cpp");
    let units: Vec<Unit> = library.into_iter().chain([program]).collect();
    // C++ objects are linked by the C++ driver (it adds the C++ library).
    let linker = if units.iter().any(|u| u.source.ends_with(".cpp")) {
        b.cc.cxx()
    } else {
        b.cc.cc()
    };
    let cflags = |u: &Unit| -> Vec<String> {
        let mut f: Vec<String> = opt.flags().iter().map(|s| s.to_string()).collect();
        f.extend(m.cflags.iter().cloned());
        if u.shared {
            f.push("-fPIC".into());
        }
        f
    };
    let link_args = |u: &Unit| -> Vec<String> {
        let mut a: Vec<String> = opt.flags().iter().map(|s| s.to_string()).collect();
        if u.shared {
            a.extend(["-shared".into(), "-fPIC".into()]);
        } else if has_lib {
            a.extend([
                "-L".into(),
                build.display().to_string(),
                "-lcase".into(),
                "-Wl,-rpath,$ORIGIN".into(),
            ]);
        }
        a.extend(m.libs.iter().cloned());
        a
    };
    for u in &units {
        let asm = format!("{}.s", u.source);
        for dir in [&orig, &patched] {
            run_ok(
                Command::new(b.cc.for_source(&u.source))
                    .args(cflags(u))
                    .args(["-S", &u.source, "-o", &asm])
                    .current_dir(dir),
            );
        }
        // The original object, from its assembly (the same as compiling the source).
        run_ok(
            Command::new(linker)
                .args(["-o", &build.join(u.output).display().to_string()])
                .arg(orig.join(&asm))
                .args(link_args(u)),
        );
    }
    for u in &units {
        let changed =
            std::fs::read(orig.join(&u.source)).ok() != std::fs::read(patched.join(&u.source)).ok();
        if !changed {
            continue;
        }
        let asm = format!("{}.s", u.source);
        let combined = build.join(format!("{}.combined.s", u.source));
        step(
            "gensrc",
            w.tool("kpatch_gensrc", &build)
                .args(["--os=rhel6", "--force-gotpcrel"])
                .args(&w.gensrc_args)
                .arg("-i")
                .arg(orig.join(&asm))
                .arg("-i")
                .arg(patched.join(&asm))
                .arg("-o")
                .arg(&combined),
        )?;
        let out = build.join(u.output);
        let linked = build.join(format!("{}.patched", u.output));
        run_ok(
            Command::new(linker)
                .arg("-o")
                .arg(&linked)
                .arg(&combined)
                .args(link_args(u))
                .arg("-Wl,-q"),
        );
        let stripped = build.join(format!("{}.stripped", u.output));
        step(
            "strip",
            w.tool("kpatch_strip", &build)
                .arg("--strip")
                .arg(&linked)
                .arg(&stripped),
        )?;
        step(
            "strip",
            w.tool("kpatch_strip", &build)
                .arg("--rel-fixup")
                .arg(&out)
                .arg(&stripped),
        )?;
        run_ok(Command::new("strip").arg("--strip-unneeded").arg(&stripped));
        step(
            "strip",
            w.tool("kpatch_strip", &build)
                .arg("--undo-link")
                .arg(&out)
                .arg(&stripped),
        )?;
        let bid = build_id(&out);
        step(
            "make",
            w.tool("kpatch_make", &build)
                .args(["-b", &bid, "-i", "0001", "-o"])
                .arg(w.path(&format!("patches/{bid}.kpatch")))
                .arg(&stripped),
        )?;
    }
    Ok(())
}

/// Runs libcare-patch-make in the case's copy; the program is installed under `lpmake/`.
fn make_build(w: &Work, b: Build) -> Result<Output, Failure> {
    let dir = w.path("project");
    step(
        "patch-make",
        w.tool("libcare-patch-make", &dir)
            .args(["--clean", "-j", "2", "-i", "0001", "change.diff"])
            .env("OPT", b.opt.flags().join(" "))
            .env("KPCCREAL", b.cc.cc())
            .env("KPCXXREAL", b.cc.cxx())
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    )
}

/// The names of the functions a `.kpatch` file patches or adds (its `.kpatch.strtab`, with
/// the `.kpatch` suffix of changed functions' copies removed).
pub(crate) fn patched_functions(kpatch: &Path) -> Vec<String> {
    let data = std::fs::read(kpatch).expect("read patch");
    let elf =
        object::File::parse(data.get(504..).expect("patch has a payload")).expect("payload ELF");
    let sec = elf
        .section_by_name(".kpatch.strtab")
        .expect(".kpatch.strtab");
    let bytes = sec.data().expect("strtab bytes");
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = String::from_utf8_lossy(s);
            s.strip_suffix(".kpatch").unwrap_or(&s).to_string()
        })
        .collect()
}

fn kpatch_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "kpatch"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads lines until `to`; every line before it must be `from`, and the next two must be
/// `to` again: the switch happens once and sticks.
fn expect_switch(t: &mut Proc, from: &str, to: &str) {
    loop {
        let line = t.next_line();
        if line == to {
            break;
        }
        assert_eq!(line, from, "expected {from:?} until {to:?}");
    }
    for _ in 0..2 {
        assert_eq!(
            t.next_line(),
            to,
            "after {to:?} the program printed something else"
        );
    }
}

fn run_case(case: &str, b: Build) {
    run_case_in(case, b, Work::new(), &Manifest::load(case, b));
}

/// Runs `case` in `w`, expecting what `m` says.
fn run_case_in(case: &str, b: Build, w: Work, m: &Manifest) {
    // What libcare-patch-make says each patch replaces or adds (make mode).
    let mut listed = None;
    let (patch_dir, program) = match m.mode {
        Mode::Manual => {
            copy_case(case, &w.path("orig"));
            copy_case(case, &w.path("patched"));
            apply_diff(&w.path("patched"));
            let built = manual_build(&w, m, b);
            if finish_refusal(case, m, built.err()) {
                return;
            }
            (w.path("patches"), w.path("build/prog"))
        }
        Mode::Make => {
            copy_case(case, &w.path("project"));
            let (out, failure) = match make_build(&w, b) {
                Ok(out) => (Some(out), None),
                Err(f) => (None, Some(f)),
            };
            if finish_refusal(case, m, failure) {
                return;
            }
            listed = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            (
                w.path("project/patchroot"),
                w.path("project/lpmake").join(&m.program),
            )
        }
    };

    let files = kpatch_files(&patch_dir);
    assert_eq!(
        files.len(),
        m.objects,
        "{case}: expected {} patch file(s) in {}, found {files:?}",
        m.objects,
        patch_dir.display()
    );
    let all: Vec<String> = files.iter().flat_map(|f| patched_functions(f)).collect();
    assert!(
        all.len() >= m.min_functions,
        "{case}: {} functions in the patch, expected at least {}",
        all.len(),
        m.min_functions
    );
    let names: BTreeSet<String> = all.into_iter().collect();
    for f in &m.patched {
        assert!(
            names.contains(f),
            "{case}: {f} is not in the patch: {names:?}"
        );
    }
    for f in &m.not_patched {
        assert!(
            !names.contains(f),
            "{case}: {f} must not be in the patch: {names:?}"
        );
    }
    // Listed by the names people read: C++ names demangled, with the mangled one.
    if let Some(listed) = &listed {
        for f in &m.patched {
            let shown = kpatch_names::plain(f);
            assert!(
                ["replaces", "adds"]
                    .iter()
                    .any(|verb| listed.contains(&format!("  {verb} {shown}: "))),
                "{case}: libcare-patch-make does not list {shown}:\n{listed}"
            );
        }
    }

    patch_live(&w, case, &program, &patch_dir, m);
}

/// Starts `program`, patches it from `patch_dir` with `libcare-ctl patch`, unpatches it, and
/// checks that its output switches from `m.before` to `m.after` and back.
fn patch_live(w: &Work, case: &str, program: &Path, patch_dir: &Path, m: &Manifest) {
    let mut t = Proc::spawn(program, &[]);
    let pid = t.pid().to_string();
    t.wait_line(&m.before);
    let out = run_ok(w.tool("libcare-ctl", &w.dir).args([
        "patch",
        "-p",
        &pid,
        &patch_dir.display().to_string(),
    ]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{} patch hunk(s) have been successfully applied to PID '{pid}'",
            m.objects
        )),
        "{case}: unexpected patch output:\n{text}{}",
        stderr(&out)
    );
    expect_switch(&mut t, &m.before, &m.after);

    let out = run_ok(w.tool("libcare-ctl", &w.dir).args(["unpatch", "-p", &pid]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{} patch hunk(s) were successfully cancelled from PID '{pid}'",
            m.objects
        )),
        "{case}: unexpected unpatch output:\n{text}{}",
        stderr(&out)
    );
    expect_switch(&mut t, &m.after, &m.before);
    assert!(t.alive(), "{case}: the program died");
}

/// For a case that must be refused, checks the failure and returns true; for any other case,
/// fails the test if the build failed and returns false.
fn finish_refusal(case: &str, m: &Manifest, failure: Option<Failure>) -> bool {
    match (&m.refuse, failure) {
        (None, None) => false,
        (None, Some(f)) => panic!(
            "{case}: step {} failed ({}):\n{}",
            f.step,
            f.output.status,
            f.text()
        ),
        (Some(want), None) => panic!("{case}: the build succeeded; step {want} must refuse it"),
        (Some(want), Some(f)) => {
            let text = f.text();
            assert_eq!(&f.step, want, "{case}: wrong step failed:\n{text}");
            assert!(
                f.output.status.code().is_some_and(|c| c != 0),
                "{case}: {} died: {}",
                f.step,
                f.output.status
            );
            for msg in &m.messages {
                assert!(
                    text.contains(msg.as_str()),
                    "{case}: the refusal does not say {msg:?}:\n{text}"
                );
            }
            true
        }
    }
}

/// One test module per compiler and level: `$module` runs every case with `$cc` at `$opt`.
macro_rules! builds {
    ($cases:ident: $($module:ident = $cc:ident $opt:ident),*) => {
        $(mod $module {
            use super::{Build, Compiler, Opt};
            const B: Build = Build { cc: Compiler::$cc, opt: Opt::$opt };
            $cases!(B);
        })*
    };
}

/// A group of cases: a test of each case `$name` in each build (see [`builds`]), made by the
/// macro `$tests`, and the list of their names, `$list`.
macro_rules! cases {
    ($list:ident, $tests:ident: $($module:ident = $cc:ident $opt:ident),*; $($name:ident),* $(,)?) => {
        macro_rules! $tests {
            ($b:ident) => { $(#[test] fn $name() { super::run_case(stringify!($name), $b) })* };
        }
        builds!($tests: $($module = $cc $opt),*);
        const $list: &[&str] = &[$(stringify!($name)),*];
    };
}

// The C cases, run with gcc and clang.
cases! {
    C_CASES, c_tests: at_o0 = Gcc O0, at_o2 = Gcc O2, clang_o0 = Clang O0, clang_o2 = Clang O2;
    changed_body,
    several_files,
    program_and_library,
    gcc_clones,
    static_local_numbering,
    line_macro,
    inline_change,
    static_function,
    new_function,
    new_variable,
    new_static_local,
    rodata_literals,
    call_original,
    glibc_plt_got,
    ifunc,
    tls_executable,
    tls_library,
    library,
    refuse_changed_variable,
    refuse_short_function,
    refuse_init_function,
    refuse_never_returns,
    refuse_struct_layout,
    function_filter,
    function_sections,
    non_pie,
    recursive_function,
    many_functions,
    signature_change,
    header_change,
    two_libraries,
    new_struct_variable,
    refuse_assembler_source,
    refuse_tls_general_dynamic,
    clang_outlined,
}

// The C++ cases, run with g++ and clang++.
cases! {
    CXX_CASES, cxx_tests: gxx_o0 = Gcc O0, gxx_o2 = Gcc O2, clangxx_o0 = Clang O0, clangxx_o2 = Clang O2;
    cxx_members,
    cxx_header_inline,
    cxx_statics_string,
    cxx_exceptions,
    cxx_refuse_class_layout,
    cxx_refuse_vtable,
    cxx_refuse_global_object,
    cxx_refuse_inline_variable,
}

#[test]
fn every_case_directory_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("cases directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = C_CASES
        .iter()
        .chain(CXX_CASES)
        .map(|s| s.to_string())
        .collect();
    listed.sort();
    assert_eq!(dirs, listed);
}

/// The function filter: a file listing function names (prefixes) limits which changed
/// functions enter the patch; kpatch_gensrc reads /etc/libcare.conf, `$LIBCARE_CONF` or the
/// file named by `--filter-config`, and `--test-mode` ignores it.
fn function_filter_limits_the_patch(opt: Opt) {
    let b = Build {
        cc: Compiler::Gcc,
        opt,
    };
    let case = "function_filter";
    let only = |names: &[&str], m: &mut Manifest| {
        m.after = format!(
            "alpha {} beta {}",
            if names.contains(&"alpha") {
                "NEW"
            } else {
                "old"
            },
            if names.contains(&"beta") {
                "NEW"
            } else {
                "old"
            }
        );
        let all = ["alpha", "beta"];
        m.patched = all
            .iter()
            .filter(|n| names.contains(n))
            .map(|n| n.to_string())
            .collect();
        m.not_patched = all
            .iter()
            .filter(|n| !names.contains(n))
            .map(|n| n.to_string())
            .collect();
    };

    // $LIBCARE_CONF (standing for /etc/libcare.conf) lists alpha only (a listed line starts
    // with the function's name, as with the peer).
    let mut w = Work::new();
    w.filter = w.path("libcare.conf");
    std::fs::write(&w.filter, "# functions that may be patched\nalpha\n").expect("write filter");
    let mut m = Manifest::load(case, b);
    only(&["alpha"], &mut m);
    run_case_in(case, b, w, &m);

    // --filter-config names another file, which wins.
    let mut w = Work::new();
    w.filter = w.path("libcare.conf");
    std::fs::write(&w.filter, "alpha\n").expect("write filter");
    let other = w.path("other.conf");
    std::fs::write(&other, "beta\n").expect("write filter");
    w.gensrc_args = vec!["--filter-config".into(), other.display().to_string()];
    let mut m = Manifest::load(case, b);
    only(&["beta"], &mut m);
    run_case_in(case, b, w, &m);

    // --test-mode ignores the filter.
    let mut w = Work::new();
    w.filter = w.path("libcare.conf");
    std::fs::write(&w.filter, "alpha\n").expect("write filter");
    w.gensrc_args = vec!["--test-mode".into()];
    let mut m = Manifest::load(case, b);
    only(&["alpha", "beta"], &mut m);
    run_case_in(case, b, w, &m);
}

#[test]
fn function_filter_at_o0() {
    function_filter_limits_the_patch(Opt::O0);
}

#[test]
fn function_filter_at_o2() {
    function_filter_limits_the_patch(Opt::O2);
}

/// Asserts that `want` appear as lines of `text`, in this order.
fn assert_lines_in_order(text: &str, want: &[String]) {
    let mut lines = text.lines();
    for w in want {
        assert!(
            lines.any(|l| l == w),
            "missing or out of order: {w:?}\n--- output\n{text}"
        );
    }
}

/// A project configured by its own `configure` script with libcare-cc as the compiler, built
/// by libcare-patch-make with -s (patches applied in `src/`), -d (the install variable is
/// PREFIXDIR), -j, -i and two patch files applied in order; only the file the patches change
/// is rebuilt in the patched stage; the patch applies to the running program.
fn configured_project(opt: Opt) {
    let w = Work::new();
    let dir = w.path("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(format!(
                "{}/.",
                fixtures().join("builder/configured").display()
            ))
            .arg(&dir),
    );
    let libcare_cc = bin("libcare-cc");
    let tools = libcare_cc.parent().expect("tools directory").to_path_buf();
    // Configure with libcare-cc in the original stage: its probes go straight to gcc.
    let out = run_ok(
        Command::new("./configure")
            .current_dir(&dir)
            .env("CC", &libcare_cc)
            .env("CFLAGS", opt.flags().join(" "))
            .env("KPATCH_STAGE", "original")
            .env("KPATCH_PATH", &tools),
    );
    assert!(
        stdout(&out).contains("checking for usleep... yes"),
        "{}",
        stdout(&out)
    );
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("list project")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kpatch_") || n.starts_with("conftest"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "configure probes went through libcare-cc: {leftovers:?}"
    );

    let out = match step(
        "patch-make",
        w.tool("libcare-patch-make", &dir)
            .args([
                "--clean",
                "-j",
                "2",
                "-s",
                "src",
                "-d",
                "PREFIXDIR",
                "-i",
                "0002",
            ])
            .args(["1-fix.diff", "2-again.diff"])
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    ) {
        Ok(out) => out,
        Err(f) => panic!("libcare-patch-make failed:\n{}", f.text()),
    };
    let text = stdout(&out);
    let program = dir.join("lpmake/bin/app");
    let bid = build_id(&program);
    let patch = dir.join(format!("patchroot/{bid}.kpatch"));
    let d = dir.display();
    assert_lines_in_order(
        &text,
        &[
            "BUILDING ORIGINAL CODE".into(),
            format!("INSTALLING ORIGINAL OBJECTS INTO {d}/lpmake"),
            "applying 1-fix.diff...".into(),
            "applying 2-again.diff...".into(),
            "BUILDING PATCHED CODE".into(),
            format!("INSTALLING PATCHED OBJECTS INTO {d}/.lpmaketmp/patched"),
            "MAKING PATCHES".into(),
            format!("patch for {d}/lpmake/bin/app is in {}", patch.display()),
        ],
    );
    let header = std::fs::read(&patch).expect("read patch");
    assert_eq!(header.get(8..13), Some(&b"0002\0"[..]), "patch id");
    // The patched stage compiled only report.c: the others kept their original objects.
    let src = dir.join("src");
    assert!(src.join(".kpatch_report.o.patched.s").is_file());
    for unchanged in ["main", "util"] {
        assert!(src
            .join(format!(".kpatch_{unchanged}.o.original.s"))
            .is_file());
        assert!(
            !src.join(format!(".kpatch_{unchanged}.o.patched.s"))
                .exists(),
            "{unchanged}.c was rebuilt in the patched stage"
        );
    }
    assert_eq!(patched_functions(&patch), ["report"]);

    // -u remakes the patches from the install trees without building; -b names the build-id.
    let out = match step(
        "patch-make",
        w.tool("libcare-patch-make", &dir)
            .args(["-u", "-d", "PREFIXDIR", "-i", "0003", "-b", &bid])
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    ) {
        Ok(out) => out,
        Err(f) => panic!("libcare-patch-make -u failed:\n{}", f.text()),
    };
    assert!(!stdout(&out).contains("BUILDING"), "{}", stdout(&out));
    let header = std::fs::read(&patch).expect("read patch");
    assert_eq!(header.get(8..13), Some(&b"0003\0"[..]), "patch id after -u");

    let m = Manifest {
        before: "configured reports 12".into(),
        after: "configured reports 13 (fixed twice)".into(),
        ..Manifest::empty()
    };
    patch_live(&w, "configured", &program, &dir.join("patchroot"), &m);
}

#[test]
fn configured_project_at_o0() {
    configured_project(Opt::O0);
}

#[test]
fn configured_project_at_o2() {
    configured_project(Opt::O2);
}

/// libcare-cc's environment (the peer's variables): KPCC_DBGFILTER_ARGS filters the kept
/// assembly of both stages, KPCC_PATCH_ARGS replaces kpatch_gensrc's arguments,
/// KPATCH_GENSRC_ASM sends assembler sources through kpatch_gensrc too.
#[test]
fn libcare_cc_environment() {
    let w = Work::new();
    let dir = w.path("cc");
    copy_case("function_filter", &dir);
    std::fs::write(
        dir.join("helper.s"),
        "\t.text\n\t.globl\thelper\n\t.type\thelper, @function\nhelper:\n\tmovl\t$1, %eax\n\tret\n\t.size\thelper, .-helper\n\t.section\t.note.GNU-stack,\"\",@progbits\n",
    )
    .expect("write helper.s");
    let tools = bin("libcare-cc").parent().expect("tools").to_path_buf();
    let cc = |stage: &str, args: &[&str]| {
        let mut c = w.tool("libcare-cc", &dir);
        c.args(args)
            .env("KPATCH_STAGE", stage)
            .env("KPATCH_PATH", &tools)
            .env("KPCC_DBGFILTER_ARGS", "--dbg-filter")
            .env(
                "KPCC_PATCH_ARGS",
                "--force-gotpcrel;--os=rhel6;--ignore-changes=beta",
            )
            .env("KPATCH_GENSRC_ASM", "1");
        run_ok(&mut c);
    };
    for stage in ["original", "patched"] {
        if stage == "patched" {
            apply_diff(&dir);
            let helper = std::fs::read_to_string(dir.join("helper.s")).expect("helper.s");
            std::fs::write(dir.join("helper.s"), helper.replace("$1", "$2")).expect("write");
        }
        cc(stage, &["-O2", "-g", "-c", "main.c", "-o", "main.o"]);
        cc(stage, &["-c", "helper.s", "-o", "helper.o"]);
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    for kept in [".kpatch_main.o.original.s", ".kpatch_main.o.patched.s"] {
        let text = read(kept);
        assert!(text.contains("alpha:"), "{kept} is not the kept assembly");
        assert!(!text.contains("\t.loc "), "{kept} was not debug-filtered");
    }
    let combined = read(".kpatch_main.o.s");
    assert!(combined.contains("alpha.kpatch:"), "alpha is patched");
    assert!(
        !combined.contains("beta.kpatch"),
        "--ignore-changes=beta from KPCC_PATCH_ARGS"
    );
    assert!(read(".kpatch_helper.o.s").contains("helper.kpatch:"));
}
