//! What is loaded in a target, read from `/proc/PID/maps` and the mapped files while it runs:
//! the ELF objects (with build-ids and load biases) and the patches already applied.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use kpatch_file::{parse_info_records, Header, InfoRecord, HEADER_SIZE, MAGIC, MAGIC_PENDING};
use kpatch_process::{MapEntry, MapName, Memory, Process};

use crate::elf_image::ElfImage;
use crate::error::{Error, Result};
use crate::unwind::TrampolineCache;

/// An ELF object mapped in the target.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    /// File name without directories, as `info` prints it.
    pub name: String,
    /// From the lowest to the highest address of its mappings.
    pub range: Range<u64>,
    /// Run-time address minus link-time address.
    pub load_bias: u64,
    pub image: Arc<ElfImage>,
    /// The main executable.
    pub is_exe: bool,
}

impl LoadedObject {
    /// The object's build-id, if it has one.
    pub fn build_id(&self) -> Option<&str> {
        self.image.build_id.as_deref()
    }
}

/// A patch region found in the target.
#[derive(Debug, Clone)]
pub struct AppliedPatch {
    /// Region start.
    pub kpta: u64,
    /// The region's header (runtime fields filled in).
    pub header: Header,
    pub id: String,
    pub build_id: String,
    /// `KPATCH1`: fully applied. `KPATCH0`: left behind by an interrupted run.
    pub committed: bool,
    /// Relocated info records.
    pub records: Vec<InfoRecord>,
    /// Mapped length of the region.
    pub len: u64,
    /// Committed, but no longer reachable: no function of its object jumps into any patch of
    /// that object (the library was unloaded, and maybe loaded again, unpatched). See
    /// [`mark_orphans`].
    pub orphan: bool,
}

impl AppliedPatch {
    /// The region's address range.
    pub fn range(&self) -> Range<u64> {
        self.kpta..self.kpta + self.len
    }

    /// Address of the saved original bytes of record `i`.
    pub fn undo_addr(&self, i: usize, hunk_size: usize) -> u64 {
        self.kpta + u64::from(self.header.user_undo()) + (i * hunk_size) as u64
    }
}

fn basename(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Identity of a file's contents: device, inode, size and modification time.
type FileKey = (u64, u64, u64, i64, i64);

/// Analysed ELF files, kept for every process one run of a tool looks at (with `-p all` they
/// mostly map the same executable and libraries), and the signal trampolines found in their
/// text. Made by the caller and passed in: nothing outlives the run.
#[derive(Default)]
pub struct ImageCache {
    /// `None` records a file that is not a usable ELF object.
    images: Mutex<HashMap<FileKey, Option<Arc<ElfImage>>>>,
    pub trampolines: TrampolineCache,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.images.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("ImageCache").field("images", &n).finish()
    }
}

impl ImageCache {
    /// The analysed image of an open mapped file, from the cache or read now.
    fn image(
        &self,
        file: &mut std::fs::File,
        path: &std::path::Path,
    ) -> Result<Option<Arc<ElfImage>>> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let meta = file.metadata().map_err(io)?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        if let Some(hit) = self.images.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let mut magic = [0u8; 4];
        let image = if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
            None
        } else {
            let mut data = magic.to_vec();
            file.read_to_end(&mut data).map_err(io)?;
            ElfImage::parse(data).ok().map(Arc::new)
        };
        if let Ok(mut c) = self.images.lock() {
            c.insert(key, image.clone());
        }
        Ok(image)
    }
}

/// What is loaded in a process at one moment: its mappings, the ELF objects among them and the
/// patch regions (committed or left pending).
#[derive(Debug)]
pub struct Loaded {
    pub maps: Vec<MapEntry>,
    pub objects: Vec<LoadedObject>,
    pub patches: Vec<AppliedPatch>,
    /// The mapped files that could not be read, each with why: whether a patch is for one of
    /// them cannot be told.
    pub unreadable: Vec<String>,
}

impl Loaded {
    /// Reads the maps of `proc`, then its objects and patch regions.
    pub fn read(proc: &Process, images: &ImageCache) -> Result<Loaded> {
        let maps = proc.maps()?;
        let (objects, unreadable) = objects(proc, &maps, images)?;
        let mut patches = applied_patches(proc, &maps)?;
        mark_orphans(proc, proc.arch(), &mut patches);
        Ok(Loaded {
            maps,
            objects,
            patches,
            unreadable,
        })
    }

    /// The name of the object a patch is for (its build-id when no object has it).
    pub fn object_name(&self, p: &AppliedPatch) -> String {
        self.object_of(p)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| p.build_id.clone())
    }

    /// The object a patch is for.
    pub fn object_of(&self, p: &AppliedPatch) -> Option<&LoadedObject> {
        self.objects
            .iter()
            .find(|o| o.build_id() == Some(p.build_id.as_str()))
    }
}

/// The ELF objects mapped by `proc`, in address order, and the mapped files that could not be
/// read (with why). Files that are not ELF (locale archives, fonts, ...) are skipped.
fn objects(
    proc: &Process,
    maps: &[MapEntry],
    images: &ImageCache,
) -> Result<(Vec<LoadedObject>, Vec<String>)> {
    let page = proc.page_size();
    // The running executable's file, by identity rather than path: in another mount namespace
    // or chroot the path names a file of the target's root.
    let file_id = |f: &std::fs::File| {
        use std::os::unix::fs::MetadataExt;
        f.metadata().ok().map(|m| (m.dev(), m.ino()))
    };
    let exe = proc.open_exe().ok().and_then(|f| file_id(&f));
    // Group the mappings of each file by (device, inode), keeping address order.
    let mut groups: BTreeMap<(u32, u32, u64), Vec<&MapEntry>> = BTreeMap::new();
    for m in maps {
        if let MapName::File { .. } = m.name {
            if m.inode != 0 {
                groups
                    .entry((m.dev.0, m.dev.1, m.inode))
                    .or_default()
                    .push(m);
            }
        }
    }
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for group in groups.values() {
        let Some(first) = group.iter().min_by_key(|m| m.start) else {
            continue;
        };
        let Some(path) = first.file_path().map(std::path::Path::to_path_buf) else {
            continue;
        };
        let mut file = match proc.open_mapped_file(first) {
            Ok(f) => f,
            Err(e) => {
                unreadable.push(e.to_string());
                continue;
            }
        };
        let image = match images.image(&mut file, &path)? {
            Some(i) => i,
            None => continue,
        };
        // The lowest mapping shows the PT_LOAD segment that starts at its file offset.
        let Some(seg) = image
            .loads
            .iter()
            .find(|l| l.offset & !(page - 1) == first.offset)
        else {
            continue;
        };
        let load_bias = first.start.wrapping_sub(seg.vaddr & !(page - 1));
        if crate::identity::build_id_in_memory(proc, &image, load_bias) == Some(false) {
            // Not the file the process mapped (changed in place since): never patched.
            continue;
        }
        let start = group.iter().map(|m| m.start).min().unwrap_or(first.start);
        let end = group.iter().map(|m| m.end).max().unwrap_or(first.end);
        let is_exe = exe.is_some() && file_id(&file) == exe;
        out.push(LoadedObject {
            name: basename(&path),
            is_exe,
            range: start..end,
            load_bias,
            image,
        });
    }
    out.sort_by_key(|o| o.range.start);
    Ok((out, unreadable))
}

/// Patch regions in the target: anonymous read-execute private mappings that start with a
/// `.kpatch` header (`KPATCH1`, or `KPATCH0` for one an interrupted run left behind).
pub fn applied_patches(mem: &dyn Memory, maps: &[MapEntry]) -> Result<Vec<AppliedPatch>> {
    let mut out = Vec::new();
    for m in maps {
        let p = m.perms;
        if m.name != MapName::Anonymous
            || !p.read
            || !p.exec
            || p.write
            || p.shared
            || m.len() < HEADER_SIZE as u64
        {
            continue;
        }
        let mut raw = [0u8; HEADER_SIZE];
        if mem.read(m.start, &mut raw).is_err() {
            continue;
        }
        let Ok(header) = Header::from_bytes(&raw) else {
            continue;
        };
        let committed = header.magic() == MAGIC;
        if !committed && header.magic() != MAGIC_PENDING {
            continue;
        }
        let header = *header;
        let (Ok(id), Ok(bid)) = (header.id(), header.build_id()) else {
            continue;
        };
        let len = header.kpatch_total_mem_sz().max(m.len());
        // Records end with a marker; read generously and let the parser stop there.
        let info_at = m.start + u64::from(header.user_info());
        let undo = m.start + u64::from(header.user_undo());
        let span = undo.saturating_sub(info_at).min(1 << 20) as usize;
        let mut bytes = vec![0u8; span];
        let records = if span > 0 && mem.read(info_at, &mut bytes).is_ok() {
            parse_info_records(&bytes).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(AppliedPatch {
            kpta: m.start,
            header,
            id: id.to_owned(),
            build_id: bid.to_owned(),
            committed,
            records,
            len,
            orphan: false,
        });
    }
    Ok(out)
}

/// Marks the committed patches of an object that is gone: for each build-id, if none of the
/// functions its patches replace jumps into one of its patch regions (a function that cannot
/// be read counts as not jumping), every patch of that build-id is an orphan. That is what an
/// unloaded library leaves (`dlclose`), whether or not it was loaded again since. Build-ids
/// whose patches only add functions are left alone: nothing tells.
pub fn mark_orphans(mem: &dyn Memory, arch: &dyn kpatch_arch::Arch, patches: &mut [AppliedPatch]) {
    let hs = arch.hunk_size();
    let mut build_ids: Vec<String> = patches
        .iter()
        .filter(|p| p.committed)
        .map(|p| p.build_id.clone())
        .collect();
    build_ids.sort();
    build_ids.dedup();
    for bid in build_ids {
        let group: Vec<usize> = (0..patches.len())
            .filter(|&i| patches[i].committed && patches[i].build_id == bid)
            .collect();
        let regions: Vec<Range<u64>> = group.iter().map(|&i| patches[i].range()).collect();
        let mut replaced = group
            .iter()
            .flat_map(|&i| patches[i].records.iter())
            .filter(|r| !r.is_new_function())
            .map(|r| r.daddr())
            .peekable();
        if replaced.peek().is_none() {
            continue;
        }
        let live = replaced.any(|daddr| {
            let mut code = vec![0u8; hs];
            mem.read(daddr, &mut code).is_ok()
                && arch
                    .decode_jump(daddr, &code)
                    .is_some_and(|to| regions.iter().any(|r| r.contains(&to)))
        });
        if !live {
            for i in group {
                patches[i].orphan = true;
            }
        }
    }
}
