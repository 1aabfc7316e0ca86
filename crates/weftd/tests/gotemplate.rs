//! Report templates against Go itself: `testdata/gotemplate/expected.json` holds what Go's
//! `text/template` printed (or the error it gave) for each template in `cases.json` over
//! `data.json`, with Weave's `json` function and template name; see `main.go` there.

use std::path::PathBuf;

use serde_json::Value;
use weftd::template;

fn testdata(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/gotemplate")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn matches_go() {
    let data = testdata("data.json");
    let expected = testdata("expected.json");
    let cases = expected.as_array().expect("expected.json is a list");
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap_or_default();
        let tpl = c["template"].as_str().unwrap_or_default();
        let want = match (c.get("output"), c.get("error")) {
            (Some(Value::String(o)), _) => Ok(o.clone()),
            (_, Some(Value::String(e))) => Err(e.clone()),
            _ => panic!("case {name}: neither output nor error"),
        };
        let got = template::render(tpl, &data).map_err(|e| e.to_string());
        if got != want {
            failures.push(format!(
                "{name}: {tpl:?}\n   want {want:?}\n    got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Go:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
