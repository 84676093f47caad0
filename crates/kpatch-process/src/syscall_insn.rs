//! Finding an instruction that performs a syscall in the target, to borrow for injected
//! syscalls without writing any code.

use crate::error::{Error, Result};
use crate::maps::MapEntry;
use crate::memory::Memory;
use crate::process::Process;

impl Process {
    /// Address of an instruction that performs a syscall, correctly aligned, in an executable
    /// mapping: the vDSO first, then libc, then anything executable. Remembered, and checked
    /// again before each use (a patch may have overwritten it).
    pub(crate) fn syscall_instruction(&self) -> Result<u64> {
        let insn = self.arch().syscall_insn();
        let cached = *self
            .syscall_insn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(addr) = cached {
            if self.read_vec(addr, insn.len()).ok().as_deref() == Some(insn) {
                return Ok(addr);
            }
        }
        let maps = self.maps()?;
        let rank = |m: &MapEntry| {
            if m.is_special("[vdso]") {
                0
            } else if m
                .file_path()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.") || n.starts_with("libc-"))
            {
                1
            } else {
                2
            }
        };
        let mut candidates: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.perms.exec && !m.is_special("[vsyscall]") && m.start < 1 << 63)
            .collect();
        candidates.sort_by_key(|m| rank(m));
        let align = self.arch().insn_alignment().max(1);
        let found = candidates
            .into_iter()
            .find_map(|m| find_instruction(self, m, insn, align))
            .ok_or(Error::NoSyscallInstruction { pid: self.pid() })?;
        *self
            .syscall_insn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(found);
        Ok(found)
    }
}

/// First `align`-aligned occurrence of `insn` in the mapping, read in chunks.
fn find_instruction(mem: &impl Memory, m: &MapEntry, insn: &[u8], align: u64) -> Option<u64> {
    const CHUNK: u64 = 64 * 1024;
    if insn.is_empty() {
        return None;
    }
    let mut at = m.start;
    while at < m.end {
        let len = (CHUNK + insn.len() as u64 - 1).min(m.end - at);
        // An unreadable (execute-only) mapping is skipped.
        let buf = mem.read_vec(at, len as usize).ok()?;
        let hit = buf
            .windows(insn.len())
            .enumerate()
            .map(|(i, w)| (at + i as u64, w))
            .find(|(a, w)| a % align == 0 && *w == insn);
        if let Some((addr, _)) = hit {
            return Some(addr);
        }
        at += CHUNK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MapName, Perms};
    use std::cell::RefCell;

    struct Fake(RefCell<Vec<u8>>, u64);

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
            let mem = self.0.borrow();
            let start = (addr - self.1) as usize;
            buf.copy_from_slice(&mem[start..start + buf.len()]);
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn finds_aligned_instruction_across_chunks() {
        let base = 0x10000;
        let mut bytes = vec![0u8; 200 * 1024];
        // A misaligned svc, an aligned one further on, and a syscall straddling the first
        // chunk's end.
        let svc = [1, 0, 0, 0xd4];
        bytes[101..105].copy_from_slice(&svc);
        bytes[70000..70004].copy_from_slice(&svc);
        bytes[65535..65537].copy_from_slice(&[0x0f, 0x05]);
        let m = MapEntry {
            start: base,
            end: base + bytes.len() as u64,
            perms: Perms::default(),
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: MapName::Anonymous,
        };
        let fake = Fake(RefCell::new(bytes), base);
        assert_eq!(find_instruction(&fake, &m, &svc, 4), Some(base + 70000));
        assert_eq!(find_instruction(&fake, &m, &svc, 1), Some(base + 101));
        assert_eq!(
            find_instruction(&fake, &m, &[0x0f, 0x05], 1),
            Some(base + 65535)
        );
        assert_eq!(find_instruction(&fake, &m, &[0xcc, 0xcc], 1), None);
    }
}
