//! A minimal stand-in for `kpatch_gensrc`, for tests only: builds the combined assembly of
//! docs/internals.md 1.1 for named functions of gcc output, so that the strip steps can be
//! tested on real linked binaries without the real generator; and [`build`], an original and
//! a patched binary linked from it with `-Wl,-q`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run_ok;

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
    let dir = tempfile::tempdir().expect("tempdir");
    let (orig, patched) = build_in(
        dir.path(),
        "gcc",
        orig_c,
        patched_c,
        changed,
        cflags,
        shared,
    );
    Built { dir, orig, patched }
}

/// [`build`] in the folder `d` with the compiler driver `cc` (gcc, or a cross compiler);
/// returns the original and the patched binary.
pub fn build_in(
    d: &Path,
    cc: &str,
    orig_c: &str,
    patched_c: &str,
    changed: &[&str],
    cflags: &[&str],
    shared: bool,
) -> (PathBuf, PathBuf) {
    std::fs::write(d.join("foo.c"), orig_c).unwrap();
    std::fs::write(d.join("bar.c"), patched_c).unwrap();
    for (c, s) in [("foo.c", "foo.s"), ("bar.c", "bar.s")] {
        run_ok(
            Command::new(cc)
                .current_dir(d)
                .args(cflags)
                .args(["-S", c, "-o", s]),
        );
    }
    let foo_s = std::fs::read_to_string(d.join("foo.s")).unwrap();
    let bar_s = std::fs::read_to_string(d.join("bar.s")).unwrap();
    std::fs::write(d.join("foobar.s"), combine(&foo_s, &bar_s, changed)).unwrap();
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
        run_ok(&mut cmd);
    };
    link("foo.s", orig, false);
    link("foobar.s", patched, true);
    (d.join(orig), d.join(patched))
}

/// `strip --strip-unneeded PATH`, the step between --rel-fixup and --undo-link.
pub fn gnu_strip(path: &Path) {
    gnu_strip_with("strip", path);
}

/// [`gnu_strip`] with another `strip` (a cross toolchain's).
pub fn gnu_strip_with(strip: &str, path: &Path) {
    run_ok(Command::new(strip).arg("--strip-unneeded").arg(path));
}

/// Characters that can be part of an assembler symbol.
fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')
}

/// The identifiers of `line`, with their byte ranges.
fn idents(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (start, is_ident(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

/// `line` with every identifier for which `map` has a replacement replaced.
fn rename(line: &str, map: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (s, e) in idents(line) {
        if let Some(new) = map(&line[s..e]) {
            out.push_str(&line[last..s]);
            out.push_str(&new);
            last = e;
        }
    }
    out.push_str(&line[last..]);
    out
}

fn label_of(line: &str) -> Option<&str> {
    let l = line.strip_suffix(':')?;
    (!l.is_empty() && l.chars().all(is_ident)).then_some(l)
}

/// The lines of function `f` in `asm`, from its `.type` line to its `.size` line inclusive.
fn function_block<'a>(asm: &'a [&'a str], f: &str) -> (usize, usize) {
    let types = [
        format!("\t.type\t{f}, @function"),
        format!("\t.type\t{f}, %function"),
    ];
    let size = format!("\t.size\t{f}, .-{f}");
    let start = asm
        .iter()
        .position(|l| types.iter().any(|t| t == l))
        .unwrap_or_else(|| panic!("no function {f}"));
    let end = start
        + asm[start..]
            .iter()
            .position(|l| *l == size)
            .expect("no .size line");
    (start, end)
}

/// The data lines that follow the label `label:` in `asm`.
fn data_of(asm: &[&str], label: &str) -> Vec<String> {
    let at = asm
        .iter()
        .position(|l| label_of(l) == Some(label))
        .unwrap_or_else(|| panic!("no data label {label}"));
    asm[at + 1..]
        .iter()
        .take_while(|l| {
            let t = l.trim_start();
            [
                ".string", ".ascii", ".long", ".quad", ".byte", ".value", ".zero", ".word",
                ".xword",
            ]
            .iter()
            .any(|d| t.starts_with(d))
        })
        .map(|l| l.to_string())
        .collect()
}

/// The original assembly `orig` plus, for each function of `changed` (present in both files),
/// a copy of its body from `patched` in `.kpatch.text` as `f.kpatch`, its `.L` data copied to
/// `.kpatch.data`, and its `.kpatch.strtab` string and `.kpatch.info` record.
pub fn combine(orig: &str, patched: &str, changed: &[&str]) -> String {
    let orig_lines: Vec<&str> = orig.lines().collect();
    let patched_lines: Vec<&str> = patched.lines().collect();
    let mut out: Vec<String> = orig_lines.iter().map(|l| l.to_string()).collect();
    let mut tail = Vec::new();
    let mut data = Vec::new();
    let mut copied = std::collections::HashSet::new();
    for (n, f) in changed.iter().enumerate() {
        let size_line = format!("\t.size\t{f}, .-{f}");
        let at = out
            .iter()
            .position(|l| *l == size_line)
            .expect("original lacks the function");
        out.insert(at, format!(".Lkpatch_fe{n}:"));

        let (start, end) = function_block(&patched_lines, f);
        let block = &patched_lines[start + 1..end];
        let local: std::collections::HashSet<&str> = block
            .iter()
            .filter_map(|l| label_of(l))
            .filter(|l| l.starts_with(".L"))
            .collect();
        for l in block {
            assert!(
                !l.trim_start().starts_with(".section") && !l.trim_start().starts_with(".text"),
                "section switch inside {f}: not supported by this helper"
            );
            for (s, e) in idents(l) {
                let id = &l[s..e];
                if id.starts_with(".L") && !local.contains(id) && copied.insert(id.to_string()) {
                    data.push("\t.p2align 3".to_string());
                    data.push(format!("{id}.kpatch:"));
                    data.extend(data_of(&patched_lines, id));
                }
            }
        }
        tail.push("\t.pushsection .kpatch.text,\"ax\",@progbits".into());
        tail.push(format!("\t.globl\t{f}.kpatch"));
        tail.push(format!("\t.type\t{f}.kpatch, %function"));
        for l in block {
            if label_of(l) == Some(f) {
                tail.push(format!("{f}.kpatch:"));
                continue;
            }
            tail.push(rename(l, &|id| {
                id.starts_with(".L").then(|| format!("{id}.kpatch"))
            }));
        }
        tail.push(format!("\t.size\t{f}.kpatch, .-{f}.kpatch"));
        tail.push(format!(".Lkpatch_end{n}:"));
        tail.push("\t.popsection".into());
        tail.push("\t.pushsection .kpatch.strtab,\"a\",@progbits".into());
        tail.push(format!(".Lkpatch_str{n}:"));
        tail.push(format!("\t.string \"{f}.kpatch\""));
        tail.push("\t.popsection".into());
        tail.push("\t.pushsection .kpatch.info,\"aw\",@progbits".into());
        tail.push(format!("\t.quad {f}"));
        tail.push(format!("\t.quad {f}.kpatch"));
        tail.push(format!("\t.long .Lkpatch_fe{n} - {f}"));
        tail.push(format!("\t.long .Lkpatch_end{n} - {f}.kpatch"));
        tail.push(format!("\t.quad .Lkpatch_str{n}"));
        tail.push("\t.quad 0".into());
        tail.push("\t.long 0".into());
        tail.push("\t.byte 0,0,0,0".into());
        tail.push("\t.popsection".into());
    }
    if !data.is_empty() {
        out.push("\t.pushsection .kpatch.data,\"aw\",@progbits".into());
        out.extend(data);
        out.push("\t.popsection".into());
    }
    out.extend(tail);
    out.push(String::new());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_identifiers_only() {
        let map = |id: &str| (id == ".L3").then(|| ".L3.kpatch".to_string());
        assert_eq!(rename("\tjmp\t.L3", &map), "\tjmp\t.L3.kpatch");
        assert_eq!(rename("\tjmp\t.L30", &map), "\tjmp\t.L30");
    }
}
