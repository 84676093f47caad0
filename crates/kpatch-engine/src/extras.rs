//! What a patch carries beyond LibcarePlus's format (`<libcare/livepatch.h>`, `kpatch_make
//! --replace`): callback records, state declarations, registry slots and the replace marker,
//! found in a payload being applied or in a region already applied (whose ELF image, section
//! headers included, is in the target).

use std::ops::Range;

use kpatch_file::{
    StateDecl, CALLBACK_RECORD_SIZE, KPATCH_CALLBACKS, KPATCH_REGISTRY, KPATCH_REPLACE,
    KPATCH_STATES, REPLACE_MARKER,
};
use kpatch_process::Memory;

use crate::discover::AppliedPatch;
use crate::payload::Payload;

/// Where the sections are (offsets inside the ELF image) and what they say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Offsets of the callback records.
    pub callbacks: Vec<u64>,
    pub states: Vec<StateDecl>,
    /// Offsets of the registry slots.
    pub registry_slots: Vec<u64>,
    /// A cumulative patch.
    pub replace: bool,
}

impl Extras {
    /// Whether the patch needs the process's registry: its code uses it, or it sets states
    /// (which `libcare_get_state` reads from there).
    pub fn needs_registry(&self) -> bool {
        !self.registry_slots.is_empty() || !self.states.is_empty()
    }

    /// From the named sections (offset, size) of an image whose bytes `read` returns.
    fn from_sections(
        sections: impl Iterator<Item = (String, Range<u64>)>,
        read: &mut dyn FnMut(Range<u64>) -> Option<Vec<u8>>,
    ) -> Extras {
        let mut x = Extras::default();
        let rec = CALLBACK_RECORD_SIZE as u64;
        for (name, r) in sections {
            match name.as_str() {
                KPATCH_CALLBACKS => x
                    .callbacks
                    .extend((0..(r.end - r.start) / rec).map(|i| r.start + i * rec)),
                KPATCH_REGISTRY => x.registry_slots.extend((r.start..r.end).step_by(8)),
                KPATCH_STATES => {
                    if let Some(b) = read(r) {
                        x.states.extend(StateDecl::all(&b));
                    }
                }
                KPATCH_REPLACE => {
                    x.replace = read(r).is_some_and(|b| b.starts_with(&REPLACE_MARKER));
                }
                _ => {}
            }
        }
        x
    }

    /// The extras of a payload (`elf`, its ELF image as stored in the file).
    pub fn of_payload(payload: &Payload, elf: &[u8]) -> Extras {
        let sections = payload
            .sections
            .iter()
            .filter(|s| s.is_kpatch())
            .map(|s| (s.name.clone(), s.offset..s.offset.saturating_add(s.size)));
        Extras::from_sections(sections, &mut |r| {
            elf.get(r.start as usize..r.end as usize)
                .map(<[u8]>::to_vec)
        })
    }

    /// The extras of an applied patch, read from its region (nothing for a region whose ELF
    /// image cannot be read).
    pub fn of_region(mem: &dyn Memory, p: &AppliedPatch) -> Extras {
        let image = p.kpta + u64::from(p.header.elf_offset());
        let sections = region_sections(mem, image).unwrap_or_default();
        Extras::from_sections(sections.into_iter(), &mut |r| {
            let mut b = vec![0u8; (r.end - r.start) as usize];
            mem.read(image + r.start, &mut b).ok().map(|_| b)
        })
    }
}

/// The names and (offset, size) of the sections of the ELF image at `image` in the target.
fn region_sections(mem: &dyn Memory, image: u64) -> Option<Vec<(String, Range<u64>)>> {
    let mut ehdr = [0u8; 64];
    mem.read(image, &mut ehdr).ok()?;
    if &ehdr[..4] != b"\x7fELF" {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at =
        |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let shoff = u64_at(&ehdr, 0x28);
    let (entsize, num, strndx) = (
        u16_at(&ehdr, 0x3a) as usize,
        u16_at(&ehdr, 0x3c) as usize,
        u16_at(&ehdr, 0x3e) as usize,
    );
    if entsize != 64 || num == 0 || num > 4096 || strndx >= num {
        return None;
    }
    let mut shdrs = vec![0u8; num * entsize];
    mem.read(image + shoff, &mut shdrs).ok()?;
    let shdr = |i: usize| &shdrs[i * entsize..(i + 1) * entsize];
    let (str_off, str_size) = (u64_at(shdr(strndx), 0x18), u64_at(shdr(strndx), 0x20));
    if str_size > 1 << 20 {
        return None;
    }
    let mut strtab = vec![0u8; str_size as usize];
    mem.read(image + str_off, &mut strtab).ok()?;
    let mut out = Vec::new();
    for i in 0..num {
        let s = shdr(i);
        let name_at = u32_at(s, 0) as usize;
        let Some(rest) = strtab.get(name_at..) else {
            continue;
        };
        let name = rest.split(|&b| b == 0).next().unwrap_or(&[]);
        let (off, size) = (u64_at(s, 0x18), u64_at(s, 0x20));
        // SHT_NOBITS placeholders of the original's sections have no bytes in the image.
        if u32_at(s, 4) == 8 {
            continue;
        }
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            off..off.saturating_add(size),
        ));
    }
    Some(out)
}
