//! Properties of the reader and writer over generated inputs.

mod common;

use common::*;
use kpatch_file::{write_kpatch, KpatchFile, HEADER_SIZE};
use proptest::prelude::*;

fn build_ids() -> impl Strategy<Value = String> {
    "[0-9a-f]{40}"
}

fn patch_ids() -> impl Strategy<Value = String> {
    "[!-~]{1,7}"
}

/// A valid payload: `.kpatch.text` bytes and `(dlen, slen)` per function.
fn elfs() -> impl Strategy<Value = (Vec<u8>, Vec<(u32, u32)>)> {
    (
        proptest::collection::vec(any::<u8>(), 0..160),
        proptest::collection::vec((any::<u32>(), 1..u32::MAX), 0..5),
    )
}

fn build((text, functions): &(Vec<u8>, Vec<(u32, u32)>)) -> Vec<u8> {
    TestElf::kpatch(text, functions).build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn write_then_parse_round_trips(
        bid in build_ids(),
        id in patch_ids(),
        time in any::<u64>(),
        spec in elfs(),
    ) {
        let elf = build(&spec);
        let file = write_kpatch(&bid, &id, time, &elf).expect("valid input");
        prop_assert_eq!(file.len(), HEADER_SIZE + elf.len().next_multiple_of(16));
        let parsed = KpatchFile::parse(&file).expect("own output parses");
        prop_assert_eq!(parsed.build_id(), bid.as_str());
        prop_assert_eq!(parsed.patch_id(), id.as_str());
        prop_assert_eq!(parsed.header().build_time(), time);
        prop_assert_eq!(parsed.header().total_size() as usize, file.len());
        prop_assert_eq!(&parsed.payload()[..elf.len()], &elf[..]);
        prop_assert_eq!(parsed.section_data(".kpatch.text"), Some(&spec.0[..]));
        let records: Vec<(u32, u32)> =
            parsed.info_records().iter().map(|r| (r.dlen(), r.slen())).collect();
        prop_assert_eq!(records, spec.1.clone());
        // The peer's kpatch_make lays out the same bytes, apart from the checksum.
        let peer = peer_kpatch_make(&bid, &id, time, &elf);
        let same = KpatchFile::parse(&peer).expect("peer output parses");
        prop_assert_eq!(same.payload(), parsed.payload());
    }

    #[test]
    fn every_truncation_is_an_error(spec in elfs(), checksum in any::<bool>()) {
        let elf = build(&spec);
        let file = if checksum {
            write_kpatch(&build_id(), "0001", 0, &elf).expect("valid input")
        } else {
            peer_kpatch_make(&build_id(), "0001", 0, &elf)
        };
        for len in 0..file.len() {
            prop_assert!(KpatchFile::parse(&file[..len]).is_err(), "accepted {} bytes", len);
        }
    }

    #[test]
    fn every_byte_flip_of_our_file_is_an_error(
        spec in elfs(),
        id in patch_ids(),
        mask in 1..=u8::MAX,
    ) {
        let file = write_kpatch(&build_id(), &id, 7, &build(&spec)).expect("valid input");
        let mut copy = file.clone();
        for pos in 0..file.len() {
            for m in [mask, 0x01, 0x80, 0xff] {
                copy[pos] ^= m;
                prop_assert!(
                    KpatchFile::parse(&copy).is_err(),
                    "flip of byte {} with {:#x} accepted", pos, m
                );
                copy[pos] ^= m;
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = KpatchFile::parse(&bytes);
        let _ = kpatch_file::parse_info_records(&bytes);
        let _ = write_kpatch(&build_id(), "1", 0, &bytes);
    }

    #[test]
    fn random_edits_of_a_peer_file_never_panic(
        spec in elfs(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
    ) {
        // Without a checksum the edits reach the ELF checks.
        let mut file = peer_kpatch_make(&build_id(), "0001", 0, &build(&spec));
        for (index, value) in edits {
            let at = index.index(file.len());
            file[at] = value;
        }
        if let Ok(parsed) = KpatchFile::parse(&file) {
            for section in parsed.sections() {
                prop_assert!(section.data.len() <= parsed.payload().len());
            }
            // Whatever the reader accepts, the writer accepts back.
            let remade = write_kpatch(
                parsed.build_id(),
                parsed.patch_id(),
                parsed.header().build_time(),
                parsed.payload(),
            );
            prop_assert!(remade.is_ok(), "{:?}", remade);
        }
    }

    #[test]
    fn random_payload_behind_a_valid_header_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 64..1024),
    ) {
        let mut elf = build(&(vec![1, 2, 3], vec![(5, 6)]));
        // Keep the ELF header so the section table is reached, randomize the rest.
        elf.truncate(64);
        elf.extend_from_slice(&payload);
        let file = peer_kpatch_make(&build_id(), "0001", 0, &elf);
        let _ = KpatchFile::parse(&file);
    }
}
