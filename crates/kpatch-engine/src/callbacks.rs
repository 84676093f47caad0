//! The callbacks of `<libcare/livepatch.h>` in a patched process: their records (read from
//! the patch regions, where the runtime also keeps what it has run of them), the object each
//! is for, and the four stages run in the kernel's order and with its rules:
//!
//! - pre-patch before the switch; one that fails cancels the patch, and the objects whose
//!   pre-patch had succeeded get their post-unpatch;
//! - post-patch once the switch is done; pre-unpatch before the revert, for the objects that
//!   are patched; post-unpatch after it, for the objects whose pre-patch succeeded.
//!
//! The calls run in a [`Host`] thread.

use std::cmp::Reverse;

use kpatch_file::{callback_state, CallbackRecord, CALLBACK_RECORD_SIZE};
use kpatch_process::Memory;

use crate::discover::{AppliedPatch, Loaded, LoadedObject};
use crate::error::{Error, Result};
use crate::extras::Extras;
use crate::host::Host;
use crate::report::Report;

/// The four stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    PrePatch = 0,
    PostPatch = 1,
    PreUnpatch = 2,
    PostUnpatch = 3,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::PrePatch => "pre-patch",
            Stage::PostPatch => "post-patch",
            Stage::PreUnpatch => "pre-unpatch",
            Stage::PostUnpatch => "post-unpatch",
        })
    }
}

/// One record of an applied (or being applied) patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The record's address, which is its `struct libcare_object`, the callbacks' argument.
    pub at: u64,
    /// The library's soname; `None` for the program.
    pub object: Option<String>,
    pub funcs: [u64; 4],
    pub state: u64,
    /// The line of its declaration.
    pub order: u64,
    /// The patch's id, for messages.
    pub patch: String,
    /// The patch's region.
    pub region: u64,
    /// Callbacks run sorted by `rank` (given by the caller: which patch), the program's
    /// first, then in declaration order.
    pub rank: usize,
}

impl Callback {
    /// The object, for messages.
    pub fn object_name(&self) -> &str {
        self.object.as_deref().unwrap_or("the program")
    }

    fn describe(&self, stage: Stage) -> String {
        format!(
            "{stage} callback of {} (patch {})",
            self.object_name(),
            self.patch
        )
    }

    /// Whether the callback is for `object`.
    pub fn is_for(&self, object: &LoadedObject) -> bool {
        match &self.object {
            None => object.is_exe,
            Some(name) => {
                object.name == *name || soname(&object.image.data).as_deref() == Some(name)
            }
        }
    }

    /// Whether its object is loaded.
    pub fn loaded_in(&self, loaded: &Loaded) -> bool {
        loaded.objects.iter().any(|o| self.is_for(o))
    }
}

/// The soname (`DT_SONAME`) of an ELF file's bytes.
pub fn soname(data: &[u8]) -> Option<String> {
    use object::read::elf::{Dyn, ElfFile64};
    use object::Endianness;
    let file = ElfFile64::<Endianness>::parse(data).ok()?;
    let e = file.endian();
    let table = file.elf_section_table();
    let (dyns, link) = table.dynamic(e, data).ok()??;
    let strings = table.strings(e, data, link).ok()?;
    let d = dyns.iter().find(|d| d.d_tag(e) == object::elf::DT_SONAME)?;
    let name = d.string(e, strings).ok()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// A C string of the target (at most 255 bytes).
fn read_c_string(mem: &dyn Memory, at: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 32];
    while out.len() < 255 {
        let addr = at + out.len() as u64;
        // Never across a page boundary: the next page may not be mapped.
        let room = (4096 - (addr % 4096)).min(chunk.len() as u64) as usize;
        mem.read(addr, &mut chunk[..room]).ok()?;
        match chunk[..room].iter().position(|&b| b == 0) {
            Some(i) => {
                out.extend_from_slice(&chunk[..i]);
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            None => out.extend_from_slice(&chunk[..room]),
        }
    }
    None
}

/// The records of a region at `kpta` whose ELF image starts at `image`.
pub fn read(
    mem: &dyn Memory,
    kpta: u64,
    image: u64,
    extras: &Extras,
    patch: &str,
    rank: usize,
) -> Vec<Callback> {
    let mut out = Vec::new();
    for &off in &extras.callbacks {
        let at = image + off;
        let mut b = [0u8; CALLBACK_RECORD_SIZE];
        let Some(r) = mem
            .read(at, &mut b)
            .ok()
            .and_then(|()| CallbackRecord::read(&b))
        else {
            continue;
        };
        let object = match r.name() {
            0 => None,
            name => match read_c_string(mem, name) {
                Some(s) => Some(s),
                None => continue,
            },
        };
        out.push(Callback {
            at,
            object,
            funcs: r.callbacks(),
            state: r.state(),
            order: r.order(),
            patch: patch.to_owned(),
            region: kpta,
            rank,
        });
    }
    out
}

/// The records of an applied patch.
pub fn of_applied(mem: &dyn Memory, p: &AppliedPatch, rank: usize) -> Vec<Callback> {
    let extras = Extras::of_region(mem, p);
    let image = p.kpta + u64::from(p.header.elf_offset());
    read(mem, p.kpta, image, &extras, &p.id, rank)
}

/// Whether a callback in this state waits for its object: it never ran, or its pre-patch
/// failed (the object is unpatched).
pub fn callback_state_waits(state: u64) -> bool {
    state & callback_state::PRE_PATCHED == 0
}

/// Puts callbacks in the order they run.
pub fn sort(cbs: &mut [Callback]) {
    cbs.sort_by_key(|c| (c.rank, Reverse(c.object.is_none()), c.region, c.order));
}

/// Records what has run of a callback, in its record.
fn set_state(mem: &dyn Memory, cb: &mut Callback, state: u64) -> Result<()> {
    mem.write(cb.at + CallbackRecord::STATE_OFFSET, &state.to_le_bytes())?;
    cb.state = state;
    Ok(())
}

/// Runs one stage of one callback (nothing if it has none); returns its value.
fn run(host: &mut Host<'_>, cb: &Callback, stage: Stage, rep: &mut dyn Report) -> Result<i32> {
    let func = cb.funcs[stage as usize];
    if func == 0 {
        return Ok(0);
    }
    rep.detail(&format!("running the {}", cb.describe(stage)));
    let value = host.call(func, cb.at, &cb.describe(stage), rep)?;
    Ok(value as u32 as i32)
}

/// Pre-patch of each of `cbs`, in order. The first that fails (non-zero, or a fault) stops
/// them: the ones that succeeded get their post-unpatch, its state records the value, and the
/// error is returned.
pub fn pre_patch(
    host: &mut Host<'_>,
    mem: &dyn Memory,
    pid: i32,
    cbs: &mut [Callback],
    rep: &mut dyn Report,
) -> Result<()> {
    for i in 0..cbs.len() {
        let failure = match run(host, &cbs[i], Stage::PrePatch, rep) {
            Ok(0) => {
                set_state(mem, &mut cbs[i], callback_state::PRE_PATCHED)?;
                continue;
            }
            Ok(value) => {
                set_state(mem, &mut cbs[i], callback_state::failed_with(value))?;
                Error::PrePatchFailed {
                    object: cbs[i].object_name().to_owned(),
                    id: cbs[i].patch.clone(),
                    pid,
                    value,
                }
            }
            Err(e) => e,
        };
        post_unpatch(host, mem, &mut cbs[..i], rep);
        return Err(failure);
    }
    Ok(())
}

/// Reports a callback that failed where the operation cannot be undone.
fn warn(rep: &mut dyn Report, e: Error) {
    rep.info(&format!("warning: {e}"));
}

/// `stage` of each of `cbs` whose pre-patch succeeded, in order, its state then `next` of
/// what it was; failures are reported (the switch, or the revert, is done).
fn run_pre_patched(
    host: &mut Host<'_>,
    mem: &dyn Memory,
    cbs: &mut [Callback],
    stage: Stage,
    next: impl Fn(u64) -> u64,
    rep: &mut dyn Report,
) {
    for cb in cbs.iter_mut() {
        if cb.state & callback_state::PRE_PATCHED == 0 {
            continue;
        }
        if let Err(e) = run(host, cb, stage, rep) {
            warn(rep, e);
        }
        if let Err(e) = set_state(mem, cb, next(cb.state)) {
            warn(rep, e);
        }
    }
}

/// Post-patch of each of `cbs` whose pre-patch succeeded, in order, each then patched.
pub fn post_patch(
    host: &mut Host<'_>,
    mem: &dyn Memory,
    cbs: &mut [Callback],
    rep: &mut dyn Report,
) {
    let patched = |s| s | callback_state::PATCHED;
    run_pre_patched(host, mem, cbs, Stage::PostPatch, patched, rep);
}

/// `stage` of each of `cbs` that is patched, in order; failures are reported.
fn run_patched(host: &mut Host<'_>, cbs: &[Callback], stage: Stage, rep: &mut dyn Report) {
    for cb in cbs {
        if cb.state & callback_state::PATCHED != 0 {
            if let Err(e) = run(host, cb, stage, rep) {
                warn(rep, e);
            }
        }
    }
}

/// Pre-unpatch of each of `cbs` that is patched, in order; failures are reported.
pub fn pre_unpatch(host: &mut Host<'_>, cbs: &[Callback], rep: &mut dyn Report) {
    run_patched(host, cbs, Stage::PreUnpatch, rep);
}

/// Post-unpatch of each of `cbs` whose pre-patch succeeded, in order, each left as never run
/// (its object unpatched).
pub fn post_unpatch(
    host: &mut Host<'_>,
    mem: &dyn Memory,
    cbs: &mut [Callback],
    rep: &mut dyn Report,
) {
    run_pre_patched(host, mem, cbs, Stage::PostUnpatch, |_| 0, rep);
}

/// Post-patch again for the patched ones of `cbs`, after a revert that failed once their
/// pre-unpatch had run: they are patched still.
pub fn revert_failed(host: &mut Host<'_>, cbs: &[Callback], rep: &mut dyn Report) {
    run_patched(host, cbs, Stage::PostPatch, rep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb(object: Option<&str>, rank: usize, region: u64, order: u64) -> Callback {
        Callback {
            at: 0,
            object: object.map(str::to_owned),
            funcs: [0; 4],
            state: 0,
            order,
            patch: "0001".into(),
            region,
            rank,
        }
    }

    #[test]
    fn the_program_comes_first_then_declaration_order() {
        let mut v = vec![
            cb(Some("libb.so"), 0, 1, 30),
            cb(Some("liba.so"), 0, 1, 20),
            cb(None, 0, 2, 50),
            cb(None, 1, 1, 10),
        ];
        sort(&mut v);
        let got: Vec<(Option<&str>, usize)> =
            v.iter().map(|c| (c.object.as_deref(), c.rank)).collect();
        assert_eq!(
            got,
            [
                (None, 0),
                (Some("liba.so"), 0),
                (Some("libb.so"), 0),
                (None, 1)
            ]
        );
    }
}
