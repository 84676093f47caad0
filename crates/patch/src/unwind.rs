//! Stack walking for the safety check: framehop over the unwind tables of the objects mapped
//! in the target, with stack memory read through a caller-supplied function (the unwinder never
//! touches the target itself, so it is tested against fake stacks).

use std::ops::Range;

use framehop::aarch64::{CacheAarch64, UnwindRegsAarch64, UnwinderAarch64};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use kpatch_arch::{Arch, EM_AARCH64};

use crate::elf_image::ElfImage;

/// Frames beyond this depth are not examined (a corrupt stack must not loop forever).
const MAX_FRAMES: usize = 4096;

enum Inner {
    X86_64(UnwinderX86_64<Vec<u8>>, CacheX86_64),
    Aarch64(UnwinderAarch64<Vec<u8>>, CacheAarch64),
}

/// An unwinder for one target process.
pub struct StackWalker {
    inner: Inner,
    arch: &'static dyn Arch,
}

impl std::fmt::Debug for StackWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackWalker")
            .field("arch", &self.arch.name())
            .finish()
    }
}

fn section(
    image: &ElfImage,
    s: &Option<crate::elf_image::SectionData>,
) -> (Option<Range<u64>>, Option<Vec<u8>>) {
    match s {
        Some(s) => (
            Some(s.svma.clone()),
            image.data.get(s.file.clone()).map(<[u8]>::to_vec),
        ),
        None => (None, None),
    }
}

impl StackWalker {
    /// A walker with no modules yet.
    pub fn new(arch: &'static dyn Arch) -> StackWalker {
        let inner = if arch.e_machine() == EM_AARCH64 {
            Inner::Aarch64(UnwinderAarch64::new(), CacheAarch64::new())
        } else {
            Inner::X86_64(UnwinderX86_64::new(), CacheX86_64::new())
        };
        StackWalker { inner, arch }
    }

    /// Adds an object mapped at `avma` with load bias `bias`.
    pub fn add_object(&mut self, name: &str, avma: Range<u64>, bias: u64, image: &ElfImage) {
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
            ..Default::default()
        };
        let module = Module::new(name.to_owned(), avma, bias, info);
        match &mut self.inner {
            Inner::X86_64(u, _) => u.add_module(module),
            Inner::Aarch64(u, _) => u.add_module(module),
        }
    }

    /// Code addresses of the frames of a thread stopped with registers `regs` (the
    /// `NT_PRSTATUS` words): the pc, then each caller's call site (return address minus one).
    /// `read` reads one 8-byte word of the target's memory. A walk that cannot go on stops
    /// there; `complete` says whether it reached the end of the stack.
    pub fn walk(&mut self, regs: &[u64], read: &mut dyn FnMut(u64) -> Option<u64>) -> Walk {
        let layout = self.arch.regs();
        let reg = |i: usize| regs.get(i).copied().unwrap_or(0);
        let pc = reg(layout.pc);
        let sp = reg(layout.sp);
        let mut read_stack = |addr: u64| read(addr).ok_or(());
        let mut frames = Vec::new();
        let mut complete = false;
        let mut push =
            |r: Result<Option<FrameAddress>, framehop::Error>, frames: &mut Vec<u64>| match r {
                Ok(Some(f)) => {
                    frames.push(f.address_for_lookup());
                    true
                }
                Ok(None) => {
                    complete = true;
                    false
                }
                Err(_) => false,
            };
        match &mut self.inner {
            Inner::X86_64(u, cache) => {
                // rbp is word 4 of user_regs_struct.
                let regs = UnwindRegsX86_64::new(pc, sp, reg(4));
                let mut it = u.iter_frames(pc, regs, cache, &mut read_stack);
                while frames.len() < MAX_FRAMES && push(it.next(), &mut frames) {}
            }
            Inner::Aarch64(u, cache) => {
                let lr = layout.link.map(reg).unwrap_or(0);
                // x29 is the frame pointer.
                let regs = UnwindRegsAarch64::new(lr, sp, reg(29));
                let mut it = u.iter_frames(pc, regs, cache, &mut read_stack);
                while frames.len() < MAX_FRAMES && push(it.next(), &mut frames) {}
            }
        }
        Walk { frames, complete }
    }
}

/// The result of walking one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub frames: Vec<u64>,
    pub complete: bool,
}

impl Walk {
    /// The first frame whose code address lies in one of `ranges`.
    pub fn hit(&self, ranges: &[Range<u64>]) -> Option<u64> {
        self.frames
            .iter()
            .copied()
            .find(|a| ranges.iter().any(|r| r.contains(a)))
    }
}
