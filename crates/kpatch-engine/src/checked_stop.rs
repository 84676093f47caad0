//! The checked stop: every thread stopped, and kept stopped only if no thread is in the code
//! being changed (see `safety.rs` for what an inspection looks at). Each round stops the world
//! and inspects it; threads in the way are let run out of the code (the others staying stopped),
//! or the process runs on for a back-off and a new round starts, until the safety timeout.
//! Patch and unpatch commit in such a stop; unpatch also unmaps the removed regions in one.

use std::ops::Range;
use std::time::{Duration, Instant};

use kpatch_process::{DeferTermination, Guardian, MapEntry, Process, ReturnPoint, StoppedProcess};

use crate::coro;
use crate::discover::{AppliedPatch, LoadedObject};
use crate::error::{Error, Result};
use crate::fault;
use crate::options::Options;
use crate::process_view::{ProcessView, StoppedView};
use crate::report::Report;
use crate::safety::{self, Inspection, Targets};
use crate::unwind::{merged, StackWalker, TrampolineCache};

/// The longest back-off between two rounds.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// What the safety check looks for (see [`Targets`]) with the names to report, and a walker that
/// knows every object's unwind tables and the patches' code; prepared while the target runs.
pub struct SafetyCheck {
    walker: StackWalker,
    targets: Targets,
    names: Vec<(Range<u64>, String)>,
}

impl SafetyCheck {
    /// Prepares the check of `names` (the ranges no thread may be in, and what they are) in a
    /// process with these `maps`, `objects` and `applied` patches.
    pub fn new(
        proc: &dyn ProcessView,
        maps: &[MapEntry],
        objects: &[LoadedObject],
        applied: &[AppliedPatch],
        names: Vec<(Range<u64>, String)>,
        trampolines: &TrampolineCache,
    ) -> Result<SafetyCheck> {
        let mut walker = StackWalker::new(proc.arch());
        for o in objects {
            walker.add_object(&o.name, o.range.clone(), o.load_bias, &o.image, trampolines);
        }
        for p in applied {
            walker.add_opaque(p.range());
        }
        let code: Vec<Range<u64>> = maps
            .iter()
            .filter(|m| m.perms.exec)
            .map(|m| m.range())
            .collect();
        walker.set_code(code.clone());
        // The vDSO is in no object: its signal trampolines (aarch64's) are looked for now.
        for m in maps
            .iter()
            .filter(|m| m.perms.exec && m.is_special("[vdso]"))
        {
            if let Ok(bytes) = proc.memory().read_vec(m.start, m.len() as usize) {
                walker.search_text(m.start, &bytes, trampolines);
            }
        }
        let mut mappings: Vec<Range<u64>> = maps.iter().map(|m| m.range()).collect();
        mappings.sort_by_key(|r| r.start);
        Ok(SafetyCheck {
            walker,
            targets: Targets {
                ranges: merged(names.iter().map(|(r, _)| r.clone())),
                held: Vec::new(),
                coro: coro::source(proc.memory(), objects)?,
                code_set: merged(code.iter().cloned()),
                code,
                mappings,
            },
            names,
        })
    }

    /// Also checks that no thread holds a pointer into `held` (memory about to be unmapped).
    pub fn holding(mut self, held: Vec<Range<u64>>) -> SafetyCheck {
        self.targets.held = merged(held);
        self
    }

    /// What the code at `addr` is, for messages.
    pub fn describe(&self, addr: u64) -> String {
        self.names
            .iter()
            .find(|(r, _)| r.contains(&addr))
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("code at {addr:#x}"))
    }

    /// Inspects every thread and coroutine of the stopped world.
    pub fn inspect(&mut self, world: &mut dyn StoppedView<'_>) -> Result<Inspection> {
        let tids = world.tids();
        let mut found = self.threads(world, &tids)?;
        self.finish(world, &mut found)?;
        Ok(found)
    }

    /// Inspects the threads `tids` of the world (the others may still be running).
    pub fn threads(&mut self, world: &mut dyn StoppedView<'_>, tids: &[i32]) -> Result<Inspection> {
        safety::threads(world, &mut self.walker, &self.targets, tids)
    }

    /// Completes an inspection of every thread with the coroutines; a busy one is an error.
    fn finish(&mut self, world: &mut dyn StoppedView<'_>, found: &mut Inspection) -> Result<()> {
        safety::coroutines(world, &mut self.walker, &self.targets, found)?;
        if let Some((addr, context)) = found.coroutine {
            return Err(Error::CoroutineBusy {
                pid: world.process().pid(),
                function: self.describe(addr),
                context,
            });
        }
        Ok(())
    }

    /// Stops every thread, the sleeping ones first: their stacks are inspected while the
    /// others still run (they cannot change before they are released), then the others are
    /// stopped and inspected. Only the threads that were running pay for their own stop.
    fn stop_and_inspect<'p>(
        &mut self,
        proc: &'p Process,
        opts: &Options,
    ) -> Result<(StoppedProcess<'p>, Inspection)> {
        let (mut stopped, early) = proc.stop_all_phased(opts.stop_timeout, |asleep| {
            let tids = asleep.tids();
            let mut found = self.threads(asleep, &tids)?;
            found.prepare_rescan(&self.targets.held);
            Ok::<_, Error>(found)
        })?;
        let mut found = early?;
        let seen: std::collections::HashSet<i32> = found.stacks.iter().map(|s| s.tid).collect();
        let rest: Vec<i32> = stopped
            .tids()
            .into_iter()
            .filter(|t| !seen.contains(t))
            .collect();
        found.rescan_stacks(proc, &self.targets.held);
        let later = self.threads(&mut stopped, &rest)?;
        found.merge(later);
        self.finish(&mut stopped, &mut found)?;
        Ok((stopped, found))
    }
}

/// What a commit leaves to do once the threads that were running are released: unmap these
/// regions (with one thread still stopped to run the `munmap`).
#[derive(Debug, Default)]
pub struct AfterCommit {
    pub unmap: Vec<(u64, u64)>,
}

/// What one round of a checked stop came to.
enum Round<T, W> {
    /// Done, with this result.
    Done(T),
    /// Threads were in the way (`W` says how); the process runs again.
    Wait(W),
}

/// The retry loop of every checked stop: rounds until one is done. Between rounds the process
/// runs for a back-off (1 ms, doubling up to [`MAX_BACKOFF`]); a round that must wait once
/// `deadline` has passed ends the loop with `timeout`, otherwise `waiting` reports it first.
/// Termination signals wait while a round runs (see [`DeferTermination`]).
fn rounds<T, W>(
    deadline: Instant,
    rep: &mut dyn Report,
    mut round: impl FnMut(&mut dyn Report) -> Result<Round<T, W>>,
    waiting: impl Fn(&W, &mut dyn Report),
    timeout: impl FnOnce(W) -> Result<T>,
) -> Result<T> {
    let mut backoff = Duration::from_millis(1);
    loop {
        let defer = DeferTermination::new();
        let wait = match round(rep)? {
            Round::Done(done) => return Ok(done),
            Round::Wait(wait) => wait,
        };
        if Instant::now() >= deadline {
            return timeout(wait);
        }
        waiting(&wait, rep);
        drop(defer);
        std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Stops every thread until none has a frame in the safety ranges, then runs `commit` with the
/// world stopped and resumes it. Each round stops everything (see
/// [`SafetyCheck::stop_and_inspect`]) and walks every stack; threads found in the ranges are
/// let run (the others staying stopped) until they return out of them, for at most
/// [`Options::round_wait`]; if they all did, the round commits. Otherwise the process runs on
/// for a back-off and a new round starts, until [`Options::safety_timeout`]. A suspended
/// coroutine in the ranges fails at once. `commit` also gets the last inspection (which threads
/// hold pointers into the held memory) and the report; what it returns is done once the threads
/// that were running are released. Returns how long the committing round kept any thread of
/// the process stopped.
pub fn with_safe_stop(
    proc: &Process,
    opts: &Options,
    check: &mut SafetyCheck,
    guardian: &mut Guardian,
    rep: &mut dyn Report,
    commit: impl FnOnce(
        &mut StoppedProcess<'_>,
        &mut Guardian,
        &Inspection,
        &mut dyn Report,
    ) -> Result<AfterCommit>,
) -> Result<Duration> {
    let start = Instant::now();
    let deadline = start + opts.safety_timeout;
    let mut commit = Some(commit);
    if let Some(what) = check.targets.coro.describe() {
        rep.detail(&what);
    }
    let round = |rep: &mut dyn Report| -> Result<Round<Duration, Vec<(i32, String)>>> {
        let t0 = Instant::now();
        let (mut stopped, mut found) = check.stop_and_inspect(proc, opts)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let exits: Option<Vec<ReturnPoint>> = found
            .busy
            .iter()
            .map(|b| {
                b.exit.map(|f| ReturnPoint {
                    tid: b.tid,
                    addr: f.addr,
                    sp: f.sp,
                })
            })
            .collect();
        if let (false, Some(points)) = (found.busy.is_empty() || left.is_zero(), exits) {
            for (b, p) in found.busy.iter().zip(&points) {
                rep.detail(&format!(
                    "thread {} is in {}; letting it run to its return at {:#x}",
                    b.tid,
                    check.describe(b.addr),
                    p.addr
                ));
            }
            let ran = stopped.run_to(
                &points,
                left.min(opts.round_wait),
                Some(&mut *guardian),
                &mut || fault::point(opts, "breakpoints"),
            )?;
            rep.detail(&format!(
                "{} thread(s) returned, {} still running, {} exited, {} created meanwhile (held)",
                ran.arrived.len(),
                ran.late.len(),
                ran.exited.len(),
                ran.born.len()
            ));
            found = check.inspect(&mut stopped)?;
        }
        if found.busy.is_empty() {
            let Some(commit) = commit.take() else {
                return Err(Error::Unsupported("commit attempted twice".into()));
            };
            let result = commit(&mut stopped, &mut *guardian, &found, rep);
            let resumed = match &result {
                Ok(then) if !then.unmap.is_empty() => {
                    // The threads that were running go first; one stays to run the munmap.
                    let released = stopped.release_all_but_one();
                    unmap_stopped(&mut stopped, &then.unmap, rep);
                    released.and(stopped.resume())
                }
                _ => stopped.resume(),
            };
            let frozen = t0.elapsed();
            result?;
            resumed?;
            return Ok(Round::Done(frozen));
        }
        stopped.resume()?;
        Ok(Round::Wait(
            found
                .busy
                .iter()
                .map(|b| (b.tid, check.describe(b.addr)))
                .collect(),
        ))
    };
    rounds(
        deadline,
        rep,
        round,
        |busy, rep| {
            for (tid, what) in busy {
                rep.detail(&format!("thread {tid} is in {what}; waiting"));
            }
        },
        |busy| {
            Err(Error::Busy {
                pid: proc.pid(),
                waited_ms: start.elapsed().as_millis(),
                busy,
            })
        },
    )
}

/// Unmaps `regions` by syscalls in one of the stopped threads. A failure is reported and left
/// for the next run to reclaim (the regions are marked pending).
fn unmap_stopped(stopped: &mut StoppedProcess<'_>, regions: &[(u64, u64)], rep: &mut dyn Report) {
    let Some(mut thread) = stopped.runnable_thread() else {
        rep.detail("no thread can run the munmap; the regions stay for the next run to reclaim");
        return;
    };
    for &(a, l) in regions.iter().filter(|&&(a, l)| a != 0 && l != 0) {
        if let Err(e) = thread.munmap(a, l) {
            rep.detail(&format!(
                "the region at {a:#x} stays for the next run to reclaim: {e}"
            ));
        }
    }
}

/// Describes where a thread holds a pointer into memory about to be unmapped.
pub fn describe_reference(r: &safety::Reference) -> String {
    match r.place {
        safety::Place::Register(i) => format!(
            "thread {} holds {:#x}, in the memory being removed, in register word {i}",
            r.tid, r.value
        ),
        safety::Place::Stack(at) => format!(
            "thread {} holds {:#x}, in the memory being removed, on its stack at {at:#x}",
            r.tid, r.value
        ),
    }
}

/// Unmaps `regions` (whose code no jump leads to any more) once no thread uses them: no frame
/// in the safety ranges and no pointer into the held memory in a register or on a stack (a
/// function that code in a region reached by a tail call may still be reading the region's
/// data). Each round stops every thread and checks; between rounds the process runs for a
/// back-off, for at most `patience` (one round if zero). A region still in use then stays
/// mapped, pending: a later run reclaims it. Returns whether the regions were unmapped.
pub fn unmap_when_unused(
    proc: &Process,
    check: &mut SafetyCheck,
    regions: &[(u64, u64)],
    patience: Duration,
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<bool> {
    if regions.iter().all(|&(a, l)| a == 0 || l == 0) {
        return Ok(true);
    }
    let round = |rep: &mut dyn Report| -> Result<Round<bool, ()>> {
        let (mut stopped, found) = check.stop_and_inspect(proc, opts)?;
        if found.busy.is_empty() && found.refs.is_empty() {
            let released = stopped.release_all_but_one();
            unmap_stopped(&mut stopped, regions, rep);
            stopped.resume()?;
            released?;
            return Ok(Round::Done(true));
        }
        stopped.resume()?;
        for b in &found.busy {
            rep.detail(&format!(
                "thread {} is in {}; the region stays mapped meanwhile",
                b.tid,
                check.describe(b.addr)
            ));
        }
        for r in &found.refs {
            rep.detail(&describe_reference(r));
        }
        Ok(Round::Wait(()))
    };
    rounds(
        Instant::now() + patience,
        rep,
        round,
        |_, _| {},
        |()| Ok(false),
    )
}
