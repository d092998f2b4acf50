//! A run's page: its figures, its caps, its tasks a page at a time (filtered by status), and its
//! graph while the run is small enough to draw (a bar of its tasks by status otherwise). Read from
//! the run's projections and its own events, never its whole log: a run of 10,000 tasks loads as
//! fast as a run of 10, and its live stream starts after what the page shows.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State as St};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use abo_core::human;
use abo_core::ids::RunId;
use abo_core::state::TaskStatus;

use crate::dashboard::{caps_html, dag_svg, esc, page, status_span, viewer};
use crate::error::ApiError;
use crate::{State, shapes};

/// Tasks listed per page.
pub const PAGE_TASKS: u64 = 100;

/// The largest run whose graph is drawn (its whole spec is read to draw it).
pub const GRAPH_TASKS: u64 = 200;

/// The status a run nobody drives shows for its tasks left in flight.
const INTERRUPTED: &str = "interrupted";

#[derive(Deserialize)]
pub struct RunPageQuery {
    status: Option<String>,
    page: Option<u64>,
}

/// The status filter of a page or an API call: a status as `TaskStatus` spells it, or
/// `interrupted`; anything else is an error naming the statuses there are.
pub fn status_filter(s: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s == INTERRUPTED {
        return Ok(Some(INTERRUPTED));
    }
    match TaskStatus::parse(s) {
        Some(t) => Ok(Some(t.as_str())),
        None => {
            let known: Vec<&str> = TaskStatus::ALL.iter().map(|t| t.as_str()).collect();
            Err(ApiError::bad_request(format!(
                "status: no status `{s}`; one of {}, {INTERRUPTED}",
                known.join(", ")
            )))
        }
    }
}

/// The run's tasks by status as the page shows them: a run nobody drives has its running and
/// verifying tasks counted `interrupted`.
fn shown_counts(mut counts: BTreeMap<String, u64>, orphaned: bool) -> BTreeMap<String, u64> {
    if orphaned {
        let moved: u64 = ["running", "verifying"]
            .iter()
            .filter_map(|s| counts.remove(*s))
            .sum();
        if moved > 0 {
            *counts.entry(INTERRUPTED.to_owned()).or_default() += moved;
        }
    }
    counts
}

fn fill(status: &str) -> &'static str {
    match status {
        "landed" => "#3f9d6a",
        "failed" | "denied" | "reverted" => "#c94b4b",
        "running" | "verifying" => "#3b7dd8",
        "awaiting_approval" | "paused" | "interrupted" => "#d79b28",
        _ => "#9aa3ad",
    }
}

/// A large run's graph in one bar: its tasks by status, each part a link to those tasks.
fn status_bar(run: &str, counts: &BTreeMap<String, u64>, total: u64) -> String {
    let mut s = format!(
        "<p class=more>{} tasks: the graph is drawn for runs of up to {GRAPH_TASKS}; here they are by status.</p><svg class=statusbar viewBox=\"0 0 1000 24\" preserveAspectRatio=none width=\"100%\" height=\"24\" role=img aria-label=\"tasks by status\">",
        human::grouped(total)
    );
    let mut x = 0u64;
    for (status, n) in counts {
        let w = (n * 1000).checked_div(total).unwrap_or(0);
        let _ = write!(
            s,
            "<a href=\"/runs/{r}?status={st}\"><rect data-status=\"{st}\" x=\"{x}\" y=\"0\" width=\"{w}\" height=\"24\" fill=\"{f}\"><title>{st}: {n}</title></rect></a>",
            r = esc(run),
            st = esc(status),
            f = fill(status),
            n = human::grouped(*n),
        );
        x += w;
    }
    s.push_str("</svg>");
    s
}

/// The filter's links: every status the run has, with its count.
fn filters(run: &str, counts: &BTreeMap<String, u64>, total: u64, on: Option<&str>) -> String {
    let link = |label: &str, q: &str, n: u64, here: bool| {
        let n = human::grouped(n);
        if here {
            format!("<b class=filter-on>{label} ({n})</b>")
        } else {
            format!(
                "<a class=filter href=\"/runs/{}{q}\">{label} ({n})</a>",
                esc(run)
            )
        }
    };
    let mut parts = vec![link("all", "", total, on.is_none())];
    for (status, n) in counts {
        parts.push(link(
            &esc(status),
            &format!("?status={}", esc(status)),
            *n,
            on == Some(status.as_str()),
        ));
    }
    format!("<p class=filters>{}</p>", parts.join(" · "))
}

/// "tasks 101–200 of 9,000" with the previous and next pages' links.
fn pager(run: &str, on: Option<&str>, page: u64, shown: usize, of: u64) -> String {
    let first = page * PAGE_TASKS;
    let q = |p: u64| {
        let mut q = format!("?page={p}");
        if let Some(s) = on {
            let _ = write!(q, "&amp;status={}", esc(s));
        }
        format!("/runs/{}{q}", esc(run))
    };
    let mut o = format!(
        "<p class=pager>tasks {}–{} of {}",
        human::grouped(if shown == 0 { first } else { first + 1 }),
        human::grouped(first + shown as u64),
        human::grouped(of)
    );
    if page > 0 {
        let _ = write!(o, " · <a rel=prev href=\"{}\">previous</a>", q(page - 1));
    }
    if first + (shown as u64) < of {
        let _ = write!(o, " · <a rel=next href=\"{}\">next</a>", q(page + 1));
    }
    o.push_str("</p>");
    o
}

pub async fn run_page(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RunPageQuery>,
) -> Response {
    let session = match viewer(&st, &h).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let inner = async {
        let on = status_filter(q.status.as_deref())?;
        let page_no = q.page.unwrap_or(0);
        let run = RunId::new(&id);
        let row = st
            .ctx
            .store
            .run(&run)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
        let view = shapes::view_of(
            &st.ctx,
            row,
            shapes::Tasks::Page {
                statuses: on.as_slice(),
                offset: page_no.saturating_mul(PAGE_TASKS),
                limit: PAGE_TASKS,
            },
        )
        .await?;
        let counts = shown_counts(st.ctx.store.task_status_counts(&run).await?, view.orphaned);
        let total: u64 = counts.values().sum();
        let of = on.map_or(total, |s| counts.get(s).copied().unwrap_or(0));
        let doc = shapes::to_json(&view);
        let graph = if total <= GRAPH_TASKS {
            let state = abo_runtime::engine::load(&st.ctx.store, &run)
                .await
                .map_err(ApiError::internal)?;
            dag_svg(&state)
        } else {
            status_bar(&id, &counts, total)
        };
        let r = &doc["run"];
        let mut tasks = String::new();
        for t in doc["tasks"].as_array().into_iter().flatten() {
            let tid = t["id"].as_str().unwrap_or("");
            let _ = write!(
                tasks,
                "<tr data-task=\"{tid}\"><td><a href=\"/runs/{run}/tasks/{tid}\">{tid}</a></td><td class=status>{status}</td><td>{att}</td><td class=wide>{backend}</td><td>{cost}</td><td class=wide>{tok}</td><td>{reason}</td></tr>",
                tid = esc(tid),
                run = esc(&id),
                status = status_span(t["status"].as_str().unwrap_or("")),
                att = t["attempts"],
                backend = esc(t["backend"].as_str().unwrap_or("-")),
                cost = human::usd(t["cost_usd"].as_f64().unwrap_or(0.0)),
                tok = human::tokens(t["tokens"].as_u64().unwrap_or(0)),
                reason = esc(t["reason"].as_str().unwrap_or(""))
            );
        }
        let shown = view.tasks.len();
        let live = !matches!(r["status"].as_str(), Some("finished" | "killed"));
        let buttons = if live {
            format!(
                "<p><button data-act=\"/v1/runs/{i}/pause\" data-confirm=\"Pause run {i}?\">Pause</button><button data-act=\"/v1/runs/{i}/resume\">Resume</button><button data-act=\"/v1/runs/{i}/kill\" data-confirm=\"Kill run {i}? Nothing more lands.\">Kill</button></p>",
                i = esc(&id)
            )
        } else {
            String::new()
        };
        let pr = r["pull_request"]
            .as_str()
            .map(|u| format!("<p>Pull request: <a href=\"{0}\">{0}</a></p>", esc(u)))
            .unwrap_or_default();
        Ok::<_, ApiError>(format!(
            "<h1>Run {i}</h1><p>{title} — {status}{reason} · branch <code>{branch}</code> · spent {usd}, {tok} tokens</p>{pr}{buttons}{graph}{caps}<h2>Tasks</h2>{filters}{pager}<table><tr><th>task</th><th>status</th><th>att</th><th class=wide>backend</th><th>cost</th><th class=wide>tokens</th><th>reason</th></tr>{tasks}</table>",
            i = esc(&id),
            title = esc(r["title"].as_str().unwrap_or("")),
            status = status_span(r["status"].as_str().unwrap_or("")),
            reason = r["reason"]
                .as_str()
                .map(|x| format!(" ({})", esc(x)))
                .unwrap_or_default(),
            branch = esc(r["branch"].as_str().unwrap_or("")),
            usd = human::usd(r["spent_usd"].as_f64().unwrap_or(0.0)),
            tok = human::tokens(r["spent_tokens"].as_u64().unwrap_or(0)),
            caps = caps_html(&doc),
            filters = filters(&id, &counts, total, on),
            pager = pager(&id, on, page_no, shown, of),
        ))
    };
    match inner.await {
        Ok(body) => page(&format!("run {id}"), Some(&id), &session, &body).into_response(),
        Err(e) => e.into_response(),
    }
}
