//! What makes a process patched by our tool readable and revertible by LibcarePlus (and the
//! reverse): the applied patch's in-process layout, checked here against the peer's documented
//! layout (docs/internals.md section 3, PEER-FACTS.md sections 2-3) by reading the target's
//! memory directly, without our own parsing code.
#![cfg(target_arch = "x86_64")]

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

use crate::support::*;

const HEADER_SIZE: u64 = 504;
const PAGE: u64 = 4096;
/// Bytes saved per redirected function on x86_64 (`e9 rel32`).
const HUNK_SIZE: u64 = 5;

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn u32_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[off..off + 4].try_into().expect("4 bytes"),
    ))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn read_mem(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    f.seek(SeekFrom::Start(addr)).expect("seek");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read mem");
    buf
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Map {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
    path: String,
}

fn maps(pid: u32) -> Vec<Map> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("read maps")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-').expect("range");
            Map {
                start: u64::from_str_radix(s, 16).expect("start"),
                end: u64::from_str_radix(e, 16).expect("end"),
                perms: f[1].to_owned(),
                offset: u64::from_str_radix(f[2], 16).expect("offset"),
                path: f.get(5).copied().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

#[test]
fn an_applied_patch_has_libcareplus_in_process_layout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (exe, bid) = build_target(dir, "greet", ORIGINAL);
    let kpatch = build_patch(dir, "greet", "level 1", "0001");
    let file = std::fs::read(&kpatch).expect("read patch");
    let total_size = u32_at(&file, 160);
    let payload =
        object::File::parse(&file[HEADER_SIZE as usize..total_size as usize]).expect("payload ELF");
    let section_offset = |name: &str| {
        payload
            .section_by_name(name)
            .and_then(|s| s.file_range())
            .map(|(off, _)| off)
            .unwrap_or_else(|| panic!("payload has {name}"))
    };
    let info_off = section_offset(".kpatch.info");
    let data_off = section_offset(".kpatch.data");

    // The original function, from the program file.
    let exe_bytes = std::fs::read(&exe).expect("read greet");
    let exe_elf = object::File::parse(&*exe_bytes).expect("greet ELF");
    let greet = exe_elf
        .symbols()
        .find(|s| s.name() == Ok("greet"))
        .expect("greet symbol");
    let text = exe_elf
        .sections()
        .find(|s| s.address() <= greet.address() && greet.address() < s.address() + s.size())
        .expect("the section holding greet");
    let greet_file_off =
        text.file_range().expect("greet's section has bytes").0 + greet.address() - text.address();
    let original = &exe_bytes[greet_file_off as usize..(greet_file_off + HUNK_SIZE) as usize];

    let mut proc = Proc::spawn(&exe, &["l"]);
    proc.wait_line("l: original");
    let pid = proc.pid();
    let before = maps(pid);
    let exe_path = exe.to_str().expect("utf-8").to_owned();
    let first = before
        .iter()
        .find(|m| m.path == exe_path && m.offset == 0)
        .expect("greet's first mapping");
    // A PIE's first PT_LOAD is at 0, so the bias is where it is mapped.
    let daddr = first.start + greet.address();

    run_ok(tool("libcare-ctl", dir).args([
        "patch",
        "-p",
        &pid.to_string(),
        kpatch.to_str().expect("utf-8"),
    ]));
    proc.drain();
    proc.wait_line("l: level 1");
    let after = maps(pid);
    let new: Vec<&Map> = after.iter().filter(|m| !before.contains(m)).collect();

    // An anonymous private r-xp mapping starting with the header, then rw-p for the data.
    let rx = new
        .iter()
        .find(|m| m.perms == "r-xp" && m.path.is_empty())
        .unwrap_or_else(|| panic!("no anonymous r-xp region among {new:?}"));
    let kpta = rx.start;
    let header = read_mem(pid, kpta, HEADER_SIZE as usize);
    assert_eq!(&header[..8], b"KPATCH1\0");
    assert_eq!(&header[8..13], b"0001\0");
    assert_eq!(&header[88..128], bid.as_bytes());
    // The file's header is copied as it is, apart from the runtime fields at 164..248.
    assert_eq!(header[..164], file[..164]);
    assert_eq!(header[248..273], file[248..273], "srcversion");
    let jmp_offset = u32_at(&header, 164);
    let elf_offset = u32_at(&header, 168);
    let total_mem = u64_at(&header, 176);
    let user_undo = u32_at(&header, 184);
    let user_info = u32_at(&header, 188);
    let user_level = u32_at(&header, 192);
    assert_eq!(
        jmp_offset, HEADER_SIZE,
        "printf is imported: the jump table follows the header"
    );
    assert_eq!(
        elf_offset, PAGE,
        "the ELF starts on the page after the jump table"
    );
    assert_eq!(user_info, elf_offset + info_off);
    assert_eq!(user_undo, align(elf_offset + total_size - HEADER_SIZE, 128));
    assert_eq!(user_level, 0);
    assert_eq!(total_mem % PAGE, 0);
    assert!(total_mem >= user_undo + HUNK_SIZE);
    // Read-execute up to .kpatch.data (LibcarePlus's mprotect), read-write after it.
    assert_eq!(rx.end - rx.start, elf_offset + data_off);
    let rw = after
        .iter()
        .find(|m| m.start == rx.end)
        .expect("a mapping after the r-x part");
    assert_eq!((rw.perms.as_str(), rw.path.as_str()), ("rw-p", ""));
    assert_eq!(
        rw.end - kpta,
        total_mem,
        "kpatch_total_mem_sz covers the region"
    );

    // The payload ELF at elf_offset.
    let elf = read_mem(pid, kpta + elf_offset, 18);
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 1, "ET_REL");

    // The jump table: `jmp *2(%rip); nop; nop` and an address inside libc's code.
    let entry = read_mem(pid, kpta + jmp_offset, 16);
    assert_eq!(&entry[..8], &[0xff, 0x25, 0x02, 0, 0, 0, 0x90, 0x90]);
    let target = u64_at(&entry, 8);
    assert!(
        after.iter().any(|m| m.perms == "r-xp"
            && m.path.contains("libc")
            && (m.start..m.end).contains(&target)),
        "jump table entry {target:#x} is not in libc's code"
    );

    // The relocated info records at user_info, ended by the zero marker.
    let info = read_mem(pid, kpta + user_info, 48 * 2);
    let (rec, end) = info.split_at(48);
    assert_eq!(u64_at(rec, 0), daddr, "daddr is greet's run-time address");
    let saddr = u64_at(rec, 8);
    assert!(
        (kpta..kpta + total_mem).contains(&saddr),
        "saddr {saddr:#x} is in the region"
    );
    assert_eq!(u32_at(rec, 16), greet.size(), "dlen is greet's size");
    assert!(u32_at(rec, 20) > 0, "slen");
    let symstr = u64_at(rec, 24);
    let name = read_mem(pid, symstr, 13);
    assert_eq!(&name, b"greet.kpatch\0");
    assert!(end[..24].iter().all(|&b| b == 0), "end marker");

    // The jump at daddr and the saved original bytes at user_undo.
    let jump = read_mem(pid, daddr, HUNK_SIZE as usize);
    assert_eq!(jump[0], 0xe9);
    let rel = i32::from_le_bytes(jump[1..5].try_into().expect("4 bytes"));
    assert_eq!(
        daddr.wrapping_add(5).wrapping_add_signed(i64::from(rel)),
        saddr
    );
    assert_eq!(
        read_mem(pid, kpta + user_undo, HUNK_SIZE as usize),
        original
    );

    // Unpatching puts the bytes back and removes the region.
    run_ok(tool("libcare-ctl", dir).args(["unpatch", "-p", &pid.to_string(), "-i", "0001"]));
    assert_eq!(read_mem(pid, daddr, HUNK_SIZE as usize), original);
    assert_eq!(maps(pid), before);
    proc.drain();
    proc.wait_line("l: original");
}

/// Rewrites the payload of a `.kpatch` file the way LibcarePlus's `kpatch_strip --undo-link`
/// leaves it: section symbols keep a link-time address as their value (ours write 0). The
/// checksum is cleared, as in the peer's files.
fn with_peer_section_symbol_values(file: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    let total = u32_at(file, 160) as usize;
    let payload = &file[HEADER_SIZE as usize..total];
    let elf = object::File::parse(payload).expect("payload ELF");
    let symtab = elf
        .sections()
        .find(|s| s.kind() == object::SectionKind::Metadata && s.name() == Ok(".symtab"))
        .expect(".symtab");
    let (off, size) = symtab.file_range().expect(".symtab bytes");
    let mut changed = 0;
    for i in 0..size / 24 {
        let at = HEADER_SIZE as usize + (off + i * 24) as usize;
        // st_info's low nibble is the type; 3 = STT_SECTION.
        if out[at + 4] & 0xf == 3 {
            out[at + 8..at + 16].copy_from_slice(&(0x201b_u64 + i).to_le_bytes());
            changed += 1;
        }
    }
    assert!(changed > 0, "the payload has section symbols");
    out[144..148].copy_from_slice(&[0; 4]);
    out
}

#[test]
fn section_symbols_with_values_resolve_to_their_section() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (exe, _) = build_target(dir, "greet", ORIGINAL);
    let kpatch = build_patch(dir, "greet", "level 1", "0001");
    let peer_like = dir.join("peer-like.kpatch");
    std::fs::write(
        &peer_like,
        with_peer_section_symbol_values(&std::fs::read(&kpatch).expect("read patch")),
    )
    .expect("write patch");
    let mut proc = Proc::spawn(&exe, &["s"]);
    proc.wait_line("s: original");
    let pid = proc.pid().to_string();
    let out =
        run_ok(tool("libcare-ctl", dir).args(["-v", "patch", "-p", &pid, "peer-like.kpatch"]));
    // The string table is reached through its section symbol.
    assert!(stdout(&out).contains("greet at 0x"), "{}", stdout(&out));
    proc.drain();
    proc.wait_line("s: level 1");
    run_ok(tool("libcare-ctl", dir).args(["unpatch", "-p", &pid, "-i", "0001"]));
    proc.drain();
    proc.wait_line("s: original");
}

/// Adds an `R_X86_64_NONE` relocation without a symbol to `.rela.kpatch.text`, as
/// LibcarePlus's `kpatch_strip --rel-fixup` leaves for a checked local-exec TLS reference.
fn add_none_relocation(path: &Path) {
    let mut elf = elf_edit::Elf::parse(&std::fs::read(path).expect("read payload")).expect("ELF");
    let index = elf
        .section_index(".rela.kpatch.text")
        .expect(".rela.kpatch.text");
    let mut relas = elf.relas(index).expect("relocations");
    relas.push(elf_edit::Rela::default());
    elf.set_relas(index, &relas).expect("set relocations");
    std::fs::write(path, kpatch_strip::write_payload(&elf)).expect("write payload");
}

#[test]
fn an_r_x86_64_none_relocation_is_skipped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (exe, _) = build_target(dir, "greet", ORIGINAL);
    build_patch_edited(dir, "greet", "level 1", "0001", &add_none_relocation);
    let mut proc = Proc::spawn(&exe, &["n"]);
    proc.wait_line("n: original");
    let pid = proc.pid().to_string();
    run_ok(tool("libcare-ctl", dir).args(["patch", "-p", &pid, "greet-0001.kpatch"]));
    proc.drain();
    proc.wait_line("n: level 1");
}
