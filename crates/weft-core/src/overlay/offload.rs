//! TAP offloads as pure functions over caller-owned buffers: the `virtio_net_hdr` that a TAP
//! opened with `IFF_VNET_HDR` puts in front of every frame, completing a checksum the kernel
//! left partial, software TCP segmentation ("TSO": one super-packet read from the TAP becomes
//! the wire-sized segments Weave Net peers expect, one per sleeve record) and its inverse on
//! receive, coalescing in-order TCP segments of one flow into one super-packet for a single
//! TAP write ([`Coalescer`]).
//!
//! Why: a container's TCP sends 64 KB super-packets into the bridge, and the kernel carries
//! them as one buffer through the bridge and the TAP when the TAP accepts them. Cutting them
//! into wire-sized segments here, and sending those with UDP GSO, keeps the underlay's per-packet
//! kernel work (IP fragmentation and reassembly of 64 KB datagrams) off the data path; on the
//! far side the segments are glued back so that the TAP write costs one skb, not forty.
//!
//! Every segment leaves with complete, correct IPv4 and TCP checksums, because the receiving
//! peer may be a Weave Net router that injects it as it is. Only segments whose TCP checksum
//! verifies are coalesced, since the coalesced super-packet is handed to the kernel as
//! checksum-partial (trusted). Malformed headers give an [`OffloadError`], never a panic.
//! Left out: IPv4 options on coalescing, IPv6 extension headers, UDP segmentation offload (the
//! TAP is never offered `TUN_F_USO*`), and ECN-style TSO (never offered `TUN_F_TSO_ECN`).

use super::packet::{
    checksum, put_u16, put_u32, u16_at, u32_at, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_LEN,
    IP4_CHECKSUM, IP4_FLAGS_FRAG, IP4_ID, IP4_PROTO, IP4_SRC, IP4_TOTAL_LEN,
};
pub use super::packet::{csum_fold, csum_partial};

/// Length of the `virtio_net_hdr` in front of each TAP frame (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const VNET_F_NEEDS_CSUM: u8 = 0x01;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0x00;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 0x01;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 0x04;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit.
pub const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPV6_HDR_LEN: usize = 40;
/// Offsets in the IPv6 header.
const IP6_PAYLOAD_LEN: usize = 4;
const IP6_NEXT: usize = 6;
const IP6_SRC: usize = 8;
/// Offsets in the TCP header.
const TCP_SEQ: usize = 4;
const TCP_ACK: usize = 8;
const TCP_DOFF: usize = 12;
const TCP_FLAGS: usize = 13;
const TCP_WINDOW: usize = 14;
const TCP_CHECKSUM: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK_FLAG: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;
/// IPv4 "more fragments" bit and fragment offset.
const IP4_MF_OFFSET: u16 = 0x3fff;
/// The smallest `gso_size` accepted (Linux's minimum TCP MSS).
const MIN_GSO_SIZE: usize = 48;
/// Largest IP packet (total length is 16 bits).
const MAX_IP_LEN: usize = 65535;

/// Why a TAP frame could not be offloaded; the frame is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Shorter than a `virtio_net_hdr`.
    #[error("frame shorter than its virtio_net_hdr")]
    NoHeader,
    /// A GSO type this code never asked the kernel for.
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGso(u8),
    /// Checksum start or offset outside the frame.
    #[error("checksum offsets outside the frame")]
    BadChecksumOffsets,
    /// A GSO frame that is not plain IPv4/IPv6 TCP with sane header lengths and `gso_size`.
    #[error("GSO frame is not well-formed TCP")]
    BadGsoFrame,
}

/// A decoded `virtio_net_hdr` (little-endian fields, as the TAP uses on little-endian hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VNET_F_*` flags.
    pub flags: u8,
    /// `GSO_*` type, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet to TCP) of a GSO frame; a hint only.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where, after `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Splits a TAP read into its header and the Ethernet frame.
    pub fn split(buf: &mut [u8]) -> Result<(Self, &mut [u8]), OffloadError> {
        let (h, frame) = buf
            .split_first_chunk_mut::<VNET_HDR_LEN>()
            .ok_or(OffloadError::NoHeader)?;
        let le = |a: u8, b: u8| u16::from_le_bytes([a, b]);
        let hdr = Self {
            flags: h[0],
            gso_type: h[1],
            hdr_len: le(h[2], h[3]),
            gso_size: le(h[4], h[5]),
            csum_start: le(h[6], h[7]),
            csum_offset: le(h[8], h[9]),
        };
        Ok((hdr, frame))
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = self.flags;
        h[1] = self.gso_type;
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        h
    }
}

/// The all-zero header: a plain frame with complete checksums.
pub const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Completes the checksum of a `VNET_F_NEEDS_CSUM` frame in place: the field holds the
/// pseudo-header sum, so the checksum over `csum_start..` with the field in it is the answer.
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let sum = !csum_fold(csum_partial(&frame[start..]));
    // 0 means "no checksum" to UDP; 0xffff is the same value in ones' complement.
    let sum = if sum == 0 { 0xffff } else { sum };
    put_u16(frame, at, sum);
    Ok(())
}

/// The IP version of a TCP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

/// Where the headers of an Ethernet + IP + TCP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpLayout {
    ip: Ip,
    /// IP header length.
    ip_len: usize,
    /// Offset of the TCP header in the frame.
    tcp: usize,
    /// Offset of the payload in the frame.
    payload: usize,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    end: usize,
}

/// Parses plain IPv4 (options allowed) or IPv6 (no extension headers) TCP.
fn tcp_layout(frame: &[u8]) -> Option<TcpLayout> {
    let ethertype = frame.get(12..ETH_LEN)?;
    let ipb = frame.get(ETH_LEN..)?;
    let (ip, ip_len, end) = if ethertype == ETHERTYPE_IPV4 {
        let first = *ipb.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || *ipb.get(IP4_PROTO)? != IPPROTO_TCP {
            return None;
        }
        // Not a fragment.
        if u16_at(ipb, IP4_FLAGS_FRAG) & IP4_MF_OFFSET != 0 {
            return None;
        }
        let total = usize::from(u16_at(ipb, IP4_TOTAL_LEN));
        (Ip::V4, ihl, total)
    } else if ethertype == ETHERTYPE_IPV6 {
        if *ipb.first()? >> 4 != 6 || *ipb.get(IP6_NEXT)? != IPPROTO_TCP {
            return None;
        }
        let total = IPV6_HDR_LEN + usize::from(u16_at(ipb, IP6_PAYLOAD_LEN));
        (Ip::V6, IPV6_HDR_LEN, total)
    } else {
        return None;
    };
    let tcp = ETH_LEN + ip_len;
    let doff = usize::from(*frame.get(tcp + TCP_DOFF)? >> 4) * 4;
    let payload = tcp + doff;
    let end = ETH_LEN + end;
    if doff < 20 || payload > end || end > frame.len() {
        return None;
    }
    Some(TcpLayout {
        ip,
        ip_len,
        tcp,
        payload,
        end,
    })
}

/// The TCP pseudo-header sum for `tcp_len` bytes of TCP, with addresses from the IP header.
fn pseudo_sum(frame: &[u8], l: &TcpLayout, tcp_len: usize) -> u64 {
    let (src, len) = match l.ip {
        Ip::V4 => (ETH_LEN + IP4_SRC, 8),
        Ip::V6 => (ETH_LEN + IP6_SRC, 32),
    };
    let addrs = frame.get(src..src + len).map_or(0, csum_partial);
    addrs + u64::from(IPPROTO_TCP) + tcp_len as u64
}

/// A TCP super-packet read from the TAP, to be cut into segments of `mss` payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct Tso<'a> {
    frame: &'a [u8],
    layout: TcpLayout,
    mss: usize,
    segments: usize,
}

impl<'a> Tso<'a> {
    /// Checks a GSO frame (`hdr.gso_type` TCPv4/TCPv6) and prepares its segmentation.
    pub fn new(frame: &'a [u8], hdr: &VnetHdr) -> Result<Self, OffloadError> {
        let want = match hdr.gso_type & !GSO_ECN {
            GSO_TCPV4 => Ip::V4,
            GSO_TCPV6 => Ip::V6,
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        let mut layout = tcp_layout(frame).ok_or(OffloadError::BadGsoFrame)?;
        // Below Linux's smallest MSS a 64 KB frame would become thousands of segments: a
        // container with CAP_NET_RAW could use that to amplify what it sends.
        if layout.ip != want || usize::from(hdr.gso_size) < MIN_GSO_SIZE {
            return Err(OffloadError::BadGsoFrame);
        }
        // The kernel may leave the IPv4 total length of a super-packet at its real value or
        // not; the frame's length is what the TAP handed over.
        layout.end = frame.len();
        let mss = usize::from(hdr.gso_size);
        let payload = layout.end - layout.payload;
        let segments = payload.div_ceil(mss).max(1);
        Ok(Self {
            frame,
            layout,
            mss,
            segments,
        })
    }

    /// The whole super-packet (its Ethernet header is every segment's).
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// How many segments it makes.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Frame length of the largest (every but the last) segment.
    pub fn max_segment_len(&self) -> usize {
        self.layout.payload + self.mss.min(self.frame.len() - self.layout.payload)
    }

    /// Whether this is IPv4 with DF set (so that a too-big segment size is answered with
    /// ICMP "fragmentation needed" rather than sent anyway).
    pub fn is_ipv4_df(&self) -> bool {
        self.layout.ip == Ip::V4 && u16_at(self.frame, ETH_LEN + IP4_FLAGS_FRAG) & 0x4000 != 0
    }

    /// Frame length of segment `i`.
    pub fn segment_len(&self, i: usize) -> usize {
        let payload = self.frame.len() - self.layout.payload;
        let start = (i * self.mss).min(payload);
        self.layout.payload + self.mss.min(payload - start)
    }

    /// Writes segment `i` (of [`Self::segments`]) as a complete Ethernet frame with correct
    /// IP and TCP checksums into the front of `out`, which must hold [`Self::segment_len`]
    /// bytes; returns that length, or 0 if `out` is too short or `i` out of range.
    pub fn write_segment(&self, i: usize, out: &mut [u8]) -> usize {
        let len = self.segment_len(i);
        if i >= self.segments || out.len() < len {
            return 0;
        }
        let l = &self.layout;
        let start = l.payload + i * self.mss;
        let out = &mut out[..len];
        out[..l.payload].copy_from_slice(&self.frame[..l.payload]);
        out[l.payload..].copy_from_slice(&self.frame[start..start + (len - l.payload)]);
        self.fix_up(i, out);
        len
    }

    /// Like [`Self::write_segment`], but appends segment `i` to `out` (no zero-filling first).
    /// Returns its length, 0 if `i` is out of range.
    pub fn append_segment(&self, i: usize, out: &mut Vec<u8>) -> usize {
        if i >= self.segments {
            return 0;
        }
        let l = &self.layout;
        let len = self.segment_len(i);
        let start = l.payload + i * self.mss;
        let at = out.len();
        out.extend_from_slice(&self.frame[..l.payload]);
        out.extend_from_slice(&self.frame[start..start + (len - l.payload)]);
        self.fix_up(i, &mut out[at..]);
        len
    }

    /// Turns a copy of the headers followed by segment `i`'s payload into segment `i`.
    fn fix_up(&self, i: usize, out: &mut [u8]) {
        let l = &self.layout;
        let len = out.len();
        let ip = ETH_LEN;
        match l.ip {
            Ip::V4 => {
                put_u16(out, ip + IP4_TOTAL_LEN, (len - ETH_LEN) as u16);
                let id = u16_at(self.frame, ip + IP4_ID).wrapping_add(i as u16);
                put_u16(out, ip + IP4_ID, id);
                put_u16(out, ip + IP4_CHECKSUM, 0);
                let sum = checksum(&out[ip..ip + l.ip_len]);
                put_u16(out, ip + IP4_CHECKSUM, sum);
            }
            Ip::V6 => put_u16(out, ip + IP6_PAYLOAD_LEN, (len - ETH_LEN - l.ip_len) as u16),
        }
        let t = l.tcp;
        let seq = u32_at(self.frame, t + TCP_SEQ).wrapping_add((i * self.mss) as u32);
        put_u32(out, t + TCP_SEQ, seq);
        let mut flags = self.frame[t + TCP_FLAGS];
        if i + 1 < self.segments {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        out[t + TCP_FLAGS] = flags;
        put_u16(out, t + TCP_CHECKSUM, 0);
        let sum = pseudo_sum(out, l, len - t) + csum_partial(&out[t..]);
        put_u16(out, t + TCP_CHECKSUM, !csum_fold(sum));
    }
}

/// The flow being coalesced.
#[derive(Debug, Clone, Copy)]
struct Pending {
    layout: TcpLayout,
    /// Payload bytes of the first segment; every one but the last has this size.
    mss: usize,
    segments: usize,
    next_seq: u32,
    /// No more segments may join (a short one or PSH came).
    closed: bool,
}

/// Counters of a [`Coalescer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoalesceStats {
    /// Super-packets written (two or more segments each).
    pub super_packets: u64,
    /// Segments that went into them.
    pub coalesced_segments: u64,
    /// Frames written as they came.
    pub plain: u64,
}

/// Glues consecutive in-order TCP segments of one flow into one super-packet (GSO TCPv4/v6
/// with a partial checksum) for a single TAP write; passes every other frame through as it
/// is, in order.
///
/// Feed every frame for the TAP to [`Self::push`]; call [`Self::flush`] when the input batch
/// ends (the socket would block), so that nothing waits. Output goes to `emit(header, frame)`
/// for one TAP write of the `virtio_net_hdr` followed by the frame.
#[derive(Debug)]
pub struct Coalescer {
    /// The pending super-packet's frame.
    buf: Vec<u8>,
    pending: Option<Pending>,
    stats: CoalesceStats,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(ETH_LEN + MAX_IP_LEN),
            pending: None,
            stats: CoalesceStats::default(),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// Takes one frame bound for the TAP.
    pub fn push(&mut self, frame: &[u8], emit: &mut impl FnMut(&[u8], &[u8])) {
        let Some(l) = Self::candidate(frame) else {
            self.flush(emit);
            self.stats.plain += 1;
            emit(&PLAIN_HDR, frame);
            return;
        };
        if self.try_append(frame, &l) {
            return;
        }
        self.flush(emit);
        let payload = l.end - l.payload;
        let flags = frame[l.tcp + TCP_FLAGS];
        self.buf.clear();
        self.buf.extend_from_slice(&frame[..l.end]);
        self.pending = Some(Pending {
            layout: l,
            mss: payload,
            segments: 1,
            next_seq: u32_at(frame, l.tcp + TCP_SEQ).wrapping_add(payload as u32),
            closed: flags & TCP_PSH != 0,
        });
    }

    /// Writes out the pending super-packet, if any.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8], &[u8])) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if p.segments < 2 {
            self.stats.plain += 1;
            emit(&PLAIN_HDR, &self.buf);
            return;
        }
        let l = p.layout;
        let len = self.buf.len();
        let b = &mut self.buf;
        let (gso_type, csum_start) = match l.ip {
            Ip::V4 => {
                put_u16(b, ETH_LEN + IP4_TOTAL_LEN, (len - ETH_LEN) as u16);
                put_u16(b, ETH_LEN + IP4_CHECKSUM, 0);
                let sum = checksum(&b[ETH_LEN..ETH_LEN + l.ip_len]);
                put_u16(b, ETH_LEN + IP4_CHECKSUM, sum);
                (GSO_TCPV4, l.tcp)
            }
            Ip::V6 => {
                put_u16(
                    b,
                    ETH_LEN + IP6_PAYLOAD_LEN,
                    (len - ETH_LEN - l.ip_len) as u16,
                );
                (GSO_TCPV6, l.tcp)
            }
        };
        // Checksum-partial: the field holds the pseudo-header sum, not complemented.
        let pseudo = csum_fold(pseudo_sum(b, &l, len - l.tcp));
        put_u16(b, l.tcp + TCP_CHECKSUM, pseudo);
        let hdr = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type,
            hdr_len: l.payload as u16,
            gso_size: p.mss as u16,
            csum_start: csum_start as u16,
            csum_offset: TCP_CHECKSUM as u16,
        };
        self.stats.super_packets += 1;
        self.stats.coalesced_segments += p.segments as u64;
        emit(&hdr.encode(), &self.buf);
    }

    /// A data segment that may be coalesced: plain TCP, only ACK (and PSH) set, some payload,
    /// and a TCP checksum that verifies (the super-packet goes to the kernel as trusted).
    fn candidate(frame: &[u8]) -> Option<TcpLayout> {
        let l = tcp_layout(frame)?;
        if l.payload == l.end {
            return None;
        }
        let flags = frame[l.tcp + TCP_FLAGS];
        let bad = TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_CWR | 0x40;
        if flags & bad != 0 || flags & TCP_ACK_FLAG == 0 {
            return None;
        }
        let tcp_len = l.end - l.tcp;
        let sum = pseudo_sum(frame, &l, tcp_len) + csum_partial(&frame[l.tcp..l.end]);
        (csum_fold(sum) == 0xffff).then_some(l)
    }

    /// Appends `frame` to the pending super-packet if it continues it.
    fn try_append(&mut self, frame: &[u8], l: &TcpLayout) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return false;
        };
        let pl = p.layout;
        let payload = l.end - l.payload;
        let b = &self.buf;
        let same_headers = p.closed
            || pl.ip != l.ip
            || pl.payload != l.payload
            || payload > p.mss
            || self.buf.len() - ETH_LEN + payload > MAX_IP_LEN
            || u32_at(frame, l.tcp + TCP_SEQ) != p.next_seq
            // Ethernet header, and the IP fields that must match: version to TOS (IPv4) or
            // flow label (IPv6), then TTL/protocol and addresses.
            || frame[..ETH_LEN + 2] != b[..ETH_LEN + 2]
            || !Self::same_ip(frame, b, l)
            // Ports, ACK number and data offset; flags but for PSH.
            || frame[l.tcp..l.tcp + 4] != b[l.tcp..l.tcp + 4]
            || frame[l.tcp + TCP_ACK..l.tcp + TCP_FLAGS] != b[l.tcp + TCP_ACK..l.tcp + TCP_FLAGS]
            || (frame[l.tcp + TCP_FLAGS] & !TCP_PSH) != (b[l.tcp + TCP_FLAGS] & !TCP_PSH)
            // Options (timestamps) must be identical.
            || frame[l.tcp + 20..l.payload] != b[l.tcp + 20..l.payload];
        if same_headers {
            return false;
        }
        let flags = frame[l.tcp + TCP_FLAGS];
        let window = u16_at(frame, l.tcp + TCP_WINDOW);
        self.buf.extend_from_slice(&frame[l.payload..l.end]);
        let t = pl.tcp;
        put_u16(&mut self.buf, t + TCP_WINDOW, window);
        if flags & TCP_PSH != 0 {
            self.buf[t + TCP_FLAGS] |= TCP_PSH;
            p.closed = true;
        }
        if payload < p.mss {
            p.closed = true;
        }
        p.segments += 1;
        p.next_seq = p.next_seq.wrapping_add(payload as u32);
        true
    }

    fn same_ip(frame: &[u8], b: &[u8], l: &TcpLayout) -> bool {
        let ip = ETH_LEN;
        match l.ip {
            Ip::V4 => {
                // Version/IHL/TOS; DF; TTL/protocol; addresses and options.
                frame[ip..ip + 2] == b[ip..ip + 2]
                    && frame[ip + IP4_FLAGS_FRAG] == b[ip + IP4_FLAGS_FRAG]
                    && frame[ip + 8..ip + 10] == b[ip + 8..ip + 10]
                    && frame[ip + IP4_SRC..ip + l.ip_len] == b[ip + IP4_SRC..ip + l.ip_len]
            }
            Ip::V6 => {
                frame[ip..ip + 4] == b[ip..ip + 4]
                    && frame[ip + IP6_NEXT..ip + IPV6_HDR_LEN]
                        == b[ip + IP6_NEXT..ip + IPV6_HDR_LEN]
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A TCP/IPv4 frame with timestamps option, `payload` bytes of a pattern from `seq`.
    fn tcp4(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 32 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 2, 1, 1, 10, 2, 1, 2]);
        let sum = checksum(&f[14..34]);
        put_u16(&mut f, 24, sum);
        f.extend_from_slice(&[0x80, 0x00, 0x14, 0x51]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 7, 0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(payload);
        let l = tcp_layout(&f).unwrap();
        let sum = pseudo_sum(&f, &l, f.len() - l.tcp) + csum_partial(&f[l.tcp..]);
        put_u16(&mut f, l.tcp + TCP_CHECKSUM, !csum_fold(sum));
        f
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let l = tcp_layout(f).unwrap();
        let sum = pseudo_sum(f, &l, l.end - l.tcp) + csum_partial(&f[l.tcp..l.end]);
        csum_fold(sum) == 0xffff && checksum(&f[14..14 + l.ip_len]) == 0
    }

    fn gso_hdr(mss: u16) -> VnetHdr {
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    fn segment_all(super_packet: &[u8], mss: u16) -> Vec<Vec<u8>> {
        let tso = Tso::new(super_packet, &gso_hdr(mss)).unwrap();
        (0..tso.segments())
            .map(|i| {
                let mut out = vec![0u8; tso.segment_len(i)];
                assert_eq!(tso.write_segment(i, &mut out), out.len());
                let mut appended = vec![9u8; 3];
                assert_eq!(tso.append_segment(i, &mut appended), out.len());
                assert_eq!(appended[3..], out[..]);
                out
            })
            .collect()
    }

    #[test]
    fn header_round_trip() {
        let h = gso_hdr(1386);
        let mut buf = h.encode().to_vec();
        buf.extend_from_slice(&[1, 2, 3]);
        let (back, frame) = VnetHdr::split(&mut buf).unwrap();
        assert_eq!((back, &*frame), (h, &[1u8, 2, 3][..]));
        assert_eq!(VnetHdr::split(&mut [0u8; 9]), Err(OffloadError::NoHeader));
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_fold(csum_partial(&d)), 0xddf2);
        // Without its last byte, the word f6f7 counts as f600.
        assert_eq!(csum_fold(csum_partial(&d[..7])), 0xddf2 - 0xf7);
    }

    #[test]
    fn completes_partial_checksum() {
        let mut f = tcp4(1, b"hello world", TCP_ACK_FLAG | TCP_PSH);
        let l = tcp_layout(&f).unwrap();
        let pseudo = csum_fold(pseudo_sum(&f, &l, f.len() - l.tcp));
        put_u16(&mut f, l.tcp + TCP_CHECKSUM, pseudo);
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: l.tcp as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&mut f, &h).unwrap();
        assert!(tcp_ok(&f));
        let bad = VnetHdr {
            csum_start: 500,
            ..h
        };
        assert_eq!(
            complete_checksum(&mut f, &bad),
            Err(OffloadError::BadChecksumOffsets)
        );
    }

    #[test]
    fn segments_have_sequence_flags_and_checksums() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let sp = tcp4(1000, &payload, TCP_ACK_FLAG | TCP_PSH | TCP_FIN | TCP_CWR);
        let segs = segment_all(&sp, 1386);
        assert_eq!(segs.len(), 4);
        let mut got = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(tcp_ok(s), "segment {i}");
            let l = tcp_layout(s).unwrap();
            assert_eq!(u32_at(s, l.tcp + 4), 1000 + 1386 * i as u32);
            assert_eq!(u16_at(s, 18), 0x1234 + i as u16);
            let flags = s[l.tcp + TCP_FLAGS];
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, i == 3);
            assert_eq!(flags & TCP_CWR != 0, i == 0);
            got.extend_from_slice(&s[l.payload..]);
        }
        assert_eq!(got, payload);
        let tso = Tso::new(&sp, &gso_hdr(1386)).unwrap();
        assert_eq!(tso.max_segment_len(), 66 + 1386);
        assert!(tso.is_ipv4_df());
    }

    #[test]
    fn rejects_bad_gso() {
        let sp = tcp4(1, &[0; 100], TCP_ACK_FLAG);
        let mut h = gso_hdr(0);
        assert_eq!(Tso::new(&sp, &h).err(), Some(OffloadError::BadGsoFrame));
        // A tiny gso_size would turn one frame into thousands of datagrams.
        assert_eq!(
            Tso::new(&sp, &gso_hdr(1)).err(),
            Some(OffloadError::BadGsoFrame)
        );
        assert!(Tso::new(&sp, &gso_hdr(48)).is_ok());
        h.gso_size = 10;
        h.gso_type = 3;
        assert_eq!(
            Tso::new(&sp, &h).err(),
            Some(OffloadError::UnsupportedGso(3))
        );
        h.gso_type = GSO_TCPV6;
        assert_eq!(Tso::new(&sp, &h).err(), Some(OffloadError::BadGsoFrame));
        assert!(Tso::new(&sp[..40], &gso_hdr(10)).is_err());
    }

    fn coalesce(frames: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        let mut emit = |h: &[u8], f: &[u8]| {
            let mut b = h.to_vec();
            b.extend_from_slice(f);
            let (h, f) = VnetHdr::split(&mut b).unwrap();
            out.push((h, f.to_vec()));
        };
        for f in frames {
            c.push(f, &mut emit);
        }
        c.flush(&mut emit);
        out
    }

    #[test]
    fn coalesces_what_was_segmented() {
        let payload: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let sp = tcp4(77, &payload, TCP_ACK_FLAG | TCP_PSH);
        let segs = segment_all(&sp, 1386);
        let out = coalesce(&segs);
        assert_eq!(out.len(), 1);
        let (h, f) = &out[0];
        assert_eq!(
            (h.gso_type, h.gso_size, h.flags),
            (GSO_TCPV4, 1386, VNET_F_NEEDS_CSUM)
        );
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 16, 66));
        // Same bytes as the super-packet but for the partial checksum and the IP ID.
        let l = tcp_layout(f).unwrap();
        assert_eq!(f[l.payload..], payload[..]);
        assert_eq!(f[l.tcp..l.tcp + 16], sp[l.tcp..l.tcp + 16]);
        assert_eq!(checksum(&f[14..34]), 0);
        let mut full = f.clone();
        complete_checksum(&mut full, h).unwrap();
        assert!(tcp_ok(&full));
    }

    #[test]
    fn passes_through_what_does_not_continue() {
        let a = tcp4(1, &[1; 100], TCP_ACK_FLAG);
        let gap = tcp4(500, &[2; 100], TCP_ACK_FLAG);
        let syn = tcp4(600, &[3; 100], TCP_SYN | TCP_ACK_FLAG);
        let mut corrupt = tcp4(700, &[4; 100], TCP_ACK_FLAG);
        let n = corrupt.len();
        corrupt[n - 1] ^= 0xff;
        let arp = vec![0xffu8; 60];
        let frames = vec![
            a.clone(),
            gap.clone(),
            syn.clone(),
            corrupt.clone(),
            arp.clone(),
        ];
        let out = coalesce(&frames);
        let plain: Vec<Vec<u8>> = out
            .iter()
            .map(|(h, f)| {
                assert_eq!(*h, VnetHdr::default());
                f.clone()
            })
            .collect();
        assert_eq!(plain, frames);
    }

    #[test]
    fn short_segment_closes_the_flow() {
        let f1 = tcp4(0, &[1; 100], TCP_ACK_FLAG);
        let f2 = tcp4(100, &[2; 50], TCP_ACK_FLAG);
        let f3 = tcp4(150, &[3; 100], TCP_ACK_FLAG);
        let out = coalesce(&[f1, f2, f3.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.gso_size, 100);
        assert_eq!(out[0].1.len(), 66 + 150);
        assert_eq!(out[1], (VnetHdr::default(), f3));
    }

    proptest! {
        #[test]
        fn segment_then_coalesce_round_trips(
            len in 1usize..20000,
            mss in 48u16..3000,
            seq in any::<u32>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
            let sp = tcp4(seq, &payload, TCP_ACK_FLAG);
            let segs = segment_all(&sp, mss);
            prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)));
            let mut got = Vec::new();
            for s in &segs {
                prop_assert!(tcp_ok(s));
                got.extend_from_slice(&s[66..]);
            }
            prop_assert_eq!(&got, &payload);
            let out = coalesce(&segs);
            let mut back = Vec::new();
            for (_, f) in &out {
                back.extend_from_slice(&f[66..]);
            }
            prop_assert_eq!(back, payload);
        }

        #[test]
        fn arbitrary_input_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            hdr in prop::collection::vec(any::<u8>(), 10),
        ) {
            let mut with_hdr = hdr.clone();
            with_hdr.extend_from_slice(&bytes);
            if let Ok((h, frame)) = VnetHdr::split(&mut with_hdr) {
                let _ = complete_checksum(frame, &h);
                if let Ok(t) = Tso::new(frame, &h) {
                    let mut out = vec![0u8; 70000];
                    for i in 0..t.segments().min(50) {
                        t.write_segment(i, &mut out);
                    }
                }
            }
            let mut c = Coalescer::new();
            let mut n = 0;
            c.push(&bytes, &mut |_, _| n += 1);
            c.push(&bytes, &mut |_, _| n += 1);
            c.flush(&mut |_, _| n += 1);
        }
    }
}
