//! Start-up patching's cost, in a private PID namespace (the service looks at every running
//! process): how long a program takes from `exec` to exit with `libcare-server --self-load`
//! running (watching another program's file) and without it; and how much later a program
//! whose file has a patch in the storage gets there, patched at start-up, than without the
//! service, against the patch's own apply time (the engine's, which the service logs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::stats::Stats;
use super::Tools;

/// Executions per series.
const RUNS: usize = 200;

/// The series, in ms (exec to exit) and µs (the service's own figures).
pub struct SelfLoadStats {
    pub plain_off: Stats,
    pub plain_on: Stats,
    pub patched_off: Stats,
    pub patched_on: Stats,
    /// The engine's apply time and the whole hold, per start-up (µs).
    pub apply_us: Stats,
    pub held_us: Stats,
}

/// Builds the programs and runs the measurements in a new PID namespace.
pub fn selfload(tools: &Tools, work: &Path, hello_c: &Path) -> Result<SelfLoadStats> {
    let dir = work.join("selfload");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage)?;
    std::fs::copy(hello_c, dir.join("hello.c"))?;
    std::fs::write(
        dir.join("new.c"),
        "#define PATCHED 1\n#include \"hello.c\"\n",
    )?;
    let patched = super::build::manual(tools, &dir, "hello.c", "new.c", &storage)?;
    // Another build-id: no patch is for it.
    crate::run(
        Command::new("gcc")
            .args(["-O1", "-o", "plain", "hello.c"])
            .current_dir(&dir),
    )?;
    let me = std::env::current_exe()?;
    let o = Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(&me)
        .arg("bench-selfload-inner")
        .arg(&tools.bin)
        .arg(&dir)
        .arg(&patched)
        .arg(RUNS.to_string())
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        bail!(
            "self-load benchmark failed: {}{}",
            out,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let series = |key: &str| -> Stats {
        let v: Vec<f64> = out
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .collect();
        Stats::of(&v)
    };
    Ok(SelfLoadStats {
        plain_off: series("plain-off "),
        plain_on: series("plain-on "),
        patched_off: series("patched-off "),
        patched_on: series("patched-on "),
        apply_us: series("apply "),
        held_us: series("held "),
    })
}

/// ms from spawning `exe` (one line, then exit) to its exit.
fn exec_ms(exe: &Path) -> Result<f64> {
    let t = Instant::now();
    let status = Command::new(exe)
        .args(["b", "1"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{} failed: {status}", exe.display());
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// The first line `exe` prints.
fn first_line(exe: &Path) -> Result<String> {
    let o = Command::new(exe).args(["b", "1"]).output()?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

/// Rounds of runs without, then with, the service: machine load that drifts over the
/// benchmark falls on both alike.
const ROUNDS: usize = 4;

/// Inside the namespace: prints `plain-off` and `patched-off` lines, then (service started)
/// `plain-on` and `patched-on` lines, in ms, [`ROUNDS`] times; then `apply` and `held` lines in
/// µs from the service's log.
pub fn selfload_inner(bin: &Path, dir: &Path, patched: &Path, runs: usize) -> Result<()> {
    let plain = dir.join("plain");
    let log_path = dir.join("service.log");
    let _ = std::fs::remove_file(&log_path);
    let per_round = runs.div_ceil(ROUNDS);
    for _ in 0..ROUNDS {
        // Each program in a block of its own: the work the service does after letting a
        // patched program go (its log, the engine's guardian ending) must not fall on the
        // next program's start.
        for _ in 0..per_round {
            println!("plain-off {}", exec_ms(&plain)?);
        }
        for _ in 0..per_round {
            println!("patched-off {}", exec_ms(patched)?);
        }
        let mut service = Service::start(bin, dir, &dir.join("storage"), dir, &log_path)?;
        let result = (|| -> Result<()> {
            let line = first_line(patched)?;
            if line != "b: patched" {
                bail!(
                    "the patched program printed {line:?} with the service running: {}",
                    std::fs::read_to_string(&log_path)?
                );
            }
            for _ in 0..per_round {
                println!("plain-on {}", exec_ms(&plain)?);
            }
            for _ in 0..per_round {
                println!("patched-on {}", exec_ms(patched)?);
            }
            Ok(())
        })();
        service.stop();
        result?;
    }
    let text = std::fs::read_to_string(&log_path)?;
    for l in text.lines().filter(|l| l.contains("patched at start-up")) {
        let num = |key: &str| -> Option<f64> {
            l.split(key).nth(1)?.split_whitespace().next()?.parse().ok()
        };
        let (apply, held) = num("(patching ")
            .zip(num("held "))
            .context("a start-up line without its times")?;
        println!("apply {apply}");
        println!("held {held}");
    }
    Ok(())
}

/// `libcare-server --self-load` on `storage`, searching `search`, with its socket, lock
/// directory, audit trail and (empty) key directory in `dir`, logging to `log` (appended):
/// never the machine's keys or system log; killed when dropped.
pub(crate) struct Service(std::process::Child);

impl Service {
    pub(crate) fn start(
        bin: &Path,
        search: &Path,
        storage: &Path,
        dir: &Path,
        log: &Path,
    ) -> Result<Service> {
        let socket = dir.join("selfload.sock");
        let _ = std::fs::remove_file(&socket);
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin.join("libcare-server"))
            .arg("--self-load")
            .arg("--search")
            .arg(search)
            .arg(&socket)
            .arg(storage)
            .env("LIBCARE_LOCK_DIR", dir.join("locks"))
            .env("LIBCARE_KEYS", &keys)
            .env("LIBCARE_AUDIT_LOG", dir.join("audit.log"))
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()?;
        let mut service = Service(child);
        let start = Instant::now();
        while !socket.exists() {
            if start.elapsed() > Duration::from_secs(30) {
                service.stop();
                bail!(
                    "the service did not start: {}",
                    std::fs::read_to_string(log)?
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(service)
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of the inner command's arguments.
pub fn inner_args(args: &[String]) -> Result<(PathBuf, PathBuf, PathBuf, usize)> {
    let [bin, dir, patched, runs] = args else {
        bail!("bench-selfload-inner: wrong arguments")
    };
    Ok((bin.into(), dir.into(), patched.into(), runs.parse()?))
}
