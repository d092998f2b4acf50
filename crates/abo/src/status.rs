//! `abo status`: a run and its tasks, from the store's projections; its JSON shape is in docs/api.md.

use abo_store::{RunRow, Store};

use abo_core::budget::{Unit, show};
use abo_core::human;
use abo_core::ids::RunId;
pub(crate) use abo_server::shapes::{View, to_json};

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
    if let Some(pr) = &run.pull_request {
        out.push_str(&format!("  pull request {pr}\n"));
    }
    if run.spent_tokens > 0 || run.spent_usd > 0.0 {
        out.push_str(&format!(
            "  spent    {}, {} tokens\n",
            human::usd(run.spent_usd),
            human::tokens(run.spent_tokens)
        ));
    }
    if v.reviews.tokens > 0 || v.reviews.usd > 0.0 {
        out.push_str(&format!(
            "  reviews  {}, {} tokens (part of the spend)\n",
            human::usd(v.reviews.usd),
            human::tokens(v.reviews.tokens)
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
            Unit::Tokens => format!(
                "{} of {} tokens",
                human::tokens(c.spent as u64),
                human::tokens(c.limit as u64)
            ),
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
        "\n  {:<width$}  {:<17}  {:>3}  {:<10}  {:<10}  {:>8}  REASON\n",
        "TASK", "STATUS", "ATT", "BACKEND", "COMMIT", "COST"
    ));
    for t in tasks {
        let commit = t
            .commit
            .as_deref()
            .map(|c| &c[..c.len().min(10)])
            .unwrap_or("-");
        out.push_str(&format!(
            "  {:<width$}  {:<17}  {:>3}  {:<10}  {:<10}  {:>8}  {}\n",
            t.id.as_str(),
            t.status,
            t.attempts,
            t.backend.as_deref().unwrap_or("-"),
            commit,
            if t.attempts == 0 {
                "-".to_owned()
            } else {
                human::usd(t.cost_usd)
            },
            t.reason.as_deref().unwrap_or(""),
        ));
        for c in v.proposals.get(t.id.as_str()).into_iter().flatten() {
            let hedge = if c.hedge { " (hedge)" } else { "" };
            let why = c
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<width$}  {} #{} {}{hedge} {}{why} [{} changed lines, {}]\n",
                "",
                c.mode.as_str(),
                c.attempt,
                c.backend,
                c.outcome,
                c.score.diff_lines,
                human::usd(c.score.cost_micros as f64 / 1e6),
            ));
        }
        if let Some(l) = v.leases.iter().find(|l| l.task == t.id) {
            out.push_str(&format!(
                "  {:<width$}  attempt {} on worker {} (lease token {})\n",
                "", l.attempt, l.worker, l.token
            ));
        }
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

/// The run named (or the latest) with its caps, as `abo status` shows it.
pub(crate) async fn view(ctx: &abo_runtime::Ctx, run: Option<&str>) -> anyhow::Result<View> {
    let row = find_run(&ctx.store, run).await?;
    Ok(abo_server::shapes::view(ctx, row).await?)
}

/// The scheduled verifications of `branch` (`landing.verify_schedule`), if it has any: a line for
/// `abo status` and the same as JSON.
pub(crate) async fn base_verify(
    store: &Store,
    branch: &str,
) -> anyhow::Result<Option<(String, serde_json::Value)>> {
    use abo_core::event::EventBody;
    use abo_core::verify_schedule::{Scheduled, log_id};
    let log = log_id(branch);
    let events = store.run_events(&log).await?;
    let s = Scheduled::fold(branch, &events);
    let short = |c: &abo_core::ids::CommitSha| c.as_str()[..c.as_str().len().min(10)].to_owned();
    let last = events.iter().rev().find_map(|e| match &e.event.body {
        _ if s.current.is_some() => Some("in progress".to_owned()),
        EventBody::RunVerify { commit, passed, .. } => Some(if *passed {
            format!("{} passed", short(commit))
        } else {
            format!("{} still fails after the revert", short(commit))
        }),
        EventBody::VerifyProposed { commit, url, .. } => Some(format!(
            "{} fails; its revert is proposed, not yet on the branch: {url}",
            short(commit)
        )),
        EventBody::VerifyReported { commit, reason, .. } => Some(format!(
            "{} reported, not reverted: {reason}",
            short(commit)
        )),
        EventBody::RunRevertFailed { commit, reason, .. } => {
            Some(format!("the revert of {} failed: {reason}", short(commit)))
        }
        _ => None,
    });
    let Some(last) = last else { return Ok(None) };
    let line = format!("  verified {branch} on schedule: {last} (abo events {log})\n");
    let json = serde_json::json!({
        "branch": branch,
        "log": log.as_str(),
        "good": s.good.as_ref().map(|c| c.as_str()),
        "in_progress": s.current.is_some(),
        "proposed": s.proposed.as_ref().map(|p| p.url.as_str()),
        "last": last,
    });
    Ok(Some((line, json)))
}
