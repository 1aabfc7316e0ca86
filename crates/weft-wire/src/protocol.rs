//! Protocol message bodies exchanged after the intro (one per frame): `body[0]` is a tag and
//! the rest its payload. Gossip payloads carry their items as separate top-level gob values
//! from one fresh encoder — channel `string`, source `PeerName` as `uint`, (destination for
//! unicast), then the channel's own bytes as `[]byte` — which are all predefined gob types, so
//! no type definitions appear (the decoder accepts none). Decoding is strict: every item's type
//! is checked before the item is read (each is a [`mapping`] kind), and nothing may follow the
//! last one. Unknown tags decode to [`ProtocolMsg::Unknown`] so the caller can ignore them as
//! Weave Net does.

use crate::error::DecodeError;
use crate::gob::mapping::{self, Bytes, Kind, Str, Uint};
use crate::gob::{self, Decoder};
use crate::peer::PeerName;

/// Tag of a TCP heartbeat (empty payload).
pub const TAG_HEARTBEAT: u8 = 0x00;
/// Tag of sleeve's `ConnectionEstablished` (compat mode; empty payload).
pub const TAG_CONNECTION_ESTABLISHED: u8 = 0x01;
/// Tag of sleeve's `FragmentationReceived` (compat mode; empty payload).
pub const TAG_FRAGMENTATION_RECEIVED: u8 = 0x02;
/// Tag of sleeve's `PMTUVerified` (compat mode; `u16be` MTU payload).
pub const TAG_PMTU_VERIFIED: u8 = 0x03;
/// Tag of gossip to neighbours.
pub const TAG_GOSSIP: u8 = 0x04;
/// Tag of gossip addressed to one peer.
pub const TAG_GOSSIP_UNICAST: u8 = 0x05;
/// Tag of gossip broadcast along broadcast routes.
pub const TAG_GOSSIP_BROADCAST: u8 = 0x06;
/// Tag of overlay-switch control messages (`[forwarder index][sub-tag][msg…]`).
pub const TAG_OVERLAY_CONTROL: u8 = 0x07;

/// One protocol message, as carried in a frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolMsg {
    /// Tag 0: keeps the connection's read deadline alive.
    Heartbeat,
    /// Tag 1: the peer received our sleeve heartbeat (compat mode).
    ConnectionEstablished,
    /// Tag 2: the peer received our fragmentation test frame (compat mode).
    FragmentationReceived,
    /// Tag 3: the peer received a PMTU probe of this MTU (compat mode).
    PmtuVerified(u16),
    /// Tag 4: gossip for a channel, relayed to random neighbours.
    Gossip {
        /// Gossip channel name (`topology`, `IPallocation`, `nameserver`, …).
        channel: String,
        /// The peer that sent this hop.
        src: PeerName,
        /// The channel's payload (its own gob stream).
        payload: Vec<u8>,
    },
    /// Tag 5: gossip for one destination peer, relayed unchanged along unicast routes.
    GossipUnicast {
        /// Gossip channel name.
        channel: String,
        /// The originating peer.
        src: PeerName,
        /// The destination peer.
        dst: PeerName,
        /// The channel's payload.
        payload: Vec<u8>,
    },
    /// Tag 6: gossip broadcast along broadcast routes, keeping the original source.
    GossipBroadcast {
        /// Gossip channel name.
        channel: String,
        /// The originating peer.
        src: PeerName,
        /// The channel's payload.
        payload: Vec<u8>,
    },
    /// Tag 7: an overlay-switch control message, payload untouched.
    OverlayControl(Vec<u8>),
    /// Any other tag; its payload is dropped (Weave Net ignores such messages).
    Unknown(u8),
}

impl ProtocolMsg {
    /// Appends this message's frame body (tag and payload) to `out`. An `Unknown` message is
    /// written as its bare tag.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Heartbeat => out.push(TAG_HEARTBEAT),
            Self::ConnectionEstablished => out.push(TAG_CONNECTION_ESTABLISHED),
            Self::FragmentationReceived => out.push(TAG_FRAGMENTATION_RECEIVED),
            Self::PmtuVerified(mtu) => {
                out.push(TAG_PMTU_VERIFIED);
                out.extend_from_slice(&mtu.to_be_bytes());
            }
            Self::Gossip {
                channel,
                src,
                payload,
            } => {
                out.push(TAG_GOSSIP);
                gob::put_top_level_string(out, channel);
                gob::put_top_level_uint(out, src.0);
                gob::put_top_level_bytes(out, payload);
            }
            Self::GossipUnicast {
                channel,
                src,
                dst,
                payload,
            } => {
                out.push(TAG_GOSSIP_UNICAST);
                gob::put_top_level_string(out, channel);
                gob::put_top_level_uint(out, src.0);
                gob::put_top_level_uint(out, dst.0);
                gob::put_top_level_bytes(out, payload);
            }
            Self::GossipBroadcast {
                channel,
                src,
                payload,
            } => {
                out.push(TAG_GOSSIP_BROADCAST);
                gob::put_top_level_string(out, channel);
                gob::put_top_level_uint(out, src.0);
                gob::put_top_level_bytes(out, payload);
            }
            Self::OverlayControl(payload) => {
                out.push(TAG_OVERLAY_CONTROL);
                out.extend_from_slice(payload);
            }
            Self::Unknown(tag) => out.push(*tag),
        }
    }

    /// Decodes a frame body. `Ok(None)` for an empty body (Weave Net logs and ignores it).
    pub fn decode(body: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some((&tag, payload)) = body.split_first() else {
            return Ok(None);
        };
        let msg = match tag {
            TAG_HEARTBEAT => empty(payload, "heartbeat", Self::Heartbeat)?,
            TAG_CONNECTION_ESTABLISHED => empty(
                payload,
                "ConnectionEstablished",
                Self::ConnectionEstablished,
            )?,
            TAG_FRAGMENTATION_RECEIVED => empty(
                payload,
                "FragmentationReceived",
                Self::FragmentationReceived,
            )?,
            TAG_PMTU_VERIFIED => {
                let mtu: [u8; 2] = payload.try_into().map_err(|_| DecodeError::PayloadLength {
                    context: "PMTUVerified",
                    expected: 2,
                    got: payload.len(),
                })?;
                Self::PmtuVerified(u16::from_be_bytes(mtu))
            }
            TAG_GOSSIP | TAG_GOSSIP_BROADCAST => {
                let mut items = Items::new(payload, "gossip message");
                let channel = items.next::<Str, String>("channel")?;
                let src = items.next::<Uint, PeerName>("source peer")?;
                let payload = items.next::<Bytes, Vec<u8>>("payload")?;
                items.finish()?;
                if tag == TAG_GOSSIP {
                    Self::Gossip {
                        channel,
                        src,
                        payload,
                    }
                } else {
                    Self::GossipBroadcast {
                        channel,
                        src,
                        payload,
                    }
                }
            }
            TAG_GOSSIP_UNICAST => {
                let mut items = Items::new(payload, "gossip unicast message");
                let channel = items.next::<Str, String>("channel")?;
                let src = items.next::<Uint, PeerName>("source peer")?;
                let dst = items.next::<Uint, PeerName>("destination peer")?;
                let payload = items.next::<Bytes, Vec<u8>>("payload")?;
                items.finish()?;
                Self::GossipUnicast {
                    channel,
                    src,
                    dst,
                    payload,
                }
            }
            TAG_OVERLAY_CONTROL => Self::OverlayControl(payload.to_vec()),
            other => Self::Unknown(other),
        };
        Ok(Some(msg))
    }
}

fn empty(
    payload: &[u8],
    context: &'static str,
    msg: ProtocolMsg,
) -> Result<ProtocolMsg, DecodeError> {
    if payload.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::TrailingBytes {
            context,
            count: payload.len(),
        })
    }
}

/// The top-level gob items of one gossip message.
struct Items<'a> {
    input: &'a [u8],
    dec: Decoder,
    context: &'static str,
}

impl<'a> Items<'a> {
    fn new(input: &'a [u8], context: &'static str) -> Self {
        Self {
            input,
            // Go's gossip framing only sends predefined types.
            dec: Decoder::with_type_limit(0),
            context,
        }
    }

    /// The next item, of kind `K` (checked before it is read).
    fn next<K: Kind<T>, T>(&mut self, what: &'static str) -> Result<T, DecodeError> {
        let context = self.context;
        mapping::decode_next::<K, T>(&mut self.dec, &mut self.input, context)?
            .ok_or(DecodeError::Missing { context, what })
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                context: self.context,
                count: self.input.len(),
            })
        }
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: PeerName = PeerName(0xaabb_ccdd_ee01);
    const B: PeerName = PeerName(0xaabb_ccdd_ee02);

    fn round_trip(msg: &ProtocolMsg) -> Vec<u8> {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            ProtocolMsg::decode(&out),
            Ok(Some(msg.clone())),
            "{out:02x?}"
        );
        out
    }

    #[test]
    fn simple_messages() {
        assert_eq!(round_trip(&ProtocolMsg::Heartbeat), [0x00]);
        assert_eq!(round_trip(&ProtocolMsg::ConnectionEstablished), [0x01]);
        assert_eq!(round_trip(&ProtocolMsg::FragmentationReceived), [0x02]);
        assert_eq!(
            round_trip(&ProtocolMsg::PmtuVerified(1410)),
            [0x03, 0x05, 0x82]
        );
        assert_eq!(
            round_trip(&ProtocolMsg::OverlayControl(vec![0, 1])),
            [0x07, 0, 1]
        );
        assert_eq!(round_trip(&ProtocolMsg::Unknown(0x42)), [0x42]);
        assert_eq!(
            ProtocolMsg::decode(&[0x42, 1, 2]),
            Ok(Some(ProtocolMsg::Unknown(0x42)))
        );
        assert_eq!(ProtocolMsg::decode(&[]), Ok(None));
    }

    #[test]
    fn strict_payloads() {
        assert!(ProtocolMsg::decode(&[0x00, 0x00]).is_err());
        assert!(ProtocolMsg::decode(&[0x03, 0x05]).is_err());
        assert!(ProtocolMsg::decode(&[0x03, 0x05, 0x82, 0x00]).is_err());
        let mut out = Vec::new();
        ProtocolMsg::Gossip {
            channel: "topology".into(),
            src: A,
            payload: vec![1],
        }
        .encode(&mut out);
        let mut junk = out.clone();
        junk.push(0x00);
        assert!(ProtocolMsg::decode(&junk).is_err());
        // Missing payload item.
        assert!(matches!(
            ProtocolMsg::decode(b"\x04\x0b\x0c\x00\x08topology"),
            Err(DecodeError::Missing { .. })
        ));
        // Channel given as []byte instead of string.
        assert!(matches!(
            ProtocolMsg::decode(b"\x04\x0b\x0a\x00\x08topology"),
            Err(DecodeError::UnexpectedType { .. })
        ));
        // A 64-bit "peer name".
        let mut wide = b"\x06\x0b\x0c\x00\x08topology".to_vec();
        wide.extend_from_slice(&[0x0b, 0x06, 0x00, 0xf8, 1, 0, 0, 0, 0, 0, 0, 0]);
        wide.extend_from_slice(&[0x04, 0x0a, 0x00, 0x00]);
        assert!(matches!(
            ProtocolMsg::decode(&wide),
            Err(DecodeError::PeerNameTooWide(_))
        ));
    }

    #[test]
    fn unicast_matches_go() {
        let msg = ProtocolMsg::GossipUnicast {
            channel: "IPallocation".into(),
            src: A,
            dst: B,
            payload: vec![0x00, 0x01, 0x02],
        };
        let mut want = vec![0x05, 0x0f, 0x0c, 0x00, 0x0c];
        want.extend_from_slice(b"IPallocation");
        want.extend_from_slice(&[0x09, 0x06, 0x00, 0xfa, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
        want.extend_from_slice(&[0x09, 0x06, 0x00, 0xfa, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02]);
        want.extend_from_slice(&[0x06, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02]);
        assert_eq!(round_trip(&msg), want);
    }

    fn arb_msg() -> impl Strategy<Value = ProtocolMsg> {
        let name = (0u64..=PeerName::MAX.0).prop_map(PeerName);
        let payload = prop::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            Just(ProtocolMsg::Heartbeat),
            any::<u16>().prop_map(ProtocolMsg::PmtuVerified),
            ("\\PC{0,12}", name.clone(), payload.clone()).prop_map(|(channel, src, payload)| {
                ProtocolMsg::Gossip {
                    channel,
                    src,
                    payload,
                }
            }),
            ("\\PC{0,12}", name.clone(), payload.clone()).prop_map(|(channel, src, payload)| {
                ProtocolMsg::GossipBroadcast {
                    channel,
                    src,
                    payload,
                }
            }),
            ("\\PC{0,12}", name.clone(), name, payload.clone()).prop_map(
                |(channel, src, dst, payload)| ProtocolMsg::GossipUnicast {
                    channel,
                    src,
                    dst,
                    payload
                }
            ),
            payload.prop_map(ProtocolMsg::OverlayControl),
            (8u8..).prop_map(ProtocolMsg::Unknown),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(msg in arb_msg()) {
            round_trip(&msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            tag in 0u8..9,
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = vec![tag];
            body.extend_from_slice(&bytes);
            let _ = ProtocolMsg::decode(&body);
        }
    }
}
