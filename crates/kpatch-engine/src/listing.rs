//! `libcare-ctl info`: the patches applied to a process, per object. Needs no ptrace: it reads
//! the maps and the patch headers while the process runs.

use kpatch_process::Process;
use serde::Serialize;

use crate::discover::{ImageCache, Loaded};
use crate::error::Result;

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
    let loaded = Loaded::read(&Process::inspect(pid)?, images)?;
    let mut applied: Vec<_> = loaded.patches.iter().filter(|p| p.committed).collect();
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
        };
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
