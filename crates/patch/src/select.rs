//! `-p all`: which processes a command applies to, decided from `/proc/PID/maps` and
//! build-ids before any process is attached. Pid 1 and the tool itself are never chosen.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use kpatch_file::MAGIC;
use kpatch_target::{parse_maps, MapName, Memory, Process};

use crate::elf_image::build_id_of;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Numeric entries of `/proc`, minus pid 1 and ourselves.
fn candidate_pids() -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    let dir = std::fs::read_dir("/proc").map_err(|source| Error::Io {
        path: "/proc".into(),
        source,
    })?;
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p > 1 && p != me)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Build-ids a storage has patches for.
fn storage_build_ids(storage: &Storage) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    match storage {
        Storage::File(_) => {
            if let Some(f) = storage.file_bytes()? {
                let file =
                    kpatch_file::KpatchFile::parse(&f.bytes).map_err(|source| Error::Format {
                        path: f.path.clone(),
                        source,
                    })?;
                out.insert(file.build_id().to_owned());
            }
        }
        Storage::Dir(dir) => {
            let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let bid = name.strip_suffix(".kpatch").unwrap_or(&name).to_owned();
                if bid.len() >= 8
                    && bid.bytes().all(|b| b.is_ascii_hexdigit())
                    && storage.lookup_dir(&bid)?.is_some()
                {
                    out.insert(bid);
                }
            }
        }
    }
    Ok(out)
}

/// Reads the build-id of a mapped file, from the start of the file (where the note is) or,
/// failing that, from all of it.
fn mapped_build_id(pid: i32, start: u64, end: u64) -> Option<String> {
    let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 64 * 1024];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    if head.get(..4) != Some(b"\x7fELF") {
        return None;
    }
    if let Ok(Some(id)) = build_id_of(&head) {
        return Some(id);
    }
    f.read_to_end(&mut head).ok()?;
    build_id_of(&head).ok().flatten()
}

/// Processes with an object whose build-id `storage` has a patch for.
pub fn applicable_pids(storage: &Storage) -> Result<Vec<i32>> {
    let wanted = storage_build_ids(storage)?;
    let mut cache: HashMap<(u32, u32, u64), Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for pid in candidate_pids()? {
        let Ok(text) = std::fs::read(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let Ok(maps) = parse_maps(&text) else {
            continue;
        };
        let hit = maps.iter().any(|m| {
            if !matches!(m.name, MapName::File { .. }) || m.inode == 0 {
                return false;
            }
            let id = cache
                .entry((m.dev.0, m.dev.1, m.inode))
                .or_insert_with(|| mapped_build_id(pid, m.start, m.end));
            id.as_ref().is_some_and(|id| wanted.contains(id))
        });
        if hit {
            out.push(pid);
        }
    }
    Ok(out)
}

/// Processes that have at least one applied patch.
pub fn patched_pids() -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for pid in candidate_pids()? {
        let Ok(text) = std::fs::read(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let Ok(maps) = parse_maps(&text) else {
            continue;
        };
        let regions: Vec<_> = maps
            .iter()
            .filter(|m| {
                m.name == MapName::Anonymous && m.perms.read && m.perms.exec && !m.perms.write
            })
            .collect();
        if regions.is_empty() {
            continue;
        }
        let Ok(proc) = Process::open(pid) else {
            continue;
        };
        if regions
            .iter()
            .any(|m| proc.read_vec(m.start, 8).is_ok_and(|b| b == MAGIC))
        {
            out.push(pid);
        }
    }
    Ok(out)
}
