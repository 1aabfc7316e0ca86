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
//!
//! With a password ([`Handshake::with_password`]) the flag is 1 and is followed by a fresh
//! Curve25519 public key; the features frame is the first sealed message, so it waits for the
//! remote's public key, from which (with our secret and the password) both ends derive the
//! session key ([`weft_crypto::key`]). A wrong password shows only there: the remote's features
//! frame does not open. Flag mismatches fail with Weave Net's texts.

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use weft_crypto::aead;
use weft_crypto::key::{EphemeralKey, SessionKey, PUBLIC_KEY_LEN};
use weft_crypto::sleeve::Scheme;
use weft_crypto::tcp::{DecryptError, TcpOpener, TcpSealer};
use zeroize::Zeroizing;

use crate::session::{seal_frame, SessionRx, SessionTx};
use weft_wire::{features, frame, header, PeerName};

/// The feature by which weft peers with a password offer weft's own sleeve encryption; its
/// value names the scheme ([`aead::SCHEME_NAME`]). Weave Net ignores it.
pub const SLEEVE_AEAD_FEATURE: &str = "WeftSleeveAead";

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
    /// The remote offers weft's own sleeve encryption ([`weft_crypto::aead`]) with a password.
    pub sleeve_aead: bool,
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
    /// We have a password but the peer sent flag 0.
    #[error("password specified, but peer requested an unencrypted connection")]
    PeerWantsNoEncryption,
    /// The peer's features frame does not open: in practice, a different password.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
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
    /// Encrypted only: the remote's 32-byte public key.
    PublicKey,
    Features,
    Done,
}

/// The intro state machine for one connection.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    out: Vec<u8>,
    crypto: Option<Crypto>,
}

/// The password side of an intro: what it needs until the remote's key arrives, and the
/// session it yields.
struct Crypto {
    /// Whether we dialled the connection: the nonces' polarity.
    outbound: bool,
    /// Whether we trust the remote's address (our `Trusted` feature).
    trusted: bool,
    /// Until the remote's public key arrives.
    pending: Option<Pending>,
    /// From the remote's public key on.
    agreed: Option<(SessionKey, TcpSealer, TcpOpener)>,
    /// We offered weft's sleeve scheme (known for sure once the features went out).
    offers_aead: bool,
}

struct Pending {
    key: EphemeralKey,
    password: Zeroizing<Vec<u8>>,
    /// Our features, sent sealed once the session key is known.
    features: BTreeMap<String, String>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the password nor the keys.
        f.debug_struct("Crypto")
            .field("outbound", &self.outbound)
            .field("agreed", &self.agreed.is_some())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts an unencrypted intro. `conn_id` is our random id for this connection; `trusted`
    /// says whether we trust the remote's address. The header, encryption flag and features
    /// are queued at once: take them with [`Self::poll_transmit`].
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
            crypto: None,
        }
    }

    /// Starts an intro protected by `password` (Weave Net's `--password`), with a fresh
    /// ephemeral key pair from `rng`. `outbound` says whether we dialled the connection (it
    /// sets the nonces' polarity). The header, encryption flag and public key are queued at
    /// once; the sealed features frame follows when the remote's public key has arrived.
    pub fn with_password(
        local: &LocalIdentity,
        conn_id: u64,
        trusted: bool,
        password: &[u8],
        outbound: bool,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        Self::with_key(
            local,
            conn_id,
            trusted,
            password,
            outbound,
            EphemeralKey::generate(rng),
        )
    }

    /// [`Self::with_password`] with a given key pair (for fixed test vectors).
    pub fn with_key(
        local: &LocalIdentity,
        conn_id: u64,
        trusted: bool,
        password: &[u8],
        outbound: bool,
        key: EphemeralKey,
    ) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&header::encode(PROTOCOL_MIN_VERSION, PROTOCOL_MAX_VERSION));
        out.push(1);
        out.extend_from_slice(key.public());
        Self {
            state: State::Header,
            out,
            crypto: Some(Crypto {
                outbound,
                trusted,
                pending: Some(Pending {
                    key,
                    password: Zeroizing::new(password.to_vec()),
                    features: {
                        let mut f = local_features(local, conn_id, trusted);
                        f.insert(SLEEVE_AEAD_FEATURE.into(), aead::SCHEME_NAME.into());
                        f
                    },
                }),
                agreed: None,
                offers_aead: false,
            }),
        }
    }

    /// The session key, once the remote's public key has arrived (so always after a successful
    /// intro with a password); `None` without a password. The overlay takes it for untrusted
    /// connections.
    pub fn session_key(&self) -> Option<&SessionKey> {
        self.crypto
            .as_ref()
            .and_then(|c| c.agreed.as_ref())
            .map(|(key, _, _)| key)
    }

    /// The key the overlay (sleeve, fastdp) must encrypt with for this connection, given the
    /// remote's features: the session key on an untrusted connection, `None` on a trusted one
    /// or without a password. A connection is trusted only if both sides trust each other's
    /// address (ours: the `trusted` we were created with; theirs: the remote's `Trusted`).
    pub fn overlay_key(&self, remote: &RemoteFeatures) -> Option<&SessionKey> {
        let crypto = self.crypto.as_ref()?;
        if crypto.trusted && remote.trusted {
            return None;
        }
        self.session_key()
    }

    /// Stops offering weft's own sleeve encryption (the `WeftSleeveAead` feature, sent with a
    /// password only): the connection then uses Weave Net's scheme even with a weft peer.
    /// Call before the first [`Self::handle_input`].
    pub fn without_sleeve_aead(mut self) -> Self {
        if let Some(p) = self.crypto.as_mut().and_then(|c| c.pending.as_mut()) {
            p.features.remove(SLEEVE_AEAD_FEATURE);
        }
        self
    }

    /// How the overlay seals this connection's datagrams when [`Self::overlay_key`] gives a
    /// key: weft's AES-256-GCM when both ends offered it, else Weave Net's scheme.
    pub fn sleeve_scheme(&self, remote: &RemoteFeatures) -> Scheme {
        let offered = self.crypto.as_ref().is_some_and(|c| c.offers_aead);
        if offered && remote.sleeve_aead {
            Scheme::Aes256Gcm
        } else {
            Scheme::Weave
        }
    }

    /// Bytes to write to the socket, if any. Call after `new` and after every `handle_input`,
    /// including the one that returns the remote's features: with a password, our sealed
    /// features frame is queued when the remote's public key arrives, which may be in the same
    /// input as the remote's features.
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
        match self.crypto.and_then(|c| c.agreed) {
            Some((_, tx, rx)) => (SessionTx::encrypted(tx), SessionRx::encrypted(leftover, rx)),
            None => (SessionTx::default(), SessionRx::new(leftover)),
        }
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
                    self.state = match (flag, self.crypto.is_some()) {
                        (0, false) => State::Features,
                        (1, true) => State::PublicKey,
                        (0, true) => return Err(HandshakeError::PeerWantsNoEncryption),
                        (1, false) => return Err(HandshakeError::PeerWantsEncryption),
                        (other, _) => return Err(HandshakeError::BadEncryptionFlag(other)),
                    };
                    buf.drain(..1);
                }
                State::PublicKey => {
                    let Some(theirs) = buf.first_chunk::<PUBLIC_KEY_LEN>() else {
                        return Ok(None);
                    };
                    if let Some(crypto) = &mut self.crypto {
                        if let Some(p) = crypto.pending.take() {
                            let key = p.key.session_key(theirs, &p.password);
                            let mut tx = TcpSealer::new(key.clone(), crypto.outbound);
                            let rx = TcpOpener::new(key.clone(), crypto.outbound);
                            // Our own features are far below the frame limit.
                            crypto.offers_aead = p.features.contains_key(SLEEVE_AEAD_FEATURE);
                            let body = features::encode(&p.features);
                            if seal_frame(&mut tx, &body, &mut self.out).is_err() {
                                debug_assert!(false, "features frame over limit");
                            }
                            crypto.agreed = Some((key, tx, rx));
                        }
                    }
                    buf.drain(..PUBLIC_KEY_LEN);
                    self.state = State::Features;
                }
                State::Features => {
                    // Until the peer has introduced itself, a frame is at most 64 KiB.
                    let Some((body, used)) =
                        frame::parse_limited(buf, frame::MAX_HANDSHAKE_FRAME_LEN)?
                    else {
                        return Ok(None);
                    };
                    let opened;
                    let body = match self.crypto.as_mut().and_then(|c| c.agreed.as_mut()) {
                        None => body,
                        Some((_, _, rx)) => {
                            // A copy: `buf` stays as received if the frame does not open.
                            opened = open_copy(rx, body)?;
                            &opened[..]
                        }
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

/// Opens a sealed frame body into a fresh buffer and returns the plaintext.
fn open_copy(rx: &mut TcpOpener, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let mut work = sealed.to_vec();
    let plain_len = rx.open_in_place(&mut work)?.len();
    work.drain(..work.len() - plain_len);
    Ok(work)
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
        sleeve_aead: get(SLEEVE_AEAD_FEATURE) == aead::SCHEME_NAME,
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

    /// A fixed key pair per side, as a seeded RNG would give.
    fn keyed(n: u64, password: &[u8], outbound: bool) -> Handshake {
        let key = EphemeralKey::from_secret([n as u8; 32]);
        Handshake::with_key(&ident(n, "p"), n * 11, false, password, outbound, key)
    }

    /// Runs two intros against each other until both complete, carrying whatever each one
    /// queues to the other, and returns each side's features, leftovers and handshake.
    fn run_pair(
        mut a: Handshake,
        mut b: Handshake,
    ) -> Result<[(RemoteFeatures, Handshake); 2], HandshakeError> {
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        let (mut ra, mut rb) = (None, None);
        for _ in 0..4 {
            to_b.extend(a.poll_transmit().unwrap_or_default());
            to_a.extend(b.poll_transmit().unwrap_or_default());
            if ra.is_none() {
                ra = a.handle_input(&mut to_a)?;
            }
            if rb.is_none() {
                rb = b.handle_input(&mut to_b)?;
            }
        }
        assert!(a.poll_transmit().is_none() && b.poll_transmit().is_none());
        Ok([(ra.unwrap(), a), (rb.unwrap(), b)])
    }

    #[test]
    fn weft_peers_agree_on_their_own_sleeve_scheme_unless_one_declines() {
        let [(ra, a), (rb, b)] = run_pair(keyed(1, b"pw", true), keyed(2, b"pw", false)).unwrap();
        assert!(ra.sleeve_aead && rb.sleeve_aead);
        assert_eq!(a.sleeve_scheme(&ra), Scheme::Aes256Gcm);
        assert_eq!(b.sleeve_scheme(&rb), Scheme::Aes256Gcm);
        let declining = keyed(2, b"pw", false).without_sleeve_aead();
        let [(ra, a), (rb, b)] = run_pair(keyed(1, b"pw", true), declining).unwrap();
        assert!(!ra.sleeve_aead && rb.sleeve_aead);
        assert_eq!(a.sleeve_scheme(&ra), Scheme::Weave);
        assert_eq!(b.sleeve_scheme(&rb), Scheme::Weave);
    }

    #[test]
    fn password_intro_agrees_a_key_and_seals_every_frame() {
        let a = keyed(1, b"pw", true);
        let b = keyed(2, b"pw", false);
        let [(ra, a), (rb, b)] = run_pair(a, b).unwrap();
        assert_eq!(ra.name, PeerName(2));
        assert_eq!(rb.conn_id, 11);
        let key = a.session_key().unwrap().clone();
        assert_eq!(Some(&key), b.session_key());
        let (mut a_tx, mut a_rx) = a.into_session(Vec::new());
        let (mut b_tx, mut b_rx) = b.into_session(Vec::new());
        assert!(a_tx.is_encrypted() && b_rx.is_encrypted());
        // Both directions, several frames each, after the features frame (sequence 0).
        for body in [&b"\x00"[..], b"\x04gossip", b""] {
            let mut wire = Vec::new();
            a_tx.seal(body, &mut wire).unwrap();
            assert_eq!(wire.len(), 4 + 16 + body.len());
            assert!(!wire.windows(6).any(|w| w == b"gossip"));
            b_rx.push(&wire);
            assert_eq!(b_rx.poll_body().unwrap(), Some(body));
            let mut back = Vec::new();
            b_tx.seal(body, &mut back).unwrap();
            a_rx.push(&back);
            assert_eq!(a_rx.poll_body().unwrap(), Some(body));
        }
        // A frame replayed is out of sequence: the connection ends with Weave Net's text.
        let mut wire = Vec::new();
        a_tx.seal(b"\x00", &mut wire).unwrap();
        b_rx.push(&wire);
        b_rx.poll_body().unwrap();
        b_rx.push(&wire);
        assert_eq!(
            b_rx.poll_body().unwrap_err().to_string(),
            "Unable to decrypt TCP msg"
        );
    }

    #[test]
    fn the_overlay_gets_the_key_unless_both_sides_trust() {
        for (we, they, expect) in [
            (false, false, true),
            (true, false, true),
            (false, true, true),
            (true, true, false),
        ] {
            let mk = |n: u64, trusted: bool, outbound: bool| {
                let key = EphemeralKey::from_secret([n as u8; 32]);
                Handshake::with_key(&ident(n, "p"), n, trusted, b"pw", outbound, key)
            };
            let [(ra, a), (rb, b)] = run_pair(mk(1, we, true), mk(2, they, false)).unwrap();
            assert_eq!(ra.trusted, they);
            assert_eq!(a.overlay_key(&ra).is_some(), expect);
            assert_eq!(b.overlay_key(&rb).is_some(), expect);
            if expect {
                assert_eq!(a.overlay_key(&ra), b.session_key());
            }
        }
        let [(ra, a), _] = run_pair(
            Handshake::new(&ident(1, "a"), 1, false),
            Handshake::new(&ident(2, "b"), 2, false),
        )
        .unwrap();
        assert_eq!(a.overlay_key(&ra), None);
        assert_eq!(a.session_key(), None);
    }

    #[test]
    fn password_intro_wire_form() {
        let mut a = keyed(1, b"pw", true);
        let hello = a.poll_transmit().unwrap();
        assert_eq!(&hello[..7], b"weave\x02\x02");
        assert_eq!(hello[7], 1);
        assert_eq!(&hello[8..], EphemeralKey::from_secret([1; 32]).public());
        // Nothing more until the remote's key: the features frame needs the session key.
        let mut from_b = keyed(2, b"pw", false).poll_transmit().unwrap();
        assert_eq!(a.handle_input(&mut from_b).unwrap(), None);
        assert!(from_b.is_empty());
        let key = a.session_key().unwrap().clone();
        let frame = a.poll_transmit().unwrap();
        let mut map = local_features(&ident(1, "p"), 11, false);
        map.insert(SLEEVE_AEAD_FEATURE.into(), aead::SCHEME_NAME.into());
        let plain = features::encode(&map);
        assert_eq!(frame.len(), 4 + 16 + plain.len());
        assert_eq!(&frame[..4], &((16 + plain.len()) as u32).to_be_bytes());
        // Sealed as the dialler's first message.
        let mut body = frame[4..].to_vec();
        let mut rx = TcpOpener::new(key, false);
        assert_eq!(rx.open_in_place(&mut body).unwrap(), plain);
    }

    #[test]
    fn password_intro_in_single_bytes_and_with_a_following_frame() {
        let mut a = keyed(1, b"pw", true);
        let mut b = keyed(2, b"pw", false);
        let mut to_b = a.poll_transmit().unwrap();
        let mut to_a = b.poll_transmit().unwrap();
        assert_eq!(a.handle_input(&mut to_a).unwrap(), None);
        to_b.extend(a.poll_transmit().unwrap());
        // b's features frame reaches a together with b's first session frame.
        let mut buf = Vec::new();
        let mut rb = None;
        for byte in to_b {
            buf.push(byte);
            if let Some(r) = b.handle_input(&mut buf).unwrap() {
                rb = Some(r);
            }
        }
        assert_eq!(rb.unwrap().name, PeerName(1));
        let mut to_a = b.poll_transmit().unwrap();
        let (mut b_tx, _) = b.into_session(Vec::new());
        b_tx.seal(b"\x04after", &mut to_a).unwrap();
        let ra = a.handle_input(&mut to_a).unwrap().unwrap();
        assert_eq!(ra.name, PeerName(2));
        let (_, mut a_rx) = a.into_session(to_a);
        assert_eq!(a_rx.poll_body().unwrap(), Some(&b"\x04after"[..]));
    }

    #[test]
    fn password_mismatches_use_weave_texts() {
        let err = run_pair(keyed(1, b"pw", true), keyed(2, b"other", false))
            .err()
            .unwrap();
        assert_eq!(err, HandshakeError::Decrypt(DecryptError));
        assert_eq!(err.to_string(), "Unable to decrypt TCP msg");
        // An empty password is still a password, and differs from a non-empty one.
        assert!(run_pair(keyed(1, b"", true), keyed(2, b"", false)).is_ok());
        assert!(run_pair(keyed(1, b"", true), keyed(2, b"x", false)).is_err());
        let err = run_pair(
            keyed(1, b"pw", true),
            Handshake::new(&ident(2, "b"), 22, false),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "password specified, but peer requested an unencrypted connection"
        );
        let err = run_pair(
            Handshake::new(&ident(2, "b"), 22, false),
            keyed(1, b"pw", true),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "no password specificed, but peer requested an encrypted connection"
        );
        let mut a = keyed(1, b"pw", true);
        let mut bad = b"weave\x01\x02\x02".to_vec();
        assert_eq!(
            a.handle_input(&mut bad).unwrap_err().to_string(),
            "Bad encryption flag 2"
        );
    }

    #[test]
    fn a_flipped_bit_in_the_features_frame_is_refused() {
        let mut a = keyed(1, b"pw", true);
        let mut b = keyed(2, b"pw", false);
        let _ = a.poll_transmit();
        let mut to_a = b.poll_transmit().unwrap();
        let mut to_b = keyed(1, b"pw", true).poll_transmit().unwrap();
        b.handle_input(&mut to_b).unwrap();
        to_a.extend(b.poll_transmit().unwrap());
        let last = to_a.len() - 1;
        to_a[last] ^= 0x10;
        assert_eq!(
            a.handle_input(&mut to_a).unwrap_err(),
            HandshakeError::Decrypt(DecryptError)
        );
        assert!(format!("{a:?}").contains("Crypto { outbound: true, agreed: true, .. }"));
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
