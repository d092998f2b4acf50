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

/// The system clock shifted by the milliseconds written in a file. abo uses it when
/// `ABO_CLOCK_OFFSET_FILE` names one: a testing aid, so that a test can move into the next day
/// (and a budget's day roll over) without waiting for it.
#[derive(Debug)]
pub struct OffsetClock {
    pub file: PathBuf,
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let offset = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Timestamp(SystemClock.now().0.saturating_add(offset))
    }
}

/// The clock abo runs on: the system's, or an [`OffsetClock`] when `ABO_CLOCK_OFFSET_FILE` is set.
pub fn clock_from_env() -> Arc<dyn Clock> {
    match std::env::var_os("ABO_CLOCK_OFFSET_FILE") {
        Some(f) if !f.is_empty() => Arc::new(OffsetClock { file: f.into() }),
        _ => Arc::new(SystemClock),
    }
}

pub struct Ctx {
    /// The repository's top-level directory.
    pub root: PathBuf,
    pub store: Store,
    pub git: Git,
    pub artifacts: Artifacts,
    /// Process groups of everything running for attempts.
    pub groups: Groups,
    pub clock: Arc<dyn Clock>,
    /// Built on first use: loading the BPE tables takes a moment, and runs without agents never need it.
    tokenizer: std::sync::OnceLock<Box<dyn crate::backends::prompt::Tokens + Send + Sync>>,
    /// The abo binary, re-executed as the sandbox helper (`None`: sandboxing is unavailable).
    pub sandbox_helper: Option<PathBuf>,
    http: std::sync::OnceLock<reqwest::Client>,
    /// Set on a control plane: attempts run on `abo worker`s.
    pub shared: Option<Arc<crate::shared::Shared>>,
    /// The last change read in each attempt's worktree, for its policy.
    pub changes: crate::change::Latest,
    /// The attempts whose read change may be committed as it was staged.
    pub staged: crate::change::Staged,
    /// What each attempt's gates measured, for its policy.
    pub measures: crate::measure::Latest,
    /// The baselines measured, by tree and gate.
    pub baselines: crate::baseline::Cache,
    /// Set to why a person stopped abo (a signal): the run driven now pauses at once, and every
    /// process running for it is killed.
    pub stop: tokio::sync::watch::Sender<Option<String>>,
    /// The host's UNIX sockets in every network namespace, for sandboxes to cover, kept for a
    /// moment (reading them looks at every process).
    pub sockets: abo_sandbox::sockets::Scan,
    /// Agent CLIs' versions, asked once per executable.
    pub agent_versions: crate::backends::agent::Versions,
    /// The commits whose files and history the knowledge index holds (updated once per commit).
    pub knowledge: crate::knowledge::Updated,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("root", &self.root)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
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
            tokenizer: std::sync::OnceLock::new(),
            http: std::sync::OnceLock::new(),
            sandbox_helper: None,
            shared: None,
            changes: Default::default(),
            staged: Default::default(),
            measures: Default::default(),
            baselines: Default::default(),
            stop: tokio::sync::watch::channel(None).0,
            sockets: Default::default(),
            agent_versions: Default::default(),
            knowledge: Default::default(),
        }
    }

    /// Whether the tokenizer's tables have been loaded in this process.
    pub fn tokenizer_loaded(&self) -> bool {
        self.tokenizer.get().is_some()
    }

    /// The tokenizer prompts are measured with: o200k_base, the encoding of current OpenAI models
    /// and a close count for other providers' models.
    pub fn tokenizer(&self) -> &dyn crate::backends::prompt::Tokens {
        self.tokenizer
            .get_or_init(|| match tiktoken_rs::o200k_base() {
                Ok(bpe) => Box::new(bpe),
                Err(_) => Box::new(crate::backends::prompt::ApproxTokens),
            })
            .as_ref()
    }

    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("abo/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default()
        })
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

    /// Worktrees of finished attempts, kept for the next attempts to start from (`git::pool`).
    pub fn worktree_pool(&self) -> PathBuf {
        self.root.join(".abo/worktrees/.pool")
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

/// A context on the repository at `root`, with a store of its own in a temporary directory (kept
/// as long as the directory is).
#[cfg(test)]
pub(crate) async fn for_test(root: &std::path::Path) -> (Ctx, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = abo_store::Store::open("sqlite:t.db", dir.path())
        .await
        .expect("the test's store");
    let git = crate::git::Git::new(root.to_owned());
    let ctx = Ctx::new(
        root.to_owned(),
        store,
        git,
        std::sync::Arc::new(crate::SystemClock),
    );
    (ctx, dir)
}
