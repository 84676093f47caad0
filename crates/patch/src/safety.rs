//! The safety check: no thread may be executing, or be about to return into, code that a
//! patch replaces (or, when removing a patch, code that goes away with it).

use std::collections::HashMap;
use std::ops::Range;

use kpatch_target::{Memory, StoppedProcess};

use crate::error::Result;
use crate::unwind::StackWalker;

/// A thread found inside a range being changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub tid: i32,
    /// The code address of the frame that is inside.
    pub addr: u64,
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

/// Walks every stopped thread's stack and reports those with a frame in `ranges`.
pub fn busy_threads(
    world: &mut StoppedProcess<'_>,
    walker: &mut StackWalker,
    ranges: &[Range<u64>],
) -> Result<Vec<Busy>> {
    let mem: &dyn Memory = world.process();
    let mut reader = BlockReader {
        mem,
        blocks: HashMap::new(),
    };
    let mut busy = Vec::new();
    for tid in world.tids() {
        let regs = match world.thread(tid) {
            Ok(t) => t.regs()?,
            Err(_) => continue,
        };
        let walk = walker.walk(&regs, &mut |a| reader.word(a));
        if let Some(addr) = walk.hit(ranges) {
            busy.push(Busy { tid, addr });
        }
    }
    Ok(busy)
}
