//! Executing the core's effects. Each returns the command that reports its result (if any); a
//! failure of the machinery (git, the filesystem) fails that attempt only, with the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use abo_core::decide::{BackendOutcome, Command, Effect, GateOutcome, LandOutcome, PolicyOutcome};
use abo_core::event::GateStage;
use abo_core::ids::{AttemptId, CommitSha, GateName};
use abo_core::spec::{BackendSpec, RunSpec, TaskSpec};
use abo_core::state::Feedback;
use abo_core::verdict::Verdict;

use crate::backends;

mod in_attempt;
use crate::change;
use crate::context::Ctx;
use crate::git::GIT_ENV_REMOVE;
use crate::process::{self, Spec};
use crate::redact::Redactor;

pub mod heal;
pub(crate) mod heal_base;
mod review;

/// What an effect produced: the command to decide next, and warnings for the person watching.
#[derive(Debug, Default)]
pub struct Done {
    pub command: Option<Command>,
    pub warnings: Vec<String>,
}

impl Done {
    pub(crate) fn command(c: Command) -> Self {
        Self {
            command: Some(c),
            warnings: Vec::new(),
        }
    }

    fn warning(w: String) -> Self {
        Self {
            command: None,
            warnings: vec![w],
        }
    }
}

/// What a run's effects share: the run, its policy (built once per run) and the secret scanner.
pub struct RunPolicy {
    pub run: abo_core::ids::RunId,
    pub policy: std::sync::Mutex<abo_policy::Policy>,
    pub scanner: abo_policy::secrets::Scanner,
}

impl RunPolicy {
    pub fn load(
        run: &abo_core::ids::RunId,
        spec: &RunSpec,
    ) -> Result<Self, abo_policy::PolicyError> {
        let p =
            abo_policy::Policy::load(&spec.settings.policy.safety, &spec.settings.policy.files)?;
        Ok(Self {
            run: run.clone(),
            policy: std::sync::Mutex::new(p),
            // The values of the keys abo holds are secrets in a change too, whatever their shape
            // (an agent writing its own API key into a file).
            scanner: abo_policy::secrets::Scanner::default().with_known(
                spec.settings
                    .secret_env
                    .iter()
                    .filter_map(|n| std::env::var(n).ok()),
            ),
        })
    }
}

pub async fn execute(ctx: &Ctx, spec: &RunSpec, run: &RunPolicy, effect: Effect) -> Done {
    // On a control plane, what happens in an attempt's worktree is a worker's.
    let effect = match &ctx.shared {
        Some(shared) => match crate::shared::execute(ctx, shared, spec, run, effect).await {
            Ok(done) => return done,
            Err(local) => local,
        },
        None => effect,
    };
    execute_here(ctx, spec, run, effect).await
}

/// Executes an effect in this process.
pub(crate) async fn execute_here(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &RunPolicy,
    effect: Effect,
) -> Done {
    match effect {
        Effect::EvaluatePolicy { attempt } => {
            let outcome = evaluate_policy(ctx, spec, run, &attempt).await;
            Done::command(Command::PolicyDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                outcome,
            })
        }
        Effect::StartAttempt {
            attempt,
            backend,
            feedback,
            reserved,
        } => {
            let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
                return Done::default();
            };
            let how = Attempt {
                backend: &backend,
                feedback: feedback.as_ref(),
                reserved,
            };
            let (outcome, warnings) = start_attempt(ctx, spec, run, task, &attempt, how).await;
            let command = Command::BackendDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                outcome,
            };
            Done {
                command: Some(command),
                warnings,
            }
        }
        Effect::RunGate {
            attempt,
            gate,
            stage,
            candidate,
        } => {
            let outcome =
                run_gate(ctx, spec, run, &attempt, &gate, stage, candidate.as_ref()).await;
            Done::command(Command::GateDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                stage,
                outcome,
                candidate,
            })
        }
        Effect::Land { attempt } => {
            let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
                return Done::default();
            };
            let outcome = land(ctx, spec, task, &attempt)
                .await
                .unwrap_or_else(|reason| LandOutcome::Failed { reason, log: None });
            Done::command(Command::LandDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                outcome,
            })
        }
        Effect::LandTogether { attempts } => {
            let outcomes = land_together(ctx, spec, &attempts).await;
            Done::command(Command::LandedTogether {
                outcomes: outcomes
                    .into_iter()
                    .map(|(a, o)| (a.task, a.attempt, o))
                    .collect(),
            })
        }
        Effect::Advance { attempt, candidate } => {
            let outcome = advance(ctx, spec, &attempt, &candidate).await;
            Done::command(Command::LandDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                outcome,
            })
        }
        Effect::Cleanup { attempt, keep } => {
            match forget_then_cleanup(ctx, &attempt, keep, recycled(spec)).await {
                Ok(()) => Done::default(),
                Err(e) => Done::warning(format!("cleaning up {attempt}: {e}")),
            }
        }
        Effect::Prove { attempt, commit } => {
            let title = spec
                .tasks
                .iter()
                .find(|t| t.id == attempt.task)
                .map_or("", |t| t.title.as_str());
            match crate::proof::prove(ctx, title, &attempt, &commit).await {
                Ok(()) => Done::default(),
                Err(e) => Done::warning(format!(
                    "the proof of change of {attempt} could not be written: {e}"
                )),
            }
        }
        Effect::KillAll => {
            ctx.groups.kill_all();
            Done::default()
        }
        Effect::Stop { attempt } => {
            // Everything run for the attempt carries its worktree in its environment: that is
            // what is killed, with its process groups, then the worktree goes.
            let marker = format!("ABO_WORKTREE={}", ctx.worktree(&attempt).to_string_lossy());
            process::kill_marked(&marker);
            // Killed, not waited for: its worktree is removed, never kept for another attempt.
            match forget_then_cleanup(ctx, &attempt, false, 0).await {
                Ok(()) => Done::default(),
                Err(e) => Done::warning(format!("cleaning up {attempt}: {e}")),
            }
        }
        Effect::Verify {
            commit,
            gates,
            bisect,
            base,
            ..
        } => {
            let outcome = heal::verify(ctx, spec, run, &commit, &gates, base.as_ref()).await;
            Done::command(Command::VerifyDone {
                commit,
                bisect,
                base: base.is_some(),
                outcome,
            })
        }
        Effect::Review { attempt, reviewer } => {
            let r = review::review(ctx, spec, run, &attempt, &reviewer).await;
            Done::command(Command::ReviewDone {
                task: attempt.task.clone(),
                attempt: attempt.attempt,
                reviewer: reviewer.name().clone(),
                outcome: r.outcome,
                log: r.log,
                usage: r.usage,
                cost_usd: r.cost_usd,
                cost_source: r.cost_source,
            })
        }
        Effect::Revert {
            task,
            commit,
            head,
            reason,
            base,
            ..
        } => {
            let outcome = match &base {
                None => heal::revert(ctx, spec, run, &task, &commit, &head, &reason).await,
                Some(on) => {
                    heal_base::revert(ctx, spec, run, &on.branch, &task, &commit, &head, &reason)
                        .await
                }
            };
            Done::command(Command::RevertDone {
                task,
                commit,
                base: base.is_some(),
                outcome,
            })
        }
        Effect::Finish { run: run_id, merge } => {
            let mut warnings = Vec::new();
            if spec.settings.pushes() {
                let remote = &spec.settings.landing.remote;
                if let Err(e) = ctx.git.push(remote, &spec.branch).await {
                    warnings.push(format!("pushing {} to {remote} failed: {e}", spec.branch));
                }
            }
            let mut pull_request = None;
            let (outcome, commit, reason) =
                if spec.settings.landing.mode == abo_core::config::LandingMode::PullRequest {
                    // The pull request is how the run branch reaches the base branch.
                    match crate::pr::open_for_run(ctx, spec, &run_id).await {
                        Ok((url, number)) => {
                            let why = format!("offered as a pull request: {url}");
                            pull_request = Some((url, number));
                            ("skipped".to_owned(), None, why)
                        }
                        Err(e) => {
                            warnings.push(format!("opening the pull request failed: {e}"));
                            (
                                "skipped".to_owned(),
                                None,
                                format!("the pull request could not be opened: {e}"),
                            )
                        }
                    }
                } else {
                    match merge {
                        Ok(()) => merge_into_base(ctx, spec).await,
                        Err(reason) => ("skipped".to_owned(), None, reason),
                    }
                };
            // A merge commit's first parent: where the base branch's bisect starts.
            let onto = match &commit {
                Some(c) if outcome == "merge-commit" => {
                    ctx.git.rev_parse(&format!("{c}^1")).await.ok()
                }
                _ => None,
            };
            let command = Command::MergeDone {
                into: spec.base_branch.clone(),
                outcome,
                commit,
                onto,
                reason,
                pull_request,
            };
            Done {
                command: Some(command),
                warnings,
            }
        }
    }
}

/// Drops what the attempt's gates measured, then cleans up its worktree (into the pool of at
/// most `pool` worktrees, see [`recycled`]).
async fn forget_then_cleanup(
    ctx: &Ctx,
    attempt: &AttemptId,
    keep: bool,
    pool: usize,
) -> Result<(), crate::git::GitError> {
    ctx.measures.forget(attempt);
    cleanup(ctx, attempt, keep, pool).await
}

/// The announcement that `effect` will offer a worktree to the pool, made before it and the
/// effects decided with it are started: an attempt starting beside it waits for that worktree
/// instead of checking out a fresh one (`git::pool::Incoming`).
pub(crate) fn coming_to_pool(
    ctx: &Ctx,
    spec: &RunSpec,
    effect: &Effect,
) -> Option<crate::git::pool::Coming> {
    (matches!(effect, Effect::Cleanup { keep: false, .. }) && recycled(spec) > 0)
        .then(|| ctx.git.announce_recycled())
}

/// Effects decided with a kill of the whole run (`Effect::KillAll`): the kill is not waited for,
/// so the processes of an attempt in flight may still be dying, and write into its worktree. Each
/// such attempt's `Cleanup` becomes a `Stop` (its processes killed, its worktree removed, never
/// pooled).
pub(crate) fn not_pooled_after_a_kill(effects: &mut [Effect]) {
    if !effects.iter().any(|e| matches!(e, Effect::KillAll)) {
        return;
    }
    for e in effects {
        if let Effect::Cleanup {
            attempt,
            keep: false,
        } = e
        {
            *e = Effect::Stop {
                attempt: attempt.clone(),
            };
        }
    }
}

/// How many finished attempts' worktrees the pool keeps for later attempts (`git::pool`): one
/// more than run at once (the next attempt may start while the one before is cleaned up), when
/// no process of a finished attempt can still write its worktree. Only worktrees cleaned up
/// without being kept are pooled (a landed change's, a denied or outdone proposal's; a failed
/// attempt's is kept for inspection, and one a person or abo stopped is removed), so their
/// processes ended by themselves; in a PID namespace of its own (the sandbox) everything such a
/// process started died with the namespace's init, which the sandbox's helper waits for before
/// the attempt ends. Without one (`sandbox.mode: off`, or a host without PID namespaces) a process
/// an attempt left could write into the next attempt's files, so nothing is pooled; nor under
/// `best-effort`, whose helper runs the program without namespaces when it cannot make them.
/// Attempts a kill ended (not waited for) are removed, not pooled ([`not_pooled_after_a_kill`]).
fn recycled(spec: &RunSpec) -> usize {
    static PID_NAMESPACES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let isolated = spec.settings.sandbox.mode == abo_core::config::SandboxMode::Required
        && *PID_NAMESPACES.get_or_init(|| {
            abo_sandbox::probe()
                .iter()
                .any(|l| l.name == "pid namespace" && l.available)
        });
    if isolated {
        spec.settings.max_parallel.clamp(1, 64) + 1
    } else {
        0
    }
}

/// The variables every process run for an attempt gets.
pub(crate) fn attempt_env(
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    wt: &Path,
) -> Vec<(String, String)> {
    vec![
        ("ABO_RUN_ID".into(), attempt.run.to_string()),
        ("ABO_TASK_ID".into(), task.id.to_string()),
        ("ABO_TASK_TITLE".into(), task.title.clone()),
        ("ABO_ATTEMPT".into(), attempt.attempt.to_string()),
        ("ABO_WORKTREE".into(), wt.to_string_lossy().into_owned()),
        ("ABO_RUN_BRANCH".into(), spec.branch.clone()),
    ]
}

fn process_spec(
    script: &str,
    cwd: &Path,
    env: Vec<(String, String)>,
    timeout_ms: u64,
    log: &Path,
) -> Spec {
    let mut s = Spec::shell(script, cwd);
    s.env = env;
    s.env_remove = GIT_ENV_REMOVE.iter().map(|v| (*v).to_owned()).collect();
    s.timeout = Some(Duration::from_millis(timeout_ms.max(1)));
    s.log = Some(log.to_owned());
    s
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn feedback_text(ctx: &Ctx, f: &Feedback) -> String {
    let mut text = format!("Attempt {} failed: {}\n", f.attempt, f.reason);
    if let Some(log) = &f.log {
        let tail = ctx.artifacts.tail(log, 100);
        if !tail.is_empty() {
            text.push_str(&format!("\nLast lines of its output:\n\n{tail}\n"));
        }
    }
    text
}

/// Lands the run branch into the base branch: fast-forward when possible, in the
/// user's checkout only when it is clean; otherwise a merge commit made in abo's own worktree, and
/// never moving a branch some working tree has checked out. Returns (outcome, commit, reason).
async fn merge_into_base(ctx: &Ctx, spec: &RunSpec) -> (String, Option<CommitSha>, String) {
    let skipped = |reason: String| ("skipped".to_owned(), None, reason);
    let Some(base) = &spec.base_branch else {
        return skipped("the run started from a detached HEAD: there is no base branch".into());
    };
    let (Ok(Some(base_head)), Ok(Some(run_head))) = (
        ctx.git.branch_head(base).await,
        ctx.git.branch_head(&spec.branch).await,
    ) else {
        return skipped(format!("{base} or {} is missing", spec.branch));
    };
    // The merge happened before abo stopped, its `run.merge` not yet recorded: recorded now, not
    // made twice.
    if ctx
        .git
        .is_ancestor(&run_head, &base_head)
        .await
        .unwrap_or(false)
    {
        if base_head == spec.base {
            return skipped("nothing to merge".into());
        }
        let outcome = if base_head == run_head {
            "fast-forward"
        } else {
            "merge-commit"
        };
        return (
            outcome.into(),
            Some(base_head),
            format!("{base} already holds the run branch"),
        );
    }
    let by_hand = |how: &str| {
        format!(
            "{how}; merge it with: git merge {} (on {base})",
            spec.branch
        )
    };
    let checked_out = checked_out_in(ctx, base).await;
    let ff = ctx
        .git
        .run(&[
            "merge-base",
            "--is-ancestor",
            base_head.as_str(),
            run_head.as_str(),
        ])
        .await
        .is_ok();
    if ff {
        if checked_out.is_empty() {
            return match ctx.git.advance_branch(base, &run_head, &base_head).await {
                Ok(()) => (
                    "fast-forward".into(),
                    Some(run_head),
                    format!("{base} now points at the run branch"),
                ),
                Err(e) => skipped(by_hand(&format!("{base} moved meanwhile ({e})"))),
            };
        }
        if checked_out.len() == 1 && checked_out[0] == ctx.root {
            let dirty = ctx
                .git
                .run(&["status", "--porcelain", "--untracked-files=no"])
                .await
                .map(|s| !s.trim().is_empty())
                .unwrap_or(true);
            if dirty {
                return skipped(by_hand(&format!(
                    "{base} is checked out with uncommitted changes, so abo moved nothing"
                )));
            }
            match untracked_in_the_way(ctx, &base_head, &run_head).await {
                Ok(None) => {}
                Ok(Some(path)) => {
                    return skipped(by_hand(&format!(
                        "{base} is checked out and {path} there is a file git does not track, \
                         which the fast-forward would overwrite, so abo moved nothing"
                    )));
                }
                Err(e) => {
                    return skipped(by_hand(&format!(
                        "abo could not list what the fast-forward writes ({e}), so it moved nothing"
                    )));
                }
            }
            // `--no-overwrite-ignore`: should a file appear after the check, git refuses too
            // rather than treating an ignored file as expendable.
            return match ctx
                .git
                .run(&[
                    "merge",
                    "--ff-only",
                    "--no-overwrite-ignore",
                    "--quiet",
                    &spec.branch,
                ])
                .await
            {
                Ok(_) => (
                    "fast-forward".into(),
                    Some(run_head),
                    format!("{base} (checked out, clean) fast-forwarded"),
                ),
                Err(e) => skipped(by_hand(&format!("the fast-forward failed ({e})"))),
            };
        }
        return skipped(by_hand(&format!(
            "{base} is checked out in another worktree"
        )));
    }
    if !checked_out.is_empty() {
        return skipped(by_hand(&format!(
            "{base} has moved and is checked out, so abo does not merge into it"
        )));
    }
    // Diverged: a merge commit in abo's own worktree, then the branch moves by compare-and-swap.
    let wt = ctx
        .root
        .join(".abo/worktrees")
        .join(spec.branch.replace('/', "-") + "-merge");
    if let Err(e) = ctx.git.add_detached_worktree(&wt, &base_head).await {
        return skipped(by_hand(&format!("could not make a worktree ({e})")));
    }
    let message = format!("Merge {} into {base}", spec.branch);
    let result = match ctx
        .git
        .run_in(
            &wt,
            &[
                "-c",
                "commit.gpgsign=false",
                "merge",
                "--no-ff",
                "--no-verify",
                "-m",
                &message,
                &spec.branch,
            ],
        )
        .await
    {
        Ok(_) => match ctx.git.run_in(&wt, &["rev-parse", "HEAD"]).await {
            Ok(head) => {
                let commit = CommitSha::new(head.trim());
                match ctx.git.advance_branch(base, &commit, &base_head).await {
                    Ok(()) => (
                        "merge-commit".to_owned(),
                        Some(commit),
                        format!("merged into {base}"),
                    ),
                    Err(e) => skipped(by_hand(&format!("{base} moved meanwhile ({e})"))),
                }
            }
            Err(e) => skipped(by_hand(&e.to_string())),
        },
        Err(_) => skipped(by_hand(&format!("the run branch conflicts with {base}"))),
    };
    let _ = ctx.git.remove_worktree(&wt).await;
    result
}

/// The first path a fast-forward of the user's clean checkout from `from` to `to` would write
/// over something git does not track there: a file (ignored or not), a symbolic link or a
/// directory where the change adds a path, or a file or link where it needs a directory. Git's
/// own check lets ignored files go as expendable; the user's are not. With the checkout clean,
/// what git tracks is `from`'s tree: every path the change modifies or deletes.
async fn untracked_in_the_way(
    ctx: &Ctx,
    from: &CommitSha,
    to: &CommitSha,
) -> Result<Option<String>, crate::git::GitError> {
    let out = ctx
        .git
        .run(&[
            "diff",
            "--name-status",
            "-z",
            "--no-renames",
            from.as_str(),
            to.as_str(),
        ])
        .await?;
    let mut fields = out.split('\0').filter(|f| !f.is_empty());
    let (mut added, mut tracked) = (Vec::new(), std::collections::BTreeSet::new());
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        if status.starts_with('A') {
            added.push(path);
        } else {
            tracked.insert(path);
        }
    }
    for path in added {
        if std::fs::symlink_metadata(ctx.root.join(path)).is_ok() {
            return Ok(Some(path.to_owned()));
        }
        // Each directory the path needs: a file or a link there that git does not track.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let dir = &path[..end];
            let in_the_way =
                std::fs::symlink_metadata(ctx.root.join(dir)).is_ok_and(|m| !m.is_dir());
            if in_the_way && !tracked.contains(dir) {
                return Ok(Some(dir.to_owned()));
            }
            end += 1;
        }
    }
    Ok(None)
}

/// The attempt's review as the policy sees it (`input.review`): its `task.review` event's data.
/// Read from the task's own events, not the run's whole log (every attempt's policy reads it).
async fn last_review(ctx: &Ctx, attempt: &AttemptId) -> Option<serde_json::Value> {
    let events = ctx
        .store
        .task_events(&attempt.run, &attempt.task)
        .await
        .ok()?;
    events.iter().rev().find_map(|e| match &e.event.body {
        abo_core::event::EventBody::TaskReview { attempt: a, .. } if *a == attempt.attempt => {
            Some(e.event.body.data())
        }
        _ => None,
    })
}

/// The worktrees that have `branch` checked out (none when git cannot tell).
async fn checked_out_in(ctx: &Ctx, branch: &str) -> Vec<std::path::PathBuf> {
    ctx.git.checked_out_in(branch).await.unwrap_or_default()
}

/// The policy's decision on an attempt's change.
async fn evaluate_policy(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &RunPolicy,
    attempt: &AttemptId,
) -> PolicyOutcome {
    let failed = |e: String| PolicyOutcome {
        verdict: Verdict::Deny,
        deny: vec![],
        require_approval: vec![],
        risk: String::new(),
        duration_us: 0,
        error: Some(e),
        secrets: 0,
        input: None,
    };
    let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
        return failed("unknown task".into());
    };
    let redactor = Redactor::from_process_env_using(&run.scanner, &spec.settings.secret_env);
    let change = match ctx.changes.take(attempt) {
        Some(c) => c,
        None => match change::summarize(&ctx.git, &ctx.worktree(attempt), &run.scanner).await {
            Ok(c) => c,
            // git's message may quote a path of the change.
            Err(e) => return failed(redactor.redact(&format!("could not read the change: {e}"))),
        },
    };
    let redactor = redactor.with(change.secret_values());
    let spent = ctx
        .store
        .run(&attempt.run)
        .await
        .ok()
        .flatten()
        .map_or(0.0, |r| r.spent_usd);
    let mut input = change.merge_input(
        serde_json::json!({
            "id": task.id, "type": task.kind.as_str(), "title": task.title,
            "labels": task.labels, "paths": task.paths,
        }),
        &spec.profile,
        task.gates
            .iter()
            .map(|g| serde_json::json!({ "name": g, "passed": true }))
            .collect(),
        spent,
        |t| redactor.redact(t),
    );
    if let (Some(obj), Some(r)) = (input.as_object_mut(), last_review(ctx, attempt).await) {
        obj.insert("review".into(), r);
    }
    let measured = ctx.measures.merged(attempt);
    let before = crate::baseline::measured(ctx, spec, task, attempt).await;
    let scripts = gate_scripts(spec, task);
    let evidence =
        abo_policy::measure::evidence(&measured, before.as_ref(), &change.edits, &scripts);
    if let (Some(obj), Some(ev)) = (input.as_object_mut(), evidence.as_object()) {
        obj.extend(ev.clone());
        obj.insert(
            "thresholds".into(),
            spec.settings.policy.safety["quality"].clone(),
        );
    }
    // The input as evaluated, redacted, for `abo policy eval --input` (a report's text may quote
    // what the change holds).
    let stored = ctx
        .artifacts
        .put(redactor.redact(&input.to_string()).as_bytes())
        .ok();
    let decision = match run.policy.lock() {
        Ok(mut p) => p.evaluate(&input),
        Err(_) => return failed("the policy engine is unavailable".into()),
    };
    // The reasons quote paths and link targets: they reach events, the store and the terminal
    // only through the run's redactor, which holds the change's secret values too.
    let redacted = |reasons: Vec<String>| -> Vec<String> {
        reasons.iter().map(|r| redactor.redact(r)).collect()
    };
    match decision {
        Ok(d) => PolicyOutcome {
            input: stored,
            verdict: d.verdict,
            deny: redacted(d.deny),
            require_approval: redacted(d.require_approval),
            risk: d.risk,
            duration_us: u64::try_from(d.duration.as_micros()).unwrap_or(u64::MAX),
            error: None,
            secrets: change.secrets.len(),
        },
        Err(e) => failed(redactor.redact(&e.to_string())),
    }
}

/// The files the task's gates run, as their commands name them (`./scripts/test.sh`, `bash ci.sh`,
/// `python run_tests.py`, `make -f test.mk`): a change to them changes what judges it.
fn gate_scripts(spec: &RunSpec, task: &TaskSpec) -> Vec<String> {
    let mut out: Vec<String> = task
        .gates
        .iter()
        .filter_map(|g| spec.settings.gate(g))
        .flat_map(|g| {
            g.run
                .split([' ', '\t', '\n', ';', '&', '|', '(', ')'])
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|t| {
            t.trim_matches(['"', '\''])
                .trim_start_matches("./")
                .to_owned()
        })
        .filter(|t| {
            !t.is_empty()
                && !t.starts_with('-')
                && !t.starts_with('/')
                && !t.contains("..")
                && (t.contains('/')
                    || t.rsplit_once('.').is_some_and(|(_, e)| {
                        matches!(e, "sh" | "py" | "js" | "mk" | "bash" | "ps1" | "rb" | "pl")
                    }))
        })
        .collect();
    if task
        .gates
        .iter()
        .filter_map(|g| spec.settings.gate(g))
        .any(|g| g.run.contains("make"))
    {
        out.push("Makefile".into());
    }
    out.sort();
    out.dedup();
    out
}

/// Re-stores an artifact with `redactor` applied (a secret found after it was stored).
fn restore_redacted(ctx: &Ctx, id: &mut Option<abo_core::ids::ArtifactId>, redactor: &Redactor) {
    let Some(old) = id.clone() else { return };
    let Ok(bytes) = ctx.artifacts.get(&old) else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let clean = redactor.redact(&text);
    if clean != text
        && let Ok(new) = ctx.artifacts.put(clean.as_bytes())
    {
        let _ = std::fs::remove_file(ctx.artifacts.path(&old));
        *id = Some(new);
    }
}

/// Creates the attempt's worktree from the run branch's head, runs the backend in it, and counts
/// what it changed. A failure of any step fails the attempt, with the reason.
/// How an attempt runs: its backend, the previous attempt's feedback, its reservation.
struct Attempt<'a> {
    backend: &'a BackendSpec,
    feedback: Option<&'a Feedback>,
    reserved: abo_core::budget::Reservation,
}

async fn start_attempt(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &RunPolicy,
    task: &TaskSpec,
    attempt: &AttemptId,
    how: Attempt<'_>,
) -> (BackendOutcome, Vec<String>) {
    let backend = how.backend;
    let started = Instant::now();
    let fail = |reason: String| {
        let o = BackendOutcome {
            failure: Some(reason),
            duration_ms: ms(started.elapsed()),
            ..Default::default()
        };
        (o, Vec::new())
    };
    let wt = ctx.worktree(attempt);
    let scratch = ctx.scratch(attempt);
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return fail(format!("could not create {}: {e}", scratch.display()));
    }
    // From the run branch as git reads it while adding the worktree (one git process); what went
    // wrong is looked into only when it fails.
    let start = format!("refs/heads/{}", spec.branch);
    if let Err(e) = ctx
        .git
        .add_worktree_pooled(&ctx.worktree_pool(), &wt, &attempt.branch(), &start)
        .await
    {
        return match ctx.git.branch_head(&spec.branch).await {
            Ok(None) => fail(format!("the run branch {} is missing", spec.branch)),
            Err(e) => fail(format!("could not read the run branch: {e}")),
            Ok(Some(_)) => fail(format!("could not create the worktree: {e}")),
        };
    }
    let redactor = Redactor::from_process_env_using(&run.scanner, &spec.settings.secret_env);
    let checker = in_attempt::InAttempt {
        ctx,
        spec,
        run,
        task,
        attempt,
    };
    let job = backends::Job {
        ctx,
        settings: &spec.settings,
        task,
        attempt,
        backend,
        worktree: &wt,
        scratch: &scratch,
        env: attempt_env(spec, task, attempt, &wt),
        feedback: how.feedback.map(|f| feedback_text(ctx, f)),
        redactor: &redactor,
        reserved: how.reserved,
        checker: Some(&checker),
    };
    let cached = if spec.settings.cache && backend.priced() {
        crate::cache::reuse(ctx, task, backend, attempt, &wt, &scratch).await
    } else {
        None
    };
    // Only `git apply --3way` wrote to the worktree: the index holds the whole change.
    let applied = cached.is_some() || matches!(backend, BackendSpec::Patch { .. });
    let backends::Produced {
        mut outcome,
        warnings,
    } = match cached {
        Some((key, source)) => backends::Produced {
            outcome: BackendOutcome {
                message: Some(format!("reused the result of attempt {source} (cache)")),
                duration_ms: ms(started.elapsed()),
                cached: Some((key, source)),
                ..Default::default()
            },
            warnings: Vec::new(),
        },
        None => backends::produce(&job).await,
    };
    // What the backend changed: how many files, and the secrets it wrote, which never reach an
    // artifact (its log and transcript are redacted).
    // Nothing but abo's git writes the worktree from here on when only git wrote it, or when
    // every process of the attempt ran in a PID namespace (they all ended with the backend).
    let quiet = applied || recycled(spec) > 0;
    let read = if applied && outcome.failure.is_none() {
        change::summarize_staged(&ctx.git, &wt, &run.scanner).await
    } else {
        change::summarize(&ctx.git, &wt, &run.scanner).await
    };
    match read {
        Ok(change) => {
            if outcome.failure.is_none() {
                if change.files.is_empty() {
                    // An agent that asked instead of changing anything waits for the answer.
                    let transcript = outcome
                        .transcript
                        .as_ref()
                        .and_then(|id| ctx.artifacts.get(id).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    match crate::question::find(&transcript, outcome.message.as_deref()) {
                        Some(q) => outcome.question = Some(q),
                        None => outcome.failure = Some("the backend made no change".to_owned()),
                    }
                } else {
                    outcome.files_changed = u32::try_from(change.files.len()).unwrap_or(u32::MAX);
                    outcome.lines_changed = change.lines_added + change.lines_removed;
                }
            }
            if !change.secrets.is_empty() {
                let redactor = redactor.with(change.secret_values());
                restore_redacted(ctx, &mut outcome.log, &redactor);
                restore_redacted(ctx, &mut outcome.transcript, &redactor);
                outcome.message = outcome.message.map(|m| redactor.redact(&m));
            }
            if !change.gitlinks
                && let Some(head) = ctx.git.head_in_files(&wt)
            {
                // What the diff found changed, which git looked at every file for: the rest is
                // as the index records it, for the commit to be told (`git::fsmonitor`).
                let changed = quiet.then(|| {
                    change
                        .files
                        .iter()
                        .map(|f| f.path.clone().into_bytes())
                        .collect()
                });
                ctx.staged.put(attempt, head, changed);
            }
            ctx.changes.put(attempt, change);
        }
        Err(e) if outcome.failure.is_none() => {
            outcome.failure = Some(format!("could not read the worktree's changes: {e}"));
        }
        Err(_) => {}
    }
    (outcome, warnings)
}

async fn run_gate(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &RunPolicy,
    attempt: &AttemptId,
    name: &GateName,
    stage: GateStage,
    candidate: Option<&CommitSha>,
) -> GateOutcome {
    let started = Instant::now();
    let mut outcome = GateOutcome {
        name: name.clone(),
        passed: false,
        exit: None,
        timed_out: false,
        duration_ms: 0,
        runs: 0,
        log: None,
        figures: None,
    };
    let (Some(gate), Some(task)) = (
        spec.settings.gate(name),
        spec.tasks.iter().find(|t| t.id == attempt.task),
    ) else {
        return outcome;
    };
    let dir = match (stage, candidate) {
        (GateStage::Merged, Some(c)) => {
            let dir = ctx.merged_worktree(attempt);
            let at = ctx.git.run_in(&dir, &["rev-parse", "HEAD"]).await.ok();
            if at.as_deref().map(str::trim) != Some(c.as_str())
                && let Err(e) = ctx.git.add_detached_worktree(&dir, c).await
            {
                outcome.log = ctx
                    .artifacts
                    .put(format!("could not create the merged worktree: {e}\n").as_bytes())
                    .ok();
                return outcome;
            }
            dir
        }
        _ => ctx.worktree(attempt),
    };
    let scratch = ctx.scratch(attempt);
    let _ = std::fs::create_dir_all(&scratch);
    let log = scratch.join(format!(
        "gate-{name}-{}.log",
        if stage == GateStage::Merged {
            "merged"
        } else {
            "attempt"
        }
    ));
    let _ = std::fs::remove_file(&log);
    let mut env = attempt_env(spec, task, attempt, &dir);
    // The change as a diff against the tree it started from, for tools that work on the changed
    // lines only (`cargo mutants --in-diff "$ABO_CHANGE_DIFF"`, `diff-cover`).
    let diff = scratch.join(format!("change-{name}.diff"));
    if let Ok(text) = ctx
        .git
        .run_in(
            &dir,
            &[
                "diff",
                "HEAD",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
            ],
        )
        .await
        && std::fs::write(&diff, text).is_ok()
    {
        env.push((
            "ABO_CHANGE_DIFF".into(),
            diff.to_string_lossy().into_owned(),
        ));
    }
    // A report left in the worktree before the gate is not the gate's.
    crate::measure::clear(&ctx.git, &dir, &gate.reports).await;
    let rules = crate::sandbox::confined_rules(ctx, &spec.settings.sandbox);
    // The tests that failed in runs before the last (from their reports), and whether any failed.
    let mut failed_before: Vec<String> = Vec::new();
    let mut any_failed = false;
    for run in 1..=gate.retries + 1 {
        if run > 1 {
            let _ = append(
                &log,
                &format!(
                    "\n--- abo: run {run} of gate `{name}` (retries: {}) ---\n",
                    gate.retries
                ),
            );
        }
        outcome.runs = run;
        let label = format!("gate-{name}-{run}");
        let Some(ran) = gate_once(ctx, spec, gate, &dir, &scratch, &env, &log, &label).await else {
            break;
        };
        (outcome.passed, outcome.exit, outcome.timed_out) = (ran.passed, ran.exit, ran.timed_out);
        if outcome.passed || run == gate.retries + 1 {
            break;
        }
        // Another run comes: what this one's reports name as failed, then a clean slate.
        any_failed = true;
        let text = crate::artifacts::read_log(&log);
        let (m, _) = crate::measure::collect(
            &dir,
            &gate.reports,
            &rules,
            crate::measure::last_run(&text),
            false,
        );
        failed_before.extend(m.failed_names());
        crate::measure::clear(&ctx.git, &dir, &gate.reports).await;
    }
    outcome.duration_ms = ms(started.elapsed());
    let text = crate::artifacts::read_log(&log);
    // What the gate measured: its reports (then removed, so that they are no part of the change),
    // or its runner's summary lines.
    let (mut measured, report_texts) = crate::measure::collect(
        &dir,
        &gate.reports,
        &rules,
        crate::measure::last_run(&text),
        outcome.passed,
    );
    // Failed, then passed on the same tree: flaky. The tests that failed first are recorded (the
    // gate's name when it has no JUnit report).
    let mut flaky = None;
    if outcome.passed && any_failed {
        failed_before.sort();
        failed_before.dedup();
        if failed_before.is_empty() {
            failed_before.push(format!("(gate {name})"));
        }
        flaky = Some(failed_before);
    }
    // A quarantined gate whose every failed test is known flaky: retried, reported, not failed.
    if !outcome.passed && gate.quarantine && !outcome.timed_out {
        let failed = measured.failed_names();
        let known: Vec<String> = ctx
            .store
            .flaky_tests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.gate == name.as_str())
            .map(|f| f.test)
            .collect();
        if !failed.is_empty() && failed.iter().all(|t| known.contains(t)) {
            outcome.passed = true;
            let _ = append(
                &log,
                &format!(
                    "\n--- abo: gate `{name}` quarantined: its failed tests are known flaky ({}) ---\n",
                    failed.join(", ")
                ),
            );
            measured.quarantined = failed;
            // The failures are reported through `quarantined`, not as a report disagreeing.
            measured.problems.clear();
        }
    }
    let text = crate::artifacts::read_log(&log);
    crate::measure::clear(&ctx.git, &dir, &gate.reports).await;
    // A gate may print what the change holds: secrets in it are redacted from the log.
    let mut redactor = Redactor::from_process_env_using(&run.scanner, &spec.settings.secret_env);
    let change = change::summarize(&ctx.git, &dir, &run.scanner).await;
    let in_attempt = stage != GateStage::Merged;
    if in_attempt {
        // The gate may have changed the worktree: what was read before it is stale.
        ctx.changes.take(attempt);
        ctx.staged.take(attempt);
    }
    if let Ok(change) = change {
        redactor = redactor.with(change.secret_values());
        if in_attempt {
            ctx.changes.put(attempt, change);
        }
    }
    outcome.log = ctx.artifacts.put(redactor.redact(&text).as_bytes()).ok();
    let stored = report_texts
        .iter()
        .filter_map(|t| ctx.artifacts.put(redactor.redact(t).as_bytes()).ok())
        .collect();
    outcome.figures = crate::measure::figures(&measured, stored);
    if let Some(names) = flaky {
        outcome.figures.get_or_insert_with(Default::default).flaky = Some(names);
    }
    if in_attempt {
        ctx.measures.put(attempt, name, measured);
    }
    outcome
}

/// How one run of a gate's command ended.
pub(crate) struct Ran {
    pub passed: bool,
    pub exit: Option<i32>,
    pub timed_out: bool,
}

/// One run of a gate's command in `dir`, in its sandbox, its output appended to `log`; `None` when
/// the sandbox could not be set up (the reason is in the log).
#[allow(
    clippy::too_many_arguments,
    reason = "a gate run's places and names, all needed"
)]
pub(crate) async fn gate_once(
    ctx: &Ctx,
    spec: &RunSpec,
    gate: &abo_core::spec::GateSpec,
    dir: &Path,
    scratch: &Path,
    env: &[(String, String)],
    log: &Path,
    label: &str,
) -> Option<Ran> {
    let mut p = process_spec(&gate.run, dir, env.to_vec(), gate.timeout_ms, log);
    match crate::sandbox::wrap(
        ctx,
        &spec.settings.sandbox,
        crate::sandbox::Role::Gate,
        dir,
        scratch,
        label,
        env.to_vec(),
    ) {
        Ok(sb) => p.sandbox = sb,
        Err(e) => {
            let _ = append(log, &format!("abo: sandbox: {e}\n"));
            return None;
        }
    }
    let mut ran = Ran {
        passed: false,
        exit: None,
        timed_out: false,
    };
    match process::run(&p, &ctx.groups).await {
        Ok(o) => {
            ran = Ran {
                passed: o.success(),
                exit: o.exit,
                timed_out: o.timed_out,
            };
            if o.timed_out {
                let _ = append(
                    log,
                    &format!(
                        "\n--- abo: gate `{}` {} ---\n",
                        gate.name,
                        o.describe(p.timeout)
                    ),
                );
            }
        }
        Err(e) => {
            let _ = append(log, &format!("could not run the gate: {e}\n"));
        }
    }
    Some(ran)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Commits the attempt and lands it on the run branch.
async fn land(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
) -> Result<LandOutcome, String> {
    let (commit, base) = commit_attempt_on(ctx, task, attempt).await?;
    land_commit_on(ctx, spec, task, attempt, &commit, &base).await
}

/// Commits the attempt in its worktree (once: a commit already made for it is reused) and
/// remembers its change in the result cache.
pub(crate) async fn commit_attempt(
    ctx: &Ctx,
    task: &TaskSpec,
    attempt: &AttemptId,
) -> Result<CommitSha, String> {
    Ok(commit_attempt_on(ctx, task, attempt).await?.0)
}

/// [`commit_attempt`], with the commit the attempt's commit was made on.
async fn commit_attempt_on(
    ctx: &Ctx,
    task: &TaskSpec,
    attempt: &AttemptId,
) -> Result<(CommitSha, CommitSha), String> {
    let wt = ctx.worktree(attempt);
    let git = &ctx.git;
    let message = || {
        let mut message = vec![task.title.clone()];
        if !task.description.trim().is_empty() {
            message.push(task.description.trim().to_owned());
        }
        message.push(format!(
            "Abo-Run: {}\nAbo-Task: {}\nAbo-Attempt: {}",
            attempt.run, task.id, attempt.attempt
        ));
        message
    };
    // Read and staged by this process just now, on the commit still checked out: committed as
    // staged, in one git process.
    if let Some((on, changed)) = ctx.staged.take(attempt)
        && git.head_in_files(&wt).as_ref() == Some(&on)
    {
        // Nothing but abo's git wrote the worktree since the read found what changed: the commit
        // is told so (`git::fsmonitor`), and looks at nothing else.
        let _vouched = changed.map(|c| git.vouch(&wt, &c));
        let commit = git
            .commit_tracked(&wt, &on, &message())
            .await
            .map_err(|e| format!("could not commit the attempt: {e}"))?;
        crate::cache::record(ctx, attempt, &on, &commit).await;
        return Ok((commit, on));
    }
    // The worktree's commit, its parent and its trailers, read at once.
    let (head, parent, trailers) = git
        .head_of(&wt)
        .await
        .map_err(|e| format!("landing failed: {e}"))?;
    // A commit this attempt made already (abo stopped between commit and landing): its own run's
    // trailers, never another run's commit for the same task that the base may hold.
    let already = trailers.is(&attempt.run, &task.id) && trailers.attempt == Some(attempt.attempt);
    let (commit, base) = if already {
        let base = parent.ok_or_else(|| format!("landing failed: {head} has no parent"))?;
        (head, base)
    } else {
        let commit = git
            .commit_all(&wt, &message())
            .await
            .map_err(|e| format!("could not commit the attempt: {e}"))?;
        (commit, head)
    };
    crate::cache::record(ctx, attempt, &base, &commit).await;
    Ok((commit, base))
}

/// Lands a committed attempt on the run branch: fast-forward when the branch has not moved since
/// the attempt started, else a merged candidate (gated before the branch moves, per
/// `landing.gates_after_merge`).
pub(crate) async fn land_commit(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    commit: &CommitSha,
) -> Result<LandOutcome, String> {
    let base = ctx
        .git
        .rev_parse(&format!("{commit}^"))
        .await
        .map_err(|e| format!("landing failed: {e}"))?;
    land_commit_on(ctx, spec, task, attempt, commit, &base).await
}

/// [`land_commit`] of a commit made on `base`: the commit itself when the run branch is still at
/// `base`, else a merged candidate. The run branch, its keeper ref and the attempt's own branch
/// then move in one `update-ref` transaction that checks each is still where it was read (the
/// branch and keeper read from git's files: one git process in all); when that cannot be done or
/// fails, the branch and the keeper are read and judged one by one ([`move_run_branch`]).
async fn land_commit_on(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    commit: &CommitSha,
    base: &CommitSha,
) -> Result<LandOutcome, String> {
    let git = &ctx.git;
    let failed = |e: crate::git::GitError| format!("landing failed: {e}");
    let run_head = run_head(ctx, spec).await?;
    let target = if run_head == *base {
        commit.clone()
    } else {
        let tree = match git
            .merge_tree(base, &run_head, commit)
            .await
            .map_err(failed)?
        {
            Ok(tree) => tree,
            Err(conflicts) => return Ok(conflicted(&conflicts)),
        };
        let candidate = git
            .commit_tree_like(&tree, &run_head, commit)
            .await
            .map_err(failed)?;
        if spec.settings.landing.gates_after_merge && !task.gates.is_empty() {
            git.add_detached_worktree(&ctx.merged_worktree(attempt), &candidate)
                .await
                .map_err(|e| format!("could not create the merged worktree: {e}"))?;
            return Ok(LandOutcome::Merged { candidate });
        }
        candidate
    };
    let own = [(format!("refs/heads/{}", attempt.branch()), commit.clone())];
    Ok(
        match move_landed(ctx, spec, attempt, &run_head, &target, &own).await? {
            Ok(()) => LandOutcome::Landed { commit: target },
            Err(o) => o,
        },
    )
}

/// The run branch's head, as git's files hold it (no git process), or as git reads it when they
/// cannot tell.
async fn run_head(ctx: &Ctx, spec: &RunSpec) -> Result<CommitSha, String> {
    let branch = format!("refs/heads/{}", spec.branch);
    match ctx.git.ref_in_files(&branch) {
        Some(head) => head,
        None => ctx
            .git
            .branch_head(&spec.branch)
            .await
            .map_err(|e| format!("landing failed: {e}"))?,
    }
    .ok_or_else(|| format!("the run branch {} is missing", spec.branch))
}

fn conflicted(conflicts: &[String]) -> LandOutcome {
    LandOutcome::Failed {
        reason: format!(
            "the change conflicts with the run branch in: {}",
            conflicts.join(", ")
        ),
        log: None,
    }
}

/// Moves the run branch from `old` to `new`. When nothing checked out has the branch and its
/// keeper is where the branch is (or not made yet), the branch and the keeper move and `deletes`
/// (the attempts' own branches: each where it is expected) are deleted in one `update-ref` transaction that
/// checks each is still where it was read; when that cannot be done or fails, the branch and the
/// keeper are read and judged one by one ([`move_run_branch`]).
async fn move_landed(
    ctx: &Ctx,
    spec: &RunSpec,
    attempt: &AttemptId,
    old: &CommitSha,
    new: &CommitSha,
    deletes: &[(String, CommitSha)],
) -> Result<Result<(), LandOutcome>, String> {
    let git = &ctx.git;
    let branch = format!("refs/heads/{}", spec.branch);
    let keeper = keeper_ref(&attempt.run);
    let zero = CommitSha::new("0".repeat(old.as_str().len()));
    let keeper_at = match git.ref_in_files(&keeper) {
        Some(Some(k)) if k == *old => Some(k),
        Some(None) => Some(zero),
        _ => None,
    };
    if let Some(keeper_at) = keeper_at
        && git.is_checked_out(&spec.branch) == Some(false)
    {
        let moves = [
            (branch.as_str(), new, old),
            (keeper.as_str(), new, &keeper_at),
        ];
        let deletes: Vec<(&str, &CommitSha)> =
            deletes.iter().map(|(r, c)| (r.as_str(), c)).collect();
        if git
            .move_refs("abo: land", &moves, &deletes)
            .await
            .map_err(|e| format!("landing failed: {e}"))?
        {
            return Ok(Ok(()));
        }
    }
    Ok(move_run_branch(ctx, spec, attempt, new, old).await)
}

/// Lands `attempts` in their order, none with gates on its merged result: their commits made side
/// by side in their worktrees, then each put on the one before. The first is its own commit when
/// the run branch is still where its attempt started; one whose paths nothing changed since its
/// attempt started (on the branch, or by those before it here) is replayed path by path, all of
/// them in one `git fast-import` ([`crate::git::chain`]: the tree `git merge-tree` would give);
/// any other is merged with `git merge-tree`. Then the run branch, its keeper and every attempt's
/// own branch move in one transaction ([`move_landed`]). An attempt that cannot be committed or
/// conflicts fails alone, and the next is put on what landed before it; when the branch cannot
/// move, every attempt that got that far shares the outcome.
async fn land_together(
    ctx: &Ctx,
    spec: &RunSpec,
    attempts: &[AttemptId],
) -> Vec<(AttemptId, LandOutcome)> {
    use crate::git::chain::{PathChange, Touched};
    let failed = |reason: String| LandOutcome::Failed { reason, log: None };
    let git = &ctx.git;
    let commits = futures_util::future::join_all(attempts.iter().map(|a| async move {
        let task = spec
            .tasks
            .iter()
            .find(|t| t.id == a.task)
            .ok_or_else(|| format!("task `{}` is not in the run", a.task))?;
        commit_attempt_on(ctx, task, a).await
    }))
    .await;
    let mut outcomes: Vec<Option<LandOutcome>> = vec![None; attempts.len()];
    let all = |o: LandOutcome| attempts.iter().cloned().zip(std::iter::repeat(o)).collect();
    let run_head = match run_head(ctx, spec).await {
        Ok(h) => h,
        Err(reason) => return all(failed(reason)),
    };
    let mut made = Vec::new();
    for (i, c) in commits.into_iter().enumerate() {
        match c {
            Ok((commit, base)) => made.push((i, commit, base)),
            Err(reason) => outcomes[i] = Some(failed(reason)),
        }
    }
    if made.is_empty() {
        return attempts
            .iter()
            .cloned()
            .zip(outcomes.into_iter().flatten())
            .collect();
    }
    // What each commit changes and what changed on the branch since each base (one git process),
    // and the commits' authors and messages (one more). Without the first, every one is merged.
    let mut bases: Vec<CommitSha> = made.iter().map(|(_, _, b)| b.clone()).collect();
    bases.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    bases.dedup();
    bases.retain(|b| *b != run_head);
    let mut pairs: Vec<(CommitSha, CommitSha)> = made
        .iter()
        .map(|(_, c, b)| (c.clone(), b.clone()))
        .collect();
    pairs.extend(bases.iter().map(|b| (run_head.clone(), b.clone())));
    let mut changes = git.changes(&pairs).await.ok();
    let since: std::collections::HashMap<CommitSha, Touched> = match &changes {
        Some(ch) => bases
            .iter()
            .zip(&ch[made.len()..])
            .map(|(b, c)| {
                let mut t = Touched::default();
                t.add(c);
                (b.clone(), t)
            })
            .collect(),
        None => Default::default(),
    };
    let shas: Vec<CommitSha> = made.iter().map(|(_, c, _)| c.clone()).collect();
    let authors = match git.authors(&shas).await {
        Ok(a) => a,
        Err(e) => return all(failed(format!("landing failed: {e}"))),
    };
    let scratch = format!("refs/abo/landing/{}", spec.branch);
    let mut head = run_head.clone();
    let mut here = Touched::default();
    let mut own = Vec::new();
    let mut landed = Vec::new();
    // Replayed together once something needs merging, or at the end.
    let mut replay: Vec<(usize, usize, Vec<PathChange>)> = Vec::new();
    let mut scratch_at = None;
    let mut k = 0;
    loop {
        let next = made.get(k);
        // Its own commit, when the branch is still where it started and nothing is before it.
        let first = next.is_some_and(|(_, _, base)| *base == head)
            && landed.is_empty()
            && replay.is_empty();
        let clear = next.filter(|_| !first).and_then(|(_, _, base)| {
            let mine = changes.as_ref()?.get(k)?;
            let before = since.get(base);
            (before.is_none_or(|t| t.clear_of(mine)) && here.clear_of(mine)).then(|| mine.clone())
        });
        if let Some(mine) = clear {
            here.add(&mine);
            replay.push((made[k].0, k, mine));
            k += 1;
            continue;
        }
        if !replay.is_empty() {
            let group: Vec<(&crate::git::Authored, &[PathChange])> = replay
                .iter()
                .map(|(_, m, c)| (&authors[*m], c.as_slice()))
                .collect();
            match git.chain(&head, &group, &scratch).await {
                Ok(chained) => {
                    for ((i, m, _), target) in replay.drain(..).zip(chained) {
                        own.push((attempts[i].branch(), made[m].1.clone()));
                        landed.push((i, target.clone()));
                        scratch_at = Some(target.clone());
                        head = target;
                    }
                }
                // Merged one by one instead.
                Err(_) => {
                    for (i, m, _) in std::mem::take(&mut replay) {
                        let (_, commit, base) = &made[m];
                        match merged_onto(ctx, base, &head, commit, &authors[m]).await {
                            Ok(target) => {
                                own.push((attempts[i].branch(), commit.clone()));
                                landed.push((i, target.clone()));
                                head = target;
                            }
                            Err(o) => outcomes[i] = Some(o),
                        }
                    }
                }
            }
        }
        let Some((i, commit, base)) = next else { break };
        let i = *i;
        let target = if first {
            Ok(commit.clone())
        } else {
            merged_onto(ctx, base, &head, commit, &authors[k]).await
        };
        match target {
            Ok(target) => {
                if let Some(ch) = changes.as_ref().and_then(|ch| ch.get(k)) {
                    here.add(ch);
                } else {
                    // What it changed is not known: whatever follows is merged.
                    changes = None;
                }
                own.push((attempts[i].branch(), commit.clone()));
                landed.push((i, target.clone()));
                head = target;
            }
            Err(o) => outcomes[i] = Some(o),
        }
        k += 1;
    }
    if let Some((first, _)) = landed.first() {
        let mut deletes: Vec<(String, CommitSha)> = own
            .into_iter()
            .map(|(b, c)| (format!("refs/heads/{b}"), c))
            .collect();
        deletes.extend(scratch_at.map(|at| (scratch.clone(), at)));
        let moved = move_landed(ctx, spec, &attempts[*first], &run_head, &head, &deletes).await;
        if !matches!(moved, Ok(Ok(()))) {
            let _ = git.run(&["update-ref", "-d", &scratch]).await;
        }
        for (i, target) in landed {
            outcomes[i] = Some(match &moved {
                Ok(Ok(())) => LandOutcome::Landed { commit: target },
                Ok(Err(o)) => o.clone(),
                Err(reason) => failed(reason.clone()),
            });
        }
    }
    attempts
        .iter()
        .cloned()
        .zip(
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| failed("not landed".into()))),
        )
        .collect()
}

/// `commit` (made on `base`) merged onto `head` as a commit like it, or why it cannot be.
async fn merged_onto(
    ctx: &Ctx,
    base: &CommitSha,
    head: &CommitSha,
    commit: &CommitSha,
    like: &crate::git::Authored,
) -> Result<CommitSha, LandOutcome> {
    let failed = |e: crate::git::GitError| LandOutcome::Failed {
        reason: format!("landing failed: {e}"),
        log: None,
    };
    match ctx
        .git
        .merge_tree(base, head, commit)
        .await
        .map_err(failed)?
    {
        Ok(tree) => ctx
            .git
            .commit_tree_as(&tree, head, like)
            .await
            .map_err(failed),
        Err(conflicts) => Err(conflicted(&conflicts)),
    }
}

/// The ref that keeps a run's landed commits reachable whatever happens to its branch: it moves
/// with the branch, and `abo resume` restores a branch that lost commits from it.
pub fn keeper_ref(run: &abo_core::ids::RunId) -> String {
    format!("refs/abo/runs/{run}")
}

/// Moves the run branch from `old` to `new` by compare-and-swap, then its keeper ref; never a
/// branch some working tree has checked out, nor one that lost commits abo landed (the run pauses
/// with the reason and what to do: `LandOutcome::Blocked`).
async fn move_run_branch(
    ctx: &Ctx,
    spec: &RunSpec,
    attempt: &AttemptId,
    new: &CommitSha,
    old: &CommitSha,
) -> Result<(), LandOutcome> {
    let git = &ctx.git;
    let branch = &spec.branch;
    let run = &attempt.run;
    let failed = |e: crate::git::GitError| LandOutcome::Failed {
        reason: format!("landing failed: {e}"),
        log: None,
    };
    if let Some(wt) = git.checked_out_in(branch).await.map_err(failed)?.first() {
        return Err(LandOutcome::Blocked {
            reason: checked_out_reason(branch, wt, run),
        });
    }
    let keeper = keeper_ref(run);
    if let Some(kept) = git.ref_head(&keeper).await.map_err(failed)?
        && !git.is_ancestor(&kept, old).await.map_err(failed)?
    {
        return Err(LandOutcome::Blocked {
            reason: format!(
                "{branch} lost commits abo landed (it no longer holds {kept}), so abo lands nothing on it; abo resume {run} restores it"
            ),
        });
    }
    git.advance_branch(branch, new, old).await.map_err(failed)?;
    git.set_ref(&keeper, new).await.map_err(failed)?;
    Ok(())
}

/// Why the run branch cannot move while `wt` has it checked out, and how to get out of it.
pub fn checked_out_reason(branch: &str, wt: &Path, run: &abo_core::ids::RunId) -> String {
    format!(
        "{branch} is checked out in {wt}, and abo never moves a checked-out branch: switch that working tree to another branch (git -C {wt} switch --detach), then abo resume {run}",
        wt = wt.display()
    )
}

async fn advance(
    ctx: &Ctx,
    spec: &RunSpec,
    attempt: &AttemptId,
    candidate: &CommitSha,
) -> LandOutcome {
    let result = match ctx.git.rev_parse(&format!("{candidate}^")).await {
        Ok(parent) => move_run_branch(ctx, spec, attempt, candidate, &parent).await,
        Err(e) => Err(LandOutcome::Failed {
            reason: format!("landing failed: {e}"),
            log: None,
        }),
    };
    let _ = ctx.git.remove_worktree(&ctx.merged_worktree(attempt)).await;
    match result {
        Ok(()) => LandOutcome::Landed {
            commit: candidate.clone(),
        },
        Err(LandOutcome::Failed { reason, log }) => LandOutcome::Failed {
            reason: format!("the run branch moved while landing: {reason}"),
            log,
        },
        Err(other) => other,
    }
}

async fn cleanup(
    ctx: &Ctx,
    attempt: &AttemptId,
    keep: bool,
    pool: usize,
) -> Result<(), crate::git::GitError> {
    ctx.changes.take(attempt);
    ctx.staged.take(attempt);
    ctx.git
        .remove_worktree(&ctx.merged_worktree(attempt))
        .await?;
    if !keep {
        ctx.git
            .recycle_worktree(&ctx.worktree(attempt), &ctx.worktree_pool(), pool)
            .await?;
        ctx.git.delete_branch(&attempt.branch()).await?;
        let _ = std::fs::remove_dir_all(ctx.scratch(attempt));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
