//! aarch64: `b imm26` hunks (+-128 MiB), `ldr x17, #8; br x17` jump-table entries, `svc #0`,
//! `brk #0`.

use crate::{
    get, put, Arch, ArchError, IfuncCall, RegLayout, Reloc, RelocNeed, JUMP_TABLE_ENTRY_SIZE,
};

const NAME: &str = "aarch64";

pub const R_AARCH64_NONE: u32 = 0;
pub const R_AARCH64_ABS64: u32 = 257;
pub const R_AARCH64_ABS32: u32 = 258;
pub const R_AARCH64_PREL64: u32 = 260;
pub const R_AARCH64_PREL32: u32 = 261;
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
pub const R_AARCH64_TLSLE_ADD_TPREL_LO12_NC: u32 = 551;

/// glibc's `_IFUNC_ARG_HWCAP`: set in a resolver's first argument when the second one points
/// to an `__ifunc_arg_t`.
pub const IFUNC_ARG_HWCAP: u64 = 1 << 62;
/// `sizeof(__ifunc_arg_t)` as glibc 2.30..2.40 define it (`_size`, `_hwcap`, `_hwcap2`).
const IFUNC_ARG_SIZE: usize = 24;

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
    fn reloc_name(&self, r_type: u32) -> &'static str {
        match r_type {
            R_AARCH64_NONE => "R_AARCH64_NONE",
            R_AARCH64_ABS64 => "R_AARCH64_ABS64",
            R_AARCH64_ABS32 => "R_AARCH64_ABS32",
            R_AARCH64_PREL64 => "R_AARCH64_PREL64",
            R_AARCH64_PREL32 => "R_AARCH64_PREL32",
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
            R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => "R_AARCH64_TLSLE_ADD_TPREL_LO12_NC",
            _ => "unknown aarch64 relocation",
        }
    }
    fn reloc_need(&self, r_type: u32) -> Result<RelocNeed, ArchError> {
        Ok(match r_type {
            R_AARCH64_NONE
            | R_AARCH64_ABS64
            | R_AARCH64_ABS32
            | R_AARCH64_PREL64
            | R_AARCH64_PREL32
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
            R_AARCH64_TLSLE_ADD_TPREL_HI12 | R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => {
                RelocNeed::TlsOffset
            }
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
            R_AARCH64_TLSLE_ADD_TPREL_LO12_NC => imm12(name, r, sa as u64, 0, bytes),
            other => Err(ArchError::UnsupportedRelocation {
                arch: NAME,
                r_type: other,
            }),
        }
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
}
