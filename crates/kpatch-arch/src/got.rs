//! Making a GOT-relative reference direct: when `kpatch_strip --rel-fixup` finds that the
//! patch can reach a symbol itself, the instruction that loaded the symbol's address from a
//! GOT slot is rewritten to compute it (or to branch to it), and its relocation becomes a
//! plain PC-relative one.

/// The instruction a GOT-relative reference was made direct in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GotInstruction {
    /// A load of the address from the slot (x86_64 `mov`), now computing it (`lea`).
    Load,
    /// An instruction that already computes the address (x86_64 `lea`): unchanged.
    Address,
    /// An indirect call or jump through the slot, now a direct one.
    Branch,
}

/// A GOT-relative reference made direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectReference {
    /// What the instruction was.
    pub insn: GotInstruction,
    /// Offset of the instruction's first byte in the code.
    pub insn_start: usize,
    /// The relocation type that now applies to the field.
    pub r_type: u32,
    /// How far the relocated field moved (x86_64 `jmp *` becomes `jmp rel32; nop`: one byte
    /// earlier).
    pub field_moved: i64,
}

/// Why a GOT-relative reference cannot be made direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GotRewriteError {
    /// The instruction around the relocated field does not fit in the code.
    OutOfBounds,
    /// The instruction cannot be rewritten; `bytes` are the two before the field (x86_64:
    /// opcode and ModRM).
    Unsupported {
        /// Offset of the instruction's first byte in the code.
        insn_start: usize,
        /// Its bytes before the relocated field.
        bytes: [u8; 2],
    },
}
