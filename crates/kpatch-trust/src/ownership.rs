//! Files another user could have written, found as sshd's `StrictModes` finds them: a file,
//! or any directory above it, owned by someone other than root and the trusting user, or
//! writable by its group or by everyone. A world-writable directory with the sticky bit
//! (`/tmp`) is accepted above the file: there only an entry's owner can rename or remove it,
//! and that owner is checked at the next step down.
//!
//! Both the path as given and the path its symbolic links lead to are checked: whoever can
//! change a link can change what it leads to.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const GROUP_WRITE: u32 = 0o020;
const WORLD_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// Checks that only root and `uid` could have written `path` or the directories it is in;
/// otherwise says which path and why.
pub fn check(path: &Path, uid: u32) -> Result<(), (PathBuf, String)> {
    let given = std::path::absolute(path).map_err(|e| (path.to_owned(), e.to_string()))?;
    check_chain(&given, uid)?;
    let real = std::fs::canonicalize(path)
        .map_err(|e| (path.to_owned(), format!("cannot be resolved: {e}")))?;
    if real != given {
        check_chain(&real, uid)?;
    }
    Ok(())
}

fn check_chain(path: &Path, uid: u32) -> Result<(), (PathBuf, String)> {
    for (i, step) in path.ancestors().enumerate() {
        let meta = std::fs::symlink_metadata(step)
            .map_err(|e| (step.to_owned(), format!("cannot be examined: {e}")))?;
        let owner = meta.uid();
        if owner != 0 && owner != uid {
            return Err((step.to_owned(), format!("is owned by {}", user(owner))));
        }
        // A link's own mode means nothing; where it leads is checked separately.
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode();
        let writable = mode & (GROUP_WRITE | WORLD_WRITE);
        let sticky_parent = i > 0 && meta.is_dir() && mode & STICKY != 0;
        if writable != 0 && !(sticky_parent && owner == 0) {
            let who = match writable {
                GROUP_WRITE => "its group",
                WORLD_WRITE => "everyone",
                _ => "its group and everyone",
            };
            return Err((
                step.to_owned(),
                format!("is writable by {who} (mode {:04o})", mode & 0o7777),
            ));
        }
    }
    Ok(())
}

/// `uid 1000 (alice)`.
fn user(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn group_or_world_writable_files_and_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o755);
        let file = sub.join("p.kpatch");
        std::fs::write(&file, b"x").unwrap();
        chmod(&file, 0o644);
        check(&file, me()).unwrap();

        chmod(&file, 0o664);
        let (at, why) = check(&file, me()).unwrap_err();
        assert_eq!(at, file);
        assert_eq!(why, "is writable by its group (mode 0664)");
        chmod(&file, 0o646);
        assert!(check(&file, me()).unwrap_err().1.contains("everyone"));
        chmod(&file, 0o644);

        chmod(&sub, 0o775);
        assert_eq!(check(&file, me()).unwrap_err().0, sub);
        // A sticky world-writable directory is fine above the file, not as the file's own.
        chmod(&sub, 0o1777);
        if me() == 0 {
            check(&file, me()).unwrap();
        }
        assert!(check(&sub, me()).is_err());
    }

    #[test]
    fn a_link_is_checked_where_it_leads() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let target = open.join("p.kpatch");
        std::fs::write(&target, b"x").unwrap();
        chmod(&target, 0o644);
        let link = dir.path().join("link.kpatch");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (at, _) = check(&link, me()).unwrap_err();
        assert_eq!(at, std::fs::canonicalize(&open).unwrap());
    }

    #[test]
    fn files_of_other_users_are_refused() {
        if me() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.kpatch");
        std::fs::write(&file, b"x").unwrap();
        nix::unistd::chown(&file, Some(65534.into()), None).unwrap();
        let (at, why) = check(&file, 0).unwrap_err();
        assert_eq!(at, file);
        assert!(why.starts_with("is owned by uid 65534"), "{why}");
    }
}
