//! gcc-built inputs for the tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use libcare_test_support::run_ok;

pub const SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
__thread int tls_counter = 3;
static int hidden_counter;
int global_table[16] = {1, 2, 3};
static const char *pick(int i) { return i > 2 ? "big" : "small"; }
__attribute__((noinline)) int work(int x)
{
    hidden_counter += x;
    tls_counter++;
    printf("%s %d %d\n", pick(x), hidden_counter, global_table[x & 15]);
    return hidden_counter;
}
int main(int argc, char **argv)
{
    (void)argv;
    return work(argc) == 1 ? 0 : 1;
}
"#;

/// Compiles `SOURCE` with `args` into `dir/name` and returns the path.
pub fn gcc(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let src = dir.join("input.c");
    std::fs::write(&src, SOURCE).expect("write input.c");
    let out = dir.join(name);
    run_ok(Command::new("gcc").args(args).arg("-o").arg(&out).arg(&src));
    out
}
