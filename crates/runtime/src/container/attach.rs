//! Attaching to a container's own process (`run -it`, `start -ai`,
//! `attach`): its shim serves a unix socket, `attach.sock` in the state
//! directory, and relays between it and the process's stdio (see
//! [`crate::shim`]). Both ends speak frames: a kind byte, a little-endian
//! u32 length, the payload.
//!
//! Paths under a data root can be longer than a unix socket address
//! takes (108 bytes), so both ends name the socket through an open
//! directory: `/proc/self/fd/N/attach.sock`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::ContainerError;

pub const SOCKET_NAME: &str = "attach.sock";
/// Present in the state directory when the daemon will attach before the
/// process starts: the shim then waits for it (no output is missed).
pub const ATTACH_AT_START_FILE: &str = "attach-at-start";
/// Longest payload either end accepts.
const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// To the shim: bytes for the process's stdin.
    Stdin = 0,
    /// From the shim: the process's output (all of it, on a terminal).
    Stdout = 1,
    Stderr = 2,
    /// To the shim: rows then columns, two little-endian u16.
    Resize = 3,
    /// To the shim: no more stdin; the process reads end-of-file.
    CloseStdin = 4,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Resize,
            4 => FrameKind::CloseStdin,
            _ => return None,
        })
    }
}

pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(kind as u8);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn resize_frame(rows: u16, columns: u16) -> Vec<u8> {
    let mut payload = rows.to_le_bytes().to_vec();
    payload.extend_from_slice(&columns.to_le_bytes());
    frame(FrameKind::Resize, &payload)
}

/// (rows, columns) of a resize frame's payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let rows = u16::from_le_bytes(payload.get(0..2)?.try_into().ok()?);
    let columns = u16::from_le_bytes(payload.get(2..4)?.try_into().ok()?);
    Some((rows, columns))
}

/// Cuts a byte stream into frames.
#[derive(Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame; `Err` for a stream that is not frames (the
    /// connection should end).
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, String> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buffer[0]).ok_or_else(|| format!("unknown attach frame kind {}", self.buffer[0]))?;
        let len = u32::from_le_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("an attach frame of {len} bytes is over the limit"));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buffer[5..5 + len].to_vec();
        self.buffer.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// The socket's name through the open directory `dir`.
pub fn socket_via(dir: &std::fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd()))
}

/// Connects to the shim of the container whose state is in `state_dir`.
pub fn connect(state_dir: &Path) -> Result<tokio::net::UnixStream, ContainerError> {
    let dir = std::fs::File::open(state_dir).map_err(|e| ContainerError::io(format!("opening {}", state_dir.display()), e))?;
    let stream = std::os::unix::net::UnixStream::connect(socket_via(&dir))
        .map_err(|e| ContainerError::io("connecting to the container's shim to attach", e))?;
    stream.set_nonblocking(true).map_err(|e| ContainerError::io("attaching", e))?;
    tokio::net::UnixStream::from_std(stream).map_err(|e| ContainerError::io("attaching", e))
}

/// A connection to a running container's stdio.
pub struct Attachment {
    pub stream: tokio::net::UnixStream,
    /// Its process runs on a terminal: one output stream, resizes apply.
    pub tty: bool,
    /// Its stdin is open to writes.
    pub open_stdin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_being_cut_anywhere() {
        let mut stream = frame(FrameKind::Stdout, b"hello");
        stream.extend(resize_frame(40, 120));
        stream.extend(frame(FrameKind::CloseStdin, b""));
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for byte in stream {
            reader.push(&[byte]);
            while let Some(frame) = reader.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got[0], (FrameKind::Stdout, b"hello".to_vec()));
        assert_eq!(got[1].0, FrameKind::Resize);
        assert_eq!(parse_resize(&got[1].1), Some((40, 120)));
        assert_eq!(got[2], (FrameKind::CloseStdin, Vec::new()));
        let mut bad = FrameReader::default();
        bad.push(&[9, 0, 0, 0, 0]);
        assert!(bad.next_frame().is_err());
    }
}
