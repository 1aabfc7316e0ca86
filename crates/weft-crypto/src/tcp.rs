//! Sealing and opening the control connection's frame bodies, with Weave Net's nonces.
//!
//! Each direction of a connection has its own nonce sequence under the shared session key:
//! byte 0 carries bit 7 when the *sender* dialled the connection and bit 6 always (so these
//! nonces never equal the sleeve's, which leave bit 6 clear), bytes 16..24 hold a big-endian
//! message count that starts at 0 with the features frame. There is no window: the receiver
//! accepts only the exact next nonce, and anything that does not open ends the connection.

use crate::key::SessionKey;
use crate::secretbox::{self, NONCE_LEN, TAG_LEN};

/// Bit 7 of nonce byte 0: the sender is the side that dialled.
const OUTBOUND_BIT: u8 = 1 << 7;
/// Bit 6 of nonce byte 0: a TCP (control connection) nonce.
const TCP_BIT: u8 = 1 << 6;

/// A sealed frame body that does not open with the next expected nonce; Weave Net's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Unable to decrypt TCP msg")]
pub struct DecryptError;

/// One direction's nonce: the sender's polarity and its message count.
#[derive(Clone, PartialEq, Eq)]
pub struct TcpNonce {
    nonce: [u8; NONCE_LEN],
    seq: u64,
}

impl TcpNonce {
    /// The first nonce of a direction whose sender dialled the connection (`outbound`) or
    /// accepted it.
    pub fn new(sender_outbound: bool) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = TCP_BIT | if sender_outbound { OUTBOUND_BIT } else { 0 };
        Self { nonce, seq: 0 }
    }

    /// The nonce for the next message.
    pub fn current(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// Moves on to the next message's nonce. The count wraps like Go's `uint64` (after 2^64
    /// messages, which no connection reaches).
    pub fn advance(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.nonce[16..].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Messages this direction has carried so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl std::fmt::Debug for TcpNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpNonce")
            .field("byte0", &self.nonce[0])
            .field("seq", &self.seq)
            .finish()
    }
}

/// The sending direction of an encrypted control connection.
#[derive(Debug, Clone)]
pub struct TcpSealer {
    key: SessionKey,
    nonce: TcpNonce,
}

impl TcpSealer {
    /// The sender for our side, which dialled the connection when `outbound`.
    pub fn new(key: SessionKey, outbound: bool) -> Self {
        Self {
            key,
            nonce: TcpNonce::new(outbound),
        }
    }

    /// Seals one body in place: `buf[..TAG_LEN]` is the tag's slot, `buf[TAG_LEN..]` the body.
    /// The result is the wire form of the body, `secretbox.Seal`'s layout.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) {
        if secretbox::seal(&self.key, self.nonce.current(), buf) {
            self.nonce.advance();
        } else {
            debug_assert!(false, "no room for the tag");
        }
    }

    /// The nonce state (for tests and status).
    pub fn nonce(&self) -> &TcpNonce {
        &self.nonce
    }
}

/// The receiving direction of an encrypted control connection.
#[derive(Debug, Clone)]
pub struct TcpOpener {
    key: SessionKey,
    nonce: TcpNonce,
}

impl TcpOpener {
    /// The receiver for our side, which dialled the connection when `outbound` (so the remote,
    /// the sender here, did not).
    pub fn new(key: SessionKey, outbound: bool) -> Self {
        Self {
            key,
            nonce: TcpNonce::new(!outbound),
        }
    }

    /// Opens one sealed body in place and returns the plaintext (`buf[TAG_LEN..]`). On failure
    /// neither `buf` nor the expected nonce changes.
    pub fn open_in_place<'a>(&mut self, buf: &'a mut [u8]) -> Result<&'a mut [u8], DecryptError> {
        let plain =
            secretbox::open(&self.key, self.nonce.current(), buf).map_err(|_| DecryptError)?;
        self.nonce.advance();
        Ok(plain)
    }

    /// The nonce state (for tests and status).
    pub fn nonce(&self) -> &TcpNonce {
        &self.nonce
    }
}

/// Bytes a sealed body adds to the plain one.
pub const OVERHEAD: usize = TAG_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex24(s: &str) -> [u8; 24] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// The nonce vectors of the spec (`gob-test-vectors.txt`, dumped from Weave Net's mesh).
    #[test]
    fn nonces_match_the_spec_vectors() {
        let mut out = TcpNonce::new(true);
        assert_eq!(
            out.current(),
            &hex24("c00000000000000000000000000000000000000000000000")
        );
        out.advance();
        assert_eq!(
            out.current(),
            &hex24("c00000000000000000000000000000000000000000000001")
        );
        assert_eq!(
            TcpNonce::new(false).current(),
            &hex24("400000000000000000000000000000000000000000000000")
        );
        let mut n = TcpNonce::new(false);
        for _ in 0..0x0102 {
            n.advance();
        }
        assert_eq!(
            n.current(),
            &hex24("400000000000000000000000000000000000000000000102")
        );
    }

    #[test]
    fn the_two_ends_pair_up_and_refusals_change_nothing() {
        let key = SessionKey::from_bytes([7; 32]);
        // We dialled: our sealer is the remote's opener with the opposite `outbound`.
        let mut tx = TcpSealer::new(key.clone(), true);
        let mut rx = TcpOpener::new(key.clone(), false);
        for body in [&b"features"[..], b"", b"\x04gossip"] {
            let mut buf = vec![0u8; OVERHEAD];
            buf.extend_from_slice(body);
            tx.seal_in_place(&mut buf);
            let mut replay = buf.clone();
            assert_eq!(rx.open_in_place(&mut buf).unwrap(), body);
            // The same message again is out of sequence.
            let before = rx.nonce().clone();
            assert_eq!(rx.open_in_place(&mut replay), Err(DecryptError));
            assert_eq!(rx.nonce(), &before);
        }
        // Our own messages do not open as theirs (the polarity differs).
        let mut ours = TcpOpener::new(key, true);
        let mut buf = vec![0u8; OVERHEAD + 3];
        TcpSealer::new(SessionKey::from_bytes([7; 32]), true).seal_in_place(&mut buf);
        assert_eq!(ours.open_in_place(&mut buf), Err(DecryptError));
        assert_eq!(DecryptError.to_string(), "Unable to decrypt TCP msg");
    }
}
