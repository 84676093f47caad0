//! The patch's unwind tables (`.kpatch.eh_frame`, made by `kpatch_strip`) registered with the
//! process's unwinder, libgcc's `__register_frame_info`, so that an exception thrown in
//! patched code, or through it, finds its handlers; removed with `__deregister_frame_info`
//! before the region is unmapped.
//!
//! libgcc keeps a `struct object` per registration, in memory the caller provides: the last
//! [`SLOT_SIZE`] bytes of the region (read-write, after the undo area), which also hold the
//! state of the registration, so that `unpatch` and a later run reclaiming an interrupted
//! one know whether there is something to deregister:
//!
//! ```text
//! slot + 0    8-byte state: "KPEHREG0" while registering, "KPEHREG1" once registered
//! slot + 8    address of the registered .kpatch.eh_frame
//! slot + 16   libgcc's struct object (48 bytes in libgcc 12; room for 112)
//! ```
//!
//! A region whose state says "registering" (the tool died during the call) cannot be told
//! apart from one libgcc knows, so it is never unmapped: libgcc would read freed memory at the
//! next exception. Regions of LibcarePlus have no such slot and are left alone.

use std::time::Duration;

use kpatch_process::{Memory, ThreadHandle};

use crate::error::{Error, Result};
use crate::scope::Scope;

/// Bytes reserved at the end of a region whose patch carries unwind tables.
pub const SLOT_SIZE: u64 = 128;

const REGISTERING: &[u8; 8] = b"KPEHREG0";
const REGISTERED: &[u8; 8] = b"KPEHREG1";
/// How long a (de)registration call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// libgcc's registration functions in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwinder {
    pub register: u64,
    pub deregister: u64,
}

impl Unwinder {
    /// The process's unwinder, if an object exports both functions (libgcc_s, or a program
    /// linked with libgcc_eh statically that exports them).
    pub fn find(scope: &Scope) -> Option<Unwinder> {
        Some(Unwinder {
            register: scope.lookup("__register_frame_info", None)?.addr,
            deregister: scope.lookup("__deregister_frame_info", None)?.addr,
        })
    }
}

/// Where the slot of a region of `total` bytes at `kpta` is.
pub fn slot(kpta: u64, total: u64) -> u64 {
    kpta + total - SLOT_SIZE
}

/// What the slot of a region says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing registered (or no slot at all).
    None,
    /// A registration was started and may or may not have happened.
    Registering,
    /// The tables at this address are registered.
    Registered(u64),
}

/// Reads the registration state of the region `kpta..kpta + total`.
pub fn state(mem: &dyn Memory, kpta: u64, total: u64) -> State {
    if total < SLOT_SIZE {
        return State::None;
    }
    let mut b = [0u8; 16];
    if mem.read(slot(kpta, total), &mut b).is_err() {
        return State::None;
    }
    let addr = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    let inside = (kpta..kpta + total).contains(&addr);
    match &b[..8] {
        m if m == REGISTERED && inside => State::Registered(addr),
        m if m == REGISTERING && inside => State::Registering,
        _ => State::None,
    }
}

/// Registers the tables at `eh_frame` of the region `kpta..kpta + total`, by a call in
/// `thread` (stopped; the other threads may run).
pub fn register(
    thread: &mut ThreadHandle<'_>,
    mem: &dyn Memory,
    unwinder: &Unwinder,
    kpta: u64,
    total: u64,
    eh_frame: u64,
) -> Result<()> {
    let at = slot(kpta, total);
    let mut head = REGISTERING.to_vec();
    head.extend_from_slice(&eh_frame.to_le_bytes());
    mem.write(at, &head)?;
    thread.call(unwinder.register, &[eh_frame, at + 16], CALL_TIMEOUT)?;
    mem.write(at, REGISTERED)?;
    Ok(())
}

/// A region whose tables must be deregistered before it is unmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub kpta: u64,
    pub total: u64,
    /// The registered tables, or `None` when the registration may be half done.
    pub eh_frame: Option<u64>,
    /// `__deregister_frame_info` (0 if the process has none: then the region stays).
    pub deregister: u64,
}

/// The registrations of the regions `regions` (`(kpta, total)`), read while the process runs.
pub fn registrations(
    mem: &dyn Memory,
    scope: impl FnOnce() -> Option<Unwinder>,
    regions: &[(u64, u64)],
) -> Vec<Registration> {
    let found: Vec<(u64, u64, State)> = regions
        .iter()
        .map(|&(a, l)| (a, l, state(mem, a, l)))
        .filter(|(_, _, s)| *s != State::None)
        .collect();
    if found.is_empty() {
        return Vec::new();
    }
    let deregister = scope().map_or(0, |u| u.deregister);
    found
        .into_iter()
        .map(|(kpta, total, s)| Registration {
            kpta,
            total,
            eh_frame: match s {
                State::Registered(a) => Some(a),
                _ => None,
            },
            deregister,
        })
        .collect()
}

/// Before the region at `kpta` is unmapped: deregisters its tables (by a call in `thread`)
/// if `regs` says they are registered. `Err` means the region must stay mapped.
pub fn before_unmap(thread: &mut ThreadHandle<'_>, regs: &[Registration], kpta: u64) -> Result<()> {
    let Some(r) = regs.iter().find(|r| r.kpta == kpta) else {
        return Ok(());
    };
    let Some(eh_frame) = r.eh_frame.filter(|_| r.deregister != 0) else {
        return Err(Error::Unsupported(format!(
            "the unwind tables of the patch at {kpta:#x} may be registered with the process's \
             unwinder, which would read the region after it is gone"
        )));
    };
    let object = thread.call(r.deregister, &[eh_frame], CALL_TIMEOUT)?;
    if object != slot(r.kpta, r.total) + 16 {
        return Err(Error::Unsupported(format!(
            "__deregister_frame_info({eh_frame:#x}) returned {object:#x}, not the patch's record"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Mem(RefCell<Vec<u8>>, u64);

    impl Memory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> kpatch_process::Result<()> {
            let at = (addr - self.1) as usize;
            buf.copy_from_slice(&self.0.borrow()[at..at + buf.len()]);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> kpatch_process::Result<()> {
            let at = (addr - self.1) as usize;
            self.0.borrow_mut()[at..at + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn the_slot_tells_what_is_registered() {
        let base = 0x10000;
        let mem = Mem(RefCell::new(vec![0; 0x2000]), base);
        assert_eq!(state(&mem, base, 0x2000), State::None);
        let at = slot(base, 0x2000);
        let mut head = REGISTERING.to_vec();
        head.extend_from_slice(&(base + 0x1200).to_le_bytes());
        mem.write(at, &head).unwrap();
        assert_eq!(state(&mem, base, 0x2000), State::Registering);
        mem.write(at, REGISTERED).unwrap();
        assert_eq!(state(&mem, base, 0x2000), State::Registered(base + 0x1200));
        let regs = registrations(
            &mem,
            || {
                Some(Unwinder {
                    register: 1,
                    deregister: 2,
                })
            },
            &[(base, 0x2000)],
        );
        assert_eq!(regs[0].eh_frame, Some(base + 0x1200));
        assert_eq!(regs[0].deregister, 2);
        // An address outside the region is not ours.
        head = REGISTERED.to_vec();
        head.extend_from_slice(&0x99u64.to_le_bytes());
        mem.write(at, &head).unwrap();
        assert_eq!(state(&mem, base, 0x2000), State::None);
    }
}
