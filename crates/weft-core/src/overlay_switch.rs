//! Per-connection choice of data path, as Weave Net's overlay switch: which overlays both ends
//! offer, the liveness protocol of each (sleeve UDP heartbeats; weft's kernel-VXLAN fastdp
//! heartbeats), which one carries traffic now, and why fastdp is not in use when it is not.
//!
//! Sans-IO: the [`crate::mesh::Mesh`] feeds it control messages, heartbeats and `now`, and
//! drains [`SwitchOutput`]s.
//!
//! weft's fastdp is not Weave Net's (that one needs Open vSwitch), so it is offered under its
//! own name, [`FASTDP`]: a Weave Net peer finds no fastdp in common and uses sleeve cleanly.
//! Its heartbeat is an Ethernet frame sent through the local VXLAN device to the remote's
//! peer-name MAC (ethertype [`FASTDP_ETHERTYPE`], `"weft"`, the connection uid, padded to the
//! bridge MTU so that a path that cannot carry full-size frames never looks healthy); the
//! receiver acknowledges over TCP with fastdp sub-tag 0, as Weave does.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_crypto::key::SessionKey;
use weft_crypto::sleeve::{Scheme, Sealer};
use weft_wire::{sleeve, PeerName};

/// Name under which weft offers its kernel-VXLAN fast datapath.
pub const FASTDP: &str = "weft-fastdp";
/// Name of the sleeve overlay (Weave Net's).
pub const SLEEVE: &str = "sleeve";
/// Ethertype of fastdp heartbeat frames (IEEE local experimental).
pub const FASTDP_ETHERTYPE: u16 = 0x88b5;
const FASTDP_MAGIC: &[u8; 4] = b"weft";

/// Heartbeat period until acknowledged.
pub const FAST_HEARTBEAT: Duration = Duration::from_millis(500);
/// Heartbeat period once acknowledged.
pub const SLOW_HEARTBEAT: Duration = Duration::from_secs(10);
/// Silence after which a path is considered dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long fastdp may take to be acknowledged before status explains why it is not used.
pub const FASTDP_GRACE: Duration = Duration::from_secs(5);

/// Sleeve control sub-tags (also the legacy top-level tags in compat mode).
const SLEEVE_ESTABLISHED: u8 = 1;
const SLEEVE_FRAG_RECEIVED: u8 = 2;
const SLEEVE_PMTU_VERIFIED: u8 = 3;
/// Size of Weave Net's fragmentation test frame.
const FRAG_TEST_LEN: usize = 60001;
/// Fastdp control sub-tag: heartbeat acknowledged.
const FASTDP_ACK: u8 = 0;
/// Protocol tag of overlay control messages when the switch is in use.
const TAG_OVERLAY: u8 = 7;

/// The `Overlays` feature value we send.
pub fn overlays_feature(fastdp: bool) -> String {
    if fastdp {
        format!("{FASTDP} {SLEEVE}")
    } else {
        SLEEVE.to_string()
    }
}

/// Something the switch wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOutput {
    /// A protocol message body (tag and payload) for the TCP connection.
    Control(Vec<u8>),
    /// A sleeve heartbeat datagram.
    SleeveHeartbeat {
        /// Remote sleeve address.
        to: SocketAddr,
        /// The datagram: 42 bytes, or 66 sealed on an encrypted connection.
        datagram: Vec<u8>,
    },
    /// A fastdp heartbeat frame to send through the local VXLAN device.
    FastdpHeartbeat(Vec<u8>),
    /// Start (true) or stop (false) flooding to this peer through VXLAN.
    FastdpFlood(bool),
}

#[derive(Debug)]
struct Sleeve {
    index: Option<u8>,
    udp_addr: Option<SocketAddr>,
    established: bool,
    sent_established: bool,
    last_rx: Instant,
    next_heartbeat: Instant,
}

#[derive(Debug)]
struct Fastdp {
    index: u8,
    acked: bool,
    sent_ack: bool,
    last_rx: Option<Instant>,
    last_ack: Option<Instant>,
    next_heartbeat: Instant,
    started: Instant,
    flooding: bool,
}

/// Identity of the connection, for building heartbeats.
#[derive(Debug, Clone, Copy)]
pub struct LinkIds {
    /// Us.
    pub local: PeerName,
    /// The remote.
    pub remote: PeerName,
    /// XOR of both connection ids.
    pub uid: u64,
    /// Remote's IPv4 underlay address (for fastdp), if any.
    pub remote_ip: Option<Ipv4Addr>,
    /// Size of fastdp heartbeat frames (14 + bridge MTU).
    pub fastdp_frame_len: usize,
}

/// The overlay state of one connection.
#[derive(Debug)]
pub struct OverlaySwitch {
    ids: LinkIds,
    compat: bool,
    sleeve: Sleeve,
    fastdp: Option<Fastdp>,
    /// On an encrypted connection: seals our heartbeats, on the DF path's sequence (Weave
    /// Net sends heartbeats on that path), so that they never share a nonce with the data
    /// the sleeve data path seals on the other path.
    sealer: Option<Sealer>,
    out: Vec<SwitchOutput>,
}

/// Why the switch gives up on a connection (the connection is then closed with this text,
/// Weave Net's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The remote offered no overlay that we run.
    #[error("no overlays in common with peer")]
    NoOverlayInCommon,
    /// Neither sleeve nor fastdp heartbeats arrive any more.
    #[error("no working forwarders to {0}")]
    NoWorkingForwarders(PeerName),
}

impl OverlaySwitch {
    /// Sets up the switch once the intro is done. `ours` is what we offered, `theirs` the
    /// remote's `Overlays` feature (`None`: sleeve compat mode). `udp_addr` is known for
    /// outbound connections only. Errors with Weave's text when nothing is in common.
    pub fn new(
        ids: LinkIds,
        ours: &str,
        theirs: Option<&[String]>,
        udp_addr: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Self, OverlayError> {
        let (compat, sleeve_idx, fastdp_idx) = match theirs {
            None => (true, None, None),
            Some(theirs) => {
                let common: Vec<&str> = ours
                    .split_whitespace()
                    .filter(|o| theirs.iter().any(|t| t == o))
                    .collect();
                if common.is_empty() {
                    return Err(OverlayError::NoOverlayInCommon);
                }
                let idx = |name: &str| {
                    common
                        .iter()
                        .position(|o| *o == name)
                        .and_then(|i| u8::try_from(i).ok())
                };
                (false, idx(SLEEVE), idx(FASTDP))
            }
        };
        if !compat && sleeve_idx.is_none() && fastdp_idx.is_none() {
            return Err(OverlayError::NoOverlayInCommon);
        }
        let fastdp = fastdp_idx
            .filter(|_| ids.remote_ip.is_some())
            .map(|index| Fastdp {
                index,
                acked: false,
                sent_ack: false,
                last_rx: None,
                last_ack: None,
                next_heartbeat: now,
                started: now,
                flooding: false,
            });
        Ok(Self {
            ids,
            compat,
            sleeve: Sleeve {
                index: sleeve_idx,
                udp_addr,
                established: false,
                sent_established: false,
                last_rx: now,
                next_heartbeat: now,
            },
            fastdp,
            sealer: None,
            out: Vec::new(),
        })
    }

    /// Makes this an encrypted connection: sleeve datagrams are sealed with `key` in
    /// `scheme` (Weave Net's encrypted sleeve, or weft's own between weft peers; `outbound`:
    /// we dialled). Fastdp is not used: Weave Net encrypts it with IPsec ESP, which this
    /// kernel lacks, and VXLAN alone would carry frames in clear.
    pub fn with_sleeve_key(mut self, key: &SessionKey, scheme: Scheme, outbound: bool) -> Self {
        self.fastdp = None;
        self.sealer = Some(Sealer::new(scheme, key, outbound, true));
        self
    }

    /// Whether sleeve traffic on this connection is encrypted.
    pub fn encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Whether fastdp is in common on this connection (and the remote has an IPv4 address).
    pub fn fastdp_offered(&self) -> bool {
        self.fastdp.is_some()
    }

    fn sleeve_enabled(&self) -> bool {
        self.compat || self.sleeve.index.is_some()
    }

    /// Whether any path is established (the mesh connection is then established).
    pub fn established(&self) -> bool {
        self.sleeve.established || self.fastdp_healthy()
    }

    fn fastdp_healthy(&self) -> bool {
        self.fastdp.as_ref().is_some_and(|f| f.acked && f.flooding)
    }

    /// Whether frames to this peer go directly through VXLAN.
    pub fn is_direct_fastdp(&self) -> bool {
        self.fastdp_healthy()
    }

    /// The overlay carrying traffic: `fastdp`, `sleeve`, or `none` while nothing works yet.
    pub fn best(&self) -> &'static str {
        if self.fastdp_healthy() {
            "fastdp"
        } else if self.sleeve.established {
            "sleeve"
        } else {
            "none"
        }
    }

    /// Why fastdp is not carrying traffic, when it was wanted or could have been.
    pub fn fastdp_fallback(&self, now: Instant) -> Option<String> {
        if self.fastdp_healthy() {
            return None;
        }
        match &self.fastdp {
            None if self.sealer.is_some() => Some(
                "encrypted connection: encrypted fastdp needs IPsec ESP, which this kernel lacks; using encrypted sleeve".into(),
            ),
            None if self.compat => Some("peer offers no overlays (sleeve only)".into()),
            None if self.ids.remote_ip.is_none() => Some("no IPv4 underlay address".into()),
            None => Some("not offered by both peers".into()),
            Some(f) if now.saturating_duration_since(f.started) < FASTDP_GRACE => None,
            Some(f) if f.acked => {
                Some("heartbeats lost (UDP 6784 blocked or path MTU too small?)".into())
            }
            Some(f) if f.last_rx.is_some() => Some("our heartbeats are not acknowledged".into()),
            Some(_) => Some(
                "no VXLAN heartbeat from peer (UDP 6784 blocked or path MTU too small?)".into(),
            ),
        }
    }

    /// The sleeve UDP address, once known.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.sleeve.udp_addr
    }

    /// A control message (tags 1–3 or 7) arrived over TCP. Returns whether the connection
    /// just became established.
    pub fn handle_control(&mut self, tag: u8, payload: &[u8], now: Instant) -> bool {
        let was = self.established();
        match tag {
            TAG_OVERLAY => {
                if let [index, sub, ..] = payload {
                    if Some(*index) == self.sleeve.index {
                        self.sleeve_control(*sub, now);
                    } else if let Some(f) = self.fastdp.as_mut().filter(|f| f.index == *index) {
                        if *sub == FASTDP_ACK {
                            f.acked = true;
                            f.last_ack = Some(now);
                            f.next_heartbeat = now + SLOW_HEARTBEAT;
                        }
                    }
                }
            }
            t if self.compat => self.sleeve_control(t, now),
            _ => {}
        }
        self.update_flood(now);
        !was && self.established()
    }

    fn sleeve_control(&mut self, sub: u8, now: Instant) {
        match sub {
            SLEEVE_ESTABLISHED => {
                self.sleeve.established = true;
                self.sleeve.next_heartbeat = now + SLOW_HEARTBEAT;
            }
            SLEEVE_FRAG_RECEIVED | SLEEVE_PMTU_VERIFIED => {}
            _ => {}
        }
    }

    fn control(&self, index: Option<u8>, sub: u8) -> Vec<u8> {
        match index {
            Some(i) if !self.compat => vec![TAG_OVERLAY, i, sub],
            _ => vec![sub],
        }
    }

    /// A sleeve heartbeat with the right uid arrived from `from`. The first one sets the
    /// peer's sleeve address; one from another address moves it there, as Weave Net does: a
    /// multi-homed peer may send from another address than the one we dialled, and only the
    /// two ends of this connection know its uid.
    pub fn handle_sleeve_heartbeat(&mut self, from: SocketAddr, now: Instant) {
        if !self.sleeve_enabled() {
            return;
        }
        self.sleeve.last_rx = now;
        match self.sleeve.udp_addr {
            None => {
                self.sleeve.udp_addr = Some(from);
                self.sleeve.next_heartbeat = now;
            }
            Some(known) if known != from => {
                tracing::info!("Peer UDP address changed to {from} (was {known})");
                self.sleeve.udp_addr = Some(from);
            }
            Some(_) => {}
        }
        if !self.sleeve.sent_established {
            self.sleeve.sent_established = true;
            let msg = self.control(self.sleeve.index, SLEEVE_ESTABLISHED);
            self.out.push(SwitchOutput::Control(msg));
        }
        self.send_heartbeats(now);
    }

    /// A special sleeve frame other than a heartbeat arrived from this connection's peer:
    /// Weave Net's fragmentation test (60001 bytes) is answered with `FragmentationReceived`,
    /// anything else is a PMTU probe of `len - 14` bytes, answered with `PMTUVerified`.
    pub fn handle_sleeve_probe(&mut self, frame_len: usize) {
        if !self.sleeve_enabled() {
            return;
        }
        let msg = if frame_len == FRAG_TEST_LEN {
            self.control(self.sleeve.index, SLEEVE_FRAG_RECEIVED)
        } else {
            let Some(mtu) = frame_len
                .checked_sub(14)
                .and_then(|m| u16::try_from(m).ok())
            else {
                return;
            };
            let mut m = self.control(self.sleeve.index, SLEEVE_PMTU_VERIFIED);
            m.extend_from_slice(&mtu.to_be_bytes());
            m
        };
        self.out.push(SwitchOutput::Control(msg));
    }

    /// A fastdp heartbeat frame from this connection's peer arrived; checks it.
    pub fn handle_fastdp_heartbeat(&mut self, frame: &[u8], now: Instant) {
        let uid = self.ids.uid;
        let Some(f) = self.fastdp.as_mut() else {
            return;
        };
        let ok = frame.len() == self.ids.fastdp_frame_len
            && frame.get(14..18) == Some(FASTDP_MAGIC.as_slice())
            && frame.get(18..26) == Some(uid.to_be_bytes().as_slice());
        if !ok {
            return;
        }
        f.last_rx = Some(now);
        if !f.sent_ack {
            f.sent_ack = true;
            let index = f.index;
            let msg = self.control(Some(index), FASTDP_ACK);
            self.out.push(SwitchOutput::Control(msg));
        }
        self.update_flood(now);
    }

    fn update_flood(&mut self, now: Instant) {
        let Some(f) = self.fastdp.as_mut() else {
            return;
        };
        // Healthy = both directions seen recently: they hear us (acks) and we hear them.
        let fresh = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < HEARTBEAT_TIMEOUT)
        };
        let healthy = f.acked && fresh(f.last_rx);
        if healthy != f.flooding {
            f.flooding = healthy;
            self.out.push(SwitchOutput::FastdpFlood(healthy));
        }
    }

    fn send_heartbeats(&mut self, now: Instant) {
        if self.sleeve_enabled() {
            if let Some(to) = self.sleeve.udp_addr {
                if self.sleeve.next_heartbeat <= now {
                    self.sleeve.next_heartbeat = now
                        + if self.sleeve.established {
                            SLOW_HEARTBEAT
                        } else {
                            FAST_HEARTBEAT
                        };
                    let ids = self.ids;
                    let plain = sleeve::encode_heartbeat(ids.local, ids.local, ids.remote, ids.uid);
                    let datagram = match &mut self.sealer {
                        None => Some(plain.to_vec()),
                        Some(sealer) => {
                            let mut d = Vec::with_capacity(plain.len() + 24);
                            // Fails only after 2^63 heartbeats.
                            sealer.seal_to(&plain, &mut d).ok().map(|()| d)
                        }
                    };
                    if let Some(datagram) = datagram {
                        self.out
                            .push(SwitchOutput::SleeveHeartbeat { to, datagram });
                    }
                }
            }
        }
        let ids = self.ids;
        if let Some(f) = self.fastdp.as_mut() {
            if f.next_heartbeat <= now {
                f.next_heartbeat = now
                    + if f.acked {
                        SLOW_HEARTBEAT
                    } else {
                        FAST_HEARTBEAT
                    };
                self.out
                    .push(SwitchOutput::FastdpHeartbeat(fastdp_heartbeat(&ids)));
            }
        }
    }

    /// Runs timers; fails when no path works any more (close the connection).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), OverlayError> {
        self.send_heartbeats(now);
        self.update_flood(now);
        let sleeve_dead = !self.sleeve_enabled()
            || now.saturating_duration_since(self.sleeve.last_rx) >= HEARTBEAT_TIMEOUT;
        let fastdp_dead = match &self.fastdp {
            None => true,
            Some(f) => {
                let since = f.last_rx.unwrap_or(f.started);
                now.saturating_duration_since(since) >= HEARTBEAT_TIMEOUT
            }
        };
        if sleeve_dead && fastdp_dead {
            return Err(OverlayError::NoWorkingForwarders(self.ids.remote));
        }
        Ok(())
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.sleeve.last_rx + HEARTBEAT_TIMEOUT;
        if self.sleeve_enabled() && self.sleeve.udp_addr.is_some() {
            t = t.min(self.sleeve.next_heartbeat);
        }
        if let Some(f) = &self.fastdp {
            t = t.min(f.next_heartbeat);
            if let Some(rx) = f.last_rx {
                t = t.min(rx + HEARTBEAT_TIMEOUT);
            }
        }
        t
    }

    /// Takes what the switch wants sent.
    pub fn drain(&mut self) -> std::vec::Drain<'_, SwitchOutput> {
        self.out.drain(..)
    }
}

/// Builds a fastdp heartbeat frame for `ids`.
pub fn fastdp_heartbeat(ids: &LinkIds) -> Vec<u8> {
    let mut f = Vec::with_capacity(ids.fastdp_frame_len.max(26));
    f.extend_from_slice(&ids.remote.to_bytes());
    f.extend_from_slice(&ids.local.to_bytes());
    f.extend_from_slice(&FASTDP_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(FASTDP_MAGIC);
    f.extend_from_slice(&ids.uid.to_be_bytes());
    f.resize(ids.fastdp_frame_len.max(26), 0);
    f
}

/// The sending peer of a fastdp heartbeat frame, if it is one.
pub fn fastdp_heartbeat_sender(frame: &[u8]) -> Option<PeerName> {
    if frame.get(12..14) != Some(FASTDP_ETHERTYPE.to_be_bytes().as_slice())
        || frame.get(14..18) != Some(FASTDP_MAGIC.as_slice())
    {
        return None;
    }
    frame.get(6..12).and_then(PeerName::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(local: u64, remote: u64) -> LinkIds {
        LinkIds {
            local: PeerName(local),
            remote: PeerName(remote),
            uid: 42,
            remote_ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
            fastdp_frame_len: 1390,
        }
    }

    fn pair(now: Instant) -> (OverlaySwitch, OverlaySwitch) {
        let ours = overlays_feature(true);
        let theirs: Vec<String> = ours.split(' ').map(str::to_string).collect();
        let a = OverlaySwitch::new(
            ids(1, 2),
            &ours,
            Some(&theirs),
            Some("10.0.0.2:6783".parse().unwrap()),
            now,
        )
        .unwrap();
        let b = OverlaySwitch::new(ids(2, 1), &ours, Some(&theirs), None, now).unwrap();
        (a, b)
    }

    /// Delivers everything each side emits to the other, as the network and TCP would.
    fn exchange(
        a: &mut OverlaySwitch,
        b: &mut OverlaySwitch,
        now: Instant,
        vxlan: bool,
        udp: bool,
    ) {
        for _ in 0..4 {
            let outs: Vec<_> = a.drain().collect();
            for o in outs {
                match o {
                    SwitchOutput::Control(m) => {
                        b.handle_control(m[0], &m[1..], now);
                    }
                    SwitchOutput::SleeveHeartbeat { .. } if udp => {
                        b.handle_sleeve_heartbeat("10.0.0.1:6783".parse().unwrap(), now)
                    }
                    SwitchOutput::FastdpHeartbeat(f) if vxlan => b.handle_fastdp_heartbeat(&f, now),
                    _ => {}
                }
            }
            std::mem::swap(a, b);
        }
    }

    #[test]
    fn both_paths_come_up_and_fastdp_wins() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        a.handle_timeout(now).unwrap();
        b.handle_timeout(now).unwrap();
        exchange(&mut a, &mut b, now, true, true);
        // The inbound side learns the sleeve address from the first heartbeat.
        let later = now + FAST_HEARTBEAT;
        a.handle_timeout(later).unwrap();
        b.handle_timeout(later).unwrap();
        exchange(&mut a, &mut b, later, true, true);
        assert!(a.established() && b.established());
        assert_eq!(a.best(), "fastdp");
        assert_eq!(b.best(), "fastdp");
        assert!(a.is_direct_fastdp() && b.is_direct_fastdp());
        assert_eq!(a.fastdp_fallback(later), None);
    }

    #[test]
    fn a_heartbeat_from_another_address_moves_the_sleeve_address() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let first: SocketAddr = "10.0.0.1:6783".parse().unwrap();
        let second: SocketAddr = "192.168.7.1:6783".parse().unwrap();
        a.handle_timeout(now).unwrap();
        b.handle_sleeve_heartbeat(first, now);
        assert_eq!(b.udp_addr(), Some(first));
        b.handle_sleeve_heartbeat(second, now + FAST_HEARTBEAT);
        assert_eq!(b.udp_addr(), Some(second));
        b.handle_sleeve_heartbeat(second, now + FAST_HEARTBEAT * 2);
        assert_eq!(b.udp_addr(), Some(second));
    }

    #[test]
    fn blocked_vxlan_falls_back_to_sleeve_with_a_reason() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        for k in 0..20 {
            let t = now + FAST_HEARTBEAT * k;
            a.handle_timeout(t).unwrap();
            b.handle_timeout(t).unwrap();
            exchange(&mut a, &mut b, t, false, true);
        }
        let t = now + FAST_HEARTBEAT * 20;
        assert_eq!(a.best(), "sleeve");
        assert!(!a.is_direct_fastdp());
        assert!(a.fastdp_fallback(t).unwrap().contains("no VXLAN heartbeat"));
    }

    #[test]
    fn compat_mode_uses_legacy_tags_and_no_overlays_fails() {
        let now = Instant::now();
        let mut a = OverlaySwitch::new(
            ids(1, 2),
            "sleeve",
            None,
            Some("10.0.0.2:6783".parse().unwrap()),
            now,
        )
        .unwrap();
        a.handle_sleeve_heartbeat("10.0.0.2:6783".parse().unwrap(), now);
        let outs: Vec<_> = a.drain().collect();
        assert!(outs.contains(&SwitchOutput::Control(vec![1])));
        assert!(a.handle_control(1, &[], now));
        assert_eq!(a.best(), "sleeve");
        let theirs = vec!["awsvpc".to_string()];
        assert_eq!(
            OverlaySwitch::new(ids(1, 2), "sleeve", Some(&theirs), None, now)
                .unwrap_err()
                .to_string(),
            "no overlays in common with peer"
        );
    }

    #[test]
    fn probes_are_answered_like_weave() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        a.handle_sleeve_probe(60001);
        a.handle_sleeve_probe(1438 + 14);
        a.handle_sleeve_probe(3);
        let outs: Vec<_> = a.drain().collect();
        // sleeve is index 1 of the common list "weft-fastdp sleeve".
        assert_eq!(
            outs,
            vec![
                SwitchOutput::Control(vec![7, 1, 2]),
                SwitchOutput::Control(vec![7, 1, 3, 0x05, 0x9e]),
            ]
        );
        let mut c = OverlaySwitch::new(ids(1, 2), "sleeve", None, None, now).unwrap();
        c.handle_sleeve_probe(100);
        assert_eq!(
            c.drain().collect::<Vec<_>>(),
            vec![SwitchOutput::Control(vec![3, 0, 86])]
        );
    }

    #[test]
    fn silence_kills_the_connection() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        assert!(a.handle_timeout(now + HEARTBEAT_TIMEOUT).is_err());
    }

    #[test]
    fn heartbeat_frames_parse_and_bad_ones_are_ignored() {
        let i = ids(1, 2);
        let f = fastdp_heartbeat(&i);
        assert_eq!(f.len(), 1390);
        assert_eq!(fastdp_heartbeat_sender(&f), Some(PeerName(1)));
        assert_eq!(fastdp_heartbeat_sender(&f[..10]), None);
        let now = Instant::now();
        let (_, mut b) = pair(now);
        b.handle_fastdp_heartbeat(&f[..100], now);
        assert!(b.drain().next().is_none(), "short frame must not be acked");
        b.handle_fastdp_heartbeat(&f, now);
        assert_eq!(b.drain().next(), Some(SwitchOutput::Control(vec![7, 0, 0])));
    }

    #[test]
    fn an_encrypted_connection_uses_sealed_sleeve_only() {
        for scheme in [Scheme::Weave, Scheme::Aes256Gcm] {
            let now = Instant::now();
            let key = SessionKey::from_bytes([9; 32]);
            let (a, b) = pair(now);
            let mut a = a.with_sleeve_key(&key, scheme, true);
            let mut b = b.with_sleeve_key(&key, scheme, false);
            assert!(a.encrypted() && !a.fastdp_offered());
            assert!(a.fastdp_fallback(now).unwrap().contains("IPsec ESP"));
            a.handle_timeout(now).unwrap();
            let hb: Vec<_> = a
                .drain()
                .filter_map(|o| match o {
                    SwitchOutput::SleeveHeartbeat { datagram, .. } => Some(datagram),
                    _ => None,
                })
                .collect();
            assert_eq!(hb.len(), 1);
            // Sealed on the mesh's (DF) path, sequence 0; B's side opens it to the heartbeat.
            let mut d = hb[0].clone();
            assert_eq!(d.len(), 42 + 24);
            assert_eq!(&d[6..14], &(1u64 << 63).to_be_bytes());
            let mut opener = weft_crypto::sleeve::Opener::new(scheme, &key, false);
            let plain = opener.open_datagram(&mut d).unwrap();
            let want = sleeve::encode_heartbeat(PeerName(1), PeerName(1), PeerName(2), 42);
            assert_eq!(plain, want);
            // Both ends establish over sleeve alone.
            for t in [now + FAST_HEARTBEAT, now + FAST_HEARTBEAT * 2] {
                a.handle_timeout(t).unwrap();
                b.handle_timeout(t).unwrap();
                exchange(&mut a, &mut b, t, true, true);
            }
            assert_eq!((a.best(), b.best()), ("sleeve", "sleeve"));
        }
    }
}
