//! Report templates come from any local user (and through the router's HTTP API): every input
//! must end in output or an error, never a panic or a stack overflow, and output, work and
//! nesting stay bounded.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use weftd::template::{render, MAX_NESTING, MAX_OUTPUT, MAX_TEMPLATE};

fn report() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/gotemplate/data.json");
    let text = std::fs::read_to_string(path).expect("data.json");
    serde_json::from_str(&text).expect("data.json parses")
}

/// Runs `f` on a thread with the stack a tokio worker has (2 MiB), where the router renders.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

fn err(tpl: &str, data: &Value) -> String {
    match render(tpl, data) {
        Ok(out) => panic!("{tpl:.80?} rendered {} bytes, expected an error", out.len()),
        Err(e) => e.to_string(),
    }
}

const PIECES: &[&str] = &[
    "{{",
    "}}",
    "{{- ",
    " -}}",
    "{{/*",
    "*/}}",
    ".Router",
    ".Peers",
    ".Targets",
    ".NickName",
    ".",
    "$",
    "$x",
    "$y",
    " := ",
    " = ",
    " | ",
    "(",
    ")",
    "range ",
    "if ",
    "else",
    "else if ",
    "end",
    "with ",
    "break",
    "continue",
    "define \"d\"",
    "template \"d\" .",
    "block \"b\" .",
    "\"a\"",
    "`b`",
    "'c'",
    "1",
    "-2.5",
    "0x1f",
    "1e308",
    "99999999999999999999",
    "nil",
    "true",
    "printf ",
    "\"%d %s %v %-9q %[2]*.*f %!\"",
    "len ",
    "index ",
    "slice ",
    "json ",
    "eq ",
    "lt ",
    "and ",
    "or ",
    "not ",
    "print ",
    "println ",
    "html ",
    "js ",
    "urlquery ",
    "call ",
    " ",
    "\n",
    ",",
    "é",
    "\u{2028}",
    "\"\\x",
    "-",
    ":",
    "=",
];

fn random_template(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..40);
    let mut t = String::new();
    for _ in 0..n {
        if rng.gen_bool(0.05) {
            t.push(char::from_u32(rng.gen_range(0..0x3000)).unwrap_or('?'));
        } else {
            t.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
        }
    }
    t
}

#[test]
fn random_templates_end_in_output_or_error() {
    on_worker_stack(|| {
        let data = report();
        let mut rng = StdRng::seed_from_u64(0x7e4d);
        let mut outcomes = (0, 0);
        for _ in 0..20_000 {
            let tpl = random_template(&mut rng);
            match render(&tpl, &data) {
                Ok(out) => {
                    assert!(out.len() <= MAX_OUTPUT, "{tpl:?}");
                    outcomes.0 += 1;
                }
                Err(e) => {
                    assert!(e.to_string().starts_with("template: "), "{tpl:?}: {e}");
                    outcomes.1 += 1;
                }
            }
        }
        // The generator reaches both sides.
        assert!(outcomes.0 > 100 && outcomes.1 > 100, "{outcomes:?}");
    });
}

#[test]
fn mutated_valid_templates_end_in_output_or_error() {
    on_worker_stack(|| {
        let data = report();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/gotemplate/cases.json");
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("cases")).expect("json");
        let seeds: Vec<String> = cases
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["template"].as_str().map(str::to_string))
            .collect();
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..20_000 {
            let mut t: Vec<char> = seeds[rng.gen_range(0..seeds.len())].chars().collect();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=t.len());
                match rng.gen_range(0..3) {
                    0 if at < t.len() => {
                        t.remove(at);
                    }
                    1 => t.insert(
                        at,
                        ['{', '}', '(', ')', '"', '`', '$', '.', '-', ' ', '|', '\'']
                            [rng.gen_range(0..12)],
                    ),
                    _ => t.insert(at, char::from_u32(rng.gen_range(0..0x200)).unwrap_or('x')),
                }
            }
            let tpl: String = t.into_iter().collect();
            if let Ok(out) = render(&tpl, &data) {
                assert!(out.len() <= MAX_OUTPUT, "{tpl:?}");
            }
        }
    });
}

#[test]
fn output_is_capped() {
    let data = report();
    // The hardening report: `{{json .}}` repeated in a long URL made a 4.6 MB response.
    let tpl = "{{json .}}".repeat(MAX_TEMPLATE / 10);
    assert!(err(&tpl, &data).contains(&format!("output exceeds {MAX_OUTPUT} bytes")));
    let tpl = "{{printf \"%999999d\" 1}}".repeat(2);
    assert_eq!(
        render(&tpl[..tpl.len() / 2], &data).map(|s| s.len()),
        Ok(999_999)
    );
    let tpl = "{{printf \"%999999d\" 1}}".repeat(3);
    assert!(err(&tpl, &data).contains("output exceeds"));
    // Strings built up in variables are bounded too.
    let tpl = "{{$x := \"ab\"}}{{range .Router.Targets}}{{range $.Router.Targets}}{{range $.Router.Targets}}{{$x = printf \"%s%s\" $x $x}}{{end}}{{end}}{{end}}{{len $x}}";
    assert!(err(tpl, &data).contains("exceeds"));
}

#[test]
fn template_length_is_capped() {
    let data = report();
    assert!(render(&"x".repeat(MAX_TEMPLATE), &data).is_ok());
    let e = err(&"x".repeat(MAX_TEMPLATE + 1), &data);
    assert!(e.contains(&format!("longer than {MAX_TEMPLATE}")), "{e}");
}

#[test]
fn nesting_is_capped_without_exhausting_the_stack() {
    on_worker_stack(|| {
        let data = report();
        let ok = format!(
            "{}x{}",
            "{{if 1}}".repeat(MAX_NESTING - 1),
            "{{end}}".repeat(MAX_NESTING - 1)
        );
        assert_eq!(render(&ok, &data).as_deref(), Ok("x"));
        for n in [MAX_NESTING + 1, MAX_TEMPLATE / 16] {
            let ifs = format!("{}x{}", "{{if 1}}".repeat(n), "{{end}}".repeat(n));
            assert!(err(&ifs, &data).contains("nesting deeper than"));
            let parens = format!("{{{{{}1{}}}}}", "(".repeat(n), ")".repeat(n));
            assert!(err(&parens, &data).contains("nesting deeper than"));
        }
        let recursion = "{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}";
        assert!(err(recursion, &data).contains("exceeded maximum template depth"));
        // Deep nesting inside each of many nested template calls.
        let n = MAX_NESTING - 5;
        let deep = format!(
            "{{{{define \"r\"}}}}{}{{{{template \"r\" (printf \"%s%s\" ((((((.)))))) \"x\")}}}}{}{{{{end}}}}{{{{template \"r\" \"\"}}}}",
            "{{with 1}}".repeat(n),
            "{{end}}".repeat(n)
        );
        let e = err(&deep, &data);
        assert!(
            e.contains("nesting deeper than") || e.contains("maximum template depth"),
            "{e}"
        );
    });
}

#[test]
fn work_is_capped() {
    let data = json!({"L": (0..200).collect::<Vec<_>>()});
    // 200^4 iterations that print nothing.
    let tpl = "{{range .L}}{{range $.L}}{{range $.L}}{{range $.L}}{{end}}{{end}}{{end}}{{end}}";
    assert!(err(tpl, &data).contains("steps of work"));
}
