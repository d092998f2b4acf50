//! The store against a real SQLite file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use abo_core::backlog::TaskType;
use abo_core::config::Landing;
use abo_core::event::{Event, EventBody, RetryCause, Usage};
use abo_core::ids::{BackendName, CommitSha, RunId, TaskId, Timestamp};
use abo_core::spec::{BackendSpec, RunSettings, RunSpec, TaskSpec};
use abo_store::{Lease, Store};
use pretty_assertions::assert_eq;

fn spec(tasks: &[&str]) -> RunSpec {
    RunSpec {
        title: "t".into(),
        profile: "prod-conservative".into(),
        base: CommitSha::new("b"),
        base_branch: Some("main".into()),
        branch: "abo/r".into(),
        settings: RunSettings {
            max_parallel: 2,
            stop_after_consecutive_failures: 0,
            attempt_timeout_ms: 1,
            silence_timeout_ms: 1,
            run_timeout_ms: 1,
            gates: vec![],
            landing: Landing::default(),
            fallback: vec![],
            per_backend: Default::default(),
            pricing: Default::default(),
            secret_env: vec![],
            policy: Default::default(),
            autonomy: Default::default(),
            budgets: Default::default(),
            router: Default::default(),
            cache: false,
            sandbox: Default::default(),
            notify: Default::default(),
            schedule: Default::default(),
        },
        tasks: tasks
            .iter()
            .map(|id| TaskSpec {
                id: TaskId::new(*id),
                title: id.to_uppercase(),
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
                skipped: (*id == "skip").then(|| "not ready: later".to_owned()),
                needs_plan_approval: false,
                budget: None,
                routed: false,
                context_tokens: 0,
                autonomy: Default::default(),
                origin: String::new(),
            })
            .collect(),
    }
}

fn ev(run: &str, task: Option<&str>, body: EventBody) -> Event {
    Event {
        run: RunId::new(run),
        task: task.map(TaskId::new),
        at: Timestamp(1_700_000_000_000),
        body,
    }
}

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open("sqlite:.abo/abo.db", dir.path()).await.unwrap()
}

fn history(run: &str) -> Vec<Event> {
    let t = |id: &str, body| ev(run, Some(id), body);
    vec![
        ev(
            run,
            None,
            EventBody::RunCreated(Box::new(spec(&["a", "b", "skip"]))),
        ),
        ev(run, None, EventBody::RunStarted {}),
        t("a", EventBody::TaskReady {}),
        t(
            "a",
            EventBody::TaskStarted {
                attempt: 1,
                backend: BackendName::new("command"),
                worktree: "w".into(),
                reserved: Default::default(),
            },
        ),
        t(
            "a",
            EventBody::TaskBackendFinished {
                attempt: 1,
                ok: true,
                exit: Some(0),
                reason: None,
                duration_ms: 1,
                files_changed: 1,
                usage: Some(Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cache_read_tokens: 100,
                    cache_write_tokens: 1,
                    unsplit_tokens: 0,
                }),
                cost_usd: Some(0.25),
                cost_source: Some("reported".into()),
                log: None,
                model: Some("claude-sonnet-4-5".into()),
                message: None,
                transcript: None,
                prompt: None,
                transient: false,
            },
        ),
        t(
            "a",
            EventBody::BudgetCharged {
                attempt: 1,
                backend: BackendName::new("command"),
                usd: 0.25,
                tokens: 116,
                reserved: Default::default(),
                source: "reported".into(),
            },
        ),
        t(
            "a",
            EventBody::TaskLanded {
                attempt: 1,
                commit: CommitSha::new("c1"),
            },
        ),
        t("b", EventBody::TaskReady {}),
        t(
            "b",
            EventBody::TaskStarted {
                attempt: 1,
                backend: BackendName::new("command"),
                worktree: "w".into(),
                reserved: Default::default(),
            },
        ),
        t(
            "b",
            EventBody::TaskRetry {
                attempt: 2,
                cause: RetryCause::Failed,
                reason: "gate failed".into(),
                log: None,
                kept_worktree: Some(".abo/worktrees/r/b-1".into()),
            },
        ),
        t(
            "b",
            EventBody::TaskFailed {
                attempts: 2,
                reason: "no change".into(),
                kept_worktree: Some(".abo/worktrees/r/b-2".into()),
            },
        ),
        ev(
            run,
            None,
            EventBody::RunFinished {
                landed: 1,
                failed: 1,
                cancelled: 0,
                skipped: 1,
            },
        ),
    ]
}

#[tokio::test]
async fn projections_follow_events_and_rebuild_equals_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let stored = store.append(&history("r1")).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );

    let run = store.run(&RunId::new("r1")).await.unwrap().unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.spent_usd,
            run.spent_tokens,
            run.last_seq
        ),
        ("finished", 0.25, 116, 12)
    );
    let tasks = store.tasks(&RunId::new("r1")).await.unwrap();
    let brief: Vec<_> = tasks
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.status.as_str(),
                t.attempts,
                t.commit.as_deref(),
                t.reason.as_deref(),
                t.tokens,
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            ("a", "landed", 1, Some("c1"), None, 116),
            ("b", "failed", 1, None, Some("no change"), 0),
            ("skip", "skipped", 0, None, Some("not ready: later"), 0),
        ]
    );
    assert_eq!(
        tasks[1].kept_worktrees,
        [".abo/worktrees/r/b-1", ".abo/worktrees/r/b-2"]
    );

    // What the learned router remembers: a landed on `command` (docs), b failed there twice.
    let stats = store.router_stats().await.unwrap();
    let arm = stats[&("docs".to_owned(), "command".to_owned())];
    assert_eq!((arm.attempts, arm.landed, arm.failed), (1, 1, 2));
    // Spend of the run counts against other runs' daily and weekly windows.
    let (usd, tokens) = store
        .window_spend(&RunId::new("other"), abo_core::ids::Timestamp(0))
        .await
        .unwrap();
    assert_eq!((usd, tokens), (0.25, 116));

    let live = store.dump_projections().await.unwrap();
    store.rebuild_projections().await.unwrap();
    assert_eq!(store.dump_projections().await.unwrap(), live);
    // Events read back equal what was appended.
    assert_eq!(store.run_events(&RunId::new("r1")).await.unwrap(), stored);
}

#[tokio::test]
async fn seq_is_gap_free_under_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    // Separate pools on one file, as separate processes would be.
    let stores = [open(&dir).await, open(&dir).await, open(&dir).await];
    let mut handles = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let run = format!("r{i}");
            s.append(&history(&run)[..1]).await.unwrap();
            for _ in 0..30 {
                s.append(&[ev(&run, None, EventBody::RunPaused { reason: "x".into() })])
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let all = stores[0].events(None, 0, 10_000).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=93).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn leases_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let run = RunId::new("r");
    let me = Lease {
        host: "h".into(),
        pid: 1,
        heartbeat: Timestamp(1),
    };
    let other = Lease {
        host: "h".into(),
        pid: 2,
        heartbeat: Timestamp(2),
    };
    assert!(store.take_lease(&run, &me, None).await.unwrap());
    assert!(
        !store.take_lease(&run, &other, None).await.unwrap(),
        "held by someone alive"
    );
    assert!(
        store.take_lease(&run, &other, Some(&me)).await.unwrap(),
        "taken over from a dead holder"
    );
    assert_eq!(store.lease(&run).await.unwrap(), Some(other.clone()));
    store.release_lease(&run, &other).await.unwrap();
    assert_eq!(store.lease(&run).await.unwrap(), None);

    store
        .push_request(&run, "pause", "by a person", Timestamp(3))
        .await
        .unwrap();
    store
        .push_request(&run, "retry", "a", Timestamp(4))
        .await
        .unwrap();
    assert!(store.has_requests(&run).await.unwrap());
    let got: Vec<_> = store
        .take_requests(&run, Timestamp(5))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.kind, r.arg))
        .collect();
    assert_eq!(
        got,
        vec![
            ("pause".to_owned(), "by a person".to_owned()),
            ("retry".to_owned(), "a".to_owned())
        ]
    );
    assert!(
        store
            .take_requests(&run, Timestamp(6))
            .await
            .unwrap()
            .is_empty()
    );
}
