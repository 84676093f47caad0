//! What `<libcare/livepatch.h>` (include/libcare/livepatch.h) puts into a patch, and the
//! registry it shares with the runtime inside a patched process. The layouts are fixed here
//! and in the header; a change to one is a change to the other.
//!
//! - `.kpatch.callbacks`: one [`CallbackRecord`] per `LIBCARE_CALLBACKS(...)`;
//! - `.kpatch.states`: one [`StateDecl`] per `LIBCARE_STATE(id, version)`;
//! - `.kpatch.registry`: 8-byte slots the runtime fills with the [`registry`]'s address;
//! - `.kpatch.replace`: [`REPLACE_MARKER`] in a cumulative patch (`kpatch_make --replace`).

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of one [`CallbackRecord`].
pub const CALLBACK_RECORD_SIZE: usize = 56;

/// `struct libcare_callbacks`: the callbacks of one object (the program when `name` is 0, else
/// the library whose soname `name` points to). In a file the pointers are 0 and filled by the
/// relocations of `.rela.kpatch.callbacks`; in an applied patch they are addresses, and
/// `state` is what the runtime has run (see [`callback_state`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CallbackRecord {
    name: U64,
    pre_patch: U64,
    post_patch: U64,
    pre_unpatch: U64,
    post_unpatch: U64,
    state: U64,
    order: U64,
}

const _: () = {
    assert!(size_of::<CallbackRecord>() == CALLBACK_RECORD_SIZE);
    assert!(offset_of!(CallbackRecord, state) == CallbackRecord::STATE_OFFSET as usize);
};

impl CallbackRecord {
    /// Offset of the `state` word, which the runtime rewrites in the patched process.
    pub const STATE_OFFSET: u64 = 40;

    /// A record; `order` is the line of its declaration.
    pub fn new(name: u64, callbacks: [u64; 4], state: u64, order: u64) -> CallbackRecord {
        CallbackRecord {
            name: U64::new(name),
            pre_patch: U64::new(callbacks[0]),
            post_patch: U64::new(callbacks[1]),
            pre_unpatch: U64::new(callbacks[2]),
            post_unpatch: U64::new(callbacks[3]),
            state: U64::new(state),
            order: U64::new(order),
        }
    }

    /// Views the first record of `bytes`.
    pub fn read(bytes: &[u8]) -> Option<CallbackRecord> {
        CallbackRecord::read_from_prefix(bytes).ok().map(|(r, _)| r)
    }

    /// Address of the object's name (a C string), 0 for the program.
    pub fn name(&self) -> u64 {
        self.name.get()
    }

    /// Addresses of pre-patch, post-patch, pre-unpatch and post-unpatch (0: none).
    pub fn callbacks(&self) -> [u64; 4] {
        [
            self.pre_patch.get(),
            self.post_patch.get(),
            self.pre_unpatch.get(),
            self.post_unpatch.get(),
        ]
    }

    /// What the runtime has run ([`callback_state`]).
    pub fn state(&self) -> u64 {
        self.state.get()
    }

    /// The line of the declaration: records of one file run in declaration order, whatever
    /// order the compiler emitted them in.
    pub fn order(&self) -> u64 {
        self.order.get()
    }
}

/// The bits of [`CallbackRecord::state`].
pub mod callback_state {
    /// Pre-patch ran and succeeded (or there is none): post-unpatch is due when the object is
    /// reverted.
    pub const PRE_PATCHED: u64 = 1;
    /// The object is patched and post-patch ran: pre-unpatch is due before it is reverted.
    pub const PATCHED: u64 = 2;
    /// Pre-patch failed; its return value is in the upper 32 bits. The object is unpatched.
    pub const FAILED: u64 = 4;

    /// The state of a pre-patch that returned `value` (non-zero).
    pub fn failed_with(value: i32) -> u64 {
        FAILED | (u64::from(value as u32) << 32)
    }

    /// The value a failed pre-patch returned.
    pub fn failure(state: u64) -> Option<i32> {
        (state & FAILED != 0).then_some((state >> 32) as u32 as i32)
    }
}

/// Size of one [`StateDecl`].
pub const STATE_DECL_SIZE: usize = 16;

/// `LIBCARE_STATE(id, version)`: the patch sets state `id` at `version` (the kernel's
/// `klp_state`). A patch applied later must carry every state applied patches set, at the
/// same or a higher version.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct StateDecl {
    id: U64,
    version: U32,
    reserved: U32,
}

const _: () = assert!(size_of::<StateDecl>() == STATE_DECL_SIZE);

impl StateDecl {
    /// A declaration.
    pub fn new(id: u64, version: u32) -> StateDecl {
        StateDecl {
            id: U64::new(id),
            version: U32::new(version),
            reserved: U32::new(0),
        }
    }

    /// The declarations in a `.kpatch.states` section's bytes (a trailing partial record is
    /// ignored).
    pub fn all(bytes: &[u8]) -> Vec<StateDecl> {
        bytes
            .chunks_exact(STATE_DECL_SIZE)
            .filter_map(|c| StateDecl::read_from_bytes(c).ok())
            .collect()
    }

    /// The state's id.
    pub fn id(&self) -> u64 {
        self.id.get()
    }

    /// The state's version.
    pub fn version(&self) -> u32 {
        self.version.get()
    }
}

/// The bytes of `.kpatch.replace`.
pub const REPLACE_MARKER: [u8; 8] = 1u64.to_le_bytes();

/// The livepatch registry: one page of anonymous read-write memory per process, mapped by the
/// runtime the first time a patch needs it and never unmapped, found again by its size and
/// magic. It holds the lock and the list of shadow variables (used only by the code of the
/// header) and one slot per state of an applied patch (written by the runtime, read by
/// `libcare_get_state`).
pub mod registry {
    /// The first 8 bytes.
    pub const MAGIC: [u8; 8] = *b"LCREG01\0";
    /// Its size (and the size of the mapping).
    pub const SIZE: u64 = 4096;
    /// Where the state slots start.
    pub const SLOTS_OFFSET: u64 = 64;
    /// Size of a slot: `struct libcare_state` (id, version, data), then the sequence number of
    /// the patch that declared it and that patch's region (start, end; end 0: a free slot).
    pub const SLOT_SIZE: u64 = 48;
    /// How many states fit.
    pub const SLOTS: u64 = (SIZE - SLOTS_OFFSET) / SLOT_SIZE;
    /// Offset of `end` in a slot: written last when a slot is filled, first when freed.
    pub const SLOT_END: u64 = 40;

    /// A slot's contents as the runtime writes them (`data`, the patch's, starts at 0).
    pub fn slot(id: u64, version: u32, seq: u64, region: core::ops::Range<u64>) -> [u8; 48] {
        let mut b = [0u8; SLOT_SIZE as usize];
        b[0..8].copy_from_slice(&id.to_le_bytes());
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[24..32].copy_from_slice(&seq.to_le_bytes());
        b[32..40].copy_from_slice(&region.start.to_le_bytes());
        b[40..48].copy_from_slice(&region.end.to_le_bytes());
        b
    }

    /// The region (start, end) of a slot's bytes; `None` for a free slot.
    pub fn slot_region(b: &[u8]) -> Option<core::ops::Range<u64>> {
        let word = |at: usize| {
            b.get(at..at + 8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        };
        let (start, end) = (word(32)?, word(40)?);
        (end != 0).then_some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_value() {
        let s = callback_state::failed_with(-19);
        assert_eq!(callback_state::failure(s), Some(-19));
        assert_eq!(callback_state::failure(callback_state::PATCHED), None);
    }

    #[test]
    fn records_read_back() {
        let r = CallbackRecord::new(0x10, [1, 2, 3, 4], callback_state::PATCHED, 7);
        let back = CallbackRecord::read(r.as_bytes()).unwrap();
        assert_eq!(
            (back.name(), back.callbacks(), back.order()),
            (0x10, [1, 2, 3, 4], 7)
        );
        let states = [StateDecl::new(3, 2), StateDecl::new(9, 1)];
        let mut bytes = states.as_bytes().to_vec();
        bytes.push(0);
        assert_eq!(StateDecl::all(&bytes), states);
        assert_eq!(registry::SLOTS, 84);
        let slot = registry::slot(3, 2, 5, 0x1000..0x3000);
        assert_eq!(registry::slot_region(&slot), Some(0x1000..0x3000));
        assert_eq!(registry::slot_region(&[0; 48]), None);
    }
}
