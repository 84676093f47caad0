//! What the service needs to know of an ELF file: its build-id, read from its first bytes
//! (where the note is in practice) or from all of it when it is not there; and whether it is a
//! program or a library.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much of a file is read first.
const PREFIX: u64 = 64 * 1024;

/// The GNU build-id of the ELF file `path`, as lowercase hex; `None` when it is not an ELF file,
/// has none, or cannot be read.
pub(crate) fn of_path(path: &Path) -> Option<String> {
    of_file(File::open(path).ok()?)
}

/// [`of_path`] of an open file (read from its current position, which must be the start).
pub(crate) fn of_file(file: File) -> Option<String> {
    let mut data = Vec::new();
    let mut prefix = file.take(PREFIX);
    prefix.read_to_end(&mut data).ok()?;
    if !data.starts_with(b"\x7fELF") {
        return None;
    }
    if let Ok(Some(id)) = kpatch_engine::build_id_of(&data) {
        return Some(id);
    }
    let mut file = prefix.into_inner();
    file.read_to_end(&mut data).ok()?;
    kpatch_engine::build_id_of(&data).ok().flatten()
}

const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// What the program headers of a 64-bit little-endian ELF file say.
struct Headers {
    file: File,
    e_type: u16,
    interp: bool,
    /// `PT_LOAD`s: virtual address, file offset, size in the file.
    loads: Vec<(u64, u64, u64)>,
    /// The dynamic section's entries (tag, value).
    dynamic: Vec<(u64, u64)>,
}

fn headers(path: &Path) -> Option<Headers> {
    let file = File::open(path).ok()?;
    let mut h = [0u8; 64];
    file.read_exact_at(&mut h, 0).ok()?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(&h, 32)?, u16_at(&h, 54)?, u16_at(&h, 56)?);
    let mut phdrs = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.read_exact_at(&mut phdrs, phoff).ok()?;
    let mut out = Headers {
        e_type: u16_at(&h, 16)?,
        interp: false,
        loads: Vec::new(),
        dynamic: Vec::new(),
        file,
    };
    let mut dynamic = None;
    for ph in phdrs.chunks(usize::from(phentsize).max(1)) {
        match u32_at(ph, 0)? {
            PT_INTERP => out.interp = true,
            PT_DYNAMIC => dynamic = Some((u64_at(ph, 8)?, u64_at(ph, 32)?)),
            PT_LOAD => out
                .loads
                .push((u64_at(ph, 16)?, u64_at(ph, 8)?, u64_at(ph, 32)?)),
            _ => {}
        }
    }
    if let Some((off, len)) = dynamic {
        let mut bytes = vec![0u8; usize::try_from(len.min(1 << 20)).ok()?];
        out.file.read_exact_at(&mut bytes, off).ok()?;
        out.dynamic = bytes
            .chunks_exact(16)
            .filter_map(|e| Some((u64_at(e, 0)?, u64_at(e, 8)?)))
            .collect();
    }
    Some(out)
}

/// Whether the 64-bit little-endian ELF file `path` is a program: `ET_EXEC`, or a
/// position-independent executable (`ET_DYN` with an interpreter and `DF_1_PIE`). A library
/// (even one that can be run, like the C library) is not.
pub(crate) fn is_program(path: &Path) -> bool {
    let Some(h) = headers(path) else { return false };
    h.e_type == ET_EXEC
        || (h.interp
            && h.dynamic
                .iter()
                .any(|&(tag, v)| tag == DT_FLAGS_1 && v & DF_1_PIE != 0))
}

/// The soname (`DT_SONAME`) of the 64-bit little-endian ELF file `path`.
pub(crate) fn soname(path: &Path) -> Option<String> {
    let h = headers(path)?;
    let value = |want: u64| h.dynamic.iter().find(|&&(tag, _)| tag == want).map(|e| e.1);
    let (strtab, name) = (value(DT_STRTAB)?, value(DT_SONAME)?);
    let at = strtab.checked_add(name)?;
    let &(vaddr, offset, _) = h
        .loads
        .iter()
        .find(|&&(vaddr, _, size)| at >= vaddr && at - vaddr < size)?;
    let mut bytes = [0u8; 256];
    let n = h.file.read_at(&mut bytes, offset + (at - vaddr)).ok()?;
    let end = bytes[..n].iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_files_have_one_and_others_none() {
        let me = std::env::current_exe().unwrap();
        let id = of_path(&me).expect("the test binary has a build-id");
        assert!(
            id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let data = std::fs::read(&me).unwrap();
        assert_eq!(kpatch_engine::build_id_of(&data).unwrap(), Some(id));
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        assert_eq!(of_path(&text), None);
        assert_eq!(of_path(&dir.path().join("missing")), None);
    }

    #[test]
    fn programs_are_told_from_libraries() {
        // This test binary is a program (PIE or not); the C library it runs with is not, even
        // though it can be run.
        assert!(is_program(&std::env::current_exe().unwrap()));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
            .expect("the C library is mapped");
        assert!(!is_program(Path::new(libc)), "{libc}");
        assert!(!is_program(Path::new("/nonexistent")));
        // The C library's soname is libc.so.6 whatever its file is called.
        assert_eq!(soname(Path::new(libc)).as_deref(), Some("libc.so.6"));
        assert_eq!(soname(&std::env::current_exe().unwrap()), None);
    }
}
