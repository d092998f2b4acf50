//! decide: (state, command, now) -> events + effects. Events are applied to the state as they are
//! decided; the caller commits them before executing any effect. Effect results come
//! back as commands.

pub mod question;

use crate::budget::{Amount, Blocked, CapChange, Ledger, Reservation};
use crate::event::{Event, EventBody, GateStage, RetryCause, Usage};
use crate::ids::{ArtifactId, AttemptId, CommitSha, GateName, TaskId, Timestamp};
use crate::spec::BackendSpec;
use crate::state::ApprovalAction;
use crate::verdict::Verdict;

use crate::plan::scopes_overlap;

mod healing;
mod proposals;
mod review;
use crate::state::{Feedback, RunState, RunStatus, TaskState};
pub use proposals::STOPPED;

/// What happened, or what someone asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Start a run just created.
    Start,
    /// Continue a run after a pause or a crash. `landed` lists in-flight tasks whose commit the
    /// runtime found on the run branch (the crash came after landing, before its event).
    Resume {
        landed: Vec<(TaskId, u32, CommitSha)>,
        /// Caps raised as the run resumes.
        caps: CapChange,
    },
    /// Time passed: caps on wall time, circuits closing.
    Tick,
    BackendDone {
        task: TaskId,
        attempt: u32,
        outcome: BackendOutcome,
    },
    GateDone {
        task: TaskId,
        attempt: u32,
        stage: GateStage,
        outcome: GateOutcome,
        candidate: Option<CommitSha>,
    },
    LandDone {
        task: TaskId,
        attempt: u32,
        outcome: LandOutcome,
    },
    /// The outcomes of an [`Effect::LandTogether`], in its order.
    LandedTogether {
        outcomes: Vec<(TaskId, u32, LandOutcome)>,
    },
    PolicyDone {
        task: TaskId,
        attempt: u32,
        outcome: PolicyOutcome,
    },
    Approve {
        approval: String,
        reason: String,
    },
    Reject {
        approval: String,
        reason: String,
    },
    /// A person answered an agent's question (a `decision` approval).
    Answer {
        approval: String,
        answer: String,
    },
    /// The run branch was (or was not) landed into the base branch.
    MergeDone {
        into: Option<String>,
        outcome: String,
        commit: Option<CommitSha>,
        /// The base branch's head before a merge commit.
        onto: Option<CommitSha>,
        reason: String,
        /// The pull (merge) request the run branch was offered as: (URL, number).
        pull_request: Option<(String, Option<u64>)>,
    },
    Pause {
        reason: String,
    },
    Kill {
        reason: String,
    },
    Retry {
        task: TaskId,
    },
    /// The attempt's executor went away mid-attempt (a worker lost its lease): the attempt's
    /// worktree is gone with it, so it runs again under the same number, as after a crash.
    Interrupted {
        task: TaskId,
        attempt: u32,
        reason: String,
    },
    /// `landing.verify` ran on `commit`: the run branch's head, or a bisect step (`bisect`).
    VerifyDone {
        commit: CommitSha,
        bisect: bool,
        /// The base branch's verification (after the run's merge), not the run branch's.
        base: bool,
        outcome: crate::verify::VerifyOutcome,
    },
    /// The reviewer answered (`Err`: no verdict that parses, or it could not be asked).
    ReviewDone {
        task: TaskId,
        attempt: u32,
        reviewer: crate::ids::BackendName,
        outcome: Result<crate::review::Review, String>,
        log: Option<ArtifactId>,
        /// What asking the reviewer used, as it reported it.
        usage: Option<Usage>,
        cost_usd: Option<f64>,
        cost_source: Option<String>,
    },
    /// The first bad commit was reverted on the run branch (or could not be).
    RevertDone {
        task: TaskId,
        commit: CommitSha,
        /// The revert was on the base branch (after the run's merge).
        base: bool,
        outcome: crate::verify::RevertOutcome,
    },
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackendOutcome {
    /// `None` when the backend produced a change; else why the attempt failed.
    pub failure: Option<String>,
    pub exit: Option<i32>,
    pub duration_ms: u64,
    pub files_changed: u32,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub cost_source: Option<String>,
    pub log: Option<ArtifactId>,
    pub model: Option<String>,
    pub message: Option<String>,
    pub transcript: Option<ArtifactId>,
    pub prompt: Option<ArtifactId>,
    /// The failure was the provider's (429, 5xx, timeout): it counts toward opening the circuit.
    pub transient: bool,
    /// The failure is the configuration's (the egress proxy refused a host that is not in
    /// `sandbox.agent_hosts`): every other attempt would fail the same way, so none is made.
    #[serde(default)]
    pub permanent: bool,
    /// The change was an identical earlier attempt's, reused: (cache key, that attempt).
    pub cached: Option<(String, String)>,
    /// The failure was a usage or rate limit that resets at this time: the backend is held until
    /// then and the attempt runs again (it is not the change's failure).
    #[serde(default)]
    pub hold_until: Option<Timestamp>,
    /// The agent asked a person instead of finishing: the task waits for the answer.
    #[serde(default)]
    pub question: Option<question::Question>,
    /// The agent's calls to its `check` tool during the attempt, in order.
    #[serde(default)]
    pub checks: Vec<crate::event::CheckRecord>,
    /// Lines added plus removed by the change.
    #[serde(default)]
    pub lines_changed: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateOutcome {
    pub name: GateName,
    pub passed: bool,
    pub exit: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub runs: u32,
    pub log: Option<ArtifactId>,
    #[serde(default)]
    pub figures: Option<crate::event::GateFigures>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LandOutcome {
    /// The run branch now holds the task's commit.
    Landed { commit: CommitSha },
    /// The attempt was merged onto the run branch's head as `candidate`, not yet moved there:
    /// the gates run on it first.
    Merged { candidate: CommitSha },
    Failed {
        reason: String,
        log: Option<ArtifactId>,
    },
    /// The run branch could not move for a cause outside the attempt (a working tree has it
    /// checked out): the run pauses with `reason`, and the attempt runs again under the same
    /// number when it resumes, without using up the task's attempts.
    Blocked { reason: String },
    /// The landing could not finish for a cause outside the attempt (the worker holding its
    /// worktree was lost): as [`Command::Interrupted`].
    Interrupted { reason: String },
}

/// The policy's decision on an attempt, or why it could not be made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyOutcome {
    pub verdict: Verdict,
    pub deny: Vec<String>,
    pub require_approval: Vec<String>,
    pub risk: String,
    pub duration_us: u64,
    pub error: Option<String>,
    /// Secrets found in the change: a denied change holding one is not kept for inspection.
    pub secrets: usize,
    /// The input the policy evaluated, redacted, as an artifact (`abo policy eval --input`).
    #[serde(default)]
    pub input: Option<ArtifactId>,
}

/// Work for the runtime, executed only after the events that asked for it are committed.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few effects per attempt, moved a handful of times: boxing the backend would buy nothing"
)]
pub enum Effect {
    /// Create the attempt's worktree from the run branch's head and run `backend` in it.
    StartAttempt {
        attempt: AttemptId,
        backend: BackendSpec,
        feedback: Option<Feedback>,
        /// The most the attempt may spend: backends that accept a cap get it as theirs.
        reserved: Reservation,
    },
    /// Run one gate, in the attempt's worktree or on the merged candidate.
    RunGate {
        attempt: AttemptId,
        gate: GateName,
        stage: GateStage,
        candidate: Option<CommitSha>,
    },
    /// Evaluate the policy on the attempt's change (its gates passed).
    EvaluatePolicy { attempt: AttemptId },
    /// Commit the attempt and merge it onto the run branch (fast-forward, or a candidate commit).
    Land { attempt: AttemptId },
    /// Commit each attempt and land them on the run branch in this order, each merged onto the
    /// one before (none has gates on its merged result); answered by one
    /// [`Command::LandedTogether`].
    LandTogether { attempts: Vec<AttemptId> },
    /// Move the run branch to a candidate whose gates passed.
    Advance {
        attempt: AttemptId,
        candidate: CommitSha,
    },
    /// Sign and attach the proof of change of a landed attempt.
    Prove {
        attempt: AttemptId,
        commit: CommitSha,
    },
    /// Remove the attempt's worktree and branch, unless `keep` (failed attempts are kept).
    Cleanup { attempt: AttemptId, keep: bool },
    /// Stop every process of every attempt now.
    KillAll,
    /// Stop one attempt (a candidate that lost): kill its processes, then remove its worktree
    /// and branch.
    Stop { attempt: AttemptId },
    /// The run ended: publish the run branch per `landing`, and land it into the base branch
    /// when the `merge` action's autonomy allows (else say why not).
    Finish {
        run: crate::ids::RunId,
        merge: Result<(), String>,
    },
    /// Run `gates` (`landing.verify`) on `commit` of the run branch, in a worktree of its own,
    /// stopping at the first that fails.
    Verify {
        run: crate::ids::RunId,
        commit: CommitSha,
        gates: Vec<GateName>,
        bisect: bool,
        /// On the base branch after the run's merge (none: the run branch).
        base: Option<crate::verify::OnBase>,
    },
    /// Ask `reviewer` for its verdict on the attempt's change (its gates passed).
    Review {
        attempt: AttemptId,
        reviewer: BackendSpec,
    },
    /// Revert `commit` (the first bad one) on the run branch, whose head is `head`, with a revert
    /// commit carrying `Abo-Revert-Of:` and the run's trailers; the branch moves by
    /// compare-and-swap.
    Revert {
        run: crate::ids::RunId,
        task: TaskId,
        commit: CommitSha,
        head: CommitSha,
        reason: String,
        /// On the base branch after the run's merge (none: the run branch).
        base: Option<crate::verify::OnBase>,
    },
}

/// A command that does not apply to the run as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("run {run} is {status}: it cannot be {what}")]
    RunStatus {
        run: String,
        status: &'static str,
        what: &'static str,
    },
    #[error(
        "task `{task}` is {status}: only failed, denied, cancelled or reverted tasks can be retried"
    )]
    NotRetryable { task: TaskId, status: &'static str },
    #[error("run {run} has no pending approval `{approval}`")]
    UnknownApproval { run: String, approval: String },
    #[error("run {run} has no task `{task}`")]
    UnknownTask { run: String, task: TaskId },
}

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
}

struct Ctx<'a> {
    state: &'a mut RunState,
    now: Timestamp,
    out: Decision,
}

impl Ctx<'_> {
    fn emit(&mut self, task: Option<&TaskId>, body: EventBody) {
        let e = Event {
            run: self.state.id.clone(),
            task: task.cloned(),
            at: self.now,
            body,
        };
        self.state.apply(&e);
        self.out.events.push(e);
    }

    fn effect(&mut self, e: Effect) {
        self.out.effects.push(e);
    }

    fn attempt(&self, task: &TaskId, attempt: u32) -> AttemptId {
        self.state.attempt_id(task, attempt)
    }
}

impl RunState {
    /// Decides what a command means for this run. On `Ok`, the returned events have been applied to
    /// `self`; the caller must commit them before running the effects (and must not keep using this
    /// state if the commit fails).
    pub fn decide(&mut self, cmd: Command, now: Timestamp) -> Result<Decision, Rejected> {
        let mut cx = Ctx {
            state: self,
            now,
            out: Decision::default(),
        };
        match cmd {
            Command::Start => start(&mut cx)?,
            Command::Resume { landed, caps } => resume(&mut cx, landed, caps)?,
            Command::Tick => {}
            Command::BackendDone {
                task,
                attempt,
                outcome,
            } => backend_done(&mut cx, &task, attempt, outcome),
            Command::GateDone {
                task,
                attempt,
                stage,
                outcome,
                candidate,
            } => gate_done(&mut cx, &task, attempt, stage, outcome, candidate),
            Command::LandDone {
                task,
                attempt,
                outcome,
            } => land_done(&mut cx, &task, attempt, outcome),
            Command::LandedTogether { outcomes } => {
                for (task, attempt, outcome) in outcomes {
                    land_done(&mut cx, &task, attempt, outcome);
                }
            }
            Command::PolicyDone {
                task,
                attempt,
                outcome,
            } => policy_done(&mut cx, &task, attempt, outcome),
            Command::MergeDone {
                into,
                outcome,
                commit,
                onto,
                reason,
                pull_request,
            } => {
                if let Some((url, number)) = pull_request {
                    cx.emit(None, EventBody::RunPullRequest { url, number });
                }
                cx.emit(
                    None,
                    EventBody::RunMerge {
                        into,
                        outcome,
                        commit,
                        onto,
                        reason,
                    },
                );
                // `landing.verify` on the base branch's new head, when the merge made one.
                healing::base_pending(&mut cx);
            }
            Command::Approve { approval, reason } => {
                decide_approval(&mut cx, &approval, reason, true)?
            }
            Command::Reject { approval, reason } => {
                decide_approval(&mut cx, &approval, reason, false)?
            }
            Command::Answer { approval, answer } => question::answer(&mut cx, &approval, answer)?,
            Command::Pause { reason } => {
                if cx.state.status != RunStatus::Running {
                    return Err(rejected(cx.state, "paused"));
                }
                cx.emit(None, EventBody::RunPaused { reason });
            }
            Command::Kill { reason } => kill(&mut cx, reason)?,
            Command::Retry { task } => retry(&mut cx, &task)?,
            Command::Interrupted {
                task,
                attempt,
                reason,
            } => interrupted(&mut cx, &task, attempt, reason),
            Command::ReviewDone {
                task,
                attempt,
                reviewer,
                outcome,
                log,
                usage,
                cost_usd,
                cost_source,
            } => {
                let spent = review::Spent {
                    usage,
                    cost_usd,
                    cost_source,
                };
                if proposals::racing(cx.state, &task) {
                    proposals::review_done(&mut cx, &task, attempt, reviewer, outcome, log, spent);
                } else {
                    review::review_done(&mut cx, &task, attempt, reviewer, outcome, log, spent);
                }
            }
            cmd @ (Command::VerifyDone { .. } | Command::RevertDone { .. }) => {
                healing::decide(&mut cx, cmd);
            }
        }
        progress(&mut cx);
        Ok(cx.out)
    }
}

fn rejected(state: &RunState, what: &'static str) -> Rejected {
    Rejected::RunStatus {
        run: state.id.to_string(),
        status: state.status.as_str(),
        what,
    }
}

fn start(cx: &mut Ctx<'_>) -> Result<(), Rejected> {
    if cx.state.status != RunStatus::Planned {
        return Err(rejected(cx.state, "started"));
    }
    cx.emit(None, EventBody::RunStarted {});
    // A Markdown plan's "Pending" tasks wait for a person to accept them.
    let pending: Vec<(TaskId, Vec<String>)> = cx
        .state
        .tasks_in_order()
        .filter(|t| t.spec.skipped.is_none())
        .map(|t| (t.spec.id.clone(), plan_approval_reasons(&t.spec)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    for (task, reasons) in pending {
        let approval = cx.attempt(&task, 0).to_string();
        cx.emit(
            Some(&task),
            EventBody::TaskApprovalRequested {
                attempt: 0,
                approval,
                action: ApprovalAction::Plan,
                reasons,
            },
        );
    }
    Ok(())
}

fn resume(
    cx: &mut Ctx<'_>,
    landed: Vec<(TaskId, u32, CommitSha)>,
    caps: CapChange,
) -> Result<(), Rejected> {
    match cx.state.status {
        RunStatus::Planned => return start(cx),
        // What a finished run still owes (its merge, pull request, notifications) is done now,
        // once: `run.merge` settles it.
        RunStatus::Finished if cx.state.closing == crate::state::Closing::Owed => {
            let merge = merge_decision(cx.state);
            let run = cx.state.id.clone();
            cx.effect(Effect::Finish { run, merge });
            return Ok(());
        }
        // The base branch's verification after the merge goes on where it was.
        RunStatus::Finished if cx.state.closing == crate::state::Closing::Healing => {
            cx.state.inflight.verifying = false;
            healing::base_pending(cx);
            return Ok(());
        }
        RunStatus::Finished | RunStatus::Killed { .. } => {
            return Err(rejected(cx.state, "resumed"));
        }
        RunStatus::Running | RunStatus::Paused { .. } => {}
    }
    cx.emit(None, EventBody::RunResumed { caps });
    cx.state.inflight = Default::default();
    let in_flight: Vec<(TaskId, u32)> = cx
        .state
        .tasks_in_order()
        .filter_map(|t| t.state.in_flight().map(|a| (t.spec.id.clone(), a)))
        .collect();
    for (task, attempt) in in_flight {
        if proposals::racing(cx.state, &task) {
            // No candidate has landed (the winner is chosen, by its event, before it lands).
            proposals::resume(cx, &task);
            continue;
        }
        let approved = matches!(
            cx.state.task(&task).map(|t| &t.state),
            Some(TaskState::Approved { .. })
        );
        match landed.iter().find(|(t, _, _)| *t == task) {
            Some((_, a, commit)) => {
                cx.emit(
                    Some(&task),
                    EventBody::TaskLanded {
                        attempt: *a,
                        commit: commit.clone(),
                    },
                );
                cx.effect(Effect::Prove {
                    attempt: cx.attempt(&task, *a),
                    commit: commit.clone(),
                });
                cx.effect(Effect::Cleanup {
                    attempt: cx.attempt(&task, *a),
                    keep: false,
                });
            }
            // An approved change waits in its worktree: it lands, not redone.
            None if approved => cx.state.inflight.land_queue.push_back(task),
            None => {
                charge_interrupted(cx, &task, attempt);
                cx.emit(
                    Some(&task),
                    EventBody::TaskRetry {
                        attempt,
                        cause: RetryCause::Interrupted,
                        reason: "interrupted: abo stopped while the attempt was in flight".into(),
                        log: None,
                        kept_worktree: None,
                    },
                );
            }
        }
    }
    Ok(())
}

fn interrupted(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String) {
    if proposals::racing(cx.state, task) {
        return proposals::interrupted(cx, task, attempt, reason);
    }
    let holds = cx
        .state
        .task(task)
        .and_then(|t| t.state.holds_worktree())
        .is_some_and(|a| a == attempt);
    if !holds || cx.state.status.is_terminal() {
        return; // stale: the attempt already ended
    }
    cx.state.inflight.land_queue.retain(|q| q != task);
    cx.state.inflight.not_landing(task);
    charge_interrupted(cx, task, attempt);
    cx.emit(
        Some(task),
        EventBody::TaskRetry {
            attempt,
            cause: RetryCause::Interrupted,
            reason: format!("interrupted: {reason}"),
            log: None,
            kept_worktree: None,
        },
    );
}

fn backend_done(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: BackendOutcome) {
    if proposals::racing(cx.state, task) {
        return proposals::backend_done(cx, task, attempt, o);
    }
    if !matches!(cx.state.task(task).map(|t| &t.state), Some(TaskState::Running { attempt: a }) if *a == attempt)
    {
        return; // stale: the task was cancelled or the attempt superseded
    }
    record_backend(cx, task, attempt, &o);
    if o.failure.is_none()
        && let Some(q) = o.question
    {
        question::ask(cx, task, attempt, q);
        return;
    }
    match (o.failure, o.hold_until) {
        (Some(reason), Some(until)) => held(cx, task, attempt, reason, until),
        (Some(reason), None) if o.permanent => {
            attempt_failed_for_good(cx, task, attempt, reason, o.log);
        }
        (Some(reason), None) => attempt_failed(cx, task, attempt, reason, o.log),
        (None, _) => next_gate(cx, task, attempt),
    }
}

/// What an attempt's backend reported: its checks, its end, a cache hit, and its charge.
fn record_backend(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: &BackendOutcome) {
    for c in &o.checks {
        cx.emit(
            Some(task),
            EventBody::TaskCheck {
                attempt,
                check: c.clone(),
            },
        );
    }
    cx.emit(
        Some(task),
        EventBody::TaskBackendFinished {
            attempt,
            ok: o.failure.is_none(),
            exit: o.exit,
            reason: o.failure.clone(),
            duration_ms: o.duration_ms,
            files_changed: o.files_changed,
            usage: o.usage,
            cost_usd: o.cost_usd,
            cost_source: o.cost_source.clone(),
            log: o.log.clone(),
            model: o.model.clone(),
            message: o.message.clone(),
            transcript: o.transcript.clone(),
            prompt: o.prompt.clone(),
            // A limit holds the backend until its reset; it does not count toward its circuit.
            transient: o.transient && o.hold_until.is_none(),
            lines_changed: o.lines_changed,
        },
    );
    if let Some((key, source)) = o.cached.clone() {
        cx.emit(
            Some(task),
            EventBody::CacheHit {
                attempt,
                key,
                source,
            },
        );
    }
    // Whatever spent or held anything is charged: a reservation, reported usage, a cache hit.
    let priced = o.usage.is_some()
        || o.cost_usd.is_some()
        || o.cached.is_some()
        || cx.state.ledger.open.contains_key(&(task.clone(), attempt));
    if priced {
        let spent = Amount {
            usd: o.cost_usd.unwrap_or(0.0),
            tokens: o.usage.map_or(0, |u| u.total()),
        };
        let source = match (&o.cached, &o.cost_source, o.cost_usd) {
            (Some(_), _, _) => "cache".to_owned(),
            (None, Some(s), Some(_)) => s.clone(),
            _ => "unknown".to_owned(),
        };
        charge(cx, task, attempt, spent, source);
    }
}

/// A hold is at least this long, so that a reset already past (a skewed clock) cannot make the
/// backend be tried again in a tight loop.
pub const MIN_HOLD_MS: i64 = 1000;

/// The attempt's backend reported a usage or rate limit: the backend is held until its reset and
/// the same attempt runs again, on a fallback meanwhile or on the backend after the reset.
fn held(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String, until: Timestamp) {
    let Some(t) = cx.state.task(task) else { return };
    let backend = t
        .backend
        .clone()
        .unwrap_or_else(|| t.spec.backend.name().clone());
    let until = until.max(Timestamp(cx.now.0 + MIN_HOLD_MS));
    let current = cx.state.health.get(&backend).and_then(|h| h.held_until);
    if current.is_none_or(|c| c < until) {
        cx.emit(
            Some(task),
            EventBody::BackendHeld {
                backend: backend.clone(),
                until,
                reason: reason.clone(),
            },
        );
    }
    cx.emit(
        Some(task),
        EventBody::TaskRetry {
            attempt,
            cause: RetryCause::Quota,
            reason: format!("quota: {reason}"),
            log: None,
            kept_worktree: None,
        },
    );
}

/// Held backends whose reset has come are released.
fn release_holds(cx: &mut Ctx<'_>) {
    for backend in cx.state.holds_ended(cx.now) {
        cx.emit(None, EventBody::BackendReleased { backend });
    }
}

/// Starts the attempt's next gate, or queues the task for landing when all have passed.
fn next_gate(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    let Some(t) = cx.state.task(task) else { return };
    let TaskState::Verifying { passed, .. } = t.state else {
        return;
    };
    match t.spec.gates.get(passed).cloned() {
        Some(gate) => cx.effect(Effect::RunGate {
            attempt: cx.attempt(task, attempt),
            gate,
            stage: GateStage::Attempt,
            candidate: None,
        }),
        None => review::review_or_policy(cx, task, attempt),
    }
}

/// Why a task waits for a person before anything runs: a Markdown "Pending" task, or autonomy
/// levels under which the backend or the commands may not run unasked.
fn plan_approval_reasons(t: &crate::spec::TaskSpec) -> Vec<String> {
    use crate::autonomy::{Action, Level};
    let mut reasons = Vec::new();
    if t.needs_plan_approval {
        reasons.push("the plan lists this task as pending approval".to_owned());
    }
    let l = &t.autonomy;
    if l.of(Action::Plan) == Level::A0 {
        reasons.push(format!("autonomy: plan is {}", Level::A0.name()));
    }
    if l.of(Action::Generate) == Level::A0 {
        reasons.push(format!(
            "autonomy: generate is {}: the backend runs only after approval",
            Level::A0.name()
        ));
    }
    if l.of(Action::Execute) <= Level::A1 {
        reasons.push(format!(
            "autonomy: execute is {}: commands and gates run only after approval",
            l.of(Action::Execute).name()
        ));
    }
    reasons
}

/// The policy decided: land, ask a person, or deny.
fn policy_done(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: PolicyOutcome) {
    if proposals::racing(cx.state, task) {
        return proposals::policy_done(cx, task, attempt, o);
    }
    let Some(t) = cx.state.task(task) else { return };
    let all_passed = matches!(t.state, TaskState::Verifying { attempt: a, passed } if a == attempt && passed == t.spec.gates.len());
    if !all_passed {
        return;
    }
    if let Some(err) = o.error {
        return attempt_failed(
            cx,
            task,
            attempt,
            format!("policy evaluation failed: {err}"),
            None,
        );
    }
    // The stricter of policy and autonomy wins: at generate A1 every change waits for a person.
    let mut o = o;
    let generate = t.spec.autonomy.of(crate::autonomy::Action::Generate);
    if generate == crate::autonomy::Level::A1 && o.verdict < Verdict::NeedsApproval {
        o.verdict = Verdict::NeedsApproval;
        o.require_approval.push(format!(
            "autonomy: generate is {}: each change waits for approval",
            generate.name()
        ));
    }
    review::apply_to_verdict(cx.state, task, attempt, &mut o);
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
    match o.verdict {
        Verdict::Allow => cx.state.inflight.land_queue.push_back(task.clone()),
        Verdict::NeedsApproval => {
            let approval = cx.attempt(task, attempt).to_string();
            cx.emit(
                Some(task),
                EventBody::TaskApprovalRequested {
                    attempt,
                    approval,
                    action: ApprovalAction::Merge,
                    reasons: o.require_approval,
                },
            );
        }
        Verdict::Deny => deny(cx, task, attempt, o.deny, o.secrets == 0),
    }
}

/// Denies a task (policy, or a person's rejection): the change is kept for inspection, never
/// committed, and its dependents are cancelled.
fn deny(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reasons: Vec<String>, keep: bool) {
    let kept = (attempt > 0 && keep).then(|| cx.attempt(task, attempt).worktree());
    cx.state.inflight.land_queue.retain(|q| q != task);
    if attempt > 0 {
        cx.effect(Effect::Cleanup {
            attempt: cx.attempt(task, attempt),
            keep,
        });
    }
    cx.emit(
        Some(task),
        EventBody::TaskDenied {
            attempt,
            reasons,
            kept_worktree: kept,
        },
    );
    cancel_dependents(cx, task, &format!("dependency `{task}` was denied"));
}

/// A person decided an approval (by its id, or by the task's id when it has one pending).
fn decide_approval(
    cx: &mut Ctx<'_>,
    approval: &str,
    reason: String,
    approve: bool,
) -> Result<(), Rejected> {
    let found = cx.state.tasks_in_order().find_map(|t| match &t.state {
        TaskState::AwaitingApproval {
            attempt,
            approval: id,
            action,
        } if id == approval || t.spec.id.as_str() == approval => {
            Some((t.spec.id.clone(), *attempt, id.clone(), *action))
        }
        _ => None,
    });
    let Some((task, attempt, id, action)) = found else {
        return Err(Rejected::UnknownApproval {
            run: cx.state.id.to_string(),
            approval: approval.to_owned(),
        });
    };
    if cx.state.status.is_terminal() {
        return Err(rejected(cx.state, "decided"));
    }
    if approve {
        cx.emit(
            Some(&task),
            EventBody::TaskApproved {
                approval: id,
                reason,
            },
        );
        if action == ApprovalAction::Merge {
            cx.state.inflight.land_queue.push_back(task);
        }
    } else {
        let why = format!("rejected by a person: {reason}");
        cx.emit(
            Some(&task),
            EventBody::TaskRejected {
                approval: id,
                reason,
            },
        );
        deny(cx, &task, attempt, vec![why], true);
    }
    Ok(())
}

/// A gate's `task.gate` event, for a single attempt or a candidate.
fn gate_event(attempt: u32, stage: GateStage, o: &GateOutcome) -> EventBody {
    EventBody::TaskGate {
        attempt,
        name: o.name.clone(),
        stage,
        passed: o.passed,
        exit: o.exit,
        timed_out: o.timed_out,
        duration_ms: o.duration_ms,
        runs: o.runs,
        log: o.log.clone(),
        figures: o.figures.clone(),
    }
}

fn gate_done(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    stage: GateStage,
    o: GateOutcome,
    candidate: Option<CommitSha>,
) {
    if proposals::racing(cx.state, task) {
        return proposals::gate_done(cx, task, attempt, stage, o);
    }
    let Some(t) = cx.state.task(task) else { return };
    // Attempt gates run while verifying; merged gates also for an approved change.
    let (a, passed) = match (&t.state, stage) {
        (TaskState::Verifying { attempt, passed }, _) => (*attempt, *passed),
        (TaskState::Approved { attempt }, GateStage::Merged) => (*attempt, t.spec.gates.len()),
        _ => return,
    };
    if a != attempt {
        return;
    }
    let gates = t.spec.gates.clone();
    // The gate must be the one expected next: anything else is a stale result.
    let expected = match stage {
        GateStage::Attempt => gates.get(passed),
        GateStage::Merged => {
            let landing = cx.state.inflight.landing.iter().find(|(l, _)| l == task);
            landing.and_then(|(_, n)| gates.get(*n))
        }
    };
    if expected != Some(&o.name) {
        return;
    }
    cx.emit(Some(task), gate_event(attempt, stage, &o));
    let where_ = if stage == GateStage::Merged {
        " on the merged result"
    } else {
        ""
    };
    if !o.passed {
        let how = if o.timed_out {
            "timed out".to_owned()
        } else {
            o.exit
                .map_or("was killed".to_owned(), |c| format!("exited with {c}"))
        };
        if stage == GateStage::Merged {
            cx.state.inflight.not_landing(task);
        }
        let reason = format!("gate `{}` failed{where_}: it {how}", o.name);
        return attempt_failed(cx, task, attempt, reason, o.log);
    }
    match stage {
        GateStage::Attempt => next_gate(cx, task, attempt),
        GateStage::Merged => {
            let n = match cx
                .state
                .inflight
                .landing
                .iter_mut()
                .find(|(l, _)| l == task)
            {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => return,
            };
            let attempt_id = cx.attempt(task, attempt);
            let Some(candidate) = candidate else { return };
            match gates.get(n) {
                Some(gate) => cx.effect(Effect::RunGate {
                    attempt: attempt_id,
                    gate: gate.clone(),
                    stage: GateStage::Merged,
                    candidate: Some(candidate),
                }),
                None => cx.effect(Effect::Advance {
                    attempt: attempt_id,
                    candidate,
                }),
            }
        }
    }
}

fn land_done(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, o: LandOutcome) {
    let landing_this = cx.state.inflight.is_landing(task);
    let verifying = cx.state.task(task).and_then(|t| t.state.landable()) == Some(attempt);
    if !landing_this || !verifying {
        return;
    }
    match o {
        LandOutcome::Landed { commit } => {
            cx.state.inflight.not_landing(task);
            cx.emit(
                Some(task),
                EventBody::TaskLanded {
                    attempt,
                    commit: commit.clone(),
                },
            );
            cx.effect(Effect::Prove {
                attempt: cx.attempt(task, attempt),
                commit,
            });
            cx.effect(Effect::Cleanup {
                attempt: cx.attempt(task, attempt),
                keep: false,
            });
        }
        LandOutcome::Merged { candidate } => {
            let attempt_id = cx.attempt(task, attempt);
            let first = cx
                .state
                .task(task)
                .and_then(|t| t.spec.gates.first().cloned());
            match first {
                Some(gate) => cx.effect(Effect::RunGate {
                    attempt: attempt_id,
                    gate,
                    stage: GateStage::Merged,
                    candidate: Some(candidate),
                }),
                None => cx.effect(Effect::Advance {
                    attempt: attempt_id,
                    candidate,
                }),
            }
        }
        LandOutcome::Failed { reason, log } => {
            cx.state.inflight.not_landing(task);
            attempt_failed(cx, task, attempt, reason, log);
        }
        LandOutcome::Interrupted { reason } => interrupted(cx, task, attempt, reason),
        LandOutcome::Blocked { reason } => {
            // Not the attempt's fault: it runs again under the same number once a person has
            // cleared the way and resumed the run.
            interrupted(cx, task, attempt, reason.clone());
            cx.effect(Effect::Cleanup {
                attempt: cx.attempt(task, attempt),
                keep: false,
            });
            if cx.state.status == RunStatus::Running {
                cx.emit(None, EventBody::RunPaused { reason });
            }
        }
    }
}

/// An attempt failed: try again with its feedback, or fail the task and cancel its dependents.
fn attempt_failed(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reason: String,
    log: Option<ArtifactId>,
) {
    failed_with(cx, task, attempt, reason, log, true);
}

/// An attempt failed in a way no other attempt can avoid (a configuration error): the task fails.
fn attempt_failed_for_good(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reason: String,
    log: Option<ArtifactId>,
) {
    failed_with(cx, task, attempt, reason, log, false);
}

fn failed_with(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reason: String,
    log: Option<ArtifactId>,
    retry: bool,
) {
    let worktree = cx.attempt(task, attempt).worktree();
    cx.effect(Effect::Cleanup {
        attempt: cx.attempt(task, attempt),
        keep: true,
    });
    next_or_failed(cx, task, attempt, reason, log, retry, Some(worktree));
}

/// Every candidate of a task failed (each recorded, kept or cleaned up as it ended): the task's
/// attempt `attempt` failed.
fn failed_without_worktree(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, reason: String) {
    next_or_failed(cx, task, attempt, reason, None, true, None);
}

/// After a failed attempt: the next one with its feedback, or the task fails and its dependents
/// are cancelled.
fn next_or_failed(
    cx: &mut Ctx<'_>,
    task: &TaskId,
    attempt: u32,
    reason: String,
    log: Option<ArtifactId>,
    retry: bool,
    worktree: Option<String>,
) {
    let Some(t) = cx.state.task(task) else { return };
    let used = attempt.saturating_sub(t.floor);
    let max = t.spec.max_attempts;
    cx.state.inflight.land_queue.retain(|q| q != task);
    if retry && used < max {
        cx.emit(
            Some(task),
            EventBody::TaskRetry {
                attempt: attempt + 1,
                cause: RetryCause::Failed,
                reason,
                log,
                kept_worktree: worktree,
            },
        );
        return;
    }
    let plural = if used == 1 { "" } else { "s" };
    cx.emit(
        Some(task),
        EventBody::TaskFailed {
            attempts: attempt,
            reason: format!("{reason} (after {used} attempt{plural})"),
            kept_worktree: worktree,
        },
    );
    cancel_dependents(cx, task, &format!("dependency `{task}` failed"));
    let limit = cx.state.spec.settings.stop_after_consecutive_failures;
    if limit > 0 && cx.state.consecutive_failures >= limit && cx.state.status == RunStatus::Running
    {
        let n = cx.state.consecutive_failures;
        cx.emit(
            None,
            EventBody::RunPaused {
                reason: format!(
                    "{n} tasks failed in a row (attempts.stop_after_consecutive_failures: {limit})"
                ),
            },
        );
    }
}

/// Cancels every task that depends, directly or not, on `failed`.
fn cancel_dependents(cx: &mut Ctx<'_>, failed: &TaskId, reason: &str) {
    let mut frontier = vec![failed.clone()];
    while let Some(dep) = frontier.pop() {
        let dependents: Vec<TaskId> = cx
            .state
            .tasks_in_order()
            .filter(|t| {
                t.spec.deps.contains(&dep)
                    && matches!(
                        t.state,
                        TaskState::Pending
                            | TaskState::Ready
                            | TaskState::AwaitingApproval {
                                action: ApprovalAction::Plan,
                                ..
                            }
                    )
            })
            .map(|t| t.spec.id.clone())
            .collect();
        for d in dependents {
            let why = if &dep == failed {
                reason.to_owned()
            } else {
                format!("dependency `{dep}` was cancelled")
            };
            cx.emit(
                Some(&d),
                EventBody::TaskCancelled {
                    reason: why,
                    dependency: Some(dep.clone()),
                },
            );
            frontier.push(d);
        }
    }
}

fn kill(cx: &mut Ctx<'_>, reason: String) -> Result<(), Rejected> {
    if cx.state.status.is_terminal() {
        return Err(rejected(cx.state, "killed"));
    }
    let open: Vec<(TaskId, Vec<u32>)> = cx
        .state
        .tasks_in_order()
        .filter(|t| !t.state.is_terminal())
        .map(|t| (t.spec.id.clone(), t.state.attempts_in_flight()))
        .collect();
    cx.effect(Effect::KillAll);
    for (task, attempts) in &open {
        for a in attempts {
            charge_interrupted(cx, task, *a);
        }
    }
    cx.emit(
        None,
        EventBody::RunKilled {
            reason: reason.clone(),
        },
    );
    for (task, attempt) in open {
        cx.emit(
            Some(&task),
            EventBody::TaskCancelled {
                reason: format!("run killed: {reason}"),
                dependency: None,
            },
        );
        for a in attempt {
            cx.effect(Effect::Cleanup {
                attempt: cx.attempt(&task, a),
                keep: false,
            });
        }
    }
    cx.state.inflight = Default::default();
    Ok(())
}

fn retry(cx: &mut Ctx<'_>, task: &TaskId) -> Result<(), Rejected> {
    let Some(t) = cx.state.task(task) else {
        return Err(Rejected::UnknownTask {
            run: cx.state.id.to_string(),
            task: task.clone(),
        });
    };
    if !matches!(
        t.state,
        TaskState::Failed { .. }
            | TaskState::Cancelled { .. }
            | TaskState::Denied { .. }
            | TaskState::Reverted { .. }
    ) {
        return Err(Rejected::NotRetryable {
            task: task.clone(),
            status: t.state.status().as_str(),
        });
    }
    if let RunStatus::Killed { .. } = cx.state.status {
        return Err(rejected(cx.state, "retried"));
    }
    // The task, and every task cancelled because of it.
    let mut requeue = vec![task.clone()];
    let mut i = 0;
    while let Some(dep) = requeue.get(i).cloned() {
        i += 1;
        for d in cx.state.tasks_in_order() {
            if let TaskState::Cancelled {
                dependency: Some(by),
                ..
            } = &d.state
                && *by == dep
                && !requeue.contains(&d.spec.id)
            {
                requeue.push(d.spec.id.clone());
            }
        }
    }
    for id in requeue {
        let next = cx.state.task(&id).map_or(1, |t| t.attempt + 1);
        cx.emit(
            Some(&id),
            EventBody::TaskRetry {
                attempt: next,
                cause: RetryCause::Requested,
                reason: "retry requested".into(),
                log: None,
                kept_worktree: None,
            },
        );
    }
    if cx.state.status == RunStatus::Finished {
        cx.emit(
            None,
            EventBody::RunPaused {
                reason: "retry requested: continue with `abo resume`".into(),
            },
        );
    }
    Ok(())
}

/// After every command: make pending tasks ready, land, schedule, and finish when nothing is left.
fn progress(cx: &mut Ctx<'_>) {
    if cx.state.status.is_terminal() || cx.state.status == RunStatus::Planned {
        return;
    }
    release_holds(cx);
    promote_ready(cx);
    land_next(cx);
    if cx.state.status == RunStatus::Running {
        if let Some(why) = cx.state.outside_schedule.clone() {
            if !wait_for_window(cx, &why) {
                finish_if_done(cx);
            }
        } else {
            proposals::hedge(cx);
            let waiting = schedule(cx);
            if !pause_for_quota(cx, &waiting.held) && !pause_for_budget(cx, &waiting.budget) {
                finish_if_done(cx);
            }
        }
    }
}

/// Outside its schedule's windows nothing starts; once nothing is in flight the run pauses with
/// reason `schedule` (`abo daemon` resumes it in the next window). Whether work waits.
fn wait_for_window(cx: &mut Ctx<'_>, why: &str) -> bool {
    let s = &cx.state;
    let ready = !s.index.ready.is_empty();
    if !ready {
        return s.in_flight() > 0;
    }
    let idle =
        s.in_flight() == 0 && s.inflight.landing.is_empty() && s.inflight.land_queue.is_empty();
    if idle {
        cx.emit(
            None,
            EventBody::RunPaused {
                reason: format!("schedule: {why}"),
            },
        );
    }
    true
}

/// Charges an attempt's cost, releases its reservation, and alerts on caps it brought to `alert_at`.
fn charge(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, spent: Amount, source: String) {
    let Some(t) = cx.state.task(task) else { return };
    let backend = t.backend_of(attempt);
    let task_cap = t.spec.budget.unwrap_or(cx.state.budgets.task);
    let reserved = cx
        .state
        .ledger
        .open
        .get(&(task.clone(), attempt))
        .map(|(_, a)| Reservation {
            usd: Some(a.usd),
            tokens: Some(a.tokens),
        })
        .unwrap_or_default();
    cx.emit(
        Some(task),
        EventBody::BudgetCharged {
            attempt,
            backend: backend.clone(),
            usd: spent.usd,
            tokens: spent.tokens,
            reserved,
            source,
        },
    );
    let s = &cx.state;
    let at = s.budgets.alert_at;
    let alerts: Vec<EventBody> = s
        .ledger
        .caps_for(
            &s.budgets,
            Some((task, task_cap)),
            Some(&backend),
            &s.windows,
        )
        .into_iter()
        // A task's cap is its reservation, reached by design: only shared caps alert.
        .filter(|c| !matches!(c.cap.scope, crate::budget::Scope::Task(_)))
        .filter(|c| c.limit > 0.0 && c.spent >= at * c.limit)
        .filter_map(|c| {
            let key = Ledger::alert_key(&c.cap, &s.windows);
            let sent = s.ledger.alerted.contains(&key)
                || s.windows.day.alerted.contains(&key)
                || s.windows.week.alerted.contains(&key);
            (!sent).then(|| EventBody::BudgetAlert {
                cap: c.cap.to_string(),
                key,
                spent: c.spent,
                limit: c.limit,
                alert_at: at,
            })
        })
        .collect();
    for a in alerts {
        cx.emit(None, a);
    }
}

/// An attempt stopped before its backend reported: what it spent is unknown, so its whole
/// reservation is charged (a cap is never passed because abo lost count).
fn charge_interrupted(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32) {
    review::charge_interrupted(cx, task, attempt);
    let running = match cx.state.task(task) {
        Some(t) => match &t.state {
            TaskState::Running { attempt: a } => *a == attempt,
            TaskState::Candidates { candidates, .. } => candidates
                .get(&attempt)
                .is_some_and(|c| c.state == crate::proposal::CandidateState::Running),
            _ => false,
        },
        None => false,
    };
    if !running {
        return;
    }
    if let Some((_, held)) = cx.state.ledger.open.get(&(task.clone(), attempt)).cloned() {
        charge(cx, task, attempt, held, crate::budget::INTERRUPTED.into());
    }
}

/// Whether nothing is in flight, landing or waiting to land.
fn idle(s: &RunState) -> bool {
    s.in_flight() == 0 && s.inflight.landing.is_empty() && s.inflight.land_queue.is_empty()
}

/// Nothing is in flight and ready tasks wait for held backends (no fallback may run them): the
/// run pauses with reason `quota` (`abo daemon` resumes it at the reset, as may `abo resume`).
fn pause_for_quota(cx: &mut Ctx<'_>, held: &[(crate::ids::BackendName, Timestamp)]) -> bool {
    if held.is_empty() || !idle(cx.state) {
        return false;
    }
    let mut why: Vec<String> = held
        .iter()
        .map(|(b, until)| format!("{b} is held until {}", until.to_rfc3339()))
        .collect();
    why.sort();
    why.dedup();
    cx.emit(
        None,
        EventBody::RunPaused {
            reason: format!("quota: {}", why.join("; ")),
        },
    );
    true
}

/// Nothing is in flight and caps keep every ready task from starting: the run pauses with
/// reason `budget` (resumable with raised caps, or in a new day or week).
fn pause_for_budget(cx: &mut Ctx<'_>, blocked: &[Blocked]) -> bool {
    if blocked.is_empty() || !idle(cx.state) {
        return false;
    }
    let mut why: Vec<String> = blocked.iter().map(Blocked::describe).collect();
    why.dedup();
    cx.emit(
        None,
        EventBody::RunPaused {
            reason: format!("budget: {}", why.join("; ")),
        },
    );
    true
}

/// Records that a cap kept work from starting (once until the run resumes).
fn exhausted(cx: &mut Ctx<'_>, task: &TaskId, b: &Blocked) {
    let cap = b.cap.to_string();
    if cx.state.ledger.exhausted.contains(&cap) {
        return;
    }
    cx.emit(
        Some(task),
        EventBody::BudgetExhausted {
            cap,
            limit: b.limit,
            spent: b.spent,
            reserved: b.reserved,
            needed: b.needed,
        },
    );
}

fn promote_ready(cx: &mut Ctx<'_>) {
    // The pending tasks whose dependencies have landed, kept by `apply` (`state::Index`): a scan
    // of every task on every decision made a run's cost grow with its size.
    let ready: Vec<TaskId> = cx
        .state
        .index
        .unblocked
        .iter()
        .filter_map(|p| cx.state.at(*p).map(|t| t.spec.id.clone()))
        .collect();
    for id in ready {
        cx.emit(Some(&id), EventBody::TaskReady {});
    }
}

/// The most tasks landed together in one effect.
pub const LAND_TOGETHER_MAX: usize = 64;

/// Lands what waits in the queue: a task whose gates run on its merged result alone (the next
/// one must merge onto where it lands), the others together, in the order they passed, in one
/// [`Effect::LandTogether`] (their commits made side by side, the run branch moved once).
fn land_next(cx: &mut Ctx<'_>) {
    if !cx.state.inflight.landing.is_empty() {
        return;
    }
    let after_merge = cx.state.spec.settings.landing.gates_after_merge;
    let mut together = Vec::new();
    while let Some(task) = cx.state.inflight.land_queue.front().cloned() {
        let landable = cx.state.task(&task).and_then(|t| {
            let alone = after_merge && !t.spec.gates.is_empty();
            t.state.landable().map(|a| (a, alone))
        });
        let Some((attempt, alone)) = landable else {
            cx.state.inflight.land_queue.pop_front();
            continue;
        };
        if alone {
            if together.is_empty() {
                cx.state.inflight.land_queue.pop_front();
                together.push((task, attempt));
            }
            break;
        }
        cx.state.inflight.land_queue.pop_front();
        together.push((task, attempt));
        if together.len() == LAND_TOGETHER_MAX {
            break;
        }
    }
    cx.state.inflight.landing = together.iter().map(|(t, _)| (t.clone(), 0)).collect();
    match together.as_slice() {
        [] => {}
        [(task, attempt)] => cx.effect(Effect::Land {
            attempt: cx.attempt(task, *attempt),
        }),
        _ => cx.effect(Effect::LandTogether {
            attempts: together.iter().map(|(t, a)| cx.attempt(t, *a)).collect(),
        }),
    }
}

/// What kept ready tasks from starting.
#[derive(Default)]
struct Waiting {
    /// Caps.
    budget: Vec<Blocked>,
    /// Backends held by a usage limit, with their reset, that no fallback could stand in for.
    held: Vec<(crate::ids::BackendName, Timestamp)>,
}

/// Starts ready tasks, highest priority first, within `max_parallel`, never two with overlapping
/// paths, each only when its reservation fits every cap and its backend is not held. Returns what
/// kept the others waiting.
fn schedule(cx: &mut Ctx<'_>) -> Waiting {
    let max = cx.state.spec.settings.max_parallel;
    let mut waiting = Waiting::default();
    // The ready tasks in the order they start, kept by `apply` (`state::Index`).
    let id_at = |s: &RunState, p: usize| s.at(p).map(|t| t.spec.id.clone());
    if let Some(b) = wall_passed(cx.state, cx.now) {
        if let Some(first) = cx
            .state
            .index
            .ready
            .first()
            .and_then(|(_, p)| id_at(cx.state, *p))
        {
            exhausted(cx, &first, &b);
            waiting.budget.push(b);
        }
        return waiting;
    }
    // What is in flight and which paths are held, read once: only this loop starts tasks.
    let mut in_flight = cx.state.in_flight();
    if in_flight >= max {
        return waiting;
    }
    let mut held: Vec<Vec<String>> = cx
        .state
        .index
        .holding
        .iter()
        .filter_map(|p| cx.state.at(*p).map(|o| o.spec.paths.clone()))
        .collect();
    // Walked one at a time (each a lookup past the last), since starting a task changes the set:
    // a decision looks at the ready tasks it starts or passes over, not at every ready task.
    let mut last: Option<(i64, usize)> = None;
    loop {
        if in_flight >= max {
            break;
        }
        let next = match last {
            None => cx.state.index.ready.first().copied(),
            Some(l) => cx
                .state
                .index
                .ready
                .range((std::ops::Bound::Excluded(l), std::ops::Bound::Unbounded))
                .next()
                .copied(),
        };
        let Some(key) = next else { break };
        last = Some(key);
        let Some(id) = id_at(cx.state, key.1) else {
            continue;
        };
        let Some(t) = cx.state.task(&id) else {
            continue;
        };
        let paths = t.spec.paths.clone();
        if held.iter().any(|h| scopes_overlap(&paths, h)) {
            continue;
        }
        let attempt = t.next_attempt;
        let feedback = t.feedback.clone();
        let task_cap = t.spec.budget.unwrap_or(cx.state.budgets.task);
        let choice = match choose_backend(cx.state, &id, attempt, cx.now) {
            Ok(c) => c,
            Err(Wait::Busy) => continue,
            Err(Wait::Held { backend, until }) => {
                waiting.held.push((backend, until));
                continue;
            }
        };
        let backend = choice.backend;
        if let Some(n) = proposals::requested(cx.state, &id, attempt) {
            if let Some((rule, scores)) = choice.why {
                cx.emit(
                    Some(&id),
                    EventBody::RouterDecision {
                        attempt,
                        backend: backend.name().clone(),
                        rule,
                        scores,
                    },
                );
            }
            match proposals::start(cx, &id, backend, n, attempt, feedback) {
                Ok(()) => {
                    in_flight += 1;
                    held.push(paths);
                }
                Err(b) => {
                    exhausted(cx, &id, &b);
                    waiting.budget.push(b);
                }
            }
            continue;
        }
        let reserved = if backend.priced() && cx.state.budgets.any_spend_cap() {
            let s = &cx.state;
            match s
                .ledger
                .reservation(&s.budgets, &id, task_cap, backend.name(), &s.windows)
            {
                Ok(r) => r,
                Err(b) if b.final_ => {
                    let reason = format!("budget: {}", b.describe());
                    exhausted(cx, &id, &b);
                    let attempts = cx.state.task(&id).map_or(0, |t| t.attempt);
                    cx.emit(
                        Some(&id),
                        EventBody::TaskFailed {
                            attempts,
                            reason,
                            kept_worktree: None,
                        },
                    );
                    cancel_dependents(cx, &id, &format!("dependency `{id}` failed"));
                    continue;
                }
                Err(b) => {
                    exhausted(cx, &id, &b);
                    waiting.budget.push(b);
                    continue;
                }
            }
        } else {
            Reservation::default()
        };
        let attempt_id = cx.attempt(&id, attempt);
        if let Some((rule, scores)) = choice.why {
            cx.emit(
                Some(&id),
                EventBody::RouterDecision {
                    attempt,
                    backend: backend.name().clone(),
                    rule,
                    scores,
                },
            );
        }
        cx.emit(
            Some(&id),
            EventBody::TaskStarted {
                attempt,
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
        in_flight += 1;
        held.push(paths);
    }
    waiting
}

/// The run's wall time is spent: nothing new starts.
#[allow(clippy::cast_precision_loss)]
fn wall_passed(state: &RunState, now: Timestamp) -> Option<Blocked> {
    let limit = state.budgets.wall_ms?;
    let ran = state.ledger.ran(now);
    if ran < limit {
        return None;
    }
    Some(Blocked {
        cap: crate::budget::CapId {
            scope: crate::budget::Scope::Run,
            unit: crate::budget::Unit::Wall,
        },
        limit: limit as f64,
        spent: ran as f64,
        reserved: 0.0,
        needed: 0.0,
        final_: false,
    })
}

/// The backend an attempt runs on, and why when it is not simply the task's own.
struct Choice {
    backend: BackendSpec,
    /// The rule (or `learned`, `fallback: ...`) and the learned router's scores.
    why: Option<(String, Vec<crate::event::RouteScore>)>,
}

/// Why an attempt cannot start now.
enum Wait {
    /// The chosen backend is at its `parallelism.per_backend` cap.
    Busy,
    /// The chosen backend is held by a usage limit until `until`, and no fallback may stand in.
    Held {
        backend: crate::ids::BackendName,
        until: Timestamp,
    },
}

/// Routes an attempt: a task that names its backend keeps it; else the first
/// rule that holds for a healthy backend; else the learned choice for the task's type; else the
/// default. An open circuit or a held backend is replaced by the first `router.fallback` that is
/// neither; a held one without such a fallback makes the task wait, as does a backend at its
/// `parallelism.per_backend` cap.
fn choose_backend(
    state: &RunState,
    task: &TaskId,
    attempt: u32,
    now: Timestamp,
) -> Result<Choice, Wait> {
    use crate::route;
    let Some(t) = state.task(task) else {
        return Err(Wait::Busy);
    };
    let settings = &state.spec.settings;
    let busy = |name: &crate::ids::BackendName| {
        let n = state
            .index
            .in_flight
            .iter()
            .filter_map(|p| state.at(*p))
            .filter(|t| t.backend.as_ref() == Some(name))
            .count();
        settings
            .per_backend
            .get(name.as_str())
            .is_some_and(|c| n >= *c)
    };
    let capped = |name: &crate::ids::BackendName| {
        state
            .budgets
            .per_backend
            .get(name.as_str())
            .is_some_and(|_| {
                state
                    .ledger
                    .caps_for(&state.budgets, None, Some(name), &state.windows)
                    .iter()
                    .any(|c| {
                        matches!(c.cap.scope, crate::budget::Scope::Backend(_))
                            && c.remaining() <= 0.0
                    })
            })
    };
    let healthy = |b: &BackendSpec| {
        !state.circuit_open(b.name(), now)
            && state.held_until(b.name(), now).is_none()
            && !busy(b.name())
            && !capped(b.name())
    };
    let mut choice = Choice {
        backend: t.spec.backend.clone(),
        why: None,
    };
    if t.spec.routed {
        let router = &settings.router;
        let kind = t.spec.kind.as_str();
        let learnable: Vec<&BackendSpec> = router
            .learn
            .get(kind)
            .map(|v| v.iter().filter(|b| healthy(b)).collect())
            .unwrap_or_default();
        if !router.rules.is_empty() {
            let facts = budget_facts(state, t, attempt);
            if let Some((i, b)) =
                route::first_rule(&router.rules, &state.rules, &facts.env(), healthy)
            {
                let rule = format!("rules[{i}]: {}", router.rules[i].when);
                choice = Choice {
                    backend: b.clone(),
                    why: Some((rule, Vec::new())),
                };
                return Ok(choice);
            }
        }
        if !learnable.is_empty() {
            let mut rng = route::rng_for(state.id.as_str(), task, attempt);
            if let Some((i, scores)) =
                route::learned(kind, &learnable, &state.router_stats, &mut rng)
            {
                return Ok(Choice {
                    backend: learnable[i].clone(),
                    why: Some((format!("learned: task type `{kind}`"), scores)),
                });
            }
        }
    }
    let router = &settings.router;
    if t.spec.routed && (!router.rules.is_empty() || !router.learn.is_empty()) {
        // Every choice the router makes is recorded, falling back to the default too.
        choice.why = Some(("default: no rule matched".into(), Vec::new()));
    }
    let own = choice.backend.name().clone();
    let held = state.held_until(&own, now);
    if held.is_some() || state.circuit_open(&own, now) {
        let usable = |b: &&BackendSpec| {
            *b.name() != own
                && !state.circuit_open(b.name(), now)
                && state.held_until(b.name(), now).is_none()
        };
        if let Some(fb) = settings.fallback.iter().find(usable) {
            let why = match held {
                Some(until) => format!("fallback: `{own}` is held until {}", until.to_rfc3339()),
                None => format!("fallback: the circuit of `{own}` is open"),
            };
            choice = Choice {
                backend: fb.clone(),
                why: Some((why, Vec::new())),
            };
        } else if let Some(until) = held {
            return Err(Wait::Held {
                backend: own,
                until,
            });
        }
    }
    if busy(choice.backend.name()) {
        return Err(Wait::Busy);
    }
    Ok(choice)
}

/// What a routing rule sees of the budget: the tightest of the run, day and week caps.
fn budget_facts<'a>(
    state: &'a RunState,
    t: &'a crate::state::TaskRecord,
    attempt: u32,
) -> crate::route::Facts<'a> {
    use crate::budget::{Scope, Unit};
    let caps = state
        .ledger
        .caps_for(&state.budgets, None, None, &state.windows);
    let remaining = |u: Unit| {
        caps.iter()
            .filter(|c| c.cap.unit == u)
            .map(crate::budget::CapUse::remaining)
            .fold(f64::INFINITY, f64::min)
    };
    let run_limit = |u: Unit| {
        caps.iter()
            .find(|c| c.cap.unit == u && c.cap.scope == Scope::Run)
            .map(|c| c.limit)
    };
    crate::route::Facts {
        task: &t.spec,
        attempt,
        usd_remaining: remaining(Unit::Usd),
        tokens_remaining: remaining(Unit::Tokens),
        usd_spent: state.ledger.spent.usd,
        tokens_spent: state.ledger.spent.tokens,
        usd_limit: run_limit(Unit::Usd),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        tokens_limit: run_limit(Unit::Tokens).map(|l| l as u64),
        risk: t.risk.as_deref(),
    }
}

/// Whether the run branch may land into the base branch: below A3 it waits for review;
/// at A3 only when every landed change is low risk; at A4 and above (policy allowed each change).
fn merge_decision(state: &RunState) -> Result<(), String> {
    use crate::autonomy::{Action, Level};
    let level = state.spec.settings.autonomy.of(Action::Merge);
    let landed: Vec<&crate::state::TaskRecord> = state
        .tasks_in_order()
        .filter(|t| matches!(t.state, TaskState::Landed { .. }))
        .collect();
    if landed.is_empty() {
        return Err("nothing landed".into());
    }
    if let crate::verify::Phase::Broken { reason } = &state.verification.phase {
        return Err(reason.clone());
    }
    if level < Level::A3 {
        return Err(format!(
            "merge is {}: the run branch waits for review",
            level.name()
        ));
    }
    if level == Level::A3 {
        let risky: Vec<String> = landed
            .iter()
            .filter(|t| t.risk.as_deref() != Some("low"))
            .map(|t| format!("{} ({})", t.spec.id, t.risk.as_deref().unwrap_or("unknown")))
            .collect();
        if !risky.is_empty() {
            return Err(format!(
                "merge is {} and these changes are not low risk: {}",
                level.name(),
                risky.join(", ")
            ));
        }
    }
    Ok(())
}

fn finish_if_done(cx: &mut Ctx<'_>) {
    let busy = !cx.state.index.ready.is_empty() || !cx.state.index.in_flight.is_empty();
    if busy {
        return;
    }
    // Nothing can move until a person decides: the run pauses (resumable), it does not finish.
    let waiting: Vec<String> = cx
        .state
        .tasks_in_order()
        .filter(|t| matches!(t.state, TaskState::AwaitingApproval { .. }))
        .map(|t| t.spec.id.to_string())
        .collect();
    if !waiting.is_empty() {
        let reason = format!("waiting for approval: {}", waiting.join(", "));
        cx.emit(None, EventBody::RunPaused { reason });
        return;
    }
    // Pending tasks whose dependencies can no longer land would wait forever.
    let stuck: Vec<TaskId> = cx
        .state
        .tasks_in_order()
        .filter(|t| t.state == TaskState::Pending)
        .map(|t| t.spec.id.clone())
        .collect();
    for id in stuck {
        cx.emit(
            Some(&id),
            EventBody::TaskCancelled {
                reason: "a dependency did not land".into(),
                dependency: None,
            },
        );
    }
    // The whole run branch is verified (bisected, healed) before the run finishes.
    if healing::pending(cx) {
        return;
    }
    let s = &cx.state;
    let body = EventBody::RunFinished {
        landed: s.count(crate::state::TaskStatus::Landed),
        failed: s.count(crate::state::TaskStatus::Failed)
            + s.count(crate::state::TaskStatus::Denied),
        cancelled: s.count(crate::state::TaskStatus::Cancelled),
        skipped: s.count(crate::state::TaskStatus::Skipped),
    };
    cx.emit(None, body);
    let merge = merge_decision(cx.state);
    let run = cx.state.id.clone();
    cx.effect(Effect::Finish { run, merge });
}
