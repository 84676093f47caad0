//! Lists of functions given by the user: `[file:]fn,...` option values and the function
//! filter file (`/etc/libcare.conf`).

/// The name a programmer gave a function: gcc's clone suffixes (`.part.0`, `.isra.1`,
/// `.constprop.2`, `.cold`) and static-local numbering (`.3`) removed.
pub fn human_name(name: &str) -> &str {
    match name.get(1..).and_then(|r| r.find('.')) {
        Some(p) => &name[..p + 1],
        None => name,
    }
}

/// One `[file:]fn` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolEntry {
    pub file: Option<String>,
    pub name: String,
}

/// A list of `[file:]fn` entries (`--ignore-changes`, `--must-adapt`, `--unlink-symbols`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolList {
    pub entries: Vec<SymbolEntry>,
}

impl SymbolList {
    /// Adds the entries of one option value, `[file:]fn,[file:]fn,...`.
    pub fn add(&mut self, value: &str) {
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // `file:fn`; a C++ name's `::` (`geo::Point`, `a.cpp:ns::f`) is no separator.
            let sep = item
                .char_indices()
                .find(|&(i, c)| {
                    c == ':'
                        && item.as_bytes().get(i + 1) != Some(&b':')
                        && (i == 0 || item.as_bytes()[i - 1] != b':')
                })
                .map(|(i, _)| i);
            let (file, name) = match sep {
                Some(i) => (Some(item[..i].to_string()), item[i + 1..].to_string()),
                None => (None, item.to_string()),
            };
            self.entries.push(SymbolEntry { file, name });
        }
    }

    /// Parses one option value.
    pub fn parse(value: &str) -> SymbolList {
        let mut l = SymbolList::default();
        l.add(value);
        l
    }

    /// Whether `symbol` (or the function it was cloned from) is listed for a file known by
    /// any of `files` (source names from `.file`, input paths).
    pub fn contains(&self, symbol: &str, files: &[&str]) -> bool {
        self.entries.iter().any(|e| {
            (e.name == symbol || e.name == human_name(symbol))
                && e.file.as_deref().is_none_or(|want| {
                    files.iter().any(|f| {
                        let base = f.rsplit('/').next().unwrap_or(f);
                        *f == want || base == want || base.starts_with(want)
                    })
                })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The function filter: when configured, only changed functions listed in it are patched.
///
/// A function is listed when a line of the file starts with its name (the rule of
/// LibcarePlus, so `foo` is also covered by a line `foo_bar`); leading blanks and lines
/// starting with `#` are skipped. A file with no other line is "not configured".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionFilter {
    lines: Vec<String>,
}

impl FunctionFilter {
    /// The filter described by a file's text; `None` when it lists nothing.
    pub fn from_text(text: &str) -> Option<FunctionFilter> {
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        (!lines.is_empty()).then_some(FunctionFilter { lines })
    }

    /// Whether changes to `function` may enter the patch.
    pub fn allows(&self, function: &str) -> bool {
        let name = human_name(function);
        self.lines.iter().any(|l| l.starts_with(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_names() {
        assert_eq!(human_name("foo.part.0"), "foo");
        assert_eq!(human_name("foo.cold"), "foo");
        assert_eq!(human_name("n.3"), "n");
        assert_eq!(human_name("foo"), "foo");
        assert_eq!(human_name(".LC0"), ".LC0");
    }

    #[test]
    fn symbol_list_with_files() {
        let mut l = SymbolList::parse("foo,bar.c:baz");
        l.add("qux");
        assert!(l.contains("foo", &["x.c"]));
        assert!(l.contains("foo.isra.0", &[]));
        assert!(l.contains("baz", &["bar.c"]));
        assert!(l.contains("baz", &["/tmp/bar.c"]));
        assert!(!l.contains("baz", &["other.c"]));
        assert!(l.contains("qux", &[]));
        assert!(!l.contains("fo", &[]));
        assert!(SymbolList::parse(" , ").is_empty());
        // C++ names keep their `::`.
        let l = SymbolList::parse("geo::Point,a.cpp:ns::f");
        assert!(l.contains("geo::Point", &[]));
        assert!(l.contains("ns::f", &["a.cpp"]));
        assert!(!l.contains("ns::f", &["b.cpp"]));
    }

    #[test]
    fn filter_rules() {
        assert!(FunctionFilter::from_text("").is_none());
        assert!(FunctionFilter::from_text("\n  \n# only a comment\n").is_none());
        let f = FunctionFilter::from_text("# patch these\nprint_hello\n  other_fn\n").unwrap();
        assert!(f.allows("print_hello"));
        assert!(f.allows("print"), "prefix rule of the peer");
        assert!(f.allows("other_fn.part.0"));
        assert!(!f.allows("main"));
    }
}
