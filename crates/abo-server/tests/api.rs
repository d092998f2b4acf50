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

#[path = "api/run_page.rs"]
mod run_page;

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
    fn answer(
        &self,
        a: String,
        choose: Option<usize>,
        answer: Option<String>,
    ) -> BoxFut<'_, Result<(), ApiError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("answer {a} {choose:?} {answer:?}"));
        Box::pin(async { Ok(()) })
    }
    fn evaluate_policy(&self, _: Value) -> Result<Value, ApiError> {
        Ok(json!({"verdict": "allow"}))
    }
    fn validate(&self, backlog: String) -> Result<Value, ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("validate {backlog}"));
        Ok(json!({"valid": false, "tasks": [], "errors": ["b.yml:1:1: no tasks"]}))
    }
    fn diff_input(&self, _: String, _: Vec<String>) -> BoxFut<'_, Result<Value, ApiError>> {
        Box::pin(async { Ok(json!({"action": "merge"})) })
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
        sessions: auth::SessionKey::generate().unwrap(),
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

impl T {
    /// Any request: (status, headers, body).
    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = abo_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.fake.calls.lock().unwrap())
    }
}

/// The server as the browser addresses it, and a page of another port of the same host: same
/// site, so a SameSite=Strict cookie goes along with its forms, but another origin.
const HOST: &str = "127.0.0.1:3100";
const OWN: &str = "http://127.0.0.1:3100";
const OTHER: &str = "http://127.0.0.1:9999";

fn session(token: &str) -> String {
    format!("abo_session={token}")
}

/// The CSRF token a dashboard page of this session embeds (its `<meta name=abo-csrf>`).
async fn page_csrf(t: &T, token: &str) -> String {
    let req = Request::get("/")
        .header("host", HOST)
        .header("cookie", session(token))
        .body(Body::empty())
        .unwrap();
    let (s, _, html) = t.send(req).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let csrf = html
        .split_once("<meta name=abo-csrf content=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(c, _)| c.to_owned())
        .unwrap();
    assert_eq!(csrf.len(), 64, "{html}");
    assert!(
        html.contains(&format!("name=_csrf value=\"{csrf}\"")),
        "the logout form carries it too: {html}"
    );
    csrf
}

/// Every state-changing route: the table's POSTs and the dashboard's.
fn state_changing() -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.method != "get")
        .map(|r| (r.path, concrete(r.path)))
        .collect();
    out.push(("/logout", "/logout".to_owned()));
    assert!(out.iter().any(|(_, p)| p == "/v1/runs/r1/kill"), "{out:?}");
    out
}

/// A POST as a browser sends it: `headers` as given, a form body unless `json`.
fn post(path: &str, headers: &[(&str, &str)], json: Option<Value>) -> Request<Body> {
    let mut req = Request::post(path).header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match json {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("confirm=yes"))
            .unwrap(),
    }
}

#[tokio::test]
async fn a_cross_origin_form_with_the_session_cookie_changes_nothing() {
    let t = setup().await;
    let admin = t.token(Role::Admin).to_owned();
    let cookie = session(&admin);
    let csrf = page_csrf(&t, &admin).await;
    let viewer_csrf = page_csrf(&t, t.token(Role::Viewer)).await;
    assert_ne!(csrf, viewer_csrf, "a token per session");

    // The attack: another port's page auto-submits a form to each route, with the admin's cookie.
    for (route, path) in state_changing() {
        let (s, _, text) = t
            .send(post(&path, &[("cookie", &cookie), ("origin", OTHER)], None))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "POST {route}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "csrf", "POST {route}: {text}");
    }
    // Nor does any half of the defence pass alone, nor another session's token.
    let kill = "/v1/runs/r1/kill";
    let field = format!("_csrf={csrf}");
    let forged = "0".repeat(64);
    let attempts: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("own origin, no token", vec![("origin", OWN)]),
        (
            "the token, other origin",
            vec![("origin", OTHER), ("x-abo-csrf", &csrf)],
        ),
        (
            "the token, opaque origin",
            vec![("origin", "null"), ("x-abo-csrf", &csrf)],
        ),
        (
            "the token, no origin or referer",
            vec![("x-abo-csrf", &csrf)],
        ),
        (
            "the token, other referer",
            vec![
                ("referer", "http://127.0.0.1:9999/x"),
                ("x-abo-csrf", &csrf),
            ],
        ),
        (
            "another session's token",
            vec![("origin", OWN), ("x-abo-csrf", &viewer_csrf)],
        ),
        (
            "a forged token",
            vec![("origin", OWN), ("x-abo-csrf", &forged)],
        ),
    ];
    for (what, mut headers) in attempts {
        headers.push(("cookie", &cookie));
        let (s, _, text) = t.send(post(kill, &headers, None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {text}");
    }
    let (s, _, text) = t
        .send(
            Request::post(kill)
                .header("host", HOST)
                .header("cookie", &cookie)
                .header("origin", OWN)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("_csrf=00"))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a wrong form field: {text}");
    // Logging in from another origin is refused too: no cookie is set.
    let (s, h, _) = t
        .send(
            Request::post("/login")
                .header("host", HOST)
                .header("origin", OTHER)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={admin}")))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h.get("set-cookie").is_none());
    assert_eq!(
        t.calls(),
        Vec::<String>::new(),
        "no attack reached the control"
    );

    // The control: the same requests from the dashboard's own page, with its token, do happen.
    for (route, path) in state_changing() {
        let headers = [
            ("cookie", cookie.as_str()),
            ("origin", OWN),
            ("x-abo-csrf", &csrf),
        ];
        let (s, h, text) = t.send(post(&path, &headers, body_for("post", route))).await;
        assert!(
            s != StatusCode::FORBIDDEN && s != StatusCode::UNAUTHORIZED,
            "POST {route}: {s} {text}"
        );
        if route == "/logout" {
            assert_eq!(s, StatusCode::SEE_OTHER);
            assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
        }
    }
    let calls = t.calls();
    for want in [
        "create b.yml",
        "pause r1",
        "resume r1",
        "kill r1",
        "retry x",
        "decide x true looks fine",
    ] {
        assert!(calls.contains(&want.to_owned()), "{want}: {calls:?}");
    }
    // A plain form of the page (its `_csrf` field), and a browser that sends only a Referer.
    let (s, _, text) = t
        .send(
            Request::post(kill)
                .header("host", HOST)
                .header("cookie", &cookie)
                .header("origin", OWN)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("a=1&{field}")))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let headers = [
        ("cookie", cookie.as_str()),
        ("referer", "http://127.0.0.1:3100/runs/r1"),
        ("x-abo-csrf", &csrf),
    ];
    let (s, _, text) = t.send(post(kill, &headers, None)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    // Behind a proxy, the origin the browser saw is the forwarded one.
    let headers = [
        ("cookie", cookie.as_str()),
        ("origin", "https://abo.example"),
        ("x-forwarded-host", "abo.example"),
        ("x-forwarded-proto", "https"),
        ("x-abo-csrf", &csrf),
    ];
    let (s, _, text) = t.send(post(kill, &headers, None)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(t.calls(), vec!["kill r1", "kill r1", "kill r1"]);
    // API clients authenticate with a bearer token, not the cookie: no CSRF token, any origin.
    let auth = format!("Bearer {admin}");
    let headers = [("authorization", auth.as_str()), ("origin", OTHER)];
    let (s, _, text) = t.send(post(kill, &headers, None)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(t.calls(), vec!["kill r1"]);
    // The role still holds for a session with its token: a viewer does not kill.
    let viewer_cookie = session(t.token(Role::Viewer));
    let headers = [
        ("cookie", viewer_cookie.as_str()),
        ("origin", OWN),
        ("x-abo-csrf", &viewer_csrf),
    ];
    let (s, _, text) = t.send(post(kill, &headers, None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(text.contains("\"forbidden\""), "{text}");
    // Logging in from the login page itself works.
    let (s, h, text) = t
        .send(
            Request::post("/login")
                .header("host", HOST)
                .header("origin", OWN)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={admin}")))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{text}");
    assert!(h["set-cookie"].to_str().unwrap().starts_with(&cookie));
    assert!(t.calls().is_empty());
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_pages_have_nothing_inline() {
    let t = setup().await;
    let v = t.token(Role::Viewer).to_owned();
    let cookie = session(&v);
    let get = |path: &str, cookie: Option<&str>| {
        let mut r = Request::get(path).header("host", HOST);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.body(Body::empty()).unwrap()
    };
    let bearer = Request::get("/v1/runs")
        .header("authorization", format!("Bearer {v}"))
        .body(Body::empty())
        .unwrap();
    let cases = vec![
        ("the login page", get("/", None), StatusCode::OK),
        ("runs", get("/", Some(&cookie)), StatusCode::OK),
        ("a run", get("/runs/r1", Some(&cookie)), StatusCode::OK),
        (
            "approvals",
            get("/approvals", Some(&cookie)),
            StatusCode::OK,
        ),
        ("summary", get("/summary", Some(&cookie)), StatusCode::OK),
        ("the API", bearer, StatusCode::OK),
        ("no token", get("/v1/runs", None), StatusCode::UNAUTHORIZED),
        (
            "no route",
            get("/nope", Some(&cookie)),
            StatusCode::NOT_FOUND,
        ),
        (
            "the script",
            get("/static/dashboard.js", None),
            StatusCode::OK,
        ),
        (
            "the styles",
            get("/static/dashboard.css", None),
            StatusCode::OK,
        ),
        (
            "a refused action",
            post(
                "/v1/runs/r1/kill",
                &[("cookie", &cookie), ("origin", OTHER)],
                None,
            ),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, req, status) in cases {
        let path = req.uri().path().to_owned();
        let (s, h, body) = t.send(req).await;
        assert_eq!(s, status, "{what}: {body}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.split("; ").any(|d| d == directive), "{what}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{what}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["referrer-policy"], "same-origin", "{what}");
        let cache = if path.starts_with("/static/") {
            "no-cache"
        } else {
            "no-store"
        };
        assert_eq!(h["cache-control"], cache, "{what}");
        if path.starts_with("/static/") {
            assert!(body.len() > 500, "{what}");
            continue;
        }
        if !h["content-type"].to_str().unwrap().starts_with("text/html") {
            continue;
        }
        // What the policy would block: inline scripts, handlers and styles.
        let lower = body.to_lowercase();
        for tag in lower.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap();
            assert!(open.contains("src="), "{what}: an inline script: {body}");
        }
        assert!(!lower.contains("<style"), "{what}: {body}");
        assert!(!lower.contains(" style="), "{what}: {body}");
        let handler = lower.split(" on").skip(1).any(|w| {
            let name = w.len()
                - w.trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            name > 0 && w[name..].starts_with('=')
        });
        assert!(!handler, "{what}: an inline handler: {body}");
        assert!(lower.contains("/static/dashboard.css"), "{what}");
    }
    // The run page's actions are there, for the script to send.
    let (_, _, html) = t.send(get("/runs/r1", Some(&cookie))).await;
    assert!(html.contains("data-act=\"/v1/runs/r1/kill\""), "{html}");
    assert!(html.contains("<script src=/static/dashboard.js"), "{html}");
}

#[tokio::test]
async fn an_open_event_stream_ends_when_its_token_is_revoked() {
    let t = setup().await;
    let store = t.state.ctx.store.clone();
    // Two streams: one of the viewer token (to be revoked), one of the approver's dashboard session.
    let open = |h: (&'static str, String)| {
        let req = Request::builder()
            .uri("/v1/events/stream?run=r1")
            .header(h.0, h.1)
            .body(Body::empty())
            .unwrap();
        let app = abo_server::app(t.state.clone());
        async move {
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body()
        }
    };
    let mut revoked = open(("authorization", format!("Bearer {}", t.token(Role::Viewer)))).await;
    let mut kept = open(("cookie", session(t.token(Role::Approver)))).await;
    /// Reads until `until` is in the text, or the stream ends (`None`: the text so far).
    async fn read(body: &mut Body, until: &str) -> Result<String, String> {
        let mut text = String::new();
        while !text.contains(until) {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .expect("the stream answers within the deadline");
            match frame {
                Some(f) => {
                    if let Ok(data) = f.unwrap().into_data() {
                        text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                None => return Err(text),
            }
        }
        Ok(text)
    }
    assert!(read(&mut revoked, "id: 3\n").await.is_ok());
    assert!(read(&mut kept, "id: 3\n").await.is_ok());
    let viewer_id = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.role == "viewer")
        .unwrap()
        .id;
    assert!(store.token_revoke(&viewer_id, Timestamp(2)).await.unwrap());
    store
        .append(&[Event {
            run: RunId::new("r1"),
            task: None,
            at: Timestamp(3),
            body: EventBody::RunResumed {
                caps: Default::default(),
            },
        }])
        .await
        .unwrap();
    // The control: a live credential's stream gets the new event.
    let text = read(&mut kept, "id: 4\n")
        .await
        .expect("the kept stream goes on");
    assert!(text.contains("event: run.resumed"), "{text}");
    // The revoked token's stream ends, without it.
    let text = read(&mut revoked, "id: 4\n")
        .await
        .expect_err("the stream ends");
    assert!(!text.contains("run.resumed"), "{text}");
}

fn concrete(path: &str) -> String {
    let p = path.replace("/v1/runs/{id}", "/v1/runs/r1");
    p.replace("{id}", "x").replace("{task}", "x")
}

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/v1/runs") => Some(json!({"backlog": "b.yml"})),
        ("post", p) if p.ends_with("/answer") => Some(json!({"choose": 2})),
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
    assert!(
        calls.contains(&"answer x Some(2) None".to_owned()),
        "{calls:?}"
    );
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

/// A JSON-RPC request to `/mcp` with these headers: (status, body).
async fn mcp(t: &T, headers: &[(&str, String)], body: Value) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/mcp")
        .header("host", HOST)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let (status, _, body) = t
        .send(req.body(Body::from(body.to_string())).unwrap())
        .await;
    (status, body)
}

fn decide_call() -> Value {
    json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "approval_decide",
        "arguments": { "approval": "r1/a/1", "decision": "approve", "reason": "reviewed" } } })
}

#[tokio::test]
async fn mcp_takes_bearer_tokens_only_and_each_tool_checks_the_role_of_its_act() {
    let t = setup().await;
    let bearer = |role| vec![("authorization", format!("Bearer {}", t.token(role)))];
    // The dashboard's cookie is not a credential here, even an admin's from the server's own
    // page with its CSRF token.
    let admin = t.token(Role::Admin);
    let cookie = vec![
        ("cookie", session(admin)),
        ("origin", OWN.to_owned()),
        (abo_server::guard::CSRF_HEADER, t.state.sessions.csrf(admin)),
    ];
    let (status, body) = mcp(&t, &cookie, decide_call()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = mcp(&t, &[], decide_call()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = mcp(&t, &bearer(Role::Viewer), decide_call()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"],
        "this needs the approver role; the token is viewer"
    );
    assert_eq!(t.calls(), Vec::<String>::new());

    let (status, body) = mcp(&t, &bearer(Role::Approver), decide_call()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["result"]["structuredContent"],
        json!({ "approval": "r1/a/1", "decision": "approved" }),
        "{v}"
    );
    assert_eq!(t.calls(), ["decide r1/a/1 true reviewed"]);
}

#[tokio::test]
async fn pause_all_and_kill_all_act_on_each_run_going() {
    let t = setup().await;
    let admin = t.token(Role::Admin).to_owned();
    // r1 is paused: nothing to pause, and killing all kills it.
    let (s, text) = t
        .call("post", "/v1/runs/pause-all", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["runs"],
        json!([])
    );
    assert!(t.calls().is_empty());
    let (s, text) = t
        .call("post", "/v1/runs/kill-all", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["runs"][0]["run"], "r1", "{doc}");
    assert_eq!(t.calls(), ["kill r1"]);
    let (s, _) = t
        .call(
            "post",
            "/v1/runs/kill-all",
            Some(t.token(Role::Approver)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_home_page_counts_and_offers_pause_all_only_to_admins() {
    let t = setup().await;
    let page = |token: String| {
        Request::get("/")
            .header("host", HOST)
            .header("cookie", session(&token))
            .body(Body::empty())
            .unwrap()
    };
    let (s, _, html) = t.send(page(t.token(Role::Admin).to_owned())).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    for want in [
        "<h1>At a glance</h1>",
        "data-count=running href=\"#runs\"><b>0</b><span>running</span>",
        "data-count=waiting",
        "data-count=landed",
        "data-window=\"today\"",
        "(no cap)",
        "Pause all",
        "Kill all",
        "data-after=3",
        "<tr data-run=\"r1\">",
    ] {
        assert!(html.contains(want), "{want} in {html}");
    }
    let (_, _, html) = t.send(page(t.token(Role::Viewer).to_owned())).await;
    assert!(!html.contains("Pause all"), "{html}");
}
