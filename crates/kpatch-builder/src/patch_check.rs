//! The last check before a patch is announced: it must hold what this run's `kpatch_gensrc`
//! put into the patched build, and nothing else. A patch made from an install tree an earlier
//! run left (or from a program the install step did not take from this build) holds another
//! change; it is refused rather than reported as made.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use object::{Object, ObjectSection};

/// The functions a `.kpatch` file patches or adds (its `.kpatch.strtab`, `.kpatch` suffixes
/// removed); empty if it cannot be read.
pub(crate) fn kpatch_functions(path: &Path) -> BTreeSet<String> {
    let Ok(data) = fs::read(path) else {
        return BTreeSet::new();
    };
    let Some(elf) = data
        .get(kpatch_file::HEADER_SIZE..)
        .and_then(|p| object::File::parse(p).ok())
    else {
        return BTreeSet::new();
    };
    let Some(bytes) = elf
        .section_by_name(".kpatch.strtab")
        .and_then(|s| s.data().ok())
    else {
        return BTreeSet::new();
    };
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| unsuffixed(&String::from_utf8_lossy(s)))
        .collect()
}

fn unsuffixed(name: &str) -> String {
    name.strip_suffix(".kpatch").unwrap_or(name).to_string()
}

/// The functions named in the `.kpatch.strtab` sections of a combined assembly file.
fn asm_functions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_strtab = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with(".pushsection") {
            in_strtab = t.contains(".kpatch.strtab");
        } else if t.starts_with(".popsection") {
            in_strtab = false;
        } else if in_strtab {
            if let Some(name) = t
                .strip_prefix(".string")
                .map(str::trim)
                .and_then(|s| s.strip_prefix('"'))
                .and_then(|s| s.strip_suffix('"'))
            {
                out.push(unsuffixed(name));
            }
        }
    }
    out
}

/// The functions `kpatch_gensrc` patched in this run: those of the combined assembly files
/// (`<prefix>NAME.s`, not the `.original.s`/`.patched.s` ones) under `roots` written since
/// `since`, directories in `skip` (and `.git`) left out. `None` if there is none to read.
pub(crate) fn patched_in_run(
    roots: &[&Path],
    skip: &[PathBuf],
    prefix: &str,
    since: SystemTime,
) -> Option<BTreeSet<String>> {
    fn walk(
        dir: &Path,
        skip: &[PathBuf],
        prefix: &str,
        since: SystemTime,
        seen: &mut BTreeSet<PathBuf>,
        out: &mut BTreeSet<String>,
    ) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.filter_map(Result::ok) {
            let path = e.path();
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                if e.file_name() != ".git" && !skip.contains(&path) {
                    walk(&path, skip, prefix, since, seen, out);
                }
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let combined = !prefix.is_empty()
                && name.starts_with(prefix)
                && name.ends_with(".s")
                && !name.ends_with(".original.s")
                && !name.ends_with(".patched.s");
            let fresh = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if combined && fresh && seen.insert(path.clone()) {
                if let Ok(text) = fs::read_to_string(&path) {
                    out.extend(asm_functions(&text));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for r in roots {
        walk(r, skip, prefix, since, &mut seen, &mut out);
    }
    (!seen.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtab_names_of_combined_assembly() {
        let text = "\t.text\n\t.string \"not me\"\n\t.pushsection .kpatch.strtab,\"a\",@progbits\n.Lkpatch_str0:\n\t.string \"scale.kpatch\"\n.Lkpatch_str1:\n\t.string \"extra\"\n\t.popsection\n";
        assert_eq!(asm_functions(text), ["scale", "extra"]);
    }

    #[test]
    fn only_this_runs_combined_files() {
        let d = tempfile::tempdir().unwrap();
        let strtab = ".pushsection .kpatch.strtab\n.string \"f.kpatch\"\n.popsection\n";
        fs::write(d.path().join(".kpatch_a.o.original.s"), strtab).unwrap();
        let since = SystemTime::now() - std::time::Duration::from_secs(5);
        assert_eq!(patched_in_run(&[d.path()], &[], ".kpatch_", since), None);
        fs::write(d.path().join(".kpatch_a.o.s"), strtab).unwrap();
        let got = patched_in_run(&[d.path()], &[], ".kpatch_", since).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["f"]);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(patched_in_run(&[d.path()], &[], ".kpatch_", later), None);
    }
}
