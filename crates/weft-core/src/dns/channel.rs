//! DNS on the mesh: the `nameserver` gossip channel (Weave Net's name, spec §3.5) between the
//! [`Mesh`] and the [`Zone`].
//!
//! The DNS task registers the channel ([`register`]), hands every
//! [`MeshEvent::Channel`](crate::mesh::MeshEvent::Channel) for it to [`handle_message`] and
//! gives each [`ChannelSend`] it returns to the mesh ([`ChannelSend::send`]). Local changes
//! ([`Zone::add`], [`Zone::tombstone`], [`Zone::tombstone_container`]) return the data to
//! broadcast: [`broadcast`] turns it into a send. The full state goes out with
//! [`periodic_gossip`], every gossip interval with [`Mesh::gossip_neighbours`] and to each new
//! neighbour with [`Mesh::gossip_down`].
//!
//! The roles follow Weave's `Nameserver` gossiper: gossip from a neighbour is merged and what
//! was new relayed to random neighbours (`OnGossip`); a broadcast is merged, the mesh having
//! relayed the received bytes already (Weave relays its decoded copy after dropping entries of
//! unknown origins, which only ever makes the relay smaller); unicasts are ignored. Entries
//! claiming our origin that we corrected are broadcast. An error means the sender is out of
//! step (clock skew) or hostile; Weave closes the connection it came on, and the task decides
//! the same from the error.

use weft_wire::dns::{GossipData, GossipError, CHANNEL};
use weft_wire::PeerName;

use super::zone::{Zone, ZoneError};
use crate::mesh::{ChannelError, ChannelMessage, ChannelSend, Mesh, SendTo};

/// A message on the channel that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The payload was malformed or out of bounds.
    #[error("DNS message from {src}: {error}")]
    Wire {
        /// The peer it came from.
        src: PeerName,
        /// What was wrong.
        #[source]
        error: GossipError,
    },
    /// The zone refused it (clock skew, cap).
    #[error("DNS message from {src}: {error}")]
    Zone {
        /// The peer it came from.
        src: PeerName,
        /// Why.
        #[source]
        error: ZoneError,
    },
}

/// Registers the DNS channel with the mesh (once, unless DNS is off).
pub fn register(mesh: &mut Mesh) -> Result<(), ChannelError> {
    mesh.register_channel(CHANNEL)
}

/// Whether `channel` is DNS's (what the driver forwards to the DNS task).
pub fn is_dns_channel(channel: &str) -> bool {
    channel == CHANNEL
}

/// The broadcast of a local change (what [`Zone::add`] and the tombstone calls return).
pub fn broadcast(data: &GossipData) -> ChannelSend {
    ChannelSend::new(CHANNEL, SendTo::Broadcast, data.encode())
}

/// The payload of the periodic gossip and of the gossip to a new neighbour: every entry,
/// tombstones included, stamped `now` (Unix seconds).
pub fn periodic_gossip(zone: &Zone, now: i64) -> Vec<u8> {
    zone.gossip(now).encode()
}

/// Merges what arrived on the channel into the zone at `now` (Unix seconds) and returns what
/// to send: the broadcast of corrected entries of ours, then (for gossip) the relay of what was
/// new. On error the zone is unchanged.
pub fn handle_message(
    zone: &mut Zone,
    message: ChannelMessage,
    now: i64,
) -> Result<Vec<ChannelSend>, ReceiveError> {
    let (src, payload, relay_new) = match message {
        ChannelMessage::Gossip { src, payload } => (src, payload, true),
        ChannelMessage::Broadcast { src, payload } => (src, payload, false),
        ChannelMessage::Unicast { .. } => return Ok(Vec::new()),
    };
    let data = GossipData::decode(&payload).map_err(|error| ReceiveError::Wire { src, error })?;
    let received = zone
        .receive(data, now)
        .map_err(|error| ReceiveError::Zone { src, error })?;
    let mut sends = Vec::new();
    if !received.overridden.is_empty() {
        sends.push(broadcast(&GossipData {
            timestamp: now,
            entries: received.overridden,
        }));
    }
    if relay_new && !received.new.is_empty() {
        let relay = GossipData {
            timestamp: now,
            entries: received.new,
        };
        sends.push(ChannelSend::new(
            CHANNEL,
            SendTo::Neighbours,
            relay.encode(),
        ));
    }
    Ok(sends)
}
