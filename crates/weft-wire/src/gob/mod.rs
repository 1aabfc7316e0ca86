//! A hand-written Go `encoding/gob` codec: the dynamic, schema-by-value kind that the mesh
//! control plane needs (bool, int, uint, float, `[]byte`, string, slices, arrays, maps and
//! structs, with type definitions sent in the stream).
//!
//! Why not a crate: the existing `gobwire` crate panics on hostile input (our fuzzer found an
//! overflow negating a type id), and every byte decoded here comes from a peer we do not trust.
//! This codec never panics and bounds its memory and work by the bytes it is given:
//! * lengths and counts are checked against the bytes left before anything is allocated, and a
//!   slice, array or map is allocated exactly once, only while every element announced so far
//!   (at every nesting level) still has a byte of its own left, so all the element slots of a
//!   message together never outnumber its bytes;
//! * a stream may define at most [`MAX_STREAM_TYPES`] types (fewer where the caller says so)
//!   in at most [`MAX_TYPE_DEF_BYTES`] bytes of definitions; type nesting is limited to
//!   [`MAX_DEPTH`] and a type may expand to at most [`MAX_TYPE_NODES`] nodes;
//! * a definition is resolved into a [`Type`] once per stream and then shared: composite types
//!   hold their components behind [`Arc`], names are `Arc<str>` taken once from the definition,
//!   and a decoded struct value's field names are clones of those `Arc`s, so neither a value
//!   nor an element ever copies a type or a name;
//! * a caller that knows what it expects checks the type before the value is read
//!   ([`Decoder::decode_next_checked`]), and a peer's type appears in errors only through the
//!   bounded [`Type::describe`].
//!
//! Integer arithmetic is checked and bytes left over inside a message are an error.
//!
//! Model: a [`Type`] tree describes a value; a [`Value`] tree holds it. An [`Encoder`] and a
//! [`Decoder`] each belong to one gob stream, as in Go: the encoder remembers which type
//! definitions it has sent, the decoder learns them.
//!
//! Struct fields follow Go's rules. On encode, a field missing from the value's field list is
//! not sent (that is how a nil map or a nil pointer is expressed), and so is a field holding a
//! zero scalar, an empty string, byte slice or slice, or a zero-length array; a present empty map
//! and a nested struct are always sent. On decode, fields are matched by name and listed in wire
//! order; fields the wire did not carry (or carried as such a zero) are left out, so a decoded
//! value is canonical and a missing field means "zero" (or "nil" for maps and pointers). Fields
//! unknown to the caller are kept in the value; callers look fields up by name and so ignore them.
//!
//! Names: Go sends the name of a struct type and of a slice, array or map type that a struct
//! field uses (its Go name, or its spelling such as `map[mesh.PeerName]string`), and never
//! checks them. They are kept ([`Type::Named`]) so a decoded stream re-encodes to Go's bytes,
//! and ignored by the type checks of [`mapping`].
//!
//! Left out on purpose: complex numbers, interface values and recursive types (all rejected). `GobEncoder`/`BinaryMarshaler`/`TextMarshaler` types decode as
//! [`Type::Bytes`].

mod decode;
mod encode;
#[doc(hidden)]
pub mod hostile;
pub mod mapping;
mod wire;
mod wiretype;

pub use self::decode::Decoder;
#[cfg(any(fuzzing, test))]
pub(crate) use self::encode::put_definition;
pub use self::encode::Encoder;
pub(crate) use self::encode::{put_top_level_bytes, put_top_level_string, put_top_level_uint};
#[cfg(any(fuzzing, test))]
pub(crate) use self::wire::put_message;
#[cfg(any(fuzzing, test))]
pub(crate) use self::wiretype::WireDef;
pub use crate::error::{DecodeError, EncodeError};

use std::fmt::Write as _;
use std::sync::Arc;

use crate::error::{bounded, MAX_PEER_TEXT};

/// Deepest type nesting accepted (a top-level scalar is depth 1).
pub const MAX_DEPTH: usize = 32;

/// Most nodes a single type may expand to once its definitions are resolved into a tree.
pub const MAX_TYPE_NODES: usize = 1024;

/// Most type definitions one stream may carry. Weave Net's largest streams (IPAM gossip) define
/// about a dozen types.
pub const MAX_STREAM_TYPES: usize = 256;

/// Most bytes the type definition messages of one stream may add up to (Weave Net's largest
/// stream needs well under 2 KiB).
pub const MAX_TYPE_DEF_BYTES: usize = 64 * 1024;

/// Type id of `bool`.
pub(crate) const ID_BOOL: i64 = 0x01;
/// Type id of `int` (all Go signed integers).
pub(crate) const ID_INT: i64 = 0x02;
/// Type id of `uint` (all Go unsigned integers).
pub(crate) const ID_UINT: i64 = 0x03;
/// Type id of `float` (float32 and float64).
pub(crate) const ID_FLOAT: i64 = 0x04;
/// Type id of `[]byte`.
pub(crate) const ID_BYTES: i64 = 0x05;
/// Type id of `string`.
pub(crate) const ID_STRING: i64 = 0x06;
/// First type id Go hands out to user types.
pub const FIRST_USER_TYPE_ID: i64 = 65;

/// A gob type. Basic types have fixed wire ids; the composite ones are sent as definitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// `bool`.
    Bool,
    /// Any Go signed integer.
    Int,
    /// Any Go unsigned integer.
    Uint,
    /// `float32` / `float64`.
    Float,
    /// `[]byte` (and opaque `GobEncoder`-style types on decode).
    Bytes,
    /// `string`.
    String,
    /// A slice of the element type; its value is [`Value::Slice`].
    Slice(Arc<Self>),
    /// A fixed-length array; its value is a [`Value::Slice`] of exactly that many elements.
    Array(usize, Arc<Self>),
    /// A map from key type to element type; its value is [`Value::Map`].
    Map(Arc<Self>, Arc<Self>),
    /// A struct; its value is [`Value::Struct`].
    Struct(Arc<StructType>),
    /// A slice, array or map type with a Go name (`GossipState`, `[]mesh.PeerName`): Go sends
    /// the names of such types and never checks them, but two of them differing only in name
    /// are two types with two ids, so a writer that wants Go's bytes names them. Built by
    /// [`Type::named`], which never wraps anything else or an empty name; its value is the
    /// inner type's.
    Named(Arc<str>, Arc<Self>),
}

/// A struct type: Go's type name and its exported fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructType {
    /// The Go type name (sent on the wire, never checked by Go's decoder).
    pub name: Arc<str>,
    /// Field names and types, in declaration order (which fixes the field numbers).
    pub fields: Vec<(Arc<str>, Type)>,
}

impl StructType {
    /// A struct type named `name` with `(field name, type)` pairs in declaration order.
    pub fn new<'a>(name: &str, fields: impl IntoIterator<Item = (&'a str, Type)>) -> Self {
        Self {
            name: Arc::from(name),
            fields: fields.into_iter().map(|(n, t)| (Arc::from(n), t)).collect(),
        }
    }
}

/// A gob value, shaped by a [`Type`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A bool.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// A float.
    Float(f64),
    /// A byte slice.
    Bytes(Vec<u8>),
    /// A string.
    String(String),
    /// The elements of a slice or an array.
    Slice(Vec<Self>),
    /// Map entries, in wire order (Go's is random); duplicate keys are kept as sent.
    Map(Vec<(Self, Self)>),
    /// Struct fields by name. On encode, a missing field is not sent; on decode, fields the
    /// wire did not carry are missing (see the module docs). Decoded names share the `Arc`s of
    /// the struct's [`StructType`].
    Struct(Vec<(Arc<str>, Self)>),
}

/// Longest text [`Type::describe`] returns before its `…`.
const DESCRIBE_MAX: usize = MAX_PEER_TEXT;

impl Type {
    /// `[]elem`.
    pub fn slice(elem: Self) -> Self {
        Self::Slice(Arc::new(elem))
    }

    /// `[len]elem`.
    pub fn array(len: usize, elem: Self) -> Self {
        Self::Array(len, Arc::new(elem))
    }

    /// `map[key]elem`.
    pub fn map(key: Self, elem: Self) -> Self {
        Self::Map(Arc::new(key), Arc::new(elem))
    }

    /// A struct type named `name` with `(field name, type)` pairs in declaration order.
    pub fn structure<'a>(name: &str, fields: impl IntoIterator<Item = (&'a str, Self)>) -> Self {
        Self::Struct(Arc::new(StructType::new(name, fields)))
    }

    /// `ty` under the Go name `name` if `ty` is a slice, array or map and `name` is not empty;
    /// otherwise `ty` as it is (a struct's name lives in its [`StructType`], basic types have
    /// none, and an unnamed type is the same type as itself without a name).
    pub fn named(name: impl Into<Arc<str>>, ty: Self) -> Self {
        let name = name.into();
        match ty {
            Self::Slice(_) | Self::Array(..) | Self::Map(..) if !name.is_empty() => {
                Self::Named(name, Arc::new(ty))
            }
            _ => ty,
        }
    }

    /// The type without its name, if it is [`Type::Named`].
    pub fn unnamed(&self) -> &Self {
        match self {
            Self::Named(_, inner) => inner,
            _ => self,
        }
    }

    /// The Go name of a slice, array, map or struct type (`""` when it has none).
    pub fn go_name(&self) -> &str {
        match self {
            Self::Named(name, _) => name,
            Self::Struct(s) => &s.name,
            _ => "",
        }
    }

    /// A short Go-like rendering for messages, e.g. `map[string]string` or
    /// `[]struct connectionSummary`: struct fields are not listed, and the text is cut to a
    /// few dozen bytes however large (or hostile) the type is.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_into(&mut out);
        bounded(&out)
    }

    /// Appends the rendering of `self` to `out`, stopping once `out` is past [`DESCRIBE_MAX`]
    /// (so the work is bounded too, not only the result).
    fn describe_into(&self, out: &mut String) {
        if out.len() > DESCRIBE_MAX {
            return;
        }
        match self {
            Self::Slice(e) => {
                out.push_str("[]");
                e.describe_into(out);
            }
            Self::Array(n, e) => {
                let _ = write!(out, "[{n}]");
                e.describe_into(out);
            }
            Self::Map(k, e) => {
                out.push_str("map[");
                k.describe_into(out);
                out.push(']');
                e.describe_into(out);
            }
            Self::Struct(s) => {
                out.push_str("struct ");
                out.push_str(&bounded(&s.name));
            }
            Self::Named(_, inner) => inner.describe_into(out),
            _ => out.push_str(self.kind()),
        }
    }

    /// The predefined wire id of a basic type; `None` for types that need a definition.
    pub(crate) fn basic_id(&self) -> Option<i64> {
        match self {
            Self::Bool => Some(ID_BOOL),
            Self::Int => Some(ID_INT),
            Self::Uint => Some(ID_UINT),
            Self::Float => Some(ID_FLOAT),
            Self::Bytes => Some(ID_BYTES),
            Self::String => Some(ID_STRING),
            Self::Slice(_)
            | Self::Array(..)
            | Self::Map(..)
            | Self::Struct(_)
            | Self::Named(..) => None,
        }
    }

    /// A short name of the type's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Int => "int",
            Self::Uint => "uint",
            Self::Float => "float",
            Self::Bytes => "[]byte",
            Self::String => "string",
            Self::Slice(_) => "slice",
            Self::Array(..) => "array",
            Self::Map(..) => "map",
            Self::Struct(_) => "struct",
            Self::Named(_, inner) => inner.kind(),
        }
    }
}

impl Value {
    /// A struct value from `(field name, value)` pairs.
    pub fn structure<'a>(fields: impl IntoIterator<Item = (&'a str, Self)>) -> Self {
        Self::Struct(fields.into_iter().map(|(n, v)| (Arc::from(n), v)).collect())
    }

    /// The named field of a struct value; `None` if absent (zero or nil) or not a struct.
    pub fn field(&self, name: &str) -> Option<&Self> {
        match self {
            Self::Struct(fields) => fields.iter().find(|(n, _)| &**n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The unsigned integer, if this is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Uint(u) => Some(*u),
            _ => None,
        }
    }

    /// The signed integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The float, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a byte slice.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is a slice or array value.
    pub fn as_slice(&self) -> Option<&[Self]> {
        match self {
            Self::Slice(v) => Some(v),
            _ => None,
        }
    }

    /// The entries, if this is a map value.
    pub fn as_map(&self) -> Option<&[(Self, Self)]> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Uint(_) => "uint",
            Self::Float(_) => "float",
            Self::Bytes(_) => "[]byte",
            Self::String(_) => "string",
            Self::Slice(_) => "slice",
            Self::Map(_) => "map",
            Self::Struct(_) => "struct",
        }
    }
}

/// `Ok` if the type of a value about to be decoded is `want`; otherwise
/// [`DecodeError::UnexpectedType`] with `expected` and a bounded description of `ty`. Meant as
/// the check of [`Decoder::decode_next_checked`].
pub fn expect_type(
    ty: &Type,
    want: &Type,
    context: &'static str,
    expected: &'static str,
) -> Result<(), DecodeError> {
    if ty == want {
        return Ok(());
    }
    Err(DecodeError::UnexpectedType {
        context,
        expected,
        found: ty.describe(),
    })
}

/// Whether a struct field of type `ty` holding `v` is left off the wire (Go omits zero scalars,
/// empty strings, byte slices and slices, and zero-length arrays; never maps or structs). A
/// value that does not match the type is never "omitted", so the encoder reports the mismatch.
pub(crate) fn is_omitted_field(ty: &Type, v: &Value) -> bool {
    match (ty, v) {
        (Type::Bool, Value::Bool(b)) => !*b,
        (Type::Int, Value::Int(i)) => *i == 0,
        (Type::Uint, Value::Uint(u)) => *u == 0,
        (Type::Float, Value::Float(f)) => *f == 0.0,
        (Type::Bytes, Value::Bytes(b)) => b.is_empty(),
        (Type::String, Value::String(s)) => s.is_empty(),
        (Type::Slice(_), Value::Slice(s)) => s.is_empty(),
        (Type::Array(n, _), Value::Slice(s)) => *n == 0 && s.is_empty(),
        (Type::Named(_, inner), _) => is_omitted_field(inner, v),
        _ => false,
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
