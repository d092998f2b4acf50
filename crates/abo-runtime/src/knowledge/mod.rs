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

use abo_core::ids::{CommitSha, Timestamp};
use abo_core::spec::TaskSpec;
use abo_store::Store;

use crate::git::{Git, GitError};
use crate::redact::Redactor;

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

/// Files ranked for a task, at most.
pub const RANKED: usize = 20;

/// The commits whose files and history this process has indexed, with their repository's id;
/// also what makes updates one at a time. Attempts that start together all start from the run
/// branch's same commit: the first indexes it, the others wait for it and then find it here,
/// instead of each running the same git commands (`rev-list`, `ls-tree`, `cat-file`, `show`),
/// reading the same events since the outcomes' cursor and writing the same rows at once.
#[derive(Debug, Default)]
pub struct Updated(tokio::sync::Mutex<Indexed>);

/// What [`Updated`] keeps between updates.
#[derive(Debug, Default)]
struct Indexed {
    commits: std::collections::HashMap<CommitSha, String>,
    /// The runs whose outcomes were read, each with its spec when its base is in this
    /// repository: a run's spec never changes, and reading it again for each update decoded a
    /// run's whole `run.created` (every task of a backlog of 1,000) for each attempt started.
    specs: outcomes::Specs,
}

/// Brings the index up to date for `commit`: its files (only those never read), the history it
/// descends from (both once per commit in a process, `done`), and the outcomes the event log
/// recorded since the last update. Returns the repository's id.
pub async fn update(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    commit: &CommitSha,
    at: Timestamp,
    done: &Updated,
) -> Result<String, KnowledgeError> {
    let mut indexed = done.0.lock().await;
    let repo = match indexed.commits.get(commit) {
        Some(repo) => {
            // The store still says whether the commit's files are indexed (and marks them used,
            // so that `abo gc` keeps them); its history is a commit's own and was read here.
            index::index_commit(git, store, redactor, repo, commit, at).await?;
            repo.clone()
        }
        None => {
            let repo = repo_id(git, commit).await?;
            index::index_commit(git, store, redactor, &repo, commit, at).await?;
            history::index_history(git, store, redactor, &repo, commit).await?;
            indexed.commits.insert(commit.clone(), repo.clone());
            repo
        }
    };
    // Under the same lock: the first attempt reads the log since the cursor (every run's spec
    // it names), the others find the cursor moved past it.
    outcomes::index_outcomes(git, store, redactor, &repo, &mut indexed.specs).await?;
    Ok(repo)
}

/// What the index says about `task` at `commit` (brought up to date first); `named` are the
/// files the task names by path.
#[allow(
    clippy::too_many_arguments,
    reason = "the index's places, the task, and what this process already indexed"
)]
pub async fn for_task(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    commit: &CommitSha,
    task: &TaskSpec,
    named: &[String],
    at: Timestamp,
    done: &Updated,
) -> Result<query::Context, KnowledgeError> {
    let repo = update(git, store, redactor, commit, at, done).await?;
    let text = redactor.redact(&outcomes::statement(task));
    query::context(
        store,
        &query::Ask {
            repo: &repo,
            commit: commit.as_str(),
            text: &text,
            named,
            before: at,
            limit: RANKED,
            weights: Default::default(),
        },
    )
    .await
}

#[cfg(test)]
mod tests;
