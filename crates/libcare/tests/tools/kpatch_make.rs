//! `kpatch_make` end to end: real objects assembled by gcc, output checked by parsing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kpatch_file::{KpatchFile, HEADER_SIZE};
use libcare_test_support::{gcc, stderr};

const BID: &str = "6d1f3b8c0a9e2f47b5c6d7e8f9a0b1c2d3e4f5a6";

/// The shape of a patch object: a function `f`, its replacement `f.kpatch`, a new
/// function `g`, their names, and one `.kpatch.info` record each plus the end marker.
/// Function bodies are plain bytes so that any host assembler takes it.
const PATCH_S: &str = r#"
	.text
	.globl f
	.type f, @function
f:
	.zero 16
	.size f, .-f
	.pushsection .kpatch.text,"ax",@progbits
	.globl f.kpatch
	.type f.kpatch, @function
f.kpatch:
	.zero 24
.Lkpatch_end0:
	.size f.kpatch, .-f.kpatch
	.globl g
	.type g, @function
g:
	.zero 8
.Lkpatch_end1:
	.size g, .-g
	.popsection
	.pushsection .kpatch.strtab,"a",@progbits
.Lkpatch_str0:
	.string "f.kpatch"
.Lkpatch_str1:
	.string "g"
	.popsection
	.pushsection .kpatch.info,"aw",@progbits
	.quad f
	.quad f.kpatch
	.long 16
	.long .Lkpatch_end0 - f.kpatch
	.quad .Lkpatch_str0
	.quad 0
	.long 0
	.byte 0,0,0,0
	.quad 0
	.quad g
	.long 0
	.long .Lkpatch_end1 - g
	.quad .Lkpatch_str1
	.quad 0
	.long 0
	.byte 0,0,0,0
	.zero 24
	.popsection
"#;

/// Offset of `e_type` in an ELF header.
const E_TYPE: usize = 16;

fn assemble(dir: &Path, name: &str, source: &str) -> PathBuf {
    let (src, obj) = (format!("{name}.s"), format!("{name}.o"));
    fs::write(dir.join(&src), source).expect("write assembly");
    gcc(dir, &["-c", "-o", &obj, &src]);
    dir.join(obj)
}

fn kpatch_make(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpatch_make"))
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(args)
        .output()
        .expect("run kpatch_make")
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let obj = assemble(dir.path(), "foobar", PATCH_S);
    (dir, obj)
}

/// Runs a failing case: non-zero exit, `needle` in the message, no output file.
fn assert_fails(dir: &Path, args: &[&str], needle: &str) {
    let out = kpatch_make(dir, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr(&out).contains(needle),
        "{args:?}: expected {needle:?} in: {}",
        stderr(&out)
    );
    assert!(
        !dir.join("foo.kpatch").exists(),
        "{args:?} left an output file"
    );
}

#[test]
fn user_guide_invocation_makes_a_valid_patch() {
    let (dir, obj) = setup();
    let out = kpatch_make(
        dir.path(),
        &["-b", BID, "-i", "0001", "foobar.o", "-o", "foo.kpatch"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let bytes = fs::read(dir.path().join("foo.kpatch")).expect("output written");
    let elf = fs::read(&obj).expect("object");
    let file = KpatchFile::parse(&bytes).expect("output parses");
    assert_eq!(file.build_id(), BID);
    assert_eq!(file.patch_id(), "0001");
    assert_eq!(file.header().build_time(), 1_700_000_000);
    assert_eq!(bytes.len(), HEADER_SIZE + elf.len().next_multiple_of(16));
    assert_eq!(&file.payload()[..elf.len()], &elf[..]);
    assert!(file.has_checksum());
    let records: Vec<(u32, u32, bool)> = file
        .info_records()
        .iter()
        .map(|r| (r.dlen(), r.slen(), r.is_new_function()))
        .collect();
    assert_eq!(records, [(16, 24, false), (0, 8, true)]);
    assert!(file.section(".rela.kpatch.info").is_some());
}

#[test]
fn build_time_is_the_current_time_without_source_date_epoch() {
    let (dir, _) = setup();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let out = Command::new(env!("CARGO_BIN_EXE_kpatch_make"))
        .current_dir(dir.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["-b", BID, "-i", "1", "-o", "foo.kpatch", "foobar.o"])
        .output()
        .expect("run kpatch_make");
    assert!(out.status.success(), "{}", stderr(&out));
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let bytes = fs::read(dir.path().join("foo.kpatch")).expect("output written");
    let time = KpatchFile::parse(&bytes)
        .expect("parses")
        .header()
        .build_time();
    assert!(
        (before..=after).contains(&time),
        "{before} <= {time} <= {after}"
    );
}

#[test]
fn without_output_option_the_patch_goes_to_stdout() {
    let (dir, _) = setup();
    let to_stdout = kpatch_make(dir.path(), &["-b", BID, "-i", "0001", "foobar.o"]);
    assert!(to_stdout.status.success(), "{}", stderr(&to_stdout));
    let to_file = kpatch_make(
        dir.path(),
        &["-b", BID, "-i", "0001", "-o", "foo.kpatch", "foobar.o"],
    );
    assert!(to_file.status.success());
    let file = fs::read(dir.path().join("foo.kpatch")).expect("output written");
    assert_eq!(to_stdout.stdout, file);
    assert!(KpatchFile::parse(&to_stdout.stdout).is_ok());
}

#[test]
fn debug_option_reports_on_stderr_only() {
    let (dir, _) = setup();
    let out = kpatch_make(dir.path(), &["-d", "-b", BID, "-i", "0001", "foobar.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(KpatchFile::parse(&out.stdout).is_ok());
    let err = stderr(&out);
    assert!(err.contains("patch id 0001") && err.contains(BID), "{err}");
    assert!(err.contains("2 patched functions"), "{err}");
}

#[test]
fn long_options_work_too() {
    let (dir, _) = setup();
    let out = kpatch_make(
        dir.path(),
        &[
            "--buildid",
            BID,
            "--id",
            "0002",
            "--output",
            "foo.kpatch",
            "foobar.o",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = fs::read(dir.path().join("foo.kpatch")).expect("output written");
    assert_eq!(KpatchFile::parse(&bytes).map(|f| f.patch_id()), Ok("0002"));
}

#[test]
fn upper_case_build_id_is_stored_in_lower_case() {
    let (dir, _) = setup();
    let upper = BID.to_uppercase();
    let out = kpatch_make(dir.path(), &["-b", &upper, "-i", "1", "foobar.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        KpatchFile::parse(&out.stdout).map(|f| f.build_id()),
        Ok(BID)
    );
}

#[test]
fn bad_build_ids_are_rejected() {
    let (dir, _) = setup();
    let long = format!("{BID}0");
    let not_hex = BID.replace('d', "x");
    for bid in ["", "1234", &BID[..39], &long, &not_hex] {
        assert_fails(
            dir.path(),
            &["-b", bid, "-i", "0001", "foobar.o", "-o", "foo.kpatch"],
            "invalid build-id",
        );
    }
}

#[test]
fn bad_patch_ids_are_rejected() {
    let (dir, _) = setup();
    for id in ["12345678", "", "a b"] {
        assert_fails(
            dir.path(),
            &["-b", BID, "-i", id, "foobar.o", "-o", "foo.kpatch"],
            "invalid patch id",
        );
    }
}

#[test]
fn non_relocatable_input_is_rejected() {
    let (dir, obj) = setup();
    let mut elf = fs::read(&obj).expect("object");
    elf[E_TYPE] = 2; // ET_EXEC
    fs::write(dir.path().join("exec.o"), &elf).expect("write");
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "exec.o", "-o", "foo.kpatch"],
        "ET_REL",
    );
}

#[test]
fn non_elf_input_is_rejected() {
    let (dir, _) = setup();
    fs::write(
        dir.path().join("notes.txt"),
        "just some text, not an object\n",
    )
    .expect("write");
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "notes.txt", "-o", "foo.kpatch"],
        "not an ELF file",
    );
}

#[test]
fn object_without_kpatch_info_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    assemble(
        dir.path(),
        "plain",
        ".text\n.globl f\nf:\n.zero 8\n.section .kpatch.text,\"ax\",@progbits\n.zero 8\n",
    );
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "plain.o", "-o", "foo.kpatch"],
        ".kpatch.info",
    );
}

#[test]
fn kpatch_info_without_end_marker_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = PATCH_S.replace("\t.zero 24\n\t.popsection", "\t.popsection");
    assemble(dir.path(), "nomarker", &source);
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "nomarker.o", "-o", "foo.kpatch"],
        "end marker",
    );
}

#[test]
fn unreadable_input_is_reported() {
    let (dir, _) = setup();
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "missing.o", "-o", "foo.kpatch"],
        "cannot read input file 'missing.o'",
    );
    fs::create_dir(dir.path().join("adir")).expect("mkdir");
    assert_fails(
        dir.path(),
        &["-b", BID, "-i", "0001", "adir", "-o", "foo.kpatch"],
        "cannot read input file 'adir'",
    );
}

#[test]
fn uncreatable_output_is_reported() {
    let (dir, _) = setup();
    let out = kpatch_make(
        dir.path(),
        &[
            "-b",
            BID,
            "-i",
            "0001",
            "foobar.o",
            "-o",
            "no/such/dir/foo.kpatch",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot create output file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_source_date_epoch_is_reported() {
    let (dir, _) = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_kpatch_make"))
        .current_dir(dir.path())
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["-b", BID, "-i", "1", "-o", "foo.kpatch", "foobar.o"])
        .output()
        .expect("run kpatch_make");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    let (dir, _) = setup();
    for args in [
        &["-i", "0001", "foobar.o"][..],
        &["-b", BID, "foobar.o"],
        &["-b", BID, "-i", "0001"],
        &["-b", BID, "-b", BID, "-i", "0001", "foobar.o"],
        &["-b", BID, "-i", "0001", "foobar.o", "extra.o"],
        &["-x", "-b", BID, "-i", "0001", "foobar.o"],
    ] {
        let out = kpatch_make(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote a patch");
        assert!(stderr(&out).contains("Usage"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn after_records_the_earlier_patch_and_refuses_what_does_not_add_up() {
    let (dir, _) = setup();
    let d = dir.path();
    let out = kpatch_make(
        d,
        &[
            "-b",
            BID,
            "-i",
            "0002",
            "--after",
            "0001",
            "foobar.o",
            "-o",
            "foo.kpatch",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = fs::read(d.join("foo.kpatch")).expect("output written");
    let file = KpatchFile::parse(&bytes).expect("output parses");
    let depends = file.section(".kpatch.depends").expect(".kpatch.depends");
    assert_eq!(kpatch_file::Depends::parse(depends.data).patches, ["0001"]);
    fs::remove_file(d.join("foo.kpatch")).unwrap();

    let args = |extra: &[&'static str]| {
        let mut a = vec!["-b", BID, "-i", "0002"];
        a.extend(extra);
        a.extend(["foobar.o", "-o", "foo.kpatch"]);
        a
    };
    assert_fails(
        d,
        &args(&["--after", "0002"]),
        "cannot be applied after itself",
    );
    assert_fails(d, &args(&["--after", "a b"]), "--after a b");
    assert_fails(
        d,
        &args(&["--after", "0001", "--replace"]),
        "cannot be built on top of one",
    );
    // What `kpatch_strip --rel-fixup` lists for `kpatch_gensrc --earlier`'s placeholders needs
    // the earlier patch named.
    let taking = PATCH_S.to_owned()
        + "\t.pushsection .kpatch.depends,\"\",@progbits\n\t.string \"symbol:added_next\"\n\t.popsection\n";
    assemble(d, "taking", &taking);
    let args = ["-b", BID, "-i", "0002", "taking.o", "-o", "foo.kpatch"];
    assert_fails(d, &args, "takes added_next from an earlier patch");
}
