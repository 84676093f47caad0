//! The package's test, run by `cargo xtask test`: builds the package (dev profile, stripped as
//! in a release), unpacks it into a temporary root and checks it as an operator meets it —
//! `--version`, the demo's steps and the service's with the unpacked binaries, every man page
//! rendered by man, every completion loaded by its shell and answering for every option and
//! subcommand, the units accepted by `systemd-analyze verify`, and no lintian error. A check
//! whose tool is missing (systemd, zsh, fish, lintian) is skipped with a message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, ensure, Context, Result};

use super::help::Value;
use super::{bash_path, fish_path, man_path, zsh_path, Described, KEYS, PACKAGE, STORAGE, UNITS};
use crate::run;

/// Where the guide's example project is.
const GUIDE: &str = "tests/fixtures/guide";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn out(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("cannot run {cmd:?}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs every check; prints one line per check and a closing count.
pub fn check(root: &Path) -> Result<()> {
    let deb = super::build(root, false)?;
    let tmp = crate::temp_dir("libcare-deb")?;
    let result = checks(root, &deb, &tmp.0);
    result.map(|n| println!("package: {n} passed, 0 failed"))
}

fn checks(root: &Path, deb: &Path, tmp: &Path) -> Result<usize> {
    let unpacked = tmp.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    let bin = unpacked.join("usr/bin");
    let described = super::describe(&bin)?;
    let steps: [(&str, &dyn Fn() -> Result<String>); 6] = [
        ("--version", &|| versions(root, &described, &bin)),
        ("man pages", &|| man_pages(&unpacked, &described)),
        ("completions", &|| completions(&unpacked, &described)),
        ("units", &|| units(&unpacked)),
        ("demo", &|| demo(root, &bin, tmp, &unpacked)),
        ("lintian", &|| lintian(deb)),
    ];
    for (name, step) in &steps {
        let note = step().with_context(|| format!("package check '{name}'"))?;
        println!("package check {name}: ok{note}");
    }
    Ok(steps.len())
}

/// Each binary prints `NAME VERSION (commit HASH)`, with the commit it was built from.
fn versions(root: &Path, described: &[Described], bin: &Path) -> Result<String> {
    let commit = super::commit(root);
    let want = |name: &str| format!("{name} {} (commit {commit})", env!("CARGO_PKG_VERSION"));
    for d in described {
        let o = out(Command::new(bin.join(d.name)).arg("--version"))?;
        ensure!(o.status.success(), "{} --version failed", d.name);
        // libcare-cc's own line goes to stderr: build systems read the compiler's on stdout.
        let printed = if d.name == "libcare-cc" {
            text(&o.stderr)
        } else {
            text(&o.stdout)
        };
        ensure!(
            printed.trim() == want(d.name),
            "{} --version printed {printed:?}, not {:?}",
            d.name,
            want(d.name)
        );
    }
    Ok(String::new())
}

/// Every page renders without a warning from man (as lintian runs it) and shows every option
/// and subcommand of the help.
fn man_pages(unpacked: &Path, described: &[Described]) -> Result<String> {
    for d in described {
        let page = unpacked.join(man_path(d.name));
        let o = out(Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(&page)
            .env("LC_ALL", "C.UTF-8")
            .env("MANROFFSEQ", "")
            .env("MANWIDTH", "80"))?;
        ensure!(
            o.status.success() && o.stderr.is_empty(),
            "man warns about {}: {}",
            page.display(),
            text(&o.stderr)
        );
        let o = out(Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat"))?;
        ensure!(o.status.success(), "man -l {} failed", page.display());
        // Bold and underline are overstrikes: drop "x\b".
        let shown = text(&o.stdout);
        let mut plain = String::new();
        for c in shown.chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        let mut words: Vec<&str> = vec!["NAME", "SYNOPSIS"];
        for o in &d.tool.args.options {
            words.extend(o.names.iter().map(String::as_str));
        }
        for c in &d.tool.commands {
            words.extend(c.names.iter().map(String::as_str));
        }
        for w in words {
            ensure!(
                plain.contains(w),
                "man {} does not show {w}:\n{plain}",
                d.name
            );
        }
    }
    Ok(String::new())
}

/// What bash's completion function offers for the words (the last one being completed).
fn bash_offers(script: &Path, name: &str, words: &[&str]) -> Result<BTreeSet<String>> {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let driver = format!(
        "set -e; source \"$1\"; spec=$(complete -p {name}); f=${{spec##*-F }}; f=${{f%% *}}\n\
         set +e; COMP_WORDS=({}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()\n\
         $f; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" ")
    );
    let o = out(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &driver, "bash"])
        .arg(script))?;
    ensure!(
        o.status.success(),
        "bash completion {} fails on {words:?}: {}",
        script.display(),
        text(&o.stderr)
    );
    Ok(text(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn expect_offers(offered: &BTreeSet<String>, want: &[&str], words: &[&str]) -> Result<()> {
    for w in want {
        ensure!(
            offered.contains(*w),
            "completing {words:?} does not offer {w}: {offered:?}"
        );
    }
    Ok(())
}

/// The value checks of one command line: `words` + option + "" offers the option's values.
fn bash_values(script: &Path, name: &str, prefix: &[&str], args: &super::help::Args) -> Result<()> {
    for o in &args.options {
        let mut words = prefix.to_vec();
        words.push(&o.names[0]);
        words.push("");
        let offered = bash_offers(script, name, &words)?;
        match &o.value {
            Some(Value::Pid { all }) => {
                ensure!(
                    offered.iter().any(|w| w.parse::<u32>().is_ok()),
                    "completing {words:?} offers no pid: {offered:?}"
                );
                if *all {
                    expect_offers(&offered, &["all"], &words)?;
                }
            }
            Some(Value::Choice(c)) => {
                let c: Vec<&str> = c.iter().map(String::as_str).collect();
                expect_offers(&offered, &c, &words)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// bash: every script loads, and offers every option, subcommand and listed value. zsh and
/// fish: every script parses; fish offers the subcommands and long options.
fn completions(unpacked: &Path, described: &[Described]) -> Result<String> {
    for d in described {
        let t = &d.tool;
        let script = unpacked.join(bash_path(d.name));
        let names = |args: &super::help::Args| -> Vec<String> {
            args.options.iter().flat_map(|o| o.names.clone()).collect()
        };
        let top = names(&t.args);
        let top: Vec<&str> = top.iter().map(String::as_str).collect();
        expect_offers(
            &bash_offers(&script, d.name, &[d.name, "-"])?,
            &top,
            &[d.name, "-"],
        )?;
        bash_values(&script, d.name, &[d.name], &t.args)?;
        let cmds: Vec<&str> = t
            .commands
            .iter()
            .flat_map(|c| c.names.iter().map(String::as_str))
            .collect();
        if !cmds.is_empty() {
            expect_offers(
                &bash_offers(&script, d.name, &[d.name, ""])?,
                &cmds,
                &[d.name],
            )?;
        }
        for c in &t.commands {
            let opts = names(&c.args);
            let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
            let words = [d.name, c.names[0].as_str(), "-"];
            expect_offers(&bash_offers(&script, d.name, &words)?, &opts, &words)?;
            bash_values(&script, d.name, &words[..2], &c.args)?;
        }
    }
    let mut skipped = Vec::new();
    if have("zsh") {
        for d in described {
            let script = unpacked.join(zsh_path(d.name));
            let o = out(Command::new("zsh").arg("-n").arg(&script))?;
            ensure!(
                o.status.success(),
                "zsh -n {}: {}",
                script.display(),
                text(&o.stderr)
            );
        }
    } else {
        skipped.push("zsh");
    }
    if have("fish") {
        for d in described {
            fish_offers(unpacked, d)?;
        }
    } else {
        skipped.push("fish");
    }
    Ok(if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({} not installed: not checked)", skipped.join(", "))
    })
}

fn fish_offers(unpacked: &Path, d: &Described) -> Result<()> {
    let script = unpacked.join(fish_path(d.name));
    let o = out(Command::new("fish").arg("-n").arg(&script))?;
    ensure!(
        o.status.success(),
        "fish -n {}: {}",
        script.display(),
        text(&o.stderr)
    );
    let ask = |line: &str| -> Result<BTreeSet<String>> {
        let o = out(Command::new("fish")
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(&script)
            .arg(line))?;
        ensure!(
            o.status.success(),
            "fish {}: {}",
            script.display(),
            text(&o.stderr)
        );
        Ok(text(&o.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_owned())
            .collect())
    };
    let longs = |args: &super::help::Args| -> Vec<String> {
        args.options
            .iter()
            .flat_map(|o| o.names.iter().filter(|n| n.starts_with("--")).cloned())
            .collect()
    };
    let line = format!("{} --", d.name);
    let want = longs(&d.tool.args);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    expect_offers(&ask(&line)?, &want, &[&line])?;
    if !d.tool.commands.is_empty() {
        let line = format!("{} ", d.name);
        let cmds: Vec<&str> = d
            .tool
            .commands
            .iter()
            .flat_map(|c| c.names.iter().map(String::as_str))
            .collect();
        expect_offers(&ask(&line)?, &cmds, &[&line])?;
    }
    Ok(())
}

/// One `Key=value` of a unit file.
fn unit_value(unit: &str, key: &str) -> Result<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {key}= in the unit"))
}

fn unit_text(unpacked: &Path, name: &str) -> Result<String> {
    let path = unpacked.join("lib/systemd/system").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The units agree with the binaries' defaults, and `systemd-analyze verify` accepts them
/// (their Documentation= pages looked up in the package's man pages).
fn units(unpacked: &Path) -> Result<String> {
    let socket = unit_text(unpacked, "libcare.socket")?;
    let service = unit_text(unpacked, "libcare.service")?;
    let listen = unit_value(&socket, "ListenStream")?;
    // The client's default is /var/run/...: /var/run is /run.
    let client_default = kpatch_server::address::DEFAULT_SOCKET.replacen("/var/run/", "/run/", 1);
    ensure!(
        listen == client_default,
        "libcare.socket listens on {listen}, libcare-client connects to {client_default}"
    );
    let start = unit_value(&service, "ExecStart")?;
    // systemd makes the socket, so it must give it the mode libcare-server gives a path socket
    // of its own (README "Trust"): 0600, or 0660 and the group named by --group.
    let want = match served_group(&start) {
        None => ("0600".to_owned(), None),
        Some(group) => ("0660".to_owned(), Some(group)),
    };
    let got = (
        unit_value(&socket, "SocketMode")?,
        unit_value(&socket, "SocketGroup").ok(),
    );
    ensure!(
        got == want,
        "libcare.socket has SocketMode={} SocketGroup={:?}; the server's options ({start:?}) \
         want {} and group {:?}",
        got.0,
        got.1,
        want.0,
        want.1
    );
    // Options may come first; the socket and the storage are the last arguments.
    ensure!(
        start.starts_with("/usr/bin/libcare-server ")
            && start.ends_with(&format!(" &3 {STORAGE}"))
            && STORAGE == kpatch_server::DEFAULT_STORAGE,
        "libcare.service runs {start:?}, not the server on the socket with the default storage"
    );
    let post = unit_value(&service, "ExecStartPost")?;
    ensure!(
        post == format!("-/usr/bin/libcare-client {listen} update"),
        "libcare.service's ExecStartPost is {post:?}"
    );
    ensure!(
        unpacked.join(STORAGE.trim_start_matches('/')).is_dir(),
        "no {STORAGE} in the package"
    );
    ensure!(
        KEYS == kpatch_trust::DEFAULT_KEYS_DIR
            && unpacked.join(KEYS.trim_start_matches('/')).is_dir(),
        "no {} in the package",
        kpatch_trust::DEFAULT_KEYS_DIR
    );
    if !have("systemd-analyze") || !Path::new("/lib/systemd/system/sysinit.target").exists() {
        return Ok(" (systemd not installed: systemd-analyze verify skipped)".into());
    }
    // The units are verified in the unpacked root, next to the system's own units they refer
    // to (sysinit.target...), which are copied there.
    let units_dir = unpacked.join("lib/systemd/system");
    for e in std::fs::read_dir("/lib/systemd/system")? {
        let e = e?;
        let to = units_dir.join(e.file_name());
        if e.file_type()?.is_file() && !to.exists() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    let paths: Vec<PathBuf> = UNITS.iter().map(|u| units_dir.join(u)).collect();
    let o = out(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", unpacked.display()))
        .args(&paths)
        .env("MANPATH", unpacked.join("usr/share/man")))?;
    ensure!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    Ok(String::new())
}

/// The group an `ExecStart=` line of libcare-server serves besides root (`--group NAME`).
fn served_group(exec_start: &str) -> Option<String> {
    let mut words = exec_start.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--group" {
            return words.next().map(str::to_owned);
        }
        if let Some(g) = w.strip_prefix("--group=") {
            return Some(g.to_owned());
        }
    }
    None
}

/// `CapabilityBoundingSet=CAP_A CAP_B` as `setpriv --bounding-set` takes it.
fn setpriv_caps(service: &str) -> Result<String> {
    let caps = unit_value(service, "CapabilityBoundingSet")?;
    let mut out = String::from("-all");
    for c in caps.split_whitespace() {
        let c = c
            .strip_prefix("CAP_")
            .context("a capability without CAP_")?;
        out.push_str(",+");
        out.push_str(&c.to_ascii_lowercase());
    }
    Ok(out)
}

/// The demo's steps and the service's, in a PID namespace (`demo.sh`).
fn demo(root: &Path, bin: &Path, tmp: &Path, unpacked: &Path) -> Result<String> {
    let work = tmp.join("work");
    std::fs::create_dir_all(&work)?;
    for f in ["foo.c", "bar.c", "Makefile"] {
        std::fs::copy(root.join(GUIDE).join(f), work.join(f))
            .with_context(|| format!("copy {GUIDE}/{f}"))?;
    }
    let caps = setpriv_caps(&unit_text(unpacked, "libcare.service")?)?;
    // The audit trail to a file of the check's own rather than the system log; the keys those
    // of the package's (empty) key directory, not this machine's.
    let audit = tmp.join("audit.log");
    let o = out(Command::new("timeout")
        .args(["--kill-after=5", "300"])
        .args(["unshare", "--fork", "--pid", "--mount-proc", "--kill-child"])
        .args(["sh", "-c", include_str!("demo.sh"), "demo.sh"])
        .arg(bin)
        .arg(&work)
        .arg(work.join("libcare.sock"))
        .arg(&caps)
        .env("LIBCARE_KEYS", unpacked.join(KEYS.trim_start_matches('/')))
        .env("LIBCARE_AUDIT_LOG", &audit)
        .stdin(Stdio::null()))?;
    if !o.status.success() {
        bail!(
            "the demo's steps failed ({}):\n{}{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    // Both programs recorded what they did, the server under the unit's capabilities too.
    let lines = std::fs::read_to_string(&audit).unwrap_or_default();
    for (program, action) in [
        ("libcare-ctl", "patch"),
        ("libcare-ctl", "unpatch"),
        ("libcare-server", "patch"),
        ("libcare-server", "unpatch"),
    ] {
        ensure!(
            lines.lines().any(|l| l.contains(&format!(" {program}["))
                && l.contains(&format!(" action={action} result=ok "))),
            "no audit line of {program}'s {action} in:\n{lines}"
        );
    }
    Ok(String::new())
}

/// lintian finds no error in the package.
fn lintian(deb: &Path) -> Result<String> {
    if !have("lintian") {
        return Ok(" (lintian not installed: not checked)".into());
    }
    let o = out(Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb))?;
    let report = text(&o.stdout);
    ensure!(
        o.status.success(),
        "lintian reports errors on {PACKAGE}:\n{report}{}",
        text(&o.stderr)
    );
    let notes = report.lines().filter(|l| !l.trim().is_empty()).count();
    Ok(if notes == 0 {
        String::new()
    } else {
        format!(" (no error; {notes} other tags:)\n{report}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_group_is_read_from_the_servers_options() {
        let start = "/usr/bin/libcare-server &3 /var/lib/libcare";
        assert_eq!(served_group(start), None);
        for start in [
            "/usr/bin/libcare-server --group wheel &3 /var/lib/libcare",
            "/usr/bin/libcare-server -v --group=wheel &3 /var/lib/libcare",
        ] {
            assert_eq!(served_group(start).as_deref(), Some("wheel"), "{start}");
        }
    }
}
