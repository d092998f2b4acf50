//! `landing.verify` on the run branch, the git half (the decisions are `abo_core::verify`'s):
//! the verify gates on one commit of the branch in a detached worktree of its own, and the revert
//! of the first bad commit, made with `git merge-tree` and `git commit-tree` (no checkout is
//! touched) and moved onto the run branch by compare-and-swap. The same gates verify the base
//! branch after the run's merge (`heal_base` makes its bisect steps and its revert).

use std::time::Instant;

use abo_core::ids::{AttemptId, CommitSha, GateName, RunId, TaskId};
use abo_core::spec::RunSpec;
use abo_core::verify::{OnBase, RevertOutcome, VerifyOutcome};

use super::{RunPolicy, append, gate_once, move_run_branch, ms};
use crate::context::Ctx;
use crate::redact::Redactor;

/// Where the verify gates run: one worktree per run, made afresh for each commit.
pub fn verify_worktree(ctx: &Ctx, run: &RunId) -> std::path::PathBuf {
    ctx.run_worktrees(run).join("_verify")
}

/// Runs `gates` on `commit`, in order, stopping at the first that fails. Every gate's output goes
/// to one log, redacted.
pub(crate) async fn verify(
    ctx: &Ctx,
    spec: &RunSpec,
    policy: &RunPolicy,
    commit: &CommitSha,
    gates: &[GateName],
    base: Option<&OnBase>,
) -> VerifyOutcome {
    let started = Instant::now();
    let run = &policy.run;
    let dir = verify_worktree(ctx, run);
    let scratch = ctx.run_scratch(run).join("_verify");
    let _ = std::fs::create_dir_all(&scratch);
    let log = scratch.join(format!("verify-{commit}.log"));
    let _ = std::fs::remove_file(&log);
    let mut outcome = VerifyOutcome {
        passed: false,
        failed_gate: None,
        duration_ms: 0,
        log: None,
        reason: None,
    };
    // A bisect step on the base branch after a merge commit: `commit` as merged onto the base.
    let checkout = match base.and_then(|b| b.onto.as_ref()) {
        Some(onto) => super::heal_base::as_merged(ctx, commit, onto).await,
        None => Ok(commit.clone()),
    };
    // A worktree left by an earlier verify (or a crash) is replaced.
    let _ = ctx.git.remove_worktree(&dir).await;
    let made = match &checkout {
        Ok(c) => ctx
            .git
            .add_detached_worktree(&dir, c)
            .await
            .map_err(|e| format!("could not create the verify worktree: {e}")),
        Err(e) => Err(e.clone()),
    };
    if let Err(e) = made {
        outcome.reason = Some(e.clone());
        let _ = append(&log, &format!("abo: {e}\n"));
    } else {
        let mut env = vec![
            ("ABO_RUN_ID".to_owned(), run.to_string()),
            ("ABO_RUN_BRANCH".to_owned(), spec.branch.clone()),
            (
                "ABO_WORKTREE".to_owned(),
                dir.to_string_lossy().into_owned(),
            ),
            ("ABO_VERIFY_COMMIT".to_owned(), commit.to_string()),
        ];
        if let Some(b) = base {
            env.push(("ABO_VERIFY_BRANCH".to_owned(), b.branch.clone()));
        }
        outcome.passed = true;
        for name in gates {
            let Some(gate) = spec.settings.gate(name) else {
                outcome.passed = false;
                outcome.failed_gate = Some(name.clone());
                outcome.reason = Some(format!("`landing.verify` names unknown gate `{name}`"));
                break;
            };
            let _ = append(
                &log,
                &format!("--- abo: verify gate `{name}` on {commit} ---\n"),
            );
            let label = format!("verify-{name}");
            let ran = gate_once(ctx, spec, gate, &dir, &scratch, &env, &log, &label).await;
            let how = match &ran {
                None => Some("could not start (sandbox)".to_owned()),
                Some(r) if r.passed => None,
                Some(r) if r.timed_out => Some("timed out".to_owned()),
                Some(r) => Some(
                    r.exit
                        .map_or("was killed".to_owned(), |c| format!("exited with {c}")),
                ),
            };
            if let Some(how) = how {
                outcome.passed = false;
                outcome.failed_gate = Some(name.clone());
                outcome.reason = Some(format!("gate `{name}` failed on {commit}: it {how}"));
                break;
            }
        }
        let _ = ctx.git.remove_worktree(&dir).await;
    }
    let text = crate::artifacts::read_log(&log);
    let redactor = Redactor::from_process_env_using(&policy.scanner, &spec.settings.secret_env);
    outcome.log = ctx.artifacts.put(redactor.redact(&text).as_bytes()).ok();
    outcome.reason = outcome.reason.map(|r| redactor.redact(&r));
    outcome.duration_ms = ms(started.elapsed());
    outcome
}

/// The message of the revert of `commit` (the task's landing): `Abo-Revert-Of:` and the run's
/// trailers (no `Abo-Attempt`: a revert is no attempt's commit, so resume never takes it for one).
pub fn revert_message(
    title: &str,
    commit: &CommitSha,
    run: &RunId,
    task: &TaskId,
    reason: &str,
) -> String {
    format!(
        "Revert \"{title}\"\n\nlanding.verify failed and the bisect named this commit the first bad one: {reason}\n\nAbo-Revert-Of: {commit}\nAbo-Run: {run}\nAbo-Task: {task}"
    )
}

/// Reverts `commit` on the run branch, whose head abo expects at `head`.
pub(super) async fn revert(
    ctx: &Ctx,
    spec: &RunSpec,
    policy: &RunPolicy,
    task: &TaskId,
    commit: &CommitSha,
    head: &CommitSha,
    reason: &str,
) -> RevertOutcome {
    let failed = |reason: String| RevertOutcome::Failed { reason };
    let git = &ctx.git;
    let run = &policy.run;
    let current = match git.branch_head(&spec.branch).await {
        Ok(Some(h)) => h,
        Ok(None) => return failed(format!("the run branch {} is missing", spec.branch)),
        Err(e) => return failed(format!("could not read the run branch: {e}")),
    };
    // Made already (abo stopped after moving the branch, before recording it): that revert.
    if current != *head {
        if let Ok(info) = git
            .run(&["log", "-1", "--format=%P%n%B", current.as_str()])
            .await
        {
            let mut lines = info.lines();
            let parent = lines.next().unwrap_or_default().trim().to_owned();
            let mark = format!("Abo-Revert-Of: {commit}");
            if parent == head.as_str() && lines.any(|l| l.trim() == mark) {
                return RevertOutcome::Reverted { revert: current };
            }
        }
        return failed(format!(
            "the run branch {} moved to {current} (abo expected {head})",
            spec.branch
        ));
    }
    let parent = match git.rev_parse(&format!("{commit}^")).await {
        Ok(p) => p,
        Err(e) => return failed(format!("could not read the parent of {commit}: {e}")),
    };
    // The branch's head with `commit`'s change undone: a three-way merge onto the head of
    // `commit`'s parent, with `commit` as the merge base.
    let tree = match git.merge_tree(commit, head, &parent).await {
        Ok(Ok(tree)) => tree,
        Ok(Err(conflicts)) => {
            return failed(format!(
                "reverting {commit} conflicts with the run branch in: {}",
                conflicts.join(", ")
            ));
        }
        Err(e) => return failed(format!("could not revert {commit}: {e}")),
    };
    let title = spec
        .tasks
        .iter()
        .find(|t| t.id == *task)
        .map_or_else(|| task.to_string(), |t| t.title.clone());
    let redactor = Redactor::from_process_env_using(&policy.scanner, &spec.settings.secret_env);
    let message = redactor.redact(&revert_message(&title, commit, run, task, reason));
    let revert = match git.commit_tree(&tree, head, &message).await {
        Ok(c) => c,
        Err(e) => return failed(format!("could not commit the revert of {commit}: {e}")),
    };
    let attempt = AttemptId {
        run: run.clone(),
        task: task.clone(),
        attempt: 0,
    };
    match move_run_branch(ctx, spec, &attempt, &revert, head).await {
        Ok(()) => RevertOutcome::Reverted { revert },
        Err(abo_core::decide::LandOutcome::Failed { reason, .. })
        | Err(abo_core::decide::LandOutcome::Blocked { reason }) => failed(reason),
        Err(other) => failed(format!("the run branch could not move: {other:?}")),
    }
}
