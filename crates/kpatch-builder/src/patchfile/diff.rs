//! Unified diffs (`diff -u`, `diff -up`, `git diff`): split into one section per file.

use std::fmt;

/// A malformed or unsupported patch.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A hunk header does not read `@@ -a,b +c,d @@`.
    #[error("line {line}: malformed hunk header {text:?}")]
    BadHunkHeader {
        /// 1-based line in the patch.
        line: usize,
        /// The header.
        text: String,
    },
    /// A hunk ends before its line counts are reached.
    #[error("line {line}: hunk started at line {start} is truncated (expected {old} old and {new} new lines)")]
    TruncatedHunk {
        /// 1-based line where the hunk stops.
        line: usize,
        /// Its header's line.
        start: usize,
        /// Old lines still expected.
        old: usize,
        /// New lines still expected.
        new: usize,
    },
    /// A line inside a hunk starts with something else than ` `, `-`, `+` or `\`.
    #[error("line {line}: unexpected line inside the hunk started at line {start}: {text:?}")]
    BadHunkLine {
        /// 1-based line.
        line: usize,
        /// Its hunk's header line.
        start: usize,
        /// The line.
        text: String,
    },
    /// A file header with no hunk after it.
    #[error("line {0}: file header without any hunk (renames, mode changes and binary patches are not supported)")]
    NoHunks(usize),
    /// A context diff or a binary git patch.
    #[error(
        "line {0}: only unified diffs are supported (make the patch with `diff -u` or `git diff`)"
    )]
    Unsupported(usize),
    /// No `--- `/`+++ ` header at all.
    #[error("no unified-diff file header (`--- old` followed by `+++ new`) found")]
    Empty,
}

/// One hunk's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based line of its `@@` header in the patch file.
    pub line: usize,
    /// First old line.
    pub old_start: usize,
    /// Old line count.
    pub old_len: usize,
    /// First new line.
    pub new_start: usize,
    /// New line count.
    pub new_len: usize,
}

impl fmt::Display for Hunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "@@ -{},{} +{},{} @@ (patch line {})",
            self.old_start, self.old_len, self.new_start, self.new_len, self.line
        )
    }
}

/// The changes to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDiff {
    /// Name on the `--- ` line (`None` for `/dev/null`: the file is created).
    pub old: Option<String>,
    /// Name on the `+++ ` line (`None` for `/dev/null`: the file is deleted).
    pub new: Option<String>,
    /// 1-based line of the `--- ` header.
    pub line: usize,
    /// The hunks.
    pub hunks: Vec<Hunk>,
    /// The section as text, from the `--- ` line to the end of its last hunk.
    pub text: String,
}

impl FileDiff {
    /// The names as written, for messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {} / +++ {}",
            self.old.as_deref().unwrap_or("/dev/null"),
            self.new.as_deref().unwrap_or("/dev/null")
        )
    }
}

/// Parses every file section of a unified diff. Text outside sections (`diff -up a b`,
/// `Index:`, `diff --git`, `index ...` lines, mail headers) is ignored, as `patch` does.
pub fn parse(text: &str) -> Result<Vec<FileDiff>, DiffError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut files = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let next = lines.get(i + 1).copied().unwrap_or("");
        if line.starts_with("GIT binary patch")
            || (line.starts_with("*** ") && next.starts_with("--- "))
        {
            return Err(DiffError::Unsupported(i + 1));
        }
        if !(line.starts_with("--- ") && next.starts_with("+++ ")) {
            i += 1;
            continue;
        }
        let header_line = i + 1;
        let mut section = String::from(line);
        section.push_str(next);
        let (old, new) = (file_name(&line[4..]), file_name(&next[4..]));
        i += 2;
        let mut hunks = Vec::new();
        while let Some(h) = lines.get(i).filter(|l| l.starts_with("@@ ")) {
            let hunk = parse_hunk_header(h, i + 1)?;
            section.push_str(h);
            i += 1;
            let (mut old_left, mut new_left) = (hunk.old_len, hunk.new_len);
            while old_left > 0 || new_left > 0 {
                let Some(l) = lines.get(i) else {
                    return Err(DiffError::TruncatedHunk {
                        line: i,
                        start: hunk.line,
                        old: old_left,
                        new: new_left,
                    });
                };
                let truncated = || DiffError::TruncatedHunk {
                    line: i + 1,
                    start: hunk.line,
                    old: old_left,
                    new: new_left,
                };
                match l.as_bytes().first() {
                    // An empty line is a context line whose trailing space was lost.
                    Some(b' ') | Some(b'\n') | Some(b'\r') => {
                        if old_left == 0 || new_left == 0 {
                            return Err(truncated());
                        }
                        old_left -= 1;
                        new_left -= 1;
                    }
                    Some(b'-') => {
                        old_left = old_left.checked_sub(1).ok_or_else(truncated)?;
                    }
                    Some(b'+') => {
                        new_left = new_left.checked_sub(1).ok_or_else(truncated)?;
                    }
                    Some(b'\\') => {}
                    _ => {
                        return Err(DiffError::BadHunkLine {
                            line: i + 1,
                            start: hunk.line,
                            text: l.trim_end().to_string(),
                        })
                    }
                }
                section.push_str(l);
                i += 1;
            }
            // "\ No newline at end of file" after the hunk's last line.
            while let Some(l) = lines.get(i).filter(|l| l.starts_with('\\')) {
                section.push_str(l);
                i += 1;
            }
            hunks.push(hunk);
        }
        if hunks.is_empty() {
            return Err(DiffError::NoHunks(header_line));
        }
        if !section.ends_with('\n') {
            section.push('\n');
        }
        files.push(FileDiff {
            old,
            new,
            line: header_line,
            hunks,
            text: section,
        });
    }
    if files.is_empty() {
        return Err(DiffError::Empty);
    }
    Ok(files)
}

/// The file name of a `--- `/`+++ ` line: up to a tab (before the timestamp), C-unquoted if
/// git quoted it; `None` for `/dev/null`.
fn file_name(rest: &str) -> Option<String> {
    let rest = rest.trim_end_matches(['\n', '\r']);
    let name = match rest.strip_prefix('"') {
        Some(quoted) => unquote(quoted),
        None => rest.split('\t').next().unwrap_or("").trim_end().to_string(),
    };
    (name != "/dev/null").then_some(name)
}

/// Reads a git C-quoted name (after its opening quote) up to the closing quote.
fn unquote(s: &str) -> String {
    let mut bytes = Vec::new();
    let mut it = s.bytes().peekable();
    while let Some(b) = it.next() {
        match b {
            b'"' => break,
            b'\\' => match it.next() {
                Some(b'n') => bytes.push(b'\n'),
                Some(b't') => bytes.push(b'\t'),
                Some(d @ b'0'..=b'7') => {
                    let mut v = u32::from(d - b'0');
                    for _ in 0..2 {
                        if let Some(&n @ b'0'..=b'7') = it.peek() {
                            v = v * 8 + u32::from(n - b'0');
                            it.next();
                        }
                    }
                    bytes.push((v & 0xff) as u8);
                }
                Some(other) => bytes.push(other),
                None => {}
            },
            _ => bytes.push(b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn parse_hunk_header(h: &str, line: usize) -> Result<Hunk, DiffError> {
    let bad = || DiffError::BadHunkHeader {
        line,
        text: h.trim_end().to_string(),
    };
    let body = h.strip_prefix("@@ -").ok_or_else(bad)?;
    let (ranges, _) = body.split_once(" @@").ok_or_else(bad)?;
    let (old, new) = ranges.split_once(" +").ok_or_else(bad)?;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((s, l)) => Some((s.parse().ok()?, l.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (old_start, old_len) = range(old).ok_or_else(bad)?;
    let (new_start, new_len) = range(new).ok_or_else(bad)?;
    Ok(Hunk {
        line,
        old_start,
        old_len,
        new_start,
        new_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF_UP: &str = "\
--- foo.c\t2020-12-10 09:43:04.445375845 +0800
+++ bar.c\t2020-12-10 09:48:36.778379648 +0800
@@ -1,5 +1,5 @@ void print_hello(void)
 #include <stdio.h>
 void print_hello(void)
 {
-    printf(\"Hello world!\\n\");
+    printf(\"Hello world being patched!\\n\");
 }
";

    #[test]
    fn diff_up_section() {
        let f = parse(DIFF_UP).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].old.as_deref(), Some("foo.c"));
        assert_eq!(f[0].new.as_deref(), Some("bar.c"));
        assert_eq!(f[0].hunks[0].old_len, 5);
        assert_eq!(f[0].text, DIFF_UP);
    }

    #[test]
    fn git_sections_new_file_and_no_newline_marker() {
        let text = "\
diff --git a/src/x.c b/src/x.c
index 1..2 100644
--- a/src/x.c
+++ b/src/x.c
@@ -1 +1 @@
-old
\\ No newline at end of file
+new
\\ No newline at end of file
diff --git a/n.c b/n.c
new file mode 100644
--- /dev/null
+++ b/n.c
@@ -0,0 +1,2 @@
+--- not a header
+x
";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].old.as_deref(), Some("a/src/x.c"));
        assert!(f[0].text.ends_with("+new\n\\ No newline at end of file\n"));
        assert_eq!(f[1].old, None);
        assert_eq!(f[1].new.as_deref(), Some("b/n.c"));
        assert_eq!(f[1].hunks[0].new_len, 2);
        assert_eq!(f[1].line, 12);
    }

    #[test]
    fn errors() {
        assert!(matches!(parse("hello\n"), Err(DiffError::Empty)));
        assert!(matches!(
            parse("--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n"),
            Err(DiffError::TruncatedHunk { start: 3, .. })
        ));
        assert!(matches!(
            parse("--- a\n+++ b\n@@ -x +1 @@\n"),
            Err(DiffError::BadHunkHeader { line: 3, .. })
        ));
        assert!(matches!(
            parse("--- a\n+++ b\nfoo\n"),
            Err(DiffError::NoHunks(1))
        ));
        assert!(matches!(
            parse("*** a\n--- b\n"),
            Err(DiffError::Unsupported(1))
        ));
        assert!(matches!(
            parse("--- a\n+++ b\n@@ -1 +1 @@\n?x\n"),
            Err(DiffError::BadHunkLine { line: 4, .. })
        ));
    }

    #[test]
    fn quoted_names() {
        assert_eq!(
            file_name("\"a/sp ace\\303\\251.c\"\n").as_deref(),
            Some("a/sp aceé.c")
        );
        assert_eq!(file_name("/dev/null\t1970-01-01\n"), None);
    }
}
