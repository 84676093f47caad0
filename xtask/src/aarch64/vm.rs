//! Booting the guest and reading its console with a deadline.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::console::DONE_MARKER;

/// After the end marker, how long the guest gets to power off.
const POWEROFF_GRACE: Duration = Duration::from_secs(20);

/// Kills qemu on every way out.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `kernel` with `initrd` under TCG, echoes the console (prefixed) and returns its
/// lines once the guest powers off or `timeout` passes.
pub fn boot(kernel: &Path, initrd: &Path, append: &str, timeout: Duration) -> Result<Vec<String>> {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-M",
        "virt",
        "-cpu",
        "max,pauth-impdef=on",
        "-smp",
        "2",
        "-m",
        "1024",
    ])
    .args([
        "-accel",
        "tcg,thread=multi",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", append])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start qemu-system-aarch64")?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let vm = Vm(child);
    let start = Instant::now();
    let mut deadline = start + timeout;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("vm| {line}");
                if line == DONE_MARKER {
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                }
                lines.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                println!(
                    "vm| (stopped by the host after {} s)",
                    start.elapsed().as_secs()
                );
                break;
            }
        }
    }
    drop(vm);
    Ok(lines)
}
