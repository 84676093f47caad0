//! `libcare-dump` end to end on patches made from a gcc-assembled object.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use kpatch_file::{write_kpatch, KpatchFile, HEADER_SIZE};
use libcare_test_support::{gcc, stderr, stdout};

const BID: &str = "0123456789abcdef0123456789abcdef01234567";

/// A minimal patch object: one replaced function, one info record and the end marker.
const PATCH_S: &str = r#"
	.text
	.globl f
f:
	.zero 12
	.pushsection .kpatch.text,"ax",@progbits
	.globl f.kpatch
f.kpatch:
	.zero 20
.Lend:
	.popsection
	.pushsection .kpatch.info,"aw",@progbits
	.quad f
	.quad f.kpatch
	.long 12
	.long .Lend - f.kpatch
	.quad 0
	.quad 0
	.long 0
	.byte 0,0,0,0
	.zero 24
	.popsection
"#;

/// Offset of the header's `csum` field (LibcarePlus leaves it 0).
const CSUM: usize = 144;

struct Fixture {
    dir: tempfile::TempDir,
    elf: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("p.s"), PATCH_S).expect("write assembly");
        gcc(dir.path(), &["-c", "-o", "p.o", "p.s"]);
        let elf = fs::read(dir.path().join("p.o")).expect("object");
        let patch = write_kpatch(BID, "0007", 1_700_000_000, &elf).expect("valid object");
        fs::write(dir.path().join("foo.kpatch"), patch).expect("write patch");
        Fixture { dir, elf }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_libcare-dump"))
            .current_dir(self.path())
            .args(args)
            .output()
            .expect("run libcare-dump")
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.path().join(name), bytes).expect("write file");
    }

    fn patch(&self) -> Vec<u8> {
        fs::read(self.path().join("foo.kpatch")).expect("patch")
    }
}

fn header_lines(name: &str, id: &str) -> String {
    format!(
        "Patch Name:               {name}\n\
         Magic:                    KPATCH1\n\
         Patch id:                 {id}\n\
         buildid:                  {BID}\n"
    )
}

#[test]
fn header_shows_the_peer_lines() {
    let fx = Fixture::new();
    let out = fx.run(&["-H", "-i", "foo.kpatch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), header_lines("foo.kpatch", "0007"));
}

#[test]
fn header_of_a_file_without_checksum_is_shown() {
    let fx = Fixture::new();
    let mut peer = fx.patch();
    peer[CSUM..CSUM + 4].fill(0);
    fx.write("peer.kpatch", &peer);
    let out = fx.run(&["-i", "peer.kpatch", "-H"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), header_lines("peer.kpatch", "0007"));
}

#[test]
fn verbose_header_shows_sections_and_records() {
    let fx = Fixture::new();
    let out = fx.run(&["-H", "-v", "-i", "foo.kpatch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&header_lines("foo.kpatch", "0007")),
        "{text}"
    );
    assert!(
        text.contains("Build time:               1700000000\n"),
        "{text}"
    );
    assert!(text.contains("(verified)"), "{text}");
    assert!(text.contains(".kpatch.info"), "{text}");
    assert!(text.contains("Info records:             1\n"), "{text}");
    assert!(text.contains("dlen 12       slen 20"), "{text}");
}

#[test]
fn convert_writes_the_payload_elf() {
    let fx = Fixture::new();
    let out = fx.run(&["-c", "-i", "foo.kpatch", "-o", "foo.elf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let elf = fs::read(fx.path().join("foo.elf")).expect("ELF written");
    assert_eq!(elf.len(), fx.elf.len().next_multiple_of(16));
    assert_eq!(&elf[..fx.elf.len()], &fx.elf[..]);
    assert!(elf[fx.elf.len()..].iter().all(|&b| b == 0));
    // The extracted ELF makes the same patch again.
    let again = write_kpatch(BID, "0007", 1_700_000_000, &elf).expect("still valid");
    let file = KpatchFile::parse(&again).expect("parses");
    assert_eq!(file.info_records().len(), 1);
}

#[test]
fn header_and_convert_together_do_both() {
    let fx = Fixture::new();
    let out = fx.run(&["-H", "-c", "-i", "foo.kpatch", "-o", "foo.elf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), header_lines("foo.kpatch", "0007"));
    assert!(fx.path().join("foo.elf").exists());
}

#[test]
fn corrupt_file_shows_the_header_then_fails() {
    let fx = Fixture::new();
    let mut bad = fx.patch();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fx.write("bad.kpatch", &bad);
    let out = fx.run(&["-H", "-i", "bad.kpatch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), header_lines("bad.kpatch", "0007"));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );

    let out = fx.run(&["-c", "-i", "bad.kpatch", "-o", "bad.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(!fx.path().join("bad.elf").exists());
}

#[test]
fn truncated_file_is_rejected() {
    let fx = Fixture::new();
    let patch = fx.patch();
    fx.write("short.kpatch", &patch[..HEADER_SIZE - 4]);
    let out = fx.run(&["-H", "-i", "short.kpatch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("shorter than"), "{}", stderr(&out));

    fx.write("cut.kpatch", &patch[..patch.len() - 16]);
    let out = fx.run(&["-c", "-i", "cut.kpatch", "-o", "cut.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(!fx.path().join("cut.elf").exists());
}

#[test]
fn non_kpatch_file_is_rejected() {
    let fx = Fixture::new();
    fx.write("p.o.copy", &fx.elf);
    let out = fx.run(&["-c", "-i", "p.o.copy", "-o", "x.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("magic"), "{}", stderr(&out));
    assert!(!fx.path().join("x.elf").exists());
    // No header lines for something that is not a patch at all.
    let out = fx.run(&["-H", "-i", "p.o.copy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not a .kpatch file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_input_is_reported() {
    let fx = Fixture::new();
    let out = fx.run(&["-H", "-i", "nope.kpatch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read kpatch file 'nope.kpatch'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unwritable_output_is_reported() {
    let fx = Fixture::new();
    let out = fx.run(&["-c", "-i", "foo.kpatch", "-o", "no/such/dir/x.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot write output file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nothing_to_do_is_an_error() {
    let fx = Fixture::new();
    let out = fx.run(&["-i", "foo.kpatch", "-o", "x.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    assert!(!fx.path().join("x.elf").exists());
}

#[test]
fn usage_errors_exit_non_zero() {
    let fx = Fixture::new();
    for args in [
        &["-H"][..],
        &["-c", "-i", "foo.kpatch"],
        &["-x", "-i", "foo.kpatch"],
        &[],
    ] {
        let out = fx.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
