//! `landing.verify` on the base branch after the run's merge into it, the git half (the
//! decisions are `abo_core::verify::BaseHeal`'s): a bisect step's commit as merged onto the base
//! branch as it was, and the revert of the first bad commit on the base branch, moved there by
//! compare-and-swap (never a force-push): when the base branch moved meanwhile the revert is made
//! again on its new head; a checkout of the base branch is fast-forwarded only when clean.

use abo_core::ids::{CommitSha, RunId, TaskId};
use abo_core::spec::RunSpec;
use abo_core::verify::RevertOutcome;

use super::{RunPolicy, checked_out_in, untracked_in_the_way};
use crate::context::Ctx;
use crate::redact::Redactor;

/// How often a revert is made again on a base branch that keeps moving under it.
const TRIES: usize = 3;

/// A commit whose tree is `commit` merged onto `onto` (what the base branch would hold with the
/// run's commits up to `commit`), to verify as a bisect step. It is on no branch.
pub(super) async fn as_merged(
    ctx: &Ctx,
    commit: &CommitSha,
    onto: &CommitSha,
) -> Result<CommitSha, String> {
    let git = &ctx.git;
    let base = git
        .run(&["merge-base", onto.as_str(), commit.as_str()])
        .await
        .map_err(|e| format!("could not find where {commit} and {onto} meet: {e}"))?;
    let base = CommitSha::new(base.trim());
    let tree = match git.merge_tree(&base, onto, commit).await {
        Ok(Ok(tree)) => tree,
        Ok(Err(conflicts)) => {
            return Err(format!(
                "{commit} merged onto {onto} conflicts in: {}",
                conflicts.join(", ")
            ));
        }
        Err(e) => return Err(format!("could not merge {commit} onto {onto}: {e}")),
    };
    let message = format!("abo: {commit} as merged onto {onto} (a bisect step)");
    git.commit_tree(&tree, onto, &message)
        .await
        .map_err(|e| format!("could not commit {commit} as merged: {e}"))
}

/// The revert of `commit` abo made on `branch` since `head`, if it did (it stopped after moving
/// the branch, before recording it).
async fn made_already(
    ctx: &Ctx,
    branch: &CommitSha,
    head: &CommitSha,
    commit: &CommitSha,
    run: &RunId,
) -> Option<CommitSha> {
    let range = format!("{head}..{branch}");
    let log = ctx
        .git
        .run(&["log", "--first-parent", "--format=%H%x00%B%x01", &range])
        .await
        .ok()?;
    let (of, by) = (
        format!("Abo-Revert-Of: {commit}"),
        format!("Abo-Run: {run}"),
    );
    log.split('\u{1}').find_map(|entry| {
        let (sha, body) = entry.trim_start().split_once('\0')?;
        let ours = body.lines().any(|l| l.trim() == of) && body.lines().any(|l| l.trim() == by);
        ours.then(|| CommitSha::new(sha.trim()))
    })
}

/// Why the base branch could not move to the revert.
enum Refused {
    /// It moved meanwhile: make the revert again on its new head.
    Moved,
    Other(String),
}

/// Moves `branch` from `old` to `new` (a child of `old`): by compare-and-swap when no working
/// tree has it checked out; in the user's checkout by a fast-forward only when it is clean and
/// nothing git does not track there is in the way.
async fn advance(ctx: &Ctx, branch: &str, new: &CommitSha, old: &CommitSha) -> Result<(), Refused> {
    let git = &ctx.git;
    let by_hand = |how: String| {
        Refused::Other(format!(
            "{how}; the revert is {new}: git merge --ff-only {new} (on {branch})"
        ))
    };
    let checked_out = checked_out_in(ctx, branch).await;
    if checked_out.is_empty() {
        return match git.advance_branch(branch, new, old).await {
            Ok(()) => Ok(()),
            Err(e) => match git.branch_head(branch).await {
                Ok(Some(h)) if h != *old => Err(Refused::Moved),
                _ => Err(by_hand(format!("{branch} could not move ({e})"))),
            },
        };
    }
    if checked_out.len() != 1 || checked_out[0] != ctx.root {
        return Err(by_hand(format!(
            "{branch} is checked out in another worktree, so abo moved nothing"
        )));
    }
    let dirty = git
        .run(&["status", "--porcelain", "--untracked-files=no"])
        .await
        .map(|s| !s.trim().is_empty())
        .unwrap_or(true);
    if dirty {
        return Err(by_hand(format!(
            "{branch} is checked out with uncommitted changes, so abo moved nothing"
        )));
    }
    match untracked_in_the_way(ctx, old, new).await {
        Ok(None) => {}
        Ok(Some(path)) => {
            return Err(by_hand(format!(
                "{branch} is checked out and {path} there is a file git does not track, which the revert would overwrite, so abo moved nothing"
            )));
        }
        Err(e) => {
            return Err(by_hand(format!(
                "abo could not list what the revert writes ({e}), so it moved nothing"
            )));
        }
    }
    match git
        .run(&[
            "merge",
            "--ff-only",
            "--no-overwrite-ignore",
            "--quiet",
            new.as_str(),
        ])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match git.branch_head(branch).await {
            Ok(Some(h)) if h != *old => Err(Refused::Moved),
            _ => Err(by_hand(format!("the fast-forward failed ({e})"))),
        },
    }
}

/// Reverts `commit` (a task's landing, merged into `branch`) on `branch`, whose head abo
/// expects at `head`; on a newer head when the branch moved since.
#[allow(clippy::too_many_arguments)] // the revert's whole context, each a different thing
pub(super) async fn revert(
    ctx: &Ctx,
    spec: &RunSpec,
    policy: &RunPolicy,
    branch: &str,
    task: &TaskId,
    commit: &CommitSha,
    head: &CommitSha,
    reason: &str,
) -> RevertOutcome {
    let run = &policy.run;
    let title = spec
        .tasks
        .iter()
        .find(|t| t.id == *task)
        .map_or_else(|| task.to_string(), |t| t.title.clone());
    let redactor = Redactor::from_process_env_using(&policy.scanner, &spec.settings.secret_env);
    let message = redactor.redact(&super::heal::revert_message(
        &title, commit, run, task, reason,
    ));
    revert_with(ctx, run, branch, commit, head, &message).await
}

/// [`revert`] with its message made: the revert of `commit` by `run` on `branch`.
pub(crate) async fn revert_with(
    ctx: &Ctx,
    run: &RunId,
    branch: &str,
    commit: &CommitSha,
    head: &CommitSha,
    message: &str,
) -> RevertOutcome {
    let failed = |reason: String| RevertOutcome::Failed { reason };
    let git = &ctx.git;
    let parent = match git.rev_parse(&format!("{commit}^")).await {
        Ok(p) => p,
        Err(e) => return failed(format!("could not read the parent of {commit}: {e}")),
    };
    for _ in 0..TRIES {
        let current = match git.branch_head(branch).await {
            Ok(Some(h)) => h,
            Ok(None) => return failed(format!("the base branch {branch} is missing")),
            Err(e) => return failed(format!("could not read {branch}: {e}")),
        };
        if current != *head
            && let Some(made) = made_already(ctx, &current, head, commit, run).await
        {
            return RevertOutcome::Reverted { revert: made };
        }
        // `current` with `commit`'s change undone: a three-way merge onto `current` of `commit`'s
        // parent, with `commit` as the merge base.
        let tree = match git.merge_tree(commit, &current, &parent).await {
            Ok(Ok(tree)) => tree,
            Ok(Err(conflicts)) => {
                return failed(format!(
                    "reverting {commit} conflicts with {branch} in: {}",
                    conflicts.join(", ")
                ));
            }
            Err(e) => return failed(format!("could not revert {commit}: {e}")),
        };
        let revert = match git.commit_tree(&tree, &current, message).await {
            Ok(c) => c,
            Err(e) => return failed(format!("could not commit the revert of {commit}: {e}")),
        };
        match advance(ctx, branch, &revert, &current).await {
            Ok(()) => return RevertOutcome::Reverted { revert },
            Err(Refused::Moved) => {}
            Err(Refused::Other(reason)) => return failed(reason),
        }
    }
    failed(format!(
        "{branch} kept moving while abo reverted {commit} on it ({TRIES} tries)"
    ))
}

/// The branch a proposed revert of `commit` is pushed to.
pub(crate) fn proposal_branch(commit: &CommitSha) -> String {
    format!("abo-revert/{}", commit.short())
}

/// Under `landing.mode: pull-request`: the revert of `commit` (message `message`) made on
/// `branch`'s head as a commit of its own, on the branch [`proposal_branch`], pushed to `remote`;
/// the base branch does not move. A revert of `commit` on that head already on the remote's
/// branch (abo stopped after pushing it, before recording it) is taken, not made again; one on an
/// older head is replaced (the branch is abo's own). Returns the revert and the head it is on.
pub(crate) async fn propose(
    ctx: &Ctx,
    remote: &str,
    branch: &str,
    commit: &CommitSha,
    message: &str,
) -> Result<(CommitSha, CommitSha), String> {
    let git = &ctx.git;
    let on = match git.branch_head(branch).await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(format!("the base branch {branch} is missing")),
        Err(e) => return Err(format!("could not read {branch}: {e}")),
    };
    let refname = format!("refs/heads/{}", proposal_branch(commit));
    let pushed = git
        .run(&["ls-remote", "--refs", remote, &refname])
        .await
        .map_err(|e| format!("could not read {remote}: {e}"))?;
    let pushed = pushed.split_whitespace().next().map(CommitSha::new);
    if let Some(p) = &pushed {
        let fetch = format!("+{refname}:{refname}");
        git.run(&["fetch", "--quiet", "--no-tags", remote, &fetch])
            .await
            .map_err(|e| format!("could not fetch {refname} from {remote}: {e}"))?;
        if is_revert_of(ctx, p, commit).await
            && git.rev_parse(&format!("{p}^")).await.ok() == Some(on.clone())
        {
            return Ok((p.clone(), on));
        }
    }
    let parent = git
        .rev_parse(&format!("{commit}^"))
        .await
        .map_err(|e| format!("could not read the parent of {commit}: {e}"))?;
    let tree = match git.merge_tree(commit, &on, &parent).await {
        Ok(Ok(tree)) => tree,
        Ok(Err(conflicts)) => {
            return Err(format!(
                "reverting {commit} conflicts with {branch} in: {}",
                conflicts.join(", ")
            ));
        }
        Err(e) => return Err(format!("could not revert {commit}: {e}")),
    };
    let revert = git
        .commit_tree(&tree, &on, message)
        .await
        .map_err(|e| format!("could not commit the revert of {commit}: {e}"))?;
    git.set_ref(&refname, &revert)
        .await
        .map_err(|e| format!("could not keep the revert at {refname}: {e}"))?;
    // Replacing only what abo found there: a push of anything else meanwhile is refused.
    let lease = format!(
        "--force-with-lease={refname}:{}",
        pushed.as_ref().map_or("", CommitSha::as_str)
    );
    let spec = format!("{revert}:{refname}");
    git.run(&["push", "--quiet", &lease, remote, &spec])
        .await
        .map_err(|e| format!("could not push the revert to {remote} as {refname}: {e}"))?;
    Ok((revert, on))
}

/// Whether `c` says it reverts `commit` (its `Abo-Revert-Of:` trailer).
async fn is_revert_of(ctx: &Ctx, c: &CommitSha, commit: &CommitSha) -> bool {
    let of = format!("Abo-Revert-Of: {commit}");
    ctx.git
        .run(&["log", "-1", "--format=%B", c.as_str()])
        .await
        .is_ok_and(|body| body.lines().any(|l| l.trim() == of))
}

/// The commit of `branch`'s history since `on` that brought the proposed `revert` of `commit`
/// there: the revert itself (merged or fast-forwarded), or a copy of it (squashed, rebased: it
/// says it reverts `commit` and changes exactly what `revert` changes). A commit that only claims
/// to revert it (trailers anyone can write) is not taken.
pub(crate) async fn proposal_merged(
    ctx: &Ctx,
    on: &CommitSha,
    head: &CommitSha,
    commit: &CommitSha,
    revert: &CommitSha,
) -> Option<CommitSha> {
    let git = &ctx.git;
    let range = format!("{on}..{head}");
    let list = git.run(&["rev-list", &range]).await.ok()?;
    let shas: Vec<CommitSha> = list.split_whitespace().map(CommitSha::new).collect();
    if shas.contains(revert) {
        return Some(revert.clone());
    }
    let change = |c: &CommitSha| {
        let (parent, c) = (format!("{c}^"), c.to_string());
        async move {
            git.run(&[
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--no-renames",
                "--full-index",
                "--binary",
                &parent,
                &c,
            ])
            .await
            .ok()
        }
    };
    let undone = change(revert).await?;
    for c in shas {
        if is_revert_of(ctx, &c, commit).await && change(&c).await.as_ref() == Some(&undone) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    use super::*;

    /// main: `b.txt` added by the run's commit (merged), the context of a revert on main.
    async fn setup() -> (TestRepo, Ctx, tempfile::TempDir, CommitSha, CommitSha) {
        let repo = TestRepo::new();
        repo.write("b.txt", "b\n");
        repo.commit_all("Add b");
        let bad = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        repo.write("c.txt", "c\n");
        repo.commit_all("Add c");
        let head = CommitSha::new(repo.git(&["rev-parse", "HEAD"]).trim());
        // The user works elsewhere: main is checked out nowhere.
        repo.git(&["checkout", "-q", "--detach"]);
        let (ctx, dir) = crate::context::for_test(&repo.path).await;
        (repo, ctx, dir, bad, head)
    }

    const MESSAGE: &str = "Revert \"Add b\"\n\nAbo-Run: r1\nAbo-Task: b";

    fn message(bad: &CommitSha) -> String {
        format!("{MESSAGE}\nAbo-Revert-Of: {bad}")
    }

    fn reverted(o: RevertOutcome) -> CommitSha {
        match o {
            RevertOutcome::Reverted { revert } => revert,
            RevertOutcome::Failed { reason } => panic!("{reason}"),
        }
    }

    #[tokio::test]
    async fn the_revert_goes_on_the_base_branch_head_and_on_a_newer_one_when_it_moved() {
        // Control: main where abo left it; the revert is its child.
        let (repo, ctx, _dir, bad, head) = setup().await;
        let run = RunId::new("r1");
        let r = reverted(revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await);
        assert_eq!(repo.git(&["rev-parse", "main"]).trim(), r.as_str());
        assert_eq!(
            repo.git(&["rev-parse", &format!("{r}^")]).trim(),
            head.as_str()
        );
        assert!(
            repo.git(&["ls-tree", "--name-only", "main"])
                .lines()
                .all(|f| f != "b.txt")
        );
        // Asked again (abo stopped before recording it): that revert, no second one.
        let again = reverted(revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await);
        assert_eq!(again, r);
        assert_eq!(repo.git(&["rev-parse", "main"]).trim(), r.as_str());

        // main moved after abo read it (someone else's commit): the revert is made on the new
        // head, which main keeps (nothing is force-pushed away).
        let (repo, ctx, _dir, bad, head) = setup().await;
        repo.git(&["checkout", "-q", "main"]);
        repo.write("d.txt", "d\n");
        repo.commit_all("someone else's d");
        let theirs = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
        repo.git(&["checkout", "-q", "--detach"]);
        let r = reverted(revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await);
        assert_eq!(repo.git(&["rev-parse", &format!("{r}^")]).trim(), theirs);
        let files = repo.git(&["ls-tree", "--name-only", "main"]);
        assert!(
            files.lines().any(|f| f == "d.txt") && files.lines().all(|f| f != "b.txt"),
            "{files}"
        );
    }

    #[tokio::test]
    async fn a_revert_that_conflicts_or_a_checkout_with_local_changes_moves_nothing() {
        let (repo, ctx, _dir, bad, head) = setup().await;
        let run = RunId::new("r1");
        // Someone edited b.txt on main since: the revert conflicts and main stays.
        repo.git(&["checkout", "-q", "main"]);
        repo.write("b.txt", "b, edited\n");
        repo.commit_all("edit b");
        let theirs = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
        repo.git(&["checkout", "-q", "--detach"]);
        let o = revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await;
        assert!(
            matches!(&o, RevertOutcome::Failed { reason } if reason.contains("conflicts with main in: b.txt")),
            "{o:?}"
        );
        assert_eq!(repo.git(&["rev-parse", "main"]).trim(), theirs);

        // main checked out with uncommitted changes: abo leaves it and says how to take it.
        let (repo, ctx, _dir, bad, head) = setup().await;
        repo.git(&["checkout", "-q", "main"]);
        repo.write("c.txt", "mine\n");
        let o = revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await;
        assert!(
            matches!(&o, RevertOutcome::Failed { reason } if reason.contains("uncommitted changes, so abo moved nothing") && reason.contains("git merge --ff-only")),
            "{o:?}"
        );
        assert_eq!(repo.git(&["rev-parse", "main"]).trim(), head.as_str());
        assert_eq!(repo.read("c.txt"), "mine\n");
        // Clean, it is fast-forwarded in place.
        repo.git(&["checkout", "--", "c.txt"]);
        let r = reverted(revert_with(&ctx, &run, "main", &bad, &head, &message(&bad)).await);
        assert_eq!(repo.git(&["rev-parse", "HEAD"]).trim(), r.as_str());
        assert!(!repo.path.join("b.txt").exists());
    }
}
