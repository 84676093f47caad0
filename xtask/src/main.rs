//! Project tasks: `cargo xtask demo | test | fuzz | deb | bench | test-aarch64 | test-qemu | test-debian-cxx`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

mod aarch64;
mod bench;
mod deb;
mod demo;
mod fuzz;
mod qemu;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `$TMPDIR/PREFIX-PID`, empty.
pub fn temp_dir(prefix: &str) -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// Cargo, in the repository.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn test() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    fuzz::smoke(&root())?;
    deb::check::check(&root())
}

/// A real C++ program from Debian's source packages (GNU Chess), built with
/// libcare-patch-make, patched and unpatched live (`xtask/debian/gnuchess.sh`).
fn test_debian_cxx() -> Result<()> {
    run(cargo().args(["build", "--bins"]))?;
    let root = root();
    let target = target_dir(&root);
    run(Command::new("sh")
        .arg(root.join("xtask/debian/gnuchess.sh"))
        .arg(target.join("debian-cxx"))
        .arg(target.join("debug")))
}

/// `bench-pall-inner BIN EXE PATCHES N TRIALS`, run by the bench inside a new PID namespace.
fn pall_inner(args: &[String]) -> Result<()> {
    let [bin, exe, patches, n, trials] = args else {
        bail!("bench-pall-inner: wrong arguments")
    };
    bench::project::pall_inner(
        Path::new(bin),
        Path::new(exe),
        Path::new(patches),
        n.parse()?,
        trials.parse()?,
    )
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <demo|test|fuzz|deb [--debug]|deb-check|bench [pause|size|overhead|build|pall|coro|coro-memory|qemu]...|test-aarch64 [SCENARIO...]|test-qemu [SCENARIO...]|test-debian-cxx>"
    );
    eprintln!(
        "  demo   build a patch from a diff, apply it to a running process, show it, revert it"
    );
    eprintln!(
        "  test   formatting, lints, unit and end-to-end tests, a short run of each fuzz target, the package's checks"
    );
    eprintln!(
        "  fuzz [TARGET...] [--runs N|--seconds S]  long fuzz runs (default 10^6 executions each); targets: {}",
        fuzz::TARGETS.join(" ")
    );
    eprintln!(
        "  deb    the Debian package, in target/deb/release/ (--debug: dev profile, target/deb/debug/)"
    );
    eprintln!("  deb-check  the package's checks alone (part of test)");
    eprintln!("  bench  measure pauses, patch size, call overhead; writes BENCHMARKS.md");
    eprintln!(
        "  test-aarch64  the end-to-end scenarios in an emulated aarch64 machine (qemu); scenarios: {}",
        aarch64::SCENARIOS.join(" ")
    );
    eprintln!(
        "  test-qemu  Debian's QEMU 7.2 built with libcare-patch-make, patched live under QMP and block-job load; scenarios: {}",
        qemu::SCENARIOS.join(" ")
    );
    eprintln!(
        "  test-debian-cxx  GNU Chess from Debian's source package, built with libcare-patch-make and patched live"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run_demo(&root()),
        Some("test") => test(),
        Some("deb") => deb::run_deb(&root(), &args[1..]),
        Some("deb-check") => deb::check::check(&root()),
        Some("bench") => bench::run_bench(&root(), &args[1..]),
        Some("bench-pall-inner") => pall_inner(&args[1..]),
        Some("test-aarch64") => aarch64::test_aarch64(&root(), &args[1..]),
        Some("test-qemu") => qemu::test_qemu(&root(), &args[1..]),
        Some("test-debian-cxx") => test_debian_cxx(),
        Some("fuzz") => fuzz::long(&root(), &args[1..]),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
