//! Arbitrary bytes as a `.kpatch` file, as relocated info records, and as a payload ELF
//! given to the writer: errors are fine, panics are not; whatever parses must be
//! self-consistent.

#![no_main]

use kpatch_file::{parse_info_records, write_kpatch, KpatchFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = KpatchFile::parse(data) {
        let payload = file.payload();
        for section in file.sections() {
            assert!(section.data.len() <= payload.len());
        }
        // A file that parses can be remade from its payload.
        let remade = write_kpatch(
            file.build_id(),
            file.patch_id(),
            file.header().build_time(),
            payload,
        )
        .expect("the payload of a valid file is a valid payload");
        assert!(KpatchFile::parse(&remade).is_ok());
    }
    let _ = parse_info_records(data);
    let _ = write_kpatch("0123456789abcdef0123456789abcdef01234567", "f", 0, data);
});
