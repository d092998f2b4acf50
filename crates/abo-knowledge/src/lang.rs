//! A file's language, by its name.

/// The languages whose symbols abo reads; everything else is indexed as text only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    Rust,
    Python,
    TypeScript,
    Tsx,
    JavaScript,
    Go,
    /// Prose: Markdown, reStructuredText, plain text.
    Docs,
    /// Any other text.
    Text,
}

impl Lang {
    pub fn of(path: &str) -> Lang {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "rs" => Lang::Rust,
            "py" | "pyi" => Lang::Python,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "go" => Lang::Go,
            "md" | "markdown" | "rst" | "txt" | "adoc" => Lang::Docs,
            _ => Lang::Text,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::JavaScript => "javascript",
            Lang::Go => "go",
            Lang::Docs => "docs",
            Lang::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Lang {
        match s {
            "rust" => Lang::Rust,
            "python" => Lang::Python,
            "typescript" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "javascript" => Lang::JavaScript,
            "go" => Lang::Go,
            "docs" => Lang::Docs,
            _ => Lang::Text,
        }
    }

    /// Whether tree-sitter reads its symbols.
    pub fn has_symbols(self) -> bool {
        !matches!(self, Lang::Docs | Lang::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        for (p, l) in [
            ("src/a.rs", Lang::Rust),
            ("x/y.PY", Lang::Python),
            ("web/app.tsx", Lang::Tsx),
            ("web/app.ts", Lang::TypeScript),
            ("index.mjs", Lang::JavaScript),
            ("main.go", Lang::Go),
            ("README.md", Lang::Docs),
            ("Makefile", Lang::Text),
            (".rs", Lang::Rust),
        ] {
            assert_eq!(Lang::of(p), l, "{p}");
            assert_eq!(Lang::parse(l.as_str()), l);
        }
    }
}
