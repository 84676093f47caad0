//! Patch storages laid out as `libcare-ctl` and `libcare-server` read them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Puts `kpatch` into `storage` as `<bid>.kpatch`.
pub fn put_flat(storage: &Path, bid: &str, kpatch: &Path) {
    std::fs::create_dir_all(storage).expect("create storage");
    std::fs::copy(kpatch, storage.join(format!("{bid}.kpatch"))).expect("copy patch");
}

/// Puts `kpatch` into `storage` as `<bid>/<level>/kpatch.bin`.
pub fn put_level(storage: &Path, bid: &str, level: u32, kpatch: &Path) {
    let dir = storage.join(bid).join(level.to_string());
    std::fs::create_dir_all(&dir).expect("create level directory");
    std::fs::copy(kpatch, dir.join("kpatch.bin")).expect("copy patch");
}

/// Points `<bid>/latest` at `level`, as LibcarePlus's test suite does (`ln -fs LEVEL latest`).
pub fn set_latest(storage: &Path, bid: &str, level: u32) {
    let link = storage.join(bid).join("latest");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(level.to_string(), &link).expect("create latest link");
}

/// Writes an executable shell script `storage/name`.
pub fn put_script(storage: &Path, name: &str, body: &str) -> PathBuf {
    let path = storage.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}
