//! The kernel's side: a fanotify group with permission events on the files that have patches,
//! and on nothing else: `FAN_OPEN_EXEC_PERM` on programs (only an `execve` of them is heard of;
//! reading them is not), `FAN_OPEN_PERM` on libraries (the dynamic loader opens them like any
//! file). A process opening one of them so waits in the kernel until we answer; every other
//! process is never seen. If the group's descriptor closes (we die), the kernel answers every
//! pending event with "allow".

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::files::Found;

/// A file whose opening we hear of.
#[derive(Debug)]
pub struct Marked {
    pub path: PathBuf,
    pub build_id: String,
    mask: MaskFlags,
    /// Held open (`O_PATH`, which opens nothing) so that removing the mark reaches the same
    /// file whatever happens to its name.
    fd: OwnedFd,
}

/// What a change of the marked set did.
#[derive(Debug, Default)]
pub struct Sync {
    pub added: Vec<(PathBuf, String)>,
    pub removed: Vec<(PathBuf, String)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// The fanotify group and the files it marks, by (device, inode).
#[derive(Debug)]
pub struct Watch {
    fan: Fanotify,
    marked: Mutex<HashMap<(u64, u64), Marked>>,
    /// The marker followed processes open (see [`crate::ldso::install_watch`]): its identity,
    /// and the file held open.
    marker: Mutex<Option<((u64, u64), OwnedFd)>>,
    /// Events name the thread (`FAN_REPORT_TID`, Linux 4.20) rather than the process.
    pub reports_tid: bool,
    /// The kernel has `FAN_OPEN_EXEC_PERM` (Linux 5.0); without it programs are marked like
    /// libraries.
    pub exec_events: bool,
}

fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What to do about a mark the kernel refused.
fn mark_error(e: Errno) -> String {
    match e {
        Errno::EACCES | Errno::EPERM => format!(
            "{e}: a security module (SELinux, AppArmor...) forbids watching it; allow libcare-server to watch the file (fanotify), or start the program through the execve protocol instead"
        ),
        Errno::EINVAL => format!(
            "{e}: the kernel has no fanotify permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
        ),
        Errno::ENODEV | Errno::EXDEV | Errno::EOPNOTSUPP => {
            format!("{e}: its filesystem does not support fanotify")
        }
        e => e.to_string(),
    }
}

impl Watch {
    /// Makes the group, checking that this process may hold starting processes: it must be
    /// allowed to create a content-class fanotify group (`CAP_SYS_ADMIN`) and to mark a file
    /// for permission events, and to trace other processes. The errors say what is missing
    /// and what to do.
    pub fn open() -> Result<Watch> {
        let fan_flags = InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC;
        let event_flags = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
        let (fan, reports_tid) =
            match Fanotify::init(fan_flags | InitFlags::FAN_REPORT_TID, event_flags) {
                Ok(f) => (f, true),
                Err(Errno::EINVAL) => (
                    Fanotify::init(fan_flags, event_flags).map_err(init_error)?,
                    false,
                ),
                Err(e) => return Err(init_error(e)),
            };
        check_ptrace()?;
        // Marks on our own executable, taken off at once: the kernel has permission events and
        // no security module forbids them (for this file at least).
        let probe = "/proc/self/exe";
        let try_mark = |mask: MaskFlags| {
            let r = fan.mark(MarkFlags::FAN_MARK_ADD, mask, fan.as_fd(), Some(probe));
            if r.is_ok() {
                let _ = fan.mark(MarkFlags::FAN_MARK_REMOVE, mask, fan.as_fd(), Some(probe));
            }
            r
        };
        try_mark(MaskFlags::FAN_OPEN_PERM).map_err(|e| {
            Error::Unavailable(format!(
                "--self-load: cannot watch files for start-up patching: fanotify_mark: {}",
                mark_error(e)
            ))
        })?;
        let exec_events = try_mark(MaskFlags::FAN_OPEN_EXEC_PERM).is_ok();
        Ok(Watch {
            fan,
            marked: Mutex::new(HashMap::new()),
            marker: Mutex::new(None),
            reports_tid,
            exec_events,
        })
    }

    /// The events a file is marked for.
    fn mask_for(&self, f: &Found) -> MaskFlags {
        if f.program && self.exec_events {
            MaskFlags::FAN_OPEN_EXEC_PERM
        } else {
            MaskFlags::FAN_OPEN_PERM
        }
    }

    /// Marks exactly the files in `found` (one per identity), removing the marks of the others.
    pub fn sync(&self, found: &[Found]) -> Sync {
        let mut out = Sync::default();
        let mut marked = match self.marked.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        let keep: HashMap<(u64, u64), &Found> = found.iter().map(|f| ((f.dev, f.ino), f)).collect();
        let gone: Vec<(u64, u64)> = marked
            .keys()
            .filter(|k| !keep.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(m) = marked.remove(&k) {
                self.unmark(&m);
                out.removed.push((m.path, m.build_id));
            }
        }
        for (k, f) in keep {
            if let Some(m) = marked.get(&k) {
                if m.build_id == f.build_id && m.mask == self.mask_for(f) {
                    continue;
                }
                self.unmark(m);
            }
            match self.mark(f) {
                Ok(m) => {
                    out.added.push((m.path.clone(), m.build_id.clone()));
                    marked.insert(k, m);
                }
                Err(e) => out.failed.push((f.path.clone(), e)),
            }
        }
        out
    }

    fn mark(&self, f: &Found) -> std::result::Result<Marked, String> {
        let fd = open(
            &f.open_path,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(proc_fd_path(&fd)).map_err(|e| e.to_string())?;
        if (meta.dev(), meta.ino()) != (f.dev, f.ino) {
            return Err("it was replaced while being looked at".into());
        }
        let mask = self.mask_for(f);
        self.fan
            .mark(
                MarkFlags::FAN_MARK_ADD,
                mask,
                self.fan.as_fd(),
                Some(&proc_fd_path(&fd)),
            )
            .map_err(mark_error)?;
        Ok(Marked {
            path: f.path.clone(),
            build_id: f.build_id.clone(),
            mask,
            fd,
        })
    }

    fn unmark(&self, m: &Marked) {
        let _ = self.fan.mark(
            MarkFlags::FAN_MARK_REMOVE,
            m.mask,
            self.fan.as_fd(),
            Some(&proc_fd_path(&m.fd)),
        );
    }

    /// Creates the marker file `path` (if missing, readable by everyone, in a directory
    /// everyone may enter) and marks it for `FAN_OPEN_PERM`.
    pub fn mark_marker(&self, path: &std::path::Path) -> std::result::Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if !path.exists() {
            std::fs::write(path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = std::fs::metadata(proc_fd_path(&fd)).map_err(|e| e.to_string())?;
        self.fan
            .mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::FAN_OPEN_PERM,
                self.fan.as_fd(),
                Some(&proc_fd_path(&fd)),
            )
            .map_err(mark_error)?;
        if let Ok(mut m) = self.marker.lock() {
            *m = Some(((meta.dev(), meta.ino()), fd));
        }
        Ok(())
    }

    /// Whether (`dev`, `ino`) is the marker.
    pub fn is_marker(&self, dev: u64, ino: u64) -> bool {
        self.marker
            .lock()
            .is_ok_and(|m| m.as_ref().is_some_and(|(k, _)| *k == (dev, ino)))
    }

    /// The marked file with identity (`dev`, `ino`): its path and build-id.
    pub fn file(&self, dev: u64, ino: u64) -> Option<(PathBuf, String)> {
        let marked = self.marked.lock().ok()?;
        marked
            .get(&(dev, ino))
            .map(|m| (m.path.clone(), m.build_id.clone()))
    }

    /// How many files are marked.
    pub fn count(&self) -> usize {
        self.marked.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The build-ids of the marked files.
    pub fn build_ids(&self) -> Vec<String> {
        self.marked
            .lock()
            .map(|m| m.values().map(|f| f.build_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Waits for the next events.
    pub fn read(&self) -> nix::Result<Vec<FanotifyEvent>> {
        self.fan.read_events()
    }

    /// Lets the opening of `event` go on.
    pub fn allow(&self, event: &FanotifyEvent) {
        if let Some(fd) = event.fd() {
            // Fails only if already answered.
            let _ = self
                .fan
                .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
        }
    }
}

fn init_error(e: Errno) -> Error {
    let what = match e {
        Errno::EPERM => "operation not permitted: fanotify permission events need CAP_SYS_ADMIN; run libcare-server as root (with CAP_SYS_ADMIN and CAP_SYS_PTRACE)".to_owned(),
        Errno::ENOSYS => "the kernel has no fanotify (CONFIG_FANOTIFY)".to_owned(),
        Errno::EINVAL => "the kernel refuses permission-event groups (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)".to_owned(),
        Errno::EMFILE => "too many fanotify groups (fs.fanotify.max_user_groups)".to_owned(),
        e => e.to_string(),
    };
    Error::Unavailable(format!(
        "--self-load: cannot watch files for start-up patching: fanotify_init: {what}; or start programs through the execve protocol instead"
    ))
}

/// Whether this process may trace others: `CAP_SYS_PTRACE`, and Yama not forbidding all
/// tracing.
fn check_ptrace() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_PTRACE: u32 = 19;
    if eff & (1 << CAP_SYS_PTRACE) == 0 {
        return Err(Error::Unavailable(
            "--self-load: cannot hold starting processes: CAP_SYS_PTRACE is missing; run libcare-server as root (with CAP_SYS_ADMIN and CAP_SYS_PTRACE)".into(),
        ));
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    if scope.trim() == "3" {
        return Err(Error::Unavailable(
            "--self-load: cannot hold starting processes: kernel.yama.ptrace_scope is 3, which forbids all tracing until reboot; boot with it at 2 or lower".into(),
        ));
    }
    Ok(())
}
