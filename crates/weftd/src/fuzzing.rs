//! Fuzzing entry points for weftd's parsers of what local users send: the HTTP API's form
//! bodies and report templates. Compiled under `cfg(fuzzing)` (cargo-fuzz sets it) and in unit
//! tests; the targets in `fuzz/` are one-line shims over these, and a panic is a finding. Each
//! takes a [`HeapMeter`] and asserts its `*_BOUND` with weft-core's shared [`metered`], as
//! `weft_core::fuzzing`'s harnesses do.

use std::sync::OnceLock;

use serde_json::Value;

pub use weft_core::fuzz_support::{metered, unmetered, Bound, HeapMeter};

/// Form bodies: each pair costs two `String`s and a tuple slot (twice over while the vector
/// grows) for as little as two input bytes (`a&`), and decoding copies each part once.
pub const FORM_PAIRS_BOUND: Bound = Bound {
    per_byte: 128,
    base: 4 * 1024,
};

/// Percent-encodes everything but unreserved characters.
fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Parses `data` (as text, invalid UTF-8 replaced) as an `application/x-www-form-urlencoded`
/// body. Checks: one pair per non-empty `&`-separated part, none longer decoded than encoded,
/// and the pairs encoded again parse to themselves.
pub fn form_pairs(data: &[u8], meter: HeapMeter) {
    let body = String::from_utf8_lossy(data);
    let pairs = metered(data.len(), FORM_PAIRS_BOUND, meter, "form_pairs", || {
        crate::http::form_pairs(&body)
    });
    let parts: Vec<&str> = body.split('&').filter(|p| !p.is_empty()).collect();
    assert_eq!(pairs.len(), parts.len(), "one pair per part");
    for ((k, v), part) in pairs.iter().zip(&parts) {
        assert!(
            k.len() + v.len() <= part.len(),
            "{part:?} grew when decoded"
        );
    }
    let mut again = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            again.push('&');
        }
        form_encode(k, &mut again);
        again.push('=');
        form_encode(v, &mut again);
    }
    assert_eq!(
        crate::http::form_pairs(&again),
        pairs,
        "encoded pairs do not parse to themselves"
    );
}

/// Templates: the parse tree costs at most a few hundred bytes per template byte (a node, its
/// pipeline and command vectors for `{{.}}`'s five bytes); execution holds the output and the
/// strings functions return, all sharing one [`MAX_OUTPUT`](crate::template::MAX_OUTPUT)
/// budget for the whole render (twice that while a string grows), and the values of
/// variables and pipelines, made from that text.
pub const TEMPLATE_BOUND: Bound = Bound {
    per_byte: 1024,
    base: 6 * 1024 * 1024,
};

/// The report the templates run over: `testdata/gotemplate/data.json`, the document Weave's
/// `/report` returns, as the Go comparison tests use it.
fn report() -> &'static Value {
    static REPORT: OnceLock<Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        serde_json::from_str(include_str!("../testdata/gotemplate/data.json"))
            .unwrap_or(Value::Null)
    })
}

/// Renders `data` (as text, invalid UTF-8 replaced) as a report template over the fixed
/// report. Checks: output within [`MAX_OUTPUT`](crate::template::MAX_OUTPUT), errors short.
pub fn template(data: &[u8], meter: HeapMeter) {
    let tpl = String::from_utf8_lossy(data);
    let report = report();
    let out = metered(data.len(), TEMPLATE_BOUND, meter, "template", || {
        crate::template::render(&tpl, report)
    });
    match out {
        Ok(text) => assert!(
            text.len() <= crate::template::MAX_OUTPUT,
            "{} bytes of output",
            text.len()
        ),
        Err(e) => assert!(
            e.to_string().len() <= 4096,
            "error of {} bytes",
            e.to_string().len()
        ),
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
mod tests {
    use weft_core::fuzz_support::replay_corpus as replay;

    #[test]
    fn corpora_replay_without_panics() {
        assert!(replay("form_pairs", super::form_pairs) > 0);
        assert!(replay("template", super::template) > 0);
    }

    #[test]
    fn the_report_loads() {
        assert!(super::report().get("Router").is_some());
    }
}
