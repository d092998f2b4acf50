//! `abo status`: a run and its tasks, from the store's projections; the JSON shape of DESIGN §3.

use abo_store::{RunRow, Store, TaskRow};
use serde_json::{Value, json};

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

fn ts(t: Option<abo_core::ids::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub(crate) fn to_json(run: &RunRow, tasks: &[TaskRow]) -> Value {
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
            "budget_usd": Value::Null,
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

pub(crate) fn render(run: &RunRow, tasks: &[TaskRow]) -> String {
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
