//! The JSON shapes of the API and of `abo status --json` (docs/api.md): one place for both.

use serde_json::{Value, json};

use abo_core::budget::{CapUse, Unit};
use abo_store::{ApprovalRow, RunRow, TaskRow, TokenRow};

/// A run as `abo status` shows it: its row, its tasks (all, or the page asked for), and each cap
/// with what is spent against it.
pub struct View {
    pub run: RunRow,
    pub tasks: Vec<TaskRow>,
    pub caps: Vec<CapUse>,
    pub alert_at: f64,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// On a shared store: which worker holds which attempt now.
    pub leases: Vec<abo_store::AttemptLease>,
    /// What the run's reviews cost, part of its spend.
    pub reviews: abo_core::budget::Amount,
    /// Each task's candidates (`proposals:`, `hedge:`), by task id.
    pub proposals: std::collections::BTreeMap<String, Vec<abo_core::proposal::Shown>>,
    /// No process drives the run: what its log leaves in flight is shown `interrupted`.
    pub orphaned: bool,
}

/// Which of a run's tasks a view holds.
pub enum Tasks<'a> {
    All,
    /// Those in one of `statuses` (all when empty), in plan order, from `offset`, at most `limit`.
    Page {
        statuses: &'a [&'a str],
        offset: u64,
        limit: u64,
    },
}

/// Loads the run named with all its tasks and its caps.
pub async fn view(ctx: &abo_runtime::Ctx, row: RunRow) -> Result<View, ViewError> {
    view_of(ctx, row, Tasks::All).await
}

/// Loads the run named with the tasks asked for and its caps, read from its projections (its
/// row, its tasks' rows, its spend) and its own run-level events, never its whole log: a run of
/// 10,000 tasks costs what a run of 10 does.
pub async fn view_of(
    ctx: &abo_runtime::Ctx,
    mut row: RunRow,
    which: Tasks<'_>,
) -> Result<View, ViewError> {
    let orphaned = orphaned(ctx, &row).await?;
    let mut tasks = match which {
        Tasks::All => ctx.store.tasks(&row.id).await?,
        Tasks::Page {
            statuses,
            offset,
            limit,
        } => {
            // A run nobody drives shows its running tasks `interrupted`: that filter is theirs.
            let mut asked: Vec<&str> = statuses.to_vec();
            if orphaned && asked.contains(&"interrupted") {
                asked.extend(["running", "verifying"]);
            }
            ctx.store.tasks_page(&row.id, &asked, offset, limit).await?
        }
    };
    if orphaned {
        interrupted(&mut row, &mut tasks);
    }
    let mut state = abo_runtime::engine::load_head(&ctx.store, &row).await?;
    let now = ctx.now();
    if state.closing.owes() {
        let driven = ctx
            .store
            .lease(&row.id)
            .await?
            .is_some_and(|l| abo_runtime::engine::driven(&l, now));
        if !driven {
            let what = match (&state.spec.base_branch, &state.base_heal) {
                (_, Some(h)) if state.closing == abo_core::state::Closing::Healing => {
                    format!("landing.verify on {} after the merge", h.branch)
                }
                (Some(b), _) => format!("the end of the run (landing into {b}, notifications)"),
                (None, _) => "the end of the run (publishing, notifications)".to_owned(),
            };
            row.reason = Some(format!(
                "{what} is owed: abo stopped before it; complete it with `abo resume {}`",
                row.id
            ));
        }
    }
    if state.budgets.windows_capped()
        && let Ok(tz) = abo_runtime::windows::zone(state.budgets.timezone.as_deref())
        && let Ok(w) = abo_runtime::windows::load(&ctx.store, &row.id, now, &tz).await
    {
        state.windows = w;
    }
    let b = &state.budgets;
    let caps = caps(&state, now);
    // Each listed task's candidates, from its `task.proposal` events alone (never the whole log).
    let events = ctx.store.run_events_of(&row.id, &["task.proposal"]).await?;
    let proposals = tasks
        .iter()
        .filter_map(|t| {
            let id = abo_core::ids::TaskId::new(t.id.as_str());
            let shown = abo_core::proposal::shown(&id, &events, None);
            (!shown.is_empty()).then(|| (t.id.to_string(), shown))
        })
        .collect();
    let (usd, tokens) = ctx.store.run_review_spent(&row.id).await?;
    Ok(View {
        proposals,
        run: row,
        tasks,
        caps,
        alert_at: b.alert_at,
        budget_usd: b.run.usd,
        budget_tokens: b.run.tokens,
        leases: ctx.store.attempt_leases(Some(&state.id)).await?,
        orphaned,
        reviews: abo_core::budget::Amount { usd, tokens },
    })
}

/// Each cap of the run with what is charged and reserved against it: the run's, each backend's,
/// the day's and week's, and its running time.
pub fn caps(state: &abo_core::state::RunState, now: abo_core::ids::Timestamp) -> Vec<CapUse> {
    let b = &state.budgets;
    let mut caps = state.ledger.caps_for(b, None, None, &state.windows);
    for name in b.per_backend.keys() {
        let name = abo_core::ids::BackendName::new(name);
        caps.extend(
            state
                .ledger
                .caps_for(b, None, Some(&name), &state.windows)
                .into_iter()
                .filter(|c| matches!(c.cap.scope, abo_core::budget::Scope::Backend(_))),
        );
    }
    if let Some(wall) = b.wall_ms {
        #[allow(clippy::cast_precision_loss)]
        caps.push(CapUse {
            cap: abo_core::budget::CapId {
                scope: abo_core::budget::Scope::Run,
                unit: abo_core::budget::Unit::Wall,
            },
            limit: wall as f64,
            spent: state.ledger.ran(now) as f64,
            reserved: 0.0,
        });
    }
    caps
}

/// Whether no process drives a run that is running or paused (abo was killed, or stopped by a
/// signal): it has nothing running.
pub async fn orphaned(ctx: &abo_runtime::Ctx, row: &RunRow) -> Result<bool, ViewError> {
    if !matches!(row.status.as_str(), "running" | "paused") {
        return Ok(false);
    }
    let lease = ctx.store.lease(&row.id).await?;
    Ok(!lease.is_some_and(|l| abo_runtime::engine::driven(&l, ctx.now())))
}

/// An orphaned run's tasks its log leaves in flight are shown `interrupted`, and a run that was
/// running is shown `interrupted` too, with the command that continues it.
fn interrupted(row: &mut RunRow, tasks: &mut [abo_store::TaskRow]) {
    for t in tasks.iter_mut() {
        if matches!(t.status.as_str(), "running" | "verifying") {
            t.status = "interrupted".into();
            t.reason = Some("its process is gone; it runs again on resume".into());
        }
    }
    if row.status == "running" {
        row.status = "interrupted".into();
        row.reason = Some(format!(
            "its process is gone: continue it with `abo resume {}`",
            row.id
        ));
    }
}

fn ts(t: Option<abo_core::ids::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub fn to_json(v: &View) -> Value {
    let (run, tasks) = (&v.run, &v.tasks);
    json!({
        "run": {
            "id": run.id,
            "title": run.title,
            "status": run.status,
            "branch": run.branch,
            "base": run.base,
            "base_branch": run.base_branch,
            "profile": run.profile,
            "spent_usd": run.spent_usd,
            "spent_tokens": run.spent_tokens,
            "review_usd": v.reviews.usd,
            "review_tokens": v.reviews.tokens,
            "budget_usd": v.budget_usd,
            "budget_tokens": v.budget_tokens,
            "budgets": v.caps.iter().map(|c| json!({
                "cap": c.cap.to_string(),
                "limit": c.limit,
                "spent": c.spent,
                "reserved": c.reserved,
                "alert": c.cap.unit != Unit::Wall && c.spent >= v.alert_at * c.limit,
            })).collect::<Vec<_>>(),
            "created_at": run.created_at.to_rfc3339(),
            "started_at": ts(run.started_at),
            "finished_at": ts(run.finished_at),
            "reason": run.reason,
            "pull_request": run.pull_request,
        },
        "tasks": tasks.iter().map(|t| json!({
            "worker": v.leases.iter().find(|l| l.task == t.id).map(|l| &l.worker),
            "id": t.id,
            "title": t.title,
            "type": t.kind,
            "status": t.status,
            "attempts": t.attempts,
            "backend": t.backend,
            "commit": t.commit,
            "reason": t.reason,
            "cost_usd": t.cost_usd,
            "tokens": t.tokens,
            "worktrees": t.kept_worktrees,
            "proposals": v.proposals.get(t.id.as_str()).map(|c| c.iter().map(proposal).collect::<Vec<_>>()).unwrap_or_default(),
        })).collect::<Vec<_>>(),
    })
}

/// One candidate of a task (`proposals:`, `hedge:`): its outcome, rank, why, and its score.
pub fn proposal(c: &abo_core::proposal::Shown) -> Value {
    let sc = &c.score;
    json!({
        "attempt": c.attempt,
        "backend": c.backend,
        "mode": c.mode.as_str(),
        "outcome": c.outcome,
        "rank": c.rank,
        "reason": c.reason,
        "hedge": c.hedge,
        "score": {
            "review": sc.review.map(|r| r.as_str()),
            "findings": sc.findings,
            "coverage": sc.coverage_bp.map(|bp| f64::from(bp) / 100.0),
            "diff_lines": sc.diff_lines,
            "cost_usd": sc.cost_micros as f64 / 1e6,
        },
    })
}

/// Loading a run's view failed.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] abo_store::StoreError),
    #[error(transparent)]
    Engine(#[from] abo_runtime::engine::EngineError),
}

impl From<ViewError> for crate::error::ApiError {
    fn from(e: ViewError) -> Self {
        Self::internal(e)
    }
}

/// A run as a list item (`GET /v1/runs`).
pub fn run_brief(r: &RunRow) -> Value {
    json!({
        "id": r.id,
        "title": r.title,
        "status": r.status,
        "branch": r.branch,
        "spent_usd": r.spent_usd,
        "spent_tokens": r.spent_tokens,
        "created_at": r.created_at.to_rfc3339(),
        "finished_at": ts(r.finished_at),
        "reason": r.reason,
    })
}

/// `abo approvals --json` and `GET /v1/approvals`.
pub fn approvals(pending: &[ApprovalRow]) -> Value {
    Value::Array(
        pending
            .iter()
            .map(|a| {
                json!({
                    "id": a.id, "run": a.run, "task": a.task, "action": a.action,
                    "reasons": a.reasons, "created_at": a.created_at.to_rfc3339(),
                })
            })
            .collect(),
    )
}

pub fn token(t: &TokenRow) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "created_at": t.created_at.to_rfc3339(),
        "revoked_at": ts(t.revoked_at),
    })
}
