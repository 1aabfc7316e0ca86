//! The gob encoder: assigns type ids the way Go does, sends each type definition once per
//! stream, and writes values with Go's field-omission rules.
//!
//! Id assignment mirrors Go's type registry so that our bytes equal Go's: a struct takes its id
//! before its fields' types are registered, while a slice, array or map takes its id after its
//! components (so `[]connectionSummary` gets the id after `connectionSummary`). Definitions go
//! out outer type first, then the components in field (or key, element) order.

use std::collections::{HashMap, HashSet};

use super::wire::{float_to_uint, put_bytes, put_int, put_message, put_uint};
use super::wiretype::WireDef;
use super::{
    is_omitted_field, wiretype, StructType, Type, Value, FIRST_USER_TYPE_ID, ID_BYTES, ID_STRING,
    ID_UINT, MAX_DEPTH,
};
use crate::error::{bounded, EncodeError};

/// The encoding side of one gob stream. Keep one per stream: it remembers which type
/// definitions the peer has already been sent.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Ids assigned to composite types so far.
    ids: HashMap<Type, i64>,
    /// Ids whose definition has been written to the stream.
    sent: HashSet<i64>,
    /// The next id to hand out.
    next_id: i64,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A fresh stream whose first user type gets id 65, as in a fresh Go process.
    pub fn new() -> Self {
        Self::with_first_type_id(FIRST_USER_TYPE_ID)
    }

    /// A fresh stream whose first user type gets `first` (at least 65). Go's ids are
    /// process-global, so a Go peer's first type in a stream often has a later id; this lets a
    /// codec reproduce Go's bytes exactly. Decoders do not care which ids are used.
    pub fn with_first_type_id(first: i64) -> Self {
        Self {
            ids: HashMap::new(),
            sent: HashSet::new(),
            next_id: first.max(FIRST_USER_TYPE_ID),
        }
    }

    /// Appends `v`, of type `ty`, to `out` as one gob message, preceded by the definitions of
    /// any types this stream has not sent yet. On error nothing is appended.
    pub fn encode(&mut self, ty: &Type, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_type(ty, 1)?;
        let mut payload = Vec::new();
        match ty {
            Type::Struct(s) => put_struct(s, v, &mut payload)?,
            _ => {
                payload.push(0x00); // singleton field delta
                put_value(ty, v, &mut payload)?;
            }
        }
        let id = self.register(ty);
        let mut defs = Vec::new();
        let mut sent = self.sent.clone();
        send_defs(&self.ids, &mut sent, ty, &mut defs)?;
        self.sent = sent;
        out.extend_from_slice(&defs);
        put_message(out, id, &payload);
        Ok(())
    }

    /// Gives `ty` and its components ids (Go's order; see the module docs) and returns `ty`'s.
    fn register(&mut self, ty: &Type) -> i64 {
        if let Some(id) = ty.basic_id() {
            return id;
        }
        if let Some(&id) = self.ids.get(ty) {
            return id;
        }
        match ty {
            Type::Struct(s) => {
                let id = self.alloc(ty);
                for (_, f) in &s.fields {
                    self.register(f);
                }
                id
            }
            Type::Slice(elem) | Type::Array(_, elem) => {
                self.register(elem);
                self.alloc(ty)
            }
            Type::Map(key, elem) => {
                self.register(key);
                self.register(elem);
                self.alloc(ty)
            }
            // A named type is its own type, not its unnamed twin: only the components get ids.
            Type::Named(_, inner) => {
                for c in components(inner) {
                    self.register(c);
                }
                self.alloc(ty)
            }
            // Basic types returned above.
            Type::Bool | Type::Int | Type::Uint | Type::Float | Type::Bytes | Type::String => 0,
        }
    }

    fn alloc(&mut self, ty: &Type) -> i64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.ids.insert(ty.clone(), id);
        id
    }
}

/// Rejects types too deep to decode, arrays too long for gob, and duplicate field names.
fn check_type(ty: &Type, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    match ty {
        Type::Slice(elem) => check_type(elem, depth + 1),
        Type::Array(len, elem) => {
            if i64::try_from(*len).is_err() {
                return Err(EncodeError::ArrayTooLong(*len));
            }
            check_type(elem, depth + 1)
        }
        Type::Map(key, elem) => {
            check_type(key, depth + 1)?;
            check_type(elem, depth + 1)
        }
        Type::Struct(s) => {
            for (i, (name, f)) in s.fields.iter().enumerate() {
                if s.fields.iter().take(i).any(|(n, _)| n == name) {
                    return Err(EncodeError::DuplicateFieldType(bounded(&s.name)));
                }
                check_type(f, depth + 1)?;
            }
            Ok(())
        }
        Type::Named(_, inner) => check_type(inner, depth),
        Type::Bool | Type::Int | Type::Uint | Type::Float | Type::Bytes | Type::String => Ok(()),
    }
}

/// Writes the definitions of `ty` and its components not yet in `sent`, outer type first.
fn send_defs(
    ids: &HashMap<Type, i64>,
    sent: &mut HashSet<i64>,
    ty: &Type,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if ty.basic_id().is_some() {
        return Ok(());
    }
    // Every composite type was registered before this is called.
    let Some(&id) = ids.get(ty) else {
        return Ok(());
    };
    if !sent.insert(id) {
        return Ok(());
    }
    let lookup = |t: &Type| t.basic_id().or_else(|| ids.get(t).copied()).unwrap_or(0);
    put_definition(out, id, &wiretype::def_of(ty, &lookup)?)?;
    for c in components(ty.unnamed()) {
        send_defs(ids, sent, c, out)?;
    }
    Ok(())
}

/// The component types of `ty` in Go's order (fields, element, or key then element).
fn components(ty: &Type) -> Vec<&Type> {
    match ty {
        Type::Struct(s) => s.fields.iter().map(|(_, f)| f).collect(),
        Type::Slice(elem) | Type::Array(_, elem) => vec![&**elem],
        Type::Map(key, elem) => vec![&**key, &**elem],
        Type::Named(_, inner) => components(inner),
        Type::Bool | Type::Int | Type::Uint | Type::Float | Type::Bytes | Type::String => {
            Vec::new()
        }
    }
}

/// Appends the message defining type `id` as `def` (whatever its component ids say).
pub(crate) fn put_definition(out: &mut Vec<u8>, id: i64, def: &WireDef) -> Result<(), EncodeError> {
    let mut payload = Vec::new();
    if let Type::Struct(schema) = wiretype::schema() {
        put_struct(schema, &wiretype::to_value(def, id)?, &mut payload)?;
    }
    put_message(out, -id, &payload);
    Ok(())
}

fn mismatch(ty: &Type, v: &Value) -> EncodeError {
    EncodeError::TypeMismatch {
        expected: ty.kind(),
        found: v.kind(),
    }
}

/// Writes a struct body: `(field delta, value)*` for the fields that are sent, then `0`.
fn put_struct(s: &StructType, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let Value::Struct(vals) = v else {
        return Err(EncodeError::TypeMismatch {
            expected: "struct",
            found: v.kind(),
        });
    };
    for (i, (name, _)) in vals.iter().enumerate() {
        if !s.fields.iter().any(|(n, _)| n == name) {
            return Err(EncodeError::UnknownField {
                strukt: bounded(&s.name),
                field: bounded(name),
            });
        }
        if vals.iter().take(i).any(|(n, _)| n == name) {
            return Err(EncodeError::DuplicateField(bounded(name)));
        }
    }
    let mut next = 0usize;
    for (idx, (name, fty)) in s.fields.iter().enumerate() {
        let Some((_, fv)) = vals.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if is_omitted_field(fty, fv) {
            continue;
        }
        put_uint(out, (idx + 1 - next) as u64);
        put_value(fty, fv, out)?;
        next = idx + 1;
    }
    out.push(0x00);
    Ok(())
}

/// Writes a value in its non-singleton form (as a struct field, element or map entry).
fn put_value(ty: &Type, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match (ty, v) {
        (Type::Bool, Value::Bool(b)) => put_uint(out, u64::from(*b)),
        (Type::Int, Value::Int(i)) => put_int(out, *i),
        (Type::Uint, Value::Uint(u)) => put_uint(out, *u),
        (Type::Float, Value::Float(f)) => put_uint(out, float_to_uint(*f)),
        (Type::Bytes, Value::Bytes(b)) => put_bytes(out, b),
        (Type::String, Value::String(s)) => put_bytes(out, s.as_bytes()),
        (Type::Slice(elem), Value::Slice(items)) => {
            put_uint(out, items.len() as u64);
            for item in items {
                put_value(elem, item, out)?;
            }
        }
        (Type::Array(len, elem), Value::Slice(items)) => {
            if items.len() != *len {
                return Err(EncodeError::ArrayLength {
                    expected: *len,
                    got: items.len(),
                });
            }
            put_uint(out, items.len() as u64);
            for item in items {
                put_value(elem, item, out)?;
            }
        }
        (Type::Map(kt, et), Value::Map(entries)) => {
            put_uint(out, entries.len() as u64);
            for (k, e) in entries {
                put_value(kt, k, out)?;
                put_value(et, e, out)?;
            }
        }
        (Type::Struct(s), _) => put_struct(s, v, out)?,
        (Type::Named(_, inner), _) => put_value(inner, v, out)?,
        _ => return Err(mismatch(ty, v)),
    }
    Ok(())
}

/// Appends a top-level gob `string` message (no type definition needed).
pub(crate) fn put_top_level_string(out: &mut Vec<u8>, s: &str) {
    let mut payload = vec![0x00];
    put_bytes(&mut payload, s.as_bytes());
    put_message(out, ID_STRING, &payload);
}

/// Appends a top-level gob `uint` message.
pub(crate) fn put_top_level_uint(out: &mut Vec<u8>, u: u64) {
    let mut payload = vec![0x00];
    put_uint(&mut payload, u);
    put_message(out, ID_UINT, &payload);
}

/// Appends a top-level gob `[]byte` message.
pub(crate) fn put_top_level_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let mut payload = Vec::with_capacity(b.len() + 10);
    payload.push(0x00);
    put_bytes(&mut payload, b);
    put_message(out, ID_BYTES, &payload);
}
