//! The dashboard's home page, at a glance: what runs, what waits for you, what failed, what is
//! queued and what landed today; today's and this week's cost against `budgets.daily_usd` and
//! `weekly_usd` with the alert threshold; budget alerts; pull requests ready for review; the
//! approvals waiting, decidable in place; `Pause all` and `Kill all` for admins. Every figure is
//! one query over the projections, so a run of 10,000 tasks costs what a run of 10 does.

use std::fmt::Write;

use axum::extract::State as St;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use abo_core::budget::BudgetSpec;
use abo_core::human;
use abo_core::ids::Timestamp;
use abo_store::{ApprovalRow, RunRow};

use crate::State;
use crate::auth::{Role, require};
use crate::dashboard::{esc, page, status_span, viewer};
use crate::error::ApiError;

/// A time for a person: its age now, and (by the page's script) the time in the viewer's zone.
pub(crate) fn when(now: Timestamp, t: Timestamp) -> String {
    let iso = t.to_rfc3339();
    format!(
        "<time datetime=\"{iso}\" title=\"{iso}\">{}</time>",
        human::age(now, t)
    )
}

/// An agent's question: its options as buttons, a box for words, and Skip (a rejection). With
/// `chosen` (a notification's link to one option), that option is shown chosen with one button
/// that confirms it: following the link changes nothing, the confirmation is a POST of the session.
fn decision_card(a: &ApprovalRow, now: Timestamp, chosen: Option<usize>) -> String {
    let id = esc(&a.id);
    let q = abo_core::decide::question::from_reasons(&a.reasons);
    let options: String = q
        .options
        .iter()
        .enumerate()
        .map(|(i, o)| {
            format!(
                "<button data-answer=\"{id}\" data-choose={}>{}</button>",
                i + 1,
                esc(o)
            )
        })
        .collect();
    let confirm = match chosen {
        Some(n) => match n.checked_sub(1).and_then(|i| q.options.get(i)) {
            Some(o) => format!(
                "<p class=chosen>You chose option {n}: <b>{o}</b>. <button class=confirm data-answer=\"{id}\" data-choose={n}>Confirm option {n}</button></p>",
                o = esc(o)
            ),
            None => {
                format!("<p class=s-failed>The question has no option {n}: choose one below.</p>")
            }
        },
        None => String::new(),
    };
    format!(
        "<div class=\"card decision\" id=decide data-approval=\"{id}\"><b>{task}</b> in <a href=\"/runs/{run}\">{run}</a> · the agent asks, {at}<p class=question>{question}</p>{confirm}<p class=options>{options}</p><textarea id=\"reason-{id}\" placeholder=\"your answer, or why you skip it\"></textarea><button data-answer=\"{id}\">Answer</button><button data-decide=\"{id}\" data-approve=false>Skip</button></div>",
        task = esc(a.task.as_str()),
        run = esc(a.run.as_str()),
        at = when(now, a.created_at),
        question = esc(&q.text),
    )
}

/// An approval waiting, with its reasons, a reason box and its decisions.
pub(crate) fn approval_card(a: &ApprovalRow, now: Timestamp) -> String {
    approval_card_chosen(a, now, None)
}

/// An approval waiting; a decision's with the option a notification's link chose, to confirm.
pub(crate) fn approval_card_chosen(
    a: &ApprovalRow,
    now: Timestamp,
    chosen: Option<usize>,
) -> String {
    if a.action == "decision" {
        return decision_card(a, now, chosen);
    }
    let id = esc(&a.id);
    let reasons: String = a
        .reasons
        .iter()
        .map(|r| format!("<li>{}</li>", esc(r)))
        .collect();
    format!(
        "<div class=card data-approval=\"{id}\"><b>{task}</b> in <a href=\"/runs/{run}\">{run}</a> ({action}) · asked {at}<ul>{reasons}</ul><textarea id=\"reason-{id}\" placeholder=\"your reason (required)\"></textarea><button data-decide=\"{id}\" data-approve=true>Approve</button><button data-decide=\"{id}\" data-approve=false>Reject</button></div>",
        task = esc(a.task.as_str()),
        run = esc(a.run.as_str()),
        action = esc(&a.action),
        at = when(now, a.created_at),
    )
}

/// Spend against a cap as a bar, with a mark at the alert threshold.
fn bar(label: &str, spent: f64, limit: Option<f64>, alert_at: f64) -> String {
    let Some(limit) = limit.filter(|l| *l > 0.0) else {
        return format!(
            "<div class=spend data-window=\"{w}\"><span class=what>{label}</span><span class=of>{} (no cap)</span></div>",
            human::usd(spent),
            w = esc(label),
        );
    };
    let pct = human::percent(spent, limit).unwrap_or(0);
    let alert = spent >= alert_at * limit;
    let mark = (alert_at * 100.0).clamp(0.0, 100.0);
    format!(
        "<div class=spend data-window=\"{w}\" data-pct={pct}><span class=what>{label}</span><svg class=\"bar{a}\" viewBox=\"0 0 100 4\" preserveAspectRatio=none role=img aria-label=\"{pct}% of the cap\"><rect class=used width=\"{pct}\" height=\"4\"/><rect class=mark x=\"{mark:.1}\" width=\"0.6\" height=\"4\"/></svg><span class=of>{} of {} ({pct}%) spent or held{flag}</span></div>",
        human::usd(spent),
        human::usd(limit),
        w = esc(label),
        a = if alert { " alert" } else { "" },
        flag = if alert {
            format!(" <b class=s-failed>over {:.0}%</b>", alert_at * 100.0)
        } else {
            String::new()
        },
    )
}

/// The fields of a run's spec its pages need, read from its `run.created` without building its
/// tasks (a run of 10,000 tasks costs what a run of 10 does).
#[derive(serde::Deserialize)]
pub(crate) struct SpecHead {
    pub base: abo_core::ids::CommitSha,
    pub settings: abo_core::spec::RunSettings,
}

pub(crate) async fn spec_head(
    st: &State,
    run: &abo_core::ids::RunId,
) -> Result<Option<SpecHead>, ApiError> {
    match st.ctx.store.run_created_data(run).await? {
        Some(data) => Ok(Some(
            serde_json::from_str(&data).map_err(ApiError::internal)?,
        )),
        None => Ok(None),
    }
}

/// The budgets the latest run was created with (its `run.created`), read without replaying it.
async fn latest_budgets(st: &State, runs: &[RunRow]) -> Result<BudgetSpec, ApiError> {
    let Some(latest) = runs.iter().max_by_key(|r| r.created_at) else {
        return Ok(BudgetSpec::default());
    };
    Ok(spec_head(st, &latest.id)
        .await?
        .map(|h| h.settings.budgets)
        .unwrap_or_default())
}

/// The runs table (the 100 most recent).
async fn runs_table(st: &State, runs: &[RunRow], now: Timestamp) -> Result<String, ApiError> {
    let mut rows = String::new();
    let totals = st.ctx.store.task_totals().await?;
    for r in runs.iter().take(100) {
        let (n, landed) = totals.get(r.id.as_str()).copied().unwrap_or((0, 0));
        let _ = write!(
            rows,
            "<tr data-run=\"{id}\"><td><a href=\"/runs/{id}\">{id}</a></td><td>{title}</td><td>{status}</td><td>{landed}/{n}</td><td>{usd}</td><td class=wide>{at}</td></tr>",
            id = esc(r.id.as_str()),
            title = esc(&r.title),
            status = status_span(&r.status),
            usd = human::usd(r.spent_usd),
            at = when(now, r.created_at),
        );
    }
    Ok(format!(
        "<h2 id=runs>Runs</h2><table><tr><th>run</th><th>title</th><th>status</th><th>landed</th><th>spent</th><th class=wide>created</th></tr>{rows}</table>"
    ))
}

pub async fn home(St(st): St<State>, h: HeaderMap) -> Response {
    let session = match viewer(&st, &h).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let admin = require(&st.ctx.store, &h, Role::Admin).await.is_ok();
    match body(&st, admin).await {
        Ok(body) => page("home", None, &session, &body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn body(st: &State, admin: bool) -> Result<String, ApiError> {
    let now = st.ctx.now();
    let store = &st.ctx.store;
    let mut runs = store.runs().await?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let budgets = latest_budgets(st, &runs).await?;
    let tz = match abo_runtime::windows::zone(budgets.timezone.as_deref()) {
        Ok(tz) => tz,
        Err(_) => abo_runtime::windows::zone(Some("UTC")).map_err(ApiError::internal)?,
    };
    let [(day, _), (week, _)] =
        abo_runtime::windows::bounds(now, &tz).map_err(ApiError::internal)?;
    let live = store.live_task_counts().await?;
    let count = |k: &[&str]| -> u64 { k.iter().filter_map(|s| live.get(*s)).sum() };
    let today = store
        .kind_counts_since(&["task.landed", "task.failed", "task.denied"], day)
        .await?;
    let pending = store.pending_approvals().await?;
    let counts = [
        ("running", count(&["running", "verifying"]), "#runs"),
        ("waiting", pending.len() as u64, "#waiting"),
        (
            "failed",
            today.get("task.failed").copied().unwrap_or(0)
                + today.get("task.denied").copied().unwrap_or(0),
            "/summary",
        ),
        ("queued", count(&["pending", "ready"]), "#runs"),
        (
            "landed",
            today.get("task.landed").copied().unwrap_or(0),
            "/summary",
        ),
    ];
    let label = |k: &'static str| -> &'static str {
        match k {
            "waiting" => "waiting for you",
            "failed" => "failed today",
            "landed" => "landed today",
            k => k,
        }
    };
    let mut o = String::from("<h1>At a glance</h1><section class=glance>");
    for (k, n, href) in counts {
        let _ = write!(
            o,
            "<a class=\"count c-{k}\" data-count={k} href=\"{href}\"><b>{}</b><span>{}</span></a>",
            human::grouped(n),
            label(k)
        );
    }
    o.push_str("</section>");

    let (day_usd, _) = store.spend_since(day).await?;
    let (week_usd, _) = store.spend_since(week).await?;
    let _ = write!(
        o,
        "<h2>Cost</h2><section class=costs>{}{}</section>",
        bar("today", day_usd, budgets.daily.usd, budgets.alert_at),
        bar("this week", week_usd, budgets.weekly.usd, budgets.alert_at),
    );

    let alerts = store.alerts_list(week).await?;
    if !alerts.is_empty() {
        o.push_str("<h2>Budget alerts</h2><ul class=alerts>");
        for a in &alerts {
            let cap = a.key.split('@').next().unwrap_or(&a.key);
            let _ = write!(
                o,
                "<li data-alert=\"{k}\"><b class=s-failed>{k}</b> reached {:.0}% of its cap in run <a href=\"/runs/{r}\">{r}</a> · {}</li>",
                budgets.alert_at * 100.0,
                when(now, a.at),
                k = esc(cap),
                r = esc(&a.run),
            );
        }
        o.push_str("</ul>");
    }

    let prs: Vec<&RunRow> = runs.iter().filter(|r| r.pull_request.is_some()).collect();
    if !prs.is_empty() {
        o.push_str("<h2>Ready for review</h2><ul class=prs>");
        for r in prs.iter().take(20) {
            let url = r.pull_request.as_deref().unwrap_or("");
            let _ = write!(
                o,
                "<li><a href=\"{u}\" rel=noopener>{u}</a> — run <a href=\"/runs/{id}\">{id}</a> {t}</li>",
                u = esc(url),
                id = esc(r.id.as_str()),
                t = esc(&r.title),
            );
        }
        o.push_str("</ul>");
    }

    let _ = write!(o, "<h2 id=waiting>Waiting for you</h2>");
    if pending.is_empty() {
        o.push_str("<p>Nothing waits for you.</p>");
    }
    for a in &pending {
        o.push_str(&approval_card(a, now));
    }

    if admin {
        let going = runs
            .iter()
            .filter(|r| matches!(r.status.as_str(), "running" | "paused"))
            .count();
        let _ = write!(
            o,
            "<section class=controls><button data-act=\"/v1/runs/pause-all\" data-confirm=\"Pause all {going} runs going? Work in flight finishes, nothing new starts.\">Pause all</button><button data-act=\"/v1/runs/kill-all\" data-confirm=\"Kill all {going} runs going? Their processes stop now and nothing more lands.\" class=danger>Kill all</button></section>"
        );
    }
    o.push_str(&runs_table(st, &runs, now).await?);
    Ok(o)
}
