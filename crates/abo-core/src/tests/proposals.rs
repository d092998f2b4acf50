//! Several attempts of one task at once: proposals (the best of those that pass lands, the others
//! recorded with their scores) and hedges (a duplicate of an attempt that runs long; the first to
//! pass lands, the other is stopped and charged). Replay equals the live state throughout.

use expect_test::expect;
use pretty_assertions::assert_eq;

use super::*;
use crate::proposal::{HedgeAfter, HedgeSpec, ProposalRule, ProposalSpec};

fn cmd(name: &str) -> BackendSpec {
    BackendSpec::Command {
        name: BackendName::new(name),
        run: "true".into(),
    }
}

/// One task `a` on `b1`, the router knowing `b2` and `b3` for its type, `n` proposals for all.
fn proposing(n: u32) -> RunSpec {
    let mut s = spec(&[t("a", &[])], &["test"], 2);
    s.tasks[0].backend = cmd("b1");
    s.settings.router.learn = [("code".to_owned(), vec![cmd("b2"), cmd("b3")])].into();
    s.settings.proposals = ProposalSpec {
        rules: vec![ProposalRule {
            when: "task.type == 'code'".into(),
            n,
        }],
        select: vec![],
    };
    s
}

fn ok_lines(task: &str, attempt: u32, lines: u64) -> Command {
    let Command::BackendDone {
        task,
        attempt,
        mut outcome,
    } = ok(task, attempt)
    else {
        unreachable!()
    };
    outcome.lines_changed = lines;
    Command::BackendDone {
        task,
        attempt,
        outcome,
    }
}

fn proposals_of(log: &[StoredEvent]) -> Vec<(u32, String, u64, Option<u32>)> {
    log.iter()
        .filter_map(|e| match &e.event.body {
            EventBody::TaskProposal {
                attempt,
                outcome,
                score,
                rank,
                ..
            } => Some((
                *attempt,
                outcome.as_str().to_owned(),
                score.diff_lines,
                *rank,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn three_proposals_one_failing_its_gate_the_smaller_diff_lands() {
    let mut h = Harness::new(proposing(3));
    h.check(
        vec![
            Command::Start,
            ok_lines("a", 1, 40),
            ok_lines("a", 2, 12),
            ok_lines("a", 3, 3),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            gate("a", 3, "test", GateStage::Attempt, false, None),
            gate("a", 2, "test", GateStage::Attempt, true, None),
            allow("a", 2),
            allow("a", 1),
            landed("a", 2, "c2"),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.proposals a {"attempts":[{"attempt":1,"backend":"b1"},{"attempt":2,"backend":"b2"},{"attempt":3,"backend":"b3"}],"requested":3,"rule":"proposals.rules[0]: task.type == 'code'"}
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              task.started a {"attempt":3,"backend":"b3","worktree":".abo/worktrees/r/a-3"}
              => start r/a/1
              => start r/a/2
              => start r/a/3
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":40,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/1
            > backend ok a#2
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":12,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/2
            > backend ok a#3
              task.backend_finished a {"attempt":3,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":3,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/3
            > gate test Attempt a#1 passed=true
              task.gate a {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > gate test Attempt a#3 passed=false
              task.gate a {"attempt":3,"duration_ms":3,"exit":1,"log":null,"name":"test","passed":false,"runs":1,"stage":"attempt","timed_out":false}
              task.proposal a {"attempt":3,"backend":"b3","kept_worktree":".abo/worktrees/r/a-3","mode":"proposals","outcome":"failed","reason":"gate `test` failed: it exited with 1","score":{"cost_micros":0,"diff_lines":3}}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 3 }, keep: true }
            > gate test Attempt a#2 passed=true
              task.gate a {"attempt":2,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > PolicyDone { task: TaskId("a"), attempt: 2, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":2,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              task.proposal a {"attempt":1,"backend":"b1","mode":"proposals","outcome":"lost","rank":2,"reason":"ranked 2 on diff: 40 changed lines against 12 changed lines for attempt 2","score":{"cost_micros":0,"diff_lines":40}}
              task.proposal a {"attempt":2,"backend":"b2","mode":"proposals","outcome":"won","rank":1,"reason":"best on diff: 12 changed lines against 40 changed lines for attempt 1","score":{"cost_micros":0,"diff_lines":12}}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > land a#2 Landed { commit: CommitSha("c2") }
              task.landed a {"attempt":2,"commit":"c2"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, commit: CommitSha("c2") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
    assert_eq!(
        proposals_of(&h.log),
        vec![
            (3, "failed".into(), 3, None),
            (1, "lost".into(), 40, Some(2)),
            (2, "won".into(), 12, Some(1)),
        ]
    );
    assert!(matches!(
        h.state.task(&TaskId::new("a")).unwrap().state,
        TaskState::Landed { attempt: 2, .. }
    ));
}

#[test]
fn the_selection_order_is_the_users() {
    let mut s = proposing(2);
    s.settings.proposals.select = vec![crate::proposal::Criterion::Cost];
    s.tasks[0].max_attempts = 2;
    let mut h = Harness::new(s);
    h.run(vec![
        Command::Start,
        ok_cost("a", 1, 0.01, 10),
        ok_cost("a", 2, 0.50, 10),
        gate("a", 1, "test", GateStage::Attempt, true, None),
        gate("a", 2, "test", GateStage::Attempt, true, None),
        allow("a", 2),
        allow("a", 1),
    ]);
    let won: Vec<(u32, String)> = h
        .log
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::TaskProposal {
                attempt,
                outcome: crate::proposal::ProposalOutcome::Won,
                reason,
                ..
            } => Some((*attempt, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        won,
        vec![(1, "best on cost: $0.01 against $0.50 for attempt 2".into())]
    );
}

#[test]
fn when_no_proposal_passes_the_attempt_fails_with_every_reason() {
    let mut h = Harness::new(proposing(2));
    h.check(
        vec![
            Command::Start,
            backend_failed("a", 1, "exit 1"),
            ok_lines("a", 2, 5),
            gate("a", 2, "test", GateStage::Attempt, false, None),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.proposals a {"attempts":[{"attempt":1,"backend":"b1"},{"attempt":2,"backend":"b2"}],"requested":2,"rule":"proposals.rules[0]: task.type == 'code'"}
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              => start r/a/1
              => start r/a/2
            > backend failed a#1: exit 1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":1,"files_changed":1,"log":null,"message":null,"model":null,"ok":false,"prompt":null,"reason":"exit 1","transcript":null,"transient":false,"usage":null}
              task.proposal a {"attempt":1,"backend":"b1","kept_worktree":".abo/worktrees/r/a-1","mode":"proposals","outcome":"failed","reason":"exit 1","score":{"cost_micros":0,"diff_lines":0}}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: true }
            > backend ok a#2
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":5,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/2
            > gate test Attempt a#2 passed=false
              task.gate a {"attempt":2,"duration_ms":3,"exit":1,"log":null,"name":"test","passed":false,"runs":1,"stage":"attempt","timed_out":false}
              task.proposal a {"attempt":2,"backend":"b2","kept_worktree":".abo/worktrees/r/a-2","mode":"proposals","outcome":"failed","reason":"gate `test` failed: it exited with 1","score":{"cost_micros":0,"diff_lines":5}}
              task.failed a {"attempts":2,"kept_worktree":null,"reason":"none of 2 candidates passed (attempt 1: exit 1; attempt 2: gate `test` failed: it exited with 1) (after 2 attempts)"}
              run.finished {"cancelled":0,"failed":1,"landed":0,"skipped":0}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: true }
              => Finish { run: RunId("r"), merge: Err("nothing landed") }
        "#]],
    );
}

#[test]
fn a_budget_too_small_for_three_proposals_starts_those_that_fit() {
    let mut s = priced(&["a"], 2, caps(2.5, 1.0));
    s.settings.router.learn = [("code".to_owned(), vec![api("m2"), api("m3")])].into();
    s.settings.proposals = proposing(3).settings.proposals;
    let mut h = Harness::new(s);
    h.check(vec![Command::Start], expect![[r#"
        > Start
          run.started
          task.ready a
          task.proposals a {"attempts":[{"attempt":1,"backend":"model"},{"attempt":2,"backend":"m2"}],"requested":3,"rule":"proposals.rules[0]: task.type == 'code'","short":"2 of 3 proposals fit the budget: run.usd cap $2.50 reached: $0.00 spent, $2.00 reserved by attempts in flight, $1.00 needed"}
          task.started a {"attempt":1,"backend":"model","reserved":{"usd":1.0},"worktree":".abo/worktrees/r/a-1"}
          task.started a {"attempt":2,"backend":"m2","reserved":{"usd":1.0},"worktree":".abo/worktrees/r/a-2"}
          => start r/a/1
          => start r/a/2
    "#]]);
}

#[test]
fn a_crash_mid_proposals_redoes_them_and_exactly_one_lands() {
    let mut h = Harness::new(proposing(2));
    h.check(
        vec![
            Command::Start,
            ok_lines("a", 1, 4),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            allow("a", 1),
            // abo dies with attempt 2 still running: both run again under their numbers.
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
            ok_lines("a", 2, 1),
            ok_lines("a", 1, 9),
            // A second report of an attempt is stale.
            ok_lines("a", 2, 2),
            gate("a", 1, "test", GateStage::Attempt, true, None),
            gate("a", 2, "test", GateStage::Attempt, true, None),
            allow("a", 1),
            allow("a", 2),
            landed("a", 2, "c2"),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.proposals a {"attempts":[{"attempt":1,"backend":"b1"},{"attempt":2,"backend":"b2"}],"requested":2,"rule":"proposals.rules[0]: task.type == 'code'"}
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              => start r/a/1
              => start r/a/2
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":4,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/1
            > gate test Attempt a#1 passed=true
              task.gate a {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > Resume { landed: [] }
              run.resumed
              task.retry a {"attempt":1,"cause":"interrupted","kept_worktree":null,"log":null,"reason":"interrupted: abo stopped while the task's candidates were in flight"}
              task.proposals a {"attempts":[{"attempt":1,"backend":"b1"},{"attempt":2,"backend":"b2"}],"requested":2,"rule":"proposals.rules[0]: task.type == 'code'"}
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              => start r/a/1
              => start r/a/2
            > backend ok a#2
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/2
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":9,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/1
            > backend ok a#2
            > gate test Attempt a#1 passed=true
              task.gate a {"attempt":1,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > gate test Attempt a#2 passed=true
              task.gate a {"attempt":2,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
            > PolicyDone { task: TaskId("a"), attempt: 2, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":2,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              task.proposal a {"attempt":1,"backend":"b1","mode":"proposals","outcome":"lost","rank":2,"reason":"ranked 2 on diff: 9 changed lines against 1 changed lines for attempt 2","score":{"cost_micros":0,"diff_lines":9}}
              task.proposal a {"attempt":2,"backend":"b2","mode":"proposals","outcome":"won","rank":1,"reason":"best on diff: 1 changed lines against 9 changed lines for attempt 1","score":{"cost_micros":0,"diff_lines":1}}
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > land a#2 Landed { commit: CommitSha("c2") }
              task.landed a {"attempt":2,"commit":"c2"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, commit: CommitSha("c2") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
    let landed: Vec<u32> = h
        .log
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::TaskLanded { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(landed, vec![2]);
}

#[test]
fn a_crash_after_the_choice_lands_the_winner_only() {
    let mut h = Harness::new(proposing(2));
    h.run(vec![
        Command::Start,
        ok_lines("a", 1, 4),
        ok_lines("a", 2, 8),
        gate("a", 1, "test", GateStage::Attempt, true, None),
        gate("a", 2, "test", GateStage::Attempt, true, None),
        allow("a", 1),
        allow("a", 2),
    ]);
    // The crash came after the winner's commit reached the run branch, before its event.
    h.check(
        vec![Command::Resume {
            landed: vec![(TaskId::new("a"), 1, CommitSha::new("c1"))],
            caps: Default::default(),
        }],
        expect![[r#"
            > Resume { landed: [(TaskId("a"), 1, CommitSha("c1"))] }
              run.resumed
              task.landed a {"attempt":1,"commit":"c1"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
}

#[test]
fn kill_stops_every_candidate() {
    let mut h = Harness::new(proposing(3));
    h.check(
        vec![
            Command::Start,
            Command::Kill {
                reason: "by a person".into(),
            },
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.proposals a {"attempts":[{"attempt":1,"backend":"b1"},{"attempt":2,"backend":"b2"},{"attempt":3,"backend":"b3"}],"requested":3,"rule":"proposals.rules[0]: task.type == 'code'"}
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              task.started a {"attempt":3,"backend":"b3","worktree":".abo/worktrees/r/a-3"}
              => start r/a/1
              => start r/a/2
              => start r/a/3
            > Kill { reason: "by a person" }
              run.killed {"reason":"by a person"}
              task.cancelled a {"dependency":null,"reason":"run killed: by a person"}
              => KillAll
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: false }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 3 }, keep: false }
        "#]],
    );
}

fn hedged(after: HedgeAfter) -> RunSpec {
    let mut s = spec(&[t("a", &[])], &["test"], 2);
    s.tasks[0].backend = cmd("b1");
    s.settings.fallback = vec![cmd("b2")];
    s.settings.hedge = Some(HedgeSpec { after, max: 1 });
    s
}

#[test]
fn a_hedge_wins_over_a_hung_attempt_which_is_stopped_and_charged() {
    let mut h = Harness::new(hedged(HedgeAfter::Ms(2)));
    h.check(
        vec![
            Command::Start,
            Command::Tick,
            // 2 ms after attempt 1 started: its duplicate starts on the other backend.
            Command::Tick,
            // One duplicate at most.
            Command::Tick,
            Command::Tick,
            ok_lines("a", 2, 3),
            gate("a", 2, "test", GateStage::Attempt, true, None),
            allow("a", 2),
            // The hung attempt's end, after it was stopped, is stale.
            ok_lines("a", 1, 3),
            landed("a", 2, "c2"),
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.started a {"attempt":1,"backend":"b1","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > Tick
            > Tick
              task.hedge a {"after_ms":2,"attempt":1,"backend":"b2","hedge":2,"reason":"attempt 1 on `b1` ran longer than 2 ms"}
              task.started a {"attempt":2,"backend":"b2","worktree":".abo/worktrees/r/a-2"}
              => start r/a/2
            > Tick
            > Tick
            > backend ok a#2
              task.backend_finished a {"attempt":2,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"lines_changed":3,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => gate test Attempt r/a/2
            > gate test Attempt a#2 passed=true
              task.gate a {"attempt":2,"duration_ms":3,"exit":0,"log":null,"name":"test","passed":true,"runs":1,"stage":"attempt","timed_out":false}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > PolicyDone { task: TaskId("a"), attempt: 2, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":2,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              budget.charged a {"attempt":1,"backend":"b1","reserved":{},"source":"stopped","tokens":0,"usd":0.0}
              task.proposal a {"attempt":1,"backend":"b1","mode":"hedge","outcome":"stopped","reason":"attempt 2 passed first","score":{"cost_micros":0,"diff_lines":0}}
              task.proposal a {"attempt":2,"backend":"b2","hedge":true,"mode":"hedge","outcome":"won","rank":1,"reason":"the first candidate to pass","score":{"cost_micros":0,"diff_lines":3}}
              => Stop { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 } }
            > backend ok a#1
            > land a#2 Landed { commit: CommitSha("c2") }
              task.landed a {"attempt":2,"commit":"c2"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, commit: CommitSha("c2") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 2 }, keep: false }
              => Finish { run: RunId("r"), merge: Ok(()) }
        "#]],
    );
}

#[test]
fn a_p90_hedge_waits_for_history() {
    let mut h = Harness::new(hedged(HedgeAfter::P90));
    let started = h.run(vec![Command::Start, Command::Tick, Command::Tick]);
    assert!(!started.contains("task.hedge"), "{started}");
    h.state.landed_ms = [("code".to_owned(), vec![1, 2, 2, 3])].into();
    let hedged = h.run(vec![Command::Tick]);
    assert!(
        hedged.contains(r#"task.hedge a {"after_ms":3,"attempt":1,"backend":"b2","hedge":2"#),
        "{hedged}"
    );
}
