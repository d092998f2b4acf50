//! `landing.verify_schedule`, the git half (the decisions are
//! `abo_core::verify_schedule::Scheduled`'s): one scheduled verification of the base branch, from
//! where its log left it to its end. The verify gates run in a worktree and sandbox of its own
//! (`effects::heal::verify`), the revert is moved onto the base branch by compare-and-swap
//! (`effects::heal_base`), and each result is an event of the branch's log, so a verification
//! interrupted by a crash goes on where it was.

use std::sync::Arc;

use abo_core::config::Config;
use abo_core::event::{Event, EventBody, StoredEvent};
use abo_core::ids::{CommitSha, RunId, TaskId};
use abo_core::spec::RunSpec;
use abo_core::state::TaskState;
use abo_core::verify::{OnBase, RevertOutcome};
use abo_core::verify_schedule::{BaseCommit, Next, Scheduled, log_id};

use crate::context::Ctx;
use crate::effects::{RunPolicy, heal, heal_base};

/// How one call ended, for the daemon's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The head was verified (or reverted, or reported) already: nothing to do.
    Idle,
    /// The head verified.
    Passed { head: CommitSha },
    /// The first bad commit, a task's landing, was reverted by `revert`.
    Reverted {
        commit: CommitSha,
        revert: CommitSha,
    },
    /// The first bad commit was not abo's (or the head fails with nothing to bisect): reported.
    Reported { commit: CommitSha, reason: String },
    /// It fails and stays so (the revert could not be made, or it fails after the revert).
    Broken { reason: String },
}

/// Verifies `branch` if its head is new (or goes on with the verification in progress), holding
/// its log's lease: one process at a time verifies a branch.
pub async fn verify_base(ctx: &Arc<Ctx>, config: &Config, branch: &str) -> Result<Outcome, String> {
    let log = log_id(branch);
    let me = abo_store::Lease {
        host: crate::engine::hostname(),
        pid: std::process::id(),
        heartbeat: ctx.now(),
    };
    let lease_err = |e: abo_store::StoreError| format!("the lease of {log}: {e}");
    let current = ctx.store.lease(&log).await.map_err(lease_err)?;
    let busy = |l: &abo_store::Lease| format!("{log} is verified by {} (pid {})", l.host, l.pid);
    if let Some(l) = &current
        && crate::engine::holder_alive(l, ctx.now())
    {
        return Err(busy(l));
    }
    if !ctx
        .store
        .take_lease(&log, &me, current.as_ref())
        .await
        .map_err(lease_err)?
    {
        return Err(format!("{log} is verified by another process"));
    }
    let r = verify_leased(ctx, config, branch, &log).await;
    let _ = ctx.store.release_lease(&log, &me).await;
    r
}

async fn verify_leased(
    ctx: &Arc<Ctx>,
    config: &Config,
    branch: &str,
    log: &RunId,
) -> Result<Outcome, String> {
    let log = log.clone();
    let events = ctx
        .store
        .run_events(&log)
        .await
        .map_err(|e| format!("could not read {log}: {e}"))?;
    let mut s = Scheduled::fold(branch, &events);
    let spec = spec(config, branch);
    let policy = RunPolicy::load(&log, &spec).map_err(|e| format!("the policy: {e}"))?;
    if s.current.is_none() {
        let head = match ctx.git.branch_head(branch).await {
            Ok(Some(h)) => h,
            Ok(None) => return Err(format!("the base branch {branch} is missing")),
            Err(e) => return Err(format!("could not read {branch}: {e}")),
        };
        if !s.due(&head) {
            return Ok(Outcome::Idle);
        }
        let commits = match &s.good {
            Some(good) => first_parents(ctx, good, &head).await?,
            None => Vec::new(),
        };
        let body = EventBody::VerifyScheduled {
            branch: branch.to_owned(),
            head,
            good: s.good.clone(),
            commits,
        };
        record(ctx, config, &log, body, &mut s).await?;
    }
    let gates = spec.settings.landing.verify.clone();
    let on = OnBase {
        branch: branch.to_owned(),
        onto: None,
    };
    let mut ended = Outcome::Idle;
    loop {
        match s.next() {
            Next::Idle => return Ok(ended),
            Next::Verify { commit, bisect } => {
                let o = heal::verify(ctx, &spec, &policy, &commit, &gates, Some(&on)).await;
                let body = if bisect {
                    EventBody::RunBisect {
                        step: s.current.as_ref().map_or(0, |c| c.verification.steps()) + 1,
                        commit: commit.clone(),
                        branch: Some(branch.to_owned()),
                        passed: o.passed,
                        failed_gate: o.failed_gate,
                        duration_ms: o.duration_ms,
                        log: o.log,
                    }
                } else {
                    EventBody::RunVerify {
                        commit: commit.clone(),
                        branch: Some(branch.to_owned()),
                        passed: o.passed,
                        failed_gate: o.failed_gate,
                        duration_ms: o.duration_ms,
                        log: o.log,
                        reason: o.reason,
                    }
                };
                record(ctx, config, &log, body, &mut s).await?;
                let reverted = matches!(ended, Outcome::Reverted { .. });
                if !bisect && o.passed && !reverted {
                    ended = Outcome::Passed { head: commit };
                } else if !bisect && s.current.is_none() && !o.passed {
                    ended = Outcome::Broken {
                        reason: "landing.verify still fails on the base branch after the revert"
                            .into(),
                    };
                }
            }
            Next::Report {
                commit,
                reason,
                log: verify_log,
            } => {
                let body = EventBody::VerifyReported {
                    commit: commit.clone(),
                    reason: reason.clone(),
                    log: verify_log,
                };
                record(ctx, config, &log, body, &mut s).await?;
                return Ok(Outcome::Reported { commit, reason });
            }
            // Under `landing.mode: pull-request` nothing reaches the base branch but through a
            // pull request: abo does not commit its revert there, it reports the commit (a pull
            // request of the revert is not built yet).
            Next::Revert {
                run,
                task,
                commit,
                reason,
                log: verify_log,
                ..
            } if spec.settings.landing.mode == abo_core::config::LandingMode::PullRequest => {
                let reason = format!(
                    "{reason}; it is {run}'s task {task}, not reverted: landing.mode is pull-request, so abo commits nothing to {branch} (revert it with a pull request: git revert {})",
                    commit.short()
                );
                let body = EventBody::VerifyReported {
                    commit: commit.clone(),
                    reason: reason.clone(),
                    log: verify_log,
                };
                record(ctx, config, &log, body, &mut s).await?;
                return Ok(Outcome::Reported { commit, reason });
            }
            Next::Revert {
                run,
                task,
                commit,
                head,
                reason,
                log: verify_log,
            } => {
                let message = heal::revert_message(
                    &task_title(ctx, &run, &task).await,
                    &commit,
                    &run,
                    &task,
                    &reason,
                );
                let message = crate::redact::Redactor::from_process_env_using(
                    &policy.scanner,
                    &spec.settings.secret_env,
                )
                .redact(&message);
                match heal_base::revert_with(ctx, &run, branch, &commit, &head, &message).await {
                    RevertOutcome::Reverted { revert } => {
                        // The task is reverted in its own run, the verify log its feedback.
                        let body = EventBody::TaskReverted {
                            commit: commit.clone(),
                            revert: revert.clone(),
                            branch: Some(branch.to_owned()),
                            reason,
                            log: verify_log,
                        };
                        // Once, though abo stopped after recording it and reverts again.
                        let recorded = ctx.store.run_events(&run).await.is_ok_and(|evs| {
                            evs.iter().any(|e| {
                                matches!(&e.event.body, EventBody::TaskReverted { revert: r, .. } if *r == revert)
                            })
                        });
                        if !recorded {
                            append(ctx, config, &run, Some(&task), body).await?;
                        }
                        let body = EventBody::VerifyReverted {
                            commit: commit.clone(),
                            revert: revert.clone(),
                            by_run: run,
                            by_task: task,
                        };
                        record(ctx, config, &log, body, &mut s).await?;
                        ended = Outcome::Reverted { commit, revert };
                    }
                    RevertOutcome::Failed { reason } => {
                        let body = EventBody::RunRevertFailed {
                            commit,
                            reason: reason.clone(),
                            branch: Some(branch.to_owned()),
                        };
                        record(ctx, config, &log, body, &mut s).await?;
                        return Ok(Outcome::Broken { reason });
                    }
                }
            }
        }
    }
}

/// Appends `body` to the branch's log and folds it into `s`.
async fn record(
    ctx: &Arc<Ctx>,
    config: &Config,
    log: &RunId,
    body: EventBody,
    s: &mut Scheduled,
) -> Result<(), String> {
    append(ctx, config, log, None, body.clone()).await?;
    s.apply(&body);
    Ok(())
}

/// Appends `body` to `run`'s log and notifies whoever wants it.
async fn append(
    ctx: &Arc<Ctx>,
    config: &Config,
    run: &RunId,
    task: Option<&TaskId>,
    body: EventBody,
) -> Result<(), String> {
    let event = Event {
        run: run.clone(),
        task: task.cloned(),
        at: ctx.now(),
        body,
    };
    let stored: Vec<StoredEvent> = ctx
        .store
        .append(std::slice::from_ref(&event))
        .await
        .map_err(|e| format!("could not record {}: {e}", event.body.kind()))?;
    let secret_env = crate::create::secret_env(config);
    for h in crate::notify::dispatch(ctx, &config.notify.spec(), &secret_env, &stored) {
        let _ = h.await;
    }
    Ok(())
}

/// The first-parent commits of the base branch after `good` up to `head`, oldest first, each
/// with the task whose landing it is when abo made it.
async fn first_parents(
    ctx: &Ctx,
    good: &CommitSha,
    head: &CommitSha,
) -> Result<Vec<BaseCommit>, String> {
    let range = format!("{good}..{head}");
    let out = ctx
        .git
        .run(&["rev-list", "--first-parent", "--reverse", &range])
        .await
        .map_err(|e| format!("could not list {range}: {e}"))?;
    let mut commits = Vec::new();
    for sha in out.split_whitespace() {
        let commit = CommitSha::new(sha);
        let by = made_by_abo(ctx, &commit).await;
        commits.push(BaseCommit {
            commit,
            run: by.as_ref().map(|b| b.0.clone()),
            task: by.map(|b| b.1),
        });
    }
    Ok(commits)
}

/// The run and task whose landing `commit` is: its `Abo-Run`/`Abo-Task` trailers, believed only
/// when that run's log says the task landed as this very commit (trailers anyone can write).
async fn made_by_abo(ctx: &Ctx, commit: &CommitSha) -> Option<(RunId, TaskId)> {
    let body = ctx
        .git
        .run(&["log", "-1", "--format=%B", commit.as_str()])
        .await
        .ok()?;
    let trailer = |key: &str| {
        body.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    if trailer("Abo-Revert-Of:").is_some() {
        return None; // a revert is not reverted again
    }
    let (run, task) = (
        RunId::new(trailer("Abo-Run:")?),
        TaskId::new(trailer("Abo-Task:")?),
    );
    let state = crate::engine::load(&ctx.store, &run).await.ok()?;
    let landed = matches!(
        state.task(&task).map(|t| &t.state),
        Some(TaskState::Landed { commit: c, .. }) if c == commit
    );
    landed.then_some((run, task))
}

async fn task_title(ctx: &Ctx, run: &RunId, task: &TaskId) -> String {
    crate::engine::load(&ctx.store, run)
        .await
        .ok()
        .and_then(|s| s.task(task).map(|t| t.spec.title.clone()))
        .unwrap_or_else(|| task.to_string())
}

/// The settings the gates run with: abo.yml's, on the base branch.
fn spec(config: &Config, branch: &str) -> RunSpec {
    RunSpec {
        title: format!("landing.verify_schedule on {branch}"),
        profile: String::new(),
        base: CommitSha::new(""),
        base_branch: Some(branch.to_owned()),
        branch: branch.to_owned(),
        settings: crate::create::settings(config, None),
        tasks: Vec::new(),
    }
}

/// Whether a scheduled verification of `branch` was left in progress (abo stopped during it).
pub async fn in_progress(ctx: &Ctx, branch: &str) -> bool {
    ctx.store
        .run_events(&log_id(branch))
        .await
        .is_ok_and(|events| Scheduled::fold(branch, &events).current.is_some())
}

#[cfg(test)]
mod tests {
    use abo_core::ids::Timestamp;
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    use super::*;

    const CONFIG: &str = "version: 1\nsandbox: { mode: off }\ngates:\n  - { name: e2e, run: 'if test -f b.txt; then echo \"e2e: b breaks it\"; exit 1; fi' }\nlanding: { verify: [e2e], verify_schedule: 1s }\n";

    fn sha(repo: &TestRepo, rev: &str) -> CommitSha {
        CommitSha::new(repo.git(&["rev-parse", rev]).trim())
    }

    #[tokio::test]
    async fn trailers_a_person_wrote_do_not_make_a_commit_abos_it_is_reported_not_reverted() {
        let repo = TestRepo::new();
        let good = sha(&repo, "HEAD");
        repo.write("x.txt", "x\n");
        repo.commit_all("x");
        // The attack: a person's commit claiming to be a task's landing, of no run abo knows.
        repo.write("b.txt", "b\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "Add b\n\nAbo-Run: r1\nAbo-Task: b"]);
        let bad = sha(&repo, "HEAD");
        repo.git(&["checkout", "-q", "--detach"]);
        let dir = tempfile::tempdir().unwrap();
        let store = abo_store::Store::open("sqlite:t.db", dir.path())
            .await
            .unwrap();
        let git = crate::git::Git::new(repo.path.clone());
        let ctx = Arc::new(Ctx::new(
            repo.path.clone(),
            store,
            git,
            Arc::new(crate::SystemClock),
        ));
        let config = Config::parse("abo.yml", CONFIG).unwrap();
        // The previous scheduled verification: `good` passed.
        let log = log_id("main");
        let bodies = [
            EventBody::VerifyScheduled {
                branch: "main".into(),
                head: good.clone(),
                good: None,
                commits: Vec::new(),
            },
            EventBody::RunVerify {
                commit: good.clone(),
                branch: Some("main".into()),
                passed: true,
                failed_gate: None,
                duration_ms: 1,
                log: None,
                reason: None,
            },
        ];
        for body in bodies {
            let e = Event {
                run: log.clone(),
                task: None,
                at: Timestamp(0),
                body,
            };
            ctx.store.append(&[e]).await.unwrap();
        }

        let o = verify_base(&ctx, &config, "main").await.unwrap();
        assert!(
            matches!(&o, Outcome::Reported { commit, reason } if *commit == bad && reason.contains("gate `e2e` failed")),
            "{o:?}"
        );
        assert_eq!(
            sha(&repo, "main"),
            bad,
            "main is left where the person put it"
        );
        let kinds: Vec<&str> = ctx
            .store
            .run_events(&log)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event.body.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "verify.scheduled",
                "run.verify",
                "verify.scheduled",
                "run.verify",
                "run.bisect",
                "verify.reported"
            ]
        );
        let events = ctx.store.run_events(&log).await.unwrap();
        let EventBody::VerifyScheduled { commits, .. } = &events[2].event.body else {
            panic!()
        };
        assert!(
            commits.iter().all(|c| c.run.is_none() && c.task.is_none()),
            "{commits:?}"
        );
        // Nothing new on main: the next look does nothing.
        assert_eq!(
            verify_base(&ctx, &config, "main").await.unwrap(),
            Outcome::Idle
        );
        // Another live process holding the branch's lease: this one leaves it alone.
        let other = abo_store::Lease {
            host: crate::engine::hostname(),
            pid: std::os::unix::process::parent_id(),
            heartbeat: ctx.now(),
        };
        assert!(ctx.store.take_lease(&log, &other, None).await.unwrap());
        let e = verify_base(&ctx, &config, "main").await.unwrap_err();
        assert!(e.contains("verify-main is verified by"), "{e}");
    }
}
