//! Retrieval measured on a repository's own history: for each commit, its message is the task
//! and the files it changed that its parent held are the answer. The index is the parent's
//! (updated commit by commit, so only changed files are read again) and the past changes are
//! those before the commit; the baseline ranks the parent's files by the message's terms in
//! their names ([`abo_knowledge::rank::by_name`]).

use std::collections::BTreeSet;

use abo_core::ids::{CommitSha, Timestamp};
use abo_store::Store;

use super::query::{self, Ask};
use super::{KnowledgeError, history, index};
use crate::git::Git;
use crate::redact::Redactor;

/// A commit changing more files than this (a reformat, a rename sweep) is left out.
pub const MAX_ANSWER: usize = 30;

/// Recall of the ranking and of the baseline, averaged over the commits scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Recall {
    pub commits: usize,
    pub at5: f64,
    pub at10: f64,
    pub base_at5: f64,
    pub base_at10: f64,
}

fn recall(ranked: &[String], answer: &BTreeSet<String>, k: usize) -> f64 {
    let hit = ranked
        .iter()
        .take(k)
        .filter(|p| answer.contains(*p))
        .count();
    hit as f64 / answer.len() as f64
}

/// Scores the newest `max` commits `head` descends from (merges and root commits left out).
pub async fn evaluate(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    head: &CommitSha,
    max: usize,
    at: Timestamp,
    weights: abo_knowledge::rank::Weights,
) -> Result<Recall, KnowledgeError> {
    let repo = super::repo_id(git, head).await?;
    history::index_history(git, store, redactor, &repo, head).await?;
    let n = format!("-n{max}");
    let list = git
        .run(&["rev-list", "--no-merges", "--reverse", &n, head.as_str()])
        .await?;
    let mut sum = Recall::default();
    for sha in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let shown = git
            .run(&[
                "show",
                "-z",
                "--name-only",
                "--no-renames",
                "--format=%x1e%H%x1f%ct%x1f%B%x1f",
                sha,
            ])
            .await?;
        let Some(c) = history::parse(&shown).into_iter().next() else {
            continue;
        };
        let Ok(parent) = git.rev_parse(&format!("{sha}^")).await else {
            continue; // a root commit
        };
        index::index_commit(git, store, redactor, &repo, &parent, at).await?;
        let paths: Vec<String> = store
            .knowledge_tree(&repo, parent.as_str())
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let held: BTreeSet<&String> = paths.iter().collect();
        let answer: BTreeSet<String> = c
            .files
            .iter()
            .filter(|f| held.contains(f))
            .cloned()
            .collect();
        if answer.is_empty() || c.files.len() > MAX_ANSWER {
            continue;
        }
        let message = redactor.redact(&c.message);
        let ctx = query::context(
            store,
            &Ask {
                repo: &repo,
                commit: parent.as_str(),
                text: &message,
                named: &[],
                before: Timestamp(c.at),
                limit: 10,
                weights,
            },
        )
        .await?;
        let ranked: Vec<String> = ctx.files.into_iter().map(|r| r.path).collect();
        let base = abo_knowledge::rank::by_name(&message, &paths, 10);
        sum.commits += 1;
        sum.at5 += recall(&ranked, &answer, 5);
        sum.at10 += recall(&ranked, &answer, 10);
        sum.base_at5 += recall(&base, &answer, 5);
        sum.base_at10 += recall(&base, &answer, 10);
    }
    let k = sum.commits.max(1) as f64;
    Ok(Recall {
        commits: sum.commits,
        at5: sum.at5 / k,
        at10: sum.at10 / k,
        base_at5: sum.base_at5 / k,
        base_at10: sum.base_at10 / k,
    })
}
