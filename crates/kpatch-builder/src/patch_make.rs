//! `libcare-patch-make`: build a make-based project twice (original and patched, through
//! `libcare-cc`), install both, and turn every installed executable whose patched build has
//! `.kpatch` sections into `patchroot/<build-id>.kpatch`.
//!
//! The patched stage rebuilds only what the patches change, in the same tree, and the tree is
//! then put back exactly as the original stage left it: `libcare-cc` keeps every original
//! output it overwrites and the driver puts them back ([`crate::stash`]), the sources return
//! from their backups with their own modification times, and any other file the patched
//! build rewrote is marked out of date ([`crate::tree_state`]). So the next run's original
//! build redoes nothing that a plain `make` would not redo.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::build_env::{stdout_stdio, BuildEnv, BuildEnvError};
use crate::cc::Stage;
use crate::elfinfo::{self, ElfInfoError};
use crate::install_guard;
use crate::patch_check;
use crate::patchfile::line_keep;
use crate::patchfile::{
    apply_patch, backed_up_files, originals, read_patch, restore_sources, ApplyError, RestoreError,
    RestoredTime,
};
use crate::post::{self, PostError};
use crate::report;
use crate::stash::{self, StashError};
use crate::tools;
use crate::tree_state::{self, ScanError, TreeState};

/// A patch id: 1 to 7 printable ASCII characters, no space (it is stored NUL-terminated in 8
/// bytes of the header; [`kpatch_file::validate_patch_id`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchId(String);

/// The id is not one a `.kpatch` header can hold.
#[derive(Debug, thiserror::Error)]
#[error("Invalid patch-id!")]
pub struct InvalidPatchId;

impl PatchId {
    /// Checks `id`.
    pub fn new(id: &str) -> Result<Self, InvalidPatchId> {
        kpatch_file::validate_patch_id(id).map_err(|_| InvalidPatchId)?;
        Ok(PatchId(id.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// `-c`: `make clean` and remove the install trees first.
    pub clean: bool,
    /// `-u`: do not build; remake the patches from the existing install trees.
    pub update: bool,
    /// `-d`: the make variable naming the install root (default `DESTDIR`).
    pub destdir_var: String,
    /// `-i`.
    pub id: PatchId,
    /// `-b`: the build-id written into the patches instead of the original's.
    pub build_id: Option<String>,
    /// `-j`.
    pub jobs: Option<u32>,
    /// `--replace`: cumulative patches, each replacing every earlier patch of its object.
    pub replace: bool,
    /// `--after ID=PATCH`: the patches are built on top of the earlier patches with these ids,
    /// made from these patch files (applied first, in order): the process runs them, and the
    /// new patches need them applied.
    pub after: Vec<(PatchId, PathBuf)>,
    /// The patch files, applied in order (relative ones from [`Paths::workdir`]); messages
    /// name them as given here.
    pub patches: Vec<PathBuf>,
    /// `-v`: say which line numbers were kept, and what `kpatch_gensrc` patches and leaves out.
    pub verbose: bool,
    /// `--strict-ipa`: `kpatch_gensrc` refuses, rather than warns about, a changed function
    /// whose callers may depend on its old body (an original not built for live patching).
    pub strict_ipa: bool,
    /// `--no-live-patching-flags`: build without `-flive-patching=inline-clone`, as a binary
    /// built without it was (`KPCC_LIVE_PATCHING=0`).
    pub no_live_patching_flags: bool,
}

/// Where things are.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Where `make` runs (the current directory).
    pub workdir: PathBuf,
    /// Where the patches are applied (`-s`, default: `workdir`).
    pub srcdir: PathBuf,
    /// Install root of the original build (`LPMAKE_ORIGINAL_DIR`, default `lpmake`).
    pub original_dir: PathBuf,
    /// Install root of the patched build (`LPMAKE_PATCHED_DIR`, default `.lpmaketmp/patched`).
    pub patched_dir: PathBuf,
    /// Where patches are written (`LPMAKE_PATCHROOT`, default `patchroot`).
    pub patchroot: PathBuf,
    /// Directory of `libcare-cc` and `kpatch_gensrc`.
    pub tools_dir: PathBuf,
    /// How the names of `libcare-cc`'s own files start (`KPATCH_PREFIX`, default `.kpatch_`).
    pub kept_prefix: String,
}

impl Paths {
    /// Paths for a run in `workdir`, with the `LPMAKE_*` overrides looked up in `env`;
    /// relative paths are taken from `workdir`.
    pub fn new(
        workdir: &Path,
        srcdir: Option<&Path>,
        tools_dir: &Path,
        env: &HashMap<String, String>,
    ) -> Self {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                workdir.join(p)
            }
        };
        let dir = |var: &str, default: &str| match env.get(var).filter(|v| !v.is_empty()) {
            Some(v) => abs(Path::new(v)),
            None => workdir.join(default),
        };
        Paths {
            workdir: workdir.to_path_buf(),
            srcdir: srcdir.map(abs).unwrap_or_else(|| workdir.to_path_buf()),
            original_dir: dir("LPMAKE_ORIGINAL_DIR", "lpmake"),
            patched_dir: dir("LPMAKE_PATCHED_DIR", ".lpmaketmp/patched"),
            patchroot: dir("LPMAKE_PATCHROOT", "patchroot"),
            tools_dir: tools_dir.to_path_buf(),
            kept_prefix: env
                .get(crate::cc::vars::KPATCH_PREFIX)
                .cloned()
                .unwrap_or_else(|| ".kpatch_".to_string()),
        }
    }

    /// The driver's own directory, `<workdir>/.lpmaketmp`.
    pub fn private_dir(&self) -> PathBuf {
        self.workdir.join(".lpmaketmp")
    }

    /// The list of outputs the patched stage moved aside (see [`crate::stash`]).
    pub fn keep_list(&self) -> PathBuf {
        self.private_dir().join("kept-outputs")
    }

    /// Why each function of the patched stage is in the patch (see [`crate::report`]).
    pub fn report(&self) -> PathBuf {
        self.private_dir().join("gensrc-report")
    }
}

/// A stage line, printed as the peer prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageLine {
    /// `BUILDING ORIGINAL CODE`
    BuildingOriginal,
    /// `INSTALLING ORIGINAL OBJECTS INTO <dir>`
    InstallingOriginal(PathBuf),
    /// `BUILDING CODE OF EARLIER PATCHES <ids>` (ours: `--after`)
    BuildingEarlier(Vec<String>),
    /// `BUILDING PATCHED CODE`
    BuildingPatched,
    /// `INSTALLING PATCHED OBJECTS INTO <dir>`
    InstallingPatched(PathBuf),
    /// `MAKING PATCHES`
    MakingPatches,
}

impl fmt::Display for StageLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageLine::BuildingOriginal => write!(f, "BUILDING ORIGINAL CODE"),
            StageLine::InstallingOriginal(d) => {
                write!(f, "INSTALLING ORIGINAL OBJECTS INTO {}", d.display())
            }
            StageLine::BuildingEarlier(ids) => {
                write!(f, "BUILDING CODE OF EARLIER PATCHES {}", ids.join(", "))
            }
            StageLine::BuildingPatched => write!(f, "BUILDING PATCHED CODE"),
            StageLine::InstallingPatched(d) => {
                write!(f, "INSTALLING PATCHED OBJECTS INTO {}", d.display())
            }
            StageLine::MakingPatches => write!(f, "MAKING PATCHES"),
        }
    }
}

/// Progress reported to the caller, which prints it.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stage starts.
    Stage(StageLine),
    /// A patch file is about to be applied (as the user named it).
    Applying(&'a Path),
    /// What GNU patch said about one file.
    PatchOutput(&'a str),
    /// A line the post-processing prints, as `kpatch_strip --rel-fixup` does
    /// (`Fixing up relocation f+0`).
    Note(&'a str),
    /// A detail asked for with `-v` (which line numbers the patched sources keep).
    Detail(&'a str),
    /// What a patch just written replaces and adds, and why.
    Functions(&'a [report::Entry]),
    /// Backups left by an interrupted earlier run were put back before starting.
    LeftoversRestored(&'a [PathBuf]),
    /// Something was skipped.
    Warning(String),
    /// A patch was written.
    PatchWritten {
        /// The installed original executable.
        original: &'a Path,
        /// The `.kpatch` file in the patch root.
        patch: &'a Path,
    },
}

/// One patch made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadePatch {
    /// The installed original executable.
    pub original: PathBuf,
    /// `<patchroot>/<build-id>.kpatch`.
    pub patch: PathBuf,
    /// The build-id written into the patch.
    pub build_id: String,
}

/// The step that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Checking tools and patch files, preparing the environment.
    Setup,
    /// Putting back backups of an interrupted earlier run.
    RestoreLeftovers,
    /// `make clean`.
    Clean,
    /// The original build.
    BuildOriginal,
    /// Its installation.
    InstallOriginal,
    /// Applying one patch file.
    Apply(PathBuf),
    /// Keeping the line numbers of unchanged code in the patched files.
    KeepLines,
    /// The build of the earlier patches' code (`--after`).
    BuildEarlier,
    /// The patched build.
    BuildPatched,
    /// Its installation.
    InstallPatched,
    /// Putting the original stage's outputs back.
    RestoreOutputs,
    /// Putting the sources back.
    RestoreSources,
    /// Making the `.kpatch` files.
    MakePatches,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Setup => write!(f, "setup"),
            Step::RestoreLeftovers => write!(f, "restoring sources left patched by an earlier run"),
            Step::Clean => write!(f, "cleaning"),
            Step::BuildOriginal => write!(f, "building original code"),
            Step::InstallOriginal => write!(f, "installing original objects"),
            Step::Apply(p) => write!(f, "applying {}", p.display()),
            Step::KeepLines => write!(f, "keeping line numbers of unchanged code"),
            Step::BuildEarlier => write!(f, "building the earlier patches' code"),
            Step::BuildPatched => write!(f, "building patched code"),
            Step::InstallPatched => write!(f, "installing patched objects"),
            Step::RestoreOutputs => write!(f, "putting back the original build's outputs"),
            Step::RestoreSources => write!(f, "restoring the original sources"),
            Step::MakePatches => write!(f, "making patches"),
        }
    }
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Some of our tools are not installed.
    #[error("kpatch tools are missing in {dir}: {}; set KPATCH_PATH to their directory", names.join(", "))]
    ToolsMissing {
        /// Where they were looked for.
        dir: PathBuf,
        /// Which are missing.
        names: Vec<String>,
    },
    /// The compiler environment.
    #[error(transparent)]
    BuildEnv(#[from] BuildEnvError),
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: io::Error,
    },
    /// A program failed (its own output precedes this message).
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line.
        command: String,
        /// Its status.
        status: ExitStatus,
    },
    /// A patch file.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Putting the sources back.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Putting the original stage's outputs back.
    #[error("{0}; the build tree may now hold patched objects: run with --clean")]
    Stash(#[from] StashError),
    /// Recording the build tree before the patched stage.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Inspecting an ELF file.
    #[error(transparent)]
    Elf(#[from] ElfInfoError),
    /// Making a `.kpatch` file from an executable.
    #[error(transparent)]
    Post(#[from] PostError),
    /// A file operation.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `-u` without earlier builds.
    #[error("{0} does not exist: run without -u first to build it")]
    MissingTree(PathBuf),
    /// A `LPMAKE_*` directory that `--clean` must not remove.
    #[error("refusing to remove {0}: it contains the working or source directory; fix LPMAKE_ORIGINAL_DIR / LPMAKE_PATCHED_DIR")]
    UnsafeRemove(PathBuf),
    /// `make install` wrote outside the work tree (refused by the read-only file systems
    /// around it).
    #[error("`{command}` tried to write outside the work tree, where libcare-patch-make lets nothing be written ({}): the project's install target does not install under ${destdir_var}; give the make variable it installs under, e.g. `-d PREFIX`", lines.join("; "))]
    InstallOutside {
        /// The command line.
        command: String,
        /// Its messages about the read-only file systems.
        lines: Vec<String>,
        /// The make variable used for installing.
        destdir_var: String,
    },
    /// `make install` put no file into the install tree.
    #[error("`{command}` installed nothing under {}: the project's install target does not install under ${destdir_var} (it may have installed somewhere else); give the make variable it installs under, e.g. `-d PREFIX`", dir.display())]
    InstalledNothing {
        /// The command line.
        command: String,
        /// The install tree.
        dir: PathBuf,
        /// The make variable used for installing.
        destdir_var: String,
    },
    /// A patch holds functions this run did not patch: made from something else than this
    /// build (an earlier run's install, a program installed from elsewhere).
    #[error("the patch made from {} (patched: {}) holds {}, which this run's build did not patch: the installed program is not the one just built (an install tree left by an earlier run, or an install step that takes it from elsewhere); no patch was written", original.display(), patched.display(), names.join(", "))]
    ForeignFunctions {
        /// The installed original.
        original: PathBuf,
        /// The installed patched program.
        patched: PathBuf,
        /// The functions no combined assembly of this run names.
        names: Vec<String>,
    },
    /// No installed executable changed.
    #[error("no executable installed under {original} has .kpatch sections in its patched build under {patched}: the patches change no function of an installed program (or the Makefile does not build with $(CC) / install with ${destdir_var})")]
    NothingToPatch {
        /// The original install tree.
        original: PathBuf,
        /// The patched install tree.
        patched: PathBuf,
        /// The make variable used for installing.
        destdir_var: String,
    },
    /// A signal asked us to stop.
    #[error("interrupted")]
    Interrupted,
    /// A patch changes an assembler source, which would not be compared.
    #[error("{} changes the assembler source {file}: kpatch_gensrc compares what the compiler writes, so that change would be left out of the patch; set KPATCH_GENSRC_ASM=1 to compare the file like compiler output (its functions need .type and .size), or leave the change out", patch.display())]
    AssemblerSource {
        /// The patch file.
        patch: PathBuf,
        /// The file it changes.
        file: String,
    },
}

/// A failed run: the step, the cause, and whether the tree could still be put back.
#[derive(Debug)]
pub struct PatchMakeError {
    /// The failed step.
    pub step: Step,
    /// The cause.
    pub source: Box<StepError>,
    /// Set when putting the sources or outputs back failed as well.
    pub restore_failure: Option<Box<StepError>>,
}

impl fmt::Display for PatchMakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step, self.source)?;
        if let Some(r) = &self.restore_failure {
            write!(f, "; the tree could not be put back either: {r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PatchMakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

fn at<E: Into<StepError>>(step: Step) -> impl FnOnce(E) -> PatchMakeError {
    move |e| PatchMakeError {
        step,
        source: Box::new(e.into()),
        restore_failure: None,
    }
}

/// Registers SIGINT, SIGTERM, SIGHUP and SIGQUIT to set the returned flag instead of killing
/// the driver, so that an interrupted run still puts the sources back. The project's `make`
/// gets the terminal's signal itself and stops; the driver notices after it returns.
pub fn install_interrupt_flag() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGQUIT,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Tool file names.
const LIBCARE_CC: &str = "libcare-cc";
const KPATCH_GENSRC: &str = "kpatch_gensrc";

/// One run of the driver.
struct Run<'a> {
    opts: &'a Options,
    paths: &'a Paths,
    interrupted: &'a AtomicBool,
    events: &'a mut dyn FnMut(Event<'_>),
    /// When the patched build started (its combined assembly is newer).
    patched_since: Option<SystemTime>,
}

/// Runs the driver. Stage lines and progress go to `events`; the output of `make`, `patch`
/// and the kpatch tools goes to our standard output and error.
pub fn run(
    opts: &Options,
    paths: &Paths,
    interrupted: &AtomicBool,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<MadePatch>, PatchMakeError> {
    let mut r = Run {
        opts,
        paths,
        interrupted,
        events,
        patched_since: None,
    };
    if !opts.update {
        let diff_asm = std::env::var_os(crate::cc::vars::KPATCH_GENSRC_ASM).is_some();
        let earlier = opts.after.iter().map(|(_, p)| p);
        for patch in earlier.chain(&opts.patches) {
            let sections =
                read_patch(&paths.workdir.join(patch)).map_err(at(Step::Apply(patch.clone())))?;
            let asm = sections
                .iter()
                .filter_map(|s| s.new.as_deref().or(s.old.as_deref()))
                .find(|f| is_assembler_source(f));
            if let (Some(file), false) = (asm, diff_asm) {
                return Err(at(Step::Apply(patch.clone()))(StepError::AssemblerSource {
                    patch: patch.clone(),
                    file: file.to_string(),
                }));
            }
        }
    }
    r.check_tools().map_err(at(Step::Setup))?;
    if !opts.update {
        r.restore_leftovers()?;
        let mut env = BuildEnv::new(&paths.tools_dir.join(LIBCARE_CC), &paths.tools_dir)
            .map_err(at(Step::Setup))?;
        env.keep_outputs_in(paths.keep_list());
        env.report_to(paths.report());
        env.set_safety(opts.verbose, opts.strict_ipa, opts.no_live_patching_flags);
        if !opts.after.is_empty() {
            env.build_on_earlier();
        }
        let mut before = None;
        let built = r.build(&env, &mut before);
        let restored = r.put_back(before.as_ref());
        match (built, restored) {
            (Err(mut e), Err(r)) => {
                e.restore_failure = Some(r.source);
                return Err(e);
            }
            (Err(e), Ok(())) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(())) => {}
        }
    }
    r.make_patches().map_err(at(Step::MakePatches))
}

impl Run<'_> {
    fn check_tools(&self) -> Result<(), StepError> {
        // kpatch_strip and kpatch_make run in this process (see crate::post).
        let needed = if self.opts.update {
            vec![]
        } else {
            vec![LIBCARE_CC, KPATCH_GENSRC]
        };
        let missing: Vec<String> = needed
            .into_iter()
            .filter(|n| !tools::is_executable(&self.paths.tools_dir.join(n)))
            .map(String::from)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StepError::ToolsMissing {
                dir: self.paths.tools_dir.clone(),
                names: missing,
            })
        }
    }

    fn check_interrupt(&self) -> Result<(), StepError> {
        if self.interrupted.load(Ordering::SeqCst) {
            Err(StepError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Puts back what an interrupted earlier run left: the outputs it kept, then the sources,
    /// with the current time, since what else that run's patched build rewrote is not known
    /// (everything made from them is rebuilt).
    fn restore_leftovers(&mut self) -> Result<(), PatchMakeError> {
        let outputs =
            stash::restore(&self.paths.keep_list()).map_err(at(Step::RestoreLeftovers))?;
        let sources = restore_sources(&self.paths.srcdir, RestoredTime::Now)
            .map_err(at(Step::RestoreLeftovers))?;
        let left: Vec<PathBuf> = sources.into_iter().chain(outputs).collect();
        if !left.is_empty() {
            (self.events)(Event::LeftoversRestored(&left));
        }
        Ok(())
    }

    /// The directories recorded before the patched stage, source directory first (so that
    /// its files are named from it, as their backups are), and the ones left out: the install
    /// trees, the patch root and our own directory.
    fn tree_roots(&self) -> (Vec<&Path>, Vec<PathBuf>) {
        let p = self.paths;
        let roots = vec![p.srcdir.as_path(), p.workdir.as_path()];
        let skip = vec![
            p.original_dir.clone(),
            p.patched_dir.clone(),
            p.patchroot.clone(),
            p.private_dir(),
        ];
        (roots, skip)
    }

    fn scan_tree(&self) -> Result<TreeState, ScanError> {
        let (roots, skip) = self.tree_roots();
        let skip: Vec<&Path> = skip.iter().map(PathBuf::as_path).collect();
        TreeState::scan(&roots, &skip)
    }

    /// Removes kept outputs that no list names (left by a run interrupted after its list was
    /// removed by hand): a stray one would stop the patched stage from keeping that output.
    fn remove_strays(&mut self, state: &mut TreeState) -> Result<(), StepError> {
        for stray in state.files_named(stash::is_kept_name) {
            fs::remove_file(&stray).map_err(|source| StepError::Io {
                what: "cannot remove the stray kept output",
                path: stray.clone(),
                source,
            })?;
            state.forget(&stray);
            (self.events)(Event::Warning(format!(
                "removed {}, an output kept by an interrupted earlier run whose list {} is gone",
                stray.display(),
                self.paths.keep_list().display()
            )));
        }
        Ok(())
    }

    /// After the patched stage, whatever happened in it: the kept outputs go back, every
    /// other file it rewrote is marked out of date, and the sources go back with their own
    /// modification times — or with the current time when the first two could not be done,
    /// so that `make` rebuilds what the patched build may have left.
    fn put_back(&mut self, before: Option<&TreeState>) -> Result<(), PatchMakeError> {
        let outputs = stash::restore(&self.paths.keep_list());
        let exact = match (&outputs, before) {
            (Ok(_), Some(before)) => self.make_rewritten_stale(before),
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        let time = if exact {
            RestoredTime::Original
        } else {
            RestoredTime::Now
        };
        let sources = restore_sources(&self.paths.srcdir, time);
        outputs.map_err(at(Step::RestoreOutputs))?;
        sources.map_err(at(Step::RestoreSources))?;
        Ok(())
    }

    /// Marks out of date every file the patched stage rewrote other than the patched sources
    /// (an archive `ar` remade from a patched object, a generated file): made again from the
    /// original sources by the next build. Returns false, with a warning, if that could not be
    /// done for every file.
    fn make_rewritten_stale(&mut self, before: &TreeState) -> bool {
        let warn = |events: &mut dyn FnMut(Event<'_>), what: String| {
            events(Event::Warning(format!(
                "{what}; the restored sources get the current time instead, so that the next build remakes everything made from them"
            )));
            false
        };
        let now = match self.scan_tree() {
            Ok(now) => now,
            Err(e) => return warn(self.events, e.to_string()),
        };
        let patched: HashSet<PathBuf> = match backed_up_files(&self.paths.srcdir) {
            Ok(files) => files.into_iter().collect(),
            Err(e) => return warn(self.events, e.to_string()),
        };
        // libcare-cc's own files (the patched stage's assembly) are no make targets.
        let prefix = self.paths.kept_prefix.as_str();
        let own = |f: &Path| {
            !prefix.is_empty()
                && f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        };
        let rewritten: Vec<PathBuf> = before
            .changed_in(&now)
            .into_iter()
            .filter(|f| !patched.contains(f) && !own(f) && !tree_state::is_build_tool_record(f))
            .collect();
        if rewritten.is_empty() {
            return true;
        }
        for f in &rewritten {
            if let Err(e) = tree_state::make_stale(f) {
                return warn(
                    self.events,
                    format!("cannot mark {} out of date: {e}", f.display()),
                );
            }
        }
        let names: Vec<String> = rewritten.iter().map(|f| f.display().to_string()).collect();
        (self.events)(Event::Warning(format!(
            "the patched build rewrote without libcare-cc: {}; marked out of date, so that the next build remakes them from the original sources",
            names.join(", ")
        )));
        true
    }

    /// Clean, original build and install, patches, patched build and install. The state of
    /// the tree before the patches is left in `before`; the caller puts the tree back
    /// whatever happens.
    fn build(
        &mut self,
        env: &BuildEnv,
        before: &mut Option<TreeState>,
    ) -> Result<(), PatchMakeError> {
        let paths = self.paths;
        // As the peer: the install roots exist unless --clean removes them, in which case the
        // Makefile's install rule creates them (the guide's does `mkdir $DESTDIR`).
        for dir in [&paths.original_dir, &paths.patched_dir] {
            fs::create_dir_all(dir)
                .map_err(|source| StepError::Io {
                    what: "cannot create",
                    path: dir.clone(),
                    source,
                })
                .map_err(at(Step::Setup))?;
        }
        if self.opts.clean {
            self.make(env, None, &["clean".into()])
                .map_err(at(Step::Clean))?;
            for dir in [&paths.original_dir, &paths.patched_dir] {
                self.remove_tree(dir).map_err(at(Step::Clean))?;
            }
        }

        (self.events)(Event::Stage(StageLine::BuildingOriginal));
        self.make(env, Some(Stage::Original), &[])
            .map_err(at(Step::BuildOriginal))?;
        (self.events)(Event::Stage(StageLine::InstallingOriginal(
            paths.original_dir.clone(),
        )));
        self.install(env, Stage::Original, &paths.original_dir)
            .map_err(at(Step::InstallOriginal))?;

        fs::create_dir_all(paths.private_dir())
            .map_err(|source| StepError::Io {
                what: "cannot create",
                path: paths.private_dir(),
                source,
            })
            .map_err(at(Step::Setup))?;
        let mut state = self.scan_tree().map_err(at(Step::Setup))?;
        self.remove_strays(&mut state).map_err(at(Step::Setup))?;
        let prefix = paths.kept_prefix.clone();
        let stale_earlier = state.files_named(|n| is_earlier_asm(n, &prefix));
        *before = Some(state);

        let earlier: Vec<&PathBuf> = self.opts.after.iter().map(|(_, p)| p).collect();
        if !earlier.is_empty() {
            self.build_earlier(env, &earlier, &stale_earlier)?;
        }
        self.apply_patches(&self.opts.patches, earlier.len())?;
        self.keep_line_numbers().map_err(at(Step::KeepLines))?;

        match fs::remove_file(paths.report()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(at(Step::BuildPatched)(StepError::Io {
                    what: "cannot remove the old report",
                    path: paths.report(),
                    source: e,
                }))
            }
            _ => {}
        }
        // Less a margin: file times come from a coarser clock.
        self.patched_since = SystemTime::now().checked_sub(Duration::from_secs(2));
        (self.events)(Event::Stage(StageLine::BuildingPatched));
        self.make(env, Some(Stage::Patched), &[])
            .map_err(at(Step::BuildPatched))?;
        (self.events)(Event::Stage(StageLine::InstallingPatched(
            paths.patched_dir.clone(),
        )));
        self.install(env, Stage::Patched, &paths.patched_dir)
            .map_err(at(Step::InstallPatched))
    }

    /// Applies `patches` in order, numbered from `first`.
    fn apply_patches<'p>(
        &mut self,
        patches: impl IntoIterator<Item = &'p PathBuf>,
        first: usize,
    ) -> Result<(), PatchMakeError> {
        let srcdir = &self.paths.srcdir;
        for (index, patch) in (first..).zip(patches) {
            (self.events)(Event::Applying(patch));
            let applied = apply_patch(srcdir, &self.paths.workdir.join(patch), index)
                .map_err(at(Step::Apply(patch.clone())))?;
            for a in &applied {
                (self.events)(Event::PatchOutput(&a.output));
            }
            self.check_interrupt()
                .map_err(at(Step::Apply(patch.clone())))?;
        }
        Ok(())
    }

    /// `--after`: the earlier patches' files applied (with their line numbers kept, as their
    /// own build had them), the `earlier` stage compiles what they change into kept assembly
    /// for the patched stage to compare with; its outputs are the original's and are put back
    /// with the patched stage's. The files are then as the earlier patches leave them, newer
    /// than anything built, so that the patched stage compiles each (its placeholders for
    /// what the earlier patches added are what other files link against).
    fn build_earlier(
        &mut self,
        env: &BuildEnv,
        earlier: &[&PathBuf],
        stale: &[PathBuf],
    ) -> Result<(), PatchMakeError> {
        // Assembly an earlier run's earlier stage kept would be taken for this one's.
        for f in stale {
            fs::remove_file(f)
                .map_err(|source| StepError::Io {
                    what: "cannot remove",
                    path: f.clone(),
                    source,
                })
                .map_err(at(Step::Setup))?;
        }
        self.apply_patches(earlier.iter().copied(), 0)?;
        let files = originals(&self.paths.srcdir).map_err(at(Step::KeepLines))?;
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| at(Step::KeepLines)(StepError::Io { what, path, source })
        };
        let mut as_patched = Vec::with_capacity(files.len());
        for (file, _) in &files {
            as_patched.push(fs::read(file).map_err(io("cannot read", file))?);
        }
        self.keep_line_numbers().map_err(at(Step::KeepLines))?;
        let ids = self.opts.after.iter().map(|(id, _)| id.as_str().to_owned());
        (self.events)(Event::Stage(StageLine::BuildingEarlier(ids.collect())));
        self.make(env, Some(Stage::Earlier), &[])
            .map_err(at(Step::BuildEarlier))?;
        for ((file, _), text) in files.iter().zip(as_patched) {
            fs::write(file, text).map_err(io("cannot write", file))?;
        }
        Ok(())
    }

    /// `#line` directives in the patched files, so that the lines the patches did not change
    /// keep their numbers (see [`line_keep`]).
    fn keep_line_numbers(&mut self) -> Result<(), StepError> {
        let files = originals(&self.paths.srcdir)?;
        let kept = line_keep::keep_line_numbers(&files).map_err(|source| StepError::Io {
            what: "cannot write #line directives into a patched file under",
            path: self.paths.srcdir.clone(),
            source,
        })?;
        if !self.opts.verbose {
            return Ok(());
        }
        for k in kept {
            let shown = k.file.strip_prefix(&self.paths.srcdir).unwrap_or(&k.file);
            for (line, old) in &k.directives {
                (self.events)(Event::Detail(&format!(
                    "{}: unchanged code from patched line {line} on keeps its original line numbers (#line {old})",
                    shown.display()
                )));
            }
            if let Some(from) = k.unkept_from {
                (self.events)(Event::Detail(&format!(
                    "{}: lines from patched line {from} on keep the patched numbering (no place for a #line directive after the change)",
                    shown.display()
                )));
            }
        }
        Ok(())
    }

    /// `make install` into `dir`, emptied first (a patch is never made from what an earlier
    /// run installed), where nothing outside the work tree can be written (see
    /// [`install_guard`]); an install that wrote elsewhere, or put nothing into `dir`, is
    /// refused.
    fn install(&self, env: &BuildEnv, stage: Stage, dir: &Path) -> Result<(), StepError> {
        self.remove_tree(dir)?;
        // As the peer: the root exists unless --clean, when the install rule makes it.
        if !self.opts.clean {
            fs::create_dir_all(dir).map_err(|source| StepError::Io {
                what: "cannot create",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let tmp = self.paths.private_dir().join("tmp");
        fs::create_dir_all(&tmp).map_err(|source| StepError::Io {
            what: "cannot create",
            path: tmp.clone(),
            source,
        })?;
        let var = format!("{}={}", self.opts.destdir_var, dir.display());
        let args = self.make_args(&["install".into(), var]);
        let p = self.paths;
        let writable = [
            p.workdir.clone(),
            p.srcdir.clone(),
            p.original_dir.clone(),
            p.patched_dir.clone(),
            p.patchroot.clone(),
        ];
        let mut cmd = install_guard::confined("make", &args, &writable);
        cmd.current_dir(&p.workdir).env("TMPDIR", &tmp);
        env.apply(&mut cmd, Some(stage));
        let described = format!("make {}", args.join(" "));
        let watched = install_guard::run_watched(&mut cmd).map_err(|source| StepError::Spawn {
            program: "make".into(),
            source,
        })?;
        if !watched.outside.is_empty() {
            return Err(StepError::InstallOutside {
                command: described,
                lines: watched.outside,
                destdir_var: self.opts.destdir_var.clone(),
            });
        }
        if !watched.status.success() {
            return Err(StepError::Failed {
                command: described,
                status: watched.status,
            });
        }
        self.check_interrupt()?;
        if install_guard::holds_no_file(dir) {
            return Err(StepError::InstalledNothing {
                command: described,
                dir: dir.to_path_buf(),
                destdir_var: self.opts.destdir_var.clone(),
            });
        }
        Ok(())
    }

    /// `[-f lpmakefile] [-j N] ARGS`.
    fn make_args(&self, args: &[String]) -> Vec<String> {
        let mut all = Vec::new();
        if self.paths.workdir.join("lpmakefile").is_file() {
            all.extend(["-f".to_string(), "lpmakefile".to_string()]);
        }
        if let Some(j) = self.opts.jobs {
            all.extend(["-j".to_string(), j.to_string()]);
        }
        all.extend(args.iter().cloned());
        all
    }

    /// Runs `make [-f lpmakefile] [-j N] ARGS` with its output on our standard output.
    fn make(&self, env: &BuildEnv, stage: Option<Stage>, args: &[String]) -> Result<(), StepError> {
        let all = self.make_args(args);
        let mut cmd = Command::new("make");
        cmd.args(&all).current_dir(&self.paths.workdir);
        env.apply(&mut cmd, stage);
        let out = |source| StepError::Io {
            what: "cannot redirect the output of make to",
            path: PathBuf::from("standard output"),
            source,
        };
        cmd.stdout(stdout_stdio().map_err(out)?)
            .stderr(stdout_stdio().map_err(out)?);
        let described = format!("make {}", all.join(" "));
        run_command(&mut cmd, "make", described)?;
        self.check_interrupt()
    }

    /// `rm -rf dir`, refusing anything that holds the working or source directory.
    fn remove_tree(&self, dir: &Path) -> Result<(), StepError> {
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let d = canon(dir);
        if [&self.paths.workdir, &self.paths.srcdir]
            .iter()
            .any(|w| canon(w).starts_with(&d))
        {
            return Err(StepError::UnsafeRemove(dir.to_path_buf()));
        }
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StepError::Io {
                what: "cannot remove",
                path: dir.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn make_patches(&mut self) -> Result<Vec<MadePatch>, StepError> {
        (self.events)(Event::Stage(StageLine::MakingPatches));
        let paths = self.paths;
        for dir in [&paths.original_dir, &paths.patched_dir] {
            if !dir.is_dir() {
                return Err(StepError::MissingTree(dir.clone()));
            }
        }
        fs::create_dir_all(&paths.patchroot).map_err(|source| StepError::Io {
            what: "cannot create",
            path: paths.patchroot.clone(),
            source,
        })?;
        let mut files = Vec::new();
        executables(&paths.original_dir, &mut files).map_err(|source| StepError::Io {
            what: "cannot list",
            path: paths.original_dir.clone(),
            source,
        })?;
        files.sort();

        let why = report::read(&paths.report()).unwrap_or_else(|e| {
            (self.events)(Event::Warning(format!(
                "cannot read {}: {e}; the functions are listed without why",
                paths.report().display()
            )));
            Vec::new()
        });
        let expected = self.patched_since.and_then(|since| {
            let (roots, skip) = self.tree_roots();
            patch_check::patched_in_run(&roots, &skip, &paths.kept_prefix, since)
        });
        let mut made = Vec::new();
        let mut in_patches = BTreeSet::new();
        for original in files {
            self.check_interrupt()?;
            let Ok(rel) = original.strip_prefix(&paths.original_dir) else {
                continue;
            };
            let patched = paths.patched_dir.join(rel);
            if !patched.is_file() {
                continue;
            }
            let functions = match elfinfo::inspect(&patched)? {
                Some(info) if info.has_kpatch => info.patch_functions,
                _ => continue,
            };
            let build_id = match &self.opts.build_id {
                Some(b) => b.clone(),
                None => match elfinfo::inspect(&original)?.and_then(|i| i.build_id) {
                    Some(b) => b,
                    None => {
                        (self.events)(Event::Warning(format!(
                            "{} has no GNU build-id (link with -Wl,--build-id): no patch made for it",
                            original.display()
                        )));
                        continue;
                    }
                },
            };
            let patch = self.make_one(&original, &patched, &build_id)?;
            let holds = patch_check::kpatch_functions(&patch);
            if let Some(expected) = &expected {
                let foreign: Vec<String> = holds.difference(expected).cloned().collect();
                if !foreign.is_empty() {
                    let _ = fs::remove_file(&patch);
                    return Err(StepError::ForeignFunctions {
                        original: original.clone(),
                        patched,
                        names: foreign,
                    });
                }
            }
            in_patches.extend(holds);
            (self.events)(Event::PatchWritten {
                original: &original,
                patch: &patch,
            });
            (self.events)(Event::Functions(&report::explain(&functions, &why)));
            made.push(MadePatch {
                original,
                patch,
                build_id,
            });
        }
        if let Some(expected) = &expected {
            let missing: Vec<String> = expected.difference(&in_patches).cloned().collect();
            if !made.is_empty() && !missing.is_empty() {
                (self.events)(Event::Warning(format!(
                    "kpatch_gensrc patched {} in this build, but no installed program's patch holds {}: the program that uses it is not installed",
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" }
                )));
            }
        }
        if made.is_empty() {
            return Err(StepError::NothingToPatch {
                original: paths.original_dir.clone(),
                patched: paths.patched_dir.clone(),
                destdir_var: self.opts.destdir_var.clone(),
            });
        }
        Ok(made)
    }

    /// `<patched>.kpatch` (see [`crate::post`]), copied to the patch root.
    fn make_one(
        &mut self,
        original: &Path,
        patched: &Path,
        build_id: &str,
    ) -> Result<PathBuf, StepError> {
        let after: Vec<String> = self
            .opts
            .after
            .iter()
            .map(|(id, _)| id.as_str().to_owned())
            .collect();
        let header = post::Header {
            build_id,
            patch_id: self.opts.id.as_str(),
            replace: self.opts.replace,
            after: &after,
        };
        let events = &mut *self.events;
        let kpatch = post::make_kpatch(original, patched, header, &mut |note| {
            events(Event::Note(&note))
        })?;
        let dest = self.paths.patchroot.join(format!("{build_id}.kpatch"));
        fs::copy(&kpatch, &dest).map_err(|source| StepError::Io {
            what: "cannot copy the patch to",
            path: dest.clone(),
            source,
        })?;
        Ok(dest)
    }
}

fn run_command(cmd: &mut Command, program: &str, described: String) -> Result<(), StepError> {
    let status = cmd.status().map_err(|source| StepError::Spawn {
        program: program.to_string(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(StepError::Failed {
            command: described,
            status,
        })
    }
}

/// Whether `name` is assembly the `earlier` stage kept (`<prefix><name>.earlier.s`).
fn is_earlier_asm(name: &std::ffi::OsStr, prefix: &str) -> bool {
    let name = name.to_string_lossy();
    let suffix = format!(".{}.s", Stage::Earlier.name());
    !prefix.is_empty() && name.starts_with(prefix) && name.ends_with(&suffix)
}

/// Whether a file a patch changes is an assembler source (`.s`, `.S`, `.sx`).
fn is_assembler_source(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e == "s" || e == "S" || e == "sx")
}

/// Regular files with an execute bit under `dir`, recursively, symlinks not followed.
fn executables(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            executables(&entry.path(), out)?;
        } else if ty.is_file() && entry.metadata()?.permissions().mode() & 0o111 != 0 {
            out.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_ids() {
        assert!(PatchId::new("0001").is_ok());
        assert!(PatchId::new("1234567").is_ok());
        assert!(PatchId::new("12345678").is_err());
        assert!(PatchId::new("").is_err());
        // What a .kpatch header cannot hold is refused before anything is built.
        assert!(PatchId::new("a b").is_err());
        assert!(PatchId::new("a\0").is_err());
        assert!(PatchId::new("é").is_err());
        assert_eq!(InvalidPatchId.to_string(), "Invalid patch-id!");
    }

    #[test]
    fn default_and_overridden_paths() {
        let env = HashMap::from([
            ("LPMAKE_PATCHROOT".to_string(), "out/root".to_string()),
            ("LPMAKE_ORIGINAL_DIR".to_string(), "/abs/orig".to_string()),
        ]);
        let p = Paths::new(
            Path::new("/w"),
            Some(Path::new("src")),
            Path::new("/t"),
            &env,
        );
        assert_eq!(p.srcdir, PathBuf::from("/w/src"));
        assert_eq!(p.original_dir, PathBuf::from("/abs/orig"));
        assert_eq!(p.patched_dir, PathBuf::from("/w/.lpmaketmp/patched"));
        assert_eq!(p.patchroot, PathBuf::from("/w/out/root"));
    }

    #[test]
    fn stage_lines() {
        assert_eq!(
            StageLine::InstallingOriginal(PathBuf::from("/x/lpmake")).to_string(),
            "INSTALLING ORIGINAL OBJECTS INTO /x/lpmake"
        );
        assert_eq!(StageLine::MakingPatches.to_string(), "MAKING PATCHES");
    }

    #[test]
    fn executables_are_found_recursively() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("usr/bin");
        fs::create_dir_all(&sub).unwrap();
        for (name, mode) in [("a", 0o755), ("b", 0o644)] {
            let p = sub.join(name);
            fs::write(&p, "x").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(sub.join("a"), d.path().join("link")).unwrap();
        let mut v = Vec::new();
        executables(d.path(), &mut v).unwrap();
        assert_eq!(v, [sub.join("a")]);
    }
}
