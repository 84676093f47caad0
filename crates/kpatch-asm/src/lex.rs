//! Splitting a line into statements (comments removed) and a statement into tokens.

use crate::dialect::Dialect;

/// Splits one source line into statement texts, without comments, each trimmed; empty
/// statements are dropped. `in_block_comment` carries a `/* ... */` comment across lines.
pub(crate) fn split_statements(
    line: &str,
    d: &Dialect,
    in_block_comment: &mut bool,
) -> Vec<String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let first_nonblank = b.iter().position(|c| !c.is_ascii_whitespace());
    let mut i = 0;
    let mut seg = 0; // start of the not-yet-copied part of `line`
    while i < b.len() {
        if *in_block_comment {
            if b[i..].starts_with(b"*/") {
                *in_block_comment = false;
                i += 2;
                seg = i;
                cur.push(' ');
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'"' => {
                i = skip_string(b, i);
            }
            b'\'' => {
                // gas character constant: 'c, '\n, optionally closed by another quote.
                i += 1;
                if i < b.len() && b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
                if i < b.len() && b[i] == b'\'' {
                    i += 1;
                }
                i = i.min(b.len());
            }
            _ if b[i..].starts_with(b"/*") => {
                cur.push_str(&line[seg..i]);
                *in_block_comment = true;
                i += 2;
            }
            _ if b[i..].starts_with(d.comment.as_bytes())
                || (Some(i) == first_nonblank
                    && d.line_comments
                        .iter()
                        .any(|c| b[i..].starts_with(c.as_bytes()))) =>
            {
                cur.push_str(&line[seg..i]);
                seg = b.len();
                break;
            }
            c if c == d.separator => {
                cur.push_str(&line[seg..i]);
                push_trimmed(&mut out, &mut cur);
                i += 1;
                seg = i;
            }
            _ => i += 1,
        }
    }
    if !*in_block_comment && seg < b.len() {
        cur.push_str(&line[seg..]);
    }
    push_trimmed(&mut out, &mut cur);
    out
}

fn push_trimmed(out: &mut Vec<String>, cur: &mut String) {
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
    cur.clear();
}

/// Index just past the string literal starting at `b[i] == '"'`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Kinds of tokens of an operand list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// A symbol name, register name, mnemonic or `.` (the location counter).
    Ident,
    /// A number, including numeric label references like `1b`.
    Number,
    /// A quoted string.
    Str,
    /// Blanks.
    Space,
    /// Any other single character.
    Punct,
}

/// A token: its kind and its text in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok<'a> {
    pub kind: TokKind,
    pub text: &'a str,
}

fn ident_start(c: u8, d: &Dialect) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'.' || (d.dollar_in_names && c == b'$')
}

/// `$` continues a name in every dialect (clang names a lambda `_ZZ4tickvENK3$_0clEi`);
/// only at the start of an operand is it an immediate in AT&T syntax.
fn ident_cont(c: u8, _d: &Dialect) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$'
}

/// Splits statement text into tokens; concatenating the texts gives back `s`.
pub(crate) fn tokenize<'a>(s: &'a str, d: &Dialect) -> Vec<Tok<'a>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = if c == b'"' {
            i = skip_string(b, i);
            TokKind::Str
        } else if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            TokKind::Space
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            TokKind::Number
        } else if ident_start(c, d) {
            while i < b.len() && ident_cont(b[i], d) {
                i += 1;
            }
            TokKind::Ident
        } else {
            // One character, however many bytes it takes.
            i += s[i..].chars().next().map_or(1, char::len_utf8);
            TokKind::Punct
        };
        out.push(Tok {
            kind,
            text: &s[start..i],
        });
    }
    out
}

/// Splits a directive's argument list at top-level commas, trimming each argument.
pub(crate) fn split_args(args: &str) -> Vec<&str> {
    let b = args.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = skip_string(b, i);
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b',' if depth <= 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = args[start..].trim();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    out
}

/// The name in a directive argument: unquoted if it was quoted.
pub(crate) fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, d: &Dialect) -> Vec<String> {
        let mut c = false;
        split_statements(line, d, &mut c)
    }

    #[test]
    fn comments_and_separators_x86() {
        let d = Dialect::x86_64();
        assert_eq!(split("\tmovl\t$1, %eax # set", &d), vec!["movl\t$1, %eax"]);
        assert_eq!(split("# 12 \"t.c\" 1", &d), Vec::<String>::new());
        assert_eq!(split("\trep; movsb", &d), vec!["rep", "movsb"]);
        assert_eq!(
            split("\t.string \"a;b#c\\\"d\" # x", &d),
            vec!["\t.string \"a;b#c\\\"d\"".trim()]
        );
        assert_eq!(split("\tnop /* c */ ; ret", &d), vec!["nop", "ret"]);
    }

    #[test]
    fn block_comment_across_lines() {
        let d = Dialect::x86_64();
        let mut c = false;
        assert_eq!(split_statements("nop /* start", &d, &mut c), vec!["nop"]);
        assert!(c);
        assert_eq!(split_statements("still */ ret", &d, &mut c), vec!["ret"]);
        assert!(!c);
    }

    #[test]
    fn comments_aarch64() {
        let d = Dialect::aarch64();
        assert_eq!(
            split("\tadd\tx0, x0, :lo12:.LC0 // comment", &d),
            vec!["add\tx0, x0, :lo12:.LC0"]
        );
        // '#' is an immediate prefix inside a line, a comment only at its start.
        assert_eq!(split("\tmov\tw0, #5", &d), vec!["mov\tw0, #5"]);
        assert_eq!(split("#APP", &d), Vec::<String>::new());
    }

    #[test]
    fn char_constant_does_not_hide_separator() {
        let d = Dialect::x86_64();
        assert_eq!(
            split("movb $';', %al; ret", &d),
            vec!["movb $';', %al", "ret"]
        );
    }

    #[test]
    fn tokens_round_trip_and_split_at_relocation_suffix() {
        let d = Dialect::x86_64();
        let s = "call\tfoo.cold@PLT; leaq .LC0(%rip), %rdi";
        let toks = tokenize(s, &d);
        assert_eq!(toks.iter().map(|t| t.text).collect::<String>(), s);
        let idents: Vec<_> = toks
            .iter()
            .filter(|t| t.kind == TokKind::Ident)
            .map(|t| t.text)
            .collect();
        assert_eq!(
            idents,
            ["call", "foo.cold", "PLT", "leaq", ".LC0", "rip", "rdi"]
        );
        let n: Vec<_> = tokenize("jmp 1b", &d)
            .into_iter()
            .filter(|t| t.kind == TokKind::Number)
            .map(|t| t.text)
            .collect();
        assert_eq!(n, ["1b"]);
    }

    #[test]
    fn dollar_is_immediate_on_x86_and_name_char_on_aarch64() {
        let x = tokenize("$foo", &Dialect::x86_64());
        assert_eq!(x[0].kind, TokKind::Punct);
        let lambda = tokenize("_ZZ4tickvENK3$_0clEi:", &Dialect::x86_64());
        assert_eq!(lambda[0].text, "_ZZ4tickvENK3$_0clEi");
        let a = tokenize("a$b", &Dialect::aarch64());
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn args_split_at_top_level_commas() {
        assert_eq!(
            split_args(".text.f,\"axG\",@progbits,f,comdat"),
            [".text.f", "\"axG\"", "@progbits", "f", "comdat"]
        );
        assert_eq!(split_args("\"a,b\", c"), ["\"a,b\"", "c"]);
        assert_eq!(split_args("x, (1,2)"), ["x", "(1,2)"]);
        assert!(split_args("").is_empty());
        assert_eq!(unquote("\".text\""), ".text");
    }
}
