//! A live process seen from outside, for the patch engine: its identity and architecture, its
//! mappings and the free space between them, its memory (read and written while it runs), and
//! its threads: stopped all at once (or one at a time), their registers read and written, and
//! syscalls and function calls run inside them without modifying any code.
//!
//! Everything architecture-specific comes from [`kpatch_arch::Arch`] (register layout, syscall
//! instruction and numbers); registers travel as `NT_PRSTATUS` word vectors, so the same code
//! serves x86_64 and aarch64.
//!
//! This is the only crate of the workspace that uses `unsafe` (ptrace, fork, siginfo, shared
//! memory and register buffers), each block with a `// SAFETY:` line.
//!
//! Modules, each using only those before it: `ptrace` (the raw requests and `waitpid`),
//! `procfs`, `maps`, `auxv`, `region`, `process` (a process opened: identity, maps, memory),
//! `tracee` (what we know of a seized thread), `park` (a held thread's stop made harmless),
//! `regs` (its registers), `restart` (undoing the `EINTR` our stop causes), `thread`
//! ([`ThreadHandle`]), then what a stopped thread can run, each an `impl ThreadHandle`:
//! `inject` (saving and restoring around injected code), `syscall`, `call`, `signals`
//! (re-queueing the signals it swallowed); `held` ([`HeldThread`], one thread the caller holds
//! across exec and the dynamic loader); `stop` (stopping and releasing threads:
//! [`StoppedProcess`], [`StoppedThread`]), `run` (letting some run to a return point) and
//! `guardian` (undoing writes if the tool dies).

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod auxv;
mod call;
mod defer;
mod error;
mod guardian;
mod held;
mod inherited_fd;
mod inject;
mod maps;
mod memory;
mod park;
mod process;
mod procfs;
mod ptrace;
mod region;
mod regs;
mod restart;
mod run;
mod seccomp;
mod signals;
mod stop;
mod syscall;
mod syscall_insn;
mod thread;
mod tracee;
mod written;

pub use auxv::{Auxv, AT_BASE, AT_ENTRY, AT_HWCAP, AT_HWCAP2, AT_PAGESZ, AT_PHDR, AT_SYSINFO_EHDR};
pub use call::{CALL_RETURN_ADDRESS, RED_ZONE};
pub use defer::DeferTermination;
pub use error::{Error, Result};
pub use guardian::{Guardian, GuardianForker, GUARDIAN_CAPACITY};
pub use held::{blocked_signals, blocked_syscall, BlockedSyscall, HeldEvent, HeldThread};
pub use inherited_fd::adopt_inherited_fd;
pub use maps::{parse_maps, MapEntry, MapName, MapsParseError, Perms};
pub use memory::Memory;
pub use process::{open_mapped_file, Process};
pub use region::{find_region, user_space_end, SpaceLimits, MIN_STACK_RESERVE, STACK_GUARD_GAP};
pub use run::{ReturnPoint, RunReport};
pub use seccomp::{
    Action as SeccompAction, Filter as SeccompFilter, Insn as BpfInsn, SeccompData, SeccompState,
};
pub use stop::{StoppedProcess, StoppedThread};
pub use syscall::SYSCALL_TIMEOUT;
pub use thread::ThreadHandle;
pub use written::WriteWatch;
