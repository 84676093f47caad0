//! Stack walking for the safety check: framehop over the unwind tables of the objects mapped
//! in the target, with stack memory read through a caller-supplied function (the unwinder never
//! touches the target itself, so it is tested against fake stacks).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use framehop::aarch64::{CacheAarch64, UnwindRegsAarch64, UnwinderAarch64};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use kpatch_arch::{Aarch64, Arch, CALL_WINDOW};

use crate::elf_image::ElfImage;

/// Frames beyond this depth are not examined (a corrupt stack must not loop forever).
const MAX_FRAMES: usize = 4096;

/// A section of an analysed object, shared rather than copied: with `-p all` every process's
/// walker uses the same cached images.
#[derive(Clone)]
struct SectionBytes {
    image: Arc<ElfImage>,
    range: Range<usize>,
}

impl std::ops::Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.image.data[self.range.clone()]
    }
}

enum Inner {
    X86_64(UnwinderX86_64<SectionBytes>, CacheX86_64),
    Aarch64(UnwinderAarch64<SectionBytes>, CacheAarch64),
}

/// An unwinder for one target process.
pub struct StackWalker {
    inner: Inner,
    arch: &'static dyn Arch,
    opaque: Vec<Range<u64>>,
    code: Vec<Range<u64>>,
    trampolines: Trampolines,
}

/// Where the signal trampolines are: found in the text of the known objects before any stop,
/// so that the walk reads no code for them; code elsewhere (the vDSO, anonymous code) is read
/// and checked once per address.
#[derive(Default)]
struct Trampolines {
    /// Text ranges searched (run-time addresses).
    searched: Vec<Range<u64>>,
    found: HashSet<u64>,
    /// Addresses outside them already checked, with the answer.
    checked: HashMap<u64, bool>,
}

/// What identifies a text section's bytes for [`trampolines_in`]: where they are (the images
/// of mapped files are cached and shared for the whole run), how many, and a sample of them.
type TextKey = (usize, usize, u16, [u8; 32]);

/// The signal trampolines found in text sections, kept for a whole run of the tool (in the
/// run's image cache, with the images the texts belong to).
#[derive(Default)]
pub struct TrampolineCache(Mutex<Vec<(TextKey, Arc<Vec<usize>>)>>);

/// Offsets of the signal trampolines in a text section's bytes, each text searched once per
/// run of the tool.
fn trampolines_in(arch: &dyn Arch, text: &[u8], known: &TrampolineCache) -> Arc<Vec<usize>> {
    let cache = &known.0;
    let mut sample = [0u8; 32];
    for (i, b) in sample.iter_mut().enumerate() {
        *b = text.get(i * text.len() / 32).copied().unwrap_or(0);
    }
    let key = (text.as_ptr() as usize, text.len(), arch.e_machine(), sample);
    let cached = |c: &Vec<(TextKey, Arc<Vec<usize>>)>| {
        c.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    };
    if let Some(v) = cache.lock().ok().and_then(|c| cached(&c)) {
        return v;
    }
    let mut out = Vec::new();
    let syscall = arch.syscall_insn();
    let codes = arch.sigreturn_code();
    // Every syscall instruction, then what precedes it. A vectorised search: comparing at
    // each offset was a third of a one-process `patch -p all` (libc's text, megabytes).
    let step = (arch.insn_alignment() as usize).max(1);
    let finder = memchr::memmem::Finder::new(syscall);
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|rest| finder.find(rest)) {
        let i = from + found;
        from = i + 1;
        if i % step != 0 {
            continue;
        }
        for c in codes {
            if let Some(start) = i.checked_sub(c.syscall_at) {
                if text[start..].starts_with(c.bytes) {
                    out.push(start);
                }
            }
        }
    }
    let v = Arc::new(out);
    if let Ok(mut c) = cache.lock() {
        c.push((key, v.clone()));
    }
    v
}

impl std::fmt::Debug for StackWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackWalker")
            .field("arch", &self.arch.name())
            .finish()
    }
}

fn section(
    image: &Arc<ElfImage>,
    s: &Option<crate::elf_image::SectionData>,
) -> (Option<Range<u64>>, Option<SectionBytes>) {
    match s {
        Some(s) => (
            Some(s.svma.clone()),
            image.data.get(s.file.clone()).map(|_| SectionBytes {
                image: image.clone(),
                range: s.file.clone(),
            }),
        ),
        None => (None, None),
    }
}

impl StackWalker {
    /// A walker with no modules yet. Made while the target runs: the decoder that tells return
    /// addresses ([`follows_call`]) is made ready now.
    pub fn new(arch: &'static dyn Arch) -> StackWalker {
        arch.prepare_decoder();
        // framehop has an unwinder type per instruction set: the one of this Arch value's type.
        let any: &dyn std::any::Any = arch;
        let inner = if any.is::<Aarch64>() {
            Inner::Aarch64(UnwinderAarch64::new(), CacheAarch64::new())
        } else {
            Inner::X86_64(UnwinderX86_64::new(), CacheX86_64::new())
        };
        StackWalker {
            inner,
            arch,
            opaque: Vec::new(),
            code: Vec::new(),
            trampolines: Trampolines::default(),
        }
    }

    /// Adds an object mapped at `avma` with load bias `bias`; its text is searched for signal
    /// trampolines, unless `cache` knows them.
    pub fn add_object(
        &mut self,
        name: &str,
        avma: Range<u64>,
        bias: u64,
        image: &Arc<ElfImage>,
        cache: &TrampolineCache,
    ) {
        let (eh_frame_svma, eh_frame) = section(image, &image.eh_frame);
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(image, &image.eh_frame_hdr);
        let (text_svma, text) = section(image, &image.text);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            got_svma: image.got.clone(),
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            debug_frame: None,
            text_segment_svma: None,
            text_segment: None,
        };
        if let Some(t) = &image.text {
            if let Some(bytes) = image.data.get(t.file.clone()) {
                self.search_text(t.svma.start.wrapping_add(bias), bytes, cache);
            }
        }
        let module = Module::new(name.to_owned(), avma, bias, info);
        match &mut self.inner {
            Inner::X86_64(u, _) => u.add_module(module),
            Inner::Aarch64(u, _) => u.add_module(module),
        }
    }

    /// Notes the signal trampolines in code at `start` (its bytes): the walk then reads none
    /// of that code to recognise them.
    pub fn search_text(&mut self, start: u64, bytes: &[u8], cache: &TrampolineCache) {
        let at = &mut self.trampolines;
        at.searched
            .push(start..start.wrapping_add(bytes.len() as u64));
        at.found.extend(
            trampolines_in(self.arch, bytes, cache)
                .iter()
                .map(|&off| start.wrapping_add(off as u64)),
        );
    }

    /// Whether `value`, found on a stack, could lead the walk to frames that are not on that
    /// stack: it is a signal trampoline (a handler's return address; the interrupted context
    /// may be on another stack), or it points into code whose trampolines are not known.
    pub fn may_lead_elsewhere(&self, value: u64) -> bool {
        let t = &self.trampolines;
        t.found.contains(&value)
            || (contains_sorted(&self.code, value)
                && !t.searched.iter().any(|r| r.contains(&value)))
    }

    /// Whether a thread with program counter `pc` is in a signal frame as far as
    /// [`StackWalker::may_lead_elsewhere`] can tell: on a trampoline, or on its syscall
    /// instruction.
    pub fn may_be_on_trampoline(&self, pc: u64) -> bool {
        std::iter::once(0)
            .chain(
                self.arch
                    .sigreturn_code()
                    .iter()
                    .map(|c| c.syscall_at as u64),
            )
            .any(|back| self.may_lead_elsewhere(pc.wrapping_sub(back)))
    }

    /// Marks `range` as code without unwind tables (the text of applied patches): frames there
    /// are stepped by scanning the stack for the return address (x86_64), rather than by the
    /// frame-pointer guess framehop falls back to.
    pub fn add_opaque(&mut self, range: Range<u64>) {
        self.opaque.push(range);
    }

    /// Sets the executable ranges of the process: a scanned return address must lie in one.
    pub fn set_code(&mut self, code: Vec<Range<u64>>) {
        self.code = merged(code);
    }

    /// The frames of a thread stopped with registers `regs` (the `NT_PRSTATUS` words).
    /// `read` reads one 8-byte word of the target's memory. A walk that cannot go on stops
    /// there; `complete` says whether it reached the end of the stack.
    pub fn walk(&mut self, regs: &[u64], read: &mut dyn FnMut(u64) -> Option<u64>) -> Walk {
        let layout = self.arch.regs();
        let reg = |i: usize| regs.get(i).copied().unwrap_or(0);
        let (pc, sp, fp) = (reg(layout.pc), reg(layout.sp), reg(layout.fp));
        let lr = layout.link.map(reg).unwrap_or(0);
        self.walk_from(pc, sp, fp, lr, read)
    }

    /// The frames of a context saved elsewhere than in a thread (a coroutine): program
    /// counter, stack pointer, frame pointer and (aarch64) link register.
    pub fn walk_from(
        &mut self,
        pc: u64,
        sp: u64,
        fp: u64,
        lr: u64,
        read: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Walk {
        let mut frames = vec![Frame {
            addr: pc,
            lookup: pc,
            sp,
        }];
        let mut complete = false;
        let arch = self.arch;
        let opaque = &self.opaque;
        let code = &self.code;
        let memo = &mut self.trampolines;
        match &mut self.inner {
            Inner::X86_64(u, cache) => {
                let mut regs = UnwindRegsX86_64::new(pc, sp, fp);
                let mut address = FrameAddress::InstructionPointer(pc);
                while frames.len() < MAX_FRAMES {
                    if let Some(ctx) = signal_context(arch, address, regs.sp(), read, memo) {
                        regs = UnwindRegsX86_64::new(ctx.pc, ctx.sp, ctx.fp);
                        address = interrupted(ctx, &mut frames);
                        continue;
                    }
                    let lookup = address.address_for_lookup();
                    let mut read_stack = |addr: u64| read(addr).ok_or(());
                    let step = if opaque.iter().any(|r| r.contains(&lookup)) {
                        scan_x86_64(arch, &mut regs, code, &mut read_stack)
                    } else {
                        u.unwind_frame(address, &mut regs, cache, &mut read_stack)
                            .map_err(drop)
                    };
                    match next_frame(step, regs.sp(), &mut frames, &mut complete) {
                        Some(a) => address = a,
                        None => break,
                    }
                }
            }
            Inner::Aarch64(u, cache) => {
                let mut regs = UnwindRegsAarch64::new(lr, sp, fp);
                let mut address = FrameAddress::InstructionPointer(pc);
                while frames.len() < MAX_FRAMES {
                    if let Some(ctx) = signal_context(arch, address, regs.sp(), read, memo) {
                        regs = UnwindRegsAarch64::new(ctx.lr, ctx.sp, ctx.fp);
                        address = interrupted(ctx, &mut frames);
                        continue;
                    }
                    let mut read_stack = |addr: u64| read(addr).ok_or(());
                    let step = u
                        .unwind_frame(address, &mut regs, cache, &mut read_stack)
                        .map_err(drop);
                    match next_frame(step, regs.sp(), &mut frames, &mut complete) {
                        Some(a) => address = a,
                        None => break,
                    }
                }
            }
        }
        Walk { frames, complete }
    }
}

/// The registers a signal handler's return restores: the context the signal interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SignalContext {
    pc: u64,
    sp: u64,
    fp: u64,
    lr: u64,
}

/// Whether the code at `start` is one of `codes`, read a word at a time (the second word only
/// when the first matches).
fn code_at(
    start: u64,
    codes: &[kpatch_arch::SigreturnCode],
    read: &mut dyn FnMut(u64) -> Option<u64>,
) -> bool {
    let Some(first) = read(start) else {
        return false;
    };
    let first = first.to_le_bytes();
    let mut second: Option<Option<[u8; 8]>> = None;
    codes.iter().any(|c| {
        c.bytes.iter().enumerate().all(|(i, &b)| match i {
            0..8 => first[i] == b,
            8..16 => second
                .get_or_insert_with(|| read(start + 8).map(u64::to_le_bytes))
                .is_some_and(|w| w[i - 8] == b),
            _ => false,
        })
    })
}

/// If the frame at `address` is a signal trampoline (a handler returns into it; a thread may
/// also stand on it), the context the signal interrupted. framehop cannot step these frames
/// (glibc describes `__restore_rt` with a CFA expression, the vDSO's trampoline is in no module)
/// and would fall back to a frame-pointer guess that skips the interrupted function's own frame.
fn signal_context(
    arch: &dyn Arch,
    address: FrameAddress,
    sp: u64,
    read: &mut dyn FnMut(u64) -> Option<u64>,
    known: &mut Trampolines,
) -> Option<SignalContext> {
    let at = match address {
        FrameAddress::ReturnAddress(ra) => ra.get(),
        FrameAddress::InstructionPointer(pc) => pc,
    };
    let codes = arch.sigreturn_code();
    let mut is_trampoline = |start: u64, read: &mut dyn FnMut(u64) -> Option<u64>| -> bool {
        if known.searched.iter().any(|r| r.contains(&start)) {
            return known.found.contains(&start);
        }
        if let Some(&yes) = known.checked.get(&start) {
            return yes;
        }
        let yes = code_at(start, codes, read);
        known.checked.insert(start, yes);
        yes
    };
    // A thread stopped on the trampoline's syscall instruction has the same stack.
    let on_syscall: &[kpatch_arch::SigreturnCode] = match address {
        FrameAddress::InstructionPointer(_) => codes,
        _ => &[],
    };
    let mut starts = std::iter::once(0).chain(on_syscall.iter().map(|c| c.syscall_at as u64));
    if !starts.any(|back| is_trampoline(at.wrapping_sub(back), read)) {
        return None;
    }
    let frame = arch.signal_frame();
    Some(SignalContext {
        pc: read(sp.checked_add(frame.pc)?)?,
        sp: read(sp.checked_add(frame.sp)?)?,
        fp: read(sp.checked_add(frame.fp)?)?,
        lr: match frame.lr {
            Some(off) => read(sp.checked_add(off)?)?,
            None => 0,
        },
    })
}

/// Records the frame a signal interrupted (its pc is exact, not a return address) and returns
/// where to step from next. Its stack pointer may lie anywhere: the handler may have run on an
/// alternate stack.
fn interrupted(ctx: SignalContext, frames: &mut Vec<Frame>) -> FrameAddress {
    frames.push(Frame {
        addr: ctx.pc,
        lookup: ctx.pc,
        sp: ctx.sp,
    });
    FrameAddress::InstructionPointer(ctx.pc)
}

/// Whether `v` lies in one of `ranges`, sorted by start and disjoint (see [`merged`]).
pub fn contains_sorted(ranges: &[Range<u64>], v: u64) -> bool {
    // Most words searched (stack contents) are outside all of them: rejected at once.
    match (ranges.first(), ranges.last()) {
        (Some(first), Some(last)) if first.start <= v && v < last.end => {}
        _ => return false,
    }
    let i = ranges.partition_point(|r| r.end <= v);
    ranges.get(i).is_some_and(|r| r.start <= v)
}

/// `ranges` sorted by start, overlapping or touching ones merged: for [`contains_sorted`].
pub fn merged(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Records the caller frame a step found; returns where to step from next, or `None` at the
/// end of the walk (a stack pointer that goes down means garbage: stop).
fn next_frame(
    step: Result<Option<u64>, ()>,
    sp: u64,
    frames: &mut Vec<Frame>,
    complete: &mut bool,
) -> Option<FrameAddress> {
    match step {
        Ok(Some(ra)) => {
            let fa = FrameAddress::from_return_address(ra)?;
            let prev_sp = frames.last().map(|f| f.sp).unwrap_or(0);
            if sp < prev_sp {
                return None;
            }
            frames.push(Frame {
                addr: ra,
                lookup: fa.address_for_lookup(),
                sp,
            });
            Some(fa)
        }
        Ok(None) => {
            *complete = true;
            None
        }
        Err(()) => None,
    }
}

/// How far up the stack a frame without unwind information is searched for its return address.
const SCAN_LIMIT: u64 = 64 * 1024;

/// Steps a frame of code without unwind tables on x86_64: the first word at or above the stack
/// pointer that is a return address (it points into executable code, just after a call
/// instruction) is taken as the frame's; the caller's stack pointer is just above it.
fn scan_x86_64(
    arch: &dyn Arch,
    regs: &mut UnwindRegsX86_64,
    code: &[Range<u64>],
    read: &mut dyn FnMut(u64) -> Result<u64, ()>,
) -> Result<Option<u64>, ()> {
    let sp = regs.sp();
    let mut slot = sp;
    while slot < sp.saturating_add(SCAN_LIMIT) {
        let w = read(slot)?;
        if code.iter().any(|r| r.contains(&w)) && follows_call(arch, w, read) {
            // Code built with frame pointers saved the caller's just below the return
            // address and points at it: restore it, the caller's unwind rule may need it.
            if regs.bp() == slot.wrapping_sub(8) {
                if let Ok(bp) = read(slot - 8) {
                    regs.set_bp(bp);
                }
            }
            regs.set_sp(slot + 8);
            regs.set_ip(w);
            return Ok(Some(w));
        }
        slot += 8;
    }
    Err(())
}

/// Whether `addr` is a return address: the instruction before it is a call
/// ([`Arch::follows_call`] on the word before it).
pub fn follows_call(
    arch: &dyn Arch,
    addr: u64,
    read: &mut dyn FnMut(u64) -> Result<u64, ()>,
) -> bool {
    const _: () = assert!(CALL_WINDOW == 8, "one word is read");
    read(addr.wrapping_sub(8)).is_ok_and(|word| arch.follows_call(&word.to_le_bytes()))
}

/// One frame of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The pc (first frame) or the return address (the others).
    pub addr: u64,
    /// The address to look up to know which function the frame is in (a return address minus
    /// one: the call instruction).
    pub lookup: u64,
    /// The stack pointer the frame runs with (for a caller frame: once the callee returned).
    pub sp: u64,
}

/// The result of walking one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub frames: Vec<Frame>,
    pub complete: bool,
}

impl Walk {
    /// The first frame whose code address lies in one of `ranges`.
    pub fn hit(&self, ranges: &[Range<u64>]) -> Option<u64> {
        self.frames
            .iter()
            .map(|f| f.lookup)
            .find(|a| ranges.iter().any(|r| r.contains(a)))
    }

    /// Where the thread gets out of `ranges` for good: the frame that the outermost frame in
    /// `ranges` returns into (its return address and the stack pointer it will have). `None`
    /// when no frame is in `ranges` or the walk stops before that frame.
    pub fn exit_point(&self, ranges: &[Range<u64>]) -> Option<Frame> {
        let last = self
            .frames
            .iter()
            .rposition(|f| ranges.iter().any(|r| r.contains(&f.lookup)))?;
        self.frames.get(last + 1).copied()
    }

    /// The highest stack pointer the walk reached (where the examined part of the stack ends).
    pub fn top_sp(&self) -> u64 {
        self.frames.iter().map(|f| f.sp).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_arch::X86_64;

    /// glibc's x86_64 `__restore_rt`, its first 8 bytes and the 9th.
    const X86_64_SIGRETURN: (u64, u8) = (0x0f00_0000_0fc0_c748, 0x05);
    /// musl's x86_64 trampoline, 7 bytes.
    const X86_64_SIGRETURN_SHORT: u64 = 0x0005_0f00_0000_0fb8;
    /// The aarch64 vDSO's `__kernel_rt_sigreturn`.
    const AARCH64_SIGRETURN: u64 = 0xd400_0001_d280_1168;

    fn frame(addr: u64, sp: u64) -> Frame {
        Frame {
            addr,
            lookup: addr - 1,
            sp,
        }
    }

    #[test]
    fn the_exit_is_the_frame_above_the_outermost_hit() {
        let walk = Walk {
            frames: vec![
                Frame {
                    addr: 0x5000,
                    lookup: 0x5000,
                    sp: 0x100,
                },
                frame(0x1010, 0x140), // in the range
                frame(0x3010, 0x180), // outside
                frame(0x1020, 0x1c0), // in the range again (recursion)
                frame(0x4010, 0x200), // the way out
                frame(0x6010, 0x240),
            ],
            complete: true,
        };
        let ranges: Vec<Range<u64>> = std::iter::once(0x1000..0x1100).collect();
        assert_eq!(walk.hit(&ranges), Some(0x100f));
        assert_eq!(walk.exit_point(&ranges), Some(frame(0x4010, 0x200)));
        assert_eq!(
            walk.exit_point(std::slice::from_ref(&(0x7000..0x8000))),
            None
        );
        // A walk that ends inside the range has no known way out.
        assert_eq!(
            walk.exit_point(std::slice::from_ref(&(0x6000..0x7000))),
            None
        );
        assert_eq!(walk.top_sp(), 0x240);
    }

    /// A fake x86_64 process: words by address.
    fn fake(words: &[(u64, u64)]) -> impl FnMut(u64) -> Option<u64> + '_ {
        move |a| words.iter().find(|(w, _)| *w == a).map(|(_, v)| *v)
    }

    #[test]
    fn signal_frames_lead_to_the_interrupted_code() {
        let mut walker = StackWalker::new(&X86_64);
        let tramp = 0x7000u64;
        // Handler frame (frame pointers, no unwind tables) at 0x9000 returning into the
        // trampoline; the context right above its return address; the interrupted function's
        // frame on another stack (an alternate signal stack below it, say), returning to 0x5010.
        let uc = 0x9010u64;
        let f = X86_64.signal_frame();
        let (pc_at, sp_at, fp_at) = (f.pc, f.sp, f.fp);
        let words = [
            (tramp, X86_64_SIGRETURN.0),
            (tramp + 8, 0x9090_9090_9090_9005),
            (0x9000, 0),     // saved rbp of the handler
            (0x9008, tramp), // its return address
            (uc + pc_at, 0x1234),
            (uc + sp_at, 0x4000),
            (uc + fp_at, 0x4100),
            (0x4100, 0),
            (0x4108, 0x5010),
        ];
        let walk = walker.walk_from(0x3000, 0x8ff0, 0x9000, 0, &mut fake(&words));
        let addrs: Vec<(u64, u64)> = walk.frames.iter().map(|f| (f.addr, f.lookup)).collect();
        assert_eq!(
            &addrs[..4],
            &[
                (0x3000, 0x3000),
                (tramp, tramp - 1),
                (0x1234, 0x1234),
                (0x5010, 0x500f)
            ]
        );
        assert_eq!(walk.frames[2].sp, 0x4000);
        let range = 0x1200..0x1300;
        assert_eq!(walk.hit(std::slice::from_ref(&range)), Some(0x1234));
        assert_eq!(
            walk.exit_point(std::slice::from_ref(&range))
                .map(|f| f.addr),
            Some(0x5010)
        );

        // A thread stopped on the trampoline's syscall instruction, the handler returned.
        let walk = walker.walk_from(tramp + 7, uc, 0, 0, &mut fake(&words));
        assert_eq!(walk.frames[1].addr, 0x1234);
        // The short (musl) form.
        let short = [
            (tramp, X86_64_SIGRETURN_SHORT | 0x9000_0000_0000_0000),
            (uc + pc_at, 0x1234),
            (uc + sp_at, 0x4000),
            (uc + fp_at, 0),
        ];
        let walk = walker.walk_from(tramp, uc, 0, 0, &mut fake(&short));
        assert_eq!(walk.frames[1].addr, 0x1234);
        // Other code is not mistaken for it.
        let other = [(tramp, 0x9090_9090_9090_9090), (uc + pc_at, 0x1234)];
        let walk = walker.walk_from(tramp, uc, 0, 0, &mut fake(&other));
        assert!(walk.frames.iter().all(|f| f.addr != 0x1234));
    }

    #[test]
    fn trampolines_are_found_in_text() {
        let mut text = vec![0x90u8; 64];
        text[10..19].copy_from_slice(&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05]);
        text[30..37].copy_from_slice(&[0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05]);
        // A syscall after some other number is no trampoline.
        text[45..52].copy_from_slice(&[0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05]);
        let cache = TrampolineCache::default();
        assert_eq!(*trampolines_in(&X86_64, &text, &cache), vec![10, 30]);
        let mut arm = vec![0u8; 32];
        arm[8..16].copy_from_slice(&AARCH64_SIGRETURN.to_le_bytes());
        arm[18..26].copy_from_slice(&AARCH64_SIGRETURN.to_le_bytes()); // misaligned
        assert_eq!(*trampolines_in(&Aarch64, &arm, &cache), vec![8]);
    }

    #[test]
    fn aarch64_signal_frames_lead_to_the_interrupted_code() {
        let mut walker = StackWalker::new(&Aarch64);
        let tramp = 0x7000u64;
        let frame = 0x9000u64;
        let f = Aarch64.signal_frame();
        let (pc_at, sp_at, fp_at, lr_at) = (f.pc, f.sp, f.fp, f.lr);
        let words = [
            (tramp, AARCH64_SIGRETURN),
            (frame + pc_at, 0x1234),
            (frame + sp_at, 0x4000),
            (frame + fp_at, 0x4100),
            (frame + lr_at.unwrap(), 0x5010),
        ];
        // Stopped on the trampoline, the handler returned: the stack pointer is on the frame.
        let walk = walker.walk_from(tramp, frame, 0, 0, &mut fake(&words));
        assert_eq!(walk.frames[1].addr, 0x1234);
        assert_eq!(walk.frames[1].sp, 0x4000);
    }

    #[test]
    fn return_addresses_are_checked_on_the_word_before_them() {
        // Every form of call is decoded by kpatch_arch; here, what is read: the 8 bytes
        // before the address, both architectures.
        let code: Vec<u8> = [0x90u8; 7]
            .into_iter()
            .chain([0xff, 0x14, 0x24]) // call *(%rsp), returns to 10
            .chain(0x9400_0010u32.to_le_bytes()) // bl, returns to 14
            .collect();
        let base = 0x1000u64;
        let mut read = |a: u64| -> Result<u64, ()> {
            let off = a.checked_sub(base).ok_or(())? as usize;
            let bytes = code.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(drop)?))
        };
        assert!(follows_call(&X86_64, base + 10, &mut read));
        assert!(!follows_call(&X86_64, base + 9, &mut read));
        assert!(follows_call(&Aarch64, base + 14, &mut read));
        assert!(!follows_call(&Aarch64, base + 10, &mut read));
        // Unreadable memory is no return address.
        assert!(!follows_call(&X86_64, base + 4, &mut read));
    }
}
