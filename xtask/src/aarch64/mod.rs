//! `cargo xtask test-aarch64`: the end-to-end scenarios on a real aarch64 Linux kernel under
//! qemu-system-aarch64 (TCG). On the host: install what is missing, cross-build `libcare-ctl`,
//! build each scenario's programs and patches with the host tools, pack them into an
//! initramfs; in the guest, `tests/aarch64/run.sh` runs the scenarios and prints one verdict
//! line each, which the host collects into a summary.

mod console;
mod cpio;
mod fixtures;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, run};
use console::Results;
use cpio::Cpio;
use fixtures::{Builder, Tools};

/// The scenarios `tests/aarch64/run.sh` runs, in order.
pub const SCENARIOS: &[&str] = &[
    "simplest", "shared", "glibc", "newfunc", "ifunc", "tls", "threads", "finish", "coro",
    "stacked", "killed", "storage", "server", "builder",
];
const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";
/// The aarch64 binaries the guest runs.
const GUEST_TOOLS: &[&str] = &["libcare-ctl", "libcare-server", "libcare-client"];
/// The verdict name of kpatch-process's live tests run in the guest.
const TARGET_LIVE: &str = "target-live";
/// How kpatch-process's live tests are told where prebuilt fixtures are.
const FIXTURES_ENV: &str = "KPATCH_TARGET_FIXTURES";
/// The whole guest run, boot included, must end within this.
const VM_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The aarch64 glibc files a dynamically linked program needs (from libc6-arm64-cross).
const GUEST_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
];
const CROSS_SYSROOT: &str = "/usr/aarch64-linux-gnu/lib";

fn say(s: &str) {
    println!("\n==> {s}");
}

/// Runs the scenarios named in `only` (all when empty); fails unless every one passed.
pub fn test_aarch64(root: &Path, only: &[String]) -> Result<()> {
    for s in only {
        if !SCENARIOS.contains(&s.as_str()) && s != TARGET_LIVE {
            bail!(
                "unknown scenario {s:?}; known: {} {TARGET_LIVE}",
                SCENARIOS.join(" ")
            );
        }
    }
    let started = Instant::now();
    let cache = root.join("target/aarch64-vm");
    say("installing what is missing (cross compiler, qemu, guest kernel and busybox)");
    run(Command::new("sh")
        .arg(root.join("xtask/aarch64/setup.sh"))
        .arg(&cache))?;

    say("building the host tools and the aarch64 libcare-ctl, libcare-server, libcare-client");
    run(cargo().args(["build", "--release", "--bins", "-p", "libcare"]))?;
    run(cargo()
        .args(["build", "--release", "--target", RUST_TARGET])
        .args(["-p", "libcare"])
        .args(GUEST_TOOLS.iter().flat_map(|b| ["--bin", b]))
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            fixtures::CC,
        ))?;
    let tdir = crate::target_dir(root);
    let host = tdir.join("release");
    let tools = Tools {
        gensrc: host.join("kpatch_gensrc"),
        strip: host.join("kpatch_strip"),
        make: host.join("kpatch_make"),
    };

    say("building the scenarios' programs and patches");
    let builder = Builder {
        src: root.join("tests/aarch64"),
        work: cache.join("build"),
        stage: cache.join("stage"),
        tools: &tools,
    };
    builder.build_all()?;
    builder.build_with_patch_make(&root.join("tests/fixtures/guide"), &host)?;
    let bin = builder.stage.join("bin");
    std::fs::create_dir_all(&bin)?;
    for tool in GUEST_TOOLS {
        run(Command::new("aarch64-linux-gnu-strip")
            .arg("-o")
            .arg(bin.join(tool))
            .arg(tdir.join(RUST_TARGET).join("release").join(tool)))?;
    }
    std::fs::copy(
        root.join("tests/aarch64/run.sh"),
        builder.stage.join("run.sh"),
    )?;
    let live =
        (only.is_empty() || only.iter().any(|s| s == TARGET_LIVE)) && target_live_supported(root);
    if live {
        say("building kpatch-process's live tests and their fixtures for aarch64");
        build_target_live(root, &builder.stage)?;
    }

    say("packing the initramfs");
    let initrd = cache.join("initrd.cpio");
    let archive = initramfs(&cache, &builder.stage, &root.join("xtask/aarch64/init"))?;
    std::fs::write(&initrd, archive).with_context(|| format!("write {}", initrd.display()))?;

    say("booting the aarch64 VM (qemu-system-aarch64, TCG)");
    let scenarios: Vec<&str> = if only.is_empty() {
        SCENARIOS.to_vec()
    } else {
        only.iter()
            .map(String::as_str)
            .filter(|s| *s != TARGET_LIVE)
            .collect()
    };
    // The kernel hands KEY=VALUE words of its command line to /init as environment.
    let append = format!(
        "console=ttyAMA0 panic=-1 quiet loglevel=3 SCENARIOS={}",
        if scenarios.is_empty() {
            "none".to_owned()
        } else {
            scenarios.join(",")
        }
    );
    let lines = vm::boot(&cache.join("Image"), &initrd, &append, VM_TIMEOUT)?;
    let mut expected = scenarios;
    if live {
        expected.push(TARGET_LIVE);
    }
    let results = console::results(lines.iter().map(String::as_str), &expected);
    summary(&results, started.elapsed());
    if !results.success() {
        bail!("aarch64 scenarios failed");
    }
    Ok(())
}

/// Whether kpatch-process's live tests can take prebuilt fixtures (the guest has no compiler).
fn target_live_supported(root: &Path) -> bool {
    std::fs::read_to_string(root.join("crates/kpatch-process/tests/live/harness.rs"))
        .is_ok_and(|s| s.contains(FIXTURES_ENV))
}

/// Cross-builds kpatch-process's `live` test binary (as `/tests/target-live`) and compiles its
/// fixture programs into `/tests/target-fixtures`.
fn build_target_live(root: &Path, stage: &Path) -> Result<()> {
    let out = cargo()
        .args(["test", "--release", "--no-run", "--target", RUST_TARGET])
        .args([
            "-p",
            "kpatch-process",
            "--test",
            "live",
            "--message-format=json",
        ])
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            fixtures::CC,
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cross-building kpatch-process's live tests failed");
    }
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#) && l.contains(r#""test":true"#))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .context("cargo did not name the live test binary")?;
    run(Command::new("aarch64-linux-gnu-strip")
        .arg("-o")
        .arg(stage.join("target-live"))
        .arg(&exe))?;
    let fixtures = stage.join("target-fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let src = root.join("tests/fixtures/process");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .with_context(|| format!("read {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    for c in sources {
        let name = c.file_stem().context("fixture name")?;
        run(Command::new(fixtures::CC)
            .args(["-O2", "-g", "-Wall", "-pthread", "-o"])
            .arg(fixtures.join(name))
            .arg(&c))?;
    }
    Ok(())
}

fn summary(r: &Results, took: Duration) {
    println!("\naarch64 scenarios ({} s):", took.as_secs());
    for v in &r.verdicts {
        if v.passed && v.reason.is_empty() {
            println!("  PASS  {}", v.name);
        } else if v.passed {
            println!("  PASS  {} ({})", v.name, v.reason);
        } else {
            println!("  FAIL  {}: {}", v.name, v.reason);
        }
    }
    if !r.done {
        println!("  the guest did not reach the end of its run");
    }
    let (passed, failed) = r.counts();
    println!("aarch64: {passed} passed, {failed} failed");
}

/// Busybox, the aarch64 glibc, `/init` and the stage (as `/tests`) in one archive.
fn initramfs(cache: &Path, stage: &Path, init: &Path) -> Result<Vec<u8>> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "lib",
        "lib/aarch64-linux-gnu",
    ] {
        c.dir(d);
    }
    c.char_device("dev/console", 0o600, 5, 1);
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    c.file("bin/busybox", 0o755, &read(&cache.join("busybox"))?);
    c.file("init", 0o755, &read(init)?);
    let sysroot = Path::new(CROSS_SYSROOT);
    c.file(
        "lib/ld-linux-aarch64.so.1",
        0o755,
        &read(&sysroot.join("ld-linux-aarch64.so.1"))?,
    );
    for l in GUEST_LIBS {
        let p = sysroot.join(l);
        if p.exists() {
            c.file(&format!("lib/aarch64-linux-gnu/{l}"), 0o755, &read(&p)?);
        }
    }
    add_tree(&mut c, stage, "tests")?;
    Ok(c.finish())
}

fn add_tree(c: &mut Cpio, dir: &Path, at: &str) -> Result<()> {
    c.dir(at);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{at}/{}", e.file_name().to_string_lossy());
        let meta = std::fs::metadata(e.path())?;
        if meta.is_dir() {
            add_tree(c, &e.path(), &name)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let perm = meta.permissions().mode() & 0o777;
            c.file(&name, perm, &std::fs::read(e.path())?);
        }
    }
    Ok(())
}
