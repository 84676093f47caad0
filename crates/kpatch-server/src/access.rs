//! Who may use the server. Every client's credentials (`SO_PEERCRED`, taken by the kernel
//! when it connected) are checked before its request is read: root, the server's own user,
//! and the members of one group named at start (as docker's socket serves the `docker`
//! group) are served; the server's own process control (`run`, `kill`, `stop`) is root's
//! alone. A path socket also gets the file mode that says the same (0600, or 0660 with the
//! group); an abstract socket has no file, so the credential check is all there is.

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, Result};

/// The credentials of a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    /// The client's command line, from `/proc` (its arguments separated by spaces), for the
    /// log of a refused client whose request is never read.
    pub fn command_line(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.join(" ")
    }

    /// `uid 1000 (alice)`.
    pub fn who(&self) -> String {
        match User::from_uid(Uid::from_raw(self.uid)) {
            Ok(Some(u)) => format!("uid {} ({})", self.uid, u.name),
            _ => format!("uid {}", self.uid),
        }
    }
}

/// The group given with `--group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedGroup {
    pub name: String,
    pub gid: u32,
    /// The group's members by name (`/etc/group`); a user whose primary group it is is a
    /// member too.
    members: Vec<String>,
}

/// The commands only root may send.
pub const ROOT_ONLY: [&str; 3] = ["run", "kill", "stop"];

/// Who is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The server's own (effective) user.
    owner: u32,
    group: Option<AllowedGroup>,
}

impl Access {
    /// Root and the server's own user, plus the members of `group` when given.
    pub fn new(group: Option<&str>) -> Result<Access> {
        let group = group
            .map(|name| match Group::from_name(name) {
                Ok(Some(g)) => Ok(AllowedGroup {
                    name: g.name,
                    gid: g.gid.as_raw(),
                    members: g.mem,
                }),
                Ok(None) => Err(Error::NoSuchGroup(name.to_owned())),
                Err(e) => Err(Error::Io(e.into())),
            })
            .transpose()?;
        Ok(Access {
            owner: Uid::effective().as_raw(),
            group,
        })
    }

    /// The group, when one is allowed.
    pub fn group(&self) -> Option<&AllowedGroup> {
        self.group.as_ref()
    }

    /// The mode of a path socket: read-write for the owner, and for the group when one is
    /// allowed.
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Whether a client may send requests; `Err` says why not.
    pub fn admit(&self, peer: &Peer) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.owner || self.in_group(peer) {
            return Ok(());
        }
        let mut allowed = "root".to_owned();
        if self.owner != 0 {
            allowed.push_str(&format!(", uid {}", self.owner));
        }
        if let Some(g) = &self.group {
            allowed.push_str(&format!(" and the members of group {}", g.name));
        }
        Err(format!(
            "permission denied: {} may not use this server (it serves {allowed})",
            peer.who()
        ))
    }

    /// Whether a client may send `command`; `Err` says why not.
    pub fn allow_command(&self, peer: &Peer, command: &str) -> Result<(), String> {
        if peer.uid != 0 && ROOT_ONLY.contains(&command) {
            return Err(format!(
                "permission denied: only root may send {command} ({} asked)",
                peer.who()
            ));
        }
        Ok(())
    }

    fn in_group(&self, peer: &Peer) -> bool {
        let Some(g) = &self.group else { return false };
        if peer.gid == g.gid {
            return true;
        }
        match User::from_uid(Uid::from_raw(peer.uid)) {
            Ok(Some(u)) => u.gid == Gid::from_raw(g.gid) || g.members.contains(&u.name),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { pid: 1, uid, gid }
    }

    #[test]
    fn root_and_the_owner_are_served_others_refused() {
        let a = Access {
            owner: 1000,
            group: None,
        };
        assert!(a.admit(&peer(0, 0)).is_ok());
        assert!(a.admit(&peer(1000, 1000)).is_ok());
        let why = a.admit(&peer(65534, 65534)).unwrap_err();
        assert!(why.starts_with("permission denied: uid 65534"), "{why}");
        assert!(why.ends_with("(it serves root, uid 1000)"), "{why}");
        assert_eq!(a.socket_mode(), 0o600);
    }

    #[test]
    fn the_group_is_served_by_gid_or_membership() {
        let a = Access {
            owner: 0,
            group: Some(AllowedGroup {
                name: "patchers".into(),
                gid: 4242,
                members: vec!["nobody".into()],
            }),
        };
        assert!(
            a.admit(&peer(5000, 4242)).is_ok(),
            "primary gid of the client"
        );
        let nobody = User::from_name("nobody").unwrap().map(|u| u.uid.as_raw());
        if let Some(uid) = nobody {
            assert!(a.admit(&peer(uid, 1)).is_ok(), "listed member");
        }
        assert!(a.admit(&peer(5000, 5000)).is_err());
        assert_eq!(a.socket_mode(), 0o660);
    }

    #[test]
    fn process_control_is_roots() {
        let a = Access {
            owner: 1000,
            group: None,
        };
        for c in ROOT_ONLY {
            assert!(a.allow_command(&peer(0, 0), c).is_ok());
            assert!(a.allow_command(&peer(1000, 1000), c).is_err());
        }
        assert!(a.allow_command(&peer(1000, 1000), "patch").is_ok());
        assert!(Access::new(Some("no-such-group-libcare")).is_err());
    }
}
