//! Events: every state change of a run, in the order it happened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::budget::{CapChange, Reservation};
use crate::ids::{ArtifactId, BackendName, CommitSha, GateName, RunId, TaskId, Timestamp};
use crate::spec::RunSpec;
use crate::state::ApprovalAction;
use crate::verdict::Verdict;

/// An event as decided, before the store gives it a sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub run: RunId,
    pub task: Option<TaskId>,
    pub at: Timestamp,
    pub body: EventBody,
}

/// An event committed to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
}

/// Which tree a gate ran on: the attempt's worktree, or the attempt merged onto the run branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStage {
    Attempt,
    Merged,
}

/// Why a task is being tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCause {
    /// The previous attempt failed; this one gets its feedback.
    Failed,
    /// abo stopped while the attempt was in flight; the same attempt runs again.
    Interrupted,
    /// A person answered the question the previous attempt asked: this one gets the answer as
    /// its feedback. Asking is not failing, so it does not count against `attempts.max`.
    Answered,
    /// A person asked for fresh attempts (`abo retry`).
    Requested,
    /// The backend reported a usage or rate limit: it is held until its reset, and the same
    /// attempt runs again (on a fallback meanwhile, or after the reset). A limit is not the
    /// change's failure, so it never counts against `attempts.max`.
    Quota,
}

/// Token usage as a backend reported it (agent and model backends; none for command and patch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to the cache.
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Tokens a backend reported only as a total (goose), neither input nor output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsplit_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Every token once: input, cache reads and writes, output, and unsplit totals.
    pub fn total(&self) -> u64 {
        self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.unsplit_tokens
    }

    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.unsplit_tokens += o.unsplit_tokens;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum EventBody {
    #[serde(rename = "run.created")]
    RunCreated(Box<RunSpec>),
    #[serde(rename = "run.started")]
    RunStarted {},
    #[serde(rename = "run.paused")]
    RunPaused { reason: String },
    #[serde(rename = "run.resumed")]
    RunResumed {
        /// Caps raised as the run resumed (`abo resume --usd/--tokens/--wall`).
        #[serde(default, skip_serializing_if = "CapChange::is_empty")]
        caps: CapChange,
    },
    #[serde(rename = "run.finished")]
    RunFinished {
        landed: u32,
        failed: u32,
        cancelled: u32,
        skipped: u32,
    },
    #[serde(rename = "run.killed")]
    RunKilled { reason: String },
    #[serde(rename = "task.ready")]
    TaskReady {},
    #[serde(rename = "task.started")]
    TaskStarted {
        attempt: u32,
        backend: BackendName,
        worktree: String,
        /// What the attempt holds of every cap that applies until it is charged.
        #[serde(default, skip_serializing_if = "Reservation::is_empty")]
        reserved: Reservation,
    },
    #[serde(rename = "task.backend_finished")]
    TaskBackendFinished {
        attempt: u32,
        ok: bool,
        exit: Option<i32>,
        reason: Option<String>,
        duration_ms: u64,
        files_changed: u32,
        usage: Option<Usage>,
        cost_usd: Option<f64>,
        cost_source: Option<String>,
        log: Option<ArtifactId>,
        /// The model that did the work, as the backend reported it.
        #[serde(default)]
        model: Option<String>,
        /// The backend's final message (its rationale), shortened.
        #[serde(default)]
        message: Option<String>,
        /// Everything the backend printed or replied, redacted.
        #[serde(default)]
        transcript: Option<ArtifactId>,
        /// The prompt as sent, redacted.
        #[serde(default)]
        prompt: Option<ArtifactId>,
        /// The failure was the provider's (429, 5xx, timeout), not the change's.
        #[serde(default)]
        transient: bool,
        /// Lines added plus removed by the change (0: none, or recorded before it was counted).
        #[serde(default, skip_serializing_if = "is_zero")]
        lines_changed: u64,
    },
    /// The agent called its `check` tool during the attempt (what abo would have decided then).
    #[serde(rename = "task.check")]
    TaskCheck {
        attempt: u32,
        #[serde(flatten)]
        check: CheckRecord,
    },
    #[serde(rename = "task.gate")]
    TaskGate {
        attempt: u32,
        name: GateName,
        stage: GateStage,
        passed: bool,
        exit: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        runs: u32,
        log: Option<ArtifactId>,
        /// What the gate measured (its reports, or its runner's summary lines).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        figures: Option<GateFigures>,
    },
    #[serde(rename = "task.landed")]
    TaskLanded { attempt: u32, commit: CommitSha },
    #[serde(rename = "task.retry")]
    TaskRetry {
        /// The attempt that comes next.
        attempt: u32,
        cause: RetryCause,
        reason: String,
        /// The log of the step that failed, handed to the next attempt as feedback.
        log: Option<ArtifactId>,
        /// The failed attempt's worktree, kept for inspection until `abo gc`.
        kept_worktree: Option<String>,
    },
    #[serde(rename = "task.failed")]
    TaskFailed {
        attempts: u32,
        reason: String,
        kept_worktree: Option<String>,
    },
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        reason: String,
        dependency: Option<TaskId>,
    },
    /// The policy's verdict on an attempt whose gates passed.
    #[serde(rename = "task.policy")]
    TaskPolicy {
        attempt: u32,
        verdict: Verdict,
        deny: Vec<String>,
        require_approval: Vec<String>,
        risk: String,
        duration_us: u64,
        /// The input as evaluated, redacted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<ArtifactId>,
    },
    /// A person must decide: `action` is `merge` (the change) or `plan` (whether to run the task).
    #[serde(rename = "task.approval_requested")]
    TaskApprovalRequested {
        attempt: u32,
        approval: String,
        action: ApprovalAction,
        reasons: Vec<String>,
    },
    #[serde(rename = "task.approved")]
    TaskApproved { approval: String, reason: String },
    #[serde(rename = "task.rejected")]
    TaskRejected { approval: String, reason: String },
    /// Denied by policy or rejected by a person: the change is never committed.
    #[serde(rename = "task.denied")]
    TaskDenied {
        attempt: u32,
        reasons: Vec<String>,
        kept_worktree: Option<String>,
    },
    /// The `merge` action at the end of a run: the run branch landed into the base branch, or why not.
    #[serde(rename = "run.merge")]
    RunMerge {
        into: Option<String>,
        /// `fast-forward`, `merge-commit` or `skipped`.
        outcome: String,
        commit: Option<CommitSha>,
        /// The base branch's head before the merge, when the merge made a merge commit: the
        /// state `landing.verify`'s bisect on the base branch starts from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        onto: Option<CommitSha>,
        reason: String,
    },
    /// The backend chosen for an attempt, when it is not the task's own.

    #[serde(rename = "router.decision")]
    RouterDecision {
        attempt: u32,
        backend: BackendName,
        rule: String,
        /// The learned router's sampled scores, per backend.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scores: Vec<RouteScore>,
    },
    /// An attempt's actual cost charged, and its reservation released.
    #[serde(rename = "budget.charged")]
    BudgetCharged {
        attempt: u32,
        backend: BackendName,
        usd: f64,
        tokens: u64,
        reserved: Reservation,
        /// `reported` or `estimated` (the backend's), `unknown` (charged as 0), `reservation`
        /// (the attempt was interrupted: what it held is charged), `cache` (nothing ran).
        source: String,
    },
    /// Spend reached `alert_at` of a cap: once per cap (per day or week for those caps).
    #[serde(rename = "budget.alert")]
    BudgetAlert {
        cap: String,
        key: String,
        spent: f64,
        limit: f64,
        alert_at: f64,
    },
    /// A cap kept an attempt (or a review) from starting.
    #[serde(rename = "budget.exhausted")]
    BudgetExhausted {
        cap: String,
        limit: f64,
        spent: f64,
        reserved: f64,
        needed: f64,
    },
    /// A notification was delivered (or gave up after its retries).
    #[serde(rename = "notify.sent")]
    NotifySent {
        /// `webhook` or `email`.
        channel: String,
        /// The webhook's URL or the recipients.
        target: String,
        /// The event notified.
        seq: u64,
        event: String,
        ok: bool,
        tries: u32,
        detail: String,
    },
    /// The run branch was offered as a pull (merge) request.
    #[serde(rename = "run.pull_request")]
    RunPullRequest { url: String, number: Option<u64> },
    /// A backend reported a usage or rate limit with its reset: nothing starts on it until `until`
    /// (the router's fallback takes its work meanwhile, else the run pauses with reason `quota`).
    #[serde(rename = "backend.held")]
    BackendHeld {
        backend: BackendName,
        until: Timestamp,
        /// What the backend said.
        reason: String,
    },
    /// A held backend's reset time came: work starts on it again.
    #[serde(rename = "backend.released")]
    BackendReleased { backend: BackendName },
    /// `landing.verify` ran on the run branch's head (after its tasks landed, or after a revert).
    #[serde(rename = "run.verify")]
    RunVerify {
        commit: CommitSha,
        /// The base branch, when this is `landing.verify` on it after the run's merge (absent:
        /// the run branch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        passed: bool,
        /// The first gate that failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_gate: Option<GateName>,
        duration_ms: u64,
        log: Option<ArtifactId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One step of the bisect of a failed `landing.verify`: the gates on one landed commit (the
    /// event's task is the commit's).
    #[serde(rename = "run.bisect")]
    RunBisect {
        /// 1, 2, ... within this bisect.
        step: u32,
        commit: CommitSha,
        /// The base branch, when this is `landing.verify` on it after the run's merge (absent:
        /// the run branch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        passed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_gate: Option<GateName>,
        duration_ms: u64,
        log: Option<ArtifactId>,
    },
    /// The bisect named this task's commit the first bad one: it was reverted on the run branch,
    /// or on the base branch after the run's merge (the revert carries `Abo-Revert-Of:` and the run's trailers). The verify log is the task's
    /// feedback for `abo retry`.
    #[serde(rename = "task.reverted")]
    TaskReverted {
        commit: CommitSha,
        revert: CommitSha,
        /// The base branch, when this is `landing.verify` on it after the run's merge (absent:
        /// the run branch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        reason: String,
        log: Option<ArtifactId>,
    },
    /// The revert of the first bad commit could not be made: the branch stays failing, and the
    /// run's merge is refused.
    #[serde(rename = "run.revert_failed")]
    RunRevertFailed {
        commit: CommitSha,
        reason: String,
        /// The base branch, when this is `landing.verify` on it after the run's merge (absent:
        /// the run branch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// `abo daemon` started a scheduled verification of the base branch (`landing.verify_schedule`),
    /// in a log of its own (`verify-<branch>`): `head` is verified, and on failure its first-parent
    /// `commits` since `good` (the last head that verified) are bisected.
    #[serde(rename = "verify.scheduled")]
    VerifyScheduled {
        branch: String,
        head: CommitSha,
        /// None the first time: the head has nothing verified to bisect back to.
        good: Option<CommitSha>,
        commits: Vec<crate::verify_schedule::BaseCommit>,
    },
    /// A scheduled verification reverted the first bad commit, a task's landing, on the base
    /// branch (`task.reverted` is recorded in the task's own run).
    #[serde(rename = "verify.reverted")]
    VerifyReverted {
        commit: CommitSha,
        revert: CommitSha,
        by_run: RunId,
        by_task: TaskId,
    },
    /// Under `landing.mode: pull-request`, a scheduled verification's revert of the first bad
    /// commit (a task's landing) was committed on a branch of its own (`revert_branch`, pushed to
    /// `landing.remote`) on top of the base branch's head `on`, and offered as a draft pull request
    /// (`url`). The base branch still holds the bad commit: the task is reverted (`task.reverted`,
    /// `verify.reverted`) once the revert is found on it.
    #[serde(rename = "verify.proposed")]
    VerifyProposed {
        commit: CommitSha,
        revert: CommitSha,
        revert_branch: String,
        on: CommitSha,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<u64>,
        by_run: RunId,
        by_task: TaskId,
    },
    /// A scheduled verification's first bad commit was not made by abo (or the head fails with
    /// nothing verified before it): reported, never reverted.
    #[serde(rename = "verify.reported")]
    VerifyReported {
        commit: CommitSha,
        reason: String,
        log: Option<ArtifactId>,
    },
    /// The reviewer's verdict on an attempt whose gates passed (`review:`); `failed` when it gave
    /// none that parses (never approval).
    #[serde(rename = "task.review")]
    TaskReview {
        attempt: u32,
        reviewer: BackendName,
        verdict: crate::review::Outcome,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        findings: Vec<crate::review::Finding>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The reviewer's reply, redacted.
        log: Option<ArtifactId>,
    },
    /// The reviewer's reservation, taken before it is asked (a priced reviewer under a spend
    /// cap): it counts against the run's, the task's, the reviewer's and the daily and weekly caps
    /// as an attempt's does.
    #[serde(rename = "review.reserved")]
    ReviewReserved {
        attempt: u32,
        reviewer: BackendName,
        reserved: Reservation,
    },
    /// What the review cost, charged against the caps, and its reservation released.
    #[serde(rename = "review.charged")]
    ReviewCharged {
        attempt: u32,
        reviewer: BackendName,
        usd: f64,
        tokens: u64,
        reserved: Reservation,
        /// `reported` or `estimated` (from the run's prices), `unknown` (charged as 0),
        /// `reservation` (abo stopped while it ran: what it held is charged).
        source: String,
    },
    /// An identical attempt's result was reused: no backend ran.
    #[serde(rename = "cache.hit")]
    CacheHit {
        attempt: u32,
        key: String,
        /// The attempt whose result was reused.
        source: String,
    },
    /// The agent asked a question instead of finishing (Claude Code's `AskUserQuestion`, Codex's
    /// `request_user_input`, or a reply that asks): the task waits for a person's answer, as the
    /// approval `approval` of action `decision` that follows.
    #[serde(rename = "task.question")]
    TaskQuestion {
        attempt: u32,
        approval: String,
        question: String,
        /// The choices the agent offered (none: a free answer).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
    },
    /// The task starts several candidates at once (`proposals:`): a `task.started` for each of
    /// `attempts` follows, each with its reservation. `requested` is what the rule asked for;
    /// fewer start when the budget holds only some (`short` says why).
    #[serde(rename = "task.proposals")]
    TaskProposals {
        requested: u32,
        /// The `proposals.rules` entry that asked.
        rule: String,
        attempts: Vec<ProposalStart>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        short: Option<String>,
    },
    /// Attempt `attempt` ran longer than `hedge.after` (`after_ms`): a duplicate, attempt `hedge`,
    /// starts on `backend` (its `task.started` follows); the first of them to pass lands.
    #[serde(rename = "task.hedge")]
    TaskHedge {
        attempt: u32,
        hedge: u32,
        backend: BackendName,
        after_ms: u64,
        reason: String,
    },
    /// One candidate of a task with several ended: `failed` as it failed; `won`, `lost` or
    /// `stopped` when one was chosen (the losers first, the winner last, with why it won).
    #[serde(rename = "task.proposal")]
    TaskProposal {
        attempt: u32,
        backend: BackendName,
        mode: crate::proposal::Mode,
        outcome: crate::proposal::ProposalOutcome,
        score: crate::proposal::Score,
        /// 1 for the winner, among the candidates that passed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rank: Option<u32>,
        reason: String,
        /// The candidate was a hedge's duplicate.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hedge: bool,
        /// A failed candidate's worktree, kept for inspection until `abo gc`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kept_worktree: Option<String>,
    },
    /// A deployment's events (`deploy.*`, see `deploy::DeployEvent`). Untagged variants come
    /// last: the tagged ones above are tried first when reading an event back.
    #[serde(untagged)]
    Deploy(crate::deploy::DeployEvent),
}

/// One candidate of `task.proposals`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalStart {
    pub attempt: u32,
    pub backend: BackendName,
}

/// One backend's standing in a learned routing decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteScore {
    pub backend: BackendName,
    /// The Thompson sample drawn from Beta(landed + 1, failed + 1).
    pub sample: f64,
    pub landed: u64,
    pub failed: u64,
    pub mean_cost_usd: Option<f64>,
    pub mean_duration_ms: Option<u64>,
}

impl EventBody {
    /// The `kind` string, as stored and printed.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunCreated(_) => "run.created",
            Self::RunStarted {} => "run.started",
            Self::RunPaused { .. } => "run.paused",
            Self::RunResumed { .. } => "run.resumed",
            Self::RunFinished { .. } => "run.finished",
            Self::RunKilled { .. } => "run.killed",
            Self::TaskReady {} => "task.ready",
            Self::TaskStarted { .. } => "task.started",
            Self::TaskBackendFinished { .. } => "task.backend_finished",
            Self::TaskCheck { .. } => "task.check",
            Self::TaskGate { .. } => "task.gate",
            Self::TaskLanded { .. } => "task.landed",
            Self::TaskRetry { .. } => "task.retry",
            Self::TaskFailed { .. } => "task.failed",
            Self::TaskCancelled { .. } => "task.cancelled",
            Self::RouterDecision { .. } => "router.decision",
            Self::TaskPolicy { .. } => "task.policy",
            Self::RunMerge { .. } => "run.merge",
            Self::TaskApprovalRequested { .. } => "task.approval_requested",
            Self::TaskApproved { .. } => "task.approved",
            Self::TaskRejected { .. } => "task.rejected",
            Self::TaskDenied { .. } => "task.denied",
            Self::BudgetCharged { .. } => "budget.charged",
            Self::BudgetAlert { .. } => "budget.alert",
            Self::BudgetExhausted { .. } => "budget.exhausted",
            Self::CacheHit { .. } => "cache.hit",
            Self::TaskQuestion { .. } => "task.question",
            Self::BackendHeld { .. } => "backend.held",
            Self::BackendReleased { .. } => "backend.released",
            Self::NotifySent { .. } => "notify.sent",
            Self::RunPullRequest { .. } => "run.pull_request",
            Self::RunVerify { .. } => "run.verify",
            Self::TaskReview { .. } => "task.review",
            Self::RunBisect { .. } => "run.bisect",
            Self::ReviewReserved { .. } => "review.reserved",
            Self::ReviewCharged { .. } => "review.charged",
            Self::TaskReverted { .. } => "task.reverted",
            Self::RunRevertFailed { .. } => "run.revert_failed",
            Self::TaskProposals { .. } => "task.proposals",
            Self::TaskHedge { .. } => "task.hedge",
            Self::TaskProposal { .. } => "task.proposal",
            Self::VerifyScheduled { .. } => "verify.scheduled",
            Self::VerifyReverted { .. } => "verify.reverted",
            Self::VerifyProposed { .. } => "verify.proposed",
            Self::VerifyReported { .. } => "verify.reported",
            Self::Deploy(d) => d.kind(),
        }
    }

    /// The `data` object.
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("data").unwrap_or_else(|| serde_json::json!({}))
            }
            _ => serde_json::json!({}),
        }
    }

    /// Rebuilds a body from its kind and data, as stored.
    pub fn from_parts(kind: &str, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
    }
}

impl StoredEvent {
    /// The line printed by `abo events --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq,
            "ts": self.event.at.to_rfc3339(),
            "run": self.event.run,
            "task": self.event.task,
            "kind": self.event.body.kind(),
            "data": self.event.body.data(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kind_and_data() {
        let bodies = [
            EventBody::RunStarted {},
            EventBody::TaskStarted {
                attempt: 2,
                backend: BackendName::new("command"),
                worktree: "w".into(),
                reserved: Reservation::default(),
            },
            EventBody::TaskLanded {
                attempt: 1,
                commit: CommitSha::new("abc"),
            },
            EventBody::TaskRetry {
                attempt: 2,
                cause: RetryCause::Failed,
                reason: "gate `test` failed".into(),
                log: Some(ArtifactId::new("ff")),
                kept_worktree: None,
            },
        ];
        for b in bodies {
            let back = EventBody::from_parts(b.kind(), b.data()).unwrap();
            assert_eq!(back, b);
        }
        assert_eq!(
            EventBody::TaskLanded {
                attempt: 1,
                commit: CommitSha::new("abc")
            }
            .data(),
            serde_json::json!({"attempt": 1, "commit": "abc"})
        );
    }
}

/// Tests counted by a gate: `run` is what ran (passed + failed), skipped ones apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub run: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// What a gate measured, as its `task.gate` event records it; the reports themselves are
/// artifacts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateFigures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestCounts>,
    /// Line coverage in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The reports read, stored as artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ArtifactId>,
    /// The gate failed and then passed on the identical tree: the tests that failed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky: Option<Vec<String>>,
    /// Failures of quarantined tests, retried and reported instead of failing the gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
    /// Reports that could not be read, or that disagree with what abo saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One call of an attempt's `check` tool: what abo would have decided on the worktree then.
/// Its gate runs are the check's own, not the attempt's gate results.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckRecord {
    /// 1 for the attempt's first call.
    pub n: u32,
    /// What abo would decide: `pass`, `needs_approval`, `deny`, `gate_failed`, or `refused`
    /// (past `mcp.max_checks`: nothing ran).
    pub outcome: CheckOutcome,
    /// The gates that failed.
    #[serde(default)]
    pub failed_gates: Vec<GateName>,
    /// The policy's deny reasons and the approvals it would ask, redacted.
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub require_approval: Vec<String>,
    pub duration_ms: u64,
}

/// What a `check` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Pass,
    NeedsApproval,
    Deny,
    GateFailed,
    Refused,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::NeedsApproval => "needs_approval",
            Self::Deny => "deny",
            Self::GateFailed => "gate_failed",
            Self::Refused => "refused",
        }
    }
}
