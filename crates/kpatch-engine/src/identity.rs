//! That the file read for a mapped object is the one the process runs. Files are read through
//! `/proc/PID/map_files` (the mapped inode itself, whatever the path says: a target in another
//! mount namespace or chroot names files of its own root, which may be other files on the
//! host), and the build-id note read from the file must also be the one in the process's
//! memory: a file changed in place after it was mapped is not taken for the object.

use kpatch_process::Memory;

use crate::elf_image::ElfImage;

/// Whether the build-id in memory, at `load_bias`, is the image's; `None` when that cannot be
/// told (no build-id, a note outside the loaded segments, unreadable memory).
pub(crate) fn build_id_in_memory(
    mem: &dyn Memory,
    image: &ElfImage,
    load_bias: u64,
) -> Option<bool> {
    let hex = image.build_id.as_deref()?;
    let desc: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    // The note's name and descriptor, as they lie in the file.
    let mut needle = b"GNU\0".to_vec();
    needle.extend(&desc);
    let at = image
        .data
        .windows(needle.len())
        .position(|w| w == needle.as_slice())?
        + 4;
    let off = at as u64;
    let seg = image
        .loads
        .iter()
        .find(|l| l.offset <= off && off + desc.len() as u64 <= l.offset + l.filesz)?;
    let addr = load_bias.wrapping_add(seg.vaddr + (off - seg.offset));
    let mut got = vec![0u8; desc.len()];
    mem.read(addr, &mut got).ok()?;
    Some(got == desc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeProcess;

    #[test]
    fn the_build_id_in_memory_must_be_the_files() {
        // This test's own executable, "loaded" with each segment's file bytes at its address.
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let image = ElfImage::parse(data).unwrap();
        assert!(image.build_id.is_some(), "tests are linked with a build-id");
        let bias = 0x5555_0000_0000;
        let mem = FakeProcess::x86_64();
        for l in &image.loads {
            let bytes = image.data[l.offset as usize..(l.offset + l.filesz) as usize].to_vec();
            mem.map(bias + l.vaddr, bytes);
        }
        assert_eq!(build_id_in_memory(&mem, &image, bias), Some(true));
        // The file changed in place since it was mapped: other bytes where its note lies.
        let image2 = &image;
        let desc_at = {
            let hex = image2.build_id.as_deref().unwrap();
            let first = u8::from_str_radix(&hex[..2], 16).unwrap();
            let mut needle = b"GNU\0".to_vec();
            needle.push(first);
            image2
                .data
                .windows(5)
                .position(|w| w == needle.as_slice())
                .unwrap()
                + 4
        } as u64;
        let seg = image2
            .loads
            .iter()
            .find(|l| l.offset <= desc_at && desc_at < l.offset + l.filesz)
            .unwrap();
        let addr = bias + seg.vaddr + (desc_at - seg.offset);
        let old = mem.peek(addr, 1)[0];
        mem.write(addr, &[old ^ 0xff]).unwrap();
        assert_eq!(build_id_in_memory(&mem, image2, bias), Some(false));
    }
}
