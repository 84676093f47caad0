//! End to end: the original assembler linked into an executable, the combined output linked
//! with `-Wl,-q` as the patch build does; every symbol the two share outside the patch
//! sections must sit at the same offset in a section of the same name and size, which is
//! what `kpatch_strip --undo-link` relies on to make the patch refer to the original.
//!
//! Absolute addresses are *not* the same in general: the linker puts `.kpatch.text` right
//! after `.text` (moving `.fini`, `.rodata`, ...) and `.kpatch.data` before `.bss`, and a
//! patch calling a new library function grows `.plt` in front of `.text`.

mod common;

use std::collections::HashMap;

use common::*;
use kpatch_asm::{gensrc, AsmFile, Dialect, DiffOptions};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};

const ORIG: &str = r#"#include <stdio.h>
int counter = 5;
static int hits;
static const char *const names[] = {"zero", "one", "two"};
__attribute__((noinline)) void print_hello(int i)
{
    printf("Hello world! %d %s\n", counter + hits, names[i % 3]);
}
__attribute__((noinline)) int square(int x)
{
    switch (x) {
    case 0: return 3; case 1: return hits; case 2: return counter; case 3: return 7;
    case 4: return x * 3; case 5: return 11; case 6: return x + hits; default: return x * x;
    }
}
int main(int argc, char **argv)
{
    (void)argv;
    print_hello(argc);
    hits++;
    return square(argc) > 100;
}
"#;

/// Sections the linker writes itself (dynamic linking, unwind tables): they may grow
/// with the patch, and the patch never refers to them.
const LINKER_SECTIONS: &[&str] = &[
    ".eh_frame",
    ".eh_frame_hdr",
    ".rela.dyn",
    ".rela.plt",
    ".plt",
    ".plt.got",
    ".plt.sec",
    ".got",
    ".got.plt",
    ".dynsym",
    ".dynstr",
    ".gnu.version",
    ".gnu.version_r",
    ".gnu.hash",
    ".hash",
    ".dynamic",
    ".symtab",
    ".strtab",
    ".shstrtab",
];

/// Symbols the linker script defines at section ends, aligned by absolute address.
const LINKER_SYMBOLS: &[&str] = &[
    "_end",
    "_edata",
    "__bss_start",
    "_etext",
    "etext",
    "edata",
    "end",
];

/// (section name, offset in section) of every uniquely named symbol defined in a section
/// that is neither a patch section nor written by the linker.
fn placed_symbols(exe: &[u8]) -> HashMap<String, (String, u64)> {
    let f = object::File::parse(exe).expect("parse executable");
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut out = HashMap::new();
    for sym in f.symbols() {
        let (Ok(name), SymbolSection::Section(si)) = (sym.name(), sym.section()) else {
            continue;
        };
        if name.is_empty()
            || matches!(sym.kind(), SymbolKind::Section | SymbolKind::File)
            || LINKER_SYMBOLS.contains(&name)
        {
            continue;
        }
        let sec = f.section_by_index(si).expect("section");
        let sname = sec.name().expect("section name").to_string();
        // A symbol in an empty section (`__TMC_END__`) is at a boundary the linker may
        // attribute to either neighbour.
        if sname.contains("kpatch") || LINKER_SECTIONS.contains(&sname.as_str()) || sec.size() == 0
        {
            continue;
        }
        *count.entry(name.to_string()).or_default() += 1;
        out.insert(name.to_string(), (sname, sym.address() - sec.address()));
    }
    out.retain(|n, _| count.get(n) == Some(&1));
    out
}

fn section_sizes(exe: &[u8]) -> HashMap<String, u64> {
    let f = object::File::parse(exe).expect("parse executable");
    f.sections()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.size())))
        .filter(|(n, _)| {
            !n.contains("kpatch")
                && !n.starts_with(".rela.")
                && !LINKER_SECTIONS.contains(&n.as_str())
        })
        .collect()
}

fn link(scratch: &Scratch, name: &str, asm: &str, extra: &[&str]) -> Vec<u8> {
    let s = scratch.write(&format!("{name}.s"), asm);
    let exe = scratch.path(name);
    let out = std::process::Command::new("gcc")
        .arg(&s)
        .arg("-o")
        .arg(&exe)
        .args(extra)
        .output()
        .expect("gcc must be installed to run these tests");
    assert!(
        out.status.success(),
        "link {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&exe).expect("read executable")
}

#[test]
fn linked_patch_keeps_the_original_layout_section_by_section() {
    // The patch adds a string, a call to a library function the original never calls
    // (puts: a new PLT entry), a new variable and a new function.
    let patched = ORIG
        .replace("static int hits;", "static int hits;\nint added = 42;")
        .replace(
            "printf(\"Hello world! %d %s\\n\", counter + hits, names[i % 3]);",
            "printf(\"Hello world being patched! %d %s %d\\n\", counter + hits, names[i % 3], added++);\n    puts(\"and one more line\");",
        )
        .replace("case 3: return 7;", "case 3: return twice(7);")
        .replace(
            "__attribute__((noinline)) int square",
            "__attribute__((noinline)) int twice(int x) { return 2 * x; }\n__attribute__((noinline)) int square",
        );
    for flags in FLAG_SETS {
        let s = Scratch::new();
        let orig_s = s.compile("orig", ORIG, flags);
        let patched_s = s.compile("patched", &patched, flags);
        let o = AsmFile::parse("orig.s", &orig_s, Dialect::x86_64()).expect("parse");
        let p = AsmFile::parse("patched.s", &patched_s, Dialect::x86_64()).expect("parse");
        let (out_s, diff) = gensrc(&o, &p, &DiffOptions::default()).expect("differ");
        let mut names: Vec<_> = diff.functions.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert!(
            names.contains(&"print_hello") && names.contains(&"twice"),
            "[{flags}] {names:?}"
        );

        let orig_exe = link(&s, "orig_exe", &orig_s, &[]);
        let patched_exe = link(&s, "patched_exe", &out_s, &["-Wl,-q"]);

        let (a, b) = (placed_symbols(&orig_exe), placed_symbols(&patched_exe));
        for (name, place) in &b {
            if let Some(orig_place) = a.get(name) {
                assert_eq!(orig_place, place, "[{flags}] {name}: (section, offset)");
            }
        }
        for must in ["counter", "hits", "print_hello", "square", "main", "names"] {
            assert!(
                a.contains_key(must) && b.contains_key(must),
                "[{flags}] {must} placed"
            );
        }
        let (sa, sb) = (section_sizes(&orig_exe), section_sizes(&patched_exe));
        for (name, size) in &sa {
            let other = sb.get(name).copied();
            if name == ".bss" {
                // The linker script pads the end of .bss to an absolute 8-byte boundary.
                assert!(
                    other.is_some_and(|o| o.abs_diff(*size) < 8),
                    "[{flags}] size of {name}"
                );
            } else {
                assert_eq!(other, Some(*size), "[{flags}] size of {name}");
            }
        }
        // The patch sections and their relocations survived the link.
        let f = object::File::parse(&*patched_exe).expect("parse");
        for sec in [
            ".kpatch.text",
            ".kpatch.data",
            ".kpatch.info",
            ".kpatch.strtab",
            ".rela.kpatch.info",
            ".rela.kpatch.text",
        ] {
            assert!(
                f.section_by_name(sec).is_some(),
                "[{flags}] {sec} in the linked patch"
            );
        }
    }
}

const DRIVER: &str = r#"#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int counter = 5;
static int hits;
static const char *const names[] = {"zero", "one", "two"};
__attribute__((noinline)) int compute(int i)
{
    hits++;
    if (__builtin_expect(i < 0, 0)) {
        printf("negative %d\n", i);
        counter++;
        return -1;
    }
    switch (i) {
    case 0: puts("case zero"); break;
    case 1: printf("case one %d\n", hits); break;
    case 2: return 22;
    case 3: printf("case three %s\n", names[hits % 3]); break;
    case 4: return counter * 4;
    case 5: puts("case five"); return 5;
    case 6: return hits + 6;
    default: break;
    }
    printf("%s %d %.2f\n", names[i % 3], counter + hits, i * 1.5);
    return i * 2;
}
int main(int argc, char **argv)
{
    int (*fn)(int) = compute;
    if (argc > 1) {
        fn = (int (*)(int))dlsym(RTLD_DEFAULT, argv[1]);
        if (!fn) {
            puts("no such function");
            return 99;
        }
    }
    int total = 0;
    for (int i = -1; i < 9; i++)
        total += fn(i);
    printf("total %d counter %d hits %d\n", total, counter, hits);
    return 0;
}
"#;

fn run_exe(path: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .expect("run the test program");
    assert!(
        out.status.success(),
        "{} {args:?}: {:?}",
        path.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The copy of a changed function, called in the linked patch build, behaves exactly like
/// the function built from the patched source: literals, jump table, cold part, a new
/// variable and a new function all reached from the copy.
#[test]
fn copied_function_runs_like_the_patched_build() {
    let patched = DRIVER
        .replace("static int hits;", "static int hits;\nint added = 100;")
        .replace("negative %d\\n", "NEGATIVE %d (patched)\\n")
        .replace("case 2: return 22;", "case 2: return twice(11) + added++;")
        .replace("case five", "case five, patched")
        .replace("i * 1.5", "i * 2.25")
        .replace(
            "__attribute__((noinline)) int compute",
            "__attribute__((noinline)) int twice(int x) { return 2 * x + 1; }\n__attribute__((noinline)) int compute",
        );
    for flags in FLAG_SETS {
        let s = Scratch::new();
        let orig_s = s.compile("orig", DRIVER, flags);
        let patched_s = s.compile("patched", &patched, flags);
        let o = AsmFile::parse("orig.s", &orig_s, Dialect::x86_64()).expect("parse");
        let p = AsmFile::parse("patched.s", &patched_s, Dialect::x86_64()).expect("parse");
        let (out_s, diff) = gensrc(&o, &p, &DiffOptions::default()).expect("differ");
        let mut names: Vec<_> = diff.functions.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["compute", "twice"], "[{flags}]");

        link(&s, "reference", &patched_s, &[]);
        link(&s, "patch_build", &out_s, &["-Wl,-q", "-rdynamic"]);
        let expected = run_exe(&s.path("reference"), &[]);
        assert!(
            expected.contains("case five, patched"),
            "[{flags}] {expected}"
        );
        assert_eq!(
            run_exe(&s.path("patch_build"), &["compute.kpatch"]),
            expected,
            "[{flags}]"
        );
        // Without the copy, the patch build still behaves like the original.
        link(&s, "original", &orig_s, &[]);
        assert_eq!(
            run_exe(&s.path("patch_build"), &[]),
            run_exe(&s.path("original"), &[]),
            "[{flags}]"
        );
    }
}
