//! Scenarios compiled with the system gcc at several optimisation levels: the differ's
//! verdict, the layout of the output object, and its `.kpatch.info` records.

mod common;

use common::*;
use kpatch_asm::{AsmError, PatchKind};

const BASE: &str = r#"#include <stdio.h>
#include <stdlib.h>

int counter = 5;
static int hits;

__attribute__((noinline)) void print_hello(void)
{
    printf("Hello world! %d\n", counter);
}

__attribute__((noinline)) int square(int x)
{
    return x * x + hits;
}

__attribute__((noinline)) int check(void)
{
    print_hello();
    return square(counter) > 100;
}

int main(void)
{
    return check();
}
"#;

fn patched(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "scenario edits a line of BASE");
    BASE.replace(from, to)
}

/// Runs a scenario under every flag set and checks layout and records.
fn check_all(orig: &str, patched: &str, changed: &[&str], new: &[&str]) -> Vec<(String, Run)> {
    let mut runs = Vec::new();
    for flags in FLAG_SETS {
        let run = run_scenario(orig, patched, flags)
            .unwrap_or_else(|e| panic!("{flags}: differ failed: {e}"));
        let what = format!("[{flags}]");
        let mut want_changed: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
        want_changed.sort();
        let mut want_new: Vec<String> = new.iter().map(|s| s.to_string()).collect();
        want_new.sort();
        assert_eq!(
            patched_names(&run.diff, PatchKind::Changed),
            want_changed,
            "{what}"
        );
        assert_eq!(patched_names(&run.diff, PatchKind::New), want_new, "{what}");
        assert_layout_preserved(&run.orig_o, &run.out_o, &what);
        assert_records(&run, changed, new, &what);
        runs.push((flags.to_string(), run));
    }
    runs
}

#[test]
fn unchanged_file_gives_the_original_back() {
    for flags in FLAG_SETS {
        let run = run_scenario(BASE, BASE, flags).expect("differ");
        assert!(run.diff.is_empty(), "[{flags}] {:?}", run.diff.functions);
        assert_eq!(
            run.out_s, run.orig_s,
            "[{flags}] output is the original text"
        );
        let obj = object::File::parse(&*run.out_o).expect("object");
        use object::{Object, ObjectSection};
        assert!(
            obj.sections()
                .all(|s| !s.name().unwrap_or("").contains("kpatch")),
            "[{flags}] no .kpatch sections"
        );
    }
}

#[test]
fn changed_body_with_a_new_string_literal() {
    let p = patched(
        "printf(\"Hello world! %d\\n\", counter);",
        "printf(\"Hello world being patched! %d\\n\", counter);\n    puts(\"one more line\");",
    );
    for (flags, run) in check_all(BASE, &p, &["print_hello"], &[]) {
        // The new strings are copied into .kpatch.data; .rodata is untouched.
        assert!(run.out_s.contains("being patched"), "[{flags}]");
        let lc = run
            .out_s
            .lines()
            .find(|l| l.starts_with(".LC") && l.contains(".kpatch:"))
            .unwrap_or_else(|| panic!("[{flags}] no copied literal"));
        let name = lc.trim_end_matches(':');
        assert_eq!(
            symbol_section_of_local(&run.out_s, name),
            ".kpatch.data",
            "[{flags}]"
        );
    }
}

/// The section a label of the output text is defined in, by reparsing the text.
fn symbol_section_of_local(text: &str, label: &str) -> String {
    let f =
        kpatch_asm::AsmFile::parse("out.s", text, kpatch_asm::Dialect::x86_64()).expect("reparse");
    let id = f.label(label).expect("label defined");
    let s = f.stmt(id).expect("stmt");
    f.section_of(s).name.clone()
}

#[test]
fn new_function_called_from_a_changed_one() {
    let p = patched(
        "__attribute__((noinline)) int square(int x)\n{\n    return x * x + hits;\n}",
        "__attribute__((noinline)) int helper(int x)\n{\n    return x + 42;\n}\n\n\
         __attribute__((noinline)) int square(int x)\n{\n    return helper(x * x) + hits;\n}",
    );
    for (flags, run) in check_all(BASE, &p, &["square"], &["helper"]) {
        assert_eq!(
            symbol_section(&run.out_o, "helper").as_deref(),
            Some(".kpatch.text"),
            "[{flags}]"
        );
    }
}

#[test]
fn new_global_static_and_zeroed_variables() {
    let p = patched(
        "static int hits;",
        "static int hits;\nint added_global = 7;\nstatic int added_static = 9;\nstatic int added_zero;",
    )
    .replace(
        "printf(\"Hello world! %d\\n\", counter);",
        "printf(\"Hello world! %d %d %d %d\\n\", counter, added_global, added_static++, added_zero++);",
    );
    for (flags, run) in check_all(BASE, &p, &["print_hello"], &[]) {
        let mut names: Vec<_> = run
            .diff
            .new_variables
            .iter()
            .map(|v| v.name.clone())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["added_global", "added_static", "added_zero"],
            "[{flags}]"
        );
        for v in &names {
            assert_eq!(
                symbol_section(&run.out_o, v).as_deref(),
                Some(".kpatch.data"),
                "[{flags}] {v}"
            );
        }
        let obj = object::File::parse(&*run.out_o).expect("object");
        use object::{Object, ObjectSymbol};
        let g = obj.symbol_by_name("added_global").expect("added_global");
        assert!(g.is_global(), "[{flags}] a new global stays global");
        let s = obj.symbol_by_name("added_static").expect("added_static");
        assert!(!s.is_global(), "[{flags}] a new static stays local");
        assert_eq!(s.size(), 4);
    }
}

#[test]
fn changed_initialised_variable_is_refused() {
    let p = patched("int counter = 5;", "int counter = 6;");
    for flags in FLAG_SETS {
        match run_scenario(BASE, &p, flags) {
            Err(e @ AsmError::VariableChanged { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("`counter`"), "[{flags}] {msg}");
            }
            Err(e) => panic!("[{flags}] wrong error: {e}"),
            Ok(r) => panic!("[{flags}] accepted: {:?}", r.diff.functions),
        }
    }
}

#[test]
fn shifted_literal_labels_do_not_make_a_function_changed() {
    let orig = "#include <stdio.h>\n\
        __attribute__((noinline)) void early(void) { puts(\"AAAA\"); }\n\
        __attribute__((noinline)) void late(void) { puts(\"BBBB\"); }\n\
        int main(void) { early(); late(); return 0; }\n";
    let p = orig.replace("puts(\"AAAA\");", "puts(\"AAAA\"); puts(\"CCCC\");");
    for (flags, run) in check_all(orig, &p, &["early"], &[]) {
        let label_of = |s: &str, lit: &str| -> String {
            let lines: Vec<&str> = s.lines().collect();
            let i = lines
                .iter()
                .position(|l| l.contains(lit))
                .unwrap_or_else(|| panic!("{lit} in output"));
            lines[..i]
                .iter()
                .rev()
                .find(|l| l.starts_with(".LC"))
                .expect("label before literal")
                .to_string()
        };
        assert_ne!(
            label_of(&run.orig_s, "BBBB"),
            label_of(&run.patched_s, "BBBB"),
            "[{flags}] the scenario must renumber the literal of late()"
        );
    }
}

const SWITCH: &str = r#"#include <stdio.h>
__attribute__((noinline)) void f1(void) { puts("one"); }
__attribute__((noinline)) void f2(int x) { printf("two %d\n", x); }
__attribute__((noinline)) void f3(const char *s) { puts(s); }
__attribute__((noinline)) void jt(int x)
{
    switch (x) {
    case 0: f1(); break;
    case 1: f2(x); break;
    case 2: f3("two"); break;
    case 3: f2(3); break;
    case 4: f3("four"); break;
    case 5: f2(99); break;
    case 6: f3("six"); break;
    default: f1();
    }
}
int main(int argc, char **argv) { (void)argv; jt(argc); return 0; }
"#;

#[test]
fn switch_with_a_jump_table() {
    let p = SWITCH.replace(
        "case 3: f2(3); break;",
        "case 3: f2(33); f3(\"three\"); break;",
    );
    for (flags, run) in check_all(SWITCH, &p, &["jt"], &[]) {
        assert!(
            run.orig_s.contains(".section\t.rodata") && run.orig_s.contains("-.L"),
            "[{flags}] the original has a jump table"
        );
        // The copied table sits in .kpatch.data and refers to the copy's labels.
        let f = kpatch_asm::AsmFile::parse("out.s", &run.out_s, kpatch_asm::Dialect::x86_64())
            .expect("reparse");
        let copy = f.label("jt.kpatch").expect("copy of jt");
        let table = f
            .stmts_in(copy.line..f.lines.len())
            .take_while(|(_, s)| !s.is_directive(".popsection"))
            .find(|(_, s)| s.is_directive(".long") && s.args.contains(".kpatch-"))
            .map(|(_, s)| f.section_of(s).name.clone());
        assert_eq!(table.as_deref(), Some(".kpatch.data"), "[{flags}]");
    }
}

const COLD: &str = r#"#include <stdio.h>
#include <stdlib.h>
extern void report(const char *what, int where) __attribute__((cold));
int seen;
__attribute__((noinline)) int work(const int *p, int n)
{
    int s = 0;
    for (int i = 0; i < n; i++) {
        if (__builtin_expect(p[i] < 0, 0)) {
            report("negative", i);
            seen++;
            printf("bad value at %d\n", i);
            abort();
        }
        s += p[i];
    }
    return s;
}
"#;

#[test]
fn function_with_a_cold_part() {
    let p = COLD
        .replace("s += p[i];", "s += 2 * p[i];")
        .replace("bad value", "bad, bad value");
    for (flags, run) in check_all(COLD, &p, &["work"], &[]) {
        if flags.starts_with("-O2") {
            assert!(
                run.orig_s.contains("work.cold:"),
                "[{flags}] gcc split the function"
            );
            assert_eq!(
                symbol_section(&run.out_o, "work.cold.kpatch").as_deref(),
                Some(".kpatch.text"),
                "[{flags}] the cold part is copied too"
            );
        }
    }
}

#[test]
fn renumbered_static_locals_keep_their_functions_unchanged() {
    let orig = "int f(void) { static int n = 1; return n++; }\n\
                int g(void) { static int n = 2; return n++; }\n";
    // gcc numbers statics from the end of the file: adding h at the end renumbers the
    // statics of f and g (n.1, n.0 become n.2, n.1) and gives h the original's n.0.
    let p = format!("{orig}int h(void) {{ static int n = 3; return n++; }}\n");
    for (flags, run) in check_all(orig, &p, &[], &["h"]) {
        assert!(
            run.patched_s.contains("n.2"),
            "[{flags}] statics renumbered"
        );
        let new: Vec<_> = run
            .diff
            .new_variables
            .iter()
            .map(|v| v.copy_name.clone())
            .collect();
        assert_eq!(
            new,
            ["n.0.kpatch"],
            "[{flags}] h's static is new, renamed off the original's n.0"
        );
    }
}

#[test]
fn ignore_changes_and_unlink() {
    use kpatch_asm::{DiffOptions, SymbolList};
    let p = patched("return x * x + hits;", "return x * x + hits + 1;")
        .replace(
            "printf(\"Hello world! %d\\n\", counter);",
            "printf(\"Hello! %d\\n\", counter);",
        )
        .replace("> 100;", "> 101;");
    let opts = DiffOptions {
        ignore_changes: SymbolList::parse("square"),
        unlink: SymbolList::parse("print_hello"),
        ..Default::default()
    };
    for flags in FLAG_SETS {
        let run = run_scenario_with(BASE, &p, flags, &opts).expect("differ");
        assert_eq!(
            patched_names(&run.diff, PatchKind::Changed),
            ["check"],
            "[{flags}]"
        );
        assert_eq!(
            patched_names(&run.diff, PatchKind::Unlinked),
            ["print_hello"],
            "[{flags}]"
        );
        assert_layout_preserved(&run.orig_o, &run.out_o, flags);
        let recs = kpatch_records(&run.out_o);
        assert_eq!(recs.len(), 2, "[{flags}]");
        let unlinked = recs
            .iter()
            .find(|r| r.name == "print_hello.kpatch")
            .expect("record of the unlinked copy");
        assert_eq!(
            (unlinked.daddr.clone(), unlinked.dlen),
            (None, 0),
            "[{flags}]"
        );
        assert!(!run.out_s.contains("square.kpatch"), "[{flags}] ignored");
        // The other copies call the unlinked copy.
        let check_copy = &run.out_s[run.out_s.find("check.kpatch:").expect("check copy")..];
        let check_copy = &check_copy[..check_copy.find(".popsection").expect("end")];
        assert!(
            check_copy.contains("print_hello.kpatch"),
            "[{flags}] {check_copy}"
        );
    }
}

#[test]
fn copies_of_static_functions_stay_local_unless_forced() {
    use kpatch_asm::DiffOptions;
    use object::{Object, ObjectSymbol};
    let orig = "#include <stdio.h>\n\
        __attribute__((noinline, noclone)) static void greet(const char *w) { printf(\"hi %s\\n\", w); }\n\
        int main(int argc, char **argv) { greet(argv[argc - 1]); return 0; }\n";
    let p = orig.replace("hi %s", "hello %s");
    for (flags, run) in check_all(orig, &p, &["greet"], &[]) {
        let obj = object::File::parse(&*run.out_o).expect("object");
        assert!(
            !obj.symbol_by_name("greet.kpatch")
                .expect("copy")
                .is_global(),
            "[{flags}]"
        );
    }
    let opts = DiffOptions {
        force_global: true,
        ..Default::default()
    };
    let run = run_scenario_with(orig, &p, "-O2", &opts).expect("differ");
    assert_records(&run, &["greet"], &[], "--force-global");
    let obj = object::File::parse(&*run.out_o).expect("object");
    assert!(obj
        .symbol_by_name("greet.kpatch")
        .expect("copy")
        .is_global());
}

const TYPES: &str = r#"struct conn { int id; struct conn *next; };
typedef struct { short x, y; } point_t;
struct conn *head;
point_t origin;

__attribute__((noinline)) int count(struct conn *c)
{
    struct local { int a; } l = { 1 };
    int n = l.a;
    for (; c; c = c->next)
        n += c->id;
    return n + origin.x;
}

int main(void) { return count(head); }
"#;

#[test]
fn changed_type_layouts_are_refused_with_debug_information() {
    use kpatch_asm::{DiffOptions, SymbolList};
    let cases = [
        (
            "struct conn { int id;",
            "struct conn { int id; int flags;",
            "conn",
        ),
        ("short x, y;", "int x, y;", "point_t"),
    ];
    // point_t's change also resizes the variable `origin`, refused on its own account.
    let also = |name: &str| if name == "point_t" { ",origin" } else { "" };
    for flags in ["-O0 -g", "-O2 -g"] {
        for (from, to, name) in cases {
            let p = TYPES.replace(from, to);
            match run_scenario(TYPES, &p, flags) {
                Err(e @ AsmError::TypeLayoutChanged { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("`{name}`")), "[{flags}] {msg}");
                }
                Err(e) => panic!("[{flags}] wrong error: {e}"),
                Ok(_) => panic!("[{flags}] {name}: changed layout accepted"),
            }
            let opts = DiffOptions {
                ignore_changes: SymbolList::parse(&format!("{name}{}", also(name))),
                ..Default::default()
            };
            assert!(
                run_scenario_with(TYPES, &p, flags, &opts).is_ok(),
                "[{flags}] --ignore-changes={name}"
            );
        }
        // A type local to a function, and a member's type changed without moving anything,
        // are not layout changes of file-scope types.
        let p = TYPES
            .replace("struct local { int a; }", "struct local { int a, b; }")
            .replace("int n = l.a;", "int n = l.a + l.b;");
        let run = run_scenario(TYPES, &p, flags).expect("function-local type");
        if flags.starts_with("-O0") {
            assert_eq!(patched_names(&run.diff, PatchKind::Changed), ["count"]);
        }
        let p = TYPES.replace("struct conn { int id;", "struct conn { unsigned id;");
        assert!(
            run_scenario(TYPES, &p, flags).is_ok(),
            "[{flags}] same layout"
        );
    }
    // Without debugging information there is nothing to compare.
    let p = TYPES.replace("struct conn { int id;", "struct conn { int id; int flags;");
    assert!(run_scenario(TYPES, &p, "-O0").is_ok());
}

#[test]
fn a_function_whose_only_change_is_its_line_numbers_is_left_out() {
    const SRC: &str = r#"#include <stdio.h>
__attribute__((noinline)) int first(void)
{
    return 1;
}

__attribute__((noinline)) void report(void)
{
    printf("%s:%d\n", __func__, __LINE__);
}

__attribute__((noinline)) int after(int x)
{
    return x + 31;
}
"#;
    // Two lines added in first(); report() only moves. after()'s constant changes along
    // with the shift: it must stay patched (31 is not one of its line numbers).
    let edited = SRC
        .replace(
            "    return 1;\n",
            "    /* one */\n    /* two */\n    return 2;\n",
        )
        .replace("x + 31", "x + 33");
    for flags in ["-O0 -g", "-O2 -g"] {
        let run = run_scenario(SRC, &edited, flags).unwrap_or_else(|e| panic!("{flags}: {e}"));
        assert_eq!(
            patched_names(&run.diff, PatchKind::Changed),
            ["after", "first"],
            "[{flags}]"
        );
        assert!(
            run.diff.notes.contains(&kpatch_asm::Note::LineNumbersOnly {
                function: "report".into(),
                shift: 2
            }),
            "[{flags}] {:?}",
            run.diff.notes
        );
    }
    // Without line information nothing tells a line number from any other: patched.
    let run = run_scenario(SRC, &edited, "-O2").unwrap();
    assert_eq!(
        patched_names(&run.diff, PatchKind::Changed),
        ["after", "first", "report"]
    );
}
