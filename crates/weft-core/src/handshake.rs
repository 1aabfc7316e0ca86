//! The connection intro of Weave Net's mesh protocol (version 2), as a sans-IO state machine.
//!
//! One [`Handshake`] per TCP connection: the caller feeds it received bytes and sends whatever
//! it hands out, until it yields the remote's parsed [`RemoteFeatures`]. What happens after
//! the intro (registration, duplicates, gossip) belongs to [`crate::mesh`].
//!
//! weft speaks only version 2: it advertises the range `[2, 2]`, so a version-1-only peer is
//! refused during header negotiation with Weave Net's own error text. Because nothing but
//! version 2 can follow a successful negotiation, the encryption flag and features frame are
//! sent together with the header, saving a round trip.

use std::collections::BTreeMap;

use crate::session::{SessionRx, SessionTx};
use weft_wire::{features, frame, header, PeerName};

/// The protocol versions weft offers.
pub const PROTOCOL_MIN_VERSION: u8 = 2;
/// The highest protocol version weft offers.
pub const PROTOCOL_MAX_VERSION: u8 = 2;

/// Who we are, as told to the remote in the features map.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// Our peer name.
    pub name: PeerName,
    /// Our nickname.
    pub nick_name: String,
    /// Our incarnation id.
    pub uid: u64,
    /// Our 12-bit short id.
    pub short_id: u16,
    /// Our `Overlays` feature (space-separated overlay names).
    pub overlays: String,
}

/// What the remote told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFeatures {
    /// The remote's peer name.
    pub name: PeerName,
    /// The remote's nickname.
    pub nick_name: String,
    /// The remote's incarnation id.
    pub uid: u64,
    /// The remote's random id for this connection.
    pub conn_id: u64,
    /// The remote's short id, when it sent one.
    pub short_id: Option<u16>,
    /// Whether the remote trusts our address (`Trusted`).
    pub trusted: bool,
    /// The overlays the remote offers; `None` means sleeve compatibility mode.
    pub overlays: Option<Vec<String>>,
    /// The remote is a weft peer that speaks weft's topology deltas
    /// ([`weft_wire::topology_delta`]); Weave Net peers never send this feature.
    pub topology_deltas: bool,
    /// The remote is a weft peer that takes IPAM ring deltas ([`weft_wire::ipam_delta`]).
    pub ipam_deltas: bool,
}

/// Why an intro failed. Messages are Weave Net's, since operators grep logs for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Bad magic or incompatible version range.
    #[error(transparent)]
    Header(#[from] header::HeaderError),
    /// The peer wants encryption but we have no password.
    #[error("no password specificed, but peer requested an encrypted connection")]
    PeerWantsEncryption,
    /// Neither 0 nor 1.
    #[error("Bad encryption flag {0}")]
    BadEncryptionFlag(u8),
    /// A frame length over the limit.
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    /// The features frame does not decode.
    #[error("malformed features: {0}")]
    Features(String),
    /// A required feature is absent.
    #[error("field {0} is missing")]
    MissingField(&'static str),
    /// Not the "mac" name flavour.
    #[error("Peer name flavour mismatch (ours: 'mac', theirs: '{0}')")]
    FlavourMismatch(String),
    /// A feature value does not parse.
    #[error("invalid {field}: {value:?}")]
    BadField {
        /// The feature's key.
        field: &'static str,
        /// The value received.
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    EncryptionFlag,
    Features,
    Done,
}

/// The intro state machine for one connection.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    out: Vec<u8>,
}

impl Handshake {
    /// Starts an intro. `conn_id` is our random id for this connection; `trusted` says whether
    /// we trust the remote's address. The header, encryption flag and features are queued
    /// at once: take them with [`Self::poll_transmit`].
    pub fn new(local: &LocalIdentity, conn_id: u64, trusted: bool) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&header::encode(PROTOCOL_MIN_VERSION, PROTOCOL_MAX_VERSION));
        out.push(0); // no password: unencrypted connection
        let body = features::encode(&local_features(local, conn_id, trusted));
        // Our own features are far below the frame limit.
        if frame::encode(&body, &mut out).is_err() {
            debug_assert!(false, "features frame over limit");
        }
        Self {
            state: State::Header,
            out,
        }
    }

    /// Bytes to write to the socket, if any. Call after `new` and after every `handle_input`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The session the completed intro agreed on: the framing (and, with a password, the keys)
    /// of everything after it. `leftover` is what followed the features frame in the same reads.
    pub fn into_session(self, leftover: Vec<u8>) -> (SessionTx, SessionRx) {
        debug_assert!(matches!(self.state, State::Done), "intro not complete");
        (SessionTx::default(), SessionRx::new(leftover))
    }

    /// Consumes as much of `buf` (everything received so far and not yet consumed) as the intro
    /// needs, draining what it used. Returns the remote's features once the intro is complete;
    /// whatever is left in `buf` then is the first protocol frame(s).
    pub fn handle_input(
        &mut self,
        buf: &mut Vec<u8>,
    ) -> Result<Option<RemoteFeatures>, HandshakeError> {
        loop {
            match self.state {
                State::Header => {
                    let Some(hdr) = buf.get(..header::HEADER_LEN) else {
                        return Ok(None);
                    };
                    let mut h = [0u8; header::HEADER_LEN];
                    h.copy_from_slice(hdr);
                    let theirs = header::decode(&h)?;
                    header::negotiate((PROTOCOL_MIN_VERSION, PROTOCOL_MAX_VERSION), theirs)?;
                    buf.drain(..header::HEADER_LEN);
                    self.state = State::EncryptionFlag;
                }
                State::EncryptionFlag => {
                    let Some(&flag) = buf.first() else {
                        return Ok(None);
                    };
                    match flag {
                        0 => {}
                        1 => return Err(HandshakeError::PeerWantsEncryption),
                        other => return Err(HandshakeError::BadEncryptionFlag(other)),
                    }
                    buf.drain(..1);
                    self.state = State::Features;
                }
                State::Features => {
                    // Until the peer has introduced itself, a frame is at most 64 KiB.
                    let Some((body, used)) =
                        frame::parse_limited(buf, frame::MAX_HANDSHAKE_FRAME_LEN)?
                    else {
                        return Ok(None);
                    };
                    let map = features::decode(body)
                        .map_err(|e| HandshakeError::Features(e.to_string()))?;
                    let remote = parse_features(&map)?;
                    buf.drain(..used);
                    self.state = State::Done;
                    return Ok(Some(remote));
                }
                State::Done => return Ok(None),
            }
        }
    }
}

fn local_features(local: &LocalIdentity, conn_id: u64, trusted: bool) -> BTreeMap<String, String> {
    [
        ("PeerNameFlavour", "mac".to_string()),
        ("Name", local.name.to_string()),
        ("NickName", local.nick_name.clone()),
        ("UID", local.uid.to_string()),
        ("ConnID", conn_id.to_string()),
        ("ShortID", local.short_id.to_string()),
        ("Trusted", trusted.to_string()),
        ("Overlays", local.overlays.clone()),
        // Weave Net ignores features it does not know.
        (
            weft_wire::topology_delta::FEATURE,
            weft_wire::topology_delta::FEATURE_VERSION.to_string(),
        ),
        (
            weft_wire::ipam_delta::FEATURE,
            weft_wire::ipam_delta::FEATURE_VERSION.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Longest nickname accepted (a DNS name's limit, rounded up).
pub const MAX_NICKNAME_LEN: usize = 255;

/// A peer-supplied value as it may appear in an error: at most 64 bytes of it.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

/// Validates a features map the way Weave Net does: required keys first, then the flavour,
/// then each value.
pub fn parse_features(map: &BTreeMap<String, String>) -> Result<RemoteFeatures, HandshakeError> {
    for key in ["PeerNameFlavour", "Name", "NickName", "UID", "ConnID"] {
        if !map.contains_key(key) {
            return Err(HandshakeError::MissingField(key));
        }
    }
    let get = |k: &str| map.get(k).map(String::as_str).unwrap_or_default();
    let bad = |field: &'static str| HandshakeError::BadField {
        field,
        value: clip(get(field)),
    };
    if get("PeerNameFlavour") != "mac" {
        return Err(HandshakeError::FlavourMismatch(clip(get(
            "PeerNameFlavour",
        ))));
    }
    // A nickname is a host name; a longer one would only fill our logs.
    if get("NickName").len() > MAX_NICKNAME_LEN {
        return Err(bad("NickName"));
    }
    let name: PeerName = get("Name").parse().map_err(|_| bad("Name"))?;
    let short_id = match map.get("ShortID") {
        None => None,
        Some(s) => match s.parse::<u16>() {
            Ok(v) if v < 4096 => Some(v),
            _ => return Err(bad("ShortID")),
        },
    };
    let uid = get("UID").parse::<u64>().map_err(|_| bad("UID"))?;
    let conn_id = get("ConnID").parse::<u64>().map_err(|_| bad("ConnID"))?;
    Ok(RemoteFeatures {
        name,
        nick_name: get("NickName").to_string(),
        uid,
        conn_id,
        short_id,
        trusted: get("Trusted") == "true",
        overlays: map
            .get("Overlays")
            .map(|s| s.split_whitespace().map(str::to_string).collect()),
        topology_deltas: map
            .get(weft_wire::topology_delta::FEATURE)
            .map(String::as_str)
            == Some(weft_wire::topology_delta::FEATURE_VERSION),
        ipam_deltas: map.get(weft_wire::ipam_delta::FEATURE).map(String::as_str)
            == Some(weft_wire::ipam_delta::FEATURE_VERSION),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversized_intro_frame_and_long_values_are_refused_briefly() {
        let id = LocalIdentity {
            name: "00:00:00:00:00:01".parse().unwrap(),
            nick_name: "a".into(),
            uid: 1,
            short_id: 1,
            overlays: String::new(),
        };
        let mut hs = Handshake::new(&id, 7, false);
        let mut buf = header::encode(PROTOCOL_MIN_VERSION, PROTOCOL_MAX_VERSION).to_vec();
        buf.push(0);
        buf.extend_from_slice(&(70_000u32).to_be_bytes());
        let err = hs.handle_input(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incoming message exceeds maximum size: 70000 > 65536"
        );
        let mut map: BTreeMap<String, String> = [
            ("PeerNameFlavour", "mac"),
            ("Name", "00:00:00:00:00:02"),
            ("UID", "1"),
            ("ConnID", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.insert("NickName".into(), "n".repeat(10_000));
        let err = parse_features(&map).unwrap_err().to_string();
        assert!(err.len() < 300, "{}", err.len());
        map.insert("NickName".into(), "b".into());
        map.insert("PeerNameFlavour".into(), "x".repeat(10_000));
        assert!(parse_features(&map).unwrap_err().to_string().len() < 300);
    }

    use super::*;

    fn ident(n: u64, nick: &str) -> LocalIdentity {
        LocalIdentity {
            name: PeerName(n),
            nick_name: nick.into(),
            uid: n * 7,
            short_id: 5,
            overlays: "sleeve".into(),
        }
    }

    #[test]
    fn two_peers_complete_intro() {
        let mut a = Handshake::new(&ident(1, "a"), 11, false);
        let mut b = Handshake::new(&ident(2, "b"), 22, false);
        let mut to_b = a.poll_transmit().unwrap();
        let mut to_a = b.poll_transmit().unwrap();
        to_b.extend_from_slice(b"\x00\x00\x00\x01\x00"); // first frame after intro
        let rb = b.handle_input(&mut to_b).unwrap().unwrap();
        let ra = a.handle_input(&mut to_a).unwrap().unwrap();
        assert_eq!(rb.name, PeerName(1));
        assert_eq!(rb.conn_id, 11);
        assert_eq!(ra.nick_name, "b");
        assert_eq!(ra.short_id, Some(5));
        assert_eq!(to_b, b"\x00\x00\x00\x01\x00");
        assert!(to_a.is_empty());
    }

    #[test]
    fn partial_input_waits() {
        let mut a = Handshake::new(&ident(1, "a"), 11, false);
        let mut b = Handshake::new(&ident(2, "b"), 22, false);
        let all = a.poll_transmit().unwrap();
        let _ = b.poll_transmit();
        let mut buf = Vec::new();
        for (i, byte) in all.iter().enumerate() {
            buf.push(*byte);
            let r = b.handle_input(&mut buf).unwrap();
            assert_eq!(r.is_some(), i == all.len() - 1);
        }
    }

    #[test]
    fn refusals_use_weave_texts() {
        let mut b = Handshake::new(&ident(2, "b"), 22, false);
        let mut v1 = b"weave\x01\x01".to_vec();
        assert_eq!(
            b.handle_input(&mut v1).unwrap_err().to_string(),
            "remote version range [1,1] is incompatible with ours [2,2]"
        );
        let mut b = Handshake::new(&ident(2, "b"), 22, false);
        let mut enc = b"weave\x01\x02\x01".to_vec();
        assert_eq!(
            b.handle_input(&mut enc).unwrap_err(),
            HandshakeError::PeerWantsEncryption
        );
        let mut m: BTreeMap<String, String> = local_features(&ident(1, "a"), 1, false);
        m.remove("UID");
        assert_eq!(
            parse_features(&m).unwrap_err().to_string(),
            "field UID is missing"
        );
        let mut m = local_features(&ident(1, "a"), 1, false);
        m.insert("PeerNameFlavour".into(), "hash".into());
        assert_eq!(
            parse_features(&m).unwrap_err().to_string(),
            "Peer name flavour mismatch (ours: 'mac', theirs: 'hash')"
        );
        let mut m = local_features(&ident(1, "a"), 1, false);
        m.insert("ShortID".into(), "4096".into());
        assert!(parse_features(&m).is_err());
    }

    #[test]
    fn weft_features_are_offered_and_recognised() {
        let m = local_features(&ident(1, "a"), 1, false);
        let remote = parse_features(&m).unwrap();
        assert!(remote.topology_deltas && remote.ipam_deltas);
        // A Weave Net peer sends neither; another format version is not ours.
        let mut weave = m.clone();
        weave.remove(weft_wire::ipam_delta::FEATURE);
        assert!(!parse_features(&weave).unwrap().ipam_deltas);
        let mut other = m;
        other.insert(weft_wire::ipam_delta::FEATURE.into(), "2".into());
        assert!(!parse_features(&other).unwrap().ipam_deltas);
    }
}
