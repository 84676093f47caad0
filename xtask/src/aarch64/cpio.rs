//! A writer for the `newc` cpio format the kernel unpacks as an initramfs (no compression:
//! the kernel takes a plain archive, and the host needs no `cpio` or `gzip`).

const TRAILER: &str = "TRAILER!!!";

/// An archive being built in memory; entries are added parents first.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = path.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, path: &str) {
        self.entry(path, 0o040755, &[], (0, 0));
    }

    /// A regular file with permission bits `perm` (0o755, 0o644).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, 0o100000 | (perm & 0o7777), data, (0, 0));
    }

    /// A character device node (`/dev/console` must exist before `/init` runs).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, 0o020000 | (perm & 0o7777), &[], (major, minor));
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(TRAILER, 0, &[], (0, 0));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(entry: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&entry[6 + 8 * i..6 + 8 * (i + 1)]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::new();
        c.dir("/bin");
        c.file("bin/hello", 0o755, b"hello");
        c.char_device("dev/console", 0o600, 5, 1);
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(field(&out, 1), 0o040755);
        assert_eq!(field(&out, 11), 4); // "bin\0"
        assert_eq!(&out[110..113], b"bin");
        // Header (110) + "bin\0" (4) = 114, padded to 116.
        let second = &out[116..];
        assert_eq!(&second[..6], b"070701");
        assert_eq!(field(second, 1), 0o100755);
        assert_eq!(field(second, 6), 5);
        assert_eq!(&second[110..119], b"bin/hello");
        // Header + "bin/hello\0" = 120; data at 120, 5 bytes, padded to 128.
        assert_eq!(&second[120..125], b"hello");
        let third = &second[128..];
        assert_eq!(field(third, 1), 0o020600);
        assert_eq!((field(third, 9), field(third, 10)), (5, 1));
        assert_eq!(&third[110..121], b"dev/console");
        assert_eq!(out.len() % 4, 0);
        let trailer = out
            .windows(TRAILER.len())
            .position(|w| w == TRAILER.as_bytes())
            .unwrap();
        assert_eq!(&out[trailer - 110..trailer - 104], b"070701");
    }
}
