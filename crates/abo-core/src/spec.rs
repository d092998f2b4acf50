//! The run's specification: everything the engine needs, frozen when the run is created and stored
//! in its `run.created` event, so a run resumes and replays without its backlog or abo.yml.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::autonomy::Levels;
use crate::backlog::TaskType;
use crate::budget::{BudgetSpec, Cap};
use crate::config::{AgentKind, ApiKind, Landing, LandingMode};
use crate::ids::{ArtifactId, BackendName, CommitSha, GateName, TaskId};
use crate::pricing::PriceTable;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub title: String,
    pub profile: String,
    /// The commit the run starts from.
    pub base: CommitSha,
    /// The branch `base` was taken from, if any.
    pub base_branch: Option<String>,
    /// The run branch, `abo/<run>`.
    pub branch: String,
    pub settings: RunSettings,
    pub tasks: Vec<TaskSpec>,
}

/// A run's spec as `run.created` holds it, read without its tasks.
#[derive(Deserialize)]
struct Head {
    title: String,
    profile: String,
    base: CommitSha,
    base_branch: Option<String>,
    branch: String,
    settings: RunSettings,
}

impl RunSpec {
    /// The spec in `json` (a `run.created`'s data) without its tasks (`tasks` is empty): what a
    /// reader of a run's settings needs, at the cost of skipping its tasks' text, not building them.
    pub fn head_from_json(json: &str) -> Result<Self, serde_json::Error> {
        let h: Head = serde_json::from_str(json)?;
        Ok(Self {
            title: h.title,
            profile: h.profile,
            base: h.base,
            base_branch: h.base_branch,
            branch: h.branch,
            settings: h.settings,
            tasks: Vec::new(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub max_parallel: usize,
    pub stop_after_consecutive_failures: u32,
    pub attempt_timeout_ms: u64,
    pub silence_timeout_ms: u64,
    pub run_timeout_ms: u64,
    pub gates: Vec<GateSpec>,
    pub landing: Landing,
    /// Backends tried, in order, when a task's own backend has its circuit open.
    #[serde(default)]
    pub fallback: Vec<BackendSpec>,
    /// At most this many attempts at once per backend name.
    #[serde(default)]
    pub per_backend: BTreeMap<String, usize>,
    #[serde(default)]
    pub pricing: PriceTable,
    /// Variables whose values are secrets: redacted from everything abo sends or stores.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// The policy the run was created with: resuming uses the same.
    #[serde(default)]
    pub policy: PolicySpec,
    /// The run's autonomy levels (profile and config overrides).
    #[serde(default)]
    pub autonomy: Levels,
    /// The caps as the run was created (`abo resume` may raise the run's own).
    #[serde(default)]
    pub budgets: BudgetSpec,
    #[serde(default)]
    pub router: crate::route::RouterSpec,
    /// Whether attempts may reuse an identical earlier attempt's result (`--no-cache` turns it off).
    #[serde(default)]
    pub cache: bool,
    /// The sandbox every attempt and gate runs in (runs recorded before it existed: none).
    #[serde(default)]
    pub sandbox: SandboxSpec,
    /// Where events are sent (webhooks, email).
    #[serde(default)]
    pub notify: NotifySpec,
    /// When attempts may start.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// The reviewer of each change whose gates passed (none: no review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::review::ReviewSpec>,
    /// How many `check` calls an attempt's agent may make (runs recorded before it: none).
    #[serde(default)]
    pub max_checks: u32,
    /// Tasks that get several candidates at once, and how the best is chosen.
    #[serde(
        default,
        skip_serializing_if = "crate::proposal::ProposalSpec::is_empty"
    )]
    pub proposals: crate::proposal::ProposalSpec,
    /// Attempts that run long get a duplicate on another backend (none: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<crate::proposal::HedgeSpec>,
}

/// abo.yml's `schedule.windows`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub windows: Vec<crate::schedule::Window>,
    pub timezone: Option<String>,
}

/// abo.yml's `notify`: secrets are named by variable, never copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySpec {
    pub webhooks: Vec<WebhookSpec>,
    pub email: Option<EmailSpec>,
    /// The dashboard's public address: a waiting approval's notification links to its task's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSpec {
    pub url: String,
    /// Event kinds sent (`approval.requested` stands for `task.approval_requested`).
    pub events: Vec<String>,
    /// `json` (the event as `abo events --json` prints it) or `slack` (`{"text": ...}`).
    pub format: String,
    /// The variable holding the HMAC-SHA256 key of `X-Abo-Signature`.
    pub secret_env: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSpec {
    /// `host:port` of an SMTP relay (plain SMTP).
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
    pub events: Vec<String>,
}

/// The events notified when a channel names none.
/// A revert by `landing.verify` (or one that could not be made) is news too.
pub const DEFAULT_NOTIFY: [&str; 7] = [
    "run.finished",
    "task.approval_requested",
    "budget.alert",
    "task.reverted",
    "run.revert_failed",
    "verify.proposed",
    "verify.reported",
];

impl NotifySpec {
    /// Whether a channel's list covers `kind`.
    pub fn wants(events: &[String], kind: &str) -> bool {
        fn alias(e: &str) -> &str {
            match e {
                "approval.requested" => "task.approval_requested",
                other => other,
            }
        }
        if events.is_empty() {
            DEFAULT_NOTIFY.contains(&kind)
        } else {
            events.iter().any(|e| alias(e) == kind || e == "*")
        }
    }
}

/// abo.yml's `sandbox`, resolved: the mode, what gates and agents may reach, what is hidden, limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub mode: crate::config::SandboxMode,
    /// Gates and commands keep the host's network (`gate_network: allow`).
    pub gate_network: bool,
    /// Hosts agent CLIs may reach through abo's egress proxy (`*.example.com` for subdomains).
    pub agent_hosts: Vec<String>,
    /// Paths nothing in the sandbox may read, as written (`~/` is the user's home).
    pub deny_read: Vec<String>,
    /// Variables passed through besides PATH, HOME, TMPDIR, LANG and TERM.
    pub env_pass: Vec<String>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub open_files: Option<u64>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        Self {
            mode: crate::config::SandboxMode::Off,
            gate_network: false,
            agent_hosts: Vec::new(),
            deny_read: Vec::new(),
            env_pass: Vec::new(),
            memory_bytes: None,
            processes: None,
            cpu_seconds: None,
            file_size_bytes: None,
            open_files: None,
        }
    }
}

/// abo.yml's `safety` (as the policy's `data.abo.config`) and the user's policy files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub safety: serde_json::Value,
    /// (path, source) of each file of `safety.policy_dir`.
    pub files: Vec<(String, String)>,
}

impl RunSettings {
    pub fn gate(&self, name: &GateName) -> Option<&GateSpec> {
        self.gates.iter().find(|g| &g.name == name)
    }

    pub fn pushes(&self) -> bool {
        matches!(
            self.landing.mode,
            LandingMode::Push | LandingMode::PullRequest
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSpec {
    pub name: GateName,
    pub run: String,
    pub timeout_ms: u64,
    pub retries: u32,
    /// The reports it leaves in the worktree.
    #[serde(default)]
    pub reports: crate::config::Reports,
    #[serde(default)]
    pub quarantine: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: TaskId,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: TaskType,
    pub description: String,
    pub acceptance: Vec<String>,
    pub paths: Vec<String>,
    pub deps: Vec<TaskId>,
    pub backend: BackendSpec,
    pub gates: Vec<GateName>,
    pub labels: Vec<String>,
    pub max_attempts: u32,
    pub priority: i64,
    /// Set for tasks that are listed but never run, with the reason.
    pub skipped: Option<String>,
    /// A Markdown plan's "Pending" task: it runs only after a person approves it (action `plan`).
    #[serde(default)]
    pub needs_plan_approval: bool,
    /// The task's autonomy levels: the run's, lowered by the task's own `autonomy:`.
    #[serde(default)]
    pub autonomy: Levels,
    /// `FILE:LINE:COL` where the task was written.
    pub origin: String,
    /// The task's own `budget:` (else `budgets.task_*` applies).
    #[serde(default)]
    pub budget: Option<Cap>,
    /// The task names no backend of its own: the router chooses (`backend` is the default).
    #[serde(default)]
    pub routed: bool,
    /// An estimate of the tokens of the files in the task's scope (for `context_tokens` in rules).
    #[serde(default)]
    pub context_tokens: u64,
}

/// How a task's change is produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendSpec {
    /// `sh -c RUN` in the attempt's worktree.
    Command { name: BackendName, run: String },
    /// `git apply --3way` of a stored diff.
    Patch {
        name: BackendName,
        diff: ArtifactId,
        file: String,
    },
    /// An agent CLI in the worktree.
    Agent {
        name: BackendName,
        agent: AgentKind,
        command: String,
        model: Option<String>,
        max_turns: Option<u32>,
        permission_mode: Option<String>,
        args: Vec<String>,
        context_tokens: u32,
        /// The endpoint the CLI talks to, when not its provider's own.
        #[serde(default)]
        base_url: Option<String>,
        /// The variable holding the key; its value is read when the agent starts, never stored.
        #[serde(default)]
        api_key_env: Option<String>,
        /// Where the key is kept while the agent runs.
        #[serde(default = "crate::config::Credentials::recorded_before")]
        credentials: crate::config::Credentials,
    },
    /// A model API asked for a unified diff.
    Api {
        name: BackendName,
        api: ApiKind,
        model: String,
        base_url: String,
        /// The variable holding the key; its value is read when a request is made, never stored.
        api_key_env: Option<String>,
        max_tokens: u32,
        context_tokens: u32,
        retries: u32,
    },
}

impl BackendSpec {
    /// Whether running it can cost money or tokens (agents and model APIs).
    pub fn priced(&self) -> bool {
        matches!(self, Self::Agent { .. } | Self::Api { .. })
    }

    pub fn name(&self) -> &BackendName {
        match self {
            Self::Command { name, .. }
            | Self::Patch { name, .. }
            | Self::Agent { name, .. }
            | Self::Api { name, .. } => name,
        }
    }
}
