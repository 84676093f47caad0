//! The names of the sections a patch adds to the patched binary, which become the payload:
//! `kpatch_gensrc` emits them, `kpatch_strip` keeps them, the runtime loads them.

/// What the name of every section of the patch starts with.
pub const KPATCH_PREFIX: &str = ".kpatch";
/// The patch's code: the copies of changed and new functions.
pub const KPATCH_TEXT: &str = ".kpatch.text";
/// The patch's writable data; it starts a page of its own ([`KPATCH_DATA_ALIGN`]).
pub const KPATCH_DATA: &str = ".kpatch.data";
/// The names of the copies, which info records point to.
pub const KPATCH_STRTAB: &str = ".kpatch.strtab";
/// One [`crate::InfoRecord`] per patched function, then the end marker.
pub const KPATCH_INFO: &str = ".kpatch.info";
/// The unwind tables (CIEs and FDEs) of the patch's code, copied by `kpatch_strip` from the
/// patched binary's `.eh_frame`; the runtime registers them with the process's unwinder.
pub const KPATCH_EH_FRAME: &str = ".kpatch.eh_frame";

/// Callback records of `<libcare/livepatch.h>` ([`crate::CallbackRecord`], `LIBCARE_CALLBACKS`).
/// This and the sections below are ours: LibcarePlus loads and relocates them like any other
/// `.kpatch*` section and otherwise ignores them.
pub const KPATCH_CALLBACKS: &str = ".kpatch.callbacks";
/// State declarations ([`crate::StateDecl`], `LIBCARE_STATE`).
pub const KPATCH_STATES: &str = ".kpatch.states";
/// Pointer slots the runtime fills with the address of the process's livepatch registry
/// (shadow variables and states), one per translation unit that uses it.
pub const KPATCH_REGISTRY: &str = ".kpatch.registry";
/// Present in a cumulative patch (`kpatch_make --replace`): it replaces every earlier patch of
/// its object. Holds [`crate::REPLACE_MARKER`].
pub const KPATCH_REPLACE: &str = ".kpatch.replace";
/// Present in a patch built on top of earlier patches of its object: which patches it must be
/// applied after, and which symbols it takes from them ([`crate::Depends`]).
pub const KPATCH_DEPENDS: &str = ".kpatch.depends";

/// Placeholders `kpatch_gensrc --earlier` defines, in the patched build, for what an earlier
/// patch added (so that the patched link resolves them); `kpatch_strip --rel-fixup` makes
/// them undefined symbols, resolved at run time in the earlier patch. Not a `.kpatch` name:
/// nothing of it goes into the payload.
pub const EARLIER_STUBS: &str = ".libcare.earlier";

/// Alignment of `.kpatch.data` in memory and of its file offset in the payload: the runtime
/// maps the payload up to it read-execute and from it read-write.
pub const KPATCH_DATA_ALIGN: u64 = 4096;

/// The suffix of a function's copy in the patch (`f` is replaced by `f.kpatch`): the name in
/// `.kpatch.strtab`.
pub const COPY_SUFFIX: &str = ".kpatch";

/// Whether a section with this name carries the patch itself (`.kpatch*`).
pub fn is_kpatch_section(name: &str) -> bool {
    name.starts_with(KPATCH_PREFIX)
}

/// Whether a section with this name is the relocation section of a `.kpatch*` section.
pub fn is_kpatch_rela(name: &str) -> bool {
    name.strip_prefix(".rela")
        .or_else(|| name.strip_prefix(".rel"))
        .is_some_and(is_kpatch_section)
}

/// The name of the `SHT_RELA` section relocating `section` (`.rela.kpatch.info`).
pub fn rela_section_name(section: &str) -> String {
    format!(".rela{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpatch_names() {
        for name in [
            KPATCH_TEXT,
            KPATCH_DATA,
            KPATCH_STRTAB,
            KPATCH_INFO,
            KPATCH_EH_FRAME,
            KPATCH_CALLBACKS,
            KPATCH_STATES,
            KPATCH_REGISTRY,
            KPATCH_REPLACE,
            KPATCH_DEPENDS,
        ] {
            assert!(is_kpatch_section(name), "{name}");
            assert!(!is_kpatch_rela(name), "{name}");
            assert!(is_kpatch_rela(&rela_section_name(name)), "{name}");
        }
        assert_eq!(rela_section_name(KPATCH_INFO), ".rela.kpatch.info");
        assert!(is_kpatch_rela(".rel.kpatch.text"));
        assert!(!is_kpatch_section(".text.kpatch_helper"));
        assert!(!is_kpatch_section(EARLIER_STUBS));
        assert!(!is_kpatch_rela(".rela.text"));
        assert!(KPATCH_DATA_ALIGN.is_power_of_two());
    }
}
