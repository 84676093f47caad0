//! The socket protocol byte for byte, as LibcarePlus's `libcare-client` and its execve wrapper
//! speak it: NUL-terminated arguments and one more NUL, the reply being the text until the
//! server closes the connection (no status trailer unless asked for).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::server::*;
use crate::support::*;

/// Sends `request` in the given pieces and returns everything the server replies.
fn exchange(socket: &Path, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    for p in pieces {
        s.write_all(p).expect("send");
        s.flush().expect("flush");
    }
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read reply");
    reply
}

#[test]
fn libcareplus_client_requests_get_libcareplus_replies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_, bid) = build_target(dir, "greet", ORIGINAL);
    let kpatch = build_patch(dir, "greet", "level 1", "0001");
    let socket = dir.join("peer.sock");
    let mut server = Server::start(dir, socket.to_str().expect("utf-8"), dir);

    let reply = exchange(&socket, &[b"run\0exec ./greet p >p.out 2>&1\0\0"]);
    let pid = String::from_utf8(reply).expect("text");
    assert!(pid.ends_with('\n') && pid.len() > 1, "{pid:?}");
    let pid = pid.trim_end().to_owned();
    assert!(pid.bytes().all(|b| b.is_ascii_digit()), "{pid:?}");
    let mut out = OutFile::new(dir.join("p.out"));
    out.wait_line("p: original");

    // The request may arrive in several pieces; the reply carries no status.
    let patch = format!("patch-user\0-p\0{pid}\0{}\0\0", kpatch.display());
    let (a, b) = patch.as_bytes().split_at(7);
    let reply = String::from_utf8(exchange(&socket, &[a, b])).expect("text");
    assert!(!reply.contains('\0'), "{reply:?}");
    assert!(
        reply.ends_with(&format!(
            "1 patch hunk(s) have been successfully applied to PID '{pid}'\n"
        )),
        "{reply}"
    );
    out.wait_line("p: level 1");

    let reply = exchange(&socket, &[format!("info\0-p\0{pid}\0\0").as_bytes()]);
    let expected = format!(
        "{:<25} {pid}\n{:<25} greet\n{:<25} {bid}\n{:<25} 1\n{:<25} 0001\n\n",
        "Pid:", "Target:", "Build id:", "Applied patch number:", "Patch id:"
    );
    assert_eq!(String::from_utf8(reply).expect("text"), expected);

    // What follows the empty argument is ignored, as LibcarePlus does.
    let reply = exchange(&socket, &[format!("kill\0{pid}\0\0ignored\0\0").as_bytes()]);
    assert_eq!(reply, b"");

    // Our client's status request: the reply ends with NUL and the status.
    let reply = exchange(&socket, &[b"info\0-p\0999999\0\0libcare-status\0\0"]);
    assert!(
        reply.ends_with(b"\x00255"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    assert_eq!(exchange(&socket, &[b"stop\0\0"]), b"");
    assert!(server.wait_exit().success());
}

#[test]
fn sigterm_ends_the_server_with_128_plus_15() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let socket = dir.join("term.sock");
    let mut server = Server::start(dir, socket.to_str().expect("utf-8"), dir);
    server.run("exec sleep 1000");
    server.terminate();
    assert_eq!(server.wait_exit().code(), Some(143));
    assert!(!socket.exists());
}
