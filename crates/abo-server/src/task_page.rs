//! A task's page: its state and figures; while an attempt runs, its elapsed time against its
//! timeout and its reservation, and the live tail of its transcript and logs (`live`); each
//! attempt's history as written (backend, gates with their logs, policy); and its change in the
//! diff viewer with the policy's findings pinned to their lines. It reads the task's own events
//! and row, and the run's first event (its spec): never the run's whole log, so a task of a run of
//! 10,000 tasks loads as fast as one of a run of 10.

use std::fmt::Write;

use axum::extract::{Path, Query, State as St};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use abo_core::event::EventBody;
use abo_core::human;
use abo_core::ids::{AttemptId, RunId, TaskId};

use crate::State;
use crate::dashboard::{esc, page, status_span};
use crate::diffview::{self, Pin};
use crate::error::ApiError;
use crate::home::when;

/// The findings of a policy input (`findings: [{path, line, message, rule}]`) as pins.
fn pins_of(input: &Value) -> Vec<Pin> {
    input["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(Pin {
                path: f["path"].as_str()?.to_owned(),
                line: u32::try_from(f["line"].as_u64()?).ok()?,
                source: format!("policy {}", f["rule"].as_str().unwrap_or("finding")),
                text: f["message"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

#[derive(serde::Deserialize)]
pub struct TaskPageQuery {
    /// A notification's link to one option of the task's question: shown chosen, to confirm.
    choose: Option<usize>,
}

pub async fn task_page(
    St(st): St<State>,
    h: HeaderMap,
    uri: Uri,
    Path((run, task)): Path<(String, String)>,
    Query(q): Query<TaskPageQuery>,
) -> Response {
    // A link from a notification: after logging in, the person comes back to it.
    let here = uri.path_and_query().map_or("/", |p| p.as_str());
    let session = match crate::dashboard::viewer_at(&st, &h, here).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match body(&st, &run, &task, q.choose).await {
        Ok(body) => page(&format!("{run}/{task}"), Some(&run), &session, &body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn body(
    st: &State,
    run: &str,
    task: &str,
    choose: Option<usize>,
) -> Result<String, ApiError> {
    let now = st.ctx.now();
    let (run_id, task_id) = (RunId::new(run), TaskId::new(task));
    let spec = crate::home::spec_head(st, &run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{run}`")))?;
    let row = st
        .ctx
        .store
        .task(&run_id, &task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task `{task}`")))?;
    let events = st.ctx.store.task_events(&run_id, &task_id).await?;
    let redactor = abo_runtime::redact::Redactor::from_process_env(&spec.settings.secret_env);

    let mut o = format!(
        "<h1><a href=\"/runs/{r}\">{r}</a> / {t}</h1><p>{title} — <span class=task-status>{status}</span> · {att} · {cost} · {tok} tokens{reason}</p>",
        r = esc(run),
        t = esc(task),
        title = esc(&row.title),
        status = status_span(&row.status),
        att = match row.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        },
        cost = human::usd(row.cost_usd),
        tok = human::tokens(row.tokens),
        reason = row
            .reason
            .as_deref()
            .map(|x| format!("<br><span class=reason>{}</span>", esc(x)))
            .unwrap_or_default(),
    );

    // What waits for a person on this task: decided here (a notification links to it).
    for a in st.ctx.store.pending_approvals().await? {
        if a.run == run_id && a.task == task_id {
            o.push_str(&crate::home::approval_card_chosen(&a, now, choose));
        }
    }

    // The attempt now: since when, against its timeout, and what it holds.
    let started = events.iter().rev().find_map(|e| match &e.event.body {
        EventBody::TaskStarted {
            attempt,
            backend,
            reserved,
            ..
        } if *attempt == row.attempts => Some((e.event.at, backend.clone(), *reserved)),
        _ => None,
    });
    let running = matches!(row.status.as_str(), "running" | "verifying");
    if let (true, Some((at, backend, reserved))) = (running, &started) {
        let limit = spec.settings.attempt_timeout_ms;
        let elapsed = u64::try_from(now.0 - at.0).unwrap_or(0);
        let _ = write!(
            o,
            "<section class=now><h2>Attempt {n} on {b}</h2><p>started {since} · <span class=clock data-since=\"{iso}\" data-limit-ms={limit}>{e} of {l}</span></p><p class=held>holds {usd}{tokens} until it is charged at the end of the attempt</p></section>",
            n = row.attempts,
            b = esc(backend.as_str()),
            since = when(now, *at),
            iso = at.to_rfc3339(),
            e = human::duration_ms(elapsed),
            l = human::duration_ms(limit),
            usd = reserved
                .usd
                .map_or_else(|| "no dollar cap".to_owned(), human::usd),
            tokens = reserved
                .tokens
                .map(|t| format!(", {} tokens", human::tokens(t)))
                .unwrap_or_default(),
        );
    }
    if running {
        let _ = write!(
            o,
            "<section id=live data-live=\"/v1/runs/{r}/tasks/{t}/live\"><h2>Live</h2><p class=live-state>connecting…</p><h3>Transcript</h3><pre id=transcript aria-live=polite></pre><h3>Logs</h3><div id=logs></div></section>",
            r = esc(run),
            t = esc(task),
        );
    } else if let Some(id) = events.iter().rev().find_map(|e| match &e.event.body {
        EventBody::TaskBackendFinished { transcript, .. } => transcript.clone(),
        _ => None,
    }) {
        // The last attempt's transcript as kept (redacted when it was stored).
        let lines: String = st
            .ctx
            .artifacts
            .tail(&id, 200)
            .lines()
            .filter_map(|l| crate::live::render_line(&redactor.redact(l)))
            .map(|l| format!("<span class=line>{}</span>", esc(&l)))
            .collect();
        let _ = write!(
            o,
            "<section id=transcript-kept><h2>Transcript</h2><pre id=transcript>{lines}</pre></section>"
        );
    }
    // Several candidates at once (`proposals:`, `hedge:`): each with its outcome and score, and
    // why the winner won.
    let candidates = abo_core::proposal::shown(&task_id, &events, None);
    if !candidates.is_empty() {
        o.push_str("<section id=candidates><h2>Candidates</h2><table><tr><th>attempt</th><th>backend</th><th>outcome</th><th>rank</th><th>review</th><th>findings</th><th>coverage</th><th>changed lines</th><th>cost</th><th>why</th></tr>");
        for c in &candidates {
            let sc = &c.score;
            let _ = write!(
                o,
                "<tr class=\"candidate {outcome}\"><td>{a}{hedge}</td><td>{b}</td><td>{outcome}</td><td>{rank}</td><td>{review}</td><td>{findings}</td><td>{coverage}</td><td>{lines}</td><td>{cost}</td><td>{why}</td></tr>",
                a = c.attempt,
                hedge = if c.hedge { " (hedge)" } else { "" },
                b = esc(c.backend.as_str()),
                outcome = c.outcome,
                rank = c.rank.map_or("-".to_owned(), |r| r.to_string()),
                review = sc.review.map_or("-", |r| r.as_str()),
                findings = sc.findings.map_or("-".to_owned(), |f| f.to_string()),
                coverage = sc.coverage_bp.map_or("-".to_owned(), |bp| format!(
                    "{}.{:02}%",
                    bp / 100,
                    bp % 100
                )),
                lines = sc.diff_lines,
                cost = human::usd(sc.cost_micros as f64 / 1e6),
                why = esc(c.reason.as_deref().unwrap_or("")),
            );
        }
        o.push_str("</table></section>");
    }
    // Each attempt as written.
    let mut pins = Vec::new();
    let mut review_pins: Vec<Pin> = Vec::new();
    o.push_str("<h2>History</h2>");
    for e in &events {
        let line = match &e.event.body {
            EventBody::TaskStarted {
                attempt,
                backend,
                reserved,
                ..
            } => format!(
                "attempt {attempt} started on <b>{}</b>{}",
                esc(backend.as_str()),
                reserved
                    .usd
                    .map(|u| format!(", {} reserved", human::usd(u)))
                    .unwrap_or_default()
            ),
            EventBody::TaskBackendFinished {
                attempt,
                ok,
                reason,
                usage,
                cost_usd,
                duration_ms,
                message,
                ..
            } => format!(
                "attempt {attempt}: backend {} {} · {} · {} tokens · {}{}",
                if *ok {
                    "produced a change"
                } else {
                    "<span class=s-failed>failed</span>"
                },
                esc(reason.as_deref().unwrap_or("")),
                human::duration_ms(*duration_ms),
                human::tokens(usage.map_or(0, |u| u.total())),
                cost_usd.map_or_else(|| "cost unknown".to_owned(), human::usd),
                message
                    .as_deref()
                    .map(|m| format!("<blockquote>{}</blockquote>", esc(&redactor.redact(m))))
                    .unwrap_or_default()
            ),
            EventBody::TaskGate {
                attempt,
                name,
                passed,
                log,
                duration_ms,
                ..
            } => {
                let log = log
                    .as_ref()
                    .map(|l| {
                        format!(
                            "<pre class=gatelog>{}</pre>",
                            esc(&redactor.redact(&st.ctx.artifacts.tail(l, 60)))
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "attempt {attempt}: gate <b>{}</b> {} in {}{log}",
                    esc(name.as_str()),
                    if *passed {
                        "passed"
                    } else {
                        "<span class=s-failed>failed</span>"
                    },
                    human::duration_ms(*duration_ms)
                )
            }
            EventBody::TaskReview {
                attempt,
                reviewer,
                verdict,
                findings,
                ..
            } => {
                // The last review's comments are pinned to their lines (a reviewer's text is a
                // model's: redacted, and escaped by the viewer).
                review_pins = findings
                    .iter()
                    .filter_map(|f| {
                        Some(Pin {
                            path: f.file.clone(),
                            line: f.line?,
                            source: "review".into(),
                            text: redactor.redact(&format!("{:?}: {}", f.severity, f.text)),
                        })
                    })
                    .collect();
                format!(
                    "attempt {attempt} reviewed by <b>{}</b>: {} ({} finding{})",
                    esc(reviewer.as_str()),
                    esc(&format!("{verdict:?}")),
                    findings.len(),
                    if findings.len() == 1 { "" } else { "s" }
                )
            }
            EventBody::TaskPolicy {
                verdict,
                deny,
                require_approval,
                risk,
                input,
                ..
            } => {
                if let Some(id) = input
                    && let Ok(bytes) = st.ctx.artifacts.get(id)
                    && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                {
                    pins = pins_of(&v);
                }
                format!(
                    "policy: {} (risk {}) {}",
                    verdict.as_str(),
                    esc(risk),
                    esc(&deny
                        .iter()
                        .chain(require_approval)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "))
                )
            }
            EventBody::TaskProposals {
                requested,
                attempts,
                short,
                ..
            } => format!(
                "{} of {requested} proposals started{}",
                attempts.len(),
                short
                    .as_deref()
                    .map(|s| format!(": {}", esc(s)))
                    .unwrap_or_default()
            ),
            EventBody::TaskHedge {
                hedge,
                backend,
                reason,
                ..
            } => format!(
                "hedged: attempt {hedge} on <b>{}</b>: {}",
                esc(backend.as_str()),
                esc(reason)
            ),
            EventBody::TaskProposal {
                attempt,
                outcome,
                reason,
                ..
            } => format!("candidate {attempt} {}: {}", outcome.as_str(), esc(reason)),
            other => esc(other.kind()),
        };
        let _ = write!(
            o,
            "<div class=card>{line} <small>{}</small></div>",
            when(now, e.event.at)
        );
    }

    // The change: the landed commit, else the last attempt's branch (redacted on the way in).
    let rev = match (&row.commit, row.attempts) {
        (Some(c), _) => Some(c.clone()),
        (None, n) if n > 0 => Some(AttemptId::new(run_id.clone(), task_id.clone(), n).branch()),
        _ => None,
    };
    // Only a commit past the run's base is a change (an attempt's branch starts at the base).
    let mut diff = String::new();
    if let Some(rev) = rev
        && !running
    {
        let range = format!("{}..{rev}", spec.base);
        let ahead = st
            .ctx
            .git
            .run(&["rev-list", "-1", &range, "--"])
            .await
            .unwrap_or_default();
        if !ahead.trim().is_empty() {
            diff = st
                .ctx
                .git
                .run(&[
                    "show",
                    "--stat",
                    "--patch",
                    "--text",
                    "--format=%H %s",
                    &rev,
                    "--",
                ])
                .await
                .unwrap_or_default();
        }
    }
    // A change not committed yet (waiting for approval, the attempt's worktree kept): what the
    // worktree holds against its base, read as the gates read it (git hardened against the
    // worktree, no external diff or textconv), so the person deciding sees what they approve.
    if diff.is_empty() && !running && row.commit.is_none() && row.attempts > 0 {
        let wt = st.ctx.worktree(&AttemptId::new(
            run_id.clone(),
            task_id.clone(),
            row.attempts,
        ));
        if wt.is_dir() {
            diff = st
                .ctx
                .git
                .run_in(&wt, abo_runtime::change::SHOWN)
                .await
                .unwrap_or_default();
        }
    }
    let diff = redactor.redact(&diff);
    pins.extend(review_pins);
    let _ = write!(o, "<h2>Change</h2>{}", diffview::render(&diff, &pins));
    Ok(o)
}
