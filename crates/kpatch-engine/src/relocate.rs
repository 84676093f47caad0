//! Symbol resolution and relocation of a payload into the bytes of a patch region: pure
//! computation over the payload, the original object's load bias and the resolved imports
//! (docs/internals.md section 2). Nothing here touches the target.

use std::collections::{BTreeMap, HashMap};

use kpatch_arch::{Arch, ArchError, Reloc, RelocNeed, JUMP_TABLE_SLOT_OFFSET};
use kpatch_file::{parse_info_records, InfoRecord, KPATCH_DATA, KPATCH_EH_FRAME, KPATCH_INFO};
use object::elf;

use crate::error::{Error, Result};

/// Nothing to do (see [`kpatch_file::elf::R_NONE`]).
const R_NONE: u32 = kpatch_file::elf::R_NONE.0;
use crate::payload::{PSymDef, Payload};
use crate::region_layout::Layout;

/// What a jump-table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The address of the payload symbol with this index (an import or a GOT-referenced
    /// local).
    Address(usize),
}

/// A payload with its slots counted and its region laid out, waiting for an address and the
/// resolved imports.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub payload: Payload,
    pub layout: Layout,
    pub slots: Vec<Slot>,
    slot_of: HashMap<Slot, usize>,
    /// Undefined symbols to resolve, by payload symbol index.
    pub imports: BTreeMap<usize, (String, Option<String>)>,
    /// Offset in the ELF image of the unwind tables to register (`.kpatch.eh_frame`).
    pub eh_frame: Option<u64>,
}

/// The region contents of a relocated patch, minus the header.
#[derive(Debug, Clone)]
pub struct Relocated {
    /// Jump table bytes, to be written at `kpta + layout.jmp_offset`.
    pub jump_table: Vec<u8>,
    /// ELF image, to be written at `kpta + layout.elf_offset`.
    pub elf: Vec<u8>,
    pub records: Vec<InfoRecord>,
}

/// Info records up to the end marker; a payload without a complete one is malformed.
fn records(bytes: &[u8]) -> Result<Vec<InfoRecord>> {
    parse_info_records(bytes).map_err(|e| Error::Payload(format!("{KPATCH_INFO}: {e}")))
}

fn no_info() -> Error {
    Error::Payload(format!("the payload has no {KPATCH_INFO} section"))
}

impl Prepared {
    /// Counts what the payload needs and lays out its region. `elf_image` is the ELF image as
    /// stored in the file (the `total_size - 504` bytes after the header).
    pub fn new(arch: &dyn Arch, payload: Payload, elf_image: &[u8], page: u64) -> Result<Prepared> {
        let elf_len = elf_image.len() as u64;
        let (_, info) = payload.section(KPATCH_INFO).ok_or_else(no_info)?;
        let info_offset = info.offset;
        // Records are counted before relocation: the end marker is all zeros in the file, real
        // records carry link-time values or at least non-zero lengths.
        let start = info.offset as usize;
        let end = start
            .saturating_add(info.size as usize)
            .min(elf_image.len());
        let ninfo = records(elf_image.get(start..end).unwrap_or(&[]))?.len();
        let data_offset = payload.section(KPATCH_DATA).map(|(_, s)| s.offset);
        if let Some(d) = data_offset {
            if d % page != 0 {
                return Err(Error::Payload(format!(
                    "{KPATCH_DATA} is at offset {d:#x} of the payload, not page-aligned: rebuild the patch with a compatible kpatch_strip"
                )));
            }
        }
        let mut slots = Vec::new();
        let mut slot_of = HashMap::new();
        let mut imports = BTreeMap::new();
        let mut add = |slot: Slot, slots: &mut Vec<Slot>| {
            slot_of.entry(slot).or_insert_with(|| {
                slots.push(slot);
                slots.len() - 1
            });
        };
        for r in payload.relocs.iter().filter(|r| r.r_type != R_NONE) {
            let sym = &payload.symbols[r.symbol];
            let need = arch.reloc_need(r.r_type)?;
            // An initial-exec TLS access uses the original's GOT slot (in the addend), never
            // the symbol's address: a variable another object defines is not an import.
            let tls = matches!(need, RelocNeed::TlsGotSlot | RelocNeed::TlsOffset);
            if sym.def == PSymDef::Undefined && !tls {
                if sym.name.is_empty() {
                    return Err(Error::Payload(format!(
                        "relocation {} at {:#x} in {} has no symbol",
                        arch.reloc_name(r.r_type),
                        r.offset,
                        payload.sections[r.target].name
                    )));
                }
                imports.insert(r.symbol, (sym.name.clone(), sym.version.clone()));
            }
            match need {
                RelocNeed::Address if sym.def == PSymDef::Undefined => {
                    add(Slot::Address(r.symbol), &mut slots)
                }
                RelocNeed::Address => {}
                RelocNeed::GotSlot => add(Slot::Address(r.symbol), &mut slots),
                RelocNeed::TlsGotSlot | RelocNeed::TlsOffset => {}
            }
        }
        let eh_frame = payload
            .section(KPATCH_EH_FRAME)
            .filter(|(_, s)| s.size > 0)
            .map(|(_, s)| s.offset);
        let layout = Layout::new(
            elf_len,
            slots.len() as u64,
            ninfo as u64,
            arch.hunk_size() as u64,
            info_offset,
            data_offset,
            eh_frame.is_some(),
            page,
        );
        Ok(Prepared {
            payload,
            layout,
            slots,
            slot_of,
            imports,
            eh_frame,
        })
    }

    /// Address of every section once the region is at `kpta` and the original object is
    /// loaded with `load_bias`.
    fn section_addrs(&self, kpta: u64, load_bias: u64) -> Vec<u64> {
        self.payload
            .sections
            .iter()
            .map(|s| {
                if s.is_kpatch() {
                    kpta + self.layout.elf_offset + s.offset
                } else if s.flags.contains(elf::SHF_ALLOC) {
                    s.addr.wrapping_add(load_bias)
                } else {
                    0
                }
            })
            .collect()
    }

    /// Relocates the payload for a region at `kpta`. `imports` gives the address of every
    /// undefined symbol (by payload symbol index).
    pub fn relocate(
        &self,
        arch: &dyn Arch,
        elf_image: &[u8],
        kpta: u64,
        load_bias: u64,
        imports: &HashMap<usize, u64>,
    ) -> Result<Relocated> {
        let secaddr = self.section_addrs(kpta, load_bias);
        let symaddr = |i: usize| -> Result<u64> {
            let s = &self.payload.symbols[i];
            match s.def {
                PSymDef::Undefined => imports.get(&i).copied().ok_or_else(|| Error::Unresolved {
                    name: s.name.clone(),
                }),
                PSymDef::Absolute => Ok(s.value),
                // A section symbol stands for its section's start whatever its value:
                // LibcarePlus's kpatch_strip leaves the link-time address there.
                PSymDef::Section(k) if s.st_type == elf::STT_SECTION => Ok(secaddr[k]),
                PSymDef::Section(k) => Ok(secaddr[k].wrapping_add(s.value)),
            }
        };
        let mut jump_table =
            Vec::with_capacity(self.slots.len() * kpatch_arch::JUMP_TABLE_ENTRY_SIZE);
        for slot in &self.slots {
            let Slot::Address(i) = *slot;
            let value = symaddr(i)?;
            jump_table.extend_from_slice(&arch.jump_table_entry(value));
        }
        let mut elf = elf_image.to_vec();
        for r in self.payload.relocs.iter().filter(|r| r.r_type != R_NONE) {
            let sec = &self.payload.sections[r.target];
            let sym = &self.payload.symbols[r.symbol];
            let place = secaddr[r.target] + r.offset;
            let at = (sec.offset + r.offset) as usize;
            let bytes = elf.get_mut(at..).filter(|b| !b.is_empty()).ok_or_else(|| {
                Error::Payload(format!(
                    "relocation at {:#x} in {} lies outside the payload",
                    r.offset, sec.name
                ))
            })?;
            let slot_addr = |s: Slot| {
                self.slot_of
                    .get(&s)
                    .map(|&k| self.layout.jump_entry(kpta, k as u64) + JUMP_TABLE_SLOT_OFFSET)
            };
            let need = arch.reloc_need(r.r_type)?;
            let (symbol, got_slot, addend) = match need {
                RelocNeed::Address => (symaddr(r.symbol)?, None, r.addend),
                RelocNeed::GotSlot => (symaddr(r.symbol)?, slot_addr(Slot::Address(r.symbol)), r.addend),
                // kpatch_strip --rel-fixup stored the original's GOT slot (link-time address)
                // holding the variable's thread-pointer offset in the addend.
                RelocNeed::TlsGotSlot => (0, Some((r.addend as u64).wrapping_add(load_bias)), arch.tls_ie_addend()),
                RelocNeed::TlsOffset => {
                    return Err(Error::Unsupported(format!(
                        "{} against {} in {}: local-exec TLS relocations must be resolved by kpatch_strip --rel-fixup",
                        arch.reloc_name(r.r_type),
                        sym.name,
                        sec.name
                    )))
                }
            };
            let mut reloc = Reloc {
                r_type: r.r_type,
                place,
                symbol,
                got_slot,
                addend,
            };
            let result = arch.apply_reloc(&reloc, bytes);
            // An import called or referenced PC-relatively may be out of reach of the region;
            // code then goes through its jump-table entry instead.
            let result = match result {
                Err(ArchError::RelocationOverflow { .. }) if sym.def == PSymDef::Undefined && need == RelocNeed::Address => {
                    match slot_addr(Slot::Address(r.symbol)) {
                        Some(slot) if sym.st_type != elf::STT_OBJECT => {
                            reloc.symbol = slot - JUMP_TABLE_SLOT_OFFSET;
                            arch.apply_reloc(&reloc, bytes)
                        }
                        _ => {
                            return Err(Error::Unsupported(format!(
                                "{} refers to the imported variable {} directly, which is too far from the patch; build the patch with --force-gotpcrel",
                                sec.name, sym.name
                            )))
                        }
                    }
                }
                other => other,
            };
            result.map_err(|e| Error::Relocation {
                symbol: sym.name.clone(),
                section: sec.name.clone(),
                source: e,
            })?;
        }
        let (_, info) = self.payload.section(KPATCH_INFO).ok_or_else(no_info)?;
        let start = info.offset as usize;
        let end = start.saturating_add(info.size as usize).min(elf.len());
        let records = records(elf.get(start..end).unwrap_or(&[]))?;
        Ok(Relocated {
            jump_table,
            elf,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{PReloc, PSection, PSymDef, PSymbol};
    use kpatch_arch::{Aarch64, X86_64};

    const TEXT: u64 = 0x40;
    const INFO: u64 = 0x80;

    fn section(name: &str, offset: u64, size: u64) -> PSection {
        PSection {
            name: name.into(),
            sh_type: elf::SHT_PROGBITS,
            flags: elf::SHF_ALLOC,
            addr: 0,
            offset,
            size,
        }
    }

    /// A payload whose one code relocation is a `NONE` with no symbol, as `kpatch_strip
    /// --rel-fixup` leaves for local-exec TLS.
    fn with_none_reloc() -> (Payload, Vec<u8>) {
        let mut image = vec![0u8; 0x100];
        image[TEXT as usize..TEXT as usize + 4].copy_from_slice(&[0x1f, 0x20, 0x03, 0xd5]);
        let record = InfoRecord::new(0x1000, 0x2000, 8, 8, 0);
        image[INFO as usize..INFO as usize + 48].copy_from_slice(record.as_bytes());
        let null = PSymbol {
            name: String::new(),
            version: None,
            value: 0,
            size: 0,
            st_type: elf::STT_NOTYPE,
            bind: elf::STB_LOCAL,
            def: PSymDef::Undefined,
        };
        let payload = Payload {
            machine: kpatch_arch::EM_AARCH64,
            sections: vec![
                section("", 0, 0),
                section(kpatch_file::KPATCH_TEXT, TEXT, 8),
                section(KPATCH_INFO, INFO, 48 + 24),
            ],
            symbols: vec![null],
            relocs: vec![PReloc {
                target: 1,
                offset: 0,
                symbol: 0,
                r_type: R_NONE,
                addend: 0,
            }],
        };
        (payload, image)
    }

    #[test]
    fn none_relocations_need_and_change_nothing() {
        for arch in [&Aarch64 as &dyn Arch, &X86_64] {
            let (payload, image) = with_none_reloc();
            let p = Prepared::new(arch, payload, &image, 4096).unwrap();
            assert!(p.imports.is_empty() && p.slots.is_empty());
            let r = p
                .relocate(arch, &image, 0x10_0000, 0, &HashMap::new())
                .unwrap();
            assert_eq!(r.elf, image, "{}", arch.name());
            assert_eq!(r.records.len(), 1);
        }
    }
}
