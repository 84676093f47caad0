//! Patch build time for a one-line change in a generated 200-file C project, against one
//! incremental `make` of that change; and `libcare-ctl patch -p all` over many processes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::stats::Stats;
use super::{Tools, TRIALS};
use crate::run;

const FILES: usize = 200;
const CHANGED: usize = 100;

fn source(k: usize, variant: u32) -> String {
    let mut s = String::new();
    for f in 0..5 {
        let c = if k == CHANGED && f == 0 {
            31 + variant
        } else {
            31
        };
        let _ = writeln!(
            s,
            "long f{k:03}_{f}(long x)\n{{\n\tlong s = x;\n\tfor (int i = 0; i < 16; i++)\n\t\ts = s * {c} + i + {k};\n\treturn s;\n}}\n"
        );
    }
    s
}

/// Writes the project into `dir`.
fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    for k in 0..FILES {
        std::fs::write(dir.join(format!("src/f{k:03}.c")), source(k, 0))?;
    }
    let mut main = String::from("#include <stdio.h>\n#include <unistd.h>\n");
    for k in 0..FILES {
        let _ = writeln!(main, "long f{k:03}_0(long);");
    }
    main.push_str(
        "int main(void)\n{\n\tsetvbuf(stdout, NULL, _IOLBF, 0);\n\tfor (;;) {\n\t\tlong s = 0;\n",
    );
    for k in 0..FILES {
        let _ = writeln!(main, "\t\ts += f{k:03}_0(s);");
    }
    main.push_str("\t\tprintf(\"%ld\\n\", s);\n\t\tusleep(50000);\n\t}\n}\n");
    std::fs::write(dir.join("main.c"), main)?;
    std::fs::write(
        dir.join("Makefile"),
        "CFLAGS ?= -O2\nOBJS = $(patsubst %.c,%.o,$(wildcard src/*.c)) main.o\n\napp: $(OBJS)\n\t$(CC) $(CFLAGS) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f app $(OBJS)\n\ninstall: app\n\tmkdir -p $(DESTDIR)\n\tcp app $(DESTDIR)/\n",
    )?;
    Ok(())
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Returns (incremental make ms, libcare-patch-make ms).
pub fn build_time(tools: &Tools, work: &Path) -> Result<(Stats, Stats)> {
    let plain = work.join("project-make");
    let lp = work.join("project-lpmake");
    generate(&plain)?;
    generate(&lp)?;
    // The one-line change as a unified diff, the way an operator gets it.
    let changed = format!("src/f{CHANGED:03}.c");
    std::fs::write(lp.join("new.c"), source(CHANGED, 1))?;
    let diff = Command::new("diff")
        .args(["-u", &changed, "new.c"])
        .current_dir(&lp)
        .output()?;
    std::fs::write(lp.join("change.patch"), &diff.stdout)?;
    std::fs::remove_file(lp.join("new.c"))?;

    run(Command::new("make")
        .args(["-j2", "-s"])
        .current_dir(&plain)
        .stdout(Stdio::null()))?;
    let path = format!(
        "{}:{}",
        tools.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let patch_make = || {
        let mut c = Command::new(tools.path("libcare-patch-make"));
        c.args(["-j", "2", "-i", "0001", "change.patch"])
            .current_dir(&lp)
            .env("PATH", &path);
        c
    };
    let mut first = patch_make();
    first.arg("--clean");
    timed(&mut first).context("first libcare-patch-make")?;

    let mut make_ms = Vec::new();
    let mut lp_ms = Vec::new();
    for i in 0..TRIALS {
        std::fs::write(plain.join(&changed), source(CHANGED, 1 + (i % 2) as u32))?;
        make_ms.push(timed(
            Command::new("make").args(["-j2", "-s"]).current_dir(&plain),
        )?);
        lp_ms.push(timed(&mut patch_make())?);
    }
    Ok((Stats::of(&make_ms), Stats::of(&lp_ms)))
}

/// Inside a new PID namespace (see `pall_outer`): starts `n` copies of the guide's program,
/// times `libcare-ctl patch -p all` and `unpatch -p all` and prints "pall N MS" lines.
pub fn pall_inner(bin: &Path, exe: &Path, patches: &Path, n: usize, trials: usize) -> Result<()> {
    let mut children = Vec::new();
    for _ in 0..n {
        children.push(Command::new(exe).stdout(Stdio::null()).spawn()?);
    }
    // Let every copy get past its start.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ctl = |args: &[&str]| -> Result<f64> {
        timed(
            Command::new(bin.join("libcare-ctl"))
                .args(args)
                .env("LIBCARE_LOCK_DIR", patches.join("../locks")),
        )
    };
    let mut result = Ok(());
    for _ in 0..trials {
        match ctl(&["patch", "-p", "all", &patches.to_string_lossy()]) {
            Ok(ms) => println!("pall {n} {ms}"),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = ctl(&["unpatch", "-p", "all"]) {
            result = Err(e);
            break;
        }
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

/// `-p all` over 1 and 100 processes, each run inside `unshare --fork --pid --mount-proc` so
/// that "all" means only the benchmark's processes.
pub fn pall(tools: &Tools, work: &Path, guide: &Path) -> Result<(Stats, Stats)> {
    let dir = work.join("pall");
    let patches = dir.join("patches");
    std::fs::create_dir_all(&patches)?;
    for f in ["foo.c", "bar.c"] {
        std::fs::copy(guide.join(f), dir.join(f))?;
    }
    let exe = super::build::manual(tools, &dir, "foo.c", "bar.c", &patches)?;
    let me = std::env::current_exe()?;
    let mut out = Vec::new();
    for n in [1usize, 100] {
        let o = Command::new("unshare")
            .args(["--fork", "--pid", "--mount-proc"])
            .arg(&me)
            .args([
                "bench-pall-inner",
                &tools.bin.to_string_lossy(),
                &exe.to_string_lossy(),
                &patches.to_string_lossy(),
                &n.to_string(),
                &TRIALS.to_string(),
            ])
            .output()?;
        if !o.status.success() {
            bail!(
                "-p all benchmark with {n} processes failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let ms: Vec<f64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
            .collect();
        out.push(Stats::of(&ms));
    }
    Ok((out[0], out[1]))
}
