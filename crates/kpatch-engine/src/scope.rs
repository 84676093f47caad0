//! The lookup scope for a patch's undefined symbols: the dynamic symbols of the objects loaded
//! in the target, in the dynamic linker's search order (executable first, then libraries in
//! load order, as its `link_map` chain lists them), with symbol versions honoured.

use std::sync::Arc;

use kpatch_process::Memory;

use crate::discover::LoadedObject;
use crate::elf_image::{ElfImage, SymKind};

/// `struct r_debug` (64-bit): offset of `r_map`, the head of the `link_map` chain (after the
/// `int r_version` and its padding).
const R_DEBUG_R_MAP: u64 = 8;
/// `struct link_map` (64-bit): offset of `l_addr`, the object's load bias.
const LINK_MAP_L_ADDR: u64 = 0;
/// `struct link_map`: offset of `l_next` (after `l_addr`, `l_name` and `l_ld`).
const LINK_MAP_L_NEXT: u64 = 24;
/// A chain longer than this is taken as corrupt.
const MAX_LINK_MAPS: usize = 4096;

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

impl Scope {
    /// The scope of a process with `objects` loaded: the objects in the order of the dynamic
    /// linker's `link_map` chain when it can be read from `mem` (the executable first, then
    /// libraries in load order), else the executable followed by the others in address order.
    pub fn of(mem: &dyn Memory, objects: &[LoadedObject]) -> Scope {
        let to_scope = |o: &LoadedObject| ScopeObject {
            name: o.name.clone(),
            load_bias: o.load_bias,
            image: o.image.clone(),
        };
        let mut order: Vec<&LoadedObject> = Vec::new();
        if let Some(chain) = link_map_biases(mem, objects) {
            for bias in chain {
                if let Some(o) = objects
                    .iter()
                    .find(|o| o.load_bias == bias && !order.iter().any(|p| std::ptr::eq(*p, *o)))
                {
                    order.push(o);
                }
            }
        }
        // Anything the chain missed (or all of it, without a chain), executable first.
        let mut rest: Vec<&LoadedObject> = objects
            .iter()
            .filter(|o| !order.iter().any(|p| std::ptr::eq(*p, *o)))
            .collect();
        rest.sort_by_key(|o| !o.is_exe);
        order.extend(rest);
        Scope {
            objects: order.into_iter().map(to_scope).collect(),
        }
    }
}

/// Load biases along `_r_debug.r_map`, found through the executable's `DT_DEBUG`.
fn link_map_biases(mem: &dyn Memory, objects: &[LoadedObject]) -> Option<Vec<u64>> {
    let exe = objects.iter().find(|o| o.is_exe)?;
    let slot = exe.image.dt_debug?.wrapping_add(exe.load_bias);
    let r_debug = mem.read_u64(slot).ok().filter(|&a| a != 0)?;
    let mut map = mem.read_u64(r_debug + R_DEBUG_R_MAP).ok()?;
    let mut out = Vec::new();
    while map != 0 && out.len() < MAX_LINK_MAPS {
        out.push(mem.read_u64(map + LINK_MAP_L_ADDR).ok()?);
        map = mem.read_u64(map + LINK_MAP_L_NEXT).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess};

    const EXE: u64 = 0x5555_0000_0000;
    const LIBFOO: u64 = 0x7e00_0000_0000;
    const LIBC: u64 = 0x7f00_0000_0000;
    /// Where ld.so's `_r_debug` and `link_map`s are.
    const R_DEBUG: u64 = 0x6000_0000;

    /// An executable, and two libraries that both define `puts`, in address order; libc was
    /// loaded first.
    fn process() -> (FakeProcess, Vec<LoadedObject>) {
        let mut exe = fake::image(&"aa".repeat(20), &[("main", 0x1000)]);
        exe.dt_debug = Some(0x3000);
        let objects = vec![
            fake::object("app", EXE..EXE + 0x10000, exe, true),
            fake::object(
                "libfoo.so",
                LIBFOO..LIBFOO + 0x10000,
                fake::image(&"bb".repeat(20), &[("puts", 0x100)]),
                false,
            ),
            fake::object(
                "libc.so.6",
                LIBC..LIBC + 0x10000,
                fake::image(&"cc".repeat(20), &[("puts", 0x200)]),
                false,
            ),
        ];
        let proc = FakeProcess::x86_64();
        proc.map(EXE, vec![0; 0x10000]);
        proc.map(R_DEBUG, vec![0; 0x1000]);
        proc.poke_words(EXE + 0x3000, &[R_DEBUG]);
        proc.poke_words(R_DEBUG + R_DEBUG_R_MAP, &[R_DEBUG + 0x100]);
        for (i, bias) in [EXE, LIBC, LIBFOO].into_iter().enumerate() {
            let map = R_DEBUG + 0x100 * (i as u64 + 1);
            let next = if i == 2 { 0 } else { map + 0x100 };
            proc.poke_words(map + LINK_MAP_L_ADDR, &[bias]);
            proc.poke_words(map + LINK_MAP_L_NEXT, &[next]);
        }
        (proc, objects)
    }

    fn names(scope: &Scope) -> Vec<&str> {
        scope.objects.iter().map(|o| o.name.as_str()).collect()
    }

    #[test]
    fn symbols_are_looked_up_in_the_dynamic_linkers_order() {
        let (proc, objects) = process();
        let scope = Scope::of(&proc, &objects);
        assert_eq!(names(&scope), ["app", "libc.so.6", "libfoo.so"]);
        let puts = scope.lookup("puts", None).unwrap();
        assert_eq!(
            (puts.addr, puts.object.as_str()),
            (LIBC + 0x200, "libc.so.6")
        );
        assert_eq!(scope.lookup("main", None).unwrap().addr, EXE + 0x1000);
        assert!(scope.lookup("printf", None).is_none());
    }

    #[test]
    fn without_the_chain_the_executable_comes_first_then_address_order() {
        let (proc, objects) = process();
        // ld.so has not set DT_DEBUG's value (a static executable, say).
        proc.poke_words(EXE + 0x3000, &[0]);
        let scope = Scope::of(&proc, &objects);
        assert_eq!(names(&scope), ["app", "libfoo.so", "libc.so.6"]);
        assert_eq!(scope.lookup("puts", None).unwrap().object, "libfoo.so");
    }
}
