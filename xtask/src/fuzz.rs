//! The fuzz targets (`fuzz/`, `cargo +nightly fuzz`): a short run of each in `cargo xtask
//! test`, and `cargo xtask fuzz [TARGET...] [--runs N | --seconds S]` for the long runs that
//! RELIABILITY.md records. Seeds are made fresh from the fixtures (gcc output, requests,
//! command lines); what libFuzzer finds interesting stays in
//! `target/fuzz-data/corpus/TARGET`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, target_dir};

/// The targets of `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 7] = [
    "kpatch_file",
    "asm_parse",
    "asm_diff",
    "elf",
    "server_protocol",
    "command_lines",
    "signature",
];

/// How long each target runs in `cargo xtask test` (`LIBCARE_FUZZ_SECONDS` overrides).
const SMOKE_SECONDS: u64 = 6;

/// How the targets are built: optimised, with overflow and debug assertions on (our parsers
/// are safe Rust: a sanitizer would find nothing a panic does not show).
const BUILD_FLAGS: [&str; 4] = ["-O", "-a", "-s", "none"];

/// `cargo +nightly fuzz` (cargo-fuzz on the PATH, as .ci/run installs it, or in
/// `target/tools/bin`).
fn cargo_fuzz(root: &Path) -> Result<Command> {
    let tools = target_dir(root).join("tools/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![tools.clone()];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs).context("PATH")?;
    let found = std::env::split_paths(&joined).any(|d| d.join("cargo-fuzz").is_file());
    if !found {
        bail!("cargo-fuzz is not installed: `cargo install --locked cargo-fuzz` (.ci/run does it)");
    }
    let mut c = Command::new("cargo");
    c.current_dir(root)
        .env("PATH", joined)
        // The outer cargo's toolchain must not leak into the nightly build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args(["+nightly", "fuzz"]);
    Ok(c)
}

/// The corpora, seeds and crash inputs.
fn fuzz_dir(root: &Path) -> PathBuf {
    target_dir(root).join("fuzz-data")
}

/// Where the targets are built.
fn build_dir(root: &Path) -> PathBuf {
    target_dir(root).join("fuzz")
}

fn build(root: &Path) -> Result<()> {
    let mut c = cargo_fuzz(root)?;
    c.arg("build")
        .args(BUILD_FLAGS)
        .arg("--fuzz-dir")
        .arg("fuzz");
    c.arg("--target-dir").arg(build_dir(root));
    run(&mut c)
}

/// Runs `target` with libFuzzer arguments `limits`; returns the executions it reports.
fn run_target(root: &Path, target: &str, limits: &[String]) -> Result<u64> {
    let corpus = fuzz_dir(root).join("corpus").join(target);
    let seeds = fuzz_dir(root).join("seeds").join(target);
    let artifacts = fuzz_dir(root).join("artifacts").join(target);
    for d in [&corpus, &seeds, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let mut c = cargo_fuzz(root)?;
    c.arg("run").args(BUILD_FLAGS).arg("--fuzz-dir").arg("fuzz");
    c.arg("--target-dir").arg(build_dir(root));
    c.arg(target).arg(&corpus).arg(&seeds).arg("--");
    c.arg(format!("-artifact_prefix={}/", artifacts.display()));
    c.args(["-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"]);
    // Assembly parses at a few MB/s: small inputs keep the runs fast enough for 10^6.
    match target {
        "asm_parse" => c.arg("-max_len=4096"),
        "asm_diff" => c.arg("-max_len=8192"),
        _ => &mut c,
    };
    c.args(limits);
    let out = c
        .output()
        .with_context(|| format!("cannot run the fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is in {}:\n{}",
            out.status,
            artifacts.display(),
            tail.join("\n")
        );
    }
    let runs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .context("libFuzzer printed no execution count")?;
    Ok(runs)
}

/// The short run of every target, for `cargo xtask test`.
pub fn smoke(root: &Path) -> Result<()> {
    let seconds = std::env::var("LIBCARE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SMOKE_SECONDS);
    build(root)?;
    seeds(root)?;
    let mut total = 0;
    for target in TARGETS {
        let runs = run_target(root, target, &[format!("-max_total_time={seconds}")])?;
        println!("fuzz {target}: {runs} executions, no crash");
        total += runs;
    }
    println!(
        "fuzz: {} targets, {total} executions, no crash",
        TARGETS.len()
    );
    Ok(())
}

/// `cargo xtask fuzz [TARGET...] [--runs N | --seconds S]`.
pub fn long(root: &Path, args: &[String]) -> Result<()> {
    let mut limits = vec!["-runs=1000000".to_owned()];
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => limits = vec![format!("-runs={}", it.next().context("--runs N")?)],
            "--seconds" => {
                limits = vec![format!(
                    "-max_total_time={}",
                    it.next().context("--seconds S")?
                )]
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!("unknown fuzz target or option {other}; targets: {TARGETS:?}"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    build(root)?;
    seeds(root)?;
    for target in targets {
        let start = std::time::Instant::now();
        let runs = run_target(root, target, &limits)?;
        println!(
            "fuzz {target}: {runs} executions in {:.0} s, no crash",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Writes the seed inputs: assembly and objects gcc makes from a fixture, real requests and
/// command lines.
fn seeds(root: &Path) -> Result<()> {
    let dir = fuzz_dir(root).join("seeds");
    let work = fuzz_dir(root).join("seed-build");
    std::fs::create_dir_all(&work)?;
    let source = root.join("tests/fixtures/storage/greet.c");
    let gcc =
        |args: &[&str]| -> Result<()> { run(Command::new("gcc").args(args).current_dir(&work)) };
    let src = source.to_str().context("fixture path")?;
    gcc(&["-O2", "-S", src, "-o", "o2.s"])?;
    gcc(&["-O0", "-S", src, "-o", "o0.s"])?;
    gcc(&[
        "-O0",
        "-S",
        "-DGREETING=\"changed\"",
        src,
        "-o",
        "changed.s",
    ])?;
    gcc(&["-O2", "-c", src, "-o", "greet.o"])?;
    gcc(&["-O2", src, "-o", "greet"])?;
    // Two builds of a structure with debugging information: the layout comparison.
    let layout = |name: &str, member: &str| -> Result<()> {
        let c =
            format!("struct s {{ int a; {member} }};\nint get(struct s *p) {{ return p->a; }}\n");
        std::fs::write(work.join(format!("{name}.c")), c)?;
        gcc(&[
            "-O0",
            "-g",
            "-S",
            &format!("{name}.c"),
            "-o",
            &format!("{name}.s"),
        ])
    };
    layout("layout1", "long b;")?;
    layout("layout2", "char c; long b;")?;
    let read = |name: &str| std::fs::read(work.join(name));
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
        Ok(())
    };
    for s in ["o2.s", "o0.s", "layout1.s"] {
        // The first byte chooses the dialect: x86_64.
        let mut seed = vec![0];
        seed.extend(read(s)?);
        put("asm_parse", s, &seed)?;
    }
    for (name, a, b) in [
        ("greeting", "o0.s", "changed.s"),
        ("layout", "layout1.s", "layout2.s"),
    ] {
        // The first byte: compare each file with itself too.
        let mut pair = vec![4];
        pair.extend(read(a)?);
        pair.push(0);
        pair.extend(read(b)?);
        put("asm_diff", name, &pair)?;
    }
    put("elf", "greet.o", &read("greet.o")?)?;
    put("elf", "greet", &read("greet")?)?;
    put(
        "server_protocol",
        "patch",
        b"patch\0-p\x00123\0/srv/p\0\0libcare-status\0\0",
    )?;
    put("server_protocol", "reply", b"line 1\nline 2\n\x00255")?;
    put(
        "command_lines",
        "ctl",
        b"-v\0--keys\0/k\0patch\0-p\0all\0/srv/p",
    )?;
    put(
        "command_lines",
        "cc",
        b"-c\0-O2\0-MD\0-MF\0x.d\0-x\0c\0foo.c\0-o\0foo.o\0-Wl,-q",
    )?;
    let kpatch = make_kpatch(root, &work, src)?;
    put("kpatch_file", "greet.kpatch", &kpatch)?;
    // As LibcarePlus writes it, without a checksum: mutations then reach the payload.
    let mut peer = kpatch;
    peer[144..148].fill(0);
    put("kpatch_file", "greet-peer.kpatch", &peer)?;
    put(
        "signature",
        "sig",
        b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n",
    )?;
    Ok(())
}

/// A real patch of the fixture, made with our tools the way the user guide does.
fn make_kpatch(root: &Path, work: &Path, src: &str) -> Result<Vec<u8>> {
    run(crate::cargo().args(["build", "-q", "-p", "libcare", "--bins"]))?;
    let bin = |name: &str| target_dir(root).join("debug").join(name);
    let step = |program: &Path, args: &[&str]| -> Result<()> {
        run(Command::new(program).args(args).current_dir(work))
    };
    let gcc = Path::new("gcc");
    step(gcc, &["-O2", "-S", src, "-o", "orig.s"])?;
    step(
        gcc,
        &[
            "-O2",
            "-S",
            "-DGREETING=\"patched\"",
            src,
            "-o",
            "patched.s",
        ],
    )?;
    step(gcc, &["-o", "orig", "orig.s"])?;
    step(
        &bin("kpatch_gensrc"),
        &[
            "--os=rhel6",
            "-i",
            "orig.s",
            "-i",
            "patched.s",
            "-o",
            "both.s",
            "--force-global",
        ],
    )?;
    step(gcc, &["-o", "both", "both.s", "-Wl,-q"])?;
    let strip = bin("kpatch_strip");
    step(&strip, &["--strip", "both", "both.stripped"])?;
    step(&strip, &["--rel-fixup", "orig", "both.stripped"])?;
    step(Path::new("strip"), &["--strip-unneeded", "both.stripped"])?;
    step(&strip, &["--undo-link", "orig", "both.stripped"])?;
    let id = "0123456789abcdef0123456789abcdef01234567";
    step(
        &bin("kpatch_make"),
        &[
            "-b",
            id,
            "-i",
            "0001",
            "both.stripped",
            "-o",
            "greet.kpatch",
        ],
    )?;
    std::fs::read(work.join("greet.kpatch")).context("the seed patch")
}
