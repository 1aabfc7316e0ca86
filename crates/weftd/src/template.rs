//! A small subset of Go's `text/template`, for `weft report -f '<template>'`.
//!
//! Weave Net users script against `weave report -f` with templates such as
//! `{{.Router.Name}}`, `{{len .Router.Peers}}`, `{{json .DNS}}` and
//! `{{range .Router.Peers}}{{.NickName}} {{end}}`. No Rust crate implements Go's template
//! language over JSON values, so this covers the forms those scripts use: field paths, `len`,
//! `json`, `range … end`, `if … else … end`, and literal text. Anything else is a parse error.

use serde_json::Value;

/// A template that failed to parse or execute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

#[derive(Debug)]
enum Node {
    Text(String),
    Expr(Expr),
    Range(Expr, Vec<Self>),
    If(Expr, Vec<Self>, Vec<Self>),
}

#[derive(Debug)]
enum Expr {
    Path(Vec<String>),
    Len(Vec<String>),
    Json(Vec<String>),
}

/// Parses `tpl` and renders it against `data`.
pub fn render(tpl: &str, data: &Value) -> Result<String, TemplateError> {
    let tokens = tokenize(tpl)?;
    let mut pos = 0;
    let (nodes, end) = parse(&tokens, &mut pos)?;
    if let Some(e) = end {
        return Err(TemplateError(format!("unexpected {{{{{e}}}}}")));
    }
    let mut out = String::new();
    exec(&nodes, data, &mut out)?;
    Ok(out)
}

enum Tok {
    Text(String),
    Action(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        if i > 0 {
            out.push(Tok::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(TemplateError("unclosed action".into()));
        };
        out.push(Tok::Action(after[..j].trim().to_string()));
        rest = &after[j + 2..];
    }
    if !rest.is_empty() {
        out.push(Tok::Text(rest.to_string()));
    }
    Ok(out)
}

fn path(s: &str) -> Result<Vec<String>, TemplateError> {
    if s == "." {
        return Ok(Vec::new());
    }
    let Some(p) = s.strip_prefix('.') else {
        return Err(TemplateError(format!("unsupported expression {s:?}")));
    };
    Ok(p.split('.').map(str::to_string).collect())
}

fn expr(s: &str) -> Result<Expr, TemplateError> {
    let words: Vec<&str> = s.split_whitespace().collect();
    match words.as_slice() {
        [p] => Ok(Expr::Path(path(p)?)),
        ["len", p] => Ok(Expr::Len(path(p)?)),
        ["json", p] => Ok(Expr::Json(path(p)?)),
        _ => Err(TemplateError(format!("unsupported expression {s:?}"))),
    }
}

/// Parses nodes until `end`/`else` (returned) or the end of input.
fn parse(toks: &[Tok], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(a) if a == "end" || a == "else" => return Ok((nodes, Some(a.clone()))),
            Tok::Action(a) => {
                if let Some(r) = a.strip_prefix("range ") {
                    let (body, end) = parse(toks, pos)?;
                    if end.as_deref() != Some("end") {
                        return Err(TemplateError("range without end".into()));
                    }
                    nodes.push(Node::Range(expr(r)?, body));
                } else if let Some(c) = a.strip_prefix("if ") {
                    let (then, end) = parse(toks, pos)?;
                    let otherwise = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => {
                            let (e, end) = parse(toks, pos)?;
                            if end.as_deref() != Some("end") {
                                return Err(TemplateError("if without end".into()));
                            }
                            e
                        }
                        _ => return Err(TemplateError("if without end".into())),
                    };
                    nodes.push(Node::If(expr(c)?, then, otherwise));
                } else {
                    nodes.push(Node::Expr(expr(a)?));
                }
            }
        }
    }
    Ok((nodes, None))
}

fn lookup<'a>(v: &'a Value, p: &[String]) -> Result<&'a Value, TemplateError> {
    p.iter().try_fold(v, |v, k| match v {
        // A subsystem that is off is absent from the document; like Go's nil pointer it is
        // falsy in `if` and prints as `<no value>`.
        Value::Object(m) => Ok(m.get(k).unwrap_or(&Value::Null)),
        Value::Null => Ok(&Value::Null),
        _ => Err(TemplateError(format!("can't evaluate field {k}"))),
    })
}

fn eval(e: &Expr, v: &Value) -> Result<String, TemplateError> {
    Ok(match e {
        Expr::Path(p) => go_print(lookup(v, p)?),
        Expr::Len(p) => match lookup(v, p)? {
            Value::Array(a) => a.len().to_string(),
            Value::Object(m) => m.len().to_string(),
            Value::String(s) => s.len().to_string(),
            Value::Null => "0".into(),
            _ => return Err(TemplateError("len of invalid type".into())),
        },
        Expr::Json(p) => {
            serde_json::to_string(lookup(v, p)?).map_err(|e| TemplateError(e.to_string()))?
        }
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn exec(nodes: &[Node], v: &Value, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Expr(e) => out.push_str(&eval(e, v)?),
            Node::Range(Expr::Path(p), body) => match lookup(v, p)? {
                Value::Array(items) => {
                    for item in items {
                        exec(body, item, out)?;
                    }
                }
                Value::Object(m) => {
                    for item in m.values() {
                        exec(body, item, out)?;
                    }
                }
                Value::Null => {}
                _ => return Err(TemplateError("range over invalid type".into())),
            },
            Node::Range(..) => return Err(TemplateError("range needs a field path".into())),
            Node::If(Expr::Path(p), then, otherwise) => {
                let branch = if truthy(lookup(v, p)?) {
                    then
                } else {
                    otherwise
                };
                exec(branch, v, out)?;
            }
            Node::If(..) => return Err(TemplateError("if needs a field path".into())),
        }
    }
    Ok(())
}

/// Prints a value the way Go's `fmt` `%v` would for the equivalent Go type.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
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
        assert!(render("{{.Router.Name", &d).is_err());
        assert!(render("{{printf \"%s\" .X}}", &d).is_err());
        assert!(render("{{range .Router.Peers}}x", &d).is_err());
    }
}
