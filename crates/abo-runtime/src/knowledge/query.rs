//! A task's context from the index: its files ranked with why, the symbols those files define
//! (a repository map), similar tasks that landed and failures to avoid, each with why.

use std::collections::{BTreeMap, BTreeSet};

use abo_core::ids::Timestamp;
use abo_knowledge::bm25::Collection;
use abo_knowledge::rank::{self, Doc, DocHit, DocKind, Evidence, FileHit, Links, Ranked, Weights};
use abo_knowledge::terms;
use abo_store::Store;

use super::KnowledgeError;

/// The task's terms asked of the index, at most.
const QUERY_TERMS: usize = 48;
/// Seeds whose neighbourhood the reference graph is built from.
const ROOTS: usize = 12;
/// Names followed from the roots, at most, each way.
const LINK_NAMES: usize = 300;
/// Definitions shown for each file of the map, at most.
const MAP_DEFS: usize = 12;
/// Files whose definitions make the map.
const MAP_FILES: usize = 10;
/// Similar landed tasks and failures shown, at most, each.
const EXAMPLES: usize = 3;

/// A similar past task, and why it was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub kind: DocKind,
    pub key: String,
    pub title: String,
    pub body: String,
    pub files: Vec<String>,
    /// The task's terms it shares, the most telling first.
    pub shared: Vec<String>,
}

/// What the index says about a task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    pub files: Vec<Ranked>,
    /// Definitions (name, kind, line) of the best files, by path.
    pub symbols: BTreeMap<String, Vec<(String, String, u32)>>,
    pub landed: Vec<Example>,
    pub failed: Vec<Example>,
}

/// The question asked of the index.
pub struct Ask<'a> {
    pub repo: &'a str,
    pub commit: &'a str,
    /// The task's statement.
    pub text: &'a str,
    /// Files the task names by path.
    pub named: &'a [String],
    /// Only past changes before this time count (ms).
    pub before: Timestamp,
    pub limit: usize,
    /// How much each kind of evidence weighs (the default in prompts).
    pub weights: Weights,
}

/// The task's context; the commit must be indexed.
pub async fn context(store: &Store, ask: &Ask<'_>) -> Result<Context, KnowledgeError> {
    let (repo, commit) = (ask.repo, ask.commit);
    let q = terms::query(ask.text, QUERY_TERMS);
    let (n, total) = store.knowledge_file_stats(repo, commit).await?;
    // A term in more than a fifth of the files (and more than a few) says little of any.
    let max_df = (n / 5).max(50);
    let (file_hits, _common) = store.knowledge_file_hits(repo, commit, &q, max_df).await?;
    let file_hits = file_hits
        .into_iter()
        .map(|(path, term, tf, len)| FileHit {
            path,
            term,
            tf,
            len,
        })
        .collect();
    let (dn, dtotal) = store.knowledge_doc_stats(repo, ask.before).await?;
    let doc_hits: Vec<DocHit> = store
        .knowledge_doc_hits(repo, ask.before, &q)
        .await?
        .into_iter()
        .filter_map(|(kind, key, term, tf, len)| {
            Some(DocHit {
                kind: DocKind::parse(&kind)?,
                key,
                term,
                tf,
                len,
            })
        })
        .collect();
    let docs_c = Collection::new(dn, dtotal);
    let top = rank::top_docs(docs_c, &doc_hits, rank::TOP_DOCS + 2 * EXAMPLES);
    let keys: Vec<(String, String)> = top
        .iter()
        .map(|(k, key, _, _)| (k.as_str().to_owned(), key.clone()))
        .collect();
    let stored = store.knowledge_docs(repo, &keys).await?;
    let touched: Vec<String> = stored
        .iter()
        .flat_map(|d| d.files.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let present = store.knowledge_present(repo, commit, &touched).await?;
    let doc_info: Vec<Doc> = stored
        .iter()
        .filter_map(|d| {
            Some(Doc {
                kind: DocKind::parse(&d.kind)?,
                key: d.key.clone(),
                title: d.title.clone(),
                files: d
                    .files
                    .iter()
                    .filter(|f| present.contains(*f))
                    .cloned()
                    .collect(),
            })
        })
        .collect();
    let named_terms = identifiers(ask.text);
    let named_defs = store
        .knowledge_defs_named(repo, commit, &named_terms)
        .await?;
    let named: Vec<String> = store
        .knowledge_present(repo, commit, ask.named)
        .await?
        .into_iter()
        .collect();
    let ev = Evidence {
        files: Some(Collection::new(n, total)),
        file_hits,
        docs: Some(docs_c),
        doc_hits,
        doc_info,
        named_defs,
        named,
    };
    let w = ask.weights;
    let seeds = rank::seeds(&ev, &w);
    let roots = rank::graph_roots(&seeds, ROOTS);
    let links = links(store, repo, commit, &roots).await?;
    let files = rank::rank(&seeds, &roots, &links, &w, ask.limit);
    let map_paths: Vec<String> = files
        .iter()
        .take(MAP_FILES)
        .map(|r| r.path.clone())
        .collect();
    let mut symbols: BTreeMap<String, Vec<(String, String, u32)>> = BTreeMap::new();
    for (p, name, kind, line) in store.knowledge_defs_in(repo, commit, &map_paths).await? {
        let v = symbols.entry(p).or_default();
        if v.len() < MAP_DEFS {
            v.push((name, kind, line));
        }
    }
    let example = |kind: DocKind| -> Vec<Example> {
        top.iter()
            .filter(|(k, _, _, _)| *k == kind)
            .filter_map(|(k, key, _, shared)| {
                let d = stored
                    .iter()
                    .find(|d| d.kind == k.as_str() && &d.key == key)?;
                Some(Example {
                    kind: *k,
                    key: key.clone(),
                    title: d.title.clone(),
                    body: d.body.clone(),
                    files: d.files.clone(),
                    shared: shared.clone(),
                })
            })
            .take(EXAMPLES)
            .collect()
    };
    Ok(Context {
        files,
        symbols,
        landed: example(DocKind::Landed),
        failed: example(DocKind::Failed),
    })
}

/// The identifiers a text names, lowercased: words written as code (`snake_case`, `camelCase`,
/// or in backticks). A plain word ("budget") names no symbol.
pub fn identifiers(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (i, part) in text.split('`').enumerate() {
        for w in part
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.len() >= 3 && w.len() <= 64)
        {
            let inner = w.trim_matches('_');
            let camel = inner
                .as_bytes()
                .windows(2)
                .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase());
            if i % 2 == 1 || inner.contains('_') || camel {
                out.insert(w.to_ascii_lowercase());
            }
        }
    }
    out.into_iter().take(QUERY_TERMS).collect()
}

/// The reference graph around the roots: who defines what they reference, who references what
/// they define.
async fn links(
    store: &Store,
    repo: &str,
    commit: &str,
    roots: &[String],
) -> Result<Links, KnowledgeError> {
    if roots.is_empty() {
        return Ok(Links::default());
    }
    let out_refs = store.knowledge_refs_in(repo, commit, roots).await?;
    let mut used: Vec<(&String, u32)> = out_refs
        .iter()
        .filter(|(_, n, _)| n.len() >= 4)
        .map(|(_, n, c)| (n, *c))
        .collect();
    used.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut names: Vec<String> = used.into_iter().map(|(n, _)| n.clone()).collect();
    names.dedup();
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names.truncate(LINK_NAMES);
    let defs_used = store.knowledge_defs_by_name(repo, commit, &names).await?;
    let own_defs = store.knowledge_defs_in(repo, commit, roots).await?;
    let mut defined: Vec<String> = own_defs
        .iter()
        .map(|(_, n, _, _)| n.clone())
        .filter(|n| n.len() >= 4)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    defined.truncate(LINK_NAMES);
    let in_refs = store.knowledge_refs_to(repo, commit, &defined).await?;
    let mut defs: Vec<(String, String)> =
        defs_used.into_iter().map(|(p, n, _, _)| (p, n)).collect();
    defs.extend(own_defs.into_iter().map(|(p, n, _, _)| (p, n)));
    defs.sort();
    defs.dedup();
    let mut refs = out_refs;
    refs.extend(in_refs);
    refs.sort();
    refs.dedup();
    Ok(Links { defs, refs })
}
