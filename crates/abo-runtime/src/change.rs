//! What an attempt changed, as the policy sees it (DESIGN §8's `change`), and the secrets in it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

use abo_core::ids::AttemptId;
use abo_policy::secrets::{Finding, Scanner};

use crate::git::{Git, GitError};

mod links;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileChange {
    pub path: String,
    pub status: &'static str,
    pub lines_added: u64,
    pub lines_removed: u64,
    pub binary: bool,
    /// A symbolic link's target (the change's new mode is 120000), read in the worktree.
    pub symlink_target: Option<String>,
    /// The link points out of the repository: an absolute target, or `..` above its root.
    pub escapes: bool,
}

#[derive(Debug, Default)]
pub struct Change {
    pub files: Vec<FileChange>,
    pub lines_added: u64,
    pub lines_removed: u64,
    /// Every added line, joined: what forbidden patterns are matched against.
    pub added_text: String,
    /// Every changed line is a comment.
    pub comments_only: bool,
    pub secrets: Vec<Finding>,
}

impl Change {
    /// The `change` object of the policy input. Secrets are reported separately, without values.
    pub fn to_json(&self, redact: impl Fn(&str) -> String) -> Value {
        json!({
            "files": self.files.iter().map(|f| json!({
                "path": f.path, "status": f.status, "lines_added": f.lines_added,
                "lines_removed": f.lines_removed, "binary": f.binary,
                "symlink_target": f.symlink_target, "escapes": f.escapes,
            })).collect::<Vec<_>>(),
            "lines_added": self.lines_added,
            "lines_removed": self.lines_removed,
            "added_text": redact(&self.added_text),
            "comments_only": self.comments_only,
        })
    }

    pub fn secret_values(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|f| (f.value.clone(), f.rule.to_owned()))
            .collect()
    }
}

/// The last summary of each attempt's worktree, read after its backend and after each of its gates.
/// Nothing else runs in the worktree before the policy evaluates the change, so the policy takes
/// it instead of reading the worktree again (in a fresh worktree every git command re-reads the
/// files). A process that did not run the attempt has none, and reads the worktree.
#[derive(Debug, Default)]
pub struct Latest(Mutex<HashMap<AttemptId, Change>>);

impl Latest {
    pub fn put(&self, attempt: &AttemptId, change: Change) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(attempt.clone(), change);
        }
    }

    pub fn take(&self, attempt: &AttemptId) -> Option<Change> {
        self.0.lock().ok()?.remove(attempt)
    }
}

fn comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || ["//", "#", "/*", "*", "--", ";", "<!--"]
            .iter()
            .any(|p| t.starts_with(p))
}

/// Reads the worktree's change against HEAD. New files are only marked intent-to-add: nothing is
/// written to git's object store before the policy has allowed the change (a secret in a denied
/// change must not end up in a blob).
pub async fn summarize(git: &Git, wt: &Path, scanner: &Scanner) -> Result<Change, GitError> {
    git.stage(wt, true).await?;
    // One diff for the three views: `--raw` (each file's status), `--numstat` (its counts), then,
    // after an empty line, the patch. Every git command in a fresh worktree re-reads its files (git
    // cannot trust their times yet), so one command is much cheaper than three.
    let out = git
        .run_in(
            wt,
            &[
                "diff",
                "HEAD",
                "--no-renames",
                "--no-color",
                "-U0",
                "--raw",
                "--numstat",
                "--patch",
            ],
        )
        .await?;
    let (summary, patch) = out.split_once("\n\n").unwrap_or((out.as_str(), ""));
    let mut change = Change {
        comments_only: true,
        ..Default::default()
    };
    // `:MODE MODE SHA SHA STATUS\tPATH`
    let status_of = |path: &str| {
        summary
            .lines()
            .filter(|l| l.starts_with(':'))
            .find_map(|l| {
                let (meta, p) = l.split_once('\t')?;
                (p == path).then(|| meta.rsplit(' ').next().and_then(|s| s.chars().next()))?
            })
    };
    for line in summary.lines().filter(|l| !l.starts_with(':')) {
        let mut parts = line.splitn(3, '\t');
        let (a, r, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let binary = a == "-" && r == "-";
        let (a, r) = (a.parse().unwrap_or(0), r.parse().unwrap_or(0));
        let status = match status_of(path) {
            Some('A') => "added",
            Some('D') => "deleted",
            _ => "modified",
        };
        change.lines_added += a;
        change.lines_removed += r;
        if binary {
            change.comments_only = false;
        }
        change.files.push(FileChange {
            path: path.to_owned(),
            status,
            lines_added: a,
            lines_removed: r,
            binary,
            ..Default::default()
        });
    }
    // Added lines with their numbers in the new file, per file: for the text and the secret scan.
    let mut file = String::new();
    let mut next_line = 0usize;
    let mut added: Vec<(usize, String)> = Vec::new();
    let flush = |file: &str, added: &mut Vec<(usize, String)>, change: &mut Change| {
        if !file.is_empty() && !added.is_empty() {
            change.secrets.extend(scanner.scan(file, added));
        }
        added.clear();
    };
    for l in patch.lines() {
        if let Some(p) = l.strip_prefix("+++ ") {
            flush(&file, &mut added, &mut change);
            // git ends a name holding a space with a tab here.
            let p = p.strip_suffix('\t').unwrap_or(p);
            file = p.strip_prefix("b/").unwrap_or(p).to_owned();
        } else if l.starts_with("@@") {
            // @@ -a,b +c,d @@
            next_line = l
                .split_whitespace()
                .nth(2)
                .and_then(|r| r.trim_start_matches('+').split(',').next()?.parse().ok())
                .unwrap_or(1);
        } else if let Some(text) = l.strip_prefix('+') {
            change.added_text.push_str(text);
            change.added_text.push('\n');
            if !comment(text) {
                change.comments_only = false;
            }
            added.push((next_line, text.to_owned()));
            next_line += 1;
        } else if let Some(text) = l.strip_prefix('-')
            && !l.starts_with("---")
            && !comment(text)
        {
            change.comments_only = false;
        }
    }
    flush(&file, &mut added, &mut change);
    links::mark(git, wt, &mut change.files).await?;
    if change.files.is_empty() {
        change.comments_only = false;
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    #[tokio::test]
    async fn a_worktree_change_is_read_as_files_lines_text_and_secrets() {
        let repo = TestRepo::new();
        repo.write("src/a.rs", "fn a() {}\nfn b() {}\n");
        repo.write("gone.txt", "bye\n");
        repo.write("logo.png", "\u{0}\u{1}binary");
        repo.commit_all("base");
        repo.write("src/a.rs", "fn a() {}\n// why\nfn c() {}\n");
        std::fs::remove_file(repo.path.join("gone.txt")).unwrap();
        repo.write("logo.png", "\u{0}\u{2}binary!");
        repo.write("new dir/key.rs", "let k = \"AKIAIOSFODNN7EXAMPLE\";\n");
        let git = Git::new(repo.path.clone());
        let change = summarize(&git, &repo.path, &Scanner::default())
            .await
            .unwrap();
        let files: Vec<_> = change
            .files
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.status,
                    f.lines_added,
                    f.lines_removed,
                    f.binary,
                )
            })
            .collect();
        assert_eq!(
            files,
            vec![
                ("gone.txt", "deleted", 0, 1, false),
                ("logo.png", "modified", 0, 0, true),
                ("new dir/key.rs", "added", 1, 0, false),
                ("src/a.rs", "modified", 2, 1, false),
            ]
        );
        assert_eq!((change.lines_added, change.lines_removed), (3, 2));
        assert_eq!(
            change.added_text,
            "let k = \"AKIAIOSFODNN7EXAMPLE\";\n// why\nfn c() {}\n"
        );
        assert!(!change.comments_only);
        let secrets: Vec<_> = change
            .secrets
            .iter()
            .map(|s| (s.path.as_str(), s.line))
            .collect();
        assert_eq!(secrets, [("new dir/key.rs", 1)]);
        // Nothing was written to the object store: the new file is only intent-to-add.
        let objects = repo.git(&["count-objects", "-v"]);
        let loose = repo.git(&["cat-file", "--batch-all-objects", "--batch-check"]);
        assert!(
            !loose.contains(&git_hash(&repo, "new dir/key.rs")),
            "{objects}"
        );
    }

    fn git_hash(repo: &TestRepo, rel: &str) -> String {
        repo.git(&["hash-object", rel]).trim().to_owned()
    }

    #[tokio::test]
    async fn no_change_reads_as_empty() {
        let repo = TestRepo::new();
        repo.write("a.txt", "a\n");
        repo.commit_all("base");
        let change = summarize(
            &Git::new(repo.path.clone()),
            &repo.path,
            &Scanner::default(),
        )
        .await
        .unwrap();
        assert!(change.files.is_empty());
        assert_eq!(change.added_text, "");
        assert!(!change.comments_only);
    }
}
