//! Validation of the payload's ELF framing: the file header, the section header table,
//! section names and the extents of every section's bytes. The structures are `object`'s;
//! symbols are read with `object`'s reader once the framing is known to be sound.

use object::elf::{
    SectionFlags, SectionType, ELFCLASS64, ELFDATA2LSB, ELFMAG, ET_REL, EV_CURRENT, SHT_NOBITS,
    SHT_NULL, SHT_RELA, SHT_STRTAB, SHT_SYMTAB,
};
use object::read::elf::{SectionTable, SymbolTable};
use object::read::StringTable;

use crate::elf::{
    FileHeader, Rela, SectionHeader, ENDIAN, FILE_HEADER_SIZE, RELA_SIZE, SECTION_HEADER_SIZE,
    SYM_SIZE,
};
use crate::error::{ElfError, FormatError, InfoError};
use crate::info_record::{info_section_records, InfoRecord};
use crate::sections::KPATCH_INFO;

/// One section of the payload, with its bytes (empty for `SHT_NOBITS` and `SHT_NULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// Index in the section header table.
    pub index: usize,
    /// Name from `.shstrtab`.
    pub name: &'a str,
    /// `sh_type`.
    pub sh_type: SectionType,
    /// `sh_flags`.
    pub flags: SectionFlags,
    /// `sh_addr`.
    pub addr: u64,
    /// `sh_offset`, from the start of the ELF.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`.
    pub link: u32,
    /// `sh_info`.
    pub info: u32,
    /// `sh_addralign`.
    pub addralign: u64,
    /// `sh_entsize`.
    pub entsize: u64,
    /// The section's bytes in the ELF.
    pub data: &'a [u8],
}

impl Section<'_> {
    /// Whether the section has bytes in the file (neither `SHT_NOBITS` nor `SHT_NULL`).
    pub fn has_data(&self) -> bool {
        has_data(self.sh_type)
    }
}

/// A payload ELF whose framing has been validated: every section lies within the bytes and
/// every name, link and entry size is consistent.
#[derive(Debug, Clone)]
pub struct PayloadElf<'a> {
    bytes: &'a [u8],
    header: &'a FileHeader,
    table: SectionTable<'a, FileHeader>,
    sections: Vec<Section<'a>>,
}

impl<'a> PayloadElf<'a> {
    /// Validates the framing of the ELF in `bytes` (which may carry trailing padding).
    pub fn parse(bytes: &'a [u8]) -> Result<PayloadElf<'a>, ElfError> {
        let header = parse_file_header(bytes)?;
        let headers = section_headers(bytes, header)?;
        let (shstrtab, names) = shstrtab(bytes, header, headers)?;
        let mut sections = Vec::with_capacity(headers.len());
        for (index, sh) in headers.iter().enumerate() {
            sections.push(section(bytes, shstrtab, index, sh)?);
        }
        for section in &sections {
            check_links(section, &sections)?;
        }
        Ok(PayloadElf {
            bytes,
            header,
            table: SectionTable::new(headers, names),
            sections,
        })
    }

    /// The payload's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The ELF file header.
    pub fn header(&self) -> &'a FileHeader {
        self.header
    }

    /// `e_machine` (`EM_X86_64`, `EM_AARCH64`).
    pub fn machine(&self) -> object::elf::Machine {
        self.header.e_machine.get(ENDIAN)
    }

    /// Every section, in section header table order (index 0 included).
    pub fn sections(&self) -> &[Section<'a>] {
        &self.sections
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The bytes of the first section named `name` (empty for `SHT_NOBITS`).
    pub fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        self.section(name).map(|s| s.data)
    }

    /// The symbol table (the first `SHT_SYMTAB` section; empty if there is none), read with
    /// `object`: its names are checked when they are looked up.
    pub fn symbols(&self) -> Result<SymbolTable<'a, FileHeader>, object::read::Error> {
        self.table.symbols(ENDIAN, self.bytes, SHT_SYMTAB)
    }

    /// The relocations of an `SHT_RELA` section (none for any other section).
    pub fn relas(&self, section: &Section<'a>) -> &'a [Rela] {
        if section.sh_type != SHT_RELA {
            return &[];
        }
        // The framing check made the size a whole number of entries.
        object::pod::slice_from_all_bytes(section.data).unwrap_or_default()
    }

    /// The `.kpatch.info` section and its records, checked as `kpatch_strip` writes them.
    pub fn info(&self) -> Result<(&Section<'a>, &'a [InfoRecord]), FormatError> {
        let mut found = self.sections.iter().filter(|s| s.name == KPATCH_INFO);
        let section = found.next().ok_or(InfoError::Missing)?;
        if let Some(second) = found.next() {
            return Err(InfoError::Duplicate {
                first: section.index,
                second: second.index,
            }
            .into());
        }
        if !section.has_data() {
            return Err(InfoError::NoBits.into());
        }
        Ok((section, info_section_records(section.data)?))
    }
}

fn has_data(sh_type: SectionType) -> bool {
    sh_type != SHT_NOBITS && sh_type != SHT_NULL
}

fn unsupported(field: &'static str, value: u64, expected: &'static str) -> ElfError {
    ElfError::Unsupported {
        field,
        value,
        expected,
    }
}

fn parse_file_header(bytes: &[u8]) -> Result<&FileHeader, ElfError> {
    if bytes
        .get(..ELFMAG.len())
        .is_some_and(|magic| magic != ELFMAG)
    {
        return Err(ElfError::BadMagic);
    }
    let (header, _) = object::pod::from_bytes::<FileHeader>(bytes)
        .map_err(|_| ElfError::TooShort { len: bytes.len() })?;
    let ident = &header.e_ident;
    if ident.class != ELFCLASS64 {
        let value = ident.class.0.into();
        return Err(unsupported("e_ident[EI_CLASS]", value, "2 (ELFCLASS64)"));
    }
    if ident.data != ELFDATA2LSB {
        let value = ident.data.0.into();
        return Err(unsupported("e_ident[EI_DATA]", value, "1 (little-endian)"));
    }
    if ident.version != EV_CURRENT {
        let value = ident.version.0.into();
        return Err(unsupported("e_ident[EI_VERSION]", value, "1 (EV_CURRENT)"));
    }
    if header.e_version.get(ENDIAN) != u32::from(EV_CURRENT.0) {
        let value = header.e_version.get(ENDIAN).into();
        return Err(unsupported("e_version", value, "1 (EV_CURRENT)"));
    }
    if header.e_type.get(ENDIAN) != ET_REL {
        return Err(unsupported(
            "e_type",
            header.e_type.get(ENDIAN).0.into(),
            "1 (ET_REL): pass the output of `kpatch_strip --undo-link`",
        ));
    }
    if usize::from(header.e_shentsize.get(ENDIAN)) != SECTION_HEADER_SIZE {
        let value = header.e_shentsize.get(ENDIAN).into();
        return Err(unsupported("e_shentsize", value, "64"));
    }
    Ok(header)
}

fn section_headers<'a>(
    bytes: &'a [u8],
    header: &FileHeader,
) -> Result<&'a [SectionHeader], ElfError> {
    let shoff = header.e_shoff.get(ENDIAN);
    let shnum = header.e_shnum.get(ENDIAN);
    if shnum == 0 {
        // Also rules out extended numbering (count in section 0's sh_size): far more
        // sections than a patch can have.
        return Err(unsupported("e_shnum", 0, "at least 1 section"));
    }
    if shoff < FILE_HEADER_SIZE as u64 {
        return Err(unsupported(
            "e_shoff",
            shoff,
            "at least 64 (the section header table follows the ELF header)",
        ));
    }
    let out_of_bounds = || ElfError::SectionTableOutOfBounds {
        shoff,
        shnum,
        len: bytes.len(),
    };
    let table = usize::try_from(shoff)
        .ok()
        .and_then(|start| bytes.get(start..))
        .ok_or_else(out_of_bounds)?;
    object::pod::slice_from_bytes::<SectionHeader>(table, usize::from(shnum))
        .map(|(headers, _)| headers)
        .map_err(|_| out_of_bounds())
}

/// The bytes of `sh` in `bytes`, or `None` if they do not fit.
fn extent<'a>(bytes: &'a [u8], sh: &SectionHeader) -> Option<&'a [u8]> {
    let start = usize::try_from(sh.sh_offset.get(ENDIAN)).ok()?;
    let size = usize::try_from(sh.sh_size.get(ENDIAN)).ok()?;
    bytes.get(start..start.checked_add(size)?)
}

/// The bytes of `.shstrtab`, and the same as `object`'s string table.
fn shstrtab<'a>(
    bytes: &'a [u8],
    header: &FileHeader,
    headers: &[SectionHeader],
) -> Result<(&'a [u8], StringTable<'a>), ElfError> {
    let shstrndx = header.e_shstrndx.get(ENDIAN).0;
    let bad = |problem| ElfError::BadShstrndx { shstrndx, problem };
    if shstrndx == 0 {
        return Err(bad("is SHN_UNDEF: the payload has no section names"));
    }
    let sh = headers
        .get(usize::from(shstrndx))
        .ok_or_else(|| bad("is not below e_shnum"))?;
    if sh.sh_type.get(ENDIAN) != SHT_STRTAB {
        return Err(bad("does not index an SHT_STRTAB section"));
    }
    let data = extent(bytes, sh).ok_or_else(|| ElfError::SectionOutOfBounds {
        section: format!("{shstrndx} (.shstrtab)"),
        offset: sh.sh_offset.get(ENDIAN),
        size: sh.sh_size.get(ENDIAN),
        len: bytes.len(),
    })?;
    Ok((data, StringTable::new(data, 0, data.len() as u64)))
}

fn section_name(shstrtab: &[u8], index: usize, sh_name: u32) -> Result<&str, ElfError> {
    let bad = |problem| ElfError::BadSectionName {
        index,
        sh_name,
        problem,
    };
    let tail = usize::try_from(sh_name)
        .ok()
        .and_then(|start| shstrtab.get(start..))
        .ok_or_else(|| bad("is past the end of .shstrtab"))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("names a string without a terminating NUL in .shstrtab"))?;
    core::str::from_utf8(tail.get(..end).unwrap_or_default())
        .map_err(|_| bad("names a string that is not valid UTF-8"))
}

fn section<'a>(
    bytes: &'a [u8],
    shstrtab: &'a [u8],
    index: usize,
    sh: &SectionHeader,
) -> Result<Section<'a>, ElfError> {
    let name = section_name(shstrtab, index, sh.sh_name.get(ENDIAN))?;
    let sh_type = sh.sh_type.get(ENDIAN);
    let data = if has_data(sh_type) {
        extent(bytes, sh).ok_or_else(|| ElfError::SectionOutOfBounds {
            section: format!("{index} ({name})"),
            offset: sh.sh_offset.get(ENDIAN),
            size: sh.sh_size.get(ENDIAN),
            len: bytes.len(),
        })?
    } else {
        &[]
    };
    Ok(Section {
        index,
        name,
        sh_type,
        flags: sh.sh_flags.get(ENDIAN),
        addr: sh.sh_addr.get(ENDIAN),
        offset: sh.sh_offset.get(ENDIAN),
        size: sh.sh_size.get(ENDIAN),
        link: sh.sh_link.get(ENDIAN),
        info: sh.sh_info.get(ENDIAN),
        addralign: sh.sh_addralign.get(ENDIAN),
        entsize: sh.sh_entsize.get(ENDIAN),
        data,
    })
}

/// Checks what the loader relies on in symbol tables and relocation sections: entry sizes,
/// and links to sections of the right type.
fn check_links(section: &Section<'_>, sections: &[Section<'_>]) -> Result<(), ElfError> {
    let bad = |field, value: u64, problem: String| ElfError::BadSectionField {
        section: format!("{} ({})", section.index, section.name),
        field,
        value,
        problem,
    };
    let (entsize, link_type, link_type_name) = match section.sh_type {
        SHT_SYMTAB => (SYM_SIZE, SHT_STRTAB, "SHT_STRTAB"),
        SHT_RELA => (RELA_SIZE, SHT_SYMTAB, "SHT_SYMTAB"),
        _ => return Ok(()),
    };
    if section.entsize != entsize as u64 {
        return Err(bad(
            "sh_entsize",
            section.entsize,
            format!("expected {entsize}"),
        ));
    }
    if !section.size.is_multiple_of(entsize as u64) {
        return Err(bad(
            "sh_size",
            section.size,
            format!("not a multiple of sh_entsize {entsize}"),
        ));
    }
    let linked = usize::try_from(section.link)
        .ok()
        .and_then(|link| sections.get(link))
        .filter(|_| section.link != 0)
        .ok_or_else(|| {
            bad(
                "sh_link",
                section.link.into(),
                format!("not a section index in 1..{}", sections.len()),
            )
        })?;
    if linked.sh_type != link_type {
        return Err(bad(
            "sh_link",
            section.link.into(),
            format!("links to {} which is not {link_type_name}", linked.name),
        ));
    }
    let info = u64::from(section.info);
    match section.sh_type {
        SHT_SYMTAB => {
            // sh_info is one past the last local symbol.
            let count = section.size / SYM_SIZE as u64;
            if info > count {
                return Err(bad(
                    "sh_info",
                    info,
                    format!("more than the {count} symbols in the table"),
                ));
            }
        }
        _ => {
            // sh_info is the section the relocations apply to.
            if section.info == 0 || info >= sections.len() as u64 {
                return Err(bad(
                    "sh_info",
                    info,
                    format!("not a section index in 1..{}", sections.len()),
                ));
            }
        }
    }
    Ok(())
}
