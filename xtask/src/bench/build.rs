//! Builds a probe and its patch with the toolkit's manual pipeline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::Tools;
use crate::run;

/// A probe program, its patch, and the patched source built in.
pub struct Variant {
    pub exe: PathBuf,
    pub patch: PathBuf,
    pub built_in: PathBuf,
    /// The same, its callers entering the function through one `jmp`.
    pub built_in_jmp: PathBuf,
}

/// `n` extra functions, each changed by the patch (`bump` selects the patched version).
fn extra_funcs(n: usize, bump: bool) -> String {
    let mut s = String::new();
    for k in 0..n {
        let v = if bump { k + 1_000_000 } else { k };
        let _ = writeln!(s, "__attribute__((noinline)) long extra_{k}(void) {{ long v = {v}; __asm__ volatile(\"nop; nop; nop; nop; nop\" : \"+r\"(v)); return v; }}");
    }
    s.push_str("static void extra_funcs_touch(void) {\n    long sum = 0;\n");
    for k in 0..n {
        let _ = writeln!(s, "    sum += extra_{k}();");
    }
    s.push_str("    if (sum == -1) __builtin_trap();\n}\n");
    s
}

fn build_id(exe: &Path) -> Result<String> {
    let out = Command::new("readelf").arg("-n").arg(exe).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .with_context(|| format!("{} has no build-id", exe.display()))
}

/// The toolkit's manual pipeline in `dir`: `orig.s` and `new.s` (from the same source name)
/// become the executable `exe` (linked with `libs`) and `out`, its patch with id `id`.
fn pipeline(
    tools: &Tools,
    dir: &Path,
    exe: &str,
    libs: &[&str],
    id: &str,
    out: &Path,
) -> Result<()> {
    let gcc = |args: &[&str]| run(Command::new("gcc").args(args).args(libs).current_dir(dir));
    run(Command::new(tools.path("kpatch_gensrc"))
        .args(["-i", "orig.s", "-i", "new.s", "-o", "combined.s"])
        .current_dir(dir))?;
    gcc(&["-o", exe, "orig.s"])?;
    gcc(&["-o", "combined", "combined.s", "-Wl,-q"])?;
    let strip = |args: &[&str]| {
        run(Command::new(tools.path("kpatch_strip"))
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null()))
    };
    strip(&["--strip", "combined", "combined.stripped"])?;
    strip(&["--rel-fixup", exe, "combined.stripped"])?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "combined.stripped"])
        .current_dir(dir))?;
    strip(&["--undo-link", exe, "combined.stripped"])?;
    let bid = build_id(&dir.join(exe))?;
    let out = if out.is_dir() {
        out.join(format!("{bid}.kpatch"))
    } else {
        out.to_owned()
    };
    run(Command::new(tools.path("kpatch_make"))
        .args(["-b", &bid, "-i", id, "combined.stripped", "-o"])
        .arg(&out)
        .current_dir(dir))?;
    Ok(())
}

/// Builds `orig_c` at -O2 and its patch from `new_c` (both in `dir`), the patch going into the
/// directory `patches` as `<build-id>.kpatch`; returns the executable.
pub fn manual(
    tools: &Tools,
    dir: &Path,
    orig_c: &str,
    new_c: &str,
    patches: &Path,
) -> Result<PathBuf> {
    let gcc = |args: &[&str]| run(Command::new("gcc").args(args).current_dir(dir));
    gcc(&["-O2", "-S", orig_c, "-o", "orig.s"])?;
    gcc(&["-O2", "-S", new_c, "-o", "new.s"])?;
    pipeline(tools, dir, "prog", &[], "0001", patches)?;
    Ok(dir.join("prog"))
}

/// Builds the probe with `extra` additional functions and `cflags`, its patch (every
/// function changed) and the patched source as a plain binary, at -O2.
pub fn variant(
    tools: &Tools,
    work: &Path,
    probe_c: &Path,
    name: &str,
    extra: usize,
    cflags: &[&str],
) -> Result<Variant> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(probe_c, dir.join("probe.c"))?;
    let gcc = |args: &[&str]| {
        run(Command::new("gcc")
            .args(cflags)
            .args(args)
            .current_dir(&dir))
    };
    std::fs::write(dir.join("extra_funcs.h"), extra_funcs(extra, false))?;
    gcc(&["-O2", "-S", "probe.c", "-o", "orig.s"])?;
    std::fs::write(dir.join("extra_funcs.h"), extra_funcs(extra, true))?;
    gcc(&["-O2", "-DPROBE_VALUE=2", "-S", "probe.c", "-o", "new.s"])?;
    gcc(&["-o", "probe-builtin", "new.s", "-lpthread"])?;
    gcc(&[
        "-O2",
        "-DPROBE_VALUE=2",
        "-DVIA_JMP",
        "probe.c",
        "-o",
        "probe-builtin-jmp",
        "-lpthread",
    ])?;
    let patch = dir.join("probe.kpatch");
    pipeline(tools, &dir, "probe", &["-lpthread"], "bench", &patch)?;
    Ok(Variant {
        exe: dir.join("probe"),
        patch,
        built_in: dir.join("probe-builtin"),
        built_in_jmp: dir.join("probe-builtin-jmp"),
    })
}
