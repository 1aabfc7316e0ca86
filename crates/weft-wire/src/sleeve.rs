//! The unencrypted sleeve UDP datagram: the sending peer's name, then frame records back to
//! back, each `srcName[6] || dstName[6] || len u16be || frame[len]`. Also the special frames
//! sleeve sends to itself: an all-zero Ethernet header marks a control frame, and one of 22
//! bytes (14 zero bytes + 8-byte big-endian connection uid) is the UDP heartbeat.
//!
//! Parsing is zero-copy and follows Weave Net's receive rules: records are read while at least
//! a record header remains, a record whose length runs past the end is an error, and so are
//! leftover bytes too short for a header; records before the error are still delivered.
//! Encryption (the encrypted datagram form) is not this module's business.

use crate::peer::{PeerName, PEER_NAME_LEN};

/// Offset of the first record after the sender name.
const SENDER_LEN: usize = PEER_NAME_LEN;
/// Record header: source name, destination name, `u16be` length.
pub const RECORD_HEADER_LEN: usize = 2 * PEER_NAME_LEN + 2;
/// Length of the all-zero fake Ethernet header of a special frame.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of a heartbeat frame: zero Ethernet header + `u64be` connection uid.
pub const HEARTBEAT_FRAME_LEN: usize = ETH_HEADER_LEN + 8;
/// Length of a whole heartbeat datagram.
pub const HEARTBEAT_DATAGRAM_LEN: usize = SENDER_LEN + RECORD_HEADER_LEN + HEARTBEAT_FRAME_LEN;

/// Why a datagram or record is malformed; the record messages are Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SleeveError {
    /// A datagram too short to hold a sender name.
    #[error("datagram of {0} bytes is too short for a sender name")]
    TooShort(usize),
    /// A record whose length runs past the datagram's end.
    #[error("too short; expected frame of length {expected}, got {got}")]
    FrameTooShort {
        /// The record's announced length.
        expected: usize,
        /// The bytes actually left.
        got: usize,
    },
    /// Bytes after the last record, too few for a record header.
    #[error("{0} octets of trailing garbage")]
    TrailingGarbage(usize),
    /// A frame too long for the 16-bit record length.
    #[error("frame of {0} bytes does not fit a sleeve record")]
    FrameTooLong(usize),
}

/// One frame record of a datagram, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The peer whose bridge captured the frame.
    pub src: PeerName,
    /// The final destination peer (the next hop for broadcasts).
    pub dst: PeerName,
    /// The Ethernet frame (or special frame).
    pub data: &'a [u8],
}

/// Iterator over a datagram's frame records; after an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    rest: &'a [u8],
}

fn name(b: &[u8; PEER_NAME_LEN]) -> PeerName {
    PeerName(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<Frame<'a>, SleeveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((header, body)) = self.rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            let n = self.rest.len();
            self.rest = &[];
            return Some(Err(SleeveError::TrailingGarbage(n)));
        };
        let (src, tail) = header.split_first_chunk::<PEER_NAME_LEN>()?;
        let (dst, len) = tail.split_first_chunk::<PEER_NAME_LEN>()?;
        let len: [u8; 2] = (*len).try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(len));
        let Some((data, rest)) = body.split_at_checked(len) else {
            self.rest = &[];
            return Some(Err(SleeveError::FrameTooShort {
                expected: len,
                got: body.len(),
            }));
        };
        self.rest = rest;
        Some(Ok(Frame {
            src: name(src),
            dst: name(dst),
            data,
        }))
    }
}

/// Splits a datagram into its sender's name and an iterator over its frame records.
pub fn parse(datagram: &[u8]) -> Result<(PeerName, FrameIter<'_>), SleeveError> {
    let (sender, rest) = datagram
        .split_first_chunk::<SENDER_LEN>()
        .ok_or(SleeveError::TooShort(datagram.len()))?;
    Ok((name(sender), FrameIter { rest }))
}

/// Appends one frame record to a datagram under construction (start it with the sender's
/// [`PeerName::to_bytes`]).
pub fn encode_frame(
    src: PeerName,
    dst: PeerName,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SleeveError> {
    let len = u16::try_from(frame.len()).map_err(|_| SleeveError::FrameTooLong(frame.len()))?;
    out.extend_from_slice(&src.to_bytes());
    out.extend_from_slice(&dst.to_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    Ok(())
}

/// The 42-byte heartbeat datagram `sender` sends on the connection `src -> dst` with the
/// connection's (XORed) uid.
pub fn encode_heartbeat(
    sender: PeerName,
    src: PeerName,
    dst: PeerName,
    conn_uid: u64,
) -> [u8; HEARTBEAT_DATAGRAM_LEN] {
    // Offsets within the datagram: sender, record header (src, dst, len), frame (zero
    // Ethernet header, then the uid). All constant, within the fixed-size array.
    const SRC: usize = SENDER_LEN;
    const DST: usize = SRC + PEER_NAME_LEN;
    const LEN: usize = DST + PEER_NAME_LEN;
    const UID: usize = LEN + 2 + ETH_HEADER_LEN;
    let mut d = [0u8; HEARTBEAT_DATAGRAM_LEN];
    d[..SRC].copy_from_slice(&sender.to_bytes());
    d[SRC..DST].copy_from_slice(&src.to_bytes());
    d[DST..LEN].copy_from_slice(&dst.to_bytes());
    d[LEN..LEN + 2].copy_from_slice(&(HEARTBEAT_FRAME_LEN as u16).to_be_bytes());
    d[UID..].copy_from_slice(&conn_uid.to_be_bytes());
    d
}

/// Whether a frame is special (control): its Ethernet header is all zeros.
pub fn is_special(frame_data: &[u8]) -> bool {
    frame_data
        .get(..ETH_HEADER_LEN)
        .is_some_and(|h| h.iter().all(|&b| b == 0))
}

/// The connection uid carried by a heartbeat frame; `None` if the frame is not one.
pub fn heartbeat_uid(frame_data: &[u8]) -> Option<u64> {
    if frame_data.len() != HEARTBEAT_FRAME_LEN || !is_special(frame_data) {
        return None;
    }
    let (_, uid) = frame_data.split_last_chunk::<8>()?;
    Some(u64::from_be_bytes(*uid))
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: PeerName = PeerName(0xaabb_ccdd_ee01);
    const B: PeerName = PeerName(0xaabb_ccdd_ee02);

    #[test]
    fn heartbeat_layout() {
        let d = encode_heartbeat(A, A, B, 0x0102_0304_0506_0708);
        let mut want = vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
        want.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
        want.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02]);
        want.extend_from_slice(&[0x00, 0x16]);
        want.extend_from_slice(&[0; 14]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(d.to_vec(), want);
        let (sender, mut frames) = parse(&d).unwrap();
        assert_eq!(sender, A);
        let f = frames.next().unwrap().unwrap();
        assert_eq!((f.src, f.dst), (A, B));
        assert_eq!(heartbeat_uid(f.data), Some(0x0102_0304_0506_0708));
        assert!(frames.next().is_none());
    }

    #[test]
    fn special_frames() {
        assert_eq!(heartbeat_uid(&[0; 21]), None);
        assert_eq!(heartbeat_uid(&[0; 23]), None);
        let mut not_special = [0u8; 22];
        not_special[13] = 1;
        assert_eq!(heartbeat_uid(&not_special), None);
        assert!(is_special(&[0; 60001]));
        assert!(!is_special(&[0; 13]));
    }

    #[test]
    fn receive_rules() {
        assert_eq!(parse(&[1, 2, 3]).unwrap_err(), SleeveError::TooShort(3));
        let (_, mut none) = parse(&[0; 6]).unwrap();
        assert!(none.next().is_none());
        let mut d = A.to_bytes().to_vec();
        encode_frame(A, B, &[9, 9, 9], &mut d).unwrap();
        let good = d.len();
        // A truncated second record: its frames before the error are delivered.
        encode_frame(B, A, &[7; 10], &mut d).unwrap();
        d.truncate(d.len() - 4);
        let (_, frames) = parse(&d).unwrap();
        let got: Vec<_> = frames.collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Ok(Frame {
                src: A,
                dst: B,
                data: &[9, 9, 9]
            })
        );
        assert_eq!(
            got[1].clone().unwrap_err().to_string(),
            "too short; expected frame of length 10, got 6"
        );
        // Trailing garbage.
        d.truncate(good + 5);
        let (_, frames) = parse(&d).unwrap();
        let got: Vec<_> = frames.collect();
        assert_eq!(got[1], Err(SleeveError::TrailingGarbage(5)));
        assert_eq!(
            got[1].clone().unwrap_err().to_string(),
            "5 octets of trailing garbage"
        );
        assert!(encode_frame(A, B, &vec![0; 65536], &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in prop::collection::vec(
            (
                0u64..=0xffff_ffff_ffff,
                0u64..=0xffff_ffff_ffff,
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..5,
        )) {
            let mut d = B.to_bytes().to_vec();
            for (s, t, data) in &frames {
                encode_frame(PeerName(*s), PeerName(*t), data, &mut d).unwrap();
            }
            let (sender, iter) = parse(&d).unwrap();
            prop_assert_eq!(sender, B);
            let got: Vec<_> = iter.collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got.len(), frames.len());
            for (g, (s, t, data)) in got.iter().zip(&frames) {
                prop_assert_eq!((g.src.0, g.dst.0, g.data), (*s, *t, &data[..]));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok((_, frames)) = parse(&bytes) {
                let mut total = 0;
                for f in frames {
                    match f {
                        Ok(f) => {
                            total += RECORD_HEADER_LEN + f.data.len();
                            let _ = heartbeat_uid(f.data);
                        }
                        Err(_) => break,
                    }
                }
                prop_assert!(total + SENDER_LEN <= bytes.len());
            }
        }
    }
}
