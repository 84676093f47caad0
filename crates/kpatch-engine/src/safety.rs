//! The safety check: no thread may be executing, or be about to return into, code that a
//! patch replaces (or, when removing a patch, code that goes away with it), and no suspended
//! coroutine may hold such a frame.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use kpatch_arch::Arch;
use kpatch_process::{MapEntry, Memory};

use crate::coro;
use crate::error::Result;
use crate::process_view::StoppedView;
use crate::unwind::{contains_sorted, Frame, StackWalker};

/// A thread found inside a range being changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub tid: i32,
    /// The code address of the frame that is inside.
    pub addr: u64,
    /// The frame it returns into when it leaves the ranges for good, if the walk got there.
    pub exit: Option<Frame>,
}

/// Reads target memory for the unwinder in blocks, so walking a stack costs a few reads rather
/// than one per word.
struct BlockReader<'a> {
    mem: &'a dyn Memory,
    blocks: HashMap<u64, Option<Vec<u8>>>,
    /// Executable ranges: code is read in short lines (the walk only looks at a few bytes
    /// around return addresses).
    code: &'a [Range<u64>],
    lines: HashMap<u64, Option<[u8; LINE]>>,
}

/// Bytes of code read at a time.
const LINE: usize = 64;

impl<'a> BlockReader<'a> {
    fn new(mem: &'a dyn Memory, code: &'a [Range<u64>]) -> Self {
        BlockReader {
            mem,
            blocks: HashMap::new(),
            code,
            lines: HashMap::new(),
        }
    }

    fn direct(&self, addr: u64) -> Option<u64> {
        let mut w = [0u8; 8];
        self.mem
            .read(addr, &mut w)
            .ok()
            .map(|_| u64::from_le_bytes(w))
    }

    /// The aligned line of code at `line`.
    fn line(&mut self, line: u64) -> Option<[u8; LINE]> {
        let mem = self.mem;
        *self.lines.entry(line).or_insert_with(|| {
            let mut b = [0u8; LINE];
            mem.read(line, &mut b).ok().map(|_| b)
        })
    }

    /// A word of code, from one or two lines.
    fn code_word(&mut self, addr: u64) -> Option<u64> {
        let line = addr & !(LINE as u64 - 1);
        let off = (addr - line) as usize;
        let mut bytes = [0u8; 2 * LINE];
        bytes[..LINE].copy_from_slice(&self.line(line)?);
        if off + 8 > LINE {
            bytes[LINE..].copy_from_slice(&self.line(line + LINE as u64)?);
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes.get(off..off + 8)?);
        Some(u64::from_le_bytes(w))
    }
}

const BLOCK: u64 = 4 * 1024;

impl BlockReader<'_> {
    fn word(&mut self, addr: u64) -> Option<u64> {
        if self.code.iter().any(|r| r.contains(&addr)) {
            return self.code_word(addr);
        }
        let base = addr & !(BLOCK - 1);
        let off = (addr - base) as usize;
        if off + 8 > BLOCK as usize {
            return self.direct(addr);
        }
        let mem = self.mem;
        let block = self.blocks.entry(base).or_insert_with(|| {
            let mut b = vec![0u8; BLOCK as usize];
            mem.read(base, &mut b).ok().map(|_| b)
        });
        match block {
            Some(b) => b
                .get(off..off + 8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))),
            // The block straddles the end of the stack mapping: fall back to word reads.
            None => {
                let mut w = [0u8; 8];
                mem.read(addr, &mut w).ok().map(|_| u64::from_le_bytes(w))
            }
        }
    }
}

/// Where a thread's stack is in use: from its stack pointer up to where its walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStack {
    pub tid: i32,
    pub sp: u64,
    pub top: u64,
    /// The walk reached the thread's first frame.
    pub complete: bool,
}

/// A value pointing into memory about to be unmapped, held by a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub tid: i32,
    pub value: u64,
    pub place: Place,
}

/// Where a thread holds a [`Reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A general-purpose register (its `NT_PRSTATUS` word index).
    Register(usize),
    /// A word of the stack, at this address.
    Stack(u64),
}

/// What one inspection of a stopped process found.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub busy: Vec<Busy>,
    /// A suspended coroutine with a frame in the ranges: (the code address, where its context
    /// is saved).
    pub coroutine: Option<(u64, u64)>,
    /// Why the coroutines could not be checked in this stop (the process changed in a way the
    /// search while it ran did not see); the next round searches again.
    pub unsettled: Option<String>,
    pub stacks: Vec<LiveStack>,
    /// Threads holding pointers into [`Targets::held`] (one per thread).
    pub refs: Vec<Reference>,
    /// Where each thread's stack was searched for them.
    pub segments: Vec<(i32, Vec<Range<u64>>)>,
    /// Buffers for [`Inspection::rescan_stacks`], made by [`Inspection::prepare_rescan`].
    scratch: Vec<Vec<u8>>,
}

impl Inspection {
    /// Adds what the inspection of other threads found.
    pub fn merge(&mut self, other: Inspection) {
        self.busy.extend(other.busy);
        self.stacks.extend(other.stacks);
        self.refs.extend(other.refs);
        self.segments.extend(other.segments);
        self.coroutine = self.coroutine.or(other.coroutine);
        self.unsettled = self.unsettled.take().or(other.unsettled);
    }

    /// Allocates (and touches) the buffers [`Inspection::rescan_stacks`] will read into, so
    /// that it takes no page fault while every thread is stopped: call it while the threads
    /// not inspected yet still run.
    pub fn prepare_rescan(&mut self, held: &[Range<u64>]) {
        if held.is_empty() {
            return;
        }
        self.scratch = self
            .rescan_todo()
            .iter()
            .map(|(_, s)| {
                let mut b = Vec::new();
                // Written, not calloc'ed: fresh pages are faulted in now.
                b.resize((s.end - s.start) as usize, 0xff);
                b
            })
            .collect();
    }

    /// The stack segments to search again: those of threads that hold no pointer in a
    /// register (that one stands).
    fn rescan_todo(&self) -> Vec<(i32, Range<u64>)> {
        let by_register: HashSet<i32> = self
            .refs
            .iter()
            .filter(|r| matches!(r.place, Place::Register(_)))
            .map(|r| r.tid)
            .collect();
        self.segments
            .iter()
            .filter(|(tid, _)| !by_register.contains(tid))
            .flat_map(|(tid, segs)| {
                segs.iter()
                    .map(move |s| (*tid, (s.start & !7)..(s.end & !7)))
            })
            .filter(|(_, s)| s.start < s.end)
            .collect()
    }

    /// Searches the stacks of the threads inspected so far again for pointers into `held`,
    /// once the threads that still ran then are stopped: the registers of those inspected
    /// cannot have changed, but the others may have written into their stacks (a result
    /// handed to a waiting thread, say).
    pub fn rescan_stacks(&mut self, mem: &dyn Memory, held: &[Range<u64>]) {
        if held.is_empty() {
            return;
        }
        // What the registers hold stands; the stacks are read again, all in as few system
        // calls as the memory allows.
        self.refs.retain(|r| matches!(r.place, Place::Register(_)));
        let todo = self.rescan_todo();
        let scratch = std::mem::take(&mut self.scratch);
        let mut bufs: Vec<Vec<u8>> = if scratch.len() == todo.len()
            && scratch
                .iter()
                .zip(&todo)
                .all(|(b, (_, s))| b.len() as u64 == s.end - s.start)
        {
            scratch
        } else {
            todo.iter()
                .map(|(_, s)| vec![0u8; (s.end - s.start) as usize])
                .collect()
        };
        let mut parts: Vec<(u64, &mut [u8])> = todo
            .iter()
            .zip(bufs.iter_mut())
            .map(|((_, s), b)| (s.start, b.as_mut_slice()))
            .collect();
        let read = mem.read_many(&mut parts);
        drop(parts);
        let mut found: HashSet<i32> = HashSet::new();
        for (((tid, seg), buf), whole) in todo.iter().zip(&bufs).zip(read) {
            if found.contains(tid) {
                continue;
            }
            let hit = if whole {
                first_word_in(seg.start, buf, held)
            } else {
                stack_words(mem, seg.clone())
                    .into_iter()
                    .find(|(_, v)| contains_sorted(held, *v))
            };
            if let Some((addr, value)) = hit {
                found.insert(*tid);
                self.refs.push(Reference {
                    tid: *tid,
                    value,
                    place: Place::Stack(addr),
                });
            }
        }
    }
}

/// What an inspection looks for, and what it knows of the process; prepared while it runs.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Code no thread may have a frame in, sorted and merged (see [`crate::unwind::merged`]).
    pub ranges: Vec<Range<u64>>,
    /// Memory about to be unmapped, sorted and merged: no thread may hold a pointer into it,
    /// in a register or in the used part of its stack (a function reached by a tail call from
    /// code in it holds no frame there, yet may still read its data).
    pub held: Vec<Range<u64>>,
    /// The mappings as read before the stop, sorted: where each thread's stack ends.
    pub mappings: Vec<Range<u64>>,
    /// Executable ranges of the process.
    pub code: Vec<Range<u64>>,
    /// The same, sorted and merged (see [`crate::unwind::merged`]).
    pub code_set: Vec<Range<u64>>,
    /// Addresses in the ranges where execution may still enter once the change is made (the
    /// start of a replaced function, which gets a jump to its new version), sorted.
    pub entries: Vec<u64>,
    /// Where the suspended coroutines are to be found.
    pub coro: coro::Source,
}

/// How far above its stack pointer a thread's stack is searched at most.
const STACK_SCAN_LIMIT: u64 = 8 << 20;
/// How far above the last frame a stack outside every known mapping (a thread created after
/// the mappings were read) is searched.
const UNKNOWN_STACK_SCAN: u64 = 64 << 10;
/// Bytes below the stack pointer that a leaf function may use (the x86_64 red zone).
const RED_ZONE: u64 = kpatch_process::RED_ZONE;

/// Walks the stacks of the stopped threads `tids` (the others may still run) and reports those
/// with a frame in the ranges. A walk that ends before the stack's first frame (code it cannot
/// step through) does not clear its thread: the rest of the stack is searched for return
/// addresses into the ranges, and one found makes the thread busy (with no known way out).
/// With `held` ranges, every thread's registers and used stack are searched for pointers into
/// them.
pub fn threads(
    world: &mut dyn StoppedView<'_>,
    walker: &mut StackWalker,
    t: &Targets,
    tids: &[i32],
) -> Result<Inspection> {
    let proc = world.process();
    let mem: &dyn Memory = proc.memory();
    let arch = proc.arch();
    let mut reader = BlockReader::new(mem, &t.code);
    let mut out = Inspection::default();
    let layout = proc.arch().regs();
    for &tid in tids {
        let regs = match world.regs(tid) {
            Some(regs) => regs?,
            None => continue,
        };
        if t.coro == coro::Source::None {
            let sp = regs.get(layout.sp).copied().unwrap_or(0);
            if let Some(seg) = quick_segment(sp, &t.mappings) {
                // One buffer, read in one call: this runs while the target is stopped.
                let base = seg.start & !7;
                let mut stack = vec![0u8; ((seg.end & !7).saturating_sub(base)) as usize];
                if mem.read(base, &mut stack).is_ok()
                    && clear_without_walking(&regs, layout, &stack, walker, t)
                {
                    if !t.held.is_empty() {
                        held_in(tid, &regs, base, &stack, &t.held, &mut out.refs);
                        out.segments.push((tid, vec![seg.clone()]));
                    }
                    out.stacks.push(LiveStack {
                        tid,
                        sp,
                        top: seg.end,
                        complete: true,
                    });
                    continue;
                }
            }
        }
        let walk = walker.walk(&regs, &mut |a| reader.word(a));
        let hit = walk.hit(&t.ranges);
        if let Some(addr) = hit {
            out.busy.push(Busy {
                tid,
                addr,
                exit: walk.exit_point(&t.ranges),
            });
        }
        let unsure = hit.is_none() && !walk.complete && !t.ranges.is_empty();
        if unsure || !t.held.is_empty() {
            let held_reg = regs.iter().position(|&v| contains_sorted(&t.held, v));
            if let Some(i) = held_reg {
                out.refs.push(Reference {
                    tid,
                    value: regs[i],
                    place: Place::Register(i),
                });
            }
            let from = walk.frames.last().map(|f| f.sp).unwrap_or(0);
            let segments = stack_segments(&walk, &t.mappings);
            let mut held_found = held_reg.is_some();
            let mut busy_found = !unsure;
            for seg in &segments {
                for (addr, value) in stack_words(mem, seg.clone()) {
                    if !held_found && contains_sorted(&t.held, value) {
                        out.refs.push(Reference {
                            tid,
                            value,
                            place: Place::Stack(addr),
                        });
                        held_found = true;
                    }
                    if !busy_found
                        && addr >= from
                        && contains_sorted(&t.ranges, value)
                        && follows_call(arch, value, &mut reader)
                    {
                        out.busy.push(Busy {
                            tid,
                            addr: value - 1,
                            exit: None,
                        });
                        busy_found = true;
                    }
                    if held_found && busy_found {
                        break;
                    }
                }
            }
            if !t.held.is_empty() {
                out.segments.push((tid, segments));
            }
        }
        out.stacks.push(LiveStack {
            tid,
            sp: walk.frames.first().map(|f| f.sp).unwrap_or(0),
            top: walk.top_sp(),
            complete: walk.complete,
        });
    }
    Ok(out)
}

/// Completes an inspection of every thread (stopped and inspected into `out`) with the
/// suspended coroutines' stacks, from their saved `contexts` (see [`crate::coro`]); `maps` are
/// the mappings now. The first coroutine found with a frame in the ranges is recorded.
pub fn coroutines(
    world: &mut dyn StoppedView<'_>,
    walker: &mut StackWalker,
    t: &Targets,
    contexts: &[coro::Context],
    maps: &[MapEntry],
    out: &mut Inspection,
) -> Result<()> {
    if contexts.is_empty() {
        return Ok(());
    }
    let own = own_stacks(world, &out.stacks, maps);
    let proc = world.process();
    let mem: &dyn Memory = proc.memory();
    let mut reader = BlockReader::new(mem, &t.code);
    for c in contexts {
        if dead(c, &own) || stale(c, &out.stacks, &own) {
            continue;
        }
        let walk = walker.walk_from(c.pc, c.sp, c.fp, 0, &mut |a| reader.word(a));
        // A context made by makecontext and never entered starts its function from the top:
        // it goes through the entry, which stays valid (`entries`), so it is not inside.
        let inside = walk.frames.iter().enumerate().find(|(i, f)| {
            contains_sorted(&t.ranges, f.lookup)
                && !(*i == 0 && t.entries.binary_search(&f.addr).is_ok())
        });
        if let Some((_, f)) = inside {
            out.coroutine = Some((f.lookup, c.at));
            break;
        }
    }
    Ok(())
}

/// A thread's own stack: the mapping holding its thread control block (glibc puts it at the
/// top of a thread's stack) or, for the main thread, `[stack]`; never `[heap]`, where other
/// objects lie too.
struct OwnStack {
    mapping: Range<u64>,
    /// The thread's stack pointer, when it runs on this stack.
    sp: Option<u64>,
    /// Its walk went to the thread's first frame.
    complete: bool,
}

fn own_stacks(
    world: &mut dyn StoppedView<'_>,
    stacks: &[LiveStack],
    maps: &[MapEntry],
) -> Vec<OwnStack> {
    let pid = world.process().pid();
    let layout = world.process().arch().saved_contexts();
    let mapping = |a: u64| maps.iter().find(|m| m.contains(a));
    let mut out = Vec::new();
    for s in stacks {
        let tcb = world
            .regs(s.tid)
            .and_then(|r| r.ok())
            .and_then(|r| layout.and_then(|l| coro::thread_pointer(l, &r)));
        let m = if s.tid == pid {
            maps.iter().find(|m| m.is_special("[stack]"))
        } else {
            tcb.and_then(mapping)
        };
        if let Some(m) = m.filter(|m| !m.is_special("[heap]")) {
            out.push(OwnStack {
                mapping: m.range(),
                sp: m.contains(s.sp).then_some(s.sp),
                complete: s.complete,
            });
        }
    }
    out
}

/// Whether a context lies below the stack pointer of a thread running on its own stack (red
/// zone aside): memory that any call or signal of the thread overwrites, holding nothing the
/// program can resume (the `ucontext_t` QEMU prepares for a new coroutine, once the function
/// that made it returned).
fn dead(c: &coro::Context, own: &[OwnStack]) -> bool {
    own.iter().any(|o| {
        o.sp.is_some_and(|sp| o.mapping.start <= c.at && c.at < sp.saturating_sub(RED_ZONE))
    })
}

/// How much stack a thread may have in use for [`clear_without_walking`] to be tried: searching
/// it costs about what walking costs then.
const QUICK_STACK: u64 = 16 << 10;

/// The used part of a thread's stack, red zone included, up to the end of its mapping, when
/// that is known and short.
fn quick_segment(sp: u64, mappings: &[Range<u64>]) -> Option<Range<u64>> {
    let i = mappings.partition_point(|m| m.end <= sp);
    let m = mappings.get(i).filter(|m| m.start <= sp)?;
    (m.end - sp <= QUICK_STACK).then(|| sp.saturating_sub(RED_ZONE).max(m.start)..m.end)
}

/// Whether a thread can be shown to have no frame in the ranges without walking its stack:
/// neither its pc (nor its link register) nor any aligned word of `stack` (the whole used
/// part) points into them, and nothing there could lead to frames on another stack (a signal
/// trampoline, or code whose trampolines are not known). Every frame's code address is the
/// pc, the link register or a return address on the stack, so this is a proof; anything else
/// (a stale word pointing into the ranges, say) leaves the answer to the walk.
fn clear_without_walking(
    regs: &[u64],
    layout: kpatch_arch::RegLayout,
    stack: &[u8],
    walker: &StackWalker,
    t: &Targets,
) -> bool {
    let reg = |i: usize| regs.get(i).copied().unwrap_or(0);
    let pc = reg(layout.pc);
    let lr = layout.link.map(reg);
    if walker.may_be_on_trampoline(pc) || contains_sorted(&t.ranges, pc) {
        return false;
    }
    if let Some(lr) = lr {
        if contains_sorted(&t.ranges, lr) || walker.may_lead_elsewhere(lr) {
            return false;
        }
    }
    !stack.chunks_exact(8).any(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let w = u64::from_le_bytes(b);
        contains_sorted(&t.code_set, w)
            && (contains_sorted(&t.ranges, w) || walker.may_lead_elsewhere(w))
    })
}

/// Records the first pointer into `held` among the thread's registers and the words of
/// `stack` (read at `base`).
fn held_in(
    tid: i32,
    regs: &[u64],
    base: u64,
    stack: &[u8],
    held: &[Range<u64>],
    refs: &mut Vec<Reference>,
) {
    let found = regs
        .iter()
        .position(|&v| contains_sorted(held, v))
        .map(|i| (regs[i], Place::Register(i)))
        .or_else(|| first_word_in(base, stack, held).map(|(a, v)| (v, Place::Stack(a))));
    if let Some((value, place)) = found {
        refs.push(Reference { tid, value, place });
    }
}

/// Whether `addr` is a return address: the instruction before it is a call.
fn follows_call(arch: &dyn Arch, addr: u64, reader: &mut BlockReader<'_>) -> bool {
    crate::unwind::follows_call(arch, addr, &mut |a| reader.word(a).ok_or(()))
}

/// The parts of the thread's stacks in use: from each stack pointer the walk went through (the
/// thread's own, and the interrupted context's of a signal handled on an alternate stack), red
/// zone included, up to the end of its mapping.
fn stack_segments(walk: &crate::unwind::Walk, mappings: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut segs: Vec<Range<u64>> = Vec::new();
    for f in &walk.frames {
        if f.sp == 0 || segs.iter().any(|s| s.contains(&f.sp)) || segs.len() >= 8 {
            continue;
        }
        let i = mappings.partition_point(|m| m.end <= f.sp);
        let seg = match mappings.get(i).filter(|m| m.start <= f.sp) {
            Some(m) => {
                f.sp.saturating_sub(RED_ZONE).max(m.start)..m.end.min(f.sp + STACK_SCAN_LIMIT)
            }
            None => {
                let end = walk.top_sp().max(f.sp).saturating_add(UNKNOWN_STACK_SCAN);
                f.sp.saturating_sub(RED_ZONE)..end
            }
        };
        segs.push(seg);
    }
    segs
}

/// The aligned words of `range` with their addresses, read in one go (page by page where that
/// fails, skipping what cannot be read).
fn stack_words(mem: &dyn Memory, range: Range<u64>) -> Vec<(u64, u64)> {
    const PAGE: u64 = 4096;
    let start = range.start & !7;
    let end = range.end & !7;
    if start >= end {
        return Vec::new();
    }
    let mut buf = vec![0u8; (end - start) as usize];
    if mem.read(start, &mut buf).is_ok() {
        return words_of(start, &buf);
    }
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let next = ((at & !(PAGE - 1)) + PAGE).min(end);
        let mut part = vec![0u8; (next - at) as usize];
        if mem.read(at, &mut part).is_ok() {
            out.extend(words_of(at, &part));
        }
        at = next;
    }
    out
}

/// The first aligned word of `bytes` (read at `base`) that lies in `ranges` (sorted and
/// merged), with its address; without building the list of words, since this runs while the
/// target is stopped.
fn first_word_in(base: u64, bytes: &[u8], ranges: &[Range<u64>]) -> Option<(u64, u64)> {
    bytes.chunks_exact(8).enumerate().find_map(|(i, w)| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b);
        contains_sorted(ranges, v).then_some((base + 8 * i as u64, v))
    })
}

/// The words of `bytes`, read at `base`, with their addresses.
fn words_of(base: u64, bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(8)
        .enumerate()
        .map(|(i, w)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            (base + 8 * i as u64, u64::from_le_bytes(b))
        })
        .collect()
}

/// Whether a saved context belongs to a stack some thread runs on (see [`crate::coro`]): its
/// stack pointer is in the used part of that stack, or anywhere in a thread's own stack it
/// runs on, whose walk went to the end (its unused part holds only dead frames).
fn stale(c: &coro::Context, stacks: &[LiveStack], own: &[OwnStack]) -> bool {
    stacks.iter().any(|s| (s.sp..=s.top).contains(&c.sp))
        || own
            .iter()
            .any(|o| o.sp.is_some() && o.complete && o.mapping.contains(&c.sp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::Walk;

    /// Readable memory: these ranges, each word holding its own address.
    struct Fake(Vec<Range<u64>>);

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> kpatch_process::Result<()> {
            let end = addr + buf.len() as u64;
            if !self.0.iter().any(|r| r.start <= addr && end <= r.end) {
                return Err(kpatch_process::Error::InvalidArgument("unmapped".into()));
            }
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                *b = ((a & !7) >> (8 * (a & 7))) as u8;
            }
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> kpatch_process::Result<()> {
            unreachable!()
        }
    }

    fn frame(sp: u64) -> Frame {
        Frame {
            addr: 0x1000,
            lookup: 0x1000,
            sp,
        }
    }

    #[test]
    fn stacks_are_scanned_from_below_the_stack_pointer_to_their_mapping_end() {
        let mappings = vec![0x10000..0x20000, 0x30000..0x40000];
        // A thread on the first mapping whose signal was handled on the second (an alternate
        // stack), and a frame outside every known mapping.
        let walk = Walk {
            frames: vec![frame(0x38000), frame(0x18000), frame(0x18100)],
            complete: true,
        };
        assert_eq!(
            stack_segments(&walk, &mappings),
            vec![0x38000 - RED_ZONE..0x40000, 0x18000 - RED_ZONE..0x20000]
        );
        let walk = Walk {
            frames: vec![frame(0x50000), frame(0x50040)],
            complete: false,
        };
        assert_eq!(
            stack_segments(&walk, &mappings),
            vec![0x50000 - RED_ZONE..0x50040 + UNKNOWN_STACK_SCAN]
        );
        // The red zone does not reach below the mapping.
        let walk = Walk {
            frames: vec![frame(0x10010)],
            complete: true,
        };
        assert_eq!(stack_segments(&walk, &mappings), vec![0x10000..0x20000]);
    }

    /// Memory of words given by value.
    struct Words(std::cell::RefCell<HashMap<u64, u64>>);

    impl Memory for Words {
        fn read(&self, addr: u64, buf: &mut [u8]) -> kpatch_process::Result<()> {
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                let w = self.0.borrow().get(&(addr + 8 * i as u64)).copied();
                chunk.copy_from_slice(&w.unwrap_or(0).to_le_bytes()[..chunk.len()]);
            }
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> kpatch_process::Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn stacks_searched_early_are_searched_again() {
        let held = std::iter::once(0x7000..0x8000).collect::<Vec<_>>();
        let mem = Words(Default::default());
        let mut found = Inspection {
            refs: vec![Reference {
                tid: 1,
                value: 0x7010,
                place: Place::Register(3),
            }],
            segments: vec![
                (1, std::iter::once(0x1000..0x1100).collect()),
                (2, std::iter::once(0x2000..0x2100).collect()),
            ],
            ..Default::default()
        };
        // Thread 2's stack was clean when first searched; a running thread then wrote a
        // pointer into it.
        mem.0.borrow_mut().insert(0x2040, 0x7ff8);
        found.rescan_stacks(&mem, &held);
        assert_eq!(
            found.refs,
            vec![
                Reference {
                    tid: 1,
                    value: 0x7010,
                    place: Place::Register(3),
                },
                Reference {
                    tid: 2,
                    value: 0x7ff8,
                    place: Place::Stack(0x2040),
                },
            ]
        );
        // A pointer gone from the stack clears the thread.
        mem.0.borrow_mut().clear();
        found.rescan_stacks(&mem, &held);
        assert_eq!(found.refs.len(), 1);
    }

    #[test]
    fn a_thread_is_cleared_without_walking_only_when_nothing_could_hide_a_frame() {
        let arch: &'static dyn Arch = &kpatch_arch::X86_64;
        let layout = arch.regs();
        let mut walker = StackWalker::new(arch);
        // Searched text at 0x1000 with a trampoline at 0x1100; unsearched code at 0x5000.
        let mut text = vec![0x90u8; 0x1000];
        text[0x100..0x109].copy_from_slice(&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05]);
        walker.search_text(0x1000, &text, &Default::default());
        let code = crate::unwind::merged([0x1000..0x2000, 0x5000..0x6000]);
        walker.set_code(code.clone());
        let t = Targets {
            ranges: crate::unwind::merged(std::iter::once(0x1800..0x1900)),
            held: Vec::new(),
            mappings: Vec::new(),
            code: code.clone(),
            code_set: code,
            entries: Vec::new(),
            coro: coro::Source::None,
        };
        let mut regs = vec![0u64; layout.words];
        regs[layout.pc] = 0x1200;
        let bytes =
            |words: &[u64]| -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
        let clean = bytes(&[0x1234, 42, 0x9100]);
        assert!(clear_without_walking(&regs, layout, &clean, &walker, &t));
        for (what, word) in [
            ("a return address into the ranges", 0x1850),
            ("a handler's return into the trampoline", 0x1100),
            ("code whose trampolines are unknown", 0x5010),
        ] {
            let words = bytes(&[0x1234, word]);
            assert!(
                !clear_without_walking(&regs, layout, &words, &walker, &t),
                "{what}"
            );
        }
        for pc in [0x1850, 0x1107, 0x5000] {
            regs[layout.pc] = pc;
            assert!(
                !clear_without_walking(&regs, layout, &clean, &walker, &t),
                "pc {pc:#x}"
            );
        }
    }

    #[test]
    fn suspended_coroutines_are_walked_unless_stale_dead_or_not_started() {
        use crate::fake::{self, FakeProcess, FakeStopped, PID};
        use kpatch_process::MapName;
        const CODE: Range<u64> = 0x1000..0x9000;
        const REPLACED: Range<u64> = 0x2000..0x2100;
        const RETURN_INTO: u64 = 0x2058;
        const STACK: u64 = 0x7000_0000; // the main thread's, [stack]
        const CORO: u64 = 0x7100_0000; // a coroutine's, a mapping of its own
        let proc = FakeProcess::x86_64();
        let mut code = vec![0x90u8; (CODE.end - CODE.start) as usize];
        let call = (RETURN_INTO - 5 - CODE.start) as usize;
        code[call..call + 5].copy_from_slice(&[0xe8, 0, 0, 0, 0]);
        proc.map(CODE.start, code);
        proc.map(STACK, vec![0; 0x10000]);
        proc.map(CORO, vec![0; 0x10000]);
        let maps = vec![
            fake::mapping(CODE, false, true, MapName::Anonymous),
            fake::mapping(
                STACK..STACK + 0x10000,
                true,
                false,
                MapName::Special("[stack]".into()),
            ),
            fake::mapping(CORO..CORO + 0x10000, true, false, MapName::Anonymous),
        ];
        // A frame returning into the replaced function at `fp` on either stack.
        let frame_into_replaced = |fp: u64| proc.poke_words(fp, &[0, RETURN_INTO]);
        frame_into_replaced(CORO + 0xf020);
        frame_into_replaced(STACK + 0xf020);
        frame_into_replaced(STACK + 0xf820);
        let arch = kpatch_arch::for_machine(kpatch_arch::EM_X86_64).unwrap();
        let mut walker = StackWalker::new(arch);
        walker.set_code(vec![CODE]);
        let mut t = Targets {
            ranges: vec![REPLACED],
            held: Vec::new(),
            mappings: Vec::new(),
            code: vec![CODE],
            code_set: vec![CODE],
            entries: vec![REPLACED.start],
            coro: coro::Source::Scan { why: "test".into() },
        };
        let mut world = FakeStopped {
            proc: &proc,
            threads: std::collections::BTreeMap::from([(PID, vec![0u64; 27])]),
            maps: maps.clone(),
        };
        let context = |at, pc, sp, fp| coro::Context { at, pc, sp, fp };
        // The main thread runs on its stack from +0xf000 to +0xf100.
        let stacks = vec![LiveStack {
            tid: PID,
            sp: STACK + 0xf000,
            top: STACK + 0xf100,
            complete: true,
        }];
        let check = |world: &mut FakeStopped<'_>,
                     walker: &mut StackWalker,
                     t: &Targets,
                     stacks: &[LiveStack],
                     cs: &[coro::Context]| {
            let mut out = Inspection {
                stacks: stacks.to_vec(),
                ..Default::default()
            };
            coroutines(world, walker, t, cs, &maps, &mut out).unwrap();
            out.coroutine
        };
        let not_in_the_way = [
            // Its stack pointer in the thread's used stack: the thread's walk covers it.
            context(0x5000_0000, 0x3000, STACK + 0xf010, STACK + 0xf020),
            // Anywhere else in the thread's own stack (dead frames below it).
            context(0x5000_0000, 0x3000, STACK + 0xf800, STACK + 0xf820),
            // Saved below the thread's stack pointer: dead memory.
            context(STACK + 0x100, 0x3000, CORO + 0xf000, CORO + 0xf020),
            // Made by makecontext, never entered: it starts the function from its entry.
            context(0x5000_0000, REPLACED.start, CORO + 0xfff8, 0),
        ];
        assert_eq!(
            check(&mut world, &mut walker, &t, &stacks, &not_in_the_way),
            None
        );
        // A coroutine suspended with the replaced function on its stack.
        let busy = context(0x5000_0100, 0x3000, CORO + 0xf000, CORO + 0xf020);
        let mut all = not_in_the_way.to_vec();
        all.push(busy);
        assert_eq!(
            check(&mut world, &mut walker, &t, &stacks, &all),
            Some((RETURN_INTO - 1, busy.at))
        );
        // Each of the others is in the way once nothing tells it is not.
        t.entries.clear();
        for c in not_in_the_way {
            assert!(
                check(&mut world, &mut walker, &t, &[], &[c]).is_some(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn unreadable_pages_are_skipped() {
        let mem = Fake(vec![0x1000..0x2000, 0x3000..0x4000]);
        let words = stack_words(&mem, 0x1ff0..0x3010);
        let addrs: Vec<u64> = words.iter().map(|(a, _)| *a).collect();
        assert_eq!(addrs, vec![0x1ff0, 0x1ff8, 0x3000, 0x3008]);
        assert!(words.iter().all(|(a, v)| a == v));
    }
}
