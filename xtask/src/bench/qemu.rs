//! The pause on QEMU, the headline user: Debian's QEMU 7.2 as `cargo xtask test-qemu` builds
//! it, a guest of 1 GiB and of 8 GiB (`-mem-prealloc`: every page present), patched and
//! unpatched `TRIALS` times with the main patch while a QMP client keeps querying. Reported:
//! libcare-ctl's frozen time and the longest time QMP took to answer during the command (the
//! main loop's stall). When `LIBCAREPLUS_CTL` names LibcarePlus's `libcare-ctl`, the same
//! trials run with it too, alternating with ours on the same QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::probe::frozen_us;
use super::stats::Stats;
use super::TRIALS;
use crate::qemu::machine::{self, Config, Machine};
use crate::qemu::qmp::Load;

/// One tool's series on one guest size.
pub struct Series {
    pub tool: &'static str,
    pub mem_mib: u64,
    pub frozen_on: Stats,
    pub frozen_off: Stats,
    pub stall_on: Stats,
    pub stall_off: Stats,
}

/// A `libcare-ctl` to measure.
struct Ctl {
    name: &'static str,
    exe: PathBuf,
}

impl Ctl {
    /// Runs a command that must succeed; its frozen time (µs).
    fn frozen(&self, args: &[&str], locks: &Path) -> Result<f64> {
        let out = Command::new(&self.exe)
            .args(args)
            .env("LIBCARE_LOCK_DIR", locks)
            .output()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} {args:?} failed: {text}{}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        frozen_us(&text)
            .map(|us| us as f64)
            .with_context(|| format!("{} printed no frozen time: {text}", self.name))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The QEMU series: for each guest size, ours (and the peer's, alternating).
pub fn qemu(root: &Path, work: &Path) -> Result<Vec<Series>> {
    let (built, tools) = crate::qemu::prepare(root)?;
    let mut ctls = vec![Ctl {
        name: "libcare-rs",
        exe: tools.join("libcare-ctl"),
    }];
    if let Some(peer) = std::env::var_os("LIBCAREPLUS_CTL") {
        ctls.push(Ctl {
            name: "LibcarePlus",
            exe: PathBuf::from(peer),
        });
    }
    let dir = work.join("qemu");
    std::fs::create_dir_all(&dir)?;
    let firmware = machine::firmware(root, &dir)?;
    let locks = dir.join("locks");
    let patch = built.main.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for mem_mib in [1024u64, 8192] {
        eprintln!("bench: QEMU with {mem_mib} MiB of preallocated guest memory");
        let m = Machine::start(&Config {
            exe: &built.exe,
            data: &built.data,
            firmware: &firmware,
            dir: &dir.join(format!("{mem_mib}")),
            mem_mib,
            prealloc: true,
        })?;
        let load = Load::start(&m.socket("qmp-load.sock"))?;
        let pid = m.pid().to_string();
        let mut samples = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; ctls.len()];
        load.take()?;
        for _ in 0..TRIALS {
            for (c, s) in ctls.iter().zip(samples.iter_mut()) {
                s[0].push(c.frozen(&["patch", "-p", &pid, &patch], &locks)?);
                s[2].push(ms(load.take()?.longest));
                s[1].push(c.frozen(&["unpatch", "-p", &pid, "-i", "cve"], &locks)?);
                s[3].push(ms(load.take()?.longest));
            }
        }
        for (c, s) in ctls.iter().zip(&samples) {
            out.push(Series {
                tool: c.name,
                mem_mib,
                frozen_on: Stats::of(&s[0]),
                frozen_off: Stats::of(&s[1]),
                stall_on: Stats::of(&s[2]),
                stall_off: Stats::of(&s[3]),
            });
        }
        drop(load);
        drop(m);
    }
    Ok(out)
}
