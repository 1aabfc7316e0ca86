//! gob type definitions: the `wireType` struct that a message with a negative type id carries,
//! described here as an ordinary [`Type`] so the generic struct codec reads and writes it.
//!
//! `wireType` has one field per kind (`ArrayT`, `SliceT`, `StructT`, `MapT`, and three for the
//! marshaler interfaces); exactly one is set. Each kind embeds `CommonType { Name, Id }` and
//! names its components by type id, which may refer to types defined later in the stream.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use super::{Type, Value, FIRST_USER_TYPE_ID};
use crate::error::{DecodeError, EncodeError};

/// A received type definition, components still given as type ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireDef {
    /// `[len]elem` (named `name` when not empty).
    Array {
        name: Arc<str>,
        len: usize,
        elem: i64,
    },
    /// `[]elem` (named `name` when not empty).
    Slice { name: Arc<str>, elem: i64 },
    /// A struct with named fields; the names become the resolved type's (shared) names.
    Struct {
        name: Arc<str>,
        fields: Vec<(Arc<str>, i64)>,
    },
    /// `map[key]elem` (named `name` when not empty).
    Map { name: Arc<str>, key: i64, elem: i64 },
    /// A `GobEncoder`, `BinaryMarshaler` or `TextMarshaler`: its values are byte strings.
    Opaque,
}

/// Builds a struct type from `(field name, type)` pairs.
pub(super) fn st(name: &str, fields: Vec<(&str, Type)>) -> Type {
    Type::structure(name, fields)
}

/// The `wireType` schema.
pub(crate) fn schema() -> &'static Type {
    static SCHEMA: OnceLock<Type> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let common = || {
            st(
                "CommonType",
                vec![("Name", Type::String), ("Id", Type::Int)],
            )
        };
        let array = st(
            "arrayType",
            vec![
                ("CommonType", common()),
                ("Elem", Type::Int),
                ("Len", Type::Int),
            ],
        );
        let slice = st(
            "sliceType",
            vec![("CommonType", common()), ("Elem", Type::Int)],
        );
        let field = st("fieldType", vec![("Name", Type::String), ("Id", Type::Int)]);
        let strukt = st(
            "structType",
            vec![("CommonType", common()), ("Field", Type::slice(field))],
        );
        let map = st(
            "mapType",
            vec![
                ("CommonType", common()),
                ("Key", Type::Int),
                ("Elem", Type::Int),
            ],
        );
        let marshaler = || st("gobEncoderType", vec![("CommonType", common())]);
        st(
            "wireType",
            vec![
                ("ArrayT", array),
                ("SliceT", slice),
                ("StructT", strukt),
                ("MapT", map),
                ("GobEncoderT", marshaler()),
                ("BinaryMarshalerT", marshaler()),
                ("TextMarshalerT", marshaler()),
            ],
        )
    })
}

fn common(name: &str, id: i64) -> Value {
    let mut fields = Vec::with_capacity(2);
    if !name.is_empty() {
        fields.push(kv("Name", Value::String(name.to_string())));
    }
    fields.push(kv("Id", Value::Int(id)));
    Value::Struct(fields)
}

fn kv(name: &str, v: Value) -> (Arc<str>, Value) {
    (Arc::from(name), v)
}

/// The definition of composite type `ty`, given the ids of its components.
pub(crate) fn def_of(ty: &Type, ids: &dyn Fn(&Type) -> i64) -> Result<WireDef, EncodeError> {
    let name = || match ty {
        Type::Named(name, _) => Arc::clone(name),
        _ => Arc::from(""),
    };
    Ok(match ty.unnamed() {
        Type::Slice(elem) => WireDef::Slice {
            name: name(),
            elem: ids(elem),
        },
        Type::Array(len, elem) => WireDef::Array {
            name: name(),
            len: *len,
            elem: ids(elem),
        },
        Type::Map(key, elem) => WireDef::Map {
            name: name(),
            key: ids(key),
            elem: ids(elem),
        },
        Type::Struct(s) => WireDef::Struct {
            name: Arc::clone(&s.name),
            fields: s
                .fields
                .iter()
                .map(|(n, t)| (Arc::clone(n), ids(t)))
                .collect(),
        },
        Type::Bool
        | Type::Int
        | Type::Uint
        | Type::Float
        | Type::Bytes
        | Type::String
        | Type::Named(..) => {
            return Err(EncodeError::TypeMismatch {
                expected: "composite",
                found: ty.kind(),
            })
        }
    })
}

/// The `wireType` value carrying `def` as type `id`.
pub(crate) fn to_value(def: &WireDef, id: i64) -> Result<Value, EncodeError> {
    let (kind, body) = match def {
        WireDef::Slice { name, elem } => (
            "SliceT",
            vec![
                kv("CommonType", common(name, id)),
                kv("Elem", Value::Int(*elem)),
            ],
        ),
        WireDef::Array { name, len, elem } => {
            let n = i64::try_from(*len).map_err(|_| EncodeError::ArrayTooLong(*len))?;
            (
                "ArrayT",
                vec![
                    kv("CommonType", common(name, id)),
                    kv("Elem", Value::Int(*elem)),
                    kv("Len", Value::Int(n)),
                ],
            )
        }
        WireDef::Map { name, key, elem } => (
            "MapT",
            vec![
                kv("CommonType", common(name, id)),
                kv("Key", Value::Int(*key)),
                kv("Elem", Value::Int(*elem)),
            ],
        ),
        WireDef::Struct { name, fields } => {
            let fields = fields
                .iter()
                .map(|(n, fid)| {
                    Value::Struct(vec![
                        kv("Name", Value::String(n.to_string())),
                        kv("Id", Value::Int(*fid)),
                    ])
                })
                .collect();
            (
                "StructT",
                vec![
                    kv("CommonType", common(name, id)),
                    kv("Field", Value::Slice(fields)),
                ],
            )
        }
        WireDef::Opaque => ("GobEncoderT", vec![kv("CommonType", common("", id))]),
    };
    Ok(Value::Struct(vec![kv(kind, Value::Struct(body))]))
}

fn int_field(v: &Value, name: &str) -> Result<i64, DecodeError> {
    match v.field(name) {
        None => Ok(0),
        Some(Value::Int(i)) => Ok(*i),
        Some(_) => Err(DecodeError::BadWireType("non-int id")),
    }
}

/// A component type id: predefined or user, never zero or negative.
fn component(v: &Value, name: &str) -> Result<i64, DecodeError> {
    let id = int_field(v, name)?;
    if id <= 0 {
        return Err(DecodeError::BadTypeId(id));
    }
    Ok(id)
}

/// Checks the embedded `CommonType` against the message's id and returns the type name.
fn check_common(body: &Value, id: i64) -> Result<Arc<str>, DecodeError> {
    let common = body
        .field("CommonType")
        .ok_or(DecodeError::BadWireType("missing CommonType"))?;
    if int_field(common, "Id")? != id {
        return Err(DecodeError::BadWireType(
            "CommonType.Id differs from the message's id",
        ));
    }
    match common.field("Name") {
        None => Ok(Arc::from("")),
        Some(Value::String(s)) => Ok(Arc::from(s.as_str())),
        Some(_) => Err(DecodeError::BadWireType("non-string name")),
    }
}

/// Interprets a decoded `wireType` value defining type `id`.
pub(crate) fn from_value(v: &Value, id: i64) -> Result<WireDef, DecodeError> {
    let Value::Struct(kinds) = v else {
        return Err(DecodeError::BadWireType("not a struct"));
    };
    let [(kind, body)] = kinds.as_slice() else {
        return Err(DecodeError::BadWireType("not exactly one kind set"));
    };
    let name = check_common(body, id)?;
    match &**kind {
        "ArrayT" => {
            let len = int_field(body, "Len")?;
            let len =
                usize::try_from(len).map_err(|_| DecodeError::BadWireType("bad array length"))?;
            Ok(WireDef::Array {
                name,
                len,
                elem: component(body, "Elem")?,
            })
        }
        "SliceT" => Ok(WireDef::Slice {
            name,
            elem: component(body, "Elem")?,
        }),
        "MapT" => Ok(WireDef::Map {
            name,
            key: component(body, "Key")?,
            elem: component(body, "Elem")?,
        }),
        "StructT" => {
            let list = match body.field("Field") {
                None => &[][..],
                Some(Value::Slice(l)) => l.as_slice(),
                Some(_) => return Err(DecodeError::BadWireType("bad field list")),
            };
            let mut seen = HashSet::with_capacity(list.len());
            let mut fields = Vec::with_capacity(list.len());
            for f in list {
                let fname = match f.field("Name") {
                    None => "",
                    Some(Value::String(s)) => s.as_str(),
                    Some(_) => return Err(DecodeError::BadWireType("non-string field name")),
                };
                if !seen.insert(fname) {
                    return Err(DecodeError::BadWireType("duplicate field name"));
                }
                fields.push((Arc::from(fname), component(f, "Id")?));
            }
            Ok(WireDef::Struct { name, fields })
        }
        "GobEncoderT" | "BinaryMarshalerT" | "TextMarshalerT" => Ok(WireDef::Opaque),
        _ => Err(DecodeError::BadWireType("unknown kind")),
    }
}

/// Whether `id` may be given a definition (user ids only).
pub(crate) fn definable(id: i64) -> bool {
    id >= FIRST_USER_TYPE_ID
}
