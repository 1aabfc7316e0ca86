//! The handshake features map: frame #0 of a V2 connection, a gob `map[string]string` written
//! by a fresh encoder (so it always carries the map's type definition) and read by a fresh
//! decoder. Which keys are required and what they mean is the handshake's business; this module
//! only moves the map. Go's map order is random, so the decoder does not rely on it.
//!
//! The frame comes from a peer not yet authenticated, so the decoder accepts only what Go's
//! encoder writes: at most [`MAX_TYPES`] definitions, and a value whose type is checked to be
//! `map[string]string` before it is read (the gob mapping's [`MapOf`]). Frames before the
//! handshake completes are capped at
//! [`MAX_HANDSHAKE_FRAME_LEN`](crate::frame::MAX_HANDSHAKE_FRAME_LEN).

use std::collections::BTreeMap;

use crate::error::DecodeError;
use crate::gob::mapping::{self, MapOf, Str};
use crate::gob::Encoder;

const CONTEXT: &str = "features";

/// Most type definitions a features frame may carry (Go's has exactly one, the map's).
pub const MAX_TYPES: usize = 1;

/// Go's `map[string]string`; a key sent twice is an error.
type FeaturesMap = MapOf<Str, Str>;

/// The gob bytes of `map` (in key order; Go's order is random and irrelevant).
pub fn encode(map: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    // Cannot fail: the mapping builds the value from its own type.
    if mapping::encode::<FeaturesMap, _>(&mut Encoder::new(), map, &mut out).is_err() {
        out.clear();
    }
    out
}

/// The features map from a frame body: exactly one gob `map[string]string` value (after its
/// type definition), nothing after it, no duplicate keys.
pub fn decode(b: &[u8]) -> Result<BTreeMap<String, String>, DecodeError> {
    mapping::decode_one::<FeaturesMap, _>(b, MAX_TYPES, CONTEXT)
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn empty_map_matches_go() {
        let want = [
            0x0e, 0xff, 0x81, 0x04, 0x01, 0x02, 0xff, 0x82, 0x00, 0x01, 0x0c, 0x01, 0x0c, 0x00,
            0x00, 0x04, 0xff, 0x82, 0x00, 0x00,
        ];
        assert_eq!(encode(&BTreeMap::new()), want);
        assert_eq!(decode(&want), Ok(BTreeMap::new()));
    }

    #[test]
    fn rejects_wrong_shapes() {
        // A bare gob string.
        assert!(matches!(
            decode(b"\x0b\x0c\x00\x08topology"),
            Err(DecodeError::UnexpectedType { .. })
        ));
        // Nothing at all.
        assert!(matches!(decode(&[]), Err(DecodeError::Missing { .. })));
        // Two maps.
        let one = encode(&BTreeMap::from([("a".to_string(), "b".to_string())]));
        let mut two = one.clone();
        two.extend_from_slice(&[0x04, 0xff, 0x82, 0x00, 0x00]);
        assert!(matches!(
            decode(&two),
            Err(DecodeError::TrailingBytes { .. })
        ));
        // Duplicate keys.
        let mut dup = one[..15].to_vec();
        dup.extend_from_slice(&[
            0x0c, 0xff, 0x82, 0x00, 0x02, 1, b'a', 1, b'b', 1, b'a', 1, b'c',
        ]);
        assert!(matches!(
            decode(&dup),
            Err(DecodeError::DuplicateKey { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(map in prop::collection::btree_map("\\PC{0,8}", "\\PC{0,12}", 0..8)) {
            prop_assert_eq!(decode(&encode(&map)), Ok(map));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
            let mut with_def = encode(&BTreeMap::new())[..15].to_vec();
            with_def.extend_from_slice(&bytes);
            let _ = decode(&with_def);
        }
    }
}
