//! The lookup scope for a patch's undefined symbols: the dynamic symbols of the objects loaded
//! in the target, in the dynamic linker's search order (executable first, then libraries in
//! load order), with symbol versions honoured.

use std::sync::Arc;

use crate::elf_image::{ElfImage, SymKind};

/// One object of the scope.
#[derive(Debug, Clone)]
pub struct ScopeObject {
    pub name: String,
    pub load_bias: u64,
    pub image: Arc<ElfImage>,
}

/// A symbol found in the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Run-time address (for an IFUNC: of its resolver).
    pub addr: u64,
    pub kind: SymKind,
    /// Name of the defining object.
    pub object: String,
}

/// Objects in search order.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub objects: Vec<ScopeObject>,
}

impl Scope {
    /// The first definition of `name` (with `version`, if given) in search order. TLS
    /// definitions are skipped: their values are not addresses.
    pub fn lookup(&self, name: &str, version: Option<&str>) -> Option<Found> {
        self.objects.iter().find_map(|o| {
            let d = o.image.lookup(name, version)?;
            if d.kind == SymKind::Tls {
                return None;
            }
            Some(Found {
                addr: d.value.wrapping_add(o.load_bias),
                kind: d.kind,
                object: o.name.clone(),
            })
        })
    }
}
