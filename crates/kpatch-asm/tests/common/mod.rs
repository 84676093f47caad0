//! Helpers for tests that compile C with the system gcc, run the differ and inspect the
//! objects with the `object` crate.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kpatch_asm::{gensrc, AsmError, AsmFile, Dialect, Diff, DiffOptions};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolSection};

/// Flag sets every scenario is built with.
pub const FLAG_SETS: &[&str] = &["-O0", "-O0 -g", "-O2", "-O2 -g", "-O2 -fPIC"];

/// A scratch directory with the C sources of one scenario.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a scratch file");
        p
    }

    /// `gcc -S FLAGS` of `src` (a C source text) into `name.s`; returns the assembler text.
    pub fn compile(&self, name: &str, src: &str, flags: &str) -> String {
        self.compile_with(&HOST, name, src, flags)
    }

    /// `CC -S FLAGS` of `src` with the compiler of `tc`.
    pub fn compile_with(&self, tc: &Toolchain, name: &str, src: &str, flags: &str) -> String {
        let c = self.write(&format!("{name}.c"), src);
        let s = self.path(&format!("{name}.s"));
        run_gcc(tc.cc, &["-S"], flags, &c, &s);
        std::fs::read_to_string(&s).expect("read gcc output")
    }

    /// `gcc -c` of assembler text into `name.o`; returns the object's bytes.
    pub fn assemble(&self, name: &str, asm: &str) -> Vec<u8> {
        self.assemble_with(&HOST, name, asm)
    }

    /// `CC -c` of assembler text with the compiler of `tc`.
    pub fn assemble_with(&self, tc: &Toolchain, name: &str, asm: &str) -> Vec<u8> {
        let s = self.write(&format!("{name}.s"), asm);
        let o = self.path(&format!("{name}.o"));
        run_gcc(tc.cc, &["-c"], "", &s, &o);
        std::fs::read(&o).expect("read object")
    }
}

/// A compiler and the dialect it writes.
pub struct Toolchain {
    pub cc: &'static str,
    pub arch: kpatch_asm::AsmArch,
}

/// The machine's gcc (x86_64).
pub const HOST: Toolchain = Toolchain {
    cc: "gcc",
    arch: kpatch_asm::AsmArch::X86_64,
};

/// The aarch64 cross compiler (Debian's gcc-aarch64-linux-gnu).
pub const AARCH64: Toolchain = Toolchain {
    cc: "aarch64-linux-gnu-gcc",
    arch: kpatch_asm::AsmArch::Aarch64,
};

/// Runs a gcc, panicking with its messages when it fails.
pub fn run_gcc(cc: &str, mode: &[&str], flags: &str, input: &Path, output: &Path) {
    let out = Command::new(cc)
        .args(mode)
        .args(flags.split_whitespace())
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{cc} must be installed to run these tests: {e}"));
    assert!(
        out.status.success(),
        "{cc} {mode:?} {flags} {} failed:\n{}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The result of one differ run on a scenario.
pub struct Run {
    pub orig_s: String,
    pub patched_s: String,
    pub out_s: String,
    pub diff: Diff,
    pub orig_o: Vec<u8>,
    pub out_o: Vec<u8>,
}

/// Compiles both sources with `flags`, runs the differ, assembles the original and the
/// output. `Err` is the differ's error.
pub fn run_scenario(orig: &str, patched: &str, flags: &str) -> Result<Run, AsmError> {
    run_scenario_with(orig, patched, flags, &DiffOptions::default())
}

pub fn run_scenario_with(
    orig: &str,
    patched: &str,
    flags: &str,
    opts: &DiffOptions,
) -> Result<Run, AsmError> {
    run_scenario_on(&HOST, orig, patched, flags, opts)
}

/// [`run_scenario_with`] with the compiler of `tc`.
pub fn run_scenario_on(
    tc: &Toolchain,
    orig: &str,
    patched: &str,
    flags: &str,
    opts: &DiffOptions,
) -> Result<Run, AsmError> {
    let s = Scratch::new();
    let orig_s = s.compile_with(tc, "orig", orig, flags);
    let patched_s = s.compile_with(tc, "patched", patched, flags);
    let o = AsmFile::parse("orig.s", &orig_s, Dialect::for_arch(tc.arch))?;
    let p = AsmFile::parse("patched.s", &patched_s, Dialect::for_arch(tc.arch))?;
    let (out_s, diff) = gensrc(&o, &p, opts)?;
    let orig_o = s.assemble_with(tc, "orig_asm", &orig_s);
    let out_o = s.assemble_with(tc, "out", &out_s);
    Ok(Run {
        orig_s,
        patched_s,
        out_s,
        diff,
        orig_o,
        out_o,
    })
}

fn is_kpatch(name: &str) -> bool {
    name.starts_with(".kpatch") || name.starts_with(".rela.kpatch")
}

/// A relocation with its target spelled by name: a symbol's name, or for a section symbol
/// the section's name (addends then carry the offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedReloc {
    pub offset: u64,
    pub r_type: u32,
    pub target: String,
    pub addend: i64,
}

pub fn named_relocs(file: &object::File<'_>, sec: &object::Section<'_, '_>) -> Vec<NamedReloc> {
    let mut out = Vec::new();
    for (offset, r) in sec.relocations() {
        let r_type = match r.flags() {
            object::RelocationFlags::Elf { r_type } => r_type.0,
            _ => 0,
        };
        let target = match r.target() {
            RelocationTarget::Symbol(i) => match file.symbol_by_index(i) {
                Ok(sym) if sym.kind() == object::SymbolKind::Section => match sym.section() {
                    SymbolSection::Section(si) => file
                        .section_by_index(si)
                        .and_then(|s| s.name().map(str::to_string))
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                Ok(sym) => sym.name().unwrap_or("").to_string(),
                Err(_) => String::new(),
            },
            _ => String::new(),
        };
        out.push(NamedReloc {
            offset,
            r_type,
            target,
            addend: r.addend(),
        });
    }
    out
}

/// The layout contract: every section of the original object has the same bytes (or, for
/// `.bss`-like sections, size) and the same relocations in the output object; `.eh_frame`
/// may only grow at its end (unwind entries of the copies); every other section of the
/// output is a `.kpatch` one.
pub fn assert_layout_preserved(orig: &[u8], out: &[u8], what: &str) {
    let a = object::File::parse(orig).expect("parse original object");
    let b = object::File::parse(out).expect("parse output object");
    for sa in a.sections() {
        let name = sa.name().expect("section name");
        if name.is_empty() || sa.kind() == SectionKind::Metadata {
            continue;
        }
        let sb = b
            .section_by_name(name)
            .unwrap_or_else(|| panic!("{what}: section {name} missing from the output"));
        let da = sa.uncompressed_data().expect("section data");
        let db = sb.uncompressed_data().expect("section data");
        let ra = named_relocs(&a, &sa);
        let rb = named_relocs(&b, &sb);
        if name == ".eh_frame" {
            // The copies' unwind entries come after the original's; only the padding of
            // the original's last entry may change (gas pads the section's end).
            let (ea, eb) = (eh_frame_entries(&da), eh_frame_entries(&db));
            assert!(eb.len() >= ea.len(), "{what}: {name} lost entries");
            for (x, y) in ea.iter().zip(&eb) {
                assert_eq!(
                    trim_padding(x),
                    trim_padding(y),
                    "{what}: {name} entry differs"
                );
            }
            assert_eq!(
                ra[..],
                rb[..ra.len().min(rb.len())],
                "{what}: {name} relocations"
            );
            continue;
        }
        assert_eq!(sa.size(), sb.size(), "{what}: size of {name}");
        assert_eq!(sa.align(), sb.align(), "{what}: alignment of {name}");
        assert!(da == db, "{what}: bytes of {name} differ");
        assert_eq!(ra, rb, "{what}: relocations of {name}");
    }
    for sb in b.sections() {
        let name = sb.name().expect("section name");
        if a.section_by_name(name).is_none() {
            assert!(
                is_kpatch(name) || name == ".rela.eh_frame" || sb.kind() == SectionKind::Metadata,
                "{what}: unexpected new section {name}"
            );
        }
    }
    // Symbols of the original sit at the same section offsets (names used more than
    // once, like aarch64's `$x`/`$d` mapping symbols, are left out).
    let mut count: HashMap<String, usize> = HashMap::new();
    for sym in a.symbols().chain(b.symbols()) {
        *count
            .entry(sym.name().unwrap_or("").to_string())
            .or_default() += 1;
    }
    for sym in a.symbols() {
        let (Ok(name), SymbolSection::Section(si)) = (sym.name(), sym.section()) else {
            continue;
        };
        if name.is_empty()
            || sym.kind() == object::SymbolKind::Section
            || count.get(name) != Some(&2)
        {
            continue;
        }
        let sec = a
            .section_by_index(si)
            .ok()
            .and_then(|s| s.name().ok().map(str::to_string));
        let Some(other) = b.symbol_by_name(name) else {
            panic!("{what}: symbol {name} missing from the output");
        };
        let osec = match other.section() {
            SymbolSection::Section(i) => b
                .section_by_index(i)
                .ok()
                .and_then(|s| s.name().ok().map(str::to_string)),
            _ => None,
        };
        assert_eq!(sec, osec, "{what}: section of {name}");
        assert_eq!(sym.address(), other.address(), "{what}: offset of {name}");
        assert_eq!(sym.size(), other.size(), "{what}: size of {name}");
    }
}

/// The CIE and FDE records of an `.eh_frame` section, each without its length field.
pub fn eh_frame_entries(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        let len = u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || i + 4 + len > data.len() {
            break;
        }
        out.push(&data[i + 4..i + 4 + len]);
        i += 4 + len;
    }
    out
}

/// An `.eh_frame` entry without trailing `DW_CFA_nop` padding.
fn trim_padding(e: &[u8]) -> &[u8] {
    let end = e.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &e[..end]
}

/// One decoded `.kpatch.info` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Relocation target of `daddr` (None when 0: a new function).
    pub daddr: Option<(String, i64)>,
    pub saddr: (String, i64),
    pub dlen: u32,
    pub slen: u32,
    /// The string `symstr` points at.
    pub name: String,
}

/// Where a symbol is, as a relocation against it would say (section + offset for a local).
pub fn reloc_spelling(file: &object::File<'_>, name: &str) -> (String, i64) {
    let sym = file
        .symbol_by_name(name)
        .unwrap_or_else(|| panic!("no symbol {name}"));
    if sym.is_global() {
        (name.to_string(), 0)
    } else {
        let SymbolSection::Section(si) = sym.section() else {
            panic!("{name} is not in a section")
        };
        let sec = file
            .section_by_index(si)
            .expect("section")
            .name()
            .expect("name")
            .to_string();
        (sec, sym.address() as i64)
    }
}

/// Decodes `.kpatch.info` (48-byte records) and checks its relocations' shape.
pub fn kpatch_records(out: &[u8]) -> Vec<Record> {
    let f = object::File::parse(out).expect("parse output object");
    let Some(info) = f.section_by_name(".kpatch.info") else {
        return Vec::new();
    };
    let data = info.data().expect("info data");
    assert_eq!(
        data.len() % 48,
        0,
        ".kpatch.info is a whole number of records"
    );
    let relocs: HashMap<u64, NamedReloc> = named_relocs(&f, &info)
        .into_iter()
        .map(|r| (r.offset, r))
        .collect();
    let strtab = f.section_by_name(".kpatch.strtab").expect(".kpatch.strtab");
    let strs = strtab.data().expect("strtab data");
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let mut out_records = Vec::new();
    for (i, rec) in data.chunks(48).enumerate() {
        let base = (i * 48) as u64;
        assert!(
            rec[32..48].iter().all(|&b| b == 0),
            "vaddr, flags, padding are 0"
        );
        let daddr = relocs.get(&base).map(|r| (r.target.clone(), r.addend));
        if daddr.is_none() {
            assert!(
                rec[0..8].iter().all(|&b| b == 0),
                "daddr without relocation is 0"
            );
        }
        let s = relocs.get(&(base + 8)).expect("saddr relocation");
        let n = relocs.get(&(base + 24)).expect("symstr relocation");
        assert_eq!(n.target, ".kpatch.strtab");
        let start = usize::try_from(n.addend).expect("string offset");
        let end = strs[start..].iter().position(|&b| b == 0).expect("NUL") + start;
        out_records.push(Record {
            daddr,
            saddr: (s.target.clone(), s.addend),
            dlen: u32_at(i * 48 + 16),
            slen: u32_at(i * 48 + 20),
            name: String::from_utf8_lossy(&strs[start..end]).into_owned(),
        });
    }
    out_records
}

/// Checks one record per expected function: `changed` ones point at their original (with
/// its size as dlen) and at `f.kpatch`; `new` ones have no original and keep their name.
pub fn assert_records(run: &Run, changed: &[&str], new: &[&str], what: &str) {
    let recs = kpatch_records(&run.out_o);
    assert_eq!(
        recs.len(),
        changed.len() + new.len(),
        "{what}: records {recs:?}, expected changed {changed:?} new {new:?}"
    );
    let orig = object::File::parse(&*run.orig_o).expect("parse original");
    let out = object::File::parse(&*run.out_o).expect("parse output");
    for f in changed {
        let copy = format!("{f}.kpatch");
        let r = recs
            .iter()
            .find(|r| r.name == copy)
            .unwrap_or_else(|| panic!("{what}: no record for {copy} in {recs:?}"));
        assert_eq!(
            r.daddr,
            Some(reloc_spelling(&out, f)),
            "{what}: daddr of {f}"
        );
        assert_eq!(r.saddr, reloc_spelling(&out, &copy), "{what}: saddr of {f}");
        let osize = orig.symbol_by_name(f).expect("original function").size();
        assert_eq!(u64::from(r.dlen), osize, "{what}: dlen of {f}");
        let csize = out.symbol_by_name(&copy).expect("copy").size();
        assert!(
            r.slen > 0 && u64::from(r.slen) >= csize,
            "{what}: slen of {f}"
        );
        let sec = out.symbol_by_name(&copy).expect("copy").section();
        let SymbolSection::Section(si) = sec else {
            panic!("copy not in a section")
        };
        assert_eq!(
            out.section_by_index(si).expect("sec").name().expect("name"),
            ".kpatch.text"
        );
    }
    for f in new {
        let r = recs
            .iter()
            .find(|r| r.name == *f)
            .unwrap_or_else(|| panic!("{what}: no record for new {f} in {recs:?}"));
        assert_eq!(r.daddr, None, "{what}: daddr of new {f}");
        assert_eq!(r.dlen, 0);
        assert_eq!(r.saddr, reloc_spelling(&out, f), "{what}: saddr of new {f}");
    }
}

/// The section (by name) a symbol of an object is defined in.
pub fn symbol_section(obj: &[u8], name: &str) -> Option<String> {
    let f = object::File::parse(obj).ok()?;
    let s = f.symbol_by_name(name)?;
    let SymbolSection::Section(i) = s.section() else {
        return None;
    };
    f.section_by_index(i).ok()?.name().ok().map(str::to_string)
}

/// Names of the functions the diff copies, by kind.
pub fn patched_names(d: &Diff, kind: kpatch_asm::PatchKind) -> Vec<String> {
    let mut v: Vec<String> = d
        .functions
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.name.clone())
        .collect();
    v.sort();
    v
}
