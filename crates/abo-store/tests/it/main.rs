//! The store's conformance suite: every test runs against a real SQLite file and against a
//! throwaway database on the machine's PostgreSQL server, and must behave the same on both.
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
use abo_store::{Job, JobKind, JobState, Lease, Store, WorkerRow};
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
            review: None,
            max_checks: 0,
            proposals: Default::default(),
            hedge: None,
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

/// An attempt landed.
fn landed(attempt: u32) -> EventBody {
    EventBody::TaskLanded {
        attempt,
        commit: CommitSha::new("c"),
    }
}

/// Where a test's store lives; each `open` is a separate pool, as a separate process would have.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(abo_test_support::pg::ScratchDb, tempfile::TempDir),
}

impl Db {
    fn location(&self) -> (String, std::path::PathBuf) {
        match self {
            Self::Sqlite(dir) => ("sqlite:.abo/abo.db".into(), dir.path().to_owned()),
            Self::Postgres(db, dir) => (db.url.clone(), dir.path().to_owned()),
        }
    }

    async fn open(&self) -> Store {
        let (url, dir) = self.location();
        Store::open(&url, &dir).await.unwrap()
    }

    /// Another empty store of the same kind.
    fn sibling(&self) -> Db {
        match self {
            Self::Sqlite(_) => Self::Sqlite(tempfile::tempdir().unwrap()),
            Self::Postgres(..) => Self::Postgres(
                abo_test_support::pg::ScratchDb::new(),
                tempfile::tempdir().unwrap(),
            ),
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::Sqlite(tempfile::tempdir().unwrap())).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = abo_test_support::pg::ScratchDb::new();
                    super::$name(super::Db::Postgres(db, tempfile::tempdir().unwrap())).await
                }
            )*
        }
    };
}

conformance!(
    projections_follow_events_and_rebuild_equals_live,
    events_of_some_kinds_are_read_in_order_after_a_seq,
    a_reviews_spend_is_projected_apart_and_counts_against_windows,
    a_batch_projects_as_its_events_one_at_a_time,
    seq_is_gap_free_under_concurrent_appenders,
    leases_and_requests,
    migrations_are_safe_when_processes_start_at_once,
    attempt_jobs_are_fenced_by_their_lease,
    concurrent_workers_never_claim_one_job_twice,
    artifacts_are_shared_by_content,
    flaky_tests_are_a_projection_of_the_log,
    deploy_locks_take_turns_and_expire,
    one_deploy_lock_holder_under_concurrent_takers,
    baselines_are_kept_by_repository_tree_and_gate,
    knowledge_is_kept_by_blob_and_commit,
    landed_durations_are_by_task_type_from_started_to_landed,
    a_runs_page_reads_what_it_shows,
);

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
                lines_changed: 0,
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

async fn projections_follow_events_and_rebuild_equals_live(db: Db) {
    let store = db.open().await;
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

/// A review's reservation and charge: their own rows (an attempt's are keyed the same), the run's
/// spend and the task's cost, and other runs' daily and weekly windows while held and once charged.
async fn a_reviews_spend_is_projected_apart_and_counts_against_windows(db: Db) {
    let store = db.open().await;
    let mut log = history("r1");
    log.truncate(log.len() - 1); // still running
    store.append(&log).await.unwrap();
    let reserved = abo_core::budget::Reservation {
        usd: Some(0.5),
        tokens: Some(1000),
    };
    let critic = abo_core::ids::BackendName::new("critic");
    store
        .append(&[ev(
            "r1",
            Some("a"),
            EventBody::ReviewReserved {
                attempt: 1,
                reviewer: critic.clone(),
                reserved,
            },
        )])
        .await
        .unwrap();
    let other = RunId::new("other");
    let since = abo_core::ids::Timestamp(0);
    // The attempts' 0.25 and 116 tokens charged, the review's reservation held.
    assert_eq!(
        store.window_spend(&other, since).await.unwrap(),
        (0.75, 1116)
    );
    store
        .append(&[ev(
            "r1",
            Some("a"),
            EventBody::ReviewCharged {
                attempt: 1,
                reviewer: critic,
                usd: 0.125,
                tokens: 300,
                reserved,
                source: "estimated".into(),
            },
        )])
        .await
        .unwrap();
    assert_eq!(
        store.window_spend(&other, since).await.unwrap(),
        (0.375, 416)
    );
    let run = store.run(&RunId::new("r1")).await.unwrap().unwrap();
    assert_eq!((run.spent_usd, run.spent_tokens), (0.375, 416));
    let tasks = store.tasks(&RunId::new("r1")).await.unwrap();
    assert_eq!((tasks[0].cost_usd, tasks[0].tokens), (0.375, 416));
    let live = store.dump_projections().await.unwrap();
    assert!(
        live.contains("review_spend r1 a 1 critic 0.5 1000 Some(0.125) Some(300)"),
        "{live}"
    );
    store.rebuild_projections().await.unwrap();
    assert_eq!(store.dump_projections().await.unwrap(), live);
}

fn finished(attempt: u32, ok: bool, usd: f64) -> EventBody {
    EventBody::TaskBackendFinished {
        attempt,
        ok,
        exit: Some(i32::from(!ok)),
        reason: None,
        duration_ms: 10 * u64::from(attempt),
        files_changed: 1,
        usage: Some(Usage {
            input_tokens: 100,
            output_tokens: 10,
            ..Default::default()
        }),
        cost_usd: Some(usd),
        cost_source: Some("reported".into()),
        log: None,
        model: None,
        message: None,
        transcript: None,
        prompt: None,
        transient: false,
        lines_changed: 0,
    }
}

fn started(attempt: u32, backend: &str, usd: Option<f64>) -> EventBody {
    EventBody::TaskStarted {
        attempt,
        backend: BackendName::new(backend),
        worktree: "w".into(),
        reserved: abo_core::budget::Reservation { usd, tokens: None },
    }
}

/// A run that touches every projection: a retry on another backend, approvals of both kinds, a
/// pause, spend, an alert, a pull request.
fn busy_history(run: &str) -> Vec<Event> {
    use abo_core::state::ApprovalAction;
    let t = |id: &str, body| ev(run, Some(id), body);
    let r = |body| ev(run, None, body);
    let retry = |attempt, kept: &str| EventBody::TaskRetry {
        attempt,
        cause: RetryCause::Failed,
        reason: "gate failed".into(),
        log: None,
        kept_worktree: Some(kept.into()),
    };
    let landed = |c: &str| EventBody::TaskLanded {
        attempt: 1,
        commit: CommitSha::new(c),
    };
    let ask = |approval: &str, action| EventBody::TaskApprovalRequested {
        attempt: 1,
        approval: approval.into(),
        action,
        reasons: vec!["Cargo.lock changes dependencies".into()],
    };
    vec![
        r(EventBody::RunCreated(Box::new(spec(&[
            "a", "b", "c", "d", "e", "skip",
        ])))),
        r(EventBody::RunStarted {}),
        t("a", EventBody::TaskReady {}),
        t("a", started(1, "claude", Some(0.5))),
        t("b", EventBody::TaskReady {}),
        t("b", started(1, "claude", Some(0.5))),
        t("a", finished(1, true, 0.25)),
        t(
            "a",
            EventBody::BudgetCharged {
                attempt: 1,
                backend: BackendName::new("claude"),
                usd: 0.25,
                tokens: 110,
                reserved: Default::default(),
                source: "reported".into(),
            },
        ),
        t("a", landed("ca")),
        // b fails on claude, is retried on codex, fails again, then lands.
        t("b", finished(1, false, 0.1)),
        t("b", retry(2, ".abo/worktrees/r/b-1")),
        t("b", started(2, "codex", None)),
        t("b", finished(2, false, 0.0)),
        t("b", retry(3, ".abo/worktrees/r/b-2")),
        t("b", started(3, "codex", None)),
        t("b", finished(3, true, 0.0)),
        t(
            "b",
            EventBody::TaskLanded {
                attempt: 3,
                commit: CommitSha::new("cb"),
            },
        ),
        // c waits for a merge approval while the run pauses and resumes.
        t("c", EventBody::TaskReady {}),
        t("c", started(1, "command", None)),
        t("c", finished(1, true, 0.0)),
        t("c", ask("ap-c", ApprovalAction::Merge)),
        r(EventBody::RunPaused {
            reason: "waiting for approvals".into(),
        }),
        r(EventBody::RunResumed {
            caps: Default::default(),
        }),
        t(
            "c",
            EventBody::TaskApproved {
                approval: "ap-c".into(),
                reason: "ok".into(),
            },
        ),
        t("c", landed("cc")),
        // d's plan is approved, then it is denied; e's plan is waiting when the run ends.
        t("d", ask("ap-d", ApprovalAction::Plan)),
        t(
            "d",
            EventBody::TaskApproved {
                approval: "ap-d".into(),
                reason: "go".into(),
            },
        ),
        t("d", EventBody::TaskReady {}),
        t("d", started(1, "command", None)),
        t("d", finished(1, true, 0.0)),
        t(
            "d",
            EventBody::TaskDenied {
                attempt: 1,
                reasons: vec!["forbidden".into(), "secret".into()],
                kept_worktree: Some(".abo/worktrees/r/d-1".into()),
            },
        ),
        t("e", ask("ap-e", ApprovalAction::Plan)),
        t(
            "e",
            EventBody::TaskCancelled {
                reason: "the run ended".into(),
                dependency: None,
            },
        ),
        r(EventBody::BudgetAlert {
            cap: "run".into(),
            key: "run:r:80".into(),
            spent: 0.8,
            limit: 1.0,
            alert_at: 0.8,
        }),
        r(EventBody::RunPullRequest {
            url: "https://example.test/pr/1".into(),
            number: Some(1),
        }),
        r(EventBody::RunFinished {
            landed: 3,
            failed: 0,
            cancelled: 1,
            skipped: 1,
        }),
    ]
}

/// Appends fold their events before writing: one batch of a whole run must leave the projections
/// as appending its events one at a time does, and a rebuild (folded in chunks) as well.
async fn a_batch_projects_as_its_events_one_at_a_time(db: Db) {
    let history = busy_history("r");
    let one = db.open().await;
    for e in &history {
        one.append(std::slice::from_ref(e)).await.unwrap();
    }
    let expected = one.dump_projections().await.unwrap();
    // Batches of every size: a batch's start may find its task's backend from an earlier one,
    // and a retry may change it within the batch.
    for size in [2, 3, 7, history.len()] {
        let other = db.sibling();
        let store = other.open().await;
        for chunk in history.chunks(size) {
            store.append(chunk).await.unwrap();
        }
        assert_eq!(
            store.dump_projections().await.unwrap(),
            expected,
            "batches of {size}"
        );
        store.rebuild_projections().await.unwrap();
        assert_eq!(store.dump_projections().await.unwrap(), expected);
    }

    // And what one at a time gives is what each event means.
    let tasks = one.tasks(&RunId::new("r")).await.unwrap();
    let brief: Vec<_> = tasks
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.status.as_str(),
                t.attempts,
                t.backend.as_deref(),
                t.commit.as_deref(),
                t.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            ("a", "landed", 1, Some("claude"), Some("ca"), None),
            ("b", "landed", 3, Some("codex"), Some("cb"), None),
            ("c", "landed", 1, Some("command"), Some("cc"), None),
            (
                "d",
                "denied",
                1,
                Some("command"),
                None,
                Some("forbidden; secret")
            ),
            ("e", "cancelled", 0, None, None, Some("the run ended")),
            ("skip", "skipped", 0, None, None, Some("not ready: later")),
        ]
    );
    assert_eq!(
        tasks[1].kept_worktrees,
        [".abo/worktrees/r/b-1", ".abo/worktrees/r/b-2"]
    );
    assert_eq!(tasks[1].tokens, 330);
    let stats = one.router_stats().await.unwrap();
    let arm = |b: &str| {
        let a = stats[&("docs".to_owned(), b.to_owned())];
        (a.attempts, a.landed, a.failed)
    };
    // b's first failure counts against claude, where it ran; the rest against codex.
    assert_eq!(arm("claude"), (2, 1, 1));
    assert_eq!(arm("codex"), (2, 1, 1));
    assert_eq!(arm("command"), (2, 1, 1));
    let run = one.run(&RunId::new("r")).await.unwrap().unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.reason.as_deref(),
            run.spent_usd,
            run.last_seq,
            run.pull_request.as_deref()
        ),
        (
            "finished",
            None,
            0.25,
            u64::try_from(history.len()).unwrap(),
            Some("https://example.test/pr/1")
        )
    );
    assert!(run.finished_at.is_some());
    let pending: Vec<_> = one
        .pending_approvals()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, ["ap-e"]);
}

async fn seq_is_gap_free_under_concurrent_appenders(db: Db) {
    // Separate pools on one database, as separate processes would be.
    let stores = [db.open().await, db.open().await, db.open().await];
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

async fn leases_and_requests(db: Db) {
    let store = db.open().await;
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

async fn migrations_are_safe_when_processes_start_at_once(db: Db) {
    let (url, dir) = db.location();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, dir) = (url.clone(), dir.clone());
            tokio::spawn(async move { Store::open(&url, &dir).await.unwrap() })
        })
        .collect();
    // Every one of them sees the same, complete schema.
    for h in handles {
        let s = h.await.unwrap();
        assert!(s.runs().await.unwrap().is_empty());
        assert!(s.workers().await.unwrap().is_empty());
    }
}

fn worker(name: &str) -> WorkerRow {
    WorkerRow {
        name: name.into(),
        host: "h".into(),
        pid: 1,
        slots: 2,
        started_at: Timestamp(0),
        heartbeat: Timestamp(0),
        claims: 0,
        done: 0,
        refused: 0,
        lost: 0,
        busy: 0,
    }
}

async fn attempt_jobs_are_fenced_by_their_lease(db: Db) {
    let store = db.open().await;
    let ttl = std::time::Duration::from_secs(10);
    let (run, task) = (RunId::new("r"), TaskId::new("a"));
    for w in ["w1", "w2"] {
        store.register_worker(&worker(w)).await.unwrap();
    }
    // A follow-up job of an attempt nobody holds cannot be posted.
    assert_eq!(
        store
            .post_job(&run, &task, 1, JobKind::Gate, "{}", Timestamp(1))
            .await
            .unwrap(),
        None
    );
    let start = store
        .post_job(&run, &task, 1, JobKind::Start, "{\"s\":1}", Timestamp(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.job_state(start).await.unwrap(), Some(JobState::Ready));
    // Without a free slot, w2 takes nothing new; w1 takes the start job and the attempt's lease.
    assert_eq!(
        store
            .claim_job("w2", false, Timestamp(2), ttl)
            .await
            .unwrap(),
        None
    );
    let job = store
        .claim_job("w1", true, Timestamp(2), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.id, job.kind, job.token),
        (start, JobKind::Start, start)
    );
    assert_eq!(
        store
            .claim_job("w2", true, Timestamp(2), ttl)
            .await
            .unwrap(),
        None,
        "a job is claimed once"
    );
    assert!(
        store
            .finish_job(&job, "w1", "{\"ok\":1}", false, Timestamp(3))
            .await
            .unwrap()
    );
    assert_eq!(
        store.job_state(start).await.unwrap(),
        Some(JobState::Done {
            worker: "w1".into(),
            result: "{\"ok\":1}".into()
        })
    );
    // The attempt's next job goes to its holder only, under the same token.
    let gate = store
        .post_job(&run, &task, 1, JobKind::Gate, "{}", Timestamp(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .claim_job("w2", true, Timestamp(4), ttl)
            .await
            .unwrap(),
        None
    );
    let g = store
        .claim_job("w1", false, Timestamp(4), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((g.id, g.token), (gate, start));
    let leases = store.attempt_leases(Some(&run)).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].worker.as_str(), leases[0].token), ("w1", start));
    // Heartbeats keep the lease; without them it is reaped and the open job lost.
    let held = store
        .heartbeat_worker("w1", Timestamp(5), ttl)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(store.reap(Timestamp(10_000)).await.unwrap().is_empty());
    let reaped = store.reap(Timestamp(20_000)).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(matches!(
        store.job_state(gate).await.unwrap(),
        Some(JobState::Lost { reason }) if reason.contains("w1")
    ));
    // The late result of the worker that lost its lease is refused, and counted.
    assert!(
        !store
            .finish_job(&g, "w1", "{}", false, Timestamp(20_001))
            .await
            .unwrap()
    );
    assert!(
        store
            .heartbeat_worker("w1", Timestamp(20_002), ttl)
            .await
            .unwrap()
            .is_empty(),
        "the worker learns it holds nothing"
    );
    // The task is attempted again: w2 takes it, under a new token; w1's old token stays refused.
    let again = store
        .post_job(&run, &task, 1, JobKind::Start, "{}", Timestamp(20_003))
        .await
        .unwrap()
        .unwrap();
    let j2 = store
        .claim_job("w2", true, Timestamp(20_003), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j2.token, again);
    assert_ne!(j2.token, job.token);
    let stale = Job {
        id: again,
        ..job.clone()
    };
    assert!(
        !store
            .finish_job(&stale, "w1", "{}", false, Timestamp(20_004))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_job(&j2, "w2", "{}", true, Timestamp(20_005))
            .await
            .unwrap()
    );
    assert!(
        store.attempt_leases(None).await.unwrap().is_empty(),
        "released"
    );
    let ws = store.workers().await.unwrap();
    let counts: Vec<_> = ws
        .iter()
        .map(|w| (w.name.as_str(), w.claims, w.done, w.refused, w.lost))
        .collect();
    assert_eq!(counts, vec![("w1", 1, 1, 2, 1), ("w2", 1, 1, 0, 0)]);
    // A killed run ends its leases and loses its open jobs.
    store
        .post_job(
            &run,
            &TaskId::new("b"),
            1,
            JobKind::Start,
            "{}",
            Timestamp(30_000),
        )
        .await
        .unwrap();
    store
        .claim_job("w2", true, Timestamp(30_000), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .release_run(&run, None, "killed", Timestamp(30_001))
            .await
            .unwrap(),
        1
    );
    assert!(store.attempt_leases(None).await.unwrap().is_empty());
}

async fn concurrent_workers_never_claim_one_job_twice(db: Db) {
    let store = db.open().await;
    let run = RunId::new("r");
    for i in 0..40 {
        store
            .post_job(
                &run,
                &TaskId::new(format!("t{i}")),
                1,
                JobKind::Start,
                "{}",
                Timestamp(0),
            )
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let s = db.open().await;
        s.register_worker(&worker(&format!("w{w}"))).await.unwrap();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = s
                .claim_job(
                    &format!("w{w}"),
                    true,
                    Timestamp(1),
                    std::time::Duration::from_secs(5),
                )
                .await
                .unwrap()
            {
                got.push(j.task.as_str().to_owned());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(all, want, "every job claimed exactly once");
    assert_eq!(store.attempt_leases(None).await.unwrap().len(), 40);
}

async fn artifacts_are_shared_by_content(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let bytes = b"log line\n\x00\xff binary tail".to_vec();
    a.artifact_put("abc", &bytes).await.unwrap();
    a.artifact_put("abc", &bytes).await.unwrap();
    assert_eq!(b.artifact_get("abc").await.unwrap(), Some(bytes));
    assert_eq!(b.artifact_get("nope").await.unwrap(), None);
}

/// A gate event as abo writes it; `flaky`: the tests that failed before it passed.
fn gate(at: i64, name: &str, flaky: Option<&[&str]>) -> Event {
    let mut e = ev(
        "r1",
        Some("a"),
        EventBody::TaskGate {
            attempt: 1,
            name: abo_core::ids::GateName::new(name),
            stage: abo_core::event::GateStage::Attempt,
            passed: true,
            exit: Some(0),
            timed_out: false,
            duration_ms: 5,
            runs: 2,
            log: None,
            figures: Some(abo_core::event::GateFigures {
                flaky: flaky.map(|f| f.iter().map(|t| (*t).to_owned()).collect()),
                ..Default::default()
            }),
        },
    );
    e.at = Timestamp(at);
    e
}

/// Events of a few kinds, after a seq, in order, at most a limit; none of a kind never appended.
async fn events_of_some_kinds_are_read_in_order_after_a_seq(db: Db) {
    let store = db.open().await;
    let stored = store
        .append(&[
            ev(
                "r1",
                None,
                EventBody::RunCreated(Box::new(spec(&["a", "b"]))),
            ),
            ev("r1", Some("a"), started(1, "command", None)),
            ev("r1", Some("a"), landed(1)),
            ev("r2", None, EventBody::RunCreated(Box::new(spec(&["a"])))),
            ev("r2", Some("a"), started(1, "command", None)),
            ev("r1", Some("b"), started(1, "command", None)),
            ev("r2", Some("a"), landed(1)),
            ev("r1", Some("b"), landed(1)),
        ])
        .await
        .unwrap();
    let seqs = |got: Vec<abo_core::event::StoredEvent>| -> Vec<u64> {
        got.iter().map(|e| e.seq).collect()
    };
    let s = |i: usize| stored[i].seq;
    let kinds = ["task.landed", "run.created"];
    assert_eq!(
        seqs(store.events_of_kinds(&kinds, 0, 100).await.unwrap()),
        vec![s(0), s(2), s(3), s(6), s(7)]
    );
    assert_eq!(
        seqs(store.events_of_kinds(&kinds[..1], s(2), 100).await.unwrap()),
        vec![s(6), s(7)]
    );
    assert_eq!(
        seqs(store.events_of_kinds(&kinds[..1], 0, 2).await.unwrap()),
        vec![s(2), s(6)]
    );
    assert!(
        store
            .events_of_kinds(&["task.denied"], 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// What `hedge.after: p90` reads: each landed attempt's wall time, started to landed, by the
/// task's type; attempts that did not land are not counted.
async fn landed_durations_are_by_task_type_from_started_to_landed(db: Db) {
    let store = db.open().await;
    let at = |ms: i64, task: &str, body| Event {
        at: Timestamp(1_700_000_000_000 + ms),
        ..ev("r1", Some(task), body)
    };
    store
        .append(&[
            ev(
                "r1",
                None,
                EventBody::RunCreated(Box::new(spec(&["a", "b"]))),
            ),
            at(0, "a", started(1, "command", None)),
            at(100, "b", started(1, "command", None)),
            at(2_000, "a", landed(1)),
            // b's first attempt failed; its second landed 300 ms after it started.
            at(2_500, "b", started(2, "command", None)),
            at(2_800, "b", landed(2)),
        ])
        .await
        .unwrap();
    let got = store.landed_durations().await.unwrap();
    assert_eq!(
        got,
        std::collections::BTreeMap::from([("docs".to_owned(), vec![2_000, 300])])
    );
}

async fn flaky_tests_are_a_projection_of_the_log(db: Db) {
    let store = db.open().await;
    store.append(&history("r1")).await.unwrap();
    store
        .append(&[
            gate(10, "test", Some(&["t::a", "t::b"])),
            gate(20, "test", None),
            gate(30, "test", Some(&["t::b"])),
        ])
        .await
        .unwrap();
    store
        .append(&[gate(40, "lint", Some(&["t::b"]))])
        .await
        .unwrap();
    let brief = |rows: Vec<abo_store::FlakyTest>| -> Vec<(String, String, i64, i64, u64)> {
        rows.into_iter()
            .map(|f| (f.gate, f.test, f.first_seen.0, f.last_seen.0, f.count))
            .collect()
    };
    let want = vec![
        ("test".to_owned(), "t::b".to_owned(), 10, 30, 2),
        ("lint".to_owned(), "t::b".to_owned(), 40, 40, 1),
        ("test".to_owned(), "t::a".to_owned(), 10, 10, 1),
    ];
    assert_eq!(brief(store.flaky_tests().await.unwrap()), want);
    store.rebuild_projections().await.unwrap();
    assert_eq!(brief(store.flaky_tests().await.unwrap()), want);
}

async fn baselines_are_kept_by_repository_tree_and_gate(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let key = |repo: &str, tree: &str, gate: &str, config: &str| abo_store::BaselineKey {
        repo: repo.into(),
        tree: tree.into(),
        gate: abo_core::ids::GateName::new(gate),
        config: config.into(),
    };
    let k = key("root", "t1", "test", "c1");
    assert_eq!(b.baseline(&k, Timestamp(1)).await.unwrap(), None);
    a.put_baseline(&k, r#"{"tests":{"run":3}}"#, Timestamp(1))
        .await
        .unwrap();
    // Another process sees it; the first measurement recorded stays.
    b.put_baseline(&k, r#"{"tests":{"run":4}}"#, Timestamp(2))
        .await
        .unwrap();
    assert_eq!(
        b.baseline(&k, Timestamp(3)).await.unwrap().as_deref(),
        Some(r#"{"tests":{"run":3}}"#)
    );
    // Any other part of the key is another baseline.
    let old = key("root", "t2", "test", "c1");
    a.put_baseline(&old, "{}", Timestamp(2)).await.unwrap();
    for other in [
        key("other", "t1", "test", "c1"),
        key("root", "t3", "test", "c1"),
        key("root", "t1", "lint", "c1"),
        key("root", "t1", "test", "c2"),
    ] {
        assert_eq!(
            b.baseline(&other, Timestamp(3)).await.unwrap(),
            None,
            "{other:?}"
        );
    }
    // Not a projection: a rebuild keeps them.
    a.rebuild_projections().await.unwrap();
    // Pruning removes those not used since: `k` was read at 3, `old` only written at 2.
    assert_eq!(b.baseline_prune(Timestamp(3)).await.unwrap(), 1);
    assert!(b.baseline(&k, Timestamp(4)).await.unwrap().is_some());
    assert_eq!(b.baseline(&old, Timestamp(4)).await.unwrap(), None);
}

async fn knowledge_is_kept_by_blob_and_commit(db: Db) {
    use abo_store::{KnowledgeBlob, KnowledgeDoc};
    let (a, b) = (db.open().await, db.open().await);
    let blob = |id: &str, terms: &[(&str, u32)], defs: &[&str], refs: &[&str]| KnowledgeBlob {
        blob: id.into(),
        lang: "rust".into(),
        len: terms.iter().map(|(_, n)| u64::from(*n)).sum(),
        terms: terms.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        defs: defs
            .iter()
            .map(|d| ((*d).to_owned(), "fn".to_owned(), 3))
            .collect(),
        refs: refs.iter().map(|r| ((*r).to_owned(), 2)).collect(),
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    a.knowledge_put_blobs(
        "repo",
        &[
            blob(
                "b1",
                &[("prompt", 4), ("budget", 1)],
                &["BuildPrompt"],
                &["Tokens"],
            ),
            blob("b2", &[("token", 2)], &["Tokens"], &[]),
        ],
    )
    .await
    .unwrap();
    // Recorded again (another process read the same blob): nothing doubles.
    b.knowledge_put_blobs("repo", &[blob("b1", &[("prompt", 9)], &[], &[])])
        .await
        .unwrap();
    assert_eq!(
        b.knowledge_known_blobs("repo", &s(&["b1", "b2", "b3"]))
            .await
            .unwrap(),
        ["b1", "b2"].map(String::from).into_iter().collect()
    );
    assert!(
        b.knowledge_known_blobs("other", &s(&["b1"]))
            .await
            .unwrap()
            .is_empty()
    );
    let tree = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(p, b)| ((*p).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
    };
    a.knowledge_put_tree(
        "repo",
        "c1",
        &tree(&[("src/prompt.rs", "b1"), ("src/tok.rs", "b2")]),
        Timestamp(1),
    )
    .await
    .unwrap();
    a.knowledge_put_tree(
        "repo",
        "c2",
        &tree(&[("src/prompt.rs", "b1")]),
        Timestamp(1),
    )
    .await
    .unwrap();
    assert!(
        b.knowledge_indexed("repo", "c1", Timestamp(5))
            .await
            .unwrap()
    );
    assert!(
        !b.knowledge_indexed("repo", "c3", Timestamp(5))
            .await
            .unwrap()
    );
    assert_eq!(b.knowledge_file_stats("repo", "c1").await.unwrap(), (2, 7));
    assert_eq!(b.knowledge_file_stats("repo", "c2").await.unwrap(), (1, 5));
    let (mut hits, common) = b
        .knowledge_file_hits("repo", "c1", &s(&["prompt", "token", "absent"]), 10)
        .await
        .unwrap();
    assert!(common.is_empty());
    // A term in more files than asked for is left out.
    let (none, common) = b
        .knowledge_file_hits("repo", "c1", &s(&["prompt"]), 0)
        .await
        .unwrap();
    assert_eq!((none.len(), common), (0, s(&["prompt"])));
    hits.sort();
    assert_eq!(
        hits,
        [
            ("src/prompt.rs".to_owned(), "prompt".to_owned(), 4, 5),
            ("src/tok.rs".to_owned(), "token".to_owned(), 2, 2)
        ]
    );
    assert_eq!(
        b.knowledge_defs_named("repo", "c1", &s(&["buildprompt"]))
            .await
            .unwrap(),
        [("src/prompt.rs".to_owned(), "BuildPrompt".to_owned())]
    );
    assert_eq!(
        b.knowledge_defs_by_name("repo", "c1", &s(&["Tokens"]))
            .await
            .unwrap(),
        [(
            "src/tok.rs".to_owned(),
            "Tokens".to_owned(),
            "fn".to_owned(),
            3
        )]
    );
    assert!(
        b.knowledge_defs_by_name("repo", "c2", &s(&["Tokens"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.knowledge_refs_to("repo", "c1", &s(&["Tokens"]))
            .await
            .unwrap(),
        [("src/prompt.rs".to_owned(), "Tokens".to_owned(), 2)]
    );
    assert_eq!(
        b.knowledge_refs_in("repo", "c1", &s(&["src/prompt.rs"]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b.knowledge_tree("repo", "c2").await.unwrap(),
        tree(&[("src/prompt.rs", "b1")])
    );

    // Past changes: a query sees only those before its time.
    let doc = |key: &str, at: i64| KnowledgeDoc {
        kind: "commit".into(),
        key: key.into(),
        at: Timestamp(at),
        title: format!("subject {key}"),
        body: "body".into(),
        files: vec!["src/prompt.rs".into()],
        len: 3,
        terms: vec![("prompt".into(), 2), ("shorter".into(), 1)],
    };
    a.knowledge_put_docs("repo", &[doc("k1", 10), doc("k2", 20)])
        .await
        .unwrap();
    b.knowledge_put_docs("repo", &[doc("k1", 99)])
        .await
        .unwrap();
    assert_eq!(
        b.knowledge_doc_stats("repo", Timestamp(15)).await.unwrap(),
        (1, 3)
    );
    assert_eq!(
        b.knowledge_doc_hits("repo", Timestamp(21), &s(&["shorter"]))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.knowledge_known_docs("repo", "commit", &s(&["k1", "k9"]))
            .await
            .unwrap(),
        ["k1".to_owned()].into_iter().collect()
    );
    let got = b
        .knowledge_docs("repo", &[("commit".into(), "k1".into())])
        .await
        .unwrap();
    assert_eq!(
        (got[0].at, got[0].files.clone()),
        (Timestamp(10), s(&["src/prompt.rs"]))
    );
    assert_eq!(b.knowledge_cursor("repo", "events").await.unwrap(), None);
    a.knowledge_set_cursor("repo", "events", 7).await.unwrap();
    a.knowledge_set_cursor("repo", "events", 8).await.unwrap();
    assert_eq!(b.knowledge_cursor("repo", "events").await.unwrap(), Some(8));

    // Pruning: c2 was last used at 1, c1 at 5; b2 is held by c1 only.
    assert_eq!(a.knowledge_prune(Timestamp(5)).await.unwrap(), 1);
    assert!(
        !b.knowledge_indexed("repo", "c2", Timestamp(6))
            .await
            .unwrap()
    );
    assert_eq!(
        b.knowledge_known_blobs("repo", &s(&["b1", "b2"]))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(a.knowledge_prune(Timestamp(7)).await.unwrap(), 1);
    assert!(
        b.knowledge_known_blobs("repo", &s(&["b1", "b2"]))
            .await
            .unwrap()
            .is_empty()
    );
}

fn lock(env: &str, deployment: &str, pid: u32, at: i64, ttl: i64) -> abo_store::DeployLock {
    abo_store::DeployLock {
        environment: env.into(),
        deployment: deployment.into(),
        host: "h".into(),
        pid,
        acquired: Timestamp(at),
        expires: Timestamp(at + ttl),
    }
}

async fn deploy_locks_take_turns_and_expire(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let first = lock("prod", "d1", 1, 1000, 500);
    assert_eq!(
        a.take_deploy_lock(&first, Timestamp(1000), None)
            .await
            .unwrap(),
        None
    );
    // Another process, another deployment: refused, and told who holds it.
    let second = lock("prod", "d2", 2, 1100, 500);
    assert_eq!(
        b.take_deploy_lock(&second, Timestamp(1100), None)
            .await
            .unwrap(),
        Some(first.clone())
    );
    // Another environment is free.
    assert_eq!(
        b.take_deploy_lock(&lock("staging", "d3", 2, 1100, 500), Timestamp(1100), None)
            .await
            .unwrap(),
        None
    );
    // The holder renews; the lock is still refused after the first expiry.
    assert!(
        a.renew_deploy_lock("prod", "d1", Timestamp(2000))
            .await
            .unwrap()
    );
    assert!(
        b.take_deploy_lock(&second, Timestamp(1600), None)
            .await
            .unwrap()
            .is_some()
    );
    // Its holder crashed: once its lease expires, the next one takes it.
    let later = lock("prod", "d2", 2, 2001, 500);
    assert_eq!(
        b.take_deploy_lock(&later, Timestamp(2001), None)
            .await
            .unwrap(),
        None
    );
    // The old holder can neither renew nor release the new holder's lock.
    assert!(
        !a.renew_deploy_lock("prod", "d1", Timestamp(3000))
            .await
            .unwrap()
    );
    a.release_deploy_lock("prod", "d1").await.unwrap();
    let held = b.deploy_locks().await.unwrap();
    assert_eq!(
        held.iter()
            .map(|l| (l.environment.as_str(), l.deployment.as_str()))
            .collect::<Vec<_>>(),
        [("prod", "d2"), ("staging", "d3")]
    );
    // A holder found dead frees its lock at once.
    let third = lock("prod", "d4", 3, 2100, 500);
    assert_eq!(
        a.take_deploy_lock(&third, Timestamp(2100), Some("d2"))
            .await
            .unwrap(),
        None
    );
    a.release_deploy_lock("prod", "d4").await.unwrap();
    assert_eq!(b.deploy_locks().await.unwrap().len(), 1);
}

async fn one_deploy_lock_holder_under_concurrent_takers(db: Db) {
    let stores = futures_stores(&db, 6).await;
    let mut tasks = Vec::new();
    for (i, s) in stores.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let l = lock(
                "prod",
                &format!("d{i}"),
                u32::try_from(i).unwrap(),
                10,
                1000,
            );
            s.take_deploy_lock(&l, Timestamp(10), None)
                .await
                .unwrap()
                .is_none()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

async fn futures_stores(db: &Db, n: usize) -> Vec<Store> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(db.open().await);
    }
    out
}

/// What a run's page reads instead of its whole log: its spec's head, its own events, its spend,
/// a page of its tasks (all or by status), their counts, events of a few kinds since a time, a
/// task's first start; the same on both databases, and after a rebuild.
async fn a_runs_page_reads_what_it_shows(db: Db) {
    let store = db.open().await;
    store.append(&busy_history("r")).await.unwrap();
    let run = RunId::new("r");
    for pass in ["live", "rebuilt"] {
        let mut head = spec(&["a", "b", "c", "d", "e", "skip"]);
        head.tasks.clear();
        assert_eq!(
            store.run_spec_head(&run).await.unwrap(),
            Some(head),
            "{pass}"
        );
        assert_eq!(
            store.run_spec_head(&RunId::new("none")).await.unwrap(),
            None
        );
        let kinds: Vec<&str> = store
            .run_level_events(&run)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event.body.kind())
            .collect();
        // Not the run's creation, alert or pull request: only what moves its clock, caps and end.
        assert_eq!(
            kinds,
            ["run.started", "run.paused", "run.resumed", "run.finished"],
            "{pass}"
        );
        let spend = store.run_spend(&run).await.unwrap();
        let rows: Vec<(&str, u32, &str, f64, Option<f64>)> = spend
            .iter()
            .map(|s| {
                (
                    s.task.as_str(),
                    s.attempt,
                    s.backend.as_str(),
                    s.reserved_usd,
                    s.charged.map(|c| c.0),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("a", 1, "claude", 0.5, Some(0.25)),
                ("b", 1, "claude", 0.5, None)
            ],
            "{pass}"
        );
        let all = store.tasks(&run).await.unwrap();
        let ids = |rows: &[abo_store::TaskRow]| -> Vec<String> {
            rows.iter().map(|t| t.id.to_string()).collect()
        };
        assert_eq!(
            store.tasks_page(&run, &[], 0, 100).await.unwrap(),
            all,
            "{pass}"
        );
        assert_eq!(
            ids(&store.tasks_page(&run, &[], 2, 2).await.unwrap()),
            ["c", "d"]
        );
        assert_eq!(
            ids(&store.tasks_page(&run, &["landed"], 1, 10).await.unwrap()),
            ["b", "c"],
            "{pass}"
        );
        assert_eq!(
            ids(&store
                .tasks_page(&run, &["denied", "skipped"], 0, 10)
                .await
                .unwrap()),
            ["d", "skip"],
            "{pass}"
        );
        // A status is bound, not spliced into the query.
        assert!(
            store
                .tasks_page(&run, &["landed') OR ('1'='1"], 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let counts = store.task_status_counts(&run).await.unwrap();
        let want: std::collections::BTreeMap<String, u64> = [
            ("cancelled", 1),
            ("denied", 1),
            ("landed", 3),
            ("skipped", 1),
        ]
        .into_iter()
        .map(|(s, n)| (s.to_owned(), n))
        .collect();
        assert_eq!(counts, want, "{pass}");
        let at = Timestamp(1_700_000_000_000);
        let landed = store
            .events_since(&["task.landed", "task.denied"], at)
            .await
            .unwrap();
        assert_eq!(landed.len(), 4, "{pass}");
        assert!(
            store
                .events_since(&["task.landed"], Timestamp(at.0 + 1))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.events_since(&[], at).await.unwrap().is_empty());
        assert_eq!(
            store.first_started(&run, &TaskId::new("b")).await.unwrap(),
            Some(at)
        );
        assert_eq!(
            store.first_started(&run, &TaskId::new("e")).await.unwrap(),
            None
        );
        store.rebuild_projections().await.unwrap();
    }
}
