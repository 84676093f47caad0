//! Keeping the line numbers of unchanged code: a fix that adds lines above a function moves
//! every `__LINE__` (and `assert`, and every logging macro) after it, so functions the patch
//! did not touch compile differently and would be patched, or refused when they never return
//! (`main`). As the kernel's klp-build does, a `#line` directive goes into the patched copy of
//! each changed C or C++ file after every changed stretch, so that the preprocessor numbers the
//! unchanged lines that follow as in the original: only code the patch changed compiles
//! differently. The changed lines themselves keep the numbers that follow on from the line
//! before them.
//!
//! The original and patched files are aligned with a line diff (the patch may have applied
//! with an offset); a directive is written only where one may stand: not inside a comment or
//! a string, not after a line continued with a backslash (a macro definition), not inside
//! parentheses (a macro's arguments); it then goes before the next line where it can.

use std::fs;
use std::io;
use std::path::PathBuf;

/// File name endings of C and C++ sources and headers.
const C_LIKE: &[&str] = &[
    ".c", ".h", ".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".inc",
];

/// The `#line` directives written into one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLines {
    /// The patched file.
    pub file: PathBuf,
    /// `(line of the patched file, as written by the patch; the original line number it
    /// gets)`, one per directive.
    pub directives: Vec<(usize, usize)>,
    /// The first line (of the patched file) from which line numbers still differ from the
    /// original's because no directive could be placed before the end of the file, if any.
    pub unkept_from: Option<usize>,
}

/// Writes the directives into each C-like file of `files` (patched file, its original);
/// returns what was done, for files that needed any.
pub fn keep_line_numbers(files: &[(PathBuf, PathBuf)]) -> io::Result<Vec<KeptLines>> {
    let mut out = Vec::new();
    for (file, original) in files {
        let name = file.to_string_lossy();
        if !C_LIKE.iter().any(|e| name.ends_with(e)) {
            continue;
        }
        let (Ok(old), Ok(new)) = (fs::read_to_string(original), fs::read_to_string(file)) else {
            // A file the patch creates, or one that is not text: nothing to keep.
            continue;
        };
        let (text, kept) = with_line_directives(&old, &new);
        if kept.directives.is_empty() && kept.unkept_from.is_none() {
            continue;
        }
        if !kept.directives.is_empty() {
            fs::write(file, text)?;
        }
        out.push(KeptLines {
            file: file.clone(),
            ..kept
        });
    }
    Ok(out)
}

/// `new` with `#line` directives that give its unchanged lines their numbers in `old`.
pub fn with_line_directives(old: &str, new: &str) -> (String, KeptLines) {
    let o: Vec<&str> = old.lines().collect();
    let n: Vec<&str> = new.lines().collect();
    let mut want: Vec<Option<usize>> = vec![None; n.len()];
    for (i, j) in matches(&o, &n) {
        want[j] = Some(i + 1);
    }
    let safe = safe_points(&n);
    let mut text = String::with_capacity(new.len() + 64);
    let mut kept = KeptLines {
        file: PathBuf::new(),
        directives: Vec::new(),
        unkept_from: None,
    };
    // The number the preprocessor gives line j, given the directives so far.
    let mut delta: i64 = 0;
    let mut pending: Option<usize> = None;
    for (j, line) in n.iter().enumerate() {
        let presumed = j as i64 + 1 + delta;
        if let Some(w) = want[j] {
            if presumed != w as i64 {
                if safe[j] {
                    text.push_str(&format!("#line {w}\n"));
                    kept.directives.push((j + 1, w));
                    delta = w as i64 - (j as i64 + 1);
                    pending = None;
                } else {
                    pending.get_or_insert(j + 1);
                }
            } else {
                pending = None;
            }
        }
        text.push_str(line);
        text.push('\n');
    }
    if !new.ends_with('\n') && text.ends_with('\n') {
        text.pop();
    }
    kept.unkept_from = pending;
    (text, kept)
}

/// Matched line pairs `(old index, new index)` of a shortest edit script (Myers), in order.
fn matches(a: &[&str], b: &[&str]) -> Vec<(usize, usize)> {
    // Common ends first: most patches touch a few lines of a long file.
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut out: Vec<(usize, usize)> = (0..pre).map(|i| (i, i)).collect();
    out.extend(myers(am, bm).into_iter().map(|(i, j)| (i + pre, j + pre)));
    out.extend((0..suf).map(|k| (a.len() - suf + k, b.len() - suf + k)));
    out
}

fn myers(a: &[&str], b: &[&str]) -> Vec<(usize, usize)> {
    // Its snapshots take (n + m)^2 words: a rewrite of thousands of lines is left unaligned
    // (its lines keep the numbers that follow from the patched file).
    if (a.len() + b.len()).pow(2) > 16 << 20 {
        return Vec::new();
    }
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (n + m) as usize;
    let off = max as isize + 1;
    let mut v = vec![0isize; 2 * max + 3];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    'outer: for d in 0..=max as isize {
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let idx = (k + off) as usize;
            let mut x = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
                v[idx + 1]
            } else {
                v[idx - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[idx] = x;
            if x >= n && y >= m {
                break 'outer;
            }
            k += 2;
        }
    }
    // Walk back through the snapshots.
    let mut pairs = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let idx = (k + off) as usize;
        let prev_k = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = if d == 0 {
            0
        } else {
            v[(prev_k + off) as usize]
        };
        let prev_y = prev_x - prev_k;
        while x > prev_x.max(0) && y > prev_y.max(0) {
            if a[(x - 1) as usize] != b[(y - 1) as usize] {
                break;
            }
            x -= 1;
            y -= 1;
            pairs.push((x as usize, y as usize));
        }
        if d == 0 {
            break;
        }
        x = prev_x;
        y = prev_y;
    }
    pairs.reverse();
    pairs
}

/// For each line, whether a `#line` directive may be written just before it.
fn safe_points(lines: &[&str]) -> Vec<bool> {
    let mut out = Vec::with_capacity(lines.len());
    let (mut in_comment, mut continued, mut depth) = (false, false, 0i64);
    let mut directive = false;
    for line in lines {
        out.push(!in_comment && !continued && depth == 0);
        // A directive's continuation lines are part of it: its parentheses do not count.
        directive = if continued {
            directive
        } else {
            line.trim_start().starts_with('#')
        };
        let mut chars = line.chars().peekable();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            if in_comment {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    in_comment = false;
                }
                continue;
            }
            if let Some(q) = quote {
                if c == '\\' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    in_comment = true;
                }
                '/' if chars.peek() == Some(&'/') => break,
                '"' | '\'' => quote = Some(c),
                '(' if !directive => depth += 1,
                ')' if !directive => depth = (depth - 1).max(0),
                _ => {}
            }
        }
        continued = line.ends_with('\\');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(text: &str) -> Vec<(usize, String)> {
        // What the preprocessor would number each non-directive line.
        let mut out = Vec::new();
        let mut next = 1usize;
        for l in text.lines() {
            if let Some(n) = l.strip_prefix("#line ") {
                next = n.trim().parse().unwrap();
                continue;
            }
            out.push((next, l.to_string()));
            next += 1;
        }
        out
    }

    #[test]
    fn unchanged_lines_keep_their_numbers() {
        let old = "int a;\nint f(void)\n{\n\treturn 1;\n}\nint g(void) { return __LINE__; }\n";
        let new = "int a;\n/* a comment\n * of two lines */\nint f(void)\n{\n\treturn 2;\n}\nint g(void) { return __LINE__; }\n";
        let (text, kept) = with_line_directives(old, new);
        let lines = numbered(&text);
        let g = lines.iter().find(|(_, l)| l.starts_with("int g")).unwrap();
        assert_eq!(g.0, 6, "{text}");
        let f = lines.iter().find(|(_, l)| l.starts_with("int f")).unwrap();
        assert_eq!(f.0, 2, "{text}");
        assert!(kept.unkept_from.is_none());
        // Nothing to do when no line moved.
        let (text, kept) = with_line_directives(old, old);
        assert_eq!(text, old);
        assert!(kept.directives.is_empty());
    }

    #[test]
    fn lines_removed_and_directives_deferred_past_macros_and_comments() {
        let old = "a\nb\nc\n#define M(x) \\\n  (x)\nd\ne\n";
        let new = "a\nc\n#define M(x) \\\n  (x)\nd\ne\n";
        let (text, _) = with_line_directives(old, new);
        let lines = numbered(&text);
        assert_eq!(lines.last().unwrap(), &(7, "e".to_string()), "{text}");
        // The first unchanged line after the change is inside a macro definition's
        // continuation: the directive waits for the line after it.
        let old = "#define M(x) \\\n  (x) \\\n  + 1\nint y = __LINE__;\n";
        let new = "#define M(x) \\\n  (x) \\\n  + 2 \\\n  + 1\nint y = __LINE__;\n";
        let (text, kept) = with_line_directives(old, new);
        assert!(text.contains("  + 1\n#line 4\nint y"), "{text}");
        assert_eq!(kept.directives, [(5, 4)]);
        // Inside a multi-line call's arguments or a comment it waits too.
        let old = "f(1,\n  2);\n/*\n x\n*/\nz;\n";
        let new = "f(0,\n  1,\n  2);\n/*\n x\n*/\nz;\n";
        let (text, _) = with_line_directives(old, new);
        assert!(text.contains("  2);\n#line 3\n/*"), "{text}");
        assert_eq!(numbered(&text).last().unwrap().0, 6);
    }

    #[test]
    fn diff_alignment() {
        let a = ["x", "a", "b", "c", "y"];
        let b = ["x", "a", "q", "c", "y", "z"];
        assert_eq!(matches(&a, &b), [(0, 0), (1, 1), (3, 3), (4, 4)]);
        assert_eq!(matches(&[], &["a"]), []);
        assert_eq!(matches(&["a", "b"], &["b", "a"]).len(), 1);
    }
}
