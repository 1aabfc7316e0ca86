//! The crate's two codec error types: [`DecodeError`] for everything read from a peer (gob and
//! the message formats built on it) and [`EncodeError`] for a value that does not fit its
//! declared gob type.
//!
//! The per-format errors with Weave Net's exact texts (header, frame, sleeve) live next to their
//! codecs; these two are shared because every gob-based format fails in the same ways.
//!
//! Errors end up in logs, so text a peer chose (a type or field name, a map key) is cut to
//! [`MAX_PEER_TEXT`] bytes by [`bounded`] before it is stored in an error, and a peer's type is
//! only ever shown through [`Type::describe`](crate::gob::Type::describe), which is bounded too.

use crate::gob::{MAX_DEPTH, MAX_TYPE_DEF_BYTES, MAX_TYPE_NODES};

/// Most bytes of peer-chosen text kept in an error (longer text ends in `…`).
pub const MAX_PEER_TEXT: usize = 64;

/// `s` cut to at most [`MAX_PEER_TEXT`] bytes (on a character boundary), with `…` appended
/// when something was cut.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_PEER_TEXT {
        return s.to_string();
    }
    let mut end = MAX_PEER_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + '…'.len_utf8());
    out.push_str(s.get(..end).unwrap_or_default());
    out.push('…');
    out
}

/// Why bytes from a peer could not be decoded. Any of these terminates the connection (as a gob
/// error does in Weave Net); none of them is ever a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of an item.
    #[error("gob: unexpected end of input while reading {0}")]
    Truncated(&'static str),
    /// A gob uint whose length byte announces more than 8 bytes.
    #[error("gob: invalid uint length byte {0:#04x}")]
    BadUint(u8),
    /// A length or count prefix larger than the bytes that are left.
    #[error("gob: length {len} exceeds the {remaining} bytes remaining")]
    LengthOverrun {
        /// The length the prefix announced.
        len: u64,
        /// Bytes actually left.
        remaining: usize,
    },
    /// A message whose length prefix is zero.
    #[error("gob: zero-length message")]
    EmptyMessage,
    /// Bytes left over inside a message (or a payload) after its value.
    #[error("{context}: {count} bytes left over after the value")]
    TrailingBytes {
        /// What was being decoded.
        context: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A type id that is zero, out of range, or below the user range in a definition.
    #[error("gob: invalid type id {0}")]
    BadTypeId(i64),
    /// A value whose type id was never defined in this stream.
    #[error("gob: unknown type id {0}")]
    UnknownTypeId(i64),
    /// A second definition of an already defined type id.
    #[error("gob: duplicate definition of type id {0}")]
    DuplicateType(i64),
    /// A predefined type this codec does not model (complex, interface, gob's own types).
    #[error("gob: unsupported type id {0}")]
    UnsupportedType(i64),
    /// A type definition that is not a well-formed `wireType`.
    #[error("gob: malformed type definition: {0}")]
    BadWireType(&'static str),
    /// Type nesting deeper than [`MAX_DEPTH`] (recursive types end up here too).
    #[error("gob: type nesting deeper than {MAX_DEPTH} levels (or a recursive type)")]
    TooDeep,
    /// A type that expands to more than [`MAX_TYPE_NODES`] nodes.
    #[error("gob: type expands to more than {MAX_TYPE_NODES} nodes")]
    TypeTooLarge,
    /// More type definitions in one stream than the decoder accepts (see
    /// [`Decoder::with_type_limit`](crate::gob::Decoder::with_type_limit); never more than
    /// [`MAX_STREAM_TYPES`](crate::gob::MAX_STREAM_TYPES)).
    #[error("gob: stream defines more types than the {0} allowed")]
    TooManyTypes(usize),
    /// Type definitions in one stream adding up to more than [`MAX_TYPE_DEF_BYTES`].
    #[error("gob: type definitions exceed {MAX_TYPE_DEF_BYTES} bytes in one stream")]
    TypeDefsTooLarge,
    /// A top-level non-struct value not introduced by the `00` singleton byte.
    #[error("gob: non-zero delta {0} for a singleton value")]
    NonZeroSingleton(u64),
    /// A struct field delta pointing past the struct's last field.
    #[error("gob: field delta {delta} runs past the {fields} fields of struct {name:?}")]
    FieldOutOfRange {
        /// The struct's type name, cut by [`bounded`].
        name: String,
        /// The offending delta.
        delta: u64,
        /// How many fields the struct has.
        fields: usize,
    },
    /// A bool encoded as something other than 0 or 1.
    #[error("gob: invalid bool value {0}")]
    InvalidBool(u64),
    /// A string that is not UTF-8 (Go would accept it; weft does not).
    #[error("gob: string is not valid UTF-8")]
    InvalidUtf8,
    /// An array value whose element count differs from its type's length.
    #[error("gob: array of {got} elements where the type says {expected}")]
    ArrayLength {
        /// The type's length.
        expected: usize,
        /// The count on the wire.
        got: u64,
    },
    /// A well-formed gob value of the wrong type for the message being decoded.
    #[error("{context}: expected {expected}, got {found}")]
    UnexpectedType {
        /// What was being decoded.
        context: &'static str,
        /// The type required there.
        expected: &'static str,
        /// What arrived instead ([`Type::describe`](crate::gob::Type::describe), bounded).
        found: String,
    },
    /// A message that ended before one of its required items.
    #[error("{context}: missing {what}")]
    Missing {
        /// What was being decoded.
        context: &'static str,
        /// The missing item.
        what: &'static str,
    },
    /// The same key twice in a map that must not have duplicates.
    #[error("{context}: duplicate key {key:?}")]
    DuplicateKey {
        /// What was being decoded.
        context: &'static str,
        /// The repeated key, cut by [`bounded`].
        key: String,
    },
    /// A `NameByte` that is not a 6-byte peer name.
    #[error("NameByte must be 6 bytes, got {0}")]
    BadNameByte(usize),
    /// A peer name wider than 48 bits.
    #[error("peer name {0:#x} does not fit in 48 bits")]
    PeerNameTooWide(u64),
    /// A short id above 4095 (short ids are 12 bits).
    #[error("ShortID {0} out of range (max 4095)")]
    ShortIdOutOfRange(u64),
    /// A message kind (tag) byte this format does not define.
    #[error("{context}: unknown message kind {kind}")]
    UnknownKind {
        /// What was being decoded.
        context: &'static str,
        /// The kind byte.
        kind: u8,
    },
    /// An integer too large (or negative) for the Rust field it is decoded into.
    #[error("{context}: {value} does not fit in {target}")]
    IntOutOfRange {
        /// What was being decoded (a Go type name).
        context: &'static str,
        /// The Rust type of the field.
        target: &'static str,
        /// The value on the wire.
        value: i128,
    },
    /// A fixed-size payload of the wrong length.
    #[error("{context}: payload of {got} bytes, expected {expected}")]
    PayloadLength {
        /// What was being decoded.
        context: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// Why a value could not be gob-encoded: it does not match the type it was given. Only a bug in
/// the caller produces these; peer input never reaches an encoder unchecked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value's variant does not fit the type.
    #[error("gob encode: {found} value for a {expected} type")]
    TypeMismatch {
        /// The type's kind.
        expected: &'static str,
        /// The value's kind.
        found: &'static str,
    },
    /// A struct value names a field its type does not have.
    #[error("gob encode: struct {strukt:?} has no field {field:?}")]
    UnknownField {
        /// The struct type's name, cut by [`bounded`].
        strukt: String,
        /// The unknown field, cut by [`bounded`].
        field: String,
    },
    /// A struct value names the same field twice (the name cut by [`bounded`]).
    #[error("gob encode: field {0:?} given twice")]
    DuplicateField(String),
    /// A struct type declares the same field name twice (its name cut by [`bounded`]).
    #[error("gob encode: struct {0:?} declares a field name twice")]
    DuplicateFieldType(String),
    /// An array value with the wrong number of elements.
    #[error("gob encode: array of {got} elements where the type says {expected}")]
    ArrayLength {
        /// The type's length.
        expected: usize,
        /// The value's length.
        got: usize,
    },
    /// A type nested deeper than [`MAX_DEPTH`].
    #[error("gob encode: type nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An array length that does not fit gob's `int`.
    #[error("gob encode: array length {0} too large")]
    ArrayTooLong(usize),
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let exact = "x".repeat(MAX_PEER_TEXT);
        assert_eq!(bounded(&exact), exact);
        let long = "y".repeat(10 * MAX_PEER_TEXT);
        let cut = bounded(&long);
        assert_eq!(cut, format!("{}…", "y".repeat(MAX_PEER_TEXT)));
        // A 3-byte character straddling the limit is dropped whole.
        let straddle = format!("{}€tail", "z".repeat(MAX_PEER_TEXT - 1));
        assert_eq!(
            bounded(&straddle),
            format!("{}…", "z".repeat(MAX_PEER_TEXT - 1))
        );
    }

    #[test]
    fn peer_text_in_errors_is_bounded() {
        let e = DecodeError::DuplicateKey {
            context: "features",
            key: bounded(&"\u{1}".repeat(1 << 20)),
        };
        // Debug escaping may widen each cut byte, but never past a few hundred bytes.
        assert!(e.to_string().len() < 512, "{}", e.to_string().len());
    }
}
