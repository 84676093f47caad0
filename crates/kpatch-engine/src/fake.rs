//! Test doubles for the planner and the safety check: a process made of byte ranges, its
//! stopped threads as register vectors, objects without files, and a report that keeps its
//! lines.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use kpatch_arch::Arch;
use kpatch_process::{MapEntry, MapName, Memory, Perms};

use crate::discover::LoadedObject;
use crate::elf_image::{DynSym, ElfImage, SymKind};
use crate::process_view::{ProcessView, StoppedView};
use crate::report::Report;

/// The pid every fake process has.
pub const PID: i32 = 4242;

/// A process whose memory is a few byte ranges; reading or writing outside them fails.
pub struct FakeProcess {
    arch: &'static dyn Arch,
    ranges: RefCell<Vec<(u64, Vec<u8>)>>,
}

impl FakeProcess {
    /// An x86_64 process with nothing mapped.
    pub fn x86_64() -> FakeProcess {
        FakeProcess {
            arch: kpatch_arch::for_machine(kpatch_arch::EM_X86_64).unwrap(),
            ranges: RefCell::new(Vec::new()),
        }
    }

    /// Maps `bytes` at `start`.
    pub fn map(&self, start: u64, bytes: Vec<u8>) {
        self.ranges.borrow_mut().push((start, bytes));
    }

    /// The bytes at `addr`.
    pub fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
        self.read_vec(addr, len).unwrap()
    }

    /// Writes the little-endian words `words` from `addr` on.
    pub fn poke_words(&self, addr: u64, words: &[u64]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(addr, &bytes).unwrap();
    }

    fn locate<T>(&self, addr: u64, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> Option<T> {
        let end = addr.checked_add(len as u64)?;
        let mut ranges = self.ranges.borrow_mut();
        let (start, bytes) = ranges
            .iter_mut()
            .find(|(s, b)| *s <= addr && end <= s + b.len() as u64)?;
        let off = (addr - *start) as usize;
        Some(f(&mut bytes[off..off + len]))
    }
}

fn unmapped(addr: u64) -> kpatch_process::Error {
    kpatch_process::Error::InvalidArgument(format!("nothing mapped at {addr:#x}"))
}

impl Memory for FakeProcess {
    fn read(&self, addr: u64, buf: &mut [u8]) -> kpatch_process::Result<()> {
        self.locate(addr, buf.len(), |b| buf.copy_from_slice(b))
            .ok_or_else(|| unmapped(addr))
    }
    fn write(&self, addr: u64, data: &[u8]) -> kpatch_process::Result<()> {
        self.locate(addr, data.len(), |b| b.copy_from_slice(data))
            .ok_or_else(|| unmapped(addr))
    }
}

impl ProcessView for FakeProcess {
    fn memory(&self) -> &dyn Memory {
        self
    }
    fn pid(&self) -> i32 {
        PID
    }
    fn arch(&self) -> &'static dyn Arch {
        self.arch
    }
}

/// A fake process with every thread stopped.
pub struct FakeStopped<'p> {
    pub proc: &'p FakeProcess,
    /// Registers (`NT_PRSTATUS` words) by thread id.
    pub threads: BTreeMap<i32, Vec<u64>>,
    pub maps: Vec<MapEntry>,
}

impl<'p> StoppedView<'p> for FakeStopped<'p> {
    fn process(&self) -> &'p dyn ProcessView {
        self.proc
    }
    fn tids(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }
    fn regs(&mut self, tid: i32) -> Option<kpatch_process::Result<Vec<u64>>> {
        self.threads.get(&tid).cloned().map(Ok)
    }
    fn any_regs(&mut self) -> Option<Vec<u64>> {
        self.threads.values().next().cloned()
    }
    fn maps(&self) -> kpatch_process::Result<Vec<MapEntry>> {
        Ok(self.maps.clone())
    }
}

/// A private mapping of `range`, readable, with the given permissions and name.
pub fn mapping(range: Range<u64>, write: bool, exec: bool, name: MapName) -> MapEntry {
    MapEntry {
        start: range.start,
        end: range.end,
        perms: Perms {
            read: true,
            write,
            exec,
            shared: false,
        },
        offset: 0,
        dev: (0, 0),
        inode: 0,
        name,
    }
}

/// An analysed image with a build-id and these dynamic function definitions (name, link-time
/// value), and nothing else.
pub fn image(build_id: &str, functions: &[(&str, u64)]) -> ElfImage {
    let mut dynsyms: HashMap<String, Vec<DynSym>> = HashMap::new();
    for &(name, value) in functions {
        dynsyms.entry(name.to_owned()).or_default().push(DynSym {
            value,
            size: 16,
            kind: SymKind::Func,
            version: None,
            hidden: false,
        });
    }
    ElfImage {
        data: Vec::new(),
        build_id: Some(build_id.to_owned()),
        loads: Vec::new(),
        dt_debug: None,
        dynsyms,
        imports: HashSet::new(),
        eh_frame: None,
        eh_frame_hdr: None,
        text: None,
        got: None,
    }
}

/// An object mapped at `range` with load bias `range.start`.
pub fn object(name: &str, range: Range<u64>, image: ElfImage, is_exe: bool) -> LoadedObject {
    LoadedObject {
        name: name.to_owned(),
        load_bias: range.start,
        range,
        image: Arc::new(image),
        is_exe,
    }
}

/// Keeps every line reported.
#[derive(Debug, Default)]
pub struct Lines(pub Vec<String>);

impl Report for Lines {
    fn info(&mut self, msg: &str) {
        self.0.push(msg.to_owned());
    }
    fn detail(&mut self, msg: &str) {
        self.0.push(msg.to_owned());
    }
}
