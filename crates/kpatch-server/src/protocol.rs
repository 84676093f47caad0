//! The bytes on the socket.
//!
//! A request is LibcarePlus's: every argument followed by a NUL byte, and one more NUL at the
//! end (`info\0-p\0123\0\0` with `\0` a NUL byte); the reply is the command's text until the server closes the
//! connection. Our client also wants the command's exit status, which that protocol does not
//! carry, so it appends [`STATUS_REQUEST`] after the request. LibcarePlus's server reads
//! arguments only up to the first empty one and so ignores it; ours then ends the reply with
//! a NUL byte and the status in decimal (text output never contains NUL). Each side therefore
//! works with the other's counterpart, minus the status.

use std::io::Read;

use crate::error::{Error, Result};

/// The largest request accepted (LibcarePlus's client sends at most 16 KiB).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Appended by our client after the request to ask for the exit status.
pub const STATUS_REQUEST: &[u8] = b"libcare-status\0\0";

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub argv: Vec<String>,
    /// The client asked for the exit status at the end of the reply.
    pub wants_status: bool,
}

/// Encodes a command line as a request, with the status extension when `want_status`.
pub fn encode_request(args: &[String], want_status: bool) -> Result<Vec<u8>> {
    if args.is_empty() {
        return Err(Error::EmptyRequest);
    }
    let mut out = Vec::new();
    for a in args {
        // An empty argument would end the request early; a NUL would split it.
        if a.is_empty() || a.contains('\0') {
            return Err(Error::BadArgument(a.clone()));
        }
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out.push(0);
    if want_status {
        out.extend_from_slice(STATUS_REQUEST);
    }
    if out.len() > MAX_REQUEST {
        return Err(Error::TooLong {
            size: out.len(),
            max: MAX_REQUEST,
        });
    }
    Ok(out)
}

/// Parses a complete request: arguments up to the first empty one, then the optional status
/// extension (anything else after the arguments is ignored, as LibcarePlus does).
pub fn parse_request(bytes: &[u8]) -> Result<Request> {
    let mut argv = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            // Unterminated last argument: take it, LibcarePlus does too.
            if !rest.is_empty() {
                argv.push(String::from_utf8_lossy(rest).into_owned());
            }
            rest = &[];
            break;
        };
        let (arg, tail) = rest.split_at(end);
        rest = tail.get(1..).unwrap_or(&[]);
        if arg.is_empty() {
            break;
        }
        argv.push(String::from_utf8_lossy(arg).into_owned());
    }
    if argv.is_empty() {
        return Err(Error::EmptyRequest);
    }
    Ok(Request {
        argv,
        wants_status: rest.starts_with(STATUS_REQUEST),
    })
}

/// Reads one request: until the bytes received end with two NULs, as LibcarePlus's server
/// does. Returns None when the client goes away first.
pub fn read_request(r: &mut dyn Read) -> Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"\0\0") {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if buf.len() > MAX_REQUEST {
            return Err(Error::TooLong {
                size: buf.len(),
                max: MAX_REQUEST,
            });
        }
    }
    parse_request(&buf).map(Some)
}

/// The end of a reply to a client that asked for the status.
pub fn status_trailer(status: u8) -> Vec<u8> {
    format!("\0{status}").into_bytes()
}

/// Splits a reply, as it arrives, into the text to show and the trailing status.
#[derive(Debug, Default)]
pub struct Reply {
    in_trailer: bool,
    trailer: Vec<u8>,
}

impl Reply {
    /// Takes the next bytes received; returns the part that is command output.
    pub fn feed<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.in_trailer {
            self.trailer.extend_from_slice(bytes);
            return &[];
        }
        match bytes.iter().position(|&b| b == 0) {
            Some(i) => {
                self.in_trailer = true;
                self.trailer
                    .extend_from_slice(bytes.get(i + 1..).unwrap_or(&[]));
                bytes.get(..i).unwrap_or(&[])
            }
            None => bytes,
        }
    }

    /// The exit status the server sent, once the reply is complete; None if it sent none (a
    /// LibcarePlus server) or an unreadable one.
    pub fn status(&self) -> Option<u8> {
        if !self.in_trailer {
            return None;
        }
        std::str::from_utf8(&self.trailer).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_are_libcareplus_bytes() {
        assert_eq!(
            encode_request(&args(&["info", "-p", "12"]), false).unwrap(),
            b"info\x00-p\x0012\x00\x00"
        );
        let with = encode_request(&args(&["stop"]), true).unwrap();
        assert_eq!(with, b"stop\0\0libcare-status\0\0");
        assert!(encode_request(&args(&["run", ""]), false).is_err());
        assert!(encode_request(&args(&["a\0b"]), false).is_err());
        assert!(encode_request(&[], false).is_err());
        assert!(encode_request(&["x".repeat(MAX_REQUEST)], false).is_err());
    }

    #[test]
    fn parsing_stops_at_the_first_empty_argument() {
        let r = parse_request(b"patch\x00-p\x007\x00dir\x00\x00").unwrap();
        assert_eq!(r.argv, args(&["patch", "-p", "7", "dir"]));
        assert!(!r.wants_status);
        let r = parse_request(b"kill\0 9\0\0libcare-status\0\0").unwrap();
        assert_eq!(r.argv, args(&["kill", " 9"]));
        assert!(r.wants_status);
        // LibcarePlus's server ignores what follows the arguments; so do we.
        let r = parse_request(b"stop\0\0junk\0\0").unwrap();
        assert_eq!(r.argv, args(&["stop"]));
        assert!(!r.wants_status);
        assert!(parse_request(b"\0\0").is_err());
    }

    #[test]
    fn a_request_may_arrive_in_pieces() {
        struct Slow(Vec<u8>);
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0.remove(0);
                Ok(1)
            }
        }
        let r = read_request(&mut Slow(b"run\0sleep 1\0\0".to_vec()))
            .unwrap()
            .unwrap();
        assert_eq!(r.argv, args(&["run", "sleep 1"]));
        assert!(read_request(&mut Slow(b"run\0".to_vec()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn replies_split_text_from_status() {
        let mut r = Reply::default();
        assert_eq!(r.feed(b"line 1\nline"), b"line 1\nline");
        assert_eq!(r.status(), None);
        assert_eq!(r.feed(b" 2\n\x0025"), b" 2\n");
        assert_eq!(r.feed(b"5"), b"");
        assert_eq!(r.status(), Some(255));
        let mut r = Reply::default();
        r.feed(&status_trailer(0));
        assert_eq!(r.status(), Some(0));
    }
}
