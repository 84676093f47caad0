//! `kpatch_gensrc` as a command: the user guide's invocation, option spellings, modes and
//! exit statuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libcare_test_support::{run_ok, stderr};

const FOO: &str = r#"#include <stdio.h>
#include <unistd.h>
int counter = 5;
__attribute__((noinline)) void print_hello(void)
{
    printf("Hello world! %d\n", counter);
}
int main(void)
{
    while (1) {
        print_hello();
        sleep(1);
    }
}
"#;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }

    /// `gcc -S -O2 -g` of C source `src` saved as `name.c`, giving `name.s`.
    fn asm(&self, name: &str, src: &str) -> PathBuf {
        let c = self.write(&format!("{name}.c"), src);
        let s = self.path(&format!("{name}.s"));
        run_ok(
            Command::new("gcc")
                .args(["-S", "-O2", "-g"])
                .arg(&c)
                .arg("-o")
                .arg(&s),
        );
        s
    }

    /// foo.s and bar.s: the guide's pair, bar printing a different message.
    fn guide_pair(&self) -> (PathBuf, PathBuf) {
        let orig_s = self.asm("foo", FOO);
        let patched_s = self.asm(
            "bar",
            &FOO.replace("Hello world!", "Hello world being patched!"),
        );
        (orig_s, patched_s)
    }

    fn assembles(&self, s: &Path) -> bool {
        Command::new("gcc")
            .arg("-c")
            .arg(s)
            .arg("-o")
            .arg(self.path("check.o"))
            .status()
            .is_ok_and(|st| st.success())
    }
}

fn gensrc(args: &[&str]) -> Output {
    gensrc_env(args, &[])
}

fn gensrc_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kpatch_gensrc"));
    c.args(args).env_remove("LIBCARE_CONF");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run kpatch_gensrc")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An empty filter file, so the tests never depend on /etc/libcare.conf.
fn no_filter(d: &Dir) -> String {
    s(&d.write("empty.conf", "")).to_string()
}

#[test]
fn user_guide_invocation() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let out = d.path("foobar.s");
    let nf = no_filter(&d);
    let o = gensrc(&[
        "--os=rhel6",
        "-i",
        s(&orig_s),
        "-i",
        s(&patched_s),
        "-o",
        s(&out),
        "--force-global",
        "--filter-config",
        &nf,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Quiet by default but for the one thing an original built as plain gcc -O2 -g builds
    // calls for: who may depend on the changed function's old body.
    let err = stderr(&o);
    assert!(
        err.lines()
            .all(|l| l.starts_with("kpatch_gensrc: warning: `print_hello` changed")),
        "quiet by default: {err}"
    );
    assert!(err.contains("its callers main may depend"), "{err}");
    let text = d.read("foobar.s");
    assert!(text.contains(".pushsection\t.kpatch.info"));
    assert!(text.contains("print_hello.kpatch:"));
    assert!(text.starts_with(&std::fs::read_to_string(&orig_s).expect("foo.s")[..40]));
    assert!(d.assembles(&out));
}

#[test]
fn output_option_spellings_and_stdout() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let nf = no_filter(&d);
    let reference = gensrc(&["--test-mode", "-i", s(&orig_s), "-i", s(&patched_s)]);
    assert!(reference.status.success(), "{}", stderr(&reference));
    for opt in ["-o", "--output", "--ouput"] {
        let out = d.path("o.s");
        let o = gensrc(&[
            "-i",
            s(&orig_s),
            "--input",
            s(&patched_s),
            opt,
            s(&out),
            "--filter-config",
            &nf,
        ]);
        assert!(o.status.success(), "{opt}: {}", stderr(&o));
        assert_eq!(d.read("o.s").as_bytes(), &reference.stdout[..], "{opt}");
    }
    let o = gensrc(&[
        "-i",
        s(&orig_s),
        "-i",
        s(&patched_s),
        "-o",
        "-",
        "--test-mode",
    ]);
    assert_eq!(o.stdout, reference.stdout);
}

#[test]
fn one_input_is_copied_or_filtered() {
    let d = Dir::new();
    let (orig_s, _) = d.guide_pair();
    let original = std::fs::read_to_string(&orig_s).expect("foo.s");
    let o = gensrc(&["-i", s(&orig_s)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), original);

    let out = d.path("filtered.s");
    let o = gensrc(&[
        "--dbg-filter",
        "--dbg-filter-eh-frame",
        "--os=rhel6",
        "-i",
        s(&orig_s),
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = d.read("filtered.s");
    assert!(original.contains("\t.loc ") && original.contains(".debug_info"));
    assert!(!f.contains("\t.loc ") && !f.contains(".debug_info") && !f.contains(".LVL"));
    assert!(f.contains(".cfi_startproc") && f.contains("print_hello:"));
    assert!(d.assembles(&out), "filtered output assembles");

    let o = gensrc(&[
        "-f",
        "--dbg-filter-cfi",
        "--dbg-filter-emit-newlines",
        "-i",
        s(&orig_s),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = String::from_utf8_lossy(&o.stdout);
    assert!(!f.contains(".cfi_"));
    assert_eq!(
        f.lines().count(),
        original.lines().count(),
        "line numbers kept"
    );
}

#[test]
fn usage_errors_fail() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let cases: &[(&[&str], i32, &str)] = &[
        (&[], 1, "no input file"),
        (
            &["-i", s(&orig_s), "-i", s(&patched_s), "-i", s(&orig_s)],
            1,
            "3 input files",
        ),
        (
            &["--dbg-filter", "-i", s(&orig_s), "-i", s(&patched_s)],
            1,
            "one input file",
        ),
        (&["--arch=i686", "-i", s(&orig_s)], 1, "i686"),
        (&["--os=rhel7", "-i", s(&orig_s)], 2, "rhel7"),
        (&["--no-such-option", "-i", s(&orig_s)], 2, "no-such-option"),
        (&["-i", "/nonexistent/x.s"], 1, "/nonexistent/x.s"),
        (&["-d", "zz", "-i", s(&orig_s)], 1, "hex"),
        (
            &["--earlier", s(&patched_s), "-i", s(&orig_s)],
            1,
            "--earlier needs the original and the patched file",
        ),
        (
            &[
                "-i",
                s(&orig_s),
                "-i",
                s(&patched_s),
                "--earlier",
                "/nonexistent/e.s",
            ],
            1,
            "cannot read --earlier /nonexistent/e.s",
        ),
    ];
    for (args, code, msg) in cases {
        let o = gensrc(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    let o = gensrc(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--ouput",
        "--force-gotpcrel",
        "--unlink-symbols",
        "--must-adapt",
        "--filter-config",
        "--earlier",
        "libcare.conf",
    ] {
        assert!(help.contains(opt), "help mentions {opt}");
    }
}

#[test]
fn changed_variable_fails_without_output() {
    let d = Dir::new();
    let orig_s = d.asm("foo", FOO);
    let patched_s = d.asm("bar", &FOO.replace("int counter = 5;", "int counter = 6;"));
    let out = d.path("out.s");
    let o = gensrc(&[
        "--test-mode",
        "-i",
        s(&orig_s),
        "-i",
        s(&patched_s),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`counter`"), "{}", stderr(&o));
    assert!(!out.exists(), "no output on error");

    // --ignore-changes accepts it: the original definition stays.
    let o = gensrc(&[
        "--test-mode",
        "--ignore-changes=counter",
        "-i",
        s(&orig_s),
        "-i",
        s(&patched_s),
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ignore_must_adapt_unlink() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let run = |extra: &[&str]| {
        let mut a = vec!["--test-mode", "-i", s(&orig_s), "-i", s(&patched_s)];
        a.extend_from_slice(extra);
        gensrc(&a)
    };
    let original = std::fs::read_to_string(&orig_s).expect("foo.s");
    let o = run(&["--ignore-changes=foo.c:print_hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        original,
        "nothing patched"
    );
    let o = run(&["--ignore-changes=other.c:print_hello"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("print_hello.kpatch"),
        "other file"
    );

    let o = run(&["--must-adapt=main,print_hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("print_hello") && stderr(&o).contains("KPGENSRC_ADAPTED"));

    let adapted = d.asm(
        "adapted",
        &FOO.replace(
            "printf(\"Hello world! %d\\n\", counter);",
            "asm(\".kpgensrc_flags KPGENSRC_ADAPTED\");\n    printf(\"Hello world being patched! %d\\n\", counter);",
        ),
    );
    let out = d.path("adapted_out.s");
    let o = gensrc(&[
        "--test-mode",
        "--must-adapt=print_hello",
        "-i",
        s(&orig_s),
        "-i",
        s(&adapted),
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.assembles(&out), "the marker does not reach the assembler");

    let o = run(&["--unlink-symbols=print_hello", "-d", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("print_hello.kpatch:") && !text.contains(".Lkpatch_fe"));
    assert!(
        stderr(&o).contains("unlinked copy of function print_hello"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn function_filter_file() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let conf = d.write("libcare.conf", "# functions to patch\nmain\n");
    let args = ["-d", "1", "-i", s(&orig_s), "-i", s(&patched_s)];
    let patched = |o: &Output| String::from_utf8_lossy(&o.stdout).contains("print_hello.kpatch");

    let mut a = args.to_vec();
    a.extend(["--filter-config", s(&conf)]);
    let o = gensrc(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!patched(&o), "filtered out");
    assert!(
        stderr(&o).contains("print_hello not patched"),
        "{}",
        stderr(&o)
    );

    let o = gensrc_env(&args, &[("LIBCARE_CONF", s(&conf))]);
    assert!(!patched(&o), "filtered out through the environment");

    let mut a = args.to_vec();
    a.extend(["--filter-config", s(&conf), "--test-mode"]);
    assert!(patched(&gensrc(&a)), "--test-mode ignores the filter");

    let listed = d.write("listed.conf", "print_hello\n");
    let mut a = args.to_vec();
    a.extend(["--filter-config", s(&listed)]);
    let o = gensrc(&a);
    assert!(patched(&o));
    assert!(
        stderr(&o).contains("patched function print_hello"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn accepted_compatibility_options() {
    let d = Dir::new();
    let (orig_s, patched_s) = d.guide_pair();
    let o = gensrc(&[
        "-O",
        "rhel5",
        "-a",
        "x86_64",
        "--force-gotpcrel",
        "--force-global",
        "--test-mode",
        "-d",
        "0",
        "-i",
        s(&orig_s),
        "-i",
        s(&patched_s),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Long options may be abbreviated, as with getopt_long.
    let o = gensrc(&["--test", "--inp", s(&orig_s), "--inp", s(&patched_s)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn dash_reads_standard_input() {
    // LibcarePlus's test makefiles: gcc -S -o - x.c | kpatch_gensrc --dbg-filter -i - -o x.s
    let d = Dir::new();
    let (orig_s, _) = d.guide_pair();
    let original = std::fs::read_to_string(&orig_s).expect("foo.s");
    let out = d.path("piped.s");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpatch_gensrc"))
        .args(["--dbg-filter", "--test-mode", "--os=rhel6", "-i", "-", "-o"])
        .arg(&out)
        .env_remove("LIBCARE_CONF")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run kpatch_gensrc");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(original.as_bytes()).expect("write stdin");
    }
    assert!(child.wait().expect("wait").success());
    let f = d.read("piped.s");
    assert!(f.contains("print_hello:") && !f.contains("\t.loc "), "{f}");
}
