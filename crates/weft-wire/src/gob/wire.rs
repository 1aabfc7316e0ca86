//! gob's primitive encodings: the variable-length `uint`, the sign-folded `int`, byte-reversed
//! floats, and a bounds-checked reader over a byte slice.
//!
//! A uint below `0x80` is one byte; otherwise a byte `256 - n` is followed by the value in `n`
//! big-endian bytes (`n <= 8`). An int `v` is sent as the uint `v << 1` when `v >= 0` and
//! `(!v << 1) | 1` otherwise. A float is sent as the uint of its bits with the bytes reversed.

use crate::error::DecodeError;

/// Largest byte count of a multi-byte uint.
const MAX_UINT_BYTES: usize = 8;

/// A cursor over untrusted bytes; every read is bounds-checked.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The unread bytes.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated(what))?;
        self.buf = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub(crate) fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(DecodeError::Truncated(what))?;
        self.buf = tail;
        Ok(b)
    }

    /// Reads a gob uint.
    pub(crate) fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.byte(what)?;
        if b < 0x80 {
            return Ok(u64::from(b));
        }
        let n = 0x100 - usize::from(b);
        if n > MAX_UINT_BYTES {
            return Err(DecodeError::BadUint(b));
        }
        let bytes = self.take(n, what)?;
        Ok(bytes.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Reads a gob int.
    pub(crate) fn int(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(int_from_uint(self.uint(what)?))
    }

    /// Reads a length or count prefix and checks that at least `min_each * len` bytes remain,
    /// so nothing is allocated for data that is not there.
    pub(crate) fn len_prefix(
        &mut self,
        what: &'static str,
        min_each: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.uint(what)?;
        let remaining = self.remaining();
        let fits = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(min_each))
            .is_some_and(|need| need <= remaining);
        match usize::try_from(len) {
            Ok(n) if fits => Ok(n),
            _ => Err(DecodeError::LengthOverrun { len, remaining }),
        }
    }
}

/// Unfolds a gob int from its uint form.
pub(crate) fn int_from_uint(u: u64) -> i64 {
    // `u >> 1` is at most 2^63 - 1, so the cast is lossless.
    let half = (u >> 1) as i64;
    if u & 1 == 1 {
        !half
    } else {
        half
    }
}

/// Appends a gob uint.
pub(crate) fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        // Lossless: v < 0x80.
        out.push(v as u8);
        return;
    }
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let n = MAX_UINT_BYTES - skip; // 1..=8 since v != 0
                                   // Lossless: n <= 8.
    out.push(0u8.wrapping_sub(n as u8));
    out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
}

/// Appends a gob int.
pub(crate) fn put_int(out: &mut Vec<u8>, v: i64) {
    // Casts reinterpret bits; no value is lost.
    let u = if v < 0 {
        ((!v as u64) << 1) | 1
    } else {
        (v as u64) << 1
    };
    put_uint(out, u);
}

/// The uint that carries a float: its IEEE bits with the bytes reversed.
pub(crate) fn float_to_uint(f: f64) -> u64 {
    f.to_bits().swap_bytes()
}

/// The float carried by a uint.
pub(crate) fn float_from_uint(u: u64) -> f64 {
    f64::from_bits(u.swap_bytes())
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a gob message: `uint(len) || int(id) || payload`.
pub(crate) fn put_message(out: &mut Vec<u8>, id: i64, payload: &[u8]) {
    let mut head = Vec::with_capacity(MAX_UINT_BYTES + 1);
    put_int(&mut head, id);
    put_uint(out, (head.len() + payload.len()) as u64);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uint_examples_from_spec() {
        let mut out = Vec::new();
        put_uint(&mut out, 0xaabbccddee01);
        assert_eq!(out, [0xfa, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
        let mut out = Vec::new();
        put_int(&mut out, 65);
        assert_eq!(out, [0xff, 0x82]);
        let mut out = Vec::new();
        put_int(&mut out, -65);
        assert_eq!(out, [0xff, 0x81]);
        assert_eq!(Reader::new(&[0xff, 0x83]).int("t"), Ok(-66));
    }

    #[test]
    fn extremes_round_trip() {
        for v in [0, 1, 0x7f, 0x80, 0xff, 0x100, u64::MAX] {
            let mut out = Vec::new();
            put_uint(&mut out, v);
            assert_eq!(Reader::new(&out).uint("t"), Ok(v));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_int(&mut out, v);
            assert_eq!(Reader::new(&out).int("t"), Ok(v));
        }
    }

    #[test]
    fn bad_uints_are_errors() {
        assert_eq!(
            Reader::new(&[0xf7]).uint("t"),
            Err(DecodeError::BadUint(0xf7))
        );
        assert_eq!(
            Reader::new(&[0x80]).uint("t"),
            Err(DecodeError::BadUint(0x80))
        );
        assert_eq!(
            Reader::new(&[0xfe, 1]).uint("t"),
            Err(DecodeError::Truncated("t"))
        );
        assert_eq!(Reader::new(&[]).uint("t"), Err(DecodeError::Truncated("t")));
    }

    #[test]
    fn len_prefix_is_bounded_by_input() {
        assert!(Reader::new(&[3, 1, 2]).len_prefix("t", 1).is_err());
        assert_eq!(Reader::new(&[2, 1, 2]).len_prefix("t", 1), Ok(2));
        assert!(Reader::new(&[2, 1, 2]).len_prefix("t", 2).is_err());
        let huge = [0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&huge).len_prefix("t", 1).is_err());
    }
}
