//! The safety check: no thread may be executing, or be about to return into, code that a
//! patch replaces (or, when removing a patch, code that goes away with it), and no suspended
//! coroutine may hold such a frame.

use std::collections::HashMap;
use std::ops::Range;

use kpatch_target::{MapEntry, Memory, StoppedProcess};

use crate::coro;
use crate::error::Result;
use crate::unwind::{Frame, StackWalker};

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
}

const BLOCK: u64 = 16 * 1024;

impl BlockReader<'_> {
    fn word(&mut self, addr: u64) -> Option<u64> {
        let base = addr & !(BLOCK - 1);
        let off = (addr - base) as usize;
        if off + 8 > BLOCK as usize {
            let mut w = [0u8; 8];
            return self
                .mem
                .read(addr, &mut w)
                .ok()
                .map(|_| u64::from_le_bytes(w));
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

/// What one inspection of a stopped process found.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub busy: Vec<Busy>,
    /// A suspended coroutine with a frame in the ranges: (the code address, where its context
    /// is saved).
    pub coroutine: Option<(u64, u64)>,
    pub stacks: Vec<LiveStack>,
}

/// Walks every stopped thread's stack (and, with a coroutine source, every suspended
/// coroutine's) and reports those with a frame in `ranges`.
pub fn inspect(
    world: &mut StoppedProcess<'_>,
    walker: &mut StackWalker,
    ranges: &[Range<u64>],
    coro: &coro::Source,
    code: &[Range<u64>],
) -> Result<Inspection> {
    let proc = world.process();
    let mem: &dyn Memory = proc;
    let mut reader = BlockReader {
        mem,
        blocks: HashMap::new(),
    };
    let mut out = Inspection::default();
    let mut some_regs = None;
    for tid in world.tids() {
        let regs = match world.thread(tid) {
            Ok(t) => t.regs()?,
            Err(_) => continue,
        };
        let walk = walker.walk(&regs, &mut |a| reader.word(a));
        if let Some(addr) = walk.hit(ranges) {
            out.busy.push(Busy {
                tid,
                addr,
                exit: walk.exit_point(ranges),
            });
        }
        out.stacks.push(LiveStack {
            tid,
            sp: walk.frames.first().map(|f| f.sp).unwrap_or(0),
            top: walk.top_sp(),
            complete: walk.complete,
        });
        some_regs.get_or_insert(regs);
    }
    if *coro == coro::Source::None {
        return Ok(out);
    }
    let maps = proc.maps()?;
    let guard = some_regs
        .as_deref()
        .and_then(|r| coro::pointer_guard(mem, r));
    let view = coro::View {
        mem,
        maps: &maps,
        code,
        guard,
    };
    for c in coro::contexts(proc.arch(), coro, &view)? {
        if stale(&c, &out.stacks, &maps) {
            continue;
        }
        let walk = walker.walk_from(c.pc, c.sp, c.fp, 0, &mut |a| reader.word(a));
        if let Some(addr) = walk.hit(ranges) {
            out.coroutine = Some((addr, c.at));
            break;
        }
    }
    Ok(out)
}

/// Whether a saved context belongs to a stack some thread runs on (see [`crate::coro`]): its
/// stack pointer is in the used part of that stack, or anywhere in a stack mapping whose walk
/// went to the end (a thread's own stack; its unused part holds only dead frames).
fn stale(c: &coro::Context, stacks: &[LiveStack], maps: &[MapEntry]) -> bool {
    let mapping = |a: u64| maps.iter().find(|m| m.contains(a));
    stacks.iter().any(|s| {
        if (s.sp..=s.top).contains(&c.sp) {
            return true;
        }
        if !s.complete {
            return false;
        }
        match (mapping(s.sp), mapping(c.sp)) {
            (Some(a), Some(b)) => a == b && !a.is_special("[heap]") && mapping(s.top) == Some(a),
            _ => false,
        }
    })
}
