//! The state machine, driven by commands and read back as a trace of events and effects.

use expect_test::{Expect, expect};
use pretty_assertions::assert_eq;

use crate::backlog::TaskType;
use crate::config::Landing;
use crate::decide::{BackendOutcome, Command, Effect, GateOutcome, LandOutcome};
use crate::event::{Event, EventBody, GateStage, StoredEvent};
use crate::ids::{BackendName, CommitSha, GateName, RunId, TaskId, Timestamp};
use crate::spec::{BackendSpec, GateSpec, RunSettings, RunSpec, TaskSpec};
use crate::state::{RunState, RunStatus, TaskState};

struct T {
    id: &'static str,
    deps: &'static [&'static str],
    paths: &'static [&'static str],
    priority: i64,
    max_attempts: u32,
}

const fn t(id: &'static str, deps: &'static [&'static str]) -> T {
    T {
        id,
        deps,
        paths: &[],
        priority: 0,
        max_attempts: 2,
    }
}

fn spec(tasks: &[T], gates: &[&str], max_parallel: usize) -> RunSpec {
    RunSpec {
        title: "test".into(),
        profile: "prod-conservative".into(),
        base: CommitSha::new("base"),
        base_branch: Some("main".into()),
        branch: "abo/r".into(),
        settings: RunSettings {
            max_parallel,
            stop_after_consecutive_failures: 2,
            attempt_timeout_ms: 1000,
            silence_timeout_ms: 1000,
            run_timeout_ms: 10_000,
            gates: gates
                .iter()
                .map(|g| GateSpec {
                    name: GateName::new(*g),
                    run: "true".into(),
                    timeout_ms: 1000,
                    retries: 0,
                    reports: Default::default(),
                    quarantine: false,
                })
                .collect(),
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
            .map(|t| TaskSpec {
                id: TaskId::new(t.id),
                title: t.id.to_uppercase(),
                kind: TaskType::Code,
                description: String::new(),
                acceptance: vec![],
                paths: t.paths.iter().map(|s| (*s).to_owned()).collect(),
                deps: t.deps.iter().map(|d| TaskId::new(*d)).collect(),
                backend: BackendSpec::Command {
                    name: BackendName::new("command"),
                    run: "true".into(),
                },
                gates: gates.iter().map(|g| GateName::new(*g)).collect(),
                labels: vec![],
                max_attempts: t.max_attempts,
                priority: t.priority,
                skipped: None,
                needs_plan_approval: false,
                autonomy: Default::default(),
                origin: "b.yml:1:1".into(),
                budget: None,
                routed: false,
                context_tokens: 0,
            })
            .collect(),
    }
}

/// A run with its log, so replay can be compared with the live state.
struct Harness {
    state: RunState,
    log: Vec<StoredEvent>,
    now: i64,
}

impl Harness {
    fn new(spec: RunSpec) -> Self {
        let id = RunId::new("r");
        let created = Event {
            run: id.clone(),
            task: None,
            at: Timestamp(0),
            body: EventBody::RunCreated(Box::new(spec.clone())),
        };
        let state = RunState::created(id, spec, Timestamp(0));
        Self {
            state,
            log: vec![StoredEvent {
                seq: 1,
                event: created,
            }],
            now: 0,
        }
    }

    /// Runs commands and renders what each decided.
    fn run(&mut self, cmds: Vec<Command>) -> String {
        let mut out = String::new();
        for cmd in cmds {
            self.now += 1;
            out.push_str(&format!("> {}\n", brief_cmd(&cmd)));
            match self.state.decide(cmd, Timestamp(self.now)) {
                Ok(d) => {
                    for e in d.events {
                        out.push_str(&format!("  {}\n", brief_event(&e)));
                        let seq = self.log.len() as u64 + 1;
                        self.log.push(StoredEvent { seq, event: e });
                    }
                    for e in d.effects {
                        out.push_str(&format!("  => {}\n", brief_effect(&e)));
                    }
                }
                Err(e) => out.push_str(&format!("  rejected: {e}\n")),
            }
        }
        out
    }

    fn check(&mut self, cmds: Vec<Command>, expect: Expect) {
        expect.assert_eq(&self.run(cmds));
        // The sets decisions read, kept up to date event by event, are those the states give.
        assert_eq!(self.state.index, self.state.fresh_index());
        // Replaying the log gives the same state as deciding live (effects in flight aside).
        let mut replayed = RunState::replay(&RunId::new("r"), &self.log).unwrap();
        replayed.inflight = self.state.inflight.clone();
        replayed.last_seq = self.state.last_seq;
        assert_eq!(replayed, self.state);
    }
}

fn brief_cmd(c: &Command) -> String {
    match c {
        Command::BackendDone {
            task,
            attempt,
            outcome,
        } => match &outcome.failure {
            None => format!("backend ok {task}#{attempt}"),
            Some(r) => format!("backend failed {task}#{attempt}: {r}"),
        },
        Command::GateDone {
            task,
            attempt,
            stage,
            outcome,
            ..
        } => {
            format!(
                "gate {} {:?} {task}#{attempt} passed={}",
                outcome.name, stage, outcome.passed
            )
        }
        Command::LandDone {
            task,
            attempt,
            outcome,
        } => format!("land {task}#{attempt} {outcome:?}"),
        Command::Resume { landed, caps } if caps.is_empty() => {
            format!("Resume {{ landed: {landed:?} }}")
        }
        other => format!("{other:?}"),
    }
}

fn brief_event(e: &Event) -> String {
    let task = e.task.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
    let data = match &e.body {
        EventBody::RunCreated(_) => String::new(),
        b => {
            let d = b.data();
            if d.as_object().is_some_and(|m| m.is_empty()) {
                String::new()
            } else {
                format!(" {d}")
            }
        }
    };
    format!("{}{task}{data}", e.body.kind())
}

fn brief_effect(e: &Effect) -> String {
    match e {
        Effect::StartAttempt {
            attempt, feedback, ..
        } => {
            format!(
                "start {attempt}{}",
                feedback
                    .as_ref()
                    .map(|f| format!(" feedback: {}", f.reason))
                    .unwrap_or_default()
            )
        }
        Effect::RunGate {
            attempt,
            gate,
            stage,
            candidate,
        } => {
            format!(
                "gate {gate} {stage:?} {attempt}{}",
                candidate
                    .as_ref()
                    .map(|c| format!(" on {c}"))
                    .unwrap_or_default()
            )
        }
        other => format!("{other:?}"),
    }
}

fn ok(task: &str, attempt: u32) -> Command {
    Command::BackendDone {
        task: TaskId::new(task),
        attempt,
        outcome: BackendOutcome {
            failure: None,
            exit: Some(0),
            duration_ms: 5,
            files_changed: 1,
            usage: None,
            cost_usd: None,
            cost_source: None,
            log: None,
            ..Default::default()
        },
    }
}

fn backend_failed(task: &str, attempt: u32, why: &str) -> Command {
    let Command::BackendDone {
        task,
        attempt,
        mut outcome,
    } = ok(task, attempt)
    else {
        unreachable!()
    };
    outcome.failure = Some(why.into());
    outcome.exit = Some(1);
    Command::BackendDone {
        task,
        attempt,
        outcome,
    }
}

fn gate(
    task: &str,
    attempt: u32,
    name: &str,
    stage: GateStage,
    passed: bool,
    candidate: Option<&str>,
) -> Command {
    Command::GateDone {
        task: TaskId::new(task),
        attempt,
        stage,
        outcome: GateOutcome {
            name: GateName::new(name),
            passed,
            exit: Some(if passed { 0 } else { 1 }),
            timed_out: false,
            duration_ms: 3,
            runs: 1,
            log: None,
            figures: None,
        },
        candidate: candidate.map(CommitSha::new),
    }
}

fn policy(task: &str, attempt: u32, verdict: crate::verdict::Verdict, reasons: &[&str]) -> Command {
    use crate::verdict::Verdict;
    let reasons: Vec<String> = reasons.iter().map(|r| (*r).to_owned()).collect();
    Command::PolicyDone {
        task: TaskId::new(task),
        attempt,
        outcome: crate::decide::PolicyOutcome {
            verdict,
            deny: if verdict == Verdict::Deny {
                reasons.clone()
            } else {
                vec![]
            },
            require_approval: if verdict == Verdict::NeedsApproval {
                reasons
            } else {
                vec![]
            },
            risk: "low".into(),
            duration_us: 40,
            error: None,
            secrets: 0,
            input: None,
        },
    }
}

fn allow(task: &str, attempt: u32) -> Command {
    policy(task, attempt, crate::verdict::Verdict::Allow, &[])
}

fn landed(task: &str, attempt: u32, commit: &str) -> Command {
    Command::LandDone {
        task: TaskId::new(task),
        attempt,
        outcome: LandOutcome::Landed {
            commit: CommitSha::new(commit),
        },
    }
}

#[test]
fn diamond_with_gates() {
    let mut h = Harness::new(spec(
        &[
            t("a", &[]),
            t("b", &["a"]),
            t("c", &["a"]),
            t("d", &["b", "c"]),
        ],
        &["test"],
        2,
    ));
    h.check(
        vec![Command::Start, ok("a", 1), gate("a", 1, "test", GateStage::Attempt, true, None), allow("a", 1), landed("a", 1, "c1")],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.started a {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/1
            > gate test Attempt a#1 passed=true
              task.gate a {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > land a#1 Landed { commit: CommitSha("c1") }
              task.landed a {"attempt":1,"commit":"c1"}
              task.ready b
              task.ready c
              task.started b {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/b-1"}
              task.started c {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/c-1"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => start r/b/1
              => start r/c/1
        "#]],
    );
    // b and c finish their gates together: they land one at a time, in the order they finished.
    h.check(
        vec![
            ok("c", 1),
            ok("b", 1),
            gate("c", 1, "test", GateStage::Attempt, true, None),
            gate("b", 1, "test", GateStage::Attempt, true, None),
            allow("c", 1),
            allow("b", 1),
            landed("c", 1, "c2"),
            landed("b", 1, "c3"),
        ],
        expect![[r#"
            > backend ok c#1
              task.backend_finished c {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/c/1
            > backend ok b#1
              task.backend_finished b {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/b/1
            > gate test Attempt c#1 passed=true
              task.gate c {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 } }
            > gate test Attempt b#1 passed=true
              task.gate b {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
            > PolicyDone { task: TaskId("c"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy c {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 } }
            > PolicyDone { task: TaskId("b"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy b {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > land c#1 Landed { commit: CommitSha("c2") }
              task.landed c {"attempt":1,"commit":"c2"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 }, commit: CommitSha("c2") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 }, keep: false }
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
            > land b#1 Landed { commit: CommitSha("c3") }
              task.landed b {"attempt":1,"commit":"c3"}
              task.ready d
              task.started d {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/d-1"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, commit: CommitSha("c3") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, keep: false }
              => start r/d/1
        "#]],
    );
    h.check(
        vec![ok("d", 1), gate("d", 1, "test", GateStage::Attempt, true, None), allow("d", 1), landed("d", 1, "c4")],
        expect![[r#"
            > backend ok d#1
              task.backend_finished d {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/d/1
            > gate test Attempt d#1 passed=true
              task.gate d {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("d"), attempt: 1 } }
            > PolicyDone { task: TaskId("d"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy d {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("d"), attempt: 1 } }
            > land d#1 Landed { commit: CommitSha("c4") }
              task.landed d {"attempt":1,"commit":"c4"}
              run.finished {"cancelled":0,"failed":0,"landed":4,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("d"), attempt: 1 }, commit: CommitSha("c4") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("d"), attempt: 1 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
    assert_eq!(h.state.status, RunStatus::Finished);
    assert!(h.state.all_landed());
}

#[test]
fn overlapping_paths_never_run_together_and_priority_orders() {
    let tasks = [
        T {
            id: "low",
            deps: &[],
            paths: &["docs/**"],
            priority: 0,
            max_attempts: 1,
        },
        T {
            id: "src",
            deps: &[],
            paths: &["src/**"],
            priority: 5,
            max_attempts: 1,
        },
        T {
            id: "model",
            deps: &[],
            paths: &["src/models/user.rs"],
            priority: 9,
            max_attempts: 1,
        },
        T {
            id: "tests",
            deps: &[],
            paths: &["tests/**"],
            priority: 1,
            max_attempts: 1,
        },
    ];
    let mut h = Harness::new(spec(&tasks, &[], 3));
    let trace = h.run(vec![Command::Start]);
    let started: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.strip_prefix("  => start r/"))
        .collect();
    // `model` (priority 9) first; `src` overlaps it and waits; then `tests` and `low`.
    assert_eq!(started, ["model/1", "tests/1", "low/1"]);
    let trace = h.run(vec![
        ok("model", 1),
        allow("model", 1),
        landed("model", 1, "m"),
    ]);
    assert!(trace.contains("=> start r/src/1"), "{trace}");
}

#[test]
fn failed_attempts_retry_with_feedback_then_fail_and_cancel_dependents() {
    let mut h = Harness::new(spec(
        &[t("a", &[]), t("b", &["a"]), t("c", &["b"]), t("x", &[])],
        &["test"],
        1,
    ));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            gate("a", 1, "test", GateStage::Attempt, false, None),
            backend_failed("a", 2, "command exited with 1"),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.ready x
              task.started a {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/1
            > gate test Attempt a#1 passed=false
              task.gate a {"attempt":1,"duration_ms":3,"exit":1,"log":null,"name":"test","passed":false,"runs":1,"stage":"attempt","timed_out":false}
              task.retry a {"attempt":2,"cause":"failed","kept_worktree":".abo/worktrees/r/a-1","log":null,"reason":"gate `test` failed: it exited with 1"}
              task.started a {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/a-2"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: true }
              => start r/a/2 feedback: gate `test` failed: it exited with 1
            > backend failed a#2: command exited with 1
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"command exited with 1","transcript":null,"transient":false,"usage":null}
              task.failed a {"attempts":2,"kept_worktree":".abo/worktrees/r/a-2","reason":"command exited with 1 (after 2 attempts)"}
              task.cancelled b {"dependency":"a","reason":"dependency `a` failed"}
              task.cancelled c {"dependency":"b","reason":"dependency `b` was cancelled"}
              task.started x {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/x-1"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: true }
              => start r/x/1
        "#]],
    );
    let a = h.state.task(&TaskId::new("a")).unwrap();
    assert_eq!(
        a.kept_worktrees,
        [".abo/worktrees/r/a-1", ".abo/worktrees/r/a-2"]
    );
    // A second task failure in a row pauses the run (stop_after_consecutive_failures: 2).
    h.check(
        vec![backend_failed("x", 1, "no change"), backend_failed("x", 2, "no change")],
        expect![[r#"
            > backend failed x#1: no change
              task.backend_finished x {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"no change","transcript":null,"transient":false,"usage":null}
              task.retry x {"attempt":2,"cause":"failed","kept_worktree":".abo/worktrees/r/x-1","log":null,"reason":"no change"}
              task.started x {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/x-2"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("x"), attempt: 1 }, keep: true }
              => start r/x/2 feedback: no change
            > backend failed x#2: no change
              task.backend_finished x {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"no change","transcript":null,"transient":false,"usage":null}
              task.failed x {"attempts":2,"kept_worktree":".abo/worktrees/r/x-2","reason":"no change (after 2 attempts)"}
              run.paused {"reason":"2 tasks failed in a row (attempts.stop_after_consecutive_failures: 2)"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("x"), attempt: 2 }, keep: true }
        "#]],
    );
    // `abo retry a` re-queues a and the tasks cancelled because of it, with fresh attempts.
    h.check(
        vec![Command::Retry { task: TaskId::new("b") }, Command::Retry { task: TaskId::new("a") }, Command::Resume { landed: vec![], caps: Default::default() }],
        expect![[r#"
            > Retry { task: TaskId("b") }
              task.retry b {"attempt":1,"cause":"requested","kept_worktree":null,"log":null,"reason":"retry requested"}
              task.retry c {"attempt":1,"cause":"requested","kept_worktree":null,"log":null,"reason":"retry requested"}
            > Retry { task: TaskId("a") }
              task.retry a {"attempt":3,"cause":"requested","kept_worktree":null,"log":null,"reason":"retry requested"}
              task.ready a
            > Resume { landed: [] }
              run.resumed
              task.started a {"attempt":3,"backend":"command","worktree":".abo/worktrees/r/a-3"}
              => start r/a/3
        "#]],
    );
    let trace = h.run(vec![backend_failed("a", 3, "again")]);
    assert!(
        trace.contains("task.retry a {\"attempt\":4"),
        "fresh attempts after a retry: {trace}"
    );
}

#[test]
fn merged_gates_decide_before_the_run_branch_moves() {
    let mut h = Harness::new(spec(&[t("a", &[])], &["lint", "test"], 1));
    h.run(vec![Command::Start, ok("a", 1)]);
    h.run(vec![
        gate("a", 1, "lint", GateStage::Attempt, true, None),
        gate("a", 1, "test", GateStage::Attempt, true, None),
        allow("a", 1),
    ]);
    h.check(
        vec![
            Command::LandDone { task: TaskId::new("a"), attempt: 1, outcome: LandOutcome::Merged { candidate: CommitSha::new("m1") } },
            gate("a", 1, "lint", GateStage::Merged, true, Some("m1")),
            gate("a", 1, "test", GateStage::Merged, false, Some("m1")),
        ],
        expect![[r#"
            > land a#1 Merged { candidate: CommitSha("m1") }
              => gate lint Merged r/a/1 on m1
            > gate lint Merged a#1 passed=true
              task.gate a {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"lint","passed":true,"runs":1,"stage":"merged","timed_out":false}
              => gate test Merged r/a/1 on m1
            > gate test Merged a#1 passed=false
              task.gate a {"attempt":1,"duration_ms":3,"exit":1,"log":null,"name":"test","passed":false,"runs":1,"stage":"merged","timed_out":false}
              task.retry a {"attempt":2,"cause":"failed","kept_worktree":".abo/worktrees/r/a-1","log":null,"reason":"gate `test` failed on the merged result: it exited with 1"}
              task.started a {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/a-2"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: true }
              => start r/a/2 feedback: gate `test` failed on the merged result: it exited with 1
        "#]],
    );
    h.run(vec![
        ok("a", 2),
        gate("a", 2, "lint", GateStage::Attempt, true, None),
        gate("a", 2, "test", GateStage::Attempt, true, None),
        allow("a", 2),
    ]);
    let trace = h.run(vec![
        Command::LandDone {
            task: TaskId::new("a"),
            attempt: 2,
            outcome: LandOutcome::Merged {
                candidate: CommitSha::new("m2"),
            },
        },
        gate("a", 2, "lint", GateStage::Merged, true, Some("m2")),
        gate("a", 2, "test", GateStage::Merged, true, Some("m2")),
    ]);
    assert!(trace.ends_with("=> Advance { attempt: AttemptId { run: RunId(\"r\"), task: TaskId(\"a\"), attempt: 2 }, candidate: CommitSha(\"m2\") }\n"), "{trace}");
}

#[test]
fn stale_results_are_ignored() {
    let mut h = Harness::new(spec(&[t("a", &[])], &["test"], 1));
    h.run(vec![Command::Start]);
    let trace = h.run(vec![
        ok("a", 7),
        gate("a", 1, "test", GateStage::Attempt, true, None),
        landed("a", 1, "x"),
    ]);
    assert_eq!(
        trace.lines().filter(|l| !l.starts_with('>')).count(),
        0,
        "{trace}"
    );
}

#[test]
fn an_interrupted_attempt_runs_again_under_its_number_and_late_news_of_it_is_ignored() {
    let mut h = Harness::new(spec(&[t("a", &[]), t("b", &[])], &["test"], 2));
    h.run(vec![Command::Start, ok("a", 1)]);
    // a's worker went away during its gates, b's during its backend.
    let interrupted = |task: &str| Command::Interrupted {
        task: TaskId::new(task),
        attempt: 1,
        reason: "worker w1 stopped heartbeating".into(),
    };
    h.check(
        vec![interrupted("a"), interrupted("b")],
        expect![[r#"
            > Interrupted { task: TaskId("a"), attempt: 1, reason: "worker w1 stopped heartbeating" }
              task.retry a {"attempt":1,"cause":"interrupted","kept_worktree":null,"log":null,"reason":"interrupted: worker w1 stopped heartbeating"}
              task.started a {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > Interrupted { task: TaskId("b"), attempt: 1, reason: "worker w1 stopped heartbeating" }
              task.retry b {"attempt":1,"cause":"interrupted","kept_worktree":null,"log":null,"reason":"interrupted: worker w1 stopped heartbeating"}
              task.started b {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/b-1"}
              => start r/b/1
        "#]],
    );
    // The old attempt's result, or a second report of its loss, changes nothing.
    let trace = h.run(vec![
        gate("a", 1, "test", GateStage::Attempt, true, None),
        interrupted("c"),
    ]);
    assert_eq!(
        trace.lines().filter(|l| !l.starts_with('>')).count(),
        0,
        "{trace}"
    );
    assert_eq!(h.state.task(&TaskId::new("a")).unwrap().attempt, 1);
}

#[test]
fn resume_after_a_crash_recovers_in_flight_tasks() {
    let mut h = Harness::new(spec(
        &[t("a", &[]), t("b", &[]), t("c", &["a"])],
        &["test"],
        2,
    ));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        gate("a", 1, "test", GateStage::Attempt, true, None),
        allow("a", 1),
    ]);
    // The process dies here: a was being landed (its commit reached the run branch), b was running.
    let mut state = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(state.inflight, Default::default());
    h.state = state.clone();
    h.check(
        vec![Command::Resume { landed: vec![(TaskId::new("a"), 1, CommitSha::new("c1"))], caps: Default::default() }],
        expect![[r#"
            > Resume { landed: [(TaskId("a"), 1, CommitSha("c1"))] }
              run.resumed
              task.landed a {"attempt":1,"commit":"c1"}
              task.retry b {"attempt":1,"cause":"interrupted","kept_worktree":null,"log":null,"reason":"interrupted: abo stopped while the attempt was in flight"}
              task.ready c
              task.started b {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/b-1"}
              task.started c {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/c-1"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => start r/b/1
              => start r/c/1
        "#]],
    );
    // An interrupted attempt is redone under the same number: it does not count as a failure.
    assert_eq!(h.state.task(&TaskId::new("b")).unwrap().attempt, 1);
    let e = state.decide(Command::Start, Timestamp(9)).unwrap_err();
    assert_eq!(e.to_string(), "run r is running: it cannot be started");
}

#[test]
fn pause_lets_in_flight_work_finish_and_kill_cancels_everything() {
    let mut h = Harness::new(spec(&[t("a", &[]), t("b", &[]), t("c", &["a"])], &[], 1));
    h.check(
        vec![Command::Start, Command::Pause { reason: "by a person".into() }, ok("a", 1), allow("a", 1), landed("a", 1, "c1")],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.ready b
              task.started a {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > Pause { reason: "by a person" }
              run.paused {"reason":"by a person"}
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > land a#1 Landed { commit: CommitSha("c1") }
              task.landed a {"attempt":1,"commit":"c1"}
              task.ready c
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
        "#]],
    );
    assert_eq!(h.state.in_flight(), 0);
    h.check(
        vec![Command::Resume { landed: vec![], caps: Default::default() }, Command::Kill { reason: "by a person".into() }, Command::Kill { reason: "again".into() }],
        expect![[r#"
            > Resume { landed: [] }
              run.resumed
              task.started b {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/b-1"}
              => start r/b/1
            > Kill { reason: "by a person" }
              run.killed {"reason":"by a person"}
              task.cancelled b {"dependency":null,"reason":"run killed: by a person"}
              task.cancelled c {"dependency":null,"reason":"run killed: by a person"}
              => KillAll
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, keep: false }
            > Kill { reason: "again" }
              rejected: run r is killed: it cannot be killed
        "#]],
    );
    assert_eq!(
        h.state
            .task(&TaskId::new("c"))
            .unwrap()
            .state
            .status()
            .as_str(),
        "cancelled"
    );
    assert!(matches!(
        h.state.task(&TaskId::new("a")).unwrap().state,
        TaskState::Landed { .. }
    ));
}

fn api(name: &str) -> BackendSpec {
    BackendSpec::Api {
        name: BackendName::new(name),
        api: crate::config::ApiKind::Openai,
        model: "m".into(),
        base_url: "http://127.0.0.1:1/v1".into(),
        api_key_env: None,
        max_tokens: 100,
        context_tokens: 100,
        retries: 0,
    }
}

#[test]
fn a_backend_failing_transiently_opens_its_circuit_and_the_fallback_is_used() {
    let mut s = spec(
        &[T {
            id: "a",
            deps: &[],
            paths: &[],
            priority: 0,
            max_attempts: 9,
        }],
        &[],
        1,
    );
    s.tasks[0].backend = api("premium");
    s.settings.fallback = vec![api("local")];
    let mut h = Harness::new(s);
    let transient = |attempt| {
        let Command::BackendDone {
            task,
            attempt,
            mut outcome,
        } = backend_failed("a", attempt, "HTTP 529: overloaded")
        else {
            unreachable!()
        };
        outcome.transient = true;
        Command::BackendDone {
            task,
            attempt,
            outcome,
        }
    };
    let trace = h.run(vec![Command::Start, transient(1), transient(2)]);
    assert!(
        !trace.contains("router.decision"),
        "two failures do not open it: {trace}"
    );
    let trace = h.run(vec![transient(3)]);
    assert!(
        trace.contains(r#"router.decision a {"attempt":4,"backend":"local","rule":"fallback: the circuit of `premium` is open"}"#),
        "{trace}"
    );
    assert!(
        trace.contains(r#"task.started a {"attempt":4,"backend":"local""#),
        "{trace}"
    );
    assert!(
        h.state
            .circuit_open(&BackendName::new("premium"), Timestamp(h.now))
    );
    // After the cooldown the task's own backend is tried again.
    let later = Timestamp(h.now + crate::state::CIRCUIT_COOLDOWN_MS + 1);
    assert!(!h.state.circuit_open(&BackendName::new("premium"), later));
    // Replay reaches the same health.
    let replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(replayed.health, h.state.health);
}

#[test]
fn per_backend_caps_hold() {
    let mut s = spec(&[t("a", &[]), t("b", &[]), t("c", &[])], &[], 3);
    s.settings.per_backend.insert("command".into(), 2);
    let mut h = Harness::new(s);
    let trace = h.run(vec![Command::Start]);
    assert_eq!(trace.matches("=> start").count(), 2, "{trace}");
    let trace = h.run(vec![ok("a", 1), allow("a", 1), landed("a", 1, "c1")]);
    assert!(trace.contains("=> start r/c/1"), "{trace}");
}

#[test]
fn policy_decides_land_approval_or_denial_and_people_decide_approvals() {
    use crate::verdict::Verdict;
    let mut h = Harness::new(spec(
        &[
            t("ok", &[]),
            t("ask", &[]),
            t("bad", &[]),
            t("after-bad", &["bad"]),
            t("after-ask", &["ask"]),
        ],
        &[],
        3,
    ));
    h.check(
        vec![
            Command::Start,
            ok("ok", 1),
            ok("ask", 1),
            ok("bad", 1),
            allow("ok", 1),
            policy("ask", 1, Verdict::NeedsApproval, &["Cargo.lock changes dependencies"]),
            policy("bad", 1, Verdict::Deny, &["src/a.rs:3 adds a secret (aws-access-key)"]),
            landed("ok", 1, "c1"),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready ok
              task.ready ask
              task.ready bad
              task.started ok {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/ok-1"}
              task.started ask {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/ask-1"}
              task.started bad {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/bad-1"}
              => start r/ok/1
              => start r/ask/1
              => start r/bad/1
            > backend ok ok#1
              task.backend_finished ok {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("ok"), attempt: 1 } }
            > backend ok ask#1
              task.backend_finished ask {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("ask"), attempt: 1 } }
            > backend ok bad#1
              task.backend_finished bad {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("bad"), attempt: 1 } }
            > PolicyDone { task: TaskId("ok"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy ok {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("ok"), attempt: 1 } }
            > PolicyDone { task: TaskId("ask"), attempt: 1, outcome: PolicyOutcome { verdict: NeedsApproval, deny: [], require_approval: ["Cargo.lock changes dependencies"], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy ask {"attempt":1,"deny":[],"duration_us":40,"require_approval":["Cargo.lock changes dependencies"],"risk":"low","verdict":"needs_approval"}
              task.approval_requested ask {"action":"merge","approval":"r/ask/1","attempt":1,"reasons":["Cargo.lock changes dependencies"]}
            > PolicyDone { task: TaskId("bad"), attempt: 1, outcome: PolicyOutcome { verdict: Deny, deny: ["src/a.rs:3 adds a secret (aws-access-key)"], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy bad {"attempt":1,"deny":["src/a.rs:3 adds a secret (aws-access-key)"],"duration_us":40,"require_approval":[],"risk":"low","verdict":"deny"}
              task.denied bad {"attempt":1,"kept_worktree":".abo/worktrees/r/bad-1","reasons":["src/a.rs:3 adds a secret (aws-access-key)"]}
              task.cancelled after-bad {"dependency":"bad","reason":"dependency `bad` was denied"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("bad"), attempt: 1 }, keep: true }
            > land ok#1 Landed { commit: CommitSha("c1") }
              task.landed ok {"attempt":1,"commit":"c1"}
              run.paused {"reason":"waiting for approval: ask"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("ok"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("ok"), attempt: 1 }, keep: false }
        "#]],
    );
    // Only the approval is left: the run pauses instead of finishing.
    assert_eq!(
        h.state.status,
        RunStatus::Paused {
            reason: "waiting for approval: ask".into()
        }
    );
    let e = h
        .state
        .decide(
            Command::Approve {
                approval: "nope".into(),
                reason: "x".into(),
            },
            Timestamp(99),
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "run r has no pending approval `nope`");
    // Approved from another process (`abo approve` while the run is paused): its effects are not
    // run there; `abo resume` lands the change and its dependent runs.
    h.run(vec![Command::Approve {
        approval: "ask".into(),
        reason: "lockfile bump reviewed".into(),
    }]);
    h.state = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    h.check(vec![Command::Resume { landed: vec![], caps: Default::default() }, landed("ask", 1, "c2")], expect![[r#"
        > Resume { landed: [] }
          run.resumed
          => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("ask"), attempt: 1 } }
        > land ask#1 Landed { commit: CommitSha("c2") }
          task.landed ask {"attempt":1,"commit":"c2"}
          task.ready after-ask
          task.started after-ask {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/after-ask-1"}
          => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("ask"), attempt: 1 }, commit: CommitSha("c2") }
          => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("ask"), attempt: 1 }, keep: false }
          => start r/after-ask/1
    "#]]);
    assert_eq!(
        h.state
            .task(&TaskId::new("bad"))
            .unwrap()
            .state
            .status()
            .as_str(),
        "denied"
    );
}

#[test]
fn an_approved_change_survives_a_crash_and_lands_on_resume() {
    use crate::verdict::Verdict;
    let mut h = Harness::new(spec(&[t("ask", &[])], &[], 1));
    h.run(vec![
        Command::Start,
        ok("ask", 1),
        policy("ask", 1, Verdict::NeedsApproval, &["why"]),
    ]);
    h.run(vec![Command::Approve {
        approval: "r/ask/1".into(),
        reason: "ok".into(),
    }]);
    let mut state = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    let d = state
        .decide(
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
            Timestamp(50),
        )
        .unwrap();
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::Land { attempt } if attempt.task.as_str() == "ask")),
        "{:?}",
        d.effects
    );
    assert!(
        !d.events.iter().any(|e| e.body.kind() == "task.retry"),
        "an approved change is not redone"
    );
}

#[test]
fn rejecting_denies_and_plan_approvals_gate_pending_tasks() {
    let mut s = spec(&[t("later", &[]), t("needs-later", &["later"])], &[], 1);
    s.tasks[0].needs_plan_approval = true;
    let mut h = Harness::new(s.clone());
    h.check(
        vec![Command::Start, Command::Reject { approval: "later".into(), reason: "not this quarter".into() }],
        expect![[r#"
            > Start
              run.started
              task.approval_requested later {"action":"plan","approval":"r/later/0","attempt":0,"reasons":["the plan lists this task as pending approval"]}
              run.paused {"reason":"waiting for approval: later"}
            > Reject { approval: "later", reason: "not this quarter" }
              task.rejected later {"approval":"r/later/0","reason":"not this quarter"}
              task.denied later {"attempt":0,"kept_worktree":null,"reasons":["rejected by a person: not this quarter"]}
              task.cancelled needs-later {"dependency":"later","reason":"dependency `later` was denied"}
        "#]],
    );
    let mut h = Harness::new(s);
    let trace = h.run(vec![
        Command::Start,
        Command::Approve {
            approval: "r/later/0".into(),
            reason: "go".into(),
        },
        Command::Resume {
            landed: vec![],
            caps: Default::default(),
        },
    ]);
    assert!(
        trace.contains("task.started later {\"attempt\":1"),
        "{trace}"
    );
}

#[test]
fn autonomy_levels_ask_for_approvals_and_decide_the_merge() {
    use crate::autonomy::profile;
    use crate::verdict::Verdict;
    // assisted: execute A1, so nothing runs unasked; generate A1, so each change waits too.
    let mut s = spec(&[t("a", &[])], &[], 1);
    s.tasks[0].autonomy = profile("assisted").unwrap();
    s.settings.autonomy = profile("assisted").unwrap();
    let mut h = Harness::new(s);
    let trace = h.run(vec![Command::Start]);
    assert!(
        trace.contains(r#""reasons":["autonomy: execute is A1 (assisted): commands and gates run only after approval"]"#),
        "{trace}"
    );
    let trace = h.run(vec![
        Command::Approve {
            approval: "a".into(),
            reason: "go".into(),
        },
        Command::Resume {
            landed: vec![],
            caps: Default::default(),
        },
        ok("a", 1),
        allow("a", 1),
    ]);
    assert!(trace.contains(r#""require_approval":["autonomy: generate is A1 (assisted): each change waits for approval"],"risk":"low","verdict":"needs_approval""#), "{trace}");

    // prod-conservative: merge A3 lands the run branch only when every landed change is low risk.
    let mut h = Harness::new(spec(&[t("docs", &[]), t("code", &[])], &[], 2));
    let medium = Command::PolicyDone {
        task: TaskId::new("code"),
        attempt: 1,
        outcome: crate::decide::PolicyOutcome {
            verdict: Verdict::Allow,
            deny: vec![],
            require_approval: vec![],
            risk: "medium".into(),
            duration_us: 1,
            error: None,
            secrets: 0,
            input: None,
        },
    };
    let trace = h.run(vec![
        Command::Start,
        ok("docs", 1),
        ok("code", 1),
        allow("docs", 1),
        medium,
        landed("docs", 1, "c1"),
        landed("code", 1, "c2"),
    ]);
    assert!(trace.ends_with("=> Finish { run: RunId(\"r\"), merge: Err(\"merge is A3 (auto low-risk) and these changes are not low risk: code (medium)\") }\n"), "{trace}");
}

/// A backend finished with a known cost.
fn ok_cost(task: &str, attempt: u32, usd: f64, tokens: u64) -> Command {
    let Command::BackendDone {
        task,
        attempt,
        mut outcome,
    } = ok(task, attempt)
    else {
        unreachable!()
    };
    outcome.cost_usd = Some(usd);
    outcome.cost_source = Some("reported".into());
    outcome.usage = Some(crate::event::Usage {
        input_tokens: tokens,
        ..Default::default()
    });
    Command::BackendDone {
        task,
        attempt,
        outcome,
    }
}

/// Tasks on a priced backend (a model API) with the given budgets.
fn priced(ids: &[&'static str], max_parallel: usize, b: crate::budget::BudgetSpec) -> RunSpec {
    let ts: Vec<T> = ids.iter().map(|i| t(i, &[])).collect();
    let mut s = spec(&ts, &[], max_parallel);
    for t in &mut s.tasks {
        t.backend = api("model");
    }
    s.settings.budgets = b;
    s
}

fn caps(run_usd: f64, task_usd: f64) -> crate::budget::BudgetSpec {
    crate::budget::BudgetSpec {
        run: crate::budget::Cap {
            usd: Some(run_usd),
            tokens: None,
        },
        task: crate::budget::Cap {
            usd: Some(task_usd),
            tokens: None,
        },
        ..Default::default()
    }
}

/// The sum of `budget.charged` in a log never passes `limit`.
fn charged(log: &[StoredEvent]) -> f64 {
    log.iter()
        .map(|e| match &e.event.body {
            EventBody::BudgetCharged { usd, .. } => *usd,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn reservations_hold_every_cap_alert_once_and_pause_for_budget() {
    let mut h = Harness::new(priced(&["a", "b", "c"], 3, caps(1.0, 0.4)));
    h.check(
        vec![
            Command::Start,
            ok_cost("a", 1, 0.5, 100),
            allow("a", 1),
            landed("a", 1, "c1"),
            ok_cost("b", 1, 0.35, 100),
            allow("b", 1),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.ready b
              task.ready c
              task.started a {"attempt":1,"backend":"model","reserved":{"usd":0.4},"worktree":".abo/worktrees/r/a-1"}
              task.started b {"attempt":1,"backend":"model","reserved":{"usd":0.4},"worktree":".abo/worktrees/r/b-1"}
              budget.exhausted c {"cap":"run.usd","limit":1.0,"needed":0.4,"reserved":0.8,"spent":0.0}
              => start r/a/1
              => start r/b/1
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":"reported","cost_usd":0.5,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":{"cache_read_tokens":0,"cache_write_tokens":0,"input_tokens":100,"output_tokens":0}}
              budget.charged a {"attempt":1,"backend":"model","reserved":{"tokens":0,"usd":0.4},"source":"reported","tokens":100,"usd":0.5}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > land a#1 Landed { commit: CommitSha("c1") }
              task.landed a {"attempt":1,"commit":"c1"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
            > backend ok b#1
              task.backend_finished b {"attempt":1,"cost_source":"reported","cost_usd":0.35,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":{"cache_read_tokens":0,"cache_write_tokens":0,"input_tokens":100,"output_tokens":0}}
              budget.charged b {"attempt":1,"backend":"model","reserved":{"tokens":0,"usd":0.4},"source":"reported","tokens":100,"usd":0.35}
              budget.alert {"alert_at":0.8,"cap":"run.usd","key":"run.usd","limit":1.0,"spent":0.85}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
            > PolicyDone { task: TaskId("b"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy b {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
        "#]],
    );
    // b lands; c still does not fit ($0.85 spent + $0.40 > $1.00): nothing in flight, so the run pauses.
    let trace = h.run(vec![landed("b", 1, "c2")]);
    assert!(
        trace.contains(r#"run.paused {"reason":"budget: run.usd cap $1.00 reached: $0.85 spent, $0.00 reserved by attempts in flight, $0.40 needed"}"#),
        "{trace}"
    );
    assert_eq!(
        trace.matches("budget.exhausted").count(),
        0,
        "once per cap: {trace}"
    );
    assert!(matches!(h.state.status, RunStatus::Paused { .. }));
    // Resumed with a raised cap, c runs; the alert is not sent again.
    let trace = h.run(vec![
        Command::Resume {
            landed: vec![],
            caps: crate::budget::CapChange {
                usd: Some(2.0),
                ..Default::default()
            },
        },
        ok_cost("c", 1, 0.3, 10),
        allow("c", 1),
        landed("c", 1, "c3"),
    ]);
    assert!(
        trace.contains(r#"task.started c {"attempt":1,"backend":"model","reserved":{"usd":0.4}"#),
        "{trace}"
    );
    assert!(!trace.contains("budget.alert"), "{trace}");
    assert!(trace.contains("run.finished"), "{trace}");
    assert!((charged(&h.log) - 1.15).abs() < 1e-9);
    let replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(replayed.budgets.run.usd, Some(2.0));
    assert_eq!(replayed.ledger, h.state.ledger);
}

#[test]
fn a_task_that_spent_its_own_cap_fails_and_waiting_attempts_see_every_cap() {
    let mut b = caps(10.0, 0.1);
    b.per_backend.insert(
        "model".into(),
        crate::budget::Cap {
            usd: None,
            tokens: Some(1000),
        },
    );
    let mut h = Harness::new(priced(&["a"], 1, b));
    let mut fail = backend_failed("a", 1, "the model API failed");
    if let Command::BackendDone { outcome, .. } = &mut fail {
        outcome.cost_usd = Some(0.1);
        outcome.cost_source = Some("estimated".into());
    }
    let trace = h.run(vec![Command::Start]);
    // The backend's token cap applies too: the attempt reserves all 1,000 tokens left.
    assert!(
        trace.contains(r#""reserved":{"tokens":1000,"usd":0.1}"#),
        "{trace}"
    );
    let trace = h.run(vec![fail]);
    assert!(trace.contains("task.retry a"), "{trace}");
    assert!(
        trace.contains(r#"task.failed a {"attempts":1,"kept_worktree":null,"reason":"budget: task.a.usd cap $0.10 reached: $0.10 spent, $0.00 reserved by attempts in flight, $0.00 needed"}"#),
        "{trace}"
    );
    assert!(!trace.contains("task.started"), "{trace}");
}

#[test]
fn daily_caps_count_other_runs_and_roll_over_with_the_day() {
    let mut b = crate::budget::BudgetSpec::default();
    b.daily.usd = Some(1.0);
    b.task.usd = Some(0.3);
    let mut h = Harness::new(priced(&["a"], 1, b));
    let day = |start: i64, others: f64| crate::budget::Window {
        start: Timestamp(start),
        end: Timestamp(start + 86_400_000),
        others: crate::budget::Amount {
            usd: others,
            tokens: 0,
        },
        alerted: Default::default(),
    };
    // Other runs spent $0.80 today: the $0.30 reservation does not fit.
    h.state.windows.day = day(0, 0.8);
    let trace = h.run(vec![Command::Start]);
    assert!(
        trace.contains(r#"budget.exhausted a {"cap":"daily.usd","limit":1.0,"needed":0.3,"reserved":0.0,"spent":0.8}"#),
        "{trace}"
    );
    assert!(
        trace.contains(r#"run.paused {"reason":"budget: daily.usd cap"#),
        "{trace}"
    );
    // The next day (the runtime's clock moved the window), resuming starts it.
    h.state.windows.day = day(86_400_000, 0.0);
    h.now = 86_400_000;
    let trace = h.run(vec![Command::Resume {
        landed: vec![],
        caps: Default::default(),
    }]);
    assert!(
        trace.contains(r#"task.started a {"attempt":1,"backend":"model","reserved":{"usd":0.3}"#),
        "{trace}"
    );
    // Spend of this run in the window counts too, and the alert is keyed by the window.
    let trace = h.run(vec![ok_cost("a", 1, 0.9, 5)]);
    assert!(
        trace.contains(r#"budget.alert {"alert_at":0.8,"cap":"daily.usd","key":"daily.usd@86400000","limit":1.0,"spent":0.9}"#),
        "{trace}"
    );
}

#[test]
fn wall_time_counts_running_time_only_and_stops_new_attempts() {
    let ts = [t("a", &[]), t("b", &["a"])];
    let mut s = spec(&ts, &[], 1);
    s.settings.budgets.wall_ms = Some(5);
    let mut h = Harness::new(s);
    // Start at 1; a lands by 4: b starts at 4 (ran 3 ms < 5).
    let trace = h.run(vec![
        Command::Start,
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
    ]);
    assert!(trace.contains("task.started b"), "{trace}");
    let trace = h.run(vec![Command::Pause {
        reason: "by a person".into(),
    }]);
    assert!(trace.contains("run.paused"), "{trace}");
    // A long pause does not count: resumed at 1000, b's result comes at 1001 and it retries at 1002
    // (ran: 4 before the pause, then 2: 6 ms >= 5): nothing starts and the run pauses for budget.
    h.now = 1000;
    let trace = h.run(vec![Command::Resume {
        landed: vec![],
        caps: Default::default(),
    }]);
    assert!(
        trace.contains("task.retry b"),
        "interrupted attempt: {trace}"
    );
    assert!(trace.contains("task.started b"), "ran 4 ms of 5: {trace}");
    let trace = h.run(vec![backend_failed("b", 1, "broke"), Command::Tick]);
    assert!(
        trace.contains(r#"budget.exhausted b {"cap":"run.wall""#),
        "{trace}"
    );
    assert!(
        trace.contains(r#"run.paused {"reason":"budget: run.wall cap"#),
        "{trace}"
    );
}

#[test]
fn an_interrupted_attempt_is_charged_its_reservation() {
    let mut h = Harness::new(priced(&["a"], 1, caps(5.0, 1.0)));
    h.run(vec![Command::Start]);
    let trace = h.run(vec![Command::Resume {
        landed: vec![],
        caps: Default::default(),
    }]);
    assert!(
        trace.contains(r#"budget.charged a {"attempt":1,"backend":"model","reserved":{"tokens":0,"usd":1.0},"source":"reservation","tokens":0,"usd":1.0}"#),
        "{trace}"
    );
    assert!(
        trace.contains(r#"task.started a {"attempt":1,"backend":"model","reserved":{"usd":1.0}"#),
        "{trace}"
    );
    assert_eq!(h.state.ledger.spent.usd, 1.0);
}

fn rule(when: &str, backend: &str) -> crate::route::RuleSpec {
    crate::route::RuleSpec {
        when: when.into(),
        backend: api(backend),
    }
}

#[test]
fn router_rules_choose_the_first_match_whose_backend_is_healthy() {
    struct Case {
        name: &'static str,
        kind: TaskType,
        labels: &'static [&'static str],
        spent_usd: f64,
        premium_open: bool,
        routed: bool,
    }
    let case = |name, kind, labels, spent_usd, premium_open, routed: bool| Case {
        name,
        kind,
        labels,
        spent_usd,
        premium_open,
        routed,
    };
    let cases = [
        case("docs", TaskType::Docs, &[], 0.0, false, true),
        case("big", TaskType::Code, &["big"], 0.0, false, true),
        case(
            "big, $6 of $10 spent",
            TaskType::Code,
            &["big"],
            6.0,
            false,
            true,
        ),
        case(
            "big, premium's circuit open",
            TaskType::Code,
            &["big"],
            0.0,
            true,
            true,
        ),
        case("small", TaskType::Code, &[], 0.0, false, true),
        case("small in src/", TaskType::Code, &["src"], 0.0, false, true),
        case(
            "small in src/, premium open",
            TaskType::Code,
            &["src"],
            0.0,
            true,
            true,
        ),
        case(
            "docs naming its backend",
            TaskType::Docs,
            &[],
            0.0,
            false,
            false,
        ),
    ];
    let mut out = String::new();
    for c in cases {
        let mut s = priced(&["a"], 1, crate::budget::BudgetSpec::default());
        s.settings.budgets.run.usd = Some(10.0);
        s.settings.router.rules = vec![
            rule("task.type == 'docs'", "local"),
            rule(
                "'big' in task.labels && budget.usd_remaining >= 5.0",
                "premium",
            ),
            rule("budget.usd_remaining < 5.0 && attempt == 1", "local"),
            rule("task.paths.exists(p, p.startsWith('src/'))", "premium"),
        ];
        let t = &mut s.tasks[0];
        t.kind = c.kind;
        t.labels = c.labels.iter().map(|l| (*l).to_owned()).collect();
        if c.labels.contains(&"src") {
            t.paths = vec!["src/**".into()];
        }
        t.backend = api("default");
        t.routed = c.routed;
        let mut h = Harness::new(s);
        h.state.ledger.spent.usd = c.spent_usd;
        if c.premium_open {
            h.state.health.insert(
                BackendName::new("premium"),
                crate::state::Health {
                    consecutive_transient: 3,
                    opened_at: Some(Timestamp(0)),
                    held_until: None,
                },
            );
        }
        h.run(vec![Command::Start]);
        let rec = h.state.task(&TaskId::new("a")).unwrap();
        let why = h
            .log
            .iter()
            .find_map(|e| match &e.event.body {
                EventBody::RouterDecision { rule, .. } => Some(rule.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "its own".into());
        out.push_str(&format!(
            "{:<28} -> {:<8} {why}\n",
            c.name,
            rec.backend.as_ref().unwrap().as_str()
        ));
    }
    expect![[r#"
        docs                         -> local    rules[0]: task.type == 'docs'
        big                          -> premium  rules[1]: 'big' in task.labels && budget.usd_remaining >= 5.0
        big, $6 of $10 spent         -> local    rules[2]: budget.usd_remaining < 5.0 && attempt == 1
        big, premium's circuit open  -> default  default: no rule matched
        small                        -> default  default: no rule matched
        small in src/                -> premium  rules[3]: task.paths.exists(p, p.startsWith('src/'))
        small in src/, premium open  -> default  default: no rule matched
        docs naming its backend      -> default  its own
    "#]].assert_eq(&out);
}

#[test]
fn the_learned_router_converges_on_the_backend_that_lands() {
    let ids: Vec<&'static str> = (0..40)
        .map(|i| &*Box::leak(format!("t{i:02}").into_boxed_str()))
        .collect();
    let mut s = priced(&ids, 1, crate::budget::BudgetSpec::default());
    s.settings.stop_after_consecutive_failures = 0;
    s.settings
        .router
        .learn
        .insert("code".into(), vec![api("good"), api("bad")]);
    for t in &mut s.tasks {
        t.routed = true;
        t.max_attempts = 1;
    }
    let mut h = Harness::new(s);
    let mut next = h.state.decide(Command::Start, Timestamp(1)).unwrap();
    let mut chosen = Vec::new();
    for step in 0..40 {
        let Some(Effect::StartAttempt {
            attempt, backend, ..
        }) = next
            .effects
            .iter()
            .find(|e| matches!(e, Effect::StartAttempt { .. }))
            .cloned()
        else {
            panic!("step {step}: nothing started: {next:?}");
        };
        let name = backend.name().to_string();
        let task = attempt.task.as_str().to_owned();
        let arm = h
            .state
            .router_stats
            .entry(("code".into(), name.clone()))
            .or_default();
        arm.attempts += 1;
        let now = Timestamp(10 + step);
        // `good` lands; `bad` produces nothing usable. The runtime keeps these counts in the store.
        next = if name == "good" {
            arm.landed += 1;
            h.state.decide(ok(&task, 1), now).unwrap();
            h.state.decide(allow(&task, 1), now).unwrap();
            h.state.decide(landed(&task, 1, "c"), now).unwrap()
        } else {
            arm.failed += 1;
            h.state
                .decide(backend_failed(&task, 1, "no change"), now)
                .unwrap()
        };
        chosen.push(name);
    }
    let late_good = chosen[20..].iter().filter(|b| *b == "good").count();
    assert!(late_good >= 17, "{chosen:?}");
    assert!(chosen.iter().any(|b| b == "bad"), "it explored: {chosen:?}");
}

#[test]
fn outside_its_windows_a_run_starts_nothing_and_pauses_for_its_schedule() {
    let mut h = Harness::new(spec(&[t("a", &[]), t("b", &[])], &[], 1));
    h.state.outside_schedule = Some("outside the windows 22:00-07:00 (12:00 now)".into());
    let trace = h.run(vec![Command::Start]);
    assert!(!trace.contains("task.started"), "{trace}");
    assert!(
        trace.contains(
            r#"run.paused {"reason":"schedule: outside the windows 22:00-07:00 (12:00 now)"}"#
        ),
        "{trace}"
    );
    // Inside the window (the runtime cleared it), resuming starts work again.
    h.state.outside_schedule = None;
    let trace = h.run(vec![Command::Resume {
        landed: vec![],
        caps: Default::default(),
    }]);
    assert!(trace.contains("task.started a"), "{trace}");
    // Leaving the window mid-run: what runs finishes, nothing new starts, then it pauses.
    h.state.outside_schedule = Some("outside the windows 22:00-07:00 (07:00 now)".into());
    let trace = h.run(vec![ok("a", 1), allow("a", 1), landed("a", 1, "c1")]);
    assert!(!trace.contains("task.started b"), "{trace}");
    assert!(
        trace.contains(r#"run.paused {"reason":"schedule: outside"#),
        "{trace}"
    );
}

#[test]
fn a_configuration_error_fails_the_task_at_its_first_attempt() {
    // Two attempts allowed (`t` gives max_attempts 2).
    let reason = "claude-code was stopped: the egress proxy refused a connection: x.test:443 is not in sandbox.agent_hosts";
    let mut h = Harness::new(spec(&[t("a", &[])], &[], 1));
    h.run(vec![Command::Start]);
    let mut fail = backend_failed("a", 1, reason);
    if let Command::BackendDone { outcome, .. } = &mut fail {
        outcome.permanent = true;
    }
    let trace = h.run(vec![fail]);
    assert!(!trace.contains("task.retry"), "{trace}");
    assert!(
        trace.contains(r#"task.failed a {"attempts":1,"kept_worktree":"#)
            && trace.contains(&format!("{reason} (after 1 attempt)")),
        "{trace}"
    );
    // Control: the same failure, not marked permanent, is retried.
    let mut h = Harness::new(spec(&[t("a", &[])], &[], 1));
    h.run(vec![Command::Start]);
    let trace = h.run(vec![backend_failed("a", 1, reason)]);
    assert!(trace.contains("task.retry a"), "{trace}");
    assert!(!trace.contains("task.failed"), "{trace}");
}

#[test]
fn an_agent_backend_recorded_before_endpoints_and_credentials_reads_as_it_ran() {
    let old = r#"{"kind":"agent","name":"claude","agent":"claude-code","command":"claude","model":null,"max_turns":null,"permission_mode":null,"args":[],"context_tokens":8000}"#;
    let b: crate::spec::BackendSpec = serde_json::from_str(old).unwrap();
    let crate::spec::BackendSpec::Agent {
        base_url,
        api_key_env,
        credentials,
        ..
    } = b
    else {
        panic!("{b:?}")
    };
    // Its key was in the agent's environment then.
    assert_eq!(
        (base_url, api_key_env, credentials),
        (None, None, crate::config::Credentials::Env)
    );
}

/// The backend reported a usage limit that resets at `until` (ms).
fn limited(task: &str, attempt: u32, until: i64) -> Command {
    let Command::BackendDone {
        task,
        attempt,
        mut outcome,
    } = backend_failed(
        task,
        attempt,
        "claude-code reported an error: usage limit reached",
    )
    else {
        unreachable!()
    };
    outcome.hold_until = Some(Timestamp(until));
    outcome.transient = true;
    Command::BackendDone {
        task,
        attempt,
        outcome,
    }
}

fn on_premium(tasks: &[T], fallback: bool) -> RunSpec {
    let mut s = spec(tasks, &[], 2);
    s.tasks[0].backend = api("premium");
    if fallback {
        s.settings.fallback = vec![api("local")];
    }
    s
}

const ONE_TRY: T = T {
    id: "a",
    deps: &[],
    paths: &[],
    priority: 0,
    max_attempts: 1,
};

#[test]
fn a_held_backend_hands_its_attempt_to_the_fallback_under_the_same_number() {
    let mut h = Harness::new(on_premium(&[ONE_TRY], true));
    h.check(
        vec![Command::Start, limited("a", 1, 60_000), ok("a", 1), allow("a", 1), landed("a", 1, "c1")],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.started a {"attempt":1,"backend":"premium","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend failed a#1: claude-code reported an error: usage limit reached
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"claude-code reported an error: usage limit reached","transcript":null,"transient":false,"usage":null}
              backend.held a {"backend":"premium","reason":"claude-code reported an error: usage limit reached","until":"1970-01-01T00:01:00.000Z"}
              task.retry a {"attempt":1,"cause":"quota","kept_worktree":null,"log":null,"reason":"quota: claude-code reported an error: usage limit reached"}
              router.decision a {"attempt":1,"backend":"local","rule":"fallback: `premium` is held until 1970-01-01T00:01:00.000Z"}
              task.started a {"attempt":1,"backend":"local","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > land a#1 Landed { commit: CommitSha("c1") }
              task.landed a {"attempt":1,"commit":"c1"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
    let a = h.state.task(&TaskId::new("a")).unwrap();
    assert_eq!(
        (a.attempt, a.backend.as_ref().map(|b| b.as_str())),
        (1, Some("local"))
    );
    // The limit is a hold, not a transient failure: the circuit stays closed.
    let premium = &h.state.health[&BackendName::new("premium")];
    assert_eq!(premium.consecutive_transient, 0);
    assert_eq!(premium.held_until, Some(Timestamp(60_000)));
}

#[test]
fn a_held_backend_without_fallback_pauses_the_run_until_its_reset() {
    let mut h = Harness::new(on_premium(&[ONE_TRY], false));
    h.check(
        vec![Command::Start, limited("a", 1, 60_000)],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.started a {"attempt":1,"backend":"premium","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend failed a#1: claude-code reported an error: usage limit reached
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"claude-code reported an error: usage limit reached","transcript":null,"transient":false,"usage":null}
              backend.held a {"backend":"premium","reason":"claude-code reported an error: usage limit reached","until":"1970-01-01T00:01:00.000Z"}
              task.retry a {"attempt":1,"cause":"quota","kept_worktree":null,"log":null,"reason":"quota: claude-code reported an error: usage limit reached"}
              run.paused {"reason":"quota: premium is held until 1970-01-01T00:01:00.000Z"}
        "#]],
    );
    // Resumed before the reset, it pauses again at once; after it, the hold ends and the task runs.
    h.now = 30_000;
    h.check(
        vec![Command::Resume {
            landed: vec![],
            caps: Default::default(),
        }],
        expect![[r#"
            > Resume { landed: [] }
              run.resumed
              run.paused {"reason":"quota: premium is held until 1970-01-01T00:01:00.000Z"}
        "#]],
    );
    h.now = 60_000;
    h.check(
        vec![Command::Resume {
            landed: vec![],
            caps: Default::default(),
        }],
        expect![[r#"
            > Resume { landed: [] }
              run.resumed
              backend.released {"backend":"premium"}
              task.started a {"attempt":1,"backend":"premium","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
        "#]],
    );
}

#[test]
fn while_other_work_runs_a_tick_after_the_reset_releases_the_hold() {
    let mut h = Harness::new(on_premium(&[ONE_TRY, t("b", &[])], false));
    h.run(vec![Command::Start]);
    // b (on `command`) is still in flight: the run does not pause, a waits for the reset.
    let trace = h.run(vec![limited("a", 1, 60_000), Command::Tick]);
    assert!(!trace.contains("run.paused"), "{trace}");
    assert_eq!(trace.matches("task.started").count(), 0, "{trace}");
    h.now = 60_000;
    h.check(
        vec![Command::Tick],
        expect![[r#"
            > Tick
              backend.released {"backend":"premium"}
              task.started a {"attempt":1,"backend":"premium","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
        "#]],
    );
}

#[test]
fn a_hold_never_consumes_attempts() {
    // max_attempts: 1, limited twice: the third try still runs as attempt 1, and lands.
    let mut h = Harness::new(on_premium(&[ONE_TRY], false));
    let resume = || Command::Resume {
        landed: vec![],
        caps: Default::default(),
    };
    h.run(vec![Command::Start, limited("a", 1, 60_000)]);
    h.now = 60_000;
    h.run(vec![resume(), limited("a", 1, 120_000)]);
    h.now = 120_000;
    let trace = h.run(vec![
        resume(),
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
    ]);
    assert!(
        trace.contains(r#"task.landed a {"attempt":1,"commit":"c1"}"#),
        "{trace}"
    );
    let holds: Vec<String> = h
        .log
        .iter()
        .filter(|e| e.event.body.kind().starts_with("backend."))
        .map(|e| format!("{} {}", e.event.body.kind(), e.event.body.data()))
        .collect();
    assert_eq!(
        holds,
        [
            r#"backend.held {"backend":"premium","reason":"claude-code reported an error: usage limit reached","until":"1970-01-01T00:01:00.000Z"}"#,
            r#"backend.released {"backend":"premium"}"#,
            r#"backend.held {"backend":"premium","reason":"claude-code reported an error: usage limit reached","until":"1970-01-01T00:02:00.000Z"}"#,
            r#"backend.released {"backend":"premium"}"#,
        ]
    );
    let a = h.state.task(&TaskId::new("a")).unwrap();
    assert_eq!(a.attempt, 1);
    assert!(matches!(a.state, TaskState::Landed { .. }));
    assert!(!h.log.iter().any(|e| e.event.body.kind() == "task.failed"));
    let replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(replayed.health, h.state.health);
}

fn merge_done(outcome: &str) -> Command {
    Command::MergeDone {
        into: Some("main".into()),
        outcome: outcome.into(),
        commit: Some(CommitSha::new("c1")),
        onto: None,
        reason: "main now points at the run branch".into(),
        pull_request: None,
    }
}

#[test]
fn a_finished_run_owes_its_merge_until_run_merge_and_resume_completes_it_once() {
    use crate::state::Closing;
    let mut h = Harness::new(spec(&[t("a", &[])], &[], 1));
    h.run(vec![Command::Start, ok("a", 1), allow("a", 1)]);
    let trace = h.run(vec![landed("a", 1, "c1")]);
    assert!(trace.contains("run.finished"), "{trace}");
    // The process dies before the Finish effect reported: the log ends at run.finished.
    let mut state = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(
        (state.status.clone(), state.closing),
        (RunStatus::Finished, Closing::Owed)
    );
    h.state = state.clone();
    h.check(
        vec![
            Command::Resume { landed: vec![], caps: Default::default() },
            merge_done("fast-forward"),
            Command::Resume { landed: vec![], caps: Default::default() },
        ],
        expect![[r#"
            > Resume { landed: [] }
              => Finish { run: RunId("r"), merge: Ok(()) }
            > MergeDone { into: Some("main"), outcome: "fast-forward", commit: Some(CommitSha("c1")), onto: None, reason: "main now points at the run branch", pull_request: None }
              run.merge {"commit":"c1","into":"main","outcome":"fast-forward","reason":"main now points at the run branch"}
            > Resume { landed: [] }
              rejected: run r is finished: it cannot be resumed
        "#]],
    );
    assert_eq!(h.state.closing, Closing::Settled);
    // Resuming the owed run decides no event: the log stays as it was, `run.finished` last.
    let d = state
        .decide(
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
            Timestamp(99),
        )
        .unwrap();
    assert_eq!(d.events, vec![]);
}

#[test]
fn a_run_branch_that_cannot_move_pauses_the_run_and_the_attempt_runs_again_under_its_number() {
    let mut h = Harness::new(spec(&[t("a", &[])], &[], 1));
    h.run(vec![Command::Start, ok("a", 1), allow("a", 1)]);
    let why = "abo/r is checked out in /repo: switch that working tree to another branch (git switch -), then abo resume r";
    h.check(
        vec![Command::LandDone {
            task: TaskId::new("a"),
            attempt: 1,
            outcome: LandOutcome::Blocked { reason: why.into() },
        }],
        expect![[r#"
            > land a#1 Blocked { reason: "abo/r is checked out in /repo: switch that working tree to another branch (git switch -), then abo resume r" }
              task.retry a {"attempt":1,"cause":"interrupted","kept_worktree":null,"log":null,"reason":"interrupted: abo/r is checked out in /repo: switch that working tree to another branch (git switch -), then abo resume r"}
              run.paused {"reason":"abo/r is checked out in /repo: switch that working tree to another branch (git switch -), then abo resume r"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
        "#]],
    );
    assert_eq!(h.state.status.reason(), Some(why));
    let trace = h.run(vec![Command::Resume {
        landed: vec![],
        caps: Default::default(),
    }]);
    assert!(
        trace.contains("=> start r/a/1"),
        "the same attempt, not a second one: {trace}"
    );
}

mod healing;
mod proposals;
mod review;

#[test]
fn tasks_waiting_to_land_land_together_and_one_gated_on_its_merge_lands_alone() {
    // a, b and c have no gates; g's gates run on its merged result.
    let mut spec = spec(
        &[t("a", &[]), t("b", &[]), t("c", &[]), t("g", &[])],
        &["test"],
        4,
    );
    for task in &mut spec.tasks {
        if task.id.as_str() != "g" {
            task.gates.clear();
        }
    }
    let mut h = Harness::new(spec);
    h.run(vec![Command::Start, ok("a", 1), ok("b", 1), ok("c", 1)]);
    let conflict = LandOutcome::Failed {
        reason: "the change conflicts with the run branch in: x".into(),
        log: None,
    };
    let together = |outcomes: Vec<(&str, LandOutcome)>| Command::LandedTogether {
        outcomes: outcomes
            .into_iter()
            .map(|(t, o)| (TaskId::new(t), 1, o))
            .collect(),
    };
    let landed_at = |c: &str| LandOutcome::Landed {
        commit: CommitSha::new(c),
    };
    h.check(
        vec![
            // a lands alone: nothing else waits.
            allow("a", 1),
            // b and c wait while a lands, then land together; g's gates pass meanwhile.
            allow("b", 1),
            allow("c", 1),
            ok("g", 1),
            gate("g", 1, "test", GateStage::Attempt, true, None),
            allow("g", 1),
            landed("a", 1, "ca"),
            // c conflicts with b: it alone runs again; g then lands alone.
            together(vec![("b", landed_at("cb")), ("c", conflict)]),
        ],
        expect![[r#"
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("b"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy b {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > PolicyDone { task: TaskId("c"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy c {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > backend ok g#1
              task.backend_finished g {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/g/1
            > gate test Attempt g#1 passed=true
              task.gate g {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("g"), attempt: 1 } }
            > PolicyDone { task: TaskId("g"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy g {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > land a#1 Landed { commit: CommitSha("ca") }
              task.landed a {"attempt":1,"commit":"ca"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("ca") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => LandTogether { attempts: [AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 }] }
            > LandedTogether { outcomes: [(TaskId("b"), 1, Landed { commit: CommitSha("cb") }), (TaskId("c"), 1, Failed { reason: "the change conflicts with the run branch in: x", log: None })] }
              task.landed b {"attempt":1,"commit":"cb"}
              task.retry c {"attempt":2,"cause":"failed","kept_worktree":".abo/worktrees/r/c-1","log":null,"reason":"the change conflicts with the run branch in: x"}
              task.started c {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/c-2"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, commit: CommitSha("cb") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, keep: false }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("c"), attempt: 1 }, keep: true }
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("g"), attempt: 1 } }
              => start r/c/2 feedback: the change conflicts with the run branch in: x
        "#]],
    );
    assert!(h.state.inflight.is_landing(&TaskId::new("g")));
    assert_eq!(h.state.inflight.landing.len(), 1);
}
