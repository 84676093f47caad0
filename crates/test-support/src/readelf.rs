//! `readelf`'s verdict on an ELF file: GNU binutils is the reference reader.

use std::path::Path;
use std::process::Command;

/// `readelf -a -W FILE`; panics if it fails or prints anything on stderr.
pub fn readelf_clean(path: &Path) -> String {
    readelf_allowing(path, &[])
}

/// `readelf -a -W FILE`; panics if it fails or prints on stderr a line not in `allowed`.
pub fn readelf_allowing(path: &Path, allowed: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(["-a", "-W"])
        .arg(path)
        .output()
        .expect("run readelf");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected = stderr.lines().any(|l| !allowed.contains(&l));
    assert!(
        out.status.success() && !unexpected,
        "readelf -a {}: {stderr}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
