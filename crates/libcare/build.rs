//! Records the git commit the binaries are built from, for `--version`. Outside a git tree (a
//! source tarball) `LIBCARE_GIT_COMMIT` names it, else it is "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Rebuilds when HEAD moves: HEAD itself (a branch switch), the branch's ref (a commit), or
/// packed-refs (a ref packed by `git gc`). Only existing files: a missing one would make cargo
/// run this script on every build.
fn watch_head() {
    let mut files = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for f in files {
        if let Some(path) = git(&["rev-parse", "--git-path", &f]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBCARE_GIT_COMMIT");
    watch_head();
    let commit = std::env::var("LIBCARE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LIBCARE_GIT_COMMIT={commit}");
}
