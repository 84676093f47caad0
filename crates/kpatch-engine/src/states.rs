//! States (`LIBCARE_STATE(id, version)`, the kernel's `klp_state`): a patch must carry every
//! state that an applied patch (with another patch-id) set, at the same or a higher version,
//! or it is refused before anything is changed.

use std::collections::BTreeMap;

use kpatch_file::StateDecl;
use kpatch_process::Memory;

use crate::discover::Loaded;
use crate::error::{Error, Result};
use crate::extras::Extras;

/// The states each committed patch of `loaded` set, by patch-id, in application order.
pub fn applied(mem: &dyn Memory, loaded: &Loaded) -> Vec<(String, Vec<StateDecl>)> {
    let mut patches: Vec<_> = loaded.patches.iter().filter(|p| p.committed).collect();
    patches.sort_by_key(|p| p.header.applied_seq());
    patches
        .into_iter()
        .map(|p| (p.id.clone(), Extras::of_region(mem, p).states))
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Checks the patches about to be applied (patch-id, the states of each of its files) against
/// the states of the applied ones.
pub fn check(
    pid: i32,
    new: &[(&str, &[StateDecl])],
    applied: &[(String, Vec<StateDecl>)],
) -> Result<()> {
    let mut by_id: BTreeMap<&str, Vec<StateDecl>> = BTreeMap::new();
    for (id, states) in new {
        by_id.entry(id).or_default().extend_from_slice(states);
    }
    for (id, carried) in &by_id {
        for (by, set) in applied.iter().filter(|(by, _)| by != id) {
            for s in set {
                let version = carried
                    .iter()
                    .filter(|c| c.id() == s.id())
                    .map(StateDecl::version)
                    .max();
                match version {
                    None => {
                        return Err(Error::StateMissing {
                            id: (*id).to_owned(),
                            state: s.id(),
                            version: s.version(),
                            by: by.clone(),
                            pid,
                        })
                    }
                    Some(v) if v < s.version() => {
                        return Err(Error::StateDowngrade {
                            id: (*id).to_owned(),
                            state: s.id(),
                            version: v,
                            applied: s.version(),
                            by: by.clone(),
                            pid,
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_must_carry_the_applied_states_at_their_version_or_higher() {
        let applied = vec![("0001".to_owned(), vec![StateDecl::new(7, 2)])];
        let ok = [StateDecl::new(7, 2)];
        assert!(check(1, &[("0002", &ok)], &applied).is_ok());
        let higher = [StateDecl::new(7, 3), StateDecl::new(8, 1)];
        assert!(check(1, &[("0002", &higher)], &applied).is_ok());
        let err = check(1, &[("0002", &[])], &applied).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "patch 0002 does not carry state 7 (version 2) that applied patch 0001 set"
            ),
            "{err}"
        );
        let lower = [StateDecl::new(7, 1)];
        let err = check(1, &[("0002", &lower)], &applied).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("patch 0002 carries state 7 at version 1, lower than version 2"),
            "{err}"
        );
        // Another file of the same patch need not repeat its states.
        assert!(check(1, &[("0001", &[])], &applied).is_ok());
    }
}
