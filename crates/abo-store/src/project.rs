//! Projections: how each event changes the `runs` and `tasks` tables. Used for live appends and for
//! rebuilding from the log, so the two cannot disagree.

use sqlx::Row;

use abo_core::event::{EventBody, RetryCause, StoredEvent};
use abo_core::state::TaskStatus;

use crate::{StoreError, Tx};

/// Applies one event to the projections, inside the append's transaction.
pub async fn project(tx: &mut Tx, e: &StoredEvent) -> Result<(), StoreError> {
    let run = e.event.run.as_str();
    let task = e
        .event
        .task
        .as_ref()
        .map(|t| t.as_str())
        .unwrap_or_default();
    let at = e.event.at.0;
    let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
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
            .bind(seq)
            .execute(&mut **tx)
            .await?;
            for (i, t) in spec.tasks.iter().enumerate() {
                let status = if t.skipped.is_some() {
                    TaskStatus::Skipped
                } else {
                    TaskStatus::Pending
                };
                sqlx::query(
                    "INSERT INTO tasks (run, id, position, title, type, status, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(run)
                .bind(t.id.as_str())
                .bind(i64::try_from(i).unwrap_or(0))
                .bind(&t.title)
                .bind(t.kind.as_str())
                .bind(status.as_str())
                .bind(&t.skipped)
                .execute(&mut **tx)
                .await?;
            }
            return Ok(());
        }
        EventBody::RunStarted {} => {
            sqlx::query("UPDATE runs SET status = 'running', started_at = $1 WHERE id = $2")
                .bind(at)
                .bind(run)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::RunPaused { reason } => {
            run_status(tx, run, "paused", Some(reason), None).await?
        }
        EventBody::RunResumed { .. } => {
            sqlx::query("UPDATE runs SET status = 'running', reason = NULL, finished_at = NULL WHERE id = $1")
                .bind(run)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::RunFinished { .. } => run_status(tx, run, "finished", None, Some(at)).await?,
        EventBody::RunKilled { reason } => {
            run_status(tx, run, "killed", Some(reason), Some(at)).await?
        }
        EventBody::TaskReady {} => task_status(tx, run, task, TaskStatus::Ready, None).await?,
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
                .bind(i64::try_from(r.tokens).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query(
                "UPDATE tasks SET status = 'running', reason = NULL, attempts = CASE WHEN attempts > $1 THEN attempts ELSE $1 END, backend = $2
                 WHERE run = $3 AND id = $4",
            )
            .bind(i64::from(*attempt))
            .bind(backend.as_str())
            .bind(run)
            .bind(task)
            .execute(&mut **tx)
            .await?;
        }
        EventBody::TaskBackendFinished {
            ok,
            usage,
            cost_usd,
            duration_ms,
            ..
        } => {
            router_arm(
                tx,
                run,
                task,
                "attempts = attempts + 1, cost_usd = cost_usd + $3, duration_ms = duration_ms + $4",
                cost_usd.unwrap_or(0.0),
                i64::try_from(*duration_ms).unwrap_or(i64::MAX),
            )
            .await?;
            // Every token counts once: input (cache reads and writes included) plus output.
            let tokens = usage.map_or(0, |u| u.total());

            let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
            let usd = cost_usd.unwrap_or(0.0);
            let status = if *ok { "verifying" } else { "running" };
            sqlx::query(
                "UPDATE tasks SET status = $1, cost_usd = cost_usd + $2, tokens = tokens + $3 WHERE run = $4 AND id = $5",
            )
            .bind(status)
            .bind(usd)
            .bind(tokens)
            .bind(run)
            .bind(task)
            .execute(&mut **tx)
            .await?;
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
            .bind(i64::try_from(*tokens).unwrap_or(i64::MAX))
            .bind(at)
            .execute(&mut **tx)
            .await?;
            // What the run spent is what was charged against its caps.
            sqlx::query("UPDATE runs SET spent_usd = spent_usd + $1, spent_tokens = spent_tokens + $2 WHERE id = $3")
                .bind(usd)
                .bind(i64::try_from(*tokens).unwrap_or(i64::MAX))
                .bind(run)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::BudgetAlert { key, .. } => {
            sqlx::query("INSERT INTO alerts (key, run, at) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(run)
                .bind(at)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::BudgetExhausted { .. }
        | EventBody::CacheHit { .. }
        | EventBody::NotifySent { .. } => {}
        EventBody::RunPullRequest { url, .. } => {
            sqlx::query("UPDATE runs SET pull_request = $1 WHERE id = $2")
                .bind(url)
                .bind(run)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::TaskGate { .. }
        | EventBody::RouterDecision { .. }
        | EventBody::TaskPolicy { .. }
        | EventBody::RunMerge { .. } => {}
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
            task_status(tx, run, task, TaskStatus::AwaitingApproval, Some(&why)).await?;
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
                // A plan approval lets the task wait on its dependencies; a merge approval lets it land.
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
                task_status(tx, run, task, next, None).await?;
            }
        }
        EventBody::TaskDenied {
            attempt,
            reasons,
            kept_worktree,
        } => {
            if *attempt > 0 {
                router_arm(tx, run, task, "failed = failed + 1", 0.0, 0).await?;
            }
            task_status(tx, run, task, TaskStatus::Denied, Some(&reasons.join("; "))).await?;
            keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
        }
        EventBody::TaskLanded { commit, .. } => {
            router_arm(tx, run, task, "landed = landed + 1", 0.0, 0).await?;
            sqlx::query("UPDATE tasks SET status = 'landed', commit_sha = $1, reason = NULL WHERE run = $2 AND id = $3")
                .bind(commit.as_str())
                .bind(run)
                .bind(task)
                .execute(&mut **tx)
                .await?;
        }
        EventBody::TaskRetry {
            cause,
            reason,
            kept_worktree,
            ..
        } => {
            let status = match cause {
                RetryCause::Failed | RetryCause::Interrupted => TaskStatus::Ready,
                RetryCause::Requested => TaskStatus::Pending,
            };
            if *cause == RetryCause::Failed {
                router_arm(tx, run, task, "failed = failed + 1", 0.0, 0).await?;
            }
            task_status(tx, run, task, status, Some(reason)).await?;
            keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
        }
        EventBody::TaskFailed {
            reason,
            kept_worktree,
            ..
        } => {
            // A task failed by an attempt (not by a spent budget before any ran).
            if kept_worktree.is_some() {
                router_arm(tx, run, task, "failed = failed + 1", 0.0, 0).await?;
            }
            task_status(tx, run, task, TaskStatus::Failed, Some(reason)).await?;
            keep_worktree(tx, run, task, kept_worktree.as_deref()).await?;
        }
        EventBody::TaskCancelled { reason, .. } => {
            task_status(tx, run, task, TaskStatus::Cancelled, Some(reason)).await?;
        }
    }
    Ok(())
}

/// Records each run's last `seq` among `events` (once per run, after projecting them all).
pub(crate) async fn last_seq(tx: &mut Tx, events: &[StoredEvent]) -> Result<(), StoreError> {
    let mut last: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for e in events {
        last.insert(e.event.run.as_str(), e.seq);
    }
    for (run, seq) in last {
        sqlx::query("UPDATE runs SET last_seq = $1 WHERE id = $2")
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(run)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Updates the learned router's arm of the task's (type, backend) with `set` (SQL; `$3` and `$4`
/// are `a` and `b`).
async fn router_arm(
    tx: &mut Tx,
    run: &str,
    task: &str,
    set: &str,
    a: f64,
    b: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO router_stats (task_type, backend)
         SELECT type, backend FROM tasks WHERE run = $1 AND id = $2 AND backend IS NOT NULL
         ON CONFLICT (task_type, backend) DO NOTHING;
         UPDATE router_stats SET {set}
         WHERE (task_type, backend) = (SELECT type, backend FROM tasks WHERE run = $1 AND id = $2)"
    );
    // `set` is one of a few fixed strings of this module.
    for stmt in sql.split(';') {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned()))
            .bind(run)
            .bind(task);
        if stmt.contains("$3") {
            q = q.bind(a).bind(b);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn run_status(
    tx: &mut Tx,
    run: &str,
    status: &str,
    reason: Option<&String>,
    finished: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET status = $1, reason = $2, finished_at = COALESCE($3, finished_at) WHERE id = $4")
        .bind(status)
        .bind(reason)
        .bind(finished)
        .bind(run)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn task_status(
    tx: &mut Tx,
    run: &str,
    task: &str,
    status: TaskStatus,
    reason: Option<&String>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tasks SET status = $1, reason = $2 WHERE run = $3 AND id = $4")
        .bind(status.as_str())
        .bind(reason)
        .bind(run)
        .bind(task)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

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
