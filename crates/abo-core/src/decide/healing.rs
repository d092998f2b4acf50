//! The decisions of `landing.verify` (see `crate::verify`): once a run's tasks have landed and
//! nothing else is in flight, verify the head; on failure bisect, revert the first bad commit and
//! verify again. Each result is an event; the run finishes only when nothing is left to do.
//! After the run's end merged into the base branch, the same on the base branch's new head
//! (`RunState::base_heal`), the run finished and its closing `healing` until that is over.

use super::{Command, Ctx, Effect};
use crate::event::EventBody;
use crate::ids::{CommitSha, TaskId};
use crate::state::{Closing, RunStatus};
use crate::verify::{Next, OnBase, RevertOutcome, Verification, VerifyOutcome};

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
            base: None,
        },
        Next::Probe { commit, .. } => Effect::Verify {
            run,
            commit,
            gates,
            bisect: true,
            base: None,
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
            base: None,
        },
    };
    cx.state.inflight.verifying = true;
    cx.effect(effect);
    true
}

/// Starts what the base branch's verification after the run's merge needs next, if anything.
pub(super) fn base_pending(cx: &mut Ctx<'_>) {
    if cx.state.inflight.verifying || cx.state.closing != Closing::Healing {
        return;
    }
    let Some(h) = &cx.state.base_heal else { return };
    let gates = cx.state.spec.settings.landing.verify.clone();
    let run = cx.state.id.clone();
    let on = OnBase {
        branch: h.branch.clone(),
        onto: None,
    };
    let effect = match h.verification.next(!gates.is_empty()) {
        Next::Done | Next::Broken { .. } => return,
        Next::Verify { commit } => Effect::Verify {
            run,
            commit,
            gates,
            bisect: false,
            base: Some(on),
        },
        // A step is the base as it was with the run's commits up to this one merged in.
        Next::Probe { commit, .. } => Effect::Verify {
            run,
            commit,
            gates,
            bisect: true,
            base: Some(OnBase {
                onto: h.onto.clone(),
                ..on
            }),
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
            base: Some(on),
        },
    };
    cx.state.inflight.verifying = true;
    cx.effect(effect);
}

/// The verification a result is for (the base branch's, or the run branch's) and the branch its
/// events name.
fn target<'a>(cx: &'a Ctx<'_>, base: bool) -> Option<(&'a Verification, Option<String>)> {
    if base {
        let h = cx.state.base_heal.as_ref()?;
        Some((&h.verification, Some(h.branch.clone())))
    } else {
        Some((&cx.state.verification, None))
    }
}

/// The verify gates ran on `commit`: the head (`bisect` false) or a bisect step.
pub(super) fn verify_done(
    cx: &mut Ctx<'_>,
    commit: CommitSha,
    bisect: bool,
    base: bool,
    o: VerifyOutcome,
) {
    let gates = !cx.state.spec.settings.landing.verify.is_empty();
    let Some((v, branch)) = target(cx, base) else {
        return;
    };
    let (expected, steps) = (v.next(gates), v.steps());
    match expected {
        Next::Verify { commit: c } if !bisect && c == commit => {
            cx.state.inflight.verifying = false;
            cx.emit(
                None,
                EventBody::RunVerify {
                    commit,
                    branch,
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
            cx.emit(
                Some(&task),
                EventBody::RunBisect {
                    step: steps + 1,
                    commit,
                    branch,
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
pub(super) fn revert_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    commit: CommitSha,
    base: bool,
    o: RevertOutcome,
) {
    let gates = !cx.state.spec.settings.landing.verify.is_empty();
    let Some((v, branch)) = target(cx, base) else {
        return;
    };
    let Next::Revert {
        task: t,
        commit: c,
        reason,
        log,
        ..
    } = v.next(gates)
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
                branch,
                reason,
                log,
            },
        ),
        RevertOutcome::Failed { reason } => {
            cx.emit(
                Some(task),
                EventBody::RunRevertFailed {
                    commit,
                    reason,
                    branch,
                },
            );
        }
    }
}

/// Decides a verification command (the caller's `decide` routes them here).
pub(super) fn decide(cx: &mut Ctx<'_>, cmd: Command) {
    let base = matches!(
        cmd,
        Command::VerifyDone { base: true, .. } | Command::RevertDone { base: true, .. }
    );
    // A killed run moves nothing more, whatever was in flight; a finished one only its base
    // branch's verification.
    let live = if base {
        !matches!(cx.state.status, RunStatus::Killed { .. })
    } else {
        !cx.state.status.is_terminal()
    };
    if !live {
        return;
    }
    match cmd {
        Command::VerifyDone {
            commit,
            bisect,
            outcome,
            ..
        } => verify_done(cx, commit, bisect, base, outcome),
        Command::RevertDone {
            task,
            commit,
            outcome,
            ..
        } => revert_done(cx, &task, commit, base, outcome),
        _ => {}
    }
    if base {
        base_pending(cx);
    }
}
