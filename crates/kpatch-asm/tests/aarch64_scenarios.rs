//! The aarch64 dialect with the cross compiler (`aarch64-linux-gnu-gcc`): `//` comments,
//! `%function`, `adrp`/`add :lo12:` pairs and gcc's section anchors.

mod common;

use common::*;
use kpatch_asm::{AsmError, DiffOptions, PatchKind};

const BASE: &str = r#"#include <stdio.h>
int counter = 5;
static int hits = 2;
static const int tab[4] = {1, 2, 3, 4};
__attribute__((noinline)) int print_hello(int i)
{
    hits++;
    printf("Hello world! %d %d\n", counter, tab[i & 3]);
    return hits;
}
int main(int argc, char **argv)
{
    (void)argv;
    return print_hello(argc);
}
"#;

const FLAGS: &[&str] = &["-O0", "-O2", "-O2 -g", "-O2 -fPIC"];

#[test]
fn changed_function_with_new_literal() {
    let p = BASE.replace(
        "Hello world! %d %d\\n",
        "Hello world being patched! %d %d\\n",
    );
    for flags in FLAGS {
        let run = run_scenario_on(&AARCH64, BASE, &p, flags, &DiffOptions::default())
            .unwrap_or_else(|e| panic!("[{flags}] {e}"));
        assert_eq!(
            patched_names(&run.diff, PatchKind::Changed),
            ["print_hello"],
            "[{flags}]"
        );
        assert_layout_preserved(&run.orig_o, &run.out_o, flags);
        assert_records(&run, &["print_hello"], &[], flags);
        assert!(
            run.out_s.contains(".type\tprint_hello.kpatch, %function"),
            "[{flags}]"
        );
        assert!(
            run.out_s
                .lines()
                .any(|l| l.contains(":lo12:.LC") && l.contains(".kpatch")),
            "[{flags}] adrp/add refer to the copied literal"
        );
        if flags.starts_with("-O2") {
            assert!(
                run.orig_s.contains(".LANCHOR"),
                "[{flags}] gcc used section anchors"
            );
        }
    }
}

#[test]
fn anchored_data_that_moves_is_refused_with_a_hint() {
    let p = BASE
        .replace(
            "static int hits = 2;",
            "static int hits = 2;\nint added = 1;",
        )
        .replace("return hits;", "return hits + added;");
    match run_scenario_on(&AARCH64, BASE, &p, "-O2", &DiffOptions::default()) {
        Err(e @ AsmError::AnchorLayoutChanged { .. }) => {
            assert!(e.to_string().contains("-fno-section-anchors"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => panic!("accepted: {}", r.out_s),
    }
    let run = run_scenario_on(
        &AARCH64,
        BASE,
        &p,
        "-O2 -fno-section-anchors",
        &DiffOptions::default(),
    )
    .expect("without anchors the new variable is fine");
    assert_eq!(run.diff.new_variables.len(), 1);
    assert_layout_preserved(&run.orig_o, &run.out_o, "-fno-section-anchors");
    assert_records(&run, &["print_hello"], &[], "-fno-section-anchors");
}
