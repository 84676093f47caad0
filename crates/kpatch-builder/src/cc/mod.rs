//! `libcare-cc`: a gcc-compatible wrapper that builds every C source through assembly.
//!
//! In the `original` stage each source is compiled with `-S` (all flags kept) into a kept
//! assembly file, which is then assembled into the object: the object is byte-identical to
//! `gcc -flive-patching=inline-clone -c` with the same options (see [`live_patching`]; plain
//! `gcc -c` with `KPCC_LIVE_PATCHING=0`). In the `patched` stage the patched source's assembly is combined with the
//! kept original by `kpatch_gensrc`, and the combined file is assembled instead; link steps get
//! `-Wl,-q` so the linked binary keeps its relocations. Anything else — configure probes,
//! preprocessing, version queries, an unset `KPATCH_STAGE` — runs the real compiler unchanged.

mod cmdline;
mod config;
mod live_patching;
mod naming;
mod outputs;

// Public for the fuzz target `command_lines` (fuzz/), which parses command lines as the
// wrapper does.
pub(crate) use cmdline::{expand_response_files, DepOpt, Input, InputKind};
pub use cmdline::{parse, CommandLine, Mode, Token};
pub(crate) use config::{split_list, vars, CcConfig, Stage, DEFAULT_PATCH_ARGS};
pub(crate) use naming::{default_output, AsmNaming};
pub(crate) use outputs::{dep_file, written_files};

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::stash::{self, StashError};
use crate::tools;

/// Why the wrapper failed.
#[derive(Debug, thiserror::Error)]
pub enum CcError {
    /// `KPATCH_STAGE` holds something else than the three stages.
    #[error("KPATCH_STAGE={0:?} is not a stage: use original, patched or configure (or unset it to run the real compiler unchanged)")]
    UnknownStage(String),
    /// A numeric variable does not parse.
    #[error("{var}={value:?} is not {expected}")]
    BadVariable {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The real compiler is not on `PATH`.
    #[error("the real compiler `{0}` is not on PATH (libcare-cc itself does not count): set KPCCREAL (KPCXXREAL for C++) to its absolute path")]
    CompilerNotFound(String),
    /// `KPCCREAL` points back at the wrapper.
    #[error("the real compiler {0} is libcare-cc itself: set KPCCREAL (KPCXXREAL for C++) to the real compiler")]
    CompilerIsSelf(PathBuf),
    /// The wrapper was started by a compiler it ran.
    #[error("libcare-cc was started by a compiler it runs itself: KPCCREAL/KPCXXREAL must name the real compiler, not a wrapper that calls cc or gcc from PATH")]
    Loop,
    /// `kpatch_gensrc` is not where it should be.
    #[error("kpatch_gensrc is not an executable in {0}: set KPATCH_PATH to the directory of the kpatch tools")]
    GensrcMissing(PathBuf),
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A program failed; its own messages precede this one.
    #[error("{program} failed ({status}) while {what}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it was doing.
        what: String,
    },
    /// The patched stage found no original assembly to diff against.
    #[error("no original-stage assembly {asm} for {output}: that file was not compiled by libcare-cc in the original stage (a source file that only the patch adds is not supported; if the original build was made without libcare-cc, rebuild with `libcare-patch-make --clean`)")]
    MissingOriginal {
        /// The kept assembly that should exist.
        asm: PathBuf,
        /// The object (or source) being built.
        output: PathBuf,
    },
    /// An output of the original stage could not be kept (`KPCC_KEEP_LIST`).
    #[error(transparent)]
    Keep(#[from] StashError),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

impl CcError {
    /// The exit code for this error: a failed program's own code, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            CcError::Failed { status, .. } => status.code().filter(|c| *c != 0).unwrap_or(1),
            _ => 1,
        }
    }
}

/// Runs the wrapper for `argv` (with `argv[0]`) in environment `env`; returns the exit code.
/// A passthrough replaces the process with the real compiler and does not return on success.
pub fn run(argv: &[OsString], env: &HashMap<String, String>) -> Result<i32, CcError> {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "libcare-cc".into());
    let cfg = CcConfig::from_env(&argv0, env)?;
    if cfg.nested {
        return Err(CcError::Loop);
    }
    let real = resolve_real_compiler(&cfg, env)?;
    let raw_args = argv.get(1..).unwrap_or_default();
    if cfg.debug > 1 {
        let shown: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        eprintln!("libcare-cc: ran as {}", shown.join(" "));
    }

    // Arguments that are not UTF-8 are not ours to rewrite.
    let Some(args) = raw_args
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<Vec<String>>>()
    else {
        return Err(exec_real(&real, raw_args, &cfg));
    };
    let args = expand_response_files(&args);
    let mut cl = parse(&args);

    let stage = match cfg.stage {
        Some(s @ (Stage::Original | Stage::Patched | Stage::Earlier)) => s,
        _ => return Err(exec_real(&real, raw_args, &cfg)),
    };
    if matches!(stage, Stage::Patched | Stage::Earlier) && !is_configure_probe(&cl) && !cl.query {
        if let Some(list) = &cfg.keep_list {
            // Passthroughs too: whatever this command overwrites, the original stage made.
            for file in written_files(&cl) {
                stash::stash(list, Path::new(&file))?;
            }
        }
    }
    if let Some(why) = passthrough_reason(&cl, &cfg) {
        if cfg.debug > 0 {
            eprintln!("libcare-cc: passthrough ({why})");
        }
        return Err(exec_real(&real, raw_args, &cfg));
    }
    cl.remove_flags(&cfg.remove_args);

    let w = Wrapper {
        tools: tools::tools_dir(cfg.kpatch_path.as_deref()),
        naming: AsmNaming {
            prefix: cfg.prefix.clone(),
            asm_dir: cfg.asm_dir.clone(),
        },
        cfg,
        real,
        stage,
        cl,
    };
    if w.cfg.debug > 0 {
        eprintln!(
            "libcare-cc: KPATCH_STAGE={} mode={:?} real={}",
            stage.name(),
            w.cl.mode,
            w.real.display()
        );
    }
    match w.cl.mode {
        Mode::Compile => w.compile(),
        Mode::Assembly => w.assembly(),
        Mode::Link => w.link(),
        // passthrough_reason covers preprocessing.
        Mode::Preprocess => Err(exec_real(&w.real, raw_args, &w.cfg)),
    }?;
    Ok(0)
}

/// Finds the real compiler: `KPCCREAL`/`KPCXXREAL` (a name is looked up on `PATH`), else
/// `gcc`/`g++` on `PATH`, never the wrapper itself.
/// Options every compile to assembly gets for target `machine`, in both stages. On aarch64,
/// no section anchors: gcc's default from -O1 on addresses a file's variables from one
/// anchor, so a variable a patch adds would move the others and kpatch_gensrc would refuse
/// the change.
fn target_flags(machine: &str) -> &'static [&'static str] {
    if machine.starts_with("aarch64") {
        &["-fno-section-anchors"]
    } else {
        &[]
    }
}

fn resolve_real_compiler(
    cfg: &CcConfig,
    env: &HashMap<String, String>,
) -> Result<PathBuf, CcError> {
    let me = tools::self_exe();
    let name = cfg
        .real_compiler
        .clone()
        .unwrap_or_else(|| cfg.default_compiler().to_string());
    let path = if name.contains('/') {
        PathBuf::from(&name)
    } else {
        let path_var = env.get("PATH").map(OsString::from);
        tools::find_on_path(&name, path_var.as_deref(), me.as_deref())
            .ok_or(CcError::CompilerNotFound(name))?
    };
    if me
        .as_deref()
        .is_some_and(|me| tools::is_same_file(&path, me))
    {
        return Err(CcError::CompilerIsSelf(path));
    }
    Ok(path)
}

/// Why an invocation goes to the real compiler unchanged, if it does.
fn passthrough_reason(cl: &CommandLine, cfg: &CcConfig) -> Option<&'static str> {
    if is_configure_probe(cl) {
        return Some("configure probe");
    }
    if cl.query {
        return Some("query");
    }
    if cl.mode == Mode::Preprocess {
        return Some("preprocessing only");
    }
    if cl.inputs().next().is_none() {
        return Some("no input file");
    }
    if cl
        .inputs()
        .any(|i| matches!(i.kind, InputKind::Stdin | InputKind::DevNull))
    {
        return Some("standard input or /dev/null");
    }
    if cl.output() == Some("/dev/null") {
        return Some("output to /dev/null");
    }
    if matches!(cl.mode, Mode::Compile | Mode::Assembly) {
        if cl.output().is_some() && cl.inputs().count() > 1 {
            return Some("-o with several inputs (gcc reports it)");
        }
        if !cl.inputs().any(|i| is_processed(i, cfg)) {
            return Some("nothing to compile through assembly");
        }
    }
    None
}

/// A configure script's test compile (the peer's test: `conftest.` or `qemu-conf` in an
/// argument).
fn is_configure_probe(cl: &CommandLine) -> bool {
    cl.any_arg_contains("conftest.") || cl.any_arg_contains("qemu-conf")
}

/// Whether the wrapper builds this input through kept assembly.
fn is_processed(input: &Input, cfg: &CcConfig) -> bool {
    match input.kind {
        InputKind::Source => true,
        InputKind::Asm | InputKind::AsmCpp => cfg.gensrc_asm,
        _ => false,
    }
}

/// Replaces the process with the real compiler; returns only on failure.
fn exec_real(real: &Path, args: &[OsString], cfg: &CcConfig) -> CcError {
    if cfg.debug > 0 {
        eprintln!("libcare-cc: exec {} {:?}", real.display(), args);
    }
    let source = Command::new(real)
        .args(args)
        .env(vars::LIBCARE_CC_RUNNING, "1")
        .exec();
    CcError::Spawn {
        program: real.to_path_buf(),
        source,
    }
}

/// One classified invocation in the original or patched stage.
struct Wrapper {
    cfg: CcConfig,
    real: PathBuf,
    stage: Stage,
    cl: CommandLine,
    tools: Option<PathBuf>,
    naming: AsmNaming,
}

impl Wrapper {
    /// `cc -c`: each source to its own object through kept assembly; other inputs by gcc.
    fn compile(&self) -> Result<(), CcError> {
        let inputs: Vec<&Input> = self.cl.inputs().collect();
        let single = inputs.len() == 1;
        for input in inputs.iter().filter(|i| is_processed(i, &self.cfg)) {
            let object = match (single, self.cl.output()) {
                (true, Some(o)) => o.to_string(),
                _ => default_output(&input.path, "o"),
            };
            let object = Path::new(&object);
            let asm = self.build_asm(input, object)?;
            let mut args = self.flags();
            args.extend(["-c", "-x", "assembler"].map(String::from));
            args.push(path_arg(&asm));
            args.push("-o".into());
            args.push(path_arg(object));
            args.extend(self.cfg.append_args.iter().cloned());
            self.run_compiler(&args, &format!("assembling {}", asm.display()))?;
        }
        self.run_rest("compiling the other inputs")
    }

    /// `cc -S`: each source's (combined, in the patched stage) assembly copied to its output.
    fn assembly(&self) -> Result<(), CcError> {
        let inputs: Vec<&Input> = self.cl.inputs().collect();
        let single = inputs.len() == 1;
        for input in inputs.iter().filter(|i| is_processed(i, &self.cfg)) {
            let out = match (single, self.cl.output()) {
                (true, Some(o)) => o.to_string(),
                _ => default_output(&input.path, "s"),
            };
            let asm = self.build_asm(input, Path::new(&out))?;
            std::fs::copy(&asm, &out).map_err(|source| CcError::Io {
                path: PathBuf::from(&out),
                what: "cannot write",
                source,
            })?;
        }
        self.run_rest("compiling the other inputs")
    }

    /// A link, possibly compiling sources on the way: sources are replaced by their kept (or
    /// combined) assembly, in place, so the order of inputs and libraries is unchanged.
    fn link(&self) -> Result<(), CcError> {
        let mut replaced: HashMap<usize, PathBuf> = HashMap::new();
        for (idx, tok) in self.cl.tokens.iter().enumerate() {
            if let Token::Input(input) = tok {
                if is_processed(input, &self.cfg) {
                    let asm = self.build_asm(input, Path::new(&input.path))?;
                    replaced.insert(idx, asm);
                }
            }
        }
        let args = link_args(
            &self.cl,
            &replaced,
            &self.cfg.append_args,
            self.stage == Stage::Patched,
        );
        self.run_compiler(&args, "linking")
    }

    /// The options kept for every step: all flags, without inputs, output, mode, language and
    /// dependency options (each step adds its own).
    fn flags(&self) -> Vec<String> {
        self.cl
            .tokens
            .iter()
            .filter(|t| matches!(t, Token::Flag(_)))
            .flat_map(Token::to_args)
            .collect()
    }

    /// The dependency options for compiling `input` to assembly, so that the dependency file
    /// gets the name and target the plain command would give it (gcc derives both from `-o`,
    /// which here names the assembly instead).
    fn dep_args(&self, input: &Input) -> Vec<String> {
        let deps: Vec<&DepOpt> = self.cl.deps().collect();
        let mut args: Vec<String> = deps.iter().flat_map(|d| d.to_args()).collect();
        if !deps.iter().any(|d| matches!(d, DepOpt::Generate(_))) {
            return args;
        }
        let user_out = self.cl.output();
        if !deps.iter().any(|d| matches!(d, DepOpt::File(_))) {
            if let Some(file) = dep_file(&self.cl, input) {
                args.push("-MF".into());
                args.push(file);
            }
        }
        if !deps.iter().any(|d| matches!(d, DepOpt::Target(..))) {
            // Without -o, cc1 would name the target after the input (foo.o); our -o names
            // the assembly, so say it explicitly.
            args.push("-MQ".into());
            args.push(match user_out {
                Some(o) => o.to_string(),
                None => default_output(&input.path, "o"),
            });
        }
        args
    }

    /// Produces the kept assembly of `input` for this stage, named after `base`, and in the
    /// patched stage the combined assembly; returns the file to assemble.
    fn build_asm(&self, input: &Input, base: &Path) -> Result<PathBuf, CcError> {
        let kept = self.naming.stage_asm(base, self.stage.name())?;
        let original = self.naming.stage_asm(base, Stage::Original.name())?;
        if self.stage != Stage::Original && !original.is_file() {
            return Err(CcError::MissingOriginal {
                asm: original,
                output: base.to_path_buf(),
            });
        }
        let tmp = TempOut::beside(&kept);
        match input.kind {
            InputKind::Asm => {
                std::fs::copy(&input.path, tmp.path()).map_err(|source| CcError::Io {
                    path: PathBuf::from(&input.path),
                    what: "cannot copy",
                    source,
                })?;
            }
            _ => {
                let step = if input.kind == InputKind::AsmCpp {
                    "-E"
                } else {
                    "-S"
                };
                let mut args = self.flags();
                args.extend(self.dep_args(input));
                args.push(step.into());
                if let Some(lang) = &input.lang {
                    args.push("-x".into());
                    args.push(lang.clone());
                }
                args.push(input.path.clone());
                args.push("-o".into());
                args.push(path_arg(tmp.path()));
                args.extend(
                    target_flags(&self.target_machine())
                        .iter()
                        .map(|f| f.to_string()),
                );
                // <libcare/livepatch.h>, after every directory of the build's own.
                if let Some(dir) = tools::livepatch_include_dir(self.tools.as_deref()) {
                    args.push("-idirafter".into());
                    args.push(path_arg(&dir));
                }
                args.extend(self.cfg.append_args.iter().cloned());
                // First, as `gcc -flive-patching=inline-clone ...` would have them: the
                // debugging information records the options in order.
                let live = self.live_patching_flags(&args);
                args.splice(0..0, live);
                self.run_compiler(&args, &format!("compiling {} to assembly", input.path))?;
            }
        }
        tmp.persist(&kept)?;
        match self.stage {
            Stage::Original => return Ok(kept),
            // Kept for the patched stage; the object is the original's.
            Stage::Earlier => return Ok(original),
            _ => {}
        }
        self.combine(base, &original, &kept)
    }

    /// Runs `kpatch_gensrc` on the kept original and the new patched assembly of `base`.
    fn combine(&self, base: &Path, original: &Path, patched: &Path) -> Result<PathBuf, CcError> {
        let gensrc = self.gensrc()?;
        // What the earlier patches have of this file, when the patch is built on top of them
        // and they changed it.
        let earlier = Some(self.naming.stage_asm(base, Stage::Earlier.name())?)
            .filter(|e| self.cfg.earlier && e.is_file());
        if !self.cfg.dbgfilter_args.is_empty() {
            for file in [original, patched].into_iter().chain(earlier.as_deref()) {
                let tmp = TempOut::beside(file);
                let mut args = self.cfg.dbgfilter_args.clone();
                args.extend([
                    "-i".into(),
                    path_arg(file),
                    "-o".into(),
                    path_arg(tmp.path()),
                ]);
                self.run(
                    &gensrc,
                    &args,
                    &format!("filtering {}", file.display()),
                    false,
                )?;
                tmp.persist(file)?;
            }
        }
        let combined = self.naming.combined_asm(base)?;
        let tmp = TempOut::beside(&combined);
        let mut args = self.cfg.patch_args.clone();
        if let Some(earlier) = &earlier {
            args.push(format!("--earlier={}", earlier.display()));
        }
        if let Some(report) = &self.cfg.report {
            args.push(format!("--report={}", report.display()));
        }
        args.extend([
            "-i".into(),
            path_arg(original),
            "-i".into(),
            path_arg(patched),
            "-o".into(),
            path_arg(tmp.path()),
        ]);
        self.run(
            &gensrc,
            &args,
            &format!("combining {} and {}", original.display(), patched.display()),
            false,
        )?;
        tmp.persist(&combined)?;
        Ok(combined)
    }

    fn gensrc(&self) -> Result<PathBuf, CcError> {
        let dir = self.tools.clone().unwrap_or_default();
        let gensrc = dir.join("kpatch_gensrc");
        if tools::is_executable(&gensrc) {
            Ok(gensrc)
        } else {
            Err(CcError::GensrcMissing(dir))
        }
    }

    /// Runs the real compiler on whatever inputs the wrapper does not build itself.
    fn run_rest(&self, what: &str) -> Result<(), CcError> {
        let mut rest_inputs = false;
        let mut args = Vec::new();
        for tok in &self.cl.tokens {
            if let Token::Input(i) = tok {
                if is_processed(i, &self.cfg) {
                    continue;
                }
                rest_inputs = true;
            }
            args.extend(tok.to_args());
        }
        if !rest_inputs {
            return Ok(());
        }
        args.extend(self.cfg.append_args.iter().cloned());
        self.run_compiler(&args, what)
    }

    /// What makes this compile safe to live-patch (see [`live_patching`]), for both stages,
    /// unless `KPCC_LIVE_PATCHING=0`; `args` is the compile command so far.
    fn live_patching_flags(&self, args: &[String]) -> Vec<String> {
        if !self.cfg.live_patching {
            return Vec::new();
        }
        let version = Command::new(&self.real)
            .arg("--version")
            .env(vars::LIBCARE_CC_RUNNING, "1")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let (flags, why) =
            live_patching::flags(&live_patching::Compiler::from_version(&version), args);
        if let Some(why) = why {
            eprintln!("libcare-cc: warning: {why}");
        }
        flags.into_iter().map(String::from).collect()
    }

    /// The real compiler's target triple (`gcc -dumpmachine`); empty if it cannot tell.
    fn target_machine(&self) -> String {
        Command::new(&self.real)
            .arg("-dumpmachine")
            .env(vars::LIBCARE_CC_RUNNING, "1")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn run_compiler(&self, args: &[String], what: &str) -> Result<(), CcError> {
        self.run(&self.real, args, what, true)
    }

    fn run(
        &self,
        program: &Path,
        args: &[String],
        what: &str,
        compiler: bool,
    ) -> Result<(), CcError> {
        if self.cfg.debug > 0 {
            let shown: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
            eprintln!("{:?} {}", program.display().to_string(), shown.join(" "));
        }
        let mut cmd = Command::new(program);
        cmd.args(args);
        if compiler {
            cmd.env(vars::LIBCARE_CC_RUNNING, "1");
        }
        let status = cmd.status().map_err(|source| CcError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(CcError::Failed {
                program: program.to_path_buf(),
                status,
                what: what.to_string(),
            })
        }
    }
}

/// The link command: the original arguments in order, each replaced source as
/// `-x assembler ASM` (with `-x` reset for the inputs after it), the appended arguments, and
/// `-Wl,-q` in the patched stage.
fn link_args(
    cl: &CommandLine,
    replaced: &HashMap<usize, PathBuf>,
    append: &[String],
    patched: bool,
) -> Vec<String> {
    // Dependency options only matter if gcc still preprocesses something itself.
    let keep_deps = cl.tokens.iter().enumerate().any(|(idx, t)| {
        matches!(t, Token::Input(i) if !replaced.contains_key(&idx) && i.kind != InputKind::Linker)
    });
    let mut args = Vec::new();
    let mut lang: Option<String> = None;
    for (idx, tok) in cl.tokens.iter().enumerate() {
        match tok {
            Token::Lang(_) => {}
            Token::Dep(_) if !keep_deps => {}
            Token::Input(input) => {
                let (want, path) = match replaced.get(&idx) {
                    Some(asm) => (Some("assembler".to_string()), path_arg(asm)),
                    None => (input.lang.clone(), input.path.clone()),
                };
                if want != lang {
                    args.push("-x".into());
                    args.push(want.clone().unwrap_or_else(|| "none".into()));
                    lang = want;
                }
                args.push(path);
            }
            other => args.extend(other.to_args()),
        }
    }
    args.extend(append.iter().cloned());
    if patched && !has_emit_relocs(&args) {
        args.push("-Wl,-q".into());
    }
    args
}

/// Whether a link command already asks the linker to keep relocations.
fn has_emit_relocs(args: &[String]) -> bool {
    args.iter().any(|a| {
        a.strip_prefix("-Wl,")
            .is_some_and(|l| l.split(',').any(|o| o == "-q" || o == "--emit-relocs"))
    })
}

/// A path as a command-line argument; a leading `-` is protected so gcc takes it as a file.
fn path_arg(p: &Path) -> String {
    let s = p.to_string_lossy().into_owned();
    if s.starts_with('-') {
        format!("./{s}")
    } else {
        s
    }
}

/// A not-yet-created output file next to `target` (same directory, so the final rename is
/// atomic and a concurrent `make -j` never sees a half-written kept file). The tool creates it,
/// so it gets the usual permissions; it is removed if the step fails.
struct TempOut {
    path: PathBuf,
    kept: bool,
}

impl TempOut {
    fn beside(target: &Path) -> Self {
        let mut name = target.as_os_str().to_owned();
        name.push(format!(".{}.tmp", std::process::id()));
        TempOut {
            path: PathBuf::from(name),
            kept: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the finished file to `target`.
    fn persist(mut self, target: &Path) -> Result<(), CcError> {
        std::fs::rename(&self.path, target).map_err(|source| CcError::Io {
            path: target.to_path_buf(),
            what: "cannot write",
            source,
        })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.kept {
            // Nothing to clean up when the step failed before creating it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(s: &str) -> CommandLine {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    fn cfg() -> CcConfig {
        let env = HashMap::from([("KPATCH_STAGE".to_string(), "original".to_string())]);
        CcConfig::from_env("cc", &env).unwrap()
    }

    #[test]
    fn aarch64_builds_without_section_anchors() {
        assert_eq!(target_flags("aarch64-linux-gnu"), ["-fno-section-anchors"]);
        assert!(target_flags("x86_64-linux-gnu").is_empty());
        assert!(target_flags("").is_empty());
    }

    #[test]
    fn passthrough_cases() {
        let c = cfg();
        assert!(passthrough_reason(&cl("-c conftest.c -o conftest.o"), &c).is_some());
        assert!(passthrough_reason(&cl("-E foo.c"), &c).is_some());
        assert!(passthrough_reason(&cl("--version"), &c).is_some());
        assert!(passthrough_reason(&cl("-v"), &c).is_some());
        assert!(passthrough_reason(&cl("-c -x c - -o x.o"), &c).is_some());
        assert!(passthrough_reason(&cl("-c foo.c -o /dev/null"), &c).is_some());
        assert!(passthrough_reason(&cl("-c foo.s"), &c).is_some());
        assert!(passthrough_reason(&cl("-c a.c b.c -o x.o"), &c).is_some());
        assert!(passthrough_reason(&cl("-c foo.c"), &c).is_none());
        assert!(passthrough_reason(&cl("-c a.c b.c"), &c).is_none());
        assert!(passthrough_reason(&cl("-o foo foo.o"), &c).is_none());
        assert!(passthrough_reason(&cl("-o foo foo.c"), &c).is_none());
    }

    #[test]
    fn emit_relocs_detection() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_emit_relocs(&a(&["-Wl,-q"])));
        assert!(has_emit_relocs(&a(&["-Wl,--as-needed,--emit-relocs"])));
        assert!(!has_emit_relocs(&a(&["-Wl,-qq", "-q"])));
    }

    #[test]
    fn link_keeps_order_and_brackets_replaced_sources() {
        let c = cl("-O2 -MD -o prog -x c main.inc -x none lib.o util.c -lm");
        let idx = |name: &str| {
            c.tokens
                .iter()
                .position(|t| matches!(t, Token::Input(i) if i.path == name))
                .unwrap()
        };
        let replaced = HashMap::from([
            (idx("main.inc"), PathBuf::from(".kpatch_main.inc.s")),
            (idx("util.c"), PathBuf::from(".kpatch_util.c.s")),
        ]);
        assert_eq!(
            link_args(&c, &replaced, &["-DX".to_string()], true).join(" "),
            "-O2 -o prog -x assembler .kpatch_main.inc.s -x none lib.o \
             -x assembler .kpatch_util.c.s -lm -DX -Wl,-q"
        );
        let c = cl("-o prog a.o -Wl,--emit-relocs");
        assert_eq!(
            link_args(&c, &HashMap::new(), &[], true).join(" "),
            "-o prog a.o -Wl,--emit-relocs"
        );
        // A source gcc still compiles itself keeps its dependency options.
        let c = cl("-MD -o prog x.m a.o");
        assert_eq!(
            link_args(&c, &HashMap::new(), &[], false).join(" "),
            "-MD -o prog x.m a.o"
        );
    }

    fn wrapper(s: &str) -> Wrapper {
        let c = cfg();
        Wrapper {
            naming: AsmNaming {
                prefix: c.prefix.clone(),
                asm_dir: None,
            },
            cfg: c,
            real: PathBuf::from("gcc"),
            stage: Stage::Original,
            cl: cl(s),
            tools: None,
        }
    }

    #[test]
    fn dependency_file_named_as_the_plain_build() {
        let w = wrapper("-MD -c src/foo.c -o obj/foo.o");
        let input = w.cl.inputs().next().unwrap().clone();
        assert_eq!(
            w.dep_args(&input),
            ["-MD", "-MF", "obj/foo.d", "-MQ", "obj/foo.o"]
        );
        let w = wrapper("-MMD -MP -c src/foo.c src/bar.c");
        let input = w.cl.inputs().nth(1).unwrap().clone();
        assert_eq!(
            w.dep_args(&input),
            ["-MMD", "-MP", "-MF", "bar.d", "-MQ", "bar.o"]
        );
        let w = wrapper("-MD -MF x.d -MT t -c foo.c -o foo.o");
        let input = w.cl.inputs().next().unwrap().clone();
        assert_eq!(w.dep_args(&input), ["-MD", "-MF", "x.d", "-MT", "t"]);
        let w = wrapper("-c foo.c");
        let input = w.cl.inputs().next().unwrap().clone();
        assert!(w.dep_args(&input).is_empty());
    }
}
