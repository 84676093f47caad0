//! Reading and writing a target's memory, stopped or running. Reads use `process_vm_readv`
//! (one syscall, no file offset games) and fall back to `/proc/PID/mem` for what it refuses
//! (pages without read permission); writes go through `/proc/PID/mem`, which, unlike
//! `process_vm_writev`, also writes read-only and executable pages (the jump hunks need it).

use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::process::Process;

/// A view of a target's memory. [`Process`] is the live one; the patch engine can use an
/// in-memory fake in its tests.
pub trait Memory {
    /// Fills `buf` from `addr`; fails unless every byte was read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes all of `data` at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<()>;

    /// Reads `len` bytes at `addr`.
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads a native-endian 64-bit word.
    fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut buf = [0; 8];
        self.read(addr, &mut buf)?;
        Ok(u64::from_ne_bytes(buf))
    }

    /// Writes a native-endian 64-bit word.
    fn write_u64(&self, addr: u64, value: u64) -> Result<()> {
        self.write(addr, &value.to_ne_bytes())
    }

    /// Fills each buffer from its address, as many reads as cheaply as the memory allows;
    /// returns, for each, whether it was read whole.
    fn read_many(&self, parts: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        parts
            .iter_mut()
            .map(|(addr, buf)| self.read(*addr, buf).is_ok())
            .collect()
    }
}

/// Most buffers one `process_vm_readv` takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

fn overflow(addr: u64, len: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("range {addr:#x}+{len:#x} wraps around the address space"),
    )
}

impl Memory for Process {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        let err = |source| Error::Read {
            pid: self.pid(),
            addr,
            len,
            source,
        };
        if addr.checked_add(len as u64).is_none() {
            return Err(err(overflow(addr, len)));
        }
        let mut done = 0;
        while done < len {
            let at = addr + done as u64;
            let rest = &mut buf[done..];
            let remote = [RemoteIoVec {
                base: at as usize,
                len: rest.len(),
            }];
            match process_vm_readv(
                Pid::from_raw(self.mem_tid()),
                &mut [IoSliceMut::new(rest)],
                &remote,
            ) {
                Ok(n) if n > 0 => done += n,
                // Refused or stopped short at an unreadable page: /proc/PID/mem reads what
                // the kernel allows a debugger to read.
                _ => match self.mem.read_at(rest, at) {
                    Ok(0) => {
                        return Err(err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("nothing mapped at {at:#x}"),
                        )))
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err(e)),
                },
            }
        }
        Ok(())
    }

    /// Reads up to [`IOV_MAX`] buffers per system call; what a call leaves (it stops at the
    /// first buffer it cannot read whole) is read one by one.
    fn read_many(&self, parts: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        let mut ok = vec![false; parts.len()];
        let mut next = 0;
        while next < parts.len() {
            let end = (next + IOV_MAX).min(parts.len());
            let chunk = &mut parts[next..end];
            let remote: Vec<RemoteIoVec> = chunk
                .iter()
                .map(|(a, b)| RemoteIoVec {
                    base: *a as usize,
                    len: b.len(),
                })
                .collect();
            let mut local: Vec<IoSliceMut<'_>> =
                chunk.iter_mut().map(|(_, b)| IoSliceMut::new(b)).collect();
            let mut got =
                process_vm_readv(Pid::from_raw(self.mem_tid()), &mut local, &remote).unwrap_or(0);
            drop(local);
            let mut whole = 0;
            for (_, b) in chunk.iter() {
                if got < b.len() {
                    break;
                }
                got -= b.len();
                whole += 1;
            }
            for flag in &mut ok[next..next + whole] {
                *flag = true;
            }
            // The one it stopped in, read alone (it may still be readable through
            // /proc/PID/mem); the call goes on after it.
            if whole < chunk.len() {
                let (a, b) = &mut chunk[whole];
                ok[next + whole] = self.read(*a, b).is_ok();
                next += whole + 1;
            } else {
                next = end;
            }
        }
        ok
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let err = |source| Error::Write {
            pid: self.pid(),
            addr,
            len: data.len(),
            source,
        };
        if addr.checked_add(data.len() as u64).is_none() {
            return Err(err(overflow(addr, data.len())));
        }
        self.mem.write_all_at(data, addr).map_err(err)
    }
}
