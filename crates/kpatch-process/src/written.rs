//! What a process wrote while it ran. Memory searched while the process runs needs, once it is
//! stopped, only the pages it wrote meanwhile searched again; [`WriteWatch`] says which.
//!
//! Two kernel mechanisms, preferred in this order:
//! - userfaultfd's asynchronous write protection (Linux 6.7, `UFFD_FEATURE_WP_ASYNC` and the
//!   `PAGEMAP_SCAN` ioctl): a userfaultfd of the target's address space, made by a syscall run
//!   in one of its threads, taken over with `pidfd_getfd` and closed in the target at once, is
//!   registered on the watched mappings only. `PAGEMAP_SCAN` write-protects their pages; the
//!   first write to a page lifts the protection in the kernel (a minor fault, nobody woken) and
//!   `PAGEMAP_SCAN` lists such pages later. Other mappings are not touched. The registration
//!   ends when our descriptor is closed: when the [`WriteWatch`] is dropped, or the tool dies.
//!   Anonymous and shared-memory mappings only: a private file mapping (a program's `.data`)
//!   cannot be watched this way.
//! - soft-dirty bits (`CONFIG_MEM_SOFT_DIRTY`, as CRIU uses them): writing `4` to
//!   `/proc/PID/clear_refs` clears them in the whole address space (every page of the process
//!   becomes write-protected, a virtual machine's guest memory included, and KVM drops its own
//!   mappings of it), and bit 55 of a page's `/proc/PID/pagemap` entry is set again by its next
//!   write.
//!
//! A kernel may have neither: then nothing can say what was written.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::Process;
use crate::thread::ThreadHandle;

/// `/proc/PID/pagemap` entry bits.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_SOFT_DIRTY: u64 = 1 << 55;

/// Entries of `/proc/PID/pagemap` read at a time.
const PAGEMAP_CHUNK: u64 = 32 * 1024;

/// `userfaultfd` flags: `UFFD_USER_MODE_ONLY` (no privilege needed), close-on-exec,
/// non-blocking.
const UFFD_FLAGS: u64 = 1 | libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64;
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`, `_IOWR(0xaa, 0x00, struct uffdio_register)`,
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const PAGEMAP_SCAN: u64 = 0xc060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Regions one `PAGEMAP_SCAN` returns at most.
const SCAN_REGIONS: usize = 512;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `ioctl(fd, request, arg)`, the errno on failure.
fn ioctl<T>(fd: RawFd, request: u64, arg: &mut T) -> std::io::Result<i64> {
    // SAFETY: every request used here takes a pointer to the `repr(C)` structure `T` the
    // kernel expects for it, valid and exclusively ours for the duration of the call.
    let r = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(i64::from(r))
    }
}

/// A raw syscall with up to three integer arguments; the errno on failure.
fn syscall3(nr: libc::c_long, a: u64, b: u64, c: u64) -> std::io::Result<i64> {
    // SAFETY: used for pidfd_open, pidfd_getfd and userfaultfd, whose arguments are integers
    // (no pointers); the kernel validates them.
    let r = unsafe { libc::syscall(nr, a, b, c) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor of ours, owned by no
    // one else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Whether this kernel offers userfaultfd's asynchronous write protection and `PAGEMAP_SCAN`:
/// tried on our own address space before anything is done to the target's.
fn uffd_async_supported() -> bool {
    let Ok(fd) = syscall3(libc::SYS_userfaultfd, UFFD_FLAGS, 0, 0) else {
        return false;
    };
    let fd = owned(fd);
    if handshake(fd.as_raw_fd()).is_err() {
        return false;
    }
    let Ok(pagemap) = File::open("/proc/self/pagemap") else {
        return false;
    };
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        category_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    // An empty range: only whether the ioctl exists is asked.
    ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg).is_ok()
}

/// The `UFFDIO_API` handshake asking for asynchronous write protection.
fn handshake(fd: RawFd) -> std::io::Result<()> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_API, &mut api).map(drop)
}

/// Whether this kernel keeps soft-dirty bits: a page we just wrote must have one.
fn soft_dirty_supported(page: u64) -> bool {
    let Ok(pagemap) = File::open("/proc/self/pagemap") else {
        return false;
    };
    // Every byte written: a page wholly inside is one we just wrote.
    let probe = std::hint::black_box(vec![1u8; 2 * page as usize]);
    let at = (probe.as_ptr() as u64 + page) & !(page - 1);
    let mut entry = [0u8; 8];
    let ok = pagemap.read_exact_at(&mut entry, at / page * 8).is_ok();
    drop(probe);
    ok && u64::from_ne_bytes(entry) & PM_SOFT_DIRTY != 0
}

/// Pages flagged in `/proc/PID/pagemap` (opened as `pagemap`), as merged ranges of `range`.
fn pages_where(
    pagemap: &File,
    path: &Path,
    range: Range<u64>,
    page: u64,
    pred: impl Fn(u64) -> bool,
) -> Result<Vec<Range<u64>>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let first = range.start / page;
    let last = range.end.div_ceil(page);
    let mut buf = vec![0u8; (PAGEMAP_CHUNK * 8) as usize];
    let mut at = first;
    while at < last {
        let n = (last - at).min(PAGEMAP_CHUNK);
        let bytes = &mut buf[..(n * 8) as usize];
        pagemap
            .read_exact_at(bytes, at * 8)
            .map_err(|e| Error::proc(path, e))?;
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(e);
            if pred(u64::from_ne_bytes(w)) {
                let p = (at + i as u64) * page;
                match out.last_mut() {
                    Some(r) if r.end == p => r.end = p + page,
                    _ => out.push(p..p + page),
                }
            }
        }
        at += n;
    }
    Ok(out)
}

impl Process {
    /// The pages of `range` that hold data (present in memory or swapped out), as merged
    /// ranges; the others have never been touched (or were discarded) and read as zeros.
    pub fn resident(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let path = self.proc_file("pagemap");
        let pagemap = File::open(&path).map_err(|e| Error::proc(&path, e))?;
        pages_where(&pagemap, &path, range, self.page_size(), |e| {
            e & (PM_PRESENT | PM_SWAPPED) != 0
        })
    }

    /// The mappings the process asked not to be inherited by a child (`madvise
    /// MADV_DONTFORK`, `dc` in `/proc/PID/smaps`): QEMU marks all of a guest's memory so.
    /// Reading `smaps` makes the kernel go through the page tables of every mapping.
    pub fn dont_fork(&self) -> Result<Vec<Range<u64>>> {
        let path = self.proc_file("smaps");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::proc(&path, e))?;
        Ok(parse_dont_fork(&text))
    }

    /// Whether a seccomp filter restricts the process's syscalls (one we inject could kill it).
    pub fn seccomp_filtered(&self) -> Result<bool> {
        let path = self.proc_file("status");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::proc(&path, e))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .is_some_and(|v| v.trim() != "0"))
    }
}

/// The ranges of the `smaps` records whose `VmFlags` include `dc`.
fn parse_dont_fork(text: &str) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut current: Option<Range<u64>> = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_ascii_whitespace().any(|f| f == "dc") {
                out.extend(current.take());
            }
            continue;
        }
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            current = Some(a..b);
        }
    }
    out
}

/// How writes are watched.
#[derive(Debug)]
enum How {
    Uffd {
        uffd: OwnedFd,
        pagemap: File,
        /// The ranges registered, as asked.
        registered: Vec<Range<u64>>,
    },
    SoftDirty {
        pagemap: File,
        clear_refs: PathBuf,
    },
}

/// The pages of a process written since [`WriteWatch::start`] (see the module documentation).
#[derive(Debug)]
pub struct WriteWatch {
    pid: i32,
    page: u64,
    pagemap_path: PathBuf,
    how: How,
}

impl WriteWatch {
    /// A watch by userfaultfd, made in the target through `thread` (stopped; its registers are
    /// restored). `None` when the kernel does not offer it, when a seccomp filter restricts the
    /// target's syscalls (the injected `userfaultfd` could kill it), or when the target may not
    /// make one or we may not take it.
    pub fn userfaultfd(thread: &mut ThreadHandle<'_>) -> Result<Option<WriteWatch>> {
        let proc = thread.process();
        if !uffd_async_supported() || proc.seccomp_filtered()? {
            return Ok(None);
        }
        let pid = proc.pid();
        let theirs = match thread.syscall(libc::SYS_userfaultfd as u64, &[UFFD_FLAGS]) {
            Ok(fd) => fd,
            Err(Error::RemoteSyscall { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let ours = syscall3(libc::SYS_pidfd_open, pid as u64, 0, 0)
            .map(owned)
            .and_then(|pidfd| syscall3(libc::SYS_pidfd_getfd, pidfd.as_raw_fd() as u64, theirs, 0))
            .map(owned);
        // Closed in the target whatever happened: its descriptor table is left as it was.
        thread.syscall(libc::SYS_close as u64, &[theirs])?;
        let Ok(uffd) = ours else {
            return Ok(None);
        };
        handshake(uffd.as_raw_fd()).map_err(|source| Error::WriteWatch {
            pid,
            what: "UFFDIO_API",
            source,
        })?;
        let pagemap_path = proc.proc_file("pagemap");
        let pagemap = File::open(&pagemap_path).map_err(|e| Error::proc(&pagemap_path, e))?;
        Ok(Some(WriteWatch {
            pid,
            page: proc.page_size(),
            pagemap_path,
            how: How::Uffd {
                uffd,
                pagemap,
                registered: Vec::new(),
            },
        }))
    }

    /// A watch by soft-dirty bits; `None` when the kernel keeps none.
    pub fn soft_dirty(proc: &Process) -> Result<Option<WriteWatch>> {
        if !soft_dirty_supported(proc.page_size()) {
            return Ok(None);
        }
        let pagemap_path = proc.proc_file("pagemap");
        let pagemap = File::open(&pagemap_path).map_err(|e| Error::proc(&pagemap_path, e))?;
        Ok(Some(WriteWatch {
            pid: proc.pid(),
            page: proc.page_size(),
            pagemap_path,
            how: How::SoftDirty {
                pagemap,
                clear_refs: proc.proc_file("clear_refs"),
            },
        }))
    }

    /// The mechanism, for messages.
    pub fn name(&self) -> &'static str {
        match self.how {
            How::Uffd { .. } => "userfaultfd write protection",
            How::SoftDirty { .. } => "soft-dirty bits",
        }
    }

    /// Forgets what was written so far: from now on writes to `mappings` (whole mappings, as
    /// `/proc/PID/maps` lists them) are recorded. Returns those of them that are watched
    /// (userfaultfd cannot watch private file mappings, nor mappings the program registered
    /// with a userfaultfd of its own); writes elsewhere may go unrecorded.
    pub fn start(&mut self, mappings: &[Range<u64>]) -> Result<Vec<Range<u64>>> {
        match &mut self.how {
            How::SoftDirty { clear_refs, .. } => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&*clear_refs)
                    .and_then(|mut f| f.write_all(b"4"))
                    .map_err(|e| Error::proc(&*clear_refs, e))?;
                Ok(mappings.to_vec())
            }
            How::Uffd {
                uffd,
                pagemap,
                registered,
            } => {
                let mut watched = Vec::new();
                for m in mappings {
                    // A mapping registered before may have been replaced since: the check of
                    // the protection tells, and it is registered again.
                    let mut fresh = false;
                    if !registered.contains(m) {
                        if register(uffd.as_raw_fd(), m).is_err() {
                            continue;
                        }
                        registered.push(m.clone());
                        fresh = true;
                    }
                    match protect(pagemap.as_raw_fd(), m) {
                        Ok(()) => watched.push(m.clone()),
                        Err(e) if !fresh && e.raw_os_error() == Some(libc::EPERM) => {
                            if register(uffd.as_raw_fd(), m).is_ok()
                                && protect(pagemap.as_raw_fd(), m).is_ok()
                            {
                                watched.push(m.clone());
                            }
                        }
                        Err(_) => {}
                    }
                }
                Ok(watched)
            }
        }
    }

    /// Like [`WriteWatch::written`], and starts again for those pages at once, each page
    /// write-protected as it is listed (no write between can be missed): what the caller reads
    /// of them afterwards is current until they are listed again. `None` with soft-dirty bits,
    /// which are cleared for the whole process only.
    pub fn take_written(&mut self, ranges: &[Range<u64>]) -> Result<Option<Vec<Range<u64>>>> {
        let How::Uffd { pagemap, .. } = &self.how else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for r in ranges {
            scan_pages(pagemap.as_raw_fd(), r, true, &mut out).map_err(self.scan_error())?;
        }
        Ok(Some(out))
    }

    fn scan_error(&self) -> impl Fn(std::io::Error) -> Error {
        let pid = self.pid;
        move |source| Error::WriteWatch {
            pid,
            what: "PAGEMAP_SCAN",
            source,
        }
    }

    /// The pages of `ranges` (watched ones) written since [`WriteWatch::start`] and holding
    /// data, as merged ranges. A page of a mapping that replaced a watched one counts as
    /// written.
    pub fn written(&self, ranges: &[Range<u64>]) -> Result<Vec<Range<u64>>> {
        let mut out = Vec::new();
        match &self.how {
            How::SoftDirty { pagemap, .. } => {
                for r in ranges {
                    out.extend(pages_where(
                        pagemap,
                        &self.pagemap_path,
                        r.clone(),
                        self.page,
                        |e| e & PM_SOFT_DIRTY != 0 && e & (PM_PRESENT | PM_SWAPPED) != 0,
                    )?);
                }
            }
            How::Uffd { pagemap, .. } => {
                for r in ranges {
                    scan_pages(pagemap.as_raw_fd(), r, false, &mut out)
                        .map_err(self.scan_error())?;
                }
            }
        }
        Ok(out)
    }
}

fn register(uffd: RawFd, m: &Range<u64>) -> std::io::Result<()> {
    let mut reg = UffdioRegister {
        start: m.start,
        len: m.end - m.start,
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    ioctl(uffd, UFFDIO_REGISTER, &mut reg).map(drop)
}

/// Write-protects every page of `m` (registered), checking that it is registered for
/// asynchronous write protection.
fn protect(pagemap: RawFd, m: &Range<u64>) -> std::io::Result<()> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start: m.start,
        end: m.end,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    ioctl(pagemap, PAGEMAP_SCAN, &mut arg).map(drop)
}

/// Appends the written pages of `r` that hold data, merged; write-protects them again if
/// `again`.
fn scan_pages(
    pagemap: RawFd,
    r: &Range<u64>,
    again: bool,
    out: &mut Vec<Range<u64>>,
) -> std::io::Result<()> {
    let mut regions = vec![PageRegion::default(); SCAN_REGIONS];
    let mut start = r.start;
    while start < r.end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: if again { PM_SCAN_WP_MATCHING } else { 0 },
            start,
            end: r.end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: SCAN_REGIONS as u64,
            category_mask: PAGE_IS_WRITTEN,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        let n = ioctl(pagemap, PAGEMAP_SCAN, &mut arg)? as usize;
        for g in regions.iter().take(n.min(SCAN_REGIONS)) {
            match out.last_mut() {
                Some(last) if last.end == g.start => last.end = g.end,
                _ => out.push(g.start..g.end),
            }
        }
        if arg.walk_end <= start {
            break;
        }
        start = arg.walk_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dont_fork_mappings_are_read_from_smaps() {
        let smaps = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0040000000 rw-p 00000000 00:00 0
Size:            1048576 kB
VmFlags: rd wr mr mw me dc ac sd hg mg
7f0040000000-7f0040001000 ---p 00000000 00:00 0
VmFlags: mr mw me dc sd
";
        assert_eq!(
            parse_dont_fork(smaps),
            vec![
                0x7f00_0000_0000..0x7f00_4000_0000,
                0x7f00_4000_0000..0x7f00_4000_1000
            ]
        );
    }
}
