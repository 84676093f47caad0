//! Where the callbacks of `<libcare/livepatch.h>` run: in a thread of the target, borrowed
//! for the call while every other thread runs on, chosen so that the callback can use the C
//! library (`printf`, `malloc`, locks) without deadlocking on a lock that thread holds.
//!
//! Threads are stopped one at a time, their stacks walked. A thread qualifies when the walk
//! reaches the bottom of its stack, no frame is in the dynamic loader, and, below its start
//! routines (`_start`, `__libc_start_main`, `start_thread`, `clone3`), every frame is in the
//! program, a library other than the C library's, or a patch: it is in no libc function, so
//! it holds no allocator, stdio or loader lock and is in the middle of no libc state change.
//! A thread blocked in a waiting syscall (`nanosleep`, `poll`, `epoll_wait`, `accept`, a futex
//! wait outside libc's own locks...) also qualifies when only its innermost frames are libc's:
//! libc makes those calls holding none of its locks. A thread inside `malloc`, in `write` from
//! `fflush`, in `mmap` from the allocator, in a `dlopen`, in a signal handler that interrupted
//! libc, does not. Locks the other threads hold are released as they run. When no thread
//! qualifies, the threads run for a moment and are looked at again, until the patience runs
//! out. The callback is called as IFUNC resolvers are (`ThreadHandle::call`): the thread's
//! registers and signal state are put back afterwards and an interrupted syscall resumes.
//!
//! A process opened with a held thread ([`Process::open_held`]: start-up patching, a library
//! being loaded or unloaded) runs its callbacks in that thread, as the kernel runs a module's
//! notifiers in the task that loads or unloads it. It is stopped at a known point, the dynamic
//! loader's debugger hook (or the loader's `munmap` of an object it unloads), where the loader
//! holds only its own recursive lock, and no other lock of libc.

use std::ops::Range;
use std::time::{Duration, Instant};

use kpatch_arch::Arch;
use kpatch_process::{DeferTermination, Memory, Process, StoppedThread};

use crate::discover::{ImageCache, Loaded};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::report::Report;
use crate::unwind::{contains_sorted, merged, StackWalker, Walk};

/// What a frame's code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    /// The C library (and the vDSO it calls).
    Libc,
    /// The dynamic loader.
    Loader,
    /// Anything else: the program, other libraries, patches.
    Other,
}

/// Whether an object is part of the C library (glibc's, musl's) by its file name.
fn is_libc(name: &str) -> bool {
    [
        "libc.so",
        "libc-",
        "libpthread",
        "libdl.so",
        "libdl-",
        "libc.musl",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Whether an object is the dynamic loader by its file name.
fn is_loader(name: &str) -> bool {
    name.starts_with("ld-linux")
        || name.starts_with("ld.so")
        || name.starts_with("ld-2.")
        || name.starts_with("ld64.so")
}

/// The syscall a stopped thread was in: number and arguments, from
/// `/proc/PID/task/TID/syscall`; `None` when it was in none.
fn current_syscall(pid: i32, tid: i32) -> Option<(u64, Vec<u64>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut words = text.split_ascii_whitespace();
    let nr: i64 = words.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let args = words
        .take(6)
        .filter_map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())
        .collect();
    Some((nr as u64, args))
}

/// Futex operations that wait (`FUTEX_WAIT`, `_BITSET`, `LOCK_PI`, `WAIT_REQUEUE_PI`,
/// `LOCK_PI2`).
fn futex_waits(op: u64) -> bool {
    matches!(op & 0x7f, 0 | 9 | 6 | 11 | 13)
}

/// Whether syscall `nr` (on `arch`) only waits: libc calls it holding none of its locks.
/// A futex wait counts when the futex is not libc's or the loader's own (`in_runtime`).
/// `restart_syscall` counts: it resumes a `nanosleep`, `poll` or timed futex wait that a stop
/// (ours among them) interrupted, and libc never waits with a timeout holding a lock.
fn waits(arch: &dyn Arch, nr: u64, args: &[u64], in_runtime: impl Fn(u64) -> bool) -> bool {
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    if nr == arch.sys_futex() {
        return futex_waits(arg(1)) && !in_runtime(arg(0));
    }
    arch.waiting_syscalls().contains(&nr)
}

/// Whether a thread whose frames' code is `code` (innermost first, the walk complete) may run
/// a callback; `waiting`: it is blocked in a waiting syscall. `exe_bottom`: its outermost
/// frame is the program's `_start`.
fn may_host(code: &[Code], waiting: bool, exe_bottom: bool) -> bool {
    let mut end = code.len();
    // The start routines: the program's `_start` below libc's `__libc_start_main`, or
    // libc's `start_thread` and `clone3`.
    if exe_bottom && end >= 2 && code[end - 2] != Code::Other {
        end -= 1;
    }
    while end > 0 && code[end - 1] != Code::Other {
        end -= 1;
    }
    let mut begin = 0;
    if waiting {
        while begin < end && code[begin] == Code::Libc {
            begin += 1;
        }
    }
    begin < end && code[begin..end].iter().all(|&c| c == Code::Other)
}

/// Runs functions of the target in threads that may run them (see the module's comment).
/// What it needs to walk stacks is prepared at the first call.
pub struct Host<'p> {
    proc: &'p Process,
    loaded: &'p Loaded,
    images: &'p ImageCache,
    regions: Vec<Range<u64>>,
    walker: Option<StackWalker>,
    libc: Vec<Range<u64>>,
    loader: Vec<Range<u64>>,
    exe: Option<Range<u64>>,
    stop_timeout: Duration,
    patience: Duration,
    call_timeout: Duration,
    /// The thread that ran the last call: looked at first.
    last: Option<i32>,
    /// The thread the caller holds, which runs every call (see the module's comment).
    held: Option<i32>,
}

impl<'p> Host<'p> {
    /// A host for `proc`, where `loaded` is loaded and `regions` are patch regions (some
    /// perhaps newer than `loaded`).
    pub fn new(
        proc: &'p Process,
        loaded: &'p Loaded,
        images: &'p ImageCache,
        regions: &[Range<u64>],
        opts: &Options,
    ) -> Host<'p> {
        Host {
            proc,
            loaded,
            images,
            regions: regions.to_vec(),
            walker: None,
            libc: Vec::new(),
            loader: Vec::new(),
            exe: None,
            stop_timeout: opts.stop_timeout,
            patience: opts.callback_timeout,
            call_timeout: opts.callback_timeout,
            last: None,
            held: proc.held_tid(),
        }
    }

    /// The stack walker, and which code is libc's and the loader's.
    fn prepare(&mut self) -> &mut StackWalker {
        let (proc, loaded, images) = (self.proc, self.loaded, self.images);
        if self.walker.is_none() {
            let mut walker = StackWalker::new(proc.arch());
            let (mut libc, mut loader) = (Vec::new(), Vec::new());
            for o in &loaded.objects {
                walker.add_object(
                    &o.name,
                    o.range.clone(),
                    o.load_bias,
                    &o.image,
                    &images.trampolines,
                );
                if is_libc(&o.name) {
                    libc.push(o.range.clone());
                } else if is_loader(&o.name) {
                    loader.push(o.range.clone());
                }
                if o.is_exe {
                    self.exe = Some(o.range.clone());
                }
            }
            for p in &loaded.patches {
                walker.add_opaque(p.range());
            }
            for r in &self.regions {
                walker.add_opaque(r.clone());
            }
            let mut code: Vec<Range<u64>> = loaded
                .maps
                .iter()
                .filter(|m| m.perms.exec)
                .map(|m| m.range())
                .collect();
            code.extend(self.regions.iter().cloned());
            walker.set_code(code);
            for m in loaded.maps.iter().filter(|m| m.is_special("[vdso]")) {
                libc.push(m.range());
                if let Ok(bytes) = proc.read_vec(m.start, m.len() as usize) {
                    walker.search_text(m.start, &bytes, &images.trampolines);
                }
            }
            self.libc = merged(libc);
            self.loader = merged(loader);
            self.walker = Some(walker);
        }
        self.walker
            .get_or_insert_with(|| StackWalker::new(proc.arch()))
    }

    fn code(&self, addr: u64) -> Code {
        if contains_sorted(&self.loader, addr) {
            Code::Loader
        } else if contains_sorted(&self.libc, addr) {
            Code::Libc
        } else {
            Code::Other
        }
    }

    /// Whether the stopped thread may run a callback now.
    fn suitable(&mut self, stopped: &mut StoppedThread<'_>) -> Result<bool> {
        let regs = stopped.thread().regs()?;
        let proc = self.proc;
        let walk: Walk = self
            .prepare()
            .walk(&regs, &mut |addr| proc.read_u64(addr).ok());
        if !walk.complete {
            return Ok(false);
        }
        let code: Vec<Code> = walk.frames.iter().map(|f| self.code(f.lookup)).collect();
        let waiting = current_syscall(proc.pid(), stopped.tid()).is_some_and(|(nr, args)| {
            let runtime =
                |a: u64| contains_sorted(&self.libc, a) || contains_sorted(&self.loader, a);
            waits(proc.arch(), nr, &args, runtime)
        });
        let exe_bottom = walk
            .frames
            .last()
            .zip(self.exe.as_ref())
            .is_some_and(|(f, exe)| exe.contains(&f.lookup));
        Ok(may_host(&code, waiting, exe_bottom))
    }

    /// Calls the function at `func` with `arg` in `stopped`, then lets the thread go.
    fn call_in(
        &self,
        mut stopped: StoppedThread<'_>,
        func: u64,
        arg: u64,
        what: &str,
    ) -> Result<u64> {
        let result = stopped.thread().call(func, &[arg], self.call_timeout);
        let resumed = stopped.resume();
        let value = result.map_err(|source| Error::Callback {
            what: what.to_owned(),
            pid: self.proc.pid(),
            source,
        })?;
        resumed?;
        Ok(value)
    }

    /// Calls the function at `func` with `arg` in a thread that may run it, the others
    /// running; returns its integer result. `what` names it in messages.
    pub fn call(&mut self, func: u64, arg: u64, what: &str, rep: &mut dyn Report) -> Result<u64> {
        let proc = self.proc;
        let pid = proc.pid();
        if let Some(tid) = self.held {
            let _defer = DeferTermination::new();
            let stopped = proc.stop_one(tid, self.stop_timeout)?;
            rep.detail(&format!(
                "{what}: running in thread {tid}, held in the loader"
            ));
            return self.call_in(stopped, func, arg, what);
        }
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            let mut tids = proc.thread_ids()?;
            tids.sort_by_key(|&t| (Some(t) != self.last, t != pid, t));
            for tid in tids {
                let _defer = DeferTermination::new();
                let Ok(mut stopped) = proc.stop_one(tid, self.stop_timeout) else {
                    continue;
                };
                if !self.suitable(&mut stopped)? {
                    stopped.resume()?;
                    continue;
                }
                rep.detail(&format!("{what}: running in thread {tid}"));
                self.last = Some(tid);
                return self.call_in(stopped, func, arg, what);
            }
            if start.elapsed() >= self.patience {
                return Err(Error::NoHost {
                    pid,
                    what: what.to_owned(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Code::*;

    #[test]
    fn hosts_are_threads_outside_libc_above_their_start_routines() {
        // main <- __libc_start_call_main <- __libc_start_main <- _start
        assert!(may_host(&[Other, Libc, Libc, Other], false, true));
        // A worker: f <- start_thread <- clone3.
        assert!(may_host(&[Other, Other, Libc, Libc], false, false));
        // Inside malloc, or in code malloc called back (a signal handler, a comparator).
        assert!(!may_host(&[Libc, Other, Libc, Libc, Other], false, true));
        assert!(!may_host(&[Other, Libc, Other, Libc, Libc], false, false));
        // Blocked in nanosleep, called from the program: its libc frames are on top.
        assert!(may_host(
            &[Libc, Libc, Other, Libc, Libc, Other],
            true,
            true
        ));
        assert!(!may_host(
            &[Libc, Libc, Other, Libc, Libc, Other],
            false,
            true
        ));
        // The loader anywhere above the start routines.
        assert!(!may_host(&[Loader, Libc, Other, Libc, Libc], true, false));
        assert!(!may_host(&[Other, Loader, Other, Libc, Libc], false, false));
        // Nothing of its own: a thread libc runs for itself.
        assert!(!may_host(&[Libc, Libc, Libc], true, false));
    }

    #[test]
    fn waiting_syscalls_are_those_that_hold_no_lock() {
        let nowhere = |_| false;
        let x86 = kpatch_arch::for_machine(kpatch_arch::EM_X86_64).unwrap();
        let arm = kpatch_arch::for_machine(kpatch_arch::EM_AARCH64).unwrap();
        assert!(waits(x86, 230, &[], nowhere)); // clock_nanosleep
        assert!(waits(x86, 219, &[], nowhere)); // restart_syscall
        assert!(!waits(x86, 1, &[], nowhere)); // write (fflush holds the FILE lock)
        assert!(!waits(x86, 9, &[], nowhere)); // mmap (the allocator holds its lock)
                                               // A futex wait on the program's mutex, not on one of libc's.
        assert!(waits(x86, 202, &[0x5000, 0x80], |a| a == 0x7000));
        assert!(!waits(x86, 202, &[0x7000, 0x80], |a| a == 0x7000));
        assert!(!waits(x86, 202, &[0x5000, 0x81], nowhere)); // FUTEX_WAKE
        assert!(waits(arm, 115, &[], nowhere));
        assert!(!waits(arm, 64, &[], nowhere));
    }
}
