//! Steps shared by patch and unpatch: the symbol scope in the dynamic linker's order, the
//! stack walker, stopping one thread or all of them until the check passes, unmapping regions,
//! and reclaiming what an interrupted run left behind.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use kpatch_arch::Arch;
use kpatch_process::{
    DeferTermination, Guardian, MapEntry, Memory, Process, ReturnPoint, StoppedProcess,
    StoppedThread,
};

use crate::coro;
use crate::discover::{self, AppliedPatch, LoadedObject};
use crate::eh_frames;
use crate::error::{Error, Result};
use crate::fault;
use crate::options::Options;
use crate::report::Report;
use crate::safety;
use crate::scope::{Scope, ScopeObject};
use crate::unwind::StackWalker;

/// The lookup scope: the objects in the order of the dynamic linker's `link_map` chain when it
/// can be read (the executable first, then libraries in load order), else the executable
/// followed by the others in address order.
pub fn scope(proc: &Process, objects: &[LoadedObject]) -> Scope {
    let to_scope = |o: &LoadedObject| ScopeObject {
        name: o.name.clone(),
        load_bias: o.load_bias,
        image: o.image.clone(),
    };
    let mut order: Vec<&LoadedObject> = Vec::new();
    if let Some(chain) = link_map_biases(proc, objects) {
        for bias in chain {
            if let Some(o) = objects
                .iter()
                .find(|o| o.load_bias == bias && !order.iter().any(|p| std::ptr::eq(*p, *o)))
            {
                order.push(o);
            }
        }
    }
    // Anything the chain missed (or all of it, without a chain), executable first.
    let mut rest: Vec<&LoadedObject> = objects
        .iter()
        .filter(|o| !order.iter().any(|p| std::ptr::eq(*p, *o)))
        .collect();
    rest.sort_by_key(|o| !o.is_exe);
    order.extend(rest);
    Scope {
        objects: order.into_iter().map(to_scope).collect(),
    }
}

/// Load biases along `_r_debug.r_map`, found through the executable's `DT_DEBUG`.
fn link_map_biases(mem: &dyn Memory, objects: &[LoadedObject]) -> Option<Vec<u64>> {
    let exe = objects.iter().find(|o| o.is_exe)?;
    let slot = exe.image.dt_debug?.wrapping_add(exe.load_bias);
    let r_debug = mem.read_u64(slot).ok().filter(|&a| a != 0)?;
    let mut map = mem.read_u64(r_debug + 8).ok()?;
    let mut out = Vec::new();
    while map != 0 && out.len() < 4096 {
        out.push(mem.read_u64(map).ok()?);
        map = mem.read_u64(map + 24).ok()?;
    }
    Some(out)
}

/// A stack walker knowing every object's unwind tables.
pub fn walker(arch: &'static dyn Arch, objects: &[LoadedObject]) -> StackWalker {
    let mut w = StackWalker::new(arch);
    for o in objects {
        w.add_object(&o.name, o.range.clone(), o.load_bias, &o.image);
    }
    w
}

/// Stops one thread (the main one if it can) while the others run.
pub fn stop_one<'p>(proc: &'p Process, opts: &Options) -> Result<StoppedThread<'p>> {
    match proc.stop_one(proc.pid(), opts.stop_timeout) {
        Ok(t) => Ok(t),
        Err(first) => {
            for tid in proc.thread_ids()? {
                if tid != proc.pid() {
                    if let Ok(t) = proc.stop_one(tid, opts.stop_timeout) {
                        return Ok(t);
                    }
                }
            }
            Err(first.into())
        }
    }
}

/// What the safety check looks for, prepared while the target runs: the ranges no thread may
/// be in (with the names to report), the memory no thread may hold a pointer into (what is
/// about to be unmapped), a walker that knows every object's unwind tables and the patches'
/// code, and where coroutines are to be found.
pub struct Safety {
    pub walker: StackWalker,
    /// Sorted and merged.
    pub ranges: Vec<Range<u64>>,
    pub names: Vec<(Range<u64>, String)>,
    /// Sorted and merged.
    pub held: Vec<Range<u64>>,
    pub coro: coro::Source,
    /// Executable ranges of the process.
    pub code: Vec<Range<u64>>,
    /// The same, sorted and merged.
    pub code_set: Vec<Range<u64>>,
    /// Every mapping, sorted: where the thread stacks end.
    pub mappings: Vec<Range<u64>>,
}

impl Safety {
    /// Prepares the check of `names` (the ranges and what they are) in a process with these
    /// `maps`, `objects` and `applied` patches.
    pub fn new(
        proc: &Process,
        maps: &[MapEntry],
        objects: &[LoadedObject],
        applied: &[AppliedPatch],
        names: Vec<(Range<u64>, String)>,
    ) -> Result<Safety> {
        let mut walker = walker(proc.arch(), objects);
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
            if let Ok(bytes) = proc.read_vec(m.start, m.len() as usize) {
                walker.search_text(m.start, &bytes);
            }
        }
        let mut mappings: Vec<Range<u64>> = maps.iter().map(|m| m.range()).collect();
        mappings.sort_by_key(|r| r.start);
        Ok(Safety {
            walker,
            ranges: crate::unwind::merged(names.iter().map(|(r, _)| r.clone())),
            names,
            held: Vec::new(),
            coro: coro::source(proc, objects)?,
            code_set: crate::unwind::merged(code.iter().cloned()),
            code,
            mappings,
        })
    }

    /// Also checks that no thread holds a pointer into `held` (memory about to be unmapped).
    pub fn holding(mut self, held: Vec<Range<u64>>) -> Safety {
        self.held = crate::unwind::merged(held);
        self
    }

    fn describe(&self, addr: u64) -> String {
        self.names
            .iter()
            .find(|(r, _)| r.contains(&addr))
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("code at {addr:#x}"))
    }

    /// Inspects every thread and coroutine of the stopped world.
    fn inspect(&mut self, world: &mut StoppedProcess<'_>) -> Result<safety::Inspection> {
        let tids = world.tids();
        let mut found = self.threads(world, &tids)?;
        self.finish(world, &mut found)?;
        Ok(found)
    }

    /// The walker, and what the inspection looks for.
    fn parts(&mut self) -> (&mut StackWalker, safety::Targets<'_>) {
        let targets = safety::Targets {
            ranges: &self.ranges,
            held: &self.held,
            mappings: &self.mappings,
            code: &self.code,
            code_set: &self.code_set,
            coro: &self.coro,
        };
        (&mut self.walker, targets)
    }

    /// Inspects the threads `tids` of the world (the others may still be running).
    fn threads(
        &mut self,
        world: &mut StoppedProcess<'_>,
        tids: &[i32],
    ) -> Result<safety::Inspection> {
        let (walker, targets) = self.parts();
        safety::threads(world, walker, &targets, tids)
    }

    /// Completes an inspection of every thread with the coroutines; a busy one is an error.
    fn finish(
        &mut self,
        world: &mut StoppedProcess<'_>,
        found: &mut safety::Inspection,
    ) -> Result<()> {
        let (walker, targets) = self.parts();
        safety::coroutines(world, walker, &targets, found)?;
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
    ) -> Result<(StoppedProcess<'p>, safety::Inspection)> {
        let (mut stopped, early) = proc.stop_all_phased(opts.stop_timeout, |asleep| {
            let tids = asleep.tids();
            let mut found = self.threads(asleep, &tids)?;
            found.prepare_rescan(&self.held);
            Ok::<_, Error>(found)
        })?;
        let mut found = early?;
        let seen: std::collections::HashSet<i32> = found.stacks.iter().map(|s| s.tid).collect();
        let rest: Vec<i32> = stopped
            .tids()
            .into_iter()
            .filter(|t| !seen.contains(t))
            .collect();
        found.rescan_stacks(proc, &self.held);
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
    pub registrations: Vec<eh_frames::Registration>,
}

/// Stops every thread until none has a frame in the safety ranges, then runs `commit` with the
/// world stopped and resumes it. Each round stops everything (see
/// [`Safety::stop_and_inspect`]) and walks every stack; threads found in the ranges are let run
/// (the others staying stopped) until they return out of them, for at most
/// [`Options::round_wait`]; if they all did, the round commits. Otherwise the process runs on
/// for a back-off and a new round starts, until [`Options::safety_timeout`]. A suspended
/// coroutine in the ranges fails at once. `commit` also gets the last inspection (which threads
/// hold pointers into the held memory) and the report; what it returns is done once the threads
/// that were running are released. Returns how long the committing round kept any thread of
/// the process stopped.
pub fn with_safe_stop(
    proc: &Process,
    opts: &Options,
    safety: &mut Safety,
    guardian: &mut Guardian,
    rep: &mut dyn Report,
    commit: impl FnOnce(
        &mut StoppedProcess<'_>,
        &mut Guardian,
        &safety::Inspection,
        &mut dyn Report,
    ) -> Result<AfterCommit>,
) -> Result<Duration> {
    let start = Instant::now();
    let deadline = start + opts.safety_timeout;
    let mut backoff = Duration::from_millis(1);
    let mut commit = Some(commit);
    if let Some(what) = safety.coro.describe() {
        rep.detail(&what);
    }
    loop {
        let _defer = DeferTermination::new();
        let t0 = Instant::now();
        let (mut stopped, mut found) = safety.stop_and_inspect(proc, opts)?;
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
                    safety.describe(b.addr),
                    p.addr
                ));
            }
            let ran = stopped.run_to(
                &points,
                left.min(opts.round_wait),
                Some(guardian),
                &mut || fault::point("breakpoints"),
            )?;
            rep.detail(&format!(
                "{} thread(s) returned, {} still running, {} exited, {} created meanwhile (held)",
                ran.arrived.len(),
                ran.late.len(),
                ran.exited.len(),
                ran.born.len()
            ));
            found = safety.inspect(&mut stopped)?;
        }
        if found.busy.is_empty() {
            let Some(commit) = commit.take() else {
                return Err(Error::Unsupported("commit attempted twice".into()));
            };
            let result = commit(&mut stopped, guardian, &found, rep);
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
            result?;
            resumed?;
            return Ok(frozen);
        }
        stopped.resume()?;
        let busy: Vec<(i32, String)> = found
            .busy
            .iter()
            .map(|b| (b.tid, safety.describe(b.addr)))
            .collect();
        if Instant::now() >= deadline {
            return Err(Error::Busy {
                pid: proc.pid(),
                waited_ms: start.elapsed().as_millis(),
                busy,
            });
        }
        for (tid, what) in &busy {
            rep.detail(&format!("thread {tid} is in {what}; waiting"));
        }
        drop(_defer);
        std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// Unmaps regions with one thread stopped, deregistering their unwind tables first (the
/// unwinder `unwinder` of the process); failures are ignored (the caller is already
/// reporting an error, and an unreferenced region does no harm; one whose tables could not be
/// deregistered stays).
pub fn unmap_regions(
    proc: &Process,
    regions: impl Iterator<Item = (u64, u64)>,
    unwinder: Option<eh_frames::Unwinder>,
    opts: &Options,
) {
    let regions: Vec<(u64, u64)> = regions.filter(|&(a, l)| a != 0 && l != 0).collect();
    if regions.is_empty() {
        return;
    }
    let regs = eh_frames::registrations(proc, || unwinder, &regions);
    let _defer = DeferTermination::new();
    if let Ok(mut stopped) = stop_one(proc, opts) {
        let mut thread = stopped.thread();
        for (a, l) in regions {
            if eh_frames::before_unmap(&mut thread, &regs, a).is_ok() {
                let _ = thread.munmap(a, l);
            }
        }
        let _ = stopped.resume();
    }
}

/// Unmaps `regions` by syscalls in one of the stopped threads, deregistering the unwind
/// tables of those in `regs` first. A failure is reported and left for the next run to
/// reclaim (the regions are marked pending).
pub fn unmap_stopped(
    stopped: &mut StoppedProcess<'_>,
    regions: &[(u64, u64)],
    regs: &[eh_frames::Registration],
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
/// in the safety ranges and no pointer into `safety.held` in a register or on a stack (a
/// function that code in a region reached by a tail call may still be reading the region's
/// data). Each round stops every thread and checks; between rounds the process runs for a
/// back-off, for at most `patience` (one round if zero). A region still in use then stays
/// mapped, pending: a later run reclaims it. Returns whether the regions were unmapped.
pub fn unmap_when_unused(
    proc: &Process,
    safety: &mut Safety,
    regions: &[(u64, u64)],
    regs: &[eh_frames::Registration],
    patience: Duration,
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<bool> {
    if regions.iter().all(|&(a, l)| a == 0 || l == 0) {
        return Ok(true);
    }
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(1);
    loop {
        let _defer = DeferTermination::new();
        let (mut stopped, found) = safety.stop_and_inspect(proc, opts)?;
        if found.busy.is_empty() && found.refs.is_empty() {
            let released = stopped.release_all_but_one();
            unmap_stopped(&mut stopped, regions, regs, rep);
            stopped.resume()?;
            released?;
            return Ok(true);
        }
        stopped.resume()?;
        for b in &found.busy {
            rep.detail(&format!(
                "thread {} is in {}; the region stays mapped meanwhile",
                b.tid,
                safety.describe(b.addr)
            ));
        }
        for r in &found.refs {
            rep.detail(&describe_reference(r));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        drop(_defer);
        std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// Runs a storage's `before`/`after` script as `script PID`.
pub fn run_script(script: &Path, pid: i32) -> Result<()> {
    let status = std::process::Command::new(script)
        .arg(pid.to_string())
        .status()
        .map_err(|source| Error::Io {
            path: script.to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Script {
            script: script.to_owned(),
            pid,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// Removes patch regions an interrupted run left behind (header magic `KPATCH0`): any jump
/// into one is reverted, then it is unmapped.
pub fn reclaim_pending(
    proc: &Process,
    opts: &Options,
    guardian: &mut Guardian,
    rep: &mut dyn Report,
) -> Result<()> {
    let maps = proc.maps()?;
    let all = discover::applied_patches(proc, &maps)?;
    if all.iter().all(|p| p.committed) {
        return Ok(());
    }
    let objects = discover::objects(proc, &maps)?;
    let pending: Vec<usize> = (0..all.len()).filter(|&i| !all[i].committed).collect();
    for &i in &pending {
        rep.detail(&format!(
            "reclaiming the region at {:#x} left by an interrupted run (patch {})",
            all[i].kpta, all[i].id
        ));
    }
    crate::unapply::remove(
        proc, &maps, &objects, &all, &pending, true, opts, guardian, rep,
    )
    .map(drop)
}
