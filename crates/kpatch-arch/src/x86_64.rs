//! x86_64: `jmp rel32` hunks, `jmp *(%rip)` jump-table entries, `syscall`, `int3`.

use iced_x86::{Decoder, DecoderOptions};

use crate::{
    get, put, Arch, ArchError, DirectReference, GotRewriteError, IfuncCall, RegLayout, Reloc,
    RelocNeed, SavedContexts, SignalFrame, SigreturnCode, StaticTls, JUMP_TABLE_ENTRY_SIZE,
    NT_PRFPREG,
};

const NAME: &str = "x86_64";

pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_GOT32: u32 = 3;
pub const R_X86_64_PLT32: u32 = 4;
pub const R_X86_64_GOTPCREL: u32 = 9;
pub const R_X86_64_32: u32 = 10;
pub const R_X86_64_32S: u32 = 11;
pub const R_X86_64_DTPMOD64: u32 = 16;
pub const R_X86_64_DTPOFF64: u32 = 17;
pub const R_X86_64_TPOFF64: u32 = 18;
pub const R_X86_64_TLSGD: u32 = 19;
pub const R_X86_64_TLSLD: u32 = 20;
pub const R_X86_64_DTPOFF32: u32 = 21;
pub const R_X86_64_GOTTPOFF: u32 = 22;
pub const R_X86_64_TPOFF32: u32 = 23;
pub const R_X86_64_PC64: u32 = 24;
pub const R_X86_64_GOTPCRELX: u32 = 41;
pub const R_X86_64_REX_GOTPCRELX: u32 = 42;

/// `NT_X86_XSTATE`: the full x86 extended state (x87, SSE, AVX, AVX-512, ...).
pub const NT_X86_XSTATE: u32 = 0x202;
/// `si_code` of the trap `int3` raises (`SI_KERNEL`).
const SI_KERNEL: i32 = 0x80;

/// glibc's `__restore_rt` (`mov $15,%rax; syscall`) and musl's (`mov $15,%eax; syscall`).
const SIGRETURN: &[SigreturnCode] = &[
    SigreturnCode {
        bytes: &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
        syscall_at: 7,
    },
    SigreturnCode {
        bytes: &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
        syscall_at: 5,
    },
];

/// The x86_64 instruction set.
#[derive(Debug, Clone, Copy, Default)]
pub struct X86_64;

/// Whether `before` ends with a near call (direct, or through a register or memory): a suffix
/// of it decodes as a call that ends exactly at its end.
fn follows_call(before: &[u8]) -> bool {
    let tail = &before[before.len().saturating_sub(crate::CALL_WINDOW)..];
    let is_call = |len: usize| {
        let insn = Decoder::new(64, &tail[tail.len() - len..], DecoderOptions::NONE).decode();
        !insn.is_invalid()
            && insn.len() == len
            && (insn.is_call_near() || insn.is_call_near_indirect())
    };
    // Every near call is `e8 rel32` (the most common, tried first) or has the opcode `ff`:
    // most words are rejected without decoding.
    if tail.len() >= 5 && tail[tail.len() - 5] == 0xe8 && is_call(5) {
        return true;
    }
    tail.contains(&0xff) && (2..=tail.len()).any(is_call)
}

/// Whether `bytes` consist only of the no-operation instructions assemblers and linkers pad
/// code with, or `int3`.
fn is_padding(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match nop_len(bytes) {
            Some(n) => bytes = &bytes[n..],
            None => return false,
        }
    }
    true
}

/// Length of the padding instruction at the start of `b`.
fn nop_len(b: &[u8]) -> Option<usize> {
    match b.first()? {
        0x90 | 0xcc => return Some(1),
        _ => {}
    }
    let prefixes = b.iter().take_while(|&&x| x == 0x66).count();
    let mut rest = &b[prefixes..];
    if prefixes > 0 && rest.first() == Some(&0x90) {
        return Some(prefixes + 1);
    }
    let cs = usize::from(rest.first() == Some(&0x2e));
    rest = &rest[cs..];
    let body: &[&[u8]] = &[
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    body.iter()
        .find(|form| rest.starts_with(form))
        .map(|form| prefixes + cs + form.len())
}

fn fits_i32(v: i128) -> bool {
    v >= i32::MIN as i128 && v <= i32::MAX as i128
}

impl X86_64 {
    fn pc32(
        &self,
        name: &'static str,
        r: &Reloc,
        target: u64,
        bytes: &mut [u8],
    ) -> Result<(), ArchError> {
        let v = target as i128 + r.addend as i128 - r.place as i128;
        if !fits_i32(v) {
            return Err(ArchError::RelocationOverflow {
                arch: NAME,
                name,
                place: r.place,
                value: v,
            });
        }
        put(NAME, name, r.place, bytes, (v as i32).to_le_bytes())
    }

    fn slot(&self, name: &'static str, r: &Reloc) -> Result<u64, ArchError> {
        // A missing slot is a planner bug, reported as an overflow of value 0 would be
        // misleading; name the relocation instead.
        r.got_slot.ok_or(ArchError::UnexpectedInstruction {
            arch: NAME,
            name,
            place: r.place,
        })
    }
}

/// glibc's saved contexts on x86_64: `fs_base` is word 21 of `user_regs_struct`, the guard
/// is at `%fs:0x30`; a `jmp_buf` holds rbx, rbp, r12-r15, rsp, pc (the last three mangled);
/// a `ucontext_t` has `uc_mcontext.gregs` at 40 (REG_RBP 10, REG_RSP 15, REG_RIP 16),
/// `uc_mcontext.fpregs` at 224 and `__fpregs_mem` at 424.
static GLIBC_CONTEXTS: SavedContexts = SavedContexts {
    thread_pointer_word: 21,
    pointer_guard_offset: 0x30,
    jmp_buf_words: 8,
    jmp_buf_fp: 1,
    jmp_buf_sp: 6,
    jmp_buf_pc: 7,
    uc_fp: (40 + 10 * 8) / 8,
    uc_sp: (40 + 15 * 8) / 8,
    uc_pc: (40 + 16 * 8) / 8,
    uc_fpregs: 224 / 8,
    uc_fpregs_mem: 424,
    mangle_rotation: 0x11,
};

impl Arch for X86_64 {
    fn name(&self) -> &'static str {
        NAME
    }
    fn e_machine(&self) -> u16 {
        crate::EM_X86_64
    }
    fn hunk_size(&self) -> usize {
        5
    }
    fn max_branch_distance(&self) -> u64 {
        // rel32 reaches +-2 GiB; keep a page of margin for the instruction length.
        (1u64 << 31) - 4096
    }
    fn encode_jump(&self, from: u64, to: u64) -> Result<Vec<u8>, ArchError> {
        let rel = to as i128 - (from as i128 + 5);
        if !fits_i32(rel) {
            return Err(ArchError::JumpOutOfRange {
                arch: NAME,
                from,
                to,
                limit: 1 << 31,
            });
        }
        let mut v = vec![0xe9];
        v.extend_from_slice(&(rel as i32).to_le_bytes());
        Ok(v)
    }
    fn decode_jump(&self, from: u64, bytes: &[u8]) -> Option<u64> {
        if bytes.len() < 5 || bytes[0] != 0xe9 {
            return None;
        }
        let rel = i32::from_le_bytes(bytes[1..5].try_into().ok()?);
        Some((from as i64).wrapping_add(5).wrapping_add(rel as i64) as u64)
    }
    fn jump_table_entry(&self, target: u64) -> [u8; JUMP_TABLE_ENTRY_SIZE] {
        // jmp *2(%rip); two nops; the 8-byte target.
        let mut e = [0u8; JUMP_TABLE_ENTRY_SIZE];
        e[..8].copy_from_slice(&[0xff, 0x25, 0x02, 0x00, 0x00, 0x00, 0x90, 0x90]);
        e[8..].copy_from_slice(&target.to_le_bytes());
        e
    }
    fn syscall_insn(&self) -> &'static [u8] {
        &[0x0f, 0x05]
    }
    fn insn_alignment(&self) -> u64 {
        1
    }
    fn breakpoint_insn(&self) -> &'static [u8] {
        &[0xcc]
    }
    fn breakpoint_pc_advance(&self) -> u64 {
        1
    }
    fn breakpoint_si_code(&self) -> i32 {
        SI_KERNEL
    }
    fn follows_call(&self, before: &[u8]) -> bool {
        follows_call(before)
    }
    fn prepare_decoder(&self) {
        let _ = Decoder::new(64, &[0x90], DecoderOptions::NONE).decode();
    }
    fn is_padding(&self, bytes: &[u8]) -> bool {
        is_padding(bytes)
    }
    fn sigreturn_code(&self) -> &'static [SigreturnCode] {
        SIGRETURN
    }
    fn signal_frame(&self) -> SignalFrame {
        // The trampoline's address was popped: the stack pointer is on the ucontext, whose
        // uc_mcontext (at 40) holds rbp as word 10, rsp as 15, rip as 16.
        SignalFrame {
            pc: 40 + 16 * 8,
            sp: 40 + 15 * 8,
            fp: 40 + 10 * 8,
            lr: None,
        }
    }
    fn restart_regset(&self) -> Option<u32> {
        None
    }
    fn vector_regsets(&self) -> &'static [u32] {
        &[NT_X86_XSTATE, NT_PRFPREG]
    }
    fn regs(&self) -> RegLayout {
        // struct user_regs_struct: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi
        // orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs
        RegLayout {
            words: 27,
            pc: 16,
            sp: 19,
            syscall_nr: 10,
            syscall_args: [14, 13, 12, 7, 9, 8],
            call_args: [14, 13, 12, 11, 9, 8],
            ret: 10,
            orig_syscall: Some(15),
            fp: 4,
            link: None,
        }
    }
    fn sys_mmap(&self) -> u64 {
        9
    }
    fn sys_munmap(&self) -> u64 {
        11
    }
    fn sys_mprotect(&self) -> u64 {
        10
    }
    fn sys_exec(&self) -> [u64; 2] {
        [59, 322]
    }
    fn self_signal_function(&self, sig: u8) -> (Vec<u8>, usize) {
        let code = vec![
            0xb8, 39, 0, 0, 0, // mov $SYS_getpid, %eax
            0x0f, 0x05, // syscall
            0x89, 0xc7, // mov %eax, %edi
            0xb8, 186, 0, 0, 0, // mov $SYS_gettid, %eax
            0x0f, 0x05, // syscall
            0x89, 0xc6, // mov %eax, %esi
            0xba, sig, 0, 0, 0, // mov $sig, %edx
            0xb8, 234, 0, 0, 0, // mov $SYS_tgkill, %eax
            0x0f, 0x05, // syscall
            0xc3, // ret
        ];
        let ret = code.len() - 1;
        (code, ret)
    }
    fn thread_signal_function(&self, tid: u32, sig: u8) -> Option<(Vec<u8>, usize)> {
        if sig >= 0x80 {
            return None;
        }
        let mut code = vec![0xbf]; // mov $tid, %edi
        code.extend_from_slice(&tid.to_le_bytes());
        code.extend_from_slice(&[
            0x6a, sig, 0x5e, // push $sig; pop %rsi
            0x31, 0xc0, // xor %eax, %eax
            0xb0, 200, // mov $SYS_tkill, %al
            0x0f, 0x05, // syscall
            0xc3, // ret
        ]);
        let ret = code.len() - 1;
        Some((code, ret))
    }
    fn loader_watch_function(&self, r_state: u64, path: u64) -> Vec<u8> {
        let mut code = vec![0x48, 0xb8]; // movabs $r_state, %rax
        code.extend_from_slice(&r_state.to_le_bytes());
        code.extend_from_slice(&[
            0x83, 0x38, 0x00, // cmpl $0, (%rax)
            0x74, 40, // je ret
            0xbf, 0x9c, 0xff, 0xff, 0xff, // mov $AT_FDCWD, %edi
            0x48, 0xbe, // movabs $path, %rsi
        ]);
        code.extend_from_slice(&path.to_le_bytes());
        code.extend_from_slice(&[
            0xba, 0x00, 0x00, 0x08, 0x00, // mov $(O_RDONLY | O_CLOEXEC), %edx
            0xb8, 0x01, 0x01, 0x00, 0x00, // mov $SYS_openat, %eax
            0x0f, 0x05, // syscall
            0x85, 0xc0, // test %eax, %eax
            0x78, 9, // js ret
            0x89, 0xc7, // mov %eax, %edi
            0xb8, 0x03, 0x00, 0x00, 0x00, // mov $SYS_close, %eax
            0x0f, 0x05, // syscall
            0xc3, // ret
        ]);
        code
    }
    fn sys_rt_tgsigqueueinfo(&self) -> u64 {
        297
    }
    fn sys_eintr_on_stop(&self, nr: u64) -> bool {
        // epoll_wait, epoll_pwait, epoll_pwait2, semop, semtimedop, io_getevents,
        // io_pgetevents, rt_sigtimedwait
        matches!(nr, 232 | 281 | 441 | 65 | 220 | 208 | 333 | 128)
    }
    fn sys_futex(&self) -> u64 {
        202
    }
    fn waiting_syscalls(&self) -> &'static [u64] {
        // nanosleep, clock_nanosleep, pause, rt_sigsuspend, rt_sigtimedwait, select,
        // pselect6, poll, ppoll, epoll_wait, epoll_pwait, epoll_pwait2, wait4, waitid,
        // accept, accept4, restart_syscall
        &[
            35, 230, 34, 130, 128, 23, 270, 7, 271, 232, 281, 441, 61, 247, 43, 288, 219,
        ]
    }
    fn saved_contexts(&self) -> Option<&'static SavedContexts> {
        Some(&GLIBC_CONTEXTS)
    }
    fn reloc_name(&self, r_type: u32) -> &'static str {
        match r_type {
            R_X86_64_NONE => "R_X86_64_NONE",
            R_X86_64_64 => "R_X86_64_64",
            R_X86_64_PC32 => "R_X86_64_PC32",
            R_X86_64_GOT32 => "R_X86_64_GOT32",
            R_X86_64_PLT32 => "R_X86_64_PLT32",
            R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
            R_X86_64_32 => "R_X86_64_32",
            R_X86_64_32S => "R_X86_64_32S",
            R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
            R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
            R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
            R_X86_64_TLSGD => "R_X86_64_TLSGD",
            R_X86_64_TLSLD => "R_X86_64_TLSLD",
            R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32",
            R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF",
            R_X86_64_TPOFF32 => "R_X86_64_TPOFF32",
            R_X86_64_PC64 => "R_X86_64_PC64",
            R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
            R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
            _ => "unknown x86_64 relocation",
        }
    }
    fn reloc_need(&self, r_type: u32) -> Result<RelocNeed, ArchError> {
        Ok(match r_type {
            R_X86_64_NONE | R_X86_64_64 | R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32
            | R_X86_64_32S | R_X86_64_PC64 => RelocNeed::Address,
            R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX => RelocNeed::GotSlot,
            R_X86_64_GOTTPOFF => RelocNeed::TlsGotSlot,
            R_X86_64_TPOFF32 | R_X86_64_TPOFF64 => RelocNeed::TlsOffset,
            _ => return Err(ArchError::UnsupportedRelocation { arch: NAME, r_type }),
        })
    }
    fn tls_ie_addend(&self) -> i64 {
        -4
    }
    fn apply_reloc(&self, r: &Reloc, bytes: &mut [u8]) -> Result<(), ArchError> {
        let name = self.reloc_name(r.r_type);
        // Thread-pointer offsets are negative on x86_64 (variant II TLS).
        let s = if matches!(r.r_type, R_X86_64_TPOFF32 | R_X86_64_TPOFF64) {
            r.symbol as i64 as i128
        } else {
            r.symbol as i128
        };
        let sa = s + r.addend as i128;
        match r.r_type {
            R_X86_64_NONE => Ok(()),
            R_X86_64_64 | R_X86_64_TPOFF64 => {
                put(NAME, name, r.place, bytes, (sa as u64).to_le_bytes())
            }
            R_X86_64_PC32 | R_X86_64_PLT32 => self.pc32(name, r, r.symbol, bytes),
            R_X86_64_PC64 => put(
                NAME,
                name,
                r.place,
                bytes,
                ((sa - r.place as i128) as u64).to_le_bytes(),
            ),
            R_X86_64_32 => {
                if !(0..=u32::MAX as i128).contains(&sa) {
                    return Err(ArchError::RelocationOverflow {
                        arch: NAME,
                        name,
                        place: r.place,
                        value: sa,
                    });
                }
                put(NAME, name, r.place, bytes, (sa as u32).to_le_bytes())
            }
            R_X86_64_32S | R_X86_64_TPOFF32 => {
                if !fits_i32(sa) {
                    return Err(ArchError::RelocationOverflow {
                        arch: NAME,
                        name,
                        place: r.place,
                        value: sa,
                    });
                }
                put(NAME, name, r.place, bytes, (sa as i32).to_le_bytes())
            }
            R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX | R_X86_64_GOTTPOFF => {
                let slot = self.slot(name, r)?;
                self.pc32(name, r, slot, bytes)
            }
            other => {
                let _ = get::<1>(NAME, name, r.place, bytes)?;
                Err(ArchError::UnsupportedRelocation {
                    arch: NAME,
                    r_type: other,
                })
            }
        }
    }
    fn ifunc_call(&self, _hwcap: u64, _hwcap2: u64) -> IfuncCall {
        // x86_64 resolvers take no arguments (they read the CPU features themselves).
        IfuncCall::default()
    }
    fn make_got_reference_direct(
        &self,
        r_type: u32,
        code: &mut [u8],
        field: u64,
    ) -> Result<Option<DirectReference>, GotRewriteError> {
        crate::x86_64_got::make_direct(r_type, code, field)
    }
    fn static_tls(&self, r_type: u32) -> Option<StaticTls> {
        match r_type {
            R_X86_64_GOTTPOFF => Some(StaticTls::InitialExec),
            R_X86_64_TPOFF32 => Some(StaticTls::LocalExec),
            _ => None,
        }
    }
    fn tls_offset_slot_reloc(&self) -> (u32, &'static str) {
        (R_X86_64_TPOFF64, "R_X86_64_TPOFF64")
    }
    fn pointer_reloc(&self, pcrel: bool, size: u8) -> Option<u32> {
        Some(match (pcrel, size) {
            (true, 4) => R_X86_64_PC32,
            (true, 8) => R_X86_64_PC64,
            (false, 4) => R_X86_64_32,
            (false, 8) => R_X86_64_64,
            _ => return None,
        })
    }
    fn without_plt(&self, r_type: u32) -> u32 {
        if r_type == R_X86_64_PLT32 {
            R_X86_64_PC32
        } else {
            r_type
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signal_function_ends_in_a_return_after_tgkill() {
        let (code, ret) = X86_64.self_signal_function(23);
        assert_eq!(code.len(), 31);
        assert_eq!(code[ret], 0xc3);
        // tgkill's number, then the syscall right before the return.
        assert_eq!(&code[ret - 7..ret], &[0xb8, 234, 0, 0, 0, 0x0f, 0x05]);
        assert_eq!(&code[18..20], &[0xba, 23]);
        // The short form: 15 bytes, tkill(0x1234, 23).
        let (code, ret) = X86_64.thread_signal_function(0x1234, 23).unwrap();
        assert_eq!(
            code,
            [0xbf, 0x34, 0x12, 0, 0, 0x6a, 23, 0x5e, 0x31, 0xc0, 0xb0, 200, 0x0f, 0x05, 0xc3]
        );
        assert_eq!(ret, 14);
        assert_eq!(X86_64.thread_signal_function(1, 0x80), None);
    }

    #[test]
    fn jump_round_trips_and_checks_reach() {
        let a = X86_64;
        let j = a.encode_jump(0x1000, 0x2000).unwrap();
        assert_eq!(j, vec![0xe9, 0xfb, 0x0f, 0, 0]);
        assert_eq!(a.decode_jump(0x1000, &j), Some(0x2000));
        let back = a.encode_jump(0x2000, 0x1000).unwrap();
        assert_eq!(a.decode_jump(0x2000, &back), Some(0x1000));
        assert!(a.encode_jump(0, 1 << 32).is_err());
        assert_eq!(a.decode_jump(0, &[0x90; 5]), None);
    }

    #[test]
    fn return_addresses_follow_call_instructions() {
        // Eight bytes of padding, then the code: offsets below are from its start.
        let mut code = vec![0x90u8; 8];
        code.extend([
            0xe8, 1, 2, 3, 4, // call rel32 at 8, returns to 13
            0x41, 0xff, 0xd3, // call *%r11, returns to 16
            0xff, 0x55, 0x08, // call *8(%rbp), returns to 19
            0xff, 0x15, 1, 2, 3, 4, // call *disp32(%rip), returns to 25
            0xff, 0x14, 0x24, // call *(%rsp), returns to 28
            0xff, 0x94, 0x24, 1, 2, 3, 4, // call *disp32(%rsp), returns to 35
            0x90, 0x90,
        ]);
        let at = |ret: usize| X86_64.follows_call(&code[ret - crate::CALL_WINDOW..ret]);
        assert!(at(13));
        assert!(at(16));
        assert!(at(19));
        assert!(at(25));
        assert!(at(28));
        assert!(at(35));
        assert!(!at(12));
        assert!(!at(26));
        assert!(!at(36));
        // Jumps through the same operands are not calls.
        assert!(!X86_64.follows_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0x24, 0x24]));
        assert!(!X86_64.follows_call(&[0x90, 0x90, 0x90, 0xe9, 1, 2, 3, 4]));
        assert!(!X86_64.follows_call(&[0xff]));
    }

    #[test]
    fn assembler_padding_is_recognised() {
        // What gas writes after a 4-byte function aligned to 16: 12 bytes of NOPs.
        let gas = [
            0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90,
        ];
        assert!(X86_64.is_padding(&gas));
        assert!(X86_64.is_padding(&[0x0f, 0x1f, 0x40, 0x00, 0x66, 0x90, 0xcc]));
        assert!(!X86_64.is_padding(&[0x00, 0x00]));
        assert!(X86_64.is_padding(&[]));
        // Real code is not padding.
        assert!(!X86_64.is_padding(&[0x55, 0x48, 0x89, 0xe5]));
        assert!(!X86_64.is_padding(&[0x0f, 0x1f, 0x44, 0x00]));
    }

    #[test]
    fn kernel_facts() {
        let a = X86_64;
        assert_eq!(a.sys_rt_tgsigqueueinfo(), 297);
        assert!(a.sys_eintr_on_stop(232), "epoll_wait");
        assert!(!a.sys_eintr_on_stop(0), "read restarts");
        assert_eq!(
            (a.breakpoint_pc_advance(), a.breakpoint_si_code()),
            (1, 0x80)
        );
        assert_eq!(a.restart_regset(), None);
        assert_eq!(a.vector_regsets(), [NT_X86_XSTATE, NT_PRFPREG]);
        let f = a.signal_frame();
        assert_eq!((f.pc, f.sp, f.fp, f.lr), (168, 160, 120, None));
        assert_eq!(a.regs().fp, 4);
    }

    #[test]
    fn ifunc_resolvers_take_no_arguments() {
        assert_eq!(X86_64.ifunc_call(0xff, 1), IfuncCall::default());
    }

    #[test]
    fn jump_table_entry_is_rip_relative_indirect_jump() {
        let e = X86_64.jump_table_entry(0x1122334455667788);
        assert_eq!(&e[..6], &[0xff, 0x25, 2, 0, 0, 0]);
        assert_eq!(
            u64::from_le_bytes(e[8..].try_into().unwrap()),
            0x1122334455667788
        );
    }

    #[test]
    fn pc32_and_got_relocations() {
        let a = X86_64;
        let mut b = [0u8; 4];
        let r = Reloc {
            r_type: R_X86_64_PC32,
            place: 0x1000,
            symbol: 0x3000,
            got_slot: None,
            addend: -4,
        };
        a.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(i32::from_le_bytes(b), 0x3000 - 4 - 0x1000);
        let r = Reloc {
            r_type: R_X86_64_REX_GOTPCRELX,
            place: 0x1000,
            symbol: 7,
            got_slot: Some(0x800),
            addend: -4,
        };
        a.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(i32::from_le_bytes(b), 0x800 - 4 - 0x1000);
        let r = Reloc {
            r_type: R_X86_64_GOTPCREL,
            place: 0x1000,
            symbol: 7,
            got_slot: None,
            addend: -4,
        };
        assert!(a.apply_reloc(&r, &mut b).is_err());
    }

    #[test]
    fn overflow_and_bounds_are_errors() {
        let a = X86_64;
        let mut b = [0u8; 4];
        let r = Reloc {
            r_type: R_X86_64_PC32,
            place: 0,
            symbol: 1 << 40,
            got_slot: None,
            addend: 0,
        };
        assert!(matches!(
            a.apply_reloc(&r, &mut b),
            Err(ArchError::RelocationOverflow { .. })
        ));
        let r = Reloc {
            r_type: R_X86_64_64,
            place: 0,
            symbol: 1,
            got_slot: None,
            addend: 0,
        };
        assert!(matches!(
            a.apply_reloc(&r, &mut b),
            Err(ArchError::RelocationOutOfBounds { .. })
        ));
        let r = Reloc {
            r_type: R_X86_64_32,
            place: 0,
            symbol: 1 << 33,
            got_slot: None,
            addend: 0,
        };
        assert!(a.apply_reloc(&r, &mut b).is_err());
        assert!(a.reloc_need(9999).is_err());
    }

    #[test]
    fn absolute_and_tls_relocations() {
        let a = X86_64;
        let mut b = [0u8; 8];
        let r = Reloc {
            r_type: R_X86_64_64,
            place: 0,
            symbol: 0x1234,
            got_slot: None,
            addend: 0x10,
        };
        a.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1244);
        let r = Reloc {
            r_type: R_X86_64_TPOFF32,
            place: 0,
            symbol: (-16i64) as u64,
            got_slot: None,
            addend: 0,
        };
        a.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(i32::from_le_bytes(b[..4].try_into().unwrap()), -16);
        assert_eq!(
            a.reloc_need(R_X86_64_GOTTPOFF).unwrap(),
            RelocNeed::TlsGotSlot
        );
    }
}
