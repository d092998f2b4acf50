//! Secret detection, in the spirit of gitleaks: cloud access keys, private keys, tokens of common
//! services, and high-entropy values assigned to secret-sounding names. One rule table serves both
//! the policy (what a change adds, [`Scanner::scan`]) and redaction (what abo stores or sends,
//! [`Scanner::redact`]), so what is denied and what is hidden cannot drift apart.
//!
//! A text is read three ways, each finding placed on the original text:
//!
//! 1. **As written.** Keys with a distinctive prefix (`AKIA`, `ghp_`, `glpat-`, `eyJ`...) match
//!    anywhere, whatever precedes them: `\b` would miss `_AKIA...` or `keyAKIA...`, since `_` and
//!    letters are word characters. Prefixes that ordinary words can end in (`sk-`, `sk_live_`) must
//!    follow a character that is not a letter or digit (an underscore is fine).
//! 2. **Joined.** A string literal split in two (`"AKIA" + "..."`, `"AKIA" "..."`, across one line
//!    break or on one line) and a token wrapped over two adjacent lines (a PEM line or a long token
//!    broken in two) are read again with the joint removed: a closing quote, an optional
//!    concatenation operator (`+ . .. & || \`) and an opening quote, with the spaces and at most one
//!    line break between them; or a line break and the next line's indentation between two token
//!    characters. Only findings that span such a joint come from this reading; the rest were found
//!    as written. Lines that are not adjacent (two hunks) are never joined.
//! 3. **Decoded.** Runs of 20 or more base64 (either alphabet) or hex characters in the joined
//!    text are decoded, at each of their possible alignments, and the printable strings of the
//!    bytes (as `strings(1)` shows them) are read as written. A finding there is reported on the
//!    encoded run, as `RULE (base64)` or `RULE (hex)`.
//!
//! A finding names the file, line and rule; its value stays in memory, only for redaction.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use regex::Regex;

#[derive(Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    pub rule: &'static str,
    /// The secret itself: used to redact, never serialized or printed.
    pub value: String,
}

impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Finding({}:{} {})", self.path, self.line, self.rule)
    }
}

impl Finding {
    /// The shape the policy input takes: no value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "line": self.line, "rule": self.rule })
    }
}

/// One kind of secret. The pattern's first group, else the whole match, is the secret.
struct Rule {
    name: &'static str,
    base64: &'static str,
    hex: &'static str,
    pattern: &'static str,
    /// A check of the value, for shapes that ordinary text can also take.
    check: fn(&str) -> bool,
    /// Matched after every specific rule: a specific name wins on the same text.
    generic: bool,
    /// Where the secret ends, given the text and the end of the match (a key block's body).
    extend: Option<fn(&str, usize) -> usize>,
}

macro_rules! rule {
    ($name:literal, $pattern:expr) => {
        rule!($name, $pattern, |_| true, false)
    };
    ($name:literal, $pattern:expr, $check:expr) => {
        rule!($name, $pattern, $check, false)
    };
    ($name:literal, $pattern:expr, $check:expr, $generic:expr) => {
        Rule {
            name: $name,
            base64: concat!($name, " (base64)"),
            hex: concat!($name, " (hex)"),
            pattern: $pattern,
            check: $check,
            generic: $generic,
            extend: None,
        }
    };
}

const RULES: &[Rule] = &[
    Rule {
        extend: Some(key_block_end),
        ..rule!("private-key", r"-----BEGIN[A-Z ]*PRIVATE KEY-----")
    },
    rule!(
        "aws-access-key",
        r"((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})"
    ),
    rule!(
        "aws-secret-key",
        r#"(?i-u:aws[_\-.]?secret[_\-.]?(?:access[_\-.]?)?key|secret[_\-.]?access[_\-.]?key)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*(?:\\?["'])?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        |v| entropy(v) >= 3.5
    ),
    rule!("github-token", r"(gh[pousr]_[A-Za-z0-9]{36,})"),
    rule!("github-pat", r"(github_pat_[A-Za-z0-9_]{22,})"),
    rule!("gitlab-token", r"(glpat-[A-Za-z0-9_\-]{20,})"),
    rule!("slack-token", r"(xox[bpars]-[A-Za-z0-9\-]{10,})"),
    rule!(
        "stripe-key",
        r"(?:^|[^A-Za-z0-9])((?:sk|rk)_live_[A-Za-z0-9]{20,})"
    ),
    rule!("google-api-key", r"(AIza[0-9A-Za-z_\-]{35})"),
    rule!(
        "anthropic-key",
        r"(?:^|[^A-Za-z0-9])(sk-ant-[A-Za-z0-9_\-]{20,})"
    ),
    // Long kebab-case words follow `sk-` too (`--task-...`): a key has a digit.
    rule!(
        "openai-key",
        r"(?:^|[^A-Za-z0-9])(sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,})",
        |v| !v.starts_with("sk-ant-") && v.bytes().any(|b| b.is_ascii_digit())
    ),
    rule!(
        "jwt",
        r"(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"
    ),
    // `password = "..."`-like assignments with a random-looking value. Quoted, a value with
    // letters and digits will do; unquoted (`.env` files, YAML), where names and paths are written
    // the same way (`secretName: my-tls-secret-2024`), it takes both cases and digits, or a long
    // hex string.
    rule!(
        "generic-secret",
        r#"(?i-u:secret|token|passw(?:or)?d|api_?key|access_?key|private_?key|credential)(?i-u:[a-z0-9_\-]*)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*\\?["']([A-Za-z0-9/+_\-=.]{16,})\\?["']"#,
        |v| {
            entropy(v) >= 3.5
                && v.bytes().any(|b| b.is_ascii_digit())
                && v.bytes().any(|b| b.is_ascii_alphabetic())
        },
        true
    ),
    rule!(
        "generic-secret",
        r#"(?i-u:secret|token|passw(?:or)?d|api_?key|access_?key|private_?key|credential)(?i-u:[a-z0-9_\-]*)(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*([A-Za-z0-9/+_\-=.]{16,})"#,
        |v| {
            let has = |f: fn(&u8) -> bool| v.as_bytes().iter().any(f);
            let mixed = entropy(v) >= 3.5
                && has(u8::is_ascii_digit)
                && has(u8::is_ascii_lowercase)
                && has(u8::is_ascii_uppercase);
            mixed || (v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        },
        true
    ),
];

/// The shortest run of base64 or hex characters that is decoded.
const MIN_RUN: usize = 20;
/// The shortest printable string of decoded bytes that is read: shorter than any secret's shape.
const MIN_STRING: usize = 12;

/// A character a token (a key, a base64 or hex run) is made of.
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

fn base64_byte(b: u8) -> bool {
    BASE64[usize::from(b)]
}

const BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-');
        b += 1;
    }
    t
};

/// The string-literal joints: a closing quote, spaces, an optional concatenation operator
/// (`+ . .. & || \`), spaces, at most one line break with the next line's indentation (and an
/// operator there), and an opening quote.
fn joints(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let quote = |i: usize| {
        bytes
            .get(i)
            .is_some_and(|b| matches!(b, b'"' | b'\'' | b'`'))
    };
    let spaces = |mut i: usize| {
        while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let operator = |i: usize, backslash: bool| match (bytes.get(i), bytes.get(i + 1)) {
        (Some(b'|'), Some(b'|')) | (Some(b'.'), Some(b'.')) => i + 2,
        (Some(b'+' | b'.' | b'&'), _) => i + 1,
        (Some(b'\\'), _) if backslash => i + 1,
        _ => i,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !quote(i) {
            i += 1;
            continue;
        }
        let mut j = spaces(operator(spaces(i + 1), true));
        let newline = match (bytes.get(j), bytes.get(j + 1)) {
            (Some(b'\r'), Some(b'\n')) => Some(j + 2),
            (Some(b'\n'), _) => Some(j + 1),
            _ => None,
        };
        if let Some(n) = newline {
            j = spaces(operator(spaces(n), false));
        }
        if quote(j) {
            out.push(i..j + 1);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The line breaks inside a token, each with the next line's indentation: `\r?\n[ \t]*` between
/// two token characters. A token holding an `=` before its end is an assignment (`NAME=value`, as
/// in an environment or a `.env` listing), not wrapped data, whose `=` can only be padding at its
/// end: lines of assignments are never joined.
fn wraps(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let bytes = text.as_bytes();
    let assignment = |token: &[u8]| {
        let body = token
            .strip_suffix(b"==")
            .or_else(|| token.strip_suffix(b"="))
            .unwrap_or(token);
        body.contains(&b'=')
    };
    let token_before = move |end: usize| {
        let start = bytes[..end]
            .iter()
            .rposition(|b| !token_byte(*b))
            .map_or(0, |p| p + 1);
        &bytes[start..end]
    };
    let token_after = move |start: usize| {
        let end = bytes[start..]
            .iter()
            .position(|b| !token_byte(*b))
            .map_or(bytes.len(), |p| start + p);
        &bytes[start..end]
    };
    raw_wraps(text).filter(move |r| {
        let after = r.end;
        !assignment(token_before(r.start)) && !assignment(token_after(after))
    })
}

/// Every `\r?\n[ \t]*` between two token characters.
fn raw_wraps(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let bytes = text.as_bytes();
    text.match_indices('\n').filter_map(move |(i, _)| {
        let start = if i > 0 && bytes[i - 1] == b'\r' {
            i - 1
        } else {
            i
        };
        let before = start.checked_sub(1).map(|p| bytes[p])?;
        let mut end = i + 1;
        while end < bytes.len() && matches!(bytes[end], b' ' | b'\t') {
            end += 1;
        }
        (token_byte(before) && bytes.get(end).copied().is_some_and(token_byte))
            .then_some(start..end)
    })
}

/// The runs of at least [`MIN_RUN`] base64 characters (either alphabet), and of hex characters
/// (`true`) within them.
fn encoded_runs(text: &str) -> Vec<(Range<usize>, bool)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !base64_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && base64_byte(bytes[i]) {
            i += 1;
        }
        if i - start < MIN_RUN {
            continue;
        }
        out.push((start..i, false));
        let mut j = start;
        while j < i {
            if !bytes[j].is_ascii_hexdigit() {
                j += 1;
                continue;
            }
            let h = j;
            while j < i && bytes[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - h >= MIN_RUN {
                out.push((h..j, true));
            }
        }
    }
    out
}

/// The longest key block: the end of a private key is looked for this far after its header.
const MAX_KEY_BLOCK: usize = 16 * 1024;

/// The end of a private key block whose header ends at `at`: after its `-----END ... PRIVATE
/// KEY-----` line when that follows within [`MAX_KEY_BLOCK`] bytes, else after the lines of key
/// characters that follow the header (a block cut short still hides its body). Searched by hand:
/// a pattern spanning the block would scan to the end of the text from every header.
fn key_block_end(text: &str, at: usize) -> usize {
    let mut limit = (at + MAX_KEY_BLOCK).min(text.len());
    while !text.is_char_boundary(limit) {
        limit -= 1;
    }
    if let Some(i) = text[at..limit].find("-----END") {
        let tail = &text[at + i + 8..];
        if let Some(j) = tail.find("PRIVATE KEY-----")
            && tail[..j]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b' ')
        {
            return at + i + 8 + j + "PRIVATE KEY-----".len();
        }
    }
    // Key lines: each after a line break (or an escaped `\n`, as in a variable's value), the
    // first one also right after the header (a header joined to its body).
    let bytes = text.as_bytes();
    let mut end = at;
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let mut i = end;
        if bytes.get(i) == Some(&b'\r') {
            i += 1;
        }
        if bytes.get(i) == Some(&b'\n') {
            i += 1;
        } else if bytes.get(i..i + 2) == Some(b"\\n") {
            i += 2;
        } else if !first {
            return end;
        }
        while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            i += 1;
        }
        let body = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            .count();
        if body < 16 {
            return end;
        }
        end = i + body;
    }
    end
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| c as f64 / n)
        .map(|p| -p * p.log2())
        .sum()
}

struct Compiled {
    rules: Vec<(&'static Rule, Regex)>,
    /// Values known to be secret whatever their shape: the keys abo hands out.
    known: Vec<String>,
}

/// The rule of a finding that is the value of a key abo knows (an API key, a token it handed out).
pub const KNOWN_SECRET: &str = "known-secret";

/// The detector. Cheap to clone: the compiled rules are shared.
#[derive(Clone)]
pub struct Scanner(Arc<Compiled>);

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scanner").field(&self.0.rules.len()).finish()
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self(Arc::new(Compiled {
            rules: RULES
                .iter()
                .filter_map(|r| Regex::new(r.pattern).ok().map(|re| (r, re)))
                .collect(),
            known: Vec::new(),
        }))
    }
}

/// A secret in a text: its rule and where it is written, in one or more pieces of the original.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hit {
    rule: &'static str,
    pieces: Vec<Range<usize>>,
}

/// A reading of the original text: its segments, each `(start in the reading, start in the
/// original)`, continuing up to the next segment.
struct View<'a> {
    text: Cow<'a, str>,
    segments: Vec<(usize, usize)>,
}

impl View<'_> {
    /// The pieces of the original a range of this reading comes from.
    fn pieces(&self, r: &Range<usize>) -> Vec<Range<usize>> {
        let first = self.segments.partition_point(|(v, _)| *v <= r.start);
        let mut out = Vec::new();
        for (k, &(v, o)) in self
            .segments
            .iter()
            .enumerate()
            .skip(first.saturating_sub(1))
        {
            if v >= r.end {
                break;
            }
            let end = self.segments.get(k + 1).map_or(usize::MAX, |(n, _)| *n);
            let (s, e) = (r.start.max(v), r.end.min(end));
            if s < e {
                out.push(o + (s - v)..o + (e - v));
            }
        }
        out
    }
}

/// Where a decoded string came from: its start in the decoded buffer, the encoded run in the
/// joined reading, and whether it was hex.
type Origin = (usize, Range<usize>, bool);

impl Scanner {
    /// This scanner, also finding these values (as written, joined, or base64/hex encoded),
    /// whatever their shape. Values under 8 characters are left out: they would match words.
    pub fn with_known(&self, values: impl IntoIterator<Item = String>) -> Self {
        // Each value also as the simple disguises an agent holding it might write it in:
        // reversed, rot13, base32 and percent-encoded (base64 and hex runs are decoded anyway,
        // and spaces between its characters are looked through).
        let mut known: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= 8)
            .flat_map(|v| disguises(&v))
            .collect();
        known.sort_by_key(|v| std::cmp::Reverse(v.len()));
        known.dedup();
        Self(Arc::new(Compiled {
            rules: self.0.rules.clone(),
            known,
        }))
    }

    /// The names of every rule, as findings carry them (without the `(base64)`/`(hex)` forms).
    pub fn rule_names(&self) -> Vec<&'static str> {
        self.0.rules.iter().map(|(r, _)| r.name).collect()
    }

    /// Findings in the lines a change adds to `path`, as (line number, text).
    pub fn scan(&self, path: &str, added: &[(usize, String)]) -> Vec<Finding> {
        // The lines in one text; lines that are not adjacent are kept apart by an empty line, so
        // that no joint spans them.
        let mut text = String::new();
        let mut starts: Vec<(usize, usize)> = Vec::with_capacity(added.len());
        let mut prev: Option<usize> = None;
        for (line, l) in added {
            if let Some(p) = prev {
                text.push('\n');
                if p + 1 != *line {
                    text.push('\n');
                }
            }
            starts.push((text.len(), *line));
            text.push_str(l);
            prev = Some(*line);
        }
        let line_at = |offset: usize| {
            let i = starts.partition_point(|(s, _)| *s <= offset);
            starts.get(i.saturating_sub(1)).map_or(0, |(_, l)| *l)
        };
        self.hits(&text)
            .into_iter()
            .map(|h| Finding {
                path: path.to_owned(),
                line: line_at(h.pieces.first().map_or(0, |p| p.start)),
                rule: h.rule,
                value: h.pieces.iter().map(|p| &text[p.clone()]).collect(),
            })
            .collect()
    }

    /// The text with every secret found in it replaced by `[REDACTED:<rule>]` (each piece of a
    /// split one).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans: Vec<(Range<usize>, &'static str)> = self
            .hits(text)
            .into_iter()
            .flat_map(|h| h.pieces.into_iter().map(move |p| (p, h.rule)))
            .collect();
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (r, rule) in spans {
            if r.start < at {
                continue;
            }
            out.push_str(&text[at..r.start]);
            out.push_str(&format!("[REDACTED:{rule}]"));
            at = r.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// Every secret in `text`, without overlaps: specific rules before the generic one, and within
    /// those, as written before joined before decoded. Ordered by where they start.
    fn hits(&self, text: &str) -> Vec<Hit> {
        let plain = View {
            text: Cow::Borrowed(text),
            segments: vec![(0, 0)],
        };
        let joined = self.joined(text);
        let decoded = joined
            .as_ref()
            .map_or_else(|| self.decoded(&plain), |j| self.decoded(j));
        let mut kept: Vec<Hit> = Vec::new();
        let overlaps = |kept: &[Hit], h: &Hit| {
            kept.iter().any(|k| {
                k.pieces
                    .iter()
                    .any(|a| h.pieces.iter().any(|b| a.start < b.end && b.start < a.end))
            })
        };
        for generic in [false, true] {
            let rules = || {
                self.0
                    .rules
                    .iter()
                    .filter(move |(r, _)| r.generic == generic)
            };
            for (rule, re) in rules() {
                for h in matches(rule, re, &plain) {
                    if !overlaps(&kept, &h) {
                        kept.push(h);
                    }
                }
            }
            if let Some(j) = &joined {
                for (rule, re) in rules() {
                    for h in matches(rule, re, j) {
                        // One piece: the text as written, already read.
                        if h.pieces.len() > 1 && !overlaps(&kept, &h) {
                            kept.push(h);
                        }
                    }
                }
            }
            if let Some((buffer, origins)) = &decoded {
                let view = joined.as_ref().unwrap_or(&plain);
                for (rule, re) in rules() {
                    for c in re.captures_iter(buffer) {
                        let Some(m) = c.get(1).or_else(|| c.get(0)) else {
                            continue;
                        };
                        if !(rule.check)(m.as_str()) {
                            continue;
                        }
                        let i = origins.partition_point(|(s, _, _)| *s <= m.start());
                        let Some((_, run, hex)) = origins.get(i.saturating_sub(1)) else {
                            continue;
                        };
                        let h = Hit {
                            rule: if *hex { rule.hex } else { rule.base64 },
                            pieces: view.pieces(run),
                        };
                        if !overlaps(&kept, &h) {
                            kept.push(h);
                        }
                    }
                }
            }
        }
        let spaced = (!self.0.known.is_empty()).then(|| without_spaces(text));
        for v in &self.0.known {
            let mut found: Vec<Hit> = Vec::new();
            for view in std::iter::once(&plain)
                .chain(joined.as_ref())
                .chain(spaced.as_ref())
            {
                found.extend(view.text.match_indices(v.as_str()).map(|(i, _)| Hit {
                    rule: KNOWN_SECRET,
                    pieces: view.pieces(&(i..i + v.len())),
                }));
            }
            if let Some((buffer, origins)) = &decoded {
                let view = joined.as_ref().unwrap_or(&plain);
                for (i, _) in buffer.match_indices(v.as_str()) {
                    let k = origins.partition_point(|(s, _, _)| *s <= i);
                    if let Some((_, run, _)) = origins.get(k.saturating_sub(1)) {
                        found.push(Hit {
                            rule: KNOWN_SECRET,
                            pieces: view.pieces(run),
                        });
                    }
                }
            }
            for h in found {
                if !overlaps(&kept, &h) {
                    kept.push(h);
                }
            }
        }
        kept.sort_by_key(|h| h.pieces.first().map_or(0, |p| p.start));
        kept
    }

    /// The joined reading, if any joint is removed.
    fn joined<'a>(&self, text: &'a str) -> Option<View<'a>> {
        let mut removed = joints(text);
        let quoted = removed.len();
        removed.extend(wraps(text));
        if removed.is_empty() {
            return None;
        }
        // A joint holds quotes around its line break, a wrap token characters: they never overlap.
        if quoted > 0 && quoted < removed.len() {
            removed.sort_by_key(|r| r.start);
        }
        let mut out = String::with_capacity(text.len());
        let mut segments = Vec::with_capacity(removed.len() + 1);
        segments.push((0, 0));
        let mut at = 0;
        for r in removed {
            if r.start < at {
                continue;
            }
            out.push_str(&text[at..r.start]);
            at = r.end;
            segments.push((out.len(), at));
        }
        out.push_str(&text[at..]);
        Some(View {
            text: Cow::Owned(out),
            segments,
        })
    }

    /// The printable strings of the base64 and hex runs of a reading, decoded, in one buffer (one
    /// a line), with where each came from.
    fn decoded(&self, view: &View<'_>) -> Option<(String, Vec<Origin>)> {
        let mut buffer = String::new();
        let mut origins: Vec<Origin> = Vec::new();
        let mut add = |bytes: &[u8], run: &Range<usize>, hex: bool| {
            for s in printable(bytes) {
                origins.push((buffer.len(), run.clone(), hex));
                buffer.push_str(s);
                buffer.push('\n');
            }
        };
        for (run, hex) in encoded_runs(&view.text) {
            let encoded = &view.text[run.clone()];
            // Each alignment: the run may start before the encoded text does.
            for skip in 0..if hex { 2 } else { 4 } {
                let bytes = if hex {
                    decode_hex(&encoded[skip..])
                } else {
                    decode_base64(&encoded[skip..])
                };
                add(&bytes, &run, hex);
            }
        }
        (!origins.is_empty()).then_some((buffer, origins))
    }
}

/// A known value and its simple disguises.
fn disguises(v: &str) -> Vec<String> {
    let rot13: String = v
        .chars()
        .map(|c| match c {
            'a'..='z' => char::from((c as u8 - b'a' + 13) % 26 + b'a'),
            'A'..='Z' => char::from((c as u8 - b'A' + 13) % 26 + b'A'),
            _ => c,
        })
        .collect();
    let percent: String = v.bytes().map(|b| format!("%{b:02X}")).collect();
    vec![
        v.to_owned(),
        v.chars().rev().collect(),
        rot13,
        base32(v.as_bytes()),
        percent.clone(),
        percent.to_ascii_lowercase(),
    ]
}

/// RFC 4648 base32, without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The reading with every space and tab left out (a value written a character at a time).
fn without_spaces(text: &str) -> View<'_> {
    let mut out = String::with_capacity(text.len());
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut last_kept_end: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c == ' ' || c == '\t' {
            continue;
        }
        if last_kept_end != Some(i) {
            segments.push((out.len(), i));
        }
        out.push(c);
        last_kept_end = Some(i + c.len_utf8());
    }
    View {
        text: Cow::Owned(out),
        segments,
    }
}

/// The hits of one rule in one reading.
fn matches(rule: &'static Rule, re: &Regex, view: &View<'_>) -> Vec<Hit> {
    re.captures_iter(&view.text)
        .filter_map(|c| {
            let m = c.get(1).or_else(|| c.get(0))?;
            let end = rule.extend.map_or(m.end(), |f| f(&view.text, m.end()));
            (rule.check)(m.as_str()).then(|| Hit {
                rule: rule.name,
                pieces: view.pieces(&(m.start()..end)),
            })
        })
        .collect()
}

/// Base64 in either alphabet, up to the first character of neither; a last partial group gives
/// the bytes it holds.
fn decode_base64(s: &str) -> Vec<u8> {
    let sextet = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let Some(v) = sextet(b) else { break };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

fn decode_hex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks_exact(2)
        .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// The runs of printable ASCII of at least [`MIN_STRING`] bytes.
fn printable(bytes: &[u8]) -> impl Iterator<Item = &str> {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t'))
        .filter(|s| s.len() >= MIN_STRING)
        .filter_map(|s| std::str::from_utf8(s).ok())
}
