//! LibcarePlus's start-up protocol (PEER-FACTS.md section 5), as its `execve` wrapper speaks
//! it: a program about to execute a file sends `execve TID` (its calling thread) to the server
//! and waits for 4 bytes; once they come it executes a breakpoint instruction, then the real
//! `execve`. The server holds the thread before answering, lets the breakpoint's trap go by,
//! and patches the new program at start-up like `--self-load` does. `startup PID` patches a
//! process from the storage, then answers the same 4 bytes.
//!
//! A wrapper whose breakpoint runs without a tracer dies of it: the protocol gives the server
//! no way to avoid that if it fails (or dies) between its answer and the `exec`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kpatch_engine::{Report, Storage};
use kpatch_process::{HeldEvent, HeldThread};

use crate::error::{Error, Result};
use crate::flow::{tgid_of, Context, Outcome, Start};

/// What the server answers: a native `int` 0.
const GO_AHEAD: [u8; 4] = 0i32.to_ne_bytes();
/// How long the wrapper may take from our answer to its `exec`.
const EXEC_LIMIT: Duration = Duration::from_secs(10);

/// Serves `execve TID`. Returns what became of the process; errors are for requests refused
/// before anything was answered (the wrapper then runs into its breakpoint untraced).
pub fn serve_execve(ctx: &Context, tid: i32, reply: &mut dyn Write) -> Result<Outcome> {
    let tgid = tgid_of(tid).ok_or(Error::Process {
        pid: tid,
        what: "execve: no such thread".into(),
    })?;
    if !ctx.begin(tgid) {
        return Err(Error::Process {
            pid: tgid,
            what: "execve: it is being patched at start-up already".into(),
        });
    }
    let result = hold_through_exec(ctx, tgid, tid, reply);
    ctx.end(tgid);
    result
}

fn hold_through_exec(ctx: &Context, tgid: i32, tid: i32, reply: &mut dyn Write) -> Result<Outcome> {
    let mut held = HeldThread::seize(tgid, tid, true)?;
    reply.write_all(&GO_AHEAD).map_err(|source| Error::Io {
        path: PathBuf::from("control socket"),
        source,
    })?;
    let deadline = Instant::now() + EXEC_LIMIT;
    loop {
        let Some(event) = held.wait(deadline)? else {
            return Ok(Outcome::Left(format!(
                "execve: it did not execute a program within {EXEC_LIMIT:?}; let go"
            )));
        };
        match event {
            HeldEvent::Exec => break,
            // The wrapper's breakpoint (that is what it is for).
            HeldEvent::Signal(libc::SIGTRAP) => held.resume(0)?,
            HeldEvent::Signal(sig) => held.resume(sig)?,
            HeldEvent::Interrupted | HeldEvent::Syscall | HeldEvent::Other(_) => held.resume(0)?,
            HeldEvent::JobControl(sig) => {
                return Ok(Outcome::Left(format!(
                    "execve: stopped by signal {sig} (job control) before its exec; let go"
                )))
            }
            HeldEvent::Gone => return Ok(Outcome::Left("it ended before its exec".into())),
        }
    }
    let exe = std::fs::read_link(format!("/proc/{tgid}/exe")).unwrap_or_default();
    Ok(ctx.patch_at_startup(held, Start::Exec, &exe))
}

/// Engine messages for the log.
struct ToLog<'a>(&'a Context, i32);

impl Report for ToLog<'_> {
    fn info(&mut self, msg: &str) {
        self.0.log(&format!("startup: pid {}: {msg}", self.1));
    }
    fn detail(&mut self, _msg: &str) {}
}

/// Serves `startup PID`: patches the process from the storage (it is running: the patches are
/// not recorded as applied at start-up), under the context's guard, then answers.
pub fn serve_startup(ctx: &Context, pid: i32, reply: &mut dyn Write) -> Result<()> {
    let path = ctx.storage();
    let result = Storage::open(&path)
        .map_err(Error::from)
        .and_then(|storage| {
            ctx.guard().check_storage(&path).map_err(Error::Refused)?;
            Ok(ctx.engine().patch(pid, &storage, &mut ToLog(ctx, pid))?)
        });
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    match &result {
        Ok(o) if o.applied.is_empty() => ctx.log(&format!("startup: pid {pid}: nothing to patch")),
        Ok(o) => {
            ctx.record_applied(pid, &exe, o);
            ctx.log(&format!(
                "startup: pid {pid}: patched: {}",
                o.applied
                    .iter()
                    .map(|a| format!("{} {}", a.object, a.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Err(e) => {
            ctx.record_error(pid, &exe, e);
            ctx.log(&format!("startup: pid {pid}: not patched: {e}"))
        }
    }
    reply.write_all(&GO_AHEAD).map_err(|source| Error::Io {
        path: PathBuf::from("control socket"),
        source,
    })?;
    result.map(drop)
}
