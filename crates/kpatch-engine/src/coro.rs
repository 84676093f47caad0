//! Coroutines: stacks that no thread runs at the moment but that hold frames of the program,
//! resumed later by a context switch (QEMU's block layer, for one). A function being replaced
//! may sit on such a stack; no thread can be let run out of it, so the patch fails at once.
//!
//! Where the contexts of suspended coroutines are found (x86_64, glibc):
//! - a program may list them: it exports `coroutines_list` (the first coroutine),
//!   `coroutines_list_offset` (where a coroutine holds the next one) and `coroutine_env_offset`
//!   (where it holds its saved `jmp_buf`), as LibCare-enabled QEMU builds do;
//! - otherwise, in a process that imports `makecontext` or `swapcontext` (what coroutine
//!   libraries build their stacks with), every writable private mapping is searched for saved
//!   contexts: a `jmp_buf` whose stack pointer and program counter, once demangled with the
//!   process's pointer guard, are a 16-byte aligned address in writable memory and a return
//!   address in executable code; or a `ucontext_t`, recognised by its floating-point state
//!   pointer, which `getcontext`/`swapcontext` point into the structure itself.
//!
//! A saved context whose stack pointer lies in a part of a stack some thread is running on is
//! stale (the `jmp_buf` a coroutine saved before it was resumed, the caller's context a
//! switch left behind): that thread's own walk covers those frames.

use std::collections::HashSet;
use std::ops::Range;

use kpatch_arch::{Arch, EM_X86_64};
use kpatch_process::{MapEntry, MapName, Memory};

use crate::discover::LoadedObject;
use crate::elf_image::SymKind;
use crate::error::{Error, Result};
use crate::unwind::follows_call;

/// Functions a coroutine library creates or switches stacks with.
const SWITCHERS: [&str; 2] = ["makecontext", "swapcontext"];
/// glibc x86_64: offset of `pointer_guard` in the thread control block (`%fs:0x30`).
const TCB_POINTER_GUARD: u64 = 0x30;
/// x86_64 `user_regs_struct`: index of `fs_base`.
const FS_BASE_WORD: usize = 21;
/// `jmp_buf` words: rbx, rbp, r12-r15, rsp, pc; rbp, rsp and pc are mangled.
const JB_RBP: usize = 1;
const JB_RSP: usize = 6;
const JB_PC: usize = 7;
const JMP_BUF_WORDS: usize = 8;
/// `ucontext_t` (x86_64): `uc_mcontext.gregs` at 40 (REG_RBP 10, REG_RSP 15, REG_RIP 16),
/// `uc_mcontext.fpregs` at 224, `__fpregs_mem` at 424.
const UC_RBP: usize = (40 + 10 * 8) / 8;
const UC_RSP: usize = (40 + 15 * 8) / 8;
const UC_RIP: usize = (40 + 16 * 8) / 8;
const UC_FPREGS: usize = 224 / 8;
const UC_FPREGS_MEM: u64 = 424;
/// Mappings larger than this are not searched (guest memory of a virtual machine, caches).
const MAX_MAPPING: u64 = 256 << 20;
/// Nor more than this in all.
const MAX_TOTAL: u64 = 1 << 30;
/// A listed chain longer than this is taken as corrupt.
const MAX_LISTED: usize = 1 << 20;

/// How the coroutines of a process are to be found; decided while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The process shows no sign of coroutines.
    None,
    /// The program lists them (see the module documentation).
    Listed {
        object: String,
        /// Address of the `coroutines_list` variable.
        head: u64,
        next_offset: u64,
        env_offset: u64,
    },
    /// Saved contexts are searched for; `why` names the object and import that tell.
    Scan { why: String },
}

impl Source {
    /// What the run does about coroutines, for verbose output.
    pub fn describe(&self) -> Option<String> {
        match self {
            Source::None => None,
            Source::Listed { object, .. } => Some(format!(
                "coroutines: {object} lists its coroutines; their saved contexts are walked too"
            )),
            Source::Scan { why } => Some(format!(
                "coroutines: {why}; writable memory is searched for saved contexts"
            )),
        }
    }
}

/// A saved context of a suspended coroutine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Where it is saved.
    pub at: u64,
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
}

/// Decides how to find coroutines in a process with `objects` loaded.
pub fn source(mem: &dyn Memory, objects: &[LoadedObject]) -> Result<Source> {
    for o in objects {
        let Some(list) = o.image.lookup("coroutines_list", None) else {
            continue;
        };
        if list.kind != SymKind::Object {
            continue;
        }
        let offset = |name: &str| -> Result<u64> {
            let sym = o.image.lookup(name, None).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{} exports coroutines_list but not {name}: its coroutines cannot be walked",
                    o.name
                ))
            })?;
            let mut v = [0u8; 4];
            mem.read(sym.value.wrapping_add(o.load_bias), &mut v)?;
            Ok(u64::from(u32::from_ne_bytes(v)))
        };
        return Ok(Source::Listed {
            object: o.name.clone(),
            head: list.value.wrapping_add(o.load_bias),
            next_offset: offset("coroutines_list_offset")?,
            env_offset: offset("coroutine_env_offset")?,
        });
    }
    for o in objects {
        if let Some(f) = SWITCHERS.iter().find(|f| o.image.imports.contains(**f)) {
            return Ok(Source::Scan {
                why: format!("{} imports {f}", o.name),
            });
        }
    }
    Ok(Source::None)
}

/// glibc's pointer mangling, undone.
fn demangle(v: u64, guard: u64) -> u64 {
    v.rotate_right(0x11) ^ guard
}

/// The process's pointer guard, from the thread control block of a thread with registers
/// `regs`.
pub fn pointer_guard(mem: &dyn Memory, regs: &[u64]) -> Option<u64> {
    let fs_base = *regs.get(FS_BASE_WORD)?;
    if fs_base == 0 {
        return None;
    }
    mem.read_u64(fs_base + TCB_POINTER_GUARD).ok()
}

fn unsupported(arch: &dyn Arch, source: &Source) -> Result<()> {
    if arch.e_machine() == EM_X86_64 {
        return Ok(());
    }
    let why = match source {
        Source::Listed { object, .. } => format!("{object} lists coroutines"),
        Source::Scan { why } => why.clone(),
        Source::None => return Ok(()),
    };
    Err(Error::Unsupported(format!(
        "{why}, and coroutine stacks can only be checked on x86_64: a function being replaced could be on one"
    )))
}

/// What the search needs to know about the process.
pub struct View<'a> {
    pub mem: &'a dyn Memory,
    pub maps: &'a [MapEntry],
    /// Executable ranges (objects and patches).
    pub code: &'a [Range<u64>],
    pub guard: Option<u64>,
}

/// The saved contexts of the process's suspended coroutines (stopped: they must not move).
pub fn contexts(arch: &dyn Arch, source: &Source, view: &View<'_>) -> Result<Vec<Context>> {
    unsupported(arch, source)?;
    match source {
        Source::None => Ok(Vec::new()),
        Source::Listed {
            object,
            head,
            next_offset,
            env_offset,
        } => {
            let guard = view.guard.ok_or_else(|| no_guard(object))?;
            listed(view, *head, *next_offset, *env_offset, guard)
        }
        Source::Scan { why } => {
            let guard = view.guard.ok_or_else(|| no_guard(why))?;
            Ok(scan(view, guard))
        }
    }
}

fn no_guard(why: &str) -> Error {
    Error::Unsupported(format!(
        "{why}, but the pointer guard needed to read saved coroutine contexts could not be read from the thread control block"
    ))
}

fn jmp_buf_context(at: u64, w: &[u64], guard: u64) -> Option<Context> {
    Some(Context {
        at,
        pc: demangle(*w.get(JB_PC)?, guard),
        sp: demangle(*w.get(JB_RSP)?, guard),
        fp: demangle(*w.get(JB_RBP)?, guard),
    })
}

fn listed(
    view: &View<'_>,
    head: u64,
    next_offset: u64,
    env_offset: u64,
    guard: u64,
) -> Result<Vec<Context>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut node = view.mem.read_u64(head)?;
    while node != 0 && seen.insert(node) && out.len() < MAX_LISTED {
        let mut raw = [0u8; JMP_BUF_WORDS * 8];
        view.mem.read(node.wrapping_add(env_offset), &mut raw)?;
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if let Some(c) = jmp_buf_context(node.wrapping_add(env_offset), &words, guard) {
            out.push(c);
        }
        node = view.mem.read_u64(node.wrapping_add(next_offset))?;
    }
    Ok(out)
}

/// Mappings searched for saved contexts: private, readable and writable, not too large.
fn searched(maps: &[MapEntry]) -> Vec<Range<u64>> {
    let mut total = 0;
    let mut out = Vec::new();
    for m in maps {
        let p = m.perms;
        if !p.read || !p.write || p.shared || m.len() > MAX_MAPPING {
            continue;
        }
        if matches!(&m.name, MapName::Special(n) if n == "[vvar]" || n == "[vsyscall]") {
            continue;
        }
        if total + m.len() > MAX_TOTAL {
            break;
        }
        total += m.len();
        out.push(m.range());
    }
    out
}

fn scan(view: &View<'_>, guard: u64) -> Vec<Context> {
    let writable: Vec<Range<u64>> = view
        .maps
        .iter()
        .filter(|m| m.perms.write)
        .map(|m| m.range())
        .collect();
    let in_code = |a: u64| view.code.iter().any(|r| r.contains(&a));
    let in_writable = |a: u64| writable.iter().any(|r| r.contains(&a));
    let mut read = |a: u64| view.mem.read_u64(a).map_err(drop);
    let mut out = Vec::new();
    for range in searched(view.maps) {
        let Ok(bytes) = view
            .mem
            .read_vec(range.start, (range.end - range.start) as usize)
        else {
            continue;
        };
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        for i in 0..words.len() {
            let at = range.start + (i * 8) as u64;
            if let Some(w) = words.get(i..i + JMP_BUF_WORDS) {
                if let Some(c) = jmp_buf_context(at, w, guard) {
                    if c.sp % 16 == 0
                        && in_writable(c.sp)
                        && in_code(c.pc)
                        && follows_call(&kpatch_arch::X86_64, c.pc, &mut read)
                    {
                        out.push(c);
                    }
                }
            }
            if words.get(i + UC_FPREGS) == Some(&(at + UC_FPREGS_MEM)) {
                let (Some(&pc), Some(&sp), Some(&fp)) = (
                    words.get(i + UC_RIP),
                    words.get(i + UC_RSP),
                    words.get(i + UC_RBP),
                ) else {
                    continue;
                };
                if in_code(pc) && in_writable(sp) {
                    out.push(Context { at, pc, sp, fp });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess};

    fn put(buf: &mut [u8], off: usize, v: u64) {
        buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn saved_contexts_are_found_in_writable_memory() {
        const CODE: u64 = 0x40_0000;
        const HEAP: u64 = 0x80_0000;
        let guard = 0x5a5a_1234_dead_beef;
        let mangle = |p: u64| (p ^ guard).rotate_left(0x11);
        // A call at CODE+0x100 returns to CODE+0x105; CODE+0x200 follows no call.
        let mut code = vec![0x90u8; 0x1000];
        code[0x100] = 0xe8;
        let mut heap = vec![0u8; 0x4000];
        // A jmp_buf at +0x100: rbp, rsp, pc mangled.
        let jb = 0x100;
        put(&mut heap, jb + 8, mangle(HEAP + 0x3000));
        put(&mut heap, jb + 48, mangle(HEAP + 0x2f00));
        put(&mut heap, jb + 56, mangle(CODE + 0x105));
        // One whose pc follows no call: not a saved context.
        let bad = 0x400;
        put(&mut heap, bad + 48, mangle(HEAP + 0x2f00));
        put(&mut heap, bad + 56, mangle(CODE + 0x200));
        // A ucontext_t at +0x800: fpregs points into itself.
        let uc = 0x800;
        put(
            &mut heap,
            uc + UC_FPREGS * 8,
            HEAP + uc as u64 + UC_FPREGS_MEM,
        );
        put(&mut heap, uc + UC_RIP * 8, CODE + 0x200);
        put(&mut heap, uc + UC_RSP * 8, HEAP + 0x3800);
        put(&mut heap, uc + UC_RBP * 8, 7);
        let mem = FakeProcess::x86_64();
        mem.map(CODE, code);
        mem.map(HEAP, heap);
        let maps = vec![
            fake::mapping(CODE..CODE + 0x1000, false, true, MapName::Anonymous),
            fake::mapping(
                HEAP..HEAP + 0x4000,
                true,
                false,
                MapName::Special("[heap]".into()),
            ),
        ];
        let code_ranges: Vec<Range<u64>> = std::iter::once(CODE..CODE + 0x1000).collect();
        let view = View {
            mem: &mem,
            maps: &maps,
            code: &code_ranges,
            guard: Some(guard),
        };
        let source = Source::Scan { why: "test".into() };
        let found = contexts(kpatch_arch::host(), &source, &view).unwrap();
        assert_eq!(
            found,
            vec![
                Context {
                    at: HEAP + jb as u64,
                    pc: CODE + 0x105,
                    sp: HEAP + 0x2f00,
                    fp: HEAP + 0x3000
                },
                Context {
                    at: HEAP + uc as u64,
                    pc: CODE + 0x200,
                    sp: HEAP + 0x3800,
                    fp: 7
                },
            ]
        );
        // Without the guard, a search for jmp_bufs is impossible: refused, not skipped.
        let blind = View {
            guard: None,
            ..view
        };
        assert!(contexts(kpatch_arch::host(), &source, &blind).is_err());
    }

    #[test]
    fn a_listed_chain_is_walked_once() {
        const NODES: u64 = 0x10_0000;
        let guard = 77;
        let mangle = |p: u64| (p ^ guard).rotate_left(0x11);
        let mut nodes = vec![0u8; 0x1000];
        // head variable at +0, nodes at +0x100 and +0x300 (next at 16, env at 64); the
        // second links back to the first.
        put(&mut nodes, 0, NODES + 0x100);
        put(&mut nodes, 0x100 + 16, NODES + 0x300);
        put(&mut nodes, 0x300 + 16, NODES + 0x100);
        for (n, pc) in [(0x100, 0x1111), (0x300, 0x2222)] {
            put(&mut nodes, n + 64 + 56, mangle(pc));
            put(&mut nodes, n + 64 + 48, mangle(0x9000));
        }
        let mem = FakeProcess::x86_64();
        mem.map(NODES, nodes);
        let view = View {
            mem: &mem,
            maps: &[],
            code: &[],
            guard: Some(guard),
        };
        let source = Source::Listed {
            object: "qemu".into(),
            head: NODES,
            next_offset: 16,
            env_offset: 64,
        };
        let pcs: Vec<u64> = contexts(kpatch_arch::host(), &source, &view)
            .unwrap()
            .iter()
            .map(|c| c.pc)
            .collect();
        assert_eq!(pcs, vec![0x1111, 0x2222]);
    }

    #[test]
    fn demangling_undoes_glibc_mangling() {
        let guard = 0x1234_5678_9abc_def0;
        let ptr = 0x7fff_dead_b000u64;
        let mangled = (ptr ^ guard).rotate_left(0x11);
        assert_eq!(demangle(mangled, guard), ptr);
    }
}
