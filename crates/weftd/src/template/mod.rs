//! Go's `text/template` language for `weft report -f '<template>'` and the router's
//! `/report?format=` route, over the report document.
//!
//! Weave Net's router parses the format as `template.New("format").Funcs({"json": …})` and
//! executes it over its status struct; users' scripts rely on the whole language. This is a port
//! of Go's lexer, parser and executor (`lex`, `parse`, `exec`), of the `fmt` verbs `printf`
//! uses (`fmt`), and of Go's view of JSON-decoded data (`value`), so that output and error
//! messages are Go's for the same template and data (checked against Go itself by
//! `tests/gotemplate.rs`). No Rust crate implements the language with Go's exact output and
//! errors and with bounds on untrusted templates, hence the port.
//!
//! Departures from Go, all on purpose: a template is at most [`MAX_TEMPLATE`] bytes, nests at
//! most [`MAX_NESTING`] levels, prints at most [`MAX_OUTPUT`] bytes and does at most
//! [`MAX_WORK`] steps (so a request cannot tie up the router); complex-number constants are
//! refused. The output and the strings functions return share the one [`MAX_OUTPUT`] budget
//! (a function's result counts until it is printed and dropped, or for the rest of the render
//! if kept), and every function and printer is handed what is left of it and checks widths,
//! precisions and escapes against it before making them, so what a render holds stays a small
//! multiple of [`MAX_OUTPUT`] however its calls nest. Values that errors show are cut at 1 KiB,
//! the node an execution error names at 256 bytes and the whole message at [`MAX_ERROR`].

mod exec;
mod fmt;
mod lex;
mod parse;
mod value;

use serde_json::Value;

use value::V;

/// The template's name in errors, as Weave's router names it.
const NAME: &str = "format";

/// Longest template text accepted, in bytes.
pub const MAX_TEMPLATE: usize = 16 * 1024;
/// Most output one execution may produce, in bytes, together with the strings its functions
/// return and it keeps.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Deepest nesting of control structures and parentheses the parser accepts.
pub const MAX_NESTING: usize = 100;
/// Deepest nesting during execution (lists, pipelines, template calls together).
const MAX_DEPTH: usize = 400;
/// Deepest chain of `{{template}}` calls.
const MAX_TEMPLATE_CALLS: usize = 20;
/// Most steps (nodes walked, iterations, function calls, 16-byte units of text made) one
/// execution may take: about 0.15 s of one core in a release build, far above what status
/// templates over a 100-peer mesh need.
pub const MAX_WORK: usize = 2_000_000;

/// Longest error message, in bytes; longer ones are cut and end in `...`.
pub const MAX_ERROR: usize = 1024;
/// Longest node text an execution error shows as its context (`at <...>`).
const MAX_CONTEXT: usize = 256;

/// `s` cut to at most `max` bytes (at a character boundary) and marked `...` if it was longer.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

/// A template that failed to parse or execute; the message is Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// Parses `tpl` and executes it over `data`, as Weave's router does for `/report?format=`.
pub fn render(tpl: &str, data: &Value) -> Result<String, TemplateError> {
    if tpl.len() > MAX_TEMPLATE {
        return Err(TemplateError(format!(
            "template: {NAME}: template is {} bytes, longer than {MAX_TEMPLATE}",
            tpl.len()
        )));
    }
    let set = parse::parse(NAME, tpl).map_err(error)?;
    let Some((name, root)) = set.trees.get_key_value(NAME) else {
        return Err(TemplateError(format!(
            "template: {NAME}: \"{NAME}\" is an incomplete or empty template"
        )));
    };
    let dot = match data {
        Value::Null => V::Invalid,
        d => V::Data(d, false),
    };
    let mut state = exec::State::new(&set, name, dot.clone());
    match state.walk_list(&dot, root) {
        Ok(()) => Ok(state.out),
        Err(exec::Flow::Err(e)) => Err(error(e)),
        // The parser allows break and continue only inside range, which catches them.
        Err(exec::Flow::Break | exec::Flow::Continue) => Ok(state.out),
    }
}

/// The error for Go's message `e`, cut to [`MAX_ERROR`] bytes: names and literals from a long
/// template would otherwise make it as long as the template, twice over.
fn error(e: String) -> TemplateError {
    match cut(&e, MAX_ERROR) {
        std::borrow::Cow::Borrowed(_) => TemplateError(e),
        std::borrow::Cow::Owned(c) => TemplateError(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn common_forms() {
        let d = json!({"Router": {"Name": "aa:bb:cc:dd:ee:01", "Peers": [{"NickName": "h1"}, {"NickName": "h2"}]}, "DNS": {"Domain": "weave.local."}});
        assert_eq!(render("{{.Router.Name}}", &d).unwrap(), "aa:bb:cc:dd:ee:01");
        assert_eq!(render("n={{len .Router.Peers}}\n", &d).unwrap(), "n=2\n");
        assert_eq!(
            render("{{range .Router.Peers}}{{.NickName}} {{end}}", &d).unwrap(),
            "h1 h2 "
        );
        assert_eq!(
            render("{{json .DNS}}", &d).unwrap(),
            r#"{"Domain":"weave.local."}"#
        );
        assert_eq!(render("{{if .IPAM}}y{{else}}n{{end}}", &d).unwrap(), "n");
        assert_eq!(
            render("{{range .Router.Peers}}{{.NickName}}{{\"\\n\"}}{{end}}", &d).unwrap(),
            "h1\nh2\n"
        );
        assert!(render("{{.Router.Name", &d).is_err());
        assert!(render("{{range .Router.Peers}}x", &d).is_err());
    }

    fn report() -> Value {
        serde_json::from_str(include_str!("../../testdata/gotemplate/data.json")).unwrap()
    }

    /// What the `template` fuzz target found (`fuzz/corpus/template/heap-nested-printers`): a
    /// zero-padded width of 980000 on every string and number of the report. Each piece fits
    /// MAX_OUTPUT alone, and the printers went on past it, holding 7.9 MB.
    const NESTED_PADDING: &str = "{{printf \"s % #0980000\x13 \" . 2}}";

    #[test]
    fn padding_past_the_budget_fails_cleanly() {
        let e = render(NESTED_PADDING, &report()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("template: format:1:2: executing \"format\" at <printf \"s % #0980000\x13 \" . 2>: error calling printf: output exceeds {MAX_OUTPUT} bytes")
        );
    }

    #[test]
    fn a_printer_never_allocates_past_its_limit() {
        let data = report();
        let format = "s % #0980000\x13 ";
        for limit in [100, 4096, 500_000, MAX_OUTPUT] {
            let mut p = fmt::Printer::new(limit);
            p.sprintf(
                format,
                &[V::Data(&data, false).dynamic(), V::Int(2).dynamic()],
            );
            assert!(p.overflow, "limit {limit}");
            assert!(p.buf.len() <= limit, "limit {limit}: {} bytes", p.buf.len());
            assert!(
                p.buf.capacity() <= limit.max(64),
                "limit {limit}: {} bytes allocated",
                p.buf.capacity()
            );
        }
        // Precision counts before the digits are made, too.
        for format in [
            "%.999999f",
            "%.999999e",
            "%#.999999g",
            "%0999999d",
            "%.999999U",
        ] {
            let mut p = fmt::Printer::new(4096);
            p.sprintf(format, &[V::Float(1.5).dynamic()]);
            p.sprintf(format, &[V::Int(7).dynamic()]);
            assert!(p.overflow, "{format}");
            assert!(p.buf.capacity() <= 4096, "{format}: {}", p.buf.capacity());
        }
        // %g drops trailing zeros, so a huge precision prints the exact value, as Go does.
        let mut p = fmt::Printer::new(4096);
        p.sprintf("%.999999g", &[V::Float(0.1).dynamic()]);
        assert!(!p.overflow);
        assert_eq!(
            p.buf,
            "0.1000000000000000055511151231257827021181583404541015625"
        );
    }

    #[test]
    fn long_names_and_nodes_make_short_errors() {
        let d = report();
        let name = "n".repeat(5000);
        let e = render(&format!("{{{{template \"{name}\"}}}}"), &d)
            .unwrap_err()
            .to_string();
        assert!(e.len() <= MAX_ERROR, "{} bytes", e.len());
        let context = format!(
            "template: format:1:11: executing \"format\" at <{{{{template \"{}...>: template \"nnn",
            &name[..MAX_CONTEXT - "...{{template \"".len()]
        );
        assert!(e.starts_with(&context), "{e}");
        assert!(e.ends_with("..."), "{e}");
        // What the fuzz target found (`fuzz/corpus/template/error-long-template-name`): a
        // 1.5 KB name of invalid UTF-8, three bytes a piece once replaced, shown twice.
        let found = include_bytes!("../../../../fuzz/corpus/template/error-long-template-name");
        let e = render(&String::from_utf8_lossy(found), &d)
            .unwrap_err()
            .to_string();
        assert!(e.len() <= MAX_ERROR, "{} bytes", e.len());
        // Short ones are Go's, whole.
        assert_eq!(
            render("{{template \"x\"}}", &d).unwrap_err().to_string(),
            "template: format:1:11: executing \"format\" at <{{template \"x\"}}>: template \"x\" not defined"
        );
    }

    #[test]
    fn nested_calls_share_one_budget() {
        let d = report();
        // The second argument no longer fits beside the first: the inner call fails.
        let e = render(
            "{{printf \"%s%s\" (printf \"%0600000d\" 1) (printf \"%0600000d\" 2)}}",
            &d,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("at <printf \"%0600000d\" 2>: error calling printf: output exceeds"),
            "{e}"
        );
        // Strings kept in variables count until they are dropped.
        let e = render("{{$a := printf \"%0600000d\" 1}}{{$b := json $a}}", &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("error calling json: output exceeds"), "{e}");
        // A result printed at once gives its bytes back: output may still reach MAX_OUTPUT.
        let out = render("{{printf \"%0600000d\" 1}}{{printf \"%0400000d\" 2}}", &d).unwrap();
        assert_eq!(out.len(), 1_000_000);
        assert!(out.ends_with("02"));
        // Escapes stop at the budget instead of growing four-fold past it: 262144 '<' made
        // (with the steps before, 300 KB) leave no room for 1 MB of "&lt;".
        let grow = "{{$x = printf \"%s%s%s%s%s%s%s%s\" $x $x $x $x $x $x $x $x}}";
        let tpl = format!(
            "{{{{$x := \"<<<<<<<<\"}}}}{}{{{{html $x}}}}",
            grow.repeat(5)
        );
        let e = render(&tpl, &d).unwrap_err().to_string();
        assert!(e.contains("error calling html: output exceeds"), "{e}");
    }
}
