//! Definitions and references, read with tree-sitter. A definition is a node of one of the
//! language's definition kinds with a `name`; a reference is any identifier that names no
//! definition where it stands. Bounded: at most [`MAX_DEFS`] definitions and [`MAX_REFS`]
//! distinct references a file.

use std::collections::{BTreeMap, BTreeSet};

use tree_sitter::{Language, Node, Parser};

use crate::lang::Lang;

pub const MAX_DEFS: usize = 2_000;
pub const MAX_REFS: usize = 4_000;

/// A definition: its name, what it is (the grammar's node kind, shortened) and its line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Def {
    pub name: String,
    pub kind: String,
    pub line: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    pub defs: Vec<Def>,
    /// Each name referenced, with how often.
    pub refs: BTreeMap<String, u32>,
}

fn language(lang: Lang) -> Option<Language> {
    Some(match lang {
        Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
        Lang::Python => tree_sitter_python::LANGUAGE.into(),
        Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
        Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
        Lang::Go => tree_sitter_go::LANGUAGE.into(),
        Lang::Docs | Lang::Text => return None,
    })
}

/// The node kinds that define a name (through their `name` field), and the short kind shown.
fn def_kind(lang: Lang, kind: &str) -> Option<&'static str> {
    Some(match (lang, kind) {
        (Lang::Rust, "function_item" | "function_signature_item") => "fn",
        (Lang::Rust, "struct_item") => "struct",
        (Lang::Rust, "enum_item") => "enum",
        (Lang::Rust, "union_item") => "union",
        (Lang::Rust, "trait_item") => "trait",
        (Lang::Rust, "type_item") => "type",
        (Lang::Rust, "const_item" | "static_item") => "const",
        (Lang::Rust, "mod_item") => "mod",
        (Lang::Rust, "macro_definition") => "macro",
        (Lang::Python, "function_definition") => "def",
        (Lang::Python, "class_definition") => "class",
        (Lang::Go, "function_declaration") => "func",
        (Lang::Go, "method_declaration") => "method",
        (Lang::Go, "type_spec") => "type",
        (Lang::Go, "const_spec") => "const",
        (
            Lang::JavaScript | Lang::TypeScript | Lang::Tsx,
            "function_declaration" | "generator_function_declaration" | "function_signature",
        ) => "function",
        (
            Lang::JavaScript | Lang::TypeScript | Lang::Tsx,
            "class_declaration" | "abstract_class_declaration",
        ) => "class",
        (Lang::JavaScript | Lang::TypeScript | Lang::Tsx, "method_definition") => "method",
        (Lang::TypeScript | Lang::Tsx, "interface_declaration") => "interface",
        (Lang::TypeScript | Lang::Tsx, "type_alias_declaration") => "type",
        (Lang::TypeScript | Lang::Tsx, "enum_declaration") => "enum",
        _ => return None,
    })
}

/// A `const f = () => ...` (or a function or class expression) defines `f`.
fn declares_function(lang: Lang, node: Node<'_>) -> bool {
    matches!(lang, Lang::JavaScript | Lang::TypeScript | Lang::Tsx)
        && node.kind() == "variable_declarator"
        && node.child_by_field_name("value").is_some_and(|v| {
            matches!(
                v.kind(),
                "arrow_function" | "function_expression" | "function" | "class"
            )
        })
}

fn is_ref(lang: Lang, kind: &str) -> bool {
    match lang {
        Lang::Rust | Lang::Go => {
            matches!(kind, "identifier" | "type_identifier" | "field_identifier")
        }
        Lang::Python => kind == "identifier",
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            matches!(
                kind,
                "identifier" | "property_identifier" | "type_identifier"
            )
        }
        Lang::Docs | Lang::Text => false,
    }
}

/// The symbols of `text` in `lang`; none when tree-sitter does not read the language.
pub fn extract(lang: Lang, text: &str) -> Symbols {
    let Some(language) = language(lang) else {
        return Symbols::default();
    };
    let mut parser = Parser::new();
    if parser.set_language(&language).is_err() {
        return Symbols::default();
    }
    let Some(tree) = parser.parse(text, None) else {
        return Symbols::default();
    };
    let src = text.as_bytes();
    let mut out = Symbols::default();
    let mut named: BTreeSet<usize> = BTreeSet::new();
    let mut cursor = tree.walk();
    // Depth-first over every node, without recursion (deep trees are attacker-made too).
    'walk: loop {
        let node = cursor.node();
        let kind = node.kind();
        let def =
            def_kind(lang, kind).or_else(|| declares_function(lang, node).then_some("function"));
        if let (Some(k), Some(name)) = (def, node.child_by_field_name("name"))
            && out.defs.len() < MAX_DEFS
            && let Ok(n) = name.utf8_text(src)
        {
            named.insert(name.start_byte());
            out.defs.push(Def {
                name: n.to_owned(),
                kind: k.to_owned(),
                line: u32::try_from(node.start_position().row + 1).unwrap_or(u32::MAX),
            });
        }
        if node.child_count() == 0
            && is_ref(lang, kind)
            && !named.contains(&node.start_byte())
            && let Ok(n) = node.utf8_text(src)
            && n.len() >= 3
            && n.len() <= 64
            && (out.refs.len() < MAX_REFS || out.refs.contains_key(n))
        {
            *out.refs.entry(n.to_owned()).or_insert(0) += 1;
        }
        if cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                break 'walk;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn defs(lang: Lang, text: &str) -> Vec<(String, String)> {
        extract(lang, text)
            .defs
            .into_iter()
            .map(|d| (d.name, d.kind))
            .collect()
    }

    fn check(lang: Lang, text: &str, want_defs: &[(&str, &str)], want_refs: &[&str]) {
        let s = extract(lang, text);
        let got: Vec<(String, String)> = defs(lang, text);
        let want: Vec<(String, String)> = want_defs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want, "{lang:?}");
        for r in want_refs {
            assert!(
                s.refs.contains_key(*r),
                "{lang:?}: no reference to {r}: {:?}",
                s.refs
            );
        }
        // A definition's own name is not a reference to it.
        if let Some((d, _)) = want_defs.last() {
            assert!(!s.refs.contains_key(*d), "{lang:?}: {d} is no reference");
        }
    }

    #[test]
    fn definitions_and_references_in_each_language() {
        check(
            Lang::Rust,
            "pub struct Plan { steps: Vec<Step> }\nimpl Plan { pub fn build(x: Step) -> Plan { helper(x) } }\nmod inner {}\n",
            &[("Plan", "struct"), ("build", "fn"), ("inner", "mod")],
            &["Step", "helper", "steps"],
        );
        check(
            Lang::Python,
            "class Signer:\n    def sign(self, value):\n        return derive_key(value)\n",
            &[("Signer", "class"), ("sign", "def")],
            &["derive_key", "value"],
        );
        check(
            Lang::Go,
            "package main\ntype Server struct{}\nfunc (s *Server) Serve() { listen() }\nfunc main() {}\n",
            &[("Server", "type"), ("Serve", "method"), ("main", "func")],
            &["listen"],
        );
        check(
            Lang::JavaScript,
            "function render(a) { return draw(a) }\nconst handler = () => render(1);\nclass View { paint() {} }\n",
            &[
                ("render", "function"),
                ("handler", "function"),
                ("View", "class"),
                ("paint", "method"),
            ],
            &["draw", "render"],
        );
        check(
            Lang::TypeScript,
            "interface Shape { area(): number }\ntype Id = string;\nexport function make(s: Shape): Id { return compute(s) }\n",
            &[("Shape", "interface"), ("Id", "type"), ("make", "function")],
            &["compute", "Shape"],
        );
        check(
            Lang::Tsx,
            "export function App() { return <Button onClick={goNext} /> }\n",
            &[("App", "function")],
            &["goNext"],
        );
        assert_eq!(extract(Lang::Docs, "# fn main() {}"), Symbols::default());
    }

    #[test]
    fn garbage_and_deep_nesting_parse_without_panic() {
        let deep = "(".repeat(20_000);
        let s = extract(Lang::Rust, &deep);
        assert!(s.defs.is_empty());
        let s = extract(Lang::Python, "\u{0}\u{ffff} def (((:");
        assert!(s.defs.is_empty());
    }
}
