//! Execution of a parsed template over the report, after Go's `text/template/exec.go` and
//! `funcs.go`: the same evaluation order, the same node blamed in errors, the same messages;
//! bounded in output, work and depth (see the limits in `mod.rs`).

use std::borrow::Cow;
use std::rc::Rc;

use serde_json::Value;

use super::fmt::{self as gofmt, grow, Printer};
use super::parse::{Arg, Branch, Cmd, Node, Pipe, Set};
use super::value::{sorted, Dyn, V};
use super::{MAX_CONTEXT, MAX_DEPTH, MAX_OUTPUT, MAX_TEMPLATE_CALLS, MAX_WORK};

static NULL: Value = Value::Null;

/// How a walk stops early: `{{break}}`, `{{continue}}` or an error (Go's panics).
pub(super) enum Flow {
    Break,
    Continue,
    Err(String),
}

type R<T> = Result<T, Flow>;

/// The node errors name, as Go's `state.node`.
#[derive(Clone, Copy)]
enum At<'t> {
    None,
    Node(&'t Node),
    Pipe(&'t Pipe),
    Cmd(&'t Cmd),
    Arg(&'t Arg),
}

/// The Go type of a builtin's parameter, which decides how an argument is converted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Param {
    /// `reflect.Value`: the value as it is, nil as the invalid value.
    Reflect,
    /// `interface{}`: what the value holds.
    Any,
    /// `string`.
    Str,
    /// No type (the receiver of a chain).
    Untyped,
}

/// (fixed parameters, variadic element type) of each function.
fn signature(name: &str) -> (&'static [Param], Option<Param>) {
    use Param::{Any, Reflect, Str};
    match name {
        "and" | "or" | "call" | "index" | "slice" | "eq" => (&[Reflect], Some(Reflect)),
        "html" | "js" | "urlquery" | "print" | "println" => (&[], Some(Any)),
        "printf" => (&[Str], Some(Any)),
        "len" | "not" => (&[Reflect], None),
        "ne" | "lt" | "le" | "gt" | "ge" => (&[Reflect, Reflect], None),
        _ => (&[Any], None), // json
    }
}

pub(super) struct State<'t, 'd> {
    set: &'t Set,
    /// The template being executed, for "executing %q".
    name: &'t str,
    pub(super) out: String,
    vars: Vec<(&'t str, V<'d>)>,
    at: At<'t>,
    calls: usize,
    depth: usize,
    work: usize,
    /// Bytes of the strings functions have returned so far: with `out`, they share the one
    /// [`MAX_OUTPUT`] budget, so what a render holds is bounded however its calls nest.
    made: usize,
    /// The string the last function call made (address, length), while still counted in `made`:
    /// printed at once and dropped, it gives its bytes back (see `walk`).
    fresh: Option<(usize, usize)>,
}

impl<'t, 'd> State<'t, 'd> {
    pub(super) fn new(set: &'t Set, name: &'t str, data: V<'d>) -> Self {
        Self {
            set,
            name,
            out: String::new(),
            vars: vec![("$", data)],
            at: At::None,
            calls: 0,
            depth: 0,
            work: 0,
            made: 0,
            fresh: None,
        }
    }

    /// Bytes the render may still make, as output or as strings functions return.
    fn room(&self) -> usize {
        MAX_OUTPUT.saturating_sub(self.out.len().saturating_add(self.made))
    }

    fn output_exceeded<T>(&self) -> R<T> {
        self.errorf(format!("output exceeds {MAX_OUTPUT} bytes"))
    }

    /// Gives back the bytes of `v` if it is the string the last call made and nothing else
    /// holds it (it is about to be printed and dropped).
    fn release(&mut self, v: &V<'d>) {
        if let (V::Str(s), Some((at, len))) = (v, self.fresh) {
            if Rc::strong_count(s) == 1 && s.as_ptr() as usize == at && s.len() == len {
                self.made = self.made.saturating_sub(len);
                self.fresh = None;
            }
        }
    }

    fn errorf<T>(&self, msg: impl std::fmt::Display) -> R<T> {
        let (pos, context) = match self.at {
            At::None => return Err(Flow::Err(format!("template: {}: {msg}", self.name))),
            At::Node(n) => (n.pos(), n.to_string()),
            At::Pipe(p) => (p.pos, p.to_string()),
            At::Cmd(c) => (c.pos, c.to_string()),
            At::Arg(a) => (a.pos(), a.to_string()),
        };
        let context = super::cut(&context, MAX_CONTEXT);
        let text = self.set.text.get(..pos).unwrap_or(&self.set.text);
        let line = 1 + text.matches('\n').count();
        let col = text.rfind('\n').map_or(pos, |nl| pos - nl - 1);
        Err(Flow::Err(format!(
            "template: {}:{line}:{col}: executing {} at <{context}>: {msg}",
            super::NAME,
            gofmt::quote(self.name, false)
        )))
    }

    /// Counts `n` units of work against the budget.
    fn spend(&mut self, n: usize) -> R<()> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_WORK {
            return self.errorf(format!("template does more than {MAX_WORK} steps of work"));
        }
        Ok(())
    }

    fn write(&mut self, s: &str) -> R<()> {
        if s.len() > self.room() {
            return self.output_exceeded();
        }
        grow(&mut self.out, s.len(), MAX_OUTPUT);
        self.out.push_str(s);
        Ok(())
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.errorf(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    pub(super) fn walk_list(&mut self, dot: &V<'d>, list: &'t [Node]) -> R<()> {
        let depth = self.depth;
        self.enter()?;
        let r = list.iter().try_for_each(|n| self.walk(dot, n));
        self.depth = depth;
        r
    }

    fn walk(&mut self, dot: &V<'d>, node: &'t Node) -> R<()> {
        self.at = At::Node(node);
        self.spend(1)?;
        match node {
            Node::Action { pipe, .. } => {
                let val = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    self.at = At::Node(node);
                    self.release(&val);
                    self.print_value(&val)?;
                }
                Ok(())
            }
            Node::Break { .. } => Err(Flow::Break),
            Node::Continue { .. } => Err(Flow::Continue),
            Node::If(b) => self.walk_if_or_with(false, dot, b),
            Node::With(b) => self.walk_if_or_with(true, dot, b),
            Node::Range(b) => self.walk_range(dot, node, b),
            Node::Template { name, pipe, .. } => self.walk_template(dot, node, name, pipe.as_ref()),
            Node::Text { text } => self.write(text),
        }
    }

    fn print_value(&mut self, v: &V<'d>) -> R<()> {
        if let V::Invalid = v {
            return self.write("<no value>");
        }
        // Printed straight into the output, within what is left of the budget.
        let start = self.out.len();
        let limit = start + self.room();
        let mut p = Printer::resume(std::mem::take(&mut self.out), limit);
        p.print_arg(v.dynamic(), 'v');
        self.out = p.buf;
        if p.overflow {
            self.out.truncate(start);
            return self.output_exceeded();
        }
        self.spend((self.out.len() - start) / 16)
    }

    fn walk_if_or_with(&mut self, with: bool, dot: &V<'d>, b: &'t Branch) -> R<()> {
        let mark = self.vars.len();
        let r = (|| {
            let val = self.eval_pipeline(dot, &b.pipe)?;
            if val.dynamic().truth() {
                if with {
                    self.walk_list(&val, &b.list)
                } else {
                    self.walk_list(dot, &b.list)
                }
            } else if let Some(e) = &b.else_list {
                self.walk_list(dot, e)
            } else {
                Ok(())
            }
        })();
        self.vars.truncate(mark);
        r
    }

    fn walk_range(&mut self, dot: &V<'d>, node: &'t Node, b: &'t Branch) -> R<()> {
        self.at = At::Node(node);
        let mark0 = self.vars.len();
        let r = self.walk_range_inner(dot, b);
        self.vars.truncate(mark0);
        match r {
            Err(Flow::Break) => Ok(()),
            r => r,
        }
    }

    fn walk_range_inner(&mut self, dot: &V<'d>, b: &'t Branch) -> R<()> {
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let iteration = |s: &mut Self, index: V<'d>, elem: V<'d>| -> R<()> {
            s.spend(1)?;
            let n = s.vars.len();
            if !b.pipe.decl.is_empty() && n >= 1 {
                s.vars[n - 1].1 = elem.clone();
            }
            if b.pipe.decl.len() > 1 && n >= 2 {
                s.vars[n - 2].1 = index;
            }
            let r = s.walk_list(&elem, &b.list);
            s.vars.truncate(mark);
            match r {
                Err(Flow::Continue) => Ok(()),
                r => r,
            }
        };
        if let Some(l) = val.list() {
            for (i, e) in l.iter().enumerate() {
                iteration(self, V::Int(i as i64), V::held(e))?;
            }
        } else if let Some(m) = val.map() {
            for (k, e) in sorted(m) {
                iteration(self, V::Str(k.as_str().into()), V::held(e))?;
            }
        }
        match val.dynamic() {
            Dyn::List(l) if !l.is_empty() => return Ok(()),
            Dyn::Map(m) if !m.is_empty() => return Ok(()),
            Dyn::List(_) | Dyn::Map(_) | Dyn::Invalid | Dyn::Nil => {}
            d => return self.errorf(format!("range can't iterate over {}", show(d, 'v'))),
        }
        if let Some(e) = &b.else_list {
            return self.walk_list(dot, e);
        }
        Ok(())
    }

    fn walk_template(
        &mut self,
        dot: &V<'d>,
        node: &'t Node,
        name: &'t str,
        pipe: Option<&'t Pipe>,
    ) -> R<()> {
        self.at = At::Node(node);
        let Some((tname, list)) = self.set.trees.get_key_value(name) else {
            return self.errorf(format!(
                "template {} not defined",
                gofmt::quote(name, false)
            ));
        };
        if self.calls >= MAX_TEMPLATE_CALLS {
            return self.errorf(format!(
                "exceeded maximum template depth ({MAX_TEMPLATE_CALLS})"
            ));
        }
        let dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => V::Invalid,
        };
        let vars = std::mem::replace(&mut self.vars, vec![("$", dot.clone())]);
        let outer = std::mem::replace(&mut self.name, tname);
        self.calls += 1;
        let r = self.walk_list(&dot, list);
        self.calls -= 1;
        self.name = outer;
        self.vars = vars;
        r
    }

    fn eval_pipeline(&mut self, dot: &V<'d>, pipe: &'t Pipe) -> R<V<'d>> {
        self.at = At::Pipe(pipe);
        let depth = self.depth;
        self.enter()?;
        let mut value: Option<V<'d>> = None;
        for cmd in &pipe.cmds {
            let v = self.eval_command(dot, cmd, value.take())?;
            value = Some(v.unwrap());
        }
        let value = value.unwrap_or(V::Invalid);
        for var in &pipe.decl {
            if pipe.is_assign {
                self.set_var(var, value.clone())?;
            } else {
                self.vars.push((var, value.clone()));
            }
        }
        self.depth = depth;
        Ok(value)
    }

    fn set_var(&mut self, name: &str, v: V<'d>) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => self.errorf(format!("undefined variable: {name}")),
        }
    }

    fn var_value(&self, name: &str) -> R<V<'d>> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => self.errorf(format!("undefined variable: {name}")),
        }
    }

    fn not_a_function(&self, args: &[Arg], fin: &Option<V<'d>>) -> R<()> {
        if args.len() > 1 || fin.is_some() {
            let first = args.first().map(ToString::to_string).unwrap_or_default();
            return self.errorf(format!("can't give argument to non-function {first}"));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &V<'d>, cmd: &'t Cmd, fin: Option<V<'d>>) -> R<V<'d>> {
        let Some(first) = cmd.args.first() else {
            return self.errorf("empty command");
        };
        let has_args = cmd.args.len() > 1 || fin.is_some();
        match first {
            Arg::Field { ident, .. } => return self.eval_field_node(dot, first, ident, has_args),
            Arg::Chain { node, field, .. } => {
                return self.eval_chain_node(dot, first, node, field, has_args)
            }
            Arg::Identifier { name, .. } => {
                self.at = At::Arg(first);
                return self.eval_call(dot, name, At::Cmd(cmd), &cmd.args[1..], fin);
            }
            Arg::Pipe(p) => {
                self.not_a_function(&cmd.args, &fin)?;
                return self.eval_pipeline(dot, p);
            }
            Arg::Variable { ident, .. } => {
                return self.eval_variable_node(dot, first, ident, &cmd.args, &fin);
            }
            _ => {}
        }
        self.at = At::Arg(first);
        self.not_a_function(&cmd.args, &fin)?;
        match first {
            Arg::Bool { val, .. } => Ok(V::Bool(*val)),
            Arg::Dot { .. } => Ok(dot.clone()),
            Arg::Nil { .. } => self.errorf("nil is not a command"),
            Arg::Number { .. } => self.ideal_constant(first),
            Arg::Str { text, .. } => Ok(V::Str(text.as_str().into())),
            _ => self.errorf(format!(
                "can't evaluate command {}",
                gofmt::quote(&first.to_string(), false)
            )),
        }
    }

    fn ideal_constant(&mut self, arg: &'t Arg) -> R<V<'d>> {
        self.at = At::Arg(arg);
        let Arg::Number { num, .. } = arg else {
            return Ok(V::Invalid);
        };
        let t = &num.text;
        let hex_int = t.len() > 2
            && t.starts_with('0')
            && t[1..].starts_with(['x', 'X'])
            && !t.contains(['p', 'P']);
        let rune_int = t.starts_with('\'');
        if let Some(f) = num.float {
            if !hex_int && !rune_int && t.contains(['.', 'e', 'E', 'p', 'P']) {
                return Ok(V::Float(f));
            }
        }
        if let Some(i) = num.int {
            return Ok(V::Int(i));
        }
        if num.uint.is_some() {
            return self.errorf(format!("{t} overflows int"));
        }
        Ok(V::Invalid)
    }

    fn eval_field_node(
        &mut self,
        dot: &V<'d>,
        node: &'t Arg,
        ident: &[String],
        has_args: bool,
    ) -> R<V<'d>> {
        self.at = At::Arg(node);
        self.eval_field_chain(dot.clone(), ident, has_args)
    }

    fn eval_chain_node(
        &mut self,
        dot: &V<'d>,
        chain: &'t Arg,
        node: &'t Arg,
        field: &[String],
        has_args: bool,
    ) -> R<V<'d>> {
        self.at = At::Arg(chain);
        if field.is_empty() {
            return self.errorf("internal error: no fields in evalChainNode");
        }
        if let Arg::Nil { .. } = node {
            return self.errorf(format!("indirection through explicit nil in {chain}"));
        }
        let recv = self.eval_arg(dot, Param::Untyped, node)?;
        self.eval_field_chain(recv, field, has_args)
    }

    fn eval_variable_node(
        &mut self,
        _dot: &V<'d>,
        node: &'t Arg,
        ident: &[String],
        args: &[Arg],
        fin: &Option<V<'d>>,
    ) -> R<V<'d>> {
        self.at = At::Arg(node);
        let value = self.var_value(&ident[0])?;
        if ident.len() == 1 {
            self.not_a_function(args, fin)?;
            return Ok(value);
        }
        let has_args = args.len() > 1 || fin.is_some();
        self.eval_field_chain(value, &ident[1..], has_args)
    }

    fn eval_field_chain(&mut self, mut recv: V<'d>, ident: &[String], has_args: bool) -> R<V<'d>> {
        let n = ident.len();
        for (i, name) in ident.iter().enumerate() {
            recv = self.eval_field(name, i + 1 == n && has_args, recv)?;
        }
        Ok(recv)
    }

    fn eval_field(&mut self, name: &str, has_args: bool, recv: V<'d>) -> R<V<'d>> {
        if let V::Invalid = recv {
            return Ok(V::Invalid);
        }
        let typ = recv.type_name();
        if recv.is_nil_interface() {
            return self.errorf(format!("nil pointer evaluating {typ}.{name}"));
        }
        if let V::Data(Value::Object(m), _) = recv {
            if has_args {
                return self.errorf(format!("{name} is not a method but has arguments"));
            }
            return Ok(m.get(name).map_or(V::Invalid, V::held));
        }
        self.errorf(format!("can't evaluate field {name} in type {typ}"))
    }

    /// Go's `validateType`: the argument as a parameter of type `p` receives it.
    fn validate(&self, v: V<'d>, p: Param) -> R<V<'d>> {
        match p {
            Param::Reflect | Param::Untyped => Ok(v),
            Param::Any => Ok(v.unwrap()),
            Param::Str => match (&v, v.dynamic()) {
                (V::Invalid, _) => self.errorf("invalid value; expected string"),
                (_, Dyn::Str(_)) => Ok(v.unwrap()),
                (V::Data(Value::Null, _), _) => {
                    self.errorf("wrong type for value; expected string; got interface {}")
                }
                (_, d) => self.errorf(format!(
                    "wrong type for value; expected string; got {}",
                    d.type_name()
                )),
            },
        }
    }

    fn eval_arg(&mut self, dot: &V<'d>, p: Param, arg: &'t Arg) -> R<V<'d>> {
        self.at = At::Arg(arg);
        let v = match arg {
            Arg::Dot { .. } => dot.clone(),
            Arg::Nil { .. } => {
                if p == Param::Str {
                    return self.errorf("cannot assign nil to string");
                }
                V::Invalid
            }
            Arg::Field { ident, .. } => self.eval_field_node(dot, arg, ident, false)?,
            Arg::Variable { ident, .. } => self.eval_variable_node(dot, arg, ident, &[], &None)?,
            Arg::Pipe(pipe) => self.eval_pipeline(dot, pipe)?,
            Arg::Identifier { name, .. } => self.eval_call(dot, name, At::Arg(arg), &[], None)?,
            Arg::Chain { node, field, .. } => self.eval_chain_node(dot, arg, node, field, false)?,
            Arg::Str { text, .. } => return Ok(V::Str(text.as_str().into())),
            Arg::Bool { val, .. } if p != Param::Str => return Ok(V::Bool(*val)),
            Arg::Number { .. } if p != Param::Str => return self.ideal_constant(arg),
            _ => return self.errorf(format!("expected string; found {arg}")),
        };
        self.validate(v, p)
    }

    fn eval_call(
        &mut self,
        dot: &V<'d>,
        name: &'t str,
        node: At<'t>,
        args: &'t [Arg],
        fin: Option<V<'d>>,
    ) -> R<V<'d>> {
        self.spend(1)?;
        let (fixed, variadic) = signature(name);
        let num_in = args.len() + usize::from(fin.is_some());
        if variadic.is_some() {
            if num_in < fixed.len() {
                return self.errorf(format!(
                    "wrong number of args for {name}: want at least {} got {}",
                    fixed.len(),
                    args.len()
                ));
            }
        } else if num_in != fixed.len() {
            return self.errorf(format!(
                "wrong number of args for {name}: want {} got {num_in}",
                fixed.len()
            ));
        }
        let param = |i: usize| fixed.get(i).copied().or(variadic).unwrap_or(Param::Any);
        if name == "and" || name == "or" {
            let mut v = V::Invalid;
            for a in args {
                v = self.eval_arg(dot, Param::Reflect, a)?;
                if v.dynamic().truth() == (name == "or") {
                    return Ok(v);
                }
            }
            if let Some(f) = fin {
                v = f;
            }
            return Ok(v);
        }
        let mut argv = Vec::with_capacity(num_in);
        for (i, a) in args.iter().enumerate() {
            argv.push(self.eval_arg(dot, param(i), a)?);
        }
        if let Some(f) = fin {
            let v = self.validate(f, param(args.len()))?;
            argv.push(v);
        }
        // The call may make at most what is left of the render's one budget.
        let r = call_builtin(name, &argv, self.room());
        drop(argv);
        match r {
            Ok(v) => {
                if let V::Str(s) = &v {
                    if s.len() > self.room() {
                        self.at = node;
                        return self.errorf(format!(
                            "error calling {name}: output exceeds {MAX_OUTPUT} bytes"
                        ));
                    }
                    self.made += s.len();
                    self.fresh = Some((s.as_ptr() as usize, s.len()));
                    self.spend(s.len() / 16)?;
                }
                Ok(v)
            }
            Err(e) => {
                self.at = node;
                self.errorf(format!("error calling {name}: {e}"))
            }
        }
    }
}

/// What a function says when its result would not fit what is left of the render's budget.
fn too_long() -> String {
    format!("output exceeds {MAX_OUTPUT} bytes")
}

fn printer_result(p: Printer) -> Result<V<'static>, String> {
    if p.overflow {
        return Err(too_long());
    }
    Ok(V::Str(p.buf.into()))
}

/// A function's text result if it fits in `limit` bytes.
fn text_result(s: String, limit: usize) -> Result<V<'static>, String> {
    if s.len() > limit {
        return Err(too_long());
    }
    Ok(V::Str(s.into()))
}

/// The text `html`, `js` and `urlquery` escape (Go's `evalArgs`).
fn eval_args<'a>(argv: &'a [V<'_>], limit: usize) -> Result<Cow<'a, str>, String> {
    if let [V::Str(s)] = argv {
        return Ok(Cow::Borrowed(s));
    }
    if let [a] = argv {
        if let Dyn::Str(s) = a.dynamic() {
            return Ok(Cow::Borrowed(s));
        }
    }
    let dyns: Vec<Dyn<'_>> = argv
        .iter()
        .map(|a| match a {
            V::Invalid => Dyn::Str("<no value>"),
            a => a.dynamic(),
        })
        .collect();
    let mut p = Printer::new(limit);
    p.sprint(&dyns);
    if p.overflow {
        return Err(too_long());
    }
    Ok(Cow::Owned(p.buf))
}

fn call_builtin<'d>(name: &str, argv: &[V<'d>], limit: usize) -> Result<V<'d>, String> {
    let dyns = || argv.iter().map(V::dynamic).collect::<Vec<_>>();
    match name {
        "print" | "println" => {
            let mut p = Printer::new(limit);
            if name == "print" {
                p.sprint(&dyns());
            } else {
                p.sprintln(&dyns());
            }
            printer_result(p)
        }
        "printf" => {
            let mut p = Printer::new(limit);
            let d = dyns();
            let format = match d.first() {
                Some(Dyn::Str(s)) => *s,
                _ => "",
            };
            p.sprintf(format, &d[1..]);
            printer_result(p)
        }
        "html" => text_result(gofmt::html_escape(&eval_args(argv, limit)?, limit), limit),
        "js" => text_result(gofmt::js_escape(&eval_args(argv, limit)?, limit), limit),
        "urlquery" => text_result(gofmt::query_escape(&eval_args(argv, limit)?, limit), limit),
        "json" => {
            let mut s = String::new();
            gofmt::json(&mut s, argv.first().map_or(Dyn::Invalid, V::dynamic), limit);
            text_result(s, limit)
        }
        "len" => length(argv.first().unwrap_or(&V::Invalid)),
        "not" => Ok(V::Bool(!argv.first().is_some_and(|a| a.dynamic().truth()))),
        "index" => index(argv),
        "slice" => slice(argv),
        "call" => {
            let f = argv.first().cloned().unwrap_or(V::Invalid).unwrap();
            match f {
                V::Invalid => Err("call of nil".into()),
                f => Err(format!("non-function of type {}", f.type_name())),
            }
        }
        "eq" => eq(&argv[0], &argv[1..]).map(V::Bool),
        "ne" => eq(&argv[0], &argv[1..2]).map(|b| V::Bool(!b)),
        "lt" => lt(&argv[0], &argv[1]).map(V::Bool),
        "le" => le(&argv[0], &argv[1]).map(V::Bool),
        "gt" => le(&argv[0], &argv[1]).map(|b| V::Bool(!b)),
        "ge" => lt(&argv[0], &argv[1]).map(|b| V::Bool(!b)),
        _ => Err(format!(
            "{} is not a defined function",
            gofmt::quote(name, false)
        )),
    }
}

fn length<'d>(v: &V<'d>) -> Result<V<'d>, String> {
    if v.is_nil_interface() {
        return Err("len of nil pointer".into());
    }
    match v.dynamic() {
        Dyn::Invalid => Err("reflect: call of reflect.Value.Type on zero Value".into()),
        Dyn::List(l) => Ok(V::Int(l.len() as i64)),
        Dyn::Map(m) => Ok(V::Int(m.len() as i64)),
        Dyn::Str(s) => Ok(V::Int(s.len() as i64)),
        d => Err(format!("len of type {}", d.type_name())),
    }
}

fn index_arg(i: &V<'_>, cap: usize) -> Result<usize, String> {
    let x = match i.dynamic() {
        Dyn::Int(x, _) => x,
        Dyn::Uint(u, _) => u as i64,
        Dyn::Invalid | Dyn::Nil => return Err("cannot index slice/array with nil".into()),
        d => {
            return Err(format!(
                "cannot index slice/array with type {}",
                d.type_name()
            ))
        }
    };
    if x < 0 || x as u64 > cap as u64 {
        return Err(format!("index out of range: {x}"));
    }
    Ok(x as usize)
}

fn index<'d>(argv: &[V<'d>]) -> Result<V<'d>, String> {
    let mut item = argv.first().cloned().unwrap_or(V::Invalid).unwrap();
    if let V::Invalid = item {
        return Err("index of untyped nil".into());
    }
    for idx in &argv[1..] {
        let idx = idx.clone().unwrap();
        if item.is_nil_interface() {
            return Err("index of nil pointer".into());
        }
        item = item.unwrap();
        item = if let Some(l) = item.list() {
            let x = index_arg(&idx, l.len())?;
            V::held(l.get(x).ok_or("reflect: slice index out of range")?)
        } else if let Some(m) = item.map() {
            {
                let key = match idx.dynamic() {
                    Dyn::Str(s) => s.to_string(),
                    Dyn::Invalid | Dyn::Nil => {
                        return Err("value is nil; should be of type string".into())
                    }
                    d => {
                        return Err(format!(
                            "value has type {}; should be string",
                            d.type_name()
                        ))
                    }
                };
                V::held(m.get(&key).unwrap_or(&NULL))
            }
        } else {
            match item.dynamic() {
                Dyn::Str(s) => {
                    let x = index_arg(&idx, s.len())?;
                    V::Byte(
                        *s.as_bytes()
                            .get(x)
                            .ok_or("reflect: string index out of range")?,
                    )
                }
                d => return Err(format!("can't index item of type {}", d.type_name())),
            }
        };
    }
    Ok(item)
}

fn slice<'d>(argv: &[V<'d>]) -> Result<V<'d>, String> {
    let item = argv.first().cloned().unwrap_or(V::Invalid).unwrap();
    if let V::Invalid = item {
        return Err("slice of untyped nil".into());
    }
    let idxs = &argv[1..];
    if idxs.len() > 3 {
        return Err(format!("too many slice indexes: {}", idxs.len()));
    }
    let (len, is_str) = match item.dynamic() {
        Dyn::Str(s) => {
            if idxs.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            (s.len(), true)
        }
        Dyn::List(l) => (l.len(), false),
        d => return Err(format!("can't slice item of type {}", d.type_name())),
    };
    let mut idx = [0, len, len];
    for (i, x) in idxs.iter().enumerate() {
        idx[i] = index_arg(x, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if idxs.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    if is_str {
        if let Dyn::Str(s) = item.dynamic() {
            return Ok(V::Str(
                String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).into(),
            ));
        }
    }
    match item.list() {
        Some(l) => Ok(V::List(&l[idx[0]..idx[1]])),
        None => Err("can't slice".into()),
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum BasicKind {
    Invalid,
    Bool,
    Int,
    Float,
    Str,
    Uint,
}

fn basic_kind(d: &Dyn<'_>) -> BasicKind {
    match d {
        Dyn::Bool(_) => BasicKind::Bool,
        Dyn::Int(..) => BasicKind::Int,
        Dyn::Uint(..) => BasicKind::Uint,
        Dyn::Float(_) => BasicKind::Float,
        Dyn::Str(_) => BasicKind::Str,
        _ => BasicKind::Invalid,
    }
}

const BAD_TYPE: &str = "invalid type for comparison";
const BAD_COMPARISON: &str = "incompatible types for comparison";

/// Longest text of a value an error shows; longer ones are cut and end in `...`.
const SHOWN_MAX: usize = 1024;

/// `d` as an error shows it (Go prints it whole; a cut keeps errors short).
fn show(d: Dyn<'_>, verb: char) -> String {
    let mut p = Printer::new(SHOWN_MAX);
    p.print_arg(d, verb);
    if p.overflow {
        p.buf.push_str("...");
    }
    p.buf
}

fn eq(a1: &V<'_>, rest: &[V<'_>]) -> Result<bool, String> {
    let a1 = a1.clone().unwrap();
    let d1 = a1.dynamic();
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(&d1);
    for a in rest {
        let a = a.clone().unwrap();
        let d2 = a.dynamic();
        let k2 = basic_kind(&d2);
        let truth = if k1 == k2 {
            match (d1, d2) {
                (Dyn::Bool(x), Dyn::Bool(y)) => x == y,
                (Dyn::Float(x), Dyn::Float(y)) => x == y,
                (Dyn::Int(x, _), Dyn::Int(y, _)) => x == y,
                (Dyn::Uint(x, _), Dyn::Uint(y, _)) => x == y,
                (Dyn::Str(x), Dyn::Str(y)) => x == y,
                _ => {
                    let kind = |d: &Dyn<'_>| d.type_name();
                    let invalid = |d: &Dyn<'_>| matches!(d, Dyn::Invalid);
                    if kind(&d1) != kind(&d2) && !invalid(&d1) && !invalid(&d2) {
                        return Err(format!(
                            "non-comparable types {}: {}, {}: {}",
                            show(d1, 's'),
                            d1.type_name(),
                            d2.type_name(),
                            show(d2, 'v')
                        ));
                    }
                    if invalid(&d1) || invalid(&d2) {
                        invalid(&d1) == invalid(&d2)
                    } else {
                        return Err(format!(
                            "non-comparable type {}: {}",
                            show(d2, 's'),
                            d2.type_name()
                        ));
                    }
                }
            }
        } else {
            match (d1, d2) {
                (Dyn::Int(x, _), Dyn::Uint(y, _)) => x >= 0 && x as u64 == y,
                (Dyn::Uint(x, _), Dyn::Int(y, _)) => y >= 0 && x == y as u64,
                _ => {
                    if !matches!(a1, V::Invalid) && !matches!(a, V::Invalid) {
                        return Err(BAD_COMPARISON.into());
                    }
                    false
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lt(a1: &V<'_>, a2: &V<'_>) -> Result<bool, String> {
    let (a1, a2) = (a1.clone().unwrap(), a2.clone().unwrap());
    let (d1, d2) = (a1.dynamic(), a2.dynamic());
    let (k1, k2) = (basic_kind(&d1), basic_kind(&d2));
    if k1 == BasicKind::Invalid || k2 == BasicKind::Invalid {
        return Err(BAD_TYPE.into());
    }
    Ok(match (d1, d2) {
        (Dyn::Int(x, _), Dyn::Uint(y, _)) => x < 0 || (x as u64) < y,
        (Dyn::Uint(x, _), Dyn::Int(y, _)) => y >= 0 && x < y as u64,
        _ if k1 != k2 => return Err(BAD_COMPARISON.into()),
        (Dyn::Bool(_), _) => return Err(BAD_TYPE.into()),
        (Dyn::Float(x), Dyn::Float(y)) => x < y,
        (Dyn::Int(x, _), Dyn::Int(y, _)) => x < y,
        (Dyn::Uint(x, _), Dyn::Uint(y, _)) => x < y,
        (Dyn::Str(x), Dyn::Str(y)) => x < y,
        _ => return Err(BAD_TYPE.into()),
    })
}

fn le(a1: &V<'_>, a2: &V<'_>) -> Result<bool, String> {
    if lt(a1, a2)? {
        return Ok(true);
    }
    eq(a1, std::slice::from_ref(a2))
}
