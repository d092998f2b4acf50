//! The knowledge layer of a repository, kept in the store and updated per base commit:
//! `index` (each file's terms and symbols, read from git objects, only blobs never read before),
//! `history` (commit messages and the files they touched), `outcomes` (landed and failed tasks
//! from the event log), `query` (a task's context: files ranked with why, their symbols, similar
//! landed tasks, failures to avoid), `eval` (recall on a repository's own history).
//!
//! Everything read here is hostile input: blobs come from git's object store by id (never the
//! working tree, so no link is followed), bounded in size, and pass through the secret redaction
//! before anything of them is analysed or stored.

pub mod eval;
pub mod history;
pub mod index;
pub mod outcomes;
pub mod query;

use abo_core::ids::CommitSha;

use crate::git::{Git, GitError};

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("knowledge index: {0}")]
    Git(#[from] GitError),
    #[error("knowledge index: {0}")]
    Store(#[from] abo_store::StoreError),
}

/// The repository, as every clone of it names it: the least of the root commits `head`
/// descends from (as the baselines name it).
pub async fn repo_id(git: &Git, head: &CommitSha) -> Result<String, KnowledgeError> {
    let roots = git
        .run(&["rev-list", "--max-parents=0", head.as_str()])
        .await?;
    Ok(roots
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .min()
        .unwrap_or(head.as_str())
        .to_owned())
}

#[cfg(test)]
mod tests;
