//! `.kpatch.depends`: what a patch built on top of earlier patches of its object needs from
//! them. `kpatch_strip --rel-fixup` writes the symbols it takes from them (the placeholders of
//! `kpatch_gensrc --earlier`, left undefined), `kpatch_make --after` the patch-ids it must be
//! applied after. The runtime resolves those symbols in those patches and keeps them from
//! being removed first; LibcarePlus loads the section and ignores it.
//!
//! The contents are NUL-terminated strings, `patch:ID` or `symbol:NAME`, in any order; other
//! strings are skipped, so that later kinds can be added.

/// What a patch needs from earlier patches of its object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depends {
    /// The patch-ids of the patches it must be applied after, in the order given.
    pub patches: Vec<String>,
    /// The symbols it takes from them.
    pub symbols: Vec<String>,
}

const PATCH: &str = "patch:";
const SYMBOL: &str = "symbol:";

impl Depends {
    /// Whether it needs nothing.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty() && self.symbols.is_empty()
    }

    /// Reads the section's contents.
    pub fn parse(bytes: &[u8]) -> Depends {
        let mut d = Depends::default();
        for entry in bytes.split(|&b| b == 0) {
            let entry = String::from_utf8_lossy(entry);
            if let Some(id) = entry.strip_prefix(PATCH) {
                d.add_patch(id);
            } else if let Some(name) = entry.strip_prefix(SYMBOL) {
                d.add_symbol(name);
            }
        }
        d
    }

    /// The section's contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let entries = self.patches.iter().map(|p| (PATCH, p));
        for (kind, value) in entries.chain(self.symbols.iter().map(|s| (SYMBOL, s))) {
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        out
    }

    /// Adds a patch-id (once).
    pub fn add_patch(&mut self, id: &str) {
        if !id.is_empty() && !self.patches.iter().any(|p| p == id) {
            self.patches.push(id.to_owned());
        }
    }

    /// Adds a symbol (once).
    pub fn add_symbol(&mut self, name: &str) {
        if !name.is_empty() && !self.symbols.iter().any(|s| s == name) {
            self.symbols.push(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_once_each_and_unknown_ones_are_skipped() {
        let mut d = Depends::default();
        d.add_symbol("added_next");
        d.add_patch("0001");
        d.add_symbol("added_next");
        d.add_symbol("added_count");
        d.add_patch("0001");
        let bytes = d.to_bytes();
        assert_eq!(
            bytes,
            b"patch:0001\0symbol:added_next\0symbol:added_count\0".to_vec()
        );
        assert_eq!(Depends::parse(&bytes), d);
        let mut later = b"future:x\0".to_vec();
        later.extend(&bytes);
        assert_eq!(Depends::parse(&later), d);
        assert!(Depends::parse(b"").is_empty());
    }
}
