//! The ARP side of attaching: duplicate address detection before an address is taken, and
//! gratuitous ARPs once it is.
//!
//! Frames are built here by hand: an ARP probe is one fixed 42-byte layout (RFC 5227), and the
//! gratuitous ARP comes from weft-netdev.

use std::net::Ipv4Addr;
use std::time::Duration;

use weft_netdev::{Netdev, PacketSocket, ETH_P_ARP};

use crate::AttachError;

/// When the gratuitous ARPs go out, each delay after the one before.
const GARP_SCHEDULE: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(5),
    Duration::from_millis(15),
];

/// How long an attach waits for the container's interface to get carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(2);

/// How long duplicate address detection waits for an answer.
const PROBE_WAIT: Duration = Duration::from_millis(250);

/// Announces `addrs` on the container's weave interface `name` (`index`, in `nl`'s namespace).
///
/// A neighbour that still maps a moved address to its old owner loses its packets until its
/// cache probes again (seconds) unless our announcement reaches it. One sent as the new port
/// comes up is often lost (seen on an idle host: the bridge never forwarded it), so wait for
/// carrier and announce three times over 20 ms (the port forwards as soon as it has carrier:
/// the bridge runs no STP).
pub(crate) async fn announce(
    nl: &Netdev,
    index: u32,
    name: &str,
    addrs: &[Ipv4Addr],
) -> Result<(), AttachError> {
    if addrs.is_empty() {
        return Ok(());
    }
    wait_for_carrier(nl, index, name).await;
    for delay in GARP_SCHEDULE {
        tokio::time::sleep(delay).await;
        for a in addrs {
            weft_netdev::send_gratuitous_arp(name, *a)?;
        }
    }
    Ok(())
}

/// Polls until the link has carrier, or [`CARRIER_WAIT`] has passed (the gratuitous ARP is
/// then sent anyway: better late than lost for certain).
async fn wait_for_carrier(nl: &Netdev, index: u32, name: &str) {
    let deadline = tokio::time::Instant::now() + CARRIER_WAIT;
    loop {
        if let Ok(Some(l)) = nl.link_by_index(index).await {
            if l.carrier {
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!("{name} has no carrier after {CARRIER_WAIT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An ARP probe (RFC 5227: sender IP 0.0.0.0) for `ip`, from `mac`.
fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    // sender IP stays 0.0.0.0, target MAC zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The sender of an ARP reply (opcode 2), if `f` is one.
fn arp_reply_sender(f: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    let f = f.get(..42)?;
    if f[12..14] != [0x08, 0x06] || f[20..22] != [0, 2] {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    Some((Ipv4Addr::new(f[28], f[29], f[30], f[31]), mac))
}

/// Duplicate address detection across the whole weave network: probes each address from the
/// bridge (the probe floods to local ports, sleeve peers and fastdp peers) and returns the
/// first one that someone answers for.
pub(crate) async fn probe_in_use(
    bridge: u32,
    bridge_mac: [u8; 6],
    addrs: &[Ipv4Addr],
) -> Result<Option<(Ipv4Addr, [u8; 6])>, AttachError> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let sock = PacketSocket::bind(bridge, ETH_P_ARP)?;
    for a in addrs {
        let _ = sock.try_send(&arp_probe(bridge_mac, *a));
    }
    let mut buf = [0u8; 128];
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await else {
            return Ok(None);
        };
        let Some(f) = buf.get(..n) else { continue };
        if let Some((sender, mac)) = arp_reply_sender(f) {
            if addrs.contains(&sender) {
                return Ok(Some((sender, mac)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn probe_frame_layout() {
        let f = arp_probe(MAC, Ipv4Addr::new(10, 2, 1, 9));
        assert_eq!(&f[..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[0; 4], "sender IP 0.0.0.0 (RFC 5227)");
        assert_eq!(&f[38..42], &[10, 2, 1, 9]);
        // A request is not a reply.
        assert_eq!(arp_reply_sender(&f), None);
    }

    #[test]
    fn reply_sender_is_read_and_short_frames_are_ignored() {
        let mut f = arp_probe(MAC, Ipv4Addr::new(10, 2, 1, 9));
        f[21] = 2;
        f[28..32].copy_from_slice(&[10, 2, 1, 9]);
        assert_eq!(
            arp_reply_sender(&f),
            Some((Ipv4Addr::new(10, 2, 1, 9), MAC))
        );
        assert_eq!(arp_reply_sender(&f[..41]), None);
        let mut ip = f;
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(arp_reply_sender(&ip), None);
    }
}
