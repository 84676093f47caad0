//! A patch built by hand, as the user guide's first walkthrough does it: `kpatch_gensrc` on
//! the original and patched assembly, a link with `-Wl,-q`, `kpatch_strip` and
//! `strip --strip-unneeded`, then `kpatch_make`.

use std::path::Path;
use std::process::Command;

use crate::command::{run_ok, stdout};
use crate::tools::tool;

/// The GNU build-id of an ELF file, as lowercase hex.
pub fn build_id(path: &Path) -> String {
    use object::Object;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = object::File::parse(&*data).expect("parse ELF");
    let id = file
        .build_id()
        .expect("read the notes")
        .unwrap_or_else(|| panic!("{} has no build-id", path.display()));
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `kpatch_gensrc --os=rhel6 -i ORIG -i PATCHED -o COMBINED --force-global EXTRA...` in `dir`.
pub fn gensrc(dir: &Path, orig: &str, patched: &str, combined: &str, extra: &[&str]) {
    run_ok(
        tool("kpatch_gensrc", dir)
            .args([
                "--os=rhel6",
                "-i",
                orig,
                "-i",
                patched,
                "-o",
                combined,
                "--force-global",
            ])
            .args(extra),
    );
}

/// The four strip steps in `dir`: `kpatch_strip --strip LINKED STRIPPED`, `--rel-fixup
/// ORIGINAL STRIPPED`, `strip --strip-unneeded STRIPPED` and `--undo-link ORIGINAL STRIPPED`.
/// Returns what `--rel-fixup` printed.
pub fn strip_steps(dir: &Path, original: &str, linked: &str, stripped: &str) -> String {
    run_ok(tool("kpatch_strip", dir).args(["--strip", linked, stripped]));
    let fixup = run_ok(tool("kpatch_strip", dir).args(["--rel-fixup", original, stripped]));
    run_ok(
        Command::new("strip")
            .args(["--strip-unneeded", stripped])
            .current_dir(dir),
    );
    run_ok(tool("kpatch_strip", dir).args(["--undo-link", original, stripped]));
    stdout(&fixup)
}

/// `kpatch_make -b BUILD_ID -i ID STRIPPED -o OUT` in `dir`.
pub fn kpatch_make(dir: &Path, build_id: &str, id: &str, stripped: &str, out: &str) {
    run_ok(tool("kpatch_make", dir).args(["-b", build_id, "-i", id, stripped, "-o", out]));
}
