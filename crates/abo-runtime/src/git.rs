//! Git, through the git CLI: the one module that runs it. abo never touches the user's checked-out
//! branch, index or working tree: it works in worktrees of its own and moves refs with
//! compare-and-swap `update-ref`.
//!
//! # Hardening
//!
//! abo runs git outside the sandbox, as its own user, on worktrees an agent wrote. Anything in a
//! worktree may be an attack: a nested repository (whose own config names an fsmonitor, hooks or
//! filter drivers), hooks under a repository-configured in-tree `core.hooksPath` (husky's
//! `.husky`), a `.gitattributes` naming filter or textconv drivers, a `.gitmodules`. So every git
//! command goes through [`Git::raw`], which gives it, on the command line (which beats every
//! config file, and reaches git's own subprocesses through `GIT_CONFIG_PARAMETERS`), the settings
//! in [`HARDENING`]:
//!
//! - `core.checkStat=default` and `core.trustctime=true`: whether a file changed is judged by its
//!   change time and inode too, never by its size and modification time alone (which whoever
//!   writes the file sets), whatever the repository's configuration says;
//! - `core.fsmonitor=false` and `core.hooksPath=/dev/null`: no fsmonitor, no hook (`--no-verify`
//!   skips only pre-commit and commit-msg; `post-index-change`, `post-commit`, `post-checkout`,
//!   `post-merge` and `reference-transaction` would still run);
//! - `attr.tree=HEAD` ([`ATTR_TREE`]): attributes come from the commit checked out, never from
//!   a `.gitattributes` the change adds or edits (an empty tree when HEAD is unborn), so a change
//!   cannot attach a filter, textconv or merge driver to its files (except for `apply`, see
//!   [`hardened_args`]). The commit checked out is an attempt's base, or in the merged worktree
//!   the candidate, whose change the policy allowed;
//! - no submodule recursion (`submodule.recurse`, `fetch.recurseSubmodules`,
//!   `push.recurseSubmodules`, `status.submoduleSummary`), `diff.ignoreSubmodules=dirty`, and on
//!   `diff`, `show`, `log` and `status` the same as an option (`--ignore-submodules=dirty`, which
//!   also beats a `.gitmodules`' `ignore`), with `--no-ext-diff --no-textconv`: git compares a
//!   gitlink's commit (read in-process) and never starts a git in a nested repository;
//! - `protocol.ext.allow=never`: no remote helper running a command.
//!
//! `git add --all` starts `git status` in every gitlink the index holds, whatever the options
//! say, and that git reads the nested repository's config (its filters, which no option can
//! name in advance): [`Git::stage`] is the only `add`, and it leaves the index's gitlinks out by
//! pathspec. A nested repository's new commit is thus not committed (its gitlink keeps its
//! commit); a new nested repository is added as a gitlink, which git reads without starting git.
//!
//! Not hardened here, on purpose: the system and global config (`GIT_CONFIG_NOSYSTEM` is not set)
//! and `safe.directory` (not widened): nothing in a worktree can write them (the sandbox allows
//! writing only the worktree, the scratch directory and the agents' own state), and users need
//! them (identity, credentials, CI images' `safe.directory`).
//!
//! The worktree's `.git` file names its git directory; it is bind-mounted read-only in the
//! sandbox, but not without one (`mode: off`, or `best-effort` without mount namespaces). So git
//! never reads it: on a registered worktree, `GIT_DIR` and `GIT_WORK_TREE` are set from the
//! repository's own bookkeeping ([`Git::pinned_git_dir`]).
//!
//! Git commands abo runs on a worktree an agent touched (`git/tests.rs` plants each attack in an
//! attempt's worktree and runs each of the calls made there, then the same commands with plain
//! git as the control): `add` ([`Git::stage`], from `change::summarize` and
//! [`Git::commit_all`]), `diff HEAD` (`change::summarize`, after the backend and after each
//! gate, also in the merged worktree), `commit` ([`Git::commit_all`]), `rev-parse`, `log`
//! (trailers), `ls-files` (the prompt's files), `apply` (the `patch:` backend), `reset --hard
//! START` (the checkout of a worktree `git::add` writes, before any agent runs), `worktree
//! add/remove/prune/list`, `diff BASE COMMIT` (the result cache), `merge` (in abo's own merge
//! worktree), `show` (the dashboard); on the repository: `merge-tree`, `commit-tree`,
//! `update-ref`, `notes` and `show` (proofs), `fetch`/`push` (workers, shared runs), `status` and
//! `merge --ff-only` (landing into the checked-out base). `abo demo` runs git on the demo
//! repository it creates, before any agent runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use abo_core::ids::{CommitSha, RunId, TaskId};

use crate::process::{self, Groups, Spec};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {args}: {message}")]
    Failed { args: String, message: String },
    #[error("git {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, GitError>;

/// A commit's author and message, to make another commit like it ([`Git::authors`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authored {
    pub name: String,
    pub email: String,
    /// Strict ISO 8601, as git prints `%aI`.
    pub date: String,
    /// Seconds since the epoch and the offset (`1700000000 +0100`), as git stores it.
    pub raw_date: String,
    pub message: String,
}

/// `log --format` of a commit's sha and abo's three trailers, tab-separated.
const TRAILERS_FORMAT: &str = "--format=%H%x09%(trailers:key=Abo-Run,valueonly,separator=%x2C)%x09%(trailers:key=Abo-Task,valueonly,separator=%x2C)%x09%(trailers:key=Abo-Attempt,valueonly,separator=%x2C)";

/// The trailers abo writes on the commits it makes (an API boundary: `Abo-Run`, `Abo-Task`,
/// `Abo-Attempt`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AboTrailers {
    pub run: Option<String>,
    pub task: Option<String>,
    pub attempt: Option<u32>,
}

impl AboTrailers {
    /// A line of [`TRAILERS_FORMAT`]: the sha and the trailers.
    fn parse(line: &str) -> (&str, Self) {
        let mut parts = line.split('\t');
        let sha = parts.next().unwrap_or_default().trim();
        let mut next = || {
            parts
                .next()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (run, task, attempt) = (next(), next(), next());
        let attempt = attempt.and_then(|a| a.parse().ok());
        (sha, Self { run, task, attempt })
    }

    /// Made by `run` for `task`.
    pub fn is(&self, run: &RunId, task: &TaskId) -> bool {
        self.run.as_deref() == Some(run.as_str()) && self.task.as_deref() == Some(task.as_str())
    }
}

/// Who commits: the user's git identity, or abo's when none is configured.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Git {
    /// The repository's top-level directory (the main worktree).
    pub root: PathBuf,
    pub identity: Identity,
    groups: Groups,
    /// Git's worktree bookkeeping (`.git/worktrees/`) is not safe under a prune running beside an
    /// add: the prune can delete the add's half-written entry. Adds and removes of distinct
    /// worktrees hold this lock shared (they run side by side: attempts start at once); prunes
    /// and repairs hold it exclusive.
    worktrees: std::sync::Arc<tokio::sync::RwLock<()>>,
    /// Held shared by each git call, exclusive while repairing what a killed git left behind.
    repo: repair::RepoLock,
    /// Notes waiting to be written (`git::notes`), and commits whose diff is asked for
    /// (`git::show`), each answered in batches.
    notes: std::sync::Arc<batch::Batches<notes::Note, std::result::Result<(), String>>>,
    diffs: std::sync::Arc<batch::Batches<CommitSha, std::result::Result<String, String>>>,
    /// The committer abo's own commits (`git fast-import`'s) name, without its time: `Name
    /// <email>` and git's time zone, asked of git once ([`Git::committer_ident`]).
    committer: std::sync::Arc<tokio::sync::OnceCell<(String, String)>>,
    /// Worktrees on their way into the pool (`git::pool`), which an attempt finding it empty
    /// waits for.
    incoming: std::sync::Arc<pool::Incoming>,
    /// What abo vouches for in its worktrees, told to git through its fsmonitor hook
    /// (`git::fsmonitor`).
    claims: std::sync::Arc<fsmonitor::Claims>,
}

/// Variables that would point git somewhere else than where abo means it to work, or change what
/// it runs.
/// The most of a git command's stdout held in memory: what a worktree holds decides how much a
/// `diff` or `show` prints, and nothing abo reads from git comes near it.
pub const MAX_STDOUT: u64 = 512 << 20;

pub const GIT_ENV_REMOVE: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
    "GIT_ATTR_SOURCE",
    "GIT_EXTERNAL_DIFF",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    fsmonitor::VAR,
];

/// The configuration every git command abo runs gets on its command line (see the module's
/// documentation).
pub const HARDENING: &[&str] = &[
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.checkStat=default",
    "core.trustctime=true",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "status.submoduleSummary=false",
    "diff.ignoreSubmodules=dirty",
    "protocol.ext.allow=never",
];

/// Options given to these subcommands, right after their name (so that a caller's own options
/// come later and win): no external diff, no textconv, no git started in a nested repository.
const DIFF_LIKE: &[&str] = &["diff", "show", "log"];
const DIFF_OPTIONS: &[&str] = &[
    "--no-ext-diff",
    "--no-textconv",
    "--ignore-submodules=dirty",
];

/// The empty blob's id (SHA-1, SHA-256): what an intent-to-add entry names.
const EMPTY_BLOB: [&str; 2] = [
    "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "473a0f4c3be8a93681a267e3b1e9a7dcda1185436fe141f7749120a303721813",
];

impl Git {
    /// The repository's common git directory, read from its files ([`common_dir`]); `None` when
    /// they are not as git writes them.
    pub fn common_git_dir(&self) -> Option<PathBuf> {
        common_dir(&self.root)
    }
}

/// The repository's common git directory: `ROOT/.git`, or where a `.git` file (the root is itself
/// a linked worktree) and its `commondir` lead.
fn common_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    let gitdir = root.join(text.trim().strip_prefix("gitdir:")?.trim());
    Some(match std::fs::read_to_string(gitdir.join("commondir")) {
        Ok(c) => gitdir.join(c.trim()),
        Err(_) => gitdir,
    })
}

/// `Name <email> 1700000000 +0100` as (`Name <email>`, `+0100`).
fn split_ident(ident: &str) -> Option<(String, String)> {
    let mut parts = ident.rsplitn(3, ' ');
    let zone = parts.next()?;
    parts.next()?.parse::<u64>().ok()?;
    let who = parts.next().filter(|w| w.ends_with('>'))?;
    Some((who.to_owned(), zone.to_owned()))
}

/// Where attributes come from: the commit checked out, not the worktree's files.
const ATTR_TREE: &str = "attr.tree=HEAD";

/// The command line of a git call: [`HARDENING`] and [`ATTR_TREE`] first, then `args` with
/// [`DIFF_OPTIONS`] (or, for `status`, `--ignore-submodules=dirty`) after the subcommand's name.
///
/// `apply` gets no attribute source: git 2.47's `apply` crashes (SIGSEGV) with one, whether
/// `attr.tree`, `--attr-source` or `GIT_ATTR_SOURCE`. abo applies patches only in a fresh
/// worktree, whose attributes are its HEAD's, and git does not read the attributes a patch adds
/// while it applies it (the tests check both).
pub fn hardened_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    // Global options before the subcommand: `-c KEY=VALUE`, `-C DIR` take a value.
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "-c" | "-C" => i += 2,
            a if a.starts_with('-') => i += 1,
            _ => break,
        }
    }
    let (global, rest) = args.split_at(i.min(args.len()));
    let mut out: Vec<&str> = Vec::with_capacity(HARDENING.len() * 2 + args.len() + 5);
    for c in HARDENING {
        out.push("-c");
        out.push(c);
    }
    if rest.first() != Some(&"apply") {
        out.extend(["-c", ATTR_TREE]);
    }
    out.extend_from_slice(global);
    if let Some((sub, tail)) = rest.split_first() {
        out.push(sub);
        if DIFF_LIKE.contains(sub) {
            out.extend_from_slice(DIFF_OPTIONS);
        } else if *sub == "status" {
            out.push("--ignore-submodules=dirty");
        }
        out.extend_from_slice(tail);
    }
    out
}

impl Git {
    pub fn new(root: PathBuf) -> Self {
        Self {
            identity: Identity::default(),
            groups: Groups::default(),
            worktrees: Default::default(),
            notes: Default::default(),
            diffs: Default::default(),
            committer: Default::default(),
            incoming: Default::default(),
            claims: Default::default(),
            repo: repair::RepoLock::new(common_dir(&root).as_deref()),
            root,
        }
    }

    /// Runs git in `cwd`, returning stdout; a non-zero exit is an error with git's message.
    pub async fn run_in(&self, cwd: &Path, args: &[&str]) -> Result<String> {
        self.run_in_capped(cwd, args, MAX_STDOUT).await
    }

    /// [`Git::run_in`], with git stopped and an error once it prints more than `max` bytes: what
    /// a worktree holds decides how much a `diff` prints.
    pub async fn run_in_capped(&self, cwd: &Path, args: &[&str], max: u64) -> Result<String> {
        let out = self.raw_capped(cwd, args, &[], None, max).await?;
        if out.exit == Some(0) {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.failed(args, &out))
        }
    }

    /// [`Git::run_in`], stdout as bytes (object contents, read exactly).
    pub async fn run_bytes(&self, cwd: &Path, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.raw(cwd, args, &[]).await?;
        if out.exit == Some(0) {
            Ok(out.stdout)
        } else {
            Err(self.failed(args, &out))
        }
    }

    pub async fn run(&self, args: &[&str]) -> Result<String> {
        self.run_in(&self.root.clone(), args).await
    }

    /// Runs git under the repository's shared lock. A call that fails on a lock file git left
    /// (`Unable to create '….lock': File exists`) runs again once that lock is judged: released by
    /// its git, or removed as stale ([`repair`]).
    async fn raw(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<process::Outcome> {
        self.raw_capped(cwd, args, env, None, MAX_STDOUT).await
    }

    /// [`Git::raw`] with `input` written to git's stdin, and git stopped once its stdout passes
    /// `max` bytes.
    async fn raw_capped(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
        input: Option<&[u8]>,
        max: u64,
    ) -> Result<process::Outcome> {
        let mut cleared = 0;
        loop {
            let out = {
                let _held = self.repo.shared().await;
                self.raw_unlocked_capped(cwd, args, env, input, max).await?
            };
            if out.exit == Some(0) || cleared >= 3 {
                return Ok(out);
            }
            let Some(lock) = repair::lock_in_message(&String::from_utf8_lossy(&out.stderr)) else {
                return Ok(out);
            };
            if !self.clear_lock(&lock).await {
                return Ok(out);
            }
            cleared += 1;
        }
    }

    /// Waits for a lock file under the repository's git directory to go (its git ends) or to age
    /// past [`repair::STALE`]; then, holding the repository exclusive (no abo git runs), removes
    /// it. Whether the call may run again.
    async fn clear_lock(&self, lock: &Path) -> bool {
        let Some(common) = common_dir(&self.root).and_then(|c| c.canonicalize().ok()) else {
            return false;
        };
        let inside = lock
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .is_some_and(|p| p.starts_with(&common));
        if !inside {
            return false;
        }
        let deadline = tokio::time::Instant::now() + repair::STALE + Duration::from_secs(2);
        loop {
            let Ok(meta) = std::fs::symlink_metadata(lock) else {
                return true; // released by its git
            };
            let found = repair::Leftover::Lock {
                path: lock.to_owned(),
                age: meta
                    .modified()
                    .ok()
                    .and_then(|m| {
                        #[allow(
                            clippy::disallowed_methods,
                            reason = "a file's age is measured on the file system's clock"
                        )]
                        let now = std::time::SystemTime::now();
                        now.duration_since(m).ok()
                    })
                    .unwrap_or_default(),
            };
            if found.removable() {
                let Some(_held) = self.repo.exclusive().await else {
                    return false;
                };
                return !repair::remove(&common, vec![found]).is_empty() || !lock.exists();
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What git left behind in this repository (for `abo doctor`): lock files and worktree
    /// registrations whose folder is gone.
    pub fn leftovers(&self) -> Vec<repair::Leftover> {
        common_dir(&self.root)
            .map(|c| repair::inspect(&c, &self.root.join(".abo")))
            .unwrap_or_default()
    }

    /// Removes what a killed git left behind and abo may judge (stale locks, interrupted worktree
    /// registrations), holding the repository exclusive, then prunes worktree registrations.
    /// Returns what it removed, and what it left (too young, or locked by a person).
    pub async fn repair(&self) -> (Vec<repair::Leftover>, Vec<repair::Leftover>) {
        let _guard = self.worktrees.write().await;
        self.repair_locked().await
    }

    async fn repair_locked(&self) -> (Vec<repair::Leftover>, Vec<repair::Leftover>) {
        let Some(common) = common_dir(&self.root) else {
            return Default::default();
        };
        let Some(held) = self.repo.exclusive().await else {
            return (Vec::new(), self.leftovers());
        };
        let removed = repair::remove(&common, self.leftovers());
        let root = self.root.clone();
        let _ = self.raw_unlocked(&root, &["worktree", "prune"], &[]).await;
        drop(held);
        let left = self
            .leftovers()
            .into_iter()
            .filter(|l| !matches!(l, repair::Leftover::Worktree { locked: None, .. }))
            .collect();
        (removed, left)
    }

    async fn raw_unlocked(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<process::Outcome> {
        self.raw_unlocked_capped(cwd, args, env, None, MAX_STDOUT)
            .await
    }

    async fn raw_unlocked_capped(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
        input: Option<&[u8]>,
        max: u64,
    ) -> Result<process::Outcome> {
        let pinned = self.pinned_git_dir(cwd);
        // In abo's own worktrees git asks abo's fsmonitor hook what changed (`git::fsmonitor`).
        let watched: Vec<&str> = match &pinned {
            Some(dir) if fsmonitor::pays(&dir.join("index")) => {
                fsmonitor::args().iter().chain(args).copied().collect()
            }
            _ => args.to_vec(),
        };
        let mut spec = Spec::new("git", cwd).args(hardened_args(&watched));
        spec.input = input.map(<[u8]>::to_vec);
        spec.max_stdout = Some(max);
        spec.env_remove = GIT_ENV_REMOVE.iter().map(|s| (*s).to_owned()).collect();
        if let Some(dir) = pinned {
            if let Some(claim) = self.claims.file(&dir) {
                spec.env
                    .push((fsmonitor::VAR.into(), claim.to_string_lossy().into_owned()));
            }
            spec.env
                .push(("GIT_DIR".into(), dir.to_string_lossy().into_owned()));
            spec.env
                .push(("GIT_WORK_TREE".into(), cwd.to_string_lossy().into_owned()));
        }
        spec.env.push(("LC_ALL".into(), "C".into()));
        spec.env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
        spec.env.extend(self.identity.env.iter().cloned());
        spec.env.extend(env.iter().cloned());
        process::run(&spec, &self.groups)
            .await
            .map_err(|source| GitError::Spawn {
                args: args.join(" "),
                source,
            })
    }

    /// The git directory of the registered worktree at `wt`, found from the repository's own
    /// bookkeeping (`<common dir>/worktrees/<id>/gitdir` names the worktree's `.git` file), never
    /// from the worktree's `.git` file: a process in the worktree could point that at a git
    /// directory of its own, with its own config (filters, fsmonitor) and attributes.
    fn pinned_git_dir(&self, wt: &Path) -> Option<PathBuf> {
        if wt == self.root {
            return None;
        }
        let common = common_dir(&self.root)?;
        let wt = wt.canonicalize().ok()?;
        let names = |dir: &Path| {
            let named = std::fs::read_to_string(dir.join("gitdir")).ok()?;
            Path::new(named.trim()).parent().map(Path::canonicalize)
        };
        let admin = common.join("worktrees");
        // Git names a worktree's entry after its folder (`worktree add`; a number is appended
        // when that name is taken): that entry is looked at first, so that a git call costs the
        // same with 1,000 worktrees as with one. It counts only when its `gitdir` names `wt`.
        if let Some(name) = wt.file_name() {
            let guess = admin.join(name);
            if matches!(names(&guess), Some(Ok(p)) if p == wt) {
                return Some(guess);
            }
        }
        for e in std::fs::read_dir(&admin).ok()?.flatten() {
            if matches!(names(&e.path()), Some(Ok(p)) if p == wt) {
                return Some(e.path());
            }
        }
        None
    }

    fn failed(&self, args: &[&str], out: &process::Outcome) -> GitError {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        if message.is_empty() {
            message = out.describe(None);
        }
        GitError::Failed {
            args: args.join(" "),
            message,
        }
    }

    /// The index file of the registered worktree `wt`, in the repository's git directory.
    pub fn index_file(&self, wt: &Path) -> Option<PathBuf> {
        self.pinned_git_dir(wt).map(|d| d.join("index"))
    }

    /// Vouches, while the returned guard is held, that nothing but the git abo runs writes the
    /// registered worktree `wt` and that each tracked path but `changed` (relative, a folder's
    /// with a trailing `/`) is as its index records: git then looks only at those
    /// (`git::fsmonitor`). `None` when it cannot (not a registered worktree, already vouched
    /// for), and git looks at every file.
    pub fn vouch(&self, wt: &Path, changed: &[Vec<u8>]) -> Option<fsmonitor::Vouched> {
        let entry = self.pinned_git_dir(wt)?;
        let file = entry.join(fsmonitor::VOUCHED);
        let held = fsmonitor::Vouched::hold(&self.claims, entry, file.clone())?;
        fsmonitor::write(&file, changed).ok()?;
        Some(held)
    }

    /// The entries of worktree `wt`'s index (`git ls-files --stage`): read from the index file in
    /// the worktree's git directory (found from the repository's bookkeeping, as for every git
    /// call) when [`index`] can, otherwise from `git ls-files`.
    pub async fn index_entries(&self, wt: &Path) -> Result<Vec<index::Entry>> {
        if let Some(dir) = self.pinned_git_dir(wt)
            && let Some(entries) = index::read(&dir.join("index"), self.hash_len())
        {
            return Ok(entries);
        }
        let out = self.run_in(wt, &["ls-files", "--stage", "-z"]).await?;
        Ok(index::from_ls_files(&out))
    }

    /// Bytes of an object name in this repository: 32 when its configuration names SHA-256.
    fn hash_len(&self) -> usize {
        let config = common_dir(&self.root)
            .and_then(|c| std::fs::read_to_string(c.join("config")).ok())
            .unwrap_or_default();
        let sha256 = config.lines().any(|l| {
            let l = l.trim().to_ascii_lowercase();
            l.starts_with("objectformat") && l.contains("sha256")
        });
        if sha256 { 32 } else { 20 }
    }

    /// The top level of the repository containing `dir`.
    pub async fn toplevel(dir: &Path) -> Result<PathBuf> {
        let g = Git::new(dir.to_owned());
        let out = g.run_in(dir, &["rev-parse", "--show-toplevel"]).await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// Uses the user's identity when git has one, else `abo <abo@localhost>`: both keys read by
    /// one `git config --get-regexp` (the last value of each wins, as `git config KEY` reads it).
    pub async fn resolve_identity(&mut self) {
        let found = self
            .run(&["config", "--get-regexp", r"^user\.(name|email)$"])
            .await
            .unwrap_or_default();
        let last = |key: &str| {
            found
                .lines()
                .map(|l| l.split_once(' ').unwrap_or((l, "")))
                .rfind(|(k, _)| *k == key)
                .map(|(_, v)| v)
                .filter(|v| !v.trim().is_empty())
        };
        let (name, email) = (last("user.name"), last("user.email"));
        if name.is_none() || email.is_none() {
            self.identity.env = vec![
                ("GIT_AUTHOR_NAME".into(), "abo".into()),
                ("GIT_AUTHOR_EMAIL".into(), "abo@localhost".into()),
                ("GIT_COMMITTER_NAME".into(), "abo".into()),
                ("GIT_COMMITTER_EMAIL".into(), "abo@localhost".into()),
            ];
        }
        self.committer = Default::default();
    }

    /// The committer line of a commit made now (`Name <email> SECONDS ZONE`), as `git var
    /// GIT_COMMITTER_IDENT` gives it: git is asked once, the time is the clock's.
    pub async fn committer_ident(&self) -> Result<String> {
        let (who, zone) = self
            .committer
            .get_or_try_init(|| async {
                let args = ["var", "GIT_COMMITTER_IDENT"];
                let ident = self.run(&args).await?;
                split_ident(ident.trim()).ok_or_else(|| GitError::Failed {
                    args: args.join(" "),
                    message: format!("unexpected output: {}", ident.trim()),
                })
            })
            .await?;
        #[allow(
            clippy::disallowed_methods,
            reason = "git's own time for its commits, as `git var` gives it, not the run's clock"
        )]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(format!("{who} {now} {zone}"))
    }

    pub async fn rev_parse(&self, rev: &str) -> Result<CommitSha> {
        let out = self
            .run(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ])
            .await?;
        Ok(CommitSha::new(out.trim()))
    }

    /// The commit a branch points at, if the branch exists.
    pub async fn branch_head(&self, branch: &str) -> Result<Option<CommitSha>> {
        // Read from the ref's file when it is one git wrote plainly: no process.
        if let Some(found) = self.ref_in_files(&format!("refs/heads/{branch}")) {
            return Ok(found);
        }
        let out = self
            .raw(
                &self.root.clone(),
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/heads/{branch}"),
                ],
                &[],
            )
            .await?;
        let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.exit == Some(0) && !sha.is_empty()).then(|| CommitSha::new(sha)))
    }

    /// The branch checked out in the main worktree, if any.
    pub async fn current_branch(&self) -> Result<Option<String>> {
        let out = self
            .raw(
                &self.root.clone(),
                &["symbolic-ref", "--short", "-q", "HEAD"],
                &[],
            )
            .await?;
        let b = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.exit == Some(0) && !b.is_empty()).then_some(b))
    }

    /// Creates `branch` at `at` unless it exists.
    pub async fn ensure_branch(&self, branch: &str, at: &CommitSha) -> Result<()> {
        if self.branch_head(branch).await?.is_none() {
            self.run(&["branch", "--no-track", branch, at.as_str()])
                .await?;
        }
        Ok(())
    }

    /// Deletes `branch` (and its reflog); a missing one is fine. One git process.
    pub async fn delete_branch(&self, branch: &str) -> Result<()> {
        let r = format!("refs/heads/{branch}");
        if self.ref_in_files(&r) == Some(None) {
            return Ok(());
        }
        self.run(&["update-ref", "-m", "abo: delete", "-d", &r])
            .await?;
        Ok(())
    }

    /// Branches under a prefix (`abo-attempt/<run>/`).
    pub async fn branches(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .run(&[
                "for-each-ref",
                "--format=%(refname:short)",
                &format!("refs/heads/{prefix}"),
            ])
            .await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// A fresh worktree at `path` on a new `branch` from `at` (anything left there before is removed).
    pub async fn add_worktree(&self, path: &Path, branch: &str, at: &CommitSha) -> Result<()> {
        self.add_worktree_from(path, branch, at.as_str()).await
    }

    /// A fresh worktree at `path` on `branch`, made (or reset, when a killed attempt left it) at
    /// `start`, a commit or a full ref name that git resolves: written by abo (`git::add`: two
    /// git processes, and no reading of the other worktrees), else by `git worktree add`.
    pub async fn add_worktree_from(&self, path: &Path, branch: &str, start: &str) -> Result<()> {
        {
            let _shared = self.worktrees.read().await;
            if self.remove_registered(path).await
                && matches!(self.create_worktree(path, branch, start).await, Ok(true))
            {
                self.mark_ready(path);
                return Ok(());
            }
        }
        let p = path.to_string_lossy();
        let add = [
            "worktree",
            "add",
            "--quiet",
            "--no-track",
            "-B",
            branch,
            &p,
            start,
        ];
        self.add_worktree_args(path, &add).await?;
        self.mark_ready(path);
        Ok(())
    }

    /// [`Git::add_worktree_from`], taking a prepared worktree from the pool folder `pool` when it
    /// holds one, or one is announced as coming (`git::pool`: only the files that differ are
    /// written).
    pub async fn add_worktree_pooled(
        &self,
        pool: &Path,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> Result<()> {
        let cleared = {
            let _shared = self.worktrees.read().await;
            self.remove_registered(path).await
        };
        if cleared
            && self
                .take_pooled_or_incoming(pool, path, branch, start)
                .await
        {
            return Ok(());
        }
        self.add_worktree_from(path, branch, start).await
    }

    /// A detached worktree at `path` on `at`.
    pub async fn add_detached_worktree(&self, path: &Path, at: &CommitSha) -> Result<()> {
        let p = path.to_string_lossy();
        let add = ["worktree", "add", "--quiet", "--detach", &p, at.as_str()];
        self.add_worktree_args(path, &add).await
    }

    /// Runs `add` (a `git worktree add` of `path`) after removing what is at `path`. Adds and
    /// removes of distinct worktrees run side by side (each touches only its own entry under
    /// `.git/worktrees/`, its own branch and folder); what needs `worktree prune` (a half-made
    /// entry, a registration a killed `worktree add` left, locked "initializing" and still holding
    /// the branch) is done under the exclusive lock, then the add runs once more there.
    async fn add_worktree_args(&self, path: &Path, add: &[&str]) -> Result<()> {
        {
            let _shared = self.worktrees.read().await;
            if self.remove_registered(path).await && self.run(add).await.is_ok() {
                return Ok(());
            }
        }
        let _exclusive = self.worktrees.write().await;
        self.repair_locked().await;
        self.remove_worktree_locked(path).await?;
        self.run(add).await.map(drop)
    }

    /// Removes a worktree and its directory; a missing one is fine.
    pub async fn remove_worktree(&self, path: &Path) -> Result<()> {
        {
            let _shared = self.worktrees.read().await;
            if self.remove_registered(path).await {
                return Ok(());
            }
        }
        let _exclusive = self.worktrees.write().await;
        self.remove_worktree_locked(path).await
    }

    /// Forgets worktrees whose directories are gone.
    pub async fn prune_worktrees(&self) -> Result<()> {
        let _guard = self.worktrees.write().await;
        self.run(&["worktree", "prune"]).await?;
        Ok(())
    }

    /// Removes a registered worktree (the shared lock held) as `git worktree remove --force
    /// --force` does, without starting git: its folder, then its entry under `.git/worktrees/`,
    /// found from the repository's bookkeeping ([`Git::pinned_git_dir`], never from the folder's
    /// `.git` file, which its agent could point anywhere). The folder goes first: a crash between
    /// the two leaves an entry naming a missing folder, which `worktree prune` forgets. Symbolic
    /// links in the folder are removed, never followed (`remove_dir_all`). Whether `path` is gone
    /// now: `false` asks for [`Git::remove_worktree_locked`] under the exclusive lock.
    async fn remove_registered(&self, path: &Path) -> bool {
        if std::fs::symlink_metadata(path).is_err() {
            return true;
        }
        let Some(entry) = self.pinned_git_dir(path) else {
            return false;
        };
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::remove_dir_all(&path).is_ok() && std::fs::remove_dir_all(&entry).is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Removes `path` and its registration (the exclusive lock held: it may prune).
    async fn remove_worktree_locked(&self, path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        let p = path.to_string_lossy().into_owned();
        // Two --force: also when it is locked or has changes.
        if self
            .run(&["worktree", "remove", "--force", "--force", &p])
            .await
            .is_err()
        {
            // Not a registered worktree (or half-created): remove the directory, then its entry.
            let _ = std::fs::remove_dir_all(path);
            self.run(&["worktree", "prune"]).await?;
        }
        Ok(())
    }

    /// `git apply --3way` of a diff file in a worktree; the error message is git's.
    /// With `check`, only `git apply --check`: whether it applies cleanly, changing nothing.
    /// Line counts in hunk headers are recounted (models often get them wrong).
    pub async fn apply(
        &self,
        wt: &Path,
        patch: &Path,
        check: bool,
    ) -> std::result::Result<String, String> {
        let p = patch.to_string_lossy();
        let mode = if check { "--check" } else { "--3way" };
        match self
            .raw(
                wt,
                &["apply", mode, "--recount", "--whitespace=nowarn", &p],
                &[],
            )
            .await
        {
            Ok(out) if out.exit == Some(0) => Ok(String::from_utf8_lossy(&out.stderr).into_owned()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `git apply` of a diff file to a worktree's files only (no index, no object written):
    /// what a change would be, for the policy to read. The error message is git's.
    pub async fn apply_files(&self, wt: &Path, patch: &Path) -> std::result::Result<(), String> {
        let p = patch.to_string_lossy();
        let args = ["apply", "--recount", "--whitespace=nowarn", &p];
        match self.raw(wt, &args, &[]).await {
            Ok(out) if out.exit == Some(0) => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stages a worktree's change: every new, changed and deleted file; with `intent_only`, new
    /// files are only marked intent-to-add (nothing is written to the object store). The gitlinks
    /// the index holds are left out by pathspec: `git add` would start a git in each nested
    /// repository (see the module's documentation). The one `git add` abo runs.
    /// Returns whether the index holds a gitlink.
    pub async fn stage(&self, wt: &Path, intent_only: bool) -> Result<bool> {
        // An intent-to-add gitlink (a new nested repository) names the empty blob, and `add`
        // stages it without starting git in it.
        let entries = self.index_entries(wt).await?;
        let gitlinks = entries.iter().any(index::Entry::is_gitlink);
        let excluded: Vec<String> = entries
            .iter()
            .filter(|e| e.is_gitlink() && !EMPTY_BLOB.contains(&e.object.as_str()))
            .map(|e| format!(":(exclude,literal){}", e.path))
            .collect();
        let mut args = vec!["add", "--all"];
        if intent_only {
            args.push("--intent-to-add");
        }
        if !excluded.is_empty() {
            args.extend(["--", ":/"]);
            args.extend(excluded.iter().map(String::as_str));
        }
        self.run_in(wt, &args).await?;
        Ok(gitlinks)
    }

    /// Commits everything in a worktree with the message's paragraphs; returns the commit.
    pub async fn commit_all(&self, wt: &Path, paragraphs: &[String]) -> Result<CommitSha> {
        self.stage(wt, false).await?;
        self.commit_index(wt, paragraphs, false).await?;
        self.head(wt).await
    }

    /// The commit checked out in `wt`: from git's files when they tell, else by `git rev-parse`.
    pub async fn head(&self, wt: &Path) -> Result<CommitSha> {
        if let Some(head) = self.head_in_files(wt) {
            return Ok(head);
        }
        let head = self.run_in(wt, &["rev-parse", "HEAD"]).await?;
        Ok(CommitSha::new(head.trim()))
    }

    /// Commits the files the index tracks, their content as the worktree holds it now
    /// (`commit --all`: modified, deleted and intent-to-add files; nothing new is added), on
    /// HEAD `on`; returns the commit. For an index without gitlinks, staged intent-to-add by the
    /// summary just before (then it is [`Git::commit_all`] in one process).
    pub async fn commit_tracked(
        &self,
        wt: &Path,
        on: &CommitSha,
        paragraphs: &[String],
    ) -> Result<CommitSha> {
        self.commit_index(wt, paragraphs, true).await?;
        match self.head_in_files(wt) {
            Some(head) if head != *on => Ok(head),
            _ => {
                let head = self.run_in(wt, &["rev-parse", "HEAD"]).await?;
                Ok(CommitSha::new(head.trim()))
            }
        }
    }

    async fn commit_index(&self, wt: &Path, paragraphs: &[String], all: bool) -> Result<()> {
        // `maintenance.auto=false`: each commit would start `git maintenance run --auto`, a git
        // process per attempt; the repository's own git commands still run it.
        let mut args: Vec<&str> = vec![
            "-c",
            "commit.gpgsign=false",
            "-c",
            "maintenance.auto=false",
            "commit",
            "--quiet",
            "--no-verify",
            "--allow-empty-message",
        ];
        if all {
            args.push("--all");
        }
        for p in paragraphs {
            args.push("-m");
            args.push(p);
        }
        self.run_in(wt, &args).await?;
        Ok(())
    }

    /// The commit a full ref name points at, read from the repository's files (a loose ref, else
    /// `packed-refs`) without starting git: `Some(None)` when it does not exist, `None` when the
    /// files cannot tell (a reftable repository, a symbolic ref, an unreadable file).
    pub fn ref_in_files(&self, refname: &str) -> Option<Option<CommitSha>> {
        let common = common_dir(&self.root)?;
        if common.join("reftable").exists()
            || !refname.starts_with("refs/")
            || refname
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return None;
        }
        let sha = |s: &str| {
            let s = s.trim();
            (matches!(s.len(), 40 | 64) && s.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| CommitSha::new(s))
        };
        match std::fs::read_to_string(common.join(refname)) {
            Ok(text) => return sha(&text).map(Some),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return None,
            Err(_) => {}
        }
        let packed = match std::fs::read_to_string(common.join("packed-refs")) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(None),
            Err(_) => return None,
        };
        for line in packed.lines() {
            if let Some((s, name)) = line.split_once(' ')
                && name == refname
            {
                return sha(s).map(Some);
            }
        }
        Some(None)
    }

    /// The commit worktree `wt` has checked out, read from its `HEAD` in the repository's
    /// bookkeeping and the ref that names, without starting git; `None` when the files cannot
    /// tell.
    pub fn head_in_files(&self, wt: &Path) -> Option<CommitSha> {
        let admin = self.pinned_git_dir(wt)?;
        let head = std::fs::read_to_string(admin.join("HEAD")).ok()?;
        let head = head.trim();
        match head.strip_prefix("ref: ") {
            Some(r) => self.ref_in_files(r)?,
            None => (head.len() == 40 || head.len() == 64)
                .then(|| CommitSha::new(head))
                .filter(|_| head.bytes().all(|c| c.is_ascii_hexdigit())),
        }
    }

    /// The commit checked out in worktree `wt`, its first parent and abo's trailers on it, in one
    /// call.
    pub async fn head_of(&self, wt: &Path) -> Result<(CommitSha, Option<CommitSha>, AboTrailers)> {
        let format = format!("{TRAILERS_FORMAT}%x09%P");
        let out = self.run_in(wt, &["log", "-1", &format, "HEAD"]).await?;
        let line = out.lines().next().unwrap_or_default();
        let (sha, trailers) = AboTrailers::parse(line);
        let parent = line
            .rsplit('\t')
            .next()
            .and_then(|p| p.split(' ').next())
            .filter(|p| !p.is_empty() && *p != sha)
            .map(CommitSha::new);
        Ok((CommitSha::new(sha), parent, trailers))
    }

    /// Moves refs all at once or not at all (`git update-ref --stdin`): each `(ref, new, old)`
    /// only if the ref is at `old` now. Whether it moved them (`false`: some ref was elsewhere,
    /// or missing, and none moved).
    /// Each `(ref, old)` of `deletes` is deleted in the same transaction, only if it is at `old`.
    pub async fn move_refs(
        &self,
        message: &str,
        moves: &[(&str, &CommitSha, &CommitSha)],
        deletes: &[(&str, &CommitSha)],
    ) -> Result<bool> {
        let bad = |f: &str| f.is_empty() || f.contains(['\n', ' ', '\0']);
        let mut input = String::new();
        for (r, new, old) in moves {
            if bad(r) || bad(new.as_str()) || bad(old.as_str()) {
                return Ok(false);
            }
            input.push_str(&format!("update {r} {new} {old}\n"));
        }
        for (r, old) in deletes {
            if bad(r) || bad(old.as_str()) {
                return Ok(false);
            }
            input.push_str(&format!("delete {r} {old}\n"));
        }
        let args = ["update-ref", "-m", message, "--stdin"];
        let root = self.root.clone();
        let out = self
            .raw_capped(&root, &args, &[], Some(input.as_bytes()), MAX_STDOUT)
            .await?;
        Ok(out.exit == Some(0))
    }

    /// Whether some worktree of the repository has `branch` checked out, read from git's own
    /// bookkeeping (each worktree's `HEAD` in the common git directory) without starting git;
    /// `None` when that cannot be read as plain files (then ask [`Git::checked_out_in`]).
    pub fn is_checked_out(&self, branch: &str) -> Option<bool> {
        let common = common_dir(&self.root)?;
        let wanted = format!("ref: refs/heads/{branch}");
        let on = |head: &Path| -> Option<bool> {
            let text = std::fs::read_to_string(head).ok()?;
            Some(text.trim_end() == wanted)
        };
        if on(&common.join("HEAD"))? {
            return Some(true);
        }
        let Ok(dir) = std::fs::read_dir(common.join("worktrees")) else {
            return Some(false);
        };
        for e in dir {
            let e = e.ok()?;
            if on(&e.path().join("HEAD"))? {
                return Some(true);
            }
        }
        Some(false)
    }

    /// abo's trailers on a commit (`Abo-Run`, `Abo-Task`, `Abo-Attempt`), in one call.
    pub async fn abo_trailers(&self, commit: &str) -> Result<AboTrailers> {
        let out = self.run(&["log", "-1", TRAILERS_FORMAT, commit]).await?;
        Ok(AboTrailers::parse(out.lines().next().unwrap_or_default()).1)
    }

    /// The commit on `branch` after `base` that `run` made for `task` (its `Abo-Run` and
    /// `Abo-Task` trailers), with its attempt. Another run's commit for the same task (already in
    /// the base, or brought onto the branch) is never taken for this run's.
    pub async fn find_task_commit(
        &self,
        base: &CommitSha,
        branch: &str,
        run: &RunId,
        task: &TaskId,
    ) -> Result<Option<(CommitSha, u32)>> {
        let range = format!("{base}..refs/heads/{branch}");
        let out = self.run(&["log", TRAILERS_FORMAT, &range]).await?;
        Ok(out.lines().find_map(|l| {
            let (sha, t) = AboTrailers::parse(l);
            let attempt = t.attempt?;
            t.is(run, task).then(|| (CommitSha::new(sha), attempt))
        }))
    }

    /// Merges `theirs` onto `ours` as if cherry-picked (merge base `base`), without a worktree.
    /// Returns the tree, or the conflicting paths.
    pub async fn merge_tree(
        &self,
        base: &CommitSha,
        ours: &CommitSha,
        theirs: &CommitSha,
    ) -> Result<std::result::Result<String, Vec<String>>> {
        let mb = format!("--merge-base={base}");
        let args = [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            &mb,
            ours.as_str(),
            theirs.as_str(),
        ];
        let out = self.raw(&self.root.clone(), &args, &[]).await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let tree = lines.next().unwrap_or_default().trim().to_owned();
        match out.exit {
            Some(0) => Ok(Ok(tree)),
            Some(1) => Ok(Err(lines
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect())),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// A commit of `tree` on `parent`, with the message and author of `like`.
    pub async fn commit_tree_like(
        &self,
        tree: &str,
        parent: &CommitSha,
        like: &CommitSha,
    ) -> Result<CommitSha> {
        let info = self.authors(std::slice::from_ref(like)).await?;
        let info = info.into_iter().next().unwrap_or_default();
        self.commit_tree_as(tree, parent, &info).await
    }

    /// The author and message of each of `commits`, in their order, read by one git process.
    pub async fn authors(&self, commits: &[CommitSha]) -> Result<Vec<Authored>> {
        let mut args = vec![
            "log",
            "--no-walk=unsorted",
            "--date=raw",
            "--format=%H%x00%an%x00%ae%x00%aI%x00%ad%x00%B%x01",
        ];
        args.extend(commits.iter().map(CommitSha::as_str));
        let out = self.run(&args).await?;
        let mut by_sha = std::collections::HashMap::new();
        for record in out.split('\x01') {
            let mut parts = record.trim_start_matches('\n').splitn(6, '\0');
            let (Some(sha), Some(name), Some(email), Some(date), Some(raw_date), Some(message)) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            by_sha.insert(
                sha.to_owned(),
                Authored {
                    name: name.to_owned(),
                    email: email.to_owned(),
                    date: date.to_owned(),
                    raw_date: raw_date.to_owned(),
                    message: message.trim_end().to_owned(),
                },
            );
        }
        commits
            .iter()
            .map(|c| {
                by_sha
                    .get(c.as_str())
                    .cloned()
                    .ok_or_else(|| GitError::Failed {
                        args: "log --no-walk".into(),
                        message: format!("it did not show commit {c}"),
                    })
            })
            .collect()
    }

    /// A commit of `tree` on `parent`, with the author and message of `like`.
    pub async fn commit_tree_as(
        &self,
        tree: &str,
        parent: &CommitSha,
        like: &Authored,
    ) -> Result<CommitSha> {
        let env = [
            ("GIT_AUTHOR_NAME".to_owned(), like.name.clone()),
            ("GIT_AUTHOR_EMAIL".to_owned(), like.email.clone()),
            ("GIT_AUTHOR_DATE".to_owned(), like.date.clone()),
        ];
        let args = [
            "-c",
            "commit.gpgsign=false",
            "commit-tree",
            tree,
            "-p",
            parent.as_str(),
            "-m",
            &like.message,
        ];
        let out = self.raw(&self.root.clone(), &args, &env).await?;
        if out.exit != Some(0) {
            return Err(self.failed(&args, &out));
        }
        Ok(CommitSha::new(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// A commit of `tree` on `parent` with `message`, by abo's identity (the user's when git has
    /// one), without a worktree.
    pub async fn commit_tree(
        &self,
        tree: &str,
        parent: &CommitSha,
        message: &str,
    ) -> Result<CommitSha> {
        let out = self
            .run(&[
                "-c",
                "commit.gpgsign=false",
                "commit-tree",
                tree,
                "-p",
                parent.as_str(),
                "-m",
                message,
            ])
            .await?;
        Ok(CommitSha::new(out.trim()))
    }

    /// Moves `refs/heads/<branch>` from `old` to `new`, failing if it is no longer at `old`.
    pub async fn advance_branch(
        &self,
        branch: &str,
        new: &CommitSha,
        old: &CommitSha,
    ) -> Result<()> {
        let r = format!("refs/heads/{branch}");
        self.run(&[
            "update-ref",
            "-m",
            "abo: land",
            &r,
            new.as_str(),
            old.as_str(),
        ])
        .await?;
        Ok(())
    }

    /// Whether `a` is an ancestor of `b` (or `b` itself).
    pub async fn is_ancestor(&self, a: &CommitSha, b: &CommitSha) -> Result<bool> {
        let args = ["merge-base", "--is-ancestor", a.as_str(), b.as_str()];
        let out = self.raw(&self.root.clone(), &args, &[]).await?;
        match out.exit {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// Whether the object store holds commit `c`.
    pub async fn has_commit(&self, c: &CommitSha) -> Result<bool> {
        let spec = format!("{c}^{{commit}}");
        let out = self
            .raw(&self.root.clone(), &["cat-file", "-e", &spec], &[])
            .await?;
        Ok(out.exit == Some(0))
    }

    /// The commit a full ref name points at, if it exists.
    pub async fn ref_head(&self, refname: &str) -> Result<Option<CommitSha>> {
        let spec = format!("{refname}^{{commit}}");
        let out = self
            .raw(
                &self.root.clone(),
                &["rev-parse", "--verify", "--quiet", &spec],
                &[],
            )
            .await?;
        let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.exit == Some(0) && !sha.is_empty()).then(|| CommitSha::new(sha)))
    }

    /// Points a full ref name at `at` (no compare: abo's own refs under `refs/abo/`).
    pub async fn set_ref(&self, refname: &str, at: &CommitSha) -> Result<()> {
        self.run(&["update-ref", "-m", "abo: keep", refname, at.as_str()])
            .await?;
        Ok(())
    }

    /// Creates or resets `refs/heads/<branch>` to `new`, failing unless it is at `old` (`None`:
    /// it must not exist).
    pub async fn restore_branch(
        &self,
        branch: &str,
        new: &CommitSha,
        old: Option<&CommitSha>,
    ) -> Result<()> {
        let r = format!("refs/heads/{branch}");
        let zero = "0".repeat(new.as_str().len());
        let old = old.map_or(zero.as_str(), CommitSha::as_str);
        self.run(&["update-ref", "-m", "abo: restore", &r, new.as_str(), old])
            .await?;
        Ok(())
    }

    /// The worktrees (the main one included) that have `branch` checked out.
    pub async fn checked_out_in(&self, branch: &str) -> Result<Vec<PathBuf>> {
        let list = self.run(&["worktree", "list", "--porcelain"]).await?;
        let mut out = Vec::new();
        let mut path = None;
        for l in list.lines() {
            if let Some(p) = l.strip_prefix("worktree ") {
                path = Some(PathBuf::from(p));
            } else if l == format!("branch refs/heads/{branch}") {
                out.extend(path.take());
            }
        }
        Ok(out)
    }

    pub async fn push(&self, remote: &str, branch: &str) -> Result<()> {
        let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
        self.run(&["push", "--quiet", remote, &spec]).await?;
        Ok(())
    }
}

/// 16 hex digits no file of a change can have foreseen, for the headers abo asks git to print
/// between the commits of one `git show`: the standard library's random hash keys (drawn from the
/// system's randomness for each process), over a counter.
pub(crate) fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

mod add;
mod batch;
pub mod chain;
pub mod fsmonitor;
pub mod index;
mod notes;
pub mod pool;
pub mod repair;
mod show;

#[cfg(test)]
mod tests;
