//! Architecture as data: everything the toolkit needs to know about an instruction set, behind
//! one [`Arch`] trait with an [`X86_64`] and an [`Aarch64`] value, chosen from the target ELF's
//! `e_machine`. Nothing here depends on the host, so both are unit-tested on any machine.
//!
//! Each architecture is one file implementing [`Arch`], listed in [`ALL`]: instruction
//! encodings and decoders, relocations, registers and register sets, syscall numbers, the
//! kernel's signal frame. Code elsewhere asks the trait and never compares `e_machine` values.

mod aarch64;
mod got;
mod static_tls;
mod x86_64;
mod x86_64_got;

pub use aarch64::Aarch64;
pub use got::{DirectReference, GotInstruction, GotRewriteError};
pub use static_tls::StaticTls;
pub use x86_64::X86_64;

/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;

/// Every supported architecture.
pub const ALL: &[&dyn Arch] = &[&X86_64, &Aarch64];

/// `NT_PRFPREG`: the floating-point/SIMD register set.
pub const NT_PRFPREG: u32 = 2;

/// How many bytes before an address [`Arch::follows_call`] looks at.
pub const CALL_WINDOW: usize = 8;

/// Size of one jump-table entry (code that jumps through the 8-byte slot that follows it).
pub const JUMP_TABLE_ENTRY_SIZE: usize = 16;
/// Offset of the 8-byte address slot inside a jump-table entry; GOT-relative relocations
/// against an import use it as the GOT slot.
pub const JUMP_TABLE_SLOT_OFFSET: u64 = 8;

/// Errors from encoding instructions or applying relocations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchError {
    #[error("{arch}: jump from {from:#x} to {to:#x} is out of reach (limit {limit:#x} bytes)")]
    JumpOutOfRange {
        arch: &'static str,
        from: u64,
        to: u64,
        limit: u64,
    },
    #[error("{arch}: jump from {from:#x} to {to:#x} is not 4-byte aligned")]
    Misaligned {
        arch: &'static str,
        from: u64,
        to: u64,
    },
    #[error("{arch}: relocation type {r_type} is not supported")]
    UnsupportedRelocation { arch: &'static str, r_type: u32 },
    #[error("{arch}: relocation {name} at {place:#x}: value {value:#x} does not fit")]
    RelocationOverflow {
        arch: &'static str,
        name: &'static str,
        place: u64,
        value: i128,
    },
    #[error("{arch}: relocation {name} at {place:#x} needs {need} bytes, only {have} left")]
    RelocationOutOfBounds {
        arch: &'static str,
        name: &'static str,
        place: u64,
        need: usize,
        have: usize,
    },
    #[error("{arch}: relocation {name} at {place:#x}: the instruction is not the expected one")]
    UnexpectedInstruction {
        arch: &'static str,
        name: &'static str,
        place: u64,
    },
}

/// Where the registers an injected syscall or call needs live in the `NT_PRSTATUS` register set
/// (`user_regs_struct` on x86_64, `user_pt_regs` on aarch64), as indices of 64-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegLayout {
    /// Number of 64-bit words in the register set.
    pub words: usize,
    pub pc: usize,
    pub sp: usize,
    /// Register holding the syscall number on entry.
    pub syscall_nr: usize,
    /// Registers holding syscall arguments 1..6.
    pub syscall_args: [usize; 6],
    /// Registers holding function-call arguments 1..6.
    pub call_args: [usize; 6],
    /// Register holding a syscall's or a call's return value.
    pub ret: usize,
    /// x86_64 `orig_rax`: the syscall the kernel may restart. `None` on aarch64.
    pub orig_syscall: Option<usize>,
    /// The frame pointer (`rbp`, `x29`).
    pub fp: usize,
    /// Register holding the return address of a call (aarch64 `x30`); `None` when the return
    /// address lives on the stack (x86_64).
    pub link: Option<usize>,
}

/// One relocation to apply, with its symbol already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloc {
    pub r_type: u32,
    /// Address the relocated bytes will have in the target (P).
    pub place: u64,
    /// Resolved symbol value (S). For a thread-local symbol: its offset from the thread
    /// pointer.
    pub symbol: u64,
    /// Address of the 8-byte slot holding the symbol's address (for GOT-relative relocations)
    /// or its thread-pointer offset (for initial-exec TLS relocations).
    pub got_slot: Option<u64>,
    /// A.
    pub addend: i64,
}

/// What a relocation type needs from symbol resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelocNeed {
    /// The symbol's address.
    Address,
    /// A slot holding the symbol's address.
    GotSlot,
    /// A slot holding the symbol's thread-pointer offset (initial-exec TLS).
    TlsGotSlot,
    /// The symbol's thread-pointer offset itself (local-exec TLS, executables only).
    TlsOffset,
}

/// How the C library calls an IFUNC resolver: integer arguments, then (when `block` is not
/// empty) the address of a copy of `block` in the target's memory as one more argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfuncCall {
    pub args: Vec<u64>,
    pub block: Vec<u8>,
}

/// Code a signal handler returns into (the C library's or the vDSO's call of `rt_sigreturn`),
/// as the bytes that identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigreturnCode {
    /// The instructions, at most 16 bytes, ending with the syscall instruction.
    pub bytes: &'static [u8],
    /// Offset of the syscall instruction in `bytes` (a thread may be stopped on it).
    pub syscall_at: usize,
}

/// Where the registers of the context a signal interrupted are saved, as offsets from the
/// stack pointer a signal handler returns with (on the trampoline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalFrame {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// The link register, where calls keep the return address in one.
    pub lr: Option<u64>,
}

/// How the C library saves a context on an instruction set (`setjmp`'s `jmp_buf`,
/// `getcontext`'s `ucontext_t`) and where a thread finds the secret saved pointers are
/// mangled with: what the coroutine check reads. Indices count 8-byte words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedContexts {
    /// The thread pointer among the `NT_PRSTATUS` words.
    pub thread_pointer_word: usize,
    /// Where the pointer guard is, from the thread pointer.
    pub pointer_guard_offset: u64,
    /// `jmp_buf`: its size, and the (mangled) frame pointer, stack pointer and pc.
    pub jmp_buf_words: usize,
    pub jmp_buf_fp: usize,
    pub jmp_buf_sp: usize,
    pub jmp_buf_pc: usize,
    /// `ucontext_t`: the frame pointer, stack pointer and pc (not mangled), the pointer to
    /// the floating-point state, and the offset of the state that pointer points to when the
    /// context was saved by `getcontext` (inside the structure itself).
    pub uc_fp: usize,
    pub uc_sp: usize,
    pub uc_pc: usize,
    pub uc_fpregs: usize,
    pub uc_fpregs_mem: u64,
    /// The left rotation of pointer mangling, after the exclusive or with the guard.
    pub mangle_rotation: u32,
}

impl SavedContexts {
    /// A saved pointer, mangling undone.
    pub fn demangle(&self, v: u64, guard: u64) -> u64 {
        v.rotate_right(self.mangle_rotation) ^ guard
    }

    /// A pointer as the C library saves it.
    pub fn mangle(&self, v: u64, guard: u64) -> u64 {
        (v ^ guard).rotate_left(self.mangle_rotation)
    }

    /// The bytes of a `jmp_buf` the check reads.
    pub fn jmp_buf_span(&self) -> u64 {
        self.jmp_buf_words as u64 * 8
    }

    /// The bytes of a `ucontext_t` the check reads (up to its floating-point state pointer).
    pub fn ucontext_span(&self) -> u64 {
        (self.uc_fpregs as u64 + 1) * 8
    }

    /// The most bytes of one saved context the check reads.
    pub fn span(&self) -> u64 {
        self.jmp_buf_span().max(self.ucontext_span())
    }
}

/// An instruction set.
pub trait Arch: Sync + Send + std::fmt::Debug + std::any::Any {
    /// Name as `uname -m` prints it.
    fn name(&self) -> &'static str;
    /// `e_machine` of ELF files for this architecture.
    fn e_machine(&self) -> u16;
    /// Bytes overwritten at the start of a replaced function (and saved in the undo area).
    fn hunk_size(&self) -> usize;
    /// Largest distance a hunk's jump (and a PC-relative data reference) can span.
    fn max_branch_distance(&self) -> u64;
    /// Encodes the jump written at `from` that lands on `to`; exactly `hunk_size()` bytes.
    fn encode_jump(&self, from: u64, to: u64) -> Result<Vec<u8>, ArchError>;
    /// The destination of a jump encoded by [`Arch::encode_jump`] at `from`, if `bytes` is one.
    fn decode_jump(&self, from: u64, bytes: &[u8]) -> Option<u64>;
    /// A jump-table entry that jumps to `target` from anywhere in the address space.
    fn jump_table_entry(&self, target: u64) -> [u8; JUMP_TABLE_ENTRY_SIZE];
    /// The system-call instruction, searched for in the target's executable memory.
    fn syscall_insn(&self) -> &'static [u8];
    /// Alignment the syscall instruction must have to be executed.
    fn insn_alignment(&self) -> u64;
    /// The software-breakpoint instruction.
    fn breakpoint_insn(&self) -> &'static [u8];
    /// How far past a breakpoint instruction the program counter is when its trap is reported.
    fn breakpoint_pc_advance(&self) -> u64;
    /// `si_code` of the `SIGTRAP` a breakpoint instruction raises.
    fn breakpoint_si_code(&self) -> i32;
    /// Whether `before`, the bytes that end just before an address (at most [`CALL_WINDOW`]),
    /// end with a call instruction: the address is then a return address.
    fn follows_call(&self, before: &[u8]) -> bool;
    /// Builds what the decoders build on first use (x86_64: iced-x86's tables, most of a
    /// millisecond), so that no first use falls inside a stop of the target.
    fn prepare_decoder(&self) {}
    /// Whether `bytes` are only the padding assemblers put between functions (never executed).
    fn is_padding(&self, bytes: &[u8]) -> bool;
    /// The signal trampolines of the C libraries and the vDSO.
    fn sigreturn_code(&self) -> &'static [SigreturnCode];
    /// Where a signal handler's return finds the interrupted context.
    fn signal_frame(&self) -> SignalFrame;
    /// The register set holding the syscall number the kernel restarts, when it is kept
    /// outside the general registers (aarch64's `NT_ARM_SYSTEM_CALL`).
    fn restart_regset(&self) -> Option<u32>;
    /// The floating-point/vector register sets, richest first.
    fn vector_regsets(&self) -> &'static [u32];
    /// Register layout of the `NT_PRSTATUS` register set.
    fn regs(&self) -> RegLayout;
    /// Syscall numbers.
    fn sys_mmap(&self) -> u64;
    fn sys_munmap(&self) -> u64;
    fn sys_mprotect(&self) -> u64;
    /// Numbers of `execve` and `execveat`: a thread that opens a file from one of them is
    /// executing it.
    fn sys_exec(&self) -> [u64; 2];
    /// A function that sends the calling thread signal `sig` (`tgkill(getpid(), gettid(),
    /// sig)`) and returns, touching only registers a call may clobber; and the offset in it of
    /// the return instruction, where the thread is when the signal stops it. Start-up patching
    /// redirects the dynamic loader's debugger hook to it: a stop that, unlike a breakpoint's
    /// trap, is harmless if nobody catches it (see docs/internals.md section 6).
    fn self_signal_function(&self, sig: u8) -> (Vec<u8>, usize);
    /// A shorter function for the same purpose that sends the signal to thread `tid` only
    /// (`tkill(tid, sig)`), short enough to take the place of the loader's hook itself (no page
    /// of its own); and the offset of its return instruction. `None` where no such short form
    /// exists.
    fn thread_signal_function(&self, tid: u32, sig: u8) -> Option<(Vec<u8>, usize)>;
    /// A function for the dynamic loader's debugger hook of a process the start-up service
    /// follows: when the 32-bit `r_state` at address `r_state` is not 0 (`RT_CONSISTENT`: the
    /// loader is about to add or remove objects) it opens the file whose NUL-terminated path
    /// is at `path` (`openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC)`), whose opening the service
    /// hears of (fanotify), closes it again if that succeeded, and returns. It touches only
    /// registers a call may clobber, and nothing else of the process.
    fn loader_watch_function(&self, r_state: u64, path: u64) -> Vec<u8>;
    fn sys_rt_tgsigqueueinfo(&self) -> u64;
    /// Whether syscall `nr` fails with `EINTR` when a ptrace stop interrupts it (rather than
    /// being restarted by the kernel), and may be called again with the same arguments.
    fn sys_eintr_on_stop(&self, nr: u64) -> bool;
    /// `futex`'s syscall number.
    fn sys_futex(&self) -> u64;
    /// Syscalls that only wait (sleeps, polls, signal and child waits, `accept`,
    /// `restart_syscall`), `futex` aside: a thread in one holds none of the C library's locks.
    fn waiting_syscalls(&self) -> &'static [u64];
    /// How the C library saves contexts here, where coroutines can be checked (x86_64 only
    /// for now).
    fn saved_contexts(&self) -> Option<&'static SavedContexts> {
        None
    }
    /// Name of a relocation type, for messages.
    fn reloc_name(&self, r_type: u32) -> &'static str;
    /// What resolving a relocation of this type needs, or an error if the type is unsupported.
    fn reloc_need(&self, r_type: u32) -> Result<RelocNeed, ArchError>;
    /// The addend an initial-exec TLS relocation needs once `kpatch_strip --rel-fixup` has
    /// replaced its addend with the original's GOT slot address (x86_64: -4, the distance from
    /// the displacement to the end of the instruction; aarch64: 0).
    fn tls_ie_addend(&self) -> i64;
    /// Applies `reloc` to `bytes`, which start at the relocation's place.
    fn apply_reloc(&self, reloc: &Reloc, bytes: &mut [u8]) -> Result<(), ArchError>;
    /// The arguments glibc's dynamic linker passes to an IFUNC resolver, given the process's
    /// `AT_HWCAP` and `AT_HWCAP2`.
    fn ifunc_call(&self, hwcap: u64, hwcap2: u64) -> IfuncCall;
    /// Rewrites the instruction in `code` whose relocated field (of type `r_type`, at offset
    /// `field` of `code`) reads a GOT slot, so that it uses the symbol's address directly
    /// (see [`DirectReference`]). `Ok(None)`: references of this type are not rewritten
    /// on this architecture (the default: they stay GOT-relative, resolved through a slot of
    /// the patch's jump table).
    fn make_got_reference_direct(
        &self,
        r_type: u32,
        code: &mut [u8],
        field: u64,
    ) -> Result<Option<DirectReference>, GotRewriteError> {
        let _ = (r_type, code, field);
        Ok(None)
    }
    /// The static TLS model a code relocation of type `r_type` uses in a linked executable or
    /// library, if it uses one.
    fn static_tls(&self, r_type: u32) -> Option<StaticTls>;
    /// The dynamic relocation that fills a GOT slot with a variable's thread-pointer offset,
    /// and its name.
    fn tls_offset_slot_reloc(&self) -> (u32, &'static str);
    /// The relocation type that stores a data pointer of `size` bytes (4 or 8), absolute or
    /// relative to its own place (`pcrel`), as unwind tables hold them; `None` for other sizes.
    fn pointer_reloc(&self, pcrel: bool, size: u8) -> Option<u32>;
    /// The type a relocation of type `r_type` becomes when calls reach imports through the
    /// patch's jump table rather than a PLT (x86_64 `PLT32` becomes `PC32`); by default
    /// `r_type` itself.
    fn without_plt(&self, r_type: u32) -> u32 {
        r_type
    }
}

/// The architecture of ELF files with this `e_machine`, if supported.
pub fn for_machine(e_machine: u16) -> Option<&'static dyn Arch> {
    ALL.iter().copied().find(|a| a.e_machine() == e_machine)
}

/// The architecture this program was built for.
pub fn host() -> &'static dyn Arch {
    ALL.iter()
        .copied()
        .find(|a| a.name() == std::env::consts::ARCH)
        .unwrap_or(&X86_64)
}

pub(crate) fn put<const N: usize>(
    arch: &'static str,
    name: &'static str,
    place: u64,
    bytes: &mut [u8],
    value: [u8; N],
) -> Result<(), ArchError> {
    let have = bytes.len();
    let dst = bytes.get_mut(..N).ok_or(ArchError::RelocationOutOfBounds {
        arch,
        name,
        place,
        need: N,
        have,
    })?;
    dst.copy_from_slice(&value);
    Ok(())
}

pub(crate) fn get<const N: usize>(
    arch: &'static str,
    name: &'static str,
    place: u64,
    bytes: &[u8],
) -> Result<[u8; N], ArchError> {
    let have = bytes.len();
    bytes
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(ArchError::RelocationOutOfBounds {
            arch,
            name,
            place,
            need: N,
            have,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_is_found_by_its_machine() {
        for a in ALL {
            assert_eq!(for_machine(a.e_machine()).map(|b| b.name()), Some(a.name()));
        }
        assert!(for_machine(3).is_none(), "EM_386");
        assert_eq!(host().name(), std::env::consts::ARCH);
    }

    #[test]
    fn pointer_relocations_store_the_pointer_the_runtime_computes() {
        for a in ALL {
            for (pcrel, size) in [(true, 4), (true, 8), (false, 4), (false, 8)] {
                let r_type = a.pointer_reloc(pcrel, size).unwrap();
                assert_eq!(a.reloc_need(r_type), Ok(RelocNeed::Address), "{}", a.name());
                let reloc = Reloc {
                    r_type,
                    place: 0x1000,
                    symbol: 0x2000,
                    got_slot: None,
                    addend: 0x10,
                };
                let mut bytes = [0u8; 8];
                a.apply_reloc(&reloc, &mut bytes).unwrap();
                let want: u64 = if pcrel { 0x1010 } else { 0x2010 };
                assert_eq!(
                    &bytes[..usize::from(size)],
                    &want.to_le_bytes()[..usize::from(size)],
                    "{} {}",
                    a.name(),
                    a.reloc_name(r_type)
                );
            }
            assert_eq!(a.pointer_reloc(true, 2), None);
        }
    }

    #[test]
    fn sigreturn_code_ends_with_the_syscall_instruction() {
        for a in ALL {
            assert!(!a.sigreturn_code().is_empty());
            for c in a.sigreturn_code() {
                assert!(c.bytes.len() <= 16, "{}: read as two words", a.name());
                assert_eq!(&c.bytes[c.syscall_at..], a.syscall_insn(), "{}", a.name());
            }
        }
    }
}
