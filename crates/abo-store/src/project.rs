//! Projections: how events change the `runs`, `tasks`, `router_stats`, `spend`, `review_spend`,
//! `approvals` and `alerts` tables. Used for live appends and for rebuilding from the log, so the two
//! cannot disagree.
//!
//! A batch of events is folded in memory first ([`Fold`]): each run, task and router arm it touches
//! gets one row of changes, and those rows go to the database in one [`Batch`] with the events
//! themselves, so an append costs the same few round-trips however many events it holds. The rare
//! writes no other event's projection reads or writes (a run's creation, spend, approvals, alerts,
//! kept worktrees) are made as their events come.

use std::collections::BTreeMap;

use sqlx::Row;

use abo_core::event::{EventBody, RetryCause, StoredEvent};
use abo_core::state::TaskStatus;

use crate::batch::{Arg, Batch};
use crate::{Dialect, StoreError, Tx, i64_of};

/// Task rows per multi-row insert when a run is created.
const TASK_CHUNK: usize = 500;

/// What a batch of events changes in one run's row.
#[derive(Default)]
struct RunChange<'a> {
    status: Option<&'static str>,
    /// `Some(None)` clears the reason.
    reason: Option<Option<&'a str>>,
    started_at: Option<i64>,
    /// `Some(None)` clears the finish time.
    finished_at: Option<Option<i64>>,
    spent_usd: f64,
    spent_tokens: i64,
    pull_request: Option<&'a str>,
    last_seq: Option<i64>,
}

/// What a batch of events changes in one task's row.
#[derive(Default)]
struct TaskChange<'a> {
    status: Option<TaskStatus>,
    reason: Option<Option<String>>,
    /// The highest attempt started.
    attempts: Option<i64>,
    backend: Option<&'a str>,
    cost_usd: f64,
    tokens: i64,
    commit: Option<&'a str>,
}

/// What a batch of events adds to a learned router arm.
#[derive(Default)]
struct ArmChange {
    attempts: i64,
    cost_usd: f64,
    duration_ms: i64,
    failed: i64,
    landed: i64,
}

/// Events folded into one change per row.
pub(crate) struct Fold<'a> {
    dialect: Dialect,
    runs: BTreeMap<&'a str, RunChange<'a>>,
    tasks: BTreeMap<(&'a str, &'a str), TaskChange<'a>>,
    /// Arm changes by run, task, and the backend the task had when its event happened: `None` is
    /// the one stored before this batch (the task started in an earlier one).
    arms: BTreeMap<(&'a str, &'a str, Option<&'a str>), ArmChange>,
}

impl<'a> Fold<'a> {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            runs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            arms: BTreeMap::new(),
        }
    }

    fn task(&mut self, run: &'a str, task: &'a str) -> &mut TaskChange<'a> {
        self.tasks.entry((run, task)).or_default()
    }

    fn status(&mut self, run: &'a str, task: &'a str, status: TaskStatus, reason: Option<String>) {
        let t = self.task(run, task);
        t.status = Some(status);
        t.reason = Some(reason);
    }

    /// The router arm of the task's (type, backend) as the task is now.
    fn arm(&mut self, run: &'a str, task: &'a str) -> &mut ArmChange {
        let backend = self.tasks.get(&(run, task)).and_then(|t| t.backend);
        self.arms.entry((run, task, backend)).or_default()
    }

    /// Folds one event in, writing at once what only it touches.
    pub(crate) async fn add(&mut self, tx: &mut Tx, e: &'a StoredEvent) -> Result<(), StoreError> {
        let run = e.event.run.as_str();
        let task = e
            .event
            .task
            .as_ref()
            .map(|t| t.as_str())
            .unwrap_or_default();
        let at = e.event.at.0;
        self.runs.entry(run).or_default().last_seq = Some(i64_of(e.seq));
        match &e.event.body {
            EventBody::RunCreated(spec) => {
                sqlx::query(
                    "INSERT INTO runs (id, title, status, branch, base, base_branch, profile, created_at, last_seq)
                     VALUES ($1, $2, 'planned', $3, $4, $5, $6, $7, $8)",
                )
                .bind(run)
                .bind(&spec.title)
                .bind(&spec.branch)
                .bind(spec.base.as_str())
                .bind(&spec.base_branch)
                .bind(&spec.profile)
                .bind(at)
                .bind(i64_of(e.seq))
                .execute(&mut **tx)
                .await?;
                let rows: Vec<Arg> = spec
                    .tasks
                    .iter()
                    .enumerate()
                    .flat_map(|(i, t)| {
                        let status = if t.skipped.is_some() {
                            TaskStatus::Skipped
                        } else {
                            TaskStatus::Pending
                        };
                        [
                            Arg::from(run),
                            t.id.as_str().into(),
                            i64_of(i as u64).into(),
                            t.title.as_str().into(),
                            t.kind.as_str().into(),
                            status.as_str().into(),
                            t.skipped.as_deref().into(),
                        ]
                    })
                    .collect();
                for chunk in rows.chunks(7 * TASK_CHUNK) {
                    let mut b = Batch::default();
                    b.part(
                        "nt",
                        "run, id, position, title, type, status, reason",
                        7,
                        chunk.to_vec(),
                        "INSERT INTO tasks (run, id, position, title, type, status, reason)
                         SELECT run, id, position, title, type, status, reason FROM nt",
                    );
                    b.execute(tx, self.dialect).await?;
                }
            }
            EventBody::RunStarted {} => {
                let r = self.runs.entry(run).or_default();
                r.status = Some("running");
                r.started_at = Some(at);
            }
            EventBody::RunPaused { reason } => {
                let r = self.runs.entry(run).or_default();
                r.status = Some("paused");
                r.reason = Some(Some(reason));
            }
            EventBody::RunResumed { .. } => {
                let r = self.runs.entry(run).or_default();
                r.status = Some("running");
                r.reason = Some(None);
                r.finished_at = Some(None);
            }
            EventBody::RunFinished { .. } => {
                let r = self.runs.entry(run).or_default();
                r.status = Some("finished");
                r.reason = Some(None);
                r.finished_at = Some(Some(at));
            }
            EventBody::RunKilled { reason } => {
                let r = self.runs.entry(run).or_default();
                r.status = Some("killed");
                r.reason = Some(Some(reason));
                r.finished_at = Some(Some(at));
            }
            EventBody::TaskReady {} => self.status(run, task, TaskStatus::Ready, None),
            EventBody::TaskStarted {
                attempt,
                backend,
                reserved,
                ..
            } => {
                if !reserved.is_empty() {
                    let r = reserved.amount();
                    sqlx::query(
                        "INSERT INTO spend (run, task, attempt, backend, reserved_usd, reserved_tokens)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (run, task, attempt) DO UPDATE SET backend = excluded.backend,
                           reserved_usd = excluded.reserved_usd, reserved_tokens = excluded.reserved_tokens,
                           charged_usd = NULL, charged_tokens = NULL, charged_at = NULL",
                    )
                    .bind(run)
                    .bind(task)
                    .bind(i64::from(*attempt))
                    .bind(backend.as_str())
                    .bind(r.usd)
                    .bind(i64_of(r.tokens))
                    .execute(&mut **tx)
                    .await?;
                }
                self.status(run, task, TaskStatus::Running, None);
                let t = self.task(run, task);
                t.attempts = t.attempts.max(Some(i64::from(*attempt)));
                t.backend = Some(backend.as_str());
            }
            EventBody::TaskBackendFinished {
                ok,
                usage,
                cost_usd,
                duration_ms,
                ..
            } => {
                let usd = cost_usd.unwrap_or(0.0);
                let arm = self.arm(run, task);
                arm.attempts += 1;
                arm.cost_usd += usd;
                arm.duration_ms += i64_of(*duration_ms);
                let t = self.task(run, task);
                t.status = Some(if *ok {
                    TaskStatus::Verifying
                } else {
                    TaskStatus::Running
                });
                t.cost_usd += usd;
                // Every token counts once: input (cache reads and writes included) plus output.
                t.tokens += i64_of(usage.map_or(0, |u| u.total()));
            }
            EventBody::BudgetCharged {
                attempt,
                backend,
                usd,
                tokens,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO spend (run, task, attempt, backend, charged_usd, charged_tokens, charged_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (run, task, attempt)
                     DO UPDATE SET charged_usd = $5, charged_tokens = $6, charged_at = $7",
                )
                .bind(run)
                .bind(task)
                .bind(i64::from(*attempt))
                .bind(backend.as_str())
                .bind(usd)
                .bind(i64_of(*tokens))
                .bind(at)
                .execute(&mut **tx)
                .await?;
                // What the run spent is what was charged against its caps.
                let r = self.runs.entry(run).or_default();
                r.spent_usd += usd;
                r.spent_tokens += i64_of(*tokens);
            }
            EventBody::BudgetAlert { key, .. } => {
                sqlx::query("INSERT INTO alerts (key, run, at) VALUES ($1, $2, $3)")
                    .bind(key)
                    .bind(run)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
            EventBody::ReviewReserved {
                attempt,
                reviewer,
                reserved,
            } => {
                let r = reserved.amount();
                sqlx::query(
                    "INSERT INTO review_spend (run, task, attempt, reviewer, reserved_usd, reserved_tokens)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (run, task, attempt) DO UPDATE SET reviewer = excluded.reviewer,
                       reserved_usd = excluded.reserved_usd, reserved_tokens = excluded.reserved_tokens,
                       charged_usd = NULL, charged_tokens = NULL, charged_at = NULL",
                )
                .bind(run)
                .bind(task)
                .bind(i64::from(*attempt))
                .bind(reviewer.as_str())
                .bind(r.usd)
                .bind(i64_of(r.tokens))
                .execute(&mut **tx)
                .await?;
            }
            EventBody::ReviewCharged {
                attempt,
                reviewer,
                usd,
                tokens,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO review_spend (run, task, attempt, reviewer, charged_usd, charged_tokens, charged_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (run, task, attempt)
                     DO UPDATE SET charged_usd = $5, charged_tokens = $6, charged_at = $7",
                )
                .bind(run)
                .bind(task)
                .bind(i64::from(*attempt))
                .bind(reviewer.as_str())
                .bind(usd)
                .bind(i64_of(*tokens))
                .bind(at)
                .execute(&mut **tx)
                .await?;
                // The run's spend is what was charged against its caps, reviews included; the
                // task's cost includes its reviews.
                let r = self.runs.entry(run).or_default();
                r.spent_usd += usd;
                r.spent_tokens += i64_of(*tokens);
                let t = self.task(run, task);
                t.cost_usd += usd;
                t.tokens += i64_of(*tokens);
            }
            EventBody::BudgetExhausted { .. }
            | EventBody::CacheHit { .. }
            | EventBody::TaskQuestion { .. }
            | EventBody::NotifySent { .. }
            | EventBody::TaskGate { figures: None, .. }
            | EventBody::RouterDecision { .. }
            | EventBody::TaskPolicy { .. }
            | EventBody::TaskCheck { .. }
            | EventBody::RunMerge { .. }
            | EventBody::BackendHeld { .. }
            | EventBody::BackendReleased { .. }
            | EventBody::RunVerify { .. }
            | EventBody::RunBisect { .. }
            | EventBody::RunRevertFailed { .. }
            | EventBody::VerifyScheduled { .. }
            | EventBody::VerifyReverted { .. }
            | EventBody::VerifyProposed { .. }
            | EventBody::VerifyReported { .. }
            | EventBody::TaskReview { .. }
            | EventBody::Deploy(_) => {}
            EventBody::TaskReverted { reason, .. } => {
                self.status(run, task, TaskStatus::Reverted, Some(reason.clone()));
            }
            EventBody::TaskGate {
                name,
                figures: Some(f),
                ..
            } => {
                // Rare (a gate that failed and then passed): written as it comes.
                for test in f.flaky.iter().flatten() {
                    sqlx::query(
                        "INSERT INTO flaky_tests (gate, test, first_seen, last_seen, count)
                         VALUES ($1, $2, $3, $3, 1)
                         ON CONFLICT (gate, test) DO UPDATE SET
                           last_seen = excluded.last_seen, count = flaky_tests.count + 1",
                    )
                    .bind(name.as_str())
                    .bind(test)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            EventBody::RunPullRequest { url, .. } => {
                self.runs.entry(run).or_default().pull_request = Some(url);
            }
            EventBody::TaskApprovalRequested {
                approval,
                action,
                reasons,
                ..
            } => {
                let why = format!(
                    "waiting for approval ({}): {}",
                    action.as_str(),
                    reasons.join("; ")
                );
                self.status(run, task, TaskStatus::AwaitingApproval, Some(why));
                sqlx::query(
                    "INSERT INTO approvals (id, run, task, action, reasons, created_at, status)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending')
                     ON CONFLICT (id) DO UPDATE SET run = excluded.run, task = excluded.task,
                       action = excluded.action, reasons = excluded.reasons,
                       created_at = excluded.created_at, status = 'pending', decided_at = NULL,
                       decision = NULL",
                )
                .bind(approval)
                .bind(run)
                .bind(task)
                .bind(action.as_str())
                .bind(serde_json::to_string(reasons).unwrap_or_default())
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
            EventBody::TaskApproved { approval, reason }
            | EventBody::TaskRejected { approval, reason } => {
                let approved = matches!(e.event.body, EventBody::TaskApproved { .. });
                sqlx::query(
                    "UPDATE approvals SET status = $1, decided_at = $2, decision = $3 WHERE id = $4",
                )
                .bind(if approved { "approved" } else { "rejected" })
                .bind(at)
                .bind(reason)
                .bind(approval)
                .execute(&mut **tx)
                .await?;
                if approved {
                    // A plan approval lets the task wait on its dependencies; a merge approval
                    // lets it land.
                    let action: Option<String> =
                        sqlx::query_scalar("SELECT action FROM approvals WHERE id = $1")
                            .bind(approval)
                            .fetch_optional(&mut **tx)
                            .await?;
                    let next = if action.as_deref() == Some("plan") {
                        TaskStatus::Pending
                    } else {
                        TaskStatus::Verifying
                    };
                    self.status(run, task, next, None);
                }
            }
            EventBody::TaskDenied {
                attempt,
                reasons,
                kept_worktree,
            } => {
                if *attempt > 0 {
                    self.arm(run, task).failed += 1;
                }
                self.status(run, task, TaskStatus::Denied, Some(reasons.join("; ")));
                keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
            }
            EventBody::TaskLanded { commit, .. } => {
                self.arm(run, task).landed += 1;
                self.status(run, task, TaskStatus::Landed, None);
                self.task(run, task).commit = Some(commit.as_str());
            }
            EventBody::TaskRetry {
                cause,
                reason,
                kept_worktree,
                ..
            } => {
                let status = match cause {
                    RetryCause::Failed
                    | RetryCause::Interrupted
                    | RetryCause::Quota
                    | RetryCause::Answered => TaskStatus::Ready,
                    RetryCause::Requested => TaskStatus::Pending,
                };
                if *cause == RetryCause::Failed {
                    self.arm(run, task).failed += 1;
                }
                self.status(run, task, status, Some(reason.clone()));
                keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
            }
            EventBody::TaskFailed {
                reason,
                kept_worktree,
                ..
            } => {
                // A task failed by an attempt (not by a spent budget before any ran).
                if kept_worktree.is_some() {
                    self.arm(run, task).failed += 1;
                }
                self.status(run, task, TaskStatus::Failed, Some(reason.clone()));
                keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
            }
            EventBody::TaskCancelled { reason, .. } => {
                self.status(run, task, TaskStatus::Cancelled, Some(reason.clone()));
            }
            EventBody::TaskProposals { .. } | EventBody::TaskHedge { .. } => {}
            EventBody::TaskProposal {
                backend,
                outcome,
                kept_worktree,
                ..
            } => {
                use abo_core::proposal::ProposalOutcome;
                match outcome {
                    // The winner's backend is the task's from now on: its landing counts there.
                    ProposalOutcome::Won => {
                        let t = self.task(run, task);
                        t.backend = Some(backend.as_str());
                        t.status = Some(TaskStatus::Verifying);
                    }
                    ProposalOutcome::Failed => {
                        self.arms
                            .entry((run, task, Some(backend.as_str())))
                            .or_default()
                            .failed += 1;
                    }
                    ProposalOutcome::Lost | ProposalOutcome::Stopped => {}
                }
                keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
            }
        }
        Ok(())
    }

    /// The folded changes as parts of `batch`. The router's part reads the tasks' backends as they
    /// were before the batch, so it comes before the tasks' part.
    pub(crate) fn write(self, batch: &mut Batch) {
        let mut rows = Vec::with_capacity(self.arms.len() * 8);
        for ((run, task, backend), a) in self.arms {
            rows.extend([
                Arg::from(run),
                task.into(),
                backend.into(),
                a.attempts.into(),
                a.cost_usd.into(),
                a.duration_ms.into(),
                a.failed.into(),
                a.landed.into(),
            ]);
        }
        batch.part(
            "av",
            "run, task, backend, attempts, cost_usd, duration_ms, failed, landed",
            8,
            rows,
            "INSERT INTO router_stats (task_type, backend, attempts, cost_usd, duration_ms, failed, landed)
             SELECT t.type, COALESCE(v.backend, t.backend), SUM(v.attempts), SUM(v.cost_usd),
                    SUM(v.duration_ms), SUM(v.failed), SUM(v.landed)
             FROM av AS v JOIN tasks AS t ON t.run = v.run AND t.id = v.task
             WHERE COALESCE(v.backend, t.backend) IS NOT NULL
             GROUP BY t.type, COALESCE(v.backend, t.backend)
             ON CONFLICT (task_type, backend) DO UPDATE SET
               attempts = router_stats.attempts + excluded.attempts,
               cost_usd = router_stats.cost_usd + excluded.cost_usd,
               duration_ms = router_stats.duration_ms + excluded.duration_ms,
               failed = router_stats.failed + excluded.failed,
               landed = router_stats.landed + excluded.landed",
        );

        let mut rows = Vec::with_capacity(self.tasks.len() * 11);
        for ((run, task), t) in self.tasks {
            rows.extend([
                Arg::from(run),
                task.into(),
                t.status.map(TaskStatus::as_str).into(),
                i64::from(t.reason.is_some()).into(),
                Arg::Text(t.reason.flatten()),
                t.attempts.into(),
                t.backend.into(),
                t.cost_usd.into(),
                t.tokens.into(),
                t.commit.into(),
            ]);
        }
        batch.part(
            "tv",
            "run, id, status, set_reason, reason, attempts, backend, cost_usd, tokens, commit_sha",
            10,
            rows,
            "UPDATE tasks SET
               status = COALESCE(v.status, tasks.status),
               reason = CASE WHEN v.set_reason = 1 THEN v.reason ELSE tasks.reason END,
               attempts = CASE WHEN v.attempts > tasks.attempts THEN v.attempts ELSE tasks.attempts END,
               backend = COALESCE(v.backend, tasks.backend),
               cost_usd = tasks.cost_usd + v.cost_usd,
               tokens = tasks.tokens + v.tokens,
               commit_sha = COALESCE(v.commit_sha, tasks.commit_sha)
             FROM tv AS v WHERE tasks.run = v.run AND tasks.id = v.id",
        );

        let mut rows = Vec::with_capacity(self.runs.len() * 11);
        for (run, r) in self.runs {
            rows.extend([
                Arg::from(run),
                r.status.into(),
                i64::from(r.reason.is_some()).into(),
                r.reason.flatten().into(),
                r.started_at.into(),
                i64::from(r.finished_at.is_some()).into(),
                r.finished_at.flatten().into(),
                r.spent_usd.into(),
                r.spent_tokens.into(),
                r.pull_request.into(),
                r.last_seq.into(),
            ]);
        }
        batch.part(
            "rv",
            "id, status, set_reason, reason, started_at, set_finished, finished_at, spent_usd, spent_tokens, pull_request, last_seq",
            11,
            rows,
            "UPDATE runs SET
               status = COALESCE(v.status, runs.status),
               reason = CASE WHEN v.set_reason = 1 THEN v.reason ELSE runs.reason END,
               started_at = COALESCE(v.started_at, runs.started_at),
               finished_at = CASE WHEN v.set_finished = 1 THEN v.finished_at ELSE runs.finished_at END,
               spent_usd = runs.spent_usd + v.spent_usd,
               spent_tokens = runs.spent_tokens + v.spent_tokens,
               pull_request = COALESCE(v.pull_request, runs.pull_request),
               last_seq = COALESCE(v.last_seq, runs.last_seq)
             FROM rv AS v WHERE runs.id = v.id",
        );
    }
}

/// Adds a kept worktree to the task's list (a column no fold writes, so it is written at once).
async fn keep_worktree(
    tx: &mut Tx,
    run: &str,
    task: &str,
    path: Option<&str>,
) -> Result<(), StoreError> {
    let Some(path) = path else { return Ok(()) };
    // Read, extend, write: the same on SQLite and Postgres (the row is the transaction's).
    let row = sqlx::query("SELECT kept_worktrees FROM tasks WHERE run = $1 AND id = $2")
        .bind(run)
        .bind(task)
        .fetch_optional(&mut **tx)
        .await?;
    let mut kept: Vec<String> = row
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)).unwrap_or_default())
        .unwrap_or_default();
    kept.push(path.to_owned());
    sqlx::query("UPDATE tasks SET kept_worktrees = $1 WHERE run = $2 AND id = $3")
        .bind(serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into()))
        .bind(run)
        .bind(task)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
