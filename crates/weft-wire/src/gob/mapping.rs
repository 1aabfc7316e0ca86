//! Go structs declared once: a table ([`gob_struct!`](crate::gob_struct)) maps a Rust struct
//! to its Go type name and, per field, the Go field name, the gob kind and the Rust field. The
//! table yields the struct's gob [`Type`] (so the [`Encoder`] sends Go's definitions and ids),
//! its encoding, and its decoding, which checks a value's type before the value is read and
//! fills the Rust struct from the decoded [`Value`].
//!
//! ```text
//! gob_struct! {
//!     Ring as "Ring" {
//!         "Start" => start: Uint,
//!         "Entries" => entries: SliceOf<Entry> as "entries",
//!         "Seeds" => seeds: SliceOf<Uint> as "[]mesh.PeerName",
//!     }
//! }
//! ```
//!
//! A kind is a type naming a gob type ([`GobKind`]) and converting Rust values to and from it
//! ([`Kind`]): [`Bool`], [`Int`], [`Uint`], [`Float`], [`Str`], [`Bytes`], [`SliceOf`],
//! [`MapOf`], [`Opt`] (a nil map or pointer: the field is left off the wire), and every struct
//! declared with the table (a nested struct). One kind serves several Rust types (`Uint` for
//! `u8`..`u64`, [`PeerName`] and [`Ipv4Addr`]); narrowing is checked on decode and a value
//! that does not fit is [`DecodeError::IntOutOfRange`]. A format with its own rules (a peer
//! name as 6 bytes, a 12-bit short id) adds a kind next to its codec. `as "name"` after a
//! field's kind gives the slice or map type the name Go sends for it, so our bytes are Go's.
//!
//! Go's rules for struct fields hold: fields unknown to the table are skipped (the decoder
//! still reads them, within its bounds), fields the wire lacks are zero (or `None` for
//! [`Opt`]), and a known field of another kind, or a struct with no field in common, is
//! [`DecodeError::UnexpectedType`] before the value is read ([`check`] ignores type names, as
//! Go does).
//!
//! Decoding keeps every bound of the [`Decoder`]: the value is decoded into a [`Value`] first,
//! then moved into the Rust struct (strings and byte slices change hands, they are not
//! copied), so the peak heap is the decoder's plus the result's. A decoded element costs 32
//! bytes as a [`Value`] and takes at least one byte of input, so the crate's bound of 64 heap
//! bytes per input byte holds while a Rust element decoded from a one-byte encoding (an empty
//! struct, a zero) takes at most 32 bytes; a table with larger slice elements checks its bound
//! in `tests/alloc_bound.rs` (map entries take at least two bytes, and distinct keys more).
//!
//! Left out until a payload needs them: arrays, and names for slice or map types nested
//! inside another slice or map (`as "name"` names a field's own type).
//!
//! Why a `macro_rules!` table and not a derive: the table only has to list fields and emit two
//! trait impls, which `macro_rules!` does without a proc-macro crate (and its build time and
//! `syn` dependency); field kinds are ordinary types, so the compiler checks each kind against
//! its Rust field, and a Rust field left out of the table is a compile error (the decoder
//! builds the struct with every field named).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::Ipv4Addr;

use super::{Decoder, Encoder, Type, Value};
use crate::error::{bounded, DecodeError, EncodeError};
use crate::peer::PeerName;

/// A gob kind: the gob type it stands for.
pub trait GobKind {
    /// The gob type of values of this kind.
    fn gob_type() -> Type;
}

/// A gob kind that carries Rust values of type `T`.
pub trait Kind<T>: GobKind {
    /// `v` as a gob value of this kind.
    fn to_value(v: &T) -> Value;

    /// `v` as a struct field: `None` leaves the field off the wire (a nil map or pointer).
    fn to_field(v: &T) -> Option<Value> {
        Some(Self::to_value(v))
    }

    /// The Rust value of `v`, a value of a type [`check`] accepted for this kind; anything else
    /// is an error naming `context`, never a panic.
    fn from_value(v: Value, context: &'static str) -> Result<T, DecodeError>;

    /// The Rust value of a struct field the wire did not carry (Go's zero value).
    fn absent(context: &'static str) -> Result<T, DecodeError>;
}

/// `Ok` if a value of type `wire` (as the peer defined it) can be decoded as `ours`, by Go's
/// rules: the same kinds all the way down, struct fields matched by name (fields only one side
/// has are skipped, but two structs with fields and none in common are an error), type names
/// ignored. Otherwise [`DecodeError::UnexpectedType`] with a bounded description of the peer's
/// type.
pub fn check(wire: &Type, ours: &Type, context: &'static str) -> Result<(), DecodeError> {
    let same = match (wire.unnamed(), ours.unnamed()) {
        (Type::Bool, Type::Bool)
        | (Type::Int, Type::Int)
        | (Type::Uint, Type::Uint)
        | (Type::Float, Type::Float)
        | (Type::Bytes, Type::Bytes)
        | (Type::String, Type::String) => true,
        (Type::Slice(w), Type::Slice(o)) => return check(w, o, context),
        (Type::Array(n, w), Type::Array(m, o)) if n == m => return check(w, o, context),
        (Type::Map(wk, we), Type::Map(ok, oe)) => {
            check(wk, ok, context)?;
            return check(we, oe, context);
        }
        (Type::Struct(w), Type::Struct(o)) => {
            let mut matched = false;
            for (name, oty) in &o.fields {
                if let Some((_, wty)) = w.fields.iter().find(|(n, _)| n == name) {
                    check(wty, oty, context)?;
                    matched = true;
                }
            }
            // Go's "no fields matched compiling decoder": some other struct altogether.
            if matched || w.fields.is_empty() || o.fields.is_empty() {
                return Ok(());
            }
            return Err(DecodeError::UnexpectedType {
                context,
                expected: "struct with a field in common",
                found: wire.describe(),
            });
        }
        _ => false,
    };
    if same {
        return Ok(());
    }
    Err(DecodeError::UnexpectedType {
        context,
        expected: ours.kind(),
        found: wire.describe(),
    })
}

/// Appends `v` as one gob message of kind `K` (preceded by the definitions `enc` has not sent).
pub fn encode<K: Kind<T>, T>(
    enc: &mut Encoder,
    v: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    enc.encode(&K::gob_type(), &K::to_value(v), out)
}

/// Decodes the next value of `input` as kind `K`: its type is [`check`]ed before the value is
/// read. `Ok(None)` at a clean end of `input` (see [`Decoder::decode_next`]).
pub fn decode_next<K: Kind<T>, T>(
    dec: &mut Decoder,
    input: &mut &[u8],
    context: &'static str,
) -> Result<Option<T>, DecodeError> {
    let want = K::gob_type();
    match dec.decode_next_checked(input, |ty| check(ty, &want, context))? {
        Some((_, v)) => K::from_value(v, context).map(Some),
        None => Ok(None),
    }
}

/// The one value of kind `K` that `payload` holds (a gob stream of its own, with at most
/// `max_types` type definitions); nothing may follow it.
pub fn decode_one<K: Kind<T>, T>(
    payload: &[u8],
    max_types: usize,
    context: &'static str,
) -> Result<T, DecodeError> {
    let mut input = payload;
    let mut dec = Decoder::with_type_limit(max_types);
    let v = decode_next::<K, T>(&mut dec, &mut input, context)?.ok_or(DecodeError::Missing {
        context,
        what: "value",
    })?;
    if !input.is_empty() {
        return Err(DecodeError::TrailingBytes {
            context,
            count: input.len(),
        });
    }
    Ok(v)
}

/// The error for a decoded value of another kind than the one expected (unreachable after
/// [`check`], but never a panic).
pub fn mismatch(context: &'static str, expected: &'static str, v: &Value) -> DecodeError {
    DecodeError::UnexpectedType {
        context,
        expected,
        found: v.kind().to_string(),
    }
}

/// Declares the gob mapping of a Rust struct (see the [module docs](crate::gob::mapping)):
///
/// ```text
/// gob_struct! {
///     RustStruct as "goTypeName" {
///         "GoField" => rust_field: Kind,
///         "GoSlice" => rust_vec: SliceOf<Uint> as "goSliceTypeName",
///     }
/// }
/// ```
///
/// Fields are listed in Go's declaration order (it fixes the field numbers on the wire); every
/// field of the Rust struct must appear. The struct becomes a kind of its own, usable as a
/// field kind of another table and with [`encode`], [`decode_next`] and [`decode_one`].
#[macro_export]
macro_rules! gob_struct {
    (
        $ty:ident as $go:literal {
            $( $gof:literal => $field:ident : $kind:ty $(as $tname:literal)? ),* $(,)?
        }
    ) => {
        impl $crate::gob::mapping::GobKind for $ty {
            fn gob_type() -> $crate::gob::Type {
                // Built once: each use afterwards is a reference-count increment.
                static TYPE: ::std::sync::OnceLock<$crate::gob::Type> =
                    ::std::sync::OnceLock::new();
                TYPE.get_or_init(|| {
                    $crate::gob::Type::structure(
                        $go,
                        [$((
                            $gof,
                            $crate::gob::Type::named(
                                $crate::gob_struct!(@name $($tname)?),
                                <$kind as $crate::gob::mapping::GobKind>::gob_type(),
                            ),
                        )),*],
                    )
                })
                .clone()
            }
        }

        impl $crate::gob::mapping::Kind<$ty> for $ty {
            fn to_value(v: &$ty) -> $crate::gob::Value {
                let mut fields = ::std::vec::Vec::new();
                $(
                    if let Some(f) = <$kind as $crate::gob::mapping::Kind<_>>::to_field(&v.$field) {
                        fields.push((::std::sync::Arc::from($gof), f));
                    }
                )*
                $crate::gob::Value::Struct(fields)
            }

            fn from_value(
                v: $crate::gob::Value,
                _context: &'static str,
            ) -> ::std::result::Result<$ty, $crate::DecodeError> {
                // Errors inside name the innermost struct: Go's name, or ours if Go has none.
                const CONTEXT: &str = if $go.is_empty() { stringify!($ty) } else { $go };
                let $crate::gob::Value::Struct(wire) = v else {
                    return Err($crate::gob::mapping::mismatch(CONTEXT, "struct", &v));
                };
                $( let mut $field = None; )*
                for (name, f) in wire {
                    match &*name {
                        $( $gof => {
                            $field = Some(
                                <$kind as $crate::gob::mapping::Kind<_>>::from_value(f, CONTEXT)?,
                            );
                        } )*
                        // Go skips fields it does not know.
                        _ => {}
                    }
                }
                Ok($ty {
                    $( $field: match $field {
                        Some(f) => f,
                        None => <$kind as $crate::gob::mapping::Kind<_>>::absent(CONTEXT)?,
                    }, )*
                })
            }

            fn absent(context: &'static str) -> ::std::result::Result<$ty, $crate::DecodeError> {
                Self::from_value($crate::gob::Value::Struct(::std::vec::Vec::new()), context)
            }
        }
    };
    (@name $name:literal) => { $name };
    (@name) => { "" };
}

/// Implements [`GobKind`] for marker `$kind` as the basic type `$ty`.
macro_rules! basic_kind {
    ($($kind:ident => $ty:ident, $doc:literal;)*) => {$(
        #[doc = $doc]
        #[derive(Debug)]
        pub enum $kind {}

        impl GobKind for $kind {
            fn gob_type() -> Type {
                Type::$ty
            }
        }
    )*};
}

basic_kind! {
    Bool => Bool, "gob `bool`: Rust `bool`.";
    Int => Int, "gob `int` (any Go signed integer): `i64`, `i32`.";
    Uint => Uint, "gob `uint` (any Go unsigned integer): `u64` to `u8`, [`PeerName`], [`Ipv4Addr`].";
    Float => Float, "gob `float`: `f64`.";
    Str => String, "gob `string`: `String`.";
    Bytes => Bytes, "gob `[]byte`: `Vec<u8>`.";
}

/// Implements `Kind<$t>` for a scalar kind whose value variant is `$variant` holding `$wide`.
macro_rules! scalar {
    ($kind:ident, $variant:ident, $wide:ty, $expected:literal: $($t:ty),*) => {$(
        impl Kind<$t> for $kind {
            fn to_value(v: &$t) -> Value {
                Value::$variant(<$wide>::from(*v))
            }

            fn from_value(v: Value, context: &'static str) -> Result<$t, DecodeError> {
                let Value::$variant(w) = v else {
                    return Err(mismatch(context, $expected, &v));
                };
                <$t>::try_from(w).map_err(|_| DecodeError::IntOutOfRange {
                    context,
                    target: stringify!($t),
                    value: i128::from(w),
                })
            }

            fn absent(_: &'static str) -> Result<$t, DecodeError> {
                Ok(<$t>::default())
            }
        }
    )*};
}

scalar!(Uint, Uint, u64, "uint": u64, u32, u16, u8);
scalar!(Int, Int, i64, "int": i64, i32);
scalar!(Bool, Bool, bool, "bool": bool);

impl Kind<f64> for Float {
    fn to_value(v: &f64) -> Value {
        Value::Float(*v)
    }

    fn from_value(v: Value, context: &'static str) -> Result<f64, DecodeError> {
        v.as_f64().ok_or_else(|| mismatch(context, "float", &v))
    }

    fn absent(_: &'static str) -> Result<f64, DecodeError> {
        Ok(0.0)
    }
}

impl Kind<PeerName> for Uint {
    fn to_value(v: &PeerName) -> Value {
        Value::Uint(v.0)
    }

    fn from_value(v: Value, context: &'static str) -> Result<PeerName, DecodeError> {
        let u = <Self as Kind<u64>>::from_value(v, context)?;
        if u > PeerName::MAX.0 {
            return Err(DecodeError::PeerNameTooWide(u));
        }
        Ok(PeerName(u))
    }

    fn absent(_: &'static str) -> Result<PeerName, DecodeError> {
        Ok(PeerName::UNKNOWN)
    }
}

/// Weave's `address.Address`: an IPv4 address as a `uint32`.
impl Kind<Ipv4Addr> for Uint {
    fn to_value(v: &Ipv4Addr) -> Value {
        Value::Uint(u64::from(u32::from(*v)))
    }

    fn from_value(v: Value, context: &'static str) -> Result<Ipv4Addr, DecodeError> {
        <Self as Kind<u32>>::from_value(v, context).map(Ipv4Addr::from)
    }

    fn absent(_: &'static str) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::UNSPECIFIED)
    }
}

impl Kind<String> for Str {
    fn to_value(v: &String) -> Value {
        Value::String(v.clone())
    }

    fn from_value(v: Value, context: &'static str) -> Result<String, DecodeError> {
        match v {
            Value::String(s) => Ok(s),
            _ => Err(mismatch(context, "string", &v)),
        }
    }

    fn absent(_: &'static str) -> Result<String, DecodeError> {
        Ok(String::new())
    }
}

impl Kind<Vec<u8>> for Bytes {
    fn to_value(v: &Vec<u8>) -> Value {
        Value::Bytes(v.clone())
    }

    fn from_value(v: Value, context: &'static str) -> Result<Vec<u8>, DecodeError> {
        match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(mismatch(context, "[]byte", &v)),
        }
    }

    fn absent(_: &'static str) -> Result<Vec<u8>, DecodeError> {
        Ok(Vec::new())
    }
}

/// gob `[]K`: `Vec<T>`. An empty slice is left off the wire (Go's rule) and an absent one is
/// empty.
#[derive(Debug)]
pub struct SliceOf<K>(PhantomData<K>);

impl<K: GobKind> GobKind for SliceOf<K> {
    fn gob_type() -> Type {
        Type::slice(K::gob_type())
    }
}

impl<K: Kind<T>, T> Kind<Vec<T>> for SliceOf<K> {
    fn to_value(v: &Vec<T>) -> Value {
        Value::Slice(v.iter().map(K::to_value).collect())
    }

    fn from_value(v: Value, context: &'static str) -> Result<Vec<T>, DecodeError> {
        let Value::Slice(items) = v else {
            return Err(mismatch(context, "slice", &v));
        };
        // The count was checked against the input by the decoder before `items` existed.
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(K::from_value(item, context)?);
        }
        Ok(out)
    }

    fn absent(_: &'static str) -> Result<Vec<T>, DecodeError> {
        Ok(Vec::new())
    }
}

/// gob `map[K]V`: a `BTreeMap` (Go's order is random; ours is the keys'). A map is always sent,
/// even empty (Go sends non-nil maps); an absent one decodes empty, so use [`Opt`] where nil and
/// empty differ. A key sent twice is [`DecodeError::DuplicateKey`].
#[derive(Debug)]
pub struct MapOf<K, V>(PhantomData<(K, V)>);

impl<K: GobKind, V: GobKind> GobKind for MapOf<K, V> {
    fn gob_type() -> Type {
        Type::map(K::gob_type(), V::gob_type())
    }
}

impl<K: Kind<A>, V: Kind<B>, A: Ord, B> Kind<BTreeMap<A, B>> for MapOf<K, V> {
    fn to_value(v: &BTreeMap<A, B>) -> Value {
        Value::Map(
            v.iter()
                .map(|(k, e)| (K::to_value(k), V::to_value(e)))
                .collect(),
        )
    }

    fn from_value(v: Value, context: &'static str) -> Result<BTreeMap<A, B>, DecodeError> {
        let Value::Map(entries) = v else {
            return Err(mismatch(context, "map", &v));
        };
        let mut out = BTreeMap::new();
        for (k, e) in entries {
            let shown = key_text(&k);
            if out
                .insert(K::from_value(k, context)?, V::from_value(e, context)?)
                .is_some()
            {
                return Err(DecodeError::DuplicateKey {
                    context,
                    key: shown,
                });
            }
        }
        Ok(out)
    }

    fn absent(_: &'static str) -> Result<BTreeMap<A, B>, DecodeError> {
        Ok(BTreeMap::new())
    }
}

/// A map key for an error message: scalars as text (bounded), others by kind.
fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => bounded(s),
        Value::Uint(u) => u.to_string(),
        Value::Int(i) => i.to_string(),
        _ => k.kind().to_string(),
    }
}

/// A Go pointer or a map that may be nil: `Option<T>`; `None` is left off the wire and an
/// absent field is `None`. Only as a struct field (a `None` inside a slice or map has no gob
/// form; it is written as the zero value).
#[derive(Debug)]
pub struct Opt<K>(PhantomData<K>);

impl<K: GobKind> GobKind for Opt<K> {
    fn gob_type() -> Type {
        K::gob_type()
    }
}

impl<K: Kind<T>, T> Kind<Option<T>> for Opt<K> {
    fn to_value(v: &Option<T>) -> Value {
        match v {
            Some(v) => K::to_value(v),
            None => zero(&K::gob_type()),
        }
    }

    fn to_field(v: &Option<T>) -> Option<Value> {
        v.as_ref().map(K::to_value)
    }

    fn from_value(v: Value, context: &'static str) -> Result<Option<T>, DecodeError> {
        K::from_value(v, context).map(Some)
    }

    fn absent(_: &'static str) -> Result<Option<T>, DecodeError> {
        Ok(None)
    }
}

/// The zero value of `ty`.
fn zero(ty: &Type) -> Value {
    match ty {
        Type::Bool => Value::Bool(false),
        Type::Int => Value::Int(0),
        Type::Uint => Value::Uint(0),
        Type::Float => Value::Float(0.0),
        Type::Bytes => Value::Bytes(Vec::new()),
        Type::String => Value::String(String::new()),
        Type::Slice(_) => Value::Slice(Vec::new()),
        Type::Array(n, e) => Value::Slice(vec![zero(e); *n]),
        Type::Map(..) => Value::Map(Vec::new()),
        Type::Struct(_) => Value::Struct(Vec::new()),
        Type::Named(_, inner) => zero(inner),
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Inner {
        n: u16,
        tags: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Outer {
        id: i32,
        name: String,
        blob: Vec<u8>,
        on: bool,
        inner: Inner,
        list: Vec<Inner>,
        names: BTreeMap<PeerName, String>,
        maybe: Option<BTreeMap<u64, Vec<u64>>>,
        addr: u32,
        ratio: f64,
    }

    gob_struct! {
        Inner as "inner" {
            "N" => n: Uint,
            "Tags" => tags: SliceOf<Str> as "[]string",
        }
    }

    gob_struct! {
        Outer as "outer" {
            "ID" => id: Int,
            "Name" => name: Str,
            "Blob" => blob: Bytes,
            "On" => on: Bool,
            "Inner" => inner: Inner,
            "List" => list: SliceOf<Inner>,
            "Names" => names: MapOf<Uint, Str> as "map[mesh.PeerName]string",
            "Maybe" => maybe: Opt<MapOf<Uint, SliceOf<Uint>>> as "M",
            "Addr" => addr: Uint,
            "Ratio" => ratio: Float,
        }
    }

    fn sample() -> Outer {
        Outer {
            id: -7,
            name: "x".into(),
            blob: vec![1, 2],
            on: true,
            inner: Inner {
                n: 4095,
                tags: vec!["a".into()],
            },
            list: vec![Inner::default(), Inner { n: 1, tags: vec![] }],
            names: BTreeMap::from([(PeerName(0xaa), "host".into())]),
            maybe: Some(BTreeMap::from([(3, vec![1, 2])])),
            addr: u32::from(Ipv4Addr::new(10, 32, 0, 1)),
            ratio: 0.5,
        }
    }

    fn round_trip(v: &Outer) -> Outer {
        let mut out = Vec::new();
        encode::<Outer, _>(&mut Encoder::new(), v, &mut out).unwrap();
        decode_one::<Outer, _>(&out, 16, "test").unwrap()
    }

    #[test]
    fn round_trips_every_kind() {
        let v = sample();
        assert_eq!(round_trip(&v), v);
        assert_eq!(round_trip(&Outer::default()), Outer::default());
        let empty = Outer {
            maybe: Some(BTreeMap::new()),
            ..Outer::default()
        };
        assert_eq!(round_trip(&empty), empty, "empty but present map survives");
    }

    #[test]
    fn the_type_is_go_shaped_and_named() {
        let Type::Struct(s) = Outer::gob_type() else {
            panic!("not a struct");
        };
        assert_eq!(&*s.name, "outer");
        let names: Vec<&str> = s.fields.iter().map(|(n, _)| &**n).collect();
        assert_eq!(
            names,
            ["ID", "Name", "Blob", "On", "Inner", "List", "Names", "Maybe", "Addr", "Ratio"]
        );
        assert_eq!(s.fields[6].1.go_name(), "map[mesh.PeerName]string");
        assert_eq!(s.fields[5].1, Type::slice(Inner::gob_type()));
    }

    #[test]
    fn unknown_fields_are_skipped_and_missing_ones_are_zero() {
        let wire = Type::structure(
            "other",
            [
                ("Extra", Type::map(Type::String, Type::Int)),
                ("Name", Type::String),
                ("N", Type::Uint),
            ],
        );
        let v = Value::structure([
            (
                "Extra",
                Value::Map(vec![(Value::String("k".into()), Value::Int(1))]),
            ),
            ("Name", Value::String("y".into())),
        ]);
        let mut out = Vec::new();
        Encoder::new().encode(&wire, &v, &mut out).unwrap();
        let got = decode_one::<Outer, _>(&out, 4, "test").unwrap();
        assert_eq!(
            got,
            Outer {
                name: "y".into(),
                ..Outer::default()
            }
        );
    }

    #[test]
    fn a_known_field_of_another_kind_is_refused_before_decoding() {
        let wire = Type::structure("outer", [("Name", Type::Uint)]);
        let mut out = Vec::new();
        let v = Value::structure([("Name", Value::Uint(3))]);
        Encoder::new().encode(&wire, &v, &mut out).unwrap();
        assert!(matches!(
            decode_one::<Outer, _>(&out, 4, "test"),
            Err(DecodeError::UnexpectedType {
                expected: "string",
                ..
            })
        ));
        // A slice of the right element kind under another name is fine (names are not checked).
        let wire = Type::structure(
            "inner",
            [("Tags", Type::named("whatever", Type::slice(Type::String)))],
        );
        let v = Value::structure([("Tags", Value::Slice(vec![Value::String("t".into())]))]);
        let mut out = Vec::new();
        Encoder::new().encode(&wire, &v, &mut out).unwrap();
        assert_eq!(
            decode_one::<Inner, _>(&out, 4, "test").unwrap().tags,
            vec!["t".to_string()]
        );
    }

    #[test]
    fn narrowing_and_duplicates_are_typed_errors() {
        let wire = Type::structure("inner", [("N", Type::Uint)]);
        let mut out = Vec::new();
        let v = Value::structure([("N", Value::Uint(70_000))]);
        Encoder::new().encode(&wire, &v, &mut out).unwrap();
        assert_eq!(
            decode_one::<Inner, _>(&out, 4, "test"),
            Err(DecodeError::IntOutOfRange {
                context: "inner",
                target: "u16",
                value: 70_000,
            })
        );
        let ty = MapOf::<Uint, Str>::gob_type();
        let v = Value::Map(vec![
            (Value::Uint(1), Value::String("a".into())),
            (Value::Uint(1), Value::String("b".into())),
        ]);
        let mut out = Vec::new();
        Encoder::new().encode(&ty, &v, &mut out).unwrap();
        assert_eq!(
            decode_one::<MapOf<Uint, Str>, BTreeMap<u64, String>>(&out, 4, "m"),
            Err(DecodeError::DuplicateKey {
                context: "m",
                key: "1".into()
            })
        );
        let wide = Value::Uint(1 << 48);
        assert_eq!(
            <Uint as Kind<PeerName>>::from_value(wide, "p"),
            Err(DecodeError::PeerNameTooWide(1 << 48))
        );
    }

    #[test]
    fn named_and_unnamed_twins_are_two_types() {
        #[derive(Debug, PartialEq)]
        struct Twins {
            a: Vec<u64>,
            b: Vec<u64>,
        }
        gob_struct! {
            Twins as "twins" {
                "A" => a: SliceOf<Uint> as "Value",
                "B" => b: SliceOf<Uint>,
            }
        }
        let v = Twins {
            a: vec![1],
            b: vec![2],
        };
        let mut out = Vec::new();
        encode::<Twins, _>(&mut Encoder::new(), &v, &mut out).unwrap();
        // twins (65), then "Value" []uint (66) and the unnamed []uint (67): three definitions.
        let mut input = &out[..];
        let mut dec = Decoder::new();
        let (ty, _) = dec.decode_next(&mut input).unwrap().unwrap();
        let Type::Struct(s) = ty else { panic!() };
        assert_eq!(s.fields[0].1.go_name(), "Value");
        assert_eq!(s.fields[1].1.go_name(), "");
        assert_eq!(decode_one::<Twins, _>(&out, 3, "t").unwrap(), v);
        assert!(decode_one::<Twins, _>(&out, 2, "t").is_err());
    }

    #[test]
    fn trailing_and_missing_values_are_errors() {
        let mut out = Vec::new();
        let mut enc = Encoder::new();
        encode::<Inner, _>(&mut enc, &Inner::default(), &mut out).unwrap();
        encode::<Inner, _>(&mut enc, &Inner::default(), &mut out).unwrap();
        assert!(matches!(
            decode_one::<Inner, _>(&out, 4, "t"),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(matches!(
            decode_one::<Inner, _>(&[], 4, "t"),
            Err(DecodeError::Missing { .. })
        ));
    }
}
