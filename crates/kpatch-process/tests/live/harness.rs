//! Fixture programs compiled at test time, run as children that are always killed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Generous: the machine may be busy with other builds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The fixture program NAME: `tests/fixtures/process/NAME.c` compiled with gcc once per test
/// run, or, when `KPATCH_TARGET_FIXTURES` names a directory, the binary NAME already built
/// there (for machines without a compiler, such as the aarch64 test VM).
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    if let Some(dir) = std::env::var_os("KPATCH_TARGET_FIXTURES") {
        return Path::new(&dir).join(name);
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/process")
        .join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("target-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "compiling {}", src.display());
    built.insert(name.to_owned(), out.clone());
    out
}

/// A running fixture. Dropping it kills and reaps the process.
pub struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line printed so far.
    pub seen: Vec<String>,
    pub pid: i32,
    /// The "ready ..." line.
    pub ready: String,
}

impl Target {
    /// Starts fixture `name` and waits for its "ready" line.
    pub fn spawn(name: &str, args: &[&str]) -> Target {
        let mut child = Command::new(fixture(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fixture starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        let mut t = Target {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            pid,
            ready: String::new(),
        };
        t.ready = t.expect("ready");
        t
    }

    /// Waits for a line starting with `prefix`.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line starting with {prefix:?} within {DEADLINE:?}; saw {:?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "fixture ended before printing {prefix:?}; saw {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Sends a command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to fixture");
        stdin.flush().expect("flush");
    }

    /// The hex or decimal number after `key=` in `line`.
    pub fn field(line: &str, key: &str) -> u64 {
        let value = line
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => value.parse::<i64>().unwrap() as u64,
        }
    }

    /// Threads listed in /proc.
    pub fn tids(&self) -> Vec<i32> {
        let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        tids.sort_unstable();
        tids
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // A thread left traced by a failed test would keep the process from being reaped
        // (its tracer, this test's thread, must reap it first): reap such threads too.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            for tid in self.tids() {
                // SAFETY: waitpid with a null status pointer only reaps.
                unsafe { libc::waitpid(tid, std::ptr::null_mut(), libc::__WALL | libc::WNOHANG) };
            }
            if Instant::now() > deadline {
                eprintln!("fixture {} could not be reaped", self.pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits until `cond` holds, polling.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One-letter state of a task.
pub fn task_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .next()?
        .chars()
        .next()
}

/// Value of symbol `name` in the `.symtab` of a 64-bit little-endian ELF file.
pub fn symbol_value(binary: &Path, name: &str) -> u64 {
    let elf = std::fs::read(binary).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "64-bit little-endian ELF");
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c));
    let section = |i: usize| shoff + i * shentsize;
    let symtab = (0..shnum)
        .map(section)
        .find(|&sh| u32_at(sh + 4) == 2) // SHT_SYMTAB
        .expect("a .symtab");
    let strtab = section(u32_at(symtab + 0x28)); // sh_link
    let (str_off, sym_off, sym_size) = (
        u64_at(strtab + 0x18) as usize,
        u64_at(symtab + 0x18) as usize,
        u64_at(symtab + 0x20) as usize,
    );
    (sym_off..sym_off + sym_size)
        .step_by(24)
        .find_map(|sym| {
            let name_at = str_off + u32_at(sym);
            let end = name_at + elf[name_at..].iter().position(|&b| b == 0)?;
            (&elf[name_at..end] == name.as_bytes()).then(|| u64_at(sym + 8))
        })
        .unwrap_or_else(|| panic!("{name} not in the symbol table of {}", binary.display()))
}

/// Address of a symbol of the running executable: its value in the symbol table plus the
/// load bias (the start of the mapping at file offset 0; PIE, first segment at address 0).
pub fn symbol_address(process: &kpatch_process::Process, binary: &Path, name: &str) -> u64 {
    let value = symbol_value(binary, name);
    let exe = std::fs::canonicalize(binary).unwrap();
    let bias = process
        .maps()
        .unwrap()
        .iter()
        .find(|m| m.offset == 0 && m.file_path() == Some(exe.as_path()))
        .expect("executable mapped")
        .start;
    bias + value
}
