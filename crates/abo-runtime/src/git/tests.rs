//! The hardening of abo's git calls. Each attack is planted in a worktree as an agent would plant
//! it, with scripts that leave a marker when they run; abo's calls (through [`Git`]) must leave
//! none, and the same commands run with plain git (the control) leave every one.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use abo_policy::secrets::Scanner;
use abo_test_support::{TestRepo, git_in};
use pretty_assertions::assert_eq;

use super::*;
use index::Entry;

/// A repository whose owner configured an in-tree `core.hooksPath` (husky's `.husky`), a filter
/// and a textconv driver (as git-lfs or a diff helper would be), with a submodule-like gitlink
/// `sub` in its base commit; and scripts that mark the file `marks/<name>` when they run.
struct Lab {
    repo: TestRepo,
    marks: PathBuf,
    bin: PathBuf,
}

/// What each attack leaves when it runs: the nested repository's fsmonitor, hooks and clean
/// filter, the in-tree husky hooks, the owner's filter and textconv drivers named by a
/// `.gitattributes` the change adds.
const ATTACKS: &[&str] = &[
    "clean-x",
    "filter-sub",
    "fsmonitor-sub",
    "hook-sub",
    "husky",
    "process-sub",
    "textconv-x",
];

impl Lab {
    fn new() -> Self {
        let repo = TestRepo::new();
        let marks = repo.outside.join("marks");
        let bin = repo.outside.join("bin");
        std::fs::create_dir_all(&marks).unwrap();
        std::fs::create_dir_all(bin.join("subhooks")).unwrap();
        let lab = Self { repo, marks, bin };
        lab.script(&lab.bin.join("clean-x"), "clean-x", "cat");
        lab.script(&lab.bin.join("smudge-x"), "smudge-x", "cat");
        lab.script(&lab.bin.join("textconv-x"), "textconv-x", "cat \"$1\"");
        lab.script(&lab.bin.join("fsmonitor-sub"), "fsmonitor-sub", "");
        lab.script(&lab.bin.join("filter-sub"), "filter-sub", "cat");
        // Not a real long-running filter: git gives up on it, after it ran.
        lab.script(&lab.bin.join("process-sub"), "process-sub", "exit 1");
        for h in ["post-index-change", "post-commit", "post-checkout"] {
            lab.script(&lab.bin.join("subhooks").join(h), "hook-sub", "");
        }
        let b = |n: &str| lab.bin.join(n).to_string_lossy().into_owned();
        for (k, v) in [
            ("core.hooksPath", ".husky".to_owned()),
            ("filter.x.clean", b("clean-x")),
            ("filter.x.smudge", b("smudge-x")),
            ("diff.x.textconv", b("textconv-x")),
        ] {
            lab.repo.git(&["config", k, &v]);
        }
        // The base holds a gitlink `sub` (a nested repository with one commit).
        let sub = lab.repo.path.join("sub");
        git_in(&lab.repo.path, &["init", "--quiet", "sub"]);
        std::fs::write(sub.join("a"), "a\n").unwrap();
        git_in(&sub, &["add", "a"]);
        git_in(
            &sub,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "s",
            ],
        );
        lab.repo.git(&["add", "sub"]);
        lab.repo.git(&["commit", "--quiet", "-m", "base"]);
        lab
    }

    /// A shell script that appends to `marks/<mark>`, then runs `body`.
    fn script(&self, path: &Path, mark: &str, body: &str) {
        let text = format!(
            "#!/bin/sh\necho \"$0 $*\" >> '{}'\n{body}\n",
            self.marks.join(mark).display()
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The markers left, sorted.
    fn marked(&self) -> Vec<String> {
        let mut m: Vec<String> = std::fs::read_dir(&self.marks)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        m.sort();
        m
    }

    fn clear(&self) {
        for m in self.marked() {
            std::fs::remove_file(self.marks.join(m)).unwrap();
        }
    }

    /// What a hostile agent leaves in its worktree.
    fn plant(&self, wt: &Path) {
        // The gitlink `sub` made a nested repository at the same commit, with an fsmonitor, hooks
        // and a clean filter in its own config, and a file changed (same content, new time: git
        // reads it again, through the filter).
        let _ = std::fs::remove_dir(wt.join("sub"));
        let from = self.repo.path.join("sub");
        git_in(wt, &["clone", "--quiet", &from.to_string_lossy(), "sub"]);
        let sub = wt.join("sub");
        let b = |n: &str| self.bin.join(n).to_string_lossy().into_owned();
        git_in(&sub, &["config", "core.fsmonitor", &b("fsmonitor-sub")]);
        git_in(&sub, &["config", "core.hooksPath", &b("subhooks")]);
        git_in(&sub, &["config", "filter.z.clean", &b("filter-sub")]);
        git_in(&sub, &["config", "filter.y.process", &b("process-sub")]);
        std::fs::write(sub.join(".git/info/attributes"), "a filter=z\n").unwrap();
        std::fs::write(sub.join("a"), "a\n").unwrap();
        std::fs::write(sub.join("untracked"), "u\n").unwrap();
        // A new nested repository.
        git_in(wt, &["init", "--quiet", "sub2"]);
        git_in(
            &wt.join("sub2"),
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                "x",
            ],
        );
        git_in(
            &wt.join("sub2"),
            &["config", "core.fsmonitor", &b("fsmonitor-sub")],
        );
        // Hooks where the owner's core.hooksPath looks.
        for h in [
            "post-index-change",
            "post-commit",
            "post-checkout",
            "post-merge",
        ] {
            self.script(&wt.join(".husky").join(h), "husky", "");
        }
        // A `.gitmodules` asking for the nested repository's dirty state, attributes naming the
        // owner's drivers for every file, and an ordinary change.
        std::fs::write(
            wt.join(".gitmodules"),
            "[submodule \"sub\"]\n\tpath = sub\n\turl = ./sub\n\tignore = none\n",
        )
        .unwrap();
        std::fs::write(wt.join(".gitattributes"), "* filter=x diff=x\n").unwrap();
        std::fs::write(wt.join("README.md"), "# test repo\nmore\n").unwrap();
        std::fs::write(wt.join("notes.txt"), "notes\n").unwrap();
    }

    /// The nested repository's file now goes through its long-running (`process`) filter. Last:
    /// git in the nested repository fails on that filter, after running it.
    fn use_process_filter(&self, wt: &Path) {
        std::fs::write(wt.join("sub/.git/info/attributes"), "a filter=y\n").unwrap();
        std::fs::write(wt.join("sub/a"), "a\n").unwrap();
    }
}

/// Plain git, as abo ran it before its hardening; the exit status does not matter.
fn plain(dir: &Path, args: &[&str]) {
    #[allow(
        clippy::disallowed_methods,
        reason = "the control runs git without abo"
    )]
    let _ = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
}

#[tokio::test]
async fn no_git_call_on_a_hostile_worktree_runs_what_the_worktree_planted() {
    let lab = Lab::new();
    let git = Git::new(lab.repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let wt = lab.repo.outside.join("wt");
    git.add_worktree(&wt, "abo-attempt/r/t-1", &base)
        .await
        .unwrap();
    lab.plant(&wt);
    lab.clear();

    // Every class of call abo makes on an attempt's worktree: the change read after the backend
    // and after a gate (stage + diff), the prompt's files, a status, the commit, its trailers,
    // the cache's diff, the dashboard's show, the worktree's removal.
    let scanner = Scanner::default();
    let change = crate::change::summarize(&git, &wt, &scanner).await.unwrap();
    let change2 = crate::change::summarize(&git, &wt, &scanner).await.unwrap();
    let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".gitattributes",
            ".gitmodules",
            ".husky/post-checkout",
            ".husky/post-commit",
            ".husky/post-index-change",
            ".husky/post-merge",
            "README.md",
            "notes.txt",
            "sub2",
        ],
        "the policy still sees the change, the new nested repository as a gitlink"
    );
    assert_eq!(change.files, change2.files);
    lab.use_process_filter(&wt);
    let change3 = crate::change::summarize(&git, &wt, &scanner).await.unwrap();
    assert_eq!(change.files, change3.files);
    git.run_in(&wt, &["ls-files", "-z"]).await.unwrap();
    git.run_in(&wt, &["status", "--porcelain"]).await.unwrap();
    let commit = git
        .commit_all(
            &wt,
            &["t".into(), "Abo-Run: r\nAbo-Task: t\nAbo-Attempt: 1".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        git.abo_trailers(commit.as_str()).await.unwrap().attempt,
        Some(1)
    );
    let committed = git
        .run(&["show", "--name-only", "--format=", commit.as_str()])
        .await
        .unwrap();
    assert!(
        committed.contains("notes.txt") && committed.contains("sub2"),
        "{committed}"
    );
    git.run(&["diff", "--binary", base.as_str(), commit.as_str()])
        .await
        .unwrap();
    git.run(&[
        "show",
        "--stat",
        "--patch",
        "--format=%H %s",
        commit.as_str(),
        "--",
    ])
    .await
    .unwrap();
    git.remove_worktree(&wt).await.unwrap();
    assert_eq!(
        lab.marked(),
        Vec::<String>::new(),
        "abo's git ran nothing planted"
    );

    // Control: the same commands, plain, on the same planted worktree run every attack.
    let wt = lab.repo.outside.join("control");
    git_in(
        &lab.repo.path,
        &[
            "worktree",
            "add",
            "--quiet",
            "--detach",
            &wt.to_string_lossy(),
            base.as_str(),
        ],
    );
    lab.plant(&wt);
    lab.clear();
    plain(&wt, &["add", "--all", "--intent-to-add"]);
    plain(&wt, &["diff", "HEAD", "--raw", "--numstat", "--patch"]);
    plain(&wt, &["add", "-A"]);
    plain(&wt, &["commit", "--quiet", "--no-verify", "-m", "t"]);
    lab.use_process_filter(&wt);
    plain(&wt, &["diff", "HEAD"]);
    let marked = lab.marked();
    for attack in ATTACKS {
        assert!(
            marked.iter().any(|m| m == attack),
            "plain git did not run {attack}: {marked:?}"
        );
    }
}

#[tokio::test]
async fn applying_a_patch_runs_no_filter_its_attributes_name_and_writes_nothing_outside() {
    let lab = Lab::new();
    let git = Git::new(lab.repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    // Attributes at the root and in a new directory naming the owner's filter for the files the
    // patch adds after them, a symlink out of the worktree and a file through it.
    let outside = lab.repo.outside.join("victim");
    std::fs::create_dir_all(&outside).unwrap();
    let patch = lab.repo.write_outside(
        "change.diff",
        &format!(
            "diff --git a/.gitattributes b/.gitattributes\nnew file mode 100644\n--- /dev/null\n+++ b/.gitattributes\n@@ -0,0 +1 @@\n+* filter=x diff=x\n\
diff --git a/d/.gitattributes b/d/.gitattributes\nnew file mode 100644\n--- /dev/null\n+++ b/d/.gitattributes\n@@ -0,0 +1 @@\n+* filter=x\n\
diff --git a/d/new.txt b/d/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/d/new.txt\n@@ -0,0 +1 @@\n+hello\n\
diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n # test repo\n+more\n\
diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+{}\n\\ No newline at end of file\n\
diff --git a/link/pwned b/link/pwned\nnew file mode 100644\n--- /dev/null\n+++ b/link/pwned\n@@ -0,0 +1 @@\n+x\n",
            outside.display()
        ),
    );
    let wt = lab.repo.outside.join("wt");
    git.add_detached_worktree(&wt, &base).await.unwrap();
    lab.clear();
    let refused = git.apply(&wt, &patch, true).await.unwrap_err();
    assert!(refused.contains("beyond a symbolic link"), "{refused}");
    assert!(!outside.join("pwned").exists());
    // Without the file through the link, it applies, and runs nothing.
    let text = std::fs::read_to_string(&patch).unwrap();
    let text = &text[..text.find("diff --git a/link/pwned").unwrap()];
    std::fs::write(&patch, text).unwrap();
    git.apply(&wt, &patch, true).await.unwrap();
    git.apply(&wt, &patch, false).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(wt.join("d/new.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(lab.marked(), Vec::<String>::new());
    // Control: the attributes the patch wrote name a live driver, which plain git runs.
    plain(&wt, &["add", "-A"]);
    assert_eq!(lab.marked(), ["clean-x"]);
}

/// The worktree's `.git` file rewritten to name a git directory of the agent's own, whose config
/// defines a filter its `info/attributes` applies to every file: abo's git keeps to the
/// worktree's real git directory.
#[tokio::test]
async fn a_rewritten_git_file_does_not_redirect_abos_git() {
    let lab = Lab::new();
    let git = Git::new(lab.repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let evil = lab.repo.outside.join("evil.git");
    git_in(
        &lab.repo.outside,
        &["init", "--quiet", "--bare", "evil.git"],
    );
    lab.script(&lab.bin.join("evil-filter"), "evil-filter", "cat");
    let filter = lab.bin.join("evil-filter").to_string_lossy().into_owned();
    git_in(&evil, &["config", "filter.e.clean", &filter]);
    git_in(&evil, &["config", "core.bare", "false"]);
    std::fs::create_dir_all(evil.join("info")).unwrap();
    std::fs::write(evil.join("info/attributes"), "* filter=e\n").unwrap();
    let mut dirs = Vec::new();
    for name in ["wt", "control"] {
        let wt = lab.repo.outside.join(name);
        git.add_worktree(&wt, &format!("abo-attempt/{name}"), &base)
            .await
            .unwrap();
        std::fs::write(wt.join("notes.txt"), "notes\n").unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", evil.display())).unwrap();
        dirs.push(wt);
    }
    lab.clear();
    let change = crate::change::summarize(&git, &dirs[0], &Scanner::default())
        .await
        .unwrap();
    let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["notes.txt"], "read against the worktree's own HEAD");
    let commit = git.commit_all(&dirs[0], &["t".into()]).await.unwrap();
    assert_eq!(
        git.branch_head("abo-attempt/wt").await.unwrap(),
        Some(commit),
        "committed on the worktree's own branch"
    );
    assert_eq!(lab.marked(), Vec::<String>::new());
    // Control: plain git follows the `.git` file and runs the filter.
    plain(&dirs[1], &["add", "-A"]);
    assert_eq!(lab.marked(), ["evil-filter"]);
}

/// A `.gitattributes` already committed (an earlier task's, approved) names the owner's textconv
/// driver, and the owner configured an external diff: abo's diffs of a change run neither.
#[tokio::test]
async fn diffs_run_no_textconv_or_external_diff() {
    let lab = Lab::new();
    lab.script(&lab.bin.join("ext-diff"), "ext-diff", "");
    let ext = lab.bin.join("ext-diff").to_string_lossy().into_owned();
    lab.repo.git(&["config", "diff.external", &ext]);
    lab.repo.write(".gitattributes", "*.md diff=x\n");
    lab.repo.git(&["add", ".gitattributes"]);
    lab.repo.git(&["commit", "--quiet", "-m", "attributes"]);
    let git = Git::new(lab.repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let wt = lab.repo.outside.join("wt");
    git.add_detached_worktree(&wt, &base).await.unwrap();
    std::fs::write(wt.join("README.md"), "# test repo\nmore\n").unwrap();
    lab.clear();
    let change = crate::change::summarize(&git, &wt, &Scanner::default())
        .await
        .unwrap();
    assert_eq!(change.added_text, "more\n", "the diff is git's own");
    let commit = git.commit_all(&wt, &["t".into()]).await.unwrap();
    git.run(&["diff", "--binary", base.as_str(), commit.as_str()])
        .await
        .unwrap();
    git.run(&["show", "--patch", commit.as_str()])
        .await
        .unwrap();
    git.run(&["log", "-p", "-1", commit.as_str()])
        .await
        .unwrap();
    assert_eq!(lab.marked(), Vec::<String>::new());
    // Control: plain git runs both.
    plain(&lab.repo.path, &["diff", base.as_str(), commit.as_str()]);
    plain(&lab.repo.path, &["show", "--ext-diff", commit.as_str()]);
    plain(&lab.repo.path, &["show", "--no-ext-diff", commit.as_str()]);
    assert_eq!(lab.marked(), ["ext-diff", "textconv-x"]);
}

#[test]
fn every_call_carries_the_hardening_and_diffs_their_options_after_the_subcommand() {
    let mut head: Vec<&str> = HARDENING.iter().flat_map(|c| ["-c", *c]).collect();
    assert_eq!(
        hardened_args(&["apply", "--check", "p.diff"]),
        [&head[..], &["apply", "--check", "p.diff"]].concat(),
        "no attribute source for apply"
    );
    head.extend(["-c", ATTR_TREE]);
    let check = |args: &[&str], tail: &[&str]| {
        let got = hardened_args(args);
        assert_eq!(&got[..head.len()], &head[..], "{got:?}");
        assert_eq!(&got[head.len()..], tail);
    };
    check(
        &["-c", "commit.gpgsign=false", "commit", "-m", "x"],
        &["-c", "commit.gpgsign=false", "commit", "-m", "x"],
    );
    check(
        &["diff", "HEAD", "--raw"],
        &[
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=dirty",
            "HEAD",
            "--raw",
        ],
    );
    check(
        &["log", "-1"],
        &[
            "log",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=dirty",
            "-1",
        ],
    );
    check(
        &["status", "--porcelain"],
        &["status", "--ignore-submodules=dirty", "--porcelain"],
    );
    check(&["add", "--all"], &["add", "--all"]);
}

/// A branch after the base holding another run's commit for the same task and attempt (brought
/// there by a rebase or a merge of an old run), then this run's.
#[tokio::test]
async fn recovery_takes_only_this_runs_commit_after_the_base() {
    let repo = TestRepo::new();
    let trailer = |run: &str| format!("Abo-Run: {run}\nAbo-Task: t\nAbo-Attempt: 1");
    // The base itself is a commit this run's id made once for the task: before the base, so not
    // this run's landing.
    repo.git(&[
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "t",
        "-m",
        &trailer("r2"),
    ]);
    let git = Git::new(repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    repo.git(&["branch", "abo/r2"]);
    repo.git(&["checkout", "--quiet", "abo/r2"]);
    repo.write("old.txt", "old\n");
    repo.git(&["add", "old.txt"]);
    repo.git(&["commit", "--quiet", "-m", "t", "-m", &trailer("r1")]);
    let old = git.rev_parse("HEAD").await.unwrap();
    let (r1, r2, t) = (RunId::new("r1"), RunId::new("r2"), TaskId::new("t"));
    assert_eq!(
        git.find_task_commit(&base, "abo/r2", &r2, &t)
            .await
            .unwrap(),
        None,
        "neither the old run's commit nor one before the base"
    );
    // Control: the old commit is in the range and matches task and attempt, as the old
    // matching (by `Abo-Task` alone) took it.
    assert_eq!(
        git.find_task_commit(&base, "abo/r2", &r1, &t)
            .await
            .unwrap(),
        Some((old.clone(), 1))
    );
    let trailers = git.abo_trailers(old.as_str()).await.unwrap();
    assert_eq!(
        (trailers.task.as_deref(), trailers.attempt),
        (Some("t"), Some(1))
    );
    repo.write("new.txt", "new\n");
    repo.git(&["add", "new.txt"]);
    repo.git(&["commit", "--quiet", "-m", "t", "-m", &trailer("r2")]);
    let new = git.rev_parse("HEAD").await.unwrap();
    assert_eq!(
        git.find_task_commit(&base, "abo/r2", &r2, &t)
            .await
            .unwrap(),
        Some((new, 1))
    );
}

/// The index as abo reads it from the file is what `git ls-files --stage` prints, for every kind
/// of entry a worktree's index holds (files, an executable, a link, a gitlink, an intent-to-add
/// file, a long and a non-ASCII path), in index versions 2 and 3; a version it does not read (4),
/// a truncated file or an extension git requires readers to know falls back to git, which reads
/// the same.
#[tokio::test]
async fn the_index_read_from_its_file_is_what_ls_files_reads() {
    let repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    repo.write("bin/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        repo.path.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", repo.path.join("link")).unwrap();
    let long = format!("deep/{}/f.txt", "d".repeat(200));
    repo.write(&long, "x\n");
    repo.write("ünï/cödé.txt", "u\n");
    let nested = repo.path.join("sub");
    std::fs::create_dir_all(&nested).unwrap();
    git_in(&nested, &["init", "-q"]);
    git_in(
        &nested,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=n",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "s",
        ],
    );
    repo.commit_all("kinds");
    let git = Git::new(repo.path.clone());
    let wt = repo.path.join(".abo/worktrees/idx");
    let head = git.rev_parse("HEAD").await.unwrap();
    git.add_worktree(&wt, "abo-attempt/idx", &head)
        .await
        .unwrap();
    std::fs::write(wt.join("new.txt"), "n\n").unwrap();
    git_in(&wt, &["add", "--intent-to-add", "new.txt"]);
    let admin = git.pinned_git_dir(&wt).unwrap();
    let listed = || index::from_ls_files(&git_in(&wt, &["ls-files", "--stage", "-z"]));
    let want = listed();
    assert!(want.iter().any(Entry::is_gitlink) && want.iter().any(Entry::is_symlink));
    assert!(want.iter().any(|e| e.path == long) && want.iter().any(|e| e.path == "new.txt"));
    // Version 3 (the intent-to-add entry's extended flags): read from the file.
    let file = std::fs::read(admin.join("index")).unwrap();
    assert_eq!(file[7], 3);
    assert_eq!(index::parse(&file, 20).as_ref(), Some(&want));
    assert_eq!(git.index_entries(&wt).await.unwrap(), want);
    // Version 2.
    git_in(&wt, &["rm", "-q", "--cached", "new.txt"]);
    git_in(&wt, &["update-index", "--index-version", "2"]);
    let v2 = std::fs::read(admin.join("index")).unwrap();
    assert_eq!(v2[7], 2);
    assert_eq!(index::parse(&v2, 20), Some(listed()));
    // What it does not read: git does.
    assert_eq!(index::parse(&v2[..v2.len() - 30], 20), None);
    let mut required = v2.clone();
    let at = required.len() - 20;
    required.splice(at..at, b"link\0\0\0\0".iter().copied());
    assert_eq!(index::parse(&required, 20), None);
    git_in(&wt, &["update-index", "--index-version", "4"]);
    let v4 = std::fs::read(admin.join("index")).unwrap();
    assert_eq!(index::parse(&v4, 20), None);
    assert_eq!(git.index_entries(&wt).await.unwrap(), listed());
}

/// Landing's one transaction moves every ref or none: a ref that is not where it was expected
/// (or is missing) leaves all of them where they were.
#[tokio::test]
async fn moving_refs_moves_all_or_none() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let one = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
    repo.write("a", "2\n");
    repo.commit_all("two");
    let two = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
    let git = Git::new(repo.path.clone());
    repo.git(&["update-ref", "refs/heads/x", one.as_str()]);
    repo.git(&["update-ref", "refs/abo/k", one.as_str()]);
    let head = |r: &str| repo.git(&["rev-parse", r]).trim().to_owned();
    // The keeper is missing: nothing moves.
    let moves = [
        ("refs/heads/x", &two, &one),
        ("refs/abo/missing", &two, &one),
    ];
    assert!(!git.move_refs("t", &moves, &[]).await.unwrap());
    assert_eq!(head("refs/heads/x"), one.as_str());
    // One ref elsewhere: nothing moves.
    let moves = [("refs/heads/x", &two, &one), ("refs/abo/k", &two, &two)];
    assert!(!git.move_refs("t", &moves, &[]).await.unwrap());
    assert_eq!(
        (head("refs/heads/x"), head("refs/abo/k")),
        (one.to_string(), one.to_string())
    );
    // Both where expected: both move.
    let moves = [("refs/heads/x", &two, &one), ("refs/abo/k", &two, &one)];
    assert!(git.move_refs("t", &moves, &[]).await.unwrap());
    assert_eq!(
        (head("refs/heads/x"), head("refs/abo/k")),
        (two.to_string(), two.to_string())
    );
    // What git would refuse to parse never reaches it.
    let moves = [("refs/heads/x y", &one, &two)];
    assert!(!git.move_refs("t", &moves, &[]).await.unwrap());
    // Checked out: read from git's files as `git worktree list` reads them.
    let main = repo.git(&["symbolic-ref", "--short", "HEAD"]);
    assert_eq!(git.is_checked_out(main.trim()), Some(true));
    assert_eq!(git.is_checked_out("x"), Some(false));
    let wt = repo.path.join(".abo/worktrees/co");
    git.add_worktree(&wt, "y", &one).await.unwrap();
    assert_eq!(git.is_checked_out("y"), Some(true));
    let listed = git.checked_out_in("y").await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// Each worktree's git directory is its own entry in the repository's bookkeeping, also when two
/// worktrees' folders share a name (git names the second entry `wt1`): the entry named after the
/// folder is looked at first, and taken only when it names this worktree.
#[tokio::test]
async fn a_worktree_is_pinned_to_its_own_entry_when_folder_names_collide() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let git = Git::new(repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let (first, second) = (repo.outside.join("a/wt"), repo.outside.join("b/wt"));
    git.add_worktree(&first, "abo-attempt/first", &base)
        .await
        .unwrap();
    git.add_worktree(&second, "abo-attempt/second", &base)
        .await
        .unwrap();
    let common = common_dir(&repo.path).unwrap();
    let name = |wt: &Path| {
        git.pinned_git_dir(wt)
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    assert_eq!(
        (name(&first), name(&second)),
        (Some("wt".to_owned()), Some("wt1".to_owned()))
    );
    assert!(common.join("worktrees/wt1").is_dir());
    // What each worktree commits goes on its own branch.
    std::fs::write(second.join("b.txt"), "b\n").unwrap();
    let commit = git.commit_all(&second, &["t".into()]).await.unwrap();
    assert_eq!(
        git.branch_head("abo-attempt/second").await.unwrap(),
        Some(commit)
    );
    assert_eq!(
        git.branch_head("abo-attempt/first").await.unwrap(),
        Some(base)
    );
    // A folder git never registered has no git directory, whatever its name.
    let stray = repo.outside.join("c/wt");
    std::fs::create_dir_all(&stray).unwrap();
    assert_eq!(name(&stray), None);
}

/// Worktrees are added and removed side by side (attempts start at once), with prunes among
/// them: every add ends registered and checked out, every removed one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktrees_added_and_removed_at_once_with_prunes_among_them_are_all_right() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let git = Git::new(repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let dir = repo.path.join(".abo/worktrees/r");
    let n = 24;
    let wts: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("t{i}-1"))).collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, wt) in wts.iter().enumerate() {
        let (adder, wt, base) = (git.clone(), wt.clone(), base.clone());
        set.spawn(async move {
            adder
                .add_worktree(&wt, &format!("abo-attempt/r/t{i}-1"), &base)
                .await
        });
        if i % 6 == 0 {
            let pruner = git.clone();
            set.spawn(async move { pruner.prune_worktrees().await });
        }
    }
    while let Some(done) = set.join_next().await {
        done.unwrap().unwrap();
    }
    for wt in &wts {
        assert_eq!(std::fs::read_to_string(wt.join("a")).unwrap(), "1\n");
        assert!(
            git.pinned_git_dir(wt).is_some(),
            "{} registered",
            wt.display()
        );
    }
    // Half of them removed at once, with prunes again; the others stay registered.
    for (i, wt) in wts[..n / 2].iter().enumerate() {
        let (remover, wt) = (git.clone(), wt.clone());
        set.spawn(async move { remover.remove_worktree(&wt).await });
        if i % 3 == 0 {
            let pruner = git.clone();
            set.spawn(async move { pruner.prune_worktrees().await });
        }
    }
    while let Some(done) = set.join_next().await {
        done.unwrap().unwrap();
    }
    let listed = repo.git(&["worktree", "list", "--porcelain"]);
    let root = dir.canonicalize().unwrap();
    for (i, wt) in wts.iter().enumerate() {
        let shown = listed.contains(&format!(
            "worktree {}\n",
            root.join(wt.file_name().unwrap()).display()
        ));
        assert_eq!(
            (shown, wt.exists()),
            (i >= n / 2, i >= n / 2),
            "{}",
            wt.display()
        );
    }
}

/// Proofs of commits landed together are noted side by side: every note ends on its commit (git
/// fails to lock the notes ref when two adds move it at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_set_at_once_are_all_kept() {
    let repo = TestRepo::new();
    let mut commits = Vec::new();
    for i in 0..16 {
        repo.write("a", &format!("{i}\n"));
        repo.commit_all(&format!("c{i}"));
        commits.push(CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim()));
    }
    let git = Git::new(repo.path.clone());
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in commits.iter().enumerate() {
        let (git, c) = (git.clone(), c.clone());
        set.spawn(async move { git.set_note("t", &c, &format!("note {i}")).await });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap().unwrap();
    }
    for (i, c) in commits.iter().enumerate() {
        let note = repo.git(&["notes", "--ref", "t", "show", c.as_str()]);
        assert_eq!(note, format!("note {i}\n"));
    }
    // A note set again replaces the one there, and notes `git notes` added stay, as they were
    // written (the same blob as `git notes add -m` makes).
    repo.git(&[
        "notes",
        "--ref",
        "t",
        "add",
        "-f",
        "-m",
        "by git",
        commits[0].as_str(),
    ]);
    let by_git = repo.git(&["notes", "--ref", "t", "list", commits[0].as_str()]);
    git.set_note("t", &commits[0], "by git").await.unwrap();
    assert_eq!(
        repo.git(&["notes", "--ref", "t", "list", commits[0].as_str()]),
        by_git
    );
    git.set_note("t", &commits[1], "again").await.unwrap();
    assert_eq!(
        repo.git(&["notes", "--ref", "t", "show", commits[1].as_str()]),
        "again\n"
    );
    assert_eq!(
        repo.git(&["notes", "--ref", "t", "show", commits[2].as_str()]),
        "note 2\n"
    );
    assert_eq!(
        repo.git(&["notes", "--ref", "t", "list"]).lines().count(),
        16
    );
}

/// Removing a worktree takes its folder and its own entry under `.git/worktrees/`, and nothing
/// its agent pointed at: the `.git` file rewritten to name the repository's git directory, a
/// symbolic link to a folder outside, another worktree's entry named in its own. The control:
/// plain git, following the rewritten `.git` file, resolves the repository's own git directory
/// (what a removal reading that file would delete).
#[tokio::test]
async fn removing_a_worktree_takes_only_its_folder_and_its_own_entry() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let git = Git::new(repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let dir = repo.path.join(".abo/worktrees/r");
    let (hostile, other) = (dir.join("t1-1"), dir.join("t2-1"));
    git.add_worktree(&hostile, "abo-attempt/r/t1-1", &base)
        .await
        .unwrap();
    git.add_worktree(&other, "abo-attempt/r/t2-1", &base)
        .await
        .unwrap();
    let common = common_dir(&repo.path).unwrap().canonicalize().unwrap();
    let other_entry = git.pinned_git_dir(&other).unwrap();
    let own_entry = git.pinned_git_dir(&hostile).unwrap();
    // The attacks.
    std::fs::write(
        hostile.join(".git"),
        format!("gitdir: {}\n", common.display()),
    )
    .unwrap();
    let precious = repo.outside.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("keep"), "k").unwrap();
    std::os::unix::fs::symlink(&precious, hostile.join("escape")).unwrap();
    std::os::unix::fs::symlink(&common, hostile.join("dotgit")).unwrap();
    std::fs::write(
        own_entry.join("commondir"),
        format!("{}\n", other_entry.display()),
    )
    .unwrap();
    // The control: git itself follows the `.git` file to the repository's git directory.
    let followed = git_in(&hostile, &["rev-parse", "--absolute-git-dir"]);
    assert_eq!(Path::new(followed.trim()), common);

    git.remove_worktree(&hostile).await.unwrap();
    assert!(!hostile.exists() && !own_entry.exists());
    assert_eq!(std::fs::read_to_string(precious.join("keep")).unwrap(), "k");
    assert!(common.join("HEAD").is_file() && common.join("objects").is_dir());
    assert!(other_entry.join("HEAD").is_file());
    assert_eq!(git.pinned_git_dir(&other), Some(other_entry));
    assert_eq!(repo.git(&["rev-parse", "HEAD"]).trim(), base.as_str());
    let listed = repo.git(&["worktree", "list", "--porcelain"]);
    assert!(
        !listed.contains("t1-1") && listed.contains("t2-1"),
        "{listed}"
    );
    assert_eq!(std::fs::read_to_string(other.join("a")).unwrap(), "1\n");
}

/// The committer of abo's own imported commits is git's (`git var`, asked once), at the time of
/// each commit; names with spaces keep them.
#[tokio::test]
async fn the_committer_is_gits_at_the_time_of_each_commit() {
    assert_eq!(
        split_ident("Ada M. Lovelace <ada@x> 1700000000 +0100"),
        Some(("Ada M. Lovelace <ada@x>".to_owned(), "+0100".to_owned()))
    );
    assert_eq!(split_ident("no time <a@b>"), None);
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let git = Git::new(repo.path.clone());
    let ident = git.committer_ident().await.unwrap();
    let from_git = repo.git(&["var", "GIT_COMMITTER_IDENT"]);
    let (who, zone) = split_ident(from_git.trim()).unwrap();
    let (mine_who, mine_zone) = split_ident(&ident).unwrap();
    assert_eq!((mine_who, mine_zone), (who, zone));
    let secs = |i: &str| i.rsplit(' ').nth(1).unwrap().parse::<u64>().unwrap();
    assert!(secs(&ident).abs_diff(secs(from_git.trim())) <= 2);
}

/// A worktree abo writes itself is one git knows as its own: listed on its branch, checked out
/// clean (an executable, a symbolic link), kept by `worktree prune`, its branch refused to
/// `git branch -D` as checked out, committed to on its branch, removed by `git worktree remove`;
/// a branch a killed attempt left elsewhere is moved to the start. A repository with per-worktree
/// configuration gets `git worktree add` (what abo would not write for it).
#[tokio::test]
async fn a_worktree_abo_writes_is_one_git_knows() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.write("run.sh", "echo\n");
    {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(repo.path.join("run.sh"), exe).unwrap();
    }
    std::os::unix::fs::symlink("a", repo.path.join("link")).unwrap();
    repo.commit_all("one");
    let one = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
    repo.write("a", "2\n");
    repo.commit_all("two");
    let git = Git::new(repo.path.clone());
    let wt = repo.path.join(".abo/worktrees/r/t1-1");
    // Left by a killed attempt: the branch at the older commit.
    repo.git(&["branch", "abo-attempt/r/t1-1", one.as_str()]);
    let main = repo.git(&["symbolic-ref", "--short", "HEAD"]);
    let start = format!("refs/heads/{}", main.trim());
    assert!(
        git.create_worktree(&wt, "abo-attempt/r/t1-1", &start)
            .await
            .unwrap()
    );
    let two = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(git_in(&wt, &["rev-parse", "HEAD"]), two);
    assert_eq!(
        git_in(&wt, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/abo-attempt/r/t1-1"
    );
    assert_eq!(git_in(&wt, &["status", "--porcelain"]), "");
    assert_eq!(std::fs::read_to_string(wt.join("a")).unwrap(), "2\n");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(wt.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }
    assert_eq!(std::fs::read_link(wt.join("link")).unwrap(), Path::new("a"));
    repo.git(&["worktree", "prune"]);
    let listed = repo.git(&["worktree", "list", "--porcelain"]);
    let real = wt.canonicalize().unwrap();
    assert!(
        listed.contains(&format!(
            "worktree {}\nHEAD {}branch refs/heads/abo-attempt/r/t1-1\n",
            real.display(),
            two
        )),
        "{listed}"
    );
    assert!(
        !common_dir(&repo.path)
            .unwrap()
            .join("worktrees/t1-1/locked")
            .exists()
    );
    let refused = git.run(&["branch", "-D", "abo-attempt/r/t1-1"]).await;
    assert!(refused.is_err(), "the branch is checked out");
    std::fs::write(wt.join("b"), "b\n").unwrap();
    let commit = git.commit_all(&wt, &["t".into()]).await.unwrap();
    assert_eq!(
        git.branch_head("abo-attempt/r/t1-1").await.unwrap(),
        Some(commit)
    );
    repo.git(&["worktree", "remove", "--force", wt.to_str().unwrap()]);
    assert!(!wt.exists());
    // Per-worktree configuration: git adds it.
    repo.git(&["config", "extensions.worktreeConfig", "true"]);
    let other = repo.path.join(".abo/worktrees/r/t2-1");
    assert!(
        !git.create_worktree(&other, "abo-attempt/r/t2-1", &start)
            .await
            .unwrap()
    );
    assert!(!other.exists());
    git.add_worktree_from(&other, "abo-attempt/r/t2-1", &start)
        .await
        .unwrap();
    assert_eq!(git_in(&other, &["rev-parse", "HEAD"]), two);
}

/// A worktree's folder deleted without its entry (a crash between the two, a person's `rm -rf`)
/// leaves an entry naming the folder: adding the worktree again takes that entry's place instead
/// of registering the folder twice, so that git (following the `.git` file) and abo (reading the
/// entries) use the same one, with its index.
#[tokio::test]
async fn a_worktree_added_where_a_deleted_one_was_registered_has_one_entry() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let git = Git::new(repo.path.clone());
    let base = git.rev_parse("HEAD").await.unwrap();
    let wt = repo.path.join(".abo/worktrees/r/t1-1");
    git.add_worktree(&wt, "abo-attempt/r/t1-1", &base)
        .await
        .unwrap();
    std::fs::remove_dir_all(&wt).unwrap();
    git.add_worktree(&wt, "abo-attempt/r/t1-1", &base)
        .await
        .unwrap();
    let common = common_dir(&repo.path).unwrap();
    let entries: Vec<String> = std::fs::read_dir(common.join("worktrees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["t1-1"]);
    assert_eq!(git_in(&wt, &["status", "--porcelain"]), "");
    let followed = git_in(&wt, &["rev-parse", "--absolute-git-dir"]);
    assert_eq!(
        Path::new(followed.trim()),
        git.pinned_git_dir(&wt).unwrap().canonicalize().unwrap()
    );
}

/// The landed commits' diffs read in one `git show` are each what `git diff --numstat --patch
/// --no-color --no-renames C^ C` prints (what proofs hashed before), whatever the commit holds and
/// whatever the owner configured for `log` and `diff`: text, a binary, a mode change, a symbolic
/// link, a deletion, an empty commit, a merge (against its first parent), and a file holding the
/// header a `git show` without a nonce would print before the next commit (the control: that
/// line is in the output, where a fixed header would split this commit's diff in two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_diffs_read_together_are_each_what_git_diff_prints() {
    let repo = TestRepo::new();
    for (k, v) in [
        ("color.ui", "always"),
        ("diff.renames", "copies"),
        ("diff.mnemonicPrefix", "true"),
        ("log.decorate", "full"),
        ("format.pretty", "fuller"),
        ("log.showRoot", "false"),
    ] {
        repo.git(&["config", k, v]);
    }
    repo.write("a", "1\n2\n3\n");
    repo.commit_all("base");
    let mut commits = Vec::new();
    let head = |repo: &TestRepo| CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
    repo.write("a", "1\ntwo\n3\n");
    repo.write("new.txt", "x\n");
    repo.commit_all("text");
    commits.push(head(&repo));
    std::fs::write(repo.path.join("bin"), b"\0\x01\x02").unwrap();
    std::os::unix::fs::symlink("a", repo.path.join("link")).unwrap();
    std::fs::set_permissions(repo.path.join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.commit_all("binary, link, mode");
    commits.push(head(&repo));
    repo.git(&["rm", "-q", "new.txt"]);
    repo.git(&["commit", "-q", "-m", "delete"]);
    commits.push(head(&repo));
    repo.git(&["commit", "-q", "--allow-empty", "-m", "empty"]);
    commits.push(head(&repo));
    repo.git(&["notes", "add", "-m", "a note", "HEAD"]);
    // A file whose lines are the headers a fixed `--format=%x1e%H` would print for the commits
    // before it.
    let planted: String = commits.iter().map(|c| format!("\u{1e}{c}\n")).collect();
    repo.write("planted", &planted);
    repo.commit_all("planted");
    commits.push(head(&repo));
    let main = repo.git(&["symbolic-ref", "--short", "HEAD"]);
    repo.git(&["checkout", "-q", "-b", "side", "HEAD~1"]);
    repo.write("side", "s\n");
    repo.commit_all("side");
    repo.git(&["checkout", "-q", main.trim()]);
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge", "side"]);
    commits.push(head(&repo));

    let git = Git::new(repo.path.clone());
    let mut set = tokio::task::JoinSet::new();
    // Each asked for at once, one of them twice.
    for (i, c) in commits.iter().chain(&commits[..1]).enumerate() {
        let (git, c) = (git.clone(), c.clone());
        set.spawn(async move { (i, c.clone(), git.commit_diff(&c).await) });
    }
    let mut answered = 0;
    while let Some(done) = set.join_next().await {
        let (i, c, diff) = done.unwrap();
        let parent = format!("{c}^");
        let by_git = repo.git(&[
            "diff",
            "--numstat",
            "--patch",
            "--no-color",
            "--no-renames",
            &parent,
            c.as_str(),
        ]);
        assert_eq!(diff.unwrap(), by_git, "commit {i}");
        answered += 1;
    }
    assert_eq!(answered, commits.len() + 1);
    assert!(!git.commit_diff(&head(&repo)).await.unwrap().is_empty());
    // Not a commit: that request fails, alone.
    assert!(
        git.commit_diff(&CommitSha::new("0".repeat(40)))
            .await
            .is_err()
    );

    // The control: in `git show`'s output the planted lines are headers as a fixed format
    // would print them, each at the start of a line.
    let fixed = repo.git(&[
        "show",
        "--no-color",
        "--patch",
        "--format=%x1e%H",
        commits[4].as_str(),
    ]);
    assert!(fixed.contains(&format!("\n+\u{1e}{}\n", commits[0])));
    let shown = fixed.split('\u{1e}').filter(|p| !p.is_empty()).count();
    assert!(
        shown > 1,
        "a fixed header splits one commit's diff: {shown}"
    );
}

/// The user's identity is read in one `git config`: both keys set (one of them twice: the last
/// value counts, as `git config KEY` reads it) keep the user's; an empty value, set in the
/// repository over any global one, makes abo commit as itself.
#[tokio::test]
async fn the_users_identity_is_kept_and_an_empty_one_is_abos() {
    let repo = TestRepo::new();
    repo.git(&["config", "user.name", "First"]);
    repo.git(&["config", "--add", "user.name", "Second"]);
    repo.git(&["config", "user.email", "second@example.com"]);
    let mut git = Git::new(repo.path.clone());
    git.resolve_identity().await;
    assert!(git.identity.env.is_empty(), "{:?}", git.identity.env);
    repo.git(&["config", "--add", "user.email", ""]);
    git.resolve_identity().await;
    assert!(
        git.identity
            .env
            .contains(&("GIT_COMMITTER_EMAIL".to_owned(), "abo@localhost".to_owned())),
        "{:?}",
        git.identity.env
    );
}

/// A branch's commit read from the ref files is the one git resolves: loose, packed, packed then
/// moved (the loose file wins), and missing.
#[tokio::test]
async fn a_branch_read_from_its_files_is_where_git_says() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let one = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.write("a", "2\n");
    repo.commit_all("two");
    let two = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["branch", "abo/packed", &one]);
    repo.git(&["branch", "abo/moved", &one]);
    repo.git(&["pack-refs", "--all"]);
    repo.git(&["branch", "-f", "abo/moved", &two]);
    repo.git(&["branch", "abo/loose", &two]);
    let git = Git::new(repo.path.clone());
    for (branch, at) in [
        ("abo/packed", Some(&one)),
        ("abo/moved", Some(&two)),
        ("abo/loose", Some(&two)),
        ("abo/none", None),
    ] {
        assert_eq!(
            git.branch_head(branch)
                .await
                .unwrap()
                .map(|c| c.to_string()),
            at.cloned(),
            "{branch}"
        );
        assert!(git.ref_in_files(&format!("refs/heads/{branch}")).is_some());
    }
}
