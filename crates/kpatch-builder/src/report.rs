//! What each patch replaces, and why: `kpatch_gensrc --report` appends a line per function
//! to a file during the patched stage (`source<TAB>function<TAB>why`); the driver matches
//! them with the names a patch's `.kpatch.strtab` holds.

use std::io;
use std::path::Path;

/// One function of a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub function: String,
    /// Whether the patch adds it rather than replacing an original.
    pub new: bool,
    /// The source file(s) and why, as `kpatch_gensrc` said (several when static functions of
    /// the same name in several files changed).
    pub why: String,
}

/// The report's lines: (source, function, why).
pub fn read(path: &Path) -> io::Result<Vec<(String, String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect())
}

/// The functions of a patch (`.kpatch.strtab` names), each with why it is there.
pub fn explain(names: &[String], lines: &[(String, String, String)]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for name in names {
        let (function, new) = match name.strip_suffix(".kpatch") {
            Some(f) => (f.to_string(), false),
            None => (name.clone(), true),
        };
        if out.iter().any(|e| e.function == function && e.new == new) {
            continue;
        }
        let reasons: Vec<String> = lines
            .iter()
            .filter(|(_, f, why)| *f == function && (why == "new") == new)
            .map(|(src, _, why)| format!("{src}: {why}"))
            .collect();
        let why = if reasons.is_empty() {
            "why unknown (no kpatch_gensrc report)".to_string()
        } else {
            reasons.join("; ")
        };
        out.push(Entry { function, new, why });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(src: &str, f: &str, why: &str) -> (String, String, String) {
        (src.into(), f.into(), why.into())
    }

    #[test]
    fn names_are_matched_with_their_reasons() {
        let lines = [
            line("a.c", "f", "changed"),
            line("b.c", "g", "changed code inlined into it, from b.h:3"),
            line("b.c", "h", "new"),
            line("c.c", "g", "line moved (+2; it uses __LINE__)"),
        ];
        let names = ["f.kpatch", "g.kpatch", "h", "g.kpatch", "k.kpatch"].map(String::from);
        let e = explain(&names, &lines);
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].function.as_str(), e[0].new), ("f", false));
        assert_eq!(e[0].why, "a.c: changed");
        assert_eq!(
            e[1].why,
            "b.c: changed code inlined into it, from b.h:3; c.c: line moved (+2; it uses __LINE__)"
        );
        assert!(e[2].new);
        assert_eq!(e[2].why, "b.c: new");
        assert!(e[3].why.starts_with("why unknown"));
    }

    #[test]
    fn a_missing_report_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(&d.path().join("none")).unwrap().is_empty());
        let p = d.path().join("r");
        std::fs::write(&p, "a.c\tf\tchanged\nbroken line\n").unwrap();
        assert_eq!(read(&p).unwrap(), [line("a.c", "f", "changed")]);
    }
}
