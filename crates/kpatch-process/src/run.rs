//! Letting a few threads of a stopped process run until each returns into a given frame, the
//! others staying stopped: the safety check's way to wait for a thread to leave code that is
//! about to be replaced.
//!
//! A breakpoint instruction is written at each return address. A thread arrives when it traps
//! there with the stack pointer its frame will have after the return; it is then left stopped
//! with its program counter on the return address, about to execute the original instruction
//! (on x86_64 the trap leaves the pc one byte further; it is moved back). Everything else that
//! can happen while they run is handled:
//!
//! - a running thread that traps at a breakpoint that is not its own (another thread's return
//!   point, or its own one at a deeper recursion level) is stepped over it: every other running
//!   thread is stopped first, the original bytes are put back for one single-step, then the
//!   breakpoint is written again;
//! - signals are delivered as usual while a thread runs; one that arrives while we stop the
//!   threads is kept and delivered when they continue or, at the end, re-queued to the thread
//!   when it is released;
//! - a thread created by a running one is held stopped at birth (`PTRACE_O_TRACECLONE`) and
//!   joins the stopped set; a process forked by one gets the original bytes back in its copy of
//!   the memory and is let go; a thread that exits is dropped; an `exec` ends the run (the
//!   breakpoints went away with the old program);
//! - a job-control stop ends the wait for that thread.
//!
//! Whatever happens, every thread is stopped again and every breakpoint removed before this
//! returns. If this process dies in between, the kernel lets the threads run with the
//! breakpoints in place and the first one to reach one is killed by `SIGTRAP`: pass a
//! [`Guardian`], which then puts the original bytes back within microseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::guardian::Guardian;
use crate::memory::Memory;
use crate::process::Process;
use crate::procfs;
use crate::ptrace::{self, Backoff, Event};
use crate::regs::{read_regs, write_regs};
use crate::stop::{adopt, interrupt, settle, StoppedProcess};
use crate::thread::ThreadHandle;
use crate::tracee::{sigbit, Tracee, TraceeState};

/// How long stopping a running thread again (or collecting a newborn one) may take.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Stops tolerated while single-stepping a thread over a breakpoint.
const MAX_STEP_STOPS: usize = 64;
/// What the threads let run are traced for: threads and processes they create, and `exec`.
const RUN_OPTIONS: libc::c_int =
    libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEEXEC;

/// Where a thread is to be let run to: until it is about to execute the instruction at `addr`
/// with its stack pointer at or above `sp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPoint {
    /// The thread.
    pub tid: i32,
    /// The return address.
    pub addr: u64,
    /// The stack pointer of the frame returned into, or a lower bound of it: a frame found
    /// through the frame-pointer chain (code without unwind tables, such as an applied patch
    /// on aarch64, whose frame record need not sit at the top of its frame) only tells that
    /// the caller's stack pointer is above the record. A thread trapping at `addr` with a
    /// lower stack pointer is returning into a deeper call of the same function (recursion).
    pub sp: u64,
}

/// What happened to the threads of a [`StoppedProcess::run_to`]. All of them, and every thread
/// born meanwhile, are stopped again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Threads that reached their return point; each is stopped on it.
    pub arrived: Vec<i32>,
    /// Threads that did not arrive in time (or were stopped by job control), stopped wherever
    /// they were.
    pub late: Vec<i32>,
    /// Threads that exited meanwhile.
    pub exited: Vec<i32>,
    /// Threads created meanwhile by the running ones, stopped before running any code.
    pub born: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Stopped by us to step another thread over a breakpoint; resumed afterwards.
    Held,
    /// Stopped for good (job control, or after the wait).
    Stopped,
    Arrived,
    Gone,
}

#[derive(Debug)]
struct Runner {
    point: ReturnPoint,
    state: State,
    /// A signal it stopped for while held, delivered when it continues.
    pending: Option<i32>,
}

/// What the run knows about the breakpoints.
struct Breakpoints {
    insn: &'static [u8],
    /// How far the pc is past the breakpoint's address when its trap is reported.
    advance: u64,
    /// `si_code` of its trap.
    si_code: i32,
    originals: BTreeMap<u64, Vec<u8>>,
    /// Addresses where the breakpoint is in memory right now.
    inserted: BTreeSet<u64>,
}

/// How a stop that we asked for is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Briefly, to step another thread: signals wait to be delivered on resume.
    Brief,
    /// For good: signals are kept and re-queued when the thread is released.
    Final,
}

/// One [`StoppedProcess::run_to`] under way: the stopped set, the threads let run, the
/// breakpoints, the threads born meanwhile.
struct Run<'w, 'p> {
    world: &'w mut StoppedProcess<'p>,
    runners: Vec<Runner>,
    bps: Breakpoints,
    /// Threads created meanwhile by the running ones, stopped.
    born: Vec<Tracee>,
    /// The process executed a new program: the breakpoints went away with the old one.
    execed: bool,
    /// When the runners stop waiting for their return points.
    deadline: Instant,
}

impl StoppedProcess<'_> {
    /// Lets the threads named in `points` run, every other thread staying stopped, until each
    /// has returned to its point or `timeout` has passed (see the module documentation). The
    /// `guardian`, if given, is armed with the original bytes while the breakpoints are in
    /// memory; `on_inserted` runs once they are.
    pub fn run_to(
        &mut self,
        points: &[ReturnPoint],
        timeout: Duration,
        mut guardian: Option<&mut Guardian>,
        on_inserted: &mut dyn FnMut(),
    ) -> Result<RunReport> {
        let process = self.process();
        let arch = process.arch();
        let insn = arch.breakpoint_insn();
        let mut report = RunReport::default();
        let mut runners: Vec<Runner> = Vec::new();
        for p in points {
            if runners.iter().any(|r| r.point.tid == p.tid) {
                continue;
            }
            let t = self
                .tracees
                .iter()
                .find(|t| t.tid == p.tid && !t.is_gone())
                .ok_or(Error::UnknownThread {
                    pid: process.pid(),
                    tid: p.tid,
                })?;
            if t.state == TraceeState::GroupStopped {
                report.late.push(p.tid);
                continue;
            }
            runners.push(Runner {
                point: *p,
                state: State::Stopped,
                pending: None,
            });
        }
        if runners.is_empty() {
            return Ok(report);
        }
        let mut bps = Breakpoints {
            insn,
            advance: arch.breakpoint_pc_advance(),
            si_code: arch.breakpoint_si_code(),
            originals: BTreeMap::new(),
            inserted: BTreeSet::new(),
        };
        for r in &runners {
            let addr = r.point.addr;
            if bps.originals.contains_key(&addr) {
                continue;
            }
            let orig = process.read_vec(addr, insn.len())?;
            if orig == insn {
                return Err(Error::InvalidArgument(format!(
                    "pid {}: {addr:#x} already holds a breakpoint instruction (is a debugger attached, or did a run die here?); not waiting on it",
                    process.pid()
                )));
            }
            bps.originals.insert(addr, orig);
        }
        if let Some(g) = guardian.as_deref_mut() {
            let batch: Vec<(u64, Vec<u8>)> =
                bps.originals.iter().map(|(a, b)| (*a, b.clone())).collect();
            g.arm(&batch)?;
        }

        let mut result = Ok(());
        let addrs: Vec<u64> = bps.originals.keys().copied().collect();
        for addr in addrs {
            if let Err(e) = process.write(addr, insn) {
                result = Err(e);
                break;
            }
            bps.inserted.insert(addr);
        }
        if result.is_ok() {
            on_inserted();
        }
        let mut run = Run {
            world: self,
            runners,
            bps,
            born: Vec::new(),
            execed: false,
            deadline: Instant::now() + timeout,
        };
        if result.is_ok() {
            result = run.drive();
        }
        let quiesced = if run.execed { Ok(()) } else { run.quiesce() };
        // After an exec the addresses belong to another program: nothing of ours is left.
        let restored = if run.execed {
            Ok(())
        } else {
            let r = run.restore_breakpoints();
            let alive = run.world.tracees.iter().any(|t| !t.is_gone())
                || run.born.iter().any(|t| !t.is_gone());
            if alive {
                r
            } else {
                Ok(())
            }
        };
        if restored.is_ok() {
            if let Some(g) = guardian {
                let _ = g.disarm();
            }
        }
        let Run {
            runners, mut born, ..
        } = run;
        for t in &born {
            report.born.push(t.tid);
        }
        self.tracees.append(&mut born);
        for r in &runners {
            let tid = r.point.tid;
            match r.state {
                State::Arrived => report.arrived.push(tid),
                State::Gone => report.exited.push(tid),
                _ => report.late.push(tid),
            }
            if r.state != State::Gone && ptrace::set_options(tid, 0).is_ok() {
                if let Some(t) = self.tracees.iter_mut().find(|t| t.tid == tid) {
                    t.options = 0;
                }
            }
        }
        for &tid in &report.born {
            if ptrace::set_options(tid, 0).is_ok() {
                if let Some(t) = self.tracees.iter_mut().find(|t| t.tid == tid) {
                    t.options = 0;
                }
            }
        }
        result?;
        quiesced?;
        restored?;
        Ok(report)
    }
}

impl Run<'_, '_> {
    fn process(&self) -> &Process {
        self.world.process()
    }

    fn tracee(&mut self, tid: i32) -> Option<&mut Tracee> {
        self.world.tracees.iter_mut().find(|t| t.tid == tid)
    }

    /// Notes that `tid` stopped (a group-stop stays one) or runs; its registers are stale.
    fn set_stopped(&mut self, tid: i32, stopped: bool) {
        if let Some(t) = self.tracee(tid) {
            t.state = match (t.state, stopped) {
                (TraceeState::Gone | TraceeState::GroupStopped, true) => t.state,
                (_, true) => TraceeState::Stopped,
                (TraceeState::Gone, false) => TraceeState::Gone,
                (_, false) => TraceeState::Running,
            };
            t.regs = None;
        }
    }

    /// Notes that `tid` stopped for job control.
    fn set_group_stopped(&mut self, tid: i32) {
        if let Some(t) = self.tracee(tid) {
            t.state = TraceeState::GroupStopped;
        }
    }

    fn set_gone(&mut self, tid: i32) {
        if let Some(t) = self.tracee(tid) {
            t.state = TraceeState::Gone;
        }
    }

    fn cont(&mut self, tid: i32, sig: i32) -> Result<()> {
        self.set_stopped(tid, false);
        match ptrace::cont(tid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(Error::ptrace(self.process().pid(), tid, "CONT", errno)),
        }
    }

    fn drive(&mut self) -> Result<()> {
        for i in 0..self.runners.len() {
            let tid = self.runners[i].point.tid;
            ptrace::set_options(tid, RUN_OPTIONS)
                .map_err(|e| Error::ptrace(self.process().pid(), tid, "SETOPTIONS", e))?;
            if let Some(t) = self.tracee(tid) {
                t.options = RUN_OPTIONS;
            }
            self.cont(tid, 0)?;
            self.runners[i].state = State::Running;
        }
        let mut backoff = Backoff::new(self.deadline);
        loop {
            let mut events = false;
            for i in 0..self.runners.len() {
                if self.runners[i].state != State::Running {
                    continue;
                }
                let event = poll(self.runners[i].point.tid);
                if event == Event::Running {
                    continue;
                }
                events = true;
                self.on_run_event(i, event)?;
            }
            if self.runners.iter().all(|r| r.state != State::Running) {
                return Ok(());
            }
            if events {
                backoff = Backoff::new(self.deadline);
            }
            if !backoff.wait() {
                return Ok(());
            }
        }
    }

    /// Whether the stop of `tid` is the trap of one of our breakpoints; returns its address.
    fn our_trap(&self, tid: i32) -> Result<Option<u64>> {
        let info = match ptrace::siginfo(tid) {
            Ok(i) => i,
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(Error::ptrace(self.process().pid(), tid, "GETSIGINFO", e)),
        };
        if info.si_code != self.bps.si_code {
            return Ok(None);
        }
        let layout = self.process().arch().regs();
        let regs = read_regs(self.process(), tid)?;
        let addr = regs[layout.pc].wrapping_sub(self.bps.advance);
        Ok(self.bps.originals.contains_key(&addr).then_some(addr))
    }

    /// Puts the pc of `tid` back on the breakpoint at `addr` and says whether its stack
    /// pointer is at or above `sp` (see [`ReturnPoint::sp`]).
    fn rewind(&mut self, tid: i32, addr: u64, sp: u64) -> Result<bool> {
        let layout = self.process().arch().regs();
        let mut regs = read_regs(self.process(), tid)?;
        regs[layout.pc] = addr;
        if let Some(t) = self.tracee(tid) {
            t.regs = None;
        }
        write_regs(self.process(), tid, &regs)?;
        Ok(regs[layout.sp] >= sp)
    }

    /// Whether runner `i`, stopped on the breakpoint at `addr`, has arrived: its own return
    /// point, with its own stack pointer (the pc is put back on the breakpoint either way).
    fn arrived(&mut self, i: usize, addr: u64) -> Result<bool> {
        let point = self.runners[i].point;
        let right_frame = self.rewind(point.tid, addr, point.sp)?;
        Ok(addr == point.addr && right_frame)
    }

    fn on_run_event(&mut self, i: usize, event: Event) -> Result<()> {
        let tid = self.runners[i].point.tid;
        match event {
            Event::Running => {}
            Event::Exited(_) | Event::Killed(_) => {
                self.runners[i].state = State::Gone;
                self.set_gone(tid);
            }
            Event::Signal(sig) if sig == libc::SIGTRAP => match self.our_trap(tid)? {
                Some(addr) => {
                    self.set_stopped(tid, true);
                    if self.arrived(i, addr)? {
                        self.runners[i].state = State::Arrived;
                    } else {
                        self.runners[i].state = State::Held;
                        self.step_over(i, addr)?;
                    }
                }
                None => self.cont(tid, sig)?,
            },
            Event::Signal(sig) => self.cont(tid, sig)?,
            Event::Ptrace { sig, event } if event == libc::PTRACE_EVENT_STOP => {
                if sig == libc::SIGTRAP {
                    self.cont(tid, 0)?;
                } else {
                    // Job control stopped the process: it is not ours to resume.
                    self.runners[i].state = State::Stopped;
                    self.set_group_stopped(tid);
                }
            }
            Event::Ptrace { event, .. } => {
                self.set_stopped(tid, true);
                self.on_birth_or_exec(tid, event)?;
                self.cont(tid, 0)?;
            }
        }
        Ok(())
    }

    /// Handles a `PTRACE_EVENT_CLONE`, `_FORK` or `_EXEC` stop of `tid`.
    fn on_birth_or_exec(&mut self, tid: i32, event: i32) -> Result<()> {
        match event {
            e if e == libc::PTRACE_EVENT_CLONE => {
                if let Ok(child) = ptrace::event_msg(tid) {
                    let child = child as i32;
                    if self.born.iter().all(|t| t.tid != child) {
                        let t = adopt(self.process(), child, RUN_OPTIONS);
                        if !t.is_gone() {
                            self.born.push(t);
                        }
                    }
                }
            }
            e if e == libc::PTRACE_EVENT_FORK => {
                if let Ok(child) = ptrace::event_msg(tid) {
                    clean_fork_child(child as i32, &self.bps);
                }
            }
            e if e == libc::PTRACE_EVENT_EXEC => {
                self.execed = true;
                return Err(Error::UnexpectedStop {
                    pid: self.process().pid(),
                    tid,
                    detail: "the process executed a new program while we waited for it".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Steps runner `i`, stopped on the breakpoint at `addr` that is not its arrival, over the
    /// original instruction, with every other thread stopped meanwhile.
    fn step_over(&mut self, i: usize, addr: u64) -> Result<()> {
        for j in 0..self.runners.len() {
            if j != i && self.runners[j].state == State::Running {
                self.hold(j, Hold::Brief)?;
            }
        }
        let tid = self.runners[i].point.tid;
        let orig = self.bps.originals.get(&addr).cloned().unwrap_or_default();
        self.process().write(addr, &orig)?;
        self.bps.inserted.remove(&addr);
        let stepped = self.single_step(i);
        let reinserted = self.process().write(addr, self.bps.insn);
        if reinserted.is_ok() {
            self.bps.inserted.insert(addr);
        }
        stepped?;
        reinserted?;
        for j in 0..self.runners.len() {
            if self.runners[j].state == State::Held {
                let sig = self.runners[j].pending.take().unwrap_or(0);
                self.runners[j].state = State::Running;
                self.cont(self.runners[j].point.tid, sig)?;
            }
        }
        if self.runners[i].state == State::Held {
            self.runners[i].state = State::Running;
            self.cont(tid, 0)?;
        }
        Ok(())
    }

    /// Single-steps runner `i` once (delivering a signal that gets in the way).
    fn single_step(&mut self, i: usize) -> Result<()> {
        let tid = self.runners[i].point.tid;
        let mut sig = 0;
        for _ in 0..MAX_STEP_STOPS {
            self.set_stopped(tid, false);
            match step(tid, sig) {
                Ok(()) => {}
                Err(Errno::ESRCH) => {}
                Err(e) => return Err(Error::ptrace(self.process().pid(), tid, "SINGLESTEP", e)),
            }
            sig = 0;
            let grace = self.deadline.max(Instant::now() + STOP_GRACE);
            let event = wait(tid, grace);
            match event {
                Event::Running => {
                    // Stuck in a blocking system call: take it back like the others.
                    return self.hold(i, Hold::Brief);
                }
                Event::Exited(_) | Event::Killed(_) => {
                    self.runners[i].state = State::Gone;
                    self.set_gone(tid);
                    return Ok(());
                }
                Event::Signal(s) if s == libc::SIGTRAP => {
                    self.set_stopped(tid, true);
                    return Ok(());
                }
                Event::Signal(s) => sig = s,
                Event::Ptrace { sig: s, event } if event == libc::PTRACE_EVENT_STOP => {
                    if s != libc::SIGTRAP {
                        self.set_stopped(tid, true);
                        self.set_group_stopped(tid);
                        self.runners[i].state = State::Stopped;
                        return Ok(());
                    }
                }
                Event::Ptrace { event, .. } => {
                    self.set_stopped(tid, true);
                    self.on_birth_or_exec(tid, event)?;
                }
            }
        }
        Err(Error::UnexpectedStop {
            pid: self.process().pid(),
            tid,
            detail: format!(
                "stepping over the breakpoint did not complete after {MAX_STEP_STOPS} stops"
            ),
        })
    }

    /// Stops running runner `j` and waits for it; its stop is sorted out as `how` says.
    fn hold(&mut self, j: usize, how: Hold) -> Result<()> {
        let pid = self.process().pid();
        let tid = self.runners[j].point.tid;
        interrupt(self.process(), tid)?;
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let event = wait(tid, deadline);
            match event {
                Event::Running => {
                    return Err(Error::StopTimeout {
                        pid,
                        tids: vec![tid],
                        timeout: STOP_GRACE,
                    })
                }
                Event::Exited(_) | Event::Killed(_) => {
                    self.runners[j].state = State::Gone;
                    self.set_gone(tid);
                    return Ok(());
                }
                Event::Signal(sig) => {
                    self.set_stopped(tid, true);
                    if sig == libc::SIGTRAP {
                        if let Some(addr) = self.our_trap(tid)? {
                            self.runners[j].state = if self.arrived(j, addr)? {
                                State::Arrived
                            } else {
                                held(how)
                            };
                            return Ok(());
                        }
                    }
                    self.runners[j].state = held(how);
                    match how {
                        Hold::Brief => self.runners[j].pending = Some(sig),
                        Hold::Final => self.keep(tid)?,
                    }
                    return Ok(());
                }
                Event::Ptrace { sig, event } if event == libc::PTRACE_EVENT_STOP => {
                    self.set_stopped(tid, true);
                    if sig != libc::SIGTRAP {
                        self.set_group_stopped(tid);
                        self.runners[j].state = State::Stopped;
                        return Ok(());
                    }
                    // Our interrupt. The kernel reports it before any pending signal, so a
                    // thread that had just executed a breakpoint has its SIGTRAP still queued:
                    // let it come (a thread left stopped with it would die of it when released).
                    if trap_pending(pid, tid) {
                        self.cont(tid, 0)?;
                        continue;
                    }
                    self.runners[j].state = held(how);
                    return Ok(());
                }
                Event::Ptrace { event, .. } => {
                    self.set_stopped(tid, true);
                    self.on_birth_or_exec(tid, event)?;
                    // Any ptrace stop cancels a pending interrupt: ask again, then go on.
                    interrupt(self.process(), tid)?;
                    self.cont(tid, 0)?;
                }
            }
        }
    }

    /// Keeps the signal `tid` is stopped with, to re-queue it when the thread is released.
    fn keep(&mut self, tid: i32) -> Result<()> {
        let process = self.world.process();
        if let Some(t) = self.world.tracees.iter_mut().find(|t| t.tid == tid) {
            ThreadHandle::new(process, t).keep_signal()?;
        }
        Ok(())
    }

    /// Stops every runner still running (and collects the threads born meanwhile), for good.
    fn quiesce(&mut self) -> Result<()> {
        let mut first_error = None;
        for j in 0..self.runners.len() {
            if self.execed {
                break;
            }
            match self.runners[j].state {
                State::Running => {
                    if let Err(e) = self.hold(j, Hold::Final) {
                        first_error.get_or_insert(e);
                    }
                }
                State::Held => {
                    // Left by an error in the middle of a step-over: its signal is kept.
                    if self.runners[j].pending.take().is_some() {
                        if let Err(e) = self.keep(self.runners[j].point.tid) {
                            first_error.get_or_insert(e);
                        }
                    }
                    self.runners[j].state = State::Stopped;
                }
                _ => {}
            }
        }
        if !self.born.is_empty() {
            let deadline = Instant::now() + STOP_GRACE;
            let process = self.world.process();
            if let Err(e) = settle(process, &mut self.born, deadline, STOP_GRACE) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Puts the original bytes back under every breakpoint still in memory.
    fn restore_breakpoints(&mut self) -> Result<()> {
        let process = self.world.process();
        let bps = &mut self.bps;
        let mut first_error = None;
        let inserted: Vec<u64> = bps.inserted.iter().copied().collect();
        for addr in inserted {
            let Some(orig) = bps.originals.get(&addr) else {
                continue;
            };
            // One retry: a write that fails once (a transient fault) must not leave a trap
            // behind.
            let r = process
                .write(addr, orig)
                .or_else(|_| process.write(addr, orig));
            match r {
                Ok(()) => {
                    bps.inserted.remove(&addr);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn held(how: Hold) -> State {
    match how {
        Hold::Brief => State::Held,
        Hold::Final => State::Stopped,
    }
}

/// A process forked by a running thread inherited our breakpoints: put the original bytes back
/// in its memory and let it go.
fn clean_fork_child(child: i32, bps: &Breakpoints) {
    use std::os::unix::fs::FileExt;
    let _ = wait(child, Instant::now() + STOP_GRACE);
    if let Ok(mem) = std::fs::File::options()
        .read(true)
        .write(true)
        .open(format!("/proc/{child}/mem"))
    {
        for addr in &bps.inserted {
            if let Some(orig) = bps.originals.get(addr) {
                let _ = mem.write_all_at(orig, *addr);
            }
        }
    }
    let _ = ptrace::detach(child);
}

/// Whether a SIGTRAP is queued for thread `tid` of `pid`.
fn trap_pending(pid: i32, tid: i32) -> bool {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}/task/{tid}"));
    procfs::signal_state(&dir).is_some_and(|s| s.pending & sigbit(libc::SIGTRAP) != 0)
}

fn poll(tid: i32) -> Event {
    match ptrace::poll(tid) {
        Ok(e) => e,
        Err(_) => Event::Exited(0),
    }
}

fn wait(tid: i32, deadline: Instant) -> Event {
    match ptrace::wait_event(tid, deadline) {
        Ok(e) => e,
        Err(_) => Event::Exited(0),
    }
}

fn step(tid: i32, sig: i32) -> std::result::Result<(), Errno> {
    if sig == 0 {
        ptrace::single_step(tid)
    } else {
        ptrace::single_step_with(tid, sig)
    }
}
