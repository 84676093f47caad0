//! Patches built on top of earlier patches of their object (`kpatch_gensrc --earlier`,
//! `kpatch_make --after`; the payload's `.kpatch.depends`). Such a patch is applied only when
//! the patches it names are applied to its object; the symbols it lists are found in their
//! symbol tables (their ELF images, `.symtab` included, are in their regions: docs/internals.md
//! section 3), before the libraries are searched; and a patch it needs is not removed while it
//! stays. Nothing is recorded outside the process: every run reads the regions again.

use std::collections::HashMap;

use kpatch_file::{Depends, HEADER_SIZE, KPATCH_DEPENDS};
use kpatch_process::Memory;
use object::elf::{STB_GLOBAL, STB_WEAK, STT_FUNC, STT_OBJECT, STT_SECTION};

use crate::discover::{AppliedPatch, Loaded, LoadedObject};
use crate::elf_image::SymKind;
use crate::error::{Error, Result};
use crate::payload::{PSymDef, Payload};
use crate::scope::Found;

/// An ELF image larger than this in a region is not read (not one of ours).
const MAX_IMAGE: u64 = 1 << 28;

/// What a payload (`elf`, its ELF image as stored in the file) needs from earlier patches.
pub fn of_payload(payload: &Payload, elf: &[u8]) -> Depends {
    payload
        .section(KPATCH_DEPENDS)
        .and_then(|(_, s)| elf.get(s.offset as usize..s.offset.saturating_add(s.size) as usize))
        .map(Depends::parse)
        .unwrap_or_default()
}

/// An applied patch's ELF image, read from its region and decoded.
struct Image {
    payload: Payload,
    bytes: Vec<u8>,
    /// Where the image starts in the target.
    at: u64,
}

fn read_image(mem: &dyn Memory, p: &AppliedPatch) -> Option<Image> {
    let len = u64::from(p.header.total_size()).checked_sub(HEADER_SIZE as u64)?;
    if len == 0 || len > MAX_IMAGE {
        return None;
    }
    let at = p.kpta + u64::from(p.header.elf_offset());
    let mut bytes = vec![0u8; len as usize];
    mem.read(at, &mut bytes).ok()?;
    let payload = Payload::parse(&bytes).ok()?;
    Some(Image { payload, bytes, at })
}

impl Image {
    fn depends(&self) -> Depends {
        of_payload(&self.payload, &self.bytes)
    }

    /// The symbols with external linkage the patch defines in its own sections, with their
    /// addresses in the target.
    fn defined(&self, p: &AppliedPatch) -> HashMap<String, Found> {
        let mut out = HashMap::new();
        for s in &self.payload.symbols {
            let PSymDef::Section(k) = s.def else { continue };
            let Some(section) = self.payload.sections.get(k) else {
                continue;
            };
            if !section.is_kpatch()
                || s.st_type == STT_SECTION
                || !matches!(s.bind, STB_GLOBAL | STB_WEAK)
                || s.name.is_empty()
            {
                continue;
            }
            let kind = match s.st_type {
                STT_FUNC => SymKind::Func,
                STT_OBJECT => SymKind::Object,
                _ => SymKind::Other,
            };
            out.entry(s.name.clone()).or_insert_with(|| Found {
                addr: self.at + section.offset + s.value,
                kind,
                object: format!("patch {}", p.id),
            });
        }
        out
    }
}

/// What an applied patch needs from earlier ones (nothing for a region whose image cannot be
/// read: one LibcarePlus applied, say).
pub fn of_region(mem: &dyn Memory, p: &AppliedPatch) -> Depends {
    read_image(mem, p).map(|i| i.depends()).unwrap_or_default()
}

/// The committed patches of `object` in `loaded`, newest first.
fn applied_to<'a>(loaded: &'a Loaded, build_id: Option<&str>) -> Vec<&'a AppliedPatch> {
    let mut out: Vec<&AppliedPatch> = loaded
        .patches
        .iter()
        .filter(|p| p.committed && Some(p.build_id.as_str()) == build_id)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse((p.header.applied_seq(), p.kpta)));
    out
}

/// Where the symbols patch `id` for `object` takes from earlier patches (`needs`) are: each
/// patch it names must be applied to `object`, and one of them (the newest first) must define
/// each symbol it lists. By name, without a version.
pub fn resolve(
    mem: &dyn Memory,
    loaded: &Loaded,
    pid: i32,
    id: &str,
    object: &LoadedObject,
    needs: &Depends,
) -> Result<HashMap<String, Found>> {
    if needs.is_empty() {
        return Ok(HashMap::new());
    }
    let applied = applied_to(loaded, object.build_id());
    let mut defined = Vec::new();
    for need in &needs.patches {
        let Some(p) = applied.iter().find(|p| p.id == *need) else {
            return Err(Error::NeedsEarlier {
                id: id.to_owned(),
                needs: need.clone(),
                object: object.name.clone(),
                pid,
                symbols: needs.symbols.clone(),
            });
        };
        defined.push(read_image(mem, p).map(|i| i.defined(p)).unwrap_or_default());
    }
    // The newest of the patches named first, as they are in `applied`.
    let rank = |i: usize| {
        let p = needs.patches[i].as_str();
        applied.iter().position(|a| a.id == p)
    };
    let mut order: Vec<usize> = (0..defined.len()).collect();
    order.sort_by_key(|&i| rank(i));
    let mut out = HashMap::new();
    for name in &needs.symbols {
        let Some(found) = order.iter().find_map(|&i| defined[i].get(name)) else {
            return Err(Error::EarlierSymbolMissing {
                id: id.to_owned(),
                symbol: name.clone(),
                needs: needs.patches.join(", "),
                object: object.name.clone(),
                pid,
            });
        };
        out.insert(name.clone(), found.clone());
    }
    Ok(out)
}

/// Refuses removing `all[selected]`, in that order, while a committed patch of the same object
/// that stays (is not removed before) was built on top of one of them.
pub fn check_removal(
    mem: &dyn Memory,
    loaded: &Loaded,
    selected: &[usize],
    pid: i32,
) -> Result<()> {
    let all = &loaded.patches;
    let mut images: HashMap<usize, Option<Image>> = HashMap::new();
    let mut gone = vec![false; all.len()];
    for &pi in selected {
        let p = &all[pi];
        for (qi, q) in all.iter().enumerate() {
            if qi == pi || gone[qi] || !q.committed || q.build_id != p.build_id {
                continue;
            }
            let needs = images
                .entry(qi)
                .or_insert_with(|| read_image(mem, q))
                .as_ref()
                .map(Image::depends)
                .unwrap_or_default();
            if !needs.patches.contains(&p.id) {
                continue;
            }
            let theirs = read_image(mem, p).map(|i| i.defined(p)).unwrap_or_default();
            let symbols = needs
                .symbols
                .iter()
                .filter(|s| theirs.contains_key(*s))
                .cloned()
                .collect();
            return Err(Error::StillNeeded {
                id: p.id.clone(),
                object: loaded.object_name(p),
                pid,
                by: q.id.clone(),
                symbols,
            });
        }
        gone[pi] = true;
    }
    Ok(())
}
