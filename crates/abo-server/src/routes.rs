//! The routes: one table ([`ROUTES`]) that the router, the role checks and `/openapi.json` share.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State as St};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use abo_core::ids::{RunId, TaskId, Timestamp};

use crate::auth::{Credential, Role, require};
use crate::error::ApiError;
use crate::{CreateRun, State, shapes};

/// Requests larger than this are refused (413).
pub const BODY_LIMIT: usize = 64 * 1024;

/// One route: method, path (axum syntax), the role it needs (`None`: no token), and a summary.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub role: Option<Role>,
    pub summary: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    role: Option<Role>,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        role,
        summary,
    }
}

const V: Option<Role> = Some(Role::Viewer);
const AP: Option<Role> = Some(Role::Approver);
const AD: Option<Role> = Some(Role::Admin);

pub const ROUTES: &[Route] = &[
    r(
        "get",
        "/healthz",
        None,
        "Liveness: 200 `ok`, no token needed.",
    ),
    r("get", "/v1/runs", V, "Runs, newest first."),
    r(
        "post",
        "/v1/runs",
        AD,
        "Create a run from a backlog in the repository and execute it.",
    ),
    r(
        "get",
        "/v1/runs/{id}",
        V,
        "A run and its tasks: the shape of `abo status --json`.",
    ),
    r(
        "post",
        "/v1/runs/{id}/pause",
        AD,
        "Pause a run: nothing new starts.",
    ),
    r(
        "post",
        "/v1/runs/{id}/resume",
        AD,
        "Resume a paused or interrupted run.",
    ),
    r(
        "post",
        "/v1/runs/{id}/kill",
        AD,
        "Kill a run: its processes stop, nothing more lands.",
    ),
    r(
        "get",
        "/v1/runs/{id}/tasks",
        V,
        "A run's tasks in plan order: all, or a page with `status` (one status), `offset` and `limit` (at most 1000).",
    ),
    r(
        "get",
        "/v1/runs/{id}/tasks/{task}/live",
        V,
        "Server-sent: a task's current attempt as it runs (its transcript's tail and its logs, redacted; its state when it changes).",
    ),
    r(
        "post",
        "/v1/runs/pause-all",
        AD,
        "Pause every running run; returns each run with its status after it.",
    ),
    r(
        "post",
        "/v1/runs/kill-all",
        AD,
        "Kill every run still going (running or paused); returns each with its status.",
    ),
    r(
        "post",
        "/v1/tasks/{id}/retry",
        AD,
        "Fresh attempts for a failed, denied or cancelled task.",
    ),
    r("get", "/v1/approvals", V, "Pending approvals."),
    r(
        "post",
        "/v1/approvals/{id}/approve",
        AP,
        "Approve, with a reason.",
    ),
    r(
        "post",
        "/v1/approvals/{id}/reject",
        AP,
        "Reject, with a reason.",
    ),
    r(
        "post",
        "/v1/approvals/{id}/answer",
        AP,
        "Answer an agent's question (a `decision` approval): `{\"choose\": N}` or `{\"answer\": TEXT}`; the next attempt gets it as feedback.",
    ),
    r(
        "get",
        "/v1/events",
        V,
        "Events after a sequence number, optionally of one run.",
    ),
    r(
        "get",
        "/v1/events/stream",
        V,
        "Server-sent events: id = seq, event = kind; resumable with Last-Event-ID.",
    ),
    r(
        "post",
        "/v1/policy/evaluate",
        V,
        "Evaluate the policy bundle on an input.",
    ),
    r(
        "get",
        "/v1/budgets",
        V,
        "Each unfinished run's caps with what is spent and reserved.",
    ),
    r("get", "/v1/report", V, "The figures of `abo report`."),
    r("get", "/metrics", V, "Prometheus text metrics."),
    r("get", "/openapi.json", V, "This API's OpenAPI 3 document."),
];

/// The role a route needs.
fn need(method: &str, path: &str) -> Option<Role> {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .and_then(|r| r.role)
}

async fn auth(st: &State, h: &HeaderMap, method: &str, path: &str) -> Result<Role, ApiError> {
    match need(method, path) {
        Some(role) => require(&st.ctx.store, h, role).await,
        None => Ok(Role::Viewer),
    }
}

/// The router over [`ROUTES`], and the MCP server at `/mcp` (its own token check: `mcp`).
pub fn app(state: State) -> axum::Router {
    let mcp = axum::Router::new()
        .route_service("/mcp", crate::mcp::http_service(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::authenticate,
        ));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/runs", get(list_runs).post(create_run))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/pause", post(pause))
        .route("/v1/runs/{id}/resume", post(resume))
        .route("/v1/runs/{id}/kill", post(kill))
        .route("/v1/runs/{id}/tasks", get(run_tasks))
        .route(
            "/v1/runs/{id}/tasks/{task}/live",
            get(crate::live::task_live),
        )
        .route("/v1/runs/pause-all", post(pause_all))
        .route("/v1/runs/kill-all", post(kill_all))
        .route("/v1/tasks/{id}/retry", post(retry))
        .route("/v1/approvals", get(approvals))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
        .route("/v1/approvals/{id}/answer", post(answer))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(stream))
        .route("/v1/policy/evaluate", post(evaluate))
        .route("/v1/budgets", get(budgets))
        .route("/v1/report", get(report))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(crate::home::home))
        .route("/login", post(crate::dashboard::login))
        .route("/logout", post(crate::dashboard::logout))
        .route("/static/dashboard.js", get(crate::dashboard::script))
        .route("/static/dashboard.css", get(crate::dashboard::stylesheet))
        .route("/runs/{id}", get(crate::run_page::run_page))
        .route("/runs/{id}/tasks/{task}", get(crate::task_page::task_page))
        .route("/approvals", get(crate::dashboard::approvals_page))
        .route("/summary", get(crate::summary_page::summary_page))
        .merge(mcp)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::csrf,
        ))
        .layer(axum::middleware::from_fn(crate::guard::headers))
        .with_state(state)
}

/// A body that could not be read: too large (413), not JSON or not the shape (400/415/422).
fn rejected(e: axum::extract::rejection::JsonRejection) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    ApiError::new(status, code, e.body_text())
}

async fn run_row(st: &State, id: &str) -> Result<abo_store::RunRow, ApiError> {
    st.ctx
        .store
        .run(&RunId::new(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))
}

async fn list_runs(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/runs").await?;
    let mut runs = st.ctx.store.runs().await?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(Json(Value::Array(
        runs.iter().map(shapes::run_brief).collect(),
    )))
}

async fn create_run(
    St(st): St<State>,
    h: HeaderMap,
    body: Result<Json<CreateRun>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    auth(&st, &h, "post", "/v1/runs").await?;
    let Json(req) = body.map_err(rejected)?;
    let id = st.control.create_run(req).await?;
    let row = run_row(&st, id.as_str()).await?;
    let view = shapes::view(&st.ctx, row).await?;
    Ok((StatusCode::CREATED, Json(shapes::to_json(&view))).into_response())
}

async fn get_run(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/runs/{id}").await?;
    let row = run_row(&st, &id).await?;
    Ok(Json(shapes::to_json(&shapes::view(&st.ctx, row).await?)))
}

#[derive(Deserialize)]
struct TasksQuery {
    status: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

/// The most tasks one page of `/v1/runs/{id}/tasks` holds.
const TASKS_LIMIT: u64 = 1000;

/// A run's tasks in plan order: all of them, or (with `status`, `offset` or `limit`) a page read
/// from the tasks projection alone, at most [`TASKS_LIMIT`].
async fn run_tasks(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TasksQuery>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/runs/{id}/tasks").await?;
    let row = run_row(&st, &id).await?;
    let on = crate::run_page::status_filter(q.status.as_deref())?;
    let which = if on.is_none() && q.offset.is_none() && q.limit.is_none() {
        shapes::Tasks::All
    } else {
        let limit = q.limit.unwrap_or(TASKS_LIMIT);
        if limit == 0 || limit > TASKS_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit: {limit} is not from 1 to {TASKS_LIMIT}"
            )));
        }
        shapes::Tasks::Page {
            statuses: on.as_slice(),
            offset: q.offset.unwrap_or(0),
            limit,
        }
    };
    let doc = shapes::to_json(&shapes::view_of(&st.ctx, row, which).await?);
    Ok(Json(doc["tasks"].clone()))
}

async fn act(
    st: &State,
    h: &HeaderMap,
    id: &str,
    what: &'static str,
) -> Result<Json<Value>, ApiError> {
    let path = match what {
        "pause" => "/v1/runs/{id}/pause",
        "resume" => "/v1/runs/{id}/resume",
        _ => "/v1/runs/{id}/kill",
    };
    auth(st, h, "post", path).await?;
    let row = run_row(st, id).await?;
    let status = st.control.control(row.id.clone(), what).await?;
    Ok(Json(json!({ "run": row.id, "status": status })))
}

async fn pause(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&st, &h, &id, "pause").await
}

async fn resume(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&st, &h, &id, "resume").await
}

async fn kill(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&st, &h, &id, "kill").await
}

/// Pauses (or kills) every run still going: each run's own control, its outcome listed.
async fn every(st: &State, h: &HeaderMap, what: &'static str) -> Result<Json<Value>, ApiError> {
    let (path, going): (&str, &[&str]) = if what == "pause" {
        ("/v1/runs/pause-all", &["running"])
    } else {
        ("/v1/runs/kill-all", &["running", "paused"])
    };
    auth(st, h, "post", path).await?;
    let mut out = Vec::new();
    for row in st.ctx.store.runs().await? {
        if !going.contains(&row.status.as_str()) {
            continue;
        }
        let outcome = match st.control.control(row.id.clone(), what).await {
            Ok(status) => json!({ "run": row.id, "status": status }),
            Err(e) => json!({ "run": row.id, "status": row.status, "error": e.message }),
        };
        out.push(outcome);
    }
    Ok(Json(json!({ "runs": out })))
}

async fn pause_all(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    every(&st, &h, "pause").await
}

async fn kill_all(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    every(&st, &h, "kill").await
}

#[derive(Deserialize)]
struct RunQuery {
    run: Option<String>,
}

async fn retry(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "post", "/v1/tasks/{id}/retry").await?;
    let run = st
        .control
        .retry(TaskId::new(&id), q.run.map(RunId::new))
        .await?;
    Ok(Json(
        json!({ "run": run, "task": id, "retry": "requested" }),
    ))
}

async fn approvals(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/approvals").await?;
    Ok(Json(shapes::approvals(
        &st.ctx.store.pending_approvals().await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn decide(
    st: &State,
    h: &HeaderMap,
    id: String,
    approve: bool,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let path = if approve {
        "/v1/approvals/{id}/approve"
    } else {
        "/v1/approvals/{id}/reject"
    };
    auth(st, h, "post", path).await?;
    let Json(Reason { reason }) = body.map_err(rejected)?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    st.control.decide(id.clone(), approve, reason).await?;
    Ok(Json(
        json!({ "approval": id, "decision": if approve { "approved" } else { "rejected" } }),
    ))
}

async fn approve(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &h, id, true, body).await
}

async fn reject(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &h, id, false, body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    choose: Option<usize>,
    answer: Option<String>,
}

async fn answer(
    St(st): St<State>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Answer>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "post", "/v1/approvals/{id}/answer").await?;
    let Json(Answer { choose, answer }) = body.map_err(rejected)?;
    if choose.is_none() && answer.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "an answer is required: `choose` or `answer`",
        ));
    }
    st.control.answer(id.clone(), choose, answer).await?;
    Ok(Json(json!({ "approval": id, "decision": "answered" })))
}

#[derive(Deserialize)]
struct EventsQuery {
    run: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

async fn events(
    St(st): St<State>,
    h: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/events").await?;
    let run = q.run.map(RunId::new);
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let evs = st
        .ctx
        .store
        .events(run.as_ref(), q.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(Value::Array(
        evs.iter().map(|e| e.to_json()).collect(),
    )))
}

/// How often the stream looks for new events (and whether its credential still holds).
const POLL: Duration = Duration::from_millis(200);

/// Events as they are appended, while the credential that opened the stream is live: it is
/// checked after each read of the log, so no event appended after the token was revoked (or the
/// session's token) is sent, and the stream ends.
async fn stream(
    St(st): St<State>,
    h: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    auth(&st, &h, "get", "/v1/events/stream").await?;
    // `auth` found a live credential; an empty hash would match no token and end the stream.
    let credential = Credential::of(&h)
        .map(|c| crate::auth::hash(c.token()))
        .unwrap_or_default();
    let resume = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = resume.or(q.after).unwrap_or(0);
    let run = q.run.map(RunId::new);
    let store = st.ctx.store.clone();
    let s = futures_util::stream::unfold(
        (store, run, after, std::collections::VecDeque::new()),
        move |(store, run, mut after, mut queue)| {
            let credential = credential.clone();
            async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        return Some((Ok::<_, Infallible>(e), (store, run, after, queue)));
                    }
                    let read = store.events(run.as_ref(), after, 500).await;
                    if !crate::auth::live(&store, &credential)
                        .await
                        .unwrap_or(false)
                    {
                        // Revoked (or the store failed: the browser's EventSource reconnects,
                        // and the reconnection is authenticated again).
                        return None;
                    }
                    match read {
                        Ok(batch) if !batch.is_empty() => {
                            for e in batch {
                                after = e.seq;
                                let ev = SseEvent::default()
                                    .id(e.seq.to_string())
                                    .event(e.event.body.kind())
                                    .data(e.to_json().to_string());
                                queue.push_back(ev);
                            }
                        }
                        _ => tokio::time::sleep(POLL).await,
                    }
                }
            }
        },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::default()).into_response())
}

async fn evaluate(
    St(st): St<State>,
    h: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "post", "/v1/policy/evaluate").await?;
    let Json(input) = body.map_err(rejected)?;
    Ok(Json(st.control.evaluate_policy(input)?))
}

async fn budgets(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/budgets").await?;
    let mut out = Vec::new();
    for row in st.ctx.store.runs().await? {
        if matches!(row.status.as_str(), "finished" | "killed") {
            continue;
        }
        let doc = shapes::to_json(&shapes::view(&st.ctx, row).await?);
        out.push(json!({
            "run": doc["run"]["id"],
            "status": doc["run"]["status"],
            "budgets": doc["run"]["budgets"],
        }));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct Since {
    since: Option<String>,
}

async fn report(
    St(st): St<State>,
    h: HeaderMap,
    Query(q): Query<Since>,
) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/v1/report").await?;
    let since = q.since.as_deref().unwrap_or("7d");
    let d = abo_core::units::Dur::parse(since)
        .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
    let now = st.ctx.now();
    let from = Timestamp(now.0 - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let evs = crate::metrics::all_events(&st.ctx.store).await?;
    let r = abo_core::report::report(&evs, from, now);
    Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?))
}

async fn metrics(St(st): St<State>, h: HeaderMap) -> Result<Response, ApiError> {
    auth(&st, &h, "get", "/metrics").await?;
    let text = crate::metrics::render(&st.ctx.store).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

async fn openapi(St(st): St<State>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&st, &h, "get", "/openapi.json").await?;
    Ok(Json(crate::openapi::document()))
}
