//! The diff viewer: a unified diff (`git show --patch`) as HTML, one collapsible `<details>` per
//! file, additions and deletions coloured, old and new line numbers, a light syntax highlighting of
//! common languages (keywords, strings, comments, numbers: one line at a time, no dependency), and
//! pins (a policy finding, a reviewer's comment) shown under the line they name.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::dashboard::esc;

/// A note pinned to a line of the new side of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub path: String,
    pub line: u32,
    /// Who says it: `policy`, `review`...
    pub source: String,
    pub text: String,
}

/// A language's words, and how its line comments start.
struct Lang {
    keywords: &'static [&'static str],
    comment: &'static [&'static str],
    /// A lone `'` starts a lifetime (Rust), not a string.
    lifetimes: bool,
}

const RUST: Lang = Lang {
    keywords: &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while",
    ],
    comment: &["//"],
    lifetimes: true,
};
const PYTHON: Lang = Lang {
    keywords: &[
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "False", "finally", "for", "from", "if", "import", "in", "is",
        "lambda", "None", "not", "or", "pass", "raise", "return", "True", "try", "while", "with",
        "yield",
    ],
    comment: &["#"],
    lifetimes: false,
};
const JS: Lang = Lang {
    keywords: &[
        "async",
        "await",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "default",
        "delete",
        "else",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "interface",
        "let",
        "new",
        "null",
        "return",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "type",
        "typeof",
        "undefined",
        "var",
        "while",
        "yield",
    ],
    comment: &["//"],
    lifetimes: false,
};
const GO: Lang = Lang {
    keywords: &[
        "break",
        "case",
        "chan",
        "const",
        "continue",
        "default",
        "defer",
        "else",
        "false",
        "for",
        "func",
        "go",
        "if",
        "import",
        "interface",
        "map",
        "nil",
        "package",
        "range",
        "return",
        "select",
        "struct",
        "switch",
        "true",
        "type",
        "var",
    ],
    comment: &["//"],
    lifetimes: false,
};
const C: Lang = Lang {
    keywords: &[
        "break",
        "case",
        "char",
        "class",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extends",
        "false",
        "final",
        "float",
        "for",
        "if",
        "import",
        "int",
        "long",
        "new",
        "null",
        "private",
        "protected",
        "public",
        "return",
        "static",
        "struct",
        "switch",
        "this",
        "true",
        "typedef",
        "void",
        "while",
    ],
    comment: &["//"],
    lifetimes: false,
};
const SHELL: Lang = Lang {
    keywords: &[
        "case", "do", "done", "elif", "else", "esac", "export", "fi", "for", "function", "if",
        "in", "local", "then", "while",
    ],
    comment: &["#"],
    lifetimes: false,
};
const CONFIG: Lang = Lang {
    keywords: &["true", "false", "null"],
    comment: &["#"],
    lifetimes: false,
};

fn lang(path: &str) -> Option<&'static Lang> {
    let ext = path.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "rs" => &RUST,
        "py" => &PYTHON,
        "js" | "mjs" | "cjs" | "ts" | "tsx" | "jsx" => &JS,
        "go" => &GO,
        "c" | "h" | "cc" | "cpp" | "hpp" | "java" | "kt" | "cs" => &C,
        "sh" | "bash" => &SHELL,
        "toml" | "yml" | "yaml" => &CONFIG,
        _ => return None,
    })
}

/// One line of code as HTML, highlighted when its language is known.
pub fn highlight(path: &str, code: &str) -> String {
    let Some(l) = lang(path) else {
        return shown(code);
    };
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let span = |out: &mut String, class: &str, text: &str| {
        let _ = write!(out, "<span class={class}>{}</span>", shown(text));
    };
    while i < chars.len() {
        // Compared in place: a copy of the rest at each character made a long line quadratic.
        let rest = &chars[i..];
        if l.comment.iter().any(|c| starts_with(rest, c)) {
            span(&mut out, "c", &rest.iter().collect::<String>());
            break;
        }
        let c = chars[i];
        // In Rust a lone quote starts a lifetime (`'static`), not a string.
        let lifetime = l.lifetimes
            && c == '\''
            && chars.get(i + 1) != Some(&'\\')
            && chars.get(i + 2) != Some(&'\'');
        if (c == '"' || c == '\'' || c == '`') && !lifetime {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            span(&mut out, "s", &chars[i..end].iter().collect::<String>());
            i = end;
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if l.keywords.contains(&word.as_str()) {
                span(&mut out, "k", &word);
            } else if c.is_ascii_digit() {
                span(&mut out, "n", &word);
            } else {
                out.push_str(&shown(&word));
            }
            i = j;
            continue;
        }
        out.push_str(&shown(&c.to_string()));
        i += 1;
    }
    out
}

/// A line of code with the characters that would change what a person sees shown escaped (`\x00`,
/// `\u{202e}`): C0 controls but tab, DEL, C1 controls, and the bidirectional overrides and
/// isolates, which reorder on screen the code that follows them (what a person approves must
/// read as the compiler reads it).
fn visible(code: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && c != '\t')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !code.chars().any(hidden) {
        return code.into();
    }
    let mut out = String::with_capacity(code.len() + 8);
    for c in code.chars() {
        if !hidden(c) {
            out.push(c);
        } else if u32::from(c) < 0x80 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out.into()
}

/// Text for the page: HTML-escaped, and what [`visible`] escapes shown escaped.
fn shown(text: &str) -> String {
    esc(&visible(text))
}

/// Whether `chars` begins with `prefix`.
fn starts_with(chars: &[char], prefix: &str) -> bool {
    let mut it = chars.iter();
    prefix.chars().all(|p| it.next() == Some(&p))
}

/// `@@ -12,3 +14,5 @@` -> (12, 14).
fn hunk_start(line: &str) -> Option<(u32, u32)> {
    let mut parts = line.split_whitespace().skip(1);
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let first = |s: &str| s.split(',').next().and_then(|n| n.parse().ok());
    Some((first(old)?, first(new)?))
}

struct File {
    path: String,
    added: u32,
    removed: u32,
    rows: String,
}

/// The most of a diff a page shows; past it, the page says how much it leaves out.
pub const SHOWN_BYTES: usize = 4 << 20;

/// The diff as HTML: a head line (the commit) and one `<details>` per file; a diff longer than
/// [`SHOWN_BYTES`] is shown up to the line that passes it, with what was left out said.
pub fn render(diff: &str, pins: &[Pin]) -> String {
    let mut by_line: BTreeMap<(&str, u32), Vec<&Pin>> = BTreeMap::new();
    for p in pins {
        by_line
            .entry((p.path.as_str(), p.line))
            .or_default()
            .push(p);
    }
    let mut head = Vec::new();
    let mut files: Vec<File> = Vec::new();
    let (mut old, mut new) = (0u32, 0u32);
    let mut in_hunk = false;
    let mut read = 0usize;
    let mut left_out = 0usize;
    for line in diff.lines() {
        if read >= SHOWN_BYTES {
            left_out = diff.len() - read;
            break;
        }
        read += line.len() + 1;
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // `a/PATH b/PATH`: the new side's path (a rename's target).
            let path = rest.rsplit_once(" b/").map_or(rest, |(_, b)| b).to_owned();
            files.push(File {
                path,
                added: 0,
                removed: 0,
                rows: String::new(),
            });
            in_hunk = false;
            continue;
        }
        let Some(f) = files.last_mut() else {
            head.push(line);
            continue;
        };
        if line.starts_with("@@") {
            if let Some((o, n)) = hunk_start(line) {
                (old, new, in_hunk) = (o, n, true);
            }
            let _ = write!(
                f.rows,
                "<tr class=hunk><td colspan=3>{}</td></tr>",
                shown(line)
            );
            continue;
        }
        if !in_hunk {
            if line.starts_with("Binary files") {
                let _ = write!(
                    f.rows,
                    "<tr class=hunk><td colspan=3>{}</td></tr>",
                    shown(line)
                );
            }
            continue;
        }
        let (class, o, n, code) = match line.chars().next() {
            Some('+') => {
                f.added += 1;
                new += 1;
                ("add", String::new(), (new - 1).to_string(), &line[1..])
            }
            Some('-') => {
                f.removed += 1;
                old += 1;
                ("del", (old - 1).to_string(), String::new(), &line[1..])
            }
            Some(' ') => {
                old += 1;
                new += 1;
                (
                    "ctx",
                    (old - 1).to_string(),
                    (new - 1).to_string(),
                    &line[1..],
                )
            }
            _ => ("meta", String::new(), String::new(), line),
        };
        let mark = match class {
            "add" => "+",
            "del" => "-",
            _ => " ",
        };
        let _ = write!(
            f.rows,
            "<tr class={class}><td class=ln>{o}</td><td class=ln>{n}</td><td class=code>{mark}{}</td></tr>",
            highlight(&f.path, code)
        );
        if class != "del"
            && let Ok(line_no) = n.parse::<u32>()
            && let Some(ps) = by_line.get(&(f.path.as_str(), line_no))
        {
            for p in ps {
                let _ = write!(
                    f.rows,
                    "<tr class=pin data-pin=\"{path}:{line_no}\"><td colspan=3><b>{src}</b> {text}</td></tr>",
                    path = shown(&p.path),
                    src = shown(&p.source),
                    text = shown(&p.text)
                );
            }
        }
    }
    let mut out = String::new();
    if let Some(h) = head.first() {
        let _ = write!(out, "<p class=commit><code>{}</code></p>", shown(h));
    }
    if files.is_empty() {
        out.push_str("<p>No change.</p>");
    }
    if left_out > 0 {
        let _ = write!(
            out,
            "<p class=cut>This diff is longer than a page shows: its last {} bytes are not shown (read the whole change with <code>git diff</code>).</p>",
            abo_core::human::grouped(left_out as u64)
        );
    }
    let open = files.len() <= 20;
    for f in &files {
        let _ = write!(
            out,
            "<details class=file data-file=\"{p}\"{o}><summary><b>{p}</b> <span class=plus>+{a}</span> <span class=minus>-{r}</span></summary><div class=scroll><table class=diff>{rows}</table></div></details>",
            p = shown(&f.path),
            o = if open { " open" } else { "" },
            a = f.added,
            r = f.removed,
            rows = f.rows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_lines_numbers_colours_highlighting_and_pins() {
        let diff = "\
abc123 Add a greeting
 src/lib.rs | 3 ++-
diff --git a/src/lib.rs b/src/lib.rs
index 1..2 100644
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,2 +1,3 @@
 // greet
-fn old() {}
+fn hello() -> &'static str { \"hi <b>\" }
+let n = 42;
diff --git a/notes.txt b/notes.txt
--- a/notes.txt
+++ b/notes.txt
@@ -3 +3 @@
-old <note>
+new note
";
        let pins = [Pin {
            path: "src/lib.rs".into(),
            line: 2,
            source: "policy".into(),
            text: "unwrap-free? <check>".into(),
        }];
        let html = render(diff, &pins);
        expect_test::expect![[r#"<p class=commit><code>abc123 Add a greeting</code></p><details class=file data-file="src/lib.rs" open><summary><b>src/lib.rs</b> <span class=plus>+2</span> <span class=minus>-1</span></summary><div class=scroll><table class=diff><tr class=hunk><td colspan=3>@@ -1,2 +1,3 @@</td></tr><tr class=ctx><td class=ln>1</td><td class=ln>1</td><td class=code> <span class=c>// greet</span></td></tr><tr class=del><td class=ln>2</td><td class=ln></td><td class=code>-<span class=k>fn</span> old() {}</td></tr><tr class=add><td class=ln></td><td class=ln>2</td><td class=code>+<span class=k>fn</span> hello() -&gt; &amp;&#39;<span class=k>static</span> str { <span class=s>&quot;hi &lt;b&gt;&quot;</span> }</td></tr><tr class=pin data-pin="src/lib.rs:2"><td colspan=3><b>policy</b> unwrap-free? &lt;check&gt;</td></tr><tr class=add><td class=ln></td><td class=ln>3</td><td class=code>+<span class=k>let</span> n = <span class=n>42</span>;</td></tr></table></div></details><details class=file data-file="notes.txt" open><summary><b>notes.txt</b> <span class=plus>+1</span> <span class=minus>-1</span></summary><div class=scroll><table class=diff><tr class=hunk><td colspan=3>@@ -3 +3 @@</td></tr><tr class=del><td class=ln>3</td><td class=ln></td><td class=code>-old &lt;note&gt;</td></tr><tr class=add><td class=ln></td><td class=ln>3</td><td class=code>+new note</td></tr></table></div></details>"#]]
        .assert_eq(&html);
    }

    fn one_file(path: &str, lines: &[&str]) -> String {
        let mut d = format!(
            "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -0,0 +1,{} @@\n",
            lines.len()
        );
        for l in lines {
            d.push('+');
            d.push_str(l);
            d.push('\n');
        }
        d
    }

    /// The attack: characters that change what a person sees (a NUL, a terminal escape, a
    /// right-to-left override) in a line of code and in a path. The page shows each escaped; the
    /// control, the line escaped for HTML only, keeps them as they are.
    #[test]
    fn controls_and_bidi_overrides_are_shown_escaped() {
        let line = "let ok = x;\0\u{1b}[2K /*\u{202e} } if admin { */";
        let html = render(&one_file("a\u{2066}.rs", &[line]), &[]);
        assert!(html.contains("x;\\x00\\x1b["), "{html}");
        assert!(html.contains(" /*\\u{202e} } "), "{html}");
        assert!(html.contains("<b>a\\u{2066}.rs</b>"), "{html}");
        for c in ['\0', '\u{1b}', '\u{202e}'] {
            assert!(!html.contains(c), "{c:?} in {html}");
        }
        assert!(esc(line).contains('\u{202e}'), "the control keeps it");
    }

    /// A line of 400,000 characters that are no comment, word or string one after another: each
    /// is read once (a copy of the rest of the line at each character made this minutes of the
    /// server's CPU for one page view). The whole line is shown, highlighted.
    #[test]
    fn a_long_line_is_highlighted_whole() {
        let line = format!("let v = [{}];", "1,".repeat(200_000));
        let html = render(&one_file("big.rs", &[&line]), &[]);
        assert_eq!(html.matches("<span class=n>1</span>,").count(), 200_000);
        assert_eq!(highlight("big.rs", "a // b"), "a <span class=c>// b</span>");
    }

    /// The attack: a change of 6 MiB. The page shows the first `SHOWN_BYTES` of its diff and says
    /// how much it leaves out; the control is the diff itself, longer than the page.
    #[test]
    fn a_diff_longer_than_a_page_is_cut_and_says_so() {
        let line = "x".repeat(1023);
        let lines: Vec<&str> = (0..6 * 1024).map(|_| line.as_str()).collect();
        let diff = one_file("big.txt", &lines);
        assert!(diff.len() > SHOWN_BYTES + (1 << 20));
        let html = render(&diff, &[]);
        let shown = html.matches(&line).count();
        assert_eq!(shown, 4092, "the lines within SHOWN_BYTES");
        assert!(html.len() < SHOWN_BYTES + (1 << 20));
        assert!(
            html.contains("This diff is longer than a page shows: its last 2,103,300 bytes"),
            "{}",
            &html[html.len() - 300..]
        );
    }
}
