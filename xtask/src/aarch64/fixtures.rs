//! Building the scenarios' programs and patches on the host, the way the toolkit is used for
//! aarch64: the cross compiler makes assembly, our x86_64 `kpatch_gensrc --arch=aarch64`
//! diffs it, the cross compiler links with `-Wl,-q`, then `kpatch_strip`, the cross `strip`
//! and `kpatch_make` make the `.kpatch` file (docs/internals.md section 1).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// The cross compiler.
pub const CC: &str = "aarch64-linux-gnu-gcc";
/// Where the libraries live in the guest (also each program's run path).
const GUEST_LIB: &str = "/tests/lib";
/// -O2 as `libcare-cc` builds on aarch64: section anchors would tie new variables to the
/// original's data layout.
const O2: &[&str] = &["-O2", "-fno-section-anchors"];
const O0: &[&str] = &["-O0"];

/// The host tools a patch is built with.
pub struct Tools {
    pub gensrc: PathBuf,
    pub strip: PathBuf,
    pub make: PathBuf,
}

/// Builds into `work` (scratch) and `stage` (what becomes `/tests` in the guest).
pub struct Builder<'a> {
    pub src: PathBuf,
    pub work: PathBuf,
    pub stage: PathBuf,
    pub tools: &'a Tools,
}

/// How an object is linked.
#[derive(Clone, Copy)]
enum Kind {
    Exe,
    /// A shared library of this name.
    Lib(&'static str),
}

/// An original object: its assembly (the input of every patch of it) and the linked file.
struct Original {
    asm: PathBuf,
    bin: PathBuf,
    flags: &'static [&'static str],
    kind: Kind,
    link: Vec<String>,
}

fn cross(tool: &str) -> String {
    format!("aarch64-linux-gnu-{tool}")
}

impl Builder<'_> {
    /// Builds every scenario's files into the stage.
    pub fn build_all(&self) -> Result<()> {
        for d in [&self.work, &self.stage] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
            }
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let lib = self.stage.join("lib");
        std::fs::create_dir_all(&lib)?;
        let libdir = lib.display().to_string();
        let with_libs = |l: &str| {
            vec![
                format!("-L{libdir}"),
                format!("-l{l}"),
                format!("-Wl,-rpath,{GUEST_LIB}"),
            ]
        };

        // simplest: an executable at -O0.
        let o = self.original("simplest", "simplest.c", O0, Kind::Exe, vec![])?;
        self.patch(&o, "simplest.c", "0001", "simplest.kpatch")?;
        // The storage scenarios lay the patch out under its build-id.
        std::fs::write(self.stage.join("simplest/build-id"), build_id(&o.bin)?)?;

        // shared: the patch is for the library; the executable finds it in a directory.
        let l = self.original(
            "shared",
            "libshared.c",
            O2,
            Kind::Lib("libshared.so"),
            vec![],
        )?;
        let bid = build_id(&l.bin)?;
        let dir = self.stage.join("shared/patches");
        std::fs::create_dir_all(&dir)?;
        self.patch(&l, "libshared.c", "0001", &format!("patches/{bid}.kpatch"))?;
        self.original("shared", "shared.c", O2, Kind::Exe, with_libs("shared"))?;

        // glibc calls and data.
        let o = self.original("glibc", "glibc.c", O2, Kind::Exe, vec![])?;
        self.patch(&o, "glibc.c", "0001", "glibc.kpatch")?;

        // A new function and a new variable.
        let o = self.original("newfunc", "newfunc.c", O2, Kind::Exe, vec![])?;
        self.patch(&o, "newfunc.c", "0001", "newfunc.kpatch")?;

        // An IFUNC of a library, called by the patch.
        self.original("ifunc", "libifunc.c", O2, Kind::Lib("libifunc.so"), vec![])?;
        let o = self.original("ifunc", "ifunc.c", O2, Kind::Exe, with_libs("ifunc"))?;
        self.patch(&o, "ifunc.c", "0001", "ifunc.kpatch")?;

        // Threads, one of them never leaving the function a patch replaces.
        let o = self.original("busy", "busy.c", O2, Kind::Exe, vec!["-pthread".into()])?;
        self.patch_with(&o, "busy.c", &["-DPATCH_SPIN"], "0001", "spin.kpatch")?;
        self.patch_with(&o, "busy.c", &["-DPATCH_REPORT"], "0002", "report.kpatch")?;

        // Thread-local variables of the executable and of a library, patched in one run
        // from a directory.
        let l = self.original("tls", "libtls.c", O2, Kind::Lib("libtls.so"), vec![])?;
        std::fs::create_dir_all(self.stage.join("tls/patches"))?;
        let bid = build_id(&l.bin)?;
        self.patch(&l, "libtls.c", "0001", &format!("patches/{bid}.kpatch"))?;
        let o = self.original("tls", "tls.c", O2, Kind::Exe, with_libs("tls"))?;
        let bid = build_id(&o.bin)?;
        self.patch(&o, "tls.c", "0001", &format!("patches/{bid}.kpatch"))?;

        // A thread nearly always inside the function to replace: the patch waits for it to
        // return (a breakpoint at its return address). The runtime tests' own fixture.
        let o = self.original(
            "finish",
            "../fixtures/runtime/frame_finish.c",
            O2,
            Kind::Exe,
            vec![],
        )?;
        self.patch_with(
            &o,
            "../fixtures/runtime/frame_finish.c",
            &["-DPATCHED"],
            "0001",
            "frame_finish.kpatch",
        )?;

        // QEMU-style coroutines (the runtime tests' fixture): their stacks cannot be checked
        // on aarch64, so a patch must be refused cleanly.
        let o = self.original("coro", "../fixtures/runtime/coro.c", O2, Kind::Exe, vec![])?;
        self.patch_with(
            &o,
            "../fixtures/runtime/coro.c",
            &["-DPATCHED=2"],
            "0001",
            "coro.kpatch",
        )?;

        // Two patches of one function.
        let o = self.original("stacked", "stacked.c", O2, Kind::Exe, vec![])?;
        self.patch_with(&o, "stacked.c", &["-DVERSION=1"], "0001", "v1.kpatch")?;
        self.patch_with(&o, "stacked.c", &["-DVERSION=2"], "0002", "v2.kpatch")?;
        Ok(())
    }

    /// The user guide's Makefile project patched with `libcare-patch-make`, cross-compiling:
    /// `libcare-cc` runs the cross compiler (`KPCCREAL`), the cross `strip` comes from
    /// `STRIP`. Stages `builder/foo` and `builder/patchroot/<build-id>.kpatch`.
    pub fn build_with_patch_make(&self, guide: &Path, host_tools: &Path) -> Result<()> {
        let work = self.work.join("builder");
        std::fs::create_dir_all(&work)?;
        for f in ["foo.c", "bar.c", "Makefile"] {
            std::fs::copy(guide.join(f), work.join(f)).with_context(|| format!("copy {f}"))?;
        }
        // diff exits 1 when the files differ.
        let diff = Command::new("diff")
            .args(["-up", "foo.c", "bar.c"])
            .current_dir(&work)
            .output()
            .context("cannot run diff")?;
        if diff.status.code() != Some(1) {
            bail!("diff -up foo.c bar.c: {}", diff.status);
        }
        std::fs::write(work.join("foo.patch"), &diff.stdout)?;
        let path = format!(
            "{}:{}",
            host_tools.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(host_tools.join("libcare-patch-make"))
            .args(["--clean", "-i", "0001", "foo.patch"])
            .current_dir(&work)
            .env("PATH", path)
            .env("KPCCREAL", CC)
            .env("STRIP", cross("strip"))
            .env("CFLAGS", O2.join(" "))
            .output()
            .context("cannot run libcare-patch-make")?;
        if !out.status.success() {
            bail!(
                "libcare-patch-make failed: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stage = self.stage.join("builder");
        std::fs::create_dir_all(stage.join("patchroot"))?;
        std::fs::copy(work.join("lpmake/foo"), stage.join("foo")).context("copy lpmake/foo")?;
        let bid = build_id(&stage.join("foo"))?;
        let name = format!("{bid}.kpatch");
        std::fs::copy(
            work.join("patchroot").join(&name),
            stage.join("patchroot").join(&name),
        )
        .with_context(|| format!("copy patchroot/{name}"))?;
        Ok(())
    }

    fn cc(&self, dir: &Path, args: &[&str]) -> Result<()> {
        run(Command::new(CC).args(args).current_dir(dir))
    }

    fn tool(&self, tool: &Path, dir: &Path, args: &[&str]) -> Result<()> {
        let out = Command::new(tool)
            .args(args)
            .current_dir(dir)
            .output()
            .with_context(|| format!("cannot run {}", tool.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} failed in {}: {}\n{}{}",
                tool.display(),
                args.join(" "),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Compiles `tests/aarch64/SRC` (a path relative to that folder) of scenario `scenario` to
    /// assembly and links it; a library goes to the stage's `lib/`, an executable to the
    /// scenario's folder.
    fn original(
        &self,
        scenario: &str,
        path: &str,
        flags: &'static [&'static str],
        kind: Kind,
        link: Vec<String>,
    ) -> Result<Original> {
        let work = self.work.join(scenario).join("orig");
        std::fs::create_dir_all(&work)?;
        let src = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .context("source name")?;
        std::fs::copy(self.src.join(path), work.join(src))
            .with_context(|| format!("copy {path}"))?;
        let stem = src.trim_end_matches(".c");
        let asm = work.join(format!("{stem}.s"));
        let mut args: Vec<&str> = flags.to_vec();
        if matches!(kind, Kind::Lib(_)) {
            args.push("-fPIC");
        }
        let asm_name = format!("{stem}.s");
        args.extend(["-S", src, "-o", &asm_name]);
        self.cc(&work, &args)?;
        let bin = match kind {
            Kind::Exe => self.stage.join(scenario).join(stem),
            Kind::Lib(name) => self.stage.join("lib").join(name),
        };
        std::fs::create_dir_all(bin.parent().context("output has a folder")?)?;
        let o = Original {
            asm,
            bin,
            flags,
            kind,
            link,
        };
        self.link(&o, &o.asm, &o.bin, false)?;
        Ok(o)
    }

    fn link(&self, o: &Original, asm: &Path, out: &Path, keep_relocs: bool) -> Result<()> {
        let mut args: Vec<String> = o.flags.iter().map(|s| s.to_string()).collect();
        if let Kind::Lib(name) = o.kind {
            args.extend([
                "-fPIC".into(),
                "-shared".into(),
                format!("-Wl,-soname,{name}"),
            ]);
        }
        if keep_relocs {
            args.push("-Wl,-q".into());
        }
        args.extend(["-o".into(), out.display().to_string()]);
        args.push(asm.display().to_string());
        args.extend(o.link.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cc(asm.parent().context("assembly has a folder")?, &refs)
    }

    /// Makes `OUT` (relative to the original's stage folder) from the original and the
    /// source `PATCHED` compiled with `-DPATCHED`, with patch id `id`.
    fn patch(&self, o: &Original, patched: &str, id: &str, out: &str) -> Result<()> {
        self.patch_with(o, patched, &["-DPATCHED"], id, out)
    }

    /// Like [`Builder::patch`], compiling the patched source with `defines` added.
    fn patch_with(
        &self,
        o: &Original,
        patched: &str,
        defines: &[&str],
        id: &str,
        out: &str,
    ) -> Result<()> {
        let orig_dir = o.asm.parent().context("assembly has a folder")?;
        let name = o
            .asm
            .file_stem()
            .and_then(|s| s.to_str())
            .context("assembly name")?;
        let work = orig_dir.with_file_name(format!("patch-{id}-{name}"));
        std::fs::create_dir_all(&work)?;
        // Compiled under the original's name, so the two assembly files name the same source.
        let src = format!("{name}.c");
        std::fs::copy(self.src.join(patched), work.join(&src))
            .with_context(|| format!("copy {patched}"))?;
        let mut args: Vec<&str> = o.flags.to_vec();
        if matches!(o.kind, Kind::Lib(_)) {
            args.push("-fPIC");
        }
        args.extend(defines);
        args.extend(["-S", &src, "-o", "patched.s"]);
        self.cc(&work, &args)?;
        let orig_s = o.asm.display().to_string();
        self.tool(
            &self.tools.gensrc,
            &work,
            &[
                "--arch=aarch64",
                "--os=rhel6",
                "-i",
                &orig_s,
                "-i",
                "patched.s",
                "-o",
                "combined.s",
                "--force-global",
            ],
        )?;
        let linked = work.join("combined");
        self.link(o, &work.join("combined.s"), &linked, true)?;
        let orig_bin = o.bin.display().to_string();
        let t = &self.tools;
        self.tool(&t.strip, &work, &["--strip", "combined", "stripped"])?;
        self.tool(&t.strip, &work, &["--rel-fixup", &orig_bin, "stripped"])?;
        run(Command::new(cross("strip"))
            .args(["--strip-unneeded", "stripped"])
            .current_dir(&work))?;
        self.tool(&t.strip, &work, &["--undo-link", &orig_bin, "stripped"])?;
        let dest_dir = match o.kind {
            Kind::Exe => o.bin.parent().context("binary has a folder")?.to_owned(),
            Kind::Lib(_) => self.stage.join(
                orig_dir
                    .parent()
                    .and_then(|p| p.file_name())
                    .context("scenario folder")?,
            ),
        };
        let dest = dest_dir.join(out);
        let bid = build_id(&o.bin)?;
        self.tool(
            &t.make,
            &work,
            &[
                "-b",
                &bid,
                "-i",
                id,
                "stripped",
                "-o",
                &dest.display().to_string(),
            ],
        )
    }
}

/// The GNU build-id of an ELF file, in hex.
pub fn build_id(path: &Path) -> Result<String> {
    let out = Command::new(cross("readelf"))
        .arg("-n")
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {}", cross("readelf")))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .with_context(|| format!("{} has no build-id note", path.display()))
}
