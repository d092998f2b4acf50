//! A pooled worktree, after a hostile attempt wrote in it, comes back as a fresh checkout would
//! be. The control takes the same attacked worktree back as a pool without the scrub and the
//! pinned stat comparison would (git's `reset --hard` alone, under the repository's own
//! configuration), and finds the attacks there.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use abo_test_support::{TestRepo, git_in};
use pretty_assertions::assert_eq;

use super::super::Git;

/// A modification time far in the past, that the index records for `src/a.txt`.
fn long_ago() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
}

/// Every name under `dir` but its `.git` file: its type, permission bits, link count, and its
/// content or link target.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == ".git" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else if m.is_file() {
                format!(
                    "file {:o} x{} {:?}",
                    m.mode() & 0o7777,
                    m.nlink(),
                    std::fs::read(&p).unwrap()
                )
            } else {
                format!("other {:o}", m.mode())
            };
            out.insert(rel, what);
        }
    }
    out
}

/// A repository, abo's git on it, its pool folder and the start every worktree checks out.
struct Lab {
    repo: TestRepo,
    git: Git,
    pool: std::path::PathBuf,
    start: String,
}

impl Lab {
    fn new(repo: TestRepo) -> Self {
        let git = Git::new(repo.path.clone());
        let pool = repo.path.join(".abo/worktrees/.pool");
        let start = format!(
            "refs/heads/{}",
            repo.git(&["symbolic-ref", "--short", "HEAD"]).trim()
        );
        Self {
            repo,
            git,
            pool,
            start,
        }
    }

    /// A worktree of the start at `rel` (under the repository) on `branch`, from the pool when
    /// `pooled`.
    async fn worktree(&self, rel: &str, branch: &str, pooled: bool) -> std::path::PathBuf {
        let wt = self.repo.path.join(rel);
        if pooled {
            self.git
                .add_worktree_pooled(&self.pool, &wt, branch, &self.start)
                .await
                .unwrap();
        } else {
            self.git
                .add_worktree_from(&wt, branch, &self.start)
                .await
                .unwrap();
        }
        wt
    }

    /// What a fresh checkout of the start holds.
    async fn fresh(&self) -> BTreeMap<String, String> {
        listing(
            &self
                .worktree(".abo/worktrees/r/fresh-1", "fresh", false)
                .await,
        )
    }
}

/// A repository with nested folders, an executable, a link, an ignored folder and a nested
/// repository's gitlink, whose owner configured git to compare only sizes and modification times.
fn repository() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("src/a.txt", "original\n");
    repo.write("src/deep/b.txt", "b\n");
    repo.write("src/c.txt", "c\n");
    repo.write("docs/guide.md", "guide\n");
    repo.write("run.sh", "echo run\n");
    repo.write(".gitignore", "build/\n");
    std::fs::set_permissions(
        repo.path.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/c.txt", repo.path.join("link")).unwrap();
    repo.commit_all("base");
    let head = repo.git(&["rev-parse", "HEAD"]);
    let info = format!("160000,{},vendor/lib", head.trim());
    repo.git(&["update-index", "--add", "--cacheinfo", &info]);
    repo.git(&["commit", "-qm", "vendor"]);
    repo.git(&["config", "core.checkStat", "minimal"]);
    repo
}

/// What a hostile attempt leaves in its worktree `wt`, once abo's own git recorded `src/a.txt`
/// in the index (as staging the attempt's change does).
fn plant(wt: &Path) {
    let a = wt.join("src/a.txt");
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(long_ago())
        .unwrap();
    git_in(wt, &["update-index", "--refresh"]);
    // Git compares change times in whole seconds: the agent writes in a later second than the
    // one abo's git recorded the file in (see `git::pool`'s documentation).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Rewritten in place: the same size, the recorded modification time set back.
    std::fs::write(&a, "poisoned\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(long_ago())
        .unwrap();
    let w = |rel: &str, text: &str| {
        let p = wt.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("untracked.txt", "left\n");
    // A new file abo's reading of the change marked intent-to-add (a denied change's, say).
    w("src/secret.txt", "the attempt's secret\n");
    git_in(wt, &["add", "--intent-to-add", "src/secret.txt"]);
    w("build/out.o", "ignored\n");
    w("vendor/lib/evil.sh", "in the nested repository's folder\n");
    git_in(wt, &["init", "--quiet", "src/inner"]);
    w("src/inner/x", "a nested repository\n");
    // A tracked folder replaced by a link out of the worktree.
    std::fs::remove_dir_all(wt.join("docs")).unwrap();
    std::os::unix::fs::symlink("/etc", wt.join("docs")).unwrap();
    // A tracked file hard-linked to a twin, a setuid executable, a closed folder.
    w("twin", "c\n");
    std::fs::remove_file(wt.join("src/c.txt")).unwrap();
    std::fs::hard_link(wt.join("twin"), wt.join("src/c.txt")).unwrap();
    std::fs::set_permissions(wt.join("run.sh"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    std::fs::set_permissions(wt.join("src/deep"), std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::mkfifo(
        &wt.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
}

#[tokio::test]
async fn a_pooled_worktree_after_a_hostile_attempt_is_a_fresh_checkout() {
    let lab = Lab::new(repository());
    let (repo, git, pool) = (&lab.repo, &lab.git, &lab.pool);
    let want = lab.fresh().await;
    assert_eq!(
        want.get("vendor/lib").map(String::as_str),
        Some("dir 755"),
        "a fresh checkout has the gitlink's empty folder: {want:#?}"
    );

    let first = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", true)
        .await;
    let inode = std::fs::metadata(&first).unwrap().ino();
    plant(&first);
    // Landing deletes the attempt's branch before its worktree is cleaned up.
    git.delete_branch("abo-attempt/r/t1-1").await.unwrap();
    git.recycle_worktree(&first, pool, 4).await.unwrap();
    assert!(!first.exists());
    let pooled: Vec<_> = std::fs::read_dir(pool).unwrap().flatten().collect();
    assert_eq!(pooled.len(), 1);
    // Detached at a commit (the repository's HEAD: its own branch is gone), and locked.
    let entry = repo.path.join(".git/worktrees").join(pooled[0].file_name());
    assert_eq!(
        std::fs::read_to_string(entry.join("HEAD")).unwrap(),
        repo.git(&["rev-parse", "HEAD"])
    );
    assert!(entry.join("locked").exists());
    // Nothing of the attempt's uncommitted change waits in the pool.
    for planted in ["poisoned", "the attempt's secret", "left", "ignored"] {
        assert_eq!(
            abo_test_support::files_containing(pool, planted),
            Vec::<std::path::PathBuf>::new(),
            "{planted}"
        );
    }
    // What `git worktree prune` does to the pooled entry: nothing.
    repo.git(&["worktree", "prune"]);

    // The next run's attempt: its folder's parent is not there yet.
    let second = lab
        .worktree(".abo/worktrees/r2/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    assert_eq!(
        std::fs::metadata(&second).unwrap().ino(),
        inode,
        "the pooled worktree was taken"
    );
    assert_eq!(std::fs::read_dir(pool).unwrap().count(), 0);
    assert_eq!(listing(&second), want);
    assert_eq!(git_in(&second, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(
        git_in(&second, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/abo-attempt/r/t2-1"
    );
    assert_eq!(
        git_in(&second, &["rev-parse", "HEAD"]),
        repo.git(&["rev-parse", "HEAD"])
    );
    // Git and abo find the same entry: the one named after the folder.
    let real = second.canonicalize().unwrap();
    let listed = repo.git(&["worktree", "list", "--porcelain"]);
    assert!(
        listed.contains(&format!("worktree {}\n", real.display())),
        "{listed}"
    );
    assert!(
        repo.path.join(".git/worktrees/t2-1/index").exists(),
        "{listed}"
    );
    assert!(!repo.path.join(".git/worktrees/t2-1/locked").exists());
    std::fs::write(second.join("new.txt"), "new\n").unwrap();
    let commit = git.commit_all(&second, &["t2".into()]).await.unwrap();
    assert_eq!(
        git.branch_head("abo-attempt/r/t2-1").await.unwrap(),
        Some(commit)
    );
    git.remove_worktree(&second).await.unwrap();
    assert_eq!(
        repo.git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        2
    );
}

/// The control: the same attacks, and the worktree taken back with `git reset --hard` alone.
#[tokio::test]
async fn control_a_worktree_reset_by_git_alone_keeps_the_attacks() {
    let lab = Lab::new(repository());
    let wt = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", false)
        .await;
    plant(&wt);
    git_in(&wt, &["reset", "--hard", "--quiet", &lab.start]);
    let got = listing(&wt);
    let at = |p: &str| got.get(p).cloned().unwrap_or_default();
    assert!(
        at("src/a.txt").contains(&format!("{:?}", b"poisoned\n")),
        "{got:#?}"
    );
    for left in [
        "untracked.txt",
        "build/out.o",
        "vendor/lib/evil.sh",
        "src/inner/x",
        "pipe",
    ] {
        assert!(got.contains_key(left), "{left}: {got:#?}");
    }
    assert!(at("run.sh").starts_with("file 4777"), "{got:#?}");
    assert_eq!(at("src/deep"), "dir 700");
}

/// A repository whose attributes convert line endings and expand `$Id$`, and an attempt that
/// rewrote two files into forms git's clean conversion maps back to the committed blobs: `git
/// add` then finds them unchanged and records their new stat data, so the stat data cannot tell.
/// What was written after the worktree was ready never reaches the next attempt.
fn converting_repository() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(".gitattributes", "* text=auto\n*.sh ident\n");
    repo.write("src/a.txt", "original\n");
    repo.write("id.sh", "echo \"$Id$\"\n");
    repo.commit_all("base");
    repo
}

fn rewrite_into_the_same_blobs(wt: &Path) {
    std::fs::write(wt.join("src/a.txt"), "original\r\n").unwrap();
    std::fs::write(
        wt.join("id.sh"),
        "echo \"$Id: \"; touch /tmp/pwned; echo \"$\"\n",
    )
    .unwrap();
}

#[tokio::test]
async fn what_git_converts_back_to_the_same_blob_does_not_reach_the_next_attempt() {
    let lab = Lab::new(converting_repository());
    let git = &lab.git;
    let want = lab.fresh().await;
    let first = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", true)
        .await;
    rewrite_into_the_same_blobs(&first);
    // abo's reading of the change after the agent: nothing changed, as git sees it.
    git.stage(&first, false).await.unwrap();
    assert_eq!(git_in(&first, &["status", "--porcelain"]), "");
    let inode = std::fs::metadata(&first).unwrap().ino();
    git.delete_branch("abo-attempt/r/t1-1").await.unwrap();
    git.recycle_worktree(&first, &lab.pool, 4).await.unwrap();
    let second = lab
        .worktree(".abo/worktrees/r2/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    assert_eq!(std::fs::metadata(&second).unwrap().ino(), inode);
    assert_eq!(listing(&second), want);
}

/// The control: the stat data after `git add`, and `git reset --hard` with them, keep both.
#[tokio::test]
async fn control_what_git_converts_back_stays_through_its_reset() {
    let lab = Lab::new(converting_repository());
    let wt = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", false)
        .await;
    rewrite_into_the_same_blobs(&wt);
    lab.git.stage(&wt, false).await.unwrap();
    git_in(&wt, &["reset", "--hard", "--quiet", &lab.start]);
    assert_eq!(
        std::fs::read(wt.join("src/a.txt")).unwrap(),
        b"original\r\n"
    );
    assert!(
        std::fs::read_to_string(wt.join("id.sh"))
            .unwrap()
            .contains("touch /tmp/pwned")
    );
}

/// A worktree `lab` checked out, given back to the pool by a task of its own after `after`
/// (announced as coming when `announced`), while another attempt asks for one: that attempt's
/// folder is the given-back one (the same inode) or a fresh checkout.
async fn asked_while_one_is_coming(announced: bool, after: std::time::Duration) -> bool {
    let lab = std::sync::Arc::new(Lab::new(repository()));
    let first = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", false)
        .await;
    let inode = std::fs::metadata(&first).unwrap().ino();
    let coming = announced.then(|| lab.git.announce_recycled());
    let giver = {
        let lab = std::sync::Arc::clone(&lab);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            lab.git
                .recycle_worktree(&first, &lab.pool, 2)
                .await
                .unwrap();
            drop(coming);
        })
    };
    let second = lab
        .worktree(".abo/worktrees/r/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    giver.await.unwrap();
    std::fs::metadata(&second).unwrap().ino() == inode
}

#[tokio::test]
async fn an_attempt_finding_the_pool_empty_waits_for_a_worktree_announced_as_coming() {
    assert!(asked_while_one_is_coming(true, std::time::Duration::from_millis(1500)).await);
}

#[tokio::test]
async fn control_without_the_announcement_the_attempt_checks_out_a_fresh_worktree() {
    assert!(!asked_while_one_is_coming(false, std::time::Duration::from_millis(1500)).await);
}

#[tokio::test]
async fn an_announced_worktree_that_does_not_come_leaves_the_attempt_a_fresh_one() {
    let lab = Lab::new(repository());
    let coming = lab.git.announce_recycled();
    let dropper = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(coming);
    });
    let wt = lab
        .worktree(".abo/worktrees/r/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    dropper.await.unwrap();
    assert_eq!(listing(&wt), lab.fresh().await);
}

/// Takes a worktree back through the pool after `attack` wrote in it and abo's git read the
/// change (recording the stat data of what it found unchanged), the claim the scrub wrote for
/// the next checkout replaced by `claim` when given (`git::fsmonitor`'s format). Returns what
/// the claim listed and what the taken worktree holds.
async fn taken_back(
    lab: &Lab,
    attack: fn(&Path),
    claim: Option<&[u8]>,
) -> (Vec<u8>, BTreeMap<String, String>) {
    let first = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", true)
        .await;
    attack(&first);
    // Written in an earlier second than the index, so that git trusts their stat data; the
    // refresh records which files git found unchanged (as the commit of a change does).
    // (Staging fails on the hostile attempt's nested repository without a commit.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let _ = lab.git.stage(&first, false).await;
    let _ = lab
        .git
        .run_in(&first, &["update-index", "-q", "--refresh"])
        .await;
    lab.git.delete_branch("abo-attempt/r/t1-1").await.unwrap();
    lab.git
        .recycle_worktree(&first, &lab.pool, 4)
        .await
        .unwrap();
    let name = std::fs::read_dir(&lab.pool)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name();
    let scrubbed = lab
        .repo
        .path
        .join(".git/worktrees")
        .join(name)
        .join(super::SCRUBBED);
    let listed = std::fs::read(&scrubbed).unwrap();
    if let Some(claim) = claim {
        std::fs::write(&scrubbed, claim).unwrap();
    }
    let second = lab
        .worktree(".abo/worktrees/r2/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    assert!(!scrubbed.exists(), "the claim ends with the checkout");
    (listed, listing(&second))
}

#[tokio::test]
async fn the_next_checkout_is_told_what_the_scrub_removed_and_writes_it_again() {
    let lab = Lab::new(repository());
    let want = lab.fresh().await;
    let (listed, got) = taken_back(&lab, plant, None).await;
    let paths: Vec<&[u8]> = listed.split(|b| *b == 0).collect();
    for removed in [
        &b"src/a.txt"[..],
        b"src/c.txt",
        b"src/secret.txt",
        b"run.sh",
        b"src/deep/b.txt",
        b"docs/guide.md",
        b"vendor/lib",
    ] {
        assert!(
            paths.contains(&removed),
            "{}: {}",
            String::from_utf8_lossy(removed),
            String::from_utf8_lossy(&listed)
        );
    }
    assert_eq!(got, want);
    let lab = Lab::new(converting_repository());
    let want = lab.fresh().await;
    assert_eq!(
        taken_back(&lab, rewrite_into_the_same_blobs, None).await.1,
        want
    );
}

/// The control: told that nothing changed, git trusts the stat data it recorded of the files
/// rewritten into the same blobs, and leaves them out of the checkout (the scrub removed them):
/// the claim's list is what the checkout relies on.
#[tokio::test]
async fn control_a_checkout_told_nothing_changed_leaves_out_what_the_scrub_removed() {
    let lab = Lab::new(converting_repository());
    let want = lab.fresh().await;
    let (listed, got) = taken_back(&lab, rewrite_into_the_same_blobs, Some(b"abo\0")).await;
    assert!(String::from_utf8_lossy(&listed).contains("src/a.txt"));
    assert!(want.contains_key("src/a.txt"));
    assert!(!got.contains_key("src/a.txt"), "{got:#?}");
}

#[tokio::test]
async fn a_put_cut_short_leaves_nothing_to_take_and_the_trim_removes_it() {
    let lab = Lab::new(repository());
    // What a put killed while it scrubbed leaves: the folder under its settling name.
    let left = lab.pool.join(".w1-0.settling");
    std::fs::create_dir_all(left.join("src")).unwrap();
    std::fs::write(left.join("src/a.txt"), "an attempt's leftover\n").unwrap();
    let wt = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", true)
        .await;
    assert_eq!(listing(&wt), lab.fresh().await);
    lab.git.trim_pool(&lab.pool, 2).await;
    assert!(
        left.exists(),
        "a put of another process may still be scrubbing it"
    );
    std::fs::File::open(&left)
        .unwrap()
        .set_modified(long_ago())
        .unwrap();
    lab.git.trim_pool(&lab.pool, 2).await;
    assert!(!left.exists());
}

/// abo's git in a worktree trusts what abo vouches for (`git::fsmonitor`): a file changed behind
/// git's back is not seen while a vouch says nothing changed, and is seen without one.
#[tokio::test]
async fn a_vouched_git_call_trusts_the_vouch_and_one_without_looks_at_every_file() {
    let lab = Lab::new(repository());
    let wt = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", false)
        .await;
    let diff = || async {
        lab.git
            .run_in(&wt, &["diff", "--name-only", "HEAD"])
            .await
            .unwrap()
    };
    // Git records the files' stat data (with abo's hook, so the index keeps which it found
    // unchanged), in a later second than the checkout wrote them (else it does not trust them).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    lab.git
        .run_in(&wt, &["update-index", "-q", "--refresh"])
        .await
        .unwrap();
    std::fs::write(wt.join("src/c.txt"), "X\n").unwrap();
    let vouched = lab.git.vouch(&wt, &[]).unwrap();
    assert!(lab.git.vouch(&wt, &[]).is_none(), "one vouch at a time");
    assert_eq!(diff().await, "");
    drop(vouched);
    assert_eq!(diff().await, "src/c.txt\n");
    let _listed = lab.git.vouch(&wt, &[b"src/c.txt".to_vec()]).unwrap();
    assert_eq!(diff().await, "src/c.txt\n");
}

/// An attempt whose change was never read or committed (its run was killed, say) deleted a
/// tracked file and a tracked folder: the scrub never meets them, and lists them with what it
/// removed, so the next checkout writes them again instead of trusting the index.
#[tokio::test]
async fn tracked_files_an_attempt_deleted_are_back_in_the_next_attempt() {
    let lab = Lab::new(repository());
    let want = lab.fresh().await;
    // A landed attempt: its commit records every file git found unchanged (for its hook).
    let first = lab
        .worktree(".abo/worktrees/r/t1-1", "abo-attempt/r/t1-1", true)
        .await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(first.join("new.txt"), "the attempt's change\n").unwrap();
    lab.git
        .commit_all(&first, &["landed".into()])
        .await
        .unwrap();
    lab.git.delete_branch("abo-attempt/r/t1-1").await.unwrap();
    lab.git
        .recycle_worktree(&first, &lab.pool, 4)
        .await
        .unwrap();
    let second = lab
        .worktree(".abo/worktrees/r/t2-1", "abo-attempt/r/t2-1", true)
        .await;
    std::fs::remove_file(second.join("src/c.txt")).unwrap();
    std::fs::remove_dir_all(second.join("docs")).unwrap();
    lab.git.delete_branch("abo-attempt/r/t2-1").await.unwrap();
    lab.git
        .recycle_worktree(&second, &lab.pool, 4)
        .await
        .unwrap();
    let third = lab
        .worktree(".abo/worktrees/r3/t3-1", "abo-attempt/r/t3-1", true)
        .await;
    assert_eq!(listing(&third), want);
}
