//! Stopping threads with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, and letting them go.
//!
//! A seized thread that a signal reaches before our interrupt stops it reports a
//! signal-delivery-stop first. We let such signals through (`PTRACE_CONT` with the signal):
//! the kernel delivers them exactly as it would have (siginfo, handler frame, default action)
//! and a renewed interrupt (any ptrace stop cancels a pending one) then stops the thread
//! before it runs a single user instruction (at the handler's entry, if there is one).
//! Nothing is lost, nothing needs re-sending.
//! Signals that arrive while we run injected code are another matter (see [`crate::signals`]).
//!
//! If this process dies, the kernel detaches every tracee and they run on: we never leave
//! modified code behind, and registers are restored before each operation returns.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::procfs;
use crate::ptrace::{self, Backoff, Event};
use crate::restart;
use crate::signals;
use crate::thread::ThreadHandle;
use crate::tracee::{Tracee, TraceeState};

/// How many sleeping threads are woken to stop at a time.
const WAKE_BATCH: usize = 16;
/// How long releasing waits for a thread that has not reached its stop yet.
const RELEASE_GRACE: Duration = Duration::from_millis(200);

/// Every thread of a process, stopped. Dropping it (or [`StoppedProcess::resume`]) lets every
/// thread continue exactly where it was, with any signal that arrived meanwhile delivered.
///
/// ptrace binds a tracee to the thread that attached it, so this guard cannot leave the thread
/// that created it.
#[derive(Debug)]
pub struct StoppedProcess<'p> {
    process: &'p Process,
    pub(crate) tracees: Vec<Tracee>,
    _not_send: PhantomData<*const ()>,
}

/// One stopped thread while the rest of its process runs (for the short allocation step).
/// Dropping it (or [`StoppedThread::resume`]) lets the thread continue exactly where it was.
/// Like [`StoppedProcess`], it cannot leave the thread that created it.
#[derive(Debug)]
pub struct StoppedThread<'p> {
    process: &'p Process,
    tracee: Tracee,
    _not_send: PhantomData<*const ()>,
}

impl Process {
    /// Stops every thread (see [`Process::stop_all_phased`]). Threads that exit meanwhile are
    /// dropped from the set. Fails if some thread does not stop within `timeout`.
    pub fn stop_all(&self, timeout: Duration) -> Result<StoppedProcess<'_>> {
        self.stop_all_phased(timeout, |_| ()).map(|(s, ())| s)
    }

    /// Stops every thread in two steps, so that the threads that are running are held as
    /// briefly as possible. First, while everything runs, every thread listed in
    /// `/proc/PID/task` is seized (`PTRACE_SEIZE` stops none) with `PTRACE_O_TRACECLONE`, and
    /// the list is read again until it holds no new thread: from then on every thread created
    /// is ours at birth. Then the threads that are asleep (state S, D, T or t, read just before)
    /// are stopped, and `asleep` runs with them, and only them, in the set: they cannot run
    /// before they are released, so whatever it reads of them holds until then, while the
    /// others run on. Then the others are stopped (with any thread born meanwhile). Releasing
    /// ([`StoppedProcess::resume`]) lets the threads that were running go first. Fails if some
    /// thread does not stop within `timeout`.
    pub fn stop_all_phased<T>(
        &self,
        timeout: Duration,
        asleep: impl FnOnce(&mut StoppedProcess<'_>) -> T,
    ) -> Result<(StoppedProcess<'_>, T)> {
        let deadline = Instant::now() + timeout;
        // Until the end, this guard holds every tracee and releases them on an error.
        let mut all = StoppedProcess {
            process: self,
            tracees: Vec::new(),
            _not_send: PhantomData,
        };
        let mut skip: HashSet<i32> = HashSet::new();
        let mut first = true;
        loop {
            let known: HashSet<i32> = all.tracees.iter().map(|t| t.tid).collect();
            let fresh: Vec<i32> = procfs::task_ids(self.pid())?
                .into_iter()
                .filter(|t| !known.contains(t) && !skip.contains(t))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for tid in fresh {
                // TRACECLONE makes a thread created by one we seized ours from birth, so a
                // thread caught inside clone() does not escape.
                match seize(self, tid, libc::PTRACE_O_TRACECLONE)? {
                    Seize::Seized => all.tracees.push(Tracee {
                        blocked: restart::blocked_syscall(self, tid),
                        ..Tracee::new(tid, libc::PTRACE_O_TRACECLONE)
                    }),
                    Seize::Gone => {
                        skip.insert(tid);
                    }
                    // Before we seized anything, only another handle can hold it; later, it is
                    // a thread born ours (it starts in a stop, and its parent reports it).
                    Seize::Ours if first => return Err(held_elsewhere(self, tid)),
                    Seize::Ours => all
                        .tracees
                        .push(Tracee::new(tid, libc::PTRACE_O_TRACECLONE)),
                }
            }
            first = false;
        }
        if all.tracees.is_empty() {
            return Err(Error::ProcessExited { pid: self.pid() });
        }
        let dir = |tid: i32| PathBuf::from(format!("/proc/{}/task/{tid}", self.pid()));
        for t in all.tracees.iter_mut() {
            t.asleep = matches!(
                procfs::stat(&dir(t.tid)),
                Ok(Some(s)) if matches!(s.state, b'S' | b'D' | b'T' | b't')
            );
        }
        all.tracees.sort_by_key(|t| !t.asleep);
        let sleepers = all.tracees.iter().filter(|t| t.asleep).count();

        // The sleeping threads, stopped and looked at while the others run. Each wakes up to
        // stop, so they are stopped a batch at a time: the CPU time they take comes in short
        // slices rather than as one long stall of the threads that run.
        let mut known: HashSet<i32> = all.tracees.iter().map(|t| t.tid).collect();
        let mut pending: Vec<Tracee> = all.tracees.drain(..sleepers).collect();
        let mut early = StoppedProcess {
            process: self,
            tracees: Vec::with_capacity(pending.len()),
            _not_send: PhantomData,
        };
        while !pending.is_empty() {
            let mut batch: Vec<Tracee> = pending.drain(..pending.len().min(WAKE_BATCH)).collect();
            let mut stopping = Ok(());
            for t in &batch {
                stopping = stopping.and(interrupt(self, t.tid));
            }
            let settled =
                stopping.and_then(|()| settle_known(self, &mut batch, &known, deadline, timeout));
            known.extend(batch.iter().map(|t| t.tid));
            early.tracees.append(&mut batch);
            if let Err(e) = settled {
                all.tracees.append(&mut early.tracees);
                all.tracees.append(&mut pending);
                return Err(e);
            }
        }
        let result = asleep(&mut early);

        // The others (a thread born to a sleeping one is held like them).
        for t in early.tracees.iter_mut() {
            t.asleep = true;
        }
        // Joined before the running threads are interrupted: with many threads, growing the
        // list costs page faults.
        all.tracees.append(&mut early.tracees);
        let mut stopping = Ok(());
        for t in all
            .tracees
            .iter()
            .filter(|t| t.state == TraceeState::Running)
        {
            stopping = stopping.and(interrupt(self, t.tid));
        }
        let settled = stopping.and_then(|()| settle(self, &mut all.tracees, deadline, timeout));
        // Those that were running are released first. Usually in that order already (a
        // thread born meanwhile comes last); sorting would allocate.
        if !all.tracees.is_sorted_by_key(|t| t.asleep) {
            all.tracees.sort_by_key(|t| t.asleep);
        }
        settled?;
        if all.tracees.iter().all(Tracee::is_gone) {
            return Err(Error::ProcessExited { pid: self.pid() });
        }
        Ok((all, result))
    }

    /// Stops one thread (seize, interrupt, wait) while the others keep running.
    pub fn stop_one(&self, tid: i32, timeout: Duration) -> Result<StoppedThread<'_>> {
        let deadline = Instant::now() + timeout;
        let dir = PathBuf::from(format!("/proc/{}/task/{tid}", self.pid()));
        if !dir.exists() {
            return Err(Error::NoSuchThread {
                pid: self.pid(),
                tid,
            });
        }
        match seize(self, tid, 0)? {
            Seize::Seized => {}
            Seize::Gone => {
                return Err(Error::ThreadExited {
                    pid: self.pid(),
                    tid,
                    during: "stopping",
                })
            }
            Seize::Ours => return Err(held_elsewhere(self, tid)),
        }
        // From here on the guard detaches the thread whatever happens.
        let mut guard = StoppedThread {
            process: self,
            tracee: Tracee {
                blocked: restart::blocked_syscall(self, tid),
                ..Tracee::new(tid, 0)
            },
            _not_send: PhantomData,
        };
        interrupt(self, tid)?;
        let mut one = vec![std::mem::replace(&mut guard.tracee, Tracee::gone(tid))];
        let result = settle(self, &mut one, deadline, timeout);
        if let Some(t) = one.pop() {
            guard.tracee = t;
        }
        result?;
        if guard.tracee.is_gone() {
            return Err(Error::ThreadExited {
                pid: self.pid(),
                tid,
                during: "stopping",
            });
        }
        Ok(guard)
    }
}

impl<'p> StoppedProcess<'p> {
    /// The process.
    pub fn process(&self) -> &'p Process {
        self.process
    }

    /// Ids of the stopped threads, sorted.
    pub fn tids(&self) -> Vec<i32> {
        let mut tids: Vec<i32> = self
            .tracees
            .iter()
            .filter(|t| !t.is_gone())
            .map(|t| t.tid)
            .collect();
        tids.sort_unstable();
        tids
    }

    /// A handle on stopped thread `tid`.
    pub fn thread(&mut self, tid: i32) -> Result<ThreadHandle<'_>> {
        let process = self.process;
        let tracee = self
            .tracees
            .iter_mut()
            .find(|t| t.tid == tid && !t.is_gone())
            .ok_or(Error::UnknownThread {
                pid: process.pid(),
                tid,
            })?;
        Ok(ThreadHandle::new(process, tracee))
    }

    /// A handle on a thread that can run injected code (one not held by job control), the main
    /// thread if it can.
    pub fn runnable_thread(&mut self) -> Option<ThreadHandle<'_>> {
        let process = self.process;
        let pid = process.pid();
        let i = self
            .tracees
            .iter()
            .position(|t| t.tid == pid && t.can_run_code())
            .or_else(|| self.tracees.iter().position(Tracee::can_run_code))?;
        self.tracees
            .get_mut(i)
            .map(|t| ThreadHandle::new(process, t))
    }

    /// Handles on every stopped thread.
    pub fn threads(&mut self) -> impl Iterator<Item = ThreadHandle<'_>> {
        let process = self.process;
        self.tracees
            .iter_mut()
            .filter(|t| !t.is_gone())
            .map(move |t| ThreadHandle::new(process, t))
    }

    /// Releases every thread but one that can run injected code, those that were running
    /// first. The one kept is one that was asleep if there is one (holding it a little longer
    /// costs nothing), the main thread preferred. Returns its id; `None` when no thread could
    /// be kept (all are released).
    pub fn release_all_but_one(&mut self) -> Result<Option<i32>> {
        let pid = self.process.pid();
        let keep = self
            .tracees
            .iter()
            .filter(|t| t.can_run_code())
            .min_by_key(|t| (!t.asleep, t.tid != pid))
            .map(|t| t.tid);
        let (kept, others): (Vec<Tracee>, Vec<Tracee>) = std::mem::take(&mut self.tracees)
            .into_iter()
            .partition(|t| Some(t.tid) == keep);
        self.tracees = kept;
        release_all(self.process, others)?;
        Ok(keep)
    }

    /// Releases the threads that were running when the stop began, keeping those that were
    /// asleep (or stopped by job control) stopped. With `keep_runnable`, only if one of those
    /// kept can run injected code (see [`StoppedProcess::release_all_but_one`]). Returns
    /// whether it released them.
    pub fn release_running(&mut self, keep_runnable: bool) -> Result<bool> {
        let runnable = |t: &Tracee| t.asleep && t.can_run_code();
        if keep_runnable && !self.tracees.iter().any(runnable) {
            return Ok(false);
        }
        // Released in place (their slots left as gone): with many threads, building new
        // lists would cost page faults while the running ones wait.
        let mut first_error = None;
        for t in self
            .tracees
            .iter_mut()
            .filter(|t| !t.asleep && !t.is_gone())
        {
            let tid = t.tid;
            if let Err(e) = release(self.process, std::mem::replace(t, Tracee::gone(tid))) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(true), Err)
    }

    /// Lets every thread continue (detaching from all of them). Errors name the first thread
    /// that could not be released; the others are released regardless.
    pub fn resume(mut self) -> Result<()> {
        let tracees = std::mem::take(&mut self.tracees);
        release_all(self.process, tracees)
    }
}

impl Drop for StoppedProcess<'_> {
    fn drop(&mut self) {
        let tracees = std::mem::take(&mut self.tracees);
        // Nothing to report to from a destructor; resume() reports errors.
        let _ = release_all(self.process, tracees);
    }
}

impl<'p> StoppedThread<'p> {
    /// The process.
    pub fn process(&self) -> &'p Process {
        self.process
    }

    /// The stopped thread's id.
    pub fn tid(&self) -> i32 {
        self.tracee.tid
    }

    /// A handle for registers, remote syscalls and calls.
    pub fn thread(&mut self) -> ThreadHandle<'_> {
        ThreadHandle::new(self.process, &mut self.tracee)
    }

    /// Lets the thread continue (detaching from it).
    pub fn resume(mut self) -> Result<()> {
        let tracee = std::mem::replace(&mut self.tracee, Tracee::gone(0));
        release(self.process, tracee)
    }
}

impl Drop for StoppedThread<'_> {
    fn drop(&mut self) {
        let tracee = std::mem::replace(&mut self.tracee, Tracee::gone(0));
        let _ = release(self.process, tracee);
    }
}

/// What seizing a thread found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seize {
    Seized,
    /// Gone, or a zombie: nothing to stop.
    Gone,
    /// This thread traces it already: a thread born to one we seized with
    /// `PTRACE_O_TRACECLONE`, or one another handle of ours holds.
    Ours,
}

/// Seizes `tid`.
fn seize(process: &Process, tid: i32, options: libc::c_int) -> Result<Seize> {
    match ptrace::seize(tid, options) {
        Ok(()) => Ok(Seize::Seized),
        Err(Errno::ESRCH) => Ok(Seize::Gone),
        Err(Errno::EPERM) => {
            let dir = PathBuf::from(format!("/proc/{}/task/{tid}", process.pid()));
            match procfs::stat(&dir)? {
                None => return Ok(Seize::Gone),
                Some(s) if matches!(s.state, b'Z' | b'X' | b'x') => return Ok(Seize::Gone),
                Some(_) => {}
            }
            if let Some(status) = procfs::status(&dir)? {
                // ptrace ties a tracee to the thread that attached it.
                if status.tracer == nix::unistd::gettid().as_raw() {
                    return Ok(Seize::Ours);
                }
                if status.tracer != 0 {
                    return Err(Error::AlreadyTraced {
                        pid: process.pid(),
                        tracer: status.tracer,
                    });
                }
            }
            Err(Error::ptrace(process.pid(), tid, "SEIZE", Errno::EPERM))
        }
        Err(errno) => Err(Error::ptrace(process.pid(), tid, "SEIZE", errno)),
    }
}

fn held_elsewhere(process: &Process, tid: i32) -> Error {
    Error::InvalidArgument(format!(
        "pid {}: thread {tid} is already stopped by another handle of this process; release that one first",
        process.pid()
    ))
}

pub(crate) fn interrupt(process: &Process, tid: i32) -> Result<()> {
    match ptrace::interrupt(tid) {
        // Exiting: waitpid will report it.
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(Error::ptrace(process.pid(), tid, "INTERRUPT", errno)),
    }
}

/// Resumes a thread from a stop that is not the one we wait for, delivering `sig` (0: none).
/// Every ptrace stop cancels a pending `PTRACE_INTERRUPT`, so it is asked for again first.
/// ESRCH means the thread is being killed, which waitpid will report.
pub(crate) fn pass(process: &Process, tid: i32, sig: i32) -> Result<()> {
    interrupt(process, tid)?;
    match ptrace::cont(tid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(Error::ptrace(process.pid(), tid, "CONT", errno)),
    }
}

/// Handles every state change of the not-yet-stopped tracees until all reached their stop.
/// Threads that exit are removed; threads born to a seized one (`PTRACE_EVENT_CLONE`) are
/// added. On timeout the set is left as it is (the caller's guard releases it).
pub(crate) fn settle(
    process: &Process,
    tracees: &mut Vec<Tracee>,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    settle_known(process, tracees, &HashSet::new(), deadline, timeout)
}

/// [`settle`], where a thread born to one of `tracees` that is in `elsewhere` is already
/// tracked by the caller.
fn settle_known(
    process: &Process,
    tracees: &mut Vec<Tracee>,
    elsewhere: &HashSet<i32>,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let mut backoff = Backoff::new(deadline);
    loop {
        let mut born = Vec::new();
        for t in tracees
            .iter_mut()
            .filter(|t| t.state == TraceeState::Running)
        {
            loop {
                let event = match ptrace::poll(t.tid) {
                    Ok(e) => e,
                    // Reaped elsewhere (or never ours any more): it is gone.
                    Err(Errno::ECHILD) => Event::Exited(0),
                    Err(errno) => {
                        return Err(Error::Wait {
                            pid: process.pid(),
                            tid: t.tid,
                            errno,
                        })
                    }
                };
                match event {
                    Event::Running => break,
                    Event::Exited(_) | Event::Killed(_) => {
                        t.state = TraceeState::Gone;
                        break;
                    }
                    Event::Ptrace { sig, event } if event == libc::PTRACE_EVENT_STOP => {
                        // Our interrupt, or a group-stop: either way it is stopped.
                        t.reached_stop(sig != libc::SIGTRAP);
                        if sig == libc::SIGTRAP {
                            t.regs = Some(restart::undo_stop_eintr(
                                process,
                                t.tid,
                                t.blocked.as_ref(),
                            )?);
                        }
                        break;
                    }
                    Event::Ptrace { event, .. } if event == libc::PTRACE_EVENT_CLONE => {
                        if let Ok(child) = ptrace::event_msg(t.tid) {
                            born.push((child as i32, t.options));
                        }
                        pass(process, t.tid, 0)?;
                    }
                    Event::Ptrace { .. } => pass(process, t.tid, 0)?,
                    Event::Signal(sig) => pass(process, t.tid, sig)?,
                }
            }
        }
        for (child, options) in born {
            if !elsewhere.contains(&child) && tracees.iter().all(|t| t.tid != child) {
                tracees.push(adopt(process, child, options));
            }
        }
        tracees.retain(|t| !t.is_gone());
        if tracees.iter().all(Tracee::is_stopped) {
            return Ok(());
        }
        if !backoff.wait() {
            return Err(Error::StopTimeout {
                pid: process.pid(),
                tids: tracees
                    .iter()
                    .filter(|t| !t.is_stopped())
                    .map(|t| t.tid)
                    .collect(),
                timeout,
            });
        }
    }
}

/// A task auto-attached by `PTRACE_O_TRACECLONE` (it has its parent's `options`). A clone that
/// is not a thread of ours (a `clone()` without `CLONE_THREAD`) is another process: it is let
/// go as soon as it stops.
pub(crate) fn adopt(process: &Process, tid: i32, options: libc::c_int) -> Tracee {
    let mut t = Tracee::new(tid, options);
    let ours = PathBuf::from(format!("/proc/{}/task/{tid}", process.pid())).exists();
    if !ours {
        let mut one = vec![t];
        let grace = Instant::now() + RELEASE_GRACE;
        let _ = settle(process, &mut one, grace, RELEASE_GRACE);
        if let Some(t) = one.pop() {
            if t.is_stopped() {
                let _ = ptrace::detach(tid);
            }
        }
        t = Tracee::gone(tid);
    }
    t
}

fn release_all(process: &Process, tracees: Vec<Tracee>) -> Result<()> {
    let mut first_error = None;
    for t in tracees {
        if let Err(e) = release(process, t) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sends back the signals a thread swallowed while running our code, then detaches it.
fn release(process: &Process, mut t: Tracee) -> Result<()> {
    if t.is_gone() {
        return Ok(());
    }
    if !t.is_stopped() {
        // Detaching needs the thread stopped: ask (again; a pending interrupt stays one) and
        // wait for the stop.
        interrupt(process, t.tid)?;
        let mut one = vec![t];
        let grace = Instant::now() + RELEASE_GRACE;
        settle(process, &mut one, grace, RELEASE_GRACE)?;
        match one.pop() {
            Some(back) => t = back,
            None => return Ok(()),
        }
    }
    if !t.saved.is_empty() {
        signals::requeue(process, &mut t);
    }
    if t.is_gone() {
        return Ok(());
    }
    match ptrace::detach(t.tid) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => {
            // Killed while stopped: collect its exit so it does not linger as our zombie.
            let _ = ptrace::wait_event(t.tid, Instant::now() + RELEASE_GRACE);
            Ok(())
        }
        Err(errno) => Err(Error::ptrace(process.pid(), t.tid, "DETACH", errno)),
    }
}
