//! `/proc/PID/maps`: one entry per mapping, with the path kept byte-exact (paths may hold
//! spaces, need not be UTF-8, and end in ` (deleted)` once the file was removed or replaced).

use std::ffi::OsStr;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Access rights of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    /// `r`
    pub read: bool,
    /// `w`
    pub write: bool,
    /// `x`
    pub exec: bool,
    /// `s` (shared) rather than `p` (private, copy-on-write).
    pub shared: bool,
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |on, ch| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapName {
    /// No name: anonymous memory.
    Anonymous,
    /// A file. `deleted` is set when the kernel appended ` (deleted)`: the path no longer names
    /// the mapped file (read it through [`crate::Process::open_mapped_file`]).
    File {
        /// Path as the kernel printed it, without the ` (deleted)` suffix.
        path: PathBuf,
        /// The file was unlinked or replaced after it was mapped.
        deleted: bool,
    },
    /// A kernel-named region such as `[heap]`, `[stack]`, `[vdso]`, `[vvar]`, `[vsyscall]` or
    /// `[anon:NAME]`, brackets included.
    Special(String),
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Access rights.
    pub perms: Perms,
    /// Offset of the mapping in its file.
    pub offset: u64,
    /// Device of the file: (major, minor).
    pub dev: (u32, u32),
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// What backs the mapping.
    pub name: MapName,
}

impl MapEntry {
    /// The address range.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True for a zero-length entry (never printed by the kernel).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` lies inside the mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The mapped file's path (without ` (deleted)`), if a file backs the mapping.
    pub fn file_path(&self) -> Option<&Path> {
        match &self.name {
            MapName::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether this is the kernel-named region `name` (e.g. `"[vdso]"`).
    pub fn is_special(&self, name: &str) -> bool {
        matches!(&self.name, MapName::Special(s) if s == name)
    }

    /// The main thread's stack (`[stack]`).
    pub fn is_stack(&self) -> bool {
        self.is_special("[stack]")
    }
}

/// A line of a maps file that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {detail}: {text:?}")]
pub struct MapsParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub detail: &'static str,
    /// The line.
    pub text: String,
}

const DELETED: &[u8] = b" (deleted)";

/// Parses the contents of a `/proc/PID/maps` file.
pub fn parse_maps(text: &[u8]) -> Result<Vec<MapEntry>, MapsParseError> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|detail| MapsParseError {
                line: i + 1,
                detail,
                text: String::from_utf8_lossy(l).into_owned(),
            })
        })
        .collect()
}

/// Splits off the next space-separated field, skipping leading spaces.
fn field(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let start = rest.iter().position(|&b| b != b' ')?;
    let s = &rest[start..];
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    let f = s[..end].to_vec();
    *rest = &s[end..];
    Some(f)
}

fn hex(f: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok()
}

fn parse_line(line: &[u8]) -> Result<MapEntry, &'static str> {
    let mut rest = line;
    let range = field(&mut rest).ok_or("missing address range")?;
    let perms = field(&mut rest).ok_or("missing permissions")?;
    let offset = field(&mut rest).ok_or("missing offset")?;
    let dev = field(&mut rest).ok_or("missing device")?;
    let inode = field(&mut rest).ok_or("missing inode")?;

    let dash = range
        .iter()
        .position(|&b| b == b'-')
        .ok_or("address range without '-'")?;
    let start = hex(&range[..dash]).ok_or("bad start address")?;
    let end = hex(&range[dash + 1..]).ok_or("bad end address")?;
    if end < start {
        return Err("end address below start address");
    }
    let [r, w, x, s] = <[u8; 4]>::try_from(perms.as_slice()).map_err(|_| "bad permissions")?;
    let perms = Perms {
        read: r == b'r',
        write: w == b'w',
        exec: x == b'x',
        shared: s == b's',
    };
    let offset = hex(&offset).ok_or("bad offset")?;
    let colon = dev
        .iter()
        .position(|&b| b == b':')
        .ok_or("device without ':'")?;
    let major = hex(&dev[..colon]).ok_or("bad device major")?;
    let minor = hex(&dev[colon + 1..]).ok_or("bad device minor")?;
    let dev = (
        u32::try_from(major).map_err(|_| "device major too large")?,
        u32::try_from(minor).map_err(|_| "device minor too large")?,
    );
    let inode = std::str::from_utf8(&inode)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad inode")?;

    // The kernel pads with spaces up to a column, then prints the path verbatim (only '\n' is
    // escaped), so everything after the padding is the name, spaces included.
    let name_start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let name = &rest[name_start..];
    let name = if name.is_empty() {
        MapName::Anonymous
    } else if name.first() == Some(&b'/') {
        let (path, deleted) = match name.strip_suffix(DELETED) {
            Some(p) => (p, true),
            None => (name, false),
        };
        MapName::File {
            path: PathBuf::from(OsStr::from_bytes(path)),
            deleted,
        }
    } else {
        MapName::Special(String::from_utf8_lossy(name).into_owned())
    };
    Ok(MapEntry {
        start,
        end,
        perms,
        offset,
        dev,
        inode,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /usr/bin/my prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234                       /usr/bin/my prog
55d0c2000000-55d0c2021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 rw-s 00000000 00:05 99                         /dev/zero (deleted)
7f0000001000-7f0000002000 ---p 00000000 00:00 0 
7f0000002000-7f0000003000 r-xp 00002000 103:02 5555                      /tmp/lib (deleted) x.so (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd000fe000-7ffd00100000 r--p 00000000 00:00 0                          [vvar]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_every_kind_of_line() {
        let maps = parse_maps(SAMPLE).unwrap();
        assert_eq!(maps.len(), 10);
        let m = &maps[1];
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x55d0c0a01000, 0x55d0c0a02000, 0x1000)
        );
        assert_eq!(m.perms.to_string(), "r-xp");
        assert_eq!(m.dev, (0xfd, 1));
        assert_eq!(m.inode, 1234);
        assert_eq!(m.file_path(), Some(Path::new("/usr/bin/my prog")));
        assert!(maps[2].is_special("[heap]"));
        assert_eq!(
            maps[3].name,
            MapName::File {
                path: "/dev/zero".into(),
                deleted: true
            }
        );
        assert!(maps[3].perms.shared && maps[3].perms.write);
        assert_eq!(maps[4].name, MapName::Anonymous);
        assert_eq!(maps[4].perms, Perms::default());
        assert_eq!(maps[5].dev, (0x103, 2));
        assert_eq!(
            maps[5].file_path(),
            Some(Path::new("/tmp/lib (deleted) x.so"))
        );
        assert!(maps[6].is_stack());
        assert!(maps[8].is_special("[vdso]"));
        assert_eq!(maps[9].start, 0xffffffffff600000);
    }

    #[test]
    fn rejects_malformed_lines_naming_them() {
        let err = parse_maps(b"1000-2000 r-xp 0 00:00 0\nzz-2000 r-xp 0 00:00 0\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.detail, "bad start address");
        assert!(parse_maps(b"1000-2000 r-x 0 00:00 0").is_err());
        assert!(parse_maps(b"2000-1000 r-xp 0 00:00 0").is_err());
        assert!(parse_maps(b"1000-2000 r-xp 0 0000 0").is_err());
        assert!(parse_maps(b"1000-2000 r-xp 0 00:00").is_err());
        assert_eq!(parse_maps(b"").unwrap(), vec![]);
    }

    #[test]
    fn non_utf8_paths_survive() {
        let maps = parse_maps(b"1000-2000 r--p 0 08:01 7 /tmp/\xff\xfe.so\n").unwrap();
        assert_eq!(
            maps[0].file_path().unwrap().as_os_str().as_bytes(),
            b"/tmp/\xff\xfe.so"
        );
    }
}
