//! Parsing: every offset and size is checked against the input before it is used.

use object::elf::{ELFCLASS64, ELFDATA2LSB, ELFMAG, EV_CURRENT, SHN_XINDEX, SHT_NULL};
use object::pod::Pod;

use crate::error::ElfError;
use crate::model::{Elf, ProgramHeader, Section};
use crate::raw::{Ehdr, Phdr, Shdr, EHDR_SIZE, LE, PHDR_SIZE, SHDR_SIZE};
use crate::strtab::read_cstr;

/// The `size` bytes at `offset`, or an error naming `what`.
fn slice<'a>(
    data: &'a [u8],
    offset: u64,
    size: u64,
    what: &dyn Fn() -> String,
) -> Result<&'a [u8], ElfError> {
    let truncated = || ElfError::Truncated {
        what: what(),
        offset,
        size,
        file_len: data.len() as u64,
    };
    let end = offset.checked_add(size).ok_or_else(truncated)?;
    let (start, end) = (
        usize::try_from(offset).map_err(|_| truncated())?,
        usize::try_from(end).map_err(|_| truncated())?,
    );
    data.get(start..end).ok_or_else(truncated)
}

/// The records filling `bytes` (whose length the caller made a whole number of them).
fn records<'a, T: Pod>(bytes: &'a [u8], what: &dyn Fn() -> String) -> Result<&'a [T], ElfError> {
    object::pod::slice_from_all_bytes(bytes).map_err(|()| ElfError::Truncated {
        what: what(),
        offset: 0,
        size: bytes.len() as u64,
        file_len: bytes.len() as u64,
    })
}

/// The record at the start of `bytes` (which the caller made long enough).
fn record<'a, T: Pod>(bytes: &'a [u8], what: &dyn Fn() -> String) -> Result<&'a T, ElfError> {
    object::pod::from_bytes(bytes)
        .map(|(record, _)| record)
        .map_err(|()| ElfError::Truncated {
            what: what(),
            offset: 0,
            size: bytes.len() as u64,
            file_len: bytes.len() as u64,
        })
}

/// Parses a 64-bit little-endian ELF file.
pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
    if data.get(..4) != Some(&ELFMAG[..]) {
        return Err(ElfError::BadMagic);
    }
    let what = || "the ELF header".to_string();
    let ehdr: &Ehdr = record(slice(data, 0, EHDR_SIZE as u64, &what)?, &what)?;
    let unsupported = |field, value: u8, expected| ElfError::Unsupported {
        field,
        value: value as u64,
        expected,
    };
    let ident = &ehdr.e_ident;
    if ident.class != ELFCLASS64 {
        return Err(unsupported("EI_CLASS", ident.class.0, "ELFCLASS64 (2)"));
    }
    if ident.data != ELFDATA2LSB {
        return Err(unsupported("EI_DATA", ident.data.0, "ELFDATA2LSB (1)"));
    }
    if ident.version != EV_CURRENT {
        return Err(unsupported("EI_VERSION", ident.version.0, "EV_CURRENT (1)"));
    }
    let mut elf = Elf {
        osabi: ident.os_abi,
        abiversion: ident.abi_version,
        e_type: ehdr.e_type.get(LE),
        machine: ehdr.e_machine.get(LE),
        version: ehdr.e_version.get(LE),
        entry: ehdr.e_entry.get(LE),
        flags: ehdr.e_flags.get(LE),
        ..Elf::default()
    };
    let phoff = ehdr.e_phoff.get(LE);
    let shoff = ehdr.e_shoff.get(LE);
    let ehsize = ehdr.e_ehsize.get(LE);
    let phentsize = ehdr.e_phentsize.get(LE);
    let phnum = ehdr.e_phnum.get(LE);
    let shentsize = ehdr.e_shentsize.get(LE);
    let shnum = ehdr.e_shnum.get(LE);
    let shstrndx = ehdr.e_shstrndx.get(LE);
    if (ehsize as usize) < EHDR_SIZE {
        return Err(bad(
            "e_ehsize",
            ehsize as u64,
            "smaller than the 64-byte ELF header",
        ));
    }

    if phnum > 0 {
        if phentsize as usize != PHDR_SIZE {
            return Err(bad(
                "e_phentsize",
                phentsize as u64,
                "a 64-bit program header is 56 bytes",
            ));
        }
        let what = || format!("the program header table ({phnum} entries)");
        let table = slice(data, phoff, phnum as u64 * PHDR_SIZE as u64, &what)?;
        elf.program_headers = records::<Phdr>(table, &what)?
            .iter()
            .map(program_header)
            .collect();
    }

    if shoff == 0 {
        if shnum != 0 {
            return Err(bad("e_shnum", shnum as u64, "non-zero while e_shoff is 0"));
        }
        return Ok(elf);
    }
    if shentsize as usize != SHDR_SIZE {
        return Err(bad(
            "e_shentsize",
            shentsize as u64,
            "a 64-bit section header is 64 bytes",
        ));
    }
    let what = || "section header 0".to_string();
    let first: &Shdr = record(slice(data, shoff, SHDR_SIZE as u64, &what)?, &what)?;
    // Extended numbering: a count or string-table index too large for the ELF header lives in
    // section 0's sh_size and sh_link.
    let count = if shnum == 0 {
        first.sh_size.get(LE)
    } else {
        shnum as u64
    };
    let names_index = if shstrndx == SHN_XINDEX {
        first.sh_link.get(LE) as u64
    } else {
        shstrndx.0 as u64
    };
    let what = || format!("the section header table ({count} entries)");
    let table = slice(data, shoff, count.saturating_mul(SHDR_SIZE as u64), &what)?;
    // Sections may overlap (old linkers nest .rela.plt in .rela.dyn), but copying one range
    // into thousands of sections would exhaust memory: cap the total copied.
    let copy_budget = (data.len() as u64)
        .saturating_mul(2)
        .saturating_add(1 << 16);
    let mut copied = 0u64;
    for (i, h) in records::<Shdr>(table, &what)?.iter().enumerate() {
        let mut s = Section {
            sh_type: h.sh_type.get(LE),
            flags: h.sh_flags.get(LE),
            addr: h.sh_addr.get(LE),
            offset: h.sh_offset.get(LE),
            size: h.sh_size.get(LE),
            link: h.sh_link.get(LE),
            info: h.sh_info.get(LE),
            addralign: h.sh_addralign.get(LE),
            entsize: h.sh_entsize.get(LE),
            name_offset: h.sh_name.get(LE),
            ..Section::default()
        };
        // Section 0 is reserved: were it to hold data, writing the file would lose it.
        if i == 0 && s.sh_type != SHT_NULL {
            return Err(ElfError::BadSection {
                section: "[0]".into(),
                reason: format!("has type {}; section 0 must be SHT_NULL", s.sh_type),
            });
        }
        if s.has_file_data() {
            let bytes = slice(data, s.offset, s.size, &|| {
                format!("the data of section [{i}]")
            })?;
            copied = copied.saturating_add(s.size);
            if copied > copy_budget {
                return Err(ElfError::BadSection {
                    section: format!("[{i}]"),
                    reason: "the sections' data overlap far more than any real file's".into(),
                });
            }
            s.data = bytes.to_vec();
        }
        elf.sections.push(s);
    }
    if names_index != 0 {
        let idx = usize::try_from(names_index).unwrap_or(usize::MAX);
        let names = elf
            .sections
            .get(idx)
            .ok_or_else(|| bad("e_shstrndx", names_index, "not the index of a section"))?;
        if !names.has_file_data() {
            return Err(bad(
                "e_shstrndx",
                names_index,
                "names a section without data",
            ));
        }
        let names = names.data.clone();
        for (i, s) in elf.sections.iter_mut().enumerate() {
            let name =
                read_cstr(&names, s.name_offset as u64).ok_or_else(|| ElfError::BadString {
                    table: format!("the section-name table [{idx}]"),
                    offset: s.name_offset as u64,
                    user: format!("the name of section [{i}]"),
                })?;
            s.name = String::from_utf8_lossy(name).into_owned();
        }
        elf.shstrndx = idx;
    }
    Ok(elf)
}

fn bad(field: &str, value: u64, reason: &'static str) -> ElfError {
    ElfError::BadField {
        field: field.to_string(),
        value,
        reason,
    }
}

fn program_header(h: &Phdr) -> ProgramHeader {
    ProgramHeader {
        p_type: h.p_type.get(LE),
        flags: h.p_flags.get(LE),
        offset: h.p_offset.get(LE),
        vaddr: h.p_vaddr.get(LE),
        paddr: h.p_paddr.get(LE),
        filesz: h.p_filesz.get(LE),
        memsz: h.p_memsz.get(LE),
        align: h.p_align.get(LE),
    }
}
