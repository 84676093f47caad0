//! One process patched at start-up. A thread is held (by the calling thread) either at the
//! start of a new program (its `exec` stop: nothing of the program has run, the dynamic loader
//! is about to) or inside the loader (it has just opened a file to load, at start-up or for
//! `dlopen`). The loader's debugger hook is redirected ([`crate::ldso`]), the thread runs until
//! the loader reports a consistent list of objects, the engine patches the process there (the
//! new objects only, when loading into a running program), the hook is taken out and the thread
//! let go. Nothing of ours is left in the process but the patches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kpatch_engine::{Engine, PatchOutcome, PatchRequest, Report, Storage};
use kpatch_process::{HeldEvent, HeldThread, MapEntry, Process};

use crate::buildid;
use crate::error::{Error, Result};
use crate::ldso::{quiet_signal, Hook, Loader, LoaderCache, LoaderState};

/// Where the service's lines go (they are always shown: each one is about a process).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The test-only step (`Options::fault_step`) at which a start-up stops forever, holding its
/// process, so that a test can kill the service there.
pub const HANG_STEP: &str = "selfload-hang";

/// Longest a process is held at start-up when nothing says otherwise: the loader of a large
/// program on a loaded machine takes a fraction of that.
pub const DEFAULT_HOLD_LIMIT: Duration = Duration::from_secs(10);

/// What start-up patching needs, shared by every process it handles.
pub struct Context {
    engine: Engine,
    storage: RwLock<PathBuf>,
    loaders: LoaderCache,
    log: Log,
    hold_limit: Duration,
    /// Processes being patched at start-up now (by pid): what they open meanwhile is theirs.
    busy: Mutex<HashSet<i32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("storage", &self.storage())
            .field("hold_limit", &self.hold_limit)
            .finish()
    }
}

/// How a held thread was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the `exec` stop of a new program.
    Exec,
    /// Stopped in the dynamic loader, which is loading objects.
    Loading,
}

/// What became of one process.
#[derive(Debug)]
pub enum Outcome {
    /// Patched before the code it loaded ran.
    Patched {
        outcome: PatchOutcome,
        /// How long the thread was held, and how long of it the engine took.
        held: Duration,
        apply: Duration,
    },
    /// Nothing it loaded has a patch.
    Nothing { held: Duration },
    /// It ended, or left our hands, before the loader was done: why.
    Left(String),
}

/// Engine messages, kept for the log (warnings only; the details are not).
#[derive(Default)]
struct Kept(Vec<String>);

impl Report for Kept {
    fn info(&mut self, msg: &str) {
        self.0.push(msg.to_owned());
    }
    fn detail(&mut self, _msg: &str) {}
}

/// Where the held thread got to.
enum Reached {
    Consistent,
    /// It executed another program; the hook went with the old one.
    Exec,
    Left(String),
}

impl Context {
    /// A context patching from `storage` with `engine`, logging to `log`.
    pub fn new(engine: Engine, storage: PathBuf, log: Log) -> Context {
        Context {
            engine,
            storage: RwLock::new(storage),
            loaders: LoaderCache::default(),
            log,
            hold_limit: DEFAULT_HOLD_LIMIT,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Marks process `pid` as being patched at start-up; false if it already is.
    pub(crate) fn begin(&self, pid: i32) -> bool {
        match self.busy.lock() {
            Ok(mut b) => b.insert(pid),
            Err(e) => e.into_inner().insert(pid),
        }
    }

    /// Process `pid` is no longer being patched at start-up: what it opens from now on starts
    /// another round.
    pub(crate) fn end(&self, pid: i32) {
        match self.busy.lock() {
            Ok(mut b) => b.remove(&pid),
            Err(e) => e.into_inner().remove(&pid),
        };
    }

    /// The storage patches come from now.
    pub fn storage(&self) -> PathBuf {
        self.storage
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Patches come from `storage` from now on.
    pub fn set_storage(&self, storage: PathBuf) {
        match self.storage.write() {
            Ok(mut s) => *s = storage,
            Err(e) => *e.into_inner() = storage,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Writes a line to the log.
    pub fn log(&self, line: &str) {
        (self.log)(line);
    }

    pub(crate) fn loaders(&self) -> &LoaderCache {
        &self.loaders
    }

    /// Patches the process of `held` at start-up (see the module documentation) and lets the
    /// thread go, whatever happens; `file` (the file it executes or loads) names it in the
    /// log, where the outcome goes.
    pub fn patch_at_startup(&self, held: HeldThread, start: Start, file: &Path) -> Outcome {
        let pid = held.tgid();
        let t0 = Instant::now();
        let shown = file.display();
        let outcome = match self.drive(held, start, t0) {
            Ok(o) => o,
            Err(e) => Outcome::Left(format!("not patched at start-up: {e}; it runs unpatched")),
        };
        match &outcome {
            Outcome::Patched {
                outcome: o,
                held,
                apply,
            } => {
                let what: Vec<String> = o
                    .applied
                    .iter()
                    .map(|a| format!("{} {}", a.object, a.id))
                    .collect();
                let frozen = o.frozen.map(|f| f.as_micros()).unwrap_or(0);
                let when = match start {
                    Start::Exec => "at start-up",
                    Start::Loading => "when loaded",
                };
                self.log(&format!(
                    "start-up: pid {pid} ({shown}): patched {when}: {}; held {} us (patching {} us, all threads stopped {frozen} us)",
                    what.join(", "),
                    held.as_micros(),
                    apply.as_micros(),
                ));
            }
            Outcome::Nothing { held } => self.log(&format!(
                "start-up: pid {pid} ({shown}): nothing to patch; held {} us",
                held.as_micros()
            )),
            Outcome::Left(why) => self.log(&format!("start-up: pid {pid} ({shown}): {why}")),
        }
        outcome
    }

    fn drive(&self, mut held: HeldThread, start: Start, t0: Instant) -> Result<Outcome> {
        let deadline = t0 + self.hold_limit;
        let pid = held.tgid();
        let mut start = start;
        loop {
            if start == Start::Exec && !held.stop_in_user_mode()? {
                return Ok(Outcome::Left("it ended during start-up".into()));
            }
            if held.in_job_control() {
                return Ok(Outcome::Left(
                    "not patched at start-up: stopped by job control; it runs unpatched".into(),
                ));
            }
            let proc = Process::open_held(&held)?;
            let maps = proc.maps()?;
            let before: Option<HashSet<(u32, u32, u64)>> = match start {
                Start::Exec => None,
                Start::Loading => Some(files(&maps)),
            };
            let Some(loader) = Loader::find(&proc, &maps, &self.loaders)? else {
                return Ok(Outcome::Left(
                    "not patched at start-up: it has no dynamic loader with glibc's debugger interface (a static program?); it runs unpatched".into(),
                ));
            };
            let signal = quiet_signal(pid, held.tid()).ok_or_else(|| Error::Process {
                pid,
                what: "it blocks every signal the start-up stop could use".into(),
            })?;
            let hook = Hook::install(&proc, &mut held.handle(&proc)?, &loader, signal)?;
            let reached = self.run_to_consistent(&mut held, &proc, &hook, deadline);
            let result = match reached {
                Ok(Reached::Consistent) => self.patch(&held, &proc, before.as_ref(), t0),
                Ok(Reached::Exec) => {
                    // The hook left with the old program; start again with the new one.
                    drop(hook);
                    start = Start::Exec;
                    continue;
                }
                Ok(Reached::Left(why)) => Ok(Outcome::Left(why)),
                Err(e) => Err(e),
            };
            // Whatever happened, take the hook out, unless the thread is gone with it or is
            // the user's (a job-control stop, in which nothing may run: the hook then stays,
            // and costs the program a signal it ignores at each later load).
            let removed = if held.is_stopped() && !held.in_job_control() {
                held.handle(&proc)
                    .map_err(Error::from)
                    .and_then(|mut thread| hook.remove(&proc, &mut thread))
            } else {
                Ok(())
            };
            // Once it runs again it may load more, which is another round.
            self.end(pid);
            held.release()?;
            let outcome = result?;
            removed?;
            return Ok(match outcome {
                Outcome::Patched { outcome, apply, .. } => Outcome::Patched {
                    outcome,
                    held: t0.elapsed(),
                    apply,
                },
                Outcome::Nothing { .. } => Outcome::Nothing { held: t0.elapsed() },
                left => left,
            });
        }
    }

    /// Lets the thread run until the loader calls the hook with a consistent list of objects.
    fn run_to_consistent(
        &self,
        held: &mut HeldThread,
        proc: &Process,
        hook: &Hook,
        deadline: Instant,
    ) -> Result<Reached> {
        held.resume(0)?;
        loop {
            let Some(event) = held.wait(deadline)? else {
                held.stop()?;
                return Ok(Reached::Left(format!(
                    "not patched at start-up: the dynamic loader did not finish within {:?}; it runs unpatched",
                    self.hold_limit
                )));
            };
            match event {
                HeldEvent::Signal(sig) => {
                    let pc = held.handle(proc)?.pc()?;
                    if !hook.is_hook_stop(sig, pc) {
                        held.resume(sig)?;
                        continue;
                    }
                    if self.engine.options().fault_step.as_deref() == Some(HANG_STEP) {
                        self.log(&format!(
                            "start-up: pid {}: test fault point {HANG_STEP}: holding it until killed",
                            proc.pid()
                        ));
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    match hook.loader().state(proc)? {
                        LoaderState::Consistent => return Ok(Reached::Consistent),
                        LoaderState::Adding | LoaderState::Deleting => held.resume(0)?,
                    }
                }
                HeldEvent::Interrupted | HeldEvent::Other(_) => held.resume(0)?,
                HeldEvent::Exec => return Ok(Reached::Exec),
                HeldEvent::JobControl(sig) => {
                    return Ok(Reached::Left(format!(
                        "not patched at start-up: stopped by signal {sig} (job control) while loading; it runs unpatched"
                    )))
                }
                HeldEvent::Gone => {
                    return Ok(Reached::Left("it ended during start-up".into()));
                }
            }
        }
    }

    /// Patches the process, its thread held at the loader's consistent state: the objects that
    /// were not mapped `before` (every object when `None`).
    fn patch(
        &self,
        held: &HeldThread,
        proc: &Process,
        before: Option<&HashSet<(u32, u32, u64)>>,
        t0: Instant,
    ) -> Result<Outcome> {
        let only = match before {
            Some(b) => Some(new_build_ids(proc, b)?),
            None => None,
        };
        if only.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(Outcome::Nothing { held: t0.elapsed() });
        }
        let storage = Storage::open(&self.storage())?;
        let req = PatchRequest {
            held: Some(held),
            only: only.as_ref(),
            at_startup: true,
        };
        let start = Instant::now();
        let mut kept = Kept::default();
        let result = self
            .engine
            .patch_with(proc.pid(), &storage, &req, &mut kept);
        let apply = start.elapsed();
        for line in &kept.0 {
            self.log(&format!("start-up: pid {}: {line}", proc.pid()));
        }
        let outcome = result?;
        if outcome.applied.is_empty() {
            return Ok(Outcome::Nothing { held: t0.elapsed() });
        }
        Ok(Outcome::Patched {
            outcome,
            held: t0.elapsed(),
            apply,
        })
    }
}

/// The process of thread `tid`.
pub(crate) fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The files (device, inode) mapped in `maps`.
fn files(maps: &[MapEntry]) -> HashSet<(u32, u32, u64)> {
    maps.iter()
        .filter(|m| m.inode != 0)
        .map(|m| (m.dev.0, m.dev.1, m.inode))
        .collect()
}

/// Build-ids of the files `proc` maps now that are not in `before`.
fn new_build_ids(proc: &Process, before: &HashSet<(u32, u32, u64)>) -> Result<HashSet<String>> {
    let maps = proc.maps()?;
    let mut seen = HashSet::new();
    let mut out = HashSet::new();
    for m in &maps {
        let k = (m.dev.0, m.dev.1, m.inode);
        if m.inode == 0 || before.contains(&k) || !seen.insert(k) {
            continue;
        }
        if let Some(id) = proc.open_mapped_file(m).ok().and_then(buildid::of_file) {
            out.insert(id);
        }
    }
    Ok(out)
}
