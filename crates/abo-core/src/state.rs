//! A run's state as the fold of its events (`apply`), and the task lifecycle.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budget::{Amount, BudgetSpec, Ledger, Windows};
use crate::event::{Event, EventBody, GateStage, RetryCause, StoredEvent};
use crate::ids::{ArtifactId, AttemptId, BackendName, CommitSha, RunId, TaskId, Timestamp};
use crate::spec::{RunSpec, TaskSpec};

mod index;
pub use index::{Index, Position};

/// A run's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Planned,
    Running,
    Paused { reason: String },
    Finished,
    Killed { reason: String },
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Running => "running",
            Self::Paused { .. } => "paused",
            Self::Finished => "finished",
            Self::Killed { .. } => "killed",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Paused { reason } | Self::Killed { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Finished | Self::Killed { .. })
    }
}

/// What a run owes after its last task: the end-of-run effect (`Effect::Finish`: publishing the
/// run branch, the merge into the base branch or the pull request) and the notifications of the
/// events that end the run. `run.finished` records it owed before it starts; `run.merge` settles
/// it. A process killed in between leaves it owed: `abo resume` (or `abo daemon`) completes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Closing {
    /// The run has not finished.
    #[default]
    Open,
    /// `run.finished` is recorded, `run.merge` is not yet.
    Owed,
    /// `run.merge` is recorded and `landing.verify` runs on the base branch it merged into
    /// (`RunState::base_heal`): settled once the base branch passed, was healed, or stays broken.
    Healing,
    /// `run.merge` is recorded (or the run was killed: a killed run owes nothing).
    Settled,
}

impl Closing {
    /// Whether the run still owes something (`abo resume` and `abo daemon` complete it).
    pub fn owes(self) -> bool {
        matches!(self, Self::Owed | Self::Healing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Owed => "owed",
            Self::Healing => "healing",
            Self::Settled => "settled",
        }
    }
}

/// A task's status as shown to people, derived from [`TaskState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Ready,
    Running,
    Verifying,
    AwaitingApproval,
    Landed,
    Failed,
    Denied,
    Cancelled,
    Paused,
    Skipped,
    /// Landed, then reverted: `landing.verify` failed on the run branch and the bisect named it.
    Reverted,
}

impl TaskStatus {
    /// Every status, in the order of a task's life.
    pub const ALL: [TaskStatus; 12] = [
        Self::Pending,
        Self::Ready,
        Self::Running,
        Self::Verifying,
        Self::AwaitingApproval,
        Self::Paused,
        Self::Landed,
        Self::Failed,
        Self::Denied,
        Self::Cancelled,
        Self::Skipped,
        Self::Reverted,
    ];

    /// The status named `s` (as `as_str` spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Verifying => "verifying",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Landed => "landed",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
            Self::Skipped => "skipped",
            Self::Reverted => "reverted",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task is in its lifecycle; each state carries only what is valid in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting on dependencies.
    Pending,
    Ready,
    /// The backend is producing the attempt's change.
    Running {
        attempt: u32,
    },
    /// The attempt's gates are running; `passed` of them have passed. When all have, the task waits
    /// to land (landing is one task at a time).
    Verifying {
        attempt: u32,
        passed: usize,
    },
    Landed {
        attempt: u32,
        commit: CommitSha,
    },
    Failed {
        reason: String,
    },
    /// Cancelled because `dependency` failed, or because the run was killed (`dependency: None`).
    Cancelled {
        reason: String,
        dependency: Option<TaskId>,
    },
    Skipped {
        reason: String,
    },
    /// Waiting for a person: on a change whose gates passed (`action` merge, the attempt's
    /// worktree kept), or on whether to run the task at all (`action` plan, attempt 0).
    AwaitingApproval {
        attempt: u32,
        approval: String,
        action: ApprovalAction,
    },
    /// A person approved the change: it lands next.
    Approved {
        attempt: u32,
    },
    /// Denied by policy, or rejected by a person. Never committed.
    Denied {
        reason: String,
    },
    /// Landed, then reverted on the run branch: the commit broke `landing.verify`.
    Reverted {
        commit: CommitSha,
        reason: String,
    },
    /// Several attempts at once (`proposals:`, or a hedge's duplicate): each candidate in its
    /// own state; the one chosen becomes `Verifying` with all its gates passed.
    Candidates {
        mode: crate::proposal::Mode,
        candidates: crate::proposal::Candidates,
    },
}

/// What an approval decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAction {
    /// Whether to run the task (a Markdown plan's "Pending" tasks).
    Plan,
    /// Whether the change may land.
    Merge,
    /// The agent's question: a person answers it (or skips the task).
    Decision,
}

impl ApprovalAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Merge => "merge",
            Self::Decision => "decision",
        }
    }
}

impl TaskState {
    pub fn status(&self) -> TaskStatus {
        match self {
            Self::Pending => TaskStatus::Pending,
            Self::Ready => TaskStatus::Ready,
            Self::Running { .. } => TaskStatus::Running,
            Self::Verifying { .. } => TaskStatus::Verifying,
            Self::Landed { .. } => TaskStatus::Landed,
            Self::Failed { .. } => TaskStatus::Failed,
            Self::Cancelled { .. } => TaskStatus::Cancelled,
            Self::Skipped { .. } => TaskStatus::Skipped,
            Self::AwaitingApproval { .. } => TaskStatus::AwaitingApproval,
            Self::Approved { .. } => TaskStatus::Verifying,
            Self::Denied { .. } => TaskStatus::Denied,
            Self::Reverted { .. } => TaskStatus::Reverted,
            Self::Candidates { .. } => TaskStatus::Running,
        }
    }

    /// Every attempt in flight: the candidates still running, verifying or passed, else the one.
    pub fn attempts_in_flight(&self) -> Vec<u32> {
        match self {
            Self::Candidates { candidates, .. } => candidates
                .iter()
                .filter(|(_, c)| {
                    matches!(
                        c.state,
                        crate::proposal::CandidateState::Running
                            | crate::proposal::CandidateState::Verifying { .. }
                            | crate::proposal::CandidateState::Passed { .. }
                    )
                })
                .map(|(a, _)| *a)
                .collect(),
            other => other.in_flight().into_iter().collect(),
        }
    }

    /// The attempt that may land now: its gates and the policy passed (or a person approved it).
    pub fn landable(&self) -> Option<u32> {
        match self {
            Self::Verifying { attempt, .. } | Self::Approved { attempt } => Some(*attempt),
            _ => None,
        }
    }

    /// The attempt whose worktree this state keeps alive (in flight, or waiting for a person).
    pub fn holds_worktree(&self) -> Option<u32> {
        match self {
            Self::AwaitingApproval {
                attempt,
                action: ApprovalAction::Merge,
                ..
            } => Some(*attempt),
            other => other.in_flight(),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Landed { .. }
                | Self::Failed { .. }
                | Self::Cancelled { .. }
                | Self::Skipped { .. }
                | Self::Denied { .. }
                | Self::Reverted { .. }
        )
    }

    /// The attempt in flight, if any.
    pub fn in_flight(&self) -> Option<u32> {
        match self {
            Self::Running { attempt }
            | Self::Verifying { attempt, .. }
            | Self::Approved { attempt } => Some(*attempt),
            // The task is in flight under its first candidate's number.
            Self::Candidates { candidates, .. } => {
                Some(candidates.keys().next().copied().unwrap_or(0))
            }
            _ => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Failed { reason }
            | Self::Cancelled { reason, .. }
            | Self::Skipped { reason }
            | Self::Denied { reason }
            | Self::Reverted { reason, .. } => Some(reason),

            _ => None,
        }
    }
}

/// Why the previous attempt failed, handed to the next one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Feedback {
    pub attempt: u32,
    pub reason: String,
    pub log: Option<ArtifactId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    /// Where the task is in the plan's order.
    pub position: usize,
    pub state: TaskState,
    /// The highest attempt number started (0: none yet).
    pub attempt: u32,
    /// Attempts up to this number do not count against `max_attempts` (set by `abo retry`).
    pub floor: u32,
    /// The next attempt's number; differs from `attempt + 1` when an interrupted attempt is redone.
    pub next_attempt: u32,
    pub backend: Option<BackendName>,
    pub feedback: Option<Feedback>,
    /// Worktrees of failed attempts, kept for inspection until `abo gc`.
    pub kept_worktrees: Vec<String>,
    pub ready_at: Option<Timestamp>,
    /// The risk class the policy gave its last evaluated change.
    pub risk: Option<String>,
    /// The last review: (attempt, its outcome, whether it had a high-severity finding).
    pub review: Option<(u32, crate::review::Outcome, bool)>,
    /// `request_changes` verdicts so far (their findings went back to a next attempt).
    pub review_rounds: u32,
    /// When the attempt in flight started (the last `task.started`).
    pub started_at: Option<Timestamp>,
}

impl TaskRecord {
    /// The backend an attempt runs on: its candidate's, else the task's last.
    pub fn backend_of(&self, attempt: u32) -> BackendName {
        if let TaskState::Candidates { candidates, .. } = &self.state
            && let Some(c) = candidates.get(&attempt)
        {
            return c.backend.clone();
        }
        self.backend
            .clone()
            .unwrap_or_else(|| self.spec.backend.name().clone())
    }

    /// The candidate of an attempt, when the task has several.
    pub fn candidate(&self, attempt: u32) -> Option<&crate::proposal::Candidate> {
        match &self.state {
            TaskState::Candidates { candidates, .. } => candidates.get(&attempt),
            _ => None,
        }
    }

    fn candidate_mut(&mut self, attempt: u32) -> Option<&mut crate::proposal::Candidate> {
        match &mut self.state {
            TaskState::Candidates { candidates, .. } => candidates.get_mut(&attempt),
            _ => None,
        }
    }
}

/// Effects in flight: not part of the event-derived state. After a crash they are gone, and
/// resume recovers the tasks they were working on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InFlight {
    /// The tasks landing now, each with how many gates passed on its merged result: one whose
    /// gates run on the merged result (it lands alone), or several landed together in one
    /// [`crate::decide::Effect::LandTogether`].
    pub landing: Vec<(TaskId, usize)>,
    /// Tasks whose gates all passed, in the order they finished.
    pub land_queue: VecDeque<TaskId>,
    /// A `landing.verify` run, bisect step or revert is in flight.
    pub verifying: bool,
}

impl InFlight {
    /// Whether `task` is landing now.
    pub fn is_landing(&self, task: &TaskId) -> bool {
        self.landing.iter().any(|(l, _)| l == task)
    }

    /// `task` is no longer landing.
    pub fn not_landing(&mut self, task: &TaskId) {
        self.landing.retain(|(l, _)| l != task);
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    pub id: RunId,
    pub spec: RunSpec,
    pub status: RunStatus,
    /// What the run still owes after its last task.
    pub closing: Closing,
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    /// Task ids in plan order.
    pub order: Vec<TaskId>,
    pub consecutive_failures: u32,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub last_seq: u64,
    pub inflight: InFlight,
    /// Each backend's recent transient failures: its circuit.
    pub health: BTreeMap<BackendName, Health>,
    /// The caps in force: the spec's, with the run's raised by `abo resume`.
    pub budgets: BudgetSpec,
    /// What the run spent and holds.
    pub ledger: Ledger,
    /// The day and week windows with other runs' spend: set by the runtime (not from the log).
    pub windows: Windows,
    /// What the learned router knows: set by the runtime from the store (not from the log).
    pub router_stats: crate::route::Stats,
    /// `router.rules` compiled (`None`: does not compile, so never matches).
    pub rules: Vec<Option<crate::expr::Expr>>,
    /// Set by the runtime while the local time is outside every `schedule.windows` entry: why.
    pub outside_schedule: Option<String>,
    /// The run branch's history and its `landing.verify` (bisect, revert), from the log.
    pub verification: crate::verify::Verification,
    /// `landing.verify` on the base branch after the run's merge into it.
    pub base_heal: Option<crate::verify::BaseHeal>,
    /// The tasks by what decisions look for, kept up to date by `apply`.
    pub index: Index,
    /// `proposals.rules` compiled (`None`: does not compile, so never matches).
    pub proposal_rules: Vec<Option<crate::expr::Expr>>,
    /// The wall time (ms, started to landed) of landed attempts by task type, from the store:
    /// set by the runtime when the run starts, for `hedge.after: p90` (not from the log).
    pub landed_ms: BTreeMap<String, Vec<u64>>,
}

/// This many transient failures of a backend in a row open its circuit for [`CIRCUIT_COOLDOWN_MS`].
pub const CIRCUIT_THRESHOLD: u32 = 3;
pub const CIRCUIT_COOLDOWN_MS: i64 = 5 * 60 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub consecutive_transient: u32,
    pub opened_at: Option<Timestamp>,
    /// The reset of a usage or rate limit the backend reported (`backend.held`), until
    /// `backend.released`. Independent of the circuit: a limited backend is not a broken one.
    pub held_until: Option<Timestamp>,
}

/// Replaying a log that does not describe a run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("the event log of run {0} does not start with run.created")]
    NoCreated(RunId),
    #[error("event {seq} ({kind}) names unknown task `{task}`")]
    UnknownTask {
        seq: u64,
        kind: &'static str,
        task: TaskId,
    },
}

impl RunState {
    /// The state of a run just created from `spec`.
    pub fn created(id: RunId, spec: RunSpec, at: Timestamp) -> Self {
        let order: Vec<TaskId> = spec.tasks.iter().map(|t| t.id.clone()).collect();
        let tasks = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(position, t)| {
                let state = match &t.skipped {
                    Some(reason) => TaskState::Skipped {
                        reason: reason.clone(),
                    },
                    None => TaskState::Pending,
                };
                let rec = TaskRecord {
                    spec: t.clone(),
                    position,
                    state,
                    attempt: 0,
                    floor: 0,
                    next_attempt: 1,
                    backend: None,
                    feedback: None,
                    kept_worktrees: Vec::new(),
                    ready_at: None,
                    risk: None,
                    review: None,
                    review_rounds: 0,
                    started_at: None,
                };
                (t.id.clone(), rec)
            })
            .collect();
        let index = Self::index_of(&spec, &tasks);
        Self {
            id,
            status: RunStatus::Planned,
            closing: Closing::Open,
            tasks,
            order,
            consecutive_failures: 0,
            created_at: at,
            started_at: None,
            finished_at: None,
            last_seq: 0,
            inflight: InFlight::default(),
            health: BTreeMap::new(),
            budgets: spec.settings.budgets.clone(),
            ledger: Ledger::default(),
            windows: Windows::default(),
            router_stats: Default::default(),
            outside_schedule: None,
            verification: Default::default(),
            base_heal: None,
            index,
            rules: spec
                .settings
                .router
                .rules
                .iter()
                .map(|r| crate::route::compile(&r.when).ok())
                .collect(),
            proposal_rules: spec
                .settings
                .proposals
                .rules
                .iter()
                .map(|r| crate::route::compile(&r.when).ok())
                .collect(),
            landed_ms: BTreeMap::new(),
            spec,
        }
    }

    /// The index as built from the tasks' states now, without the events that led there: what
    /// `apply` keeps [`RunState::index`] equal to.
    pub fn fresh_index(&self) -> Index {
        Self::index_of(&self.spec, &self.tasks)
    }

    fn index_of(spec: &RunSpec, tasks: &BTreeMap<TaskId, TaskRecord>) -> Index {
        let position = |id: &TaskId| tasks.get(id).map(|t| t.position);
        let shape = spec
            .tasks
            .iter()
            .map(|t| (t.deps.iter().map(position).collect(), t.priority))
            .collect();
        let states: Vec<&TaskState> = spec
            .tasks
            .iter()
            .filter_map(|t| tasks.get(&t.id).map(|r| &r.state))
            .collect();
        Index::new(shape, &states)
    }

    /// Folds a run's whole log into its state.
    pub fn replay(run: &RunId, events: &[StoredEvent]) -> Result<Self, ReplayError> {
        let mut it = events.iter();
        let Some(first) = it.next() else {
            return Err(ReplayError::NoCreated(run.clone()));
        };
        let EventBody::RunCreated(spec) = &first.event.body else {
            return Err(ReplayError::NoCreated(run.clone()));
        };
        let mut state = Self::created(run.clone(), (**spec).clone(), first.event.at);
        state.last_seq = first.seq;
        for e in it {
            if let Some(t) = &e.event.task
                && !state.tasks.contains_key(t)
            {
                return Err(ReplayError::UnknownTask {
                    seq: e.seq,
                    kind: e.event.body.kind(),
                    task: t.clone(),
                });
            }
            state.apply(&e.event);
            state.last_seq = e.seq;
        }
        Ok(state)
    }

    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    pub fn attempt_id(&self, task: &TaskId, attempt: u32) -> AttemptId {
        AttemptId {
            run: self.id.clone(),
            task: task.clone(),
            attempt,
        }
    }

    /// Tasks in plan order.
    pub fn tasks_in_order(&self) -> impl Iterator<Item = &TaskRecord> {
        self.order.iter().filter_map(|id| self.tasks.get(id))
    }

    /// Applies one event (evolve). Events are facts: this never fails, and ignores what does not fit.
    pub fn apply(&mut self, e: &Event) {
        match &e.body {
            EventBody::RunCreated(_) => {}
            EventBody::RunStarted {} => {
                self.status = RunStatus::Running;
                self.started_at = Some(e.at);
                self.ledger.running_since = Some(e.at);
            }
            EventBody::RunPaused { reason } => {
                self.status = RunStatus::Paused {
                    reason: reason.clone(),
                };
                self.stop_clock(e.at);
            }
            EventBody::RunResumed { caps } => {
                self.status = RunStatus::Running;
                self.consecutive_failures = 0;
                self.finished_at = None;
                caps.apply(&mut self.budgets);
                self.ledger.exhausted.clear();
                self.ledger.running_since = Some(e.at);
            }
            EventBody::RunFinished { .. } => {
                self.closing = Closing::Owed;
                self.status = RunStatus::Finished;
                self.finished_at = Some(e.at);
                self.stop_clock(e.at);
            }
            EventBody::RunMerge {
                into,
                outcome,
                commit,
                onto,
                ..
            } => {
                self.closing = Closing::Settled;
                self.base_heal = None;
                let merged = matches!(outcome.as_str(), "fast-forward" | "merge-commit");
                if merged
                    && !self.spec.settings.landing.verify.is_empty()
                    && let (Some(into), Some(commit)) = (into, commit)
                {
                    self.base_heal = Some(crate::verify::BaseHeal::new(
                        into,
                        commit,
                        onto.clone(),
                        &self.verification,
                    ));
                    self.closing = Closing::Healing;
                }
            }
            EventBody::RunKilled { reason } => {
                self.closing = Closing::Settled;
                self.status = RunStatus::Killed {
                    reason: reason.clone(),
                };
                self.finished_at = Some(e.at);
                self.stop_clock(e.at);
            }
            EventBody::BudgetAlert { key, .. } => {
                self.ledger.alerted.insert(key.clone());
            }
            EventBody::BudgetExhausted { cap, .. } => {
                self.ledger.exhausted.insert(cap.clone());
            }
            EventBody::BackendHeld { backend, until, .. } => {
                self.health.entry(backend.clone()).or_default().held_until = Some(*until);
            }
            EventBody::BackendReleased { backend } => {
                if let Some(h) = self.health.get_mut(backend) {
                    h.held_until = None;
                }
            }
            EventBody::RunVerify {
                commit,
                branch,
                passed,
                log,
                reason,
                ..
            } => {
                let why = reason.as_deref().unwrap_or("landing.verify failed");
                if let Some(v) = self.verification_on(branch.as_deref()) {
                    v.verified(commit, *passed, log.clone(), why);
                }
                self.settle_base();
            }
            EventBody::RunBisect {
                commit,
                branch,
                passed,
                ..
            } => {
                if let Some(v) = self.verification_on(branch.as_deref()) {
                    v.probed(commit, *passed);
                }
            }
            EventBody::RunRevertFailed { reason, branch, .. } => {
                if let Some(v) = self.verification_on(branch.as_deref()) {
                    v.revert_failed(reason);
                }
                self.settle_base();
            }
            body => {
                let Some(id) = &e.task else { return };
                let Some(t) = self.tasks.get_mut(id) else {
                    return;
                };
                let (position, old) = (t.position, t.state.clone());
                match body {
                    EventBody::TaskReady {} => {
                        t.state = TaskState::Ready;
                        t.ready_at = Some(e.at);
                    }
                    EventBody::TaskStarted {
                        attempt,
                        backend,
                        reserved,
                        ..
                    } => {
                        match &mut t.state {
                            TaskState::Candidates { mode, candidates } => {
                                let hedge =
                                    *mode == crate::proposal::Mode::Hedge && !candidates.is_empty();
                                candidates.insert(
                                    *attempt,
                                    crate::proposal::Candidate {
                                        backend: backend.clone(),
                                        started_at: e.at,
                                        hedge,
                                        state: crate::proposal::CandidateState::Running,
                                        score: Default::default(),
                                    },
                                );
                            }
                            _ => t.state = TaskState::Running { attempt: *attempt },
                        }
                        t.started_at = Some(e.at);
                        t.attempt = t.attempt.max(*attempt);
                        t.next_attempt = attempt + 1;
                        t.backend = Some(backend.clone());
                        if !reserved.is_empty() {
                            self.ledger
                                .reserve(id, *attempt, backend, reserved.amount());
                        }
                    }
                    EventBody::ReviewReserved {
                        attempt,
                        reviewer,
                        reserved,
                    } if !reserved.is_empty() => {
                        self.ledger
                            .reserve(id, *attempt, reviewer, reserved.amount());
                    }
                    EventBody::ReviewCharged {
                        attempt,
                        reviewer,
                        usd,
                        tokens,
                        source,
                        ..
                    } => {
                        let a = Amount {
                            usd: *usd,
                            tokens: *tokens,
                        };
                        let for_task = source != crate::budget::INTERRUPTED;
                        self.ledger
                            .charge(id, *attempt, reviewer, a, e.at, for_task);
                        self.ledger.reviews.add(a);
                    }
                    EventBody::BudgetCharged {
                        attempt,
                        backend,
                        usd,
                        tokens,
                        source,
                        ..
                    } => {
                        let a = Amount {
                            usd: *usd,
                            tokens: *tokens,
                        };
                        let for_task = source != crate::budget::INTERRUPTED;
                        self.ledger.charge(id, *attempt, backend, a, e.at, for_task);
                        if let Some(c) = t.candidate_mut(*attempt) {
                            c.score.charged(*usd);
                        }
                    }
                    EventBody::TaskBackendFinished {
                        attempt,
                        ok,
                        transient,
                        lines_changed,
                        ..
                    } => {
                        let backend = t.backend_of(*attempt);
                        if let Some(c) = t.candidate_mut(*attempt) {
                            c.score.diff_lines = *lines_changed;
                            if *ok {
                                c.state = crate::proposal::CandidateState::Verifying { passed: 0 };
                            }
                        } else if *ok {
                            t.state = TaskState::Verifying {
                                attempt: *attempt,
                                passed: 0,
                            };
                        }
                        {
                            let b = &backend;
                            let h = self.health.entry(b.clone()).or_default();
                            if *transient {
                                h.consecutive_transient += 1;
                                if h.consecutive_transient >= CIRCUIT_THRESHOLD {
                                    h.opened_at = Some(e.at);
                                }
                            } else {
                                *h = Health {
                                    held_until: h.held_until,
                                    ..Health::default()
                                };
                            }
                        }
                    }
                    EventBody::TaskGate {
                        attempt,
                        stage: GateStage::Attempt,
                        passed: true,
                        figures,
                        ..
                    } => {
                        if let Some(c) = t.candidate_mut(*attempt) {
                            if let crate::proposal::CandidateState::Verifying { passed } =
                                &mut c.state
                            {
                                *passed += 1;
                                c.score.gate(figures.as_ref());
                            }
                        } else if let TaskState::Verifying { attempt: a, passed } = &mut t.state
                            && a == attempt
                        {
                            *passed += 1;
                        }
                    }
                    EventBody::TaskLanded { attempt, commit } => {
                        t.state = TaskState::Landed {
                            attempt: *attempt,
                            commit: commit.clone(),
                        };
                        t.feedback = None;
                        self.consecutive_failures = 0;
                        self.verification.landed(id, commit);
                    }
                    EventBody::TaskReverted {
                        commit,
                        revert,
                        branch,
                        reason,
                        log,
                    } => {
                        t.feedback = Some(Feedback {
                            attempt: t.attempt,
                            reason: format!("reverted: {reason}"),
                            log: log.clone(),
                        });
                        t.state = TaskState::Reverted {
                            commit: commit.clone(),
                            reason: reason.clone(),
                        };
                        match (branch, &mut self.base_heal) {
                            (None, _) => self.verification.reverted(id, revert),
                            (Some(b), Some(h)) if h.branch == *b => {
                                h.verification.reverted(id, revert);
                            }
                            (Some(_), _) => {}
                        }
                    }
                    EventBody::TaskRetry {
                        attempt,
                        cause,
                        reason,
                        log,
                        kept_worktree,
                    } => {
                        if let Some(w) = kept_worktree {
                            t.kept_worktrees.push(w.clone());
                        }
                        t.next_attempt = *attempt;
                        match cause {
                            RetryCause::Failed => {
                                t.feedback = Some(Feedback {
                                    attempt: t.attempt,
                                    reason: reason.clone(),
                                    log: log.clone(),
                                });
                                t.state = TaskState::Ready;
                            }
                            RetryCause::Interrupted | RetryCause::Quota => {
                                t.state = TaskState::Ready;
                            }
                            RetryCause::Answered => {
                                t.feedback = Some(Feedback {
                                    attempt: t.attempt,
                                    reason: reason.clone(),
                                    log: None,
                                });
                                // The question's attempt is not counted against `attempts.max`.
                                t.floor = t.floor.saturating_add(1);
                                t.state = TaskState::Ready;
                            }
                            RetryCause::Requested => {
                                t.floor = attempt.saturating_sub(1);
                                // A reverted task's next attempt knows why it was reverted.
                                if !matches!(t.state, TaskState::Reverted { .. }) {
                                    t.feedback = None;
                                }
                                t.state = TaskState::Pending;
                            }
                        }
                    }
                    EventBody::TaskFailed {
                        reason,
                        kept_worktree,
                        ..
                    } => {
                        if let Some(w) = kept_worktree {
                            t.kept_worktrees.push(w.clone());
                        }
                        t.state = TaskState::Failed {
                            reason: reason.clone(),
                        };
                        self.consecutive_failures += 1;
                    }
                    EventBody::TaskCancelled { reason, dependency } => {
                        t.state = TaskState::Cancelled {
                            reason: reason.clone(),
                            dependency: dependency.clone(),
                        };
                    }
                    EventBody::TaskPolicy {
                        attempt,
                        risk,
                        verdict,
                        require_approval,
                        ..
                    } => {
                        t.risk = Some(risk.clone());
                        if let Some(c) = t.candidate_mut(*attempt)
                            && *verdict != crate::verdict::Verdict::Deny
                        {
                            c.state = crate::proposal::CandidateState::Passed {
                                verdict: *verdict,
                                reasons: require_approval.clone(),
                            };
                        }
                    }
                    EventBody::TaskReview {
                        attempt,
                        verdict,
                        findings,
                        ..
                    } => {
                        let high = findings
                            .iter()
                            .any(|f| f.severity == crate::review::FindingSeverity::High);
                        if let Some(c) = t.candidate_mut(*attempt) {
                            // A candidate's review is its score's, not a round of the task's.
                            c.score.review = Some(*verdict);
                            c.score.high_finding = high;
                        } else {
                            t.review = Some((*attempt, *verdict, high));
                            if *verdict == crate::review::Outcome::RequestChanges {
                                t.review_rounds += 1;
                            }
                        }
                    }
                    EventBody::TaskProposals { .. } => {
                        t.state = TaskState::Candidates {
                            mode: crate::proposal::Mode::Proposals,
                            candidates: Default::default(),
                        };
                    }
                    EventBody::TaskHedge { .. } => {
                        let backend = t.backend_of(t.attempt);
                        let started_at = t.started_at.unwrap_or(e.at);
                        let first = match t.state {
                            TaskState::Running { attempt } => {
                                Some((attempt, crate::proposal::CandidateState::Running))
                            }
                            TaskState::Verifying { attempt, passed } => Some((
                                attempt,
                                crate::proposal::CandidateState::Verifying { passed },
                            )),
                            _ => None,
                        };
                        if let Some((attempt, state)) = first {
                            let c = crate::proposal::Candidate {
                                backend,
                                started_at,
                                hedge: false,
                                state,
                                score: Default::default(),
                            };
                            t.state = TaskState::Candidates {
                                mode: crate::proposal::Mode::Hedge,
                                candidates: BTreeMap::from([(attempt, c)]),
                            };
                        }
                    }
                    EventBody::TaskProposal {
                        attempt,
                        outcome,
                        reason,
                        kept_worktree,
                        ..
                    } => {
                        use crate::proposal::{CandidateState, ProposalOutcome};
                        if let Some(w) = kept_worktree {
                            t.kept_worktrees.push(w.clone());
                        }
                        let gates = t.spec.gates.len();
                        let won = match t.candidate_mut(*attempt) {
                            None => None,
                            Some(c) => match outcome {
                                ProposalOutcome::Won => Some((c.backend.clone(), c.started_at)),
                                ProposalOutcome::Failed => {
                                    c.state = CandidateState::Failed {
                                        reason: reason.clone(),
                                    };
                                    None
                                }
                                ProposalOutcome::Stopped | ProposalOutcome::Lost => {
                                    c.state = CandidateState::Stopped {
                                        reason: reason.clone(),
                                    };
                                    None
                                }
                            },
                        };
                        if let Some((backend, started)) = won {
                            t.state = TaskState::Verifying {
                                attempt: *attempt,
                                passed: gates,
                            };
                            t.backend = Some(backend);
                            t.started_at = Some(started);
                        }
                    }
                    EventBody::TaskApprovalRequested {
                        attempt,
                        approval,
                        action,
                        ..
                    } => {
                        t.state = TaskState::AwaitingApproval {
                            attempt: *attempt,
                            approval: approval.clone(),
                            action: *action,
                        };
                    }
                    EventBody::TaskApproved { .. } => {
                        if let TaskState::AwaitingApproval {
                            attempt, action, ..
                        } = &t.state
                        {
                            t.state = match action {
                                ApprovalAction::Merge => TaskState::Approved { attempt: *attempt },
                                ApprovalAction::Plan => TaskState::Pending,
                                // The answer's `task.retry` follows and readies the task.
                                ApprovalAction::Decision => TaskState::Ready,
                            };
                        }
                    }
                    EventBody::TaskDenied {
                        reasons,
                        kept_worktree,
                        ..
                    } => {
                        if let Some(w) = kept_worktree {
                            t.kept_worktrees.push(w.clone());
                        }
                        t.state = TaskState::Denied {
                            reason: reasons.join("; "),
                        };
                        self.consecutive_failures += 1;
                    }

                    // Failed backend runs and gates change nothing by themselves: the retry or
                    // failure event that follows them does.
                    _ => {}
                }
                let (tasks, order) = (&self.tasks, &self.order);
                let at = |p: usize| order.get(p).and_then(|id| tasks.get(id)).map(|t| &t.state);
                if let Some(new) = at(position) {
                    self.index.moved(position, &old, new, &at);
                }
            }
        }
    }

    /// The verification an event of `landing.verify` belongs to: the run branch's (no branch
    /// named) or the base branch's after the merge.
    fn verification_on(
        &mut self,
        branch: Option<&str>,
    ) -> Option<&mut crate::verify::Verification> {
        match (branch, &mut self.base_heal) {
            (None, _) => Some(&mut self.verification),
            (Some(b), Some(h)) if h.branch == b => Some(&mut h.verification),
            (Some(_), _) => None,
        }
    }

    /// The base branch's verification is over: the run owes nothing more.
    fn settle_base(&mut self) {
        if self.closing == Closing::Healing && self.base_heal.as_ref().is_none_or(|h| h.settled()) {
            self.closing = Closing::Settled;
        }
    }

    fn stop_clock(&mut self, at: Timestamp) {
        self.ledger.ran_ms = self.ledger.ran(at);
        self.ledger.running_since = None;
    }

    /// Whether a backend's circuit is open: it failed transiently too often, too recently.
    pub fn circuit_open(&self, backend: &BackendName, now: Timestamp) -> bool {
        self.health
            .get(backend)
            .and_then(|h| h.opened_at)
            .is_some_and(|at| now.0 - at.0 < CIRCUIT_COOLDOWN_MS)
    }

    /// Until when a backend is held by a usage limit it reported, if its reset has not come yet.
    pub fn held_until(&self, backend: &BackendName, now: Timestamp) -> Option<Timestamp> {
        self.health
            .get(backend)
            .and_then(|h| h.held_until)
            .filter(|until| *until > now)
    }

    /// Held backends whose reset has come (`backend.released` is due for each).
    pub fn holds_ended(&self, now: Timestamp) -> Vec<BackendName> {
        self.health
            .iter()
            .filter(|(_, h)| h.held_until.is_some_and(|u| u <= now))
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// Counts of tasks by status.
    pub fn count(&self, status: TaskStatus) -> u32 {
        let n = self
            .tasks
            .values()
            .filter(|t| t.state.status() == status)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Tasks with an attempt in flight.
    pub fn in_flight(&self) -> usize {
        self.index.in_flight.len()
    }

    /// The task at a position in the plan's order.
    pub fn at(&self, position: usize) -> Option<&TaskRecord> {
        self.order.get(position).and_then(|id| self.tasks.get(id))
    }

    /// Whether every task that was meant to run has landed.
    pub fn all_landed(&self) -> bool {
        self.tasks.values().all(|t| {
            matches!(
                t.state,
                TaskState::Landed { .. } | TaskState::Skipped { .. }
            )
        })
    }
}
