//! The wrapper's settings, read from the environment (the variables of the peer's `libcare-cc`).

use std::collections::HashMap;
use std::path::PathBuf;

use super::CcError;

/// Which build `libcare-cc` takes part in (`KPATCH_STAGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Keep each source's assembly as `<prefix><name>.original.s` and build from it.
    Original,
    /// Combine the original and patched assembly with `kpatch_gensrc` and build from that.
    Patched,
    /// Ours: compile the sources as the earlier patches of a patch built on top of them have
    /// them into `<prefix><name>.earlier.s`, which the patched stage compares with
    /// (`kpatch_gensrc --earlier`, when `KPCC_EARLIER` is set), and build from the original's
    /// kept assembly (the outputs are the original's).
    Earlier,
    /// Behave exactly as the real compiler (configure scripts).
    Configure,
}

impl Stage {
    /// The name used in `KPATCH_STAGE` and in kept assembly file names.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Original => "original",
            Stage::Patched => "patched",
            Stage::Earlier => "earlier",
            Stage::Configure => "configure",
        }
    }
}

/// Environment variables of the wrapper.
pub mod vars {
    /// Directory of `kpatch_gensrc` (default: the directory of the running executable).
    pub const KPATCH_PATH: &str = "KPATCH_PATH";
    /// `original`, `patched` or `configure`.
    pub const KPATCH_STAGE: &str = "KPATCH_STAGE";
    /// The real C compiler.
    pub const KPCCREAL: &str = "KPCCREAL";
    /// The real C++ compiler (used when invoked under a name ending in `++`: `c++`, `g++`,
    /// `clang++`, `kpcc++`).
    pub const KPCXXREAL: &str = "KPCXXREAL";
    /// Debug level: 1 prints every command run, 2 also the invocation.
    pub const KPCC_DEBUG: &str = "KPCC_DEBUG";
    /// `;`-separated options removed from every command.
    pub const KPCC_REMOVE_ARGS: &str = "KPCC_REMOVE_ARGS";
    /// `;`-separated options appended to every command.
    pub const KPCC_APPEND_ARGS: &str = "KPCC_APPEND_ARGS";
    /// `;`-separated `kpatch_gensrc` options of the debug-filter pass (empty: no pass).
    pub const KPCC_DBGFILTER_ARGS: &str = "KPCC_DBGFILTER_ARGS";
    /// `;`-separated `kpatch_gensrc` options of the diff.
    pub const KPCC_PATCH_ARGS: &str = "KPCC_PATCH_ARGS";
    /// When set, `.s`/`.S` inputs are diffed like C sources.
    pub const KPATCH_GENSRC_ASM: &str = "KPATCH_GENSRC_ASM";
    /// Prefix of kept assembly file names (default `.kpatch_`).
    pub const KPATCH_PREFIX: &str = "KPATCH_PREFIX";
    /// When set, kept assembly goes to `$KPATCH_ASM_DIR/<absolute dir>/` instead of next to
    /// the object.
    pub const KPATCH_ASM_DIR: &str = "KPATCH_ASM_DIR";
    /// Ours, not the peer's: in the patched stage, every file a command is about to write is
    /// appended to this list and then moved aside (see `kpatch_builder::stash`);
    /// `libcare-patch-make` sets it and puts the files back afterwards.
    pub const KPCC_KEEP_LIST: &str = "KPCC_KEEP_LIST";
    /// Ours, not the peer's: in the patched stage, `kpatch_gensrc --report` appends to this
    /// file why each function is in the patch; `libcare-patch-make` sets it and prints it.
    pub const KPCC_REPORT: &str = "KPCC_REPORT";
    /// Ours: `0` (or `off`, `no`) keeps the wrapper from adding the options that make a build
    /// safe to live-patch (`-flive-patching=inline-clone`), to rebuild a binary exactly as it
    /// was built without them.
    pub const KPCC_LIVE_PATCHING: &str = "KPCC_LIVE_PATCHING";
    /// Ours: in the patched stage, a file the `earlier` stage compiled is compared with that
    /// assembly too (`kpatch_gensrc --earlier`): the patch is built on top of earlier patches.
    pub const KPCC_EARLIER: &str = "KPCC_EARLIER";
    /// Set by the wrapper in the environment of the compilers it runs, to detect a loop.
    pub const LIBCARE_CC_RUNNING: &str = "LIBCARE_CC_RUNNING";
}

/// Default `kpatch_gensrc` options of the diff (the peer's).
pub const DEFAULT_PATCH_ARGS: &[&str] = &["--force-gotpcrel", "--os=rhel6"];

/// The wrapper's settings.
#[derive(Clone, Debug)]
pub struct CcConfig {
    /// `None` when `KPATCH_STAGE` is unset: the wrapper then behaves as the real compiler.
    pub stage: Option<Stage>,
    /// `KPCCREAL` or `KPCXXREAL` as given (resolved later).
    pub real_compiler: Option<String>,
    /// Whether we were invoked as a C++ compiler.
    pub cxx: bool,
    /// `KPATCH_PATH`.
    pub kpatch_path: Option<PathBuf>,
    /// `KPCC_DEBUG`.
    pub debug: u32,
    /// `KPCC_REMOVE_ARGS`.
    pub remove_args: Vec<String>,
    /// `KPCC_APPEND_ARGS`.
    pub append_args: Vec<String>,
    /// `KPCC_DBGFILTER_ARGS`.
    pub dbgfilter_args: Vec<String>,
    /// `KPCC_PATCH_ARGS`.
    pub patch_args: Vec<String>,
    /// `KPATCH_GENSRC_ASM`.
    pub gensrc_asm: bool,
    /// `KPATCH_PREFIX`.
    pub prefix: String,
    /// `KPATCH_ASM_DIR`.
    pub asm_dir: Option<PathBuf>,
    /// Whether this process was started by a compiler that libcare-cc itself runs.
    pub nested: bool,
    /// `KPCC_KEEP_LIST`.
    pub keep_list: Option<PathBuf>,
    /// `KPCC_REPORT`.
    pub report: Option<PathBuf>,
    /// Whether to add the live-patching options (`KPCC_LIVE_PATCHING`, default on).
    pub live_patching: bool,
    /// `KPCC_EARLIER`.
    pub earlier: bool,
}

/// Splits a `;`-separated list, dropping empty entries.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(';')
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

impl CcConfig {
    /// Reads the settings from `env` for a wrapper invoked as `argv0`.
    ///
    /// Differences from the peer, on purpose: an unset `KPATCH_STAGE` means "behave as the
    /// real compiler" rather than a fatal error, so the wrapper can stand in for `cc` outside a
    /// patch build; `KPCC_REMOVE_ARGS` and `KPCC_DBGFILTER_ARGS` default to empty (the peer:
    /// `-g` and a debug-filter pass), because compiling through `-S` with every flag kept gives
    /// an object byte-identical to the plain build, `-g` included, and our `kpatch_gensrc`
    /// ignores debug lines when it compares functions.
    pub fn from_env(argv0: &str, env: &HashMap<String, String>) -> Result<Self, CcError> {
        let name = argv0.rsplit('/').next().unwrap_or(argv0);
        // Any C++ driver's name: c++, g++, clang++, x86_64-linux-gnu-g++, kpcc++.
        let cxx = name.ends_with("++");
        let get = |k: &str| env.get(k).map(String::as_str);
        let stage = match get(vars::KPATCH_STAGE) {
            None | Some("") => None,
            Some("original") => Some(Stage::Original),
            Some("patched") => Some(Stage::Patched),
            Some("earlier") => Some(Stage::Earlier),
            Some("configure") => Some(Stage::Configure),
            Some(other) => return Err(CcError::UnknownStage(other.to_string())),
        };
        let debug = match get(vars::KPCC_DEBUG) {
            None | Some("") => 0,
            Some(v) => v.trim().parse().map_err(|_| CcError::BadVariable {
                var: vars::KPCC_DEBUG,
                value: v.to_string(),
                expected: "a number",
            })?,
        };
        Ok(CcConfig {
            stage,
            real_compiler: get(if cxx { vars::KPCXXREAL } else { vars::KPCCREAL })
                .filter(|s| !s.is_empty())
                .map(String::from),
            cxx,
            kpatch_path: get(vars::KPATCH_PATH)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            debug,
            remove_args: get(vars::KPCC_REMOVE_ARGS)
                .map(split_list)
                .unwrap_or_default(),
            append_args: get(vars::KPCC_APPEND_ARGS)
                .map(split_list)
                .unwrap_or_default(),
            dbgfilter_args: get(vars::KPCC_DBGFILTER_ARGS)
                .map(split_list)
                .unwrap_or_default(),
            patch_args: get(vars::KPCC_PATCH_ARGS)
                .map(split_list)
                .unwrap_or_else(|| DEFAULT_PATCH_ARGS.iter().map(|s| s.to_string()).collect()),
            gensrc_asm: env.contains_key(vars::KPATCH_GENSRC_ASM),
            prefix: get(vars::KPATCH_PREFIX).unwrap_or(".kpatch_").to_string(),
            asm_dir: get(vars::KPATCH_ASM_DIR)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            nested: env.contains_key(vars::LIBCARE_CC_RUNNING),
            keep_list: get(vars::KPCC_KEEP_LIST)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            report: get(vars::KPCC_REPORT)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            live_patching: !matches!(get(vars::KPCC_LIVE_PATCHING), Some("0" | "off" | "no")),
            earlier: get(vars::KPCC_EARLIER).is_some_and(|v| !v.is_empty()),
        })
    }

    /// The default real compiler's name for this invocation.
    pub fn default_compiler(&self) -> &'static str {
        if self.cxx {
            "g++"
        } else {
            "gcc"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = CcConfig::from_env("/x/libcare-cc", &env(&[])).unwrap();
        assert_eq!(c.stage, None);
        assert!(!c.cxx);
        assert!(c.remove_args.is_empty());
        assert_eq!(c.patch_args, ["--force-gotpcrel", "--os=rhel6"]);
        assert_eq!(c.prefix, ".kpatch_");
    }

    #[test]
    fn lists_and_cxx() {
        let c = CcConfig::from_env(
            "g++",
            &env(&[
                ("KPATCH_STAGE", "patched"),
                ("KPCC_APPEND_ARGS", "-Wl,-q;;-DX"),
                ("KPCXXREAL", "/usr/bin/g++"),
                ("KPCCREAL", "/usr/bin/gcc"),
            ]),
        )
        .unwrap();
        assert_eq!(c.stage, Some(Stage::Patched));
        assert_eq!(c.append_args, ["-Wl,-q", "-DX"]);
        assert_eq!(c.real_compiler.as_deref(), Some("/usr/bin/g++"));
    }

    #[test]
    fn the_earlier_stage_and_its_use_by_the_patched_one() {
        let c = CcConfig::from_env("cc", &env(&[("KPATCH_STAGE", "earlier")])).unwrap();
        assert_eq!((c.stage, c.earlier), (Some(Stage::Earlier), false));
        assert_eq!(Stage::Earlier.name(), "earlier");
        let c = CcConfig::from_env(
            "cc",
            &env(&[("KPATCH_STAGE", "patched"), ("KPCC_EARLIER", "1")]),
        )
        .unwrap();
        assert!(c.earlier);
    }

    #[test]
    fn cxx_names() {
        for name in [
            "c++",
            "/usr/bin/g++",
            "clang++",
            "x86_64-linux-gnu-g++",
            "kpcc++",
        ] {
            assert!(CcConfig::from_env(name, &env(&[])).unwrap().cxx, "{name}");
        }
        for name in ["cc", "gcc", "clang", "libcare-cc"] {
            assert!(!CcConfig::from_env(name, &env(&[])).unwrap().cxx, "{name}");
        }
    }

    #[test]
    fn unknown_stage_is_an_error() {
        let e = CcConfig::from_env("cc", &env(&[("KPATCH_STAGE", "orignal")])).unwrap_err();
        assert!(e.to_string().contains("orignal"), "{e}");
    }
}
