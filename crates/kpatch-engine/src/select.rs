//! `-p all`: which processes a command applies to, decided from `/proc/PID/maps` and
//! build-ids before any process is attached. Pid 1, the tool itself and kernel threads are
//! never looked at.

use std::collections::HashMap;
use std::io::Read;

use kpatch_file::{Header, HEADER_SIZE, MAGIC};
use kpatch_process::{open_mapped_file, parse_maps, MapEntry, MapName, Memory, Process};

use crate::elf_image::build_id_of;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// A process `-p all` looked at, and whether the command applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub applies: bool,
    /// Why it could not be told whether the command applies (a mapped object whose file
    /// could not be read), when it could not: such a process is not attached, and the command
    /// says so rather than pass over it.
    pub undecided: Option<String>,
}

/// Numeric entries of `/proc` in pid order, minus pid 1, ourselves and processes without an
/// executable (kernel threads, zombies).
fn candidate_pids() -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    let dir = std::fs::read_dir("/proc").map_err(|source| Error::Io {
        path: "/proc".into(),
        source,
    })?;
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p > 1 && p != me)
        .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The build-id of the object mapped by `m` in process `pid` (None: not an ELF file or no
/// build-id), read from the start of the file (where the note is) or, failing that, from all
/// of it. Err: the file could not be opened (why).
fn mapped_build_id(pid: i32, m: &MapEntry) -> std::result::Result<Option<String>, String> {
    let mut f = open_mapped_file(pid, m).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64 * 1024];
    let Ok(n) = f.read(&mut head) else {
        return Ok(None);
    };
    head.truncate(n);
    if head.get(..4) != Some(b"\x7fELF") {
        return Ok(None);
    }
    if let Ok(Some(id)) = build_id_of(&head) {
        return Ok(Some(id));
    }
    if f.read_to_end(&mut head).is_err() {
        return Ok(None);
    }
    Ok(build_id_of(&head).ok().flatten())
}

/// The maps of a process, or None when it is gone or unreadable.
fn maps_of(pid: i32) -> Option<Vec<MapEntry>> {
    let text = std::fs::read(format!("/proc/{pid}/maps")).ok()?;
    parse_maps(&text).ok()
}

/// Every process but pid 1 and ourselves, each marked with whether it maps an object whose
/// build-id `storage` has a patch for.
pub fn for_patch(storage: &Storage) -> Result<Vec<Candidate>> {
    let wanted = storage.build_ids()?;
    // Objects are shared by many processes: read each file's build-id once.
    let mut cache: HashMap<(u32, u32, u64), Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for pid in candidate_pids()? {
        let Some(maps) = maps_of(pid) else { continue };
        let mut applies = false;
        let mut undecided = None;
        for m in &maps {
            if !matches!(m.name, MapName::File { .. }) || m.inode == 0 {
                continue;
            }
            let key = (m.dev.0, m.dev.1, m.inode);
            let id = match cache.get(&key) {
                Some(id) => id.clone(),
                None => match mapped_build_id(pid, m) {
                    Ok(id) => cache.entry(key).or_insert(id).clone(),
                    Err(why) => {
                        undecided.get_or_insert(why);
                        continue;
                    }
                },
            };
            if id.is_some_and(|id| wanted.contains(&id)) {
                applies = true;
                break;
            }
        }
        let undecided = if applies { None } else { undecided };
        out.push(Candidate {
            pid,
            applies,
            undecided,
        });
    }
    Ok(out)
}

/// Every process but pid 1 and ourselves, each marked with whether it has an applied patch
/// (with patch-id `id`, when given).
pub fn for_unpatch(id: Option<&str>) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for pid in candidate_pids()? {
        let Some(maps) = maps_of(pid) else { continue };
        let regions: Vec<_> = maps
            .iter()
            .filter(|m| {
                m.name == MapName::Anonymous
                    && m.perms.read
                    && m.perms.exec
                    && !m.perms.write
                    && !m.perms.shared
            })
            .collect();
        let applies = !regions.is_empty()
            && Process::open(pid).is_ok_and(|proc| {
                regions.iter().any(|m| {
                    let Ok(raw) = proc.read_vec(m.start, HEADER_SIZE) else {
                        return false;
                    };
                    Header::from_bytes(&raw).is_ok_and(|h| {
                        h.magic() == MAGIC && id.is_none_or(|id| h.id().is_ok_and(|h| h == id))
                    })
                })
            });
        out.push(Candidate {
            pid,
            applies,
            undecided: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_id_names_are_patches() {
        assert!(crate::storage::looks_like_build_id(&"ab".repeat(20)));
        assert!(!crate::storage::looks_like_build_id("before"));
        assert!(!crate::storage::looks_like_build_id("after"));
        assert!(!crate::storage::looks_like_build_id("abc"));
    }

    #[test]
    fn we_and_pid_1_are_never_candidates() {
        let pids = candidate_pids().unwrap();
        assert!(!pids.contains(&1));
        assert!(!pids.contains(&(std::process::id() as i32)));
    }

    #[test]
    fn a_directory_storage_lists_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let flat = "ab".repeat(20);
        let tree = "cd".repeat(20);
        std::fs::write(dir.path().join(format!("{flat}.kpatch")), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join(&tree).join("1")).unwrap();
        std::fs::write(dir.path().join(&tree).join("1/kpatch.bin"), b"y").unwrap();
        std::os::unix::fs::symlink("1", dir.path().join(&tree).join("latest")).unwrap();
        std::fs::write(dir.path().join("before"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("before"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // A build-id directory without a `latest` patch is not a patch.
        std::fs::create_dir_all(dir.path().join("ef".repeat(20))).unwrap();
        let ids = Storage::open(dir.path()).unwrap().build_ids().unwrap();
        assert_eq!(ids, std::collections::HashSet::from([flat, tree]));
    }
}
