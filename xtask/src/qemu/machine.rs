//! A running QEMU: q35 under TCG, no devices, our firmware as BIOS, two QMP sockets (one for
//! the load client, one for commands) and a VNC server on a UNIX socket. Killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::qmp::Qmp;
use crate::run;

/// Assembles tests/fixtures/qemu/firmware.S into `dir/firmware.bin` (64 KiB).
pub fn firmware(root: &Path, dir: &Path) -> Result<PathBuf> {
    let src = root.join("tests/fixtures/qemu/firmware.S");
    let obj = dir.join("firmware.o");
    let bin = dir.join("firmware.bin");
    run(Command::new("as").arg("--32").arg("-o").arg(&obj).arg(&src))?;
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&obj)
        .arg(&bin))?;
    let len = std::fs::metadata(&bin)?.len();
    if len != 64 << 10 {
        bail!("{} is {len} bytes, not 64 KiB", bin.display());
    }
    Ok(bin)
}

/// How to run the guest.
pub struct Config<'a> {
    pub exe: &'a Path,
    /// QEMU's data directory (`-L`).
    pub data: &'a Path,
    pub firmware: &'a Path,
    /// Sockets and the log go here.
    pub dir: &'a Path,
    pub mem_mib: u64,
    /// `-mem-prealloc`: every page of guest memory is touched at start.
    pub prealloc: bool,
}

pub struct Machine {
    child: Child,
    dir: PathBuf,
    /// The command monitor.
    pub qmp: Qmp,
}

impl Machine {
    pub fn start(c: &Config<'_>) -> Result<Machine> {
        std::fs::create_dir_all(c.dir)?;
        for s in ["qmp-load.sock", "qmp.sock", "vnc.sock"] {
            let _ = std::fs::remove_file(c.dir.join(s));
        }
        let log = c.dir.join("qemu.log");
        let sock = |name: &str| c.dir.join(name).display().to_string();
        let mut cmd = Command::new(c.exe);
        cmd.args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-m", &format!("{}M", c.mem_mib)])
        .args(c.prealloc.then_some("-mem-prealloc"))
        .arg("-L")
        .arg(c.data)
        .arg("-bios")
        .arg(c.firmware)
        .args([
            "-display",
            "none",
            "-vnc",
            &format!("unix:{}", sock("vnc.sock")),
        ])
        .args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", sock("qmp-load.sock")),
        ])
        .args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", sock("qmp.sock")),
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&log)?)
        .stderr(File::create(&log)?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", c.exe.display()))?;
        // Preallocating 8 GiB takes a while before the monitor comes up.
        let wait = Duration::from_secs(30 + c.mem_mib / 256);
        let qmp = match Qmp::connect(&c.dir.join("qmp.sock"), wait) {
            Ok(q) => q,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{e:#}; QEMU's log:\n{log}");
            }
        };
        let m = Machine {
            child,
            dir: c.dir.to_owned(),
            qmp,
        };
        Ok(m)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What QEMU printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
    }

    /// Fails with QEMU's log if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("QEMU exited ({status}); its log:\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
