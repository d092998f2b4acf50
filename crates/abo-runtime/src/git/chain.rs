//! Commits made one on another from the paths each changes, in one `git fast-import`: how attempts
//! landing together are put on the run branch when nothing else touched their paths. Merging
//! such an attempt onto the branch (`git merge-tree`) gives the branch's tree with the attempt's
//! paths set to the attempt's: this writes that tree directly, without a git process per attempt.
//!
//! [`Git::changes`] reads what commits change (one `git diff-tree --stdin`), [`Touched`] says
//! whether a change's paths are clear of what changed since its base, and [`Git::chain`] writes
//! the commits.

use std::collections::BTreeSet;

use abo_core::ids::CommitSha;

use super::{Authored, Git, GitError, MAX_STDOUT, Result};

/// A path a commit changed: its new mode and object, or `None` when it was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathChange {
    /// The path's bytes as git holds them (not necessarily UTF-8).
    pub path: Vec<u8>,
    pub to: Option<(String, String)>,
}

impl Git {
    /// The paths each `(commit, from)` pair changes from `from` to `commit`, recursively, without
    /// renames, read by one `git diff-tree --stdin`.
    pub async fn changes(&self, pairs: &[(CommitSha, CommitSha)]) -> Result<Vec<Vec<PathChange>>> {
        let args = [
            "diff-tree",
            "--stdin",
            "-r",
            "-z",
            "--no-renames",
            "--always",
            "--ignore-submodules=none",
        ];
        let input: String = pairs.iter().map(|(c, f)| format!("{c} {f}\n")).collect();
        let root = self.root.clone();
        let out = self
            .raw_capped(&root, &args, &[], Some(input.as_bytes()), MAX_STDOUT)
            .await?;
        if out.exit != Some(0) {
            return Err(self.failed(&args, &out));
        }
        let parsed = parse_changes(&out.stdout).ok_or_else(|| GitError::Failed {
            args: args.join(" "),
            message: "its output could not be read".into(),
        })?;
        if parsed.len() != pairs.len() {
            return Err(GitError::Failed {
                args: args.join(" "),
                message: format!("it showed {} commits of {}", parsed.len(), pairs.len()),
            });
        }
        Ok(parsed)
    }

    /// Commits, one on another from `parent`, the first on `parent`: each with the author and
    /// message of its [`Authored`], this repository's committer, and the tree of the one before
    /// with its paths changed. One `git fast-import`, which writes its objects in a pack and moves
    /// `scratch` (a ref of abo's own, for the caller to delete) to the last. Returns the commits in
    /// their order.
    pub async fn chain(
        &self,
        parent: &CommitSha,
        commits: &[(&Authored, &[PathChange])],
        scratch: &str,
    ) -> Result<Vec<CommitSha>> {
        // A name, address or date that would not stay on its line of the stream (a commit abo did
        // not write, read back) is not replayed: the caller merges it instead.
        let plain = |f: &str| !f.contains(['\n', '\r', '\0', '<', '>']);
        let date = |d: &str| {
            let mut p = d.split(' ');
            let (Some(t), Some(z), None) = (p.next(), p.next(), p.next()) else {
                return false;
            };
            let zone = z.strip_prefix(['+', '-']).unwrap_or_default();
            t.bytes().all(|b| b.is_ascii_digit())
                && zone.len() == 4
                && zone.bytes().all(|b| b.is_ascii_digit())
        };
        if let Some((a, _)) = commits
            .iter()
            .find(|(a, _)| !(plain(&a.name) && plain(&a.email) && date(&a.raw_date)))
        {
            return Err(GitError::Failed {
                args: "fast-import".into(),
                message: format!(
                    "the author {:?} <{:?}> {:?} cannot be written",
                    a.name, a.email, a.raw_date
                ),
            });
        }
        let committer = self.committer_ident().await?;
        let mut stream = Vec::new();
        for (i, (authored, changes)) in commits.iter().enumerate() {
            // As `git commit-tree -m` writes it: the message and a newline.
            let message = format!("{}\n", authored.message);
            let message = message.as_bytes();
            stream.extend_from_slice(
                format!(
                    "commit {scratch}\nmark :{}\nauthor {} <{}> {}\ncommitter {committer}\ndata {}\n",
                    i + 1,
                    authored.name,
                    authored.email,
                    authored.raw_date,
                    message.len()
                )
                .as_bytes(),
            );
            stream.extend_from_slice(message);
            if i == 0 {
                stream.extend_from_slice(format!("from {parent}\n").as_bytes());
            }
            // Deletions first: a file that replaces a directory is written after the directory's
            // files are gone.
            for c in changes.iter().filter(|c| c.to.is_none()) {
                stream.extend_from_slice(b"D ");
                stream.extend_from_slice(&quoted(&c.path));
                stream.push(b'\n');
            }
            for c in changes.iter() {
                if let Some((mode, object)) = &c.to {
                    stream.extend_from_slice(format!("M {mode} {object} ").as_bytes());
                    stream.extend_from_slice(&quoted(&c.path));
                    stream.push(b'\n');
                }
            }
            stream.push(b'\n');
        }
        // Each commit's id, printed on stdout.
        for i in 0..commits.len() {
            stream.extend_from_slice(format!("get-mark :{}\n", i + 1).as_bytes());
        }
        stream.extend_from_slice(b"done\n");
        let args = ["fast-import", "--quiet", "--force", "--done"];
        let root = self.root.clone();
        let out = self
            .raw_capped(&root, &args, &[], Some(&stream), MAX_STDOUT)
            .await?;
        if out.exit != Some(0) {
            return Err(self.failed(&args, &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let made: Vec<CommitSha> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(CommitSha::new)
            .collect();
        if made.len() != commits.len() {
            return Err(GitError::Failed {
                args: args.join(" "),
                message: format!(
                    "it said {} of the {} commits it made",
                    made.len(),
                    commits.len()
                ),
            });
        }
        Ok(made)
    }
}

/// `git diff-tree --stdin -r -z` output: for each input line, the commit's id, then for each
/// path `:<old mode> <new mode> <old object> <new object> <status>` and the path.
fn parse_changes(out: &[u8]) -> Option<Vec<Vec<PathChange>>> {
    let mut fields = out.split(|b| *b == 0);
    let mut all: Vec<Vec<PathChange>> = Vec::new();
    while let Some(field) = fields.next() {
        if field.is_empty() {
            continue;
        }
        if let Some(header) = field.strip_prefix(b":") {
            let header = std::str::from_utf8(header).ok()?;
            let parts: Vec<&str> = header.split(' ').collect();
            let [_, mode, _, object, status] = parts.as_slice() else {
                return None;
            };
            let path = fields.next()?.to_vec();
            let to = match status.chars().next()? {
                'D' => None,
                'A' | 'M' | 'T' => Some(((*mode).to_owned(), (*object).to_owned())),
                _ => return None,
            };
            all.last_mut()?.push(PathChange { path, to });
        } else if field.len() >= 40 && field.iter().all(u8::is_ascii_hexdigit) {
            all.push(Vec::new());
        } else {
            return None;
        }
    }
    Some(all)
}

/// A path as fast-import reads it: always quoted, C-style, every byte outside printable ASCII in
/// octal.
fn quoted(path: &[u8]) -> Vec<u8> {
    let mut q = vec![b'"'];
    for &b in path {
        match b {
            b'"' | b'\\' => q.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => q.push(b),
            _ => q.extend_from_slice(format!("\\{b:03o}").as_bytes()),
        }
    }
    q.push(b'"');
    q
}

/// The paths changed on the branch since some base: a change is clear of them when none of its
/// paths is one of them, under one of them, or above one of them.
#[derive(Clone, Debug, Default)]
pub struct Touched(BTreeSet<Vec<u8>>);

impl Touched {
    pub fn add(&mut self, changes: &[PathChange]) {
        self.0.extend(changes.iter().map(|c| c.path.clone()));
    }

    pub fn clear_of(&self, changes: &[PathChange]) -> bool {
        changes.iter().all(|c| !self.meets(&c.path))
    }

    fn meets(&self, path: &[u8]) -> bool {
        if self.0.contains(path) {
            return true;
        }
        // A directory above it was touched (a file there now, or gone).
        let above = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .any(|(i, _)| self.0.contains(&path[..i]));
        // Something under it was touched (it is a directory on the branch).
        let mut dir = path.to_vec();
        dir.push(b'/');
        let below = self
            .0
            .range(dir.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&dir));
        above || below
    }
}

#[cfg(test)]
mod tests {
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    use super::*;

    /// Two commits replayed on a third: each is the one before with its paths changed, with the
    /// author and message given and the repository's committer.
    #[tokio::test]
    async fn commits_are_chained_from_their_changes_with_their_authors() {
        let repo = TestRepo::new();
        repo.write("keep", "k\n");
        repo.write("gone/f", "g\n");
        repo.commit_all("base");
        let base = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        repo.write("a b", "ab\n");
        repo.git(&["rm", "-q", "gone/f"]);
        repo.commit_all("one");
        let one = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        repo.git(&["checkout", "-q", base.as_str()]);
        repo.write("second", "2\n");
        repo.commit_all("two");
        let two = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        repo.git(&["checkout", "-q", "--detach", base.as_str()]);
        repo.write("elsewhere", "e\n");
        repo.commit_all("elsewhere");
        let onto = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        let git = Git::new(repo.path.clone());
        let changes = git
            .changes(&[
                (one.clone(), base.clone()),
                (two.clone(), base.clone()),
                (base.clone(), base.clone()),
            ])
            .await
            .unwrap();
        let paths = |c: &[PathChange]| -> Vec<(String, bool)> {
            c.iter()
                .map(|c| {
                    (
                        String::from_utf8_lossy(&c.path).into_owned(),
                        c.to.is_some(),
                    )
                })
                .collect()
        };
        assert_eq!(
            paths(&changes[0]),
            [("a b".to_owned(), true), ("gone/f".to_owned(), false)]
        );
        assert_eq!(paths(&changes[1]), [("second".to_owned(), true)]);
        assert!(changes[2].is_empty());
        let authors = git.authors(&[one.clone(), two.clone()]).await.unwrap();
        let made = git
            .chain(
                &onto,
                &[
                    (&authors[0], changes[0].as_slice()),
                    (&authors[1], changes[1].as_slice()),
                ],
                "refs/abo/landing/t",
            )
            .await
            .unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(
            repo.git(&["rev-parse", &format!("{}^", made[0])]).trim(),
            onto.as_str()
        );
        assert_eq!(
            repo.git(&["rev-parse", &format!("{}^", made[1])]).trim(),
            made[0].as_str()
        );
        let files = repo.git(&["ls-tree", "-r", "--name-only", made[1].as_str()]);
        assert_eq!(files, "README.md\na b\nelsewhere\nkeep\nsecond\n");
        for (m, c) in made.iter().zip([&one, &two]) {
            let f = "--format=%an %ae %ad%n%B";
            assert_eq!(
                repo.git(&["log", "-1", f, m.as_str()]),
                repo.git(&["log", "-1", f, c.as_str()])
            );
        }
        assert_eq!(
            repo.git(&["rev-parse", "refs/abo/landing/t"]).trim(),
            made[1].as_str()
        );
    }

    fn change(path: &str) -> PathChange {
        PathChange {
            path: path.as_bytes().to_vec(),
            to: None,
        }
    }

    #[test]
    fn a_change_is_clear_only_of_paths_that_are_not_it_above_it_or_under_it() {
        let mut t = Touched::default();
        t.add(&[change("a/b.txt"), change("c")]);
        for clear in ["a/c.txt", "b", "a/b.txt2", "cc", "a/b"] {
            assert!(t.clear_of(&[change(clear)]), "{clear}");
        }
        for met in ["a/b.txt", "c", "c/d", "a/b.txt/x", "a"] {
            assert!(!t.clear_of(&[change(met)]), "{met}");
        }
    }

    #[test]
    fn paths_are_quoted_for_fast_import_whatever_their_bytes() {
        assert_eq!(quoted(b"a b/\"q\"\\"), b"\"a b/\\\"q\\\"\\\\\"".to_vec());
        assert_eq!(quoted(b"n\nl\xff"), b"\"n\\012l\\377\"".to_vec());
    }
}
