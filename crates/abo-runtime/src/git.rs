//! Git, through the git CLI: the one module that runs it. abo never touches the user's checked-out
//! branch, index or working tree: it works in worktrees of its own and moves refs with
//! compare-and-swap `update-ref`.

use std::path::{Path, PathBuf};

use abo_core::ids::{CommitSha, TaskId};

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
    /// Git's worktree bookkeeping (`.git/worktrees/`) is not safe under concurrent add, remove and
    /// prune: one prune can delete another add's half-written entry. Every change to it goes
    /// through this lock.
    worktrees: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Variables that would point git somewhere else than where abo means it to work.
pub const GIT_ENV_REMOVE: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
];

impl Git {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            identity: Identity::default(),
            groups: Groups::default(),
            worktrees: Default::default(),
        }
    }

    /// Runs git in `cwd`, returning stdout; a non-zero exit is an error with git's message.
    pub async fn run_in(&self, cwd: &Path, args: &[&str]) -> Result<String> {
        let out = self.raw(cwd, args, &[]).await?;
        if out.exit == Some(0) {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.failed(args, &out))
        }
    }

    pub async fn run(&self, args: &[&str]) -> Result<String> {
        self.run_in(&self.root.clone(), args).await
    }

    async fn raw(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<process::Outcome> {
        let mut spec = Spec::new("git", cwd).args(args.iter().copied());
        spec.env_remove = GIT_ENV_REMOVE.iter().map(|s| (*s).to_owned()).collect();
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

    /// The top level of the repository containing `dir`.
    pub async fn toplevel(dir: &Path) -> Result<PathBuf> {
        let g = Git::new(dir.to_owned());
        let out = g.run_in(dir, &["rev-parse", "--show-toplevel"]).await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// Uses the user's identity when git has one, else `abo <abo@localhost>`.
    pub async fn resolve_identity(&mut self) {
        let name = self
            .run(&["config", "user.name"])
            .await
            .ok()
            .filter(|s| !s.trim().is_empty());
        let email = self
            .run(&["config", "user.email"])
            .await
            .ok()
            .filter(|s| !s.trim().is_empty());
        if name.is_none() || email.is_none() {
            self.identity.env = vec![
                ("GIT_AUTHOR_NAME".into(), "abo".into()),
                ("GIT_AUTHOR_EMAIL".into(), "abo@localhost".into()),
                ("GIT_COMMITTER_NAME".into(), "abo".into()),
                ("GIT_COMMITTER_EMAIL".into(), "abo@localhost".into()),
            ];
        }
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

    pub async fn delete_branch(&self, branch: &str) -> Result<()> {
        if self.branch_head(branch).await?.is_some() {
            self.run(&["branch", "-D", branch]).await?;
        }
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
        let _guard = self.worktrees.lock().await;
        self.remove_worktree_locked(path).await?;
        self.delete_branch(branch).await?;
        let p = path.to_string_lossy();
        self.run(&["worktree", "add", "--quiet", "-b", branch, &p, at.as_str()])
            .await?;
        Ok(())
    }

    /// A detached worktree at `path` on `at`.
    pub async fn add_detached_worktree(&self, path: &Path, at: &CommitSha) -> Result<()> {
        let _guard = self.worktrees.lock().await;
        self.remove_worktree_locked(path).await?;
        let p = path.to_string_lossy();
        self.run(&["worktree", "add", "--quiet", "--detach", &p, at.as_str()])
            .await?;
        Ok(())
    }

    /// Removes a worktree and its directory; a missing one is fine.
    pub async fn remove_worktree(&self, path: &Path) -> Result<()> {
        let _guard = self.worktrees.lock().await;
        self.remove_worktree_locked(path).await
    }

    /// Forgets worktrees whose directories are gone.
    pub async fn prune_worktrees(&self) -> Result<()> {
        let _guard = self.worktrees.lock().await;
        self.run(&["worktree", "prune"]).await?;
        Ok(())
    }

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

    /// Commits everything in a worktree with the message's paragraphs; returns the commit.
    pub async fn commit_all(&self, wt: &Path, paragraphs: &[String]) -> Result<CommitSha> {
        self.run_in(wt, &["add", "-A"]).await?;
        let mut args: Vec<&str> = vec![
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "--allow-empty-message",
        ];
        for p in paragraphs {
            args.push("-m");
            args.push(p);
        }
        self.run_in(wt, &args).await?;
        let head = self.run_in(wt, &["rev-parse", "HEAD"]).await?;
        Ok(CommitSha::new(head.trim()))
    }

    /// A trailer's value on a commit (`Abo-Task`), if present.
    pub async fn trailer(&self, commit: &str, key: &str) -> Result<Option<String>> {
        let fmt = format!("--format=%(trailers:key={key},valueonly,separator=%x2C)");
        let out = self.run(&["log", "-1", &fmt, commit]).await?;
        let v = out.trim().to_owned();
        Ok((!v.is_empty()).then_some(v))
    }

    /// The commit on `branch` (after `base`) whose `Abo-Task` trailer names `task`, with its attempt.
    pub async fn find_task_commit(
        &self,
        base: &CommitSha,
        branch: &str,
        task: &TaskId,
    ) -> Result<Option<(CommitSha, u32)>> {
        let range = format!("{base}..refs/heads/{branch}");
        let fmt = "--format=%H%x09%(trailers:key=Abo-Task,valueonly,separator=%x2C)%x09%(trailers:key=Abo-Attempt,valueonly,separator=%x2C)";
        let out = self.run(&["log", fmt, &range]).await?;
        Ok(out.lines().find_map(|l| {
            let mut parts = l.split('\t');
            let sha = parts.next()?;
            let t = parts.next()?.trim();
            let a = parts.next()?.trim().parse().ok()?;
            (t == task.as_str()).then(|| (CommitSha::new(sha), a))
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
        let info = self
            .run(&[
                "log",
                "-1",
                "--format=%an%x00%ae%x00%aI%x00%B",
                like.as_str(),
            ])
            .await?;
        let mut parts = info.splitn(4, '\0');
        let (an, ae, ad) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let msg = parts.next().unwrap_or_default().trim_end().to_owned();
        let env = [
            ("GIT_AUTHOR_NAME".to_owned(), an.to_owned()),
            ("GIT_AUTHOR_EMAIL".to_owned(), ae.to_owned()),
            ("GIT_AUTHOR_DATE".to_owned(), ad.to_owned()),
        ];
        let args = [
            "-c",
            "commit.gpgsign=false",
            "commit-tree",
            tree,
            "-p",
            parent.as_str(),
            "-m",
            &msg,
        ];
        let out = self.raw(&self.root.clone(), &args, &env).await?;
        if out.exit != Some(0) {
            return Err(self.failed(&args, &out));
        }
        Ok(CommitSha::new(String::from_utf8_lossy(&out.stdout).trim()))
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

    pub async fn push(&self, remote: &str, branch: &str) -> Result<()> {
        let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
        self.run(&["push", "--quiet", remote, &spec]).await?;
        Ok(())
    }
}
