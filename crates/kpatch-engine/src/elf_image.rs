//! What the engine needs to know about one ELF file mapped in the target: its build-id, load
//! segments, dynamic symbols (with versions), `DT_DEBUG` slot and unwind tables. Read once from
//! the file that is actually mapped (`/proc/PID/map_files/...`), while the target runs.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use kpatch_file::build_id_hex;
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader, Sym};
use object::Endianness;

use crate::error::{Error, Result};

type Header = elf::FileHeader64<Endianness>;

/// Kind of a dynamic symbol definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    Func,
    Object,
    /// `STT_GNU_IFUNC`: the value is a resolver to call in the target.
    Ifunc,
    Tls,
    Other,
}

/// One defined dynamic symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynSym {
    /// Link-time value (add the load bias).
    pub value: u64,
    pub size: u64,
    pub kind: SymKind,
    /// Version name (`GLIBC_2.2.5`), if versioned.
    pub version: Option<String>,
    /// A non-default (`@` rather than `@@`) version: only matched when asked for by name.
    pub hidden: bool,
}

/// A `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// A section's link-time address range and its bytes' range in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionData {
    pub svma: Range<u64>,
    pub file: Range<usize>,
}

/// An analysed ELF file.
#[derive(Debug)]
pub struct ElfImage {
    pub data: Vec<u8>,
    pub build_id: Option<String>,
    pub loads: Vec<LoadSegment>,
    /// Address (link-time) of the `DT_DEBUG` entry's value, where ld.so stores `&_r_debug`.
    pub dt_debug: Option<u64>,
    pub dynsyms: HashMap<String, Vec<DynSym>>,
    /// Names of the undefined dynamic symbols (what the object imports).
    pub imports: HashSet<String>,
    pub eh_frame: Option<SectionData>,
    pub eh_frame_hdr: Option<SectionData>,
    pub text: Option<SectionData>,
    pub got: Option<Range<u64>>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::BadElf(format!("{what}: {e}"))
}

/// Hex build-id from the first `NT_GNU_BUILD_ID` note of an ELF file's program headers or
/// sections.
pub fn build_id_of(data: &[u8]) -> Result<Option<String>> {
    let header = Header::parse(data).map_err(|e| bad("ELF header", e))?;
    let endian = header.endian().map_err(|e| bad("ELF header", e))?;
    Ok(find_build_id(header, endian, data))
}

fn find_build_id(header: &Header, endian: Endianness, data: &[u8]) -> Option<String> {
    if let Ok(phdrs) = header.program_headers(endian, data) {
        for ph in phdrs {
            if let Ok(Some(mut notes)) = ph.notes(endian, data) {
                while let Ok(Some(note)) = notes.next() {
                    if note.name() == b"GNU" && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                        return Some(build_id_hex(note.desc()));
                    }
                }
            }
        }
    }
    let sections = header.sections(endian, data).ok()?;
    for s in sections.iter() {
        if let Ok(Some(mut notes)) = s.notes(endian, data) {
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"GNU" && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                    return Some(build_id_hex(note.desc()));
                }
            }
        }
    }
    None
}

impl ElfImage {
    /// Analyses the bytes of an ELF executable or shared object.
    pub fn parse(data: Vec<u8>) -> Result<ElfImage> {
        let header = Header::parse(&*data).map_err(|e| bad("ELF header", e))?;
        let endian = header.endian().map_err(|e| bad("ELF header", e))?;
        let build_id = find_build_id(header, endian, &data);
        let mut loads = Vec::new();
        let mut dynamic_vaddr = None;
        for ph in header
            .program_headers(endian, &*data)
            .map_err(|e| bad("program headers", e))?
        {
            match ph.p_type(endian) {
                elf::PT_LOAD => loads.push(LoadSegment {
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    flags: ph.p_flags(endian).0,
                }),
                elf::PT_DYNAMIC => dynamic_vaddr = Some(ph.p_vaddr(endian)),
                _ => {}
            }
        }
        let sections = header
            .sections(endian, &*data)
            .map_err(|e| bad("section headers", e))?;
        let mut dt_debug = None;
        if let (Some(dvaddr), Ok(Some((dyns, _)))) =
            (dynamic_vaddr, sections.dynamic(endian, &*data))
        {
            for (i, d) in dyns.iter().enumerate() {
                if d.d_tag(endian) == elf::DT_DEBUG {
                    dt_debug = Some(
                        dvaddr + (i * std::mem::size_of::<elf::Dyn64<Endianness>>()) as u64 + 8,
                    );
                }
            }
        }
        let section = |name: &[u8]| -> Option<SectionData> {
            let (_, s) = sections.section_by_name(endian, name)?;
            let addr = s.sh_addr(endian);
            let size = s.sh_size(endian);
            let off = s.sh_offset(endian) as usize;
            if s.sh_type(endian) == elf::SHT_NOBITS {
                return None;
            }
            let end = off.checked_add(size as usize)?;
            (end <= data.len()).then(|| SectionData {
                svma: addr..addr + size,
                file: off..end,
            })
        };
        let eh_frame = section(b".eh_frame");
        let eh_frame_hdr = section(b".eh_frame_hdr");
        let text = section(b".text");
        let got = sections
            .section_by_name(endian, b".got")
            .map(|(_, s)| s.sh_addr(endian)..s.sh_addr(endian) + s.sh_size(endian));

        let mut dynsyms: HashMap<String, Vec<DynSym>> = HashMap::new();
        let mut imports = HashSet::new();
        if let Ok(symtab) = sections.symbols(endian, &*data, elf::SHT_DYNSYM) {
            let versions = sections.versions(endian, &*data).ok().flatten();
            for (index, sym) in symtab.enumerate() {
                if sym.is_undefined(endian) {
                    if let Ok(name) = symtab.symbol_name(endian, sym) {
                        if !name.is_empty() {
                            imports.insert(String::from_utf8_lossy(name).into_owned());
                        }
                    }
                    continue;
                }
                if sym.st_bind() == elf::STB_LOCAL {
                    continue;
                }
                let Ok(name) = symtab.symbol_name(endian, sym) else {
                    continue;
                };
                let Ok(name) = std::str::from_utf8(name) else {
                    continue;
                };
                let kind = match sym.st_type() {
                    elf::STT_FUNC => SymKind::Func,
                    elf::STT_OBJECT | elf::STT_COMMON => SymKind::Object,
                    elf::STT_GNU_IFUNC => SymKind::Ifunc,
                    elf::STT_TLS => SymKind::Tls,
                    _ => SymKind::Other,
                };
                let (version, hidden) = match &versions {
                    Some(v) => {
                        let vi = v.version_index(endian, index);
                        let name = v
                            .version(vi.index())
                            .ok()
                            .flatten()
                            .map(|ver| String::from_utf8_lossy(ver.name()).into_owned());
                        (name, vi.is_hidden())
                    }
                    None => (None, false),
                };
                dynsyms.entry(name.to_owned()).or_default().push(DynSym {
                    value: sym.st_value(endian),
                    size: sym.st_size(endian),
                    kind,
                    version,
                    hidden,
                });
            }
        }
        Ok(ElfImage {
            data,
            build_id,
            loads,
            dt_debug,
            dynsyms,
            imports,
            eh_frame,
            eh_frame_hdr,
            text,
            got,
        })
    }

    /// Looks up a defined dynamic symbol. With a version, only that version matches; without
    /// one, the default (non-hidden) definition.
    pub fn lookup(&self, name: &str, version: Option<&str>) -> Option<&DynSym> {
        let defs = self.dynsyms.get(name)?;
        match version {
            Some(v) => defs
                .iter()
                .find(|d| d.version.as_deref() == Some(v))
                // A versioned reference binds to an unversioned definition (the linker allows it).
                .or_else(|| defs.iter().find(|d| d.version.is_none())),
            None => defs.iter().find(|d| !d.hidden),
        }
    }
}
