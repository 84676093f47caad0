//! `libcare-server --self-load`: every process that executes a file with a patch in the storage,
//! and every library with one that a process loads, is patched before its code runs
//! (docs/internals.md section 6). Three kinds of threads:
//!
//! - one reads the fanotify events; it answers at once those of our own threads and of files no
//!   longer watched, and those of a process already being handled, and hands each other one to
//!   a new thread;
//! - that thread decides whether the process is executing the file (the kernel says so for a
//!   program), its dynamic loader is loading it, or the watch function of a followed process
//!   opens the marker (anything else, `cat` or a backup opening a library, is let go at once),
//!   holds the thread, answers, and patches the process at start-up or reports the objects
//!   coming or going ([`Context::patch_at_startup`]);
//! - one watches the storage (and the search directories) with inotify and, on a change, marks
//!   the files that have patches now, and the libraries their callbacks are for.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpatch_engine::Storage;
use kpatch_process::{blocked_syscall, HeldEvent, HeldThread, Process};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{FanotifyEvent, MaskFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::error::{Error, Result};
use crate::files::{FileIndex, DEFAULT_SEARCH_DIRS};
use crate::flow::{tgid_of, Context, Start};
use crate::ldso::{in_watch_page, Loader};
use crate::watch::Watch;

/// How long the opening of a watched file may take to complete once allowed (reading a large
/// program from a slow disk).
const OPEN_LIMIT: Duration = Duration::from_secs(10);
/// Changes to the storage that come together are handled together.
const SETTLE: Duration = Duration::from_millis(30);
/// How long a thread whose opening we hear of may take to be seen asleep in it (it queued the
/// event, then sleeps until we answer; on a busy machine that takes a few scheduler ticks).
const ASLEEP_LIMIT: Duration = Duration::from_millis(500);
/// The marker's name in the lock directory.
const MARKER: &str = "selfload.watch";

/// What the service is given.
#[derive(Debug)]
pub struct Config {
    /// Directories searched for the files that have patches (the usual program and library
    /// directories when empty); files mapped by running processes are found anyway.
    pub search: Vec<PathBuf>,
}

/// The running service; it runs until the process exits.
#[derive(Debug, Clone)]
pub struct SelfLoad {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ctx: Arc<Context>,
    watch: Watch,
    inotify: Inotify,
    search: Vec<PathBuf>,
    index: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    files: FileIndex,
    /// inotify watches, by path.
    watches: HashMap<PathBuf, WatchDescriptor>,
    /// Build-ids with a patch but no file found, as last reported.
    missing: Vec<String>,
    /// Why the guard does not trust the storage, as last reported.
    refused: Option<String>,
}

impl SelfLoad {
    /// Checks that the mechanism can be used (privileges, fanotify permission events, ptrace),
    /// finds and marks the files that have patches in the storage of `ctx`, and starts serving.
    /// Fails, saying what to do, when the mechanism cannot be used.
    pub fn start(ctx: Arc<Context>, config: Config) -> Result<SelfLoad> {
        let watch = Watch::open()?;
        if !watch.reports_tid {
            ctx.log("self-load: this kernel's fanotify names processes, not threads (Linux < 4.20): a program executed by a thread other than its process's first one is not patched at start-up, and the loads and unloads of processes are not followed");
        } else {
            let marker = ctx.engine().options().lock_dir.join(MARKER);
            match watch.mark_marker(&marker) {
                Ok(()) => ctx.set_marker(marker),
                Err(e) => ctx.log(&format!(
                    "self-load: cannot watch the marker {}: {e}; the loads and unloads of the processes patched at start-up are not followed",
                    marker.display()
                )),
            }
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| {
            Error::Unavailable(format!(
                "--self-load: cannot watch the storage: inotify_init: {e}"
            ))
        })?;
        let search = if config.search.is_empty() {
            DEFAULT_SEARCH_DIRS.iter().map(PathBuf::from).collect()
        } else {
            config.search
        };
        let shared = Arc::new(Shared {
            ctx,
            watch,
            inotify,
            search,
            index: Mutex::new(Index::default()),
        });
        // Events first: looking for the files opens some of them.
        let events = shared.clone();
        std::thread::Builder::new()
            .name("selfload-events".into())
            .spawn(move || events.serve_events())
            .map_err(|e| Error::Unavailable(format!("--self-load: cannot start a thread: {e}")))?;
        shared.reindex();
        let changes = shared.clone();
        std::thread::Builder::new()
            .name("selfload-storage".into())
            .spawn(move || changes.follow_changes())
            .map_err(|e| Error::Unavailable(format!("--self-load: cannot start a thread: {e}")))?;
        Ok(SelfLoad { shared })
    }

    /// The storage changed (`storage DIR`): the files of its patches are watched from now on.
    pub fn storage_changed(&self, storage: &Path) {
        self.shared.ctx.set_storage(storage.to_owned());
        self.shared.reindex();
    }
}

/// What a thread was opening when the kernel told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// A program with a patch, for an `execve`.
    Exec,
    /// A file with a patch (or that a patch's callbacks are for), for anything.
    File,
    /// The marker, from the watch function of a followed process.
    Marker,
}

/// Whether `tid` is a thread of this process.
fn is_ours(tid: i32) -> bool {
    Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Answers an event with "allow" when dropped, unless answered before.
struct Pending<'a> {
    watch: &'a Watch,
    event: Option<FanotifyEvent>,
}

impl Pending<'_> {
    fn allow(&mut self) {
        if let Some(ev) = self.event.take() {
            self.watch.allow(&ev);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.allow();
    }
}

impl Shared {
    fn log(&self, line: &str) {
        self.ctx.log(line);
    }

    fn not_patched(&self, tgid: i32, path: &Path, why: &dyn std::fmt::Display) {
        self.log(&format!(
            "start-up: pid {tgid} ({}): not patched at start-up: {why}; it runs unpatched",
            path.display()
        ));
    }

    fn serve_events(self: Arc<Self>) {
        loop {
            let events = match self.watch.read() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
                Err(e) => {
                    self.log(&format!(
                        "self-load: reading fanotify events failed: {e}; processes are no longer patched at start-up"
                    ));
                    return;
                }
            };
            for ev in events {
                self.dispatch(ev);
            }
        }
    }

    /// Answers `ev` at once, or hands it to a thread of its own.
    fn dispatch(self: &Arc<Self>, ev: FanotifyEvent) {
        let mut pending = Pending {
            watch: &self.watch,
            event: Some(ev),
        };
        let Some(event) = pending.event.as_ref() else {
            return;
        };
        let tid = event.pid();
        let Some(fd) = event.fd() else { return };
        if tid <= 0 || is_ours(tid) {
            return;
        }
        let Ok(meta) = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return;
        };
        let (path, opening) = if self.watch.is_marker(meta.dev(), meta.ino()) {
            let Some(marker) = self.ctx.marker() else {
                return;
            };
            (marker, Opening::Marker)
        } else {
            let Some((path, _)) = self.watch.file(meta.dev(), meta.ino()) else {
                return;
            };
            let exec = event.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM);
            (path, if exec { Opening::Exec } else { Opening::File })
        };
        let Some(tgid) = tgid_of(tid) else { return };
        if !self.ctx.begin(tgid) {
            return;
        }
        let Some(ev) = pending.event.take() else {
            return;
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("selfload-{tgid}"))
            .spawn(move || {
                me.handle(ev, tgid, tid, opening, &path);
                me.ctx.end(tgid);
            });
        if let Err(e) = spawned {
            self.log(&format!(
                "start-up: pid {tgid}: not patched at start-up: cannot start a thread: {e}; it runs unpatched"
            ));
            self.ctx.end(tgid);
        }
    }

    /// One opening of a watched file by thread `tid` of process `tgid`.
    fn handle(&self, ev: FanotifyEvent, tgid: i32, tid: i32, opening: Opening, path: &Path) {
        let mut pending = Pending {
            watch: &self.watch,
            event: Some(ev),
        };
        let mut start = match opening {
            Opening::Exec => Start::Exec,
            Opening::File => match self.classify(tgid, tid) {
                Some(s) => s,
                None => return,
            },
            Opening::Marker if self.announces(tgid, tid, path) => Start::Watched,
            Opening::Marker => return,
        };
        let mut held = match HeldThread::seize(tgid, tid, true) {
            Ok(h) => h,
            Err(kpatch_process::Error::AlreadyTraced { tracer, .. }) if is_ours(tracer) => return,
            Err(e) => {
                self.not_patched(tgid, path, &e);
                return;
            }
        };
        if let Err(e) = held.interrupt() {
            self.not_patched(tgid, path, &e);
            return;
        }
        pending.allow();
        drop(pending);
        let deadline = Instant::now() + OPEN_LIMIT;
        // The stop at the end of the opening: the exec's, or our interrupt's.
        loop {
            let event = match held.wait(deadline) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    let why = format!("opening it took more than {OPEN_LIMIT:?}");
                    self.not_patched(tgid, path, &why);
                    return;
                }
                Err(e) => {
                    self.not_patched(tgid, path, &e);
                    return;
                }
            };
            let resumed = match (event, start) {
                (HeldEvent::Exec, Start::Exec)
                | (HeldEvent::Interrupted, Start::Loading | Start::Watched) => break,
                // It executed another program (the library's loading is over): that one's
                // start-up, then.
                (HeldEvent::Exec, Start::Loading | Start::Watched) => {
                    start = Start::Exec;
                    break;
                }
                // The exec failed: the program goes on as it was.
                (HeldEvent::Interrupted, Start::Exec) => return,
                (HeldEvent::Signal(sig), _) => held.interrupt().and_then(|()| held.resume(sig)),
                (HeldEvent::Other(_) | HeldEvent::Syscall, _) => {
                    held.interrupt().and_then(|()| held.resume(0))
                }
                (HeldEvent::JobControl(_), _) | (HeldEvent::Gone, _) => return,
            };
            if let Err(e) = resumed {
                self.not_patched(tgid, path, &e);
                return;
            }
        }
        let shown = match start {
            // The program, in the log, rather than the marker.
            Start::Watched => std::fs::read_link(format!("/proc/{tgid}/exe")).unwrap_or_default(),
            _ => path.to_owned(),
        };
        self.ctx.patch_at_startup(held, start, &shown);
    }

    /// Whether thread `tid` of `tgid`, blocked opening the marker, does so from a watch
    /// function: its loader is about to add or remove objects.
    fn announces(&self, tgid: i32, tid: i32, marker: &Path) -> bool {
        let Some(syscall) = blocked_syscall(tgid, tid, ASLEEP_LIMIT) else {
            return false;
        };
        Process::inspect(tgid).is_ok_and(|proc| in_watch_page(&proc, syscall.pc, marker))
    }

    /// Whether thread `tid` of `tgid`, blocked opening a watched file, is executing it or its
    /// dynamic loader is loading it; `None` for anything else.
    fn classify(&self, tgid: i32, tid: i32) -> Option<Start> {
        let syscall = blocked_syscall(tgid, tid, ASLEEP_LIMIT)?;
        if kpatch_arch::host().sys_exec().contains(&syscall.nr) {
            return Some(Start::Exec);
        }
        let proc = Process::inspect(tgid).ok()?;
        let maps = proc.maps().ok()?;
        let loader = Loader::find(&proc, &maps, self.ctx.loaders()).ok()??;
        loader.contains(syscall.pc).then_some(Start::Loading)
    }

    /// Finds the files of the storage's patches and marks exactly them; logs what changed.
    fn reindex(&self) {
        let storage = self.ctx.storage();
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        self.follow(&mut index, &storage);
        let ids: HashSet<String> = match storage_build_ids(&storage) {
            Ok(ids) => ids,
            Err(e) => {
                self.log(&format!(
                    "self-load: cannot read the storage {}: {e}",
                    storage.display()
                ));
                HashSet::new()
            }
        };
        // Said once per change; each process that needs a refused patch is refused again
        // (the engine checks the bytes it reads) and logged.
        let refused = self.ctx.guard().check_all(&storage).err();
        if refused != index.refused {
            match &refused {
                Some(why) => self.log(&format!(
                    "self-load: not trusted: {why}; the processes that need it are not patched"
                )),
                None => self.log(&format!(
                    "self-load: the storage {} is trusted again",
                    storage.display()
                )),
            }
            index.refused = refused;
        }
        // The libraries the patches' callbacks are for (a storage that cannot be read was
        // reported above).
        let names = Storage::open(&storage)
            .ok()
            .and_then(|s| s.callback_objects().ok())
            .unwrap_or_default();
        let me = std::process::id() as i32;
        let mut found = index.files.locate(&ids, &self.search, me);
        for f in index.files.locate_named(&names, &self.search) {
            if !found.iter().any(|g| (g.dev, g.ino) == (f.dev, f.ino)) {
                found.push(f);
            }
        }
        let sync = self.watch.sync(&found);
        for (path, id) in &sync.removed {
            self.log(&format!(
                "self-load: no longer watching {} (build-id {id})",
                path.display()
            ));
        }
        for (path, id) in &sync.added {
            self.log(&format!(
                "self-load: watching {} (build-id {id})",
                path.display()
            ));
        }
        for (path, e) in &sync.failed {
            self.log(&format!(
                "self-load: cannot watch {}: {e}; processes started from it are not patched at start-up",
                path.display()
            ));
        }
        let watched: HashSet<String> = self.watch.build_ids().into_iter().collect();
        let mut missing: Vec<String> = ids.difference(&watched).cloned().collect();
        missing.sort();
        for id in missing.iter().filter(|m| !index.missing.contains(m)) {
            self.log(&format!(
                "self-load: no file with build-id {id} found in {} or mapped by a running process: processes started from it are not patched at start-up (name its directory with --search)",
                self.search
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        index.missing = missing;
        if !sync.added.is_empty() || !sync.removed.is_empty() || !sync.failed.is_empty() {
            self.log(&format!(
                "self-load: watching {} file(s) for the patches of {}",
                self.watch.count(),
                storage.display()
            ));
        }
    }

    /// Keeps inotify watches on the storage (and its patch directories) and the search
    /// directories, and on nothing else.
    fn follow(&self, index: &mut Index, storage: &Path) {
        let changes = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        let mut want: Vec<PathBuf> = Vec::new();
        if storage.is_dir() {
            want.push(storage.to_owned());
            // <build-id>/ and <build-id>/<level>/ (the `latest` link and the patch files).
            for level1 in subdirs(storage) {
                want.extend(subdirs(&level1));
                want.push(level1);
            }
        } else if let Some(parent) = storage.parent() {
            want.push(parent.to_owned());
        }
        want.extend(self.search.iter().filter(|d| d.is_dir()).cloned());
        let stale: Vec<PathBuf> = index
            .watches
            .keys()
            .filter(|p| !want.contains(p))
            .cloned()
            .collect();
        for p in stale {
            if let Some(wd) = index.watches.remove(&p) {
                let _ = self.inotify.rm_watch(wd);
            }
        }
        for p in want {
            if index.watches.contains_key(&p) {
                continue;
            }
            if let Ok(wd) = self.inotify.add_watch(&p, changes) {
                index.watches.insert(p, wd);
            }
        }
    }

    fn follow_changes(self: Arc<Self>) {
        loop {
            match self.inotify.read_events() {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.log(&format!(
                        "self-load: watching the storage failed: {e}; changes to it are no longer followed"
                    ));
                    return;
                }
            }
            // What comes together is one change (a patch copied, then a link made).
            loop {
                let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
                let timeout =
                    PollTimeout::try_from(SETTLE.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
                match poll(&mut fds, timeout) {
                    Ok(n) if n > 0 => {
                        let _ = self.inotify.read_events();
                    }
                    _ => break,
                }
            }
            self.reindex();
        }
    }
}

/// The build-ids the storage at `path` has patches for.
fn storage_build_ids(path: &Path) -> Result<HashSet<String>> {
    Ok(Storage::open(path)?.build_ids()?)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}
