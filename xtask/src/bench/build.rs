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

/// Builds the probe with `extra` additional functions, its patch (every function changed)
/// and the patched source as a plain binary, at -O2.
pub fn variant(
    tools: &Tools,
    work: &Path,
    probe_c: &Path,
    name: &str,
    extra: usize,
) -> Result<Variant> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(probe_c, dir.join("probe.c"))?;
    let gcc = |args: &[&str]| run(Command::new("gcc").args(args).current_dir(&dir));
    std::fs::write(dir.join("extra_funcs.h"), extra_funcs(extra, false))?;
    gcc(&["-O2", "-S", "probe.c", "-o", "orig.s"])?;
    std::fs::write(dir.join("extra_funcs.h"), extra_funcs(extra, true))?;
    gcc(&["-O2", "-DPROBE_VALUE=2", "-S", "probe.c", "-o", "new.s"])?;
    run(Command::new(tools.path("kpatch_gensrc"))
        .args(["-i", "orig.s", "-i", "new.s", "-o", "combined.s"])
        .current_dir(&dir))?;
    gcc(&["-o", "probe", "orig.s", "-lpthread"])?;
    gcc(&["-o", "probe-builtin", "new.s", "-lpthread"])?;
    gcc(&["-o", "combined", "combined.s", "-lpthread", "-Wl,-q"])?;
    let strip = |args: &[&str]| {
        run(Command::new(tools.path("kpatch_strip"))
            .args(args)
            .current_dir(&dir))
    };
    strip(&["--strip", "combined", "combined.stripped"])?;
    run(Command::new(tools.path("kpatch_strip"))
        .args(["--rel-fixup", "probe", "combined.stripped"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null()))?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "combined.stripped"])
        .current_dir(&dir))?;
    strip(&["--undo-link", "probe", "combined.stripped"])?;
    let bid = build_id(&dir.join("probe"))?;
    run(Command::new(tools.path("kpatch_make"))
        .args([
            "-b",
            &bid,
            "-i",
            "bench",
            "combined.stripped",
            "-o",
            "probe.kpatch",
        ])
        .current_dir(&dir))?;
    Ok(Variant {
        exe: dir.join("probe"),
        patch: dir.join("probe.kpatch"),
        built_in: dir.join("probe-builtin"),
    })
}
