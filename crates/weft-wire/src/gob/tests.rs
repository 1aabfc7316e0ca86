//! Unit and property tests of the gob codec: Go's bytes for small values, every hostile-input
//! limit, and encode/decode round trips of arbitrary type and value trees.

use proptest::prelude::*;

use super::wire::{put_int, put_uint};
use super::wiretype::st;
use super::*;

fn sv(fields: Vec<(&str, Value)>) -> Value {
    Value::structure(fields)
}

fn decode_all(mut input: &[u8]) -> Result<Vec<(Type, Value)>, DecodeError> {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    while let Some(tv) = dec.decode_next(&mut input)? {
        out.push(tv);
    }
    Ok(out)
}

fn message(id: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, id, payload);
    out
}

/// The `wireType` bytes of a struct with the given (field name, type id) list.
fn struct_def(id: i64, name: &str, fields: &[(&str, i64)]) -> Vec<u8> {
    let mut p = vec![0x03, 0x01]; // StructT, CommonType
    if !name.is_empty() {
        p.push(0x01);
        put_uint(&mut p, name.len() as u64);
        p.extend_from_slice(name.as_bytes());
        p.push(0x01);
    } else {
        p.push(0x02);
    }
    put_int(&mut p, id);
    p.push(0x00); // end CommonType
    p.push(0x01); // Field
    put_uint(&mut p, fields.len() as u64);
    for (n, fid) in fields {
        p.push(0x01);
        put_uint(&mut p, n.len() as u64);
        p.extend_from_slice(n.as_bytes());
        p.push(0x01);
        put_int(&mut p, *fid);
        p.push(0x00);
    }
    p.extend_from_slice(&[0x00, 0x00]); // end structType, end wireType
    message(-id, &p)
}

#[test]
fn features_map_bytes_match_go() {
    let ty = Type::map(Type::String, Type::String);
    let v = Value::Map(vec![(
        Value::String("Name".into()),
        Value::String("aa:bb:cc:dd:ee:01".into()),
    )]);
    let mut out = Vec::new();
    Encoder::new().encode(&ty, &v, &mut out).unwrap();
    let mut want = vec![
        0x0e, 0xff, 0x81, 0x04, 0x01, 0x02, 0xff, 0x82, 0x00, 0x01, 0x0c, 0x01, 0x0c, 0x00, 0x00,
        0x1b, 0xff, 0x82, 0x00, 0x01, 0x04,
    ];
    want.extend_from_slice(b"Name\x11aa:bb:cc:dd:ee:01");
    assert_eq!(out, want);
    assert_eq!(decode_all(&out).unwrap(), vec![(ty, v)]);
}

#[test]
fn top_level_basics_match_go() {
    let mut out = Vec::new();
    put_top_level_string(&mut out, "topology");
    assert_eq!(out, b"\x0b\x0c\x00\x08topology");
    let mut out = Vec::new();
    put_top_level_uint(&mut out, 0);
    assert_eq!(out, [0x03, 0x06, 0x00, 0x00]);
    let mut out = Vec::new();
    put_top_level_bytes(&mut out, &[1, 2, 3]);
    assert_eq!(out, [0x06, 0x0a, 0x00, 0x03, 0x01, 0x02, 0x03]);
    // The generic encoder agrees with the shortcuts.
    let mut generic = Vec::new();
    Encoder::new()
        .encode(&Type::Bytes, &Value::Bytes(vec![1, 2, 3]), &mut generic)
        .unwrap();
    assert_eq!(generic, out);
}

#[test]
fn definitions_are_sent_once_per_stream() {
    let ty = Type::slice(Type::Int);
    let v = Value::Slice(vec![Value::Int(-1)]);
    let mut enc = Encoder::new();
    let mut first = Vec::new();
    enc.encode(&ty, &v, &mut first).unwrap();
    let mut second = Vec::new();
    enc.encode(&ty, &v, &mut second).unwrap();
    assert!(first.len() > second.len());
    assert_eq!(second, [0x05, 0xff, 0x82, 0x00, 0x01, 0x01]);
    let mut both = first.clone();
    both.extend_from_slice(&second);
    assert_eq!(decode_all(&both).unwrap().len(), 2);
    // A fresh decoder cannot read the second message alone.
    assert_eq!(decode_all(&second), Err(DecodeError::UnknownTypeId(65)));
}

#[test]
fn nil_map_absent_field_and_empty_map_differ() {
    let ty = st(
        "s",
        vec![
            ("M", Type::map(Type::Uint, Type::String)),
            ("N", Type::Uint),
        ],
    );
    let mut nil = Vec::new();
    Encoder::new().encode(&ty, &sv(vec![]), &mut nil).unwrap();
    let mut empty = Vec::new();
    let v = sv(vec![("M", Value::Map(vec![]))]);
    Encoder::new().encode(&ty, &v, &mut empty).unwrap();
    assert!(nil.ends_with(&[0x03, 0xff, 0x82, 0x00]));
    assert!(empty.ends_with(&[0x05, 0xff, 0x82, 0x01, 0x00, 0x00]));
    assert_eq!(decode_all(&nil).unwrap()[0].1, sv(vec![]));
    assert_eq!(decode_all(&empty).unwrap()[0].1, v);
}

#[test]
fn encoder_rejects_mismatches() {
    let ty = st("s", vec![("A", Type::Uint)]);
    let mut out = Vec::new();
    let mut enc = Encoder::new();
    assert!(matches!(
        enc.encode(&ty, &sv(vec![("B", Value::Uint(1))]), &mut out),
        Err(EncodeError::UnknownField { .. })
    ));
    assert!(matches!(
        enc.encode(&ty, &sv(vec![("A", Value::Int(1))]), &mut out),
        Err(EncodeError::TypeMismatch { .. })
    ));
    assert!(matches!(
        enc.encode(&ty, &sv(vec![("A", Value::Int(0))]), &mut out),
        Err(EncodeError::TypeMismatch { .. })
    ));
    assert!(matches!(
        enc.encode(
            &ty,
            &sv(vec![("A", Value::Uint(1)), ("A", Value::Uint(2))]),
            &mut out
        ),
        Err(EncodeError::DuplicateField(_))
    ));
    let arr = Type::array(2, Type::Bool);
    assert!(matches!(
        enc.encode(&arr, &Value::Slice(vec![Value::Bool(true)]), &mut out),
        Err(EncodeError::ArrayLength { .. })
    ));
    let mut deep = Type::Bool;
    for _ in 0..MAX_DEPTH {
        deep = Type::slice(deep);
    }
    assert_eq!(
        enc.encode(&deep, &Value::Slice(vec![]), &mut out),
        Err(EncodeError::TooDeep)
    );
    assert!(out.is_empty(), "failed encodes append nothing");
}

#[test]
fn negated_minimum_type_id_is_an_error() {
    // A definition message whose id is i64::MIN: negating it overflows.
    let msg = [0x09, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(decode_all(&msg), Err(DecodeError::BadTypeId(i64::MIN)));
    // A huge positive value id.
    let msg = [0x09, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe];
    assert_eq!(decode_all(&msg), Err(DecodeError::UnknownTypeId(i64::MAX)));
    // Defining a predefined id.
    assert_eq!(
        decode_all(&struct_def(6, "", &[("A", 6)])),
        Err(DecodeError::BadTypeId(6))
    );
    // Value of gob's own wireType (id 16) or of complex (7).
    assert_eq!(
        decode_all(&message(16, &[0])),
        Err(DecodeError::UnsupportedType(16))
    );
    assert_eq!(
        decode_all(&message(7, &[0, 0])),
        Err(DecodeError::UnsupportedType(7))
    );
    assert_eq!(
        decode_all(&message(0, &[0])),
        Err(DecodeError::BadTypeId(0))
    );
}

#[test]
fn field_delta_overflow_and_range() {
    let mut s = struct_def(65, "s", &[("A", 3)]);
    let mut v = vec![0xff, 0x82];
    put_uint(&mut v, u64::MAX);
    v.push(0x01);
    s.extend(message(65, &v).iter());
    assert!(matches!(
        decode_all(&s),
        Err(DecodeError::FieldOutOfRange { .. })
    ));
    let mut s = struct_def(65, "s", &[("A", 3)]);
    s.extend(message(65, &[0x01, 0x05, 0x01, 0x05, 0x00]).iter());
    assert!(matches!(
        decode_all(&s),
        Err(DecodeError::FieldOutOfRange { delta: 1, .. })
    ));
}

#[test]
fn recursive_types_are_rejected() {
    let mut s = struct_def(65, "node", &[("Next", 65)]);
    s.extend(message(65, &[0x00]).iter());
    assert_eq!(decode_all(&s), Err(DecodeError::TooDeep));
}

#[test]
fn exponential_type_dag_is_rejected() {
    // Type 65+i has two fields of type 66+i: 2^21 nodes if expanded.
    let mut s = Vec::new();
    for i in 0..20 {
        s.extend(struct_def(65 + i, "t", &[("A", 66 + i), ("B", 66 + i)]));
    }
    s.extend(struct_def(85, "leaf", &[("X", 3)]));
    s.extend(message(65, &[0x00]).iter());
    assert_eq!(decode_all(&s), Err(DecodeError::TypeTooLarge));
}

#[test]
fn many_tiny_values_of_a_big_type_share_it() {
    // 1023 nodes: a binary tree of depth 10, from 10 definitions.
    let mut s = Vec::new();
    for i in 0..9 {
        s.extend(struct_def(65 + i, "t", &[("A", 66 + i), ("B", 66 + i)]));
    }
    s.extend(struct_def(74, "leaf", &[]));
    let one = message(65, &[0x00]);
    for _ in 0..200 {
        s.extend(one.iter());
    }
    let decoded = decode_all(&s).unwrap();
    assert_eq!(decoded.len(), 200);
    // Every value hands out the one resolved type, and inside it both fields share theirs.
    let Type::Struct(first) = &decoded[0].0 else {
        panic!("not a struct")
    };
    for (ty, _) in &decoded {
        let Type::Struct(s) = ty else {
            panic!("not a struct")
        };
        assert!(Arc::ptr_eq(s, first));
    }
    let (Type::Struct(a), Type::Struct(b)) = (&first.fields[0].1, &first.fields[1].1) else {
        panic!("fields are not structs")
    };
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn decoded_field_names_share_the_types() {
    let mut s = struct_def(65, "s", &[("Field", 3)]);
    let v = message(65, &[0x01, 0x07, 0x00]);
    for _ in 0..3 {
        s.extend(v.iter());
    }
    let decoded = decode_all(&s).unwrap();
    let Type::Struct(st) = &decoded[0].0 else {
        panic!("not a struct")
    };
    for (_, v) in &decoded {
        let Value::Struct(fields) = v else {
            panic!("not a struct value")
        };
        assert_eq!(fields.len(), 1);
        assert!(Arc::ptr_eq(&fields[0].0, &st.fields[0].0));
    }
}

#[test]
fn type_definitions_are_capped_per_stream() {
    let mut s = Vec::new();
    for i in 0..=MAX_STREAM_TYPES as i64 {
        s.extend(struct_def(65 + i, "t", &[]));
    }
    assert_eq!(
        decode_all(&s),
        Err(DecodeError::TooManyTypes(MAX_STREAM_TYPES))
    );
    let one = struct_def(65, "t", &[]);
    let mut input = &one[..];
    assert_eq!(
        Decoder::with_type_limit(0).decode_next(&mut input),
        Err(DecodeError::TooManyTypes(0))
    );
    // Few definitions, but with long names: the byte cap.
    let long = "n".repeat(MAX_TYPE_DEF_BYTES / 4);
    let mut s = Vec::new();
    for i in 0..5 {
        s.extend(struct_def(65 + i, &long, &[]));
    }
    assert_eq!(decode_all(&s), Err(DecodeError::TypeDefsTooLarge));
}

#[test]
fn unexpected_types_are_not_decoded_and_not_printed_whole() {
    let long = "L".repeat(60_000);
    let mut s = struct_def(65, &long, &[("A", 6)]);
    // A value that would fail to decode (bad UTF-8) if it were read.
    s.extend(message(65, &[0x01, 0x01, 0xff, 0x00]).iter());
    let mut input = &s[..];
    let err = Decoder::new()
        .decode_next_checked(&mut input, |ty| {
            expect_type(ty, &Type::String, "test", "string")
        })
        .unwrap_err();
    let DecodeError::UnexpectedType { found, .. } = &err else {
        panic!("{err}")
    };
    assert!(found.starts_with("struct LLL"), "{found}");
    assert!(err.to_string().len() < 200, "{}", err.to_string().len());
    // A field delta past the end names the struct, cut short.
    let mut s = struct_def(65, &long, &[("A", 6)]);
    s.extend(message(65, &[0x05, 0x00]).iter());
    let err = decode_all(&s).unwrap_err();
    assert!(matches!(err, DecodeError::FieldOutOfRange { .. }));
    assert!(err.to_string().len() < 200, "{}", err.to_string().len());
}

#[test]
fn inflated_nested_counts_fail_before_allocating() {
    // [][][]bool, each level announcing as many elements as there are bytes left: the inner
    // counts would fit the bytes alone, but not on top of the outer ones still pending.
    let mut s = Vec::new();
    s.extend(message(
        -65,
        &[0x02, 0x01, 0x02, 0xff, 0x82, 0x00, 0x01, 0x02, 0x00, 0x00],
    ));
    s.extend(message(
        -66,
        &[
            0x02, 0x01, 0x02, 0xff, 0x84, 0x00, 0x01, 0xff, 0x82, 0x00, 0x00,
        ],
    ));
    let body = [0x00, 0x05, 0x04, 0x03, 0x01, 0x01, 0x01];
    s.extend(message(66, &body));
    assert!(matches!(
        decode_all(&s),
        Err(DecodeError::LengthOverrun { .. })
    ));
}

#[test]
fn describe_is_go_like_and_short() {
    assert_eq!(
        Type::map(Type::String, Type::String).describe(),
        "map[string]string"
    );
    assert_eq!(
        Type::slice(Type::structure("connectionSummary", [])).describe(),
        "[]struct connectionSummary"
    );
    assert_eq!(Type::array(3, Type::Float).describe(), "[3]float");
    let mut deep = Type::Bool;
    for _ in 0..1000 {
        deep = Type::map(deep.clone(), deep);
    }
    assert!(deep.describe().len() <= MAX_PEER_TEXT + '…'.len_utf8());
}

#[test]
fn strictness() {
    let def = struct_def(65, "s", &[("A", 6), ("B", 1)]);
    let with = |payload: &[u8]| {
        let mut s = def.clone();
        s.extend(message(65, payload).iter());
        decode_all(&s)
    };
    assert!(with(&[0x01, 0x01, b'x', 0x00]).is_ok());
    assert!(matches!(
        with(&[0x01, 0x01, b'x', 0x00, 0x00]),
        Err(DecodeError::TrailingBytes { count: 1, .. })
    ));
    assert_eq!(with(&[0x02, 0x02, 0x00]), Err(DecodeError::InvalidBool(2)));
    assert_eq!(
        with(&[0x01, 0x01, 0xff, 0x00]),
        Err(DecodeError::InvalidUtf8)
    );
    assert!(matches!(
        with(&[0x01, 0x05, b'x', 0x00]),
        Err(DecodeError::LengthOverrun { .. })
    ));
    assert_eq!(with(&[0x01]), Err(DecodeError::Truncated("string length")));
    // Explicitly sent zero fields decode like omitted ones.
    assert_eq!(
        with(&[0x01, 0x00, 0x01, 0x00, 0x00]).unwrap()[0].1,
        sv(vec![])
    );
    // Singletons.
    assert_eq!(
        decode_all(&message(3, &[0x01, 0x05])),
        Err(DecodeError::NonZeroSingleton(1))
    );
    assert_eq!(decode_all(&[0x00]), Err(DecodeError::EmptyMessage));
    assert!(matches!(
        decode_all(&[0x05, 0x06, 0x00]),
        Err(DecodeError::LengthOverrun { .. })
    ));
    // Duplicate definitions.
    let mut s = def.clone();
    s.extend(def.iter());
    assert_eq!(decode_all(&s), Err(DecodeError::DuplicateType(65)));
    // Definition whose CommonType id disagrees with the message id.
    let mut bad = struct_def(66, "s", &[("A", 6)]);
    if let Some(b) = bad.get_mut(1..3) {
        b.copy_from_slice(&[0xff, 0x81]); // message id -65, CommonType still says 66
    }
    assert!(matches!(decode_all(&bad), Err(DecodeError::BadWireType(_))));
    // Duplicate field names.
    assert!(matches!(
        decode_all(&struct_def(65, "s", &[("A", 6), ("A", 3)])),
        Err(DecodeError::BadWireType(_))
    ));
}

#[test]
fn definitions_only_end_cleanly() {
    let def = struct_def(65, "s", &[("A", 6)]);
    let mut input = &def[..];
    assert_eq!(Decoder::new().decode_next(&mut input), Ok(None));
    assert!(input.is_empty());
}

#[test]
fn array_and_float_values() {
    let ty = st(
        "s",
        vec![
            ("A", Type::array(3, Type::Float)),
            ("Z", Type::array(0, Type::Int)),
        ],
    );
    let v = sv(vec![(
        "A",
        Value::Slice(vec![
            Value::Float(1.5),
            Value::Float(0.0),
            Value::Float(-2.0),
        ]),
    )]);
    let mut out = Vec::new();
    Encoder::new()
        .encode(
            &ty,
            &sv(vec![
                ("A", v.field("A").unwrap().clone()),
                ("Z", Value::Slice(vec![])),
            ]),
            &mut out,
        )
        .unwrap();
    assert_eq!(decode_all(&out).unwrap(), vec![(ty, v)]);
    // Go encodes 1.5 as uint 0xf83f (reversed bytes of 0x3ff8000000000000).
    let mut f = Vec::new();
    Encoder::new()
        .encode(&Type::Float, &Value::Float(1.5), &mut f)
        .unwrap();
    assert_eq!(f, [0x05, 0x08, 0x00, 0xfe, 0xf8, 0x3f]);
}

// ---- property tests ----

fn arb_type() -> impl Strategy<Value = Type> {
    let leaf = prop_oneof![
        Just(Type::Bool),
        Just(Type::Int),
        Just(Type::Uint),
        Just(Type::Float),
        Just(Type::Bytes),
        Just(Type::String),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Type::slice),
            ("[A-Z]{0,2}", inner.clone()).prop_map(|(n, t)| Type::named(n, Type::slice(t))),
            (0usize..3, inner.clone()).prop_map(|(n, t)| Type::array(n, t)),
            (inner.clone(), inner.clone()).prop_map(|(k, e)| Type::map(k, e)),
            ("[a-zA-Z]{0,6}", prop::collection::vec(inner, 0..5)).prop_map(|(name, ts)| {
                let names: Vec<String> = (0..ts.len()).map(|i| format!("F{i}")).collect();
                Type::structure(&name, names.iter().map(String::as_str).zip(ts))
            }),
        ]
    })
}

fn arb_value(ty: &Type) -> BoxedStrategy<Value> {
    match ty {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Int => prop_oneof![Just(0i64), any::<i64>()]
            .prop_map(Value::Int)
            .boxed(),
        Type::Uint => prop_oneof![Just(0u64), any::<u64>()]
            .prop_map(Value::Uint)
            .boxed(),
        Type::Float => any::<f64>()
            .prop_filter("NaN never compares equal", |f| !f.is_nan())
            .prop_map(Value::Float)
            .boxed(),
        Type::Bytes => prop::collection::vec(any::<u8>(), 0..6)
            .prop_map(Value::Bytes)
            .boxed(),
        Type::String => "\\PC{0,6}".prop_map(Value::String).boxed(),
        Type::Slice(e) => prop::collection::vec(arb_value(e), 0..4)
            .prop_map(Value::Slice)
            .boxed(),
        Type::Array(n, e) => prop::collection::vec(arb_value(e), *n..=*n)
            .prop_map(Value::Slice)
            .boxed(),
        Type::Map(k, e) => prop::collection::vec((arb_value(k), arb_value(e)), 0..3)
            .prop_map(Value::Map)
            .boxed(),
        Type::Struct(s) => {
            let fields: Vec<_> = s
                .fields
                .iter()
                .map(|(n, t)| {
                    let n = n.clone();
                    prop::option::of(arb_value(t)).prop_map(move |v| v.map(|v| (n.clone(), v)))
                })
                .collect();
            fields
                .prop_map(|fs| Value::Struct(fs.into_iter().flatten().collect()))
                .boxed()
        }
        Type::Named(_, inner) => arb_value(inner),
    }
}

/// What the decoder returns for `v`: zero fields dropped, fields in declaration order.
fn canonical(ty: &Type, v: &Value) -> Value {
    match (ty, v) {
        (Type::Slice(e) | Type::Array(_, e), Value::Slice(items)) => {
            Value::Slice(items.iter().map(|i| canonical(e, i)).collect())
        }
        (Type::Map(kt, et), Value::Map(m)) => Value::Map(
            m.iter()
                .map(|(k, e)| (canonical(kt, k), canonical(et, e)))
                .collect(),
        ),
        (Type::Named(_, inner), _) => canonical(inner, v),
        (Type::Struct(s), Value::Struct(_)) => Value::Struct(
            s.fields
                .iter()
                .filter_map(|(n, t)| {
                    let fv = v.field(n)?;
                    (!is_omitted_field(t, fv)).then(|| (n.clone(), canonical(t, fv)))
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn arb_typed_values() -> impl Strategy<Value = Vec<(Type, Value)>> {
    prop::collection::vec(
        arb_type().prop_flat_map(|t| {
            let vs = arb_value(&t);
            (Just(t), vs)
        }),
        1..4,
    )
}

proptest! {
    #[test]
    fn round_trip_arbitrary_trees(items in arb_typed_values()) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for (t, v) in &items {
            enc.encode(t, v, &mut stream).unwrap();
        }
        let decoded = decode_all(&stream).unwrap();
        prop_assert_eq!(decoded.len(), items.len());
        for ((t, v), (dt, dv)) in items.iter().zip(&decoded) {
            prop_assert_eq!(t, dt);
            prop_assert_eq!(&canonical(t, v), dv);
        }
        // Re-encoding what we decoded gives the same bytes.
        let mut again = Vec::new();
        let mut enc = Encoder::new();
        for (t, v) in &decoded {
            enc.encode(t, v, &mut again).unwrap();
        }
        prop_assert_eq!(again, stream);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_all(&bytes);
    }

    #[test]
    fn mutated_streams_never_panic(
        items in arb_typed_values(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for (t, v) in &items {
            enc.encode(t, v, &mut stream).unwrap();
        }
        for (i, b) in flips {
            let at = i.index(stream.len());
            if let Some(x) = stream.get_mut(at) {
                *x = b;
            }
        }
        if let Ok(decoded) = decode_all(&stream) {
            // Whatever decodes re-encodes and decodes to the same thing.
            let mut again = Vec::new();
            let mut enc = Encoder::new();
            for (t, v) in &decoded {
                enc.encode(t, v, &mut again).unwrap();
            }
            prop_assert_eq!(format!("{:?}", decode_all(&again).unwrap()), format!("{:?}", decoded));
        }
    }
}
