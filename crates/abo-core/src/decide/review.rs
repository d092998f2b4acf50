//! The reviewer's place in an attempt: after its gates passed and before the policy. A
//! `request_changes` verdict sends its findings to a next attempt (up to `review.max_rounds`);
//! then, by default, one with a high-severity finding needs approval, as does a reviewer that gave
//! no verdict that parses (a failure is never approval).

use super::{Ctx, Effect, PolicyOutcome, attempt_failed, exhausted};
use crate::budget::{Amount, INTERRUPTED, Reservation};
use crate::event::{EventBody, Usage};
use crate::ids::{ArtifactId, BackendName, TaskId};
use crate::proposal::CandidateState;
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
    let Some(reviewer) = reviewer.filter(|_| !reviewed) else {
        cx.effect(Effect::EvaluatePolicy {
            attempt: attempt_id,
        });
        return;
    };
    ask(cx, task, attempt, reviewer);
}

/// Asks `reviewer` about `attempt`'s change. A priced reviewer under a spend cap holds its
/// reservation while it reads, as an attempt does; one the budget cannot hold is not asked
/// (`not_started`), and the change goes to the policy, which asks a person instead.
pub(super) fn ask(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: crate::spec::BackendSpec,
) {
    let attempt_id = cx.attempt(task, attempt);
    let Some(t) = cx.state.task(task) else { return };
    let task_cap = t.spec.budget.unwrap_or(cx.state.budgets.task);
    let held = cx.state.ledger.open.contains_key(&(task.clone(), attempt));
    if reviewer.priced() && cx.state.budgets.any_spend_cap() && !held {
        let s = &cx.state;
        match s
            .ledger
            .reservation(&s.budgets, task, task_cap, reviewer.name(), &s.windows)
        {
            Ok(reserved) => cx.emit(
                Some(task),
                EventBody::ReviewReserved {
                    attempt,
                    reviewer: reviewer.name().clone(),
                    reserved,
                },
            ),
            Err(b) => {
                exhausted(cx, task, &b);
                cx.emit(
                    Some(task),
                    EventBody::TaskReview {
                        attempt,
                        reviewer: reviewer.name().clone(),
                        verdict: Outcome::NotStarted,
                        findings: Vec::new(),
                        error: Some(format!("not started: budget: {}", b.describe())),
                        log: None,
                    },
                );
                cx.effect(Effect::EvaluatePolicy {
                    attempt: attempt_id,
                });
                return;
            }
        }
    }
    cx.effect(Effect::Review {
        attempt: attempt_id,
        reviewer,
    });
}

/// What asking the reviewer used, as it reported it.
#[derive(Debug, Default)]
pub(super) struct Spent {
    pub(super) usage: Option<Usage>,
    pub(super) cost_usd: Option<f64>,
    pub(super) cost_source: Option<String>,
}

/// Charges the review's cost (whatever it reported, or what it held when nothing was) and
/// releases its reservation.
pub(super) fn charge(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: &BackendName,
    spent: &Spent,
) {
    let reserved = cx
        .state
        .ledger
        .open
        .get(&(task.clone(), attempt))
        .map(|(_, a)| Reservation {
            usd: Some(a.usd),
            tokens: Some(a.tokens),
        });
    if reserved.is_none() && spent.usage.is_none() && spent.cost_usd.is_none() {
        return; // nothing held, nothing reported: a command reviewer, or no cap and no price
    }
    let source = match (&spent.cost_source, spent.cost_usd) {
        (Some(s), Some(_)) => s.clone(),
        (None, Some(_)) => "estimated".to_owned(),
        _ => "unknown".to_owned(),
    };
    cx.emit(
        Some(task),
        EventBody::ReviewCharged {
            attempt,
            reviewer: reviewer.clone(),
            usd: spent.cost_usd.unwrap_or(0.0),
            tokens: spent.usage.map_or(0, |u| u.total()),
            reserved: reserved.unwrap_or_default(),
            source,
        },
    );
}

/// abo stopped (or the run was killed) while `task`'s review held a reservation: what it held
/// is charged, as for an interrupted attempt (a cap is never passed because abo lost count).
pub(super) fn charge_interrupted(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    let Some(t) = cx.state.task(task) else { return };
    let reviewing = match &t.state {
        TaskState::Verifying { attempt: a, .. } => *a == attempt,
        TaskState::Candidates { .. } => t
            .candidate(attempt)
            .is_some_and(|c| matches!(c.state, CandidateState::Verifying { .. })),
        _ => false,
    };
    if !reviewing {
        return;
    }
    let Some((reviewer, held)) = cx.state.ledger.open.get(&(task.clone(), attempt)).cloned() else {
        return;
    };
    let reserved = Reservation {
        usd: Some(held.usd),
        tokens: Some(held.tokens),
    };
    let Amount { usd, tokens } = held;
    cx.emit(
        Some(task),
        EventBody::ReviewCharged {
            attempt,
            reviewer,
            usd,
            tokens,
            reserved,
            source: INTERRUPTED.into(),
        },
    );
}

pub(super) fn review_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: BackendName,
    outcome: Result<Review, String>,
    log: Option<ArtifactId>,
    spent: Spent,
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
    let verdict = answered(cx, task, attempt, reviewer, &outcome, log.clone(), &spent);
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

/// The reviewer answered `attempt` (or failed to): its spend charged and its `task.review`
/// recorded (a reply that does not parse is `failed`, never approval). Returns the verdict.
pub(super) fn answered(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: BackendName,
    outcome: &Result<Review, String>,
    log: Option<ArtifactId>,
    spent: &Spent,
) -> Outcome {
    charge(cx, task, attempt, &reviewer, spent);
    let (verdict, findings, error) = match outcome {
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
            log,
        },
    );
    verdict
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
    match t.review {
        Some((a, outcome, high)) if a == attempt => require_person(outcome, high, o),
        _ => {}
    }
}

/// Raises `o` to needing approval when the review's `outcome` (with a high-severity finding or
/// not) calls for a person: no valid verdict (never approval), not started, or changes requested
/// with a high-severity finding.
pub(super) fn require_person(outcome: Outcome, high: bool, o: &mut PolicyOutcome) {
    let why = match (outcome, high) {
        (Outcome::Failed, _) => {
            "review: the reviewer gave no valid verdict, which is never approval"
        }
        (Outcome::NotStarted, _) => {
            "review: not started, the budget cannot hold the reviewer's reservation (see budget.exhausted)"
        }
        (Outcome::RequestChanges, true) => "review: changes requested with a high-severity finding",
        _ => return,
    };
    if o.verdict < Verdict::NeedsApproval {
        o.verdict = Verdict::NeedsApproval;
    }
    if o.verdict == Verdict::NeedsApproval {
        o.require_approval.push(why.to_owned());
    }
}
