//! `libcare-ctl info`: the patches applied to a process, per object. Needs no ptrace: it reads
//! the maps and the patch headers while the process runs.

use kpatch_process::Process;
use serde::Serialize;

use kpatch_file::callback_state;

use crate::callbacks;
use crate::discover::{ImageCache, Loaded};
use crate::error::Result;
use crate::extras::Extras;

/// One applied patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchInfo {
    pub id: String,
    /// Patch level from storage (0 when none).
    pub level: u32,
    /// Region address.
    pub address: u64,
    /// Functions redirected and functions added.
    pub replaced: usize,
    pub added: usize,
    /// Applied at start-up (before the program's first instruction after the dynamic loader),
    /// rather than to the running process.
    pub at_startup: bool,
    /// A cumulative patch (it replaced the earlier patches of its object).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    /// The states it set: (id, version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<(u64, u32)>,
    /// The patches of its object it was built on top of (and needs applied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Its callbacks, by object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<CallbackInfo>,
}

/// The callbacks of a patch for one object, and what has run of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackInfo {
    /// The library's soname, or `null` for the program.
    pub object: Option<String>,
    /// `patched`; `pre-patched` (the switch not done yet); `pre-patch failed (VALUE)`: the
    /// object stays unpatched; `not loaded`: they run when it is; `not run`.
    pub state: String,
}

/// What a callback's state means, for people.
fn describe_state(state: u64, loaded: bool) -> String {
    if let Some(v) = callback_state::failure(state) {
        format!("pre-patch failed ({v})")
    } else if state & callback_state::PATCHED != 0 {
        "patched".into()
    } else if state & callback_state::PRE_PATCHED != 0 {
        "pre-patched".into()
    } else if loaded {
        "not run".into()
    } else {
        "not loaded".into()
    }
}

/// The patches applied to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    pub pid: i32,
    pub target: String,
    pub build_id: String,
    pub patches: Vec<PatchInfo>,
}

/// Applied patches of process `pid`, grouped by object, each group in application order.
pub fn info(images: &ImageCache, pid: i32) -> Result<Vec<ObjectInfo>> {
    let proc = Process::inspect(pid)?;
    let loaded = Loaded::read(&proc, images)?;
    let mut applied: Vec<_> = loaded
        .patches
        .iter()
        .filter(|p| p.committed && !p.orphan)
        .collect();
    applied.sort_by_key(|p| (p.header.applied_seq(), p.kpta));
    let mut out: Vec<ObjectInfo> = Vec::new();
    for p in applied {
        let target = loaded
            .object_of(p)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "(unknown object)".into());
        let entry = PatchInfo {
            id: p.id.clone(),
            level: p.header.user_level(),
            address: p.kpta,
            replaced: p.records.iter().filter(|r| !r.is_new_function()).count(),
            added: p.records.iter().filter(|r| r.is_new_function()).count(),
            at_startup: p.header.applied_at_startup(),
            replace: false,
            states: Vec::new(),
            after: crate::layers::of_region(&proc, p).patches,
            callbacks: Vec::new(),
        };
        let mut entry = entry;
        let extras = Extras::of_region(&proc, p);
        entry.replace = extras.replace;
        entry.states = extras
            .states
            .iter()
            .map(|s| (s.id(), s.version()))
            .collect();
        let mut cbs = callbacks::of_applied(&proc, p, 0);
        callbacks::sort(&mut cbs);
        entry.callbacks = cbs
            .iter()
            .map(|c| CallbackInfo {
                object: c.object.clone(),
                state: describe_state(c.state, c.loaded_in(&loaded)),
            })
            .collect();
        match out.iter_mut().find(|o| o.build_id == p.build_id) {
            Some(o) => o.patches.push(entry),
            None => out.push(ObjectInfo {
                pid,
                target,
                build_id: p.build_id.clone(),
                patches: vec![entry],
            }),
        }
    }
    Ok(out)
}
