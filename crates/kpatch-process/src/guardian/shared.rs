//! The memory the tool shares with its guardian: which batches of writes are armed, and their
//! bytes. A `memfd` both map; only the pages batches touch cost anything.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::error::{Error, Result};

/// Bytes of framing per write in an armed batch: address (8) and length (4).
pub(super) const ENTRY_HEADER: usize = 12;
/// Most bytes of batches a guardian holds at once.
pub const GUARDIAN_CAPACITY: usize = 4 << 20;
/// Most batches a guardian holds at once.
pub(super) const MAX_DEPTH: usize = 16;
/// Where the batches start in the shared memory (after [`Armed`]).
const DATA_OFFSET: usize = 4096;
const SHARED_LEN: usize = DATA_OFFSET + GUARDIAN_CAPACITY;
/// Bytes of batches whose pages are faulted in before any stop.
const PREFAULT: usize = 16 << 10;

/// The head of the shared memory: which batches are armed. A batch's bytes and its entry in
/// `layers` are stored before `depth` counts it (release), and the helper reads `depth`
/// (acquire) before them, so a death half-way through arming leaves the batch unarmed.
#[repr(C)]
pub(super) struct Armed {
    pub depth: AtomicU32,
    /// (start in the data, length, count of writes) of each batch, bottom first.
    pub layers: [[AtomicU64; 3]; MAX_DEPTH],
}

const _: () = assert!(std::mem::size_of::<Armed>() <= DATA_OFFSET);

/// One mapping of the shared memory ([`SHARED_LEN`] bytes, starting with an [`Armed`]),
/// unmapped when dropped.
#[derive(Debug)]
pub(super) struct Shared {
    ptr: *mut u8,
}

// SAFETY: the mapping belongs to this value alone (the helper has its own and only reads it
// after we let go); nothing ties it to the thread that made it.
unsafe impl Send for Shared {}

impl Shared {
    /// Creates the shared memory: a memfd, mapped, its first pages faulted in (so that arming a
    /// usual batch inside a stop takes no page fault).
    pub(super) fn create() -> Result<(OwnedFd, Shared)> {
        let fd = memfd_create(c"libcare-guardian", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| Error::guardian("memfd_create", e))?;
        nix::unistd::ftruncate(fd.as_fd(), SHARED_LEN as libc::off_t)
            .map_err(|e| Error::guardian("ftruncate", e))?;
        let shared = Shared::map(fd.as_raw_fd())
            .ok_or_else(|| Error::guardian("mmap", nix::errno::Errno::last()))?;
        for page in (0..DATA_OFFSET + PREFAULT).step_by(4096) {
            // SAFETY: within the mapping; nothing else uses it yet.
            unsafe { shared.ptr.add(page).write_volatile(0) };
        }
        Ok((fd, shared))
    }

    /// Maps the shared memory of descriptor `fd`. Only makes a system call: the helper uses it
    /// between `fork` and `_exit`.
    pub(super) fn map(fd: RawFd) -> Option<Shared> {
        // SAFETY: a new shared mapping of a memfd of SHARED_LEN bytes, owned by the result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SHARED_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(Shared { ptr: p.cast() })
    }

    /// The [`Armed`] head.
    pub(super) fn head(&self) -> &Armed {
        // SAFETY: the mapping is page-aligned, zero-filled at creation (a valid `Armed`:
        // atomics of zero), at least DATA_OFFSET bytes long and live while `self` is; it is
        // only accessed through atomics.
        unsafe { &*self.ptr.cast::<Armed>() }
    }

    /// The batches' bytes.
    pub(super) fn data(&self) -> &[u8] {
        // SAFETY: the data part of the live mapping. Only the helper reads it, once the tool
        // has let go of it (no writer is left).
        unsafe { std::slice::from_raw_parts(self.ptr.add(DATA_OFFSET), GUARDIAN_CAPACITY) }
    }

    /// Copies `bytes` to `at` in the batches' bytes; false (nothing written) if they do not fit.
    pub(super) fn write(&mut self, at: usize, bytes: &[u8]) -> bool {
        if at
            .checked_add(bytes.len())
            .is_none_or(|end| end > GUARDIAN_CAPACITY)
        {
            return false;
        }
        // SAFETY: within the data part of the live mapping (checked above); the helper does
        // not read it before the head counts it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(DATA_OFFSET + at),
                bytes.len(),
            )
        };
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: our mapping, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), SHARED_LEN) };
    }
}
