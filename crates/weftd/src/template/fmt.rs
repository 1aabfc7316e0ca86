//! Go's `fmt` (`Sprint`, `Sprintln`, `Sprintf` with flags, widths, precisions and argument
//! indexes) and `strconv` quoting and float formatting, for the values a report template sees.
//! Ported from Go's `fmt/print.go` and `fmt/format.go` so `printf` prints what Weave's does.

use std::fmt::Write as _;

use super::value::{data_dyn, sorted, Dyn};

/// Go's `unicode.IsPrint`, closely enough: printable ASCII, and other characters that are
/// neither control, space nor format characters.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}'))
}

/// `s` quoted with `q`; stops early once past `limit` bytes (escapes make up to four bytes of
/// one), so the caller sees a text longer than `limit` and refuses it.
fn quote_with(s: &str, q: char, ascii: bool, limit: usize) -> String {
    let mut out = String::with_capacity(s.len().min(limit) + 2);
    out.push(q);
    for c in s.chars() {
        if out.len() > limit {
            return out;
        }
        escape_char(&mut out, c, q, ascii);
    }
    out.push(q);
    out
}

fn escape_char(out: &mut String, c: char, q: char, ascii: bool) {
    if c == q || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if (!ascii || c.is_ascii()) && is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Go's `strconv.Quote` (`ascii`: `QuoteToASCII`).
pub(super) fn quote(s: &str, ascii: bool) -> String {
    quote_with(s, '"', ascii, usize::MAX)
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{feff}' && (c == '\t' || !(c < ' ' || c == '\u{7f}')))
}

/// Decimal digits of `v` (no trailing zeros) and the position of the decimal point, as
/// `strconv`'s `decimalSlice`: `sig` significant digits, or the shortest that round-trip.
fn digits(v: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    if v == 0.0 {
        return (Vec::new(), 0);
    }
    let s = match sig {
        Some(n) => format!("{:.*e}", n.max(1) - 1, v.abs()),
        None => format!("{:e}", v.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut d: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while d.last() == Some(&b'0') {
        d.pop();
    }
    (d, exp + 1)
}

fn fmt_e(out: &mut String, d: &[u8], dp: i32, prec: usize, e: char) {
    out.push(d.first().map_or('0', |&c| c as char));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(d.get(i).map_or('0', |&c| c as char));
        }
    }
    out.push(e);
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exp.unsigned_abs());
}

fn fmt_f(out: &mut String, d: &[u8], dp: i32, prec: usize) {
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(d.get(i).map_or('0', |&c| c as char));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as i32 {
            let j = dp + i - 1;
            out.push(if j >= 0 {
                d.get(j as usize).map_or('0', |&c| c as char)
            } else {
                '0'
            });
        }
    }
}

/// More significant digits than any f64's exact decimal expansion has.
const MAX_SIGNIFICANT: usize = 800;

/// Go's `strconv.FormatFloat(v, verb, prec, 64)` for verbs e, E, f, g, G.
pub(super) fn format_float(v: f64, verb: char, prec: i32) -> String {
    let mut out = String::new();
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    let shortest = prec < 0;
    match verb {
        'e' | 'E' => {
            let (d, dp) = digits(v, (!shortest).then(|| prec as usize + 1));
            let p = if shortest {
                d.len().saturating_sub(1)
            } else {
                prec as usize
            };
            fmt_e(&mut out, &d, dp, p, verb);
        }
        'f' => {
            if shortest {
                let (d, dp) = digits(v, None);
                fmt_f(&mut out, &d, dp, (d.len() as i32 - dp).max(0) as usize);
            } else {
                let _ = write!(out, "{:.*}", prec as usize, v.abs());
            }
        }
        _ => {
            let mut p = if shortest { 0 } else { prec.max(1) as usize };
            // An f64 is exactly a decimal of at most 767 significant digits, so asking for more
            // only adds the zeros `digits` drops: the same digits without a huge string.
            let (d, dp) = digits(v, (!shortest).then_some(p.min(MAX_SIGNIFICANT)));
            if shortest {
                p = d.len();
            }
            let mut eprec = p as i32;
            if eprec > d.len() as i32 && d.len() as i32 >= dp {
                eprec = d.len() as i32;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            let e = if verb == 'G' { 'E' } else { 'e' };
            if exp < -4 || exp >= eprec {
                let p = p.min(d.len());
                fmt_e(&mut out, &d, dp, p.saturating_sub(1), e);
            } else {
                let p = if p as i32 > dp {
                    d.len() as i32
                } else {
                    p as i32
                };
                fmt_f(&mut out, &d, dp, (p - dp).max(0) as usize);
            }
        }
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    plus_v: bool,
    sharp_v: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.pp`: one formatting run writing into `buf`, never past `limit` bytes. Every write
/// goes through [`Printer::reserve`], which refuses (and sets `overflow`) what would not fit,
/// before anything is allocated for it; after an overflow nothing more is written.
pub(super) struct Printer {
    pub(super) buf: String,
    f: Flags,
    limit: usize,
    pub(super) overflow: bool,
}

const LDIGITS: &[u8] = b"0123456789abcdefx";
const UDIGITS: &[u8] = b"0123456789ABCDEFX";

/// Makes room in `buf` for `n` more bytes, doubling as `String` does but never past `limit`
/// (unless `n` itself needs more), so a bounded buffer never holds twice its bound.
pub(super) fn grow(buf: &mut String, n: usize, limit: usize) {
    let need = buf.len().saturating_add(n);
    if need > buf.capacity() {
        let want = buf
            .capacity()
            .saturating_mul(2)
            .max(64)
            .min(limit)
            .max(need);
        buf.reserve_exact(want - buf.len());
    }
}

impl Printer {
    pub(super) fn new(limit: usize) -> Self {
        Self::resume(String::new(), limit)
    }

    /// A printer that appends to `buf`, which with what it appends holds at most `limit` bytes.
    pub(super) fn resume(buf: String, limit: usize) -> Self {
        Self {
            buf,
            f: Flags::default(),
            limit,
            overflow: false,
        }
    }

    /// Bytes that may still be written.
    fn room(&self) -> usize {
        if self.overflow {
            return 0;
        }
        self.limit.saturating_sub(self.buf.len())
    }

    /// Makes room for `n` more bytes; false (and `overflow` set) if they would pass the limit.
    fn reserve(&mut self, n: usize) -> bool {
        if self.overflow || n > self.room() {
            self.overflow = true;
            return false;
        }
        grow(&mut self.buf, n, self.limit);
        true
    }

    fn put(&mut self, s: &str) {
        if self.reserve(s.len()) {
            self.buf.push_str(s);
        }
    }

    fn put_char(&mut self, c: char) {
        self.put(c.encode_utf8(&mut [0; 4]));
    }

    fn put_fmt(&mut self, a: std::fmt::Arguments<'_>) {
        self.put(&a.to_string());
    }

    fn write_padding(&mut self, n: usize) {
        if n == 0 || !self.reserve(n) {
            return;
        }
        let c = if self.f.zero { '0' } else { ' ' };
        self.buf.extend(std::iter::repeat_n(c, n));
    }

    fn pad(&mut self, s: &str) {
        let Some(wid) = self.f.wid.filter(|w| *w > 0) else {
            self.put(s);
            return;
        };
        let n = wid.saturating_sub(s.chars().count());
        // The padding counts against the room before it is made.
        if s.len().saturating_add(n) > self.room() {
            self.overflow = true;
            return;
        }
        if self.f.minus {
            self.put(s);
            self.write_padding(n);
        } else {
            self.write_padding(n);
            self.put(s);
        }
    }

    fn fmt_s(&mut self, s: &str) {
        let s = match self.f.prec {
            Some(p) => s.char_indices().nth(p).map_or(s, |(i, _)| &s[..i]),
            None => s,
        };
        self.pad(s);
    }

    fn fmt_sx(&mut self, s: &str, digits: &[u8]) {
        let mut length = s.len();
        if let Some(p) = self.f.prec {
            length = length.min(p);
        }
        let mut width = 2 * length;
        if width == 0 {
            if let Some(w) = self.f.wid {
                self.write_padding(w);
            }
            return;
        }
        if self.f.space {
            if self.f.sharp {
                width *= 2;
            }
            width += length - 1;
        } else if self.f.sharp {
            width += 2;
        }
        let wid = self.f.wid.unwrap_or(0);
        if wid.max(width) > self.room() {
            self.overflow = true;
            return;
        }
        if wid > width && !self.f.minus {
            self.write_padding(wid - width);
        }
        let x = if digits[16] == b'x' { "0x" } else { "0X" };
        if self.f.sharp {
            self.put(x);
        }
        for (i, c) in s.bytes().take(length).enumerate() {
            if self.f.space && i > 0 {
                self.put_char(' ');
                if self.f.sharp {
                    self.put(x);
                }
            }
            self.put_char(digits[usize::from(c >> 4)] as char);
            self.put_char(digits[usize::from(c & 0xf)] as char);
        }
        if wid > width && self.f.minus {
            self.write_padding(wid - width);
        }
    }

    fn fmt_q(&mut self, s: &str) {
        let s = match self.f.prec {
            Some(p) => s.char_indices().nth(p).map_or(s, |(i, _)| &s[..i]),
            None => s,
        };
        if s.len() > self.room() {
            self.overflow = true;
            return;
        }
        if self.f.sharp && can_backquote(s) {
            let q = format!("`{s}`");
            self.pad(&q);
            return;
        }
        let q = quote_with(s, '"', self.f.plus, self.room());
        self.pad(&q);
    }

    fn fmt_string(&mut self, s: &str, verb: char) -> bool {
        match verb {
            'v' if self.f.sharp_v => self.fmt_q(s),
            'v' | 's' => self.fmt_s(s),
            'x' => self.fmt_sx(s, LDIGITS),
            'X' => self.fmt_sx(s, UDIGITS),
            'q' => self.fmt_q(s),
            _ => return false,
        }
        true
    }

    fn fmt_bool(&mut self, b: bool, verb: char) -> bool {
        if verb == 't' || verb == 'v' {
            self.pad(if b { "true" } else { "false" });
            return true;
        }
        false
    }

    fn fmt_integer_base(&mut self, mut u: u64, base: u64, signed: bool, verb: char, digits: &[u8]) {
        let negative = signed && (u as i64) < 0;
        if negative {
            u = (u as i64).unsigned_abs();
        }
        let mut prec = 0usize;
        if let Some(p) = self.f.prec {
            prec = p;
            if p == 0 && u == 0 {
                let z = self.f.zero;
                self.f.zero = false;
                self.write_padding(self.f.wid.unwrap_or(0));
                self.f.zero = z;
                return;
            }
        } else if self.f.zero && self.f.wid.is_some() {
            prec = self.f.wid.unwrap_or(0);
            if negative || self.f.plus || self.f.space {
                prec = prec.saturating_sub(1);
            }
        }
        // The digits are at least `prec` bytes: refuse them before making them.
        if prec > self.room() {
            self.overflow = true;
            return;
        }
        let mut rev: Vec<u8> = Vec::with_capacity(prec.max(22) + 3);
        loop {
            rev.push(digits[(u % base) as usize]);
            u /= base;
            if u == 0 {
                break;
            }
        }
        while rev.len() < prec {
            rev.push(b'0');
        }
        if self.f.sharp {
            match base {
                2 => rev.extend_from_slice(b"b0"),
                8 if rev.last() != Some(&b'0') => rev.push(b'0'),
                16 => {
                    rev.push(digits[16]);
                    rev.push(b'0');
                }
                _ => {}
            }
        }
        if verb == 'O' {
            rev.extend_from_slice(b"o0");
        }
        if negative {
            rev.push(b'-');
        } else if self.f.plus {
            rev.push(b'+');
        } else if self.f.space {
            rev.push(b' ');
        }
        rev.reverse();
        // Only ASCII digits and signs were pushed.
        let s = String::from_utf8(rev).unwrap_or_default();
        let z = self.f.zero;
        self.f.zero = false;
        self.pad(&s);
        self.f.zero = z;
    }

    fn fmt_integer(&mut self, v: u64, signed: bool, verb: char) -> bool {
        match verb {
            'v' if self.f.sharp_v && !signed => {
                let s = self.f.sharp;
                self.f.sharp = true;
                self.fmt_integer_base(v, 16, false, 'v', LDIGITS);
                self.f.sharp = s;
            }
            'v' | 'd' => self.fmt_integer_base(v, 10, signed, verb, LDIGITS),
            'b' => self.fmt_integer_base(v, 2, signed, verb, LDIGITS),
            'o' | 'O' => self.fmt_integer_base(v, 8, signed, verb, LDIGITS),
            'x' => self.fmt_integer_base(v, 16, signed, verb, LDIGITS),
            'X' => self.fmt_integer_base(v, 16, signed, verb, UDIGITS),
            'c' => {
                let c = u32::try_from(v)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('\u{fffd}');
                self.pad(c.encode_utf8(&mut [0; 4]));
            }
            'q' => {
                let c = u32::try_from(v)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('\u{fffd}');
                let mut q = String::from("'");
                escape_char(&mut q, c, '\'', self.f.plus);
                q.push('\'');
                self.pad(&q);
            }
            'U' => {
                if self.f.prec.is_some_and(|p| p > self.room()) {
                    self.overflow = true;
                    return true;
                }
                let mut s = format!(
                    "U+{:0w$X}",
                    v,
                    w = self.f.prec.filter(|p| *p > 4).unwrap_or(4)
                );
                if let Some(c) = u32::try_from(v).ok().and_then(char::from_u32) {
                    if self.f.sharp && is_print(c) {
                        let _ = write!(s, " '{c}'");
                    }
                }
                let z = self.f.zero;
                self.f.zero = false;
                self.pad(&s);
                self.f.zero = z;
            }
            _ => return false,
        }
        true
    }

    fn fmt_float(&mut self, v: f64, verb: char) -> bool {
        let (verb, prec) = match verb {
            'v' => ('g', -1),
            'g' | 'G' => (verb, -1),
            'f' | 'e' | 'E' => (verb, 6),
            'F' => ('f', 6),
            _ => return false,
        };
        let prec = self
            .f
            .prec
            .map_or(prec, |p| i32::try_from(p).unwrap_or(i32::MAX));
        // %e and %f print `prec` digits after the point, and %#g keeps `prec` digits: refuse
        // them before making them (%g without # drops its trailing zeros, see `format_float`).
        let long = matches!(verb, 'e' | 'E' | 'f') || self.f.sharp;
        if long && usize::try_from(prec).is_ok_and(|p| p > self.room()) {
            self.overflow = true;
            return true;
        }
        let formatted = format_float(v, verb, prec);
        let mut num = if formatted.starts_with(['-', '+']) {
            formatted
        } else {
            format!("+{formatted}")
        };
        if self.f.space && num.starts_with('+') && !self.f.plus {
            num.replace_range(..1, " ");
        }
        if num[1..].starts_with(['I', 'N']) {
            let z = self.f.zero;
            self.f.zero = false;
            if num[1..].starts_with('N') && !self.f.space && !self.f.plus {
                num.remove(0);
            }
            self.pad(&num);
            self.f.zero = z;
            return true;
        }
        if self.f.sharp {
            let mut digits = if verb == 'g' || verb == 'G' { prec } else { 0 };
            if digits == -1 {
                digits = 6;
            }
            let mut tail = String::new();
            if let Some(i) = num.find(['e', 'E']) {
                tail = num[i..].to_string();
                num.truncate(i);
            }
            let mut has_point = false;
            let mut saw_nonzero = false;
            for c in num[1..].chars() {
                match c {
                    '.' => has_point = true,
                    _ => {
                        if c != '0' {
                            saw_nonzero = true;
                        }
                        if saw_nonzero {
                            digits -= 1;
                        }
                    }
                }
            }
            if !has_point {
                if num.len() == 2 && num.ends_with('0') {
                    digits -= 1;
                }
                num.push('.');
            }
            while digits > 0 {
                num.push('0');
                digits -= 1;
            }
            num.push_str(&tail);
        }
        if self.f.plus || !num.starts_with('+') {
            let len = num.chars().count();
            if self.f.zero && self.f.wid.is_some_and(|w| w > len) {
                let w = self.f.wid.unwrap_or(0);
                self.put(&num[..1]);
                self.write_padding(w - len);
                self.put(&num[1..]);
                return true;
            }
            self.pad(&num);
            return true;
        }
        self.pad(&num[1..]);
        true
    }

    /// Go's `badVerb`: `%!d(string=x)`.
    fn bad_verb(&mut self, verb: char, arg: Dyn<'_>) {
        self.put_fmt(format_args!("%!{verb}("));
        match arg {
            Dyn::Invalid | Dyn::Nil => self.put("<nil>"),
            a => {
                self.put(a.type_name());
                self.put_char('=');
                self.print_arg(a, 'v');
            }
        }
        self.put_char(')');
    }

    /// Go's `printArg`: `arg` is what a Go function would receive as `any`.
    pub(super) fn print_arg(&mut self, arg: Dyn<'_>, verb: char) {
        if matches!(arg, Dyn::Invalid | Dyn::Nil) {
            if verb == 'T' || verb == 'v' {
                self.pad("<nil>");
            } else {
                self.bad_verb(verb, arg);
            }
            return;
        }
        if verb == 'T' {
            self.fmt_s(arg.type_name());
            return;
        }
        self.print_value(arg, verb);
    }

    fn print_value(&mut self, arg: Dyn<'_>, verb: char) {
        if self.overflow {
            return;
        }
        let ok = match arg {
            Dyn::Invalid | Dyn::Nil => {
                if self.f.sharp_v {
                    self.put("interface {}(nil)");
                } else {
                    self.put("<nil>");
                }
                true
            }
            Dyn::Bool(b) => self.fmt_bool(b, verb),
            Dyn::Int(i, _) => self.fmt_integer(i as u64, true, verb),
            Dyn::Uint(u, _) => self.fmt_integer(u, false, verb),
            Dyn::Float(f) => self.fmt_float(f, verb),
            Dyn::Str(s) => self.fmt_string(s, verb),
            Dyn::Map(m) => {
                if self.f.sharp_v {
                    self.put("map[string]interface {}{");
                } else {
                    self.put("map[");
                }
                for (i, (k, v)) in sorted(m).into_iter().enumerate() {
                    if i > 0 {
                        self.put(if self.f.sharp_v { ", " } else { " " });
                    }
                    self.print_value(Dyn::Str(k), verb);
                    self.put_char(':');
                    self.print_value(data_dyn(v), verb);
                }
                self.put_char(if self.f.sharp_v { '}' } else { ']' });
                true
            }
            Dyn::List(l) => {
                if self.f.sharp_v {
                    self.put("[]interface {}{");
                } else {
                    self.put_char('[');
                }
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        self.put(if self.f.sharp_v { ", " } else { " " });
                    }
                    self.print_value(data_dyn(v), verb);
                }
                self.put_char(if self.f.sharp_v { '}' } else { ']' });
                true
            }
        };
        if !ok {
            self.bad_verb(verb, arg);
        }
    }

    /// Go's `Sprint`: spaces between operands when neither side is a string.
    pub(super) fn sprint(&mut self, args: &[Dyn<'_>]) {
        let mut prev_string = false;
        for (i, a) in args.iter().enumerate() {
            let is_string = matches!(a, Dyn::Str(_));
            if i > 0 && !is_string && !prev_string {
                self.put_char(' ');
            }
            self.print_arg(*a, 'v');
            prev_string = is_string;
        }
    }

    /// Go's `Sprintln`.
    pub(super) fn sprintln(&mut self, args: &[Dyn<'_>]) {
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                self.put_char(' ');
            }
            self.print_arg(*a, 'v');
        }
        self.put_char('\n');
    }

    /// Go's `Sprintf`.
    pub(super) fn sprintf(&mut self, format: &str, a: &[Dyn<'_>]) {
        let b = format.as_bytes();
        let end = b.len();
        let mut arg_num = 0usize;
        let mut after_index;
        let mut reordered = false;
        let mut i = 0;
        'format: while i < end {
            if self.overflow {
                return;
            }
            let mut good_arg_num = true;
            let lasti = i;
            while i < end && b[i] != b'%' {
                i += 1;
            }
            if i > lasti {
                self.put(&format[lasti..i]);
            }
            if i >= end {
                break;
            }
            i += 1;
            self.f = Flags::default();
            while i < end {
                let c = b[i];
                match c {
                    b'#' => self.f.sharp = true,
                    b'0' => self.f.zero = !self.f.minus,
                    b'+' => self.f.plus = true,
                    b'-' => {
                        self.f.minus = true;
                        self.f.zero = false;
                    }
                    b' ' => self.f.space = true,
                    _ => {
                        if c.is_ascii_lowercase() && arg_num < a.len() {
                            if c == b'v' {
                                self.f.sharp_v = self.f.sharp;
                                self.f.sharp = false;
                                self.f.plus_v = self.f.plus;
                                self.f.plus = false;
                            }
                            self.print_arg(a[arg_num], c as char);
                            arg_num += 1;
                            i += 1;
                            continue 'format;
                        }
                        break;
                    }
                }
                i += 1;
            }
            (arg_num, i, after_index, good_arg_num) =
                arg_number(arg_num, format, i, a.len(), good_arg_num, &mut reordered);
            if let Some((n, ok)) = star(b, &mut i, a, &mut arg_num) {
                if !ok {
                    self.put("%!(BADWIDTH)");
                }
                if n < 0 {
                    self.f.minus = true;
                    self.f.zero = false;
                }
                self.f.wid = ok.then_some(n.unsigned_abs() as usize);
                after_index = false;
            } else {
                let (n, ok, next) = parse_num(b, i, end);
                i = next;
                self.f.wid = ok.then_some(n);
                if after_index && ok {
                    good_arg_num = false;
                }
            }
            if i + 1 < end && b[i] == b'.' {
                i += 1;
                if after_index {
                    good_arg_num = false;
                }
                (arg_num, i, after_index, good_arg_num) =
                    arg_number(arg_num, format, i, a.len(), good_arg_num, &mut reordered);
                if let Some((n, ok)) = star(b, &mut i, a, &mut arg_num) {
                    self.f.prec = (ok && n >= 0).then_some(n as usize);
                    if self.f.prec.is_none() {
                        self.put("%!(BADPREC)");
                    }
                    after_index = false;
                } else {
                    let (n, ok, next) = parse_num(b, i, end);
                    i = next;
                    self.f.prec = Some(if ok { n } else { 0 });
                }
            }
            if !after_index {
                (arg_num, i, after_index, good_arg_num) =
                    arg_number(arg_num, format, i, a.len(), good_arg_num, &mut reordered);
            }
            let _ = after_index;
            if i >= end {
                self.put("%!(NOVERB)");
                break;
            }
            let verb = format[i..].chars().next().unwrap_or('?');
            i += verb.len_utf8();
            match verb {
                '%' => self.put_char('%'),
                _ if !good_arg_num => {
                    self.put_fmt(format_args!("%!{verb}(BADINDEX)"));
                }
                _ if arg_num >= a.len() => {
                    self.put_fmt(format_args!("%!{verb}(MISSING)"));
                }
                _ => {
                    if verb == 'v' {
                        self.f.sharp_v = self.f.sharp;
                        self.f.sharp = false;
                        self.f.plus_v = self.f.plus;
                        self.f.plus = false;
                    }
                    self.print_arg(a[arg_num], verb);
                    arg_num += 1;
                }
            }
        }
        if !reordered && arg_num < a.len() {
            self.f = Flags::default();
            self.put("%!(EXTRA ");
            for (i, arg) in a[arg_num..].iter().enumerate() {
                if i > 0 {
                    self.put(", ");
                }
                if matches!(arg, Dyn::Invalid | Dyn::Nil) {
                    self.put("<nil>");
                } else {
                    self.put(arg.type_name());
                    self.put_char('=');
                    self.print_arg(*arg, 'v');
                }
            }
            self.put_char(')');
        }
    }
}

fn too_large(x: i64) -> bool {
    !(-1_000_000..=1_000_000).contains(&x)
}

/// Go's `parsenum`: (number, found, next index).
fn parse_num(b: &[u8], start: usize, end: usize) -> (usize, bool, usize) {
    if start >= end {
        return (0, false, end);
    }
    let mut num: i64 = 0;
    let mut found = false;
    let mut i = start;
    while i < end && b[i].is_ascii_digit() {
        if too_large(num) {
            return (0, false, end);
        }
        num = num * 10 + i64::from(b[i] - b'0');
        found = true;
        i += 1;
    }
    (num as usize, found, i)
}

/// Go's `argNumber`: an explicit `[n]` argument index, if present.
fn arg_number(
    arg_num: usize,
    format: &str,
    i: usize,
    num_args: usize,
    good: bool,
    reordered: &mut bool,
) -> (usize, usize, bool, bool) {
    let b = format.as_bytes();
    if b.len() <= i || b[i] != b'[' {
        return (arg_num, i, false, good);
    }
    *reordered = true;
    let rest = &b[i..];
    let (index, wid, ok) = if rest.len() < 3 {
        (0, 1, false)
    } else if let Some(close) = rest.iter().skip(1).position(|&c| c == b']').map(|p| p + 1) {
        let (n, found, next) = parse_num(rest, 1, close);
        if !found || next != close {
            (0, close + 1, false)
        } else {
            (n as i64 - 1, close + 1, true)
        }
    } else {
        (0, 1, false)
    };
    if ok && index >= 0 && (index as usize) < num_args {
        return (index as usize, i + wid, true, good);
    }
    (arg_num, i + wid, ok, false)
}

/// A `*` width or precision at `b[*i]`: the argument it takes, as Go's `intFromArg`.
fn star(b: &[u8], i: &mut usize, a: &[Dyn<'_>], arg_num: &mut usize) -> Option<(i64, bool)> {
    if b.get(*i) != Some(&b'*') {
        return None;
    }
    *i += 1;
    let (n, ok, next) = int_from_arg(a, *arg_num);
    *arg_num = next;
    Some((n, ok))
}

/// Go's `intFromArg` for `*` widths and precisions.
fn int_from_arg(a: &[Dyn<'_>], arg_num: usize) -> (i64, bool, usize) {
    let Some(arg) = a.get(arg_num) else {
        return (0, false, arg_num);
    };
    let (mut n, mut ok) = match *arg {
        Dyn::Int(i, _) => (i, true),
        Dyn::Uint(u, _) => i64::try_from(u).map_or((0, false), |i| (i, true)),
        _ => (0, false),
    };
    if too_large(n) {
        n = 0;
        ok = false;
    }
    (n, ok, arg_num + 1)
}

/// Go's `encoding/json.Marshal` of a value held as `interface{}` (sorted keys, HTML-safe).
/// Stops early once `out` is past `limit` bytes, so the caller sees a text longer than `limit`
/// and refuses it.
pub(super) fn json(out: &mut String, v: Dyn<'_>, limit: usize) {
    if out.len() > limit {
        return;
    }
    match v {
        Dyn::Invalid | Dyn::Nil => out.push_str("null"),
        Dyn::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Dyn::Int(i, _) => {
            let _ = write!(out, "{i}");
        }
        Dyn::Uint(u, _) => {
            let _ = write!(out, "{u}");
        }
        Dyn::Float(f) => {
            let abs = f.abs();
            let e = abs != 0.0 && !(1e-6..1e21).contains(&abs);
            let mut s = format_float(f, if e { 'e' } else { 'f' }, -1);
            if e {
                // Go writes 1e-7 where strconv gives 1e-07.
                let n = s.len();
                if n >= 4 && s[..n - 1].ends_with("e-0") {
                    s.remove(n - 2);
                }
            }
            out.push_str(&s);
        }
        Dyn::Str(s) => json_string(out, s, limit),
        Dyn::Map(m) => {
            out.push('{');
            for (i, (k, v)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, k, limit);
                out.push(':');
                json(out, data_dyn(v), limit);
            }
            out.push('}');
        }
        Dyn::List(l) => {
            out.push('[');
            for (i, v) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(out, data_dyn(v), limit);
            }
            out.push(']');
        }
    }
}

fn json_string(out: &mut String, s: &str, limit: usize) {
    out.push('"');
    for c in s.chars() {
        if out.len() > limit {
            return;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` with each character written by `f`; stops early once past `limit` bytes (escapes make up
/// to six bytes of one), so the caller sees a text longer than `limit` and refuses it.
fn map_chars(s: &str, limit: usize, f: impl Fn(&mut String, char)) -> String {
    let mut out = String::with_capacity(s.len().min(limit));
    for c in s.chars() {
        if out.len() > limit {
            break;
        }
        f(&mut out, c);
    }
    out
}

/// Go's `template.HTMLEscapeString`.
pub(super) fn html_escape(s: &str, limit: usize) -> String {
    map_chars(s, limit, |out, c| match c {
        '\0' => out.push('\u{fffd}'),
        '"' => out.push_str("&#34;"),
        '\'' => out.push_str("&#39;"),
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    })
}

/// Go's `template.JSEscapeString`.
pub(super) fn js_escape(s: &str, limit: usize) -> String {
    map_chars(s, limit, |out, c| match c {
        '\\' => out.push_str("\\\\"),
        '\'' => out.push_str("\\'"),
        '"' => out.push_str("\\\""),
        '<' => out.push_str("\\u003C"),
        '>' => out.push_str("\\u003E"),
        '&' => out.push_str("\\u0026"),
        '=' => out.push_str("\\u003D"),
        c if (c as u32) < 0x20 || (!c.is_ascii() && !is_print(c)) => {
            let _ = write!(out, "\\u{:04X}", c as u32);
        }
        c => out.push(c),
    })
}

/// Go's `url.QueryEscape`.
pub(super) fn query_escape(s: &str, limit: usize) -> String {
    let mut out = String::with_capacity(s.len().min(limit));
    for b in s.bytes() {
        if out.len() > limit {
            break;
        }
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
