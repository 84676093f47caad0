//! Building real patched binaries for the tests: gcc, the combined assembly of
//! docs/internals.md 1.1 (see [`gensrc_lite`]), and links with `-Wl,-q`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod gensrc_lite;

use std::path::{Path, PathBuf};
use std::process::Command;

/// An original and a patched build of one program or library.
pub struct Built {
    pub dir: tempfile::TempDir,
    /// The original binary (`foo`).
    pub orig: PathBuf,
    /// The patched binary linked with `-Wl,-q` (`foobar`).
    pub patched: PathBuf,
}

impl Built {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `orig_c` and `patched_c` to assembly with `cflags`, combines them for the functions
/// `changed`, and links `foo` from the original and `foobar` from the combination (shared
/// libraries `libfoo.so`/`libfoobar.so` when `shared`).
pub fn build(
    orig_c: &str,
    patched_c: &str,
    changed: &[&str],
    cflags: &[&str],
    shared: bool,
) -> Built {
    build_with("gcc", orig_c, patched_c, changed, cflags, shared)
}

/// [`build`] with another compiler driver (a cross compiler).
pub fn build_with(
    cc: &str,
    orig_c: &str,
    patched_c: &str,
    changed: &[&str],
    cflags: &[&str],
    shared: bool,
) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("foo.c"), orig_c).unwrap();
    std::fs::write(d.join("bar.c"), patched_c).unwrap();
    for (c, s) in [("foo.c", "foo.s"), ("bar.c", "bar.s")] {
        run(Command::new(cc)
            .current_dir(d)
            .args(cflags)
            .args(["-S", c, "-o", s]));
    }
    let foo_s = std::fs::read_to_string(d.join("foo.s")).unwrap();
    let bar_s = std::fs::read_to_string(d.join("bar.s")).unwrap();
    std::fs::write(
        d.join("foobar.s"),
        gensrc_lite::combine(&foo_s, &bar_s, changed),
    )
    .unwrap();
    let (orig, patched) = if shared {
        ("libfoo.so", "libfoobar.so")
    } else {
        ("foo", "foobar")
    };
    let link = |src: &str, out: &str, q: bool| {
        let mut cmd = Command::new(cc);
        cmd.current_dir(d).args(cflags);
        if shared {
            cmd.arg("-shared");
        }
        cmd.args(["-o", out, src]);
        if q {
            cmd.arg("-Wl,-q");
        }
        run(&mut cmd);
    };
    link("foo.s", orig, false);
    link("foobar.s", patched, true);
    Built {
        orig: d.join(orig),
        patched: d.join(patched),
        dir,
    }
}

/// `strip --strip-unneeded PATH`, the step between --rel-fixup and --undo-link.
pub fn gnu_strip(path: &Path) {
    gnu_strip_with("strip", path);
}

/// [`gnu_strip`] with another `strip` (a cross toolchain's).
pub fn gnu_strip_with(strip: &str, path: &Path) {
    run(Command::new(strip).arg("--strip-unneeded").arg(path));
}

pub fn read_elf(path: &Path) -> elf_edit::Elf {
    elf_edit::parse(&std::fs::read(path).unwrap()).unwrap()
}

pub fn write_elf(path: &Path, elf: &elf_edit::Elf) {
    std::fs::write(path, kpatch_strip::write_payload(elf)).unwrap();
}

/// The program of the user guide: `print_hello` is patched.
pub const FOO_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
static int counter;
int tiny(void) { return 0; }
static int helper(int x) { return x * 3; }
__attribute__((noinline)) void print_hello(int n)
{
    counter += n;
    printf("Hello world %d\n", counter);
}
int main(void)
{
    for (int i = 0; i < 3; i++)
        print_hello(i);
    return tiny() + helper(0);
}
"#;

pub const BAR_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
static int counter;
int tiny(void) { return 1; }
static int helper(int x) { return x * 3; }
__attribute__((noinline)) void print_hello(int n)
{
    counter += helper(n);
    printf("Hello patched %d %d\n", counter, n);
    puts("done");
}
int main(void)
{
    for (int i = 0; i < 3; i++)
        print_hello(i);
    return tiny() + helper(0);
}
"#;
