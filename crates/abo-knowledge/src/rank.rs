//! Ranking a repository's files for a task, in two steps around the store:
//!
//! 1. [`seeds`]: from the store's answers to the task's terms ([`Evidence`]): BM25 over each
//!    file's text, BM25 over past changes (commits, landed tasks) spread over the files they
//!    touched, definitions whose name the task says, and the files the task names.
//! 2. [`rank`]: personalised PageRank over the reference graph around the best seeds ([`Links`]:
//!    who references what the seeds define, and who defines what they reference), restarting at
//!    the seeds, added to the seeds' own scores.
//!
//! Every file ranked says why ([`Why`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::bm25::Collection;
use crate::pagerank;

/// A past change the index keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocKind {
    /// A commit of the repository's history: its message, the files it touched.
    Commit,
    /// A task abo landed: its statement, the files its diff touched.
    Landed,
    /// A task's failed attempt: its statement, the reasons and feedback.
    Failed,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Commit => "commit",
            DocKind::Landed => "landed",
            DocKind::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DocKind> {
        match s {
            "commit" => Some(DocKind::Commit),
            "landed" => Some(DocKind::Landed),
            "failed" => Some(DocKind::Failed),
            _ => None,
        }
    }
}

/// A term found in a file: how often, and the file's length.
#[derive(Clone, Debug, PartialEq)]
pub struct FileHit {
    pub path: String,
    pub term: String,
    pub tf: u32,
    pub len: u64,
}

/// A term found in a past change.
#[derive(Clone, Debug, PartialEq)]
pub struct DocHit {
    pub kind: DocKind,
    pub key: String,
    pub term: String,
    pub tf: u32,
    pub len: u64,
}

/// A past change: its title (a commit's subject, a task's title) and the files it touched that
/// are in the tree ranked.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub kind: DocKind,
    pub key: String,
    pub title: String,
    pub files: Vec<String>,
}

/// What the store answered for a task's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub files: Option<Collection>,
    pub file_hits: Vec<FileHit>,
    pub docs: Option<Collection>,
    pub doc_hits: Vec<DocHit>,
    pub doc_info: Vec<Doc>,
    /// Definitions whose name is one of the task's terms: (path, name).
    pub named_defs: Vec<(String, String)>,
    /// Files the task names by path.
    pub named: Vec<String>,
}

/// Why a file was chosen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// The task names it.
    Named,
    /// Its text holds the task's terms (the ones that weighed most).
    Terms { terms: Vec<String> },
    /// It defines symbols the task names.
    Defines { symbols: Vec<String> },
    /// A similar past change touched it.
    Changed {
        kind: DocKind,
        key: String,
        title: String,
    },
    /// It uses, or is used by, a file ranked for the task.
    Linked {
        file: String,
        names: Vec<String>,
        uses: bool,
    },
}

fn ticks(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Named => write!(f, "the task names it (by path or scope)"),
            Why::Terms { terms } => write!(f, "its text matches {}", ticks(terms)),
            Why::Defines { symbols } => {
                write!(f, "defines {}, named by the task", ticks(symbols))
            }
            Why::Changed { kind, key, title } => {
                let short: String = key.chars().take(10).collect();
                match kind {
                    DocKind::Commit => {
                        write!(f, "changed by the similar commit {short} \"{title}\"")
                    }
                    DocKind::Landed => {
                        write!(f, "changed by the similar landed task {key} \"{title}\"")
                    }
                    DocKind::Failed => {
                        write!(f, "named by the similar failed task {key} \"{title}\"")
                    }
                }
            }
            Why::Linked { file, names, uses } => {
                if *uses {
                    write!(f, "defines {} used by `{file}`", ticks(names))
                } else {
                    write!(f, "uses {} of `{file}`", ticks(names))
                }
            }
        }
    }
}

/// How much each kind of evidence weighs in a seed's score (each part scaled to 0..1 first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub text: f64,
    pub changes: f64,
    pub defines: f64,
    pub named: f64,
    /// The PageRank part of the final score.
    pub graph: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            text: 1.0,
            changes: 0.8,
            defines: 0.5,
            named: 2.0,
            graph: 0.5,
        }
    }
}

/// A file's seed score and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seed {
    pub score: f64,
    pub why: Vec<Why>,
}

/// Past changes considered, the best first.
pub const TOP_DOCS: usize = 20;
/// A change touching more files than this says little about any one of them.
const DOC_MAX_FILES: usize = 40;

fn scale(m: &mut BTreeMap<String, f64>) {
    let max = m.values().copied().fold(0.0_f64, f64::max);
    if max > 0.0 {
        for v in m.values_mut() {
            *v /= max;
        }
    }
}

/// Per document of `hits`: its BM25 score and its terms by weight.
fn bm25<K: Ord + Clone>(
    c: Collection,
    hits: impl Iterator<Item = (K, String, u32, u64)>,
) -> BTreeMap<K, (f64, Vec<(f64, String)>)> {
    let hits: Vec<(K, String, u32, u64)> = hits.collect();
    let mut df: BTreeMap<&str, BTreeSet<&K>> = BTreeMap::new();
    for (k, t, _, _) in &hits {
        df.entry(t.as_str()).or_default().insert(k);
    }
    let mut out: BTreeMap<K, (f64, Vec<(f64, String)>)> = BTreeMap::new();
    for (k, t, tf, len) in &hits {
        let d = df.get(t.as_str()).map_or(1, |s| s.len() as u64);
        let s = c.score(*tf, *len, d);
        let e = out.entry(k.clone()).or_default();
        e.0 += s;
        e.1.push((s, t.clone()));
    }
    out
}

/// Past changes by their BM25 score for the task's terms, best first, at most `k`; with the terms
/// that weighed most.
pub fn top_docs(
    c: Collection,
    hits: &[DocHit],
    k: usize,
) -> Vec<(DocKind, String, f64, Vec<String>)> {
    let by_doc = bm25(
        c,
        hits.iter()
            .map(|h| ((h.kind, h.key.clone()), h.term.clone(), h.tf, h.len)),
    );
    let mut v: Vec<(DocKind, String, f64, Vec<String>)> = by_doc
        .into_iter()
        .map(|((kind, key), (s, mut terms))| {
            terms.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            (
                kind,
                key,
                s,
                terms.into_iter().take(4).map(|(_, t)| t).collect(),
            )
        })
        .collect();
    v.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| (a.0, &a.1).cmp(&(b.0, &b.1)))
    });
    v.truncate(k);
    v
}

/// The seeds: every file with evidence, its score and why.
pub fn seeds(ev: &Evidence, w: &Weights) -> BTreeMap<String, Seed> {
    let mut out: BTreeMap<String, Seed> = BTreeMap::new();
    // Full text.
    if let Some(c) = ev.files {
        let by_file = bm25(
            c,
            ev.file_hits
                .iter()
                .map(|h| (h.path.clone(), h.term.clone(), h.tf, h.len)),
        );
        let mut scores: BTreeMap<String, f64> =
            by_file.iter().map(|(p, (s, _))| (p.clone(), *s)).collect();
        scale(&mut scores);
        for (p, (_, mut terms)) in by_file {
            terms.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let e = out.entry(p.clone()).or_default();
            e.score += w.text * scores.get(&p).copied().unwrap_or(0.0);
            e.why.push(Why::Terms {
                terms: terms.into_iter().take(4).map(|(_, t)| t).collect(),
            });
        }
    }
    // Past changes, spread over the files they touched.
    if let Some(c) = ev.docs {
        let ranked = top_docs(c, &ev.doc_hits, TOP_DOCS);
        let info: BTreeMap<(DocKind, &str), &Doc> = ev
            .doc_info
            .iter()
            .map(|d| ((d.kind, d.key.as_str()), d))
            .collect();
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        let mut whys: BTreeMap<String, Why> = BTreeMap::new();
        for (kind, key, s, _) in ranked {
            let Some(d) = info.get(&(kind, key.as_str())) else {
                continue;
            };
            if d.files.is_empty() || d.files.len() > DOC_MAX_FILES {
                continue;
            }
            let share = s / (d.files.len() as f64).sqrt();
            for f in &d.files {
                *scores.entry(f.clone()).or_insert(0.0) += share;
                whys.entry(f.clone()).or_insert_with(|| Why::Changed {
                    kind,
                    key: key.clone(),
                    title: d.title.clone(),
                });
            }
        }
        scale(&mut scores);
        for (f, s) in scores {
            let e = out.entry(f.clone()).or_default();
            e.score += w.changes * s;
            if let Some(why) = whys.remove(&f) {
                e.why.push(why);
            }
        }
    }
    // Definitions the task names: a name defined in fewer files says more.
    let mut definers: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, n) in &ev.named_defs {
        *definers.entry(n.as_str()).or_insert(0) += 1;
    }
    let mut scores: BTreeMap<String, f64> = BTreeMap::new();
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, n) in &ev.named_defs {
        let k = definers.get(n.as_str()).copied().unwrap_or(1) as f64;
        if names.entry(p.clone()).or_default().insert(n.clone()) {
            *scores.entry(p.clone()).or_insert(0.0) += 1.0 / k;
        }
    }
    scale(&mut scores);
    for (p, s) in scores {
        let e = out.entry(p.clone()).or_default();
        e.score += w.defines * s;
        e.why.push(Why::Defines {
            symbols: names
                .remove(&p)
                .unwrap_or_default()
                .into_iter()
                .take(4)
                .collect(),
        });
    }
    for p in &ev.named {
        let e = out.entry(p.clone()).or_default();
        e.score += w.named;
        e.why.insert(0, Why::Named);
    }
    out
}

/// The seeds whose neighbourhood the graph is built from: the best `k`.
pub fn graph_roots(seeds: &BTreeMap<String, Seed>, k: usize) -> Vec<String> {
    let mut v: Vec<(&String, f64)> = seeds.iter().map(|(p, s)| (p, s.score)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.into_iter().take(k).map(|(p, _)| p.clone()).collect()
}

/// The reference graph around the roots, as the store gives it: definitions (path, name) and
/// references (path, name, count), for the names the roots define or reference.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Links {
    pub defs: Vec<(String, String)>,
    pub refs: Vec<(String, String, u32)>,
}

/// The weight of a reference's edge back from the definition to its user.
const BACK: f64 = 0.5;

/// A name defined in more files than this is too common to link them.
const MAX_DEFINERS: usize = 8;

/// A file ranked for a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub path: String,
    pub score: f64,
    pub why: Vec<Why>,
}

/// The files for a task, best first, at most `limit`.
pub fn rank(
    seeds: &BTreeMap<String, Seed>,
    roots: &[String],
    links: &Links,
    w: &Weights,
    limit: usize,
) -> Vec<Ranked> {
    // Nodes: every seed and every file the links name.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut names: Vec<&str> = Vec::new();
    for p in seeds
        .keys()
        .map(String::as_str)
        .chain(links.defs.iter().map(|(p, _)| p.as_str()))
        .chain(links.refs.iter().map(|(p, _, _)| p.as_str()))
    {
        if !index.contains_key(p) {
            index.insert(p, names.len());
            names.push(p);
        }
    }
    let mut definers: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (p, n) in &links.defs {
        if let Some(&i) = index.get(p.as_str()) {
            definers.entry(n.as_str()).or_default().insert(i);
        }
    }
    // referer -> definer, weighted by how often and how specific the name is.
    let mut weights: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut via: BTreeMap<(usize, usize), BTreeSet<&str>> = BTreeMap::new();
    for (p, n, count) in &links.refs {
        let (Some(&a), Some(ds)) = (index.get(p.as_str()), definers.get(n.as_str())) else {
            continue;
        };
        if ds.len() > MAX_DEFINERS {
            continue;
        }
        for &b in ds {
            if a == b {
                continue;
            }
            // Rank flows to what a file uses, and half as much back to its users.
            let w = f64::from(*count).sqrt() / ds.len() as f64;
            *weights.entry((a, b)).or_insert(0.0) += w;
            *weights.entry((b, a)).or_insert(0.0) += BACK * w;
            via.entry((a, b)).or_default().insert(n.as_str());
        }
    }
    let edges: Vec<(usize, usize, f64)> = weights.iter().map(|(&(a, b), &w)| (a, b, w)).collect();
    let restart: Vec<f64> = names
        .iter()
        .map(|p| seeds.get(*p).map_or(0.0, |s| s.score))
        .collect();
    let pr = pagerank::personalised(names.len(), &edges, &restart);
    let max_pr = pr.iter().copied().fold(0.0_f64, f64::max);
    let max_seed = restart.iter().copied().fold(0.0_f64, f64::max);
    let root_set: BTreeSet<usize> = roots
        .iter()
        .filter_map(|r| index.get(r.as_str()).copied())
        .collect();
    let mut out: Vec<Ranked> = names
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let seed = if max_seed > 0.0 {
                restart[i] / max_seed
            } else {
                0.0
            };
            let graph = if max_pr > 0.0 { pr[i] / max_pr } else { 0.0 };
            let mut why = seeds.get(*p).map(|s| s.why.clone()).unwrap_or_default();
            // The strongest link to a root, for a file the graph brought in or raised.
            let best = root_set
                .iter()
                .filter(|&&r| r != i)
                .filter_map(|&r| {
                    let (uses, key) = if via.contains_key(&(r, i)) {
                        (true, (r, i))
                    } else if via.contains_key(&(i, r)) {
                        (false, (i, r))
                    } else {
                        return None;
                    };
                    Some((restart[r], r, uses, key))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
            if let Some((_, r, uses, key)) = best
                && why.len() < 3
            {
                why.push(Why::Linked {
                    file: names[r].to_owned(),
                    names: via
                        .get(&key)
                        .map(|s| s.iter().take(3).map(|n| (*n).to_owned()).collect())
                        .unwrap_or_default(),
                    uses,
                });
            }
            Ranked {
                path: (*p).to_owned(),
                score: seed + w.graph * graph,
                why,
            }
        })
        .filter(|r| r.score > 0.0 && !r.why.is_empty())
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    out.truncate(limit);
    out
}

/// The baseline the ranking is measured against: the task's own words matched to file names
/// (a file scores the number of the task's terms its path holds; a path the task names scores
/// most), best first.
pub fn by_name(query: &str, paths: &[String], limit: usize) -> Vec<String> {
    let q: BTreeSet<String> = crate::terms::query(query, 64).into_iter().collect();
    let mut scored: Vec<(usize, &String)> = paths
        .iter()
        .filter_map(|p| {
            let named = if query.contains(p.as_str()) { 100 } else { 0 };
            let hits = crate::terms::query(p, 64)
                .into_iter()
                .filter(|t| q.contains(t))
                .count();
            (named + hits > 0).then_some((named + hits, p))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(limit)
        .map(|(_, p)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn hit(path: &str, term: &str, tf: u32) -> FileHit {
        FileHit {
            path: path.into(),
            term: term.into(),
            tf,
            len: 100,
        }
    }

    #[test]
    fn seeds_then_graph_each_with_why() {
        let ev = Evidence {
            files: Some(Collection::new(10, 1000)),
            file_hits: vec![
                hit("src/prompt.rs", "prompt", 9),
                hit("src/prompt.rs", "budget", 2),
                hit("src/other.rs", "budget", 1),
            ],
            docs: Some(Collection::new(5, 50)),
            doc_hits: vec![DocHit {
                kind: DocKind::Commit,
                key: "abc1234567".into(),
                term: "prompt".into(),
                tf: 1,
                len: 8,
            }],
            doc_info: vec![Doc {
                kind: DocKind::Commit,
                key: "abc1234567".into(),
                title: "Prompt: shorter".into(),
                files: vec!["src/prompt.rs".into(), "docs/prompt.md".into()],
            }],
            named_defs: vec![("src/tokens.rs".into(), "count_tokens".into())],
            named: vec![],
        };
        let w = Weights::default();
        let s = seeds(&ev, &w);
        let roots = graph_roots(&s, 2);
        assert_eq!(roots[0], "src/prompt.rs");
        // prompt.rs uses `Tokenizer`, defined in tok.rs; main.rs uses prompt.rs's `build`.
        let links = Links {
            defs: vec![
                ("src/tok.rs".into(), "Tokenizer".into()),
                ("src/prompt.rs".into(), "build".into()),
            ],
            refs: vec![
                ("src/prompt.rs".into(), "Tokenizer".into(), 4),
                ("src/main.rs".into(), "build".into(), 1),
            ],
        };
        let r = rank(&s, &roots, &links, &w, 10);
        let paths: Vec<&str> = r.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths[0], "src/prompt.rs");
        assert!(
            paths.contains(&"src/tok.rs") && paths.contains(&"src/main.rs"),
            "{paths:?}"
        );
        let why = |p: &str| {
            r.iter()
                .find(|r| r.path == p)
                .unwrap()
                .why
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            why("src/prompt.rs"),
            [
                "its text matches `prompt`, `budget`",
                "changed by the similar commit abc1234567 \"Prompt: shorter\""
            ]
        );
        assert_eq!(
            why("src/tok.rs"),
            ["defines `Tokenizer` used by `src/prompt.rs`"]
        );
        assert_eq!(why("src/main.rs"), ["uses `build` of `src/prompt.rs`"]);
        assert_eq!(
            why("src/tokens.rs"),
            ["defines `count_tokens`, named by the task"]
        );
        // A file only the graph reached ranks under the text's best match.
        let score = |p: &str| r.iter().find(|r| r.path == p).unwrap().score;
        assert!(score("src/prompt.rs") > score("src/tok.rs"));
    }

    #[test]
    fn baseline_matches_names() {
        let paths: Vec<String> = ["src/prompt.rs", "src/lib.rs", "docs/prompt_budget.md"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            by_name("Prompt: the budget of src/lib.rs", &paths, 5),
            ["src/lib.rs", "src/prompt.rs", "docs/prompt_budget.md"]
        );
    }
}
