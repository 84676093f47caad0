//! `cargo xtask test-qemu`: the headline user. Debian 12's QEMU 7.2, built with
//! `libcare-patch-make` (`build`), runs a guest (`machine`) while a QMP client keeps querying
//! (`qmp`); the scenarios (`scenario`) patch and unpatch it, check what QMP shows, send the
//! CVE's trigger over VNC (`vnc`) and patch under block-job coroutines.

pub mod build;
pub mod machine;
pub mod qmp;
mod scenario;
mod vnc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::{cargo, run};

/// The scenarios, in order.
pub const SCENARIOS: &[&str] = &["rounds", "cve", "coroutines"];

/// Installs what is missing, builds QEMU and the patches (or finds them built) under
/// `target/qemu/`; returns the build and the directory of our release binaries.
pub fn prepare(root: &Path) -> Result<(build::Built, PathBuf)> {
    let cache = crate::target_dir(root).join("qemu");
    std::fs::create_dir_all(&cache)?;
    let cache = cache.canonicalize()?;
    println!("\n==> installing what is missing, Debian's QEMU 7.2 source");
    run(Command::new("sh")
        .arg(root.join("xtask/qemu/setup.sh"))
        .arg(&cache))?;
    println!("\n==> building our tools, QEMU and its patches");
    run(cargo().args(["build", "--release", "--bins", "-p", "libcare", "--quiet"]))?;
    let tools = crate::target_dir(root).join("release");
    let built = build::build(root, &cache, &tools)?;
    Ok((built, tools))
}

/// Runs the scenarios named in `only` (all when empty); fails unless every one passed.
pub fn test_qemu(root: &Path, only: &[String]) -> Result<()> {
    for s in only {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.join(" "));
        }
    }
    let started = Instant::now();
    let (built, tools) = prepare(root)?;
    let build_secs = started.elapsed().as_secs_f64();
    let env = scenario::Env::new(root, &built, &tools)?;
    let mut results = Vec::new();
    for name in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        println!("\n==> scenario {name}");
        let t = Instant::now();
        let r = match *name {
            "rounds" => scenario::rounds(&env),
            "cve" => scenario::cve(&env),
            _ => scenario::coroutines(&env),
        };
        if let Err(e) = &r {
            println!("FAIL {name}: {e:#}");
        }
        results.push((*name, r.is_ok(), t.elapsed().as_secs_f64()));
    }
    println!("\n==> summary");
    for (id, secs) in &built.timings {
        println!("libcare-patch-make -i {id}: {secs:.0} s");
    }
    println!("preparation and builds: {build_secs:.0} s");
    for (name, ok, secs) in &results {
        println!("{} {name} ({secs:.0} s)", if *ok { "PASS" } else { "FAIL" });
    }
    println!("total: {:.0} s", started.elapsed().as_secs_f64());
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(" "));
    }
    Ok(())
}
