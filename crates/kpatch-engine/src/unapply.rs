//! `libcare-ctl unpatch`: revert patches in any order. A patch under a newer one that replaced
//! the same function is removed by rewriting the newer patch's saved bytes rather than the
//! function (the peer reverts both and later crashes the target); anything that does not add up
//! is refused before the target is touched.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use kpatch_file::MAGIC_PENDING;
use kpatch_process::Memory;

use crate::checked_stop::{self, AfterCommit};
use crate::discover::Loaded;
use crate::error::{Error, Result};
use crate::fault;
use crate::process_view::ProcessView;
use crate::region_layout::function_name;
use crate::report::Report;
use crate::runs;
use crate::session::Session;
use crate::Engine;

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

    /// The writes, in the order they were first made.
    fn into_writes(mut self) -> Vec<(u64, Vec<u8>)> {
        self.order
            .iter()
            .filter_map(|a| self.writes.remove(a).map(|b| (*a, b)))
            .collect()
    }
}

/// Name of the function an in-process info record replaces, from the patch's string table.
fn record_name(mem: &dyn Memory, symstr: u64, daddr: u64) -> String {
    let mut buf = [0u8; 128];
    function_name(mem.read(symstr, &mut buf).ok().map(|_| &buf[..]), daddr)
}

/// What removing some patches writes, decided while the target runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Removal {
    /// (address, bytes), in order: original code back into functions, or saved bytes into a
    /// newer patch's undo area.
    writes: Vec<(u64, Vec<u8>)>,
    /// The regions going away, named for messages: the safety check's ranges.
    names: Vec<(Range<u64>, String)>,
}

/// Decides how to remove `all[selected]`, in that order, from `proc`: for each replaced
/// function, its jump is replaced by the saved original bytes; a function a newer patch (one
/// not removed before it) replaced again keeps that patch's jump, and the newer patch's undo
/// bytes become ours, so that it falls back past us. `tolerant` (for reclaiming an interrupted
/// run's region) skips records whose jump is not found instead of refusing.
fn plan_removal(
    proc: &dyn ProcessView,
    loaded: &Loaded,
    selected: &[usize],
    tolerant: bool,
    rep: &mut dyn Report,
) -> Result<Removal> {
    let all = &loaded.patches;
    let arch = proc.arch();
    let hs = arch.hunk_size();
    let mem = proc.memory();
    let mut overlay = Overlay {
        mem,
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
            let name = record_name(mem, r.symstr(), daddr);
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
            format!("patch {} ({})", p.id, loaded.object_name(p)),
        ));
    }
    Ok(Removal {
        writes: overlay.into_writes(),
        names,
    })
}

impl Session<'_> {
    /// Removes `self.loaded.patches[selected]` from the process. `tolerant` (for reclaiming an
    /// interrupted run's region) skips records whose jump is not found instead of refusing.
    pub fn remove(
        &mut self,
        selected: &[usize],
        tolerant: bool,
        rep: &mut dyn Report,
    ) -> Result<Option<Duration>> {
        let opts = self.options();
        let Removal { writes, names } =
            plan_removal(&self.proc, &self.loaded, selected, tolerant, rep)?;
        let proc = &self.proc;
        let all = &self.loaded.patches;
        let committed = selected.iter().any(|&i| all[i].committed);
        let runs = runs::plan(proc, &writes, proc.page_size())?;
        let regions: Vec<(u64, u64)> = selected
            .iter()
            .map(|&i| (all[i].kpta, all[i].len))
            .collect();
        let held = regions
            .iter()
            .map(|&(a, l)| a..a.saturating_add(l))
            .collect();
        let mut check = self.safety_check(names)?.holding(held);
        let mut frozen = None;
        let mut unmapped = false;
        if committed || !writes.is_empty() {
            // Every write moves the target towards "unpatched" and may be done again, so the
            // guardian is armed with the whole series: a tool dying half-way leaves it
            // completed. The regions are marked pending so that, if we die before unmapping
            // them, they are never listed again and the next run reclaims them.
            let marks: Vec<(u64, Vec<u8>)> = selected
                .iter()
                .map(|&i| (all[i].kpta, MAGIC_PENDING.to_vec()))
                .collect();
            let mut guarded = writes.clone();
            guarded.extend(marks.iter().cloned());
            let unmapped = &mut unmapped;
            frozen = Some(checked_stop::with_safe_stop(
                proc,
                opts,
                &mut check,
                &mut self.guardian,
                rep,
                |stopped, guardian, found, rep| {
                    fault::point(opts, "unpatch-stopped");
                    guardian.arm(&guarded)?;
                    // A failed run write puts back the runs already written: still fully
                    // patched.
                    if let Err(e) =
                        runs::commit(proc, &runs, &|| fault::point(opts, "unpatch-first-restore"))
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
                    fault::point(opts, "unpatch-after-restore");
                    let _ = guardian.disarm();
                    if let Some(e) = first_error {
                        return Err(e.into());
                    }
                    fault::point(opts, "unpatch-before-munmap");
                    // No jump leads into the regions any more. Unless a thread holds a pointer
                    // into them now, none can get one (short of one stored in memory), so they
                    // go as soon as the threads that were running are released.
                    if found.refs.is_empty() {
                        *unmapped = true;
                        return Ok(AfterCommit {
                            unmap: regions.clone(),
                        });
                    }
                    for r in &found.refs {
                        rep.detail(&checked_stop::describe_reference(r));
                    }
                    Ok(AfterCommit::default())
                },
            )?);
        } else {
            fault::point(opts, "unpatch-before-munmap");
        }
        if !unmapped {
            // Reclaiming a region left pending does not wait: it is tried again next time.
            let patience = if tolerant {
                Duration::ZERO
            } else {
                opts.safety_timeout
            };
            if !checked_stop::unmap_when_unused(proc, &mut check, &regions, patience, opts, rep)?
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
}

/// The patches an unpatch removes, as indices into `loaded.patches`, in the order they are
/// removed: the committed ones with patch-id `id` (any, without one) for objects named in
/// `targets` by build-id or file name (any, when empty); newest first, those applied by the
/// peer (which carry no sequence) last.
fn select(loaded: &Loaded, id: Option<&str>, targets: &[String]) -> Vec<usize> {
    let all = &loaded.patches;
    let mut selected: Vec<usize> = (0..all.len())
        .filter(|&i| {
            let p = &all[i];
            p.committed
                && id.is_none_or(|id| p.id == id)
                && (targets.is_empty()
                    || targets
                        .iter()
                        .any(|t| *t == p.build_id || *t == loaded.object_name(p)))
        })
        .collect();
    selected.sort_by_key(|&i| std::cmp::Reverse((all[i].header.applied_seq(), all[i].kpta)));
    selected
}

/// Removes the patch with `id` (or every patch, newest first, without one) from process `pid`;
/// `targets` limits it to objects named by build-id or file name.
pub fn unpatch(
    engine: &Engine,
    pid: i32,
    id: Option<&str>,
    targets: &[String],
    rep: &mut dyn Report,
) -> Result<UnpatchOutcome> {
    let mut session = Session::open(engine, pid, rep)?;
    let selected = select(&session.loaded, id, targets);
    if selected.is_empty() {
        return match id {
            Some(id) => Err(Error::PatchNotFound {
                id: id.to_owned(),
                pid,
            }),
            None => Ok(UnpatchOutcome::default()),
        };
    }
    let frozen = session.remove(&selected, false, rep)?;
    let loaded = &session.loaded;
    let removed = selected
        .iter()
        .map(|&i| RemovedPatch {
            object: loaded.object_name(&loaded.patches[i]),
            id: loaded.patches[i].id.clone(),
        })
        .collect();
    Ok(UnpatchOutcome { removed, frozen })
}
