//! The API through `app().oneshot`: every route for every role, errors, SSE resume, OpenAPI drift.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use abo_core::event::{Event, EventBody};
use abo_core::ids::{RunId, TaskId, Timestamp};
use abo_server::auth::{self, Role};
use abo_server::routes::ROUTES;
use abo_server::{ApiError, BoxFut, Control, CreateRun, State};
use abo_store::{Store, TokenRow};

/// Records what the API asked; answers as a real control would.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

impl Control for Fake {
    fn create_run(&self, req: CreateRun) -> BoxFut<'_, Result<RunId, ApiError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("create {}", req.backlog));
        Box::pin(async { Err(ApiError::bad_request("b.yml:1:1: no tasks")) })
    }
    fn control(&self, run: RunId, what: &'static str) -> BoxFut<'_, Result<String, ApiError>> {
        self.calls.lock().unwrap().push(format!("{what} {run}"));
        Box::pin(async { Ok("paused".to_owned()) })
    }
    fn retry(&self, task: TaskId, _: Option<RunId>) -> BoxFut<'_, Result<RunId, ApiError>> {
        self.calls.lock().unwrap().push(format!("retry {task}"));
        Box::pin(async { Ok(RunId::new("r1")) })
    }
    fn decide(&self, a: String, approve: bool, reason: String) -> BoxFut<'_, Result<(), ApiError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("decide {a} {approve} {reason}"));
        Box::pin(async { Ok(()) })
    }
    fn evaluate_policy(&self, _: Value) -> Result<Value, ApiError> {
        Ok(json!({"verdict": "allow"}))
    }
}

struct T {
    _dir: tempfile::TempDir,
    state: State,
    fake: Arc<Fake>,
    tokens: Vec<(Role, String)>,
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite:.abo/abo.db", dir.path()).await.unwrap();
    // A run with one event, so that reads have something to read.
    let spec: abo_core::spec::RunSpec = serde_json::from_value(json!({
        "title": "t", "profile": "p", "base": "b", "base_branch": null, "branch": "abo/r1",
        "settings": { "max_parallel": 1, "stop_after_consecutive_failures": 0, "attempt_timeout_ms": 1,
            "silence_timeout_ms": 1, "run_timeout_ms": 1, "gates": [], "landing": {} },
        "tasks": []
    }))
    .unwrap();
    let ev = |body| Event {
        run: RunId::new("r1"),
        task: None,
        at: Timestamp(1),
        body,
    };
    store
        .append(&[
            ev(EventBody::RunCreated(Box::new(spec))),
            ev(EventBody::RunStarted {}),
            ev(EventBody::RunPaused {
                reason: "by a person".into(),
            }),
        ])
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for role in [Role::Viewer, Role::Approver, Role::Admin] {
        let (id, secret) = auth::generate().unwrap();
        let row = TokenRow {
            id,
            name: role.as_str().into(),
            role: role.as_str().into(),
            created_at: Timestamp(0),
            revoked_at: None,
        };
        store
            .token_create(&row, &auth::hash(&secret))
            .await
            .unwrap();
        tokens.push((role, secret));
    }
    let git = abo_runtime::git::Git::new(dir.path().to_owned());
    let ctx = abo_runtime::Ctx::new(
        dir.path().to_owned(),
        store,
        git,
        Arc::new(abo_runtime::SystemClock),
    );
    let fake = Arc::new(Fake::default());
    let state = State {
        ctx: Arc::new(ctx),
        control: fake.clone(),
    };
    T {
        _dir: dir,
        state,
        fake,
        tokens,
    }
}

impl T {
    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = abo_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn concrete(path: &str) -> String {
    let p = path.replace("/v1/runs/{id}", "/v1/runs/r1");
    p.replace("{id}", "x")
}

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/v1/runs") => Some(json!({"backlog": "b.yml"})),
        ("post", p) if p.starts_with("/v1/approvals/") => Some(json!({"reason": "looks fine"})),
        ("post", "/v1/policy/evaluate") => Some(json!({"action": "merge"})),
        _ => None,
    }
}

#[tokio::test]
async fn every_route_for_every_role() {
    let t = setup().await;
    for r in ROUTES {
        if r.path == "/v1/events/stream" {
            continue; // an endless stream: checked below
        }
        let path = concrete(r.path);
        let body = body_for(r.method, r.path);
        let Some(need) = r.role else {
            let (s, _) = t.call(r.method, &path, None, body).await;
            assert_eq!(s, StatusCode::OK, "{} {path}", r.method);
            continue;
        };
        let (s, text) = t.call(r.method, &path, None, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{} {path} without a token",
            r.method
        );
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "unauthorized");
        let (s, _) = t
            .call(r.method, &path, Some("abo_00000000_wrong"), body.clone())
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{} {path} with an unknown token",
            r.method
        );
        for role in [Role::Viewer, Role::Approver, Role::Admin] {
            let (s, text) = t
                .call(r.method, &path, Some(t.token(role)), body.clone())
                .await;
            if role < need {
                assert_eq!(s, StatusCode::FORBIDDEN, "{} {path} as {role}", r.method);
            } else {
                assert!(
                    s != StatusCode::FORBIDDEN
                        && s != StatusCode::UNAUTHORIZED
                        && s != StatusCode::NOT_FOUND
                        || path.contains("/x"),
                    "{} {path} as {role}: {s} {text}",
                    r.method
                );
            }
        }
    }
    // What the allowed calls asked of the control: approvals with their reason, pause of r1...
    let calls = t.fake.calls.lock().unwrap().clone();
    assert!(
        calls.contains(&"decide x true looks fine".to_owned()),
        "{calls:?}"
    );
    assert!(calls.contains(&"pause r1".to_owned()), "{calls:?}");
    assert!(calls.contains(&"create b.yml".to_owned()), "{calls:?}");
}

#[tokio::test]
async fn reads_answer_with_the_status_shape_and_errors_are_json() {
    let t = setup().await;
    let v = t.token(Role::Viewer).to_owned();
    let (s, text) = t.call("get", "/v1/runs/r1", Some(&v), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["run"]["id"], "r1");
    assert_eq!(doc["run"]["status"], "paused");
    assert!(doc["run"].get("spent_usd").is_some() && doc["tasks"].is_array());
    let (s, text) = t.call("get", "/v1/runs/nope", Some(&v), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["code"],
        "not_found"
    );
    // A bad body is a 400 naming the problem; a huge one is refused.
    let a = t.token(Role::Admin).to_owned();
    let (s, text) = t
        .call("post", "/v1/runs", Some(&a), Some(json!({"backlog": 1})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("backlog: invalid type"), "{text}");
    let (s, _) = t
        .call(
            "post",
            "/v1/runs",
            Some(&a),
            Some(json!({"backlog": "x".repeat(100_000)})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // A reason is required to decide.
    let ap = t.token(Role::Approver).to_owned();
    let (s, _) = t
        .call(
            "post",
            "/v1/approvals/x/approve",
            Some(&ap),
            Some(json!({"reason": " "})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, text) = t.call("get", "/metrics", Some(&v), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        text.contains("abo_tasks") && text.contains("abo_policy_eval_seconds_count"),
        "{text}"
    );
    let (s, text) = t
        .call("get", "/v1/events?run=r1&after=1", Some(&v), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let evs: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(evs.as_array().unwrap().len(), 2);
    assert_eq!(evs[0]["kind"], "run.started");
}

#[tokio::test]
async fn the_event_stream_resumes_after_last_event_id() {
    let t = setup().await;
    let req = Request::builder()
        .uri("/v1/events/stream?run=r1")
        .header("authorization", format!("Bearer {}", t.token(Role::Viewer)))
        .header("last-event-id", "1")
        .body(Body::empty())
        .unwrap();
    let resp = abo_server::app(t.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains("id: 3") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(!text.contains("id: 1\n"), "resumed after 1: {text}");
    assert!(
        text.contains("id: 2\nevent: run.started\ndata: {"),
        "{text}"
    );
    assert!(text.contains("event: run.paused"), "{text}");
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = serde_json::to_string_pretty(&abo_server::openapi::document()).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"),
            &generated,
        )
        .unwrap();
        return;
    }
    assert_eq!(
        abo_server::openapi::COMMITTED,
        generated,
        "openapi.json drifted from the routes: regenerate with UPDATE_OPENAPI=1 cargo test -p abo-server"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    for r in ROUTES {
        assert!(
            doc["paths"][r.path][r.method].is_object(),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    let dash: Value =
        serde_json::from_str(include_str!("../../../ops/grafana-dashboard.json")).unwrap();
    let exported = [
        "abo_tasks",
        "abo_queue_depth",
        "abo_attempt_duration_seconds_sum",
        "abo_attempt_duration_seconds_count",
        "abo_gate_duration_seconds_sum",
        "abo_gate_duration_seconds_count",
        "abo_cost_usd_total",
        "abo_tokens_total",
        "abo_cache_hits_total",
        "abo_policy_eval_seconds_sum",
        "abo_policy_eval_seconds_count",
    ];
    let mut seen = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("abo_"))
            {
                assert!(
                    exported.contains(&name),
                    "{name} in `{expr}` is not exported"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 10);
}
