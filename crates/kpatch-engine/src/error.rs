//! Errors of the patch engine.

use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a patch, unpatch or query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed ELF file: {0}")]
    BadElf(String),
    #[error("malformed patch payload: {0}")]
    Payload(String),
    #[error("cannot resolve symbol {name}: no loaded object defines it")]
    Unresolved { name: String },
    #[error("relocation against {symbol} in {section}: {source}")]
    Relocation {
        symbol: String,
        section: String,
        #[source]
        source: kpatch_arch::ArchError,
    },
    #[error(transparent)]
    Arch(#[from] kpatch_arch::ArchError),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Target(#[from] kpatch_process::Error),
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: kpatch_file::FormatError,
    },
    #[error("patch {path} is for build-id {build_id}, which no object of pid {pid} has")]
    NotApplicable {
        path: PathBuf,
        build_id: String,
        pid: i32,
    },
    #[error("a patch with patch-id {id} is already applied to {object} in pid {pid}")]
    AlreadyApplied {
        id: String,
        object: String,
        pid: i32,
    },
    #[error("patch {path} is for {patch_arch} but pid {pid} runs {target_arch}")]
    WrongArch {
        path: PathBuf,
        patch_arch: String,
        target_arch: String,
        pid: i32,
    },
    #[error("pid {pid}: no patch is for the objects that could be read, and whether one is for the others cannot be told: {objects}")]
    UnreadableObjects { pid: i32, objects: String },
    #[error("no free address range of {size:#x} bytes within reach of {object} in pid {pid}")]
    NoRegion { object: String, size: u64, pid: i32 },
    #[error("{function} in {object} cannot be patched: {reason}")]
    Unpatchable {
        function: String,
        object: String,
        reason: String,
    },
    #[error(
        "safety check failed for pid {pid}: after {waited_ms} ms {}",
        describe_busy(busy)
    )]
    Busy {
        pid: i32,
        waited_ms: u128,
        busy: Vec<(i32, String)>,
    },
    #[error(
        "safety check failed for pid {pid}: after {waited_ms} ms {function} is still on the stack of a suspended coroutine (context saved at {context:#x}); nothing was changed: retry when the coroutine has finished"
    )]
    CoroutineBusy {
        pid: i32,
        function: String,
        context: u64,
        waited_ms: u128,
    },
    #[error(
        "safety check failed for pid {pid}: after {waited_ms} ms its coroutines could still not be checked ({why} between each search of its memory and the stop); nothing was changed"
    )]
    CoroutinesUnsettled {
        pid: i32,
        why: String,
        waited_ms: u128,
    },
    #[error("another libcare-ctl holds the lock on pid {pid} ({path}); try again when it is done")]
    Locked { pid: i32, path: PathBuf },
    #[error("no patch with patch-id {id} is applied to pid {pid}")]
    PatchNotFound { id: String, pid: i32 },
    #[error("cannot remove patch {id} from pid {pid}: {reason}")]
    Inconsistent {
        id: String,
        pid: i32,
        reason: String,
    },
    #[error("the code at {addr:#x} changed while the patch was being prepared; nothing was written, try again")]
    CodeChanged { addr: u64 },
    #[error("pre-patch callback of {object} (patch {id}) returned {value} in pid {pid}; the patch was cancelled and nothing was changed")]
    PrePatchFailed {
        object: String,
        id: String,
        pid: i32,
        value: i32,
    },
    #[error("patch {id} does not carry state {state} (version {version}) that applied patch {by} set in pid {pid}; build it with LIBCARE_STATE({state}, {version}) or higher")]
    StateMissing {
        id: String,
        state: u64,
        version: u32,
        by: String,
        pid: i32,
    },
    #[error("patch {id} carries state {state} at version {version}, lower than version {applied} that applied patch {by} set in pid {pid}")]
    StateDowngrade {
        id: String,
        state: u64,
        version: u32,
        applied: u32,
        by: String,
        pid: i32,
    },
    #[error("no thread of pid {pid} could run {what} within {waited_ms} ms: every thread was inside the C library or the dynamic loader, or its stack could not be walked; retry when the process is idle")]
    NoHost {
        pid: i32,
        what: String,
        waited_ms: u128,
    },
    #[error("{what} failed in pid {pid}: {source}")]
    Callback {
        what: String,
        pid: i32,
        #[source]
        source: kpatch_process::Error,
    },
    #[error("pid {pid} has no object {object} loaded")]
    NoSuchObject { object: String, pid: i32 },
    #[error("the livepatch registry of pid {pid} is full: at most {slots} states can be applied at once")]
    RegistryFull { pid: i32, slots: u64 },
    #[error("patch {id} needs patch {needs}, which is not applied to {object} in pid {pid}: {id} {}; apply {needs} first", takes(symbols))]
    NeedsEarlier {
        id: String,
        needs: String,
        object: String,
        pid: i32,
        symbols: Vec<String>,
    },
    #[error("patch {id} takes {symbol} from patch {needs}, but patch {needs} as applied to {object} in pid {pid} does not define it (built from other sources than {id} was built on?)")]
    EarlierSymbolMissing {
        id: String,
        symbol: String,
        needs: String,
        object: String,
        pid: i32,
    },
    #[error("cannot remove patch {id} from {object} in pid {pid}: patch {by}, applied after it, {}; remove {by} first (unpatch without -i removes every patch, newest first)", takes(symbols))]
    StillNeeded {
        id: String,
        object: String,
        pid: i32,
        by: String,
        symbols: Vec<String>,
    },
    #[error("patch {id} is cumulative (it replaces every earlier patch of its object) and built on top of patch {needs}, which it would replace; build it without --earlier/--after")]
    ReplaceNeedsEarlier { id: String, needs: String },
    #[error("{script} {pid} failed: {status}")]
    Script {
        script: PathBuf,
        pid: i32,
        status: String,
    },
}

/// What a patch built on top of another takes from it, for messages.
fn takes(symbols: &[String]) -> String {
    if symbols.is_empty() {
        "was built on top of it".to_owned()
    } else {
        format!("uses {} from it", symbols.join(", "))
    }
}

fn describe_busy(busy: &[(i32, String)]) -> String {
    let list: Vec<String> = busy
        .iter()
        .map(|(tid, f)| format!("thread {tid} is in {f}"))
        .collect();
    format!(
        "{}; retry when the process is idle or raise LIBCARE_SAFETY_TIMEOUT",
        list.join(", ")
    )
}
