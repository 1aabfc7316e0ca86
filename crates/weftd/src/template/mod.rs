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
//! refused.

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
/// Most output one execution may produce, in bytes.
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
    let set = parse::parse(NAME, tpl).map_err(TemplateError)?;
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
        Err(exec::Flow::Err(e)) => Err(TemplateError(e)),
        // The parser allows break and continue only inside range, which catches them.
        Err(exec::Flow::Break | exec::Flow::Continue) => Ok(state.out),
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
}
