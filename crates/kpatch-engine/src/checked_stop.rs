//! The checked stop: every thread stopped, and kept stopped only if no thread is in the code
//! being changed (see `safety.rs` for what an inspection looks at). Each round stops the world
//! and inspects it; threads in the way are let run out of the code (the others staying stopped),
//! or the process runs on for a back-off and a new round starts, until the safety timeout.
//! Patch and unpatch commit in such a stop; unpatch also unmaps the removed regions in one.

use std::ops::Range;
use std::time::{Duration, Instant};

use kpatch_process::{DeferTermination, Guardian, MapEntry, Process, ReturnPoint, StoppedProcess};

use crate::coro::{self, AtStop, Coroutines};
use crate::discover::{AppliedPatch, LoadedObject};
use crate::eh_frames::{self, Registration};
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
    coro: Coroutines,
    /// What the last stop did about coroutines, to report once the process runs again.
    note: Option<String>,
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
        let source = coro::source(proc.memory(), objects)?;
        Ok(SafetyCheck {
            walker,
            targets: Targets {
                ranges: merged(names.iter().map(|(r, _)| r.clone())),
                held: Vec::new(),
                entries: Vec::new(),
                coro: source.clone(),
                code_set: merged(code.iter().cloned()),
                code,
                mappings,
            },
            names,
            coro: Coroutines::new(source),
            note: None,
        })
    }

    /// Says that each range of `names` is a function whose start stays an entry once the
    /// change is made (a patch puts a jump to the new version there): a coroutine about to
    /// start one from its top is not inside it.
    pub fn entered_at_starts(mut self) -> SafetyCheck {
        let mut starts: Vec<u64> = self.names.iter().map(|(r, _)| r.start).collect();
        starts.sort_unstable();
        self.targets.entries = starts;
        self
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

    /// Completes an inspection of every thread with the coroutines: a busy one, or a process
    /// that changed in a way the search did not see, is recorded in `found`.
    fn finish(&mut self, world: &mut dyn StoppedView<'_>, found: &mut Inspection) -> Result<()> {
        if *self.coro.source() == coro::Source::None {
            return Ok(());
        }
        let t0 = Instant::now();
        let maps = world.maps()?;
        let arch = world.process().arch();
        match self.coro.at_stop(arch, world, &maps)? {
            AtStop::Changed(why) => found.unsettled = Some(why),
            AtStop::Contexts { contexts, searched } => {
                safety::coroutines(
                    world,
                    &mut self.walker,
                    &self.targets,
                    &contexts,
                    &maps,
                    found,
                )?;
                self.note = Some(format!(
                    "coroutines: {} saved context(s) checked in the stop in {} µs, {} KiB searched again",
                    contexts.len(),
                    t0.elapsed().as_micros(),
                    searched >> 10
                ));
            }
        }
        Ok(())
    }

    /// Reports what the last stop did about coroutines (called once the process runs again).
    fn report_note(&mut self, rep: &mut dyn Report) {
        if let Some(note) = self.note.take() {
            rep.detail(&note);
        }
    }

    /// What is done before each stop while the process runs: memory that coroutines'
    /// contexts may be saved in is searched.
    fn prepare(&mut self, proc: &Process, opts: &Options, rep: &mut dyn Report) -> Result<()> {
        if let Some(line) = self.coro.prepare(proc, opts.stop_timeout)? {
            rep.detail(&line);
        }
        Ok(())
    }

    /// Why the stop found in `found` cannot conclude because of coroutines, if it cannot.
    fn coroutines_in_the_way(&self, found: &Inspection) -> Option<Waiting> {
        if let Some((addr, context)) = found.coroutine {
            return Some(Waiting::Coroutine {
                function: self.describe(addr),
                context,
            });
        }
        found.unsettled.clone().map(Waiting::Unsettled)
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
/// regions (with one thread still stopped to run the `munmap`), deregistering the unwind
/// tables of those in `registrations` first.
#[derive(Debug, Default)]
pub struct AfterCommit {
    pub unmap: Vec<(u64, u64)>,
    pub registrations: Vec<Registration>,
}

/// Why a round could not conclude.
enum Waiting {
    /// Threads in the ranges: (thread, what it is in).
    Threads(Vec<(i32, String)>),
    /// A suspended coroutine in the ranges.
    Coroutine { function: String, context: u64 },
    /// The process changed, between the search of its memory for coroutines and the stop, in
    /// a way the search did not see.
    Unsettled(String),
}

impl Waiting {
    fn report(&self, rep: &mut dyn Report) {
        match self {
            Waiting::Threads(busy) => {
                for (tid, what) in busy {
                    rep.detail(&format!("thread {tid} is in {what}; waiting"));
                }
            }
            Waiting::Coroutine { function, context } => rep.detail(&format!(
                "a suspended coroutine is in {function} (context saved at {context:#x}); waiting"
            )),
            Waiting::Unsettled(why) => rep.detail(&format!(
                "coroutines: {why} since the search of its memory; searching again"
            )),
        }
    }

    /// The error once the safety timeout has passed, `start` being when the run began.
    fn into_error(self, pid: i32, start: Instant) -> Error {
        let waited_ms = start.elapsed().as_millis();
        match self {
            Waiting::Threads(busy) => Error::Busy {
                pid,
                waited_ms,
                busy,
            },
            Waiting::Coroutine { function, context } => Error::CoroutineBusy {
                pid,
                function,
                context,
                waited_ms,
            },
            Waiting::Unsettled(why) => Error::CoroutinesUnsettled {
                pid,
                why,
                waited_ms,
            },
        }
    }
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
/// coroutine in the ranges (which no thread can be let run out of) makes the round wait at
/// once. `commit` also gets the last inspection (which threads
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
    let mut first = true;
    let round = |rep: &mut dyn Report| -> Result<Round<Duration, Waiting>> {
        check.prepare(proc, opts, rep)?;
        if std::mem::take(&mut first) {
            fault::pause(opts, "searched");
        }
        let t0 = Instant::now();
        let (mut stopped, mut found) = check.stop_and_inspect(proc, opts)?;
        if let Some(wait) = check.coroutines_in_the_way(&found) {
            stopped.resume()?;
            check.report_note(rep);
            return Ok(Round::Wait(wait));
        }
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
        if let Some(wait) = check.coroutines_in_the_way(&found) {
            stopped.resume()?;
            check.report_note(rep);
            return Ok(Round::Wait(wait));
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
                    unmap_stopped(&mut stopped, &then.unmap, &then.registrations, rep);
                    released.and(stopped.resume())
                }
                _ => stopped.resume(),
            };
            let frozen = t0.elapsed();
            check.report_note(rep);
            result?;
            resumed?;
            return Ok(Round::Done(frozen));
        }
        stopped.resume()?;
        check.report_note(rep);
        Ok(Round::Wait(Waiting::Threads(
            found
                .busy
                .iter()
                .map(|b| (b.tid, check.describe(b.addr)))
                .collect(),
        )))
    };
    rounds(
        deadline,
        rep,
        round,
        |wait, rep| wait.report(rep),
        |wait| Err(wait.into_error(proc.pid(), start)),
    )
}

/// Unmaps `regions` by syscalls in one of the stopped threads, deregistering the unwind
/// tables of those in `regs` first. A failure is reported and left for the next run to
/// reclaim (the regions are marked pending).
fn unmap_stopped(
    stopped: &mut StoppedProcess<'_>,
    regions: &[(u64, u64)],
    regs: &[Registration],
    rep: &mut dyn Report,
) {
    let Some(mut thread) = stopped.runnable_thread() else {
        rep.detail("no thread can run the munmap; the regions stay for the next run to reclaim");
        return;
    };
    for &(a, l) in regions.iter().filter(|&&(a, l)| a != 0 && l != 0) {
        if let Err(e) = eh_frames::before_unmap(&mut thread, regs, a) {
            rep.detail(&format!("the region at {a:#x} stays mapped: {e}"));
            continue;
        }
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
/// mapped, pending: a later run reclaims it. The unwind tables of the regions in `regs` are
/// deregistered first. Returns whether the regions were unmapped.
pub fn unmap_when_unused(
    proc: &Process,
    check: &mut SafetyCheck,
    regions: &[(u64, u64)],
    regs: &[Registration],
    patience: Duration,
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<bool> {
    if regions.iter().all(|&(a, l)| a == 0 || l == 0) {
        return Ok(true);
    }
    let round = |rep: &mut dyn Report| -> Result<Round<bool, ()>> {
        check.prepare(proc, opts, rep)?;
        let (mut stopped, found) = check.stop_and_inspect(proc, opts)?;
        if let Some(wait) = check.coroutines_in_the_way(&found) {
            stopped.resume()?;
            check.report_note(rep);
            wait.report(rep);
            return Ok(Round::Wait(()));
        }
        if found.busy.is_empty() && found.refs.is_empty() {
            let released = stopped.release_all_but_one();
            unmap_stopped(&mut stopped, regions, regs, rep);
            stopped.resume()?;
            check.report_note(rep);
            released?;
            return Ok(Round::Done(true));
        }
        stopped.resume()?;
        check.report_note(rep);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess, FakeStopped, Lines};
    use crate::safety::{Busy, Place, Reference};
    use crate::unwind::Frame;
    use kpatch_process::MapName;
    use std::collections::BTreeMap;

    /// Code (searched for signal trampolines, like the vDSO), with the function being replaced
    /// at `REPLACED` and a call in it that returns to `RETURN_INTO`.
    const CODE: Range<u64> = 0x1000..0x9000;
    const REPLACED: Range<u64> = 0x2000..0x2100;
    const RETURN_INTO: u64 = 0x2058;
    /// Where thread `tid`'s stack mapping starts; its stack pointer is `sp(tid)`.
    fn stack(tid: i32) -> u64 {
        0x7000_0000 + 0x10000 * tid as u64
    }
    fn sp(tid: i32) -> u64 {
        stack(tid) + 0xf000
    }

    struct World {
        proc: FakeProcess,
        maps: Vec<MapEntry>,
        threads: BTreeMap<i32, Vec<u64>>,
    }

    impl World {
        fn new() -> World {
            let proc = FakeProcess::x86_64();
            let mut code = vec![0x90u8; (CODE.end - CODE.start) as usize];
            let call = (RETURN_INTO - 5 - CODE.start) as usize;
            code[call..call + 5].copy_from_slice(&[0xe8, 0, 0, 0, 0]);
            proc.map(CODE.start, code);
            let vdso = MapName::Special("[vdso]".into());
            World {
                proc,
                maps: vec![fake::mapping(CODE, false, true, vdso)],
                threads: BTreeMap::new(),
            }
        }

        /// A thread stopped at `pc` with frame pointer `fp` and these words on its stack
        /// (offset from its stack pointer, value); returns its registers for changes.
        fn thread(&mut self, tid: i32, pc: u64, fp: u64, words: &[(u64, u64)]) -> &mut Vec<u64> {
            let base = stack(tid);
            self.proc.map(base, vec![0; 0x10000]);
            self.maps.push(fake::mapping(
                base..base + 0x10000,
                true,
                false,
                MapName::Anonymous,
            ));
            for &(off, value) in words {
                self.proc.poke_words(sp(tid) + off, &[value]);
            }
            let layout = self.proc.arch().regs();
            let mut regs = vec![0u64; layout.words];
            regs[layout.pc] = pc;
            regs[layout.sp] = sp(tid);
            regs[4] = fp; // rbp
            self.threads.entry(tid).or_insert(regs)
        }

        /// A thread in code outside the ranges, its one caller frame returning to `ret`.
        fn called_from(&mut self, tid: i32, pc: u64, ret: u64) -> &mut Vec<u64> {
            self.thread(tid, pc, sp(tid) + 0x20, &[(0x20, 0), (0x28, ret)])
        }

        fn check(&self, held: Vec<Range<u64>>) -> SafetyCheck {
            let names = vec![(REPLACED, "f (app)".to_owned())];
            let trampolines = TrampolineCache::default();
            SafetyCheck::new(&self.proc, &self.maps, &[], &[], names, &trampolines)
                .unwrap()
                .holding(held)
        }

        fn inspect(&self, held: Vec<Range<u64>>) -> Inspection {
            let mut stopped = FakeStopped {
                proc: &self.proc,
                threads: self.threads.clone(),
                maps: self.maps.clone(),
            };
            self.check(held).inspect(&mut stopped).unwrap()
        }
    }

    #[test]
    fn threads_with_a_frame_in_the_replaced_code_are_busy() {
        let mut w = World::new();
        // Clear: in other code, returning to other code.
        w.called_from(1, 0x3000, 0x3510);
        // Executing the replaced function.
        w.called_from(2, 0x2010, 0x3510);
        // Called from it: a caller frame returns into it, and it returns to 0x4010.
        let s3 = sp(3);
        w.thread(
            3,
            0x3000,
            s3 + 0x20,
            &[
                (0x20, s3 + 0x40),
                (0x28, RETURN_INTO),
                (0x40, 0),
                (0x48, 0x4010),
            ],
        );
        // A walk that cannot go on (a frame pointer below the stack pointer): a return
        // address into the ranges on the stack makes the thread busy, with no known way out...
        w.thread(4, 0x3000, sp(4) - 0x100, &[(0x18, RETURN_INTO)]);
        // ... but not a word that only points into them (no call before it).
        w.thread(5, 0x3000, sp(5) - 0x100, &[(0x18, 0x2070)]);
        let found = w.inspect(Vec::new());
        assert_eq!(
            found.busy,
            vec![
                Busy {
                    tid: 2,
                    addr: 0x2010,
                    exit: Some(Frame {
                        addr: 0x3510,
                        lookup: 0x350f,
                        sp: sp(2) + 0x30
                    }),
                },
                Busy {
                    tid: 3,
                    addr: RETURN_INTO - 1,
                    exit: Some(Frame {
                        addr: 0x4010,
                        lookup: 0x400f,
                        sp: s3 + 0x50
                    }),
                },
                Busy {
                    tid: 4,
                    addr: RETURN_INTO - 1,
                    exit: None
                },
            ]
        );
        let complete: Vec<(i32, bool)> = found.stacks.iter().map(|s| (s.tid, s.complete)).collect();
        assert_eq!(
            complete,
            [(1, true), (2, true), (3, true), (4, false), (5, false)]
        );
        assert!(found.refs.is_empty() && found.coroutine.is_none());
        assert_eq!(w.check(Vec::new()).describe(0x2010), "f (app)");
        assert_eq!(w.check(Vec::new()).describe(0x3000), "code at 0x3000");
    }

    #[test]
    fn pointers_into_memory_being_removed_are_found_in_registers_and_stacks() {
        let mut w = World::new();
        let held = std::iter::once(0x50000..0x51000).collect();
        w.called_from(1, 0x3000, 0x3510);
        w.called_from(2, 0x3000, 0x3510)[10] = 0x50010; // rax
        w.thread(
            3,
            0x3000,
            sp(3) + 0x20,
            &[(0x18, 0x50ff8), (0x20, 0), (0x28, 0x3510)],
        );
        // A pointer to the end of the memory is not into it.
        w.thread(
            4,
            0x3000,
            sp(4) + 0x20,
            &[(0x18, 0x51000), (0x20, 0), (0x28, 0x3510)],
        );
        let found = w.inspect(held);
        assert!(found.busy.is_empty());
        assert_eq!(
            found.refs,
            vec![
                Reference {
                    tid: 2,
                    value: 0x50010,
                    place: Place::Register(10)
                },
                Reference {
                    tid: 3,
                    value: 0x50ff8,
                    place: Place::Stack(sp(3) + 0x18)
                },
            ]
        );
    }

    #[test]
    fn rounds_go_on_until_one_is_done_or_the_deadline_has_passed() {
        let mut lines = Lines::default();
        let mut tries = 0;
        let done = rounds(
            Instant::now() + Duration::from_secs(600),
            &mut lines,
            |_| {
                tries += 1;
                Ok(if tries < 3 {
                    Round::Wait(tries)
                } else {
                    Round::Done("done")
                })
            },
            |tries, rep| rep.detail(&format!("waiting after round {tries}")),
            |_| unreachable!("the deadline is far"),
        );
        assert_eq!(done.unwrap(), "done");
        assert_eq!(lines.0, ["waiting after round 1", "waiting after round 2"]);
        // Past the deadline: the round that must wait is the last, and not reported as waiting.
        let mut lines = Lines::default();
        let err = rounds(
            Instant::now(),
            &mut lines,
            |_| Ok(Round::<(), _>::Wait(7)),
            |_, rep| rep.detail("waiting"),
            |w| Err(Error::Unsupported(format!("gave up at {w}"))),
        );
        assert_eq!(err.unwrap_err().to_string(), "not supported: gave up at 7");
        assert!(lines.0.is_empty());
    }
}
