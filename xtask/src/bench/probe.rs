//! A running probe and the lines it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Tools;

const WAIT: Duration = Duration::from_secs(30);
/// Iterations of the probe's loop longer than this are reported as stalls (ns): well above a
/// normal iteration (tens of ns) and below the shortest stop.
const STALL_NS: i64 = 3000;

/// CLOCK_MONOTONIC in nanoseconds, the clock the probe prints.
pub fn monotonic_ns() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() * 1_000_000_000 + t.tv_nsec(),
        Err(_) => 0,
    }
}

/// A probe process; killed on drop.
pub struct Probe {
    child: Child,
    lines: Receiver<String>,
    /// `gap` lines seen but not yet consumed: (start, end).
    gaps: Vec<(i64, i64)>,
}

impl Probe {
    /// Starts `exe args` and waits for "ready" (or the first callbench line). Pause probes
    /// report every loop iteration longer than [`STALL_NS`].
    pub fn start(exe: &Path, args: &[&str]) -> Result<Probe> {
        let threshold = STALL_NS.to_string();
        let mut child = Command::new(exe)
            .args(args)
            .args((args.first() != Some(&"callbench")).then_some(threshold.as_str()))
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let out = child.stdout.take().context("probe stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Probe {
            child,
            lines: rx,
            gaps: Vec::new(),
        };
        if args.first() != Some(&"callbench") {
            p.next_matching(|l| l == "ready")?;
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self
            .lines
            .recv_timeout(left)
            .context("the probe printed nothing in time")?;
        if let Some(rest) = line.strip_prefix("gap ") {
            let mut it = rest
                .split_whitespace()
                .filter_map(|x| x.parse::<i64>().ok());
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                self.gaps.push((a, b));
            }
        }
        Ok(line)
    }

    fn next_matching(&mut self, want: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let l = self.next_line(deadline)?;
            if want(&l) {
                return Ok(l);
            }
        }
    }

    /// Waits for `switch VALUE GAP AT` and returns (GAP, AT) (ns).
    pub fn wait_switch(&mut self, value: i64) -> Result<(i64, i64)> {
        let prefix = format!("switch {value} ");
        let l = self.next_matching(|l| l.starts_with(&prefix))?;
        let mut it = l[prefix.len()..]
            .split_whitespace()
            .map(|x| x.parse::<i64>());
        match (it.next(), it.next()) {
            (Some(Ok(gap)), Some(Ok(at))) => Ok((gap, at)),
            _ => bail!("bad switch line {l:?}"),
        }
    }

    /// The pause of a patch whose code switch the probe saw at `at` with a stall of `gap`, the
    /// tool having held the process for `frozen_us`: the longest stall of the spinner while any
    /// thread could be held, i.e. within `frozen_us` either side of the switch (the threads the
    /// tool wakes and releases around the switch take CPU time from the spinner too).
    pub fn pause_around(&mut self, gap: i64, at: i64, frozen_us: u64) -> Result<i64> {
        let span = frozen_us as i64 * 1000;
        Ok(self.gap_within(at - span, at + span)?.max(gap))
    }

    /// The longest gap the probe reported inside [t0, t1] (0 when it saw none above its
    /// threshold).
    pub fn gap_within(&mut self, t0: i64, t1: i64) -> Result<i64> {
        // The probe prints a gap after the stall ends; give it a moment.
        let deadline = Instant::now() + Duration::from_millis(50);
        while let Ok(_l) = self.next_line(deadline) {}
        let best = self
            .gaps
            .iter()
            .filter(|(a, b)| *b >= t0 && *a <= t1)
            .map(|(a, b)| b - a)
            .max()
            .unwrap_or(0);
        self.gaps.clear();
        Ok(best)
    }

    /// `n` values of lines `KEY VALUE ...`.
    pub fn samples(&mut self, key: &str, n: usize) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        while out.len() < n {
            let l = self.next_matching(|l| l.starts_with(key))?;
            let v = l
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .context("bad sample line")?;
            out.push(v);
        }
        Ok(out)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs libcare-ctl and returns its stdout; fails with its output when it fails.
pub fn ctl(tools: &Tools, work: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(tools.path("libcare-ctl"))
        .args(args)
        .env("LIBCARE_LOCK_DIR", work.join("locks"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "libcare-ctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The frozen time libcare-ctl reported, in microseconds.
pub fn frozen_us(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        l.split("frozen_time is ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}
