//! `landing.verify`: two tasks that pass their own gates break the verify suite together; the
//! bisect names the second, which is reverted, the first kept, and `abo retry` knows why.

use expect_test::expect;
use pretty_assertions::assert_eq;

use super::*;
use crate::state::Closing;
use crate::verify::{RevertOutcome, VerifyOutcome};

fn verified(commit: &str, bisect: bool, passed: bool) -> Command {
    Command::VerifyDone {
        commit: CommitSha::new(commit),
        bisect,
        base: false,
        outcome: VerifyOutcome {
            passed,
            failed_gate: (!passed).then(|| GateName::new("e2e")),
            duration_ms: 7,
            log: None,
            reason: (!passed).then(|| "gate `e2e` failed: it exited with 1".to_owned()),
        },
    }
}

fn healing_spec(tasks: &[T]) -> RunSpec {
    let mut s = spec(tasks, &[], 1);
    s.settings.gates.push(GateSpec {
        name: GateName::new("e2e"),
        run: "true".into(),
        timeout_ms: 1000,
        retries: 0,
        reports: Default::default(),
        quarantine: false,
    });
    s.settings.landing.verify = vec![GateName::new("e2e")];
    s
}

#[test]
fn a_failing_verify_is_bisected_reverted_and_verified_again() {
    let mut h = Harness::new(healing_spec(&[t("a", &[]), t("b", &[])]));
    h.check(
        vec![
            Command::Start,
            ok("a", 1),
            allow("a", 1),
            landed("a", 1, "c1"),
            ok("b", 1),
            allow("b", 1),
            landed("b", 1, "c2"),
            // A stale result (a commit that is not the head) changes nothing.
            verified("c1", false, false),
            verified("c2", false, false),
            verified("c1", true, true),
            Command::RevertDone {
                task: TaskId::new("b"),
                commit: CommitSha::new("c2"),
                base: false,
                outcome: RevertOutcome::Reverted {
                    revert: CommitSha::new("r2"),
                },
            },
            verified("r2", false, true),
            Command::Retry {
                task: TaskId::new("b"),
            },
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
        ],
        expect![[r#"
            > Start
              run.started
              task.ready a
              task.ready b
              task.started a {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/a-1"}
              => start r/a/1
            > backend ok a#1
              task.backend_finished a {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > PolicyDone { task: TaskId("a"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy a {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 } }
            > land a#1 Landed { commit: CommitSha("c1") }
              task.landed a {"attempt":1,"commit":"c1"}
              task.started b {"attempt":1,"backend":"command","worktree":".abo/worktrees/r/b-1"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, commit: CommitSha("c1") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("a"), attempt: 1 }, keep: false }
              => start r/b/1
            > backend ok b#1
              task.backend_finished b {"attempt":1,"cost_source":null,"cost_usd":null,"duration_ms":5,"exit":0,"files_changed":1,"log":null,"message":null,"model":null,"ok":true,"prompt":null,"reason":null,"transcript":null,"transient":false,"usage":null}
              => EvaluatePolicy { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
            > PolicyDone { task: TaskId("b"), attempt: 1, outcome: PolicyOutcome { verdict: Allow, deny: [], require_approval: [], risk: "low", duration_us: 40, error: None, secrets: 0, input: None } }
              task.policy b {"attempt":1,"deny":[],"duration_us":40,"require_approval":[],"risk":"low","verdict":"allow"}
              => Land { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 } }
            > land b#1 Landed { commit: CommitSha("c2") }
              task.landed b {"attempt":1,"commit":"c2"}
              => Prove { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, commit: CommitSha("c2") }
              => Cleanup { attempt: AttemptId { run: RunId("r"), task: TaskId("b"), attempt: 1 }, keep: false }
              => Verify { run: RunId("r"), commit: CommitSha("c2"), gates: [GateName("e2e")], bisect: false, base: None }
            > VerifyDone { commit: CommitSha("c1"), bisect: false, base: false, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
            > VerifyDone { commit: CommitSha("c2"), bisect: false, base: false, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
              run.verify {"commit":"c2","duration_ms":7,"failed_gate":"e2e","log":null,"passed":false,"reason":"gate `e2e` failed: it exited with 1"}
              => Verify { run: RunId("r"), commit: CommitSha("c1"), gates: [GateName("e2e")], bisect: true, base: None }
            > VerifyDone { commit: CommitSha("c1"), bisect: true, base: false, outcome: VerifyOutcome { passed: true, failed_gate: None, duration_ms: 7, log: None, reason: None } }
              run.bisect a {"commit":"c1","duration_ms":7,"log":null,"passed":true,"step":1}
              => Revert { run: RunId("r"), task: TaskId("b"), commit: CommitSha("c2"), head: CommitSha("c2"), reason: "gate `e2e` failed: it exited with 1", base: None }
            > RevertDone { task: TaskId("b"), commit: CommitSha("c2"), base: false, outcome: Reverted { revert: CommitSha("r2") } }
              task.reverted b {"commit":"c2","log":null,"reason":"gate `e2e` failed: it exited with 1","revert":"r2"}
              => Verify { run: RunId("r"), commit: CommitSha("r2"), gates: [GateName("e2e")], bisect: false, base: None }
            > VerifyDone { commit: CommitSha("r2"), bisect: false, base: false, outcome: VerifyOutcome { passed: true, failed_gate: None, duration_ms: 7, log: None, reason: None } }
              run.verify {"commit":"r2","duration_ms":7,"log":null,"passed":true}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Finish { run: RunId("r"), merge: Ok(()) }
            > Retry { task: TaskId("b") }
              task.retry b {"attempt":2,"cause":"requested","kept_worktree":null,"log":null,"reason":"retry requested"}
              run.paused {"reason":"retry requested: continue with `abo resume`"}
              task.ready b
            > Resume { landed: [] }
              run.resumed
              task.started b {"attempt":2,"backend":"command","worktree":".abo/worktrees/r/b-2"}
              => start r/b/2 feedback: reverted: gate `e2e` failed: it exited with 1
        "#]],
    );
    assert!(matches!(
        h.state.task(&TaskId::new("a")).unwrap().state,
        TaskState::Landed { .. }
    ));
}

#[test]
fn a_revert_that_fails_finishes_the_run_without_merging() {
    let mut h = Harness::new(healing_spec(&[t("a", &[])]));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
    ]);
    h.check(
        vec![
            verified("c1", false, false),
            Command::RevertDone {
                task: TaskId::new("a"),
                commit: CommitSha::new("c1"),
                base: false,
                outcome: RevertOutcome::Failed {
                    reason: "conflicts in a.txt".into(),
                },
            },
        ],
        expect![[r#"
            > VerifyDone { commit: CommitSha("c1"), bisect: false, base: false, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
              run.verify {"commit":"c1","duration_ms":7,"failed_gate":"e2e","log":null,"passed":false,"reason":"gate `e2e` failed: it exited with 1"}
              => Revert { run: RunId("r"), task: TaskId("a"), commit: CommitSha("c1"), head: CommitSha("c1"), reason: "gate `e2e` failed: it exited with 1", base: None }
            > RevertDone { task: TaskId("a"), commit: CommitSha("c1"), base: false, outcome: Failed { reason: "conflicts in a.txt" } }
              run.revert_failed a {"commit":"c1","reason":"conflicts in a.txt"}
              run.finished {"cancelled":0,"failed":0,"landed":1,"skipped":0}
              => Finish { run: RunId("r"), merge: Err("landing.verify fails and the revert could not be made: conflicts in a.txt") }
        "#]],
    );
}

#[test]
fn a_verify_result_after_a_kill_changes_nothing() {
    let mut h = Harness::new(healing_spec(&[t("a", &[])]));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
        Command::Kill {
            reason: "enough".into(),
        },
    ]);
    let before = h.log.len();
    h.run(vec![verified("c1", false, false)]);
    assert_eq!(h.log.len(), before);
    assert!(matches!(h.state.status, RunStatus::Killed { .. }));
}

fn on_base(commit: &str, bisect: bool, passed: bool) -> Command {
    let Command::VerifyDone {
        commit,
        bisect,
        outcome,
        ..
    } = verified(commit, bisect, passed)
    else {
        unreachable!()
    };
    Command::VerifyDone {
        commit,
        bisect,
        base: true,
        outcome,
    }
}

/// The run branch passes; merged (a merge commit: the base moved), the base branch fails. The
/// bisect runs over the run's commits as merged onto the base as it was, the first bad one is
/// reverted on the base branch, and the run owes that until the base branch passes again.
#[test]
fn the_base_branch_is_verified_after_the_merge_bisected_and_healed() {
    let mut h = Harness::new(healing_spec(&[t("a", &[]), t("b", &[])]));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
        ok("b", 1),
        allow("b", 1),
        landed("b", 1, "c2"),
        verified("c2", false, true),
    ]);
    assert_eq!(h.state.closing, Closing::Owed);
    let merged = Command::MergeDone {
        into: Some("main".into()),
        outcome: "merge-commit".into(),
        commit: Some(CommitSha::new("m1")),
        onto: Some(CommitSha::new("m0")),
        reason: "merged into main".into(),
        pull_request: None,
    };
    h.check(
        vec![
            merged,
            // A result of the run branch's, or of a commit that is not the base's head: nothing.
            verified("m1", false, false),
            on_base("c2", false, false),
            on_base("m1", false, false),
            on_base("c1", true, true),
        ],
        expect![[r#"
            > MergeDone { into: Some("main"), outcome: "merge-commit", commit: Some(CommitSha("m1")), onto: Some(CommitSha("m0")), reason: "merged into main", pull_request: None }
              run.merge {"commit":"m1","into":"main","onto":"m0","outcome":"merge-commit","reason":"merged into main"}
              => Verify { run: RunId("r"), commit: CommitSha("m1"), gates: [GateName("e2e")], bisect: false, base: Some(OnBase { branch: "main", onto: None }) }
            > VerifyDone { commit: CommitSha("m1"), bisect: false, base: false, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
            > VerifyDone { commit: CommitSha("c2"), bisect: false, base: true, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
            > VerifyDone { commit: CommitSha("m1"), bisect: false, base: true, outcome: VerifyOutcome { passed: false, failed_gate: Some(GateName("e2e")), duration_ms: 7, log: None, reason: Some("gate `e2e` failed: it exited with 1") } }
              run.verify {"branch":"main","commit":"m1","duration_ms":7,"failed_gate":"e2e","log":null,"passed":false,"reason":"gate `e2e` failed: it exited with 1"}
              => Verify { run: RunId("r"), commit: CommitSha("c1"), gates: [GateName("e2e")], bisect: true, base: Some(OnBase { branch: "main", onto: Some(CommitSha("m0")) }) }
            > VerifyDone { commit: CommitSha("c1"), bisect: true, base: true, outcome: VerifyOutcome { passed: true, failed_gate: None, duration_ms: 7, log: None, reason: None } }
              run.bisect a {"branch":"main","commit":"c1","duration_ms":7,"log":null,"passed":true,"step":1}
              => Revert { run: RunId("r"), task: TaskId("b"), commit: CommitSha("c2"), head: CommitSha("m1"), reason: "gate `e2e` failed: it exited with 1", base: Some(OnBase { branch: "main", onto: None }) }
        "#]],
    );
    assert_eq!(h.state.closing, Closing::Healing);
    // abo stops here: resumed, the revert is asked again (it finds it made, or makes it).
    let mut replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    let d = replayed
        .decide(
            Command::Resume {
                landed: vec![],
                caps: Default::default(),
            },
            Timestamp(h.now + 1),
        )
        .unwrap();
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert!(
        matches!(&d.effects[..], [Effect::Revert { base: Some(on), commit, head, .. }] if on.branch == "main" && commit.as_str() == "c2" && head.as_str() == "m1"),
        "{:?}",
        d.effects
    );
    h.check(
        vec![
            Command::RevertDone {
                task: TaskId::new("b"),
                commit: CommitSha::new("c2"),
                base: true,
                outcome: RevertOutcome::Reverted {
                    revert: CommitSha::new("r2"),
                },
            },
            on_base("r2", false, true),
        ],
        expect![[r#"
            > RevertDone { task: TaskId("b"), commit: CommitSha("c2"), base: true, outcome: Reverted { revert: CommitSha("r2") } }
              task.reverted b {"branch":"main","commit":"c2","log":null,"reason":"gate `e2e` failed: it exited with 1","revert":"r2"}
              => Verify { run: RunId("r"), commit: CommitSha("r2"), gates: [GateName("e2e")], bisect: false, base: Some(OnBase { branch: "main", onto: None }) }
            > VerifyDone { commit: CommitSha("r2"), bisect: false, base: true, outcome: VerifyOutcome { passed: true, failed_gate: None, duration_ms: 7, log: None, reason: None } }
              run.verify {"branch":"main","commit":"r2","duration_ms":7,"log":null,"passed":true}
        "#]],
    );
    assert_eq!(h.state.closing, Closing::Settled);
    assert!(matches!(
        h.state.task(&TaskId::new("b")).unwrap().state,
        TaskState::Reverted { .. }
    ));
    // Settled: a resume is refused, as for any finished run.
    let mut replayed = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    assert!(
        replayed
            .decide(
                Command::Resume {
                    landed: vec![],
                    caps: Default::default(),
                },
                Timestamp(h.now + 1),
            )
            .is_err()
    );
}

/// After a fast-forward each of the run's commits is a state of the base branch: probed as it
/// is, and a merge that made nothing (or a run without `landing.verify`) owes nothing.
#[test]
fn after_a_fast_forward_the_base_branch_bisects_the_run_commits_themselves() {
    let mut h = Harness::new(healing_spec(&[t("a", &[]), t("b", &[])]));
    h.run(vec![
        Command::Start,
        ok("a", 1),
        allow("a", 1),
        landed("a", 1, "c1"),
        ok("b", 1),
        allow("b", 1),
        landed("b", 1, "c2"),
        verified("c2", false, true),
    ]);
    let ff = |outcome: &str| Command::MergeDone {
        into: Some("main".into()),
        outcome: outcome.into(),
        commit: (outcome != "skipped").then(|| CommitSha::new("c2")),
        onto: None,
        reason: String::new(),
        pull_request: None,
    };
    let mut skipped = RunState::replay(&RunId::new("r"), &h.log).unwrap();
    let d = skipped.decide(ff("skipped"), Timestamp(h.now + 1)).unwrap();
    assert!(d.effects.is_empty());
    assert_eq!(skipped.closing, Closing::Settled);
    let d = h
        .state
        .decide(ff("fast-forward"), Timestamp(h.now + 1))
        .unwrap();
    assert!(
        matches!(&d.effects[..], [Effect::Verify { base: Some(on), commit, bisect: false, .. }] if on.branch == "main" && on.onto.is_none() && commit.as_str() == "c2"),
        "{:?}",
        d.effects
    );
    let d = h
        .state
        .decide(on_base("c2", false, false), Timestamp(h.now + 2))
        .unwrap();
    assert!(
        matches!(&d.effects[..], [Effect::Verify { base: Some(on), commit, bisect: true, .. }] if on.onto.is_none() && commit.as_str() == "c1"),
        "{:?}",
        d.effects
    );
}
