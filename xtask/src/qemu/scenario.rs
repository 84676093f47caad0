//! The scenarios of `cargo xtask test-qemu`, each on a QEMU of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::build::{Built, CVE};
use super::machine::{self, Config, Machine};
use super::qmp::{Load, Window};
use super::vnc::Vnc;
use crate::bench::probe::frozen_us;
use crate::bench::stats::Stats;

/// What the main patch appends to `query-version`'s package string.
const MARK: &str = "(live-patched: CVE-2023-3255)";
/// What the mirror patch appends to `mirror_run`'s size-mismatch error.
const MIRROR_MARK: &str = "(live-patched)";
/// Patch and unpatch rounds on one QEMU.
const ROUNDS: usize = 20;
/// Guest memory of the scenarios (MiB).
const GUEST_MIB: u64 = 512;
/// How long a scenario waits for something QEMU is expected to do.
const WAIT: Duration = Duration::from_secs(60);

pub struct Env {
    exe: PathBuf,
    data: PathBuf,
    main: PathBuf,
    mirror: PathBuf,
    ctl: PathBuf,
    firmware: PathBuf,
    work: PathBuf,
}

impl Env {
    pub fn new(root: &Path, built: &Built, tools: &Path) -> Result<Env> {
        let work = crate::target_dir(root).join("qemu/run");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        Ok(Env {
            exe: built.exe.clone(),
            data: built.data.clone(),
            main: built.main.clone(),
            mirror: built.mirror.clone(),
            ctl: tools.join("libcare-ctl"),
            firmware: machine::firmware(root, &work)?,
            work,
        })
    }

    fn start(&self, name: &str) -> Result<(Machine, Load)> {
        let m = Machine::start(&Config {
            exe: &self.exe,
            data: &self.data,
            firmware: &self.firmware,
            dir: &self.work.join(name),
            mem_mib: GUEST_MIB,
            prealloc: false,
        })?;
        let load = Load::start(&m.socket("qmp-load.sock"))?;
        Ok((m, load))
    }

    /// `libcare-ctl ARGS` with `env`; its output, whatever its exit status.
    fn ctl(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        Command::new(&self.ctl)
            .args(args)
            .env("LIBCARE_LOCK_DIR", self.work.join("locks"))
            .envs(env.iter().copied())
            .output()
            .context("cannot run libcare-ctl")
    }

    /// `libcare-ctl ARGS`, which must succeed; its standard output.
    fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl(args, &[])?;
        if !out.status.success() {
            bail!("libcare-ctl {} failed: {}", args.join(" "), both(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn patch(&self, pid: u32, file: &Path) -> Result<u64> {
        let out = self.ctl_ok(&["patch", "-p", &pid.to_string(), &file.to_string_lossy()])?;
        frozen_us(&out).with_context(|| format!("no frozen time in {out:?}"))
    }

    fn unpatch(&self, pid: u32, id: &str) -> Result<u64> {
        let out = self.ctl_ok(&["unpatch", "-p", &pid.to_string(), "-i", id])?;
        frozen_us(&out).with_context(|| format!("no frozen time in {out:?}"))
    }

    /// The patch ids `libcare-ctl info` lists.
    fn applied(&self, pid: u32) -> Result<Vec<String>> {
        let out = self.ctl_ok(&["info", "-p", &pid.to_string()])?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("Patch id:"))
            .map(|id| id.trim().to_owned())
            .collect())
    }
}

/// A command's standard output and error.
fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One round's measurements.
struct Round {
    frozen_on: u64,
    frozen_off: u64,
    on: Window,
    off: Window,
}

/// 20 rounds of patch, info, unpatch on a running QEMU while a client keeps querying; each
/// round checks what `query-version` shows and that QEMU answered throughout.
pub fn rounds(env: &Env) -> Result<()> {
    let (mut m, load) = env.start("rounds")?;
    let pid = m.pid();
    let plain = m.qmp.package()?;
    ensure!(!plain.contains(MARK), "unpatched QEMU already shows {MARK}");
    load.take()?;
    let mut rounds = Vec::new();
    println!("round | patch frozen_time µs | longest QMP answer during patch ms | unpatch frozen_time µs | longest during unpatch ms | answers");
    for n in 1..=ROUNDS {
        let frozen_on = env.patch(pid, &env.main)?;
        let on = load.take()?;
        let package = m.qmp.package()?;
        ensure!(
            package == format!("{plain} {MARK}"),
            "round {n}: query-version says {package:?} once patched"
        );
        let ids = env.applied(pid)?;
        ensure!(ids == ["cve"], "round {n}: info lists {ids:?}");
        let frozen_off = env.unpatch(pid, "cve")?;
        let off = load.take()?;
        let package = m.qmp.package()?;
        ensure!(
            package == plain,
            "round {n}: query-version says {package:?} once unpatched"
        );
        ensure!(env.applied(pid)?.is_empty(), "round {n}: a patch is left");
        m.check_alive()?;
        println!(
            "{n:5} | {frozen_on:20} | {:34.1} | {frozen_off:22} | {:25.1} | {}",
            ms(on.longest),
            ms(off.longest),
            on.answers + off.answers
        );
        rounds.push(Round {
            frozen_on,
            frozen_off,
            on,
            off,
        });
    }
    let stats = |f: &dyn Fn(&Round) -> f64| Stats::of(&rounds.iter().map(f).collect::<Vec<_>>());
    for (what, s) in [
        ("patch frozen_time (µs)", stats(&|r| r.frozen_on as f64)),
        ("unpatch frozen_time (µs)", stats(&|r| r.frozen_off as f64)),
        (
            "longest QMP answer, patch (ms)",
            stats(&|r| ms(r.on.longest)),
        ),
        (
            "longest QMP answer, unpatch (ms)",
            stats(&|r| ms(r.off.longest)),
        ),
    ] {
        println!(
            "{what}: median {:.1}, p90 {:.1}, max {:.1}",
            s.median, s.p90, s.max
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The CVE's trigger, sent over VNC: harmless to the patched QEMU; the unpatched one is then
/// shown to hang in the function the patch replaces.
pub fn cve(env: &Env) -> Result<()> {
    let (mut m, load) = env.start("cve")?;
    let pid = m.pid();
    env.patch(pid, &env.main)?;
    let mut vnc = Vnc::connect(&m.socket("vnc.sock"))?;
    vnc.send_cve_2023_3255()?;
    // QEMU answers a message sent after the trigger: the main loop came back from it.
    vnc.enable_clipboard()
        .context("the patched QEMU did not come back from the trigger")?;
    load.take()?;
    ensure!(m.qmp.package()?.contains(MARK));
    m.check_alive()?;
    println!("the patched QEMU handled {CVE}'s trigger and answers");
    env.unpatch(pid, "cve")?;
    load.take()?;

    let mut vnc = Vnc::connect(&m.socket("vnc.sock"))?;
    vnc.send_cve_2023_3255()?;
    busy_main_thread(pid)?;
    let out = env.ctl(
        &["patch", "-p", &pid.to_string(), &env.main.to_string_lossy()],
        &[("LIBCARE_SAFETY_TIMEOUT", "2")],
    )?;
    let text = both(&out);
    ensure!(
        !out.status.success()
            && (text.contains("inflate_buffer") || text.contains("vnc_client_cut_text_ext")),
        "the unpatched QEMU's main loop should be stuck in the vulnerable function, and the patch refused: {text}"
    );
    println!("the unpatched QEMU's main loop spins in the vulnerable code; libcare-ctl refused to patch under it:");
    for l in text.lines().filter(|l| l.contains("safety")) {
        println!("  {l}");
    }
    drop(load);
    Ok(())
}

/// Waits until the main thread of `pid` has used a second of CPU time after now (an idle
/// QEMU's main loop uses a few percent of a CPU).
fn busy_main_thread(pid: u32) -> Result<()> {
    let cpu = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').context("bad stat")?.1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|x| x.parse().ok())
            .collect();
        Ok(f.iter().sum())
    };
    // /proc counts in USER_HZ, 100 per second on Linux whatever the kernel's HZ.
    let ticks = 100;
    let start = cpu()?;
    let deadline = Instant::now() + WAIT;
    while cpu()? < start + ticks {
        ensure!(
            Instant::now() < deadline,
            "the main thread of the unpatched QEMU did not spin after the trigger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A mirror block job on qcow2 images: its coroutine sits in `mirror_run` for the whole job,
/// so a patch of `mirror_run` must fail cleanly while it runs, while the main patch (functions
/// no coroutine is in) applies under the job's I/O; once the job is gone `mirror_run` is
/// patched and the next job runs the new code.
pub fn coroutines(env: &Env) -> Result<()> {
    let dir = env.work.join("images");
    std::fs::create_dir_all(&dir)?;
    let img = |name: &str| dir.join(name).display().to_string();
    let qemu_img = |args: &[&str]| crate::run(Command::new("qemu-img").args(args));
    qemu_img(&["create", "-q", "-f", "qcow2", &img("src.qcow2"), "128M"])?;
    crate::run(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -q -P 0x5a 0 128M"])
            .arg(img("src.qcow2")),
    )?;
    qemu_img(&["create", "-q", "-f", "qcow2", &img("dst.qcow2"), "128M"])?;
    qemu_img(&["create", "-q", "-f", "qcow2", &img("small.qcow2"), "64M"])?;

    let (mut m, load) = env.start("coroutines")?;
    let pid = m.pid();
    for node in ["src", "dst", "small"] {
        m.qmp.execute(
            "blockdev-add",
            json!({"driver": "qcow2", "node-name": node,
                   "file": {"driver": "file", "filename": img(&format!("{node}.qcow2"))}}),
        )?;
    }
    // 4 MiB/s: the 128 MiB copy goes on for about 30 s, up to 16 requests in flight.
    m.qmp.execute(
        "blockdev-mirror",
        json!({"job-id": "m0", "device": "src", "target": "dst", "sync": "full",
               "speed": 4 << 20}),
    )?;
    let first = job_offset(&mut m, "m0", 0)?;

    let out = env.ctl(
        &[
            "-v",
            "patch",
            "-p",
            &pid.to_string(),
            &env.mirror.to_string_lossy(),
        ],
        &[],
    )?;
    let text = both(&out);
    ensure!(
        !out.status.success() && text.contains("mirror_run") && text.contains("coroutine"),
        "patching mirror_run under the job's coroutine must fail, naming it: {text}"
    );
    ensure!(
        env.applied(pid)?.is_empty(),
        "the failed patch left something"
    );
    println!("mirror_run, where the job's coroutine is suspended, was refused:");
    for l in text.lines().filter(|l| l.contains("mirror_run")) {
        println!("  {l}");
    }

    let before = job_offset(&mut m, "m0", first)?;
    let frozen = env.patch(pid, &env.main)?;
    ensure!(m.qmp.package()?.contains(MARK));
    let during = load.take()?;
    let after = job_offset(&mut m, "m0", before)?;
    env.unpatch(pid, "cve")?;
    println!(
        "patched under the job's I/O (offset {before} -> {after} while patched): frozen_time {frozen} µs, longest QMP answer {:.1} ms",
        ms(during.longest)
    );

    m.qmp
        .execute("block-job-cancel", json!({"device": "m0", "force": true}))?;
    m.qmp.wait_event("BLOCK_JOB_CANCELLED", WAIT)?;
    env.patch(pid, &env.mirror)?;
    let error = mirror_error(&mut m, "m1")?;
    ensure!(
        error.contains(MIRROR_MARK),
        "a job started after the patch runs the old mirror_run: {error:?}"
    );
    env.unpatch(pid, "mirror")?;
    let error = mirror_error(&mut m, "m2")?;
    ensure!(
        !error.contains(MIRROR_MARK),
        "a job started after the unpatch runs the patched mirror_run: {error:?}"
    );
    println!("once the job was gone, mirror_run was patched: the next job said {MIRROR_MARK}, and after the unpatch it did not");
    load.take()?;
    m.check_alive()
}

/// Waits until job `id` is running and its offset is past `past`; returns the offset.
fn job_offset(m: &mut Machine, id: &str, past: u64) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = m.qmp.execute("query-block-jobs", json!({}))?;
        let job = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["device"] == id))
            .with_context(|| format!("job {id} is gone: {jobs}"))?;
        ensure!(
            job["status"] == "running" && job["ready"] == false,
            "job {id} should still be copying: {job}"
        );
        let offset = job["offset"].as_u64().unwrap_or(0);
        if offset > past {
            return Ok(offset);
        }
        ensure!(
            Instant::now() < deadline,
            "job {id} made no progress: {job}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a mirror job from `src` to the smaller `small`; returns the error it ends with
/// (`mirror_run` refuses images of different sizes).
fn mirror_error(m: &mut Machine, id: &str) -> Result<String> {
    m.qmp.execute(
        "blockdev-mirror",
        json!({"job-id": id, "device": "src", "target": "small", "sync": "full"}),
    )?;
    let ev: Value = m.qmp.wait_event("BLOCK_JOB_COMPLETED", WAIT)?;
    ensure!(ev["data"]["device"] == id, "unexpected event {ev}");
    ev["data"]["error"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("job {id} ended without an error: {ev}"))
}
