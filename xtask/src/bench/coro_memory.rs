//! `cargo xtask bench coro-memory`: how long a patch and an unpatch hold a process with
//! coroutines (libcare-ctl's frozen time), against the size of its guest-like memory (marked
//! `MADV_DONTFORK`, written whole as with `-mem-prealloc`; never read) and of its heap (searched
//! for saved contexts while the process runs). The target is the runtime tests' coroutine
//! fixture, `tests/fixtures/runtime/coro.c` built with `-DIDLE`, given 64 more idle coroutines
//! (66 in all, each switched every 50 ms); the patch changes `tick()`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::probe;
use super::stats::Stats;
use super::{build, Tools, TRIALS};

/// Idle coroutines added to the fixture's two.
const IDLE: usize = 64;

/// One configuration: guest memory and heap data, in MiB.
struct Config {
    guest: u64,
    heap: u64,
}

/// The fixture, started with its memory filled; killed on drop.
struct Target(Child);

impl Target {
    fn start(exe: &Path, c: &Config) -> Result<Target> {
        let mut child = Command::new(exe)
            .env("CORO_GUEST_MIB", c.guest.to_string())
            .env("CORO_HEAP_MIB", c.heap.to_string())
            .env("CORO_IDLE", IDLE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        // The first tick comes once everything is written; stdout is read on to the end.
        let out = child.stdout.take().context("fixture stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut told = false;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if !told && line.starts_with("tick") {
                    told = tx.send(()).is_ok();
                }
            }
        });
        let target = Target(child);
        rx.recv_timeout(Duration::from_secs(120))
            .context("the coroutine fixture did not start ticking")?;
        Ok(target)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the fixture and its patch of `tick()` (the tests' manual pipeline).
fn build_fixture(tools: &Tools, work: &Path, root: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = work.join("coro-memory");
    std::fs::create_dir_all(&dir)?;
    let src = root.join("tests/fixtures/runtime/coro.c");
    std::fs::copy(&src, dir.join("coro.c"))?;
    std::fs::write(dir.join("orig.c"), "#define IDLE 1\n#include \"coro.c\"\n")?;
    std::fs::write(
        dir.join("new.c"),
        "#define IDLE 1\n#define PATCHED 2\n#include \"coro.c\"\n",
    )?;
    let patches = dir.join("patches");
    std::fs::create_dir_all(&patches)?;
    let exe = build::manual(tools, &dir, "orig.c", "new.c", &patches)?;
    let patch = std::fs::read_dir(&patches)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "kpatch"))
        .context("no patch built")?;
    Ok((exe, patch))
}

/// The frozen times of `TRIALS` patches and unpatches of one running fixture (µs).
fn trials(
    tools: &Tools,
    work: &Path,
    exe: &Path,
    patch: &Path,
    c: &Config,
) -> Result<(Stats, Stats)> {
    let target = Target::start(exe, c)?;
    let pid = target.0.id().to_string();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        let out = probe::ctl(
            tools,
            work,
            &["patch", "-p", &pid, patch.to_str().unwrap_or_default()],
        )?;
        on.push(probe::frozen_us(&out).context("libcare-ctl printed no frozen time")? as f64);
        let out = probe::ctl(tools, work, &["unpatch", "-p", &pid])?;
        off.push(probe::frozen_us(&out).context("libcare-ctl printed no frozen time")? as f64);
    }
    Ok((Stats::of(&on), Stats::of(&off)))
}

/// MemAvailable, in MiB.
fn available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 10)
}

/// Runs every configuration that fits in the machine's free memory; returns the section of
/// BENCHMARKS.md.
pub fn run(tools: &Tools, work: &Path, root: &Path) -> Result<String> {
    let t0 = Instant::now();
    let (exe, patch) = build_fixture(tools, work, root)?;
    let configs = [
        Config {
            guest: 128,
            heap: 128,
        },
        Config {
            guest: 1024,
            heap: 128,
        },
        Config {
            guest: 8192,
            heap: 128,
        },
        Config {
            guest: 1024,
            heap: 16,
        },
        Config {
            guest: 1024,
            heap: 1024,
        },
    ];
    let mut s = String::new();
    writeln!(
        s,
        "\n## 1c. Pause with coroutines against guest memory and heap ({} coroutines, 1 thread)\n",
        IDLE + 2
    )?;
    writeln!(s, "libcare-ctl's frozen time (µs) patching a process whose coroutines switch with `sigsetjmp`/`siglongjmp` (`tests/fixtures/runtime/coro.c -DIDLE`): guest-like memory marked `MADV_DONTFORK` and written whole (as with `-mem-prealloc`), which is never read; heap data in small blocks, searched for saved contexts while the process runs, the stop searching only the pages written since. {TRIALS} trials each.\n")?;
    writeln!(
        s,
        "| guest memory | heap data | patch median / p90 | unpatch median / p90 |"
    )?;
    writeln!(s, "|---|---|---|---|")?;
    let mut ran = 0;
    for c in &configs {
        // Room for the target, with a margin for everything else on the machine.
        if available_mib() < c.guest + c.heap + 2048 {
            eprintln!(
                "bench: coro-memory: not enough free memory for a {} MiB guest",
                c.guest
            );
            continue;
        }
        let (on, off) = trials(tools, work, &exe, &patch, c)?;
        writeln!(
            s,
            "| {} MiB | {} MiB | {:.0} / {:.0} | {:.0} / {:.0} |",
            c.guest, c.heap, on.median, on.p90, off.median, off.p90
        )?;
        ran += 1;
    }
    if ran == 0 {
        bail!("no configuration fits in the free memory");
    }
    eprintln!(
        "bench: coro-memory took {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(s)
}
