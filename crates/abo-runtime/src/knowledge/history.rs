//! The repository's history as past changes: each commit's message (redacted) and the files it
//! touched, for BM25 over messages. Only commits not yet recorded are read.

use abo_core::ids::{CommitSha, Timestamp};
use abo_knowledge::rank::DocKind;
use abo_knowledge::terms;
use abo_store::{KnowledgeDoc, Store};

use super::KnowledgeError;
use crate::git::Git;
use crate::redact::Redactor;

/// The newest commits read, at most.
pub const MAX_COMMITS: usize = 5_000;
/// Commits read per `git show`.
const SHOW_COMMITS: usize = 200;
/// A message is kept this long.
const BODY_CHARS: usize = 2_000;
/// Files kept per commit.
const MAX_FILES: usize = 200;

/// A commit as the history's parser read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    /// Committer time, ms.
    pub at: i64,
    pub message: String,
    pub files: Vec<String>,
}

/// Parses `git show -z --name-only --format=%x1e%H%x1f%ct%x1f%B%x1f`.
pub fn parse(out: &str) -> Vec<Commit> {
    out.split('\u{1e}')
        .filter_map(|rec| {
            let mut f = rec.splitn(4, '\u{1f}');
            let sha = f.next()?.trim().to_owned();
            let at = f.next()?.trim().parse::<i64>().ok()?.saturating_mul(1000);
            let message = f.next()?.trim().to_owned();
            let files = f
                .next()
                .unwrap_or("")
                .split('\0')
                .map(|p| p.trim_start_matches('\n'))
                .filter(|p| !p.is_empty())
                .take(MAX_FILES)
                .map(str::to_owned)
                .collect();
            (!sha.is_empty()).then_some(Commit {
                sha,
                at,
                message,
                files,
            })
        })
        .collect()
}

/// The commit as a past change: its subject the title, its message the text searched.
pub fn doc(c: &Commit, redactor: &Redactor) -> KnowledgeDoc {
    let message = redactor.redact(&c.message);
    let bag = terms::bag(&message);
    KnowledgeDoc {
        kind: DocKind::Commit.as_str().into(),
        key: c.sha.clone(),
        at: Timestamp(c.at),
        title: message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect(),
        body: message.chars().take(BODY_CHARS).collect(),
        files: c.files.clone(),
        len: bag.values().map(|n| u64::from(*n)).sum(),
        terms: bag.into_iter().collect(),
    }
}

/// Records the commits `head` descends from (the newest [`MAX_COMMITS`], merges left out) that
/// are not recorded yet; returns how many were read.
pub async fn index_history(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    repo: &str,
    head: &CommitSha,
) -> Result<usize, KnowledgeError> {
    let n = format!("-n{MAX_COMMITS}");
    let list = git
        .run(&["rev-list", "--no-merges", &n, head.as_str()])
        .await?;
    let all: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let known = store
        .knowledge_known_docs(repo, DocKind::Commit.as_str(), &all)
        .await?;
    let fresh: Vec<&String> = all.iter().filter(|s| !known.contains(*s)).collect();
    let mut read = 0;
    for chunk in fresh.chunks(SHOW_COMMITS) {
        let mut args = vec![
            "show",
            "-z",
            "--name-only",
            "--no-renames",
            "--format=%x1e%H%x1f%ct%x1f%B%x1f",
        ];
        args.extend(chunk.iter().map(|s| s.as_str()));
        let out = git.run(&args).await?;
        let docs: Vec<KnowledgeDoc> = parse(&out).iter().map(|c| doc(c, redactor)).collect();
        read += docs.len();
        store.knowledge_put_docs(repo, &docs).await?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shown_commits() {
        let out = "\u{1e}abc\u{1f}1700000000\u{1f}Prompt: shorter\n\nBody.\n\u{1f}\0\nsrc/a.rs\0docs/b.md\0\u{1e}def\u{1f}1700000001\u{1f}Empty\u{1f}\0";
        let c = parse(out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].sha, "abc");
        assert_eq!(c[0].at, 1_700_000_000_000);
        assert_eq!(c[0].message, "Prompt: shorter\n\nBody.");
        assert_eq!(c[0].files, ["src/a.rs", "docs/b.md"]);
        assert!(c[1].files.is_empty());
    }
}
