//! The control plane's side of many machines. What happens in an attempt's worktree
//! (the backend, the attempt's gates, the reviewer's reading of its change, the policy on it, its
//! commit, its cleanup) is posted to the store as a job for an `abo worker`; everything that
//! touches the run branch (landing, gates on a merged candidate, advancing, proofs, finishing)
//! stays here, one task at a time.
//!
//! An effect posted to a worker is awaited like a local one, so `engine::drive` and `decide` do not
//! know the difference. A job whose attempt lease is lost (the worker died, was cut off, or the run
//! was taken over) comes back as `Command::Interrupted`: the task is attempted again. A worker's
//! result counts only under the lease's fencing token, and the commit it pushes is fetched from
//! the ref named after that token, so a stale worker can never land anything.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use abo_core::budget::Reservation;
use abo_core::decide::{BackendOutcome, Command, Effect, GateOutcome, LandOutcome, PolicyOutcome};
use abo_core::event::{GateStage, Usage};
use abo_core::ids::{ArtifactId, AttemptId, CommitSha, GateName};
use abo_core::review::Review;
use abo_core::spec::{BackendSpec, RunSpec};
use abo_core::state::Feedback;
use abo_store::{JobKind, JobState, Store};

use crate::context::Ctx;
use crate::effects::{self, Done, RunPolicy};

/// How long an attempt lease lasts without a heartbeat (workers beat every third of it).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// What a job asks of a worker, besides its attempt.
#[allow(
    clippy::large_enum_variant,
    reason = "a message, built once per job and serialised at once"
)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    Start {
        backend: BackendSpec,
        feedback: Option<Feedback>,
        reserved: Reservation,
        /// The run branch's head the attempt starts from (pushed to the remote before).
        base: CommitSha,
    },
    Gate {
        gate: GateName,
    },
    Policy,
    /// The reviewer's verdict on the attempt's change: asked where the worktree is (its
    /// reservation and charge stay the control plane's, in `decide::review`).
    Review {
        reviewer: BackendSpec,
    },
    Commit,
    Cleanup {
        keep: bool,
    },
}

impl Work {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Start { .. } => JobKind::Start,
            Self::Gate { .. } => JobKind::Gate,
            Self::Policy => JobKind::Policy,
            Self::Review { .. } => JobKind::Review,
            Self::Commit => JobKind::Commit,
            Self::Cleanup { .. } => JobKind::Cleanup,
        }
    }
}

/// A worker's answer to a job.
#[allow(
    clippy::large_enum_variant,
    reason = "a message, built once per job and serialised at once"
)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Backend {
        outcome: BackendOutcome,
        warnings: Vec<String>,
    },
    Gate {
        outcome: GateOutcome,
    },
    Policy {
        outcome: PolicyOutcome,
    },
    /// The reviewer's answer (`Err`: no verdict that parses, or it could not be asked), its reply
    /// stored redacted, and what asking it used.
    Reviewed {
        outcome: Result<Review, String>,
        log: Option<ArtifactId>,
        usage: Option<Usage>,
        cost_usd: Option<f64>,
        cost_source: Option<String>,
    },
    /// The attempt's commit, pushed to the remote as `refname`.
    Committed {
        commit: CommitSha,
        refname: String,
    },
    Failed {
        reason: String,
    },
    Cleaned,
}

impl Reply {
    /// The artifacts the reply names (logs, transcripts, prompts).
    pub fn artifacts(&self) -> Vec<&ArtifactId> {
        match self {
            Self::Backend { outcome, .. } => [&outcome.log, &outcome.transcript, &outcome.prompt]
                .into_iter()
                .flatten()
                .collect(),
            Self::Gate { outcome } => outcome.log.iter().collect(),
            Self::Reviewed { log, .. } => log.iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// Copies artifacts between this machine and the shared store: `up` shares local ones, else
/// missing local ones are fetched. Best effort: a missing artifact only shortens what is shown.
pub async fn sync_artifacts(ctx: &Ctx, ids: &[&ArtifactId], up: bool) {
    for id in ids {
        let local = ctx.artifacts.path(id);
        if up {
            if let Ok(bytes) = ctx.artifacts.get(id) {
                let _ = ctx.store.artifact_put(id.as_str(), &bytes).await;
            }
        } else if !local.exists()
            && let Ok(Some(bytes)) = ctx.store.artifact_get(id.as_str()).await
        {
            let _ = ctx.artifacts.put(&bytes);
        }
    }
}

/// The ref a worker pushes an attempt's commit to: named by its fencing token, so that a stale
/// worker's push never overwrites the one the control plane lands.
pub fn attempt_ref(attempt: &AttemptId, token: i64) -> String {
    format!(
        "refs/abo/{}/{}/{}/{token}",
        attempt.run, attempt.task, attempt.attempt
    )
}

/// A control plane's connection to its workers.
#[derive(Debug)]
pub struct Shared {
    /// The git remote the workers clone and the run branch is pushed to.
    pub remote: String,
    /// Woken whenever a job result may have come in.
    results: Arc<Notify>,
}

impl Shared {
    /// Starts listening for job results (Postgres `LISTEN`; SQLite polls).
    pub async fn start(store: &Store, remote: &str) -> Result<Arc<Self>, abo_store::StoreError> {
        let results = Arc::new(Notify::new());
        let mut listener = store.listen(&[abo_store::RESULTS]).await?;
        let wake = Arc::clone(&results);
        tokio::spawn(async move {
            loop {
                // A missed notification costs at most a second.
                listener.wait(Duration::from_secs(1)).await;
                wake.notify_waiters();
            }
        });
        Ok(Arc::new(Self {
            remote: remote.to_owned(),
            results,
        }))
    }

    /// Posts `work` for the attempt and waits for its result: `Ok(result)`, or `Err(why it was
    /// lost)`.
    async fn run(&self, ctx: &Ctx, attempt: &AttemptId, work: &Work) -> Result<Reply, String> {
        let payload = serde_json::to_string(work).map_err(|e| e.to_string())?;
        let posted = ctx
            .store
            .post_job(
                &attempt.run,
                &attempt.task,
                attempt.attempt,
                work.kind(),
                &payload,
                ctx.now(),
            )
            .await;
        let id = match posted {
            Ok(Some(id)) => id,
            Ok(None) => return Err("no worker holds the attempt any more".into()),
            Err(e) => return Err(format!("could not post the job: {e}")),
        };
        loop {
            let woken = self.results.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match ctx.store.job_state(id).await {
                Ok(Some(JobState::Done { result, .. })) => {
                    let _ = ctx.store.delete_job(id).await;
                    let reply: Reply = serde_json::from_str(&result)
                        .map_err(|e| format!("the worker's result is malformed: {e}"))?;
                    // Its logs are readable here as on one machine (status, dashboard, feedback).
                    sync_artifacts(ctx, &reply.artifacts(), false).await;
                    return Ok(reply);
                }
                Ok(Some(JobState::Lost { reason })) => {
                    let _ = ctx.store.delete_job(id).await;
                    return Err(reason);
                }
                Ok(None) => return Err("the job disappeared from the store".into()),
                // Waiting, or the store is briefly unreachable: look again.
                Ok(Some(_)) | Err(_) => {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), woken).await;
        }
    }
}

/// Executes `effect` through a worker when it belongs in the attempt's worktree; `Err(effect)`
/// hands it back for this process to execute.
pub(crate) async fn execute(
    ctx: &Ctx,
    shared: &Shared,
    spec: &RunSpec,
    run: &RunPolicy,
    effect: Effect,
) -> Result<Done, Effect> {
    let interrupted = |attempt: &AttemptId, reason: String| {
        Done::command(Command::Interrupted {
            task: attempt.task.clone(),
            attempt: attempt.attempt,
            reason,
        })
    };
    let unexpected = |attempt: &AttemptId, r: Reply| {
        interrupted(attempt, format!("the worker answered out of turn: {r:?}"))
    };
    match effect {
        Effect::StartAttempt {
            attempt,
            backend,
            feedback,
            reserved,
        } => {
            let base = match ctx.git.branch_head(&spec.branch).await {
                Ok(Some(h)) => h,
                _ => {
                    return Ok(interrupted(
                        &attempt,
                        format!("the run branch {} is missing", spec.branch),
                    ));
                }
            };
            let work = Work::Start {
                backend,
                feedback,
                reserved,
                base,
            };
            Ok(match shared.run(ctx, &attempt, &work).await {
                Ok(Reply::Backend { outcome, warnings }) => Done {
                    command: Some(Command::BackendDone {
                        task: attempt.task.clone(),
                        attempt: attempt.attempt,
                        outcome,
                    }),
                    warnings,
                },
                Ok(r) => unexpected(&attempt, r),
                Err(why) => interrupted(&attempt, why),
            })
        }
        Effect::RunGate {
            attempt,
            gate,
            stage: GateStage::Attempt,
            candidate: None,
        } => Ok(
            match shared
                .run(ctx, &attempt, &Work::Gate { gate: gate.clone() })
                .await
            {
                Ok(Reply::Gate { outcome }) => Done::command(Command::GateDone {
                    task: attempt.task.clone(),
                    attempt: attempt.attempt,
                    stage: GateStage::Attempt,
                    outcome,
                    candidate: None,
                }),
                Ok(r) => unexpected(&attempt, r),
                Err(why) => interrupted(&attempt, why),
            },
        ),
        Effect::EvaluatePolicy { attempt } => {
            Ok(match shared.run(ctx, &attempt, &Work::Policy).await {
                Ok(Reply::Policy { outcome }) => Done::command(Command::PolicyDone {
                    task: attempt.task.clone(),
                    attempt: attempt.attempt,
                    outcome,
                }),
                Ok(r) => unexpected(&attempt, r),
                Err(why) => interrupted(&attempt, why),
            })
        }
        Effect::Review { attempt, reviewer } => {
            let name = reviewer.name().clone();
            Ok(
                match shared.run(ctx, &attempt, &Work::Review { reviewer }).await {
                    Ok(Reply::Reviewed {
                        outcome,
                        log,
                        usage,
                        cost_usd,
                        cost_source,
                    }) => Done::command(Command::ReviewDone {
                        task: attempt.task.clone(),
                        attempt: attempt.attempt,
                        reviewer: name,
                        outcome,
                        log,
                        usage,
                        cost_usd,
                        cost_source,
                    }),
                    Ok(r) => unexpected(&attempt, r),
                    Err(why) => interrupted(&attempt, why),
                },
            )
        }
        Effect::Land { attempt } => {
            let outcome = land_through_worker(ctx, shared, spec, &attempt).await;
            let mut done = match outcome {
                LandOutcome::Interrupted { reason } => return Ok(interrupted(&attempt, reason)),
                outcome => Done::command(Command::LandDone {
                    task: attempt.task.clone(),
                    attempt: attempt.attempt,
                    outcome,
                }),
            };
            publish_if_landed(ctx, shared, spec, &mut done).await;
            Ok(done)
        }
        // Each commit is a worker's: they land one after the other, and the branch is pushed once.
        Effect::LandTogether { attempts } => {
            let mut outcomes = Vec::new();
            for attempt in attempts {
                let outcome = land_through_worker(ctx, shared, spec, &attempt).await;
                outcomes.push((attempt.task, attempt.attempt, outcome));
            }
            let mut done = Done::command(Command::LandedTogether { outcomes });
            publish_if_landed(ctx, shared, spec, &mut done).await;
            Ok(done)
        }
        Effect::Advance { .. } => {
            let mut done = effects::execute_here(ctx, spec, run, effect).await;
            publish_if_landed(ctx, shared, spec, &mut done).await;
            Ok(done)
        }
        Effect::Cleanup { attempt, keep } => {
            let _ = ctx
                .git
                .remove_worktree(&ctx.merged_worktree(&attempt))
                .await;
            // The worker removes (or keeps) the worktree and ends its lease; a lost one has
            // nothing left to clean here.
            let _ = shared.run(ctx, &attempt, &Work::Cleanup { keep }).await;
            Ok(Done::default())
        }
        Effect::Stop { attempt } => {
            // The worker sees the attempt's lease end at its next heartbeat and stops it; the
            // cleanup is its work too.
            let mut done = Done::default();
            if let Err(e) = ctx
                .store
                .release_run(
                    &run.run,
                    Some((&attempt.task, attempt.attempt)),
                    "another candidate won",
                    ctx.now(),
                )
                .await
            {
                done.warnings.push(format!(
                    "could not stop the worker's attempt {attempt}: {e}"
                ));
            }
            let _ = ctx
                .git
                .remove_worktree(&ctx.merged_worktree(&attempt))
                .await;
            let _ = shared
                .run(ctx, &attempt, &Work::Cleanup { keep: false })
                .await;
            Ok(done)
        }
        Effect::KillAll => {
            // Workers see their leases end at their next heartbeat and stop the attempts.
            let mut done = effects::execute_here(ctx, spec, run, Effect::KillAll).await;
            if let Err(e) = ctx
                .store
                .release_run(&run.run, None, "the run was killed", ctx.now())
                .await
            {
                done.warnings
                    .push(format!("could not stop the workers' attempts: {e}"));
            }
            Ok(done)
        }
        other => Err(other),
    }
}

/// Fetches the worker's commit from the ref of its token, checks it is the one reported, and lands
/// it here.
/// The worker commits the attempt and pushes it; this process fetches it and lands it.
async fn land_through_worker(
    ctx: &Ctx,
    shared: &Shared,
    spec: &RunSpec,
    attempt: &AttemptId,
) -> LandOutcome {
    match shared.run(ctx, attempt, &Work::Commit).await {
        Ok(Reply::Committed { commit, refname }) => {
            land_pushed(ctx, shared, spec, attempt, &commit, &refname).await
        }
        Ok(Reply::Failed { reason }) => LandOutcome::Failed { reason, log: None },
        Ok(r) => LandOutcome::Interrupted {
            reason: format!("the worker answered out of turn: {r:?}"),
        },
        Err(reason) => LandOutcome::Interrupted { reason },
    }
}

async fn land_pushed(
    ctx: &Ctx,
    shared: &Shared,
    spec: &RunSpec,
    attempt: &AttemptId,
    commit: &CommitSha,
    refname: &str,
) -> LandOutcome {
    let failed = |reason: String| LandOutcome::Failed { reason, log: None };
    let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
        return failed("unknown task".into());
    };
    let spec_ref = format!("+{refname}:{refname}");
    if let Err(e) = ctx
        .git
        .run(&["fetch", "--quiet", "--no-tags", &shared.remote, &spec_ref])
        .await
    {
        return failed(format!("could not fetch the attempt's commit: {e}"));
    }
    match ctx.git.rev_parse(refname).await {
        Ok(c) if c == *commit => {}
        Ok(c) => {
            return failed(format!(
                "{refname} holds {c}, not the commit {commit} the worker reported"
            ));
        }
        Err(e) => return failed(format!("could not read {refname}: {e}")),
    }
    let outcome = effects::land_commit(ctx, spec, task, attempt, commit)
        .await
        .unwrap_or_else(failed);
    // The attempt's ref has served: it goes, here and on the remote.
    let _ = ctx.git.run(&["update-ref", "-d", refname]).await;
    let _ = ctx
        .git
        .run(&["push", "--quiet", &shared.remote, &format!(":{refname}")])
        .await;
    outcome
}

/// After the run branch moved, it is pushed so workers start their next attempts from it.
async fn publish_if_landed(ctx: &Ctx, shared: &Shared, spec: &RunSpec, done: &mut Done) {
    let landed = |o: &LandOutcome| matches!(o, LandOutcome::Landed { .. });
    let any = match &done.command {
        Some(Command::LandDone { outcome, .. }) => landed(outcome),
        Some(Command::LandedTogether { outcomes }) => outcomes.iter().any(|(_, _, o)| landed(o)),
        _ => false,
    };
    if any && let Err(e) = ctx.git.push(&shared.remote, &spec.branch).await {
        done.warnings.push(format!(
            "pushing {} to {} failed: workers start from an older head ({e})",
            spec.branch, shared.remote
        ));
    }
}
