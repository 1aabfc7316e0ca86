//! A connection's session after the intro: the one place that turns message bodies into bytes
//! on the TCP stream and back, in both directions.
//!
//! That is protocol V2's length prefix and, with a password, NaCl secretbox between the prefix
//! and the body, sealed and opened with the session key the handshake agreed and Weave Net's
//! per-direction nonces ([`weft_crypto::tcp`]). This is why the handshake yields the session
//! ([`crate::handshake::Handshake::into_session`]) and why the two directions are separate
//! values: each side of a connection's I/O (the reader and the writer) owns its half and its
//! nonce state, and the mesh only ever sees plain bodies. The length prefix counts the sealed
//! body (tag included), and the size limit applies to it, as in Weave Net.
//!
//! The receive half buffers at most one frame: a length prefix over the limit is refused
//! before its body is read, so a peer cannot make us hold more than the limit. Sealing and
//! opening happen in place in the send and receive buffers.

use weft_crypto::tcp::{self, DecryptError, TcpOpener, TcpSealer};
use weft_wire::frame::{self, FrameError, LEN_PREFIX, MAX_FRAME_LEN};

/// A session's framing failed; the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A frame over the size limit, in Weave Net's words.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A sealed body did not open with the next nonce (wrong key, tampering, replay, loss).
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}

/// The sending half: frames (and, with encryption, seals) message bodies.
#[derive(Debug, Default)]
pub struct SessionTx {
    sealer: Option<TcpSealer>,
}

impl SessionTx {
    /// The sending half of an encrypted session (the handshake builds it; see
    /// [`crate::handshake::Handshake::with_password`]).
    pub fn encrypted(sealer: TcpSealer) -> Self {
        Self {
            sealer: Some(sealer),
        }
    }

    /// Whether bodies are sealed.
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Appends the wire form of one message body to `out`.
    pub fn seal(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        let Some(sealer) = &mut self.sealer else {
            out.reserve(LEN_PREFIX + body.len());
            frame::encode(body, out)?;
            return Ok(());
        };
        seal_frame(sealer, body, out)?;
        Ok(())
    }
}

/// Appends `body` sealed by `sealer` behind its length prefix to `out`: prefix, tag slot, body,
/// then sealing in place. Shared with the handshake, whose features frame is the first one.
pub(crate) fn seal_frame(
    sealer: &mut TcpSealer,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let sealed_len = body.len() + tcp::OVERHEAD;
    if sealed_len > MAX_FRAME_LEN {
        return Err(FrameError::OutgoingTooLarge(sealed_len));
    }
    out.reserve(LEN_PREFIX + sealed_len);
    // Lossless: below MAX_FRAME_LEN.
    out.extend_from_slice(&(sealed_len as u32).to_be_bytes());
    let start = out.len();
    out.resize(start + tcp::OVERHEAD, 0);
    out.extend_from_slice(body);
    sealer.seal_in_place(&mut out[start..]);
    Ok(())
}

/// The receiving half: cuts the byte stream into message bodies (opening them, with
/// encryption).
#[derive(Debug)]
pub struct SessionRx {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    used: usize,
    opener: Option<TcpOpener>,
}

impl SessionRx {
    /// Starts from the bytes that followed the intro in the same reads.
    pub fn new(leftover: Vec<u8>) -> Self {
        Self {
            buf: leftover,
            used: 0,
            opener: None,
        }
    }

    /// The receiving half of an encrypted session (the handshake builds it).
    pub fn encrypted(leftover: Vec<u8>, opener: TcpOpener) -> Self {
        Self {
            opener: Some(opener),
            ..Self::new(leftover)
        }
    }

    /// Whether bodies are sealed.
    pub fn is_encrypted(&self) -> bool {
        self.opener.is_some()
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
    /// as a length prefix announces more than [`frame::MAX_FRAME_LEN`] or (encrypted) a body
    /// does not open; after an error the connection must close.
    pub fn poll_body(&mut self) -> Result<Option<&[u8]>, SessionError> {
        let Some((body, n)) = frame::parse(&self.buf[self.used..])? else {
            return Ok(None);
        };
        let start = self.used + LEN_PREFIX;
        let end = start + body.len();
        let Some(opener) = &mut self.opener else {
            self.used += n;
            return Ok(self.buf.get(start..end));
        };
        let plain = opener.open_in_place(&mut self.buf[start..end])?.len();
        self.used += n;
        Ok(self.buf.get(end - plain..end))
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

    fn encrypted_pair() -> (SessionTx, SessionRx) {
        let key = weft_crypto::SessionKey::from_bytes([4; 32]);
        (
            SessionTx::encrypted(TcpSealer::new(key.clone(), true)),
            SessionRx::encrypted(Vec::new(), TcpOpener::new(key, false)),
        )
    }

    #[test]
    fn sealed_size_limit_counts_the_tag() {
        let (mut tx, _) = encrypted_pair();
        let mut out = Vec::new();
        assert_eq!(
            tx.seal(&vec![0; MAX_FRAME_LEN - 15], &mut out)
                .unwrap_err()
                .to_string(),
            "outgoing message exceeds maximum size: 10485761 > 10485760"
        );
        assert!(out.is_empty());
        tx.seal(&vec![0; MAX_FRAME_LEN - 16], &mut out).unwrap();
        assert_eq!(out.len(), LEN_PREFIX + MAX_FRAME_LEN);
    }

    proptest! {
        /// Sealed frames, cut anywhere, open in order; a single flipped bit in a body or a
        /// shortened body (its prefix fixed up, as an attacker would) is refused.
        #[test]
        fn sealed_frames_round_trip_and_tampering_is_refused(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
            cut in 1usize..17,
            bit in any::<usize>(),
            shorten in 1usize..17,
        ) {
            let (mut tx, mut rx) = encrypted_pair();
            let mut wire = Vec::new();
            for b in &bodies {
                tx.seal(b, &mut wire).unwrap();
            }
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                rx.push(chunk);
                while let Some(b) = rx.poll_body().unwrap() {
                    got.push(b.to_vec());
                }
            }
            prop_assert_eq!(&got, &bodies);

            let (mut tx, mut rx) = encrypted_pair();
            let mut one = Vec::new();
            tx.seal(&bodies[0], &mut one).unwrap();
            let mut flipped = one.clone();
            let bit = LEN_PREFIX * 8 + bit % ((one.len() - LEN_PREFIX) * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            rx.push(&flipped);
            prop_assert_eq!(rx.poll_body(), Err(SessionError::Decrypt(DecryptError)));

            let (_, mut rx) = encrypted_pair();
            let keep = (one.len() - LEN_PREFIX).saturating_sub(shorten);
            let mut short = (keep as u32).to_be_bytes().to_vec();
            short.extend_from_slice(&one[LEN_PREFIX..LEN_PREFIX + keep]);
            rx.push(&short);
            prop_assert_eq!(rx.poll_body(), Err(SessionError::Decrypt(DecryptError)));
        }

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
