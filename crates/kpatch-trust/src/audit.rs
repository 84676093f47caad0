//! The audit trail: one line per patch, unpatch, refusal and failure, saying who asked
//! (uid, user, login uid, pid), the target pid, the patch, and the result.
//!
//! Lines go to the system log (`/dev/log`, read by journald or syslogd) with facility
//! `authpriv`, as `<PRI>TAG[PID]: key=value ...` datagrams; a machine without that socket
//! gets none. A file given instead (`LIBCARE_AUDIT_LOG`, for tests and machines without a
//! system log) gets the same lines, each after an RFC 3339 UTC time.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system log socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// `LOG_AUTHPRIV`: security messages, kept where only root reads them.
const FACILITY: u8 = 10 << 3;
const NOTICE: u8 = 5;
const WARNING: u8 = 4;

/// Who asked for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub uid: u32,
    pub pid: i32,
    /// The uid the user logged in with (`/proc/PID/loginuid`), which `sudo` keeps.
    pub login_uid: Option<u32>,
}

impl Requester {
    /// The process `pid`, running as `uid`.
    pub fn process(pid: i32, uid: u32) -> Requester {
        let login_uid = std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&u| u != u32::MAX);
        Requester {
            uid,
            pid,
            login_uid,
        }
    }

    /// This process.
    pub fn this_process() -> Requester {
        Requester::process(std::process::id() as i32, nix::unistd::getuid().as_raw())
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Not attempted: the request or a file was not trusted.
    Refused,
    /// Attempted, and failed.
    Failed,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Done => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// One audited action.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// `patch`, `unpatch`, or a server command.
    pub action: &'a str,
    pub outcome: Outcome,
    pub by: Requester,
    pub target_pid: Option<i32>,
    pub patch_id: Option<&'a str>,
    /// The patch file, storage or object concerned.
    pub file: Option<&'a Path>,
    /// Why it was refused or failed; what it did.
    pub detail: Option<&'a str>,
}

impl Event<'_> {
    /// The `key=value` message.
    pub fn message(&self) -> String {
        let mut m = format!("action={} result={}", self.action, self.outcome.word());
        if let Some(pid) = self.target_pid {
            let _ = write!(m, " pid={pid}");
        }
        if let Some(id) = self.patch_id {
            let _ = write!(m, " patch_id={}", quoted(id));
        }
        if let Some(f) = self.file {
            let _ = write!(m, " file={}", quoted(&f.to_string_lossy()));
        }
        let _ = write!(m, " by_uid={}", self.by.uid);
        if let Ok(Some(u)) = nix::unistd::User::from_uid(self.by.uid.into()) {
            let _ = write!(m, " by_user={}", quoted(&u.name));
        }
        if let Some(l) = self.by.login_uid {
            let _ = write!(m, " by_loginuid={l}");
        }
        let _ = write!(m, " by_pid={}", self.by.pid);
        if let Some(d) = self.detail {
            let _ = write!(m, " detail={}", quoted(d));
        }
        m
    }
}

/// A value as is when it is one plain word, else in double quotes with `"` and `\` escaped
/// and control characters as `\xNN` (so one event is always one line).
fn quoted(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '=');
    if plain {
        return v.to_owned();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A syslog datagram socket (normally [`SYSLOG_SOCKET`]).
    Syslog(PathBuf),
    /// Lines appended to a file.
    File(PathBuf),
    /// Nowhere (tests of other things).
    None,
}

/// The audit trail of one program.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sink: Sink,
    tag: String,
}

impl AuditLog {
    /// Lines tagged `tag` (the program's name) to `sink`.
    pub fn new(tag: &str, sink: Sink) -> AuditLog {
        AuditLog {
            sink,
            tag: tag.to_owned(),
        }
    }

    /// To the file `path` when given (`--audit-log`), else to the one `LIBCARE_AUDIT_LOG`
    /// names, else to the system log.
    pub fn from_env(tag: &str, path: Option<&Path>) -> AuditLog {
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("LIBCARE_AUDIT_LOG").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty());
        let sink = match file {
            Some(f) => Sink::File(f),
            None => Sink::Syslog(SYSLOG_SOCKET.into()),
        };
        AuditLog::new(tag, sink)
    }

    /// Records an event. A system log that is not there (no `/dev/log`) is not an error.
    pub fn record(&self, event: &Event<'_>) -> std::io::Result<()> {
        let line = format!("{}[{}]: {}", self.tag, std::process::id(), event.message());
        match &self.sink {
            Sink::Syslog(socket) => {
                let severity = match event.outcome {
                    Outcome::Done => NOTICE,
                    Outcome::Refused | Outcome::Failed => WARNING,
                };
                let datagram = format!("<{}>{line}", FACILITY | severity);
                let sock = UnixDatagram::unbound()?;
                match sock.connect(socket) {
                    Ok(()) => sock.send(datagram.as_bytes()).map(|_| ()),
                    Err(e) if is_absent(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Sink::None => Ok(()),
            Sink::File(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                // One write per line: several tools may share the file.
                f.write_all(format!("{} {line}\n", utc_now()).as_bytes())
            }
        }
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// `2026-12-07T03:10:54Z`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: Outcome, detail: Option<&str>) -> Event<'_> {
        Event {
            action: "patch",
            outcome,
            by: Requester {
                uid: 0,
                pid: 42,
                login_uid: Some(1000),
            },
            target_pid: Some(7),
            patch_id: Some("0001"),
            file: Some(Path::new("/srv/p/a b.kpatch")),
            detail,
        }
    }

    #[test]
    fn an_event_is_one_line_of_key_values() {
        let m = event(Outcome::Refused, Some("bad \"sig\"\nnext")).message();
        assert!(
            m.starts_with("action=patch result=refused pid=7 patch_id=0001 file=\"/srv/p/a b.kpatch\" by_uid=0"),
            "{m}"
        );
        assert!(m.contains(" by_loginuid=1000 by_pid=42 "), "{m}");
        assert!(m.ends_with(" detail=\"bad \\\"sig\\\"\\x0anext\""), "{m}");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn syslog_gets_a_datagram_with_priority_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let log = AuditLog::new("libcare-ctl", Sink::Syslog(path));
        log.record(&event(Outcome::Done, None)).unwrap();
        log.record(&event(Outcome::Failed, None)).unwrap();
        let mut buf = [0u8; 1024];
        let n = server.recv(&mut buf).unwrap();
        let first = std::str::from_utf8(&buf[..n]).unwrap().to_owned();
        assert!(
            first.starts_with(&format!(
                "<85>libcare-ctl[{}]: action=patch result=ok",
                std::process::id()
            )),
            "{first}"
        );
        let n = server.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"<84>libcare-ctl["));
        // No socket: nothing to log to, not an error.
        let none = AuditLog::new("t", Sink::Syslog(dir.path().join("absent")));
        none.record(&event(Outcome::Done, None)).unwrap();
    }

    #[test]
    fn a_file_gets_timestamped_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new("libcare-ctl", Sink::File(path.clone()));
        log.record(&event(Outcome::Done, None)).unwrap();
        log.record(&event(Outcome::Done, None)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert_eq!(time.len(), 20, "{time}");
        assert!(time.starts_with("20") && time.ends_with('Z'));
        assert!(rest.starts_with("libcare-ctl["), "{rest}");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }
}
