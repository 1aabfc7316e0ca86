//! Hand-built gob streams that [`super::Encoder`] would refuse to write: type-definition
//! bombs, nested and oversized definitions. For hostile-input tests (`tests/alloc_bound.rs`)
//! and the hostile mesh peer of the end-to-end tests, which sends them where a router decodes
//! gob (the handshake's features frame). Never used by the router itself.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, missing_docs)]

pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push(0u8.wrapping_sub((8 - skip) as u8));
    out.extend_from_slice(&bytes[skip..]);
}

pub fn put_int(out: &mut Vec<u8>, v: i64) {
    let u = if v < 0 {
        ((!v as u64) << 1) | 1
    } else {
        (v as u64) << 1
    };
    put_uint(out, u);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn message(id: i64, payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    put_int(&mut head, id);
    let mut out = Vec::new();
    put_uint(&mut out, (head.len() + payload.len()) as u64);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out
}

/// A `CommonType` body: name (if any) and id, then its end.
pub fn common(p: &mut Vec<u8>, name: &str, id: i64) {
    if name.is_empty() {
        p.push(0x02);
    } else {
        p.push(0x01);
        put_str(p, name);
        p.push(0x01);
    }
    put_int(p, id);
    p.push(0x00);
}

pub fn struct_def(id: i64, name: &str, fields: &[(String, i64)]) -> Vec<u8> {
    let mut p = vec![0x03, 0x01];
    common(&mut p, name, id);
    if !fields.is_empty() {
        p.push(0x01);
        put_uint(&mut p, fields.len() as u64);
        for (n, fid) in fields {
            p.push(0x01);
            put_str(&mut p, n);
            p.push(0x01);
            put_int(&mut p, *fid);
            p.push(0x00);
        }
    }
    p.extend_from_slice(&[0x00, 0x00]);
    message(-id, &p)
}

/// A slice, array or map definition: the `wireType` field of its kind, its `CommonType`, then
/// its components (element; element and length; key and element) as fields 2, 3.
pub fn def(kind: u8, id: i64, components: &[i64]) -> Vec<u8> {
    let mut p = vec![kind, 0x01];
    common(&mut p, "", id);
    for c in components {
        p.push(0x01);
        put_int(&mut p, *c);
    }
    p.extend_from_slice(&[0x00, 0x00]);
    message(-id, &p)
}

pub fn slice_def(id: i64, elem: i64) -> Vec<u8> {
    def(0x02, id, &[elem])
}

pub fn array_def(id: i64, elem: i64, len: i64) -> Vec<u8> {
    def(0x01, id, &[elem, len])
}

pub fn map_def(id: i64, key: i64, elem: i64) -> Vec<u8> {
    def(0x04, id, &[key, elem])
}

pub const ID_BOOL: i64 = 1;
pub const ID_UINT: i64 = 3;
pub const ID_BYTES: i64 = 5;
pub const ID_STRING: i64 = 6;

/// The shape measured against the old decoder: a chain of struct types with long type and field
/// names, each with `width` fields of the next type, down to `levels` levels and a bool leaf;
/// defined again and again (fresh ids) until the stream is `total` bytes, each chain followed
/// by `values` values of its top type: fully populated ones, or empty ones (4 bytes each, which
/// the old decoder answered with a copy of the whole type).
pub fn type_bomb(
    total: usize,
    (levels, width): (i64, usize),
    name_len: usize,
    values: usize,
    full: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next_id = 65;
    while out.len() < total {
        let top = next_id;
        for level in 0..levels {
            let id = top + level;
            let child = if level + 1 == levels { ID_BOOL } else { id + 1 };
            let fields: Vec<(String, i64)> = (0..width)
                .map(|f| (format!("F{f}{}", "y".repeat(name_len)), child))
                .collect();
            out.extend(struct_def(
                id,
                &format!("T{id}{}", "x".repeat(name_len)),
                &fields,
            ));
        }
        next_id += levels;
        let body = if full {
            populated(levels, width)
        } else {
            vec![0x00]
        };
        for _ in 0..values {
            if out.len() >= total {
                break;
            }
            out.extend(message(top, &body));
        }
    }
    out
}

/// A value of a `type_bomb` chain type with every field present (bool leaves true).
pub fn populated(levels: i64, width: usize) -> Vec<u8> {
    fn level(out: &mut Vec<u8>, left: i64, width: usize) {
        for _ in 0..width {
            out.push(0x01);
            if left == 1 {
                out.push(0x01);
            } else {
                level(out, left - 1, width);
            }
        }
        out.push(0x00);
    }
    let mut out = Vec::new();
    level(&mut out, levels, width);
    out
}

/// `n` slice types, each `[]` of the one before, over bool.
pub fn nested_slice_defs(n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let elem = if i == 0 { ID_BOOL } else { 64 + i };
        out.extend(slice_def(65 + i, elem));
    }
    out
}
