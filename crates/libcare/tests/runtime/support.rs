//! What the runtime tests share: a fixture of tests/fixtures/runtime and its patches built
//! by hand (gcc -S twice, kpatch_gensrc, link with -Wl,-q, kpatch_strip, kpatch_make).

use std::path::{Path, PathBuf};

pub use libcare_test_support::*;

/// How one program (or library) is compiled and linked.
#[derive(Debug, Clone)]
pub struct Recipe<'a> {
    /// Fixture file name without `.c`.
    pub name: &'a str,
    pub opt: &'a str,
    /// Extra compiler flags (both builds).
    pub cflags: &'a [&'a str],
    /// Extra link flags (both builds), after the object.
    pub ldflags: &'a [&'a str],
    /// Build a shared library `<name>.so` rather than an executable.
    pub shared: bool,
    /// Extra `kpatch_gensrc` options.
    pub gensrc_flags: &'a [&'a str],
}

impl<'a> Recipe<'a> {
    /// An executable at `opt`, linked with -pthread.
    pub fn exe(name: &'a str, opt: &'a str) -> Recipe<'a> {
        Recipe {
            name,
            opt,
            cflags: &[],
            ldflags: &["-pthread"],
            shared: false,
            gensrc_flags: &[],
        }
    }

    fn output(&self) -> String {
        if self.shared {
            format!("{}.so", self.name)
        } else {
            self.name.to_owned()
        }
    }
}

/// A built program and its patches.
#[derive(Debug)]
pub struct Built {
    /// The original binary.
    pub binary: PathBuf,
    pub build_id: String,
    /// `(version, patch file)`.
    pub patches: Vec<(u32, PathBuf)>,
}

impl Built {
    /// The patch file of `version`.
    pub fn patch(&self, version: u32) -> &Path {
        &self
            .patches
            .iter()
            .find(|(v, _)| *v == version)
            .unwrap_or_else(|| panic!("no patch for version {version}"))
            .1
    }

    /// Starts the original binary and waits for it to print `line`.
    pub fn start(&self, line: &str) -> Proc {
        let mut p = Proc::spawn(&self.binary, &[]);
        p.wait_line(line);
        p
    }
}

fn compile_s(dir: &Path, r: &Recipe<'_>, define: Option<u32>, out: &str) {
    let src = fixtures().join("runtime").join(format!("{}.c", r.name));
    let local = dir.join(format!("{}.c", r.name));
    if !local.exists() {
        std::fs::copy(&src, &local).expect("copy fixture");
    }
    let mut args: Vec<String> = vec![r.opt.into(), "-S".into()];
    if r.shared {
        args.push("-fPIC".into());
    }
    args.extend(r.cflags.iter().map(|s| s.to_string()));
    if let Some(v) = define {
        args.push(format!("-DPATCHED={v}"));
    }
    args.extend([format!("{}.c", r.name), "-o".into(), out.into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    gcc(dir, &refs);
}

fn link(dir: &Path, r: &Recipe<'_>, asm: &str, out: &str, with_relocs: bool) {
    let mut args: Vec<&str> = Vec::new();
    if r.shared {
        args.extend(["-shared", "-fPIC"]);
    }
    args.extend(["-o", out, asm]);
    if with_relocs {
        args.push("-Wl,-q");
    }
    args.extend(r.ldflags);
    gcc(dir, &args);
}

/// The patch file of `version` of the binary `out` (as [`build`] names it).
fn patch_name(out: &str, version: u32) -> String {
    format!("{out}.v{version}.kpatch")
}

/// Builds the fixture in `dir` and one patch per version (`-DPATCHED=<version>`), each with
/// patch-id `<version>` on four digits, by the user guide's manual steps.
pub fn build(dir: &Path, r: &Recipe<'_>, versions: &[u32]) -> Built {
    build_patches(dir, r, versions, false)
}

/// [`build`], each patch after the first built on top of the one before it (`kpatch_gensrc
/// --earlier` with that version's assembly, `kpatch_make --after` its id).
pub fn build_layered(dir: &Path, r: &Recipe<'_>, versions: &[u32]) -> Built {
    build_patches(dir, r, versions, true)
}

fn build_patches(dir: &Path, r: &Recipe<'_>, versions: &[u32], layered: bool) -> Built {
    let out = r.output();
    compile_s(dir, r, None, &format!("{}.s", r.name));
    link(dir, r, &format!("{}.s", r.name), &out, false);
    let bid = build_id(&dir.join(&out));
    let mut earlier: Option<u32> = None;
    for &v in versions {
        let patched_s = format!("{}.v{v}.s", r.name);
        let combined = format!("{}.v{v}.combined.s", r.name);
        let patched_bin = format!("{out}.v{v}");
        let stripped = format!("{out}.v{v}.stripped");
        compile_s(dir, r, Some(v), &patched_s);
        let mut flags: Vec<String> = r.gensrc_flags.iter().map(|f| f.to_string()).collect();
        if let Some(e) = earlier {
            flags.extend(["--earlier".into(), format!("{}.v{e}.s", r.name)]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        gensrc(dir, &format!("{}.s", r.name), &patched_s, &combined, &flags);
        link(dir, r, &combined, &patched_bin, true);
        strip_steps(dir, &out, &patched_bin, &stripped);
        let kpatch = patch_name(&out, v);
        match earlier {
            None => kpatch_make(dir, &bid, &format!("{v:04}"), &stripped, &kpatch),
            Some(e) => {
                let (id, after) = (format!("{v:04}"), format!("{e:04}"));
                let args = [
                    "-b", &bid, "-i", &id, "--after", &after, &stripped, "-o", &kpatch,
                ];
                run_ok(tool("kpatch_make", dir).args(args));
            }
        }
        if layered {
            earlier = Some(v);
        }
    }
    built(dir, r, versions)
}

/// What [`build`] built in `dir` earlier (another test process built it).
pub fn built(dir: &Path, r: &Recipe<'_>, versions: &[u32]) -> Built {
    let out = r.output();
    let binary = dir.join(&out);
    Built {
        build_id: build_id(&binary),
        binary,
        patches: versions
            .iter()
            .map(|&v| (v, dir.join(patch_name(&out, v))))
            .collect(),
    }
}

/// The safety timeout, in seconds, the tests give libcare-ctl where a patch must fail.
pub const SHORT_TIMEOUT: &str = "0.6";
