//! Planning the removal of patches from a process, while it runs: which patches an unpatch
//! removes and in what order, and what each removal writes. A patch under a newer one that
//! replaced the same function is removed by rewriting the newer patch's saved bytes rather than
//! the function (the peer reverts both and later crashes the target); anything that does not
//! add up is refused before the target is touched.

use std::collections::HashMap;
use std::ops::Range;

use kpatch_process::Memory;

use crate::discover::Loaded;
use crate::error::{Error, Result};
use crate::process_view::ProcessView;
use crate::region_layout::function_name;
use crate::report::Report;

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
pub struct Removal {
    /// (address, bytes), in order: original code back into functions, or saved bytes into a
    /// newer patch's undo area.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// The regions going away, named for messages: the safety check's ranges.
    pub names: Vec<(Range<u64>, String)>,
}

/// Decides how to remove `all[selected]`, in that order, from `proc`: for each replaced
/// function, its jump is replaced by the saved original bytes; a function a newer patch (one
/// not removed before it) replaced again keeps that patch's jump, and the newer patch's undo
/// bytes become ours, so that it falls back past us. `tolerant` (for reclaiming an interrupted
/// run's region) skips records whose jump is not found instead of refusing. A patch that a
/// patch staying was built on top of is refused (`layers.rs`).
pub fn plan(
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
    if !tolerant {
        crate::layers::check_removal(mem, loaded, selected, proc.pid())?;
    }
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
            let here = match overlay.read(daddr, hs) {
                Ok(b) => b,
                // Reclaiming: the object of an orphaned patch may be gone.
                Err(_) if tolerant => continue,
                Err(e) => return Err(e),
            };
            if here == jump {
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

/// The patches an unpatch removes, as indices into `loaded.patches`, in the order they are
/// removed: the committed ones with patch-id `id` (any, without one) for objects named in
/// `targets` by build-id or file name (any, when empty); newest first, those applied by the
/// peer (which carry no sequence) last.
pub fn select(loaded: &Loaded, id: Option<&str>, targets: &[String]) -> Vec<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::AppliedPatch;
    use crate::fake::{self, FakeProcess, Lines};
    use kpatch_file::{Header, InfoRecord, HEADER_SIZE};

    const APP: &str = "0123456789abcdef0123456789abcdef01234567";
    const LIB: &str = "76543210fedcba9876543210fedcba9876543210";
    /// The function both patches replace, and its first bytes.
    const F: u64 = 0x1040;
    const ORIGINAL: [u8; 5] = [0x55, 0x48, 0x89, 0xe5, 0x90];
    const UNDO: u32 = 0x800;

    fn patch(id: &str, bid: &str, kpta: u64, seq: u64, records: Vec<InfoRecord>) -> AppliedPatch {
        let mut header = *Header::from_bytes(&[0u8; HEADER_SIZE]).unwrap();
        header.set_user_undo(UNDO);
        header.set_applied_seq(seq);
        AppliedPatch {
            kpta,
            header,
            id: id.into(),
            build_id: bid.into(),
            committed: true,
            records,
            len: 0x1000,
            orphan: false,
        }
    }

    /// Where patch `kpta`'s replacement of `F` starts, and its name.
    fn saddr(kpta: u64) -> u64 {
        kpta + 0x400
    }
    fn symstr(kpta: u64) -> u64 {
        kpta + 0x100
    }

    fn loaded(patches: Vec<AppliedPatch>) -> Loaded {
        Loaded {
            maps: Vec::new(),
            objects: vec![
                fake::object("app", 0x1000..0x2000, fake::image(APP, &[]), true),
                fake::object("libfoo.so", 0x7000..0x8000, fake::image(LIB, &[]), false),
            ],
            patches,
            unreadable: Vec::new(),
        }
    }

    /// `F` patched by 0001 (which also adds a function: its record of `F` is the second, with
    /// the second undo slot), then by 0002.
    fn stacked() -> (FakeProcess, Loaded) {
        let proc = FakeProcess::x86_64();
        let arch = proc.arch();
        let (a, b) = (0x10000, 0x20000);
        let jump_a = arch.encode_jump(F, saddr(a)).unwrap();
        let jump_b = arch.encode_jump(F, saddr(b)).unwrap();
        let mut text = vec![0x90; 0x1000];
        text[0x40..0x45].copy_from_slice(&jump_b);
        proc.map(0x1000, text);
        for (kpta, undo) in [(a, &ORIGINAL[..]), (b, &jump_a[..])] {
            let mut region = vec![0u8; 0x1000];
            region[0x100..0x109].copy_from_slice(b"f.kpatch\0");
            let slot = if kpta == a { 1 } else { 0 };
            let at = UNDO as usize + 5 * slot;
            region[at..at + 5].copy_from_slice(undo);
            proc.map(kpta, region);
        }
        let record = |kpta| InfoRecord::new(F, saddr(kpta), 0x20, 0x10, symstr(kpta));
        let added = InfoRecord::new(0, a + 0x600, 0, 0x10, 0);
        let patches = vec![
            patch("0001", APP, a, 1, vec![added, record(a)]),
            patch("0002", APP, b, 2, vec![record(b)]),
        ];
        (proc, loaded(patches))
    }

    fn plan_of(proc: &FakeProcess, loaded: &Loaded, selected: &[usize]) -> (Removal, Lines) {
        let mut lines = Lines::default();
        let removal = plan(proc, loaded, selected, false, &mut lines).unwrap();
        (removal, lines)
    }

    #[test]
    fn patches_no_function_jumps_to_are_orphans_and_reclaimed_without_touching_code() {
        let (proc, mut loaded) = stacked();
        let arch = proc.arch();
        crate::discover::mark_orphans(&proc, arch, &mut loaded.patches);
        assert!(loaded.patches.iter().all(|p| !p.orphan));
        // The library was unloaded and loaded again: its function holds the original code.
        proc.write(F, &ORIGINAL).unwrap();
        crate::discover::mark_orphans(&proc, arch, &mut loaded.patches);
        assert!(loaded.patches.iter().all(|p| p.orphan));
        let regions = [0x10000..0x11000, 0x20000..0x21000];
        for order in [[1, 0], [0, 1]] {
            let removal = plan(&proc, &loaded, &order, true, &mut Lines::default()).unwrap();
            assert!(
                removal
                    .writes
                    .iter()
                    .all(|(a, _)| regions.iter().any(|r| r.contains(a))),
                "{:x?}",
                removal.writes
            );
        }
        // Unloaded and not loaded again: the function cannot even be read.
        let (proc, mut loaded) = stacked();
        loaded.patches.iter_mut().for_each(|p| {
            for r in &mut p.records {
                if !r.is_new_function() {
                    *r = InfoRecord::new(0x9000, r.saddr(), 0x20, 0x10, r.symstr());
                }
            }
        });
        crate::discover::mark_orphans(&proc, arch, &mut loaded.patches);
        assert!(loaded.patches.iter().all(|p| p.orphan));
        let removal = plan(&proc, &loaded, &[1, 0], true, &mut Lines::default()).unwrap();
        assert!(removal.writes.is_empty());
        assert!(plan(&proc, &loaded, &[1, 0], false, &mut Lines::default()).is_err());
    }

    #[test]
    fn the_newest_patch_gives_the_function_back_to_the_one_below() {
        let (proc, loaded) = stacked();
        let jump_a = proc.arch().encode_jump(F, saddr(0x10000)).unwrap();
        let (removal, lines) = plan_of(&proc, &loaded, &[1]);
        assert_eq!(removal.writes, vec![(F, jump_a)]);
        assert_eq!(
            removal.names,
            vec![(0x20000..0x21000, "patch 0002 (app)".to_owned())]
        );
        assert_eq!(lines.0, ["0002: restoring f at 0x1040"]);
    }

    #[test]
    fn a_patch_under_a_newer_one_hands_it_the_original_bytes() {
        let (proc, loaded) = stacked();
        let (removal, lines) = plan_of(&proc, &loaded, &[0]);
        // The function keeps 0002's jump; 0002 will now restore the original.
        assert_eq!(
            removal.writes,
            vec![(0x20000 + u64::from(UNDO), ORIGINAL.to_vec())]
        );
        assert_eq!(
            lines.0,
            ["0001: f is also replaced by patch 0002; it will fall back past 0001"]
        );
    }

    #[test]
    fn both_removed_in_either_order_restore_the_original() {
        let (proc, loaded) = stacked();
        let (newest_first, _) = plan_of(&proc, &loaded, &[1, 0]);
        assert_eq!(newest_first.writes, vec![(F, ORIGINAL.to_vec())]);
        let (oldest_first, _) = plan_of(&proc, &loaded, &[0, 1]);
        assert_eq!(
            oldest_first.writes,
            vec![
                (0x20000 + u64::from(UNDO), ORIGINAL.to_vec()),
                (F, ORIGINAL.to_vec())
            ]
        );
        // Planning writes nothing.
        let arch = proc.arch();
        assert_eq!(
            proc.peek(F, 5),
            arch.encode_jump(F, saddr(0x20000)).unwrap()
        );
        assert_eq!(
            proc.peek(0x20000 + u64::from(UNDO), 5),
            arch.encode_jump(F, saddr(0x10000)).unwrap()
        );
    }

    #[test]
    fn code_someone_else_changed_is_refused_unless_reclaiming() {
        let (proc, loaded) = stacked();
        proc.write(F, &[0xcc; 5]).unwrap();
        let err = plan(&proc, &loaded, &[1], false, &mut Lines::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Inconsistent { id, pid: fake::PID, .. } if id == "0002"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("f at 0x1040 no longer jumps to it and no later patch saved its jump"),
            "{err}"
        );
        let tolerant = plan(&proc, &loaded, &[1], true, &mut Lines::default()).unwrap();
        assert!(tolerant.writes.is_empty());
        assert_eq!(tolerant.names.len(), 1);
    }

    #[test]
    fn unpatch_takes_the_newest_first_and_the_peers_last() {
        let mut pending = patch("0009", APP, 0x50000, 9, Vec::new());
        pending.committed = false;
        let loaded = loaded(vec![
            patch("0001", APP, 0x10000, 1, Vec::new()),
            patch("0002", APP, 0x20000, 2, Vec::new()),
            // Applied by the peer: no sequence.
            patch("peer", LIB, 0x30000, 0, Vec::new()),
            patch("peer", APP, 0x40000, 0, Vec::new()),
            pending,
        ]);
        let none: &[String] = &[];
        assert_eq!(select(&loaded, None, none), [1, 0, 3, 2]);
        assert_eq!(select(&loaded, Some("0001"), none), [0]);
        assert_eq!(select(&loaded, Some("peer"), none), [3, 2]);
        assert_eq!(select(&loaded, None, &["libfoo.so".to_owned()]), [2]);
        assert_eq!(select(&loaded, Some("peer"), &[APP.to_owned()]), [3]);
        assert_eq!(select(&loaded, Some("0009"), none), Vec::<usize>::new());
    }
}
