//! A target process: identity checks, its files under /proc, its mappings.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kpatch_arch::Arch;
use object::elf::{FileHeader64, Ident, ELFCLASS64, ELFDATA2LSB, ELFMAG};
use object::LittleEndian;

use crate::auxv::Auxv;
use crate::error::{Error, Result};
use crate::held::HeldThread;
use crate::maps::{parse_maps, MapEntry};
use crate::procfs;
use crate::region::SpaceLimits;

/// A process we may read, write and stop. Opening it checks that it is a live user process
/// other than ours and identifies its architecture; nothing is attached until
/// [`Process::stop_all`] or [`Process::stop_one`].
#[derive(Debug)]
pub struct Process {
    pid: i32,
    /// `/proc/PID`, or `/proc/PID/task/TID` of a live thread when the main thread has exited
    /// (its own entries no longer show the address space then).
    root: PathBuf,
    /// Thread whose view of memory we use (`pid` unless the main thread has exited).
    mem_tid: i32,
    exe: PathBuf,
    comm: String,
    arch: &'static dyn Arch,
    pub(crate) mem: File,
    /// Address of a system-call instruction found in the target, re-checked before each use.
    pub(crate) syscall_insn: Mutex<Option<u64>>,
    /// The page size, read from the auxiliary vector once (it is asked for at every step).
    page_size: OnceLock<u64>,
    /// A thread the caller holds stopped ([`Process::open_held`]).
    held: Option<i32>,
}

impl Process {
    /// Opens process `pid`, refusing a pid that does not exist, a zombie or exiting process, a
    /// kernel thread, a non-leader thread, the calling process, a process traced by someone
    /// else, and programs of unsupported architectures.
    pub fn open(pid: i32) -> Result<Process> {
        Process::open_with(pid, true)
    }

    /// Opens process `pid` to look at it only (its maps and memory), like [`Process::open`] but
    /// accepting a process that another tracer (a debugger, or another run of the tool that
    /// is changing it) holds.
    pub fn inspect(pid: i32) -> Result<Process> {
        Process::open_with(pid, false)
    }

    /// Opens the process of a thread the calling thread holds ([`HeldThread`]): stopping the
    /// process adopts that thread as it is (it must be in a stop whenever the process is
    /// stopped) and leaves it stopped, for its holder, when the others are released.
    pub fn open_held(held: &HeldThread) -> Result<Process> {
        let (pid, tid) = (held.tgid(), held.tid());
        let mut process = Process::open_with(pid, false)?;
        let dir = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
        let status = procfs::status(&dir)?.ok_or(Error::NoSuchThread { pid, tid })?;
        if status.tracer != nix::unistd::gettid().as_raw() {
            return Err(Error::InvalidArgument(format!(
                "pid {pid}: thread {tid} is not held by the calling thread"
            )));
        }
        process.held = Some(tid);
        Ok(process)
    }

    /// The thread the caller holds, if opened with [`Process::open_held`].
    pub fn held_tid(&self) -> Option<i32> {
        self.held
    }

    fn open_with(pid: i32, untraced: bool) -> Result<Process> {
        if pid <= 0 {
            return Err(Error::NoSuchProcess { pid });
        }
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let stat = procfs::stat(&dir)?.ok_or(Error::NoSuchProcess { pid })?;
        let status = procfs::status(&dir)?.ok_or(Error::NoSuchProcess { pid })?;
        let me = std::process::id() as i32;
        if status.tgid == me {
            return Err(Error::SelfTarget { pid });
        }
        if stat.flags & libc::PF_KTHREAD as u64 != 0 {
            return Err(Error::KernelThread { pid });
        }
        if status.tgid != pid {
            return Err(Error::NotProcess {
                tid: pid,
                tgid: status.tgid,
            });
        }
        let (root, mem_tid) = match stat.state {
            b'X' | b'x' => return Err(Error::Dead { pid }),
            b'Z' => {
                // A main thread that called pthread_exit stays a zombie while the others run.
                let live = live_thread(pid)?.ok_or(Error::Zombie { pid })?;
                (dir.join("task").join(live.to_string()), live)
            }
            _ => (dir, pid),
        };
        if untraced && status.tracer != 0 && status.tracer != me {
            return Err(Error::AlreadyTraced {
                pid,
                tracer: status.tracer,
            });
        }

        let has_maps =
            procfs::has_content(&root.join("maps"))?.ok_or(Error::NoSuchProcess { pid })?;
        if !has_maps {
            // No address space: a kernel thread without the flag, or a process in exit.
            return Err(Error::KernelThread { pid });
        }
        let exe_link = root.join("exe");
        let exe = std::fs::read_link(&exe_link).map_err(|e| Error::proc(&exe_link, e))?;
        let arch = identify(pid, &exe, &exe_link)?;
        let comm_path = root.join("comm");
        let comm = std::fs::read_to_string(&comm_path)
            .map_err(|e| Error::proc(&comm_path, e))?
            .trim_end_matches('\n')
            .to_owned();
        let mem_path = root.join("mem");
        let mem = File::options()
            .read(true)
            .write(true)
            .open(&mem_path)
            .map_err(|e| Error::proc(&mem_path, e))?;
        Ok(Process {
            pid,
            root,
            mem_tid,
            exe,
            comm,
            arch,
            mem,
            syscall_insn: Mutex::new(None),
            page_size: OnceLock::new(),
            held: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Thread whose address-space view memory access uses (the pid, unless the main thread has
    /// exited).
    pub(crate) fn mem_tid(&self) -> i32 {
        self.mem_tid
    }

    /// Architecture of the program, from the executable's `e_machine`.
    pub fn arch(&self) -> &'static dyn Arch {
        self.arch
    }

    /// Path of the executable as `/proc/PID/exe` names it (may end in ` (deleted)`; read the
    /// mapped file through [`Process::open_mapped_file`] or [`Process::open_exe`]).
    pub fn exe_path(&self) -> &Path {
        &self.exe
    }

    /// Opens the executable that is running, even if its path was replaced or removed.
    pub fn open_exe(&self) -> Result<File> {
        let path = self.root.join("exe");
        File::open(&path).map_err(|e| Error::proc(path, e))
    }

    /// Command name (`/proc/PID/comm`).
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// `/proc/PID/NAME` (or the live thread's, see [`Process::open`]).
    pub(crate) fn proc_file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The current mappings.
    pub fn maps(&self) -> Result<Vec<MapEntry>> {
        let path = self.root.join("maps");
        let bytes = procfs::read_optional(&path)?.ok_or(Error::NoSuchProcess { pid: self.pid })?;
        parse_maps(&bytes).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Opens exactly the file that backs `entry`; see [`open_mapped_file`].
    pub fn open_mapped_file(&self, entry: &MapEntry) -> Result<File> {
        open_mapped_file(self.pid, entry)
    }

    /// The auxiliary vector.
    pub fn auxv(&self) -> Result<Auxv> {
        let path = self.root.join("auxv");
        let bytes = procfs::read_optional(&path)?.ok_or(Error::NoSuchProcess { pid: self.pid })?;
        Ok(Auxv::parse(&bytes))
    }

    /// The target's page size (`AT_PAGESZ`, else ours).
    pub fn page_size(&self) -> u64 {
        *self.page_size.get_or_init(|| self.read_page_size())
    }

    fn read_page_size(&self) -> u64 {
        self.auxv()
            .ok()
            .and_then(|a| a.page_size())
            .filter(|p| p.is_power_of_two())
            .unwrap_or_else(|| {
                // SAFETY: sysconf only reads a configuration value.
                let ours = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
                u64::try_from(ours).unwrap_or(4096)
            })
    }

    /// Where new mappings may go in this process, given its current `maps`.
    pub fn space_limits(&self, maps: &[MapEntry]) -> SpaceLimits {
        SpaceLimits::new(
            maps,
            self.page_size(),
            procfs::mmap_min_addr(),
            procfs::stack_limit(&self.root),
        )
    }

    /// Ids of the threads, sorted (a snapshot: threads come and go while the process runs).
    pub fn thread_ids(&self) -> Result<Vec<i32>> {
        procfs::task_ids(self.pid)
    }
}

/// A thread of `pid` that is not a zombie.
fn live_thread(pid: i32) -> Result<Option<i32>> {
    for tid in procfs::task_ids(pid)? {
        let dir = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
        if let Some(s) = procfs::stat(&dir)? {
            if !matches!(s.state, b'Z' | b'X' | b'x') {
                return Ok(Some(tid));
            }
        }
    }
    Ok(None)
}

/// The architecture from the running executable's ELF header.
fn identify(pid: i32, exe: &Path, link: &Path) -> Result<&'static dyn Arch> {
    // The identification bytes and e_type, e_machine: all that is needed.
    const PREFIX: usize = size_of::<Ident>() + 4;
    let mut header = [0u8; size_of::<FileHeader64<LittleEndian>>()];
    File::open(link)
        .and_then(|mut f| f.read_exact(&mut header[..PREFIX]))
        .map_err(|e| Error::proc(link, e))?;
    let unsupported = |what: String| Error::Unsupported {
        pid,
        exe: exe.to_owned(),
        what,
    };
    // The buffer is exactly one header: the view cannot fail.
    let Ok((header, _)) = object::pod::from_bytes::<FileHeader64<LittleEndian>>(&header) else {
        return Err(unsupported("not an ELF file".into()));
    };
    let ident = &header.e_ident;
    if ident.magic != ELFMAG {
        return Err(unsupported("not an ELF file".into()));
    }
    if ident.class != ELFCLASS64 {
        return Err(unsupported("a 32-bit program".into()));
    }
    if ident.data != ELFDATA2LSB {
        return Err(unsupported("a big-endian program".into()));
    }
    let machine = header.e_machine.get(LittleEndian).0;
    kpatch_arch::for_machine(machine)
        .ok_or_else(|| unsupported(format!("a program for ELF machine {machine}")))
}

/// Opens exactly the file that backs `entry` of process `pid`: through
/// `/proc/PID/map_files/START-END` (the mapped inode, even if its path now names another file
/// or none; needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`), or else by its path in the
/// process's root when the file there is still the one mapped (same device and inode). The
/// error names both reasons.
pub fn open_mapped_file(pid: i32, entry: &MapEntry) -> Result<File> {
    let Some(path) = entry.file_path() else {
        return Err(Error::InvalidArgument(format!(
            "pid {pid}: mapping {:#x}-{:#x} is not backed by a file",
            entry.start, entry.end
        )));
    };
    let mapped = format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end);
    let by_mapping = match File::open(&mapped) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    let fail = |why: String| {
        Error::InvalidArgument(format!(
            "{}: cannot be read as mapped by pid {pid} ({by_mapping} through map_files; {why})",
            path.display()
        ))
    };
    let mut in_root = PathBuf::from(format!("/proc/{pid}/root"));
    in_root.push(path.strip_prefix("/").unwrap_or(path));
    let f = File::open(&in_root).map_err(|e| fail(format!("{e} by its path")))?;
    let meta = f.metadata().map_err(|e| fail(format!("{e} by its path")))?;
    let dev = (
        (((meta.dev() >> 32) & 0xffff_f000) | ((meta.dev() >> 8) & 0xfff)) as u32,
        (((meta.dev() >> 12) & 0xffff_ff00) | (meta.dev() & 0xff)) as u32,
    );
    if meta.ino() != entry.inode || dev != entry.dev {
        return Err(fail("the file at its path is another file now".into()));
    }
    Ok(f)
}
