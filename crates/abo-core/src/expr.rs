//! The `when:` expressions of `router.rules`: a subset of CEL (the Common Expression Language).
//!
//! Literals (`1`, `2.5`, `'s'`, `"s"`, `true`, `null`, `[a, b]`), variables and fields
//! (`task.type`), `! - * / % + - < <= > >= == != in && ||`, `c ? a : b`, `size(x)`, the methods
//! `startsWith`, `endsWith`, `contains`, `size`, and the macros `list.exists(x, p)` and
//! `list.all(x, p)`. Every name is checked against the variables abo provides when the config is
//! loaded, so a typo is an error with its position, not a rule that silently never matches.

use std::collections::BTreeMap;
use std::fmt;

/// A value an expression computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Double(_) => "double",
            Self::Str(_) => "string",
            Self::List(_) => "list",
            Self::Map(_) => "map",
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn num(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Double(d) => Some(*d),
            _ => None,
        }
    }
}

/// A parse or check error: `pos` is the 1-based column (in characters) in the expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub pos: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.pos, self.message)
    }
}

/// The shape of the variables: a leaf, or a map with known fields.
#[derive(Clone, Debug)]
pub enum Schema {
    Leaf,
    Fields(BTreeMap<&'static str, Schema>),
}

impl Schema {
    pub fn fields(names: &[&'static str]) -> Self {
        Self::Fields(names.iter().map(|n| (*n, Self::Leaf)).collect())
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Lit(Value),
    Var(String),
    List(Vec<Expr>),
    Field(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
    },
    /// `list.exists(x, p)` / `list.all(x, p)`.
    Macro {
        all: bool,
        list: Box<Expr>,
        var: String,
        body: Box<Expr>,
    },
    Unary(char, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    node: Node,
    /// Character offset (0-based) where it starts.
    at: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(Value),
    Str(String),
    Ident(String),
    Op(&'static str),
    End,
}

const OPS: [&str; 24] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]",
    ".", ",", "?", ":", "{", "}",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, m: String| ExprError {
        pos: pos + 1,
        message: m,
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let v = if text.contains('.') {
                text.parse::<f64>()
                    .map(Value::Double)
                    .map_err(|_| err(start, format!("bad number `{text}`")))?
            } else {
                text.parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| err(start, format!("bad number `{text}`")))?
            };
            out.push((Tok::Num(v), start));
        } else if c == '\'' || c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unterminated string".into())),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push((Tok::Str(s), start));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = OPS
                .iter()
                .find(|o| o.len() == 2 && **o == two)
                .or_else(|| OPS.iter().find(|o| o.len() == 1 && o.starts_with(c)))
                .ok_or_else(|| err(start, format!("unexpected character `{c}`")))?;
            i += op.len();
            out.push((Tok::Op(op), start));
        }
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }

    fn err<T>(&self, message: String) -> Result<T, ExprError> {
        Err(ExprError {
            pos: self.pos() + 1,
            message,
        })
    }

    fn eat(&mut self, op: &str) -> bool {
        if *self.peek() == Tok::Op(leak(op)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat(op) {
            Ok(())
        } else {
            let found = describe(self.peek());
            self.err(format!("expected `{op}`, found {found}"))
        }
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let at = self.pos();
        let c = self.binary(0)?;
        if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            return Ok(Expr {
                node: Node::Cond(Box::new(c), Box::new(a), Box::new(b)),
                at,
            });
        }
        Ok(c)
    }

    /// Binary operators by precedence level: `||`, `&&`, relations, `+ -`, `* / %`.
    fn binary(&mut self, level: usize) -> Result<Expr, ExprError> {
        const LEVELS: [&[&str]; 5] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut lhs = self.binary(level + 1)?;
        loop {
            let op = match self.peek() {
                Tok::Op(o) if ops.contains(o) => *o,
                Tok::Ident(w) if w == "in" && level == 2 => "in",
                _ => break,
            };
            self.i += 1;
            let rhs = self.binary(level + 1)?;
            let at = lhs.at;
            lhs = Expr {
                node: Node::Binary(op, Box::new(lhs), Box::new(rhs)),
                at,
            };
            if level == 2 {
                break; // relations do not chain
            }
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let at = self.pos();
        for op in ['!', '-'] {
            if self.eat(&op.to_string()) {
                let e = self.unary()?;
                return Ok(Expr {
                    node: Node::Unary(op, Box::new(e)),
                    at,
                });
            }
        }
        self.member()
    }

    fn member(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.primary()?;
        loop {
            let at = self.pos();
            if self.eat(".") {
                let Tok::Ident(name) = self.peek().clone() else {
                    let found = describe(self.peek());
                    return self.err(format!("expected a field or method name, found {found}"));
                };
                self.i += 1;
                if self.eat("(") {
                    if name == "exists" || name == "all" {
                        let var_at = self.pos();
                        let Tok::Ident(var) = self.peek().clone() else {
                            return self.err(format!("`{name}` takes a variable name first"));
                        };
                        self.i += 1;
                        self.expect(",")?;
                        let body = self.expr()?;
                        self.expect(")")?;
                        let _ = var_at;
                        e = Expr {
                            node: Node::Macro {
                                all: name == "all",
                                list: Box::new(e),
                                var,
                                body: Box::new(body),
                            },
                            at,
                        };
                    } else {
                        let args = self.args(")")?;
                        e = Expr {
                            node: Node::Call {
                                target: Some(Box::new(e)),
                                name,
                                args,
                            },
                            at: at + 1,
                        };
                    }
                } else {
                    e = Expr {
                        node: Node::Field(Box::new(e), name),
                        at: at + 1,
                    };
                }
            } else if self.eat("[") {
                let idx = self.expr()?;
                self.expect("]")?;
                e = Expr {
                    node: Node::Index(Box::new(e), Box::new(idx)),
                    at,
                };
            } else {
                return Ok(e);
            }
        }
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, ExprError> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let at = self.pos();
        let tok = self.peek().clone();
        self.i += 1;
        let node = match tok {
            Tok::Num(v) => Node::Lit(v),
            Tok::Str(s) => Node::Lit(Value::Str(s)),
            Tok::Ident(w) => match w.as_str() {
                "true" => Node::Lit(Value::Bool(true)),
                "false" => Node::Lit(Value::Bool(false)),
                "null" => Node::Lit(Value::Null),
                _ if self.eat("(") => Node::Call {
                    target: None,
                    name: w,
                    args: self.args(")")?,
                },
                _ => Node::Var(w),
            },
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Op("[") => Node::List(self.args("]")?),
            other => {
                self.i -= 1;
                return self.err(format!("expected a value, found {}", describe(&other)));
            }
        };
        Ok(Expr { node, at })
    }
}

fn leak(op: &str) -> &'static str {
    OPS.iter().find(|o| **o == op).copied().unwrap_or("")
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(_) => "a number".into(),
        Tok::Str(_) => "a string".into(),
        Tok::Ident(w) => format!("`{w}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::End => "the end of the expression".into(),
    }
}

const METHODS: [&str; 4] = ["startsWith", "endsWith", "contains", "size"];

impl Expr {
    /// Parses `src` and checks every name against `vars`.
    pub fn parse(src: &str, vars: &BTreeMap<&'static str, Schema>) -> Result<Self, ExprError> {
        let mut p = Parser {
            toks: lex(src)?,
            i: 0,
        };
        let e = p.expr()?;
        if *p.peek() != Tok::End {
            let found = describe(p.peek());
            return p.err(format!("unexpected {found} after the expression"));
        }
        e.check(vars, &[])?;
        Ok(e)
    }

    fn fail<T>(&self, message: String) -> Result<T, ExprError> {
        Err(ExprError {
            pos: self.at + 1,
            message,
        })
    }

    /// The schema of what this expression names, if it is a variable or a field of one.
    fn check(
        &self,
        vars: &BTreeMap<&'static str, Schema>,
        bound: &[&str],
    ) -> Result<Option<Schema>, ExprError> {
        match &self.node {
            Node::Lit(_) => Ok(None),
            Node::Var(v) if bound.contains(&v.as_str()) => Ok(None),
            Node::Var(v) => match vars.get(v.as_str()) {
                Some(s) => Ok(Some(s.clone())),
                None => {
                    let known: Vec<&str> = vars.keys().copied().collect();
                    self.fail(format!(
                        "unknown variable `{v}` (known: {})",
                        known.join(", ")
                    ))
                }
            },
            Node::Field(e, name) => match e.check(vars, bound)? {
                Some(Schema::Fields(f)) => match f.get(name.as_str()) {
                    Some(s) => Ok(Some(s.clone())),
                    None => {
                        let known: Vec<&str> = f.keys().copied().collect();
                        self.fail(format!(
                            "unknown field `{name}` (known: {})",
                            known.join(", ")
                        ))
                    }
                },
                Some(Schema::Leaf) => self.fail(format!("`{name}`: this value has no fields")),
                None => Ok(None),
            },
            Node::List(items) => {
                for i in items {
                    i.check(vars, bound)?;
                }
                Ok(None)
            }
            Node::Index(a, b) | Node::Binary(_, a, b) => {
                a.check(vars, bound)?;
                b.check(vars, bound)?;
                Ok(None)
            }
            Node::Unary(_, a) => a.check(vars, bound).map(|_| None),
            Node::Cond(a, b, c) => {
                for e in [a, b, c] {
                    e.check(vars, bound)?;
                }
                Ok(None)
            }
            Node::Call { target, name, args } => {
                let ok = match target {
                    Some(t) => {
                        t.check(vars, bound)?;
                        METHODS.contains(&name.as_str())
                    }
                    None => name == "size",
                };
                if !ok {
                    return self.fail(format!(
                        "unknown function `{name}` (known: size, {}, exists, all)",
                        METHODS[..3].join(", ")
                    ));
                }
                for a in args {
                    a.check(vars, bound)?;
                }
                Ok(None)
            }
            Node::Macro {
                list, var, body, ..
            } => {
                list.check(vars, bound)?;
                let mut inner = bound.to_vec();
                inner.push(var);
                body.check(vars, &inner)?;
                Ok(None)
            }
        }
    }

    /// Evaluates against `env`; a type error (comparing a string with a number...) is an error.
    pub fn eval(&self, env: &BTreeMap<String, Value>) -> Result<Value, String> {
        let mut scope = Vec::new();
        self.eval_in(env, &mut scope)
    }

    fn eval_in(
        &self,
        env: &BTreeMap<String, Value>,
        scope: &mut Vec<(String, Value)>,
    ) -> Result<Value, String> {
        use Value::{Bool, Double, Int, List, Map, Null, Str};
        Ok(match &self.node {
            Node::Lit(v) => v.clone(),
            Node::Var(v) => scope
                .iter()
                .rev()
                .find(|(n, _)| n == v)
                .map(|(_, x)| x.clone())
                .or_else(|| env.get(v).cloned())
                .unwrap_or(Null),
            Node::List(items) => List(
                items
                    .iter()
                    .map(|i| i.eval_in(env, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Field(e, name) => match e.eval_in(env, scope)? {
                Map(m) => m.get(name).cloned().unwrap_or(Null),
                other => return Err(format!("`.{name}` of a {}", other.type_name())),
            },
            Node::Index(a, b) => match (a.eval_in(env, scope)?, b.eval_in(env, scope)?) {
                (List(l), Int(i)) => usize::try_from(i)
                    .ok()
                    .and_then(|i| l.get(i).cloned())
                    .ok_or_else(|| format!("index {i} out of range"))?,
                (Map(m), Str(k)) => m.get(&k).cloned().unwrap_or(Null),
                (a, b) => {
                    return Err(format!(
                        "cannot index a {} with a {}",
                        a.type_name(),
                        b.type_name()
                    ));
                }
            },
            Node::Unary('!', e) => match e.eval_in(env, scope)? {
                Bool(b) => Bool(!b),
                o => return Err(format!("`!` of a {}", o.type_name())),
            },
            Node::Unary(_, e) => match e.eval_in(env, scope)? {
                Int(i) => Int(-i),
                Double(d) => Double(-d),
                o => return Err(format!("`-` of a {}", o.type_name())),
            },
            Node::Cond(c, a, b) => match c.eval_in(env, scope)? {
                Bool(true) => a.eval_in(env, scope)?,
                Bool(false) => b.eval_in(env, scope)?,
                o => return Err(format!("condition is a {}, not a bool", o.type_name())),
            },
            Node::Binary(op @ ("&&" | "||"), a, b) => {
                let short = *op == "||";
                match a.eval_in(env, scope)? {
                    Bool(x) if x == short => Bool(short),
                    Bool(_) => match b.eval_in(env, scope)? {
                        Bool(y) => Bool(y),
                        o => return Err(format!("`{op}` of a {}", o.type_name())),
                    },
                    o => return Err(format!("`{op}` of a {}", o.type_name())),
                }
            }
            Node::Binary(op, a, b) => binary(op, a.eval_in(env, scope)?, b.eval_in(env, scope)?)?,
            Node::Call { target, name, args } => {
                let mut vals = Vec::with_capacity(args.len() + 1);
                if let Some(t) = target {
                    vals.push(t.eval_in(env, scope)?);
                }
                for a in args {
                    vals.push(a.eval_in(env, scope)?);
                }
                call(name, &vals)?
            }
            Node::Macro {
                all,
                list,
                var,
                body,
            } => {
                let List(items) = list.eval_in(env, scope)? else {
                    return Err("exists/all of something that is not a list".into());
                };
                let mut result = *all;
                for item in items {
                    scope.push((var.clone(), item));
                    let v = body.eval_in(env, scope);
                    scope.pop();
                    match v? {
                        Bool(b) if b != *all => {
                            result = b;
                            break;
                        }
                        Bool(_) => {}
                        o => return Err(format!("predicate gave a {}", o.type_name())),
                    }
                }
                Bool(result)
            }
        })
    }
}

fn binary(op: &str, a: Value, b: Value) -> Result<Value, String> {
    use Value::{Bool, Double, Int, List, Str};
    let type_err =
        |a: &Value, b: &Value| format!("`{op}` of a {} and a {}", a.type_name(), b.type_name());
    Ok(match op {
        "==" => Bool(equal(&a, &b)),
        "!=" => Bool(!equal(&a, &b)),
        "in" => match &b {
            List(l) => Bool(l.iter().any(|x| equal(x, &a))),
            Str(s) => match &a {
                Str(x) => Bool(s.contains(x.as_str())),
                _ => return Err(type_err(&a, &b)),
            },
            _ => return Err(type_err(&a, &b)),
        },
        "<" | "<=" | ">" | ">=" => {
            let ord = match (&a, &b) {
                (Str(x), Str(y)) => x.partial_cmp(y),
                _ => match (a.num(), b.num()) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => return Err(type_err(&a, &b)),
                },
            }
            .ok_or_else(|| type_err(&a, &b))?;
            Bool(match op {
                "<" => ord.is_lt(),
                "<=" => ord.is_le(),
                ">" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        "+" => match (a, b) {
            (Int(x), Int(y)) => Int(x.saturating_add(y)),
            (Str(x), Str(y)) => Str(x + &y),
            (List(mut x), List(y)) => {
                x.extend(y);
                List(x)
            }
            (a, b) => arith(op, &a, &b)?,
        },
        "-" | "*" | "/" | "%" => match (&a, &b) {
            (Int(x), Int(y)) => Int(match op {
                "-" => x.saturating_sub(*y),
                "*" => x.saturating_mul(*y),
                "/" => x.checked_div(*y).ok_or("division by zero")?,
                _ => x.checked_rem(*y).ok_or("division by zero")?,
            }),
            _ => arith(op, &a, &b)?,
        },
        _ => return Err(format!("unknown operator `{op}`")),
    })
    .map(|v| match v {
        Double(d) => Double(d),
        v => v,
    })
}

fn arith(op: &str, a: &Value, b: &Value) -> Result<Value, String> {
    let (Some(x), Some(y)) = (a.num(), b.num()) else {
        return Err(format!(
            "`{op}` of a {} and a {}",
            a.type_name(),
            b.type_name()
        ));
    };
    Ok(Value::Double(match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" => x / y,
        _ => x % y,
    }))
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.num(), b.num()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn call(name: &str, v: &[Value]) -> Result<Value, String> {
    use Value::{Bool, Int, List, Map, Str};
    let len = |n: usize| Int(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(match (name, v) {
        ("size", [Str(s)]) => len(s.chars().count()),
        ("size", [List(l)]) => len(l.len()),
        ("size", [Map(m)]) => len(m.len()),
        ("startsWith", [Str(s), Str(p)]) => Bool(s.starts_with(p.as_str())),
        ("endsWith", [Str(s), Str(p)]) => Bool(s.ends_with(p.as_str())),
        ("contains", [Str(s), Str(p)]) => Bool(s.contains(p.as_str())),
        ("contains", [List(l), x]) => Bool(l.iter().any(|i| equal(i, x))),
        _ => {
            let types: Vec<&str> = v.iter().map(Value::type_name).collect();
            return Err(format!("`{name}` does not take ({})", types.join(", ")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, Schema> {
        BTreeMap::from([
            ("task", Schema::fields(&["id", "type", "labels", "paths"])),
            ("attempt", Schema::Leaf),
        ])
    }

    fn eval(src: &str) -> Result<Value, String> {
        let e = Expr::parse(src, &vars()).map_err(|e| e.to_string())?;
        let task = Value::Map(BTreeMap::from([
            ("id".to_owned(), Value::Str("docs-1".into())),
            ("type".to_owned(), Value::Str("docs".into())),
            (
                "labels".to_owned(),
                Value::List(vec![Value::Str("low-risk".into())]),
            ),
            (
                "paths".to_owned(),
                Value::List(vec![Value::Str("docs/**".into())]),
            ),
        ]));
        let env = BTreeMap::from([
            ("task".to_owned(), task),
            ("attempt".to_owned(), Value::Int(2)),
        ]);
        e.eval(&env)
    }

    #[test]
    fn evaluates_the_subset() {
        let t = Value::Bool(true);
        for src in [
            "task.type == 'docs'",
            "task.type == \"docs\" && attempt >= 2",
            "'low-risk' in task.labels",
            "task.paths.exists(p, p.startsWith('docs/'))",
            "task.paths.all(p, p.endsWith('**'))",
            "size(task.labels) == 1 && task.labels.size() == 1",
            "attempt * 2.5 > 4.9 || false",
            "!(attempt < 2) ? true : false",
            "task.id.contains('-') && 'ocs' in task.type",
            "(attempt + 1) % 2 == 1",
            "task.labels[0] == 'low-risk'",
        ] {
            assert_eq!(eval(src), Ok(t.clone()), "{src}");
        }
        assert_eq!(eval("task.type == 'code'"), Ok(Value::Bool(false)));
        assert!(
            eval("task.type < 3")
                .unwrap_err()
                .contains("string and a int")
        );
    }

    #[test]
    fn names_the_position_of_what_is_wrong() {
        let err = |src: &str| Expr::parse(src, &vars()).unwrap_err().to_string();
        assert_eq!(
            err("tsk.type == 'docs'"),
            "column 1: unknown variable `tsk` (known: attempt, task)"
        );
        assert_eq!(
            err("task.typ == 'docs'"),
            "column 6: unknown field `typ` (known: id, labels, paths, type)"
        );
        assert_eq!(
            err("task.type == "),
            "column 14: expected a value, found the end of the expression"
        );
        assert_eq!(
            err("task.type = 'x'"),
            "column 11: unexpected character `=`"
        );
        assert_eq!(err("'docs"), "column 1: unterminated string");
        assert_eq!(
            err("task.paths.exists(p, q)"),
            "column 22: unknown variable `q` (known: attempt, task)"
        );
        assert_eq!(
            err("lower(task.id)"),
            "column 1: unknown function `lower` (known: size, startsWith, endsWith, contains, exists, all)"
        );
    }
}
