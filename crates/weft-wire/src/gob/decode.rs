//! The gob decoder: reads messages off one stream, stores type definitions, resolves them into
//! [`Type`] trees when a value needs them, and decodes values strictly.
//!
//! Costs are bounded by the input: definitions and values are read from the message they came
//! in, counts are checked against the bytes left before anything is allocated, resolution stops
//! at [`MAX_DEPTH`] levels and [`MAX_TYPE_NODES`] nodes, and the type nodes handed out with
//! values may not exceed [`WORK_PER_BYTE`] per byte of input (plus [`WORK_BASE`]), so a stream
//! of tiny messages naming a large type cannot make us copy types without end.

use std::collections::HashMap;

use super::wire::{float_from_uint, Reader};
use super::wiretype::{self, WireDef};
use super::{
    is_omitted_field, StructType, Type, Value, ID_BOOL, ID_BYTES, ID_FLOAT, ID_INT, ID_STRING,
    ID_UINT, MAX_DEPTH, MAX_TYPE_NODES,
};
use crate::error::DecodeError;

/// Most elements reserved up front for a slice, array or map (it grows past that as needed).
const PREALLOC_MAX: usize = 256;
/// Type nodes a stream may have the decoder produce per byte it consumed.
const WORK_PER_BYTE: usize = 4;
/// Type nodes a stream may have the decoder produce regardless of its length.
const WORK_BASE: usize = 1 << 16;

/// The decoding side of one gob stream. Keep one per stream: it learns the type definitions the
/// peer sends. After an error the stream position is unknown; drop the decoder.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    /// Definitions received, by type id.
    defs: HashMap<i64, WireDef>,
    /// Resolved top-level types by id, with their node counts.
    resolved: HashMap<i64, (Type, usize)>,
    /// Bytes consumed so far.
    consumed: usize,
    /// Type nodes handed out so far.
    work: usize,
}

impl Decoder {
    /// A decoder for a fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the next value from `input`, first absorbing any type definitions before it, and
    /// advances `input` past what was consumed. Returns `Ok(None)` when `input` ends cleanly at
    /// a message boundary (possibly after definitions). Returns the value's type as the stream
    /// defined it, with struct fields in wire order and unknown fields kept.
    ///
    /// `input` must hold whole messages (a frame body or gossip payload): a message cut short
    /// is an error, not a request for more bytes.
    pub fn decode_next(&mut self, input: &mut &[u8]) -> Result<Option<(Type, Value)>, DecodeError> {
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
            self.consumed = self.consumed.saturating_add(input.len() - rest.len());
            let mut m = Reader::new(msg);
            let id = m.int("type id")?;
            if id < 0 {
                self.read_definition(id, &mut m)?;
                *input = rest;
                continue;
            }
            let (ty, value) = self.read_value_message(id, &mut m)?;
            *input = rest;
            return Ok(Some((ty, value)));
        }
    }

    fn read_definition(&mut self, neg_id: i64, m: &mut Reader<'_>) -> Result<(), DecodeError> {
        let id = neg_id.checked_neg().ok_or(DecodeError::BadTypeId(neg_id))?;
        if !wiretype::definable(id) {
            return Err(DecodeError::BadTypeId(id));
        }
        if self.defs.contains_key(&id) {
            return Err(DecodeError::DuplicateType(id));
        }
        let value = match wiretype::schema() {
            Type::Struct(s) => read_struct(m, s)?,
            other => read_value(m, other)?,
        };
        finish(m, "gob type definition")?;
        let def = wiretype::from_value(&value, id)?;
        self.defs.insert(id, def);
        Ok(())
    }

    fn read_value_message(
        &mut self,
        id: i64,
        m: &mut Reader<'_>,
    ) -> Result<(Type, Value), DecodeError> {
        if id == 0 {
            return Err(DecodeError::BadTypeId(id));
        }
        let (ty, nodes) = match self.resolved.get(&id) {
            Some(hit) => hit.clone(),
            None => {
                let mut budget = MAX_TYPE_NODES;
                let ty = self.resolve(id, 1, &mut budget)?;
                let nodes = MAX_TYPE_NODES - budget;
                self.resolved.insert(id, (ty.clone(), nodes));
                (ty, nodes)
            }
        };
        self.work = self.work.saturating_add(nodes);
        let allowed = self
            .consumed
            .saturating_mul(WORK_PER_BYTE)
            .saturating_add(WORK_BASE);
        if self.work > allowed {
            return Err(DecodeError::WorkLimit);
        }
        let value = match &ty {
            Type::Struct(s) => read_struct(m, s)?,
            _ => {
                let delta = m.uint("singleton delta")?;
                if delta != 0 {
                    return Err(DecodeError::NonZeroSingleton(delta));
                }
                read_value(m, &ty)?
            }
        };
        finish(m, "gob message")?;
        Ok((ty, value))
    }

    /// Expands type `id` into a tree, charging one node of `budget` per node.
    fn resolve(&self, id: i64, depth: usize, budget: &mut usize) -> Result<Type, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        *budget = budget.checked_sub(1).ok_or(DecodeError::TypeTooLarge)?;
        let basic = match id {
            ID_BOOL => Some(Type::Bool),
            ID_INT => Some(Type::Int),
            ID_UINT => Some(Type::Uint),
            ID_FLOAT => Some(Type::Float),
            ID_BYTES => Some(Type::Bytes),
            ID_STRING => Some(Type::String),
            _ => None,
        };
        if let Some(t) = basic {
            return Ok(t);
        }
        if !wiretype::definable(id) {
            return Err(if id > 0 {
                DecodeError::UnsupportedType(id)
            } else {
                DecodeError::BadTypeId(id)
            });
        }
        let def = self.defs.get(&id).ok_or(DecodeError::UnknownTypeId(id))?;
        let next = depth + 1;
        Ok(match def {
            WireDef::Opaque => Type::Bytes,
            WireDef::Slice { elem } => Type::Slice(Box::new(self.resolve(*elem, next, budget)?)),
            WireDef::Array { len, elem } => {
                Type::Array(*len, Box::new(self.resolve(*elem, next, budget)?))
            }
            WireDef::Map { key, elem } => Type::Map(
                Box::new(self.resolve(*key, next, budget)?),
                Box::new(self.resolve(*elem, next, budget)?),
            ),
            WireDef::Struct { name, fields } => {
                let mut out = Vec::with_capacity(fields.len());
                for (fname, fid) in fields {
                    out.push((fname.clone(), self.resolve(*fid, next, budget)?));
                }
                Type::Struct(StructType {
                    name: name.clone(),
                    fields: out,
                })
            }
        })
    }
}

/// Requires that a message (or payload) has been read to its end.
fn finish(m: &Reader<'_>, context: &'static str) -> Result<(), DecodeError> {
    match m.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { context, count }),
    }
}

/// Reads a struct body. Recursion depth is bounded by the type's depth.
fn read_struct(m: &mut Reader<'_>, s: &StructType) -> Result<Value, DecodeError> {
    let mut fields = Vec::new();
    let mut next: usize = 0;
    loop {
        let delta = m.uint("field delta")?;
        if delta == 0 {
            return Ok(Value::Struct(fields));
        }
        let idx = u64::try_from(next)
            .ok()
            .and_then(|n| n.checked_add(delta - 1))
            .and_then(|i| usize::try_from(i).ok());
        let Some((idx, (name, fty))) = idx.and_then(|i| s.fields.get(i).map(|f| (i, f))) else {
            return Err(DecodeError::FieldOutOfRange {
                name: s.name.clone(),
                delta,
                fields: s.fields.len(),
            });
        };
        let v = read_value(m, fty)?;
        if !is_omitted_field(fty, &v) {
            fields.push((name.clone(), v));
        }
        next = idx + 1;
    }
}

/// Reads a value in its non-singleton form.
fn read_value(m: &mut Reader<'_>, ty: &Type) -> Result<Value, DecodeError> {
    Ok(match ty {
        Type::Bool => match m.uint("bool")? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(DecodeError::InvalidBool(other)),
        },
        Type::Int => Value::Int(m.int("int")?),
        Type::Uint => Value::Uint(m.uint("uint")?),
        Type::Float => Value::Float(float_from_uint(m.uint("float")?)),
        Type::Bytes => {
            let n = m.len_prefix("[]byte length", 1)?;
            Value::Bytes(m.take(n, "[]byte")?.to_vec())
        }
        Type::String => {
            let n = m.len_prefix("string length", 1)?;
            let b = m.take(n, "string")?;
            Value::String(
                std::str::from_utf8(b)
                    .map_err(|_| DecodeError::InvalidUtf8)?
                    .to_string(),
            )
        }
        // Every encoded element takes at least one byte, every map entry two.
        Type::Slice(elem) => {
            let n = m.len_prefix("slice length", 1)?;
            let mut items = Vec::with_capacity(n.min(PREALLOC_MAX));
            for _ in 0..n {
                items.push(read_value(m, elem)?);
            }
            Value::Slice(items)
        }
        Type::Array(len, elem) => {
            let got = m.uint("array length")?;
            if usize::try_from(got).ok() != Some(*len) {
                return Err(DecodeError::ArrayLength {
                    expected: *len,
                    got,
                });
            }
            if *len > m.remaining() {
                return Err(DecodeError::LengthOverrun {
                    len: got,
                    remaining: m.remaining(),
                });
            }
            let mut items = Vec::with_capacity((*len).min(PREALLOC_MAX));
            for _ in 0..*len {
                items.push(read_value(m, elem)?);
            }
            Value::Slice(items)
        }
        Type::Map(kt, et) => {
            let n = m.len_prefix("map length", 2)?;
            let mut entries = Vec::with_capacity(n.min(PREALLOC_MAX));
            for _ in 0..n {
                let k = read_value(m, kt)?;
                let e = read_value(m, et)?;
                entries.push((k, e));
            }
            Value::Map(entries)
        }
        Type::Struct(s) => read_struct(m, s)?,
    })
}
