//! Sections of an assembler file and the assembler's section state machine
//! (`.section`, `.pushsection`/`.popsection`, `.previous`, `.subsection`).

use std::collections::HashMap;

use crate::lex::{split_args, unquote};

/// Index of a section in [`Sections`].
pub type SectionId = usize;

/// Where a statement's bytes go: a section and a subsection number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecRef {
    pub id: SectionId,
    pub sub: i64,
}

/// A section as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    /// The flags string of the first declaration that gave one (`"ax"`), if any.
    pub flags: Option<String>,
    /// The type of the first declaration that gave one (`progbits`, `nobits`), if any.
    pub sh_type: Option<String>,
    /// The group of a section declared with the `G` flag (`.text._Z1fv,"axG",@progbits,
    /// _Z1fv,comdat`: an inline function's or a template instance's COMDAT group).
    pub group: Option<String>,
}

impl SectionInfo {
    /// The flags the assembler uses: the declared ones, or gas's defaults for well-known names.
    pub fn effective_flags(&self) -> &str {
        if let Some(f) = &self.flags {
            return f;
        }
        let n = self.name.as_str();
        let has = |p: &str| n == p || n.starts_with(&format!("{p}."));
        if has(".text") || n == ".init" || n == ".fini" {
            "ax"
        } else if has(".tdata") || has(".tbss") {
            "awT"
        } else if has(".data") || has(".bss") || n == ".init_array" || n == ".fini_array" {
            "aw"
        } else if has(".rodata") || n == ".eh_frame" || n == ".gcc_except_table" {
            "a"
        } else {
            ""
        }
    }

    /// Whether the section holds code.
    pub fn is_code(&self) -> bool {
        self.effective_flags().contains('x')
    }

    /// Whether the section's bytes may change at run time. `.data.rel.ro*` is written only
    /// by the dynamic loader, so it counts as read-only.
    pub fn is_writable(&self) -> bool {
        self.effective_flags().contains('w') && !self.name.starts_with(".data.rel.ro")
    }

    /// Whether the section holds thread-local data.
    pub fn is_tls(&self) -> bool {
        self.effective_flags().contains('T')
    }

    /// Whether the section occupies no file space (`.bss`).
    pub fn is_nobits(&self) -> bool {
        self.sh_type.as_deref() == Some("nobits")
            || self.name == ".bss"
            || self.name.starts_with(".bss.")
            || self.name.starts_with(".tbss")
    }

    /// Whether the section is loaded into memory.
    pub fn is_alloc(&self) -> bool {
        self.effective_flags().contains('a')
    }

    /// Whether the section carries only debugging information.
    pub fn is_debug(&self) -> bool {
        self.name.starts_with(".debug_") || self.name.starts_with(".zdebug_")
    }
}

/// The sections of a file, by first appearance; `.text` is always section 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    list: Vec<SectionInfo>,
    by_name: HashMap<String, SectionId>,
}

impl Sections {
    fn new() -> Sections {
        let mut s = Sections {
            list: Vec::new(),
            by_name: HashMap::new(),
        };
        s.intern(".text", None, None, None);
        s
    }

    fn intern(
        &mut self,
        name: &str,
        flags: Option<&str>,
        sh_type: Option<&str>,
        group: Option<&str>,
    ) -> SectionId {
        if let Some(&id) = self.by_name.get(name) {
            if let Some(info) = self.list.get_mut(id) {
                if info.flags.is_none() {
                    info.flags = flags.map(str::to_string);
                }
                if info.sh_type.is_none() {
                    info.sh_type = sh_type.map(str::to_string);
                }
                if info.group.is_none() {
                    info.group = group.map(str::to_string);
                }
            }
            return id;
        }
        let id = self.list.len();
        self.list.push(SectionInfo {
            name: name.to_string(),
            flags: flags.map(str::to_string),
            sh_type: sh_type.map(str::to_string),
            group: group.map(str::to_string),
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The section with index `id`. Every [`SecRef`] handed out by this file is valid.
    pub fn get(&self, id: SectionId) -> &SectionInfo {
        // Ids only come from `intern`; fall back to `.text` rather than panic.
        self.list.get(id).unwrap_or(&self.list[0])
    }

    /// The section named `name`, if the file uses it.
    pub fn find(&self, name: &str) -> Option<SectionId> {
        self.by_name.get(name).copied()
    }

    /// All sections.
    pub fn iter(&self) -> impl Iterator<Item = &SectionInfo> {
        self.list.iter()
    }
}

/// Whether `name` (lowercase, with the dot) is a directive that changes the current section.
pub fn is_section_directive(name: &str) -> bool {
    matches!(
        name,
        ".text"
            | ".data"
            | ".bss"
            | ".section"
            | ".pushsection"
            | ".popsection"
            | ".previous"
            | ".subsection"
    )
}

/// The assembler's section state while reading a file.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    pub sections: Sections,
    cur: SecRef,
    prev: SecRef,
    stack: Vec<(SecRef, SecRef)>,
}

impl Tracker {
    pub fn new() -> Tracker {
        let start = SecRef { id: 0, sub: 0 };
        Tracker {
            sections: Sections::new(),
            cur: start,
            prev: start,
            stack: Vec::new(),
        }
    }

    pub fn current(&self) -> SecRef {
        self.cur
    }

    fn switch(&mut self, to: SecRef) {
        self.prev = self.cur;
        self.cur = to;
    }

    /// Applies a section directive; `Err` describes a malformed one.
    pub fn apply(&mut self, name: &str, args: &str) -> Result<(), String> {
        let a = split_args(args);
        let subsection = |s: Option<&&str>| -> Result<i64, String> {
            match s {
                None => Ok(0),
                Some(&"") => Ok(0),
                Some(t) => parse_int(t).ok_or_else(|| format!("bad subsection number `{t}`")),
            }
        };
        match name {
            ".text" | ".data" | ".bss" => {
                let id = self.sections.intern(name, None, None, None);
                let sub = subsection(a.first())?;
                self.switch(SecRef { id, sub });
            }
            ".section" | ".pushsection" => {
                let Some(first) = a.first().filter(|s| !s.is_empty()) else {
                    return Err(format!("`{name}` without a section name"));
                };
                let sec = unquote(first);
                let mut sub = 0;
                let mut flags = None;
                let mut sh_type = None;
                let mut group = None;
                let rest = a.get(1..).unwrap_or(&[]);
                match rest.first() {
                    Some(f) if f.starts_with('"') => {
                        flags = Some(unquote(f));
                        sh_type = rest
                            .get(1)
                            .map(|t| t.trim_start_matches(['@', '%', '#']))
                            .map(unquote);
                        // `"axG",@progbits,GROUP[,comdat]`; `M` flags take an entry size
                        // before the group.
                        if unquote(f).contains('G') {
                            let at = if unquote(f).contains('M') { 3 } else { 2 };
                            group = rest.get(at).map(|g| unquote(g));
                        }
                    }
                    // `.pushsection name, subsection`
                    Some(n) if name == ".pushsection" => sub = subsection(Some(n))?,
                    _ => {}
                }
                let id = self.sections.intern(sec, flags, sh_type, group);
                if name == ".pushsection" {
                    self.stack.push((self.cur, self.prev));
                }
                self.switch(SecRef { id, sub });
            }
            ".popsection" => {
                let Some((cur, prev)) = self.stack.pop() else {
                    return Err("`.popsection` without a matching `.pushsection`".into());
                };
                self.cur = cur;
                self.prev = prev;
            }
            ".previous" => std::mem::swap(&mut self.cur, &mut self.prev),
            ".subsection" => {
                let sub = subsection(a.first())?;
                self.switch(SecRef {
                    id: self.cur.id,
                    sub,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses a gas integer: decimal, `0x` hex, or negative decimal.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(t: &Tracker) -> (String, i64) {
        let c = t.current();
        (t.sections.get(c.id).name.clone(), c.sub)
    }

    #[test]
    fn section_state_machine() {
        let mut t = Tracker::new();
        assert_eq!(name(&t).0, ".text");
        t.apply(".section", ".rodata.str1.1,\"aMS\",@progbits,1")
            .unwrap();
        assert_eq!(name(&t).0, ".rodata.str1.1");
        t.apply(".previous", "").unwrap();
        assert_eq!(name(&t).0, ".text");
        t.apply(".previous", "").unwrap();
        assert_eq!(name(&t).0, ".rodata.str1.1");
        t.apply(".pushsection", "__bug_table,\"aw\"").unwrap();
        t.apply(".data", "").unwrap();
        t.apply(".popsection", "").unwrap();
        assert_eq!(name(&t).0, ".rodata.str1.1");
        t.apply(".previous", "").unwrap();
        assert_eq!(name(&t).0, ".text");
        t.apply(".subsection", "2").unwrap();
        assert_eq!(name(&t), (".text".to_string(), 2));
        t.apply(".pushsection", ".text, 1").unwrap();
        assert_eq!(name(&t), (".text".to_string(), 1));
        t.apply(".popsection", "").unwrap();
        assert!(t.apply(".popsection", "").is_err());
        assert!(t.apply(".section", "").is_err());
    }

    #[test]
    fn flags_and_classification() {
        let mut t = Tracker::new();
        t.apply(".section", ".text.unlikely,\"ax\",@progbits")
            .unwrap();
        t.apply(".section", ".text.unlikely").unwrap();
        t.apply(".section", "\".data.rel.ro.local\",\"aw\"")
            .unwrap();
        t.apply(".section", ".tbss,\"awT\",@nobits").unwrap();
        t.apply(".bss", "").unwrap();
        let s = &t.sections;
        let get = |n: &str| s.get(s.find(n).unwrap());
        assert!(get(".text.unlikely").is_code());
        assert_eq!(get(".text.unlikely").flags.as_deref(), Some("ax"));
        assert!(!get(".data.rel.ro.local").is_writable());
        assert!(get(".tbss").is_tls() && get(".tbss").is_nobits());
        assert!(get(".bss").is_writable() && get(".bss").is_nobits());
        assert!(get(".text").is_code());
        t.apply(".section", ".text._Z1fv,\"axG\",@progbits,_Z1fv,comdat")
            .unwrap();
        t.apply(".section", ".rodata.x,\"aMSG\",@progbits,1,grp,comdat")
            .unwrap();
        let s = &t.sections;
        let get = |n: &str| s.get(s.find(n).unwrap());
        assert_eq!(get(".text._Z1fv").group.as_deref(), Some("_Z1fv"));
        assert_eq!(get(".rodata.x").group.as_deref(), Some("grp"));
        assert_eq!(get(".text").group, None);
    }
}
