//! An attempt's worktree, added as `git worktree add -B` adds it but without reading every other
//! worktree: git reads each registered worktree's files in each `worktree add` (is the path
//! registered, is the branch checked out) and again in the `git branch --force` it starts, so
//! that attempts started together cost the square of their number (200 at once: 20 ms an add,
//! 40,000 worktree reads in all). What git writes is written here, in git's order
//! (`gitrepository-layout(5)`, "worktrees"):
//!
//! 1. the worktree's folder, created (it must not exist: the caller removed what was there);
//! 2. its entry under `<common dir>/worktrees/`, claimed by creating its folder (named after the
//!    worktree's folder, a number appended while that name is taken, as git names it) and locked
//!    `initializing` while it is written, so that a `worktree prune` beside it leaves it: `commondir`,
//!    `HEAD` naming the branch, `gitdir` naming the worktree's `.git` file; then that file;
//! 3. the lock removed, then `git reset --hard <start>` in it: it writes the branch (`worktree add`
//!    runs `git branch --force` for that, a process of its own; a branch a killed attempt left
//!    moves) and checks out the files, as `worktree add` checks out.
//!
//! Anything failing removes what was made and says so; the caller then adds the worktree with
//! `git worktree add`. Repositories this does not know to write for (a reftable, per-worktree
//! configuration, a main worktree whose `.git` is not a folder, a folder name git would rewrite)
//! go to `git worktree add` directly.

use std::path::{Path, PathBuf};

use super::{Git, GitError, Result, common_dir};

impl Git {
    /// Adds the worktree at `path` on `branch` from `start` (a commit or a full ref name); `false`
    /// when this repository or this name is for `git worktree add` (nothing was made).
    pub(super) async fn create_worktree(
        &self,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> Result<bool> {
        let Some((common, name)) = self.writable_layout(path) else {
            return Ok(false);
        };
        let refname = format!("refs/heads/{branch}");
        let mut made = Vec::new();
        match self
            .write_worktree(&mut made, &common, &name, path, &refname, start)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                // What was made, newest first.
                for dir in made.iter().rev() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Err(e)
            }
        }
    }

    /// The common git directory and the entry's name, when abo writes this repository's
    /// worktrees itself.
    pub(super) fn writable_layout(&self, path: &Path) -> Option<(PathBuf, String)> {
        let common = common_dir(&self.root)?;
        if !self.root.join(".git").is_dir() || common.join("reftable").exists() {
            return None;
        }
        let config = std::fs::read_to_string(common.join("config")).ok()?;
        if config.to_ascii_lowercase().contains("worktreeconfig") {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with(".lock")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        plain.then(|| (common, name.to_owned()))
    }

    async fn write_worktree(
        &self,
        made: &mut Vec<PathBuf>,
        common: &Path,
        name: &str,
        path: &Path,
        refname: &str,
        start: &str,
    ) -> Result<()> {
        let io = |what: &str, e: std::io::Error| GitError::Failed {
            args: "worktree add".into(),
            message: format!("{what}: {e}"),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("the worktree's parent", e))?;
        }
        std::fs::create_dir(path).map_err(|e| io("the worktree's folder", e))?;
        made.push(path.to_owned());
        let path = path
            .canonicalize()
            .map_err(|e| io("the worktree's folder", e))?;
        let entries = common.join("worktrees");
        std::fs::create_dir_all(&entries).map_err(|e| io("the worktrees' entries", e))?;
        let entry = claim(&entries, name, &path).map_err(|e| io("the worktree's entry", e))?;
        made.push(entry.clone());
        let write = |file: &Path, text: String| {
            std::fs::write(file, text).map_err(|e| io("the worktree's entry", e))
        };
        write(&entry.join("locked"), "initializing\n".into())?;
        write(&entry.join("commondir"), "../..\n".into())?;
        write(&entry.join("HEAD"), format!("ref: {refname}\n"))?;
        write(
            &entry.join("gitdir"),
            format!("{}\n", path.join(".git").display()),
        )?;
        super::pool::write_dot_git(&path, &entry).map_err(|message| GitError::Failed {
            args: "worktree add".into(),
            message,
        })?;
        std::fs::remove_file(entry.join("locked")).map_err(|e| io("the worktree's entry", e))?;
        self.check_out(&path, start).await
    }

    /// Checks out `start` in the registered worktree at `path` (`git reset --hard`): `HEAD` names
    /// a branch that need not exist yet, and `reset` to a commit creates it there (or moves it).
    /// Only the files that differ from what the index records are written.
    pub(super) async fn check_out(&self, path: &Path, start: &str) -> Result<()> {
        self.run_in(
            path,
            &[
                "reset",
                "--hard",
                "--quiet",
                "--no-recurse-submodules",
                start,
                "--",
            ],
        )
        .await
        .map(drop)
    }
}

/// Creates `<entries>/<name>` (or `<name>1`, `<name>2`... while taken): the folder made is the
/// claim, as git's own `mkdir` is. A taken entry that names `folder` (just made, so nothing can be
/// registered there: the folder was deleted without its entry) is stale: it is removed and its
/// name taken, so that the worktree has one entry and abo and git find the same one.
fn claim(entries: &Path, name: &str, folder: &Path) -> std::io::Result<PathBuf> {
    let names_folder = |entry: &Path| {
        std::fs::read_to_string(entry.join("gitdir"))
            .is_ok_and(|g| Path::new(g.trim()).parent() == Some(folder))
    };
    let mut last = None;
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            entries.join(name)
        } else {
            entries.join(format!("{name}{n}"))
        };
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if names_folder(&candidate) {
                    std::fs::remove_dir_all(&candidate)?;
                    std::fs::create_dir(&candidate)?;
                    return Ok(candidate);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}
