//! QEMU 7.2 from Debian 12's source package, built once with `libcare-patch-make` and kept
//! under `target/qemu/`: the tree is prepared (the CVE fix taken out again, a device set of
//! one machine, `./configure --cc=libcare-cc`, an `lpmakefile` that builds the emulator
//! alone), and each patch set is made by one `libcare-patch-make` run. A later run finds the build and the patches and redoes nothing,
//! unless the patch files or our tools changed (then only the patches are made again: the
//! original stage's `make` has nothing to do).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::run;

/// The CVE whose fix the main patch carries, and the function the fix changes.
pub const CVE: &str = "CVE-2023-3255";
const CVE_FILE: &str = "ui/vnc-clipboard.c";
const CVE_FUNCTION: &str = "inflate_buffer";
/// The device configuration written into the tree: q35 and what it selects, nothing else.
const DEVICES: &str = "libcare-q35";
/// Where the patched binary ends up, under the install roots.
const BINARY: &str = "usr/local/bin/qemu-system-x86_64";

/// The makefile libcare-patch-make uses instead of QEMU's (see [`prepare`]).
const LPMAKEFILE: &str = "\
# Written by cargo xtask test-qemu: build and install the emulator only.
all:
\t$(MAKE) -C build qemu-system-x86_64
install: all
\tinstall -D -m 755 build/qemu-system-x86_64 $(DESTDIR)/usr/local/bin/qemu-system-x86_64
clean:
\t$(MAKE) -C build clean
.PHONY: all install clean
";

/// What one `libcare-patch-make` run makes.
pub struct PatchSet {
    /// The patch id (`-i`), also the output's name.
    pub id: &'static str,
    /// Patch files under tests/fixtures/qemu/, after the CVE fix (when `cve` is set).
    pub files: &'static [&'static str],
    pub cve: bool,
}

/// The main patch: the CVE fix plus a change `query-version` shows.
pub const MAIN: PatchSet = PatchSet {
    id: "cve",
    files: &["query-version.patch"],
    cve: true,
};
/// A change of the mirror block job's coroutine (`mirror_run`).
pub const MIRROR: PatchSet = PatchSet {
    id: "mirror",
    files: &["mirror-run.patch"],
    cve: false,
};

/// The build and its patches.
pub struct Built {
    /// The original QEMU, as installed by `libcare-patch-make` under `lpmake/`.
    pub exe: PathBuf,
    /// QEMU's data directory (`-L`): the keymaps VNC needs.
    pub data: PathBuf,
    pub main: PathBuf,
    pub mirror: PathBuf,
    /// Seconds each `libcare-patch-make` run took in this run (none when cached).
    pub timings: Vec<(&'static str, f64)>,
}

/// Prepares, builds and makes the patches as needed; `tools` is our release `bin` directory.
pub fn build(root: &Path, cache: &Path, tools: &Path) -> Result<Built> {
    let src = cache.join("src");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cve_patch = cache.join(format!("{}.patch", CVE.to_lowercase()));
    prepare(&src, &cve_patch, &path)?;
    let fixtures = root.join("tests/fixtures/qemu");
    let out = cache.join("patches");
    fs::create_dir_all(&out)?;
    let mut timings = Vec::new();
    let mut made = Vec::new();
    for set in [&MAIN, &MIRROR] {
        let mut files: Vec<PathBuf> = Vec::new();
        if set.cve {
            files.push(cve_patch.clone());
        }
        files.extend(set.files.iter().map(|f| fixtures.join(f)));
        let dest = out.join(format!("{}.kpatch", set.id));
        let key = cache_key(&files, tools)?;
        let key_file = out.join(format!("{}.key", set.id));
        if dest.is_file() && fs::read_to_string(&key_file).ok().as_deref() == Some(&key) {
            eprintln!("qemu: patch {} is up to date", set.id);
        } else {
            let secs = patch_make(cache, &src, set.id, &files, &dest, &path)?;
            fs::write(&key_file, &key)?;
            timings.push((set.id, secs));
        }
        made.push(dest);
    }
    Ok(Built {
        exe: src.join("lpmake").join(BINARY),
        data: src.join("pc-bios"),
        main: made[0].clone(),
        mirror: made[1].clone(),
        timings,
    })
}

/// What the patches depend on: the patch files' contents and our tools' identities.
fn cache_key(files: &[PathBuf], tools: &Path) -> Result<String> {
    let mut key = String::new();
    for f in files {
        let text = fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        writeln!(key, "{} {}", f.display(), text.len())?;
        key.push_str(&text);
    }
    for t in ["libcare-cc", "libcare-patch-make", "kpatch_gensrc"] {
        let m = fs::metadata(tools.join(t)).with_context(|| format!("{t} is not built"))?;
        writeln!(key, "{t} {} {}.{}", m.len(), m.mtime(), m.mtime_nsec())?;
    }
    Ok(key)
}

/// Once per unpacked source: take the CVE fix out (the running QEMU is the vulnerable one),
/// write the device configuration, configure with libcare-cc as the C compiler.
fn prepare(src: &Path, cve_patch: &Path, path: &str) -> Result<()> {
    let stamp = src.join(".libcare-prepared");
    if stamp.is_file() {
        return Ok(());
    }
    eprintln!("qemu: preparing {}", src.display());
    let fix = cve_fix(src)?;
    fs::write(cve_patch, &fix)?;
    run(Command::new("patch")
        .args(["-R", "-p1", "-s", "-i"])
        .arg(cve_patch)
        .current_dir(src))
    .with_context(|| format!("taking the {CVE} fix out of {}", src.display()))?;
    fs::write(
        src.join(format!("configs/devices/x86_64-softmmu/{DEVICES}.mak")),
        "# q35 and what it selects: the smallest build that runs a PC.\nCONFIG_Q35=y\n",
    )?;
    // libcare-patch-make runs `make -f lpmakefile` when there is one: the emulator only (QEMU's
    // `make` also builds its unit and softfloat tests, a third of the build).
    fs::write(src.join("lpmakefile"), LPMAKEFILE)?;
    let _ = fs::remove_dir_all(src.join("build"));
    let log = src.join("configure.log");
    let status = Command::new("./configure")
        .args([
            "--cc=libcare-cc",
            "--target-list=x86_64-softmmu",
            "--without-default-features",
            "--without-default-devices",
            &format!("--with-devices-x86_64={DEVICES}"),
            "--enable-tcg",
            "--enable-vnc",
            "--disable-docs",
        ])
        .env("PATH", path)
        .current_dir(src)
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::from(fs::File::options().append(true).open(&log)?))
        .status()?;
    if !status.success() {
        bail!(
            "QEMU's configure failed ({status}); the end of {}:\n{}",
            log.display(),
            tail(&log, 30)
        );
    }
    fs::write(&stamp, "")?;
    Ok(())
}

/// The hunk of Debian's stable diffs that fixes the CVE in `inflate_buffer`, as a patch of
/// its own; the changelog must name the CVE.
fn cve_fix(src: &Path) -> Result<String> {
    let changelog = fs::read_to_string(src.join("debian/changelog"))?;
    if !changelog.contains(CVE) {
        bail!("debian/changelog does not name {CVE}");
    }
    let mut diffs: Vec<PathBuf> = fs::read_dir(src.join("debian/patches"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "diff"))
        .collect();
    diffs.sort();
    for d in diffs {
        let text = fs::read_to_string(&d)?;
        if let Some(hunk) = fix_hunk(&text) {
            return Ok(format!(
                "{CVE}: the fix in {CVE_FUNCTION}, from Debian's {}\n--- a/{CVE_FILE}\n+++ b/{CVE_FILE}\n{hunk}",
                d.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    bail!("no hunk of debian/patches/*.diff fixes {CVE_FUNCTION} in {CVE_FILE}")
}

/// In a multi-file diff, the hunk of CVE_FILE in CVE_FUNCTION that makes `Z_STREAM_END`
/// return.
fn fix_hunk(diff: &str) -> Option<String> {
    let start = diff.find(&format!("diff --git a/{CVE_FILE} b/{CVE_FILE}\n"))?;
    let file = &diff[start..];
    let file = &file[..file[1..]
        .find("\ndiff --git ")
        .map_or(file.len(), |e| e + 2)];
    let mut hunks = file.split("\n@@ ").skip(1);
    hunks
        .find(|h| {
            h.contains(CVE_FUNCTION)
                && h.lines().any(|l| l == "+        case Z_STREAM_END:")
                && h.lines().any(|l| l == "-        case Z_STREAM_END:")
        })
        .map(|h| format!("@@ {}\n", h.trim_end_matches('\n')))
}

/// One `libcare-patch-make` run in the tree, its patch root of its own; the `.kpatch` file is
/// copied to `dest`. Returns how long it took.
fn patch_make(
    cache: &Path,
    src: &Path,
    id: &str,
    files: &[PathBuf],
    dest: &Path,
    path: &str,
) -> Result<f64> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let patchroot = cache.join(format!("patchroot-{id}"));
    let _ = fs::remove_dir_all(&patchroot);
    let log = cache.join(format!("libcare-patch-make-{id}.log"));
    eprintln!(
        "qemu: libcare-patch-make -i {id} ({}; output in {})",
        if src.join("lpmake").join(BINARY).is_file() {
            "the original build is kept"
        } else {
            "first run: the whole original build, then the patched files"
        },
        log.display()
    );
    let started = Instant::now();
    let status = Command::new("libcare-patch-make")
        .args(["-j", &jobs.to_string(), "-i", id])
        .args(files)
        .env("PATH", path)
        .env("LPMAKE_PATCHROOT", &patchroot)
        .env_remove("MAKEFLAGS")
        .current_dir(src)
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::from(fs::File::options().append(true).open(&log)?))
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "libcare-patch-make -i {id} failed ({status}); the end of {}:\n{}",
            log.display(),
            tail(&log, 40)
        );
    }
    let made: Vec<PathBuf> = fs::read_dir(&patchroot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "kpatch"))
        .collect();
    let [one] = made.as_slice() else {
        bail!(
            "expected one patch in {}, found {made:?}",
            patchroot.display()
        );
    };
    fs::copy(one, dest)?;
    eprintln!("qemu: made {} in {secs:.0} s", dest.display());
    Ok(secs)
}

fn tail(file: &Path, n: usize) -> String {
    let text = fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STABLE_DIFF: &str = "diff --git a/ui/other.c b/ui/other.c\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/ui/vnc-clipboard.c b/ui/vnc-clipboard.c\nindex 1..2 100644\n--- a/ui/vnc-clipboard.c\n+++ b/ui/vnc-clipboard.c\n@@ -50,8 +50,11 @@ static uint8_t *inflate_buffer(uint8_t *in, uint32_t in_len, uint32_t *size)\n         case Z_OK:\n-        case Z_STREAM_END:\n             break;\n+        case Z_STREAM_END:\n+            return out;\n@@ -66,11 +69,6 @@ static uint8_t *inflate_buffer(uint8_t *in, uint32_t in_len, uint32_t *size)\n-    return out;\ndiff --git a/util/x.c b/util/x.c\n";

    #[test]
    fn the_fix_hunk_alone() {
        let h = fix_hunk(STABLE_DIFF).unwrap();
        assert!(h.starts_with("@@ -50,8 +50,11 @@"), "{h}");
        assert!(h.ends_with("+            return out;\n"), "{h}");
        assert!(!h.contains("@@ -66"), "{h}");
    }

    #[test]
    fn no_hunk_without_the_file() {
        assert!(fix_hunk("diff --git a/ui/other.c b/ui/other.c\n@@ -1 +1 @@\n").is_none());
    }
}
