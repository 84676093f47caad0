//! The livepatch registry of a process (`kpatch_file::registry`): one page the runtime maps
//! the first time a patch needs it, never unmaps (shadow variables may outlive every patch),
//! and finds again by its size, protection and magic. The header's code keeps the shadow
//! variables there under its lock; the runtime writes one slot per state of an applied patch.

use std::ops::Range;

use kpatch_file::{registry, StateDecl};
use kpatch_process::{MapEntry, MapName, Memory, ThreadHandle};

use crate::error::{Error, Result};
use crate::extras::Extras;

/// The registry of a process with these mappings, if it has one.
pub fn find(mem: &dyn Memory, maps: &[MapEntry]) -> Option<u64> {
    maps.iter()
        .filter(|m| {
            m.name == MapName::Anonymous
                && m.len() == registry::SIZE
                && m.perms.read
                && m.perms.write
                && !m.perms.exec
                && !m.perms.shared
        })
        .map(|m| m.start)
        .find(|&a| {
            let mut magic = [0u8; 8];
            mem.read(a, &mut magic).is_ok() && magic == registry::MAGIC
        })
}

/// Maps a new registry with `thread` (stopped) and marks it. It lies between two inaccessible
/// pages, so that the kernel never merges it with a neighbouring mapping: it stays a mapping
/// of its own, which is how it is found again.
pub fn create(thread: &mut ThreadHandle<'_>) -> Result<u64> {
    let size = registry::SIZE;
    let guarded = thread.mmap(
        None,
        3 * size,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    )?;
    let at = guarded + size;
    if let Err(e) = thread.mprotect(at, size, libc::PROT_READ | libc::PROT_WRITE) {
        let _ = thread.munmap(guarded, 3 * size);
        return Err(e.into());
    }
    thread.process().write(at, &registry::MAGIC)?;
    Ok(at)
}

/// Points every registry slot of a relocated image (`elf`) at the registry `at`.
pub fn fill_slots(elf: &mut [u8], extras: &Extras, at: u64) {
    for &off in &extras.registry_slots {
        if let Some(w) = elf.get_mut(off as usize..off as usize + 8) {
            w.copy_from_slice(&at.to_le_bytes());
        }
    }
}

/// Adds the states of the patch in `region` (applied `seq`-th) to the registry `at`, in place
/// of any a patch that had the same region left (one an interrupted run left pending).
pub fn add_states(
    mem: &dyn Memory,
    pid: i32,
    at: u64,
    seq: u64,
    region: Range<u64>,
    states: &[StateDecl],
) -> Result<()> {
    remove_states(mem, at, std::slice::from_ref(&region))?;
    let page = mem.read_vec(at, registry::SIZE as usize)?;
    let slot_at = |i: u64| registry::SLOTS_OFFSET + i * registry::SLOT_SIZE;
    let slot = |i: u64| &page[slot_at(i) as usize..(slot_at(i) + registry::SLOT_SIZE) as usize];
    let mut free = (0..registry::SLOTS).filter(|&i| registry::slot_region(slot(i)).is_none());
    for s in states {
        let i = free.next().ok_or(Error::RegistryFull {
            pid,
            slots: registry::SLOTS,
        })?;
        let bytes = registry::slot(s.id(), s.version(), seq, region.clone());
        let end = registry::SLOT_END as usize;
        // `end` last: a reader sees the slot complete or not at all.
        mem.write(at + slot_at(i), &bytes[..end])?;
        mem.write(at + slot_at(i) + end as u64, &bytes[end..])?;
    }
    Ok(())
}

/// Frees the slots of the states of the patches in `regions`.
pub fn remove_states(mem: &dyn Memory, at: u64, regions: &[Range<u64>]) -> Result<()> {
    let page = mem.read_vec(at, registry::SIZE as usize)?;
    for i in 0..registry::SLOTS {
        let off = registry::SLOTS_OFFSET + i * registry::SLOT_SIZE;
        let slot = &page[off as usize..(off + registry::SLOT_SIZE) as usize];
        if registry::slot_region(slot).is_some_and(|r| regions.contains(&r)) {
            mem.write(at + off + registry::SLOT_END, &[0; 8])?;
        }
    }
    Ok(())
}
