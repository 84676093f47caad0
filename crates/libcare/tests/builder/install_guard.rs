//! libcare-patch-make never writes outside its work tree and never makes a patch from what an
//! earlier run installed: a project whose install target honours only PREFIX (as redis 7.0's),
//! run without `-d PREFIX` while an earlier run's install trees are still there, is refused
//! with the option it needs, and nothing appears outside the work tree (there, a directory of
//! the test's own, never /usr/local); with `-d PREFIX` the patch is made from this build.

use std::process::Command;

use crate::cases::patched_functions;
use crate::support::*;
use libcare_test_support::{build_id, copy_tree, fixtures, stderr, stdout};

#[test]
fn a_prefix_only_install_is_refused_and_stale_trees_are_never_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = tmp.path().join("project");
    let outside = tmp.path().join("outside");
    copy_tree(&fixtures().join("builder/prefix_only"), &project);
    for stale in ["lpmake/bin/prog", ".lpmaketmp/patched/bin/prog"] {
        let p = project.join(stale);
        std::fs::create_dir_all(p.parent().unwrap()).expect("mkdir");
        std::fs::write(&p, "left by an earlier run").expect("stale file");
    }
    let run_with = |args: &[&str]| {
        let mut c = Command::new(patch_make());
        c.current_dir(&project)
            .args(args)
            .args(["-i", "0001", "change.diff"])
            .env("PREFIX", &outside)
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH");
        let out = run(&mut c, 300);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        (out, text)
    };

    let (out, text) = run_with(&[]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("installing original objects failed")
            && text.contains("tried to write outside the work tree")
            && text.contains("Read-only file system")
            && text.contains("-d PREFIX"),
        "{text}"
    );
    assert!(
        !outside.exists() || files(&outside).is_empty(),
        "written outside the work tree: {:?}",
        files(&outside)
    );
    assert_eq!(
        read(&project.join("main.c")),
        read(&fixtures().join("builder/prefix_only/main.c"))
    );
    assert!(!project.join("patchroot").exists() || files(&project.join("patchroot")).is_empty());

    let (out, text) = run_with(&["-d", "PREFIX"]);
    assert!(out.status.success(), "{text}");
    let installed = project.join("lpmake/bin/prog");
    let patch = project
        .join("patchroot")
        .join(format!("{}.kpatch", build_id(&installed)));
    assert!(patch.is_file(), "{text}");
    assert_eq!(patched_functions(&patch), ["answer"]);
    assert!(!outside.exists() || files(&outside).is_empty());
}
