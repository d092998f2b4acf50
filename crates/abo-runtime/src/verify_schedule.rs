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
    /// Under `landing.mode: pull-request`: the first bad commit, a task's landing, has its revert
    /// `revert` proposed as the pull request `url`; the base branch is as it was.
    Proposed {
        commit: CommitSha,
        revert: CommitSha,
        url: String,
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
    // The lease is renewed while the verification runs (its gates may outlast the lease's TTL,
    // after which another host would take it over), and every record of the log is fenced by it.
    let beat = {
        let (ctx, log, me) = (Arc::clone(ctx), log.clone(), me.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::engine::LEASE_BEAT).await;
                let beat = abo_store::Lease {
                    heartbeat: ctx.now(),
                    ..me.clone()
                };
                if let Ok(false) = ctx.store.heartbeat(&log, &beat).await {
                    return;
                }
            }
        })
    };
    let r = verify_leased(ctx, config, branch, &log, &me).await;
    beat.abort();
    let _ = ctx.store.release_lease(&log, &me).await;
    r
}

async fn verify_leased(
    ctx: &Arc<Ctx>,
    config: &Config,
    branch: &str,
    log: &RunId,
    me: &abo_store::Lease,
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
        if let Some(p) = s.proposed.clone()
            && p.on != head
            && let Some(revert) =
                heal_base::proposal_merged(ctx, &p.on, &head, &p.commit, &p.revert).await
        {
            // The proposed revert reached the branch: the task is reverted now.
            reverted(
                ctx, config, &log, me, &mut s, branch, &p.run, &p.task, &p.commit, &revert, None,
            )
            .await?;
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
        record(ctx, config, &log, me, body, &mut s).await?;
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
                record(ctx, config, &log, me, body, &mut s).await?;
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
                record(ctx, config, &log, me, body, &mut s).await?;
                return Ok(Outcome::Reported { commit, reason });
            }
            // Under `landing.mode: pull-request` nothing reaches the base branch but through a
            // pull request: the revert is committed on a branch of its own and proposed.
            Next::Revert {
                run,
                task,
                commit,
                reason,
                ..
            } if spec.settings.landing.mode == abo_core::config::LandingMode::PullRequest => {
                let message =
                    revert_message(ctx, &spec, &policy, &run, &task, &commit, &reason).await;
                let landing = &spec.settings.landing;
                let proposed = async {
                    let (revert, on) =
                        heal_base::propose(ctx, &landing.remote, branch, &commit, &message).await?;
                    let revert_branch = heal_base::proposal_branch(&commit);
                    let title = message.lines().next().unwrap_or_default();
                    let body = format!(
                        "landing.verify fails on `{branch}` at {on}; abo's scheduled verification bisected it to {commit}, {run}'s task {task}.\n\n{message}"
                    );
                    let req = crate::pr::Request {
                        head: &revert_branch,
                        base: branch,
                        title: &format!("abo: {title}"),
                        body: &body,
                    };
                    let (url, number) = crate::pr::open(ctx, landing, &req).await?;
                    Ok::<_, String>((revert, on, revert_branch, url, number))
                };
                match proposed.await {
                    Ok((revert, on, revert_branch, url, number)) => {
                        let body = EventBody::VerifyProposed {
                            commit: commit.clone(),
                            revert: revert.clone(),
                            revert_branch,
                            on,
                            url: url.clone(),
                            number,
                            by_run: run,
                            by_task: task,
                        };
                        record(ctx, config, &log, me, body, &mut s).await?;
                        return Ok(Outcome::Proposed {
                            commit,
                            revert,
                            url,
                        });
                    }
                    Err(reason) => {
                        let reason = redactor(&spec, &policy).redact(&format!(
                            "the revert of {commit} could not be proposed: {reason}"
                        ));
                        let body = EventBody::RunRevertFailed {
                            commit,
                            reason: reason.clone(),
                            branch: Some(branch.to_owned()),
                        };
                        record(ctx, config, &log, me, body, &mut s).await?;
                        return Ok(Outcome::Broken { reason });
                    }
                }
            }
            Next::Revert {
                run,
                task,
                commit,
                head,
                reason,
                log: verify_log,
            } => {
                let message =
                    revert_message(ctx, &spec, &policy, &run, &task, &commit, &reason).await;
                match heal_base::revert_with(ctx, &run, branch, &commit, &head, &message).await {
                    RevertOutcome::Reverted { revert } => {
                        reverted(
                            ctx,
                            config,
                            &log,
                            me,
                            &mut s,
                            branch,
                            &run,
                            &task,
                            &commit,
                            &revert,
                            Some((reason, verify_log)),
                        )
                        .await?;
                        ended = Outcome::Reverted { commit, revert };
                    }
                    RevertOutcome::Failed { reason } => {
                        let body = EventBody::RunRevertFailed {
                            commit,
                            reason: reason.clone(),
                            branch: Some(branch.to_owned()),
                        };
                        record(ctx, config, &log, me, body, &mut s).await?;
                        return Ok(Outcome::Broken { reason });
                    }
                }
            }
        }
    }
}

/// The revert's message, as a committed revert's (`Abo-Revert-Of:`, the task's trailers),
/// redacted.
async fn revert_message(
    ctx: &Ctx,
    spec: &RunSpec,
    policy: &RunPolicy,
    run: &RunId,
    task: &TaskId,
    commit: &CommitSha,
    reason: &str,
) -> String {
    let message =
        heal::revert_message(&task_title(ctx, run, task).await, commit, run, task, reason);
    redactor(spec, policy).redact(&message)
}

fn redactor(spec: &RunSpec, policy: &RunPolicy) -> crate::redact::Redactor {
    crate::redact::Redactor::from_process_env_using(&policy.scanner, &spec.settings.secret_env)
}

/// `commit` is reverted on the branch by `revert`: `task.reverted` in the task's own run (once,
/// though abo stopped after recording it and looks again), then `verify.reverted` in the branch's
/// log. `why` is the verification's reason and log when this verification made the revert; a
/// proposed revert found merged gives the proposal's.
#[allow(clippy::too_many_arguments)] // the revert's whole context, each a different thing
async fn reverted(
    ctx: &Arc<Ctx>,
    config: &Config,
    log: &RunId,
    me: &abo_store::Lease,
    s: &mut Scheduled,
    branch: &str,
    run: &RunId,
    task: &TaskId,
    commit: &CommitSha,
    revert: &CommitSha,
    why: Option<(String, Option<abo_core::ids::ArtifactId>)>,
) -> Result<(), String> {
    let (reason, verify_log) = why.unwrap_or_else(|| {
        let url = s
            .proposed
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_default();
        (
            format!("landing.verify failed on {branch}; the revert proposed as {url} was merged"),
            None,
        )
    });
    let body = EventBody::TaskReverted {
        commit: commit.clone(),
        revert: revert.clone(),
        branch: Some(branch.to_owned()),
        reason,
        log: verify_log,
    };
    let recorded = ctx.store.run_events(run).await.is_ok_and(|evs| {
        evs.iter().any(
            |e| matches!(&e.event.body, EventBody::TaskReverted { revert: r, .. } if r == revert),
        )
    });
    if !recorded {
        append(ctx, config, run, Some(task), None, body).await?;
    }
    let body = EventBody::VerifyReverted {
        commit: commit.clone(),
        revert: revert.clone(),
        by_run: run.clone(),
        by_task: task.clone(),
    };
    record(ctx, config, log, me, body, s).await
}

/// Appends `body` to the branch's log, as long as `me` holds its lease, and folds it into `s`.
async fn record(
    ctx: &Arc<Ctx>,
    config: &Config,
    log: &RunId,
    me: &abo_store::Lease,
    body: EventBody,
    s: &mut Scheduled,
) -> Result<(), String> {
    append(ctx, config, log, None, Some(me), body.clone()).await?;
    s.apply(&body);
    Ok(())
}

/// Appends `body` to `run`'s log (fenced by `holder`'s lease of it when given) and notifies whoever
/// wants it.
async fn append(
    ctx: &Arc<Ctx>,
    config: &Config,
    run: &RunId,
    task: Option<&TaskId>,
    holder: Option<&abo_store::Lease>,
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
        .append_as(std::slice::from_ref(&event), holder.map(|h| (run, h)))
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

    /// A verification outlasting the lease's TTL (30 s without a heartbeat, for another host)
    /// keeps its lease: it is renewed while the gates run. One taken over anyway (the host was
    /// cut off) records nothing more in the log.
    #[tokio::test]
    async fn the_lease_is_renewed_while_the_gates_run_and_a_lost_one_records_nothing() {
        let repo = TestRepo::new();
        let go = repo.outside.join("go");
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
        let yaml = format!(
            "version: 1\nsandbox: {{ mode: off }}\ngates:\n  - {{ name: e2e, run: 'while [ ! -f {} ]; do sleep 0.05; done' }}\nlanding: {{ verify: [e2e], verify_schedule: 1s }}\n",
            go.display()
        );
        let config = Config::parse("abo.yml", &yaml).unwrap();
        let log = log_id("main");
        let verifying = {
            let (ctx, config) = (Arc::clone(&ctx), config.clone());
            tokio::spawn(async move { verify_base(&ctx, &config, "main").await })
        };
        let lease = || async { ctx.store.lease(&log).await.unwrap() };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut first = None;
        let renewed = loop {
            match (lease().await, &first) {
                (Some(l), None) => first = Some(l),
                (Some(l), Some(f)) if l.heartbeat > f.heartbeat => break l,
                _ => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease was not renewed: {first:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        // Another host takes the lease over (as it would had it expired).
        let other = abo_store::Lease {
            host: "elsewhere".into(),
            pid: 1,
            heartbeat: ctx.now(),
        };
        assert!(
            ctx.store
                .take_lease(&log, &other, Some(&renewed))
                .await
                .unwrap()
        );
        std::fs::write(&go, "").unwrap();
        let e = verifying.await.unwrap().unwrap_err();
        assert!(e.contains("could not record run.verify"), "{e}");
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
            ["verify.scheduled"],
            "nothing recorded once the lease was lost"
        );
        assert_eq!(lease().await.map(|l| l.host), Some("elsewhere".to_owned()));
    }
}
