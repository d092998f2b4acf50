//! Shared test fixtures: temporary git repositories, fake agent CLIs, a stub model API, a scripted
//! model server speaking providers' wire formats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures fail the test that uses them"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub mod agents;
pub mod model_server;
pub mod model_server_openai;
pub mod pg;
pub mod prometheus;
pub mod smtp;
pub mod stub;

/// A git repository in a temporary directory, removed when dropped. Files outside the repository
/// (backlogs, markers) go in [`TestRepo::outside`].
pub struct TestRepo {
    _tmp: TempDir,
    pub path: PathBuf,
    pub outside: PathBuf,
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRepo {
    /// `git init` on `main`, a local identity, and a first commit with a README.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let repo = Self {
            _tmp: tmp,
            path,
            outside,
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Test User"]);
        repo.git(&["config", "user.email", "test@example.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo.write("README.md", "# test repo\n");
        repo.commit_all("initial");
        repo
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path.join(rel)).unwrap()
    }

    /// Writes a file outside the repository (a backlog, a patch, a script) and returns its path.
    pub fn write_outside(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.outside.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
    }

    /// Runs git in the repository; panics with git's output when it fails.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.path, args)
    }

    /// The commits on `branch` since `base`, oldest first, as (subject, Abo-Task trailer).
    pub fn commits(&self, base: &str, branch: &str) -> Vec<(String, String)> {
        let out = self.git(&[
            "log",
            "--reverse",
            "--format=%s%x09%(trailers:key=Abo-Task,valueonly,separator=%x2C)",
            &format!("{base}..{branch}"),
        ]);
        out.lines()
            .map(|l| {
                let (s, t) = l.split_once('\t').unwrap_or((l, ""));
                (s.to_owned(), t.trim().to_owned())
            })
            .collect()
    }

    /// Paths of the worktrees git knows, the main one and those abo keeps prepared for later
    /// attempts (its pool, `.abo/worktrees/.pool/`) excluded.
    pub fn extra_worktrees(&self) -> Vec<String> {
        self.git(&["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .skip(1)
            .filter(|w| !w.contains("/.abo/worktrees/.pool/"))
            .map(str::to_owned)
            .collect()
    }

    /// The working tree's state as the user sees it: HEAD, branch, status, diffs.
    pub fn user_view(&self) -> String {
        [
            self.git(&["rev-parse", "HEAD"]),
            self.git(&["symbolic-ref", "-q", "HEAD"]),
            self.git(&["status", "--porcelain=v1", "--untracked-files=all"]),
            self.git(&["diff"]),
            self.git(&["diff", "--cached"]),
        ]
        .join("\n---\n")
    }
}

/// Runs git in `dir`; panics with git's output when it fails.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    #[allow(clippy::disallowed_methods, reason = "test fixtures run git directly")]
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` until it holds or `secs` pass; returns whether it held.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Every file under `dir` (recursively, links not followed) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(e.path())
                && bytes
                    .windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes())
            {
                found.push(e.path());
            }
        }
    }
    found
}
