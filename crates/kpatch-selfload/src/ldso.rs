//! The dynamic loader's debugger interface, used to stop a thread once the loader has mapped
//! and relocated what it loads: glibc's loader calls `_dl_debug_state()` after it changed the
//! list of loaded objects, with `_r_debug.r_state` saying how (`RT_ADD` before it maps objects,
//! `RT_CONSISTENT` once they are in place; at start-up, once they are also relocated and before
//! any constructor runs). Debuggers put a breakpoint there; we make the function send the
//! thread a signal whose default action is to ignore it
//! ([`kpatch_arch::Arch::thread_signal_function`] in its place, or
//! [`kpatch_arch::Arch::self_signal_function`] in a page it jumps to): the thread stops in a
//! signal-delivery-stop we catch, and if nobody catches it (we died), the signal does nothing
//! and the thread runs on.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kpatch_process::{
    blocked_signals, find_region, MapEntry, Memory, Process, ThreadHandle, AT_BASE, AT_PHDR,
};
use object::{Object, ObjectSegment, ObjectSymbol};

use crate::error::{Error, Result};

/// `struct r_debug`: `r_state` follows `int r_version` (padded to 8), `r_map` and `r_brk`.
const R_STATE_OFFSET: u64 = 24;
const R_MAP_OFFSET: u64 = 8;
/// `struct link_map`: `l_addr`, `l_name`, `l_ld`, `l_next`, `l_prev`.
const L_NAME_OFFSET: u64 = 8;
const L_LD_OFFSET: u64 = 16;
const L_NEXT_OFFSET: u64 = 24;
/// More objects than any process has: a list longer than this is not a list.
const MAX_OBJECTS: usize = 100_000;
/// The watch page: the watch function, then at this offset a magic and the marker's path.
const WATCH_TAG_OFFSET: u64 = 256;
const WATCH_MAGIC: &[u8; 8] = b"LCWATCH1";
/// Signals whose default action is to ignore them, in order of preference: the one chosen
/// must not be blocked by the thread. `SIGCONT` comes last: sending it discards pending stop
/// signals.
const QUIET_SIGNALS: [i32; 4] = [libc::SIGURG, libc::SIGWINCH, libc::SIGCHLD, libc::SIGCONT];

/// What `_r_debug.r_state` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderState {
    /// The list of objects is consistent (`RT_CONSISTENT`).
    Consistent,
    /// Objects are being added (`RT_ADD`).
    Adding,
    /// Objects are being removed (`RT_DELETE`).
    Deleting,
}

/// The loader's symbols, from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoaderSymbols {
    debug_state: u64,
    /// Bytes from `_dl_debug_state` that belong to it: its size, or up to the next 16-byte
    /// boundary, whichever is larger (the padding after a function is never run), but not
    /// into the next symbol.
    debug_state_room: u64,
    r_debug: u64,
    /// Link-time address and file offset of each loadable segment.
    loads: Vec<(u64, u64)>,
}

/// The loader files read so far, by identity (device, inode, size, mtime); `None` for a file
/// that is not a loader with a debugger interface.
#[derive(Debug, Default)]
pub struct LoaderCache(Mutex<HashMap<FileKey, Option<Arc<LoaderSymbols>>>>);

/// Device, inode, size, modification time.
type FileKey = (u64, u64, u64, i64);

/// The dynamic loader of one process.
#[derive(Debug, Clone)]
pub struct Loader {
    /// From its lowest to its highest mapping.
    pub range: Range<u64>,
    /// Its path as the process maps it.
    pub path: String,
    debug_state: u64,
    debug_state_room: u64,
    r_debug: u64,
}

/// One object of the loader's list (`struct link_map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// Address of its `link_map`.
    pub map: u64,
    /// Address of its dynamic section (`l_ld`), inside its mappings.
    pub dynamic: u64,
    /// `l_name`: the path it was loaded from ("" for the program).
    pub name: String,
}

impl LinkEntry {
    /// The path of the file the object is mapped from (the mapping holding its dynamic
    /// section), or its `l_name` when no mapping says.
    pub fn path(&self, maps: &[MapEntry]) -> String {
        maps.iter()
            .find(|m| m.contains(self.dynamic) && m.inode != 0)
            .and_then(|m| m.file_path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| self.name.clone())
    }
}

impl Loader {
    /// The dynamic loader of `proc`: the interpreter mapped at `AT_BASE`, or the program itself
    /// when it is the loader (`ld.so PROGRAM`). `None` for a program without one (static) or a
    /// loader without glibc's debugger interface.
    pub fn find(proc: &Process, maps: &[MapEntry], cache: &LoaderCache) -> Result<Option<Loader>> {
        let auxv = proc.auxv()?;
        let anchor = match auxv.get(AT_BASE).filter(|&b| b != 0) {
            Some(base) => base,
            None => match auxv.get(AT_PHDR) {
                Some(phdr) => phdr,
                None => return Ok(None),
            },
        };
        let Some(at) = maps.iter().find(|m| m.contains(anchor) && m.inode != 0) else {
            return Ok(None);
        };
        let group: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.inode == at.inode && m.dev == at.dev)
            .collect();
        let Some(first) = group.iter().min_by_key(|m| m.start) else {
            return Ok(None);
        };
        let file = proc.open_mapped_file(first)?;
        let Some(syms) = cache.symbols(file)? else {
            return Ok(None);
        };
        let page = proc.page_size();
        let Some(&(vaddr, _)) = syms
            .loads
            .iter()
            .find(|&&(_, off)| off & !(page - 1) == first.offset)
        else {
            return Ok(None);
        };
        let bias = first.start.wrapping_sub(vaddr & !(page - 1));
        let start = group.iter().map(|m| m.start).min().unwrap_or(first.start);
        let end = group.iter().map(|m| m.end).max().unwrap_or(first.end);
        Ok(Some(Loader {
            range: start..end,
            path: first
                .file_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            debug_state: bias.wrapping_add(syms.debug_state),
            debug_state_room: syms.debug_state_room,
            r_debug: bias.wrapping_add(syms.r_debug),
        }))
    }

    /// Whether `pc` is in the loader.
    pub fn contains(&self, pc: u64) -> bool {
        self.range.contains(&pc)
    }

    /// What the loader is doing, from `_r_debug.r_state`.
    pub fn state(&self, mem: &dyn Memory) -> Result<LoaderState> {
        let mut b = [0u8; 4];
        mem.read(self.r_debug + R_STATE_OFFSET, &mut b)?;
        Ok(match i32::from_ne_bytes(b) {
            1 => LoaderState::Adding,
            2 => LoaderState::Deleting,
            _ => LoaderState::Consistent,
        })
    }
}

impl Loader {
    /// The objects in the loader's list, in its order (the program first).
    pub fn objects(&self, mem: &dyn Memory) -> Result<Vec<LinkEntry>> {
        let mut out = Vec::new();
        let mut map = mem.read_u64(self.r_debug + R_MAP_OFFSET)?;
        while map != 0 && out.len() < MAX_OBJECTS {
            let name_at = mem.read_u64(map + L_NAME_OFFSET)?;
            let name = if name_at == 0 {
                String::new()
            } else {
                read_c_string(mem, name_at)
            };
            out.push(LinkEntry {
                map,
                dynamic: mem.read_u64(map + L_LD_OFFSET)?,
                name,
            });
            map = mem.read_u64(map + L_NEXT_OFFSET)?;
        }
        Ok(out)
    }

    /// Whether `_dl_debug_state` jumps to a watch page for the marker `marker`
    /// ([`install_watch`]).
    pub fn watched(&self, proc: &Process, marker: &Path) -> bool {
        let arch = proc.arch();
        let Ok(code) = proc.read_vec(self.debug_state, arch.hunk_size()) else {
            return false;
        };
        arch.decode_jump(self.debug_state, &code)
            .is_some_and(|to| is_watch_page(proc, to & !(proc.page_size() - 1), marker))
    }
}

/// A C string of the target, at most 4096 bytes (lossy UTF-8).
fn read_c_string(mem: &dyn Memory, at: u64) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    while out.len() < 4096 {
        if mem.read(at + out.len() as u64, &mut chunk).is_err() {
            break;
        }
        match chunk.iter().position(|&b| b == 0) {
            Some(end) => {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            None => out.extend_from_slice(&chunk),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The tag of a watch page for `marker`: the magic, then the marker's path and a NUL.
fn watch_tag(marker: &Path) -> Vec<u8> {
    let mut tag = WATCH_MAGIC.to_vec();
    tag.extend_from_slice(marker.as_os_str().as_encoded_bytes());
    tag.push(0);
    tag
}

/// Whether the page at `page` is a watch page for `marker`.
fn is_watch_page(mem: &dyn Memory, page: u64, marker: &Path) -> bool {
    let tag = watch_tag(marker);
    mem.read_vec(page + WATCH_TAG_OFFSET, tag.len())
        .is_ok_and(|b| b == tag)
}

/// Whether `pc` lies in a watch page for `marker` (a thread that opened the marker from
/// there is a loader announcing a change).
pub fn in_watch_page(proc: &Process, pc: u64, marker: &Path) -> bool {
    is_watch_page(proc, pc & !(proc.page_size() - 1), marker)
}

/// A page for code next to the loader, within branch reach of `_dl_debug_state`, mapped
/// read-execute by a syscall in `thread`; the jump from `_dl_debug_state` to `to` in it, and
/// the bytes the jump replaces.
fn page_near_loader(
    proc: &Process,
    thread: &mut ThreadHandle<'_>,
    loader: &Loader,
) -> Result<(u64, Vec<u8>, Vec<u8>)> {
    let arch = proc.arch();
    let pid = proc.pid();
    let at = loader.debug_state;
    let page = proc.page_size();
    let maps = proc.maps()?;
    let limits = proc.space_limits(&maps);
    let stub = find_region(
        &maps,
        loader.range.clone(),
        page,
        arch.max_branch_distance(),
        &limits,
    )
    .ok_or_else(|| Error::Process {
        pid,
        what: format!(
            "no free page within reach of the dynamic loader {}",
            loader.path
        ),
    })?;
    let jump = arch
        .encode_jump(at, stub)
        .map_err(kpatch_engine::Error::from)?;
    if loader.debug_state_room < jump.len() as u64 {
        return Err(Error::Process {
            pid,
            what: format!(
                "_dl_debug_state of {} is {} bytes long, too short for a {}-byte jump",
                loader.path,
                loader.debug_state_room,
                jump.len()
            ),
        });
    }
    let original = proc.read_vec(at, jump.len())?;
    thread.mmap(
        Some(stub),
        page,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    )?;
    Ok((stub, jump, original))
}

/// Makes the process of `thread` (stopped) announce each change of its list of objects: a
/// page next to the loader gets [`kpatch_arch::Arch::loader_watch_function`], which opens
/// `marker` (a file the service watches) when `r_state` says objects are about to be added
/// or removed, and `_dl_debug_state` jumps there. It stays for the life of the process (or
/// until it executes another program); with nobody watching the marker it costs an `open`
/// per `dlopen` or `dlclose`.
pub fn install_watch(
    proc: &Process,
    thread: &mut ThreadHandle<'_>,
    loader: &Loader,
    marker: &Path,
) -> Result<()> {
    let (page, jump, original) = page_near_loader(proc, thread, loader)?;
    let tag = watch_tag(marker);
    let code = proc
        .arch()
        .loader_watch_function(loader.r_debug + R_STATE_OFFSET, page + WATCH_TAG_OFFSET + 8);
    if code.len() as u64 > WATCH_TAG_OFFSET
        || WATCH_TAG_OFFSET + tag.len() as u64 > proc.page_size()
    {
        let _ = thread.munmap(page, proc.page_size());
        return Err(Error::Process {
            pid: proc.pid(),
            what: format!("the marker path {} is too long", marker.display()),
        });
    }
    let written = proc
        .write(page, &code)
        .and_then(|()| proc.write(page + WATCH_TAG_OFFSET, &tag))
        .and_then(|()| proc.write(loader.debug_state, &jump));
    if let Err(e) = written {
        let _ = proc.write(loader.debug_state, &original);
        let _ = thread.munmap(page, proc.page_size());
        return Err(e.into());
    }
    Ok(())
}

impl LoaderCache {
    fn symbols(&self, mut file: std::fs::File) -> Result<Option<Arc<LoaderSymbols>>> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let io = |source| Error::Io {
            path: "dynamic loader".into(),
            source,
        };
        let meta = file.metadata().map_err(io)?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        if let Some(hit) = self.0.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let syms = parse_loader(&data).map(Arc::new);
        if let Ok(mut c) = self.0.lock() {
            c.insert(key, syms.clone());
        }
        Ok(syms)
    }
}

/// `_dl_debug_state`, `_r_debug` and the loadable segments of a loader's ELF image.
fn parse_loader(data: &[u8]) -> Option<LoaderSymbols> {
    let file = object::File::parse(data).ok()?;
    let mut debug_state = None;
    let mut r_debug = None;
    let mut starts: Vec<u64> = Vec::new();
    for s in file.dynamic_symbols() {
        if s.is_definition() && s.address() != 0 {
            starts.push(s.address());
        }
        match s.name() {
            Ok("_dl_debug_state") if s.is_definition() => {
                debug_state = Some((s.address(), s.size()))
            }
            Ok("_r_debug") if s.is_definition() => r_debug = Some(s.address()),
            _ => {}
        }
    }
    let (addr, size) = debug_state?;
    let boundary = (addr | 15) + 1;
    let next = starts
        .iter()
        .copied()
        .filter(|&a| a > addr)
        .min()
        .unwrap_or(u64::MAX);
    let room = (addr + size).max(boundary).min(next) - addr;
    let loads: Vec<(u64, u64)> = file
        .segments()
        .map(|s| (s.address(), s.file_range().0))
        .collect();
    Some(LoaderSymbols {
        debug_state: addr,
        debug_state_room: room,
        r_debug: r_debug?,
        loads,
    })
}

/// A signal that stops the thread without harm if nobody catches it: one whose default action
/// is to ignore it and that thread `tid` does not block. `None` if it blocks them all.
pub fn quiet_signal(pid: i32, tid: i32) -> Option<i32> {
    let blocked = blocked_signals(pid, tid).unwrap_or(0);
    QUIET_SIGNALS
        .into_iter()
        .find(|&s| blocked & (1u64 << (s - 1)) == 0)
}

/// `_dl_debug_state` of one process made to signal the thread that calls it.
#[derive(Debug)]
pub struct Hook {
    loader: Loader,
    /// The bytes of `_dl_debug_state` we replaced.
    original: Vec<u8>,
    /// The page the signalling function lives in (start, length), when it does not fit in
    /// place of `_dl_debug_state`.
    page: Option<(u64, u64)>,
    /// The signalling function.
    code: Range<u64>,
    /// Where a thread stopped by the hook is: on the function's return instruction.
    stop_pc: u64,
    /// The signal the function sends.
    pub signal: i32,
}

impl Hook {
    /// Installs the hook in the process of `thread` (stopped), which is the thread it is for:
    /// `_dl_debug_state` is replaced by a short function that signals that thread when there
    /// is room for one; otherwise a page for a function that signals its caller is mapped
    /// within branch reach of the loader (a syscall in the thread), and `_dl_debug_state`
    /// jumps there.
    pub fn install(
        proc: &Process,
        thread: &mut ThreadHandle<'_>,
        loader: &Loader,
        signal: i32,
    ) -> Result<Hook> {
        let at = loader.debug_state;
        let tid = u32::try_from(thread.tid()).unwrap_or(0);
        let inline = proc
            .arch()
            .thread_signal_function(tid, signal as u8)
            .filter(|(code, _)| code.len() as u64 <= loader.debug_state_room);
        if let Some((code, ret)) = inline {
            let original = proc.read_vec(at, code.len())?;
            proc.write(at, &code)?;
            return Ok(Hook {
                loader: loader.clone(),
                original,
                page: None,
                code: at..at + code.len() as u64,
                stop_pc: at + ret as u64,
                signal,
            });
        }
        Hook::install_in_page(proc, thread, loader, signal)
    }

    /// [`Hook::install`] with the function in a page of its own.
    fn install_in_page(
        proc: &Process,
        thread: &mut ThreadHandle<'_>,
        loader: &Loader,
        signal: i32,
    ) -> Result<Hook> {
        let (code, ret) = proc.arch().self_signal_function(signal as u8);
        let (stub, jump, original) = page_near_loader(proc, thread, loader)?;
        let hook = Hook {
            loader: loader.clone(),
            original,
            page: Some((stub, proc.page_size())),
            code: stub..stub + code.len() as u64,
            stop_pc: stub + ret as u64,
            signal,
        };
        let written = proc
            .write(stub, &code)
            .and_then(|()| proc.write(loader.debug_state, &jump));
        if let Err(e) = written {
            let _ = proc.write(loader.debug_state, &hook.original);
            let _ = thread.munmap(stub, proc.page_size());
            return Err(e.into());
        }
        Ok(hook)
    }

    /// The loader the hook is in.
    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// Whether a thread stopped for signal `sig` at `pc` was stopped by the hook.
    pub fn is_hook_stop(&self, sig: i32, pc: u64) -> bool {
        sig == self.signal && pc == self.stop_pc
    }

    /// Puts `_dl_debug_state` back, returns the thread (stopped) to the loader if the hook
    /// stopped it, and unmaps the function's page. A thread stopped in the middle of the
    /// function (after a timeout) cannot be moved: the hook then stays, harmless.
    pub fn remove(self, proc: &Process, thread: &mut ThreadHandle<'_>) -> Result<()> {
        let layout = proc.arch().regs();
        let mut regs = thread.regs()?;
        let pc = regs[layout.pc];
        let at_entry = self.page.is_none() && pc == self.code.start;
        if self.code.contains(&pc) && pc != self.stop_pc && !at_entry {
            return Ok(());
        }
        // No other thread calls the function: the loader holds its lock around the calls.
        proc.write(self.loader.debug_state, &self.original)?;
        if pc == self.stop_pc {
            match layout.link {
                Some(lr) => regs[layout.pc] = regs[lr],
                None => {
                    let sp = regs[layout.sp];
                    regs[layout.pc] = proc.read_u64(sp)?;
                    regs[layout.sp] = sp + 8;
                }
            }
            thread.set_regs(&regs)?;
        }
        if let Some((start, len)) = self.page {
            thread.munmap(start, len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_loader_has_the_interface() {
        // The loader of this test process.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let Some(path) = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/ld-linux"))
        else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        let syms = parse_loader(&data).expect("glibc's loader exports _dl_debug_state");
        assert!(syms.debug_state_room >= 4, "{syms:?}");
        assert!(!syms.loads.is_empty());
        assert_ne!(syms.r_debug, 0);
        // Our own executable is no loader.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(parse_loader(&me), None);
    }

    #[test]
    fn the_hook_goes_in_and_out_in_both_forms() {
        use kpatch_process::{HeldEvent, HeldThread};
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let pid = child.id() as i32;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Past its loader: wait until it sleeps.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .map_or(true, |s| s.starts_with("59 ") || s.starts_with("running"))
            {
                assert!(std::time::Instant::now() < deadline, "sleep never slept");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let mut held = HeldThread::seize(pid, pid, false).unwrap();
            held.interrupt().unwrap();
            let ev = held.wait(deadline).unwrap();
            assert_eq!(ev, Some(HeldEvent::Interrupted));
            let proc = Process::open_held(&held).unwrap();
            let maps = proc.maps().unwrap();
            let loader = Loader::find(&proc, &maps, &LoaderCache::default())
                .unwrap()
                .expect("sleep has glibc's loader");
            let before = proc.read_vec(loader.debug_state, 16).unwrap();
            let regions = |p: &Process| p.maps().unwrap().len();
            let n = regions(&proc);
            for page in [false, true] {
                let mut thread = held.handle(&proc).unwrap();
                let hook = if page {
                    Hook::install_in_page(&proc, &mut thread, &loader, libc::SIGURG).unwrap()
                } else {
                    Hook::install(&proc, &mut thread, &loader, libc::SIGURG).unwrap()
                };
                assert_ne!(proc.read_vec(loader.debug_state, 16).unwrap(), before);
                if page {
                    assert!(hook.page.is_some());
                } else if cfg!(target_arch = "x86_64") {
                    assert!(hook.page.is_none(), "glibc's _dl_debug_state has room");
                }
                if let Some((start, _)) = hook.page {
                    assert!(proc
                        .maps()
                        .unwrap()
                        .iter()
                        .any(|m| m.start == start && m.perms.exec));
                }
                hook.remove(&proc, &mut thread).unwrap();
                assert_eq!(proc.read_vec(loader.debug_state, 16).unwrap(), before);
                assert_eq!(regions(&proc), n, "the page is unmapped");
            }
            held.release().unwrap();
        }));
        let _ = child.kill();
        let _ = child.wait();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    #[test]
    fn a_quiet_signal_is_one_the_thread_does_not_block() {
        let pid = std::process::id() as i32;
        let tid = nix::unistd::gettid().as_raw();
        let s = quiet_signal(pid, tid).unwrap();
        assert!(QUIET_SIGNALS.contains(&s));
    }
}
