//! The gob decoder: reads messages off one stream, stores type definitions, resolves each into
//! a shared [`Type`] once, and decodes values strictly.
//!
//! Memory and work are bounded by the input (the module docs of [`gob`](super) list the
//! rules). Two of them live here:
//! * Resolution is memoized per type id, so a type used by a thousand values, or a component
//!   used by a thousand fields, exists once; handing it out is a reference-count increment.
//!   Unknown, too deep, too large and recursive types fail during resolution, which visits
//!   each definition once.
//! * Element slots are reserved against the message's bytes: before a slice, array or map of
//!   `n` elements is allocated, `n` (twice `n` for map entries) plus the slots still waiting
//!   to be filled at outer levels must fit in the bytes left, since every element encoding
//!   takes at least one byte of its own. Well-formed messages always pass; a nest of inflated
//!   counts fails before it allocates for bytes that are not there.

use std::collections::HashMap;
use std::sync::Arc;

use super::wire::{float_from_uint, Reader};
use super::wiretype::{self, WireDef};
use super::{
    is_omitted_field, StructType, Type, Value, ID_BOOL, ID_BYTES, ID_FLOAT, ID_INT, ID_STRING,
    ID_UINT, MAX_DEPTH, MAX_STREAM_TYPES, MAX_TYPE_DEF_BYTES, MAX_TYPE_NODES,
};
use crate::error::{bounded, DecodeError};

/// A resolved type with the size of its tree expansion and its nesting height.
#[derive(Debug, Clone)]
struct Resolved {
    ty: Type,
    nodes: usize,
    height: usize,
}

/// The decoding side of one gob stream. Keep one per stream: it learns the type definitions the
/// peer sends. After an error the stream position is unknown; drop the decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Definitions received, by type id.
    defs: HashMap<i64, WireDef>,
    /// Types resolved so far, by id (each resolved once, then shared).
    resolved: HashMap<i64, Resolved>,
    /// How many definitions this stream may carry.
    max_types: usize,
    /// Bytes of definition messages received so far.
    def_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder for a fresh stream that accepts up to [`MAX_STREAM_TYPES`] type definitions.
    pub fn new() -> Self {
        Self::with_type_limit(MAX_STREAM_TYPES)
    }

    /// A decoder for a fresh stream that accepts at most `max_types` type definitions (capped
    /// at [`MAX_STREAM_TYPES`]); 0 for streams that only carry predefined types. A message
    /// format knows how many types its writer defines, and a peer sending more than that is
    /// not that writer.
    pub fn with_type_limit(max_types: usize) -> Self {
        Self {
            defs: HashMap::new(),
            resolved: HashMap::new(),
            max_types: max_types.min(MAX_STREAM_TYPES),
            def_bytes: 0,
        }
    }

    /// Decodes the next value from `input`, first absorbing any type definitions before it, and
    /// advances `input` past what was consumed. Returns `Ok(None)` when `input` ends cleanly at
    /// a message boundary (possibly after definitions). Returns the value's type as the stream
    /// defined it, with struct fields in wire order and unknown fields kept.
    ///
    /// `input` must hold whole messages (a frame body or gossip payload): a message cut short
    /// is an error, not a request for more bytes.
    pub fn decode_next(&mut self, input: &mut &[u8]) -> Result<Option<(Type, Value)>, DecodeError> {
        self.decode_next_checked(input, |_| Ok(()))
    }

    /// Like [`decode_next`](Self::decode_next), but calls `check` with the value's type before
    /// reading the value, so a value of an unexpected type is never decoded; an error from
    /// `check` is returned as is.
    pub fn decode_next_checked<F>(
        &mut self,
        input: &mut &[u8],
        check: F,
    ) -> Result<Option<(Type, Value)>, DecodeError>
    where
        F: FnOnce(&Type) -> Result<(), DecodeError>,
    {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            let mut r = Reader::new(input);
            let len = r.len_prefix("message length", 1)?;
            if len == 0 {
                return Err(DecodeError::EmptyMessage);
            }
            let msg = r.take(len, "message")?;
            let rest = r.rest();
            let mut m = Reader::new(msg);
            let id = m.int("type id")?;
            if id < 0 {
                self.read_definition(id, len, m)?;
                *input = rest;
                continue;
            }
            if id == 0 {
                return Err(DecodeError::BadTypeId(id));
            }
            let ty = self.resolve(id, 1)?.ty;
            check(&ty)?;
            let value = Body::new(m).top_level(&ty, "gob message")?;
            *input = rest;
            return Ok(Some((ty, value)));
        }
    }

    /// Stores the definition of type `-neg_id` carried by a message of `len` bytes.
    fn read_definition(
        &mut self,
        neg_id: i64,
        len: usize,
        m: Reader<'_>,
    ) -> Result<(), DecodeError> {
        let id = neg_id.checked_neg().ok_or(DecodeError::BadTypeId(neg_id))?;
        if !wiretype::definable(id) {
            return Err(DecodeError::BadTypeId(id));
        }
        if self.defs.contains_key(&id) {
            return Err(DecodeError::DuplicateType(id));
        }
        if self.defs.len() >= self.max_types {
            return Err(DecodeError::TooManyTypes(self.max_types));
        }
        self.def_bytes = self.def_bytes.saturating_add(len);
        if self.def_bytes > MAX_TYPE_DEF_BYTES {
            return Err(DecodeError::TypeDefsTooLarge);
        }
        let value = Body::new(m).top_level(wiretype::schema(), "gob type definition")?;
        let def = wiretype::from_value(&value, id)?;
        self.defs.insert(id, def);
        Ok(())
    }

    /// The type with id `id` used at nesting level `depth`, resolving (and remembering) it and
    /// its components on first use.
    fn resolve(&mut self, id: i64, depth: usize) -> Result<Resolved, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        if let Some(ty) = basic(id) {
            return Ok(Resolved {
                ty,
                nodes: 1,
                height: 1,
            });
        }
        if !wiretype::definable(id) {
            return Err(if id > 0 {
                DecodeError::UnsupportedType(id)
            } else {
                DecodeError::BadTypeId(id)
            });
        }
        if let Some(hit) = self.resolved.get(&id) {
            if depth + hit.height - 1 > MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            return Ok(hit.clone());
        }
        // Cloned so the components can be resolved (and remembered) meanwhile; this happens
        // once per id and clones only `Arc` names and ids.
        let def = self
            .defs
            .get(&id)
            .ok_or(DecodeError::UnknownTypeId(id))?
            .clone();
        let mut acc = Resolved {
            ty: Type::Bytes,
            nodes: 1,
            height: 1,
        };
        let next = depth + 1;
        acc.ty = match def {
            WireDef::Opaque => Type::Bytes,
            WireDef::Slice { name, elem } => {
                Type::named(name, Type::slice(self.component(elem, next, &mut acc)?))
            }
            WireDef::Array { name, len, elem } => Type::named(
                name,
                Type::array(len, self.component(elem, next, &mut acc)?),
            ),
            WireDef::Map { name, key, elem } => Type::named(
                name,
                Type::map(
                    self.component(key, next, &mut acc)?,
                    self.component(elem, next, &mut acc)?,
                ),
            ),
            WireDef::Struct { name, fields } => {
                let mut out = Vec::with_capacity(fields.len());
                for (fname, fid) in fields {
                    out.push((fname, self.component(fid, next, &mut acc)?));
                }
                Type::Struct(Arc::new(StructType { name, fields: out }))
            }
        };
        self.resolved.insert(id, acc.clone());
        Ok(acc)
    }

    /// Resolves a component of a type being resolved, adding its size to `acc`.
    fn component(
        &mut self,
        id: i64,
        depth: usize,
        acc: &mut Resolved,
    ) -> Result<Type, DecodeError> {
        let c = self.resolve(id, depth)?;
        acc.nodes = acc.nodes.saturating_add(c.nodes);
        if acc.nodes > MAX_TYPE_NODES {
            return Err(DecodeError::TypeTooLarge);
        }
        acc.height = acc.height.max(c.height + 1);
        Ok(c.ty)
    }
}

/// The type of a predefined id this codec models.
fn basic(id: i64) -> Option<Type> {
    Some(match id {
        ID_BOOL => Type::Bool,
        ID_INT => Type::Int,
        ID_UINT => Type::Uint,
        ID_FLOAT => Type::Float,
        ID_BYTES => Type::Bytes,
        ID_STRING => Type::String,
        _ => return None,
    })
}

/// The body of one message being decoded, with the element slots reserved so far.
struct Body<'a> {
    r: Reader<'a>,
    /// Elements announced by enclosing slices, arrays and maps and not yet started; each needs
    /// at least one of the bytes left.
    pending: usize,
}

impl<'a> Body<'a> {
    fn new(r: Reader<'a>) -> Self {
        Self { r, pending: 0 }
    }

    /// Reads a whole message body holding one value of `ty` (a struct, or a singleton).
    fn top_level(mut self, ty: &Type, context: &'static str) -> Result<Value, DecodeError> {
        let value = match ty {
            Type::Struct(s) => self.read_struct(s)?,
            _ => {
                let delta = self.r.uint("singleton delta")?;
                if delta != 0 {
                    return Err(DecodeError::NonZeroSingleton(delta));
                }
                self.read_value(ty)?
            }
        };
        match self.r.remaining() {
            0 => Ok(value),
            count => Err(DecodeError::TrailingBytes { context, count }),
        }
    }

    /// Reserves `n` elements of at least `each` bytes; see the module docs.
    fn reserve(&mut self, n: usize, each: usize) -> Result<(), DecodeError> {
        let remaining = self.r.remaining();
        match n
            .checked_mul(each)
            .and_then(|need| need.checked_add(self.pending))
        {
            Some(total) if total <= remaining => {
                self.pending = total;
                Ok(())
            }
            _ => Err(DecodeError::LengthOverrun {
                len: n as u64,
                remaining,
            }),
        }
    }

    /// Reads `n` reserved elements of `each` slots with `read`, into a vector allocated once.
    fn elements<T>(
        &mut self,
        n: usize,
        each: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        self.reserve(n, each)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            // The element is being read now: its slots are no longer waiting.
            self.pending = self.pending.saturating_sub(each);
            items.push(read(self)?);
        }
        Ok(items)
    }

    /// Reads a struct body. Recursion depth is bounded by the type's depth.
    fn read_struct(&mut self, s: &StructType) -> Result<Value, DecodeError> {
        let mut fields: Vec<(Arc<str>, Value)> = Vec::new();
        let mut next: usize = 0;
        loop {
            let delta = self.r.uint("field delta")?;
            if delta == 0 {
                // A struct's field count is unknown until its end; give back the growth slack.
                fields.shrink_to_fit();
                return Ok(Value::Struct(fields));
            }
            let idx = u64::try_from(next)
                .ok()
                .and_then(|n| n.checked_add(delta - 1))
                .and_then(|i| usize::try_from(i).ok());
            let Some((idx, (name, fty))) = idx.and_then(|i| s.fields.get(i).map(|f| (i, f))) else {
                return Err(DecodeError::FieldOutOfRange {
                    name: bounded(&s.name),
                    delta,
                    fields: s.fields.len(),
                });
            };
            let v = self.read_value(fty)?;
            if !is_omitted_field(fty, &v) {
                fields.push((Arc::clone(name), v));
            }
            next = idx + 1;
        }
    }

    /// Reads a value in its non-singleton form.
    fn read_value(&mut self, ty: &Type) -> Result<Value, DecodeError> {
        Ok(match ty {
            Type::Bool => match self.r.uint("bool")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(DecodeError::InvalidBool(other)),
            },
            Type::Int => Value::Int(self.r.int("int")?),
            Type::Uint => Value::Uint(self.r.uint("uint")?),
            Type::Float => Value::Float(float_from_uint(self.r.uint("float")?)),
            Type::Bytes => {
                let n = self.r.len_prefix("[]byte length", 1)?;
                Value::Bytes(self.r.take(n, "[]byte")?.to_vec())
            }
            Type::String => {
                let n = self.r.len_prefix("string length", 1)?;
                let b = self.r.take(n, "string")?;
                Value::String(
                    std::str::from_utf8(b)
                        .map_err(|_| DecodeError::InvalidUtf8)?
                        .to_owned(),
                )
            }
            Type::Slice(elem) => {
                let n = self.r.len_prefix("slice length", 1)?;
                Value::Slice(self.elements(n, 1, |b| b.read_value(elem))?)
            }
            Type::Array(len, elem) => {
                let got = self.r.uint("array length")?;
                if usize::try_from(got).ok() != Some(*len) {
                    return Err(DecodeError::ArrayLength {
                        expected: *len,
                        got,
                    });
                }
                Value::Slice(self.elements(*len, 1, |b| b.read_value(elem))?)
            }
            Type::Map(kt, et) => {
                let n = self.r.len_prefix("map length", 2)?;
                Value::Map(self.elements(n, 2, |b| {
                    let k = b.read_value(kt)?;
                    // The key is read; the entry's second slot is the element's.
                    let e = b.read_value(et)?;
                    Ok((k, e))
                })?)
            }
            Type::Struct(s) => self.read_struct(s)?,
            Type::Named(_, inner) => self.read_value(inner)?,
        })
    }
}
