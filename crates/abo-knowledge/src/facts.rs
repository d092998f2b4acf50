//! What the index keeps of one blob: its language, its terms with their counts, and its symbols.
//! The text given here has already been redacted: nothing secret reaches a term or a symbol.

use std::collections::BTreeMap;

use crate::lang::Lang;
use crate::symbols::{self, Def};
use crate::terms;

/// The path's own terms count this many times over (a file is about what it is named).
const PATH_WEIGHT: u32 = 3;

/// Distinct terms kept a file (the most frequent).
pub const MAX_TERMS: usize = 2_000;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub lang: Option<Lang>,
    /// Its length in terms (for BM25).
    pub len: u64,
    pub terms: BTreeMap<String, u32>,
    pub defs: Vec<Def>,
    pub refs: BTreeMap<String, u32>,
}

/// Analyses a file's (redacted) text. Symbols are read for the languages tree-sitter reads; the
/// terms include the definitions' names and the path's terms.
pub fn analyze(path: &str, text: &str) -> Facts {
    let lang = Lang::of(path);
    let mut bag = terms::bag(text);
    for t in terms::terms(path) {
        *bag.entry(t).or_insert(0) += PATH_WEIGHT;
    }
    if bag.len() > MAX_TERMS {
        let mut v: Vec<(String, u32)> = bag.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(MAX_TERMS);
        bag = v.into_iter().collect();
    }
    let len = bag.values().map(|n| u64::from(*n)).sum();
    let s = if lang.has_symbols() {
        symbols::extract(lang, text)
    } else {
        symbols::Symbols::default()
    };
    Facts {
        lang: Some(lang),
        len,
        terms: bag,
        defs: s.defs,
        refs: s.refs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_terms_weigh_and_symbols_are_read() {
        let f = analyze("src/prompt.rs", "pub fn build_prompt() { tokens() }");
        assert_eq!(f.lang, Some(Lang::Rust));
        assert_eq!(f.terms.get("prompt"), Some(&4));
        assert_eq!(f.terms.get("src"), Some(&3));
        assert_eq!(f.defs[0].name, "build_prompt");
        assert_eq!(f.refs.get("tokens"), Some(&1));
        assert_eq!(f.len, f.terms.values().map(|n| u64::from(*n)).sum::<u64>());
    }
}
