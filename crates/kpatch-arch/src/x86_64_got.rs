//! x86_64 GOT-relative instructions made direct: `mov foo@GOTPCREL(%rip), %reg` becomes
//! `lea foo(%rip), %reg`, `call *foo@GOTPCREL(%rip)` becomes `addr32 call foo`, and
//! `jmp *foo@GOTPCREL(%rip)` becomes `jmp foo; nop` (the `ld` relaxations of the x86-64 psABI).

use crate::got::{DirectReference, GotInstruction, GotRewriteError};
use crate::x86_64::{R_X86_64_GOTPCREL, R_X86_64_GOTPCRELX, R_X86_64_PC32, R_X86_64_REX_GOTPCRELX};

/// Opcode and ModRM before the 32-bit displacement, then the displacement.
const PREFIX: usize = 2;
const DISP: usize = 4;

/// See [`crate::Arch::make_got_reference_direct`].
pub(crate) fn make_direct(
    r_type: u32,
    code: &mut [u8],
    field: u64,
) -> Result<Option<DirectReference>, GotRewriteError> {
    if !matches!(
        r_type,
        R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX
    ) {
        return Ok(None);
    }
    let at = usize::try_from(field)
        .ok()
        .filter(|&at| at >= PREFIX && at.checked_add(DISP).is_some_and(|e| e <= code.len()))
        .ok_or(GotRewriteError::OutOfBounds)?;
    let insn_start = at - PREFIX;
    let direct = |insn, field_moved| {
        Ok(Some(DirectReference {
            insn,
            insn_start,
            r_type: R_X86_64_PC32,
            field_moved,
        }))
    };
    match (code[at - 2], code[at - 1]) {
        // mov disp32(%rip), %reg -> lea disp32(%rip), %reg
        (0x8b, modrm) if is_rip_relative(modrm) => {
            code[at - 2] = 0x8d;
            direct(GotInstruction::Load, 0)
        }
        (0x8d, modrm) if is_rip_relative(modrm) => direct(GotInstruction::Address, 0),
        // call *disp32(%rip) -> addr32 call rel32
        (0xff, 0x15) => {
            code[at - 2] = 0x67;
            code[at - 1] = 0xe8;
            direct(GotInstruction::Branch, 0)
        }
        // jmp *disp32(%rip) -> jmp rel32; nop
        (0xff, 0x25) => {
            code[at - 2] = 0xe9;
            code.copy_within(at..at + DISP, at - 1);
            code[at + 3] = 0x90;
            direct(GotInstruction::Branch, -1)
        }
        (op, modrm) => Err(GotRewriteError::Unsupported {
            insn_start,
            bytes: [op, modrm],
        }),
    }
}

/// Whether a ModRM byte addresses `disp32(%rip)` (mod 00, r/m 101).
fn is_rip_relative(modrm: u8) -> bool {
    modrm & 0xc7 == 0x05
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::R_X86_64_PLT32;

    fn rewrite(
        code: &[u8],
        field: u64,
    ) -> (Vec<u8>, Result<Option<DirectReference>, GotRewriteError>) {
        let mut code = code.to_vec();
        let result = make_direct(R_X86_64_REX_GOTPCRELX, &mut code, field);
        (code, result)
    }

    #[test]
    fn mov_becomes_lea_and_lea_stays() {
        // mov 0x0(%rip),%rax
        let (code, r) = rewrite(&[0x48, 0x8b, 0x05, 1, 2, 3, 4], 3);
        assert_eq!(code, [0x48, 0x8d, 0x05, 1, 2, 3, 4]);
        let r = r.unwrap().unwrap();
        assert_eq!(
            (r.insn, r.insn_start, r.r_type, r.field_moved),
            (GotInstruction::Load, 1, R_X86_64_PC32, 0)
        );
        // lea 0x0(%rip),%rcx
        let (code, r) = rewrite(&[0x48, 0x8d, 0x0d, 1, 2, 3, 4], 3);
        assert_eq!(code, [0x48, 0x8d, 0x0d, 1, 2, 3, 4]);
        assert_eq!(r.unwrap().unwrap().insn, GotInstruction::Address);
    }

    #[test]
    fn indirect_branches_become_direct() {
        let (code, r) = rewrite(&[0xff, 0x15, 1, 2, 3, 4], 2);
        assert_eq!(code, [0x67, 0xe8, 1, 2, 3, 4]);
        assert_eq!(r.unwrap().unwrap().field_moved, 0);
        let (code, r) = rewrite(&[0xff, 0x25, 1, 2, 3, 4], 2);
        assert_eq!(code, [0xe9, 1, 2, 3, 4, 0x90]);
        let r = r.unwrap().unwrap();
        assert_eq!((r.insn, r.field_moved), (GotInstruction::Branch, -1));
    }

    #[test]
    fn other_instructions_and_bounds_are_refused() {
        // push disp32(%rip): ff 35
        let (code, r) = rewrite(&[0x90, 0xff, 0x35, 1, 2, 3, 4], 3);
        assert_eq!(code, [0x90, 0xff, 0x35, 1, 2, 3, 4]);
        assert_eq!(
            r,
            Err(GotRewriteError::Unsupported {
                insn_start: 1,
                bytes: [0xff, 0x35]
            })
        );
        // mov with a register base, not RIP-relative.
        let (_, r) = rewrite(&[0x8b, 0x45, 1, 2, 3, 4], 2);
        assert!(matches!(r, Err(GotRewriteError::Unsupported { .. })));
        assert_eq!(
            rewrite(&[0xff, 0x15, 1, 2, 3], 2).1,
            Err(GotRewriteError::OutOfBounds)
        );
        assert_eq!(
            rewrite(&[0x15, 1, 2, 3, 4], 1).1,
            Err(GotRewriteError::OutOfBounds)
        );
        assert_eq!(
            rewrite(&[0xff, 0x15, 1, 2, 3, 4], u64::MAX).1,
            Err(GotRewriteError::OutOfBounds)
        );
    }

    #[test]
    fn other_relocations_are_left_alone() {
        let mut code = vec![0xff, 0x15, 1, 2, 3, 4];
        assert_eq!(make_direct(R_X86_64_PLT32, &mut code, 2), Ok(None));
        assert_eq!(code, [0xff, 0x15, 1, 2, 3, 4]);
    }
}
