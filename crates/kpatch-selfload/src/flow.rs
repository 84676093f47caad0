//! One process patched at start-up, or one of its `dlopen` or `dlclose` calls. A thread is
//! held (by the calling thread) at the start of a new program (its `exec` stop: nothing of
//! the program has run, the dynamic loader is about to), inside the loader (it has just opened
//! a file to load, at start-up or for `dlopen`), or in the watch function of a followed process
//! (its loader is about to add or remove objects). The loader's debugger hook is redirected
//! ([`crate::ldso`]) and the thread runs until the loader reports a consistent list of
//! objects. A new program is patched there; each object a `dlopen` added is reported to the
//! engine ([`Engine::object_loaded_with`]: its patch, the callbacks due for it), before its
//! initialisers run. A `dlclose` is followed syscall by syscall: each object is reported
//! ([`Engine::object_unloading_with`]) at the loader's `munmap` of it, while it is still
//! mapped. Then the hook is taken out and, if the service has a marker, the process is
//! followed from then on (its hook made to announce each change, [`crate::ldso::install_watch`]);
//! the thread is let go.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kpatch_engine::{Engine, PatchOutcome, PatchRequest, Report, Storage};
use kpatch_process::{HeldEvent, HeldThread, Process};

use crate::buildid;
use crate::error::{Error, Result};
use crate::guard::{Guard, Record, Recorded};
use crate::ldso::{install_watch, quiet_signal, Hook, LinkEntry, Loader, LoaderCache, LoaderState};

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
    /// The caller's trust rules (the engine checks each patch file as it reads it).
    guard: Arc<dyn Guard>,
    storage: RwLock<PathBuf>,
    loaders: LoaderCache,
    log: Log,
    hold_limit: Duration,
    /// Processes being patched at start-up now (by pid): what they open meanwhile is theirs.
    busy: Mutex<HashSet<i32>>,
    /// The file whose opening announces a change of a followed process's objects; `None`:
    /// processes are not followed.
    marker: RwLock<Option<PathBuf>>,
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
    /// Stopped in the watch function of a followed process: its loader is about to add or
    /// remove objects.
    Watched,
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
    /// A `dlclose` followed to its end (what each object's unloading did is logged apart).
    Unloaded { held: Duration },
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
    /// A context patching from `storage` with `engine` (whose `Options::check` judges each
    /// patch file), under `guard`, logging to `log`.
    pub fn new(engine: Engine, guard: Arc<dyn Guard>, storage: PathBuf, log: Log) -> Context {
        Context {
            engine,
            guard,
            storage: RwLock::new(storage),
            loaders: LoaderCache::default(),
            log,
            hold_limit: DEFAULT_HOLD_LIMIT,
            busy: Mutex::new(HashSet::new()),
            marker: RwLock::new(None),
        }
    }

    /// Processes are followed from now on: `marker` is the file their watch function opens.
    pub fn set_marker(&self, marker: PathBuf) {
        match self.marker.write() {
            Ok(mut m) => *m = Some(marker),
            Err(e) => *e.into_inner() = Some(marker),
        }
    }

    /// The marker, if processes are followed.
    pub fn marker(&self) -> Option<PathBuf> {
        self.marker
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
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

    /// The caller's trust rules.
    pub fn guard(&self) -> &dyn Guard {
        self.guard.as_ref()
    }

    /// Records a failure to patch process `pid` (`file`: what it executed or loaded) as a
    /// refusal or a failure, as `e` is.
    pub(crate) fn record_error(&self, pid: i32, file: &Path, e: &Error) {
        let why = e.to_string();
        let result = if e.is_refusal() {
            Recorded::Refused(&why)
        } else {
            Recorded::Failed(&why)
        };
        self.guard.record(&Record { pid, file, result });
    }

    /// Records the patches `outcome` applied to process `pid`.
    pub(crate) fn record_applied(&self, pid: i32, file: &Path, outcome: &PatchOutcome) {
        for a in &outcome.applied {
            self.guard.record(&Record {
                pid,
                file,
                result: Recorded::Patched {
                    object: &a.object,
                    id: &a.id,
                },
            });
        }
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
            Err(e) => {
                self.record_error(pid, file, &e);
                Outcome::Left(format!("not patched at start-up: {e}; it runs unpatched"))
            }
        };
        match &outcome {
            Outcome::Patched {
                outcome: o,
                held,
                apply,
            } => {
                self.record_applied(pid, file, o);
                let what: Vec<String> = o
                    .applied
                    .iter()
                    .map(|a| format!("{} {}", a.object, a.id))
                    .collect();
                let frozen = o.frozen.map(|f| f.as_micros()).unwrap_or(0);
                let when = match start {
                    Start::Exec => "at start-up",
                    Start::Loading | Start::Watched => "when loaded",
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
            Outcome::Unloaded { held } => self.log(&format!(
                "start-up: pid {pid} ({shown}): objects unloaded; held {} us",
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
            let Some(loader) = Loader::find(&proc, &maps, &self.loaders)? else {
                return Ok(Outcome::Left(
                    "not patched at start-up: it has no dynamic loader with glibc's debugger interface (a static program?); it runs unpatched".into(),
                ));
            };
            // The objects already there; a new program has none yet that count.
            let before = match start {
                Start::Exec => None,
                Start::Loading | Start::Watched => Some(loader.objects(&proc)?),
            };
            let unloading =
                start == Start::Watched && loader.state(&proc)? == LoaderState::Deleting;
            let signal = quiet_signal(pid, held.tid()).ok_or_else(|| Error::Process {
                pid,
                what: "it blocks every signal the start-up stop could use".into(),
            })?;
            let hook = Hook::install(&proc, &mut held.handle(&proc)?, &loader, signal)?;
            let going = before.as_deref().filter(|_| unloading);
            let reached = self.run_to_consistent(&mut held, &proc, &hook, going, deadline);
            let result = match reached {
                Ok(Reached::Consistent) if unloading => {
                    Ok(Outcome::Unloaded { held: t0.elapsed() })
                }
                Ok(Reached::Consistent) => self.patch(&held, &proc, &loader, before.as_deref(), t0),
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
            let usable = held.is_stopped() && !held.in_job_control();
            let removed = if usable {
                held.handle(&proc)
                    .map_err(Error::from)
                    .and_then(|mut thread| hook.remove(&proc, &mut thread))
            } else {
                Ok(())
            };
            if usable && removed.is_ok() {
                self.follow(&mut held, &proc, &loader);
            }
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
                Outcome::Unloaded { .. } => Outcome::Unloaded { held: t0.elapsed() },
                left => left,
            });
        }
    }

    /// Makes the process announce its later loads and unloads, if the service follows
    /// processes and it does not already; a failure is logged (the process is then not
    /// followed).
    fn follow(&self, held: &mut HeldThread, proc: &Process, loader: &Loader) {
        let Some(marker) = self.marker() else { return };
        if loader.watched(proc, &marker) {
            return;
        }
        let installed = held
            .handle(proc)
            .map_err(Error::from)
            .and_then(|mut thread| install_watch(proc, &mut thread, loader, &marker));
        if let Err(e) = installed {
            self.log(&format!(
                "start-up: pid {}: its later loads and unloads are not followed: {e}",
                proc.pid()
            ));
        }
    }

    /// Reports `object`, about to be unmapped, to the engine, and logs what it did.
    fn unloading(&self, held: &HeldThread, proc: &Process, object: &LinkEntry) {
        let pid = proc.pid();
        let path = match proc.maps() {
            Ok(maps) => object.path(&maps),
            Err(_) => object.name.clone(),
        };
        let mut kept = Kept::default();
        let result = self
            .engine
            .object_unloading_with(pid, &path, held, &mut kept);
        for line in &kept.0 {
            self.log(&format!("start-up: pid {pid}: {line}"));
        }
        match result {
            Ok(o) if !o.removed.is_empty() => {
                let ids: Vec<String> = o
                    .removed
                    .iter()
                    .map(|r| format!("{} {}", r.object, r.id))
                    .collect();
                self.log(&format!(
                    "start-up: pid {pid}: unloading {path}: removed {}",
                    ids.join(", ")
                ));
            }
            Ok(_) => {}
            Err(e) => self.log(&format!("start-up: pid {pid}: unloading {path}: {e}")),
        }
    }

    /// Lets the thread run until the loader calls the hook with a consistent list of objects.
    /// When `unloading`, it runs syscall by syscall, and each of those objects the loader
    /// unmaps is reported to the engine first (at the `munmap`'s entry, backed out of and made
    /// again afterwards).
    fn run_to_consistent(
        &self,
        held: &mut HeldThread,
        proc: &Process,
        hook: &Hook,
        unloading: Option<&[LinkEntry]>,
        deadline: Instant,
    ) -> Result<Reached> {
        let go = |held: &mut HeldThread, sig: i32| match unloading {
            Some(_) => held.resume_to_syscall(sig),
            None => held.resume(sig),
        };
        let (what, after) = match unloading {
            Some(_) => ("its unloading is not followed", "it runs on"),
            None => ("not patched at start-up", "it runs unpatched"),
        };
        let munmap = proc.arch().sys_munmap();
        let mut done: HashSet<u64> = HashSet::new();
        go(held, 0)?;
        loop {
            let Some(event) = held.wait(deadline)? else {
                held.stop()?;
                return Ok(Reached::Left(format!(
                    "{what}: the dynamic loader did not finish within {:?}; {after}",
                    self.hold_limit
                )));
            };
            match event {
                HeldEvent::Syscall => {
                    let entry = match unloading {
                        Some(_) => held.syscall_entry()?,
                        None => None,
                    };
                    let going = match entry {
                        Some((nr, args)) if nr == munmap => {
                            let unmapped = args[0]..args[0].saturating_add(args[1]);
                            unloading
                                .unwrap_or_default()
                                .iter()
                                .find(|o| unmapped.contains(&o.dynamic) && !done.contains(&o.map))
                        }
                        _ => None,
                    };
                    if let Some(object) = going {
                        done.insert(object.map);
                        if !held.back_out_of_syscall(proc)? {
                            return Ok(Reached::Left("it ended while unloading".into()));
                        }
                        self.unloading(held, proc, object);
                    }
                    go(held, 0)?;
                }
                HeldEvent::Signal(sig) => {
                    let pc = held.handle(proc)?.pc()?;
                    if !hook.is_hook_stop(sig, pc) {
                        go(held, sig)?;
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
                        LoaderState::Adding | LoaderState::Deleting => go(held, 0)?,
                    }
                }
                HeldEvent::Interrupted | HeldEvent::Other(_) => go(held, 0)?,
                HeldEvent::Exec => return Ok(Reached::Exec),
                HeldEvent::JobControl(sig) => {
                    return Ok(Reached::Left(format!(
                    "{what}: stopped by signal {sig} (job control) in the dynamic loader; {after}"
                )))
                }
                HeldEvent::Gone => {
                    return Ok(Reached::Left("it ended in the dynamic loader".into()));
                }
            }
        }
    }

    /// Patches the process, its thread held at the loader's consistent state: every object
    /// of a new program (`before` is `None`), or each object not in the list `before`.
    fn patch(
        &self,
        held: &HeldThread,
        proc: &Process,
        loader: &Loader,
        before: Option<&[LinkEntry]>,
        t0: Instant,
    ) -> Result<Outcome> {
        let path = self.storage();
        let storage = Storage::open(&path)?;
        self.guard.check_storage(&path).map_err(Error::Refused)?;
        let start = Instant::now();
        let outcome = match before {
            None => {
                let req = PatchRequest {
                    held: Some(held),
                    only: None,
                    at_startup: true,
                };
                let mut kept = Kept::default();
                let result = self
                    .engine
                    .patch_with(proc.pid(), &storage, &req, &mut kept);
                for line in &kept.0 {
                    self.log(&format!("start-up: pid {}: {line}", proc.pid()));
                }
                result?
            }
            Some(before) => self.loaded(held, proc, loader, before, &storage)?,
        };
        let apply = start.elapsed();
        if outcome.applied.is_empty() {
            return Ok(Outcome::Nothing { held: t0.elapsed() });
        }
        Ok(Outcome::Patched {
            outcome,
            held: t0.elapsed(),
            apply,
        })
    }

    /// Reports each object the loader added since `before` to the engine, in the loader's
    /// order: its patch from `storage`, the callbacks due for it. A failing pre-patch callback
    /// leaves that object unpatched (it loads all the same) and is logged.
    fn loaded(
        &self,
        held: &HeldThread,
        proc: &Process,
        loader: &Loader,
        before: &[LinkEntry],
        storage: &Storage,
    ) -> Result<PatchOutcome> {
        let pid = proc.pid();
        let new: Vec<LinkEntry> = loader
            .objects(proc)?
            .into_iter()
            .filter(|o| !o.name.is_empty() && !before.iter().any(|b| b.map == o.map))
            .collect();
        let mut outcome = PatchOutcome::default();
        if new.is_empty() {
            return Ok(outcome);
        }
        let maps = proc.maps()?;
        let paths: Vec<String> = new.iter().map(|o| o.path(&maps)).collect();
        // Not relocated yet: a patch may not import their IFUNCs. Read through the mappings
        // (`map_files`), which also reach a file of another mount namespace.
        let only: HashSet<String> = new
            .iter()
            .filter_map(|o| maps.iter().find(|m| m.contains(o.dynamic) && m.inode != 0))
            .filter_map(|m| proc.open_mapped_file(m).ok())
            .filter_map(buildid::of_file)
            .collect();
        let req = PatchRequest {
            held: Some(held),
            only: Some(&only),
            at_startup: true,
        };
        for path in &paths {
            let mut kept = Kept::default();
            let result = self
                .engine
                .object_loaded_with(pid, path, Some(storage), &req, &mut kept);
            for line in &kept.0 {
                self.log(&format!("start-up: pid {pid}: {line}"));
            }
            match result {
                Ok(o) => {
                    outcome.applied.extend(o.applied);
                    outcome.replaced.extend(o.replaced);
                    outcome.frozen = match (outcome.frozen, o.frozen) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => {
                    let e = Error::from(e);
                    self.record_error(pid, Path::new(path), &e);
                    self.log(&format!(
                        "start-up: pid {pid}: {path}: not patched when loaded: {e}; it loads unpatched"
                    ))
                }
            }
        }
        Ok(outcome)
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
