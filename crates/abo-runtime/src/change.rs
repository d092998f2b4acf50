//! What an attempt changed, as the policy sees it (DESIGN §8's `change`), and the secrets in it.

use std::path::Path;

use serde_json::{Value, json};

use abo_policy::secrets::{Finding, Scanner};

use crate::git::{Git, GitError};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileChange {
    pub path: String,
    pub status: &'static str,
    pub lines_added: u64,
    pub lines_removed: u64,
    pub binary: bool,
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
    git.run_in(wt, &["add", "--all", "--intent-to-add"]).await?;
    let numstat = git
        .run_in(wt, &["diff", "HEAD", "--numstat", "--no-renames"])
        .await?;
    let names = git
        .run_in(wt, &["diff", "HEAD", "--name-status", "--no-renames"])
        .await?;
    let patch = git
        .run_in(wt, &["diff", "HEAD", "-U0", "--no-renames", "--no-color"])
        .await?;
    let mut change = Change {
        comments_only: true,
        ..Default::default()
    };
    for line in numstat.lines() {
        let mut parts = line.splitn(3, '\t');
        let (a, r, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let binary = a == "-" && r == "-";
        let (a, r) = (a.parse().unwrap_or(0), r.parse().unwrap_or(0));
        let status = match names
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(path))
            .and_then(|l| l.chars().next())
        {
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
    if change.files.is_empty() {
        change.comments_only = false;
    }
    Ok(change)
}
