//! The ELF payload of a `.kpatch` file, decoded into what relocation needs: sections,
//! symbols and the relocations that apply to `.kpatch*` sections. docs/internals.md section 2
//! gives the meaning of each part.

use kpatch_file::{is_kpatch_section, PayloadElf};
use object::elf::{
    SectionFlags, SectionType, SymbolBind, SymbolType, SHN_ABS, SHN_COMMON, SHN_LORESERVE,
    SHN_UNDEF, SHT_RELA,
};
use object::read::elf::{Rela, Sym};

use crate::error::{Error, Result};

/// One section of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PSection {
    pub name: String,
    pub sh_type: SectionType,
    pub flags: SectionFlags,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

impl PSection {
    /// A section carried by the patch (its bytes are in the payload).
    pub fn is_kpatch(&self) -> bool {
        is_kpatch_section(&self.name)
    }
}

/// Where a symbol is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PSymDef {
    Undefined,
    Absolute,
    Section(usize),
}

/// One symbol of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PSymbol {
    /// Name without its `@version` suffix.
    pub name: String,
    /// The version from a `name@VERSION` or `name@@VERSION` suffix.
    pub version: Option<String>,
    pub value: u64,
    pub size: u64,
    pub st_type: SymbolType,
    pub bind: SymbolBind,
    pub def: PSymDef,
}

/// One relocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PReloc {
    /// Section the relocation patches.
    pub target: usize,
    pub offset: u64,
    pub symbol: usize,
    pub r_type: u32,
    pub addend: i64,
}

/// The decoded payload.
#[derive(Debug, Clone)]
pub struct Payload {
    pub machine: u16,
    pub sections: Vec<PSection>,
    pub symbols: Vec<PSymbol>,
    pub relocs: Vec<PReloc>,
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Payload(e.to_string())
}

/// Splits `printf@@GLIBC_2.2.5` into `printf` and `GLIBC_2.2.5`.
pub fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.find('@') {
        Some(i) => {
            let ver = name[i..].trim_start_matches('@');
            (&name[..i], (!ver.is_empty()).then_some(ver))
        }
        None => (name, None),
    }
}

impl Payload {
    /// Decodes a payload ELF (already framing-checked by `kpatch-file`, which reads it).
    pub fn parse(data: &[u8]) -> Result<Payload> {
        let elf = PayloadElf::parse(data).map_err(bad)?;
        let endian = kpatch_file::elf::ENDIAN;
        let sections: Vec<PSection> = elf
            .sections()
            .iter()
            .map(|s| PSection {
                name: s.name.to_owned(),
                sh_type: s.sh_type,
                flags: s.flags,
                addr: s.addr,
                offset: s.offset,
                size: s.size,
            })
            .collect();
        let symtab = elf.symbols().map_err(bad)?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for sym in symtab.iter() {
            let raw = symtab.symbol_name(endian, sym).map_err(bad)?;
            let full = String::from_utf8_lossy(raw);
            let (name, version) = split_version(&full);
            let def = match sym.st_shndx(endian) {
                SHN_UNDEF => PSymDef::Undefined,
                SHN_ABS => PSymDef::Absolute,
                SHN_COMMON => {
                    return Err(Error::Payload(format!(
                        "symbol {full} is a COMMON symbol; the patch must define it"
                    )))
                }
                i if usize::from(i.0) < sections.len() && i.0 < SHN_LORESERVE => {
                    PSymDef::Section(usize::from(i.0))
                }
                i => {
                    return Err(Error::Payload(format!(
                        "symbol {full} has an invalid section index {i}"
                    )))
                }
            };
            symbols.push(PSymbol {
                name: name.to_owned(),
                version: version.map(str::to_owned),
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                st_type: sym.st_type(),
                bind: sym.st_bind(),
                def,
            });
        }
        let mut relocs = Vec::new();
        for s in elf.sections().iter().filter(|s| s.sh_type == SHT_RELA) {
            let target = s.info as usize;
            let Some(tsec) = sections.get(target) else {
                return Err(Error::Payload(format!(
                    "a relocation section applies to missing section {target}"
                )));
            };
            if !tsec.is_kpatch() {
                continue;
            }
            for r in elf.relas(s) {
                let symbol = r.r_sym(endian, false) as usize;
                if symbol >= symbols.len() {
                    return Err(Error::Payload(format!(
                        "a relocation in {} refers to missing symbol {symbol}",
                        tsec.name
                    )));
                }
                let offset = r.r_offset(endian);
                if offset > tsec.size {
                    return Err(Error::Payload(format!(
                        "a relocation at offset {offset:#x} lies outside {} ({:#x} bytes)",
                        tsec.name, tsec.size
                    )));
                }
                relocs.push(PReloc {
                    target,
                    offset,
                    symbol,
                    r_type: r.r_type(endian, false).0,
                    addend: r.r_addend(endian),
                });
            }
        }
        Ok(Payload {
            machine: elf.machine().0,
            sections,
            symbols,
            relocs,
        })
    }

    /// Index of the section with this name.
    pub fn section(&self, name: &str) -> Option<(usize, &PSection)> {
        self.sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elf_edit::{Elf, Rela, Section, Symbol};
    use kpatch_file::{rela_section_name, InfoRecord, INFO_END_MARKER, KPATCH_INFO, KPATCH_TEXT};
    use object::elf::*;

    /// A payload as `kpatch_strip` leaves it: a placeholder for the original `.text`,
    /// `.kpatch.text` calling `puts@GLIBC_2.2.5` and `.kpatch.info` with one record, each
    /// with its relocations, and `.rela.text` of the original (not the patch's).
    fn payload(extra: Option<Symbol>) -> Vec<u8> {
        let mut elf = Elf::new(ET_REL, EM_X86_64);
        let text = elf.add_section(Section {
            addr: 0x1000,
            size: 0x40,
            ..Section::new(".text", SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, Vec::new())
        });
        let code = vec![0xe8, 0, 0, 0, 0, 0xc3];
        let ktext = elf.add_section(Section::new(KPATCH_TEXT, SHT_PROGBITS, SHF_ALLOC, code));
        let mut info = InfoRecord::new(0, 0, 16, 6, 0).as_bytes().to_vec();
        info.extend_from_slice(&INFO_END_MARKER);
        let kinfo = elf.add_section(Section::new(KPATCH_INFO, SHT_PROGBITS, SHF_ALLOC, info));
        let symtab = elf.add_symbol_table();
        let sym = |name: &str, sym_type, bind, shndx: usize, value| Symbol {
            name: name.into(),
            name_offset: u32::MAX,
            sym_type,
            bind,
            shndx: SymbolSection(shndx as u16),
            value,
            ..Symbol::default()
        };
        let mut syms = vec![
            Symbol::default(),
            sym("", STT_SECTION, STB_LOCAL, ktext, 0x4711),
            sym("f", STT_FUNC, STB_GLOBAL, text, 0x10),
            sym("puts@GLIBC_2.2.5", STT_FUNC, STB_GLOBAL, 0, 0),
        ];
        syms.extend(extra);
        elf.set_symbols(symtab, &syms).unwrap();
        let mut rela = |target: usize, relas: &[Rela]| {
            let name = rela_section_name(&elf.sections[target].name);
            let index = elf.add_section(Section {
                link: symtab as u32,
                info: target as u32,
                entsize: 24,
                ..Section::new(&name, SHT_RELA, SHF_INFO_LINK, Vec::new())
            });
            elf.set_relas(index, relas).unwrap();
        };
        let r = |offset, sym, r_type, addend| Rela {
            offset,
            sym,
            r_type,
            addend,
        };
        rela(ktext, &[r(1, 3, R_X86_64_PLT32, -4)]);
        rela(kinfo, &[r(0, 2, R_X86_64_64, 0), r(8, 1, R_X86_64_64, 0)]);
        rela(text, &[r(0x20, 2, R_X86_64_PC32, -4)]);
        elf.write()
    }

    #[test]
    fn sections_symbols_and_the_patch_relocations_are_decoded() {
        let p = Payload::parse(&payload(None)).unwrap();
        assert_eq!(p.machine, EM_X86_64.0);
        let names: Vec<&str> = p.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "",
                ".shstrtab",
                ".text",
                ".kpatch.text",
                ".kpatch.info",
                ".strtab",
                ".symtab",
                ".rela.kpatch.text",
                ".rela.kpatch.info",
                ".rela.text"
            ]
        );
        assert!(p.sections[3].is_kpatch() && !p.sections[2].is_kpatch());
        assert_eq!(
            (p.sections[2].sh_type, p.sections[2].addr),
            (SHT_NOBITS, 0x1000)
        );
        let puts = &p.symbols[3];
        assert_eq!(
            (puts.name.as_str(), puts.version.as_deref(), puts.def),
            ("puts", Some("GLIBC_2.2.5"), PSymDef::Undefined)
        );
        assert_eq!(
            (p.symbols[1].st_type, p.symbols[1].def),
            (STT_SECTION, PSymDef::Section(3))
        );
        assert_eq!((p.symbols[2].bind, p.symbols[2].value), (STB_GLOBAL, 0x10));
        // The original's relocations are not the patch's business.
        let relocs: Vec<(usize, u64, usize, u32)> = p
            .relocs
            .iter()
            .map(|r| (r.target, r.offset, r.symbol, r.r_type))
            .collect();
        assert_eq!(
            relocs,
            [
                (3, 1, 3, R_X86_64_PLT32.0),
                (4, 0, 2, R_X86_64_64.0),
                (4, 8, 1, R_X86_64_64.0)
            ]
        );
        assert_eq!(p.relocs[0].addend, -4);
    }

    #[test]
    fn a_common_symbol_is_refused() {
        let common = Symbol {
            name: "c".into(),
            name_offset: u32::MAX,
            sym_type: STT_OBJECT,
            bind: STB_GLOBAL,
            shndx: SHN_COMMON,
            ..Symbol::default()
        };
        let err = Payload::parse(&payload(Some(common)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbol c is a COMMON symbol"), "{err}");
    }

    #[test]
    fn versions_are_split_off() {
        assert_eq!(
            split_version("printf@@GLIBC_2.2.5"),
            ("printf", Some("GLIBC_2.2.5"))
        );
        assert_eq!(
            split_version("puts@GLIBC_2.2.5"),
            ("puts", Some("GLIBC_2.2.5"))
        );
        assert_eq!(split_version("main"), ("main", None));
        assert_eq!(split_version("odd@"), ("odd", None));
    }
}
