//! What a thread's seccomp filter would do with a syscall before we inject it.
//!
//! A hardened service may run under a seccomp filter (systemd's `SystemCallFilter=`,
//! `MemoryDenyWriteExecute=`, a sandbox of its own) whose answer to an unexpected syscall is to
//! kill the process, raise `SIGSYS`, or fail it. An injected syscall meets the same filter as
//! the thread's own, so every one is checked first: the thread's mode comes from
//! `/proc/PID/task/TID/status` (`Seccomp:`), its filters (classic BPF, most recent first) from
//! `PTRACE_SECCOMP_GET_FILTER` while we hold it stopped, and they are run here, on the exact
//! `seccomp_data` the kernel would build (number, audit architecture, the borrowed syscall
//! instruction's address, the arguments). The kernel runs every filter and takes the action of
//! highest precedence; so do we. Only `ALLOW` and `LOG` let a syscall through; anything the
//! filters do not let through is reported, never tried.

use std::ffi::c_void;
use std::fmt;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::thread::ThreadHandle;

/// `PTRACE_SECCOMP_GET_FILTER`.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `sizeof(struct seccomp_data)`.
const DATA_LEN: u32 = 64;

/// `AUDIT_ARCH_*` of an ELF machine, as filters compare `seccomp_data.arch`.
fn audit_arch(e_machine: u16) -> u32 {
    const LE64: u32 = 0x8000_0000 | 0x4000_0000;
    LE64 | u32::from(e_machine)
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

impl Insn {
    fn from_bytes(b: &[u8; 8]) -> Insn {
        Insn {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// What the kernel hands a filter (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: u64,
    /// `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Address of the syscall instruction.
    pub ip: u64,
    /// Arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    /// The 32-bit word at byte `off` (little-endian layout of x86_64 and aarch64).
    fn word(&self, off: u32) -> Option<u32> {
        if !off.is_multiple_of(4) || off >= DATA_LEN {
            return None;
        }
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        Some(match off {
            0 => self.nr as u32,
            4 => self.arch,
            8 => lo(self.ip),
            12 => hi(self.ip),
            _ => {
                let i = ((off - 16) / 8) as usize;
                if (off - 16).is_multiple_of(8) {
                    lo(self.args[i])
                } else {
                    hi(self.args[i])
                }
            }
        })
    }
}

/// A filter's answer (the action part of its return value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `SECCOMP_RET_KILL_PROCESS`.
    KillProcess,
    /// `SECCOMP_RET_KILL_THREAD`.
    KillThread,
    /// `SECCOMP_RET_TRAP`: `SIGSYS`.
    Trap,
    /// `SECCOMP_RET_ERRNO` with this errno.
    Errno(u16),
    /// `SECCOMP_RET_USER_NOTIF`: a supervisor process decides.
    UserNotif,
    /// `SECCOMP_RET_TRACE`: a tracer decides (without one asking for it, `ENOSYS`).
    Trace,
    /// `SECCOMP_RET_LOG`: allowed and logged.
    Log,
    /// `SECCOMP_RET_ALLOW`.
    Allow,
}

impl Action {
    fn from_ret(ret: u32) -> Action {
        match ret & 0xffff_0000 {
            0x8000_0000 => Action::KillProcess,
            0x0000_0000 => Action::KillThread,
            0x0003_0000 => Action::Trap,
            0x0005_0000 => Action::Errno((ret & 0xffff) as u16),
            0x7fc0_0000 => Action::UserNotif,
            0x7ff0_0000 => Action::Trace,
            0x7ffc_0000 => Action::Log,
            0x7fff_0000 => Action::Allow,
            // The kernel treats an unknown action as killing the process.
            _ => Action::KillProcess,
        }
    }

    /// Precedence as the kernel orders actions: lower wins.
    fn rank(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::UserNotif => 4,
            Action::Trace => 5,
            Action::Log => 6,
            Action::Allow => 7,
        }
    }

    /// Whether the syscall runs.
    pub fn allows(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::KillProcess => write!(f, "kill the process (SECCOMP_RET_KILL_PROCESS)"),
            Action::KillThread => write!(f, "kill the thread (SECCOMP_RET_KILL_THREAD)"),
            Action::Trap => write!(f, "send it SIGSYS (SECCOMP_RET_TRAP)"),
            Action::Errno(e) => write!(
                f,
                "fail it with {} (SECCOMP_RET_ERRNO)",
                Errno::from_raw(i32::from(*e))
            ),
            Action::UserNotif => write!(f, "hand it to a supervisor (SECCOMP_RET_USER_NOTIF)"),
            Action::Trace => write!(f, "hand it to a seccomp tracer (SECCOMP_RET_TRACE)"),
            Action::Log => write!(f, "log it (SECCOMP_RET_LOG)"),
            Action::Allow => write!(f, "allow it"),
        }
    }
}

/// A filter program that the kernel accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(pub Vec<Insn>);

impl Filter {
    /// Reads a filter from its raw `struct sock_filter` array.
    pub fn from_bytes(raw: &[u8]) -> Filter {
        Filter(
            raw.chunks_exact(8)
                .filter_map(|c| <&[u8; 8]>::try_from(c).ok())
                .map(Insn::from_bytes)
                .collect(),
        )
    }

    /// Runs the filter on `data` and returns its raw return value. The kernel only loads
    /// programs that end in a return and jump forward, so this always ends; anything it would
    /// have rejected (an out-of-range load, a jump past the end) counts as killing the process.
    pub fn run(&self, data: &SeccompData) -> u32 {
        const KILL: u32 = 0x8000_0000;
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; 16];
        let mut pc = 0usize;
        while let Some(i) = self.0.get(pc) {
            pc += 1;
            let src = if i.code & 0x08 != 0 { x } else { i.k };
            match i.code & 0x07 {
                // BPF_LD
                0x00 => {
                    a = match i.code & 0xe0 {
                        0x00 => i.k, // IMM
                        0x20 => match data.word(i.k) {
                            // ABS
                            Some(w) if i.code & 0x18 == 0 => w,
                            _ => return KILL,
                        },
                        0x60 => match mem.get(i.k as usize) {
                            // MEM
                            Some(&m) => m,
                            None => return KILL,
                        },
                        0x80 => DATA_LEN, // LEN
                        _ => return KILL,
                    }
                }
                // BPF_LDX
                0x01 => {
                    x = match i.code & 0xe0 {
                        0x00 => i.k,
                        0x60 => match mem.get(i.k as usize) {
                            Some(&m) => m,
                            None => return KILL,
                        },
                        0x80 => DATA_LEN,
                        _ => return KILL,
                    }
                }
                // BPF_ST, BPF_STX
                0x02 | 0x03 => {
                    let v = if i.code & 0x07 == 0x02 { a } else { x };
                    match mem.get_mut(i.k as usize) {
                        Some(m) => *m = v,
                        None => return KILL,
                    }
                }
                // BPF_ALU
                0x04 => {
                    a = match i.code & 0xf0 {
                        0x00 => a.wrapping_add(src),
                        0x10 => a.wrapping_sub(src),
                        0x20 => a.wrapping_mul(src),
                        0x30 => match a.checked_div(src) {
                            Some(v) => v,
                            None => return 0,
                        },
                        0x40 => a | src,
                        0x50 => a & src,
                        0x60 => a.checked_shl(src).unwrap_or(0),
                        0x70 => a.checked_shr(src).unwrap_or(0),
                        0x80 => a.wrapping_neg(),
                        0x90 => match a.checked_rem(src) {
                            Some(v) => v,
                            None => return 0,
                        },
                        0xa0 => a ^ src,
                        _ => return KILL,
                    }
                }
                // BPF_JMP
                0x05 => {
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc = pc.saturating_add(i.k as usize);
                            continue;
                        }
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        _ => return KILL,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                // BPF_RET
                0x06 => {
                    return match i.code & 0x18 {
                        0x00 => i.k,
                        0x10 => a,
                        _ => KILL,
                    }
                }
                // BPF_MISC: TAX, TXA
                _ => {
                    if i.code & 0xf8 == 0 {
                        x = a;
                    } else {
                        a = x;
                    }
                }
            }
        }
        KILL
    }
}

/// How a thread is confined (`Seccomp:` in its status file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompState {
    /// No seccomp.
    Off,
    /// Strict mode: only `read`, `write`, `exit` and `sigreturn`.
    Strict,
    /// Filters, most recent first.
    Filters(Vec<Filter>),
}

impl SeccompState {
    /// The action taken on `data`: the highest-precedence answer of all filters.
    pub fn action(&self, data: &SeccompData) -> Action {
        match self {
            SeccompState::Off => Action::Allow,
            // Anything else than read/write/exit/sigreturn is killed; we inject none of those.
            SeccompState::Strict => Action::KillThread,
            SeccompState::Filters(fs) => fs
                .iter()
                .map(|f| Action::from_ret(f.run(data)))
                .min_by_key(|a| a.rank())
                .unwrap_or(Action::Allow),
        }
    }

    /// What the confinement is, for messages.
    pub fn describe(&self) -> String {
        match self {
            SeccompState::Off => "no seccomp filter".into(),
            SeccompState::Strict => "seccomp strict mode".into(),
            SeccompState::Filters(fs) => format!(
                "a seccomp filter ({} program(s), {} instructions)",
                fs.len(),
                fs.iter().map(|f| f.0.len()).sum::<usize>()
            ),
        }
    }
}

/// `(mode, number of filters)` from a status file's `Seccomp:` and `Seccomp_filters:` lines.
pub(crate) fn parse_status(text: &str) -> (u32, usize) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    (
        field("Seccomp:").unwrap_or(0) as u32,
        field("Seccomp_filters:").unwrap_or(0),
    )
}

impl ThreadHandle<'_> {
    /// The thread's seccomp confinement, read now (the thread is stopped by us, as
    /// `PTRACE_SECCOMP_GET_FILTER` needs). A filter that cannot be read is an error: nothing
    /// may then be injected.
    pub fn seccomp(&self) -> Result<SeccompState> {
        let path = format!("/proc/{}/task/{}/status", self.pid(), self.tid());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::proc(std::path::PathBuf::from(&path), e))?;
        match parse_status(&text) {
            (0, _) => Ok(SeccompState::Off),
            (1, _) => Ok(SeccompState::Strict),
            (_, n) => {
                let mut filters = Vec::new();
                for index in 0..n.max(1) {
                    match self.filter(index)? {
                        Some(f) => filters.push(f),
                        None => break,
                    }
                }
                Ok(SeccompState::Filters(filters))
            }
        }
    }

    /// Filter `index` (0: the most recent), `None` past the last.
    fn filter(&self, index: usize) -> Result<Option<Filter>> {
        let tid = self.tid();
        let get = |buf: usize| -> std::result::Result<libc::c_long, Errno> {
            Errno::clear();
            // SAFETY: with a null buffer the kernel only returns the instruction count; with a
            // buffer, it writes at most that many 8-byte instructions into it, and the caller
            // sizes it for the count it was given.
            let r = unsafe {
                libc::ptrace(
                    PTRACE_SECCOMP_GET_FILTER,
                    tid,
                    index as *mut c_void,
                    buf as *mut c_void,
                )
            };
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(r)
            }
        };
        let unreadable = |errno: Errno| Error::SeccompUnreadable {
            pid: self.pid(),
            tid,
            errno,
        };
        let count = match get(0) {
            Ok(n) => n as usize,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        };
        let mut raw = vec![0u8; count * 8];
        let got = get(raw.as_mut_ptr() as usize).map_err(unreadable)? as usize;
        raw.truncate(got.min(count) * 8);
        Ok(Some(Filter::from_bytes(&raw)))
    }

    /// What the thread's filters do with syscall `nr(args)` run from the syscall instruction we
    /// borrow.
    pub fn seccomp_action(&self, nr: u64, args: &[u64]) -> Result<Action> {
        let state = self.seccomp()?;
        if state == SeccompState::Off {
            return Ok(Action::Allow);
        }
        Ok(state.action(&self.seccomp_data(nr, args)?))
    }

    fn seccomp_data(&self, nr: u64, args: &[u64]) -> Result<SeccompData> {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        Ok(SeccompData {
            nr,
            arch: audit_arch(self.process.arch().e_machine()),
            ip: self.process.syscall_instruction()?,
            args: a,
        })
    }

    /// Refuses, before anything is done, a syscall the thread's seccomp filter would not let
    /// through.
    pub(crate) fn check_seccomp(&self, name: &str, nr: u64, args: &[u64]) -> Result<()> {
        let state = self.seccomp()?;
        if state == SeccompState::Off {
            return Ok(());
        }
        let action = state.action(&self.seccomp_data(nr, args)?);
        if action.allows() {
            return Ok(());
        }
        Err(Error::SeccompRefuses {
            pid: self.pid(),
            tid: self.tid(),
            syscall: name.to_owned(),
            filter: state.describe(),
            action: action.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Opcodes, as <linux/filter.h> builds them.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const X86_64: u32 = 0xc000_003e;

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    fn data(nr: u64, args: &[u64]) -> SeccompData {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        SeccompData {
            nr,
            arch: X86_64,
            ip: 0x7fff_0000_1000,
            args: a,
        }
    }

    /// systemd's shape: check the architecture, then kill mmap (9) and mprotect (10) when
    /// their protection (argument 2) has PROT_EXEC (4).
    fn deny_exec() -> Filter {
        Filter(vec![
            ins(LD_W_ABS, 0, 0, 4),
            ins(JEQ_K, 1, 0, X86_64),
            ins(RET_K, 0, 0, KILL_PROCESS),
            ins(LD_W_ABS, 0, 0, 0),
            ins(JEQ_K, 1, 0, 9),
            ins(JEQ_K, 0, 3, 10),
            ins(LD_W_ABS, 0, 0, 32),
            ins(JSET_K, 0, 1, 4),
            ins(RET_K, 0, 0, KILL_PROCESS),
            ins(RET_K, 0, 0, ALLOW),
        ])
    }

    #[test]
    fn runs_a_filter_on_number_architecture_and_arguments() {
        let f = deny_exec();
        assert_eq!(f.run(&data(9, &[0, 4096, 3])), ALLOW);
        assert_eq!(f.run(&data(9, &[0, 4096, 5])), KILL_PROCESS);
        assert_eq!(f.run(&data(10, &[0, 4096, 4])), KILL_PROCESS);
        assert_eq!(f.run(&data(11, &[0, 4096, 4])), ALLOW);
        let mut other = data(9, &[0, 0, 3]);
        other.arch = 0xc000_00b7;
        assert_eq!(f.run(&other), KILL_PROCESS);
        // The high half of an argument is its own word.
        let hi = Filter(vec![
            ins(LD_W_ABS, 0, 0, 36),
            ins(JEQ_K, 0, 1, 1),
            ins(RET_K, 0, 0, 0x0005_0001),
            ins(RET_K, 0, 0, ALLOW),
        ]);
        assert_eq!(hi.run(&data(0, &[0, 0, 1 << 32])), 0x0005_0001);
        assert_eq!(hi.run(&data(0, &[0, 0, 1])), ALLOW);
    }

    #[test]
    fn the_strictest_filter_wins_and_malformed_programs_kill() {
        let errno = Filter(vec![ins(RET_K, 0, 0, 0x0005_000d)]);
        let allow = Filter(vec![ins(RET_K, 0, 0, ALLOW)]);
        let s = SeccompState::Filters(vec![allow.clone(), errno.clone()]);
        assert_eq!(s.action(&data(9, &[])), Action::Errno(13));
        let s = SeccompState::Filters(vec![errno, deny_exec()]);
        assert_eq!(s.action(&data(9, &[0, 0, 7])), Action::KillProcess);
        assert_eq!(
            SeccompState::Filters(vec![allow]).action(&data(9, &[])),
            Action::Allow
        );
        assert_eq!(
            SeccompState::Strict.action(&data(9, &[])),
            Action::KillThread
        );
        // A load past seccomp_data, and a program that falls off its end.
        let bad = Filter(vec![ins(LD_W_ABS, 0, 0, 64), ins(RET_K, 0, 0, ALLOW)]);
        assert_eq!(bad.run(&data(0, &[])), KILL_PROCESS);
        assert_eq!(Filter(vec![]).run(&data(0, &[])), KILL_PROCESS);
        assert!(Action::Log.allows() && !Action::Trace.allows());
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\nSpeculation_Store_Bypass:\tx\n";
        assert_eq!(parse_status(t), (2, 3));
        assert_eq!(parse_status("Name:\tx\n"), (0, 0));
        assert_eq!(
            Filter::from_bytes(&[0x06, 0, 0, 0, 0, 0, 0xff, 0x7f, 1])
                .0
                .len(),
            1
        );
        assert_eq!(audit_arch(62), X86_64);
    }
}
