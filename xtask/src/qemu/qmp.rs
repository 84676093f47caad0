//! A QMP client (QEMU's JSON monitor protocol over a UNIX socket), and a load client that
//! keeps querying from a thread of its own and reports how long QEMU took to answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// How long any one answer may take before the client gives up on QEMU.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// One QMP connection, capabilities negotiated.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events read while waiting for answers, oldest first.
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to the monitor socket at `path`, waiting up to `wait` for QEMU to create it.
    pub fn connect(path: &Path, wait: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).with_context(|| format!("connect {}", path.display())),
            }
        };
        stream.set_read_timeout(Some(ANSWER_WAIT))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("no QMP greeting from {}: {greeting}", path.display());
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("QEMU did not answer on its monitor")?;
        if n == 0 {
            bail!("QEMU closed its monitor");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP line {line:?}"))
    }

    /// Runs `command` with `arguments`; returns its `return` value, or fails with QEMU's
    /// error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = arguments;
        }
        writeln!(self.writer, "{msg}").context("write to the QEMU monitor")?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("{command}: {}", e["desc"].as_str().unwrap_or("error"));
            }
            bail!("{command}: unexpected answer {v}");
        }
    }

    /// Waits up to `wait` for the event `name` (one already read counts) and returns it.
    pub fn wait_event(&mut self, name: &str, wait: Duration) -> Result<Value> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return Ok(self.events.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no {name} event within {wait:?}");
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let v = self.read();
            self.reader.get_ref().set_read_timeout(Some(ANSWER_WAIT))?;
            let v = v.with_context(|| format!("waiting for the {name} event"))?;
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    /// A handle on the connection that can shut it down from another thread.
    fn handle(&self) -> Result<UnixStream> {
        Ok(self.writer.try_clone()?)
    }

    /// `query-version`'s package string.
    pub fn package(&mut self) -> Result<String> {
        let v = self.execute("query-version", json!({}))?;
        v["package"]
            .as_str()
            .map(str::to_owned)
            .context("query-version without a package string")
    }
}

/// What the load client saw since it was last asked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    /// Answers received.
    pub answers: u64,
    /// The longest time QEMU took to answer one query (a query sent before the window and
    /// answered in it counts).
    pub longest: Duration,
}

#[derive(Default)]
struct Shared {
    window: Window,
    /// Queries sent and answered so far.
    sent: u64,
    done: u64,
    error: Option<String>,
}

/// A thread that sends `query-status` back to back on its own monitor, checks every answer
/// (the guest keeps running) and measures how long each took.
pub struct Load {
    shared: Arc<Mutex<Shared>>,
    /// Shut down on drop, so that a thread waiting for a QEMU that no longer answers ends.
    socket: UnixStream,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(path: &Path) -> Result<Load> {
        let mut qmp = Qmp::connect(path, Duration::from_secs(30))?;
        let socket = qmp.handle()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                s.lock().unwrap_or_else(|p| p.into_inner()).sent += 1;
                let t = Instant::now();
                let answer = qmp.execute("query-status", json!({}));
                let took = t.elapsed();
                let mut sh = s.lock().unwrap_or_else(|p| p.into_inner());
                match answer {
                    Ok(v) if v["status"] == "running" => {
                        sh.done += 1;
                        sh.window.answers += 1;
                        sh.window.longest = sh.window.longest.max(took);
                    }
                    Ok(v) => {
                        sh.error = Some(format!("query-status answered {v}"));
                        return;
                    }
                    Err(e) => {
                        sh.error = Some(format!("{e:#}"));
                        return;
                    }
                }
            }
        });
        Ok(Load {
            shared,
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// The window since the last call (or the start), once the query in flight now has been
    /// answered (so that a stall that has just ended is counted in it); fails if QEMU stopped
    /// answering, or answered something else than a running guest.
    pub fn take(&self) -> Result<Window> {
        let deadline = Instant::now() + ANSWER_WAIT;
        let in_flight = self.lock().sent;
        loop {
            let mut sh = self.lock();
            if let Some(e) = &sh.error {
                bail!("the QMP load client: {e}");
            }
            if sh.done >= in_flight {
                return Ok(std::mem::take(&mut sh.window));
            }
            drop(sh);
            if Instant::now() > deadline {
                bail!("the QMP load client got no answer within {ANSWER_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
