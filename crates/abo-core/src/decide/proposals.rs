//! Several attempts of one task at once (`TaskState::Candidates`): starting a task's proposals,
//! hedging an attempt that runs long, moving each candidate through its backend, gates, review
//! and policy, and choosing the one that lands (`crate::proposal::rank` for proposals, the first
//! to pass for a hedge). The losers are stopped (`Effect::Stop`: processes killed, worktree
//! removed) and charged; each candidate's end is a `task.proposal` event, so that a replay, or
//! `abo resume` after a crash, sees exactly which one won (never two: the winner is the task's one
//! `Verifying` attempt from then on).

use super::{BackendOutcome, Ctx, Effect, GateOutcome, PolicyOutcome};
use crate::budget::{Blocked, Reservation};
use crate::event::{EventBody, GateStage, ProposalStart};
use crate::ids::{ArtifactId, BackendName, TaskId};
use crate::proposal::{CandidateState, HedgeAfter, Mode, ProposalOutcome, Score};
use crate::spec::BackendSpec;
use crate::state::{RunState, TaskState};
use crate::verdict::Verdict;

/// Whether the task has several candidates in flight.
pub(super) fn racing(state: &RunState, task: &TaskId) -> bool {
    matches!(
        state.task(task).map(|t| &t.state),
        Some(TaskState::Candidates { .. })
    )
}

/// The number of proposals `proposals.rules` gives a task about to start (more than one), and
/// the rule.
pub(super) fn requested(state: &RunState, task: &TaskId, attempt: u32) -> Option<(u32, String)> {
    let rules = &state.spec.settings.proposals.rules;
    if rules.is_empty() {
        return None;
    }
    let t = state.task(task)?;
    let env = super::budget_facts(state, t, attempt).env();
    rules.iter().enumerate().find_map(|(i, r)| {
        let holds = state
            .proposal_rules
            .get(i)
            .and_then(Option::as_ref)
            .and_then(|e| e.eval(&env).ok())
            .is_some_and(|v| v == crate::expr::Value::Bool(true));
        (holds && r.n > 1).then(|| (r.n, format!("proposals.rules[{i}]: {}", r.when)))
    })
}

/// The backends a task's candidates run on: `first` (the router's choice), then the others the
/// router knows for the task's type (`router.learn`, `router.rules`, `router.fallback`) that are
/// healthy; fewer distinct ones than candidates repeat in turn (each attempt has its own number,
/// which seeds what takes a seed).
fn pool(
    state: &RunState,
    task: &TaskId,
    first: &BackendSpec,
    now: crate::ids::Timestamp,
) -> Vec<BackendSpec> {
    let settings = &state.spec.settings;
    let kind = state
        .task(task)
        .map(|t| t.spec.kind.as_str())
        .unwrap_or_default();
    let mut out = vec![first.clone()];
    let others = settings
        .router
        .learn
        .get(kind)
        .into_iter()
        .flatten()
        .chain(settings.router.rules.iter().map(|r| &r.backend))
        .chain(settings.fallback.iter());
    for b in others {
        let usable =
            !state.circuit_open(b.name(), now) && state.held_until(b.name(), now).is_none();
        if usable && !out.iter().any(|o| o.name() == b.name()) {
            out.push(b.clone());
        }
    }
    out
}

/// Each candidate's reservation, reserved in turn before any starts: the task's cap for each,
/// and the shared caps (run, day, week, backend) holding all of them. Stops at the first that
/// does not fit; Err when not even one does.
fn reserve(
    state: &RunState,
    task: &TaskId,
    backends: &[(u32, BackendSpec)],
) -> (Vec<(u32, BackendSpec, Reservation)>, Option<Blocked>) {
    let t = state.task(task);
    let task_cap = t.and_then(|t| t.spec.budget).unwrap_or(state.budgets.task);
    let mut trial = state.ledger.clone();
    let mut out = Vec::new();
    for (attempt, b) in backends {
        if !(b.priced() && state.budgets.any_spend_cap()) {
            out.push((*attempt, b.clone(), Reservation::default()));
            continue;
        }
        match trial.reservation(&state.budgets, task, task_cap, b.name(), &state.windows) {
            Ok(r) => {
                // Held in the trial under a name of its own: each candidate has the task's cap,
                // the shared caps count them all.
                let sibling = TaskId::new(format!("{task}#{attempt}"));
                trial.reserve(&sibling, *attempt, b.name(), r.amount());
                out.push((*attempt, b.clone(), r));
            }
            Err(blocked) => return (out, Some(blocked)),
        }
    }
    (out, None)
}

/// Starts a task's `n` proposals from attempt `attempt`. Err (nothing started) when the budget
/// holds none of them.
pub(super) fn start(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    first: BackendSpec,
    (n, rule): (u32, String),
    attempt: u32,
    feedback: Option<crate::state::Feedback>,
) -> Result<(), Blocked> {
    let pool = pool(cx.state, task, &first, cx.now);
    let wanted: Vec<(u32, BackendSpec)> = (0..n)
        .map(|i| {
            let b = pool[usize::try_from(i).unwrap_or(0) % pool.len()].clone();
            (attempt + i, b)
        })
        .collect();
    let (fits, blocked) = reserve(cx.state, task, &wanted);
    if fits.is_empty() {
        return Err(blocked.unwrap_or_else(|| unreachable_block(cx.state)));
    }
    let short = blocked.map(|b| {
        format!(
            "{} of {n} proposals fit the budget: {}",
            fits.len(),
            b.describe()
        )
    });
    cx.emit(
        Some(task),
        EventBody::TaskProposals {
            requested: n,
            rule,
            attempts: fits
                .iter()
                .map(|(a, b, _)| ProposalStart {
                    attempt: *a,
                    backend: b.name().clone(),
                })
                .collect(),
            short,
        },
    );
    for (a, backend, reserved) in fits {
        let attempt_id = cx.attempt(task, a);
        cx.emit(
            Some(task),
            EventBody::TaskStarted {
                attempt: a,
                backend: backend.name().clone(),
                worktree: attempt_id.worktree(),
                reserved,
            },
        );
        cx.effect(Effect::StartAttempt {
            attempt: attempt_id,
            backend,
            feedback: feedback.clone(),
            reserved,
        });
    }
    Ok(())
}

/// A blocked value for the case that cannot happen (no candidate and no block): an empty pool.
fn unreachable_block(state: &RunState) -> Blocked {
    Blocked {
        cap: crate::budget::CapId {
            scope: crate::budget::Scope::Run,
            unit: crate::budget::Unit::Usd,
        },
        limit: state.budgets.run.usd.unwrap_or(0.0),
        spent: state.ledger.spent.usd,
        reserved: 0.0,
        needed: 0.0,
        final_: false,
    }
}

/// Hedges the attempts in flight that ran past `hedge.after`: a duplicate on another backend.
pub(super) fn hedge(cx: &mut Ctx<'_>) {
    let Some(spec) = cx.state.spec.settings.hedge else {
        return;
    };
    if spec.max == 0 {
        return;
    }
    let due: Vec<(TaskId, u32, u64)> = cx
        .state
        .index
        .in_flight
        .iter()
        .filter_map(|p| cx.state.at(*p))
        .filter_map(|t| {
            let after = match spec.after {
                HedgeAfter::Ms(ms) => ms,
                HedgeAfter::P90 => {
                    crate::proposal::p90(cx.state.landed_ms.get(t.spec.kind.as_str())?)?
                }
            };
            let inflight = &cx.state.inflight;
            let landing =
                inflight.land_queue.contains(&t.spec.id) || inflight.is_landing(&t.spec.id);
            let (attempt, since, hedges) = match &t.state {
                // A change that passed and waits to land is not hedged.
                TaskState::Running { attempt } | TaskState::Verifying { attempt, .. }
                    if !landing =>
                {
                    (*attempt, t.started_at?, 0)
                }
                TaskState::Candidates {
                    mode: Mode::Hedge,
                    candidates,
                } => {
                    let (a, last) = candidates.iter().next_back()?;
                    let open = candidates.values().any(|c| c.state.in_flight());
                    if !open {
                        return None;
                    }
                    let n = candidates.values().filter(|c| c.hedge).count();
                    (*a, last.started_at, u32::try_from(n).unwrap_or(u32::MAX))
                }
                _ => return None,
            };
            let ran = u64::try_from(cx.now.0 - since.0).unwrap_or(0);
            (hedges < spec.max && ran >= after).then(|| (t.spec.id.clone(), attempt, after))
        })
        .collect();
    for (task, attempt, after_ms) in due {
        hedge_one(cx, &task, attempt, after_ms);
    }
}

fn hedge_one(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, after_ms: u64) {
    let Some(t) = cx.state.task(task) else { return };
    let current = t.backend_of(attempt);
    let hedge = t.next_attempt.max(t.attempt + 1);
    let feedback = t.feedback.clone();
    let own = t.spec.backend.clone();
    let first = match cx
        .state
        .spec
        .settings
        .fallback
        .iter()
        .find(|b| *b.name() == current)
    {
        Some(b) => b.clone(),
        None => own,
    };
    // Another backend than the one running, where the router has one; else the same one again.
    let pool = pool(cx.state, task, &first, cx.now);
    let Some(backend) = pool
        .iter()
        .find(|b| *b.name() != current)
        .or_else(|| pool.first())
        .cloned()
    else {
        return;
    };
    let (fits, _) = reserve(cx.state, task, &[(hedge, backend.clone())]);
    let Some((_, backend, reserved)) = fits.into_iter().next() else {
        return; // the budget holds no duplicate: the attempt runs on alone
    };
    cx.emit(
        Some(task),
        EventBody::TaskHedge {
            attempt,
            hedge,
            backend: backend.name().clone(),
            after_ms,
            reason: format!(
                "attempt {attempt} on `{current}` ran longer than {}",
                crate::human::duration_ms(after_ms)
            ),
        },
    );
    let attempt_id = cx.attempt(task, hedge);
    cx.emit(
        Some(task),
        EventBody::TaskStarted {
            attempt: hedge,
            backend: backend.name().clone(),
            worktree: attempt_id.worktree(),
            reserved,
        },
    );
    cx.effect(Effect::StartAttempt {
        attempt: attempt_id,
        backend,
        feedback,
        reserved,
    });
}

fn candidate_state(cx: &Ctx<'_>, task: &TaskId, attempt: u32) -> Option<CandidateState> {
    cx.state
        .task(task)
        .and_then(|t| t.candidate(attempt))
        .map(|c| c.state.clone())
}

/// A candidate's backend finished.
pub(super) fn backend_done(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: BackendOutcome) {
    if candidate_state(cx, task, attempt) != Some(CandidateState::Running) {
        return; // stale: stopped, or the task moved on
    }
    super::record_backend(cx, task, attempt, &o);
    match o.failure {
        Some(reason) => failed(cx, task, attempt, reason),
        // A question or a usage limit is not a change to compare: that candidate is out.
        None if o.question.is_some() => failed(
            cx,
            task,
            attempt,
            "the agent asked a question instead of proposing a change".into(),
        ),
        None => next_gate(cx, task, attempt),
    }
}

/// The candidate's next gate, or its review or policy when all passed.
fn next_gate(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    let Some(t) = cx.state.task(task) else { return };
    let Some(CandidateState::Verifying { passed }) = t.candidate(attempt).map(|c| &c.state) else {
        return;
    };
    let attempt_id = cx.attempt(task, attempt);
    if let Some(gate) = t.spec.gates.get(*passed).cloned() {
        cx.effect(Effect::RunGate {
            attempt: attempt_id,
            gate,
            stage: GateStage::Attempt,
            candidate: None,
        });
        return;
    }
    let reviewed = t
        .candidate(attempt)
        .is_some_and(|c| c.score.review.is_some());
    let author = t.backend_of(attempt);
    let reviewer = cx
        .state
        .spec
        .settings
        .review
        .as_ref()
        .and_then(|r| r.reviewer(&author))
        .cloned();
    match reviewer {
        Some(reviewer) if !reviewed => super::review::ask(cx, task, attempt, reviewer),
        _ => cx.effect(Effect::EvaluatePolicy {
            attempt: attempt_id,
        }),
    }
}

/// A candidate's gate finished.
pub(super) fn gate_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    stage: GateStage,
    o: GateOutcome,
) {
    let Some(t) = cx.state.task(task) else { return };
    let Some(CandidateState::Verifying { passed }) = t.candidate(attempt).map(|c| c.state.clone())
    else {
        return;
    };
    if stage != GateStage::Attempt || t.spec.gates.get(passed) != Some(&o.name) {
        return; // stale
    }
    cx.emit(Some(task), super::gate_event(attempt, stage, &o));
    if o.passed {
        next_gate(cx, task, attempt);
    } else {
        let how = if o.timed_out {
            "timed out".to_owned()
        } else {
            o.exit
                .map_or("was killed".to_owned(), |c| format!("exited with {c}"))
        };
        failed(
            cx,
            task,
            attempt,
            format!("gate `{}` failed: it {how}", o.name),
        );
    }
}

/// A candidate's review came back: it is part of its score (no round of feedback: the other
/// candidates are the alternatives), then the policy.
pub(super) fn review_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reviewer: BackendName,
    outcome: Result<crate::review::Review, String>,
    log: Option<ArtifactId>,
    spent: super::review::Spent,
) {
    let Some(t) = cx.state.task(task) else { return };
    let waiting = matches!(t.candidate(attempt), Some(c) if c.state == CandidateState::Verifying { passed: t.spec.gates.len() } && c.score.review.is_none());
    if !waiting {
        return;
    }
    super::review::answered(cx, task, attempt, reviewer, &outcome, log, &spent);
    cx.effect(Effect::EvaluatePolicy {
        attempt: cx.attempt(task, attempt),
    });
}

/// The policy decided on a candidate: it passes (and waits for the others, or wins a hedge), or
/// is out.
pub(super) fn policy_done(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: PolicyOutcome) {
    let Some(t) = cx.state.task(task) else { return };
    let Some(c) = t.candidate(attempt) else {
        return;
    };
    if c.state
        != (CandidateState::Verifying {
            passed: t.spec.gates.len(),
        })
    {
        return;
    }
    if let Some(err) = o.error {
        return failed(
            cx,
            task,
            attempt,
            format!("policy evaluation failed: {err}"),
        );
    }
    let mut o = o;
    let generate = t.spec.autonomy.of(crate::autonomy::Action::Generate);
    if generate == crate::autonomy::Level::A1 && o.verdict < Verdict::NeedsApproval {
        o.verdict = Verdict::NeedsApproval;
        o.require_approval.push(format!(
            "autonomy: generate is {}: each change waits for approval",
            generate.name()
        ));
    }
    // The review's part, as for a single attempt.
    if let Some(review) = c.score.review {
        super::review::require_person(review, c.score.high_finding, &mut o);
    }
    cx.emit(
        Some(task),
        EventBody::TaskPolicy {
            attempt,
            verdict: o.verdict,
            deny: o.deny.clone(),
            require_approval: o.require_approval.clone(),
            risk: o.risk,
            duration_us: o.duration_us,
            input: o.input,
        },
    );
    if o.verdict == Verdict::Deny {
        let reason = format!("denied by policy: {}", o.deny.join("; "));
        // A denied change holding a secret is not kept.
        return failed_keep(cx, task, attempt, reason, o.secrets == 0);
    }
    // The approval it would need is asked for the winner only, after the choice.
    settle(cx, task);
}

/// The candidate's executor went away (a worker lost its lease): that candidate is out.
pub(super) fn interrupted(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String) {
    let open = candidate_state(cx, task, attempt).is_some_and(|s| s.in_flight());
    if open {
        charge_stopped(cx, task, attempt);
        failed(cx, task, attempt, format!("interrupted: {reason}"));
    }
}

fn failed(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String) {
    failed_keep(cx, task, attempt, reason, true);
}

/// A candidate is out: recorded with its score so far, its worktree kept (unless it holds a
/// secret), then the task settles if that was the last in flight.
fn failed_keep(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String, keep: bool) {
    let Some(t) = cx.state.task(task) else { return };
    let Some(c) = t.candidate(attempt) else {
        return;
    };
    let (mode, backend, score, hedge) = (
        mode_of(&t.state),
        c.backend.clone(),
        c.score.clone(),
        c.hedge,
    );
    let attempt_id = cx.attempt(task, attempt);
    cx.emit(
        Some(task),
        EventBody::TaskProposal {
            attempt,
            backend,
            mode,
            outcome: ProposalOutcome::Failed,
            score,
            rank: None,
            reason,
            hedge,
            kept_worktree: keep.then(|| attempt_id.worktree()),
        },
    );
    cx.effect(Effect::Cleanup {
        attempt: attempt_id,
        keep,
    });
    settle(cx, task);
}

fn mode_of(s: &TaskState) -> Mode {
    match s {
        TaskState::Candidates { mode, .. } => *mode,
        _ => Mode::Proposals,
    }
}

/// Charges a candidate stopped while its backend ran: its reservation (what it spent is unknown
/// once its process is killed), or nothing for an unpriced backend, recorded either way.
fn charge_stopped(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    if candidate_state(cx, task, attempt) != Some(CandidateState::Running) {
        return; // its backend reported, and was charged then
    }
    let held = cx
        .state
        .ledger
        .open
        .get(&(task.clone(), attempt))
        .map(|(_, a)| *a)
        .unwrap_or_default();
    super::charge(cx, task, attempt, held, STOPPED.into());
}

/// The `budget.charged` source of a candidate stopped before its backend reported.
pub const STOPPED: &str = "stopped";

/// Chooses the winner when it is time: for proposals, once no candidate is in flight, the best
/// that passed; for a hedge, the first that passed. None passed and none in flight: the task's
/// attempt failed (retried or failed as any attempt).
fn settle(cx: &mut Ctx<'_>, task: &TaskId) {
    let Some(t) = cx.state.task(task) else { return };
    let TaskState::Candidates { mode, candidates } = &t.state else {
        return;
    };
    let mode = *mode;
    let in_flight = candidates.values().any(|c| c.state.in_flight());
    let passed: Vec<(u32, Score)> = candidates
        .iter()
        .filter(|(_, c)| matches!(c.state, CandidateState::Passed { .. }))
        .map(|(a, c)| (*a, c.score.clone()))
        .collect();
    let ranked = match mode {
        Mode::Proposals if in_flight => return,
        Mode::Proposals => {
            let refs: Vec<(u32, &Score)> = passed.iter().map(|(a, s)| (*a, s)).collect();
            crate::proposal::rank(cx.state.spec.settings.proposals.order(), &refs)
        }
        Mode::Hedge => match passed.first() {
            Some((a, _)) => vec![(*a, "the first candidate to pass".to_owned())],
            None if in_flight => return,
            None => Vec::new(),
        },
    };
    let Some((winner, why)) = ranked.first().cloned() else {
        return none_passed(cx, task);
    };
    let others: Vec<(u32, BackendName, CandidateState, Score, bool)> = candidates
        .iter()
        .filter(|(a, _)| **a != winner)
        .map(|(a, c)| {
            (
                *a,
                c.backend.clone(),
                c.state.clone(),
                c.score.clone(),
                c.hedge,
            )
        })
        .collect();
    let Some(won) = candidates.get(&winner).cloned() else {
        return;
    };
    let (verdict, reasons) = match &won.state {
        CandidateState::Passed { verdict, reasons } => (*verdict, reasons.clone()),
        _ => (Verdict::Allow, Vec::new()),
    };
    for (a, backend, state, score, hedge) in others {
        let (outcome, rank, reason) = match state {
            CandidateState::Passed { .. } => {
                let pos = ranked.iter().position(|(r, _)| *r == a);
                let reason = pos.and_then(|p| ranked.get(p)).map_or_else(
                    || format!("attempt {winner} passed first"),
                    |(_, w)| w.clone(),
                );
                let reason = if mode == Mode::Hedge {
                    format!("attempt {winner} passed first")
                } else {
                    reason
                };
                (
                    ProposalOutcome::Lost,
                    pos.map(|p| u32::try_from(p + 1).unwrap_or(u32::MAX)),
                    reason,
                )
            }
            CandidateState::Running | CandidateState::Verifying { .. } => {
                charge_stopped(cx, task, a);
                (
                    ProposalOutcome::Stopped,
                    None,
                    format!("attempt {winner} passed first"),
                )
            }
            // Already recorded as it ended.
            CandidateState::Failed { .. } | CandidateState::Stopped { .. } => continue,
        };
        let stop = outcome == ProposalOutcome::Stopped;
        cx.emit(
            Some(task),
            EventBody::TaskProposal {
                attempt: a,
                backend,
                mode,
                outcome,
                score,
                rank,
                reason,
                hedge,
                kept_worktree: None,
            },
        );
        let attempt_id = cx.attempt(task, a);
        if stop {
            cx.effect(Effect::Stop {
                attempt: attempt_id,
            });
        } else {
            cx.effect(Effect::Cleanup {
                attempt: attempt_id,
                keep: false,
            });
        }
    }
    cx.emit(
        Some(task),
        EventBody::TaskProposal {
            attempt: winner,
            backend: won.backend,
            mode,
            outcome: ProposalOutcome::Won,
            score: won.score,
            rank: Some(1),
            reason: why,
            hedge: won.hedge,
            kept_worktree: None,
        },
    );
    match verdict {
        Verdict::NeedsApproval => {
            let approval = cx.attempt(task, winner).to_string();
            cx.emit(
                Some(task),
                EventBody::TaskApprovalRequested {
                    attempt: winner,
                    approval,
                    action: crate::state::ApprovalAction::Merge,
                    reasons,
                },
            );
        }
        _ => cx.state.inflight.land_queue.push_back(task.clone()),
    }
}

/// No candidate passed: the task's attempt (its last candidate's number) failed, with every
/// candidate's reason, and is retried or fails as any attempt.
fn none_passed(cx: &mut Ctx<'_>, task: &TaskId) {
    let Some(t) = cx.state.task(task) else { return };
    let TaskState::Candidates { candidates, .. } = &t.state else {
        return;
    };
    let last = candidates.keys().next_back().copied().unwrap_or(t.attempt);
    let reasons: Vec<String> = candidates
        .iter()
        .map(|(a, c)| match &c.state {
            CandidateState::Failed { reason } | CandidateState::Stopped { reason } => {
                format!("attempt {a}: {reason}")
            }
            other => format!("attempt {a}: {}", other.as_str()),
        })
        .collect();
    let n = candidates.len();
    let reason = format!("none of {n} candidates passed ({})", reasons.join("; "));
    super::failed_without_worktree(cx, task, last, reason);
}

/// After a crash: every candidate in flight is charged its reservation and the task runs its
/// candidates again from its first candidate's number (their worktrees went with the crash).
pub(super) fn resume(cx: &mut Ctx<'_>, task: &TaskId) {
    let Some(t) = cx.state.task(task) else { return };
    let TaskState::Candidates { candidates, .. } = &t.state else {
        return;
    };
    let running: Vec<u32> = candidates
        .iter()
        .filter(|(_, c)| c.state == CandidateState::Running)
        .map(|(a, _)| *a)
        .collect();
    let first = candidates.keys().next().copied().unwrap_or(1);
    for a in running {
        super::charge_interrupted(cx, task, a);
    }
    cx.emit(
        Some(task),
        EventBody::TaskRetry {
            attempt: first,
            cause: crate::event::RetryCause::Interrupted,
            reason: "interrupted: abo stopped while the task's candidates were in flight".into(),
            log: None,
            kept_worktree: None,
        },
    );
}
