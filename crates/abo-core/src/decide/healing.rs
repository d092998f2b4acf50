//! The decisions of `landing.verify` (see `crate::verify`): once a run's tasks have landed and
//! nothing else is in flight, verify the head; on failure bisect, revert the first bad commit and
//! verify again. Each result is an event; the run finishes only when nothing is left to do.

use super::{Command, Ctx, Effect};
use crate::event::EventBody;
use crate::ids::{CommitSha, TaskId};
use crate::verify::{Next, RevertOutcome, VerifyOutcome};

/// Starts what the run branch's verification needs next; whether it keeps the run from finishing.
pub(super) fn pending(cx: &mut Ctx<'_>) -> bool {
    if cx.state.inflight.verifying {
        return true;
    }
    let gates = cx.state.spec.settings.landing.verify.clone();
    let run = cx.state.id.clone();
    let effect = match cx.state.verification.next(!gates.is_empty()) {
        Next::Done | Next::Broken { .. } => return false,
        Next::Verify { commit } => Effect::Verify {
            run,
            commit,
            gates,
            bisect: false,
        },
        Next::Probe { commit, .. } => Effect::Verify {
            run,
            commit,
            gates,
            bisect: true,
        },
        Next::Revert {
            task,
            commit,
            head,
            reason,
            ..
        } => Effect::Revert {
            run,
            task,
            commit,
            head,
            reason,
        },
    };
    cx.state.inflight.verifying = true;
    cx.effect(effect);
    true
}

/// The verify gates ran on `commit`: the head (`bisect` false) or a bisect step.
pub(super) fn verify_done(cx: &mut Ctx<'_>, commit: CommitSha, bisect: bool, o: VerifyOutcome) {
    let gates = !cx.state.spec.settings.landing.verify.is_empty();
    let expected = cx.state.verification.next(gates);
    match expected {
        Next::Verify { commit: c } if !bisect && c == commit => {
            cx.state.inflight.verifying = false;
            cx.emit(
                None,
                EventBody::RunVerify {
                    commit,
                    passed: o.passed,
                    failed_gate: o.failed_gate,
                    duration_ms: o.duration_ms,
                    log: o.log,
                    reason: o.reason,
                },
            );
        }
        Next::Probe { task, commit: c } if bisect && c == commit => {
            cx.state.inflight.verifying = false;
            let step = cx.state.verification.steps() + 1;
            cx.emit(
                Some(&task),
                EventBody::RunBisect {
                    step,
                    commit,
                    passed: o.passed,
                    failed_gate: o.failed_gate,
                    duration_ms: o.duration_ms,
                    log: o.log,
                },
            );
        }
        _ => {} // stale: the branch moved on
    }
}

/// The revert of the first bad commit was made (or not).
pub(super) fn revert_done(cx: &mut Ctx<'_>, task: &TaskId, commit: CommitSha, o: RevertOutcome) {
    let gates = !cx.state.spec.settings.landing.verify.is_empty();
    let Next::Revert {
        task: t,
        commit: c,
        reason,
        log,
        ..
    } = cx.state.verification.next(gates)
    else {
        return;
    };
    if t != *task || c != commit {
        return;
    }
    cx.state.inflight.verifying = false;
    match o {
        RevertOutcome::Reverted { revert } => cx.emit(
            Some(task),
            EventBody::TaskReverted {
                commit,
                revert,
                reason,
                log,
            },
        ),
        RevertOutcome::Failed { reason } => {
            cx.emit(Some(task), EventBody::RunRevertFailed { commit, reason });
        }
    }
}

/// Decides a verification command (the caller's `decide` routes them here).
pub(super) fn decide(cx: &mut Ctx<'_>, cmd: Command) {
    // A killed run moves nothing more, whatever was in flight.
    if cx.state.status.is_terminal() {
        return;
    }
    match cmd {
        Command::VerifyDone {
            commit,
            bisect,
            outcome,
        } => verify_done(cx, commit, bisect, outcome),
        Command::RevertDone {
            task,
            commit,
            outcome,
        } => revert_done(cx, &task, commit, outcome),
        _ => {}
    }
}
