//! Terms for full-text search: identifiers split at `snake_case` and `camelCase` boundaries
//! (the whole identifier kept too), lowercased, lightly stemmed, without stop words, numbers and
//! hash-like runs. Queries and documents go through the same function.

use std::collections::BTreeMap;

/// Words too common in prose or code to tell files apart.
const STOP: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "async", "at", "await",
    "be", "been", "bool", "but", "by", "can", "class", "const", "could", "crate", "def", "do",
    "doe", "done", "dyn", "each", "elif", "else", "enum", "err", "f64", "false", "fn", "for",
    "from", "func", "function", "get", "had", "has", "have", "he", "her", "here", "his", "how",
    "i32", "i64", "if", "impl", "import", "in", "int", "into", "is", "it", "its", "let", "match",
    "may", "mod", "more", "most", "must", "mut", "new", "nil", "no", "none", "not", "now", "null",
    "of", "ok", "on", "one", "only", "option", "or", "other", "our", "out", "over", "pub", "ref",
    "result", "return", "self", "set", "she", "should", "so", "some", "static", "str", "string",
    "struct", "such", "super", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "to", "too", "trait", "true", "two", "u16", "u32", "u64", "u8", "up",
    "us", "use", "used", "usize", "var", "vec", "very", "via", "void", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "why", "will", "with", "would", "you", "your",
];

/// Identifiers longer than this are not split (generated or encoded text).
const MAX_WORD: usize = 64;

fn is_stop(t: &str) -> bool {
    STOP.binary_search(&t).is_ok()
}

/// A light stemmer: plural and `-ing`/`-ed`/`-e` endings, so that "parse", "parses", "parsed"
/// and "parsing" meet.
pub fn stem(t: &str) -> String {
    let mut s = t.to_owned();
    if s.len() > 4 && s.ends_with("ies") {
        s.truncate(s.len() - 3);
        s.push('y');
    } else if s.len() > 3 && s.ends_with('s') && !s.ends_with("ss") && !s.ends_with("us") {
        s.pop();
    }
    if s.len() > 5 && s.ends_with("ing") {
        s.truncate(s.len() - 3);
    } else if s.len() > 4 && s.ends_with("ed") {
        s.truncate(s.len() - 2);
    }
    if s.len() > 3 && s.ends_with('e') {
        s.pop();
    }
    s
}

fn hash_like(w: &str) -> bool {
    w.len() >= 12
        && w.bytes().all(|b| b.is_ascii_hexdigit())
        && w.bytes().any(|b| b.is_ascii_digit())
}

/// Splits an identifier at `_`, `-` and case changes (`HTTPServer` -> `HTTP`, `Server`).
fn parts(word: &str) -> Vec<&str> {
    let b = word.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=b.len() {
        let cut = i == b.len()
            || b[i] == b'_'
            || (b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
            || (b[i].is_ascii_uppercase()
                && b[i - 1].is_ascii_uppercase()
                && b.get(i + 1).is_some_and(u8::is_ascii_lowercase));
        if cut {
            let p = word[start..i].trim_matches('_');
            if !p.is_empty() {
                out.push(p);
            }
            start = if i < b.len() && b[i] == b'_' {
                i + 1
            } else {
                i
            };
        }
    }
    out
}

/// Calls `f` with each term of `text`, in order.
pub fn each(text: &str, mut f: impl FnMut(String)) {
    for word in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        if word.len() > MAX_WORD || hash_like(word) || word.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let ps = parts(word);
        if ps.len() > 1 {
            let whole = word.trim_matches('_').to_ascii_lowercase();
            if whole.len() >= 3 {
                f(whole);
            }
        }
        for p in ps {
            let low = p.to_ascii_lowercase();
            if low.len() < 2 || low.bytes().all(|b| b.is_ascii_digit()) || is_stop(&low) {
                continue;
            }
            let s = stem(&low);
            if !is_stop(&s) {
                f(s);
            }
        }
    }
}

/// The terms of `text`, in order (with repeats).
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    each(text, |t| out.push(t));
    out
}

/// How often each term occurs in `text`.
pub fn bag(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    each(text, |t| *out.entry(t).or_insert(0) += 1);
    out
}

/// A query's distinct terms, in the order they first appear, at most `max`.
pub fn query(text: &str, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    each(text, |t| {
        if out.len() < max && !out.contains(&t) {
            out.push(t);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn stop_words_are_sorted() {
        let mut s = STOP.to_vec();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), STOP.len());
        assert!(STOP.windows(2).all(|w| w[0] < w[1]), "{STOP:?}");
    }

    #[test]
    fn identifiers_split_and_stemmed() {
        assert_eq!(
            terms("fn relevant_files(HTTPServer) parses the Parsing of 0xdeadbeef1234 42 tests"),
            [
                "relevant_files",
                "relevant",
                "fil",
                "httpserver",
                "http",
                "server",
                "pars",
                "pars",
                "0xdeadbeef1234",
                "test"
            ]
        );
        assert_eq!(stem("policies"), "policy");
        assert_eq!(stem("parsed"), stem("parse"));
        assert_eq!(query("Prompt prompt budget", 8), ["prompt", "budget"]);
    }
}
