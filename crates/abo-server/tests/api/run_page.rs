//! A run's page, its API and the summary read projections and the run's own events, never its
//! whole log: what they show must be what a replay of the log shows.

use super::*;

use abo_core::backlog::TaskType;
use abo_core::budget::{CapChange, Reservation};
use abo_core::ids::{BackendName, CommitSha};
use abo_core::spec::{BackendSpec, RunSpec, TaskSpec};

/// The time the test's server lives at.
const NOW: i64 = 1_700_000_600_000;

#[derive(Debug)]
struct Fixed(Timestamp);

impl abo_runtime::Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn task(id: String) -> TaskSpec {
    TaskSpec {
        title: format!("Task {id}"),
        id: TaskId::new(id),
        kind: TaskType::Docs,
        description: String::new(),
        acceptance: vec![],
        paths: vec![],
        deps: vec![],
        backend: BackendSpec::Command {
            name: BackendName::new("command"),
            run: "true".into(),
        },
        gates: vec![],
        labels: vec![],
        max_attempts: 2,
        priority: 0,
        skipped: None,
        needs_plan_approval: false,
        budget: None,
        routed: false,
        context_tokens: 0,
        autonomy: Default::default(),
        origin: String::new(),
    }
}

/// A run of `n` tasks with caps (run, per backend, wall): every third task lands after a charge,
/// every third fails after one, the rest are left running with their reservations open; the
/// run pauses and resumes with its dollar cap raised, and no process drives it now.
async fn run_of(store: &Store, id: &str, n: usize) {
    let mut spec: RunSpec = serde_json::from_value(json!({
        "title": "big", "profile": "p", "base": "b", "base_branch": "main", "branch": "abo/big",
        "settings": { "max_parallel": 4, "stop_after_consecutive_failures": 0, "attempt_timeout_ms": 1,
            "silence_timeout_ms": 1, "run_timeout_ms": 1, "gates": [], "landing": {},
            "budgets": { "run": { "usd": 10.0, "tokens": 1000000 }, "alert_at": 0.8,
                "per_backend": { "claude": { "usd": 5.0 } }, "wall_ms": 3600000 } },
        "tasks": []
    }))
    .unwrap();
    spec.tasks = (0..n).map(|i| task(format!("t{i}"))).collect();
    let at = |ms: i64| Timestamp(1_700_000_000_000 + ms);
    let ev = |task: Option<String>, ms: i64, body| Event {
        run: RunId::new(id),
        task: task.map(TaskId::new),
        at: at(ms),
        body,
    };
    let mut evs = vec![
        ev(None, 0, EventBody::RunCreated(Box::new(spec))),
        ev(None, 1000, EventBody::RunStarted {}),
    ];
    for i in 0..n {
        let t = || Some(format!("t{i}"));
        let backend = BackendName::new(if i % 2 == 0 { "claude" } else { "codex" });
        let ms = 2000 + i64::try_from(i).unwrap();
        evs.push(ev(t(), ms, EventBody::TaskReady {}));
        evs.push(ev(
            t(),
            ms,
            EventBody::TaskStarted {
                attempt: 1,
                backend: backend.clone(),
                worktree: "w".into(),
                reserved: Reservation {
                    usd: Some(0.5),
                    tokens: Some(1000),
                },
            },
        ));
        if i % 3 == 2 {
            continue;
        }
        evs.push(ev(
            t(),
            ms + 100,
            EventBody::BudgetCharged {
                attempt: 1,
                backend,
                usd: 0.25,
                tokens: 100,
                reserved: Default::default(),
                source: "reported".into(),
            },
        ));
        evs.push(ev(
            t(),
            ms + 200,
            if i % 3 == 0 {
                EventBody::TaskLanded {
                    attempt: 1,
                    commit: CommitSha::new(format!("c{i}")),
                }
            } else {
                EventBody::TaskFailed {
                    attempts: 1,
                    reason: format!("gate failed in t{i}"),
                    kept_worktree: None,
                }
            },
        ));
    }
    evs.push(ev(
        None,
        50_000,
        EventBody::RunPaused {
            reason: "by a person".into(),
        },
    ));
    evs.push(ev(
        None,
        70_000,
        EventBody::RunResumed {
            caps: CapChange {
                usd: Some(20.0),
                ..Default::default()
            },
        },
    ));
    store.append(&evs).await.unwrap();
}

async fn fixed_setup(n: usize) -> T {
    let mut t = setup().await;
    run_of(&t.state.ctx.store, "big", n).await;
    let ctx = abo_runtime::Ctx::new(
        t._dir.path().to_owned(),
        t.state.ctx.store.clone(),
        abo_runtime::git::Git::new(t._dir.path().to_owned()),
        Arc::new(Fixed(Timestamp(NOW))),
    );
    t.state.ctx = Arc::new(ctx);
    t
}

async fn page(t: &T, path: &str) -> (StatusCode, String) {
    let req = Request::get(path)
        .header("host", HOST)
        .header("cookie", session(t.token(Role::Viewer)))
        .body(Body::empty())
        .unwrap();
    let (s, _, html) = t.send(req).await;
    (s, html)
}

#[tokio::test]
async fn the_runs_view_from_its_projections_is_the_replays() {
    let t = fixed_setup(30).await;
    let ctx = &t.state.ctx;
    let row = ctx.store.run(&RunId::new("big")).await.unwrap().unwrap();
    let view = abo_server::shapes::view(ctx, row.clone()).await.unwrap();
    let replayed = abo_runtime::engine::load(&ctx.store, &row.id)
        .await
        .unwrap();
    let caps = abo_server::shapes::caps(&replayed, Timestamp(NOW));
    // The run's, claude's and the wall's: the raised dollar cap, the charges, the open
    // reservations, the running time with its pause left out.
    assert_eq!(view.caps, caps);
    assert_eq!(caps.len(), 4, "{caps:?}");
    assert_eq!(caps[0].limit, 20.0);
    assert!((caps[0].spent - 20.0 * 0.25).abs() < 1e-9, "{caps:?}");
    assert!((caps[0].reserved - 10.0 * 0.5).abs() < 1e-9, "{caps:?}");
    assert_eq!(
        caps[3].spent,
        (49_000 + (NOW - 1_700_000_070_000)) as f64,
        "{caps:?}"
    );
    // No process drives it: its running tasks are shown interrupted, as before.
    assert!(view.orphaned);
    assert_eq!(view.run.status, "interrupted");
    let interrupted = view.tasks.iter().filter(|t| t.status == "interrupted");
    assert_eq!(interrupted.count(), 10);
}

#[tokio::test]
async fn a_large_runs_page_shows_a_page_of_its_tasks_by_status_and_no_graph() {
    let t = fixed_setup(300).await;
    let (s, html) = page(&t, "/runs/big").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    // The first hundred tasks in plan order, the pager, the counts by status, the bar.
    assert!(html.contains("<tr data-task=\"t0\">") && html.contains("<tr data-task=\"t99\">"));
    assert!(!html.contains("<tr data-task=\"t100\">"), "{html}");
    assert!(html.contains("tasks 1–100 of 300"), "{html}");
    assert!(
        html.contains("href=\"/runs/big?page=1\">next</a>"),
        "{html}"
    );
    for want in [
        "<b class=filter-on>all (300)</b>",
        "href=\"/runs/big?status=landed\">landed (100)</a>",
        "href=\"/runs/big?status=failed\">failed (100)</a>",
        "href=\"/runs/big?status=interrupted\">interrupted (100)</a>",
        "class=statusbar",
        "the graph is drawn for runs of up to 200",
    ] {
        assert!(html.contains(want), "{want} in {html}");
    }
    assert!(!html.contains("class=dag"), "{html}");
    // Page 2 of the failed ones: t301 is not a task; failed are t1, t4, ... t298.
    let (s, html) = page(&t, "/runs/big?status=failed&page=0").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("<tr data-task=\"t1\">") && html.contains("<tr data-task=\"t298\">"));
    assert!(!html.contains("<tr data-task=\"t0\">"), "{html}");
    assert!(
        html.contains("<b class=filter-on>failed (100)</b>"),
        "{html}"
    );
    assert!(html.contains("tasks 1–100 of 100"), "{html}");
    let (_, html) = page(&t, "/runs/big?status=interrupted&page=0").await;
    assert!(html.contains("<tr data-task=\"t2\"><td><a href=\"/runs/big/tasks/t2\">t2</a></td><td class=status><span class=\"s-interrupted\">"), "{html}");
    let (_, html) = page(&t, "/runs/big?page=2").await;
    assert!(html.contains("tasks 201–300 of 300") && html.contains("<tr data-task=\"t299\">"));
    assert!(html.contains("rel=prev href=\"/runs/big?page=1\"") && !html.contains("rel=next"));
    // The live stream starts after what the page shows.
    let last = t.state.ctx.store.last_seq().await.unwrap();
    assert!(html.contains(&format!("data-after={last}")), "{html}");
    // A status that is none is a located error naming those there are.
    let (s, text) = page(&t, "/runs/big?status=landd").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("status: no status `landd`; one of pending, ready"),
        "{text}"
    );
}

#[tokio::test]
async fn a_small_runs_page_draws_its_graph() {
    let t = fixed_setup(12).await;
    let (s, html) = page(&t, "/runs/big").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("class=dag") && html.contains("<g data-task=\"t11\""),
        "{html}"
    );
    assert!(!html.contains("class=statusbar"), "{html}");
}

#[tokio::test]
async fn the_tasks_api_pages_and_filters_from_the_projection() {
    let t = fixed_setup(30).await;
    let v = t.token(Role::Viewer).to_owned();
    let ids = |text: &str| -> Vec<String> {
        serde_json::from_str::<Value>(text)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, text) = t.call("get", "/v1/runs/big/tasks", Some(&v), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(ids(&text).len(), 30);
    let (s, text) = t
        .call(
            "get",
            "/v1/runs/big/tasks?status=landed&offset=1&limit=3",
            Some(&v),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(ids(&text), ["t3", "t6", "t9"]);
    let (s, text) = t
        .call("get", "/v1/runs/big/tasks?limit=5000", Some(&v), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("limit: 5000 is not from 1 to 1000"), "{text}");
    // The run's document is the status shape, its caps from the projections.
    let (s, text) = t.call("get", "/v1/runs/big", Some(&v), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["run"]["budgets"][0]["limit"], 20.0);
    assert_eq!(doc["tasks"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn the_summary_reads_its_window_and_the_figures_of_what_it_lists() {
    let t = fixed_setup(9).await;
    let store = &t.state.ctx.store;
    let all = store.events(None, 0, 100_000).await.unwrap();
    for since in [0, 1_700_000_002_150, 1_700_000_002_205, NOW] {
        let since = Timestamp(since);
        let whole = abo_core::report::summary(&all, since);
        let read = abo_server::summary_page::load(store, since, usize::MAX)
            .await
            .unwrap();
        assert_eq!(read, whole, "since {since:?}");
    }
    let whole = abo_core::report::summary(&all, Timestamp(0));
    assert_eq!((whole.landed.len(), whole.failed.len()), (3, 3));
    assert_eq!(whole.landed[0].title, "Task t0");
}
