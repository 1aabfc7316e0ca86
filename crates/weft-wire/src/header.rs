//! The 7-byte protocol header each side writes first on a mesh TCP connection: the ASCII bytes
//! `weave` followed by the sender's minimum and maximum protocol versions, and the version
//! negotiation over two such ranges. Error texts are Weave Net's, since they end up in logs and
//! `weave status` output users compare.

use std::fmt;

/// The protocol name that opens every header.
pub const PROTOCOL_NAME: &[u8; 5] = b"weave";
/// Length of the header: name, minimum version, maximum version.
pub const HEADER_LEN: usize = 7;
/// Offset of the minimum version byte.
const MIN_OFFSET: usize = 5;
/// Offset of the maximum version byte.
const MAX_OFFSET: usize = 6;

/// Why a peer's header is unacceptable; the messages are Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header does not start with `weave`; carries the first five bytes received.
    #[error("remote protocol header not recognised: {}", GoBytes(.0))]
    NotRecognised([u8; 5]),
    /// The version ranges do not overlap.
    #[error(
        "remote version range [{their_min},{their_max}] is incompatible with ours \
         [{our_min},{our_max}]"
    )]
    Incompatible {
        /// Peer's minimum.
        their_min: u8,
        /// Peer's maximum.
        their_max: u8,
        /// Our minimum.
        our_min: u8,
        /// Our maximum.
        our_max: u8,
    },
}

/// Formats bytes the way Go's `%v` prints a byte slice: `[119 101 97]`.
struct GoBytes<'a>(&'a [u8]);

impl fmt::Display for GoBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b}")?;
        }
        f.write_str("]")
    }
}

/// The header announcing versions `min..=max`.
pub fn encode(min: u8, max: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MIN_OFFSET].copy_from_slice(PROTOCOL_NAME);
    h[MIN_OFFSET] = min;
    h[MAX_OFFSET] = max;
    h
}

/// The peer's `(min, max)` version range from its header.
pub fn decode(b: &[u8; HEADER_LEN]) -> Result<(u8, u8), HeaderError> {
    let [n0, n1, n2, n3, n4, min, max] = *b;
    let name = [n0, n1, n2, n3, n4];
    if &name != PROTOCOL_NAME {
        return Err(HeaderError::NotRecognised(name));
    }
    Ok((min, max))
}

/// The version to speak: the highest both sides support, i.e. `min(our max, their max)`,
/// provided it is at least both minimums.
pub fn negotiate(ours: (u8, u8), theirs: (u8, u8)) -> Result<u8, HeaderError> {
    let version = ours.1.min(theirs.1);
    if ours.0.max(theirs.0) > version {
        return Err(HeaderError::Incompatible {
            their_min: theirs.0,
            their_max: theirs.1,
            our_min: ours.0,
            our_max: ours.1,
        });
    }
    Ok(version)
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_header_bytes() {
        assert_eq!(encode(1, 2), [0x77, 0x65, 0x61, 0x76, 0x65, 0x01, 0x02]);
        assert_eq!(decode(&encode(1, 2)), Ok((1, 2)));
    }

    #[test]
    fn unrecognised_header_text_matches_go() {
        // A TLS ClientHello hitting the mesh port, as seen in a real Weave Net log.
        let err = decode(&[22, 3, 1, 1, 28, 1, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote protocol header not recognised: [22 3 1 1 28]"
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate((1, 2), (1, 2)), Ok(2));
        assert_eq!(negotiate((2, 2), (1, 2)), Ok(2));
        assert_eq!(negotiate((1, 2), (1, 1)), Ok(1));
        assert_eq!(negotiate((1, 3), (2, 2)), Ok(2));
        let err = negotiate((2, 2), (1, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote version range [1,1] is incompatible with ours [2,2]"
        );
        assert!(negotiate((1, 2), (3, 4)).is_err());
    }
}
