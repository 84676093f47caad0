//! Coroutines: stacks that no thread runs at the moment but that hold frames of the program,
//! resumed later by a context switch (QEMU's block layer, for one). A function being replaced
//! may sit on such a stack; no thread can be let run out of it, so the run waits for the
//! coroutine to move on (rounds of the checked stop), and fails if it does not.
//!
//! Where the contexts of suspended coroutines are found (x86_64, glibc):
//! - a program may list them: it exports `coroutines_list` (the first coroutine),
//!   `coroutines_list_offset` (where a coroutine holds the next one) and `coroutine_env_offset`
//!   (where it holds its saved `jmp_buf`), as LibCare-enabled QEMU builds do; the list is read
//!   in the stop;
//! - otherwise, in a process that imports `makecontext` or `swapcontext` (what coroutine
//!   libraries build their stacks with), its memory is searched for saved contexts (see
//!   [`crate::coro_search`]) while it runs, and brought up to date in the stop from the pages it
//!   wrote meanwhile ([`kpatch_process::WriteWatch`]), so that the stop costs what was written,
//!   not what is mapped. Searched: every private writable mapping but code, the kernel's pages,
//!   and memory the process marked not to be inherited by a child (`MADV_DONTFORK`: a virtual
//!   machine's guest memory, which is never read). Code or memory mapped between the search and
//!   the stop makes the round search again rather than read memory it knows nothing about.
//!
//! A saved context whose stack pointer lies in a part of a stack some thread is running on is
//! stale (the `jmp_buf` a coroutine saved before it was resumed, the caller's context a
//! switch left behind): that thread's own walk covers those frames (see `safety.rs`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use kpatch_arch::{Arch, SavedContexts};
use kpatch_process::{DeferTermination, MapEntry, Memory, Process, WriteWatch};

use crate::coro_search::{self, Found, Validator};
use crate::discover::LoadedObject;
use crate::elf_image::SymKind;
use crate::error::{Error, Result};
use crate::process_view::StoppedView;
use crate::unwind::merged;

/// Functions a coroutine library creates or switches stacks with.
const SWITCHERS: [&str; 2] = ["makecontext", "swapcontext"];
/// `AT_RANDOM`: glibc takes the pointer guard from bytes 8 to 15 of these 16 random bytes.
const AT_RANDOM: u64 = 25;
/// Passes that search again, while the process runs, what it wrote during the search, and
/// the written bytes under which one more pass is not worth it.
const CATCH_UPS: usize = 3;
const CAUGHT_UP: u64 = 64 << 10;
/// The most memory, written or mapped since the search, that the stop searches (about 2 ms);
/// more makes the round search again while the process runs.
const STOP_BUDGET: u64 = 8 << 20;
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
                "coroutines: {why}; its memory is searched for saved contexts while it runs"
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

/// The process's pointer guard, from the thread control block of a thread with registers
/// `regs`.
pub fn pointer_guard(layout: &SavedContexts, mem: &dyn Memory, regs: &[u64]) -> Option<u64> {
    let tcb = thread_pointer(layout, regs)?;
    mem.read_u64(tcb + layout.pointer_guard_offset).ok()
}

/// The thread control block of a thread with registers `regs` (x86_64: `fs_base`).
pub fn thread_pointer(layout: &SavedContexts, regs: &[u64]) -> Option<u64> {
    regs.get(layout.thread_pointer_word)
        .copied()
        .filter(|&t| t != 0)
}

/// How `arch` saves contexts, or why the coroutines of `source` cannot be checked there
/// (none when there are none).
fn layout(arch: &'static dyn Arch, source: &Source) -> Result<Option<&'static SavedContexts>> {
    if let Some(l) = arch.saved_contexts() {
        return Ok(Some(l));
    }
    let why = match source {
        Source::Listed { object, .. } => format!("{object} lists coroutines"),
        Source::Scan { why } => why.clone(),
        Source::None => return Ok(None),
    };
    Err(Error::Unsupported(format!(
        "{why}, and coroutine stacks can only be checked on x86_64: a function being replaced could be on one"
    )))
}

fn no_guard(why: &str) -> Error {
    Error::Unsupported(format!(
        "{why}, but the pointer guard needed to read saved coroutine contexts could not be read from the thread control block"
    ))
}

fn jmp_buf_context(l: &SavedContexts, at: u64, w: &[u64], guard: u64) -> Option<Context> {
    Some(Context {
        at,
        pc: l.demangle(*w.get(l.jmp_buf_pc)?, guard),
        sp: l.demangle(*w.get(l.jmp_buf_sp)?, guard),
        fp: l.demangle(*w.get(l.jmp_buf_fp)?, guard),
    })
}

/// The contexts of a listed chain of coroutines (see the module documentation).
fn listed(
    l: &SavedContexts,
    mem: &dyn Memory,
    head: u64,
    next_offset: u64,
    env_offset: u64,
    guard: u64,
) -> Result<Vec<Context>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut node = mem.read_u64(head)?;
    while node != 0 && seen.insert(node) && out.len() < MAX_LISTED {
        let mut raw = vec![0u8; l.jmp_buf_words * 8];
        mem.read(node.wrapping_add(env_offset), &mut raw)?;
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if let Some(c) = jmp_buf_context(l, node.wrapping_add(env_offset), &words, guard) {
            out.push(c);
        }
        node = mem.read_u64(node.wrapping_add(next_offset))?;
    }
    Ok(out)
}

/// What the stop made of the coroutines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStop {
    /// The saved contexts of the suspended coroutines (some stale; see the module
    /// documentation), and how many bytes the stop searched for them.
    Contexts {
        contexts: Vec<Context>,
        searched: u64,
    },
    /// The process changed in a way the search did not see (why): the round cannot conclude,
    /// the next one searches again.
    Changed(String),
}

/// What a search while the process ran found, and what it knew then.
#[derive(Debug)]
struct Searched {
    /// Every mapping then.
    maps: Vec<MapEntry>,
    /// The mappings searched (whole).
    domain: Vec<Range<u64>>,
    /// Of those, the ones whose writes are watched.
    watched: Vec<Range<u64>>,
    /// The mappings left out as the process's to share with no child (guest memory).
    dont_fork: Vec<Range<u64>>,
    /// The pointer guard used, if one was known.
    guard: Option<u64>,
    found: Vec<Found>,
    /// Which addresses follow a call (see [`Validator`]).
    calls: HashMap<u64, bool>,
}

/// The coroutines of one process across the rounds of a checked stop: how they are found,
/// and (when memory is searched) what the last search found and how the process's writes are
/// watched since.
#[derive(Debug)]
pub struct Coroutines {
    source: Source,
    watch: Option<WriteWatch>,
    watch_tried: bool,
    /// The pointer guard, once read from a thread control block.
    guard: Option<u64>,
    searched: Option<Searched>,
}

impl Coroutines {
    pub fn new(source: Source) -> Coroutines {
        Coroutines {
            source,
            watch: None,
            watch_tried: false,
            guard: None,
            searched: None,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// While the process runs: searches its memory for saved contexts (when they are to be
    /// searched for), watching its writes from just before. Returns what was done, for
    /// verbose output.
    pub fn prepare(&mut self, proc: &Process, stop_timeout: Duration) -> Result<Option<String>> {
        let arch = proc.arch();
        let Some(l) = arch.saved_contexts() else {
            return Ok(None);
        };
        if !matches!(self.source, Source::Scan { .. }) {
            return Ok(None);
        }
        let t0 = Instant::now();
        if !self.watch_tried {
            self.watch_tried = true;
            self.watch = self.make_watch(proc, stop_timeout)?;
        }
        let maps = proc.maps()?;
        if let Some(line) = self.search_written(proc, &maps, t0)? {
            return Ok(Some(line));
        }
        let dont_fork = proc.dont_fork()?;
        let domain = coro_search::domain(&maps, &dont_fork);
        let watched = match &mut self.watch {
            Some(w) => w.start(&domain)?,
            None => Vec::new(),
        };
        let guard = self.guard.or_else(|| random_guard(proc));
        let mut pieces = Vec::new();
        let mut found = Vec::new();
        let mut calls = HashMap::new();
        if let Some(guard) = guard {
            for r in &domain {
                pieces.extend(proc.resident(r.clone())?);
            }
            let mut v = Validator::new(proc, (arch, l), &maps, guard);
            found = coro_search::search(proc, &merged(pieces.iter().cloned()), &mut v);
            if let Some(w) = &mut self.watch {
                found = catch_up(proc, w, &watched, &domain, found, &mut v)?;
            }
            calls = v.into_calls();
        }
        let bytes: u64 = pieces.iter().map(|p| p.end - p.start).sum();
        let line = format!(
            "coroutines: {} KiB in {} mappings searched in {} ms, {} saved context(s); writes then {}",
            bytes >> 10,
            domain.len(),
            t0.elapsed().as_millis(),
            found.len(),
            match &self.watch {
                Some(w) => format!("watched by {}", w.name()),
                None => "not watched (the kernel offers no way): the stop searches again".into(),
            }
        );
        self.searched = Some(Searched {
            maps,
            domain,
            watched,
            dont_fork,
            guard,
            found,
            calls,
        });
        Ok(Some(line))
    }

    /// A later round's search, when the mappings are as the last search saw them and the
    /// pages written since can be taken (userfaultfd): only those are searched again.
    fn search_written(
        &mut self,
        proc: &Process,
        maps: &[MapEntry],
        t0: Instant,
    ) -> Result<Option<String>> {
        let (Some(s), Some(w)) = (&mut self.searched, &mut self.watch) else {
            return Ok(None);
        };
        let Some(guard) = s
            .guard
            .filter(|&g| self.guard.is_none_or(|known| known == g))
        else {
            return Ok(None);
        };
        if s.maps != maps {
            return Ok(None);
        }
        let Some(written) = w.take_written(&s.watched)? else {
            return Ok(None);
        };
        let mut dirty = written;
        for r in coro_search::subtract(&s.domain, &merged(s.watched.iter().cloned())) {
            dirty.extend(proc.resident(r)?);
        }
        let dirty = merged(dirty);
        let arch = proc.arch();
        let Some(l) = arch.saved_contexts() else {
            return Ok(None);
        };
        let mut v =
            Validator::new(proc, (arch, l), maps, guard).with_calls(std::mem::take(&mut s.calls));
        let found = coro_search::refresh(proc, &s.found, &dirty, &s.domain, &mut v);
        s.found = catch_up(proc, w, &s.watched, &s.domain, found, &mut v)?;
        s.calls = v.into_calls();
        Ok(Some(format!(
            "coroutines: {} KiB written since the last search searched again in {} ms, {} saved context(s)",
            dirty.iter().map(|r| r.end - r.start).sum::<u64>() >> 10,
            t0.elapsed().as_millis(),
            s.found.len()
        )))
    }

    /// The way to watch the process's writes: userfaultfd (made in a thread stopped for the
    /// moment, whose thread control block also gives the pointer guard), else soft-dirty bits,
    /// else none.
    fn make_watch(&mut self, proc: &Process, timeout: Duration) -> Result<Option<WriteWatch>> {
        let _defer = DeferTermination::new();
        let mut stopped = crate::process_view::stop_one_thread(proc, timeout)?;
        let made = {
            let mut thread = stopped.thread();
            if let (Ok(regs), Some(l)) = (thread.regs(), proc.arch().saved_contexts()) {
                self.guard = pointer_guard(l, proc, &regs);
            }
            WriteWatch::userfaultfd(&mut thread)
        };
        stopped.resume()?;
        match made? {
            Some(w) => Ok(Some(w)),
            None => Ok(WriteWatch::soft_dirty(proc)?),
        }
    }

    /// In the stop: the saved contexts of the suspended coroutines; `maps` are the mappings
    /// now.
    pub fn at_stop(
        &mut self,
        arch: &'static dyn Arch,
        world: &mut dyn StoppedView<'_>,
        maps: &[MapEntry],
    ) -> Result<AtStop> {
        let Some(l) = layout(arch, &self.source)? else {
            return Ok(AtStop::Contexts {
                contexts: Vec::new(),
                searched: 0,
            });
        };
        let proc = world.process();
        let mem = proc.memory();
        let guard = world.any_regs().and_then(|r| pointer_guard(l, mem, &r));
        match &self.source {
            Source::None => Ok(AtStop::Contexts {
                contexts: Vec::new(),
                searched: 0,
            }),
            Source::Listed {
                object,
                head,
                next_offset,
                env_offset,
            } => {
                let guard = guard.ok_or_else(|| no_guard(object))?;
                Ok(AtStop::Contexts {
                    contexts: listed(l, mem, *head, *next_offset, *env_offset, guard)?,
                    searched: 0,
                })
            }
            Source::Scan { why } => {
                let guard = guard.ok_or_else(|| no_guard(why))?;
                self.guard = Some(guard);
                let Some(s) = &self.searched else {
                    return Ok(AtStop::Changed("memory was not searched yet".into()));
                };
                if s.guard != Some(guard) {
                    return Ok(AtStop::Changed(
                        "the search did not know the pointer guard".into(),
                    ));
                }
                let domain = match coro_search::compare(&s.domain, &s.dont_fork, &s.maps, maps) {
                    Ok(domain) => domain,
                    Err(what) => return Ok(AtStop::Changed(what)),
                };
                let mut dirty = match &self.watch {
                    Some(w) => w.written(&s.watched)?,
                    None => Vec::new(),
                };
                // What is not watched (and what grew since) is searched whole.
                for r in coro_search::subtract(&domain, &merged(s.watched.iter().cloned())) {
                    dirty.extend(proc.resident(r));
                }
                let dirty = merged(dirty);
                let bytes: u64 = dirty.iter().map(|r| r.end - r.start).sum();
                if self.watch.is_some() && bytes > STOP_BUDGET {
                    // Searched while the process runs instead, keeping the stop short.
                    return Ok(AtStop::Changed(format!(
                        "{} MiB written or mapped",
                        bytes >> 20
                    )));
                }
                let mut v = Validator::new(mem, (arch, l), maps, guard).with_calls(s.calls.clone());
                let now = coro_search::refresh(mem, &s.found, &dirty, &domain, &mut v);
                let mapped = |a: u64| maps.iter().any(|m| m.contains(a));
                Ok(AtStop::Contexts {
                    contexts: now.iter().map(|f| f.ctx).filter(|c| mapped(c.at)).collect(),
                    searched: bytes,
                })
            }
        }
    }
}

/// `found` (from memory read since `watch` started) with what was written during the search
/// searched again at once, the pages protected again as they are listed (userfaultfd), so that
/// the stop has only what is written from then on to search.
fn catch_up(
    proc: &Process,
    watch: &mut WriteWatch,
    watched: &[Range<u64>],
    domain: &[Range<u64>],
    mut found: Vec<Found>,
    v: &mut Validator<'_>,
) -> Result<Vec<Found>> {
    for _ in 0..CATCH_UPS {
        let Some(written) = watch.take_written(watched)? else {
            break;
        };
        let dirty = merged(written);
        found = coro_search::refresh(proc, &found, &dirty, domain, v);
        if dirty.iter().map(|r| r.end - r.start).sum::<u64>() <= CAUGHT_UP {
            break;
        }
    }
    Ok(found)
}

/// The pointer guard glibc derives from `AT_RANDOM` (checked against a thread control block's
/// in the stop).
fn random_guard(proc: &Process) -> Option<u64> {
    let random = proc.auxv().ok()?.get(AT_RANDOM)?;
    proc.read_u64(random.checked_add(8)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess, FakeStopped};
    use kpatch_process::MapName;
    use std::collections::BTreeMap;

    fn x86() -> &'static SavedContexts {
        kpatch_arch::X86_64.saved_contexts().unwrap()
    }

    fn put(buf: &mut [u8], off: usize, v: u64) {
        buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn a_listed_chain_is_walked_once() {
        const NODES: u64 = 0x10_0000;
        const TCB: u64 = 0x20_0000;
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
        mem.map(TCB, vec![0; 0x100]);
        mem.poke_words(TCB + x86().pointer_guard_offset, &[guard]);
        let mut regs = vec![0u64; 27];
        regs[x86().thread_pointer_word] = TCB;
        let mut world = FakeStopped {
            proc: &mem,
            threads: BTreeMap::from([(1, regs)]),
            maps: vec![fake::mapping(
                NODES..NODES + 0x1000,
                true,
                false,
                MapName::Anonymous,
            )],
        };
        let mut coros = Coroutines::new(Source::Listed {
            object: "qemu".into(),
            head: NODES,
            next_offset: 16,
            env_offset: 64,
        });
        let AtStop::Contexts {
            contexts: found, ..
        } = coros.at_stop(kpatch_arch::host(), &mut world, &[]).unwrap()
        else {
            panic!("not listed")
        };
        let pcs: Vec<u64> = found.iter().map(|c| c.pc).collect();
        assert_eq!(pcs, vec![0x1111, 0x2222]);
        // Without the guard, the contexts cannot be read: refused, not skipped.
        world.threads.insert(1, vec![0u64; 27]);
        assert!(coros.at_stop(kpatch_arch::host(), &mut world, &[]).is_err());
    }

    #[test]
    fn a_stop_before_any_search_searches_again() {
        const TCB: u64 = 0x20_0000;
        let mem = FakeProcess::x86_64();
        mem.map(TCB, vec![0; 0x100]);
        mem.poke_words(TCB + x86().pointer_guard_offset, &[5]);
        let mut regs = vec![0u64; 27];
        regs[x86().thread_pointer_word] = TCB;
        let mut world = FakeStopped {
            proc: &mem,
            threads: BTreeMap::from([(1, regs)]),
            maps: Vec::new(),
        };
        let mut coros = Coroutines::new(Source::Scan { why: "test".into() });
        assert!(matches!(
            coros.at_stop(kpatch_arch::host(), &mut world, &[]).unwrap(),
            AtStop::Changed(_)
        ));
        // The guard is known for the next search.
        assert_eq!(coros.guard, Some(5));
    }

    #[test]
    fn without_a_watch_the_stop_searches_everything_again_and_new_memory_searches_anew() {
        const CODE: u64 = 0x40_0000;
        const HEAP: u64 = 0x80_0000;
        const TCB: u64 = 0x20_0000;
        let guard = 0x1234_5678;
        let mangle = |p: u64| (p ^ guard).rotate_left(0x11);
        let mem = FakeProcess::x86_64();
        let mut code = vec![0x90u8; 0x1000];
        code[0x100] = 0xe8;
        mem.map(CODE, code);
        mem.map(HEAP, vec![0; 0x2000]);
        mem.map(TCB, vec![0; 0x100]);
        mem.poke_words(TCB + x86().pointer_guard_offset, &[guard]);
        let maps = vec![
            fake::mapping(CODE..CODE + 0x1000, false, true, MapName::Anonymous),
            fake::mapping(HEAP..HEAP + 0x2000, true, false, MapName::Anonymous),
        ];
        let mut regs = vec![0u64; 27];
        regs[x86().thread_pointer_word] = TCB;
        let mut world = FakeStopped {
            proc: &mem,
            threads: BTreeMap::from([(1, regs)]),
            maps: maps.clone(),
        };
        // Searched when the heap held nothing; no watch since.
        let mut coros = Coroutines::new(Source::Scan { why: "test".into() });
        coros.searched = Some(Searched {
            maps: maps.clone(),
            domain: std::iter::once(HEAP..HEAP + 0x2000).collect(),
            watched: Vec::new(),
            dont_fork: Vec::new(),
            guard: Some(guard),
            found: Vec::new(),
            calls: HashMap::new(),
        });
        // Then a coroutine saved its context.
        mem.poke_words(
            HEAP + 0x1800 + 48,
            &[mangle(HEAP + 0x1000), mangle(CODE + 0x105)],
        );
        let at_stop = |coros: &mut Coroutines, world: &mut FakeStopped<'_>| {
            let maps = world.maps.clone();
            coros.at_stop(kpatch_arch::host(), world, &maps).unwrap()
        };
        let AtStop::Contexts { contexts, searched } = at_stop(&mut coros, &mut world) else {
            panic!("the mappings did not change");
        };
        assert_eq!(searched, 0x2000);
        assert_eq!(
            contexts.iter().map(|c| (c.at, c.pc)).collect::<Vec<_>>(),
            vec![(HEAP + 0x1800, CODE + 0x105)]
        );
        // Memory the search did not see: searched anew, not read in the stop.
        world.maps.push(fake::mapping(
            0x90_0000..0x90_1000,
            true,
            false,
            MapName::Anonymous,
        ));
        assert_eq!(
            at_stop(&mut coros, &mut world),
            AtStop::Changed("memory mapped at 0x900000-0x901000".into())
        );
        // A guard other than the search's: searched anew, with the right one.
        world.maps.pop();
        mem.poke_words(TCB + x86().pointer_guard_offset, &[guard + 1]);
        assert!(matches!(
            at_stop(&mut coros, &mut world),
            AtStop::Changed(_)
        ));
        assert_eq!(coros.guard, Some(guard + 1));
    }

    #[test]
    fn demangling_undoes_glibc_mangling() {
        let guard = 0x1234_5678_9abc_def0;
        let ptr = 0x7fff_dead_b000u64;
        let mangled = (ptr ^ guard).rotate_left(0x11);
        assert_eq!(x86().demangle(mangled, guard), ptr);
        assert_eq!(x86().mangle(ptr, guard), mangled);
    }
}
