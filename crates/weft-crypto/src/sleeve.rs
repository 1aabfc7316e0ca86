//! Weave Net's encrypted sleeve datagram: sealing and opening with the session key, and the
//! replay window.
//!
//! ```text
//! offset  size
//! 0       6    sender peer name, in clear (the receiver finds the connection by it)
//! 6       8    u64be: bit 63 = sent on the DF path, bits 0..63 = sequence number
//! 14      16   Poly1305 tag          \ secretbox of the frame records
//! 30      …    XSalsa20 ciphertext   / (the unencrypted datagram after its sender name)
//! ```
//!
//! The nonce is byte 0 = `0x80` when the *sender* dialled the TCP connection (bit 6 stays
//! clear, unlike the control connection's nonces under the same key), bytes 16..24 = the same
//! u64 as offset 6. Each path (DF and non-DF) of a connection has its own sealer counting from
//! 0, and the receiver keeps one replay window per path.
//!
//! Replay protection (Weave Net's `NaClDecryptorInstance`) runs only after a datagram opens,
//! so a forged datagram never moves it. The window covers `2^21` sequence numbers as two
//! bitsets of [`WINDOW_SIZE`], the upper one always holding the highest number seen: a number
//! in a later set slides the window by one set (or, further ahead, empties both), one in the
//! lower set or a seen one is a replay, one below the lower set is too old. The bitsets grow
//! as the numbers in them do (at most 128 KiB each) and keep their memory when the window
//! slides, so a steady stream allocates nothing.
//!
//! Everything works on caller-owned buffers in place; nothing allocates per datagram.

use crate::aead::{AeadOpener, AeadSealer};
use crate::key::SessionKey;
use crate::secretbox::{self, NONCE_LEN, TAG_LEN};

/// Bytes of the clear-text sender name in front of every sleeve datagram.
pub const SENDER_LEN: usize = 6;
/// Bytes of the sequence field.
pub const SEQ_LEN: usize = 8;
/// Bytes from the datagram's start to the first plaintext (records) byte once sealed.
pub const HEADER_LEN: usize = SENDER_LEN + SEQ_LEN + TAG_LEN;
/// Bytes an encrypted datagram has beyond the unencrypted one.
pub const OVERHEAD: usize = SEQ_LEN + TAG_LEN;
/// Bit 63 of the sequence field: the datagram went on the DF path.
const DF_BIT: u64 = 1 << 63;
/// Bit 7 of nonce byte 0: the sender dialled the TCP connection.
const OUTBOUND_BIT: u8 = 1 << 7;
/// Sequence numbers per half of the replay window (Weave Net's `WindowSize` of 20 bits).
pub const WINDOW_SIZE: u64 = 1 << WINDOW_BITS;
const WINDOW_BITS: u32 = 20;

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The buffer has no room for the header in front of the records.
    #[error("sleeve datagram of {0} bytes has no room for the {HEADER_LEN}-byte header")]
    NoRoom(usize),
    /// 2^63 datagrams sent on one path: the next number would collide with the DF bit.
    #[error("sleeve sequence numbers exhausted")]
    Exhausted,
}

/// Why a received datagram was refused; the texts of the first two are Weave Net's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Too short for the sequence field.
    #[error("encrypted UDP packet too short; expected length >= 8, got {0}")]
    TooShort(usize),
    /// Did not authenticate (forged, altered, truncated, or another key).
    #[error("UDP packet decryption failed")]
    Decrypt,
    /// Genuine but seen before, or older than the window; Weave Net drops these silently.
    #[error("replayed or too old sleeve datagram (sequence {0})")]
    Replayed(u64),
}

/// Seals the datagrams of one path (DF or not) of one connection.
#[derive(Debug, Clone)]
pub struct SleeveSealer {
    key: SessionKey,
    nonce: [u8; NONCE_LEN],
    seq: u64,
    df: bool,
}

impl SleeveSealer {
    /// The sealer of our side, which dialled the TCP connection when `outbound`, for the DF
    /// path when `df`.
    pub fn new(key: SessionKey, outbound: bool, df: bool) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        if outbound {
            nonce[0] = OUTBOUND_BIT;
        }
        Self {
            key,
            nonce,
            seq: 0,
            df,
        }
    }

    /// Seals a datagram in place. `datagram` is `sender[6] || room[24] || records`: the caller
    /// writes the sender name and the records, leaving [`OVERHEAD`] bytes between them; this
    /// fills in the sequence field and the tag and encrypts the records.
    pub fn seal_in_place(&mut self, datagram: &mut [u8]) -> Result<(), SealError> {
        if datagram.len() < HEADER_LEN {
            return Err(SealError::NoRoom(datagram.len()));
        }
        if self.seq & DF_BIT != 0 {
            return Err(SealError::Exhausted);
        }
        let field = self.seq | if self.df { DF_BIT } else { 0 };
        let (seq_slot, sealed) = datagram[SENDER_LEN..].split_at_mut(SEQ_LEN);
        seq_slot.copy_from_slice(&field.to_be_bytes());
        self.nonce[16..].copy_from_slice(&field.to_be_bytes());
        let sealed_ok = secretbox::seal(&self.key, &self.nonce, sealed);
        debug_assert!(sealed_ok, "length checked above");
        self.seq += 1;
        Ok(())
    }

    /// The sequence number the next datagram gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Jumps the counter (tests and fuzzing reach the window's edges with it).
    #[doc(hidden)]
    pub fn set_next_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

/// Opens the datagrams a connection's remote sends on both paths, refusing replays.
#[derive(Debug, Clone)]
pub struct SleeveOpener {
    key: SessionKey,
    /// Nonce byte 0 of the remote's datagrams.
    byte0: u8,
    plain: ReplayWindow,
    df: ReplayWindow,
}

impl SleeveOpener {
    /// The opener of our side, which dialled the TCP connection when `outbound` (so the remote,
    /// whose datagrams these are, did not).
    pub fn new(key: SessionKey, outbound: bool) -> Self {
        Self {
            key,
            byte0: if outbound { 0 } else { OUTBOUND_BIT },
            plain: ReplayWindow::default(),
            df: ReplayWindow::default(),
        }
    }

    /// Opens what follows the sender name of a received datagram (`datagram[SENDER_LEN..]`) in
    /// place and returns the frame records. Any error leaves the opener's state unchanged; the
    /// buffer is changed only when the datagram authenticates (on [`OpenError::Replayed`] it
    /// holds the decrypted records, which must be dropped).
    pub fn open_in_place<'a>(&mut self, payload: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        let len = payload.len();
        let Some((field, sealed)) = payload.split_first_chunk_mut::<SEQ_LEN>() else {
            return Err(OpenError::TooShort(len));
        };
        let field = u64::from_be_bytes(*field);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = self.byte0;
        nonce[16..].copy_from_slice(&field.to_be_bytes());
        let records = secretbox::open(&self.key, &nonce, sealed).map_err(|_| OpenError::Decrypt)?;
        let seq = field & !DF_BIT;
        let window = if field & DF_BIT != 0 {
            &mut self.df
        } else {
            &mut self.plain
        };
        if !window.accept(seq) {
            return Err(OpenError::Replayed(seq));
        }
        Ok(records)
    }
}

impl SleeveOpener {
    /// Opens a whole received datagram (`sender[6] || sealed`) in place and returns its plain
    /// form, `sender[6] || records`, as the unencrypted sleeve carries it: the records are
    /// decrypted where they lie and the sender name is copied in front of them. Errors as
    /// [`Self::open_in_place`]; datagrams shorter than the sender name are [`OpenError::TooShort`].
    pub fn open_datagram<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        let Some(payload) = datagram.get_mut(SENDER_LEN..) else {
            return Err(OpenError::TooShort(0));
        };
        let records = self.open_in_place(payload)?.len();
        let start = datagram.len() - records - SENDER_LEN;
        datagram.copy_within(..SENDER_LEN, start);
        Ok(&datagram[start..])
    }
}

/// Appends `plain` (`sender[6] || records`) to `out` with room for the header after the sender
/// name, and seals it there with `seal`; on error `out` is as it was.
fn append_sealed(
    plain: &[u8],
    out: &mut Vec<u8>,
    seal: impl FnOnce(&mut [u8]) -> Result<(), SealError>,
) -> Result<(), SealError> {
    let Some((sender, records)) = plain.split_first_chunk::<SENDER_LEN>() else {
        return Err(SealError::NoRoom(plain.len()));
    };
    let start = out.len();
    out.extend_from_slice(sender);
    out.resize(start + HEADER_LEN, 0);
    out.extend_from_slice(records);
    let r = seal(&mut out[start..]);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// How a connection's sleeve datagrams are sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Weave Net's NaCl secretbox: with any peer.
    #[default]
    Weave,
    /// weft's AES-256-GCM ([`crate::aead`]): when both peers are weft routers that offer it.
    Aes256Gcm,
}

impl Scheme {
    /// The name status and logs show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Weave => "nacl",
            Self::Aes256Gcm => crate::aead::SCHEME_NAME,
        }
    }
}

/// Seals one path's datagrams in the connection's [`Scheme`].
#[derive(Debug)]
pub enum Sealer {
    /// Weave Net's scheme.
    Weave(SleeveSealer),
    /// weft's scheme (boxed: its keys make it several times larger).
    Aead(Box<AeadSealer>),
}

impl Sealer {
    /// Our side's sealer (we dialled when `outbound`) for the mesh's control datagrams when
    /// `mesh_path` (Weave Net's DF path, where it sends heartbeats), else for the data path's.
    pub fn new(scheme: Scheme, key: &SessionKey, outbound: bool, mesh_path: bool) -> Self {
        match scheme {
            Scheme::Weave => Self::Weave(SleeveSealer::new(key.clone(), outbound, mesh_path)),
            Scheme::Aes256Gcm => Self::Aead(Box::new(AeadSealer::new(key, outbound, mesh_path))),
        }
    }

    /// Appends the sealed form of a plain datagram (`sender[6] || records`) to `out`, which
    /// is [`OVERHEAD`] bytes longer; on error `out` is as it was.
    pub fn seal_to(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        append_sealed(plain, out, |d| self.seal_in_place(d))
    }

    /// Seals `sender[6] || room[24] || records` in place (see
    /// [`SleeveSealer::seal_in_place`]).
    pub fn seal_in_place(&mut self, datagram: &mut [u8]) -> Result<(), SealError> {
        match self {
            Self::Weave(s) => s.seal_in_place(datagram),
            Self::Aead(s) => s.seal_in_place(datagram),
        }
    }

    /// The sequence number the next datagram gets.
    pub fn next_seq(&self) -> u64 {
        match self {
            Self::Weave(s) => s.next_seq(),
            Self::Aead(s) => s.next_seq(),
        }
    }

    /// Jumps the counter (tests and fuzzing reach the window's and epochs' edges with it).
    #[doc(hidden)]
    pub fn set_next_seq(&mut self, seq: u64) {
        match self {
            Self::Weave(s) => s.set_next_seq(seq),
            Self::Aead(s) => s.set_next_seq(seq),
        }
    }
}

/// Opens what the remote of a connection sends, in the connection's [`Scheme`].
#[derive(Debug)]
pub enum Opener {
    /// Weave Net's scheme.
    Weave(SleeveOpener),
    /// weft's scheme (boxed: its keys make it several times larger).
    Aead(Box<AeadOpener>),
}

impl Opener {
    /// Our side's opener (we dialled when `outbound`).
    pub fn new(scheme: Scheme, key: &SessionKey, outbound: bool) -> Self {
        match scheme {
            Scheme::Weave => Self::Weave(SleeveOpener::new(key.clone(), outbound)),
            Scheme::Aes256Gcm => Self::Aead(Box::new(AeadOpener::new(key, outbound))),
        }
    }

    /// Opens a whole received datagram in place and returns its plain form (`sender[6] ||
    /// records`); a forged, altered or replayed datagram changes nothing.
    pub fn open_datagram<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        match self {
            Self::Weave(o) => o.open_datagram(datagram),
            Self::Aead(o) => o.open_datagram(datagram),
        }
    }
}

/// One path's replay window: which sequence numbers of the current and previous window halves
/// were seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    /// Index of the upper half (`seq >> WINDOW_BITS`).
    current: u64,
    used: Bits,
    previous: Bits,
}

impl ReplayWindow {
    /// Records `seq` and says whether it is new. A refused number changes nothing.
    pub(crate) fn accept(&mut self, seq: u64) -> bool {
        // Lossless: the offset is below 2^20.
        let offset = (seq & (WINDOW_SIZE - 1)) as usize;
        let window = seq >> WINDOW_BITS;
        // Both are below 2^43, so the difference fits an i64 exactly.
        let set = match window.wrapping_sub(self.current) as i64 {
            d if d < -1 => return false,
            -1 => &mut self.previous,
            0 => &mut self.used,
            1 => {
                // Slide by one half: the upper set becomes the lower one.
                self.current = window;
                std::mem::swap(&mut self.previous, &mut self.used);
                self.used.clear();
                &mut self.used
            }
            _ => {
                self.current = window;
                self.previous.clear();
                self.used.clear();
                &mut self.used
            }
        };
        set.insert(offset)
    }
}

/// A set of offsets below [`WINDOW_SIZE`], as bits in words grown on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `i`; returns whether it was absent.
    fn insert(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    /// Empties the set, keeping its memory for reuse.
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SENDER: [u8; 6] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];

    fn key() -> SessionKey {
        SessionKey::from_bytes([0x5a; 32])
    }

    /// A sealed datagram carrying `records`.
    fn datagram(tx: &mut SleeveSealer, records: &[u8]) -> Vec<u8> {
        let mut d = SENDER.to_vec();
        d.extend_from_slice(&[0; OVERHEAD]);
        d.extend_from_slice(records);
        tx.seal_in_place(&mut d).unwrap();
        d
    }

    fn open(rx: &mut SleeveOpener, d: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut d = d.to_vec();
        rx.open_in_place(&mut d[SENDER_LEN..]).map(<[u8]>::to_vec)
    }

    #[test]
    fn layout_and_paths() {
        let mut tx = SleeveSealer::new(key(), true, false);
        let mut tx_df = SleeveSealer::new(key(), true, true);
        let mut rx = SleeveOpener::new(key(), false);
        let a = datagram(&mut tx, b"records");
        assert_eq!(a.len(), SENDER_LEN + OVERHEAD + 7);
        assert_eq!(&a[..6], &SENDER);
        assert_eq!(&a[6..14], &0u64.to_be_bytes());
        let b = datagram(&mut tx_df, b"df");
        assert_eq!(&b[6..14], &(1u64 << 63).to_be_bytes());
        let c = datagram(&mut tx, b"");
        assert_eq!(&c[6..14], &1u64.to_be_bytes());
        // Sequence 0 on both paths: separate windows.
        assert_eq!(open(&mut rx, &a).unwrap(), b"records");
        assert_eq!(open(&mut rx, &b).unwrap(), b"df");
        assert_eq!(open(&mut rx, &c).unwrap(), b"");
        assert_eq!(open(&mut rx, &a), Err(OpenError::Replayed(0)));
        // The dialler's own datagrams (its polarity) do not open as the remote's.
        let mut same_side = SleeveOpener::new(key(), true);
        assert_eq!(open(&mut same_side, &a), Err(OpenError::Decrypt));
        // And a control-connection nonce (bit 6) is a different nonce.
        assert_eq!(
            OpenError::TooShort(3).to_string(),
            "encrypted UDP packet too short; expected length >= 8, got 3"
        );
        assert_eq!(
            OpenError::Decrypt.to_string(),
            "UDP packet decryption failed"
        );
    }

    #[test]
    fn whole_datagrams_seal_and_open() {
        let mut tx = Sealer::new(Scheme::Weave, &key(), false, true);
        let mut rx = SleeveOpener::new(key(), true);
        let mut plain = SENDER.to_vec();
        plain.extend_from_slice(b"frame records");
        let mut out = b"earlier".to_vec();
        tx.seal_to(&plain, &mut out).unwrap();
        assert_eq!(out.len(), 7 + plain.len() + OVERHEAD);
        assert_eq!(&out[..7], b"earlier");
        assert_eq!(
            out[7..],
            datagram(&mut SleeveSealer::new(key(), false, true), b"frame records")
        );
        let mut d = out[7..].to_vec();
        assert_eq!(rx.open_datagram(&mut d).unwrap(), plain.as_slice());
        // A replay, a short one, a sender name alone.
        let mut d = out[7..].to_vec();
        assert_eq!(rx.open_datagram(&mut d), Err(OpenError::Replayed(0)));
        assert_eq!(
            rx.open_datagram(&mut [1, 2, 3]),
            Err(OpenError::TooShort(0))
        );
        assert_eq!(
            rx.open_datagram(&mut SENDER.clone()),
            Err(OpenError::TooShort(0))
        );
        let mut short = Vec::new();
        assert_eq!(tx.seal_to(&[1, 2], &mut short), Err(SealError::NoRoom(2)));
        assert!(short.is_empty());
    }

    #[test]
    fn short_and_unroomy() {
        let mut rx = SleeveOpener::new(key(), false);
        assert_eq!(rx.open_in_place(&mut [0; 7]), Err(OpenError::TooShort(7)));
        assert_eq!(rx.open_in_place(&mut [0; 8 + 15]), Err(OpenError::Decrypt));
        let mut tx = SleeveSealer::new(key(), true, false);
        assert_eq!(tx.seal_in_place(&mut [0; 29]), Err(SealError::NoRoom(29)));
        assert_eq!(tx.next_seq(), 0);
        tx.set_next_seq(1 << 63);
        assert_eq!(tx.seal_in_place(&mut [0; 40]), Err(SealError::Exhausted));
    }

    #[test]
    fn window_semantics() {
        let mut tx = SleeveSealer::new(key(), false, false);
        let mut rx = SleeveOpener::new(key(), true);
        let at = |tx: &mut SleeveSealer, seq: u64| {
            tx.set_next_seq(seq);
            datagram(tx, &seq.to_be_bytes())
        };
        let w = WINDOW_SIZE;
        let d5 = at(&mut tx, 5);
        let d3 = at(&mut tx, 3);
        let d_w1 = at(&mut tx, w + 1);
        let d_w0 = at(&mut tx, w);
        assert!(open(&mut rx, &d5).is_ok());
        // Out of order within the window is fine.
        assert!(open(&mut rx, &d3).is_ok());
        assert!(open(&mut rx, &d_w1).is_ok());
        assert!(open(&mut rx, &d_w0).is_ok());
        // The lower half still remembers.
        assert_eq!(open(&mut rx, &d5), Err(OpenError::Replayed(5)));
        let d7 = at(&mut tx, 7);
        assert!(open(&mut rx, &d7).is_ok());
        // Into the third half: the first half falls out of the window.
        let d_2w = at(&mut tx, 2 * w);
        assert!(open(&mut rx, &d_2w).is_ok());
        let d9 = at(&mut tx, 9);
        assert_eq!(open(&mut rx, &d9), Err(OpenError::Replayed(9)));
        assert_eq!(open(&mut rx, &d_w1), Err(OpenError::Replayed(w + 1)));
        let d_w2 = at(&mut tx, w + 2);
        assert!(open(&mut rx, &d_w2).is_ok());
        // A jump of several halves empties both sets.
        let far = at(&mut tx, 10 * w + 1);
        assert!(open(&mut rx, &far).is_ok());
        let near = at(&mut tx, 9 * w + 100);
        assert!(open(&mut rx, &near).is_ok());
        assert_eq!(open(&mut rx, &d_2w), Err(OpenError::Replayed(2 * w)));
        // The highest number a sealer may use.
        let top = at(&mut tx, (1 << 63) - 1);
        assert!(open(&mut rx, &top).is_ok());
        assert_eq!(open(&mut rx, &top), Err(OpenError::Replayed((1 << 63) - 1)));
    }

    #[test]
    fn a_forged_high_sequence_moves_nothing() {
        let mut tx = SleeveSealer::new(key(), true, false);
        let mut rx = SleeveOpener::new(key(), false);
        let good = datagram(&mut tx, b"x");
        let mut forged = good.clone();
        forged[6..14].copy_from_slice(&((1u64 << 63) - 1).to_be_bytes());
        let before = rx.plain.clone();
        assert_eq!(open(&mut rx, &forged), Err(OpenError::Decrypt));
        assert_eq!(rx.plain, before);
        assert!(open(&mut rx, &good).is_ok());
    }

    proptest! {
        /// Round trips on both paths; any single flipped bit after the sender name, and any
        /// truncation, is refused without a state change.
        #[test]
        fn tampering_is_refused(
            records in proptest::collection::vec(any::<u8>(), 0..300),
            seq in 0u64..(1 << 63),
            df: bool,
            bit in any::<usize>(),
            cut in any::<usize>(),
        ) {
            let mut tx = SleeveSealer::new(key(), true, df);
            tx.set_next_seq(seq);
            let mut rx = SleeveOpener::new(key(), false);
            let d = datagram(&mut tx, &records);
            let body_bits = (d.len() - SENDER_LEN) * 8;
            let bit = SENDER_LEN * 8 + bit % body_bits;
            let mut flipped = d.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let (plain, dfw) = (rx.plain.clone(), rx.df.clone());
            prop_assert_eq!(open(&mut rx, &flipped), Err(OpenError::Decrypt));
            let cut = SENDER_LEN + cut % (d.len() - SENDER_LEN);
            prop_assert!(open(&mut rx, &d[..cut]).is_err());
            prop_assert_eq!(&rx.plain, &plain);
            prop_assert_eq!(&rx.df, &dfw);
            prop_assert_eq!(open(&mut rx, &d).unwrap(), records);
            prop_assert_eq!(open(&mut rx, &d), Err(OpenError::Replayed(seq)));
        }
    }
}
