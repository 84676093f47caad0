//! `cargo xtask bench`: how long a patch holds the target, measured from inside the target,
//! against the floor of ptrace itself, with and without coroutines; plus patch size, build
//! time, `-p all`, call overhead, and the pause on QEMU. Results go to BENCHMARKS.md.

mod build;
mod coro_memory;
pub mod probe;
pub mod project;
mod qemu;
mod report;
pub mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{cargo, run};
use build::Variant;
use probe::Probe;
use report::Report;
use stats::Stats;

/// Trials per measurement (the issue asks for at least 20).
pub const TRIALS: usize = 25;

/// Our release binaries.
pub struct Tools {
    pub bin: PathBuf,
}

impl Tools {
    pub fn path(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// Patches and unpatches a running probe `TRIALS` times; returns the pauses the probe saw at
/// the switch (patch, unpatch) and the frozen times libcare-ctl reported.
fn pause_trials(
    tools: &Tools,
    v: &Variant,
    nidle: usize,
    work: &Path,
) -> Result<(Stats, Stats, Stats)> {
    let mut probe = Probe::start(&v.exe, &[&nidle.to_string()])?;
    let pid = probe.pid().to_string();
    let (mut on, mut off, mut frozen) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        let out = probe::ctl(
            tools,
            work,
            &["patch", "-p", &pid, v.patch.to_str().unwrap_or_default()],
        )?;
        let held = probe::frozen_us(&out).context("libcare-ctl printed no frozen time")?;
        frozen.push(held as f64);
        let (gap, at) = probe.wait_switch(2)?;
        on.push(probe.pause_around(gap, at, held)? as f64 / 1000.0);
        let out = probe::ctl(tools, work, &["unpatch", "-p", &pid])?;
        let held = probe::frozen_us(&out).context("libcare-ctl printed no frozen time")?;
        let (gap, at) = probe.wait_switch(1)?;
        off.push(probe.pause_around(gap, at, held)? as f64 / 1000.0);
    }
    Ok((Stats::of(&on), Stats::of(&off), Stats::of(&frozen)))
}

/// Stops and resumes every thread of a running probe `TRIALS` times through kpatch-process
/// (seize, interrupt, wait, release, nothing else), with the same primitive and ordering as a
/// patch (`Process::stop_all`: sleeping threads stopped first; running threads released
/// first); returns the longest stall the probe saw while the process was (partly) held.
fn floor_trials(v: &Variant, nidle: usize) -> Result<Stats> {
    let mut probe = Probe::start(&v.exe, &[&nidle.to_string()])?;
    let proc = kpatch_process::Process::open(probe.pid() as i32)?;
    let mut gaps = Vec::new();
    for _ in 0..TRIALS {
        let t0 = probe::monotonic_ns();
        let stopped = proc.stop_all(Duration::from_secs(10))?;
        stopped.resume()?;
        let t1 = probe::monotonic_ns();
        gaps.push(probe.gap_within(t0, t1)? as f64 / 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Stats::of(&gaps))
}

/// ns per call of the patched function: built in, built in and entered through one jump,
/// and patched in.
fn call_overhead(tools: &Tools, orig: &Variant, work: &Path) -> Result<(Stats, Stats, Stats)> {
    let built_in = |exe: &Path| -> Result<Stats> {
        let mut native = Probe::start(exe, &["callbench"])?;
        Ok(Stats::of(&native.samples("ns_per_call", 12)?))
    };
    let native = built_in(&orig.built_in)?;
    let via_jmp = built_in(&orig.built_in_jmp)?;
    let mut patched = Probe::start(&orig.exe, &["callbench"])?;
    let pid = patched.pid().to_string();
    probe::ctl(
        tools,
        work,
        &["patch", "-p", &pid, orig.patch.to_str().unwrap_or_default()],
    )?;
    // Let the first (partly unpatched) sample go by.
    patched.samples("ns_per_call", 2)?;
    let patched_ns = patched.samples("ns_per_call", 12)?;
    Ok((native, via_jmp, Stats::of(&patched_ns)))
}

/// Runs every section (and writes BENCHMARKS.md), or only the named ones (and prints them).
pub fn run_bench(root: &Path, only: &[String]) -> Result<()> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    run(cargo().args(["build", "--release", "--bins", "--quiet"]))?;
    let target = crate::target_dir(root);
    let tools = Tools {
        bin: target.join("release"),
    };
    let work = target.join("bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let src = root.join("tests/fixtures/bench/probe.c");
    let mut report = Report::new();

    eprintln!("bench: building probes and patches");
    let one = build::variant(&tools, &work, &src, "one", 0, &[])?;
    let hundred = build::variant(&tools, &work, &src, "hundred", 99, &[])?;
    let thousand = build::variant(&tools, &work, &src, "thousand", 999, &[])?;

    if want("pause") {
        eprintln!("bench: pause against the ptrace floor");
        for nidle in [1usize, 100, 1000] {
            let threads = nidle + 2;
            let floor = floor_trials(&one, nidle)?;
            let (on, off, frozen) = pause_trials(&tools, &one, nidle, &work)?;
            report.pause(threads, &floor, &on, &off, &frozen);
        }
    }
    if want("coro") {
        eprintln!("bench: pause with coroutines");
        let coro = build::variant(&tools, &work, &src, "coro", 0, &["-DCORO"])?;
        let (on, off, frozen) = pause_trials(&tools, &coro, 1, &work)?;
        report.coro(&on, &off, &frozen);
    }
    if want("size") {
        eprintln!("bench: pause against patch size");
        for (n, v) in [(1usize, &one), (100, &hundred), (1000, &thousand)] {
            let (on, off, _) = pause_trials(&tools, v, 1, &work)?;
            report.size(n, &on, &off);
        }
    }
    if want("overhead") {
        eprintln!("bench: call overhead");
        let (native, via_jmp, patched) = call_overhead(&tools, &one, &work)?;
        report.overhead(&native, &via_jmp, &patched);
    }

    if want("build") {
        eprintln!("bench: patch build time");
        let (make, lpmake) = project::build_time(&tools, &work)?;
        report.build_time(&make, &lpmake);
    }
    if want("pall") {
        eprintln!("bench: -p all");
        let (one_proc, hundred_procs) =
            project::pall(&tools, &work, &root.join("tests/fixtures/guide"))?;
        report.pall(&one_proc, &hundred_procs);
    }
    if want("coro-memory") {
        eprintln!("bench: pause with coroutines against guest memory and heap");
        report.section(coro_memory::run(&tools, &work, root)?);
    }

    if want("qemu") {
        eprintln!("bench: QEMU");
        report.qemu(qemu::qemu(root, &work)?);
    }

    let text = report.render()?;
    if only.is_empty() {
        std::fs::write(root.join("BENCHMARKS.md"), &text)?;
    }
    print!("{text}");
    Ok(())
}
