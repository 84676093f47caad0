//! Mapping patch regions in the target with syscalls its confinement allows.
//!
//! A region's code part is never writable: it is mapped read-execute from the start and
//! filled through `/proc/PID/mem` (which writes through the page protection), and only the
//! data part after it is made read-write. That is what `prctl(PR_SET_MDWE)` and systemd's
//! `MemoryDenyWriteExecute=` allow: they refuse memory that is writable and executable at
//! once and memory that gains execute permission, not an executable mapping made as such.
//!
//! Before the first syscall, the whole series (mappings, and the `munmap` that removes a
//! region again on failure or unpatch) is run through the stopped thread's seccomp filters
//! (see `kpatch_process::SeccompState`); if the filter refuses or punishes any of it, the other
//! way (two mappings instead of a mapping and an `mprotect`) is tried, then the other threads;
//! when nothing passes, the patch is refused before anything is changed, naming the filter.

use kpatch_process::{SeccompAction, StoppedThread, ThreadHandle};

use crate::error::Result;
use crate::session::Session;

const RX: i32 = libc::PROT_READ | libc::PROT_EXEC;
const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const MAP_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// A region to map: its address, total length, and the length of its read-execute part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub kpta: u64,
    pub total: u64,
    pub rx_len: u64,
}

/// How a region is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// One read-execute mapping; the data part then made read-write with `mprotect`.
    MapThenProtect,
    /// Two mappings: read-execute code, read-write data.
    TwoMaps,
}

/// One syscall of a way: its name for messages, number and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: &'static str,
    nr: u64,
    args: Vec<u64>,
}

fn mmap(nr: u64, addr: u64, len: u64, prot: i32) -> Call {
    // As ThreadHandle::mmap issues it: a fixed address never replacing anything, fd -1.
    let flags = MAP_FLAGS | libc::MAP_FIXED_NOREPLACE;
    Call {
        name: if prot & libc::PROT_EXEC != 0 {
            "mmap of the patch code (read-execute)"
        } else {
            "mmap of the patch data (read-write)"
        },
        nr,
        args: vec![addr, len, prot as u64, flags as u64, u64::MAX, 0],
    }
}

/// The syscalls of `way` for `r`, in order, then the `munmap` that would remove it.
fn calls(way: Way, r: Region, arch: &dyn kpatch_arch::Arch) -> Vec<Call> {
    let data = r.total - r.rx_len;
    let mut out = Vec::new();
    match way {
        Way::MapThenProtect => {
            out.push(mmap(arch.sys_mmap(), r.kpta, r.total, RX));
            if data > 0 {
                out.push(Call {
                    name: "mprotect of the patch data (read-write)",
                    nr: arch.sys_mprotect(),
                    args: vec![r.kpta + r.rx_len, data, RW as u64],
                });
            }
        }
        Way::TwoMaps => {
            out.push(mmap(arch.sys_mmap(), r.kpta, r.rx_len, RX));
            if data > 0 {
                out.push(mmap(arch.sys_mmap(), r.kpta + r.rx_len, data, RW));
            }
        }
    }
    out.push(Call {
        name: "munmap that removes a patch region",
        nr: arch.sys_munmap(),
        args: vec![r.kpta, r.total],
    });
    out
}

/// The first call of `way` for any of `regions` that `thread`'s filter does not let through,
/// with the filter's answer.
fn first_refused(
    thread: &ThreadHandle<'_>,
    way: Way,
    regions: &[Region],
) -> Result<Option<(Call, SeccompAction)>> {
    let arch = thread.process().arch();
    for r in regions {
        for c in calls(way, *r, arch) {
            let action = thread.seccomp_action(c.nr, &c.args)?;
            if !action.allows() {
                return Ok(Some((c, action)));
            }
        }
    }
    Ok(None)
}

/// A way for `thread`, or the refusal of the first way.
fn way_for(
    thread: &ThreadHandle<'_>,
    regions: &[Region],
) -> Result<std::result::Result<Way, kpatch_process::Error>> {
    let mut refusal = None;
    for way in [Way::MapThenProtect, Way::TwoMaps] {
        match first_refused(thread, way, regions)? {
            None => return Ok(Ok(way)),
            Some((call, action)) => {
                refusal.get_or_insert_with(|| kpatch_process::Error::SeccompRefuses {
                    pid: thread.process().pid(),
                    tid: thread.tid(),
                    syscall: call.name.to_owned(),
                    filter: thread
                        .seccomp()
                        .map(|s| s.describe())
                        .unwrap_or_else(|_| "a seccomp filter".into()),
                    action: action.to_string(),
                });
            }
        }
    }
    Ok(Err(refusal.unwrap_or(
        kpatch_process::Error::InvalidArgument("no way to map the patch regions".into()),
    )))
}

/// Stops a thread whose seccomp filter allows mapping `regions` one way or the other (the one
/// [`Session::stop_one`] picks first, then the others), and says which way. Fails, with nothing
/// injected, when no thread's filter allows it.
pub(crate) fn stop_thread_for<'s>(
    session: &'s Session<'_>,
    regions: &[Region],
) -> Result<(StoppedThread<'s>, Way)> {
    let mut stopped = session.stop_one()?;
    let first = way_for(&stopped.thread(), regions)?;
    let refusal = match first {
        Ok(way) => return Ok((stopped, way)),
        Err(e) => e,
    };
    let tried = stopped.tid();
    stopped.resume()?;
    let proc = &session.proc;
    for tid in proc.thread_ids()? {
        if tid == tried {
            continue;
        }
        let Ok(mut other) = proc.stop_one(tid, session.options().stop_timeout) else {
            continue;
        };
        if let Ok(Ok(way)) = way_for(&other.thread(), regions) {
            return Ok((other, way));
        }
        other.resume()?;
    }
    Err(refusal.into())
}

/// Maps `r` in the stopped thread `way`'s way; a refusal by the kernel's memory policy says
/// which policies refuse such memory.
pub(crate) fn map(thread: &mut ThreadHandle<'_>, way: Way, r: Region) -> Result<()> {
    map_region(thread, way, r).map_err(|e| match e {
        crate::error::Error::Target(
            ref t @ kpatch_process::Error::RemoteSyscall {
                errno: nix::errno::Errno::EACCES | nix::errno::Errno::EPERM,
                ..
            },
        ) => crate::error::Error::Unsupported(format!(
            "{t}: the process may not have executable memory even mapped read-execute from the start (MDWE: prctl PR_SET_MDWE or systemd's MemoryDenyWriteExecute= on a kernel stricter than 6.3's rule, or an SELinux execmem denial); nothing is left mapped"
        )),
        other => other,
    })
}

fn map_region(thread: &mut ThreadHandle<'_>, way: Way, r: Region) -> Result<()> {
    let data = r.total - r.rx_len;
    match way {
        Way::MapThenProtect => {
            thread.mmap(Some(r.kpta), r.total, RX, MAP_FLAGS)?;
            if data > 0 {
                if let Err(e) = thread.mprotect(r.kpta + r.rx_len, data, RW) {
                    let _ = thread.munmap(r.kpta, r.total);
                    return Err(e.into());
                }
            }
        }
        Way::TwoMaps => {
            thread.mmap(Some(r.kpta), r.rx_len, RX, MAP_FLAGS)?;
            if data > 0 {
                if let Err(e) = thread.mmap(Some(r.kpta + r.rx_len), data, RW, MAP_FLAGS) {
                    let _ = thread.munmap(r.kpta, r.rx_len);
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_never_writable_and_removal_is_checked_too() {
        let arch = kpatch_arch::for_machine(62).unwrap();
        let r = Region {
            kpta: 0x10000,
            total: 0x5000,
            rx_len: 0x3000,
        };
        for way in [Way::MapThenProtect, Way::TwoMaps] {
            let cs = calls(way, r, arch);
            for c in &cs {
                if c.nr == arch.sys_mmap() || c.nr == arch.sys_mprotect() {
                    let prot = c.args[2] as i32;
                    assert!(
                        prot & libc::PROT_WRITE == 0 || prot & libc::PROT_EXEC == 0,
                        "{way:?}: {c:?} is writable and executable"
                    );
                }
                if c.nr == arch.sys_mprotect() {
                    // Never gains execute permission (what MDWE refuses).
                    assert_eq!(c.args[2] as i32 & libc::PROT_EXEC, 0);
                }
            }
            assert_eq!(cs.last().unwrap().nr, arch.sys_munmap());
        }
        let two = calls(Way::TwoMaps, r, arch);
        assert_eq!(two[0].args[..3], [0x10000, 0x3000, RX as u64]);
        assert_eq!(two[1].args[..3], [0x13000, 0x2000, RW as u64]);
        let one = calls(Way::MapThenProtect, r, arch);
        assert_eq!(one[1].args, [0x13000, 0x2000, RW as u64]);
    }
}
