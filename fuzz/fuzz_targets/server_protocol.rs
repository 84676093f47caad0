//! Arbitrary bytes on the control socket: as a request read by the server (whole, and
//! arriving in pieces), and as a reply read by the client. Errors are fine, panics are not;
//! a request made of what was parsed encodes and parses back to it.

#![no_main]

use std::io::Read;

use kpatch_server::protocol::{parse_request, read_request};
use kpatch_server::{encode_request, Reply};
use libfuzzer_sys::fuzz_target;

/// Hands out its bytes a few at a time, as a socket may.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        assert!(!req.argv.is_empty());
        if let Ok(bytes) = encode_request(&req.argv, req.wants_status) {
            let again = parse_request(&bytes).expect("an encoded request parses");
            assert_eq!(again, req);
        }
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let _ = read_request(&mut Pieces { data, step });

    let mut reply = Reply::default();
    let mut shown = 0;
    for chunk in data.chunks(step) {
        shown += reply.feed(chunk).len();
    }
    assert!(shown <= data.len());
    let _ = reply.status();
});
