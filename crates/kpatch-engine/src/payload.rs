//! The ELF payload of a `.kpatch` file, decoded into what relocation needs: sections,
//! symbols and the relocations that apply to `.kpatch*` sections. docs/internals.md section 2
//! gives the meaning of each part.

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use object::Endianness;

use crate::error::{Error, Result};

type Header = elf::FileHeader64<Endianness>;

/// One section of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PSection {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

impl PSection {
    /// A section carried by the patch (its bytes are in the payload).
    pub fn is_kpatch(&self) -> bool {
        self.name.starts_with(".kpatch")
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
    pub st_type: u8,
    pub bind: u8,
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
    /// Decodes a payload ELF (already framing-checked by `kpatch-file`).
    pub fn parse(data: &[u8]) -> Result<Payload> {
        let header = Header::parse(data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        if header.e_type(endian) != elf::ET_REL {
            return Err(Error::Payload("the payload is not an ET_REL ELF".into()));
        }
        let table = header.sections(endian, data).map_err(bad)?;
        let mut sections = Vec::with_capacity(table.len());
        for s in table.iter() {
            let name = table.section_name(endian, s).map_err(bad)?;
            sections.push(PSection {
                name: String::from_utf8_lossy(name).into_owned(),
                sh_type: s.sh_type(endian).0,
                flags: s.sh_flags(endian).0,
                addr: s.sh_addr(endian),
                offset: s.sh_offset(endian),
                size: s.sh_size(endian),
            });
        }
        let symtab = table.symbols(endian, data, elf::SHT_SYMTAB).map_err(bad)?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for sym in symtab.iter() {
            let raw = symtab.symbol_name(endian, sym).map_err(bad)?;
            let full = String::from_utf8_lossy(raw);
            let (name, version) = split_version(&full);
            let shndx = sym.st_shndx(endian).0;
            let def = match shndx {
                0 => PSymDef::Undefined,
                0xfff1 => PSymDef::Absolute,
                0xfff2 => {
                    return Err(Error::Payload(format!(
                        "symbol {full} is a COMMON symbol; the patch must define it"
                    )))
                }
                i if (i as usize) < sections.len() && i < 0xff00 => PSymDef::Section(i as usize),
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
                st_type: sym.st_type().0,
                bind: sym.st_bind().0,
                def,
            });
        }
        let mut relocs = Vec::new();
        for s in table.iter() {
            if s.sh_type(endian) != elf::SHT_RELA {
                continue;
            }
            let target = s.sh_info(endian) as usize;
            let Some(tsec) = sections.get(target) else {
                return Err(Error::Payload(format!(
                    "a relocation section applies to missing section {target}"
                )));
            };
            if !tsec.is_kpatch() {
                continue;
            }
            let relas = s
                .data_as_array::<elf::Rela64<Endianness>, _>(endian, data)
                .map_err(bad)?;
            for r in relas {
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
            machine: header.e_machine(endian).0,
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
