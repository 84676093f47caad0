//! What the storage, `-p all`, server and layout tests share: the `greet` fixture and its
//! patches built by hand.

use std::path::{Path, PathBuf};

pub use libcare_test_support::*;

/// The original program's greeting.
pub const ORIGINAL: &str = "original";

/// Compiles fixture `source` (under tests/fixtures/storage) printing `greeting` to
/// `dir/NAME.s`.
fn assembly(dir: &Path, source: &str, name: &str, greeting: &str) -> String {
    let src = dir.join(source);
    if !src.exists() {
        std::fs::copy(fixtures().join("storage").join(source), &src).expect("copy fixture");
    }
    let s = format!("{name}.s");
    gcc(
        dir,
        &[
            "-O2",
            "-S",
            &format!("-DGREETING=\"{greeting}\""),
            source,
            "-o",
            &s,
        ],
    );
    s
}

/// Builds the program `dir/NAME` from `greet.c` printing `greeting`; returns its path and
/// build-id.
pub fn build_target(dir: &Path, name: &str, greeting: &str) -> (PathBuf, String) {
    let s = assembly(dir, "greet.c", name, greeting);
    gcc(dir, &["-o", name, &s]);
    let exe = dir.join(name);
    let bid = build_id(&exe);
    (exe, bid)
}

/// Builds, with our tools and the user guide's commands, a patch with patch-id `id` that makes
/// program `target` (built by [`build_target`]) print `greeting`; returns the `.kpatch` path.
pub fn build_patch(dir: &Path, target: &str, greeting: &str, id: &str) -> PathBuf {
    build_patch_edited(dir, target, greeting, id, &|_| {})
}

/// [`build_patch`], with `edit` applied to the payload ELF file just before `kpatch_make`.
pub fn build_patch_edited(
    dir: &Path,
    target: &str,
    greeting: &str,
    id: &str,
    edit: &dyn Fn(&Path),
) -> PathBuf {
    let name = format!("{target}-{id}");
    let patched = assembly(dir, "greet.c", &name, greeting);
    let combined = format!("{name}.combined.s");
    gensrc(dir, &format!("{target}.s"), &patched, &combined, &[]);
    let linked = format!("{name}.patched");
    gcc(dir, &["-o", &linked, &combined, "-Wl,-q"]);
    let stripped = format!("{name}.stripped");
    strip_steps(dir, target, &linked, &stripped);
    edit(&dir.join(&stripped));
    let bid = build_id(&dir.join(target));
    let out = format!("{name}.kpatch");
    kpatch_make(dir, &bid, id, &stripped, &out);
    dir.join(out)
}

/// Lines of `text` that are a `libcare-ctl` result line (one per process it looked at).
pub fn result_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.contains("patch hunk(s) have been successfully applied to PID")
                || l.starts_with("No patch(es) applicable to PID")
                || l.starts_with("Failed to apply patch")
                || l.contains("patch hunk(s) were successfully cancelled from PID")
                || l.starts_with("No patch(es) cancellable from PID")
                || l.starts_with("Failed to cancel patches for")
        })
        .collect()
}
