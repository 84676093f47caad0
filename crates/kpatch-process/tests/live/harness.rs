//! Fixture programs compiled at test time, run as children that are always killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcare_test_support::{compiled, fixtures, Proc};
pub use libcare_test_support::{wait_until, DEADLINE};

/// The fixture program NAME: `tests/fixtures/process/NAME.c` compiled with gcc once per test
/// run, or, when `KPATCH_TARGET_FIXTURES` names a directory, the binary NAME already built
/// there (for machines without a compiler, such as the aarch64 test VM).
pub fn fixture(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KPATCH_TARGET_FIXTURES") {
        return Path::new(&dir).join(name);
    }
    compiled(
        &fixtures().join("process").join(format!("{name}.c")),
        &["-O2", "-g", "-Wall", "-pthread"],
    )
}

/// A running fixture that reads commands on stdin. Dropping it kills and reaps the process.
pub struct Target {
    proc: Proc,
    pub pid: i32,
    /// The "ready ..." line.
    pub ready: String,
}

impl Target {
    /// Starts fixture `name` and waits for its "ready" line.
    pub fn spawn(name: &str, args: &[&str]) -> Target {
        let proc = Proc::start(Command::new(fixture(name)).args(args).stdin(Stdio::piped()));
        let pid = proc.pid() as i32;
        let mut t = Target {
            proc,
            pid,
            ready: String::new(),
        };
        t.ready = t.expect("ready");
        t
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
}

impl std::ops::Deref for Target {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Target {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
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
