//! Small x86_64 assembler inputs the unit tests of several modules build on.

use crate::dialect::Dialect;
use crate::parse::AsmFile;

/// `text` parsed as the x86_64 file `name`.
pub fn file(name: &str, text: &str) -> AsmFile {
    AsmFile::parse(name, text, Dialect::x86_64()).unwrap()
}

/// A global function `name` of `body` and a `ret`, as gcc writes it.
pub fn func(name: &str, body: &str) -> String {
    format!("\t.text\n\t.globl\t{name}\n\t.type\t{name}, @function\n{name}:\n{body}\tret\n\t.size\t{name}, .-{name}\n")
}
