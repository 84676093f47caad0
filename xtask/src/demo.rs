//! The live demo: the user guide's script walkthrough and its apply/query/revert section, on a
//! process whose output is shown as it runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{cargo, run};

fn say(s: &str) {
    println!("\n\x1b[1m==> {s}\x1b[0m");
}

/// Kills the demo target even when a step fails.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_demo(root: &Path) -> Result<()> {
    say("building the toolkit (release)");
    run(cargo().args(["build", "--release", "--bins", "--quiet"]))?;
    let bin = crate::target_dir(root).join("release");
    let work = crate::temp_dir("libcare-demo")?;
    let work = &work.0;
    let guide = root.join("tests/fixtures/guide");
    for f in ["foo.c", "bar.c", "Makefile"] {
        std::fs::copy(guide.join(f), work.join(f)).with_context(|| format!("copy {f}"))?;
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |script: &str| -> Result<()> {
        println!("$ {script}");
        run(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(work)
            .env("PATH", &path))
    };
    println!("working in {}", work.display());

    say("the source diff: foo.c -> bar.c");
    // diff exits 1 when the files differ.
    println!("$ diff -up foo.c bar.c > foo.patch");
    let diff = Command::new("diff")
        .args(["-up", "foo.c", "bar.c"])
        .current_dir(work)
        .output()?;
    std::fs::write(work.join("foo.patch"), &diff.stdout)?;
    print!("{}", String::from_utf8_lossy(&diff.stdout));

    say("building the patch with libcare-patch-make");
    sh("libcare-patch-make --clean -i 0001 foo.patch")?;

    say("starting the original program");
    let child = Command::new(work.join("lpmake/foo"))
        .stdout(Stdio::inherit())
        .spawn()
        .context("start lpmake/foo")?;
    let target = Guard(child);
    let pid = target.0.id();
    std::thread::sleep(Duration::from_millis(300));

    say(&format!("applying the patch to pid {pid}"));
    sh(&format!("libcare-ctl -v patch -p {pid} patchroot"))?;
    std::thread::sleep(Duration::from_millis(300));

    say("querying applied patches");
    sh(&format!("libcare-ctl info -p {pid}"))?;

    say("reverting the patch");
    sh(&format!("libcare-ctl unpatch -p {pid}"))?;
    std::thread::sleep(Duration::from_millis(300));

    drop(target);
    say("done: the process ran unpatched, patched, then unpatched again without restarting");
    Ok(())
}
