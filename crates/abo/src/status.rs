//! `abo status`: a run and its tasks, from the store's projections; the JSON shape of DESIGN §3.

use abo_store::{RunRow, Store, TaskRow};
use serde_json::{Value, json};

use abo_core::budget::{CapUse, Unit, show};
use abo_core::ids::RunId;

use crate::exit::Usage;

/// The run named, or the latest one.
pub(crate) async fn find_run(store: &Store, run: Option<&str>) -> anyhow::Result<RunRow> {
    match run {
        Some(id) => store.run(&RunId::new(id)).await?.ok_or_else(|| {
            Usage::new(format!("no run `{id}` in the store"))
                .hint("`abo status` shows the latest run")
                .into()
        }),
        None => store.latest_run().await?.ok_or_else(|| {
            Usage::new("no runs yet")
                .hint("start one with `abo run BACKLOG`")
                .into()
        }),
    }
}

/// A run as `abo status` shows it: its row, its tasks, and each cap with what is spent against it.
pub(crate) struct View {
    pub(crate) run: RunRow,
    pub(crate) tasks: Vec<TaskRow>,
    pub(crate) caps: Vec<CapUse>,
    pub(crate) alert_at: f64,
    pub(crate) budget_usd: Option<f64>,
    pub(crate) budget_tokens: Option<u64>,
}

/// Loads the run named (or the latest) with its caps, replayed from its log.
pub(crate) async fn view(ctx: &abo_runtime::Ctx, run: Option<&str>) -> anyhow::Result<View> {
    let row = find_run(&ctx.store, run).await?;
    let tasks = ctx.store.tasks(&row.id).await?;
    let mut state = abo_runtime::engine::load(&ctx.store, &row.id).await?;
    let now = ctx.now();
    if state.budgets.windows_capped()
        && let Ok(tz) = abo_runtime::windows::zone(state.budgets.timezone.as_deref())
        && let Ok(w) = abo_runtime::windows::load(&ctx.store, &row.id, now, &tz).await
    {
        state.windows = w;
    }
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
    Ok(View {
        run: row,
        tasks,
        caps,
        alert_at: b.alert_at,
        budget_usd: b.run.usd,
        budget_tokens: b.run.tokens,
    })
}

fn ts(t: Option<abo_core::ids::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub(crate) fn to_json(v: &View) -> Value {
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
        },
        "tasks": tasks.iter().map(|t| json!({
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
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn render(v: &View) -> String {
    let (run, tasks) = (&v.run, &v.tasks);
    let mut out = format!("run {}  {}\n", run.id, run.title);
    let reason = run
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    out.push_str(&format!("  status   {}{reason}\n", run.status));
    let base = &run.base[..run.base.len().min(10)];
    let from = run
        .base_branch
        .as_deref()
        .map(|b| format!(" on {b}"))
        .unwrap_or_default();
    out.push_str(&format!("  branch   {}  (from {base}{from})\n", run.branch));
    out.push_str(&format!("  profile  {}\n", run.profile));
    if run.spent_tokens > 0 || run.spent_usd > 0.0 {
        out.push_str(&format!(
            "  spent    ${:.4}, {} tokens\n",
            run.spent_usd, run.spent_tokens
        ));
    }
    for c in &v.caps {
        let u = c.cap.unit;
        let mark = if u != Unit::Wall && c.spent >= v.alert_at * c.limit {
            "  ALERT"
        } else {
            ""
        };
        let held = if c.reserved > 0.0 {
            format!(" (+{} reserved)", show(u, c.reserved))
        } else {
            String::new()
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let of = match u {
            Unit::Tokens => format!("{} of {} tokens", c.spent as u64, c.limit as u64),
            _ => format!("{} of {}", show(u, c.spent), show(u, c.limit)),
        };
        out.push_str(&format!(
            "  budget   {:<16} {of}{held}{mark}\n",
            c.cap.to_string()
        ));
    }
    let width = tasks
        .iter()
        .map(|t| t.id.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "\n  {:<width$}  {:<17}  {:>3}  {:<10}  {:<10}  REASON\n",
        "TASK", "STATUS", "ATT", "BACKEND", "COMMIT"
    ));
    for t in tasks {
        let commit = t
            .commit
            .as_deref()
            .map(|c| &c[..c.len().min(10)])
            .unwrap_or("-");
        out.push_str(&format!(
            "  {:<width$}  {:<17}  {:>3}  {:<10}  {:<10}  {}\n",
            t.id.as_str(),
            t.status,
            t.attempts,
            t.backend.as_deref().unwrap_or("-"),
            commit,
            t.reason.as_deref().unwrap_or(""),
        ));
    }
    let kept: Vec<&String> = tasks.iter().flat_map(|t| &t.kept_worktrees).collect();
    if !kept.is_empty() {
        out.push_str("\n  worktrees of failed attempts (kept until `abo gc`):\n");
        for k in kept {
            out.push_str(&format!("    {k}\n"));
        }
    }
    out
}
