//! `kpatch_strip --rel-fixup`: make the patch's relocations resolvable against the original.

use crate::error::BuildError;
use crate::layout_contract::check_layout;
use crate::tls;
use elf_edit::{Elf, Rela, Symbol};
use kpatch_arch::{Arch, GotInstruction, GotRewriteError, RelocNeed, StaticTls};
use kpatch_file::elf::R_NONE;
use kpatch_file::{is_kpatch_section, Depends, EARLIER_STUBS, KPATCH_DEPENDS};
use object::elf::{
    RelocationType, SymbolOther, SymbolSection, ET_DYN, ET_REL, SHN_ABS, SHN_UNDEF, SHT_RELA,
    STB_GLOBAL, STB_LOCAL, STB_WEAK, STT_FUNC, STT_NOTYPE, STT_OBJECT, STT_SECTION, STT_TLS,
    STV_DEFAULT,
};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// What `rel_fixup` changed, one line each for the user (the peer's wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixupNote {
    /// A relocation against a named symbol outside the patch was looked at.
    FixingUp { symbol: String, addend: i64 },
    /// A relocation against a local symbol now refers to the symbol's section.
    RelocatingTo { section: String, addend: i64 },
    /// A GOT load of a symbol the patch can reach directly became a direct reference.
    GotLoadToLea { section: String, offset: u64 },
    /// An indirect call or jump through the GOT became a direct one.
    GotBranchToDirect { section: String, offset: u64 },
    /// An initial-exec TLS access now names the original's GOT slot in its addend
    /// (`gottpoff`: an x86_64 `GOTTPOFF` relocation, else an aarch64 `TLSIE` one).
    TlsGotSlot {
        symbol: String,
        from: i64,
        to: u64,
        gottpoff: bool,
    },
    /// A local-exec TLS access keeps its linked value after its offset was checked.
    TlsOffsetKept { symbol: String, offset: u64 },
    /// A GOT reference of a shared library to one of its exported symbols stays a GOT
    /// reference, resolved at run time like the dynamic linker resolves it (the program may
    /// hold the live definition, as with a copy-relocated variable).
    Interposable { symbol: String },
    /// A reference to a placeholder of `kpatch_gensrc --earlier`: left undefined, for the
    /// runtime to resolve in the earlier patch that defines it.
    FromEarlier { symbol: String },
}

impl fmt::Display for FixupNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FixingUp { symbol, addend } => {
                write!(f, "Fixing up relocation {symbol}+{:x}", *addend as u64)
            }
            Self::RelocatingTo { section, addend } => {
                write!(f, "Relocating to {section}+{:x}", *addend as u64)
            }
            Self::GotLoadToLea { section, offset } => {
                write!(f, "changing mov to lea at {section}+{offset:x}")
            }
            Self::GotBranchToDirect { section, offset } => {
                write!(
                    f,
                    "changing indirect branch to direct at {section}+{offset:x}"
                )
            }
            Self::TlsGotSlot {
                symbol,
                from,
                to,
                gottpoff: true,
            } => write!(
                f,
                "Changing GOTTPOFF symbol {symbol} from {:x} to {to:x}",
                *from as u64
            ),
            Self::TlsGotSlot {
                symbol, from, to, ..
            } => write!(
                f,
                "Changing TLS GOT slot of symbol {symbol} from {:x} to {to:x}",
                *from as u64
            ),
            Self::TlsOffsetKept { symbol, offset } => {
                write!(
                    f,
                    "TLS symbol {symbol} has the same offset {offset:x} in the original"
                )
            }
            Self::Interposable { symbol } => {
                write!(
                    f,
                    "Keeping GOT reference to {symbol}: resolved at run time (the process may use another definition)"
                )
            }
            Self::FromEarlier { symbol } => {
                write!(
                    f,
                    "Keeping {symbol} undefined: an earlier patch defines it (resolved at run time)"
                )
            }
        }
    }
}

/// Rewrites the relocations of `patch` (the stripped patched binary) so that the runtime can
/// apply them against the original binary `orig`:
///
/// - x86_64 `R_X86_64_PLT32` becomes `R_X86_64_PC32` (imports go through the patch's jump
///   table, not a PLT);
/// - a relocation against a local non-section symbol is redone against its section's
///   `STT_SECTION` symbol, with the symbol's offset in the section added to the addend;
/// - x86_64 GOT-relative references (`GOTPCREL`, `GOTPCRELX`, `REX_GOTPCRELX`) to symbols the
///   patch or the original defines become direct: `mov` → `lea`, `call *` → `addr32 call`,
///   `jmp *` → `jmp; nop`, relocation type `PC32` (the patch always sits within the reach of a
///   32-bit displacement of the original);
/// - a GOT-relative reference of a shared library to a symbol it exports with default
///   visibility (which another object may interpose: a program's copy of the library's
///   variable) stays GOT-relative, against a new undefined symbol of that name, so the runtime
///   resolves it as the dynamic linker did;
/// - initial-exec TLS (x86_64 `GOTTPOFF`, aarch64 `TLSIE_*`): the addend becomes the link-time
///   address, in `orig`, of the GOT slot the dynamic linker fills with the variable's
///   thread-pointer offset (the symbol is kept). The runtime adds `orig`'s load bias; on x86_64
///   the displacement written is `addend + load_bias - 4 - P`, on aarch64 the slot is
///   `addend + load_bias` for both the page and the low-12-bit relocation;
/// - local-exec TLS (x86_64 `TPOFF32`, aarch64 `TLSLE_ADD_TPREL_*`), as the linker leaves it in
///   an executable: the variable's offset is checked to be the original's and the relocation
///   is removed, the linked instruction already holding the right value (a runtime need not
///   know `NONE` relocations, so none is left behind);
/// - a placeholder of `kpatch_gensrc --earlier` (a symbol defined in [`EARLIER_STUBS`], which
///   an earlier patch defines) becomes an undefined symbol, and its name is listed in
///   [`KPATCH_DEPENDS`]: the runtime resolves it in that earlier patch.
///
/// Before any change, checks the layout contract ([`crate::check_layout`]).
pub fn rel_fixup(orig: &Elf, patch: &mut Elf) -> Result<Vec<FixupNote>, BuildError> {
    let arch = kpatch_arch::for_machine(patch.machine.0)
        .ok_or(BuildError::UnsupportedMachine(patch.machine.0))?;
    if orig.machine != patch.machine {
        return Err(BuildError::MachineMismatch {
            orig: orig.machine.0,
            patch: patch.machine.0,
        });
    }
    if patch.e_type == ET_REL {
        return Err(BuildError::Input(
            "the patched binary is already ET_REL: --rel-fixup comes before --undo-link".into(),
        ));
    }
    check_layout(orig, patch)?;
    let symtab = patch.symtab_index().ok_or(BuildError::MissingSection {
        what: "the patched binary",
        section: ".symtab".into(),
        hint: "",
    })?;
    let syms = patch.symbols(symtab)?;
    let orig_syms = match orig.symtab_index() {
        Some(i) => orig.symbols(i)?,
        None => Vec::new(),
    };
    let section_symbols: HashMap<SymbolSection, usize> = syms
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sym_type == STT_SECTION && s.is_defined_in_section())
        .map(|(i, s)| (s.shndx, i))
        .rev()
        .collect();
    let kpatch: HashSet<usize> = patch
        .sections
        .iter()
        .enumerate()
        .filter(|(_, s)| is_kpatch_section(&s.name))
        .map(|(i, _)| i)
        .collect();
    let interposable = interposable_symbols(orig)?;
    let stubs = patch
        .sections
        .iter()
        .position(|s| s.name == EARLIER_STUBS)
        .map(|i| SymbolSection(i as u16));
    let rela_sections: Vec<usize> = patch
        .sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sh_type == SHT_RELA && s.link as usize == symtab)
        .map(|(i, _)| i)
        .collect();

    let mut notes = Vec::new();
    let mut changes = Vec::new();
    let mut imports = Imports {
        first: syms.len(),
        symbols: Vec::new(),
    };
    let mut from_earlier: Vec<usize> = Vec::new();
    for ri in rela_sections {
        let target = patch.section_at(ri)?.info as usize;
        let target_section = patch.section_at(target)?;
        let mut relas = patch.relas(ri)?;
        let mut cx = Cx {
            arch,
            orig,
            patch,
            syms: &syms,
            orig_syms: &orig_syms,
            section_symbols: &section_symbols,
            kpatch: &kpatch,
            rela_section: patch.describe_section(ri),
            target_name: target_section.name.clone(),
            target_addr: target_section.addr,
            bytes: target_section.data.clone(),
            notes: &mut notes,
            interposable: &interposable,
            imports: &mut imports,
            stubs,
            from_earlier: &mut from_earlier,
        };
        for (index, r) in relas.iter_mut().enumerate() {
            cx.fix(index, r)?;
        }
        relas.retain(|r| !(r.r_type == R_NONE && r.sym == 0));
        changes.push((ri, relas, target, cx.bytes));
    }
    // Applied only once every relocation was fixed, so a refusal leaves `patch` untouched.
    if !imports.symbols.is_empty() || !from_earlier.is_empty() {
        let mut all = syms.clone();
        all.extend(imports.symbols);
        let mut depends = match patch.section(KPATCH_DEPENDS) {
            Some(s) => Depends::parse(&s.data),
            None => Depends::default(),
        };
        for &i in &from_earlier {
            depends.add_symbol(syms[i].unversioned_name());
            all[i] = Symbol {
                value: 0,
                size: 0,
                shndx: SHN_UNDEF,
                ..syms[i].clone()
            };
        }
        patch.set_symbols(symtab, &all)?;
        if !depends.is_empty() {
            crate::depends::set(patch, &depends);
        }
    }
    for (ri, relas, target, bytes) in changes {
        patch.set_relas(ri, &relas)?;
        let target_section = patch.section_at_mut(target)?;
        if target_section.has_file_data() {
            target_section.data = bytes;
        }
    }
    Ok(notes)
}

struct Cx<'a> {
    arch: &'static dyn Arch,
    orig: &'a Elf,
    patch: &'a Elf,
    syms: &'a [Symbol],
    orig_syms: &'a [Symbol],
    section_symbols: &'a HashMap<SymbolSection, usize>,
    kpatch: &'a HashSet<usize>,
    rela_section: String,
    target_name: String,
    target_addr: u64,
    bytes: Vec<u8>,
    notes: &'a mut Vec<FixupNote>,
    interposable: &'a HashSet<String>,
    imports: &'a mut Imports,
    /// The section of `kpatch_gensrc --earlier`'s placeholders, if the patch has one.
    stubs: Option<SymbolSection>,
    /// The placeholders referred to, by symbol index.
    from_earlier: &'a mut Vec<usize>,
}

/// Undefined symbols added to the patch's `.symtab` (after its last symbol, so no index
/// changes) for references the runtime must resolve.
struct Imports {
    first: usize,
    symbols: Vec<Symbol>,
}

impl Imports {
    /// The index of the undefined symbol `name`, added if needed.
    fn index_of(&mut self, like: &Symbol) -> usize {
        if let Some(i) = self.symbols.iter().position(|s| s.name == like.name) {
            return self.first + i;
        }
        self.symbols.push(Symbol {
            name: like.name.clone(),
            name_offset: 0,
            value: 0,
            size: 0,
            sym_type: like.sym_type,
            bind: STB_GLOBAL,
            other: SymbolOther::from(STV_DEFAULT),
            shndx: SHN_UNDEF,
        });
        self.first + self.symbols.len() - 1
    }
}

/// Names of the symbols a shared library `orig` exports with default visibility: another
/// object can interpose them, so the library itself reaches them through its GOT. Empty for
/// an executable (one with a program interpreter).
fn interposable_symbols(orig: &Elf) -> Result<HashSet<String>, BuildError> {
    if orig.e_type != ET_DYN || orig.section(".interp").is_some() {
        return Ok(HashSet::new());
    }
    let Some(dynsym) = orig.dynsym_index() else {
        return Ok(HashSet::new());
    };
    Ok(orig
        .symbols(dynsym)?
        .into_iter()
        .filter(|s| {
            s.is_defined_in_section()
                && matches!(s.bind, STB_GLOBAL | STB_WEAK)
                && s.visibility() == STV_DEFAULT
                && matches!(s.sym_type, STT_OBJECT | STT_FUNC | STT_NOTYPE)
        })
        .map(|s| s.unversioned_name().to_string())
        .collect())
}

/// Whether `r_type` asks for the address of a GOT slot holding the symbol's address.
fn is_got_reference(arch: &dyn Arch, r_type: RelocationType) -> bool {
    arch.reloc_need(r_type.0) == Ok(RelocNeed::GotSlot)
}

impl Cx<'_> {
    fn fail(&self, index: usize, symbol: &str, reason: impl Into<String>) -> BuildError {
        BuildError::Relocation {
            section: self.rela_section.clone(),
            index,
            symbol: symbol.to_string(),
            reason: reason.into(),
        }
    }

    fn fix(&mut self, index: usize, r: &mut Rela) -> Result<(), BuildError> {
        if r.sym == 0 {
            return Ok(());
        }
        let sym = self.syms.get(r.sym as usize).ok_or_else(|| {
            self.fail(
                index,
                &format!("#{}", r.sym),
                "symbol index past the end of .symtab",
            )
        })?;
        if sym.sym_type == STT_TLS {
            return self.fix_tls(index, r, sym);
        }
        if self.stubs.is_some_and(|s| s == sym.shndx) && sym.is_defined_in_section() {
            if sym.bind == STB_LOCAL {
                return Err(self.fail(
                    index,
                    &sym.name,
                    "a static placeholder of kpatch_gensrc --earlier: an earlier patch's static symbols cannot be found at run time",
                ));
            }
            if !self.from_earlier.contains(&(r.sym as usize)) {
                self.from_earlier.push(r.sym as usize);
                self.notes.push(FixupNote::FromEarlier {
                    symbol: sym.name.clone(),
                });
            }
            r.r_type = RelocationType(self.arch.without_plt(r.r_type.0));
            return Ok(());
        }
        let in_patch =
            self.kpatch.contains(&usize::from(sym.shndx.0)) && sym.is_defined_in_section();
        if !in_patch
            && sym.is_defined_in_section()
            && sym.bind != STB_LOCAL
            && sym.visibility() == STV_DEFAULT
            && is_got_reference(self.arch, r.r_type)
            && self.interposable.contains(sym.unversioned_name())
        {
            r.sym = self.imports.index_of(sym) as u32;
            self.notes.push(FixupNote::Interposable {
                symbol: sym.name.clone(),
            });
            return Ok(());
        }
        if sym.sym_type != STT_SECTION && !in_patch {
            if !matches!(sym.sym_type, STT_NOTYPE | STT_FUNC | STT_OBJECT) && sym.bind != STB_LOCAL
            {
                return Err(self.fail(
                    index,
                    &sym.name,
                    format!("unsupported symbol type {} (only functions, objects and untyped symbols can be referenced)", sym.sym_type.0),
                ));
            }
            self.notes.push(FixupNote::FixingUp {
                symbol: sym.name.clone(),
                addend: r.addend,
            });
            if sym.bind == STB_LOCAL && sym.is_defined_in_section() {
                self.redo_against_section(r, sym);
            }
        }
        if sym.shndx != SHN_UNDEF && sym.shndx != SHN_ABS {
            self.direct_got_reference(index, r, sym)?;
        }
        r.r_type = RelocationType(self.arch.without_plt(r.r_type.0));
        Ok(())
    }

    /// Redoes `r` against the section symbol of `sym`'s section, when the symbol table has one
    /// (otherwise the local symbol itself stays, which the runtime resolves just as well).
    fn redo_against_section(&mut self, r: &mut Rela, sym: &Symbol) {
        let Some(&si) = self.section_symbols.get(&sym.shndx) else {
            return;
        };
        let Some(section_sym) = self.syms.get(si) else {
            return;
        };
        r.sym = si as u32;
        r.addend = r
            .addend
            .wrapping_add(sym.value.wrapping_sub(section_sym.value) as i64);
        let section = self
            .patch
            .sections
            .get(usize::from(sym.shndx.0))
            .map(|s| s.name.clone())
            .unwrap_or_default();
        self.notes.push(FixupNote::RelocatingTo {
            section,
            addend: r.addend,
        });
    }

    /// A GOT-relative reference to a symbol with a known address becomes a direct
    /// PC-relative one, the architecture rewriting the instruction in place.
    fn direct_got_reference(
        &mut self,
        index: usize,
        r: &mut Rela,
        sym: &Symbol,
    ) -> Result<(), BuildError> {
        let field = r.offset.wrapping_sub(self.target_addr);
        let direct = match self
            .arch
            .make_got_reference_direct(r.r_type.0, &mut self.bytes, field)
        {
            Ok(Some(direct)) => direct,
            Ok(None) => return Ok(()),
            Err(GotRewriteError::OutOfBounds) => {
                return Err(self.fail(
                    index,
                    &sym.name,
                    format!(
                        "offset {:#x} is not inside the bytes of {}",
                        r.offset, self.target_name
                    ),
                ))
            }
            Err(GotRewriteError::Unsupported {
                insn_start,
                bytes: [op, modrm],
            }) => {
                return Err(self.fail(
                    index,
                    &sym.name,
                    format!(
                        "GOT-relative reference at {}+{insn_start:#x} by an instruction \
                         ({op:02x} {modrm:02x}) that cannot be made direct; only mov, lea, call \
                         and jmp can",
                        self.target_name
                    ),
                ))
            }
        };
        let section = self.target_name.clone();
        let offset = direct.insn_start as u64;
        match direct.insn {
            GotInstruction::Load => self.notes.push(FixupNote::GotLoadToLea { section, offset }),
            GotInstruction::Address => {}
            GotInstruction::Branch => self
                .notes
                .push(FixupNote::GotBranchToDirect { section, offset }),
        }
        r.offset = r.offset.wrapping_add_signed(direct.field_moved);
        r.r_type = RelocationType(direct.r_type);
        Ok(())
    }

    fn fix_tls(&mut self, index: usize, r: &mut Rela, sym: &Symbol) -> Result<(), BuildError> {
        let model = self.arch.static_tls(r.r_type.0);
        let (slot_reloc, slot_reloc_name) = self.arch.tls_offset_slot_reloc();
        let orig_offset = self
            .orig_syms
            .iter()
            .find(|o| o.sym_type == STT_TLS && o.is_defined_in_section() && o.name == sym.name)
            .map(|o| o.value);
        if model == Some(StaticTls::InitialExec) {
            let offset = if sym.is_defined_in_section() {
                Some(orig_offset.unwrap_or(sym.value))
            } else {
                None
            };
            let slot_reloc = (RelocationType(slot_reloc), slot_reloc_name);
            let slot = tls::got_slot(self.orig, &sym.name, offset, slot_reloc)
                .map_err(|e| self.fail(index, &sym.name, e))?;
            self.notes.push(FixupNote::TlsGotSlot {
                symbol: sym.unversioned_name().to_string(),
                from: r.addend,
                to: slot,
                gottpoff: self.arch.reloc_name(r.r_type.0) == "R_X86_64_GOTTPOFF",
            });
            r.addend = slot as i64;
            return Ok(());
        }
        if model == Some(StaticTls::LocalExec) {
            match orig_offset {
                Some(o) if o == sym.value => {
                    self.notes.push(FixupNote::TlsOffsetKept {
                        symbol: sym.name.clone(),
                        offset: o,
                    });
                    r.r_type = R_NONE;
                    r.sym = 0;
                    Ok(())
                }
                Some(o) => Err(self.fail(
                    index,
                    &sym.name,
                    format!("the variable is at TLS offset {:#x} in the patched build but {o:#x} in the original", sym.value),
                )),
                None => Err(self.fail(index, &sym.name, "the original binary defines no such TLS variable")),
            }
        } else {
            let name = self.arch.reloc_name(r.r_type.0);
            Err(self.fail(
                index,
                &sym.name,
                format!(
                    "TLS relocation type {} ({name}) is not supported: only the initial-exec and \
                     local-exec models are (build with -ftls-model=initial-exec)",
                    r.r_type.0
                ),
            ))
        }
    }
}
