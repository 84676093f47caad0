//! Relocation and dynamic-relocation type numbers this crate rewrites or looks for.

pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_PLT32: u32 = 4;
pub const R_X86_64_GOTPCREL: u32 = 9;
pub const R_X86_64_32: u32 = 10;
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

pub const R_AARCH64_NONE: u32 = 0;
pub const R_AARCH64_ABS64: u32 = 257;
pub const R_AARCH64_ABS32: u32 = 258;
pub const R_AARCH64_PREL64: u32 = 260;
pub const R_AARCH64_PREL32: u32 = 261;
pub const R_AARCH64_ADR_GOT_PAGE: u32 = 311;
pub const R_AARCH64_LD64_GOT_LO12_NC: u32 = 312;
pub const R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21: u32 = 541;
pub const R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC: u32 = 542;
pub const R_AARCH64_TLSLE_ADD_TPREL_HI12: u32 = 549;
pub const R_AARCH64_TLSLE_ADD_TPREL_LO12: u32 = 550;
pub const R_AARCH64_TLSLE_ADD_TPREL_LO12_NC: u32 = 551;
/// Dynamic relocation filling a GOT slot with a thread-pointer offset.
pub const R_AARCH64_TLS_TPREL64: u32 = 1030;

/// Name of a relocation type the architecture crate may not know (the TLS models this crate
/// refuses), for messages.
pub fn name(machine: u16, r_type: u32) -> &'static str {
    let known = match (machine, r_type) {
        (elf_edit::consts::EM_X86_64, R_X86_64_TLSGD) => Some("R_X86_64_TLSGD"),
        (elf_edit::consts::EM_X86_64, R_X86_64_TLSLD) => Some("R_X86_64_TLSLD"),
        (elf_edit::consts::EM_X86_64, R_X86_64_DTPOFF32) => Some("R_X86_64_DTPOFF32"),
        (elf_edit::consts::EM_X86_64, R_X86_64_DTPOFF64) => Some("R_X86_64_DTPOFF64"),
        (elf_edit::consts::EM_X86_64, R_X86_64_DTPMOD64) => Some("R_X86_64_DTPMOD64"),
        _ => None,
    };
    known
        .or_else(|| kpatch_arch::for_machine(machine).map(|a| a.reloc_name(r_type)))
        .unwrap_or("unknown relocation")
}
