//! Functions whose only difference is that their source lines moved: a fix that adds lines
//! above a function shifts its `__LINE__` values (logging macros, `assert`), which become
//! different immediates or string literals although nothing in the function changed. Such a
//! function is left out of the patch and keeps printing the old numbers.
//!
//! Only decided with line information (`-g`, `.loc` directives): the function's `.loc` lines,
//! file by file, must all have moved by one amount and nothing else about them changed, and
//! every differing number in the compared code must be one of the function's original line
//! numbers plus that amount. Without `.loc` lines nothing is decided (the function is patched);
//! `libcare-patch-make` keeps the numbers from changing in the first place (`#line`).

use std::collections::HashMap;

use crate::index::Block;
use crate::parse::AsmFile;

/// `(file number, line)` of every `.loc` directive of a block, in order.
fn locs(f: &AsmFile, b: &Block) -> Vec<(u32, i64)> {
    f.stmts_in(b.lines.clone())
        .filter(|(_, s)| s.is_directive(".loc"))
        .filter_map(|(_, s)| {
            let mut w = s.args.split_whitespace();
            let file = w.next()?.parse().ok()?;
            let line = w.next()?.parse().ok()?;
            Some((file, line))
        })
        .collect()
}

/// Splits a normalised statement into text and the numbers in it.
fn split_numbers(s: &str) -> (String, Vec<i64>) {
    let mut text = String::with_capacity(s.len());
    let mut nums = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            nums.push(cur.parse().unwrap_or(i64::MIN));
            cur.clear();
            text.push('#');
        }
        text.push(c);
    }
    if !cur.is_empty() {
        nums.push(cur.parse().unwrap_or(i64::MIN));
        text.push('#');
    }
    (text, nums)
}

/// If blocks `ob` (of `orig`) and `pb` (of `patched`), whose normal forms are `a` and `c`,
/// differ only in line numbers, returns by how many lines the function moved.
pub(crate) fn line_shift(
    orig: &AsmFile,
    ob: &Block,
    patched: &AsmFile,
    pb: &Block,
    a: &[String],
    c: &[String],
) -> Option<i64> {
    let (lo, lp) = (locs(orig, ob), locs(patched, pb));
    if lo.is_empty() || lo.len() != lp.len() || a.len() != c.len() {
        return None;
    }
    // One shift per file number, and the original's range of lines per file.
    let mut shift: HashMap<u32, i64> = HashMap::new();
    let mut range: HashMap<u32, (i64, i64)> = HashMap::new();
    for (&(fo, o), &(fp, p)) in lo.iter().zip(&lp) {
        if fo != fp || *shift.entry(fo).or_insert(p - o) != p - o {
            return None;
        }
        let r = range.entry(fo).or_insert((o, o));
        r.0 = r.0.min(o);
        r.1 = r.1.max(o);
    }
    let mut moved = None;
    for (x, y) in a.iter().zip(c) {
        if x == y {
            continue;
        }
        let ((tx, nx), (ty, ny)) = (split_numbers(x), split_numbers(y));
        if tx != ty {
            return None;
        }
        for (&v, &w) in nx.iter().zip(&ny) {
            if v == w {
                continue;
            }
            let fits = shift.iter().find(|(f, &s)| {
                let (lo, hi) = range[*f];
                s != 0 && w - v == s && (lo..=hi).contains(&v)
            });
            match fits {
                Some((_, &s)) => moved = Some(s),
                None => return None,
            }
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_split_out() {
        assert_eq!(
            split_numbers("movl $31, %r8d"),
            ("movl $#, %r#d".to_string(), vec![31, 8])
        );
        assert_eq!(
            split_numbers(".string \"main.c:38\""),
            (".string \"main.c:#\"".to_string(), vec![38])
        );
    }
}
