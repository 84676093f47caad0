//! `cargo xtask deb`: the Debian package, laid out here and built with `dpkg-deb`.
//!
//! Why dpkg-deb rather than cargo-deb: it is Debian's own tool, present wherever the package
//! can be installed, so CI installs and compiles nothing for it; and the man pages and
//! completions, made from the binaries' `--help`, need a step of ours before any packager
//! anyway. The layout is the tables below: a binary, a header or a unit is one line.

pub mod check;
mod complete;
mod help;
mod man;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, run};
use complete::Tool;
use help::Help;

/// The package's name.
pub const PACKAGE: &str = "libcare";
const MAINTAINER: &str =
    "libcare-rs maintainers <maintainers@users.noreply.h-seed-a5513ebe.example>";
const SUMMARY: &str = "live patches for running Linux processes (LibcarePlus compatible)";
const DESCRIPTION: &str = "\
Builds a live patch from a source diff (libcare-patch-make, libcare-cc,
kpatch_gensrc, kpatch_strip, kpatch_make) and applies it to running processes
without restarting them (libcare-ctl). The libcare service applies the patches
stored in /var/lib/libcare to the running processes when it starts, and runs
libcare-ctl commands for libcare-client. A re-implementation of openEuler's
LibcarePlus: same commands, options, output and patch file format.";

/// How a binary's subcommands are described.
#[derive(Clone, Copy)]
enum Sub {
    /// No subcommands, or none with options.
    Plain,
    /// Each subcommand has its own help (`NAME CMD -h`).
    OwnHelp,
    /// The subcommands that another binary also has take that binary's options.
    Like(&'static str),
}

/// A binary the package installs.
struct Binary {
    name: &'static str,
    /// The man page's NAME line.
    summary: &'static str,
    sub: Sub,
}

/// Every binary, in /usr/bin, with a man page and completions.
const BINARIES: &[Binary] = &[
    Binary {
        name: "libcare-ctl",
        summary: "apply, remove and list live patches of running processes",
        sub: Sub::OwnHelp,
    },
    Binary {
        name: "libcare-server",
        summary: "run libcare-ctl commands sent over a UNIX socket",
        sub: Sub::Plain,
    },
    Binary {
        name: "libcare-client",
        summary: "send a command to libcare-server",
        sub: Sub::Like("libcare-ctl"),
    },
    Binary {
        name: "libcare-patch-make",
        summary: "make live patches for a make-based project from patch files",
        sub: Sub::Plain,
    },
    Binary {
        name: "libcare-cc",
        summary: "compiler wrapper that builds C sources through assembly for live patches",
        sub: Sub::Plain,
    },
    Binary {
        name: "kpatch_gensrc",
        summary: "compare two assembler files and write the original with a live patch added",
        sub: Sub::Plain,
    },
    Binary {
        name: "kpatch_strip",
        summary: "turn a patched binary linked with -Wl,-q into the payload of a .kpatch file",
        sub: Sub::Plain,
    },
    Binary {
        name: "kpatch_make",
        summary: "put the .kpatch header in front of a patch ELF",
        sub: Sub::Plain,
    },
    Binary {
        name: "libcare-dump",
        summary: "show the header of a .kpatch file or extract its patch ELF",
        sub: Sub::Plain,
    },
];

/// C headers for patch authors: (file in the repository, path under /usr/include).
const HEADERS: &[(&str, &str)] = &[("include/libcare/livepatch.h", "libcare/livepatch.h")];

/// systemd units, from `dist/`.
pub const UNITS: &[&str] = &["libcare.service", "libcare.socket"];

/// Maintainer scripts, from `dist/`.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// The default patch storage, an empty directory of the package.
pub const STORAGE: &str = "/var/lib/libcare";

/// The default directory of the keys patches must be signed with (`*.pub`): shipped empty, so
/// that nothing is required until an operator puts a key there.
pub const KEYS: &str = "/etc/libcare/keys";

/// Empty directories the package owns, with their modes: root's, written by no one else, as
/// the tools' ownership check (README "Trust") wants of what root loads.
const DIRS: &[(&str, u32)] = &[(STORAGE, 0o755), (KEYS, 0o755)];

const MAN_SECTION: u8 = 1;

/// `cargo xtask deb [--debug]`.
pub fn run_deb(root: &Path, args: &[String]) -> Result<()> {
    let release = match args {
        [] => true,
        [a] if a == "--debug" => false,
        _ => bail!("usage: cargo xtask deb [--debug]"),
    };
    let deb = build(root, release)?;
    println!("{}", deb.canonicalize().unwrap_or(deb).display());
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit the package is built from: its seconds since the epoch (the changelog's and man
/// pages' date, so that a rebuild is identical); `SOURCE_DATE_EPOCH` or now outside git.
fn source_epoch(root: &Path) -> u64 {
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    git.or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

fn date(epoch: u64, format: &str) -> Result<String> {
    Ok(output(
        Command::new("date")
            .arg("-u")
            .arg(format!("--date=@{epoch}"))
            .arg(format),
    )?
    .trim()
    .to_owned())
}

/// Writes `bytes` to `path` (creating its directory) with `mode`.
fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))?
        .context("writing to gzip")?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// The help text of `bin ARGS...` (what it prints on stdout).
fn help_of(bin: &Path, args: &[&str]) -> Result<Help> {
    let text = output(Command::new(bin).args(args))?;
    Ok(help::parse(&text))
}

/// The parsed help of every binary in `bindir`: its own, its subcommands', and the tool
/// model the completions are made from.
pub struct Described {
    pub name: &'static str,
    summary: &'static str,
    help: Help,
    commands: Vec<(String, Help)>,
    pub tool: Tool,
}

/// Reads every binary's help from the binaries in `bindir`.
pub fn describe(bindir: &Path) -> Result<Vec<Described>> {
    let mut out: Vec<Described> = Vec::new();
    for b in BINARIES {
        let bin = bindir.join(b.name);
        let help = help_of(&bin, &["--help"])?;
        let mut commands = Vec::new();
        let mut cmds = help.commands();
        match b.sub {
            Sub::Plain => {}
            Sub::OwnHelp => {
                for c in &mut cmds {
                    let h = help_of(&bin, &[&c.names[0], "-h"])?;
                    c.args = h.args();
                    commands.push((c.names[0].clone(), h));
                }
            }
            Sub::Like(other) => {
                let other = out
                    .iter()
                    .find(|d| d.name == other)
                    .with_context(|| format!("{other} must come before {} in BINARIES", b.name))?;
                for c in &mut cmds {
                    if let Some(o) = other.tool.commands.iter().find(|o| o.names == c.names) {
                        c.args = o.args.clone();
                    }
                }
            }
        }
        if help.usage.is_empty() {
            bail!("{} --help has no usage line", b.name);
        }
        let tool = Tool {
            name: b.name.to_owned(),
            args: help.args(),
            commands: cmds,
        };
        out.push(Described {
            name: b.name,
            summary: b.summary,
            help,
            commands,
            tool,
        });
    }
    Ok(out)
}

/// Where each generated file goes in the package.
pub fn man_path(name: &str) -> String {
    format!("usr/share/man/man{MAN_SECTION}/{name}.{MAN_SECTION}.gz")
}
pub fn bash_path(name: &str) -> String {
    format!("usr/share/bash-completion/completions/{name}")
}
pub fn zsh_path(name: &str) -> String {
    format!("usr/share/zsh/vendor-completions/_{name}")
}
pub fn fish_path(name: &str) -> String {
    format!("usr/share/fish/vendor_completions.d/{name}.fish")
}

/// Builds the binaries (release, or the dev profile with `release == false`) and the package;
/// returns the `.deb`'s path.
pub fn build(root: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--bins", "-p", "libcare"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let target = crate::target_dir(root);
    let built = target.join(profile);
    let work = target.join("deb").join(profile);
    let stage = work.join("root");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot remove {}", stage.display()))?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let epoch = source_epoch(root);

    let bindir = stage.join("usr/bin");
    std::fs::create_dir_all(&bindir)?;
    for b in BINARIES {
        let to = bindir.join(b.name);
        std::fs::copy(built.join(b.name), &to)
            .with_context(|| format!("cannot copy {}", b.name))?;
        // As dh_strip does: the debug information stays in target/.
        run(Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&to))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    }

    let described = describe(&bindir)?;
    let see_also: Vec<(&str, u8)> = BINARIES.iter().map(|b| (b.name, MAN_SECTION)).collect();
    let source = format!("{PACKAGE} {version}");
    let man_date = date(epoch, "+%Y-%m-%d")?;
    for d in &described {
        let others: Vec<(&str, u8)> = see_also
            .iter()
            .copied()
            .filter(|(n, _)| *n != d.name)
            .collect();
        let page = man::render(&man::Page {
            name: d.name,
            section: MAN_SECTION,
            summary: d.summary,
            source: &source,
            date: &man_date,
            help: &d.help,
            commands: &d.commands,
            see_also: &others,
        });
        put(
            &stage.join(man_path(d.name)),
            &gzip(page.as_bytes())?,
            0o644,
        )?;
        put(
            &stage.join(bash_path(d.name)),
            complete::bash(&d.tool).as_bytes(),
            0o644,
        )?;
        put(
            &stage.join(zsh_path(d.name)),
            complete::zsh(&d.tool).as_bytes(),
            0o644,
        )?;
        put(
            &stage.join(fish_path(d.name)),
            complete::fish(&d.tool).as_bytes(),
            0o644,
        )?;
    }

    let dist = root.join("dist");
    for unit in UNITS {
        let text = std::fs::read(dist.join(unit)).with_context(|| format!("dist/{unit}"))?;
        put(&stage.join("lib/systemd/system").join(unit), &text, 0o644)?;
    }
    for (from, to) in HEADERS {
        let text = std::fs::read(root.join(from)).with_context(|| from.to_string())?;
        put(&stage.join("usr/include").join(to), &text, 0o644)?;
    }
    for (dir, mode) in DIRS {
        let dir = stage.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(*mode))?;
    }

    let doc = stage.join("usr/share/doc").join(PACKAGE);
    put(
        &doc.join("README.md.gz"),
        &gzip(&std::fs::read(root.join("README.md"))?)?,
        0o644,
    )?;
    put(
        &doc.join("copyright"),
        &std::fs::read(dist.join("copyright"))?,
        0o644,
    )?;
    let changelog = format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Built from commit {}.\n\n -- {MAINTAINER}  {}\n",
        commit(root),
        date(epoch, "-R")?
    );
    put(
        &doc.join("changelog.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;

    control(root, &work, &stage, version)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let deb = work.join(format!("{PACKAGE}_{version}_{}.deb", arch.trim()));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .stdout(std::process::Stdio::null()))?;
    Ok(deb)
}

/// The commit HEAD is at, as build.rs records it for `--version`.
pub(super) fn commit(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The shared libraries the binaries need, as dpkg-shlibdeps words them.
fn shlib_depends(work: &Path, stage: &Path) -> Result<String> {
    // dpkg-shlibdeps wants to run in a source tree with debian/control.
    let src = work.join("shlibdeps");
    put(
        &src.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&src).args(["-O", "--warnings=0"]);
    for b in BINARIES {
        cmd.arg(format!(
            "-e{}",
            stage.join("usr/bin").join(b.name).display()
        ));
    }
    let out = output(&mut cmd).context("dpkg-shlibdeps is in the dpkg-dev package")?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out}"))?;
    Ok(deps.trim().to_owned())
}

/// DEBIAN/: control, md5sums and the maintainer scripts.
fn control(root: &Path, work: &Path, stage: &Path, version: &str) -> Result<()> {
    let mut files = Vec::new();
    let mut size = 0u64;
    collect(stage, stage, &mut files, &mut size)?;
    let mut md5sums = String::new();
    for f in &files {
        let sum = output(Command::new("md5sum").arg(stage.join(f)))?;
        let sum = sum.split_whitespace().next().unwrap_or_default().to_owned();
        md5sums.push_str(&format!("{sum}  {f}\n"));
    }
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let description: String = DESCRIPTION.lines().map(|l| format!(" {l}\n")).collect();
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {}\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {}\nDepends: {}\nRecommends: binutils, gcc, make, patch\n\
         Section: admin\nPriority: optional\nDescription: {SUMMARY}\n{description}",
        arch.trim(),
        size.div_ceil(1024),
        shlib_depends(work, stage)?,
    );
    let debian = stage.join("DEBIAN");
    put(&debian.join("control"), control.as_bytes(), 0o644)?;
    put(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    for s in SCRIPTS {
        let text = std::fs::read(root.join("dist").join(s)).with_context(|| format!("dist/{s}"))?;
        put(&debian.join(s), &text, 0o755)?;
    }
    Ok(())
}

/// Every file under `dir`, relative to `base`, sorted; adds up their sizes (dirs count 1 KiB
/// each, as dpkg-gencontrol counts them).
fn collect(base: &Path, dir: &Path, files: &mut Vec<String>, size: &mut u64) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta = e.metadata()?;
        if meta.is_dir() {
            *size += 1024;
            collect(base, &path, files, size)?;
        } else {
            *size += meta.len().div_ceil(1024) * 1024;
            let rel = path.strip_prefix(base)?.to_string_lossy().into_owned();
            files.push(rel);
        }
    }
    Ok(())
}
