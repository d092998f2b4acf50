//! What the engine and its effects need, passed explicitly.

use std::path::PathBuf;
use std::sync::Arc;

use abo_core::ids::{AttemptId, RunId, Timestamp};
use abo_store::Store;

use crate::artifacts::Artifacts;
use crate::git::Git;
use crate::process::Groups;

/// The source of time. Injected so that tests can control it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        #[allow(
            clippy::disallowed_methods,
            reason = "the system clock is the one place that reads the time"
        )]
        let now = std::time::SystemTime::now();
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

#[derive(Debug)]
pub struct Ctx {
    /// The repository's top-level directory.
    pub root: PathBuf,
    pub store: Store,
    pub git: Git,
    pub artifacts: Artifacts,
    /// Process groups of everything running for attempts.
    pub groups: Groups,
    pub clock: Arc<dyn Clock>,
}

impl Ctx {
    pub fn new(root: PathBuf, store: Store, git: Git, clock: Arc<dyn Clock>) -> Self {
        let artifacts = Artifacts::new(root.join(".abo/artifacts"));
        Self {
            root,
            store,
            git,
            artifacts,
            groups: Groups::default(),
            clock,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn worktree(&self, attempt: &AttemptId) -> PathBuf {
        self.root.join(attempt.worktree())
    }

    /// Where gates run on an attempt merged onto the run branch.
    pub fn merged_worktree(&self, attempt: &AttemptId) -> PathBuf {
        self.root.join(format!("{}-merged", attempt.worktree()))
    }

    pub fn run_worktrees(&self, run: &RunId) -> PathBuf {
        self.root.join(".abo/worktrees").join(run.as_str())
    }

    /// The attempt's private files: prompt, feedback, logs while running.
    pub fn scratch(&self, attempt: &AttemptId) -> PathBuf {
        self.root
            .join(".abo/tmp")
            .join(attempt.run.as_str())
            .join(format!("{}-{}", attempt.task, attempt.attempt))
    }

    pub fn run_scratch(&self, run: &RunId) -> PathBuf {
        self.root.join(".abo/tmp").join(run.as_str())
    }
}
