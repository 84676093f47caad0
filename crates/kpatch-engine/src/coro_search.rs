//! The search of a process's memory for the saved contexts of suspended coroutines (x86_64,
//! glibc), done while the process runs, and brought up to date in the stop from the pages it
//! wrote meanwhile (see [`crate::coro`] for the whole scheme).
//!
//! What is a saved context:
//! - a `jmp_buf` (`setjmp`, `sigsetjmp`) whose stack pointer and program counter, demangled
//!   with the process's pointer guard, are a 16-byte aligned address in writable memory and a
//!   return address (just after a call) in executable code; the pointer guard is a random
//!   secret of the process, so no bytes that the program did not save this way (data a guest
//!   or a client chose, say) pass;
//! - a `ucontext_t` (`getcontext`, `swapcontext`, `makecontext`), recognised by its
//!   floating-point state pointer, which those point into the structure itself, with a program
//!   counter in code and a stack pointer in writable memory.

use std::collections::HashMap;
use std::ops::Range;

use kpatch_arch::{Arch, SavedContexts};
use kpatch_process::{MapEntry, MapName, Memory};

use crate::coro::Context;
use crate::unwind::{contains_sorted, follows_call, merged};

/// Bytes read at a time.
const CHUNK: u64 = 1 << 20;

/// A saved context found in memory, and how many bytes of it the search looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub ctx: Context,
    pub span: u64,
}

impl Found {
    fn bytes(&self) -> Range<u64> {
        self.ctx.at..self.ctx.at + self.span
    }
}

/// The mappings searched for saved contexts: private, writable and readable, not executable,
/// not the kernel's, and not among `dont_fork` (mappings the process asked not to be inherited
/// by a child: QEMU marks a guest's memory so; what a guest wrote is never read).
pub fn domain(maps: &[MapEntry], dont_fork: &[Range<u64>]) -> Vec<Range<u64>> {
    maps.iter()
        .filter(|m| candidate(m) && !dont_fork.iter().any(|d| overlaps(d, &m.range())))
        .map(|m| m.range())
        .collect()
}

/// Whether a mapping is of the kind searched, whatever its `MADV_DONTFORK` state.
fn candidate(m: &MapEntry) -> bool {
    let p = m.perms;
    p.read
        && p.write
        && !p.exec
        && !p.shared
        && !matches!(&m.name, MapName::Special(n) if n == "[vvar]" || n == "[vsyscall]" || n == "[vvar_vclock]")
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// The mappings to search now, given those searched (`searched`, leaving out `dont_fork`
/// ones) when the mappings were `before`: every mapping of the searched kind now, or the
/// change since that calls for a new search: code mapped (saved contexts may return into it),
/// or memory of the searched kind that overlaps no searched mapping (were it a guest's, it
/// would not be known). A mapping split, shrunk or grown (a heap) is no such change: mappings
/// merge only with others of the same flags, so the part grown is new memory of the same kind,
/// to be searched whole. One replaced within the bounds of a searched one is seen through its
/// pages (as written).
pub fn compare(
    searched: &[Range<u64>],
    dont_fork: &[Range<u64>],
    before: &[MapEntry],
    now: &[MapEntry],
) -> Result<Vec<Range<u64>>, String> {
    let code: Vec<Range<u64>> = before
        .iter()
        .filter(|m| m.perms.exec)
        .map(|m| m.range())
        .collect();
    let mut out = Vec::new();
    for m in now {
        let r = m.range();
        if m.perms.exec && !code.iter().any(|c| c.start <= r.start && r.end <= c.end) {
            return Err(format!("code mapped at {:#x}-{:#x}", m.start, m.end));
        }
        if !candidate(m) || dont_fork.contains(&r) {
            continue;
        }
        // The heap grown by brk while searched mappings were watched is a mapping of its own
        // (not merged with the registered one): brk memory is the program's, never a guest's.
        if !searched.iter().any(|s| overlaps(s, &r)) && !m.is_special("[heap]") {
            return Err(format!("memory mapped at {:#x}-{:#x}", m.start, m.end));
        }
        out.push(r);
    }
    Ok(out)
}

/// The parts of `ranges` outside `minus` (both sorted, `minus` merged).
pub fn subtract(ranges: &[Range<u64>], minus: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut at = r.start;
        for m in minus.iter().filter(|m| overlaps(m, r)) {
            if m.start > at {
                out.push(at..m.start);
            }
            at = at.max(m.end);
        }
        if at < r.end {
            out.push(at..r.end);
        }
    }
    out
}

/// Checks candidate contexts: what they point to must be code and writable memory.
pub struct Validator<'a> {
    mem: &'a dyn Memory,
    arch: &'static dyn Arch,
    layout: &'static SavedContexts,
    code: Vec<Range<u64>>,
    writable: Vec<Range<u64>>,
    guard: u64,
    /// Bounds of all code, for a quick first test.
    lo: u64,
    hi: u64,
    /// Whether an address follows a call, by address (code does not change).
    calls: HashMap<u64, bool>,
}

impl<'a> Validator<'a> {
    /// Contexts saved as `layout` says on `arch`, demangled with `guard`, pointing into the
    /// executable and the writable mappings of `maps`, checked by reading `mem`.
    pub fn new(
        mem: &'a dyn Memory,
        (arch, layout): (&'static dyn Arch, &'static SavedContexts),
        maps: &[MapEntry],
        guard: u64,
    ) -> Self {
        // Not the legacy vsyscall page, at the top of the address space: the quick test of
        // the bounds of all code would let half the values through.
        let code = merged(
            maps.iter()
                .filter(|m| m.perms.exec && !m.is_special("[vsyscall]"))
                .map(|m| m.range()),
        );
        let writable = merged(maps.iter().filter(|m| m.perms.write).map(|m| m.range()));
        Validator {
            mem,
            arch,
            layout,
            lo: code.first().map_or(0, |r| r.start),
            hi: code.last().map_or(0, |r| r.end),
            code,
            writable,
            guard,
            calls: HashMap::new(),
        }
    }

    /// The same checks, with the answers about calls already known.
    pub fn with_calls(mut self, calls: HashMap<u64, bool>) -> Self {
        self.calls = calls;
        self
    }

    /// The answers about calls, to reuse.
    pub fn into_calls(self) -> HashMap<u64, bool> {
        self.calls
    }

    fn in_code(&self, a: u64) -> bool {
        a >= self.lo && a < self.hi && contains_sorted(&self.code, a)
    }

    fn follows_call(&mut self, pc: u64) -> bool {
        let (mem, arch) = (self.mem, self.arch);
        *self
            .calls
            .entry(pc)
            .or_insert_with(|| follows_call(arch, pc, &mut |a| mem.read_u64(a).map_err(drop)))
    }

    /// The `jmp_buf` whose words are `w`, saved at `at`, if it is one.
    fn jmp_buf(&mut self, at: u64, w: &[u64]) -> Option<Found> {
        let l = self.layout;
        let pc = l.demangle(w[l.jmp_buf_pc], self.guard);
        if !self.in_code(pc) {
            return None;
        }
        let sp = l.demangle(w[l.jmp_buf_sp], self.guard);
        if !sp.is_multiple_of(16) || !contains_sorted(&self.writable, sp) || !self.follows_call(pc)
        {
            return None;
        }
        Some(Found {
            ctx: Context {
                at,
                pc,
                sp,
                fp: l.demangle(w[l.jmp_buf_fp], self.guard),
            },
            span: l.jmp_buf_span(),
        })
    }

    /// The `ucontext_t` whose words are `w`, at `at`, if it is one.
    fn ucontext(&self, at: u64, w: &[u64]) -> Option<Found> {
        let l = self.layout;
        let (pc, sp) = (w[l.uc_pc], w[l.uc_sp]);
        (self.in_code(pc) && contains_sorted(&self.writable, sp)).then_some(Found {
            ctx: Context {
                at,
                pc,
                sp,
                fp: w[l.uc_fp],
            },
            span: l.ucontext_span(),
        })
    }
}

/// Appends the contexts saved in `bytes` (read at `base`, 8-aligned) that start before
/// `limit` and lie wholly in `bytes`.
fn scan(base: u64, bytes: &[u8], limit: u64, v: &mut Validator<'_>, out: &mut Vec<Found>) {
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let n = words.len();
    let starts = (limit.saturating_sub(base).div_ceil(8) as usize).min(n);
    let (lo, hi, guard, l) = (v.lo, v.hi, v.guard, v.layout);
    for i in 0..starts {
        let at = base + 8 * i as u64;
        if i + l.jmp_buf_words <= n {
            // The quick test first: almost no word demangles into code.
            let pc = l.demangle(words[i + l.jmp_buf_pc], guard);
            if pc >= lo && pc < hi {
                if let Some(f) = v.jmp_buf(at, &words[i..i + l.jmp_buf_words]) {
                    out.push(f);
                }
            }
        }
        if i + l.uc_fpregs < n && words[i + l.uc_fpregs] == at.wrapping_add(l.uc_fpregs_mem) {
            if let Some(f) = v.ucontext(at, &words[i..=i + l.uc_fpregs]) {
                out.push(f);
            }
        }
    }
}

/// Searches `pieces` of memory (sorted and merged: a context may straddle two adjacent
/// mappings) for saved contexts, reading a chunk at a time. Memory that cannot be read
/// (unmapped since) is skipped.
pub fn search(mem: &dyn Memory, pieces: &[Range<u64>], v: &mut Validator<'_>) -> Vec<Found> {
    search_by(mem, pieces, v, CHUNK)
}

fn search_by(
    mem: &dyn Memory,
    pieces: &[Range<u64>],
    v: &mut Validator<'_>,
    chunk: u64,
) -> Vec<Found> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // Small pieces (pages written, a thread's used stack) are read many to a system call.
    let mut small: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut batch = 0;
    let flush = |small: &mut Vec<(u64, Vec<u8>)>, v: &mut Validator<'_>, out: &mut Vec<Found>| {
        let mut parts: Vec<(u64, &mut [u8])> = small
            .iter_mut()
            .map(|(a, b)| (*a, b.as_mut_slice()))
            .collect();
        let read = mem.read_many(&mut parts);
        for ((at, bytes), whole) in small.iter().zip(read) {
            if whole {
                scan(*at, bytes, at + bytes.len() as u64, v, out);
            }
        }
        small.clear();
    };
    for p in pieces {
        let (start, end) = (p.start & !7, p.end & !7);
        if start >= end {
            continue;
        }
        if end - start <= chunk {
            small.push((start, vec![0; (end - start) as usize]));
            batch += end - start;
            if batch >= chunk {
                flush(&mut small, v, &mut out);
                batch = 0;
            }
            continue;
        }
        let mut at = start;
        while at < end {
            let limit = (at + chunk).min(end);
            // A context starting before `limit` may run on past it.
            let read_end = (limit + v.layout.span()).min(end);
            buf.resize((read_end - at) as usize, 0);
            if mem.read(at, &mut buf).is_ok() {
                scan(at, &buf, limit, v, &mut out);
            }
            at = limit;
        }
    }
    flush(&mut small, v, &mut out);
    out.sort_by_key(|f| f.ctx.at);
    out
}

/// The contexts of `found` (from memory read since the watch started), up to date: those
/// whose bytes lie in `dirty` (sorted and merged: written since, or not watched) are dropped,
/// and `dirty` is searched again, from a context's span ([`SavedContexts::span`]) before each piece (a context starting
/// there reaches into it) within `mappings` (adjacent ones taken as one: a heap grown while
/// watched is a mapping of its own, and an object may straddle the two).
pub fn refresh(
    mem: &dyn Memory,
    found: &[Found],
    dirty: &[Range<u64>],
    mappings: &[Range<u64>],
    v: &mut Validator<'_>,
) -> Vec<Found> {
    let touched = |r: Range<u64>| {
        let i = dirty.partition_point(|d| d.end <= r.start);
        dirty.get(i).is_some_and(|d| d.start < r.end)
    };
    let mut out: Vec<Found> = found
        .iter()
        .filter(|f| !touched(f.bytes()))
        .copied()
        .collect();
    let mappings = merged(mappings.iter().cloned());
    let span = v.layout.span();
    let pieces: Vec<Range<u64>> = dirty
        .iter()
        .filter_map(|d| {
            let m = mappings
                .iter()
                .find(|m| m.start <= d.start && d.start < m.end)?;
            Some(d.start.saturating_sub(span - 8).max(m.start)..d.end.min(m.end))
        })
        .collect();
    out.extend(search(mem, &merged(pieces), v));
    out.sort_by_key(|f| f.ctx.at);
    out.dedup_by_key(|f| f.ctx.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess};

    const CODE: u64 = 0x40_0000;
    const HEAP: u64 = 0x80_0000;
    const STACK: u64 = 0x90_0000;
    const GUARD: u64 = 0x5a5a_1234_dead_beef;

    /// One range, as a slice is made of it.
    fn just(r: Range<u64>) -> [Range<u64>; 1] {
        [r]
    }

    fn x86() -> (&'static dyn Arch, &'static SavedContexts) {
        let arch = kpatch_arch::for_machine(kpatch_arch::EM_X86_64).unwrap();
        (arch, arch.saved_contexts().unwrap())
    }

    fn mangle(p: u64) -> u64 {
        x86().1.mangle(p, GUARD)
    }

    /// A process with code (a call at CODE+0x100 returning to CODE+0x105), a heap and a
    /// stack, the heap holding the words `heap`.
    fn process(heap: &[(u64, u64)]) -> (FakeProcess, Vec<MapEntry>) {
        let mut code = vec![0x90u8; 0x1000];
        code[0x100] = 0xe8;
        let p = FakeProcess::x86_64();
        p.map(CODE, code);
        p.map(HEAP, vec![0; 0x4000]);
        p.map(STACK, vec![0; 0x4000]);
        for &(off, w) in heap {
            p.poke_words(HEAP + off, &[w]);
        }
        let maps = vec![
            fake::mapping(CODE..CODE + 0x1000, false, true, MapName::Anonymous),
            fake::mapping(
                HEAP..HEAP + 0x4000,
                true,
                false,
                MapName::Special("[heap]".into()),
            ),
            fake::mapping(STACK..STACK + 0x4000, true, false, MapName::Anonymous),
        ];
        (p, maps)
    }

    /// The words of a jmp_buf at `off` saved with stack pointer `sp` and pc `pc`.
    fn jmp_buf(off: u64, sp: u64, pc: u64) -> Vec<(u64, u64)> {
        vec![
            (off + 8 * x86().1.jmp_buf_fp as u64, mangle(sp + 0x40)),
            (off + 8 * x86().1.jmp_buf_sp as u64, mangle(sp)),
            (off + 8 * x86().1.jmp_buf_pc as u64, mangle(pc)),
        ]
    }

    fn find(p: &FakeProcess, maps: &[MapEntry], pieces: &[Range<u64>]) -> Vec<Context> {
        let mut v = Validator::new(p, x86(), maps, GUARD);
        search(p, pieces, &mut v).iter().map(|f| f.ctx).collect()
    }

    #[test]
    fn saved_contexts_are_found_and_look_alikes_are_not() {
        let mut words = jmp_buf(0x100, STACK + 0x2f00, CODE + 0x105);
        // Its pc follows no call; its stack pointer is not aligned; not mangled with the guard.
        words.extend(jmp_buf(0x400, STACK + 0x2f00, CODE + 0x200));
        words.extend(jmp_buf(0x500, STACK + 0x2f08, CODE + 0x105));
        words.extend([(0x600 + 48, STACK + 0x2f00), (0x600 + 56, CODE + 0x105)]);
        // A ucontext_t at +0x800 (fpregs into itself), one at +0xc00 whose pointer is not.
        for (uc, fpregs) in [
            (0x800, HEAP + 0x800 + x86().1.uc_fpregs_mem),
            (0xc00, HEAP + 0x800),
        ] {
            words.extend([
                (uc + 8 * x86().1.uc_fpregs as u64, fpregs),
                (uc + 8 * x86().1.uc_pc as u64, CODE + 0x200),
                (uc + 8 * x86().1.uc_sp as u64, STACK + 0x3800),
                (uc + 8 * x86().1.uc_fp as u64, 7),
            ]);
        }
        // One that ends where the mapping ends, and one across the first two chunks of a search
        // by pages.
        words.extend(jmp_buf(0x3fc0, STACK + 0x100, CODE + 0x105));
        words.extend(jmp_buf(0xfe0, STACK + 0x200, CODE + 0x105));
        let (p, maps) = process(&words);
        assert_eq!(
            find(&p, &maps, &just(HEAP..HEAP + 0x4000)),
            vec![
                Context {
                    at: HEAP + 0x100,
                    pc: CODE + 0x105,
                    sp: STACK + 0x2f00,
                    fp: STACK + 0x2f40
                },
                Context {
                    at: HEAP + 0x800,
                    pc: CODE + 0x200,
                    sp: STACK + 0x3800,
                    fp: 7
                },
                Context {
                    at: HEAP + 0xfe0,
                    pc: CODE + 0x105,
                    sp: STACK + 0x200,
                    fp: STACK + 0x240
                },
                Context {
                    at: HEAP + 0x3fc0,
                    pc: CODE + 0x105,
                    sp: STACK + 0x100,
                    fp: STACK + 0x140
                },
            ]
        );
        let mut v = Validator::new(&p, x86(), &maps, GUARD);
        let by_pages = search_by(&p, &just(HEAP..HEAP + 0x4000), &mut v, 0x1000);
        assert_eq!(by_pages.len(), 4);
        // Only the pieces asked for are read.
        assert_eq!(find(&p, &maps, &just(HEAP + 0x1000..HEAP + 0x3000)), vec![]);
    }

    #[test]
    fn guest_memory_code_and_the_kernels_pages_are_not_searched() {
        let (_, mut maps) = process(&[]);
        maps.push(fake::mapping(
            0x1000_0000..0x5000_0000,
            true,
            false,
            MapName::Anonymous,
        ));
        maps.push(fake::mapping(
            0x7000_0000..0x7000_1000,
            true,
            false,
            MapName::Special("[vvar]".into()),
        ));
        let mut shared = fake::mapping(0x6000_0000..0x6000_1000, true, false, MapName::Anonymous);
        shared.perms.shared = true;
        maps.push(shared);
        let guest = just(0x1000_0000..0x5000_0000);
        assert_eq!(
            domain(&maps, &guest),
            vec![HEAP..HEAP + 0x4000, STACK..STACK + 0x4000]
        );
        assert_eq!(domain(&maps, &[]).len(), 3);
    }

    #[test]
    fn new_code_or_memory_calls_for_a_new_search_and_a_split_or_growth_does_not() {
        let (_, maps) = process(&[]);
        let guest = just(0x1000_0000..0x5000_0000);
        let searched = domain(&maps, &guest);
        assert_eq!(
            compare(&searched, &guest, &maps, &maps),
            Ok(searched.clone())
        );
        let mut now = maps.clone();
        // The stack split by an mprotect, the heap grown; the guest's memory as it was.
        now[1].end = HEAP + 0x8000;
        now[2].end = STACK + 0x1000;
        now.push(fake::mapping(
            STACK + 0x2000..STACK + 0x4000,
            true,
            false,
            MapName::Anonymous,
        ));
        now.push(fake::mapping(
            guest[0].clone(),
            true,
            false,
            MapName::Anonymous,
        ));
        let to_search = compare(&searched, &guest, &maps, &now).unwrap();
        assert_eq!(
            to_search,
            vec![
                HEAP..HEAP + 0x8000,
                STACK..STACK + 0x1000,
                STACK + 0x2000..STACK + 0x4000
            ]
        );
        assert_eq!(
            subtract(&to_search, &searched),
            vec![HEAP + 0x4000..HEAP + 0x8000]
        );
        // The heap grown as a mapping of its own is no change either.
        let mut brk = now.clone();
        let more = HEAP + 0x8000..HEAP + 0x9000;
        brk.push(fake::mapping(
            more.clone(),
            true,
            false,
            MapName::Special("[heap]".into()),
        ));
        assert_eq!(
            compare(&searched, &guest, &maps, &brk).unwrap().last(),
            Some(&more)
        );
        let mut grown = now.clone();
        grown.push(fake::mapping(
            0xa0_0000..0xa1_0000,
            true,
            false,
            MapName::Anonymous,
        ));
        assert_eq!(
            compare(&searched, &guest, &maps, &grown),
            Err("memory mapped at 0xa00000-0xa10000".into())
        );
        let mut loaded = now.clone();
        loaded.push(fake::mapping(
            0xb0_0000..0xb1_0000,
            false,
            true,
            MapName::Anonymous,
        ));
        assert_eq!(
            compare(&searched, &guest, &maps, &loaded),
            Err("code mapped at 0xb00000-0xb10000".into())
        );
        // Guest memory of other bounds is not what was left out.
        let mut plugged = now;
        plugged.push(fake::mapping(
            0x5000_0000..0x6000_0000,
            true,
            false,
            MapName::Anonymous,
        ));
        assert!(compare(&searched, &guest, &maps, &plugged).is_err());
    }

    #[test]
    fn a_refresh_searches_the_written_pages_again_and_keeps_the_rest() {
        let mut words = jmp_buf(0x100, STACK + 0x2f00, CODE + 0x105);
        words.extend(jmp_buf(0x2000, STACK + 0x1f00, CODE + 0x105));
        // Runs from the end of the first page into the second.
        words.extend(jmp_buf(0xfe0, STACK + 0xf00, CODE + 0x105));
        let (p, maps) = process(&words);
        let mappings = just(HEAP..HEAP + 0x4000);
        let mut v = Validator::new(&p, x86(), &maps, GUARD);
        let found = search(&p, &mappings, &mut v);
        assert_eq!(found.len(), 3);
        // Meanwhile: the context at +0x2000 is overwritten (page 2 written), the one at
        // +0xfe0 changes through page 1, a new one appears in page 3, and one appears in
        // page 0 that the watch missed (it cannot: the test checks that clean pages are kept
        // as they were read).
        p.poke_words(HEAP + 0x2000 + 56, &[0]);
        p.poke_words(HEAP + 0xfe0 + 48, &[mangle(STACK + 0xe00)]);
        for (off, w) in jmp_buf(0x3000, STACK + 0x3000, CODE + 0x105) {
            p.poke_words(HEAP + off, &[w]);
        }
        for (off, w) in jmp_buf(0x800, STACK + 0x800, CODE + 0x105) {
            p.poke_words(HEAP + off, &[w]);
        }
        let dirty = just(HEAP + 0x1000..HEAP + 0x4000);
        let now = refresh(&p, &found, &dirty, &mappings, &mut v);
        // The same with the heap as two mappings (grown while watched) and a context across
        // them: only the second one's first page written.
        for (off, w) in jmp_buf(0x1fe0, STACK + 0x1e00, CODE + 0x105) {
            p.poke_words(HEAP + off, &[w]);
        }
        let two = [HEAP..HEAP + 0x2000, HEAP + 0x2000..HEAP + 0x4000];
        let across = refresh(&p, &[], &just(HEAP + 0x2000..HEAP + 0x3000), &two, &mut v);
        assert_eq!(
            across.iter().map(|f| f.ctx.at - HEAP).collect::<Vec<_>>(),
            [0x1fe0]
        );
        for (off, _) in jmp_buf(0x1fe0, 0, 0) {
            p.poke_words(HEAP + off, &[0]);
        }
        let got: Vec<(u64, u64)> = now
            .iter()
            .map(|f| (f.ctx.at - HEAP, f.ctx.sp - STACK))
            .collect();
        assert_eq!(got, vec![(0x100, 0x2f00), (0xfe0, 0xe00), (0x3000, 0x3000)]);
    }
}
