//! Pairing the variables of the original file with those of the patched file.
//!
//! Variables are paired by name. gcc names a function's static local `n` as `n.<N>`, with
//! `N` counted over the whole file, so adding one elsewhere renumbers the others. Two
//! same-named statics can therefore be different variables; when both files show which
//! functions use them and the users differ, the name pairing is dropped and the variable is
//! paired instead with the unique original of the same base name and the same users.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::index::BlockKind;
use crate::lex::{tokenize, TokKind};
use crate::parse::AsmFile;
use crate::symlist::human_name;

/// The result of pairing: for each variable of the patched file that has a counterpart,
/// the counterpart's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariablePairs {
    /// Patched name → original name.
    pub pairs: HashMap<String, String>,
}

impl VariablePairs {
    /// Names of the patched file whose counterpart in the original is called differently.
    pub fn renames(&self) -> HashMap<String, String> {
        self.pairs
            .iter()
            .filter(|(p, o)| p != o)
            .map(|(p, o)| (p.clone(), o.clone()))
            .collect()
    }
}

/// Whether `name` looks like gcc's name for a static local (`n.3`).
fn is_numbered_static(file: &AsmFile, name: &str) -> bool {
    file.binding(name) == crate::index::Binding::Local
        && name.rsplit_once('.').is_some_and(|(b, n)| {
            !b.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
        })
}

/// For each variable, the functions whose blocks mention it.
fn users(file: &AsmFile) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for b in file
        .blocks()
        .iter()
        .filter(|b| b.kind == BlockKind::Function)
    {
        for (_, s) in file.stmts_in(b.lines.clone()) {
            for t in tokenize(&s.text, &file.dialect) {
                if t.kind == TokKind::Ident && file.variable(t.text).is_some() {
                    out.entry(t.text.to_string())
                        .or_default()
                        .insert(b.name.clone());
                }
            }
        }
    }
    out
}

/// Pairs the variables of `patched` with those of `orig`. Read-only file-local objects are
/// left out: they are compared by content wherever they are used.
pub fn pair_variables(orig: &AsmFile, patched: &AsmFile) -> VariablePairs {
    let vars = |f: &AsmFile| -> Vec<String> {
        f.blocks()
            .iter()
            .filter(|b| b.kind == BlockKind::Variable && !f.is_readonly_local_object(&b.name))
            .map(|b| b.name.clone())
            .collect()
    };
    let orig_vars = vars(orig);
    let patched_vars = vars(patched);
    let orig_set: HashSet<&String> = orig_vars.iter().collect();
    let (ou, pu) = (users(orig), users(patched));
    let empty = BTreeSet::new();
    let users_of =
        |m: &HashMap<String, BTreeSet<String>>, n: &str| m.get(n).unwrap_or(&empty).clone();

    let mut pairs = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut postponed = Vec::new();
    for p in &patched_vars {
        if orig_set.contains(p) {
            let (uo, up) = (users_of(&ou, p), users_of(&pu, p));
            let disagree =
                is_numbered_static(patched, p) && !uo.is_empty() && !up.is_empty() && uo != up;
            if !disagree {
                pairs.insert(p.clone(), p.clone());
                taken.insert(p.clone());
                continue;
            }
        }
        if is_numbered_static(patched, p) {
            postponed.push(p.clone());
        }
    }
    for p in postponed {
        let up = users_of(&pu, &p);
        if up.is_empty() {
            continue;
        }
        let candidates: Vec<&String> = orig_vars
            .iter()
            .filter(|o| {
                !taken.contains(*o)
                    && is_numbered_static(orig, o)
                    && human_name(o) == human_name(&p)
                    && users_of(&ou, o) == up
            })
            .collect();
        if let [only] = candidates.as_slice() {
            taken.insert((*only).clone());
            pairs.insert(p.clone(), (*only).clone());
        }
    }
    VariablePairs { pairs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn file(text: &str) -> AsmFile {
        AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap()
    }

    fn user_fn(f: &str, var: &str) -> String {
        format!("\t.text\n\t.type\t{f}, @function\n{f}:\n\tmovl\t{var}(%rip), %eax\n\tret\n\t.size\t{f}, .-{f}\n")
    }

    fn static_var(v: &str) -> String {
        format!("\t.data\n\t.align 4\n\t.type\t{v}, @object\n\t.size\t{v}, 4\n{v}:\n\t.long\t3\n")
    }

    #[test]
    fn same_names_pair() {
        let o = file(&(user_fn("f", "counter") + &static_var("counter")));
        let p = file(&(user_fn("f", "counter") + &static_var("counter")));
        let m = pair_variables(&o, &p);
        assert_eq!(m.pairs.get("counter").map(String::as_str), Some("counter"));
        assert!(m.renames().is_empty());
    }

    #[test]
    fn renumbered_statics_pair_by_their_users() {
        // Original: f uses n.0, g uses n.1. Patched: a new h takes n.0, f has n.1, g has n.2.
        let o = file(
            &(user_fn("f", "n.0") + &user_fn("g", "n.1") + &static_var("n.0") + &static_var("n.1")),
        );
        let p = file(
            &(user_fn("h", "n.0")
                + &user_fn("f", "n.1")
                + &user_fn("g", "n.2")
                + &static_var("n.0")
                + &static_var("n.1")
                + &static_var("n.2")),
        );
        let m = pair_variables(&o, &p);
        assert_eq!(m.pairs.get("n.1").map(String::as_str), Some("n.0"));
        assert_eq!(m.pairs.get("n.2").map(String::as_str), Some("n.1"));
        assert_eq!(m.pairs.get("n.0"), None, "h's static is new");
    }

    #[test]
    fn readonly_locals_are_not_paired() {
        let ro = "\t.section\t.rodata\n\t.type\tCSWTCH.1, @object\n\t.size\tCSWTCH.1, 4\nCSWTCH.1:\n\t.long\t1\n";
        let m = pair_variables(&file(ro), &file(ro));
        assert!(m.pairs.is_empty());
    }
}
