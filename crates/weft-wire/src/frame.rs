//! Protocol V2 framing of the mesh TCP stream after the intro: each message is a big-endian
//! `u32` length followed by that many body bytes (sealed with secretbox when a password is
//! set — this module does not care). Bodies are limited to 10 MiB in both directions, with
//! Weave Net's error texts. Before the handshake completes a reader should apply the much lower
//! [`MAX_HANDSHAKE_FRAME_LEN`] with [`parse_limited`]: the only frame then is the features
//! map of a peer not yet authenticated.

/// Largest body allowed in either direction (Weave Net's `maxTCPMsgSize`).
pub const MAX_FRAME_LEN: usize = 10 * 1024 * 1024;
/// Largest body accepted before the handshake completes (the features frame, about 200 bytes
/// from Weave Net). Weave Net applies no such limit; a peer that needs more is not one.
pub const MAX_HANDSHAKE_FRAME_LEN: usize = 64 * 1024;
/// Length of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// A frame over the size limit; the messages are Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// We were asked to send too much.
    #[error("outgoing message exceeds maximum size: {0} > {MAX_FRAME_LEN}")]
    OutgoingTooLarge(usize),
    /// The peer announced too much.
    #[error("incoming message exceeds maximum size: {0} > {MAX_FRAME_LEN}")]
    IncomingTooLarge(u32),
    /// The peer announced more than the limit a reader applied with [`parse_limited`]
    /// (below [`MAX_FRAME_LEN`], e.g. [`MAX_HANDSHAKE_FRAME_LEN`]).
    #[error("incoming message exceeds maximum size: {len} > {limit}")]
    IncomingOverLimit {
        /// The announced body length.
        len: u32,
        /// The limit in force.
        limit: usize,
    },
}

/// Appends `body` with its length prefix to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::OutgoingTooLarge(body.len()));
    }
    // Lossless: MAX_FRAME_LEN < u32::MAX.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Looks for one whole frame at the start of `buf`. Returns the body and the number of bytes
/// the frame occupies, `Ok(None)` if more bytes are needed, or an error as soon as the length
/// prefix announces an oversized body (so a caller never buffers one).
pub fn parse(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    parse_limited(buf, MAX_FRAME_LEN)
}

/// [`parse`] with bodies limited to `max_len` bytes (itself capped at [`MAX_FRAME_LEN`]): pass
/// [`MAX_HANDSHAKE_FRAME_LEN`] until the handshake completes, [`MAX_FRAME_LEN`] after.
pub fn parse_limited(buf: &[u8], max_len: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    let limit = max_len.min(MAX_FRAME_LEN);
    let body_len = match usize::try_from(len) {
        Ok(n) if n <= limit => n,
        _ if limit == MAX_FRAME_LEN => return Err(FrameError::IncomingTooLarge(len)),
        _ => return Err(FrameError::IncomingOverLimit { len, limit }),
    };
    Ok(rest
        .get(..body_len)
        .map(|body| (body, LEN_PREFIX + body_len)))
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn heartbeat_frame_matches_go() {
        let mut out = Vec::new();
        encode(&[0x00], &mut out).unwrap();
        assert_eq!(out, [0x00, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(parse(&out), Ok(Some((&[0x00][..], 5))));
    }

    #[test]
    fn partial_and_oversize() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[0, 0, 0]), Ok(None));
        assert_eq!(parse(&[0, 0, 0, 2, 9]), Ok(None));
        assert_eq!(parse(&[0, 0, 0, 0, 9]), Ok(Some((&[][..], 4))));
        let max = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(parse(&max), Ok(None));
        let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        let err = parse(&over).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incoming message exceeds maximum size: 10485761 > 10485760"
        );
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(
            encode(&big, &mut Vec::new()).unwrap_err().to_string(),
            "outgoing message exceeds maximum size: 10485761 > 10485760"
        );
    }

    #[test]
    fn handshake_limit() {
        let at = (MAX_HANDSHAKE_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(parse_limited(&at, MAX_HANDSHAKE_FRAME_LEN), Ok(None));
        let over = (MAX_HANDSHAKE_FRAME_LEN as u32 + 1).to_be_bytes();
        let err = parse_limited(&over, MAX_HANDSHAKE_FRAME_LEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incoming message exceeds maximum size: 65537 > 65536"
        );
        // The same prefix is fine once the handshake is done.
        assert_eq!(parse(&over), Ok(None));
        // A limit above the protocol's is the protocol's.
        let huge = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        assert_eq!(
            parse_limited(&huge, usize::MAX),
            Err(FrameError::IncomingTooLarge(MAX_FRAME_LEN as u32 + 1))
        );
        let mut whole = Vec::new();
        encode(&[7; 10], &mut whole).unwrap();
        assert_eq!(
            parse_limited(&whole, MAX_HANDSHAKE_FRAME_LEN),
            Ok(Some((&[7u8; 10][..], 14)))
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            body in prop::collection::vec(any::<u8>(), 0..300),
            tail in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut out = Vec::new();
            encode(&body, &mut out).unwrap();
            let n = out.len();
            out.extend_from_slice(&tail);
            prop_assert_eq!(parse(&out), Ok(Some((&body[..], n))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((body, used))) = parse(&bytes) {
                prop_assert_eq!(used, body.len() + LEN_PREFIX);
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
