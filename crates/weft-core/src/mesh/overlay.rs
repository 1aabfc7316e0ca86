//! Each connection's overlay switch as the mesh drives it: sleeve heartbeats and MTU probes
//! from UDP, fastdp heartbeats from the VXLAN device, overlay control messages from TCP, and
//! what the switch asks for in return. A connection counts as established once its switch
//! says a data path works.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use weft_crypto::key::SessionKey;
use weft_crypto::sleeve::Scheme;
use weft_wire::{sleeve, PeerName};

use super::{ConnId, FastdpChange, Mesh, MeshEvent, Origin};
use crate::overlay_switch::{fastdp_heartbeat_sender, SwitchOutput};

impl Mesh {
    /// A UDP datagram arrived on the mesh port from `from`: hands each special (control)
    /// record to [`Self::handle_special_frame`]. A driver whose forwarder already parsed the
    /// datagram calls that directly instead.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let Ok((sender, frames)) = sleeve::parse(datagram) else {
            tracing::debug!("dropping malformed datagram from {from}");
            return;
        };
        for f in frames {
            let Ok(f) = f else { break };
            if f.src == sender && f.dst == self.name() && sleeve::is_special(f.data) {
                self.handle_special_frame(from, sender, f.data, now);
            }
        }
    }

    /// A special sleeve frame (all-zero Ethernet header) that `sender` sent us from `from`:
    /// a heartbeat carrying the connection uid, or one of Weave Net's MTU probes.
    pub fn handle_special_frame(
        &mut self,
        from: SocketAddr,
        sender: PeerName,
        frame: &[u8],
        now: Instant,
    ) {
        let Some(&conn) = self.by_remote.get(&sender) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match sleeve::heartbeat_uid(frame) {
            Some(uid) if uid == c.uid => c.switch.handle_sleeve_heartbeat(from, now),
            Some(_) => return,
            None => c.switch.handle_sleeve_probe(frame.len()),
        }
        self.run_switch(conn, now);
    }

    /// A fastdp heartbeat frame arrived on the local VXLAN device.
    pub fn handle_fastdp_frame(&mut self, frame: &[u8], now: Instant) {
        let Some(sender) = fastdp_heartbeat_sender(frame) else {
            return;
        };
        let Some(&conn) = self.by_remote.get(&sender) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.switch.handle_fastdp_heartbeat(frame, now);
        }
        self.run_switch(conn, now);
    }

    pub(super) fn overlay_control(&mut self, conn: ConnId, tag: u8, payload: &[u8], now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.switch.handle_control(tag, payload, now);
        }
        self.run_switch(conn, now);
    }

    /// Sends what the connection's overlay switch produced and notes a first establishment.
    pub(super) fn run_switch(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let outs: Vec<SwitchOutput> = c.switch.drain().collect();
        let (remote, ip) = (c.remote, c.remote_addr.ip());
        let became = !c.established && c.switch.established();
        for o in outs {
            match o {
                SwitchOutput::Control(body) => self.send_raw(conn, &body),
                SwitchOutput::SleeveHeartbeat { to, datagram } => {
                    self.events.push_back(MeshEvent::SendUdp { to, datagram });
                }
                SwitchOutput::FastdpHeartbeat(frame) => {
                    self.events.push_back(MeshEvent::SendFastdp(frame));
                }
                SwitchOutput::FastdpFlood(on) => {
                    if let IpAddr::V4(ip) = ip {
                        tracing::info!(
                            "overlay_switch ->[{remote}] using {}",
                            if on { "fastdp" } else { "sleeve" }
                        );
                        self.events
                            .push_back(MeshEvent::Fastdp(FastdpChange::Flood {
                                peer: remote,
                                ip,
                                on,
                            }));
                    }
                }
            }
        }
        if became {
            self.mark_established(conn, now);
        }
    }

    pub(super) fn mark_established(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.established {
            return;
        }
        c.established = true;
        let (remote, addr, nick) = (c.remote, c.remote_addr, c.remote_nick.clone());
        tracing::info!("->[{addr}|{remote}({nick})]: connection fully established");
        self.peers.establish_local_connection(remote);
        self.routes_dirty = true;
        self.schedule_update(&[], now);
    }

    /// The data path measured the overlay MTU of the sleeve path to `peer` (what fits one
    /// datagram after the IP, UDP and sleeve headers); status shows it for sleeve connections.
    pub fn set_sleeve_mtu(&mut self, peer: PeerName, mtu: u32) {
        if let Some(c) = self
            .by_remote
            .get(&peer)
            .and_then(|id| self.conns.get_mut(id))
        {
            c.sleeve_mtu = Some(mtu);
        }
    }

    /// Whether a live connection to `peer` exists.
    pub fn is_connected(&self, peer: PeerName) -> bool {
        self.by_remote.contains_key(&peer)
    }

    /// Where sleeve datagrams for a directly connected peer go, once known.
    pub fn peer_udp_addr(&self, peer: PeerName) -> Option<SocketAddr> {
        let c = self.conns.get(self.by_remote.get(&peer)?)?;
        c.switch.udp_addr()
    }

    /// How sleeve datagrams to and from `peer` are sealed, when the connection to it is
    /// encrypted: the connection (a new one has a new key), the key, the scheme, and whether
    /// we dialled.
    pub fn sleeve_key(&self, peer: PeerName) -> Option<(ConnId, &SessionKey, Scheme, bool)> {
        let id = *self.by_remote.get(&peer)?;
        let c = self.conns.get(&id)?;
        let key = c.security.overlay_key.as_ref()?;
        let outbound = matches!(c.origin, Origin::Outbound { .. });
        Some((id, key, c.security.sleeve_scheme, outbound))
    }
}
