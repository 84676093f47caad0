//! `libcare-ctl unpatch`: revert patches in any order. A patch under a newer one that replaced
//! the same function is removed by rewriting the newer patch's saved bytes rather than the
//! function (the peer reverts both and later crashes the target); anything that does not add up
//! is refused before the target is touched.

use std::collections::HashMap;
use std::time::Duration;

use kpatch_arch::Arch;
use kpatch_file::MAGIC_PENDING;
use kpatch_process::{Guardian, MapEntry, Memory, Process};

use crate::discover::{self, AppliedPatch, LoadedObject};
use crate::error::{Error, Result};
use crate::fault;
use crate::options::Options;
use crate::report::Report;
use crate::runs;
use crate::world;

/// One patch removed by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedPatch {
    pub object: String,
    pub id: String,
}

/// What an unpatch run did.
#[derive(Debug, Clone, Default)]
pub struct UnpatchOutcome {
    pub removed: Vec<RemovedPatch>,
    pub frozen: Option<Duration>,
}

/// Reads through pending writes, so later decisions see earlier ones.
struct Overlay<'a> {
    mem: &'a dyn Memory,
    writes: HashMap<u64, Vec<u8>>,
    order: Vec<u64>,
}

impl Overlay<'_> {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(v) = self.writes.get(&addr) {
            return Ok(v.clone());
        }
        let mut b = vec![0u8; len];
        self.mem.read(addr, &mut b)?;
        Ok(b)
    }

    fn write(&mut self, addr: u64, bytes: Vec<u8>) {
        if self.writes.insert(addr, bytes).is_none() {
            self.order.push(addr);
        }
    }
}

/// Name of the function an in-process info record replaces.
fn record_name(mem: &dyn Memory, symstr: u64, daddr: u64) -> String {
    let mut buf = [0u8; 128];
    let name = mem
        .read(symstr, &mut buf)
        .ok()
        .and_then(|_| {
            buf.split(|&b| b == 0)
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
        })
        .unwrap_or_default();
    match name.strip_suffix(".kpatch").unwrap_or(&name) {
        "" => format!("the function at {daddr:#x}"),
        n => kpatch_names::plain(n),
    }
}

fn object_name(objects: &[LoadedObject], p: &AppliedPatch) -> String {
    objects
        .iter()
        .find(|o| o.build_id() == Some(p.build_id.as_str()))
        .map(|o| o.name.clone())
        .unwrap_or_else(|| p.build_id.clone())
}

/// Removes `all[selected]` from the process. `tolerant` (for reclaiming an interrupted run's
/// region) skips records whose jump is not found instead of refusing.
#[allow(clippy::too_many_arguments)]
pub fn remove(
    proc: &Process,
    maps: &[MapEntry],
    objects: &[LoadedObject],
    all: &[AppliedPatch],
    selected: &[usize],
    tolerant: bool,
    opts: &Options,
    guardian: &mut Guardian,
    rep: &mut dyn Report,
) -> Result<Option<Duration>> {
    let arch: &dyn Arch = proc.arch();
    let hs = arch.hunk_size();
    let mut overlay = Overlay {
        mem: proc,
        writes: HashMap::new(),
        order: Vec::new(),
    };
    let mut gone = vec![false; all.len()];
    let mut names = Vec::new();
    for &pi in selected {
        let p = &all[pi];
        for (i, r) in p.records.iter().enumerate() {
            if r.is_new_function() {
                continue;
            }
            let daddr = r.daddr();
            let jump = arch.encode_jump(daddr, r.saddr())?;
            let undo = overlay.read(p.undo_addr(i, hs), hs)?;
            let name = record_name(proc, r.symstr(), daddr);
            if overlay.read(daddr, hs)? == jump {
                rep.detail(&format!("{}: restoring {name} at {daddr:#x}", p.id));
                overlay.write(daddr, undo);
                continue;
            }
            // Stacked under a newer patch: that patch saved our jump; hand it our saved bytes.
            let mut over = None;
            for (qi, q) in all.iter().enumerate() {
                if qi == pi || gone[qi] {
                    continue;
                }
                for (j, rq) in q.records.iter().enumerate() {
                    if rq.daddr() == daddr
                        && !rq.is_new_function()
                        && overlay.read(q.undo_addr(j, hs), hs)? == jump
                    {
                        over = Some((q.id.clone(), q.undo_addr(j, hs)));
                    }
                }
            }
            match over {
                Some((qid, at)) => {
                    rep.detail(&format!("{}: {name} is also replaced by patch {qid}; it will fall back past {}", p.id, p.id));
                    overlay.write(at, undo);
                }
                None if tolerant => {}
                None => {
                    return Err(Error::Inconsistent {
                        id: p.id.clone(),
                        pid: proc.pid(),
                        reason: format!("{name} at {daddr:#x} no longer jumps to it and no later patch saved its jump; the code was changed by something else, so nothing was touched"),
                    })
                }
            }
        }
        gone[pi] = true;
        names.push((
            p.range(),
            format!("patch {} ({})", p.id, object_name(objects, p)),
        ));
    }
    let committed = selected.iter().any(|&i| all[i].committed);
    let writes: Vec<(u64, Vec<u8>)> = overlay
        .order
        .iter()
        .filter_map(|a| overlay.writes.get(a).map(|b| (*a, b.clone())))
        .collect();
    let runs = runs::plan(proc, &writes, proc.page_size())?;
    let regions: Vec<(u64, u64)> = selected
        .iter()
        .map(|&i| (all[i].kpta, all[i].len))
        .collect();
    let held = regions
        .iter()
        .map(|&(a, l)| a..a.saturating_add(l))
        .collect();
    // Read while the process runs: which regions have unwind tables to deregister.
    let regs = crate::eh_frames::registrations(
        proc,
        || crate::eh_frames::Unwinder::find(&world::scope(proc, objects)),
        &regions,
    );
    let mut safety = world::Safety::new(proc, maps, objects, all, names)?.holding(held);
    let mut frozen = None;
    let mut unmapped = false;
    if committed || !overlay.order.is_empty() {
        // Every write moves the target towards "unpatched" and may be done again, so the
        // guardian is armed with the whole series: a tool dying half-way leaves it completed.
        // The regions are marked pending so that, if we die before unmapping them, they are
        // never listed again and the next run reclaims them.
        let marks: Vec<(u64, Vec<u8>)> = selected
            .iter()
            .map(|&i| (all[i].kpta, MAGIC_PENDING.to_vec()))
            .collect();
        let mut guarded = writes.clone();
        guarded.extend(marks.iter().cloned());
        let unmapped = &mut unmapped;
        frozen = Some(world::with_safe_stop(
            proc,
            opts,
            &mut safety,
            guardian,
            rep,
            |stopped, guardian, found, rep| {
                fault::point("unpatch-stopped");
                guardian.arm(&guarded)?;
                // A failed run write puts back the runs already written: still fully patched.
                if let Err(e) = runs::commit(proc, &runs, &|| fault::point("unpatch-first-restore"))
                {
                    let _ = guardian.disarm();
                    return Err(e);
                }
                // The jumps are gone: the threads that were running need not wait for the
                // headers, as long as a thread stays stopped to run the munmap.
                if let Err(e) = stopped.release_running(true) {
                    let _ = guardian.disarm();
                    return Err(e.into());
                }
                let mut first_error = None;
                for (addr, bytes) in &marks {
                    if let Err(e) = proc.write(*addr, bytes) {
                        first_error.get_or_insert(e);
                    }
                }
                fault::point("unpatch-after-restore");
                let _ = guardian.disarm();
                if let Some(e) = first_error {
                    return Err(e.into());
                }
                fault::point("unpatch-before-munmap");
                // No jump leads into the regions any more. Unless a thread holds a pointer into
                // them now, none can get one (short of one stored in memory), so they go as
                // soon as the threads that were running are released.
                if found.refs.is_empty() {
                    *unmapped = true;
                    return Ok(world::AfterCommit {
                        unmap: regions.clone(),
                        registrations: regs.clone(),
                    });
                }
                for r in &found.refs {
                    rep.detail(&world::describe_reference(r));
                }
                Ok(world::AfterCommit::default())
            },
        )?);
    } else {
        fault::point("unpatch-before-munmap");
    }
    if !unmapped {
        // Reclaiming a region left pending does not wait: it is tried again next time.
        let patience = if tolerant {
            Duration::ZERO
        } else {
            opts.safety_timeout
        };
        if !world::unmap_when_unused(proc, &mut safety, &regions, &regs, patience, opts, rep)?
            && !tolerant
        {
            rep.info(&format!(
                "warning: PID '{}': the removed patch's memory is still in use; it stays mapped and a later run will free it",
                proc.pid()
            ));
        }
    }
    Ok(frozen)
}

/// Removes the patch with `id` (or every patch, newest first, without one) from process `pid`;
/// `targets` limits it to objects named by build-id or file name.
pub fn unpatch(
    pid: i32,
    id: Option<&str>,
    targets: &[String],
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<UnpatchOutcome> {
    // The lock comes first: another run holding it also traces the process, which opening
    // it would refuse.
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(kpatch_process::Error::NoSuchProcess { pid }.into());
    }
    let lock = crate::lock::lock(&opts.lock_dir, pid, opts.lock_wait)?;
    let proc = Process::open(pid)?;
    let mut guardian = Guardian::spawn(&proc, &[lock.fd()])?;
    world::reclaim_pending(&proc, opts, &mut guardian, rep)?;
    let maps = proc.maps()?;
    let objects = discover::objects(&proc, &maps)?;
    let all = discover::applied_patches(&proc, &maps)?;
    let mut selected: Vec<usize> = (0..all.len())
        .filter(|&i| {
            let p = &all[i];
            p.committed
                && id.is_none_or(|id| p.id == id)
                && (targets.is_empty()
                    || targets
                        .iter()
                        .any(|t| *t == p.build_id || *t == object_name(&objects, p)))
        })
        .collect();
    if selected.is_empty() {
        return match id {
            Some(id) => Err(Error::PatchNotFound {
                id: id.to_owned(),
                pid,
            }),
            None => Ok(UnpatchOutcome::default()),
        };
    }
    // Newest first; patches applied by the peer carry no sequence and go last.
    selected.sort_by_key(|&i| std::cmp::Reverse((all[i].header.applied_seq(), all[i].kpta)));
    let frozen = remove(
        &proc,
        &maps,
        &objects,
        &all,
        &selected,
        false,
        opts,
        &mut guardian,
        rep,
    )?;
    let removed = selected
        .iter()
        .map(|&i| RemovedPatch {
            object: object_name(&objects, &all[i]),
            id: all[i].id.clone(),
        })
        .collect();
    Ok(UnpatchOutcome { removed, frozen })
}
