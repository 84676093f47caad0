//! Building real patched binaries for the tests: gcc, the combined assembly of
//! docs/internals.md 1.1 (see [`libcare_test_support::gensrc_lite`]), and links with `-Wl,-q`.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::path::Path;

pub use libcare_test_support::gensrc_lite::{build, build_in, gnu_strip, gnu_strip_with, Built};
pub use libcare_test_support::readelf_clean;
pub use libcare_test_support::run_ok;

pub fn read_elf(path: &Path) -> elf_edit::Elf {
    elf_edit::parse(&std::fs::read(path).unwrap()).unwrap()
}

pub fn write_elf(path: &Path, elf: &elf_edit::Elf) {
    std::fs::write(path, kpatch_strip::write_payload(elf)).unwrap();
}

/// The program of the user guide: `print_hello` is patched.
pub const FOO_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
static int counter;
int tiny(void) { return 0; }
static int helper(int x) { return x * 3; }
__attribute__((noinline)) void print_hello(int n)
{
    counter += n;
    printf("Hello world %d\n", counter);
}
int main(void)
{
    for (int i = 0; i < 3; i++)
        print_hello(i);
    return tiny() + helper(0);
}
"#;

pub const BAR_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
static int counter;
int tiny(void) { return 1; }
static int helper(int x) { return x * 3; }
__attribute__((noinline)) void print_hello(int n)
{
    counter += helper(n);
    printf("Hello patched %d %d\n", counter, n);
    puts("done");
}
int main(void)
{
    for (int i = 0; i < 3; i++)
        print_hello(i);
    return tiny() + helper(0);
}
"#;
