//! The environment the project's `make` runs in: `CC`/`CXX` pointing at `libcare-cc`, and a
//! private directory first in `PATH` whose `cc`, `gcc`, `c++` and `g++` are links to it, so
//! that Makefiles naming the compiler directly also go through the wrapper. Nothing outside
//! that temporary directory is changed (the peer re-points the system `cc` link instead).

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cc::{split_list, vars, Stage};
use crate::tools;

/// Why the build environment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildEnvError {
    /// No real compiler to hand to the wrapper.
    #[error("the real C compiler `{0}` is not on PATH: install gcc or set KPCCREAL to its absolute path")]
    CompilerNotFound(String),
    /// The private directory could not be made.
    #[error("cannot create the private compiler directory: {0}")]
    ShimDir(io::Error),
}

/// Names linked to `libcare-cc` in the private `PATH` directory.
const SHIM_NAMES: &[&str] = &["cc", "gcc", "c++", "g++"];

/// The compiler environment for the builds.
pub struct BuildEnv {
    /// The private directory holding the compiler links, on `PATH`; removed when dropped.
    _shim: tempfile::TempDir,
    vars: Vec<(String, OsString)>,
    append_args: Vec<String>,
    keep_list: Option<PathBuf>,
    report: Option<PathBuf>,
    /// The patch is built on top of earlier patches (`KPCC_EARLIER` in the patched stage).
    earlier: bool,
}

impl BuildEnv {
    /// Sets up the environment for the wrapper `libcare_cc`, with the kpatch tools in
    /// `tools_dir`. The real compilers are resolved now, before our links shadow them.
    pub fn new(libcare_cc: &Path, tools_dir: &Path) -> Result<Self, BuildEnvError> {
        let me = libcare_cc.canonicalize().ok();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let resolve = |name: &str| -> Option<PathBuf> {
            if name.contains('/') {
                return Some(std::path::absolute(name).unwrap_or_else(|_| PathBuf::from(name)));
            }
            tools::find_on_path(name, Some(&path), me.as_deref())
        };
        let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let cc = match from_env(vars::KPCCREAL) {
            Some(name) => resolve(&name).ok_or(BuildEnvError::CompilerNotFound(name))?,
            None => resolve("gcc")
                .or_else(|| resolve("cc"))
                .ok_or_else(|| BuildEnvError::CompilerNotFound("gcc".into()))?,
        };
        let cxx = resolve(&from_env(vars::KPCXXREAL).unwrap_or_else(|| "g++".into()));

        let shim = tempfile::Builder::new()
            .prefix("libcare-patch-make.")
            .tempdir()
            .map_err(BuildEnvError::ShimDir)?;
        for name in SHIM_NAMES {
            symlink(libcare_cc, shim.path().join(name)).map_err(BuildEnvError::ShimDir)?;
        }
        let mut new_path = shim.path().as_os_str().to_owned();
        if !path.is_empty() {
            new_path.push(":");
            new_path.push(&path);
        }

        let mut vars: Vec<(String, OsString)> = vec![
            ("PATH".into(), new_path),
            (vars::KPATCH_PATH.into(), tools_dir.into()),
            ("CC".into(), libcare_cc.into()),
            ("CXX".into(), shim.path().join("c++").into()),
            (vars::KPCCREAL.into(), cc.into()),
            // The peer's driver turns the debug-filter pass off; so do we (it is our default).
            (vars::KPCC_DBGFILTER_ARGS.into(), OsString::new()),
            ("IS_LIBCARE_CC".into(), "y".into()),
        ];
        if let Some(cxx) = cxx {
            vars.push((vars::KPCXXREAL.into(), cxx.into()));
        }
        let append_args = std::env::var(vars::KPCC_APPEND_ARGS)
            .map(|v| split_list(&v))
            .unwrap_or_default();
        Ok(BuildEnv {
            _shim: shim,
            vars,
            append_args,
            keep_list: None,
            report: None,
            earlier: false,
        })
    }

    /// Has the patched stage's `libcare-cc` move every output it overwrites aside and list it
    /// in `list` (an absolute path; see [`crate::stash`]).
    pub fn keep_outputs_in(&mut self, list: PathBuf) {
        self.keep_list = Some(list);
    }

    /// Has the patched stage's `libcare-cc` compare each file the `earlier` stage compiled with
    /// that assembly too (`kpatch_gensrc --earlier`): the patch is built on top of the earlier
    /// patches.
    pub fn build_on_earlier(&mut self) {
        self.earlier = true;
    }

    /// Has the patched stage's `kpatch_gensrc` append why each function is in the patch to
    /// `report` (an absolute path; see [`crate::report`]).
    pub fn report_to(&mut self, report: PathBuf) {
        self.report = Some(report);
    }

    /// What the builds check and say: `verbose` has `kpatch_gensrc` list what it patches and
    /// leaves out (`-d 1`), `strict_ipa` has it refuse changes that callers may depend on
    /// (`--strict-ipa`), `no_flags` keeps `libcare-cc` from adding the live-patching options.
    pub fn set_safety(&mut self, verbose: bool, strict_ipa: bool, no_flags: bool) {
        let mut gensrc: Vec<String> = match std::env::var(vars::KPCC_PATCH_ARGS) {
            Ok(v) => split_list(&v),
            Err(_) => crate::cc::DEFAULT_PATCH_ARGS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        if verbose {
            gensrc.extend(["-d".into(), "1".into()]);
        }
        if strict_ipa {
            gensrc.push("--strict-ipa".into());
        }
        self.vars
            .push((vars::KPCC_PATCH_ARGS.into(), gensrc.join(";").into()));
        if no_flags {
            self.vars
                .push((vars::KPCC_LIVE_PATCHING.into(), "0".into()));
        }
    }

    /// Applies the environment of `stage` (none: `make clean`) to `cmd`.
    pub fn apply(&self, cmd: &mut Command, stage: Option<Stage>) {
        // A driver started from a make recipe must not join that make's jobserver.
        for var in ["MAKELEVEL", "MAKEFLAGS", "MFLAGS"] {
            cmd.env_remove(var);
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        match stage {
            Some(stage) => {
                cmd.env(vars::KPATCH_STAGE, stage.name());
            }
            None => {
                cmd.env_remove(vars::KPATCH_STAGE);
            }
        }
        // The earlier stage rewrites outputs too (with the original's bytes): they are kept
        // and put back like the patched stage's.
        let keeping = matches!(stage, Some(Stage::Patched | Stage::Earlier));
        for (var, file, set) in [
            (vars::KPCC_KEEP_LIST, &self.keep_list, keeping),
            (
                vars::KPCC_REPORT,
                &self.report,
                stage == Some(Stage::Patched),
            ),
        ] {
            match file {
                Some(file) if set => {
                    cmd.env(var, file);
                }
                _ => {
                    cmd.env_remove(var);
                }
            }
        }
        if self.earlier && stage == Some(Stage::Patched) {
            cmd.env(vars::KPCC_EARLIER, "1");
        } else {
            cmd.env_remove(vars::KPCC_EARLIER);
        }
        let mut append = self.append_args.clone();
        if stage == Some(Stage::Patched) && !append.iter().any(|a| a == "-Wl,-q") {
            append.push("-Wl,-q".into());
        }
        cmd.env(vars::KPCC_APPEND_ARGS, append.join(";"));
    }
}

/// Our standard output as a child's stdio, so that a child's output and ours stay in order.
pub fn stdout_stdio() -> io::Result<Stdio> {
    Ok(Stdio::from(io::stdout().as_fd().try_clone_to_owned()?))
}
