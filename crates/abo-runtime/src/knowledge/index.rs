//! Indexing one commit: its regular files' blobs, read from git's objects by id (`git ls-tree`,
//! then `git show` of the blobs never read before, split by the sizes `ls-tree` gave), bounded,
//! redacted, analysed ([`abo_knowledge::facts::analyze`]) and stored; then the commit's path list.
//! A file is read again only when its content or its path changes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use abo_core::ids::{CommitSha, Timestamp};
use abo_knowledge::facts;
use abo_store::{KnowledgeBlob, Store};

use super::KnowledgeError;
use crate::git::Git;
use crate::redact::Redactor;

/// Files larger than this are indexed by their path only.
pub const MAX_BLOB: u64 = 256 * 1024;
/// At most this many files of a commit are indexed (the first by path).
pub const MAX_FILES: usize = 200_000;
/// Bytes asked of one `git show`.
const SHOW_BYTES: u64 = 16 << 20;
/// Blobs asked of one `git show` (its command line).
const SHOW_BLOBS: usize = 1_000;

/// A regular file of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub blob: String,
    pub size: u64,
}

/// What indexing a commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Indexed {
    pub files: usize,
    /// Files read now (their content or path was new).
    pub read: usize,
    /// Already indexed: nothing read.
    pub cached: bool,
}

/// The key a file's facts are kept under: its blob and its path (the path's terms count in).
pub fn key(blob: &str, path: &str) -> String {
    let h = Sha256::digest(path.as_bytes());
    format!("{blob}:{}", hex::encode(&h[..8]))
}

/// The commit's regular files (no links, no gitlinks), by path.
pub async fn entries(git: &Git, commit: &CommitSha) -> Result<Vec<Entry>, KnowledgeError> {
    let out = git
        .run_bytes(
            &git.root,
            &["ls-tree", "-r", "-l", "-z", "--full-tree", commit.as_str()],
        )
        .await?;
    let mut v = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let head = String::from_utf8_lossy(&rec[..tab]);
        let Ok(path) = std::str::from_utf8(&rec[tab + 1..]) else {
            continue; // not UTF-8: no prompt could name it
        };
        let f: Vec<&str> = head.split_whitespace().collect();
        if f.len() != 4 || !(f[0] == "100644" || f[0] == "100755") || f[1] != "blob" {
            continue;
        }
        v.push(Entry {
            path: path.to_owned(),
            blob: f[2].to_owned(),
            size: f[3].parse().unwrap_or(u64::MAX),
        });
        if v.len() >= MAX_FILES {
            break;
        }
    }
    Ok(v)
}

/// Reads blobs by id: their exact bytes, by blob.
async fn read_blobs(
    git: &Git,
    want: &[(String, u64)],
) -> Result<BTreeMap<String, Vec<u8>>, KnowledgeError> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < want.len() {
        let mut j = i;
        let mut bytes = 0;
        while j < want.len() && j - i < SHOW_BLOBS && (j == i || bytes + want[j].1 <= SHOW_BYTES) {
            bytes += want[j].1;
            j += 1;
        }
        let mut args: Vec<&str> = vec!["show"];
        args.extend(want[i..j].iter().map(|(b, _)| b.as_str()));
        let data = git.run_bytes(&git.root, &args).await?;
        let mut at = 0usize;
        for (b, size) in &want[i..j] {
            let n = usize::try_from(*size).unwrap_or(usize::MAX);
            let Some(chunk) = data.get(at..at.saturating_add(n)) else {
                break;
            };
            out.insert(b.clone(), chunk.to_vec());
            at += n;
        }
        i = j;
    }
    Ok(out)
}

/// What the index keeps of a file: its facts, from its redacted text (binary and oversized
/// files by their path alone).
pub fn blob_facts(
    path: &str,
    content: Option<&[u8]>,
    redactor: &Redactor,
) -> (String, facts::Facts) {
    let text = content
        .filter(|c| !c[..c.len().min(8192)].contains(&0))
        .map(|c| redactor.redact(&String::from_utf8_lossy(c)));
    let f = facts::analyze(path, text.as_deref().unwrap_or(""));
    let lang = match &text {
        Some(_) => f.lang.map_or("text", |l| l.as_str()).to_owned(),
        None => "unread".to_owned(),
    };
    (lang, f)
}

/// Indexes `commit` of the repository `repo`, reading only files never read before.
pub async fn index_commit(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    repo: &str,
    commit: &CommitSha,
    at: Timestamp,
) -> Result<Indexed, KnowledgeError> {
    if store.knowledge_indexed(repo, commit.as_str(), at).await? {
        return Ok(Indexed {
            cached: true,
            ..Default::default()
        });
    }
    let files = entries(git, commit).await?;
    let keys: Vec<String> = files.iter().map(|e| key(&e.blob, &e.path)).collect();
    let known = store.knowledge_known_blobs(repo, &keys).await?;
    let fresh: Vec<(&Entry, &String)> = files
        .iter()
        .zip(&keys)
        .filter(|(_, k)| !known.contains(*k))
        .collect();
    let mut want: Vec<(String, u64)> = fresh
        .iter()
        .filter(|(e, _)| e.size <= MAX_BLOB)
        .map(|(e, _)| (e.blob.clone(), e.size))
        .collect();
    want.sort();
    want.dedup();
    let contents = read_blobs(git, &want).await?;
    let mut rows = Vec::with_capacity(fresh.len());
    for (e, k) in &fresh {
        let (lang, f) = blob_facts(&e.path, contents.get(&e.blob).map(Vec::as_slice), redactor);
        rows.push(KnowledgeBlob {
            blob: (*k).clone(),
            lang,
            len: f.len,
            terms: f.terms.into_iter().collect(),
            defs: f
                .defs
                .into_iter()
                .map(|d| (d.name, d.kind, d.line))
                .collect(),
            refs: f.refs.into_iter().collect(),
        });
    }
    for chunk in rows.chunks(2_000) {
        store.knowledge_put_blobs(repo, chunk).await?;
    }
    let read = fresh.len();
    drop(fresh);
    let tree: Vec<(String, String)> = files
        .iter()
        .zip(keys)
        .map(|(e, k)| (e.path.clone(), k))
        .collect();
    store
        .knowledge_put_tree(repo, commit.as_str(), &tree, at)
        .await?;
    Ok(Indexed {
        files: files.len(),
        read,
        cached: false,
    })
}
