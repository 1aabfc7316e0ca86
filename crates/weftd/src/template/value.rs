//! Values as Go's `text/template` sees the report: the JSON document stands for what
//! `encoding/json` decodes into `interface{}` (objects as `map[string]interface {}`, arrays as
//! `[]interface {}`, integers as `int64`, other numbers as `float64`), plus the values that
//! constants and functions make (`int`, `float64`, `string`, `bool`, `uint8`).

use std::rc::Rc;

use serde_json::{Map, Value};

/// One value during execution; `Invalid` is Go's zero `reflect.Value` (a missing key, a nil).
#[derive(Debug, Clone)]
pub(super) enum V<'d> {
    Invalid,
    /// A value from the document; `true` while it is still held in an `interface {}` (read
    /// out of a map or a list), which Go's errors name as such. Never `Value::Null` unless held.
    Data(&'d Value, bool),
    /// A `[]interface {}` that `slice` made from a document list.
    List(&'d [Value]),
    Bool(bool),
    /// Go's `int`: constants, `len`, range indices.
    Int(i64),
    Float(f64),
    /// Shared, so that passing a long string around (variables, arguments, dot) copies nothing.
    Str(Rc<str>),
    /// Go's `uint8`: what `index` of a string yields.
    Byte(u8),
}

/// What a value is underneath any `interface {}`, for the functions that look inside.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dyn<'v> {
    Invalid,
    /// A nil `interface {}` (a JSON null read out of a map or list).
    Nil,
    Bool(bool),
    Int(i64, &'static str),
    Uint(u64, &'static str),
    Float(f64),
    Str(&'v str),
    Map(&'v Map<String, Value>),
    List(&'v [Value]),
}

impl<'d> V<'d> {
    /// A document value as a map or list element yields it: held in an `interface {}`.
    pub(super) fn held(v: &'d Value) -> Self {
        V::Data(v, true)
    }

    /// Go's "lovely" unwrap after each pipeline command: an `interface {}` gives way to what it
    /// holds, and a nil one to the invalid value.
    pub(super) fn unwrap(self) -> Self {
        match self {
            V::Data(Value::Null, _) => V::Invalid,
            V::Data(v, true) => V::Data(v, false),
            v => v,
        }
    }

    /// The document list this value is, if it is one.
    pub(super) fn list(&self) -> Option<&'d [Value]> {
        match self {
            V::Data(Value::Array(a), _) => Some(a),
            V::List(l) => Some(l),
            _ => None,
        }
    }

    /// The document map this value is, if it is one.
    pub(super) fn map(&self) -> Option<&'d Map<String, Value>> {
        match self {
            V::Data(Value::Object(m), _) => Some(m),
            _ => None,
        }
    }

    pub(super) fn is_held(&self) -> bool {
        matches!(self, V::Data(_, true))
    }

    pub(super) fn is_nil_interface(&self) -> bool {
        matches!(self, V::Data(Value::Null, _))
    }

    pub(super) fn dynamic(&self) -> Dyn<'_> {
        match self {
            V::Invalid => Dyn::Invalid,
            V::Data(v, _) => data_dyn(v),
            V::List(l) => Dyn::List(l),
            V::Bool(b) => Dyn::Bool(*b),
            V::Int(i) => Dyn::Int(*i, "int"),
            V::Float(f) => Dyn::Float(*f),
            V::Str(s) => Dyn::Str(s),
            V::Byte(b) => Dyn::Uint(u64::from(*b), "uint8"),
        }
    }

    /// Go's `reflect.Value.Type().String()`; an `interface {}` holder names itself.
    pub(super) fn type_name(&self) -> &'static str {
        if self.is_held() {
            return "interface {}";
        }
        self.dynamic().type_name()
    }
}

pub(super) fn data_dyn(v: &Value) -> Dyn<'_> {
    match v {
        Value::Null => Dyn::Nil,
        Value::Bool(b) => Dyn::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Dyn::Int(i, "int64")
            } else if let Some(u) = n.as_u64() {
                Dyn::Uint(u, "uint64")
            } else {
                Dyn::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Dyn::Str(s),
        Value::Array(a) => Dyn::List(a),
        Value::Object(m) => Dyn::Map(m),
    }
}

impl Dyn<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Dyn::Invalid => "<invalid>",
            Dyn::Nil => "interface {}",
            Dyn::Bool(_) => "bool",
            Dyn::Int(_, t) | Dyn::Uint(_, t) => t,
            Dyn::Float(_) => "float64",
            Dyn::Str(_) => "string",
            Dyn::Map(_) => "map[string]interface {}",
            Dyn::List(_) => "[]interface {}",
        }
    }

    /// Go's `isTrue`.
    pub(super) fn truth(&self) -> bool {
        match self {
            Dyn::Invalid | Dyn::Nil => false,
            Dyn::Bool(b) => *b,
            Dyn::Int(i, _) => *i != 0,
            Dyn::Uint(u, _) => *u != 0,
            Dyn::Float(f) => *f != 0.0,
            Dyn::Str(s) => !s.is_empty(),
            Dyn::Map(m) => !m.is_empty(),
            Dyn::List(l) => !l.is_empty(),
        }
    }
}

/// A map's entries in Go's order (`fmtsort`: keys sorted as strings, byte-wise).
pub(super) fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut e: Vec<_> = m.iter().collect();
    e.sort_unstable_by(|a, b| a.0.cmp(b.0));
    e
}
