//! A connection's session after the intro: the one place that turns message bodies into bytes
//! on the TCP stream and back, in both directions.
//!
//! Today that is protocol V2's length prefix; with a password it will also seal and open each
//! body with the keys the handshake agreed (NaCl secretbox between the prefix and the body),
//! which is why the handshake yields the session ([`crate::handshake::Handshake::into_session`])
//! and why the two directions are separate values: each side of a connection's I/O (the
//! reader and the writer) owns its half and its nonce state, and the mesh only ever sees
//! plain bodies.
//!
//! The receive half buffers at most one frame: a length prefix over the limit is refused
//! before its body is read, so a peer cannot make us hold more than the limit.

use weft_wire::frame::{self, FrameError, LEN_PREFIX};

/// A session's framing failed; the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A frame over the size limit, in Weave Net's words.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The sending half: frames (and, with encryption, seals) message bodies.
#[derive(Debug, Default)]
pub struct SessionTx {
    _private: (),
}

impl SessionTx {
    /// Appends the wire form of one message body to `out`.
    pub fn seal(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        out.reserve(LEN_PREFIX + body.len());
        frame::encode(body, out)?;
        Ok(())
    }
}

/// The receiving half: cuts the byte stream into message bodies (opening them, with
/// encryption).
#[derive(Debug)]
pub struct SessionRx {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    used: usize,
}

impl SessionRx {
    /// Starts from the bytes that followed the intro in the same reads.
    pub fn new(leftover: Vec<u8>) -> Self {
        Self {
            buf: leftover,
            used: 0,
        }
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.used > 0 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message body, `Ok(None)` until more bytes are pushed, or an error as soon
    /// as a length prefix announces more than [`frame::MAX_FRAME_LEN`].
    pub fn poll_body(&mut self) -> Result<Option<&[u8]>, SessionError> {
        let Some((body, n)) = frame::parse(&self.buf[self.used..])? else {
            return Ok(None);
        };
        let start = self.used + LEN_PREFIX;
        self.used += n;
        Ok(self.buf.get(start..start + body.len()))
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.used
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use weft_wire::frame::MAX_FRAME_LEN;

    #[test]
    fn round_trip_in_pieces() {
        let mut tx = SessionTx::default();
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"", b"three"] {
            tx.seal(body, &mut wire).unwrap();
        }
        let mut rx = SessionRx::new(wire[..2].to_vec());
        assert_eq!(rx.poll_body().unwrap(), None);
        let mut got = Vec::new();
        for chunk in wire[2..].chunks(3) {
            rx.push(chunk);
            while let Some(b) = rx.poll_body().unwrap() {
                got.push(b.to_vec());
            }
        }
        assert_eq!(got, [b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(rx.buffered(), 0);
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body() {
        let mut rx = SessionRx::new(Vec::new());
        rx.push(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
        assert_eq!(
            rx.poll_body().unwrap_err().to_string(),
            "incoming message exceeds maximum size: 10485761 > 10485760"
        );
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_bodies(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            cut in 1usize..17,
        ) {
            let mut tx = SessionTx::default();
            let mut wire = Vec::new();
            for b in &bodies {
                tx.seal(b, &mut wire).unwrap();
            }
            let mut rx = SessionRx::new(Vec::new());
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                rx.push(chunk);
                while let Some(b) = rx.poll_body().unwrap() {
                    got.push(b.to_vec());
                }
            }
            prop_assert_eq!(got, bodies);
        }
    }
}
