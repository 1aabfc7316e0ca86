//! The parser of Go's `text/template` (`text/template/parse/parse.go` and `node.go`): the tree it
//! builds, Go's parse errors word for word, and the text of each node that execution errors quote.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};

use super::lex::{lex, Item, Kind};
use super::MAX_NESTING;

/// A parsed template set: the top template and those `define`d or `block`ed in its text.
#[derive(Debug)]
pub(super) struct Set {
    pub(super) text: String,
    pub(super) trees: BTreeMap<String, Vec<Node>>,
}

#[derive(Debug)]
pub(super) enum Node {
    Text {
        text: String,
    },
    Action {
        pos: usize,
        pipe: Pipe,
    },
    If(Branch),
    Range(Branch),
    With(Branch),
    Break {
        pos: usize,
    },
    Continue {
        pos: usize,
    },
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
}

#[derive(Debug)]
pub(super) struct Branch {
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Option<Vec<Node>>,
}

#[derive(Debug)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) is_assign: bool,
    pub(super) decl: Vec<String>,
    pub(super) cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(super) struct Cmd {
    pub(super) pos: usize,
    pub(super) args: Vec<Arg>,
}

/// A parsed number constant, with every Go type it fits (as Go's `NumberNode`).
#[derive(Debug, Clone)]
pub(super) struct Number {
    pub(super) text: String,
    pub(super) int: Option<i64>,
    pub(super) uint: Option<u64>,
    pub(super) float: Option<f64>,
}

#[derive(Debug)]
pub(super) enum Arg {
    Field {
        pos: usize,
        ident: Vec<String>,
    },
    Variable {
        pos: usize,
        ident: Vec<String>,
    },
    Chain {
        pos: usize,
        node: Box<Self>,
        field: Vec<String>,
    },
    Identifier {
        pos: usize,
        name: String,
    },
    Dot {
        pos: usize,
    },
    Nil {
        pos: usize,
    },
    Bool {
        pos: usize,
        val: bool,
    },
    Number {
        pos: usize,
        num: Number,
    },
    Str {
        pos: usize,
        quoted: String,
        text: String,
    },
    Pipe(Box<Pipe>),
}

impl Arg {
    pub(super) fn pos(&self) -> usize {
        match self {
            Self::Field { pos, .. }
            | Self::Variable { pos, .. }
            | Self::Chain { pos, .. }
            | Self::Identifier { pos, .. }
            | Self::Dot { pos }
            | Self::Nil { pos }
            | Self::Bool { pos, .. }
            | Self::Number { pos, .. }
            | Self::Str { pos, .. } => *pos,
            Self::Pipe(p) => p.pos,
        }
    }
}

impl Node {
    pub(super) fn pos(&self) -> usize {
        match self {
            Self::Text { .. } => 0,
            Self::Action { pos, .. }
            | Self::Break { pos }
            | Self::Continue { pos }
            | Self::Template { pos, .. } => *pos,
            Self::If(b) | Self::Range(b) | Self::With(b) => b.pipe.pos,
        }
    }
}

pub(super) fn write_list(f: &mut fmt::Formatter<'_>, list: &[Node]) -> fmt::Result {
    list.iter().try_for_each(|n| write!(f, "{n}"))
}

impl Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, b) = match self {
            Self::Text { text } => return f.write_str(text),
            Self::Action { pipe, .. } => return write!(f, "{{{{{pipe}}}}}"),
            Self::Break { .. } => return f.write_str("{{break}}"),
            Self::Continue { .. } => return f.write_str("{{continue}}"),
            Self::Template { name, pipe, .. } => {
                write!(f, "{{{{template {}", super::fmt::quote(name, false))?;
                if let Some(p) = pipe {
                    write!(f, " {p}")?;
                }
                return f.write_str("}}");
            }
            Self::If(b) => ("if", b),
            Self::Range(b) => ("range", b),
            Self::With(b) => ("with", b),
        };
        write!(f, "{{{{{name} {}}}}}", b.pipe)?;
        write_list(f, &b.list)?;
        if let Some(e) = &b.else_list {
            f.write_str("{{else}}")?;
            write_list(f, e)?;
        }
        f.write_str("{{end}}")
    }
}

impl Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            f.write_str(&self.decl.join(", "))?;
            f.write_str(" := ")?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_char(' ')?;
            }
            match a {
                Arg::Pipe(p) => write!(f, "({p})")?,
                _ => write!(f, "{a}")?,
            }
        }
        Ok(())
    }
}

impl Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field { ident, .. } => ident.iter().try_for_each(|i| write!(f, ".{i}")),
            Self::Variable { ident, .. } => f.write_str(&ident.join(".")),
            Self::Chain { node, field, .. } => {
                match &**node {
                    Self::Pipe(p) => write!(f, "({p})")?,
                    n => write!(f, "{n}")?,
                }
                field.iter().try_for_each(|i| write!(f, ".{i}"))
            }
            Self::Identifier { name, .. } => f.write_str(name),
            Self::Dot { .. } => f.write_str("."),
            Self::Nil { .. } => f.write_str("nil"),
            Self::Bool { val, .. } => write!(f, "{val}"),
            Self::Number { num, .. } => f.write_str(&num.text),
            Self::Str { quoted, .. } => f.write_str(quoted),
            Self::Pipe(p) => write!(f, "{p}"),
        }
    }
}

/// The names the parser accepts as functions: Go's builtins plus Weave's `json`.
const FUNCS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne", "json",
];

/// `else`/`end` as the parser passes them up to the enclosing control.
enum Ctl {
    Else,
    End,
}

enum Parsed {
    Node(Node),
    Ctl(Ctl),
}

struct Parser<'a> {
    name: &'a str,
    items: Vec<Item>,
    i: usize,
    /// The furthest item fetched: Go reports the line of its last lexed token.
    hi: usize,
    vars: Vec<String>,
    action_line: usize,
    range_depth: usize,
    depth: usize,
    trees: BTreeMap<String, Vec<Node>>,
}

type R<T> = Result<T, String>;

/// Parses `text` as the template `name` (and the templates it defines).
pub(super) fn parse(name: &str, text: &str) -> R<Set> {
    let mut p = Parser {
        name,
        items: lex(text),
        i: 0,
        hi: 0,
        vars: vec!["$".into()],
        action_line: 0,
        range_depth: 0,
        depth: 0,
        trees: BTreeMap::new(),
    };
    let root = p.parse_top()?;
    p.add(name.to_string(), root)?;
    Ok(Set {
        text: text.to_string(),
        trees: p.trees,
    })
}

fn is_empty_tree(list: &[Node]) -> bool {
    list.iter().all(|n| match n {
        Node::Text { text } => text
            .trim_matches([' ', '\t', '\n', '\r', '\u{b}', '\u{c}'])
            .is_empty(),
        _ => false,
    })
}

impl Parser<'_> {
    fn item(&mut self, i: usize) -> Item {
        let i = i.min(self.items.len().saturating_sub(1));
        self.hi = self.hi.max(i);
        self.items.get(i).cloned().unwrap_or(Item {
            kind: Kind::Eof,
            pos: 0,
            val: String::new(),
            line: 1,
        })
    }

    fn next(&mut self) -> Item {
        let it = self.item(self.i);
        self.i += 1;
        it
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn peek(&mut self) -> Item {
        self.item(self.i)
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let t = self.next();
            if t.kind != Kind::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let t = self.next_non_space();
        self.backup();
        t
    }

    fn errorf<T>(&mut self, msg: impl Display) -> R<T> {
        let line = self.item(self.hi).line;
        Err(format!("template: {}:{line}: {msg}", self.name))
    }

    fn unexpected<T>(&mut self, token: &Item, context: &str) -> R<T> {
        if token.kind == Kind::Error {
            let mut extra = String::new();
            if self.action_line != 0 && self.action_line != token.line {
                extra = format!(" in action started at {}:{}", self.name, self.action_line);
                if token.val.ends_with(" action") {
                    extra = extra[" in action".len()..].to_string();
                }
            }
            return self.errorf(format!("{}{extra}", token.describe()));
        }
        self.errorf(format!("unexpected {} in {context}", token.describe()))
    }

    fn expect(&mut self, kind: Kind, context: &str) -> R<Item> {
        let t = self.next_non_space();
        if t.kind != kind {
            return self.unexpected(&t, context);
        }
        Ok(t)
    }

    fn deeper(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return self.errorf(format!("nesting deeper than {MAX_NESTING} levels"));
        }
        Ok(())
    }

    fn add(&mut self, name: String, root: Vec<Node>) -> R<()> {
        match self.trees.get(&name) {
            Some(old) if !is_empty_tree(old) => {
                if !is_empty_tree(&root) {
                    return self.errorf(format!(
                        "template: multiple definition of template {}",
                        super::fmt::quote(&name, false)
                    ));
                }
            }
            _ => {
                self.trees.insert(name, root);
            }
        }
        Ok(())
    }

    fn parse_top(&mut self) -> R<Vec<Node>> {
        let mut root = Vec::new();
        while self.peek().kind != Kind::Eof {
            if self.peek().kind == Kind::LeftDelim {
                let start = self.i;
                self.next();
                if self.next_non_space().kind == Kind::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.i = start;
            }
            match self.text_or_action()? {
                Parsed::Ctl(Ctl::End) => return self.errorf("unexpected {{end}}"),
                Parsed::Ctl(Ctl::Else) => return self.errorf("unexpected {{else}}"),
                Parsed::Node(n) => root.push(n),
            }
        }
        Ok(root)
    }

    fn parse_definition(&mut self) -> R<()> {
        const CONTEXT: &str = "define clause";
        let t = self.next_non_space();
        if t.kind != Kind::String && t.kind != Kind::RawString {
            return self.unexpected(&t, CONTEXT);
        }
        let name = match unquote(&t.val) {
            Ok(n) => n,
            Err(e) => return self.errorf(e),
        };
        self.expect(Kind::RightDelim, CONTEXT)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        if !matches!(end, Ctl::End) {
            return self.errorf(format!("unexpected {{{{else}}}} in {CONTEXT}"));
        }
        self.add(name, list)
    }

    fn item_list(&mut self) -> R<(Vec<Node>, Ctl)> {
        self.deeper()?;
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Parsed::Ctl(c) => {
                    self.depth -= 1;
                    return Ok((list, c));
                }
                Parsed::Node(n) => list.push(n),
            }
        }
        self.errorf("unexpected EOF")
    }

    fn text_or_action(&mut self) -> R<Parsed> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Text => Ok(Parsed::Node(Node::Text { text: t.val })),
            Kind::LeftDelim => {
                self.action_line = t.line;
                let r = self.action();
                self.action_line = 0;
                r
            }
            _ => self.unexpected(&t, "input"),
        }
    }

    fn action(&mut self) -> R<Parsed> {
        let t = self.next_non_space();
        let node = match t.kind {
            Kind::Block => self.block_control()?,
            Kind::Break | Kind::Continue => {
                let word = if t.kind == Kind::Break {
                    "break"
                } else {
                    "continue"
                };
                let n = self.next_non_space();
                if n.kind != Kind::RightDelim {
                    return self.unexpected(&n, &format!("{{{{{word}}}}}"));
                }
                if self.range_depth == 0 {
                    return self.errorf(format!("{{{{{word}}}}} outside {{{{range}}}}"));
                }
                if t.kind == Kind::Break {
                    Node::Break { pos: t.pos }
                } else {
                    Node::Continue { pos: t.pos }
                }
            }
            Kind::Else => {
                let peek = self.peek_non_space();
                if peek.kind == Kind::If {
                    return Ok(Parsed::Ctl(Ctl::Else));
                }
                self.expect(Kind::RightDelim, "else")?;
                return Ok(Parsed::Ctl(Ctl::Else));
            }
            Kind::End => {
                self.expect(Kind::RightDelim, "end")?;
                return Ok(Parsed::Ctl(Ctl::End));
            }
            Kind::If => Node::If(self.parse_control(true, "if")?),
            Kind::Range => Node::Range(self.parse_control(false, "range")?),
            Kind::With => Node::With(self.parse_control(false, "with")?),
            Kind::Template => self.template_control()?,
            _ => {
                self.backup();
                let pos = self.peek().pos;
                let pipe = self.pipeline("command", Kind::RightDelim)?;
                Node::Action { pos, pipe }
            }
        };
        Ok(Parsed::Node(node))
    }

    fn parse_control(&mut self, allow_else_if: bool, context: &str) -> R<Branch> {
        let mark = self.vars.len();
        let r = self.parse_control_inner(allow_else_if, context);
        self.vars.truncate(mark);
        r
    }

    fn parse_control_inner(&mut self, allow_else_if: bool, context: &str) -> R<Branch> {
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let Ctl::Else = next {
            if allow_else_if && self.peek().kind == Kind::If {
                self.next();
                self.deeper()?;
                let inner = self.parse_control(true, "if")?;
                self.depth -= 1;
                else_list = Some(vec![Node::If(inner)]);
            } else {
                let (l, next) = self.item_list()?;
                if let Ctl::Else = next {
                    return self.errorf("expected end; found {{else}}");
                }
                else_list = Some(l);
            }
        }
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn template_name(&mut self, t: &Item, context: &str) -> R<String> {
        match t.kind {
            Kind::String | Kind::RawString => match unquote(&t.val) {
                Ok(s) => Ok(s),
                Err(e) => self.errorf(e),
            },
            _ => self.unexpected(t, context),
        }
    }

    fn template_control(&mut self) -> R<Node> {
        const CONTEXT: &str = "template clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, CONTEXT)?;
        let mut pipe = None;
        if self.next_non_space().kind != Kind::RightDelim {
            self.backup();
            pipe = Some(self.pipeline(CONTEXT, Kind::RightDelim)?);
        }
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe,
        })
    }

    fn block_control(&mut self) -> R<Node> {
        const CONTEXT: &str = "block clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, CONTEXT)?;
        let pipe = self.pipeline(CONTEXT, Kind::RightDelim)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let range_depth = std::mem::take(&mut self.range_depth);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        self.range_depth = range_depth;
        if !matches!(end, Ctl::End) {
            return self.errorf(format!("unexpected {{{{else}}}} in {CONTEXT}"));
        }
        self.add(name.clone(), list)?;
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe: Some(pipe),
        })
    }

    fn pipeline(&mut self, context: &str, end: Kind) -> R<Pipe> {
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: start.pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        loop {
            let v = self.peek_non_space();
            if v.kind != Kind::Variable {
                break;
            }
            let at_var = self.i;
            self.next();
            let next = self.peek_non_space();
            match next.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = next.kind == Kind::Assign;
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                }
                Kind::Char if next.val == "," => {
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue,
                            _ => return self.errorf("range can only initialize variables"),
                        }
                    }
                    return self.errorf(format!("too many declarations in {context}"));
                }
                _ => self.i = at_var,
            }
            break;
        }
        loop {
            let t = self.next_non_space();
            match t.kind {
                k if k == end => {
                    if pipe.cmds.is_empty() {
                        return self.errorf(format!("missing value for {context}"));
                    }
                    for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                        if matches!(
                            c.args.first(),
                            Some(
                                Arg::Bool { .. }
                                    | Arg::Dot { .. }
                                    | Arg::Nil { .. }
                                    | Arg::Number { .. }
                                    | Arg::Str { .. }
                            )
                        ) {
                            return self.errorf(format!(
                                "non executable command in pipeline stage {}",
                                i + 1
                            ));
                        }
                    }
                    return Ok(pipe);
                }
                Kind::Bool
                | Kind::CharConstant
                | Kind::Complex
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let c = self.command()?;
                    pipe.cmds.push(c);
                }
                _ => return self.unexpected(&t, context),
            }
        }
    }

    fn command(&mut self) -> R<Cmd> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Cmd {
            pos,
            args: Vec::new(),
        };
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                cmd.args.push(op);
            }
            let t = self.next();
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.backup(),
                Kind::Pipe => {}
                _ => return self.unexpected(&t, "operand"),
            }
            break;
        }
        if cmd.args.is_empty() {
            return self.errorf("empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> R<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().pos;
        let mut field = Vec::new();
        while self.peek().kind == Kind::Field {
            let t = self.next();
            field.push(t.val[1..].to_string());
        }
        Ok(Some(match node {
            Arg::Field { mut ident, .. } => {
                ident.extend(field);
                Arg::Field { pos, ident }
            }
            Arg::Variable { mut ident, .. } => {
                ident.extend(field);
                Arg::Variable { pos, ident }
            }
            Arg::Bool { .. }
            | Arg::Str { .. }
            | Arg::Number { .. }
            | Arg::Nil { .. }
            | Arg::Dot { .. } => {
                let shown = super::fmt::quote(&node.to_string(), false);
                return self.errorf(format!("unexpected . after term {shown}"));
            }
            node => Arg::Chain {
                pos,
                node: Box::new(node),
                field,
            },
        }))
    }

    fn term(&mut self) -> R<Option<Arg>> {
        let t = self.next_non_space();
        let pos = t.pos;
        Ok(Some(match t.kind {
            Kind::Identifier => {
                if !FUNCS.contains(&t.val.as_str()) {
                    return self.errorf(format!(
                        "function {} not defined",
                        super::fmt::quote(&t.val, false)
                    ));
                }
                Arg::Identifier { pos, name: t.val }
            }
            Kind::Dot => Arg::Dot { pos },
            Kind::Nil => Arg::Nil { pos },
            Kind::Variable => {
                let ident: Vec<String> = t.val.split('.').map(str::to_string).collect();
                if !self.vars.iter().any(|v| *v == ident[0]) {
                    return self.errorf(format!(
                        "undefined variable {}",
                        super::fmt::quote(&ident[0], false)
                    ));
                }
                Arg::Variable { pos, ident }
            }
            Kind::Field => Arg::Field {
                pos,
                ident: t.val[1..].split('.').map(str::to_string).collect(),
            },
            Kind::Bool => Arg::Bool {
                pos,
                val: t.val == "true",
            },
            Kind::CharConstant | Kind::Complex | Kind::Number => match number(&t.val, t.kind) {
                Ok(num) => Arg::Number { pos, num },
                Err(e) => return self.errorf(e),
            },
            Kind::LeftParen => {
                self.deeper()?;
                let p = self.pipeline("parenthesized pipeline", Kind::RightParen)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(p))
            }
            Kind::String | Kind::RawString => match unquote(&t.val) {
                Ok(text) => Arg::Str {
                    pos,
                    quoted: t.val,
                    text,
                },
                Err(e) => return self.errorf(e),
            },
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

const SYNTAX: &str = "invalid syntax";

/// Go's `strconv.UnquoteChar`: the character `s` starts with and the rest.
fn unquote_char(s: &str, quote: char) -> Result<(u32, bool, &str), &'static str> {
    let mut chars = s.chars();
    let c = chars.next().ok_or(SYNTAX)?;
    if c == quote && (quote == '\'' || quote == '"') {
        return Err(SYNTAX);
    }
    if c != '\\' {
        return Ok((c as u32, true, chars.as_str()));
    }
    let e = chars.next().ok_or(SYNTAX)?;
    let rest = chars.as_str();
    let simple = |v: char| Ok((v as u32, true, rest));
    match e {
        'a' => simple('\u{7}'),
        'b' => simple('\u{8}'),
        'f' => simple('\u{c}'),
        'n' => simple('\n'),
        'r' => simple('\r'),
        't' => simple('\t'),
        'v' => simple('\u{b}'),
        '\\' => simple('\\'),
        '\'' | '"' if e == quote => simple(e),
        'x' | 'u' | 'U' => {
            let n = match e {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            let hex = rest.get(..n).ok_or(SYNTAX)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SYNTAX);
            }
            let v = u32::from_str_radix(hex, 16).map_err(|_| SYNTAX)?;
            if e == 'x' {
                return Ok((v, false, &rest[n..]));
            }
            if char::from_u32(v).is_none() {
                return Err(SYNTAX);
            }
            Ok((v, true, &rest[n..]))
        }
        '0'..='7' => {
            let oct = s.get(1..4).ok_or(SYNTAX)?;
            if !oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(SYNTAX);
            }
            let v = u32::from_str_radix(oct, 8).map_err(|_| SYNTAX)?;
            if v > 255 {
                return Err(SYNTAX);
            }
            Ok((v, false, &s[4..]))
        }
        _ => Err(SYNTAX),
    }
}

/// Go's `strconv.Unquote` for the three quote kinds the lexer produces.
pub(super) fn unquote(s: &str) -> Result<String, &'static str> {
    let quote = s.chars().next().ok_or(SYNTAX)?;
    if s.len() < 2 || !s.ends_with(quote) {
        return Err(SYNTAX);
    }
    let inner = &s[1..s.len() - 1];
    if quote == '`' {
        if inner.contains('`') {
            return Err(SYNTAX);
        }
        return Ok(inner.replace('\r', ""));
    }
    if quote != '"' && quote != '\'' {
        return Err(SYNTAX);
    }
    if inner.contains('\n') {
        return Err(SYNTAX);
    }
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut rest = inner;
    while !rest.is_empty() {
        let (v, multibyte, tail) = unquote_char(rest, quote)?;
        rest = tail;
        if v < 0x80 || !multibyte {
            out.push(v as u8);
        } else {
            let c = char::from_u32(v).ok_or(SYNTAX)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        if quote == '\'' && !rest.is_empty() {
            return Err(SYNTAX);
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn underscore_ok(s: &str) -> bool {
    let b = s.trim_start_matches(['+', '-']).as_bytes();
    let (prefixed, digits) = if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_alphabetic() {
        (true, &b[2..])
    } else {
        (false, b)
    };
    let mut prev_digit = prefixed;
    for &c in digits {
        if c == b'_' {
            if !prev_digit {
                return false;
            }
            prev_digit = false;
        } else {
            prev_digit = c.is_ascii_alphanumeric();
        }
    }
    prev_digit
}

/// Go's `strconv.ParseUint(text, 0, 64)`.
fn parse_uint(text: &str) -> Option<u64> {
    if text.contains('_') && !underscore_ok(text) {
        return None;
    }
    let t = text.replace('_', "");
    let (radix, digits) = match t.as_bytes() {
        [b'0', b'x' | b'X', ..] => (16, &t[2..]),
        [b'0', b'o' | b'O', ..] => (8, &t[2..]),
        [b'0', b'b' | b'B', ..] => (2, &t[2..]),
        [b'0', _, ..] => (8, &t[1..]),
        _ => (10, &t[..]),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(text, 0, 64)`.
fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let u = parse_uint(body)?;
    if neg {
        if u > 1 << 63 {
            return None;
        }
        Some((u as i64).wrapping_neg())
    } else {
        i64::try_from(u).ok()
    }
}

fn parse_float(text: &str) -> Option<f64> {
    if text.contains('_') && !underscore_ok(text) {
        return None;
    }
    let t = text.replace('_', "");
    let body = t.trim_start_matches(['+', '-']);
    let sign = if t.starts_with('-') { -1.0 } else { 1.0 };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return parse_hex_float(hex).map(|f| sign * f);
    }
    if !body.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// A hexadecimal float after its `0x`: hex digits, an optional point, a required `p` exponent.
fn parse_hex_float(hex: &str) -> Option<f64> {
    let (mant, exp) = hex.split_once(['p', 'P'])?;
    let mut exp: i32 = exp.parse().ok()?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0.0f64;
    for c in int.chars().chain(frac.chars()) {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    exp = exp.checked_sub(4 * i32::try_from(frac.len()).ok()?)?;
    Some(v * 2f64.powi(exp))
}

/// Go's `newNumber`: which types the constant `text` fits.
fn number(text: &str, kind: Kind) -> Result<Number, String> {
    let mut n = Number {
        text: text.to_string(),
        int: None,
        uint: None,
        float: None,
    };
    if kind == Kind::CharConstant {
        let (v, _, tail) = unquote_char(&text[1..], '\'').map_err(str::to_string)?;
        if tail != "'" {
            return Err(format!("malformed character constant: {text}"));
        }
        n.int = Some(i64::from(v));
        n.uint = Some(u64::from(v));
        n.float = Some(f64::from(v));
        return Ok(n);
    }
    if kind == Kind::Complex || text.ends_with('i') {
        return Err(format!(
            "complex constants are not supported: {}",
            super::fmt::quote(text, false)
        ));
    }
    let u = parse_uint(text);
    n.uint = u;
    if let Some(i) = parse_int(text) {
        n.int = Some(i);
        if i == 0 {
            n.uint = u.or(Some(0));
        }
    }
    if let Some(i) = n.int {
        n.float = Some(i as f64);
    } else if let Some(u) = n.uint {
        n.float = Some(u as f64);
    } else if let Some(f) = parse_float(text) {
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(format!(
                "integer overflow: {}",
                super::fmt::quote(text, false)
            ));
        }
        n.float = Some(f);
        if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            n.int = Some(f as i64);
        }
        if f.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&f) {
            n.uint = Some(f as u64);
        }
    }
    if n.int.is_none() && n.uint.is_none() && n.float.is_none() {
        return Err(format!(
            "illegal number syntax: {}",
            super::fmt::quote(text, false)
        ));
    }
    Ok(n)
}
