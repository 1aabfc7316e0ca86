//! Ethernet and IPv4 header facts and the Internet checksum, shared by the packet rewriting of
//! [`super::pmtu`] (ICMP replies, fragmentation) and [`super::offload`] (segmentation and
//! coalescing). Accessors take offsets that may run past the end: reads give 0 and writes do
//! nothing, so malformed input cannot panic; callers check lengths first.

/// Ethernet header length.
pub(crate) const ETH_LEN: usize = 14;
/// Ethertype of IPv4.
pub(crate) const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// Ethertype of IPv6.
pub(crate) const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// Offsets within the IPv4 header.
pub(crate) const IP4_TOS: usize = 1;
pub(crate) const IP4_TOTAL_LEN: usize = 2;
pub(crate) const IP4_ID: usize = 4;
pub(crate) const IP4_FLAGS_FRAG: usize = 6;
pub(crate) const IP4_PROTO: usize = 9;
pub(crate) const IP4_CHECKSUM: usize = 10;
pub(crate) const IP4_SRC: usize = 12;
pub(crate) const IP4_DST: usize = 16;
/// The DF and MF bits and the offset mask of the IPv4 flags/fragment-offset word.
pub(crate) const FLAG_DF: u16 = 0x4000;
pub(crate) const FLAG_MF: u16 = 0x2000;
pub(crate) const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Ones'-complement partial sum of `data` read as big-endian 16-bit words (a trailing odd
/// byte is padded with zero), already folded to 16 bits. Sums of regions that each start at an
/// even offset add up.
pub fn csum_partial(data: &[u8]) -> u64 {
    // The hot loop of the data path (every segment is summed on send and on receive), so it
    // reads native-endian words, which the compiler vectorises: the ones'-complement sum is
    // byte-order independent up to a final byte swap (RFC 1071 §2(B)). Four bytes at a time
    // into 64 bits: 2^32 ≡ 1 (mod 2^16 − 1), so folding gives the 16-bit sum, and 64 bits
    // cannot overflow for any frame.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rem.len()].copy_from_slice(rem);
    acc += u64::from(u32::from_ne_bytes(tail));
    let folded = csum_fold(acc);
    u64::from(if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    })
}

/// Folds a partial sum to 16 bits (not complemented).
pub fn csum_fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |x| u16::from_be_bytes([x[0], x[1]]))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    if let Some(x) = b.get_mut(at..at + 2) {
        x.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(x) = b.get_mut(at..at + 4) {
        x.copy_from_slice(&v.to_be_bytes());
    }
}

/// The Internet checksum of `b` (the checksum field inside `b` zeroed by the caller).
pub(crate) fn checksum(b: &[u8]) -> u16 {
    !csum_fold(csum_partial(b))
}
