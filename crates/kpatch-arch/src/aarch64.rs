//! aarch64: `b imm26` hunks (+-128 MiB), `ldr x17, #8; br x17` jump-table entries, `svc #0`,
//! `brk #0`.

use crate::{
    get, put, Arch, ArchError, IfuncCall, RegLayout, Reloc, RelocNeed, SignalFrame, SigreturnCode,
    StaticTls, JUMP_TABLE_ENTRY_SIZE, NT_PRFPREG,
};

const NAME: &str = "aarch64";

pub const R_AARCH64_NONE: u32 = 0;
pub const R_AARCH64_ABS64: u32 = 257;
pub const R_AARCH64_ABS32: u32 = 258;
pub const R_AARCH64_ABS16: u32 = 259;
pub const R_AARCH64_PREL64: u32 = 260;
pub const R_AARCH64_PREL32: u32 = 261;
pub const R_AARCH64_PREL16: u32 = 262;
pub const R_AARCH64_MOVW_UABS_G0: u32 = 263;
pub const R_AARCH64_MOVW_UABS_G0_NC: u32 = 264;
pub const R_AARCH64_MOVW_UABS_G1: u32 = 265;
pub const R_AARCH64_MOVW_UABS_G1_NC: u32 = 266;
pub const R_AARCH64_MOVW_UABS_G2: u32 = 267;
pub const R_AARCH64_MOVW_UABS_G2_NC: u32 = 268;
pub const R_AARCH64_MOVW_UABS_G3: u32 = 269;
pub const R_AARCH64_LD_PREL_LO19: u32 = 273;
pub const R_AARCH64_ADR_PREL_LO21: u32 = 274;
pub const R_AARCH64_ADR_PREL_PG_HI21: u32 = 275;
pub const R_AARCH64_ADR_PREL_PG_HI21_NC: u32 = 276;
pub const R_AARCH64_ADD_ABS_LO12_NC: u32 = 277;
pub const R_AARCH64_LDST8_ABS_LO12_NC: u32 = 278;
pub const R_AARCH64_TSTBR14: u32 = 279;
pub const R_AARCH64_CONDBR19: u32 = 280;
pub const R_AARCH64_JUMP26: u32 = 282;
pub const R_AARCH64_CALL26: u32 = 283;
pub const R_AARCH64_LDST16_ABS_LO12_NC: u32 = 284;
pub const R_AARCH64_LDST32_ABS_LO12_NC: u32 = 285;
pub const R_AARCH64_LDST64_ABS_LO12_NC: u32 = 286;
pub const R_AARCH64_LDST128_ABS_LO12_NC: u32 = 299;
pub const R_AARCH64_ADR_GOT_PAGE: u32 = 311;
pub const R_AARCH64_LD64_GOT_LO12_NC: u32 = 312;
pub const R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21: u32 = 541;
pub const R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC: u32 = 542;
pub const R_AARCH64_TLSLE_ADD_TPREL_HI12: u32 = 549;
pub const R_AARCH64_TLSLE_ADD_TPREL_LO12: u32 = 550;
pub const R_AARCH64_TLSLE_ADD_TPREL_LO12_NC: u32 = 551;
/// Dynamic relocation filling a GOT slot with a thread-pointer offset.
pub const R_AARCH64_TLS_TPREL64: u32 = 1030;

/// glibc's `_IFUNC_ARG_HWCAP`: set in a resolver's first argument when the second one points
/// to an `__ifunc_arg_t`.
pub const IFUNC_ARG_HWCAP: u64 = 1 << 62;
/// `sizeof(__ifunc_arg_t)` as glibc 2.30..2.40 define it (`_size`, `_hwcap`, `_hwcap2`).
const IFUNC_ARG_SIZE: usize = 24;

/// `NT_ARM_SYSTEM_CALL`: the syscall number the kernel may restart.
pub const NT_ARM_SYSTEM_CALL: u32 = 0x404;
/// `si_code` of the trap `brk` raises.
const TRAP_BRKPT: i32 = 1;

/// The vDSO's `__kernel_rt_sigreturn`: `mov x8, #139; svc #0`.
const SIGRETURN: &[SigreturnCode] = &[SigreturnCode {
    bytes: &[0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4],
    syscall_at: 4,
}];

/// The aarch64 instruction set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aarch64;

const B: u32 = 0x1400_0000;
const LDR_X17_PC8: u32 = 0x5800_0051;
const BR_X17: u32 = 0xd61f_0220;

fn page(x: u64) -> i128 {
    (x & !0xfff) as i128
}

fn insn(name: &'static str, place: u64, bytes: &[u8]) -> Result<u32, ArchError> {
    Ok(u32::from_le_bytes(get::<4>(NAME, name, place, bytes)?))
}

fn overflow(name: &'static str, place: u64, value: i128) -> ArchError {
    ArchError::RelocationOverflow {
        arch: NAME,
        name,
        place,
        value,
    }
}

/// Puts a signed, word-scaled branch offset of `bits` bits at bit `shift`.
fn branch(
    name: &'static str,
    r: &Reloc,
    target: i128,
    bits: u32,
    shift: u32,
    bytes: &mut [u8],
) -> Result<(), ArchError> {
    let off = target - r.place as i128;
    let limit = 1i128 << (bits + 1);
    if off & 3 != 0 || off < -limit || off >= limit {
        return Err(overflow(name, r.place, off));
    }
    let mask = (1u32 << bits) - 1;
    let i = insn(name, r.place, bytes)?;
    let v = (i & !(mask << shift)) | ((((off >> 2) as u32) & mask) << shift);
    put(NAME, name, r.place, bytes, v.to_le_bytes())
}

/// `adrp`: 21-bit page delta split into immlo [30:29] and immhi [23:5].
fn adrp(
    name: &'static str,
    r: &Reloc,
    target: i128,
    check: bool,
    bytes: &mut [u8],
) -> Result<(), ArchError> {
    let delta = (page(target as u64) - page(r.place)) >> 12;
    if check && !(-(1i128 << 20)..(1i128 << 20)).contains(&delta) {
        return Err(overflow(name, r.place, delta));
    }
    let imm = delta as u32 & 0x1f_ffff;
    let i = insn(name, r.place, bytes)?;
    let v = (i & !((3 << 29) | (0x7ffff << 5))) | ((imm & 3) << 29) | ((imm >> 2) << 5);
    put(NAME, name, r.place, bytes, v.to_le_bytes())
}

/// A 12-bit unsigned immediate at [21:10], scaled down by `scale` bits.
fn imm12(
    name: &'static str,
    r: &Reloc,
    value: u64,
    scale: u32,
    bytes: &mut [u8],
) -> Result<(), ArchError> {
    let lo = value & 0xfff;
    if lo & ((1 << scale) - 1) != 0 {
        return Err(overflow(name, r.place, lo as i128));
    }
    let i = insn(name, r.place, bytes)?;
    let v = (i & !(0xfff << 10)) | ((((lo >> scale) as u32) & 0xfff) << 10);
    put(NAME, name, r.place, bytes, v.to_le_bytes())
}

/// `movz`/`movk`: 16 bits of an unsigned absolute value, group `group` (bits 16*group up),
/// at [20:5]; `check` refuses a value with bits above the group.
fn movw(
    name: &'static str,
    r: &Reloc,
    value: i128,
    group: u32,
    check: bool,
    bytes: &mut [u8],
) -> Result<(), ArchError> {
    if check && !(0..(1i128 << (16 * (group + 1)))).contains(&value) {
        return Err(overflow(name, r.place, value));
    }
    let imm = ((value as u64) >> (16 * group)) as u32 & 0xffff;
    let i = insn(name, r.place, bytes)?;
    let v = (i & !(0xffff << 5)) | (imm << 5);
    put(NAME, name, r.place, bytes, v.to_le_bytes())
}

impl Aarch64 {
    fn slot(&self, name: &'static str, r: &Reloc) -> Result<u64, ArchError> {
        r.got_slot.ok_or(ArchError::UnexpectedInstruction {
            arch: NAME,
            name,
            place: r.place,
        })
    }
}

impl Arch for Aarch64 {
    fn name(&self) -> &'static str {
        NAME
    }
    fn e_machine(&self) -> u16 {
        crate::EM_AARCH64
    }
    fn hunk_size(&self) -> usize {
        4
    }
    fn max_branch_distance(&self) -> u64 {
        (128 << 20) - 4096
    }
    fn encode_jump(&self, from: u64, to: u64) -> Result<Vec<u8>, ArchError> {
        if from & 3 != 0 || to & 3 != 0 {
            return Err(ArchError::Misaligned {
                arch: NAME,
                from,
                to,
            });
        }
        let off = to as i128 - from as i128;
        if !(-(128i128 << 20)..(128i128 << 20)).contains(&off) {
            return Err(ArchError::JumpOutOfRange {
                arch: NAME,
                from,
                to,
                limit: 128 << 20,
            });
        }
        Ok((B | (((off >> 2) as u32) & 0x3ff_ffff))
            .to_le_bytes()
            .to_vec())
    }
    fn decode_jump(&self, from: u64, bytes: &[u8]) -> Option<u64> {
        let i = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        if i & 0xfc00_0000 != B {
            return None;
        }
        // Sign-extend imm26 and scale by 4.
        let off = (((i & 0x3ff_ffff) << 6) as i32 >> 6) as i64 * 4;
        Some((from as i64).wrapping_add(off) as u64)
    }
    fn jump_table_entry(&self, target: u64) -> [u8; JUMP_TABLE_ENTRY_SIZE] {
        let mut e = [0u8; JUMP_TABLE_ENTRY_SIZE];
        e[..4].copy_from_slice(&LDR_X17_PC8.to_le_bytes());
        e[4..8].copy_from_slice(&BR_X17.to_le_bytes());
        e[8..].copy_from_slice(&target.to_le_bytes());
        e
    }
    fn syscall_insn(&self) -> &'static [u8] {
        // svc #0
        &[0x01, 0x00, 0x00, 0xd4]
    }
    fn insn_alignment(&self) -> u64 {
        4
    }
    fn breakpoint_insn(&self) -> &'static [u8] {
        // brk #0
        &[0x00, 0x00, 0x20, 0xd4]
    }
    fn breakpoint_pc_advance(&self) -> u64 {
        0
    }
    fn breakpoint_si_code(&self) -> i32 {
        TRAP_BRKPT
    }
    fn follows_call(&self, before: &[u8]) -> bool {
        // bl imm26, or blr xN.
        let Some(last) = before.len().checked_sub(4).and_then(|at| before.get(at..)) else {
            return false;
        };
        let insn = u32::from_le_bytes([last[0], last[1], last[2], last[3]]);
        insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000
    }
    fn is_padding(&self, _bytes: &[u8]) -> bool {
        // Not recognised: a hunk is one instruction, and every function has room for it.
        false
    }
    fn sigreturn_code(&self) -> &'static [SigreturnCode] {
        SIGRETURN
    }
    fn signal_frame(&self) -> SignalFrame {
        // The siginfo (128 bytes) comes first, then the ucontext, whose uc_mcontext (at 176)
        // holds the fault address, then x0..x30, sp and pc.
        let regs = 128 + 176 + 8;
        SignalFrame {
            pc: regs + 32 * 8,
            sp: regs + 31 * 8,
            fp: regs + 29 * 8,
            lr: Some(regs + 30 * 8),
        }
    }
    fn restart_regset(&self) -> Option<u32> {
        Some(NT_ARM_SYSTEM_CALL)
    }
    fn vector_regsets(&self) -> &'static [u32] {
        &[NT_PRFPREG]
    }
    fn regs(&self) -> RegLayout {
        // struct user_pt_regs: x0..x30, sp, pc, pstate
        RegLayout {
            words: 34,
            pc: 32,
            sp: 31,
            syscall_nr: 8,
            syscall_args: [0, 1, 2, 3, 4, 5],
            call_args: [0, 1, 2, 3, 4, 5],
            ret: 0,
            orig_syscall: None,
            fp: 29,
            link: Some(30),
        }
    }
    fn sys_mmap(&self) -> u64 {
        222
    }
    fn sys_munmap(&self) -> u64 {
        215
    }
    fn sys_mprotect(&self) -> u64 {
        226
    }
    fn sys_exec(&self) -> [u64; 2] {
        [221, 281]
    }
    fn self_signal_function(&self, sig: u8) -> (Vec<u8>, usize) {
        // movz xD, #imm
        let mov = |d: u32, imm: u32| 0xd280_0000 | (imm << 5) | d;
        let svc = 0xd400_0001;
        let words = [
            mov(8, 172), // getpid
            svc,
            0xaa00_03e9, // mov x9, x0
            mov(8, 178), // gettid
            svc,
            0xaa00_03e1, // mov x1, x0
            0xaa09_03e0, // mov x0, x9
            mov(2, u32::from(sig)),
            mov(8, 131), // tgkill
            svc,
            0xd65f_03c0, // ret
        ];
        let code: Vec<u8> = words.iter().flat_map(|w: &u32| w.to_le_bytes()).collect();
        let ret = code.len() - 4;
        (code, ret)
    }
    fn thread_signal_function(&self, _tid: u32, _sig: u8) -> Option<(Vec<u8>, usize)> {
        // Six instructions: longer than a loader's `ret`; the function gets a page instead.
        None
    }
    fn loader_watch_function(&self, r_state: u64, path: u64) -> Vec<u8> {
        // movz xD, #imm
        let mov = |d: u32, imm: u32| 0xd280_0000 | (imm << 5) | d;
        let svc = 0xd400_0001;
        // ldr xT, <literal `words` instructions ahead>
        let ldr_literal = |t: u32, words: u32| 0x5800_0000 | (words << 5) | t;
        const RET: u32 = 12;
        const LITERALS: u32 = 14;
        let words: [u32; 14] = [
            ldr_literal(9, LITERALS),            // ldr x9, =r_state
            0xb940_012a,                         // ldr w10, [x9]
            0x3400_0000 | ((RET - 2) << 5) | 10, // cbz w10, ret
            0x9280_0c60,                         // mov x0, #AT_FDCWD
            ldr_literal(1, LITERALS + 2 - 4),    // ldr x1, =path
            0xd2a0_0102,                         // mov x2, #(O_RDONLY | O_CLOEXEC)
            mov(3, 0),                           // mov x3, #0
            mov(8, 56),                          // mov x8, #SYS_openat
            svc,                                 // svc #0
            0x37f8_0000 | ((RET - 9) << 5),      // tbnz w0, #31, ret
            mov(8, 57),                          // mov x8, #SYS_close
            svc,                                 // svc #0
            0xd65f_03c0,                         // ret
            0xd503_201f,                         // nop: the literals 8-byte aligned
        ];
        let mut code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        code.extend_from_slice(&r_state.to_le_bytes());
        code.extend_from_slice(&path.to_le_bytes());
        code
    }
    fn sys_rt_tgsigqueueinfo(&self) -> u64 {
        240
    }
    fn sys_eintr_on_stop(&self, nr: u64) -> bool {
        // epoll_pwait, epoll_pwait2, semop, semtimedop, io_getevents, io_pgetevents,
        // rt_sigtimedwait
        matches!(nr, 22 | 441 | 193 | 192 | 4 | 292 | 137)
    }
    fn sys_futex(&self) -> u64 {
        98
    }
    fn waiting_syscalls(&self) -> &'static [u64] {
        // nanosleep, clock_nanosleep, rt_sigsuspend, rt_sigtimedwait, pselect6, ppoll,
        // epoll_pwait, epoll_pwait2, wait4, waitid, accept, accept4, restart_syscall
        &[101, 115, 133, 137, 72, 73, 22, 441, 260, 95, 202, 242, 128]
    }
    fn reloc_name(&self, r_type: u32) -> &'static str {
        match r_type {
            R_AARCH64_NONE => "R_AARCH64_NONE",
            R_AARCH64_ABS64 => "R_AARCH64_ABS64",
            R_AARCH64_ABS32 => "R_AARCH64_ABS32",
            R_AARCH64_ABS16 => "R_AARCH64_ABS16",
            R_AARCH64_PREL64 => "R_AARCH64_PREL64",
            R_AARCH64_PREL32 => "R_AARCH64_PREL32",
            R_AARCH64_PREL16 => "R_AARCH64_PREL16",
            R_AARCH64_MOVW_UABS_G0 => "R_AARCH64_MOVW_UABS_G0",
            R_AARCH64_MOVW_UABS_G0_NC => "R_AARCH64_MOVW_UABS_G0_NC",
            R_AARCH64_MOVW_UABS_G1 => "R_AARCH64_MOVW_UABS_G1",
            R_AARCH64_MOVW_UABS_G1_NC => "R_AARCH64_MOVW_UABS_G1_NC",
            R_AARCH64_MOVW_UABS_G2 => "R_AARCH64_MOVW_UABS_G2",
            R_AARCH64_MOVW_UABS_G2_NC => "R_AARCH64_MOVW_UABS_G2_NC",
            R_AARCH64_MOVW_UABS_G3 => "R_AARCH64_MOVW_UABS_G3",
            R_AARCH64_LD_PREL_LO19 => "R_AARCH64_LD_PREL_LO19",
            R_AARCH64_ADR_PREL_LO21 => "R_AARCH64_ADR_PREL_LO21",
            R_AARCH64_ADR_PREL_PG_HI21 => "R_AARCH64_ADR_PREL_PG_HI21",
            R_AARCH64_ADR_PREL_PG_HI21_NC => "R_AARCH64_ADR_PREL_PG_HI21_NC",
            R_AARCH64_ADD_ABS_LO12_NC => "R_AARCH64_ADD_ABS_LO12_NC",
            R_AARCH64_LDST8_ABS_LO12_NC => "R_AARCH64_LDST8_ABS_LO12_NC",
            R_AARCH64_TSTBR14 => "R_AARCH64_TSTBR14",
            R_AARCH64_CONDBR19 => "R_AARCH64_CONDBR19",
            R_AARCH64_JUMP26 => "R_AARCH64_JUMP26",
            R_AARCH64_CALL26 => "R_AARCH64_CALL26",
            R_AARCH64_LDST16_ABS_LO12_NC => "R_AARCH64_LDST16_ABS_LO12_NC",
            R_AARCH64_LDST32_ABS_LO12_NC => "R_AARCH64_LDST32_ABS_LO12_NC",
            R_AARCH64_LDST64_ABS_LO12_NC => "R_AARCH64_LDST64_ABS_LO12_NC",
            R_AARCH64_LDST128_ABS_LO12_NC => "R_AARCH64_LDST128_ABS_LO12_NC",
            R_AARCH64_ADR_GOT_PAGE => "R_AARCH64_ADR_GOT_PAGE",
            R_AARCH64_LD64_GOT_LO12_NC => "R_AARCH64_LD64_GOT_LO12_NC",
            R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21 => "R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21",
            R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC => "R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC",
            R_AARCH64_TLSLE_ADD_TPREL_HI12 => "R_AARCH64_TLSLE_ADD_TPREL_HI12",
            R_AARCH64_TLSLE_ADD_TPREL_LO12 => "R_AARCH64_TLSLE_ADD_TPREL_LO12",
            R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => "R_AARCH64_TLSLE_ADD_TPREL_LO12_NC",
            _ => "unknown aarch64 relocation",
        }
    }
    fn reloc_need(&self, r_type: u32) -> Result<RelocNeed, ArchError> {
        Ok(match r_type {
            R_AARCH64_NONE
            | R_AARCH64_ABS64
            | R_AARCH64_ABS32
            | R_AARCH64_ABS16
            | R_AARCH64_PREL64
            | R_AARCH64_PREL32
            | R_AARCH64_PREL16
            | R_AARCH64_MOVW_UABS_G0
            | R_AARCH64_MOVW_UABS_G0_NC
            | R_AARCH64_MOVW_UABS_G1
            | R_AARCH64_MOVW_UABS_G1_NC
            | R_AARCH64_MOVW_UABS_G2
            | R_AARCH64_MOVW_UABS_G2_NC
            | R_AARCH64_MOVW_UABS_G3
            | R_AARCH64_LD_PREL_LO19
            | R_AARCH64_ADR_PREL_LO21
            | R_AARCH64_ADR_PREL_PG_HI21
            | R_AARCH64_ADR_PREL_PG_HI21_NC
            | R_AARCH64_ADD_ABS_LO12_NC
            | R_AARCH64_LDST8_ABS_LO12_NC
            | R_AARCH64_TSTBR14
            | R_AARCH64_CONDBR19
            | R_AARCH64_JUMP26
            | R_AARCH64_CALL26
            | R_AARCH64_LDST16_ABS_LO12_NC
            | R_AARCH64_LDST32_ABS_LO12_NC
            | R_AARCH64_LDST64_ABS_LO12_NC
            | R_AARCH64_LDST128_ABS_LO12_NC => RelocNeed::Address,
            R_AARCH64_ADR_GOT_PAGE | R_AARCH64_LD64_GOT_LO12_NC => RelocNeed::GotSlot,
            R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21 | R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC => {
                RelocNeed::TlsGotSlot
            }
            R_AARCH64_TLSLE_ADD_TPREL_HI12
            | R_AARCH64_TLSLE_ADD_TPREL_LO12
            | R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => RelocNeed::TlsOffset,
            _ => return Err(ArchError::UnsupportedRelocation { arch: NAME, r_type }),
        })
    }
    fn tls_ie_addend(&self) -> i64 {
        0
    }
    fn apply_reloc(&self, r: &Reloc, bytes: &mut [u8]) -> Result<(), ArchError> {
        let name = self.reloc_name(r.r_type);
        let sa = r.symbol as i128 + r.addend as i128;
        let p = r.place as i128;
        match r.r_type {
            R_AARCH64_NONE => Ok(()),
            R_AARCH64_ABS64 => put(NAME, name, r.place, bytes, (sa as u64).to_le_bytes()),
            R_AARCH64_PREL64 => put(NAME, name, r.place, bytes, ((sa - p) as u64).to_le_bytes()),
            R_AARCH64_ABS32 => {
                if !(i32::MIN as i128..=u32::MAX as i128).contains(&sa) {
                    return Err(overflow(name, r.place, sa));
                }
                put(NAME, name, r.place, bytes, (sa as u32).to_le_bytes())
            }
            R_AARCH64_PREL32 => {
                let v = sa - p;
                if !(i32::MIN as i128..=u32::MAX as i128).contains(&v) {
                    return Err(overflow(name, r.place, v));
                }
                put(NAME, name, r.place, bytes, (v as u32).to_le_bytes())
            }
            R_AARCH64_ABS16 => {
                if !(i16::MIN as i128..=u16::MAX as i128).contains(&sa) {
                    return Err(overflow(name, r.place, sa));
                }
                put(NAME, name, r.place, bytes, (sa as u16).to_le_bytes())
            }
            R_AARCH64_PREL16 => {
                let v = sa - p;
                if !(i16::MIN as i128..=u16::MAX as i128).contains(&v) {
                    return Err(overflow(name, r.place, v));
                }
                put(NAME, name, r.place, bytes, (v as u16).to_le_bytes())
            }
            R_AARCH64_MOVW_UABS_G0 => movw(name, r, sa, 0, true, bytes),
            R_AARCH64_MOVW_UABS_G0_NC => movw(name, r, sa, 0, false, bytes),
            R_AARCH64_MOVW_UABS_G1 => movw(name, r, sa, 1, true, bytes),
            R_AARCH64_MOVW_UABS_G1_NC => movw(name, r, sa, 1, false, bytes),
            R_AARCH64_MOVW_UABS_G2 => movw(name, r, sa, 2, true, bytes),
            R_AARCH64_MOVW_UABS_G2_NC => movw(name, r, sa, 2, false, bytes),
            R_AARCH64_MOVW_UABS_G3 => movw(name, r, sa, 3, false, bytes),
            R_AARCH64_LD_PREL_LO19 => branch(name, r, sa, 19, 5, bytes),
            R_AARCH64_CALL26 | R_AARCH64_JUMP26 => branch(name, r, sa, 26, 0, bytes),
            R_AARCH64_CONDBR19 => branch(name, r, sa, 19, 5, bytes),
            R_AARCH64_TSTBR14 => branch(name, r, sa, 14, 5, bytes),
            R_AARCH64_ADR_PREL_LO21 => {
                let v = sa - p;
                if !(-(1i128 << 20)..(1i128 << 20)).contains(&v) {
                    return Err(overflow(name, r.place, v));
                }
                let imm = v as u32 & 0x1f_ffff;
                let i = insn(name, r.place, bytes)?;
                let w = (i & !((3 << 29) | (0x7ffff << 5))) | ((imm & 3) << 29) | ((imm >> 2) << 5);
                put(NAME, name, r.place, bytes, w.to_le_bytes())
            }
            R_AARCH64_ADR_PREL_PG_HI21 => adrp(name, r, sa, true, bytes),
            R_AARCH64_ADR_PREL_PG_HI21_NC => adrp(name, r, sa, false, bytes),
            R_AARCH64_ADD_ABS_LO12_NC | R_AARCH64_LDST8_ABS_LO12_NC => {
                imm12(name, r, sa as u64, 0, bytes)
            }
            R_AARCH64_LDST16_ABS_LO12_NC => imm12(name, r, sa as u64, 1, bytes),
            R_AARCH64_LDST32_ABS_LO12_NC => imm12(name, r, sa as u64, 2, bytes),
            R_AARCH64_LDST64_ABS_LO12_NC => imm12(name, r, sa as u64, 3, bytes),
            R_AARCH64_LDST128_ABS_LO12_NC => imm12(name, r, sa as u64, 4, bytes),
            R_AARCH64_ADR_GOT_PAGE | R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21 => {
                let slot = self.slot(name, r)?;
                adrp(name, r, slot as i128, true, bytes)
            }
            R_AARCH64_LD64_GOT_LO12_NC | R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC => {
                let slot = self.slot(name, r)?;
                imm12(name, r, slot, 3, bytes)
            }
            R_AARCH64_TLSLE_ADD_TPREL_HI12 => {
                if !(0..(1i128 << 24)).contains(&sa) {
                    return Err(overflow(name, r.place, sa));
                }
                imm12(name, r, (sa as u64) >> 12, 0, bytes)
            }
            R_AARCH64_TLSLE_ADD_TPREL_LO12 => {
                if !(0..(1i128 << 12)).contains(&sa) {
                    return Err(overflow(name, r.place, sa));
                }
                imm12(name, r, sa as u64, 0, bytes)
            }
            R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => imm12(name, r, sa as u64, 0, bytes),
            other => Err(ArchError::UnsupportedRelocation {
                arch: NAME,
                r_type: other,
            }),
        }
    }
    fn static_tls(&self, r_type: u32) -> Option<StaticTls> {
        match r_type {
            R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21 | R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC => {
                Some(StaticTls::InitialExec)
            }
            R_AARCH64_TLSLE_ADD_TPREL_HI12
            | R_AARCH64_TLSLE_ADD_TPREL_LO12
            | R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => Some(StaticTls::LocalExec),
            _ => None,
        }
    }
    fn tls_offset_slot_reloc(&self) -> (u32, &'static str) {
        (R_AARCH64_TLS_TPREL64, "R_AARCH64_TLS_TPREL64")
    }
    fn pointer_reloc(&self, pcrel: bool, size: u8) -> Option<u32> {
        Some(match (pcrel, size) {
            (true, 4) => R_AARCH64_PREL32,
            (true, 8) => R_AARCH64_PREL64,
            (false, 4) => R_AARCH64_ABS32,
            (false, 8) => R_AARCH64_ABS64,
            _ => return None,
        })
    }
    fn ifunc_call(&self, hwcap: u64, hwcap2: u64) -> IfuncCall {
        // resolver(hwcap | _IFUNC_ARG_HWCAP, const __ifunc_arg_t *), with __ifunc_arg_t
        // = { size_t _size; uint64_t _hwcap; uint64_t _hwcap2; } (glibc's <sys/ifunc.h>).
        let mut block = Vec::with_capacity(IFUNC_ARG_SIZE);
        for word in [IFUNC_ARG_SIZE as u64, hwcap, hwcap2] {
            block.extend_from_slice(&word.to_le_bytes());
        }
        IfuncCall {
            args: vec![hwcap | IFUNC_ARG_HWCAP],
            block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signal_function_is_what_gas_assembles() {
        // `aarch64-linux-gnu-as` output for: mov x8,#172; svc #0; mov x9,x0; mov x8,#178;
        // svc #0; mov x1,x0; mov x0,x9; mov x2,#23; mov x8,#131; svc #0; ret
        let want: [u32; 11] = [
            0xd2801588, 0xd4000001, 0xaa0003e9, 0xd2801648, 0xd4000001, 0xaa0003e1, 0xaa0903e0,
            0xd28002e2, 0xd2801068, 0xd4000001, 0xd65f03c0,
        ];
        let (code, ret) = Aarch64.self_signal_function(23);
        let words: Vec<u32> = code
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, want);
        assert_eq!(ret, 40);
    }

    fn word(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    #[test]
    fn b_imm26_encodes_both_directions_and_respects_reach() {
        let a = Aarch64;
        let j = a.encode_jump(0x40_0000, 0x40_1000).unwrap();
        assert_eq!(word(&j), 0x1400_0400);
        assert_eq!(a.decode_jump(0x40_0000, &j), Some(0x40_1000));
        let back = a.encode_jump(0x40_1000, 0x40_0000).unwrap();
        assert_eq!(word(&back), 0x17ff_fc00);
        assert_eq!(a.decode_jump(0x40_1000, &back), Some(0x40_0000));
        assert!(a.encode_jump(0, 128 << 20).is_err());
        assert!(a.encode_jump(128 << 20, 0).is_ok());
        assert!(a.encode_jump(0, 2).is_err());
    }

    #[test]
    fn ifunc_resolvers_get_hwcap_and_an_ifunc_arg() {
        let c = Aarch64.ifunc_call(0x8ff, 0x2);
        assert_eq!(c.args, [0x4000_0000_0000_08ff]);
        let words: Vec<u64> = c
            .block
            .chunks(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert_eq!(words, [24, 0x8ff, 0x2]);
    }

    #[test]
    fn return_addresses_follow_bl_and_blr() {
        let before = |insn: u32| {
            let mut b = [0u8; 8];
            b[4..].copy_from_slice(&insn.to_le_bytes());
            b
        };
        assert!(Aarch64.follows_call(&before(0x9400_0010)), "bl");
        assert!(Aarch64.follows_call(&before(0xd63f_0200)), "blr x16");
        assert!(!Aarch64.follows_call(&before(0x1400_0010)), "b");
        assert!(!Aarch64.follows_call(&before(0xd61f_0200)), "br x16");
        assert!(!Aarch64.follows_call(&[0x10, 0, 0]));
    }

    #[test]
    fn kernel_facts() {
        let a = Aarch64;
        assert_eq!(a.sys_rt_tgsigqueueinfo(), 240);
        assert!(a.sys_eintr_on_stop(22), "epoll_pwait");
        assert!(!a.sys_eintr_on_stop(63), "read restarts");
        assert_eq!((a.breakpoint_pc_advance(), a.breakpoint_si_code()), (0, 1));
        assert_eq!(a.restart_regset(), Some(0x404));
        assert_eq!(a.vector_regsets(), [NT_PRFPREG]);
        let f = a.signal_frame();
        assert_eq!((f.pc, f.sp, f.fp, f.lr), (568, 560, 544, Some(552)));
        assert_eq!(a.regs().fp, 29);
        assert!(!a.is_padding(&[0x1f, 0x20, 0x03, 0xd5]));
    }

    #[test]
    fn jump_table_entry_loads_x17_and_branches() {
        let e = Aarch64.jump_table_entry(0xdead_beef);
        assert_eq!(word(&e[0..]), 0x5800_0051);
        assert_eq!(word(&e[4..]), 0xd61f_0220);
        assert_eq!(u64::from_le_bytes(e[8..].try_into().unwrap()), 0xdead_beef);
    }

    #[test]
    fn call26_patches_only_the_immediate() {
        let mut b = 0x9400_0000u32.to_le_bytes(); // bl 0
        let r = Reloc {
            r_type: R_AARCH64_CALL26,
            place: 0x1000,
            symbol: 0x2000,
            got_slot: None,
            addend: 0,
        };
        Aarch64.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(word(&b), 0x9400_0400);
        let far = Reloc {
            symbol: 0x1000 + (128 << 20),
            ..r
        };
        assert!(Aarch64.apply_reloc(&far, &mut b).is_err());
    }

    #[test]
    fn adrp_add_and_ldr_pairs() {
        // adrp x0, 0 ; add x0, x0, #0 ; ldr x1, [x1]
        let mut adrp_i = 0x9000_0000u32.to_le_bytes();
        let r = Reloc {
            r_type: R_AARCH64_ADR_PREL_PG_HI21,
            place: 0x1_0000,
            symbol: 0x12_3456,
            got_slot: None,
            addend: 0,
        };
        Aarch64.apply_reloc(&r, &mut adrp_i).unwrap();
        let i = word(&adrp_i);
        let imm = (((i >> 5) & 0x7ffff) << 2) | ((i >> 29) & 3);
        assert_eq!(imm, (0x12_3000 - 0x1_0000) >> 12);
        let mut add = 0x9100_0000u32.to_le_bytes();
        let r = Reloc {
            r_type: R_AARCH64_ADD_ABS_LO12_NC,
            ..r
        };
        Aarch64.apply_reloc(&r, &mut add).unwrap();
        assert_eq!((word(&add) >> 10) & 0xfff, 0x456);
        let mut ldr = 0xf940_0021u32.to_le_bytes();
        let r = Reloc {
            r_type: R_AARCH64_LD64_GOT_LO12_NC,
            got_slot: Some(0x5_0018),
            ..r
        };
        Aarch64.apply_reloc(&r, &mut ldr).unwrap();
        assert_eq!((word(&ldr) >> 10) & 0xfff, 0x18 >> 3);
        let misaligned = Reloc {
            r_type: R_AARCH64_LDST64_ABS_LO12_NC,
            symbol: 0x1001,
            ..r
        };
        assert!(Aarch64.apply_reloc(&misaligned, &mut ldr).is_err());
    }

    fn apply(
        r_type: u32,
        place: u64,
        symbol: u64,
        addend: i64,
        insn: u32,
    ) -> Result<u32, ArchError> {
        let mut b = insn.to_le_bytes();
        let r = Reloc {
            r_type,
            place,
            symbol,
            got_slot: None,
            addend,
        };
        Aarch64.apply_reloc(&r, &mut b)?;
        Ok(word(&b))
    }

    #[test]
    fn fixed_instructions_and_registers() {
        let a = Aarch64;
        assert_eq!(word(a.syscall_insn()), 0xd400_0001, "svc #0");
        assert_eq!(word(a.breakpoint_insn()), 0xd420_0000, "brk #0");
        assert_eq!(a.hunk_size(), 4);
        assert!(a.max_branch_distance() < 128 << 20);
        let r = a.regs();
        assert_eq!(
            (r.words, r.pc, r.sp, r.syscall_nr, r.ret),
            (34, 32, 31, 8, 0)
        );
        assert_eq!(r.link, Some(30));
        assert_eq!(r.orig_syscall, None);
        assert_eq!(
            (a.sys_mmap(), a.sys_munmap(), a.sys_mprotect()),
            (222, 215, 226)
        );
    }

    #[test]
    fn b_reaches_exactly_128_mib_each_way() {
        let a = Aarch64;
        let base = 0x1000_0000u64;
        let fwd = a.encode_jump(base, base + (128 << 20) - 4).unwrap();
        assert_eq!(word(&fwd), 0x15ff_ffff);
        assert_eq!(a.decode_jump(base, &fwd), Some(base + (128 << 20) - 4));
        let back = a.encode_jump(base, base - (128 << 20)).unwrap();
        assert_eq!(word(&back), 0x1600_0000);
        assert_eq!(a.decode_jump(base, &back), Some(base - (128 << 20)));
        assert!(matches!(
            a.encode_jump(base, base - (128 << 20) - 4),
            Err(ArchError::JumpOutOfRange { .. })
        ));
        // bl and other instructions are not our jump.
        assert_eq!(a.decode_jump(base, &0x9400_0001u32.to_le_bytes()), None);
        assert_eq!(a.decode_jump(base, &[0x14, 0]), None);
    }

    #[test]
    fn jump26_conditional_and_test_branches() {
        assert_eq!(
            apply(R_AARCH64_JUMP26, 0x1000, 0x800, 0, 0x1400_0000).unwrap(),
            0x17ff_fe00
        );
        // b.ne: imm19 at [23:5], the condition kept.
        assert_eq!(
            apply(R_AARCH64_CONDBR19, 0x1000, 0x1100, 0, 0x5400_0001).unwrap(),
            0x5400_0801
        );
        assert!(apply(
            R_AARCH64_CONDBR19,
            0x1000,
            0x1000 + (1 << 20),
            0,
            0x5400_0001
        )
        .is_err());
        assert!(apply(R_AARCH64_CONDBR19, 0x10_0000, 0, 0, 0x5400_0001).is_ok());
        // tbz w0, #3: imm14 at [18:5].
        assert_eq!(
            apply(R_AARCH64_TSTBR14, 0x1000, 0xff8, 0, 0x3618_0000).unwrap(),
            0x361f_ffc0
        );
        assert!(apply(
            R_AARCH64_TSTBR14,
            0x1000,
            0x1000 + (1 << 15),
            0,
            0x3618_0000
        )
        .is_err());
        // ldr x0, literal: imm19 at [23:5].
        assert_eq!(
            apply(R_AARCH64_LD_PREL_LO19, 0x1000, 0x1040, 0, 0x5800_0000).unwrap(),
            0x5800_0200
        );
        assert!(apply(R_AARCH64_LD_PREL_LO19, 0x1000, 0x1042, 0, 0x5800_0000).is_err());
    }

    #[test]
    fn adr_and_adrp_ranges() {
        // adr x0: immlo [30:29], immhi [23:5].
        let v = apply(
            R_AARCH64_ADR_PREL_LO21,
            0x1000,
            0x1000 + 0x12345,
            0,
            0x1000_0000,
        )
        .unwrap();
        assert_eq!((v >> 29) & 3, 0x12345 & 3);
        assert_eq!((v >> 5) & 0x7ffff, 0x12345 >> 2);
        assert!(apply(
            R_AARCH64_ADR_PREL_LO21,
            0x1000,
            0x1000 + (1 << 20),
            0,
            0x1000_0000
        )
        .is_err());
        // adrp spans +-4 GiB in pages; a negative delta is two's complement.
        let place = 0x1_0000_0000u64;
        let v = apply(R_AARCH64_ADR_PREL_PG_HI21, place, 0, 0, 0x9000_0000).unwrap();
        let imm = (((v >> 5) & 0x7ffff) << 2) | ((v >> 29) & 3);
        assert_eq!(imm, 0x10_0000, "-(1 << 20) pages in 21 bits");
        assert!(apply(
            R_AARCH64_ADR_PREL_PG_HI21,
            place + 0x1000,
            0,
            0,
            0x9000_0000
        )
        .is_err());
        assert!(apply(
            R_AARCH64_ADR_PREL_PG_HI21_NC,
            place + 0x1000,
            0,
            0,
            0x9000_0000
        )
        .is_ok());
        // The addend counts before the page is taken.
        let v = apply(
            R_AARCH64_ADR_PREL_PG_HI21,
            0x1000,
            0x1ff0,
            0x20,
            0x9000_0000,
        )
        .unwrap();
        assert_eq!((v >> 29) & 3, 1, "0x2010 is one page above 0x1000");
    }

    #[test]
    fn lo12_loads_and_stores_scale_by_access_size() {
        let ldr = 0xf940_0000; // any load/store: only [21:10] changes
        let imm = |t, v| apply(t, 0, v, 0, ldr).map(|i| (i >> 10) & 0xfff);
        assert_eq!(imm(R_AARCH64_ADD_ABS_LO12_NC, 0x1234_5fff).unwrap(), 0xfff);
        assert_eq!(imm(R_AARCH64_LDST8_ABS_LO12_NC, 0x5fff).unwrap(), 0xfff);
        assert_eq!(imm(R_AARCH64_LDST16_ABS_LO12_NC, 0x5006).unwrap(), 3);
        assert_eq!(imm(R_AARCH64_LDST32_ABS_LO12_NC, 0x5008).unwrap(), 2);
        assert_eq!(imm(R_AARCH64_LDST64_ABS_LO12_NC, 0x5ff8).unwrap(), 0x1ff);
        assert_eq!(imm(R_AARCH64_LDST128_ABS_LO12_NC, 0x5ff0).unwrap(), 0xff);
        for (t, misaligned) in [
            (R_AARCH64_LDST16_ABS_LO12_NC, 0x5001),
            (R_AARCH64_LDST32_ABS_LO12_NC, 0x5002),
            (R_AARCH64_LDST64_ABS_LO12_NC, 0x5004),
            (R_AARCH64_LDST128_ABS_LO12_NC, 0x5008),
        ] {
            assert!(matches!(
                imm(t, misaligned),
                Err(ArchError::RelocationOverflow { .. })
            ));
        }
        // Register fields are untouched.
        assert_eq!(
            apply(R_AARCH64_ADD_ABS_LO12_NC, 0, 0x10, 0, 0x9100_0021).unwrap(),
            0x9100_4021
        );
    }

    #[test]
    fn data_relocations() {
        let mut b = [0u8; 8];
        let r = Reloc {
            r_type: R_AARCH64_ABS64,
            place: 0x1000,
            symbol: 0xffff_0000_1234,
            got_slot: None,
            addend: 4,
        };
        Aarch64.apply_reloc(&r, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0xffff_0000_1238);
        let prel64 = Reloc {
            r_type: R_AARCH64_PREL64,
            symbol: 0x800,
            addend: 0,
            ..r
        };
        Aarch64.apply_reloc(&prel64, &mut b).unwrap();
        assert_eq!(i64::from_le_bytes(b), -0x800);
        let prel32 = Reloc {
            r_type: R_AARCH64_PREL32,
            ..prel64
        };
        Aarch64.apply_reloc(&prel32, &mut b).unwrap();
        assert_eq!(i32::from_le_bytes(b[..4].try_into().unwrap()), -0x800);
        let far = Reloc {
            symbol: 0x1_0000_1000,
            ..prel32
        };
        assert!(Aarch64.apply_reloc(&far, &mut b).is_err());
        let abs32 = Reloc {
            r_type: R_AARCH64_ABS32,
            symbol: 0xffff_ffff,
            ..prel32
        };
        Aarch64.apply_reloc(&abs32, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), 0xffff_ffff);
        assert!(Aarch64
            .apply_reloc(
                &Reloc {
                    symbol: 1 << 32,
                    ..abs32
                },
                &mut b
            )
            .is_err());
        let abs16 = Reloc {
            r_type: R_AARCH64_ABS16,
            symbol: 0xfffe,
            ..prel32
        };
        Aarch64.apply_reloc(&abs16, &mut b).unwrap();
        assert_eq!(&b[..2], &[0xfe, 0xff]);
        assert!(Aarch64
            .apply_reloc(
                &Reloc {
                    symbol: 0x1_0000,
                    ..abs16
                },
                &mut b
            )
            .is_err());
        let prel16 = Reloc {
            r_type: R_AARCH64_PREL16,
            symbol: 0x0ff0,
            ..prel32
        };
        Aarch64.apply_reloc(&prel16, &mut b).unwrap();
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), -0x10);
        // A place too close to the end of the buffer.
        assert!(matches!(
            Aarch64.apply_reloc(&r, &mut [0u8; 4]),
            Err(ArchError::RelocationOutOfBounds {
                need: 8,
                have: 4,
                ..
            })
        ));
    }

    #[test]
    fn movw_groups() {
        let v: u64 = 0x1234_5678_9abc_def0;
        let movz = 0xd280_0000; // movz x0, #0
        let movk = 0xf2a0_0000; // movk x0, #0, lsl #16
        let imm = |t, i| apply(t, 0, v, 0, i).map(|w| (w >> 5) & 0xffff);
        assert_eq!(imm(R_AARCH64_MOVW_UABS_G0_NC, movz).unwrap(), 0xdef0);
        assert_eq!(imm(R_AARCH64_MOVW_UABS_G1_NC, movk).unwrap(), 0x9abc);
        assert_eq!(imm(R_AARCH64_MOVW_UABS_G2_NC, movk).unwrap(), 0x5678);
        assert_eq!(imm(R_AARCH64_MOVW_UABS_G3, movk).unwrap(), 0x1234);
        assert!(imm(R_AARCH64_MOVW_UABS_G0, movz).is_err());
        assert!(imm(R_AARCH64_MOVW_UABS_G2, movz).is_err());
        assert_eq!(
            apply(R_AARCH64_MOVW_UABS_G1, 0, 0xffff_0000, 0, movk).unwrap() >> 5 & 0xffff,
            0xffff
        );
        // The opcode and register survive.
        assert_eq!(
            apply(R_AARCH64_MOVW_UABS_G0, 0, 0x1234, 0, 0xd280_0003).unwrap(),
            0xd282_4683
        );
    }

    #[test]
    fn got_and_initial_exec_tls_use_the_slot() {
        let slot = 0x7f_0000_2ff8;
        let r = Reloc {
            r_type: R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21,
            place: 0x7f_0000_0000,
            symbol: 0,
            got_slot: Some(slot),
            addend: 0,
        };
        let mut adrp_i = 0x9000_0000u32.to_le_bytes();
        Aarch64.apply_reloc(&r, &mut adrp_i).unwrap();
        let i = word(&adrp_i);
        assert_eq!((((i >> 5) & 0x7ffff) << 2) | ((i >> 29) & 3), 2);
        let mut ldr = 0xf940_0000u32.to_le_bytes();
        let lo = Reloc {
            r_type: R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC,
            ..r
        };
        Aarch64.apply_reloc(&lo, &mut ldr).unwrap();
        assert_eq!((word(&ldr) >> 10) & 0xfff, 0xff8 >> 3);
        // Without a slot the relocation cannot be applied.
        for t in [R_AARCH64_ADR_GOT_PAGE, R_AARCH64_LD64_GOT_LO12_NC] {
            let no_slot = Reloc {
                r_type: t,
                got_slot: None,
                ..r
            };
            assert!(matches!(
                Aarch64.apply_reloc(&no_slot, &mut ldr),
                Err(ArchError::UnexpectedInstruction { .. })
            ));
        }
        assert_eq!(Aarch64.tls_ie_addend(), 0);
        assert_eq!(
            Aarch64.reloc_need(R_AARCH64_ADR_GOT_PAGE),
            Ok(RelocNeed::GotSlot)
        );
        assert_eq!(
            Aarch64.reloc_need(R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC),
            Ok(RelocNeed::TlsGotSlot)
        );
    }

    #[test]
    fn local_exec_tls_halves() {
        let add = 0x9100_0000; // add x0, x0, #0
        let imm = |t, v| apply(t, 0, v, 0, add).map(|i| (i >> 10) & 0xfff);
        assert_eq!(
            imm(R_AARCH64_TLSLE_ADD_TPREL_HI12, 0x12_3456).unwrap(),
            0x123
        );
        assert_eq!(
            imm(R_AARCH64_TLSLE_ADD_TPREL_LO12_NC, 0x12_3456).unwrap(),
            0x456
        );
        assert_eq!(imm(R_AARCH64_TLSLE_ADD_TPREL_LO12, 0x456).unwrap(), 0x456);
        assert!(imm(R_AARCH64_TLSLE_ADD_TPREL_LO12, 0x1456).is_err());
        assert!(imm(R_AARCH64_TLSLE_ADD_TPREL_HI12, 1 << 24).is_err());
        assert_eq!(
            Aarch64.reloc_need(R_AARCH64_TLSLE_ADD_TPREL_HI12),
            Ok(RelocNeed::TlsOffset)
        );
    }

    #[test]
    fn unknown_relocations_are_refused_by_name() {
        // R_AARCH64_TLSDESC_ADR_PAGE21: general-dynamic TLS is not supported.
        let err = Aarch64.reloc_need(562).unwrap_err();
        assert_eq!(
            err,
            ArchError::UnsupportedRelocation {
                arch: "aarch64",
                r_type: 562
            }
        );
        assert!(apply(562, 0, 0, 0, 0).is_err());
        assert_eq!(Aarch64.reloc_name(562), "unknown aarch64 relocation");
        for t in [
            R_AARCH64_CALL26,
            R_AARCH64_MOVW_UABS_G3,
            R_AARCH64_LD_PREL_LO19,
        ] {
            assert!(Aarch64.reloc_name(t).starts_with("R_AARCH64_"));
            assert_eq!(Aarch64.reloc_need(t), Ok(RelocNeed::Address));
        }
    }
}
