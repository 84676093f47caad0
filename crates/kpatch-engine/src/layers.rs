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
        // We leave the symbol table as it is in the file (section-relative values);
        // LibcarePlus writes it with the addresses it resolved (it leaves no sequence).
        let absolute = p.header.applied_seq() == 0;
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
            let base = if absolute {
                0
            } else {
                self.at + section.offset
            };
            out.entry(s.name.clone()).or_insert_with(|| Found {
                addr: base + s.value,
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

/// The committed patches of `object` in `loaded`, newest first (not the orphans of an
/// earlier load of it: their code is no longer reached).
fn applied_to<'a>(loaded: &'a Loaded, build_id: Option<&str>) -> Vec<&'a AppliedPatch> {
    let mut out: Vec<&AppliedPatch> = loaded
        .patches
        .iter()
        .filter(|p| p.committed && !p.orphan && Some(p.build_id.as_str()) == build_id)
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
            if qi == pi || gone[qi] || !q.committed || q.orphan || q.build_id != p.build_id {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess};
    use elf_edit::{Elf, Section, Symbol};
    use kpatch_file::Header;
    use object::elf::*;

    const APP: &str = "0123456789abcdef0123456789abcdef01234567";
    /// Where the ELF image starts in each region.
    const ELF_OFFSET: u64 = 0x1000;

    /// An applied patch's ELF image: `.kpatch.text` defining `defines` (global functions at
    /// offsets 0, 0x10...), and what it `needs`.
    fn image(defines: &[&str], needs: &Depends) -> Vec<u8> {
        let mut elf = Elf::new(ET_REL, EM_X86_64);
        let ktext = elf.add_section(Section::new(
            kpatch_file::KPATCH_TEXT,
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
            vec![0xc3; 0x40],
        ));
        let info = kpatch_file::INFO_END_MARKER.to_vec();
        elf.add_section(Section::new(
            kpatch_file::KPATCH_INFO,
            SHT_PROGBITS,
            SHF_ALLOC,
            info,
        ));
        if !needs.is_empty() {
            elf.add_section(Section::new(
                KPATCH_DEPENDS,
                SHT_PROGBITS,
                SectionFlags(0),
                needs.to_bytes(),
            ));
        }
        let symtab = elf.add_symbol_table();
        let mut syms = vec![Symbol::default()];
        for (i, name) in defines.iter().enumerate() {
            syms.push(Symbol {
                name: (*name).into(),
                name_offset: u32::MAX,
                sym_type: STT_FUNC,
                bind: STB_GLOBAL,
                shndx: SymbolSection(ktext as u16),
                value: 0x10 * i as u64,
                ..Symbol::default()
            });
        }
        for name in &needs.symbols {
            syms.push(Symbol {
                name: name.clone(),
                name_offset: u32::MAX,
                sym_type: STT_FUNC,
                bind: STB_GLOBAL,
                ..Symbol::default()
            });
        }
        elf.set_symbols(symtab, &syms).unwrap();
        elf.write()
    }

    /// Patch `id` (applied `seq`-th) of `app` at `kpta`, its region mapped in `proc`.
    fn applied(proc: &FakeProcess, id: &str, seq: u64, kpta: u64, elf: &[u8]) -> AppliedPatch {
        let file = kpatch_file::write_kpatch(APP, id, 0, elf).unwrap();
        let mut header = *Header::from_bytes(&file[..HEADER_SIZE]).unwrap();
        header.set_elf_offset(ELF_OFFSET as u32);
        header.set_applied_seq(seq);
        let mut region = vec![0u8; ELF_OFFSET as usize];
        region.extend_from_slice(&file[HEADER_SIZE..]);
        proc.map(kpta, region);
        AppliedPatch {
            kpta,
            header,
            id: id.into(),
            build_id: APP.into(),
            committed: true,
            records: Vec::new(),
            len: 0x10000,
            orphan: false,
        }
    }

    fn needs(patches: &[&str], symbols: &[&str]) -> Depends {
        let mut d = Depends::default();
        patches.iter().for_each(|p| d.add_patch(p));
        symbols.iter().for_each(|s| d.add_symbol(s));
        d
    }

    /// 0001 adds `added_next`; 0002, built on it, uses it; 0003 stands alone.
    fn process() -> (FakeProcess, Loaded) {
        let proc = FakeProcess::x86_64();
        let p1 = applied(
            &proc,
            "0001",
            1,
            0x10_0000,
            &image(&["helper", "added_next"], &Depends::default()),
        );
        let p2 = image(&["tick.kpatch"], &needs(&["0001"], &["added_next"]));
        let p2 = applied(&proc, "0002", 2, 0x20_0000, &p2);
        let p3 = applied(
            &proc,
            "0003",
            3,
            0x30_0000,
            &image(&["other"], &Depends::default()),
        );
        let loaded = Loaded {
            maps: Vec::new(),
            objects: vec![fake::object(
                "app",
                0x1000..0x2000,
                fake::image(APP, &[]),
                true,
            )],
            patches: vec![p1, p2, p3],
            unreadable: Vec::new(),
        };
        (proc, loaded)
    }

    #[test]
    fn symbols_are_found_in_the_patches_named_and_only_with_them_applied() {
        let (proc, mut loaded) = process();
        let object = loaded.objects[0].clone();
        let want = needs(&["0001"], &["added_next"]);
        let found = resolve(&proc, &loaded, fake::PID, "0004", &object, &want).unwrap();
        let f = &found["added_next"];
        // Section offset in the image plus the symbol's offset in the section.
        let text = read_image(&proc, &loaded.patches[0]).unwrap();
        let (_, s) = text.payload.section(kpatch_file::KPATCH_TEXT).unwrap();
        assert_eq!(f.addr, 0x10_0000 + ELF_OFFSET + s.offset + 0x10);
        assert_eq!((f.kind, f.object.as_str()), (SymKind::Func, "patch 0001"));

        // Not defined by the patch named (0003 has no such symbol).
        let err = resolve(
            &proc,
            &loaded,
            fake::PID,
            "0004",
            &object,
            &needs(&["0003"], &["added_next"]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::EarlierSymbolMissing { symbol, needs, .. } if symbol == "added_next" && needs == "0003"),
            "{err}"
        );
        // Pending (an interrupted run's) or absent: not applied.
        loaded.patches[0].committed = false;
        let err = resolve(&proc, &loaded, fake::PID, "0004", &object, &want).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("patch 0004 needs patch 0001, which is not applied to app in pid {}: 0004 uses added_next from it; apply 0001 first", fake::PID)
        );
        assert!(resolve(
            &proc,
            &loaded,
            fake::PID,
            "0004",
            &object,
            &Depends::default()
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn a_patch_another_needs_goes_only_after_it() {
        let (proc, loaded) = process();
        assert_eq!(of_region(&proc, &loaded.patches[1]).patches, ["0001"]);
        let err = check_removal(&proc, &loaded, &[0], fake::PID).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot remove patch 0001 from app in pid {}: patch 0002, applied after it, uses added_next from it; remove 0002 first (unpatch without -i removes every patch, newest first)", fake::PID)
        );
        // Newest first (as unpatch without -i orders them), or with 0002 gone first.
        check_removal(&proc, &loaded, &[2, 1, 0], fake::PID).unwrap();
        check_removal(&proc, &loaded, &[1, 0], fake::PID).unwrap();
        check_removal(&proc, &loaded, &[2], fake::PID).unwrap();
        assert!(check_removal(&proc, &loaded, &[0, 1], fake::PID).is_err());
    }
}
