//! Running a parsed `libcare-ctl` command and printing what it did, in LibcarePlus's wording.
//! `libcare-ctl` prints to its stdout and stderr; `libcare-server` runs the same code and sends
//! the text to its client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kpatch_engine::select::{self, Candidate};
use kpatch_engine::{Engine, Options, Report, Storage};
use kpatch_process::GuardianForker;
use kpatch_trust::{Event, Outcome, Requester, TrustError};

use crate::ctl_args::{Command, Target};
use crate::trust::Trust;

/// Who runs a command, and what is trusted for them.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub trust: &'a Trust,
    /// Who asked: this process for `libcare-ctl`, the client for `libcare-server`.
    pub by: Requester,
}

/// The engine's options, with what the environment sets: `LIBCARE_SAFETY_TIMEOUT`,
/// `LIBCARE_CALLBACK_TIMEOUT` and `LIBCARE_LOCK_WAIT` (seconds), `LIBCARE_LOCK_DIR`, and, for tests only,
/// `LIBCARE_FAULT_STEP` and `LIBCARE_PAUSE_STEP` (see docs/internals.md section 4). A value that does not parse leaves
/// the default.
fn options_from_env() -> Options {
    let secs = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    };
    let mut opts = Options::default();
    if let Some(t) = secs("LIBCARE_SAFETY_TIMEOUT") {
        opts.safety_timeout = t;
    }
    if let Some(t) = secs("LIBCARE_CALLBACK_TIMEOUT") {
        opts.callback_timeout = t;
    }
    if let Some(t) = secs("LIBCARE_LOCK_WAIT") {
        opts.lock_wait = t;
    }
    if let Some(dir) = std::env::var_os("LIBCARE_LOCK_DIR") {
        opts.lock_dir = PathBuf::from(dir);
    }
    opts.fault_step = std::env::var("LIBCARE_FAULT_STEP").ok();
    opts.pause_step = std::env::var("LIBCARE_PAUSE_STEP").ok();
    opts
}

/// An engine with the options the environment sets (see [`options_from_env`]) and `trust`'s
/// check of each patch file, for callers that patch without a command line (the server's
/// start-up patching), forking its guardians from `guardian_forker` when given.
pub fn engine(trust: &Trust, guardian_forker: Option<Arc<GuardianForker>>) -> Engine {
    Engine::new(Options {
        guardian_forker,
        check: Some(trust.engine_check()),
        ..options_from_env()
    })
}

/// Where a command's text goes.
pub trait Console {
    /// A line of normal output (stdout).
    fn out(&mut self, line: &str);
    /// A line of error output (stderr).
    fn err(&mut self, line: &str);
}

/// The process's own stdout and stderr.
#[derive(Debug, Default)]
pub struct StdConsole;

impl Console for StdConsole {
    fn out(&mut self, line: &str) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }
    fn err(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// Engine progress for a console: steps always, details with `-v`; and the audit trail.
struct Printer<'a> {
    con: &'a mut dyn Console,
    verbose: bool,
    caller: Caller<'a>,
}

impl Report for Printer<'_> {
    fn info(&mut self, msg: &str) {
        self.con.out(msg);
    }
    fn detail(&mut self, msg: &str) {
        if self.verbose {
            self.con.out(msg);
        }
    }
}

impl Printer<'_> {
    fn out(&mut self, line: &str) {
        self.con.out(line);
    }
    fn error(&mut self, msg: impl std::fmt::Display) {
        self.con.err(&format!("libcare-ctl: error: {msg}"));
    }

    /// Records an audited action of the caller (a write failure is shown, not fatal).
    fn audit(&mut self, event: Event<'_>) {
        if let Some(warning) = self.caller.trust.record(&event) {
            self.con.err(&format!("libcare-ctl: warning: {warning}"));
        }
    }

    /// A patch applied to, or removed from, `object` of process `pid`.
    fn audit_done(
        &mut self,
        action: &str,
        pid: i32,
        patch_id: &str,
        file: Option<&Path>,
        object: &str,
    ) {
        let detail = format!("object {object}");
        self.audit(Event {
            action,
            outcome: Outcome::Done,
            by: self.caller.by,
            target_pid: Some(pid),
            patch_id: Some(patch_id),
            file,
            detail: Some(&detail),
        });
    }

    /// A refusal or failure, with the message shown for it.
    fn audit_error(
        &mut self,
        action: &str,
        outcome: Outcome,
        (pid, patch_id, file): (Option<i32>, Option<&str>, Option<&Path>),
        error: &dyn std::fmt::Display,
    ) {
        let detail = error.to_string();
        self.audit(Event {
            action,
            outcome,
            by: self.caller.by,
            target_pid: pid,
            patch_id,
            file,
            detail: Some(&detail),
        });
    }
}

/// The run options, with the caller's checks of each patch file read.
fn options(caller: &Caller<'_>) -> Options {
    Options {
        check: Some(caller.trust.engine_check()),
        ..options_from_env()
    }
}

fn pid_of(target: &Target) -> Option<i32> {
    match target {
        Target::Pid(pid) => Some(*pid),
        Target::All => None,
    }
}

/// Checks everything a storage would load or run before any process is touched.
fn check_storage(path: &Path, target: &Target, p: &mut Printer<'_>) -> bool {
    let Err(e) = p.caller.trust.policy.check_storage(path) else {
        return true;
    };
    let file = match &e {
        TrustError::Refused { path, .. } | TrustError::Io { path, .. } => path.clone(),
        _ => path.to_owned(),
    };
    p.out(&format!("Failed to apply patch '{}'", path.display()));
    p.error(&e);
    let outcome = match e {
        TrustError::Refused { .. } => Outcome::Refused,
        _ => Outcome::Failed,
    };
    p.audit_error("patch", outcome, (pid_of(target), None, Some(&file)), &e);
    false
}

/// `/proc/PID/cmdline` as LibcarePlus shows it: printable bytes as they are, everything else
/// (the NUL separators included) as `\xNN`.
fn shown_cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s = String::new();
    for b in raw {
        if (0x20..0x7f).contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// The two lines that introduce work on one process.
fn targeting(p: &mut Printer<'_>, pid: i32) {
    p.out(&format!("kpatch_ctl targeting pid {pid}"));
    p.out(&format!("kpatch_ctl cmdline=\"{}\"", shown_cmdline(pid)));
}

fn no_patch_line(pid: i32) -> String {
    format!("No patch(es) applicable to PID '{pid}' have been found")
}

fn not_cancellable_line(pid: i32) -> String {
    format!("No patch(es) cancellable from PID '{pid}' were found")
}

fn patch_one(pid: i32, storage: &Storage, engine: &Engine, p: &mut Printer<'_>) -> bool {
    targeting(p, pid);
    match engine.patch(pid, storage, p) {
        Ok(o) if o.applied.is_empty() => {
            p.out(&no_patch_line(pid));
            true
        }
        Ok(o) => {
            for a in &o.applied {
                p.audit_done("patch", pid, &a.id, Some(storage.path()), &a.object);
            }
            // What a cumulative patch took out went in the same stop: an unpatch too.
            for (id, object) in &o.replaced {
                let by = o.applied.iter().find(|a| a.object == *object);
                let object = match by {
                    Some(a) => format!("{object} (replaced by {})", a.id),
                    None => object.clone(),
                };
                p.audit_done("unpatch", pid, id, None, &object);
            }
            if let Some(f) = o.frozen {
                p.out(&format!(
                    "PID '{pid}' process patch frozen_time is {} microsecond",
                    f.as_micros()
                ));
            }
            // LibcarePlus counts patched objects here, not functions.
            p.out(&format!(
                "{} patch hunk(s) have been successfully applied to PID '{pid}'",
                o.applied.len()
            ));
            true
        }
        Err(e) => {
            let outcome = match e {
                kpatch_engine::Error::Refused(_) => Outcome::Refused,
                _ => Outcome::Failed,
            };
            p.audit_error(
                "patch",
                outcome,
                (Some(pid), None, Some(storage.path())),
                &e,
            );
            p.out(&format!(
                "Failed to apply patch '{}'",
                storage.path().display()
            ));
            p.error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

fn unpatch_one(
    pid: i32,
    id: Option<&str>,
    objects: &[String],
    engine: &Engine,
    p: &mut Printer<'_>,
) -> bool {
    targeting(p, pid);
    let result = engine.unpatch(pid, id, objects, p);
    match &result {
        Ok(o) => {
            for r in &o.removed {
                p.audit_done("unpatch", pid, &r.id, None, &r.object);
            }
        }
        Err(e) => p.audit_error("unpatch", Outcome::Failed, (Some(pid), id, None), e),
    }
    match result {
        Ok(o) if o.removed.is_empty() => {
            p.out(&not_cancellable_line(pid));
            true
        }
        Ok(o) => {
            if let Some(f) = o.frozen {
                p.out(&format!(
                    "PID '{pid}' process unpatch frozen_time is {} microsecond",
                    f.as_micros()
                ));
            }
            p.out(&format!(
                "{} patch hunk(s) were successfully cancelled from PID '{pid}'",
                o.removed.len()
            ));
            true
        }
        Err(kpatch_engine::Error::PatchNotFound { id, .. }) => {
            p.out(&format!("Failed to find target patch with patch_id={id}!"));
            p.out(&format!("Failed to cancel patches for {pid}"));
            p.error(format_args!(
                "pid {pid}: no patch with patch-id {id} is applied"
            ));
            false
        }
        Err(e) => {
            p.out(&format!("Failed to cancel patches for {pid}"));
            p.error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

fn info(pid: i32, json: bool, engine: &Engine, p: &mut Printer<'_>) -> bool {
    match engine.info(pid) {
        Ok(objects) if json => match serde_json::to_string_pretty(&objects) {
            Ok(s) => {
                p.out(&s);
                true
            }
            Err(e) => {
                p.error(e);
                false
            }
        },
        Ok(objects) => {
            for o in objects {
                p.out(&format!("{:<25} {}", "Pid:", o.pid));
                p.out(&format!("{:<25} {}", "Target:", o.target));
                p.out(&format!("{:<25} {}", "Build id:", o.build_id));
                p.out(&format!(
                    "{:<25} {}",
                    "Applied patch number:",
                    o.patches.len()
                ));
                for patch in &o.patches {
                    p.out(&format!("{:<25} {}", "Patch id:", patch.id));
                    // Patches applied to the running process are shown as LibcarePlus shows
                    // them; ours applied before the program ran say so.
                    if patch.at_startup {
                        p.out(&format!("{:<25} at start-up", "Applied:"));
                    }
                    livepatch_lines(patch, p);
                }
                p.out("");
            }
            true
        }
        Err(e) => {
            p.error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

/// What `info` shows of a patch's `<libcare/livepatch.h>` features and of the patches it was
/// built on top of, after its id (nothing for a patch that has none).
fn livepatch_lines(patch: &kpatch_engine::PatchInfo, p: &mut Printer<'_>) {
    if patch.replace {
        p.out(&format!(
            "{:<25} {}",
            "Replace:", "yes (it replaced the earlier patches)"
        ));
    }
    if !patch.after.is_empty() {
        p.out(&format!(
            "{:<25} {}",
            "Applied after:",
            patch.after.join(", ")
        ));
    }
    if !patch.states.is_empty() {
        let states: Vec<String> = patch
            .states
            .iter()
            .map(|(id, v)| format!("{id} (version {v})"))
            .collect();
        p.out(&format!("{:<25} {}", "States:", states.join(", ")));
    }
    for c in &patch.callbacks {
        let object = c.object.as_deref().unwrap_or("(program)");
        p.out(&format!("{:<25} {object}: {}", "Callbacks:", c.state));
    }
}

fn open_storage(path: &Path, target: &Target, p: &mut Printer<'_>) -> Option<Storage> {
    if !check_storage(path, target, p) {
        return None;
    }
    match Storage::open(path) {
        Ok(s) => Some(s),
        Err(e) => {
            p.audit_error(
                "patch",
                Outcome::Failed,
                (pid_of(target), None, Some(path)),
                &e,
            );
            p.out(&format!("Failed to apply patch '{}'", path.display()));
            p.error(e);
            None
        }
    }
}

/// `-p all`: one result line per process; the processes no patch applies to are not attached.
/// `opts`, with a helper that forks the guardians for a run over several processes: forking
/// this process, grown by the images it has read, would copy its page tables each time (and
/// make every page it writes afterwards a copy-on-write fault).
fn with_guardian_forker(opts: &Options, processes: usize) -> Options {
    let forker = (processes > 1)
        .then(GuardianForker::start)
        .and_then(Result::ok);
    Options {
        guardian_forker: forker.map(Arc::new),
        ..opts.clone()
    }
}

fn patch_all(storage: &Storage, engine: &Engine, p: &mut Printer<'_>) -> bool {
    let candidates = match select::for_patch(storage) {
        Ok(c) => c,
        Err(e) => {
            p.audit_error(
                "patch",
                Outcome::Failed,
                (None, None, Some(storage.path())),
                &e,
            );
            p.error(e);
            return false;
        }
    };
    each_candidate(&candidates, engine, p, no_patch_line, |pid, engine, p| {
        patch_one(pid, storage, engine, p)
    })
}

/// Runs `one` on each candidate the command applies to (with one guardian forker for them
/// all) and prints `not_applicable`'s line for the others. Returns whether every run succeeded.
fn each_candidate(
    candidates: &[Candidate],
    engine: &Engine,
    p: &mut Printer<'_>,
    not_applicable: fn(i32) -> String,
    mut one: impl FnMut(i32, &Engine, &mut Printer<'_>) -> bool,
) -> bool {
    let engine = &Engine::new(with_guardian_forker(
        engine.options(),
        candidates.iter().filter(|c| c.applies).count(),
    ));
    let mut ok = true;
    for c in candidates {
        if c.applies {
            ok &= one(c.pid, engine, p);
        } else if let Some(why) = &c.undecided {
            p.error(format_args!(
                "cannot tell whether PID '{}' maps an object with a patch, left alone: {why}",
                c.pid
            ));
            ok = false;
        } else {
            p.out(&not_applicable(c.pid));
        }
    }
    ok
}

fn unpatch_all(id: Option<&str>, objects: &[String], engine: &Engine, p: &mut Printer<'_>) -> bool {
    let candidates = match select::for_unpatch(id) {
        Ok(c) => c,
        Err(e) => {
            p.audit_error("unpatch", Outcome::Failed, (None, id, None), &e);
            p.error(e);
            return false;
        }
    };
    each_candidate(
        &candidates,
        engine,
        p,
        not_cancellable_line,
        |pid, engine, p| unpatch_one(pid, id, objects, engine, p),
    )
}

/// Applies every patch of the storage at `path` to every process it applies to (`patch -p all
/// PATH`); the server's `update`. Returns whether every process was patched.
pub fn update(path: &Path, verbose: bool, caller: Caller<'_>, con: &mut dyn Console) -> bool {
    let engine = Engine::new(options(&caller));
    let mut p = Printer {
        con,
        verbose,
        caller,
    };
    // LibcarePlus shows "all" as pid -1.
    p.out(&format!("Applying patch for -1 with {}", path.display()));
    match open_storage(path, &Target::All, &mut p) {
        Some(storage) => patch_all(&storage, &engine, &mut p),
        None => false,
    }
}

/// Runs a parsed command for `caller`; returns whether it succeeded.
pub fn execute(cmd: &Command, verbose: bool, caller: Caller<'_>, con: &mut dyn Console) -> bool {
    let engine = Engine::new(options(&caller));
    let mut p = Printer {
        con,
        verbose,
        caller,
    };
    match cmd {
        Command::Help(text) => {
            p.out(text.trim_end_matches('\n'));
            true
        }
        Command::Version => {
            p.out(&crate::version_line("libcare-ctl"));
            true
        }
        Command::Patch { target, path } => {
            let shown = pid_of(target).unwrap_or(-1);
            p.out(&format!(
                "Applying patch for {shown} with {}",
                path.display()
            ));
            let Some(storage) = open_storage(path, target, &mut p) else {
                return false;
            };
            match target {
                Target::Pid(pid) => patch_one(*pid, &storage, &engine, &mut p),
                Target::All => patch_all(&storage, &engine, &mut p),
            }
        }
        Command::Unpatch {
            target,
            id,
            objects,
        } => {
            let shown = pid_of(target).unwrap_or(-1);
            p.out(&format!(
                "Unpplying patch for {shown} with patch id '{}'",
                id.as_deref().unwrap_or("(all)")
            ));
            match target {
                Target::Pid(pid) => unpatch_one(*pid, id.as_deref(), objects, &engine, &mut p),
                Target::All => unpatch_all(id.as_deref(), objects, &engine, &mut p),
            }
        }
        Command::Info { pid, json } => info(*pid, *json, &engine, &mut p),
    }
}

/// A console that keeps every line, for tests and callers that post-process the text.
#[derive(Debug, Default)]
pub struct Captured {
    pub out: Vec<String>,
    pub err: Vec<String>,
}

impl Console for Captured {
    fn out(&mut self, line: &str) {
        self.out.push(line.to_owned());
    }
    fn err(&mut self, line: &str) {
        self.err.push(line.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_is_shown_with_escapes() {
        let me = std::process::id() as i32;
        let shown = shown_cmdline(me);
        assert!(shown.ends_with("\\x00"), "{shown}");
        assert!(!shown.contains('\0'));
    }

    #[test]
    fn a_missing_storage_fails_with_the_peers_line() {
        let mut c = Captured::default();
        let cmd = Command::Patch {
            target: Target::Pid(std::process::id() as i32),
            path: "/nonexistent/storage".into(),
        };
        let trust = Trust::none();
        let caller = Caller {
            trust: &trust,
            by: Requester::this_process(),
        };
        assert!(!execute(&cmd, false, caller, &mut c));
        assert_eq!(
            c.out,
            [
                format!(
                    "Applying patch for {} with /nonexistent/storage",
                    std::process::id()
                ),
                "Failed to apply patch '/nonexistent/storage'".to_owned()
            ]
        );
        assert_eq!(c.err.len(), 1);
    }
}
