//! The "too big" decisions of spec §4.6 as pure functions: which sleeve path a frame takes
//! given the connection's overlay MTU, the ICMP "fragmentation needed" reply for a DF unicast
//! that does not fit, and Weave Net's own IPv4 fragmentation.
//!
//! The caller (whoever owns the DF and non-DF sockets and the PMTU state) applies these per
//! frame; nothing here keeps state. Malformed IPv4 headers make a frame count as non-IPv4.

use super::packet::{
    checksum, u16_at, ETHERTYPE_IPV4, ETH_LEN, FLAG_DF, FLAG_MF, FRAG_OFFSET_MASK, IP4_CHECKSUM,
    IP4_DST, IP4_FLAGS_FRAG, IP4_SRC, IP4_TOS, IP4_TOTAL_LEN,
};

/// What to do with a frame on a sleeve connection whose overlay MTU is `mtu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChoice {
    /// Send on the DF path.
    Df,
    /// Send on the non-DF path; the kernel fragments.
    NonDf,
    /// A too-big DF broadcast: drop (`dropping too big DF broadcast frame`).
    DropTooBigBroadcast,
    /// A too-big DF unicast: answer with [`frag_needed`] instead of sending.
    FragNeeded,
    /// A too-big non-DF IPv4 packet without working stack fragmentation: send the pieces of
    /// [`fragment`] on the DF path.
    Fragment,
}

/// The IPv4 header of an Ethernet frame and its length, if the frame is well-formed IPv4.
fn ipv4(frame: &[u8]) -> Option<(&[u8], usize)> {
    if frame.get(12..ETH_LEN)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETH_LEN..)?;
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    Some((ip, ihl))
}

/// Picks the path for `frame` (spec §4.6 table): `mtu` is the connection's overlay MTU, a
/// frame is too big when longer than `mtu + 14`; `stack_frag` says the last fragmentation test
/// was answered; `flood` says the frame is a broadcast, multicast or unknown-destination copy.
pub fn choose_path(frame: &[u8], mtu: usize, stack_frag: bool, flood: bool) -> PathChoice {
    let too_big = frame.len() > mtu.saturating_add(ETH_LEN);
    let Some((ip, _)) = ipv4(frame) else {
        return PathChoice::NonDf;
    };
    if u16_at(ip, IP4_FLAGS_FRAG) & FLAG_DF != 0 {
        return match (too_big, flood) {
            (false, _) => PathChoice::Df,
            (true, true) => PathChoice::DropTooBigBroadcast,
            (true, false) => PathChoice::FragNeeded,
        };
    }
    match (stack_frag, too_big) {
        (true, _) => PathChoice::NonDf,
        (false, false) => PathChoice::Df,
        (false, true) => PathChoice::Fragment,
    }
}

/// Writes into `out` (cleared first) the ICMP "Destination Unreachable / Fragmentation
/// Needed" frame answering the too-big DF IPv4 `frame`, to be injected locally as if from the
/// destination: MACs and IPs swapped, TTL 64, IP ID 0, the original TOS, next-hop MTU `mtu`,
/// carrying the original IP header plus 8 bytes. Returns `false` (and leaves `out` empty) if
/// `frame` is not IPv4.
pub fn frag_needed(frame: &[u8], mtu: u16, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some((ip, ihl)) = ipv4(frame) else {
        return false;
    };
    let quoted = &ip[..ip.len().min(ihl + 8)];
    let total = 20 + 8 + quoted.len();
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[..6]);
    out.extend_from_slice(&ETHERTYPE_IPV4);
    let ip_start = out.len();
    out.extend_from_slice(&[0x45, ip[IP4_TOS]]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    out.extend_from_slice(&ip[IP4_DST..IP4_DST + 4]);
    out.extend_from_slice(&ip[IP4_SRC..IP4_SRC + 4]);
    let sum = checksum(&out[ip_start..]);
    out[ip_start + IP4_CHECKSUM..ip_start + IP4_CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    let icmp_start = out.len();
    out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quoted);
    let sum = checksum(&out[icmp_start..]);
    out[icmp_start + 2..icmp_start + 4].copy_from_slice(&sum.to_be_bytes());
    true
}

/// Splits the IPv4 packet in `frame` into fragments of at most `mtu` IP bytes (payload a
/// multiple of 8, MF and offsets set, header checksum recomputed) and hands each complete
/// Ethernet frame to `emit`, reusing `scratch`. Returns the number of fragments, 0 if `frame`
/// is not IPv4 or `mtu` leaves no room for 8 payload bytes.
pub fn fragment(
    frame: &[u8],
    mtu: usize,
    scratch: &mut Vec<u8>,
    emit: &mut impl FnMut(&[u8]),
) -> usize {
    let Some((ip, ihl)) = ipv4(frame) else {
        return 0;
    };
    let ip_len = usize::from(u16_at(ip, IP4_TOTAL_LEN)).clamp(ihl, ip.len());
    let step = mtu.saturating_sub(ihl) & !7;
    if step == 0 {
        return 0;
    }
    let flags = u16_at(ip, IP4_FLAGS_FRAG);
    let base = flags & FRAG_OFFSET_MASK;
    let payload = &ip[ihl..ip_len];
    let mut n = 0;
    for (i, chunk) in payload.chunks(step).enumerate() {
        let off = i * step;
        let last = off + chunk.len() == payload.len();
        let mut word = (flags & !FRAG_OFFSET_MASK & !FLAG_DF)
            | (base.wrapping_add((off / 8) as u16) & FRAG_OFFSET_MASK);
        if !last {
            word |= FLAG_MF;
        }
        scratch.clear();
        scratch.extend_from_slice(&frame[..ETH_LEN]);
        scratch.extend_from_slice(&ip[..ihl]);
        scratch.extend_from_slice(chunk);
        let h = ETH_LEN;
        scratch[h + IP4_TOTAL_LEN..h + IP4_TOTAL_LEN + 2]
            .copy_from_slice(&((ihl + chunk.len()) as u16).to_be_bytes());
        scratch[h + IP4_FLAGS_FRAG..h + IP4_FLAGS_FRAG + 2].copy_from_slice(&word.to_be_bytes());
        scratch[h + IP4_CHECKSUM..h + IP4_CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let sum = checksum(&scratch[h..h + ihl]);
        scratch[h + IP4_CHECKSUM..h + IP4_CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
        emit(scratch);
        n += 1;
    }
    n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip_frame(payload_len: usize, df: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + payload_len) as u16;
        f.extend_from_slice(&[0x45, 0x10]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, if df { 0x40 } else { 0 }, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend((0..payload_len).map(|i| i as u8));
        f
    }

    #[test]
    fn path_table() {
        let fits = ip_frame(100, true);
        let big = ip_frame(2000, true);
        assert_eq!(choose_path(&fits, 1438, false, false), PathChoice::Df);
        assert_eq!(
            choose_path(&big, 1438, false, true),
            PathChoice::DropTooBigBroadcast
        );
        assert_eq!(choose_path(&big, 1438, true, false), PathChoice::FragNeeded);
        let big = ip_frame(2000, false);
        assert_eq!(choose_path(&big, 1438, true, false), PathChoice::NonDf);
        assert_eq!(choose_path(&big, 1438, false, false), PathChoice::Fragment);
        assert_eq!(
            choose_path(&ip_frame(100, false), 1438, false, false),
            PathChoice::Df
        );
        assert_eq!(
            choose_path(&[0u8; 3000], 1438, false, false),
            PathChoice::NonDf
        );
        // Exactly mtu + 14 fits.
        assert_eq!(
            choose_path(&ip_frame(1418, true), 1438, false, false),
            PathChoice::Df
        );
        assert_eq!(
            choose_path(&ip_frame(1419, true), 1438, false, false),
            PathChoice::FragNeeded
        );
    }

    #[test]
    fn frag_needed_layout() {
        let f = ip_frame(2000, true);
        let mut out = Vec::new();
        assert!(frag_needed(&f, 1438, &mut out));
        assert_eq!(&out[..6], &f[6..12]);
        assert_eq!(&out[6..12], &f[..6]);
        let ip = &out[14..];
        assert_eq!(ip.len(), 20 + 8 + 28);
        assert_eq!((ip[1], ip[4], ip[5], ip[8], ip[9]), (0x10, 0, 0, 64, 1));
        assert_eq!(&ip[12..16], &[10, 0, 0, 2]);
        assert_eq!(&ip[16..20], &[10, 0, 0, 1]);
        assert_eq!(checksum(&ip[..20]), 0);
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16_at(icmp, 6), 1438);
        assert_eq!(&icmp[8..], &f[14..14 + 28]);
        assert_eq!(checksum(icmp), 0);
        assert!(!frag_needed(&[0; 40], 1438, &mut out));
    }

    #[test]
    fn fragments_reassemble() {
        let f = ip_frame(3000, false);
        let mut pieces = Vec::new();
        let n = fragment(&f, 1438, &mut Vec::new(), &mut |p| pieces.push(p.to_vec()));
        assert_eq!(n, 3);
        let mut payload = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let ip = &p[14..];
            assert!(ip.len() <= 1438);
            assert_eq!(checksum(&ip[..20]), 0);
            let word = u16_at(ip, 6);
            assert_eq!(word & FLAG_MF != 0, i + 1 < pieces.len());
            assert_eq!(usize::from(word & FRAG_OFFSET_MASK) * 8, payload.len());
            assert_eq!(usize::from(u16_at(ip, 2)), ip.len());
            payload.extend_from_slice(&ip[20..]);
        }
        assert_eq!(payload, f[34..]);
        assert_eq!(fragment(&f, 20, &mut Vec::new(), &mut |_| {}), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            mtu in 0usize..200,
        ) {
            let mut f = bytes.clone();
            if f.len() > 14 { f[12] = 8; f[13] = 0; f[14] = 0x45 | (f[14] & 0x0f); }
            for frame in [&bytes, &f] {
                let _ = choose_path(frame, mtu, false, false);
                let _ = frag_needed(frame, mtu as u16, &mut Vec::new());
                let _ = fragment(frame, mtu, &mut Vec::new(), &mut |_| {});
            }
        }
    }
}
