//! The reviewer's place in an attempt: after its gates passed and before the policy. A
//! `request_changes` verdict sends its findings to a next attempt (up to `review.max_rounds`);
//! then, by default, one with a high-severity finding needs approval, as does a reviewer that gave
//! no verdict that parses (a failure is never approval).

use super::{Ctx, Effect, PolicyOutcome, attempt_failed};
use crate::event::EventBody;
use crate::ids::{ArtifactId, BackendName, TaskId};
use crate::review::{Outcome, Review};
use crate::state::{RunState, TaskState};
use crate::verdict::Verdict;

/// The attempt's gates passed: its review, when `review:` is set and it has none yet, else the
/// policy.
pub(super) fn review_or_policy(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    let attempt_id = cx.attempt(task, attempt);
    let Some(t) = cx.state.task(task) else { return };
    let reviewed = t.review.is_some_and(|(a, _, _)| a == attempt);
    let author = t
        .backend
        .clone()
        .unwrap_or_else(|| t.spec.backend.name().clone());
    let reviewer = cx
        .state
        .spec
        .settings
        .review
        .as_ref()
        .and_then(|r| r.reviewer(&author))
        .cloned();
    match reviewer {
        Some(reviewer) if !reviewed => cx.effect(Effect::Review {
            attempt: attempt_id,
            reviewer,
        }),
        _ => cx.effect(Effect::EvaluatePolicy {
            attempt: attempt_id,
        }),
    }
}

pub(super) fn review_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: BackendName,
    outcome: Result<Review, String>,
    log: Option<ArtifactId>,
) {
    let Some(t) = cx.state.task(task) else { return };
    let waiting = matches!(t.state, TaskState::Verifying { attempt: a, passed } if a == attempt && passed == t.spec.gates.len())
        && t.review.is_none_or(|(a, _, _)| a != attempt);
    if !waiting {
        return; // stale
    }
    let max_rounds = cx
        .state
        .spec
        .settings
        .review
        .as_ref()
        .map_or(0, |r| r.max_rounds);
    let (verdict, findings, error) = match &outcome {
        Ok(r) => (r.outcome(), r.findings.clone(), None),
        Err(e) => (Outcome::Failed, Vec::new(), Some(e.clone())),
    };
    cx.emit(
        Some(task),
        EventBody::TaskReview {
            attempt,
            reviewer,
            verdict,
            findings,
            error,
            log: log.clone(),
        },
    );
    let rounds = cx.state.task(task).map_or(0, |t| t.review_rounds);
    match outcome {
        Ok(r) if verdict == Outcome::RequestChanges && rounds <= max_rounds => {
            attempt_failed(cx, task, attempt, r.feedback(), log);
        }
        _ => cx.effect(Effect::EvaluatePolicy {
            attempt: cx.attempt(task, attempt),
        }),
    }
}

/// The review's part of the verdict (the stricter wins): a failed review, or changes requested
/// with a high-severity finding once the rounds are spent, need a person's approval.
pub(super) fn apply_to_verdict(
    state: &RunState,
    task: &TaskId,
    attempt: u32,
    o: &mut PolicyOutcome,
) {
    let Some(t) = state.task(task) else { return };
    let why = match t.review {
        Some((a, Outcome::Failed, _)) if a == attempt => {
            "review: the reviewer gave no valid verdict, which is never approval"
        }
        Some((a, Outcome::RequestChanges, true)) if a == attempt => {
            "review: changes requested with a high-severity finding"
        }
        _ => return,
    };
    if o.verdict < Verdict::NeedsApproval {
        o.verdict = Verdict::NeedsApproval;
    }
    if o.verdict == Verdict::NeedsApproval {
        o.require_approval.push(why.to_owned());
    }
}
