//! Thread-local variables in a patch: `kpatch_strip --rel-fixup` keeps the two static TLS
//! models, which reach a variable without calling the dynamic linker, and refuses the others.

/// A static TLS access model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticTls {
    /// Initial-exec: the code loads the variable's thread-pointer offset from a GOT slot that
    /// the dynamic linker filled (with [`crate::Arch::tls_offset_slot_reloc`]).
    InitialExec,
    /// Local-exec: the offset is a constant in the code (executables only).
    LocalExec,
}
