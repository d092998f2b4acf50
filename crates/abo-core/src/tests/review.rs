//! The reviewer between the gates and the policy: findings back to a next attempt up to
//! `review.max_rounds`, then a high-severity finding needs approval, and a failed review too.

use expect_test::expect;
use pretty_assertions::assert_eq;

use super::*;
use crate::review::{Finding, FindingSeverity, Review, ReviewSpec, Verdict};

fn reviewed(task: &str, attempt: u32, outcome: Result<Review, String>) -> Command {
    Command::ReviewDone {
        task: TaskId::new(task),
        attempt,
        reviewer: BackendName::new("critic"),
        outcome,
        log: None,
        usage: None,
        cost_usd: None,
        cost_source: None,
    }
}

fn changes(severity: FindingSeverity) -> Result<Review, String> {
    Ok(Review {
        verdict: Verdict::RequestChanges,
        findings: vec![Finding {
            file: "a.rs".into(),
            line: Some(3),
            severity,
            text: "off by one".into(),
        }],
    })
}

fn with_review(max_rounds: u32) -> RunSpec {
    let mut s = spec(&[t("a", &[])], &["test"], 1);
    s.settings.review = Some(ReviewSpec {
        backends: vec![
            BackendSpec::Command {
                name: BackendName::new("command"),
                run: "true".into(),
            },
            BackendSpec::Command {
                name: BackendName::new("critic"),
                run: "true".into(),
            },
        ],
        max_rounds,
    });
    s
}

#[test]
fn findings_go_back_then_a_high_one_needs_approval() {
    let mut h = Harness::new(with_review(1));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            reviewed("a", 1, changes(FindingSeverity::High)),
            ok("a", 2),
            gate("a", 2, "test", GateStage::Attempt, true, None),
            reviewed("a", 2, changes(FindingSeverity::High)),
            allow("a", 2),
        ],
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
              => Review { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, reviewer: Command { name: BackendName("critic"), run: "true" } }
            > ReviewDone { task: TaskId("a"), attempt: 1, reviewer: BackendName("critic"), outcome: Ok(Review { verdict: RequestChanges, findings: [Finding { file: "a.rs", line: Some(3), severity: High, text: "off by one" }] }), log: None, usage: None, cost_usd: None, cost_source: None }
              task.review a {"attempt":1,"findings":[{"file":"a.rs","line":3,"severity":"high","text":"off by one"}],"log":null,"reviewer":"critic","verdict":"request_changes"}
              task.retry a {"attempt":2,"cause":"failed","kept_worktree":".abo/worktrees/r/a-1","log":null,"reason":"the review requested changes\n- a.rs:3 (High): off by one"}
              task.started a {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/a-2"}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: true }
              => start r/a/2 feedback: the review requested changes
            - a.rs:3 (High): off by one
            > backend ok a#2
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/2
            > gate test Attempt a#2 passed=true
              task.gate a {"attempt":2,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => Review { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, reviewer: Command { name: BackendName("critic"), run: "true" } }
            > ReviewDone { task: TaskId("a"), attempt: 2, reviewer: BackendName("critic"), outcome: Ok(Review { verdict: RequestChanges, findings: [Finding { file: "a.rs", line: Some(3), severity: High, text: "off by one" }] }), log: None, usage: None, cost_usd: None, cost_source: None }
              task.review a {"attempt":2,"findings":[{"file":"a.rs","line":3,"severity":"high","text":"off by one"}],"log":null,"reviewer":"critic","verdict":"request_changes"}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > PolicyDone { task: TaskId("a"), attempt: 2, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":2,"deny":[],"duration_us":40,"require_approval":["review: changes requested with a high-severity finding"],"risk":"low","verdict":"needs_approval"}
              task.approval_requested a {"action":"merge","approval":"r/a/2","attempt":2,"reasons":["review: changes requested with a high-severity finding"]}
              run.paused {"reason":"waiting for approval: a"}
        "#]],
    );
}

#[test]
fn a_failed_review_is_never_approval() {
    let mut h = Harness::new(with_review(1));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            reviewed("a", 1, Err("the reviewer's verdict is malformed".into())),
            // A second answer for the same attempt is stale.
            reviewed("a", 1, Ok(Review { verdict: Verdict::Approve, findings: vec![] })),
            allow("a", 1),
        ],
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
              => Review { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, reviewer: Command { name: BackendName("critic"), run: "true" } }
            > ReviewDone { task: TaskId("a"), attempt: 1, reviewer: BackendName("critic"), outcome: Err("the reviewer's verdict is malformed"), log: None, usage: None, cost_usd: None, cost_source: None }
              task.review a {"attempt":1,"error":"the reviewer's verdict is malformed","log":null,"reviewer":"critic","verdict":"failed"}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > ReviewDone { task: TaskId("a"), attempt: 1, reviewer: BackendName("critic"), outcome: Ok(Review { verdict: Approve, findings: [] }), log: None, usage: None, cost_usd: None, cost_source: None }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":["review: the reviewer gave no valid verdict, which is never approval"],"risk":"low","verdict":"needs_approval"}
              task.approval_requested a {"action":"merge","approval":"r/a/1","attempt":1,"reasons":["review: the reviewer gave no valid verdict, which is never approval"]}
              run.paused {"reason":"waiting for approval: a"}
        "#]],
    );
}

/// A model reviewer under spend caps: reserved before it is asked, charged what it used.
fn with_priced_review(run_usd: f64) -> RunSpec {
    let mut s = with_review(0);
    if let Some(r) = &mut s.settings.review {
        r.backends[1] = super::api("critic");
    }
    s.settings.budgets = super::caps(run_usd, 0.5);
    s
}

fn approve_costing(usd: f64, tokens: u64) -> Command {
    let Command::ReviewDone {
        task,
        attempt,
        reviewer,
        log,
        ..
    } = reviewed(
        "a",
        1,
        Ok(Review {
            verdict: Verdict::Approve,
            findings: vec![],
        }),
    )
    else {
        unreachable!()
    };
    Command::ReviewDone {
        task,
        attempt,
        reviewer,
        outcome: Ok(Review {
            verdict: Verdict::Approve,
            findings: vec![],
        }),
        log,
        usage: Some(crate::event::Usage {
            input_tokens: tokens - 10,
            output_tokens: 10,
            ..Default::default()
        }),
        cost_usd: Some(usd),
        cost_source: Some("estimated".into()),
    }
}

#[test]
fn a_model_review_is_reserved_before_it_runs_and_charged_after() {
    let mut h = Harness::new(with_priced_review(10.0));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            approve_costing(0.125, 1200),
        ],
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
              review.reserved a {"attempt":1,"reserved":{"usd":0.5},"reviewer":"critic"}
              => Review { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, reviewer: Api { name: BackendName("critic"), api: Openai, model: "m", base_url: "http://127.0.0.1:1/v1", api_key_env: None, max_tokens: 100, context_tokens: 100, retries: 0 } }
            > ReviewDone { task: TaskId("a"), attempt: 1, reviewer: BackendName("critic"), outcome: Ok(Review { verdict: Approve, findings: [] }), log: None, usage: Some(Usage { input_tokens: 1190, output_tokens: 10, cache_read_tokens: 0, cache_write_tokens: 0, unsplit_tokens: 0 }), cost_usd: Some(0.125), cost_source: Some("estimated") }
              review.charged a {"attempt":1,"reserved":{"tokens":0,"usd":0.5},"reviewer":"critic","source":"estimated","tokens":1200,"usd":0.125}
              task.review a {"attempt":1,"log":null,"reviewer":"critic","verdict":"approve"}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
        "#]],
    );
    assert_eq!(h.state.ledger.reviews.usd, 0.125);
    assert_eq!(h.state.ledger.spent.usd, 0.125);
    assert!(h.state.ledger.open.is_empty());
}

#[test]
fn a_review_the_budget_cannot_hold_is_not_started_and_the_change_needs_a_person() {
    let mut h = Harness::new(with_priced_review(0.0));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            allow("a", 1),
        ],
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
              budget.exhausted a {"cap":"run.usd","limit":0.0,"needed":0.5,"reserved":0.0,"spent":0.0}
              task.review a {"attempt":1,"error":"not started: budget: run.usd cap $0.00 reached: $0.00 spent, $0.00 reserved by attempts in flight, $0.50 needed","log":null,"reviewer":"critic","verdict":"not_started"}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":["review: not started, the budget cannot hold the reviewer's reservation (see budget.exhausted)"],"risk":"low","verdict":"needs_approval"}
              task.approval_requested a {"action":"merge","approval":"r/a/1","attempt":1,"reasons":["review: not started, the budget cannot hold the reviewer's reservation (see budget.exhausted)"]}
              run.paused {"reason":"waiting for approval: a"}
        "#]],
    );
}

#[test]
fn a_review_in_flight_when_abo_stopped_is_charged_its_reservation() {
    let mut h = Harness::new(with_priced_review(10.0));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        gate("a", 1, "test", GateStage::Attempt, true, None),
    ]);
    let mut replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert_eq!(replayed.ledger.reserved().usd, 0.5);
    let d = replayed
        .decide(
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
            Timestamp(h.now + 1),
        )
        .unwrap();
    let charged: Vec<&EventBody> = d
        .events
        .iter()
        .map(|e| &e.body)
        .filter(|b| matches!(b, EventBody::ReviewCharged { .. }))
        .collect();
    assert!(
        matches!(charged[..], [EventBody::ReviewCharged { usd, source, .. }] if *usd == 0.5 && source == "reservation"),
        "{charged:?}"
    );
    assert_eq!(replayed.ledger.spent.usd, 0.5);
}
