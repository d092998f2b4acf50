//! `abo.yml`: parsed strictly; an unknown key is an error naming the nearest known one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diag::{InputError, PathSeg, from_yaml_error, locate, nearest};
use crate::units::{ByteSize, Dur};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub base_branch: Option<String>,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub autonomy: Autonomy,
    #[serde(default)]
    pub parallelism: Parallelism,
    #[serde(default)]
    pub attempts: Attempts,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub backends: Backends,
    #[serde(default)]
    pub router: Router,
    #[serde(default)]
    pub gates: Vec<Gate>,
    #[serde(default)]
    pub budgets: Budgets,
    #[serde(default)]
    pub pricing: BTreeMap<String, crate::pricing::Price>,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub sandbox: Sandbox,
    #[serde(default)]
    pub landing: Landing,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default)]
    pub schedule: Schedule,
    /// The reviewer of each change whose gates passed.
    #[serde(default)]
    pub review: Option<Review>,
    /// Environments to deploy the landed base branch to (`abo deploy ENV`, or after a merge).
    #[serde(default)]
    pub deploy: crate::deploy::Environments,
    #[serde(default)]
    pub mcp: Mcp,
    /// Tasks that get several candidates at once, and how the best is chosen.
    #[serde(default)]
    pub proposals: Proposals,
    /// A duplicate of an attempt that runs long, on another backend.
    #[serde(default)]
    pub hedge: Option<Hedge>,
}

/// `proposals:`: rules giving tasks N candidates, and the selection order.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposals {
    #[serde(default)]
    pub rules: Vec<ProposalRule>,
    #[serde(default)]
    pub select: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRule {
    pub when: String,
    pub n: u32,
}

/// `hedge:`: `after` is `p90` or a duration; `max` duplicates per task.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    pub after: String,
    #[serde(default = "default_hedge_max")]
    pub max: u32,
}

fn default_hedge_max() -> u32 {
    1
}

impl Proposals {
    /// As frozen into a run (checked by `Config::parse`).
    pub fn spec(&self) -> crate::proposal::ProposalSpec {
        crate::proposal::ProposalSpec {
            rules: self
                .rules
                .iter()
                .map(|r| crate::proposal::ProposalRule {
                    when: r.when.clone(),
                    n: r.n,
                })
                .collect(),
            select: self
                .select
                .iter()
                .filter_map(|c| crate::proposal::Criterion::parse(c))
                .collect(),
        }
    }
}

impl Hedge {
    /// As frozen into a run (checked by `Config::parse`).
    pub fn spec(&self) -> Option<crate::proposal::HedgeSpec> {
        let after = match self.after.as_str() {
            "p90" => crate::proposal::HedgeAfter::P90,
            d => crate::proposal::HedgeAfter::Ms(Dur::parse(d).ok()?.as_millis()),
        };
        Some(crate::proposal::HedgeSpec {
            after,
            max: self.max,
        })
    }
}

/// `review:`: backends (model APIs or commands) that read a change and answer a JSON verdict.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// In order: the first that is not the change's own backend reviews it.
    pub backends: Vec<String>,
    /// How many times a `request_changes` verdict's findings go back to a next attempt.
    #[serde(default = "default_review_rounds")]
    pub max_rounds: u32,
}

fn default_review_rounds() -> u32 {
    1
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autonomy {
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    #[serde(default = "default_max_parallel")]
    pub max_parallel: usize,
    #[serde(default)]
    pub per_backend: BTreeMap<String, usize>,
}

fn default_max_parallel() -> usize {
    4
}

impl Default for Parallelism {
    fn default() -> Self {
        Self {
            max_parallel: default_max_parallel(),
            per_backend: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempts {
    #[serde(default = "default_attempts")]
    pub max: u32,
    /// Pause the run after this many tasks fail in a row (0: never).
    #[serde(default = "default_stop_after")]
    pub stop_after_consecutive_failures: u32,
}

fn default_attempts() -> u32 {
    3
}
fn default_stop_after() -> u32 {
    3
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            max: default_attempts(),
            stop_after_consecutive_failures: default_stop_after(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_attempt")]
    pub attempt: Dur,
    #[serde(default = "d_silence")]
    pub silence: Dur,
    #[serde(default = "d_gate")]
    pub gate: Dur,
    #[serde(default = "d_run")]
    pub run: Dur,
}

fn d_attempt() -> Dur {
    Dur::secs(30 * 60)
}
fn d_silence() -> Dur {
    Dur::secs(5 * 60)
}
fn d_gate() -> Dur {
    Dur::secs(10 * 60)
}
fn d_run() -> Dur {
    Dur::secs(8 * 3600)
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            attempt: d_attempt(),
            silence: d_silence(),
            gate: d_gate(),
            run: d_run(),
        }
    }
}

/// `backends:`: a `default` name and the named backends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backends {
    pub default: Option<String>,
    pub named: BTreeMap<String, BackendConfig>,
}

impl<'de> Deserialize<'de> for Backends {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, serde_yaml::Value>::deserialize(d)?;
        let mut out = Backends::default();
        for (name, value) in raw {
            if name == "default" {
                let serde_yaml::Value::String(s) = value else {
                    return Err(serde::de::Error::custom(
                        "`backends.default` must be a backend name",
                    ));
                };
                out.default = Some(s);
                continue;
            }
            let backend = BackendConfig::deserialize(value).map_err(|e| {
                serde::de::Error::custom(format!(
                    "backends.{name}: {}",
                    strip_location(&e.to_string())
                ))
            })?;
            out.named.insert(name, backend);
        }
        Ok(out)
    }
}

fn strip_location(s: &str) -> &str {
    s.rfind(" at line ").map_or(s, |i| &s[..i])
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum BackendConfig {
    #[serde(rename = "command")]
    Command { run: String },
    #[serde(rename = "claude-code")]
    ClaudeCode(AgentConfig),
    #[serde(rename = "codex")]
    Codex(AgentConfig),
    #[serde(rename = "aider")]
    Aider(AgentConfig),
    #[serde(rename = "goose")]
    Goose(AgentConfig),
    #[serde(rename = "anthropic")]
    Anthropic(ApiConfig),
    #[serde(rename = "openai")]
    Openai(ApiConfig),
}

/// An agent CLI run as a subprocess in the attempt's worktree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The executable (default: the tool's usual name on PATH).
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// claude-code only: `--max-turns`.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// claude-code only: `--permission-mode` (default `acceptEdits`).
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// Extra arguments, appended as written.
    #[serde(default)]
    pub args: Vec<String>,
    /// Tokens of repository files put in the prompt.
    #[serde(default)]
    pub context_tokens: Option<u32>,
    /// The endpoint the CLI talks to (a gateway, a local model server); its host and port are
    /// added to the run's `sandbox.agent_hosts`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The variable holding the key for that endpoint (default: the one the CLI reads).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Where the key is: `proxy` (abo's egress proxy holds it and adds it to the CLI's requests;
    /// the default where the CLI allows it) or `env` (in the CLI's environment).
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

/// Where an agent CLI's API key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    /// In abo's egress proxy, which adds the provider's header; the CLI holds a placeholder.
    Proxy,
    /// In the CLI's environment, as the CLI reads it.
    Env,
}

impl Credentials {
    /// The mode when the backend names none: the proxy, except for goose, whose provider and key
    /// come from its own configuration.
    pub fn default_for(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Goose => Self::Env,
            _ => Self::Proxy,
        }
    }

    /// What runs recorded before the mode existed used.
    pub fn recorded_before() -> Self {
        Self::Env
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Env => "env",
        }
    }
}

/// A model API called by abo itself; it is asked for a unified diff.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub model: String,
    /// The variable holding the API key (default ANTHROPIC_API_KEY or OPENAI_API_KEY; a local
    /// OpenAI-compatible server may need none).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Tokens of repository files put in the prompt.
    #[serde(default)]
    pub context_tokens: Option<u32>,
    /// Tries of a request that failed transiently (429, 5xx, timeouts) before the attempt fails.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// The agent CLIs abo drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    ClaudeCode,
    Codex,
    Aider,
    Goose,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::Aider => "aider",
            Self::Goose => "goose",
        }
    }

    /// The executable's usual name.
    pub fn default_command(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude",
            Self::Codex => "codex",
            Self::Aider => "aider",
            Self::Goose => "goose",
        }
    }

    pub const ALL: [AgentKind; 4] = [Self::ClaudeCode, Self::Codex, Self::Aider, Self::Goose];

    /// The API the CLI's key is for: Claude Code speaks Anthropic's, Codex OpenAI's, aider the
    /// one of its model (`claude-*` or `anthropic/*`: Anthropic; else OpenAI-compatible); goose
    /// reads its provider from its own configuration (none here).
    pub fn provider(self, model: Option<&str>) -> Option<ApiKind> {
        match self {
            Self::ClaudeCode => Some(ApiKind::Anthropic),
            Self::Codex => Some(ApiKind::Openai),
            Self::Aider => Some(match model {
                Some(m) if m.starts_with("claude") || m.starts_with("anthropic/") => {
                    ApiKind::Anthropic
                }
                _ => ApiKind::Openai,
            }),
            Self::Goose => None,
        }
    }
}

/// The model APIs abo calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiKind {
    Anthropic,
    Openai,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => "https://api.anthropic.com",
            Self::Openai => "https://api.openai.com/v1",
        }
    }

    pub fn default_key_env(self) -> &'static str {
        match self {
            Self::Anthropic => "ANTHROPIC_API_KEY",
            Self::Openai => "OPENAI_API_KEY",
        }
    }
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Command { .. } => "command",
            Self::Anthropic(_) => ApiKind::Anthropic.as_str(),
            Self::Openai(_) => ApiKind::Openai.as_str(),
            other => other.agent().map_or("command", |(k, _)| k.as_str()),
        }
    }

    /// The agent kind and its options, for agent CLIs.
    pub fn agent(&self) -> Option<(AgentKind, &AgentConfig)> {
        match self {
            Self::ClaudeCode(a) => Some((AgentKind::ClaudeCode, a)),
            Self::Codex(a) => Some((AgentKind::Codex, a)),
            Self::Aider(a) => Some((AgentKind::Aider, a)),
            Self::Goose(a) => Some((AgentKind::Goose, a)),
            _ => None,
        }
    }

    /// The API kind and its options, for model APIs.
    pub fn api(&self) -> Option<(ApiKind, &ApiConfig)> {
        match self {
            Self::Anthropic(a) => Some((ApiKind::Anthropic, a)),
            Self::Openai(a) => Some((ApiKind::Openai, a)),
            _ => None,
        }
    }

    /// The variable holding this backend's secret, if it has one.
    pub fn secret_env(&self) -> Option<String> {
        self.api()
            .map(|(k, a)| {
                a.api_key_env
                    .clone()
                    .unwrap_or_else(|| k.default_key_env().to_owned())
            })
            .or_else(|| {
                let (kind, a) = self.agent()?;
                let provider = AgentKind::provider(kind, a.model.as_deref())?;
                Some(
                    a.api_key_env
                        .clone()
                        .unwrap_or_else(|| provider.default_key_env().to_owned()),
                )
            })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    #[serde(default)]
    pub rules: Vec<RouterRule>,
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Task type -> the backends the learned router chooses among for tasks of that type.
    #[serde(default)]
    pub learn: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterRule {
    pub when: String,
    #[serde(rename = "use")]
    pub use_: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub name: String,
    pub run: String,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Extra runs of a failing gate before it counts as failed (for flaky suites).
    #[serde(default)]
    pub retries: u32,
    /// The reports the gate leaves in the worktree (paths or globs, relative to its root).
    #[serde(default)]
    pub reports: Reports,
    /// A failure whose every failed test (by its JUnit report) is known flaky is retried and
    /// reported (the policy's `tests.quarantined`) instead of failing the change.
    #[serde(default)]
    pub quarantine: bool,
}

/// What a gate measured, in the formats tools already write. Each entry is a path or a glob
/// relative to the worktree's root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// JUnit XML (pytest `--junitxml`, cargo-nextest, go-junit-report, jest-junit, Surefire).
    #[serde(default, deserialize_with = "one_or_many")]
    pub junit: Vec<String>,
    /// LCOV or Cobertura XML.
    #[serde(default, deserialize_with = "one_or_many")]
    pub coverage: Vec<String>,
    /// SARIF 2.1 (semgrep, ruff, eslint, clippy-sarif, CodeQL).
    #[serde(default, deserialize_with = "one_or_many")]
    pub sarif: Vec<String>,
    /// A JSON object of figures (`{"mutation_score": 83.5}`), or cargo-mutants' `outcomes.json`:
    /// they go into the policy's `metrics`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub metrics: Vec<String>,
}

impl Reports {
    pub fn is_empty(&self) -> bool {
        self.junit.is_empty()
            && self.coverage.is_empty()
            && self.sarif.is_empty()
            && self.metrics.is_empty()
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    pub run_usd: Option<f64>,
    pub run_tokens: Option<u64>,
    pub task_usd: Option<f64>,
    pub task_tokens: Option<u64>,
    pub daily_usd: Option<f64>,
    pub daily_tokens: Option<u64>,
    pub weekly_usd: Option<f64>,
    pub weekly_tokens: Option<u64>,
    /// Caps per backend name, within a run.
    #[serde(default)]
    pub per_backend: BTreeMap<String, crate::backlog::TaskBudget>,
    pub alert_at: Option<f64>,
    pub timezone: Option<String>,
}

impl Budgets {
    /// The caps as a run freezes them (the run's wall time comes from `timeouts.run`).
    pub fn spec(&self, wall_ms: u64) -> crate::budget::BudgetSpec {
        use crate::budget::Cap;
        crate::budget::BudgetSpec {
            run: Cap {
                usd: self.run_usd,
                tokens: self.run_tokens,
            },
            task: Cap {
                usd: self.task_usd,
                tokens: self.task_tokens,
            },
            daily: Cap {
                usd: self.daily_usd,
                tokens: self.daily_tokens,
            },
            weekly: Cap {
                usd: self.weekly_usd,
                tokens: self.weekly_tokens,
            },
            per_backend: self
                .per_backend
                .iter()
                .map(|(k, b)| {
                    (
                        k.clone(),
                        Cap {
                            usd: b.usd,
                            tokens: b.tokens,
                        },
                    )
                })
                .collect(),
            wall_ms: Some(wall_ms),
            alert_at: self.alert_at.unwrap_or(0.8),
            timezone: self.timezone.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    pub policy_dir: Option<String>,
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    #[serde(default)]
    pub forbidden_paths: Vec<String>,
    #[serde(default)]
    pub forbidden_patterns: Vec<String>,
    pub max_diff_lines: Option<u64>,
    /// The most bytes a change may add (the policy's default: 1 MiB; 0: no bound).
    pub max_diff_bytes: Option<u64>,
    pub require_reason_for_access: Option<bool>,
    /// What a change to abo's own files (this configuration, the policy directory, the run's
    /// backlog, `.abo/`) gets: denied (the default), or a person's approval.
    pub protected: Option<Protected>,
    /// The verdict of each of the default bundle's rules, tightened or relaxed (`off`).
    #[serde(default)]
    pub rules: BTreeMap<Rule, RuleLevel>,
    /// The thresholds the default bundle's quality rules enforce.
    #[serde(default)]
    pub quality: Quality,
}

/// The default bundle's rules that `safety.rules` sets. Secrets always deny, and abo's own files
/// follow `safety.protected`: neither is here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    ForbiddenPaths,
    AllowedPaths,
    ForbiddenPatterns,
    MaxDiffLines,
    MaxDiffBytes,
    CiConfig,
    EnvFiles,
    BinaryFiles,
    SymlinkEscape,
    OutOfScope,
    Dependencies,
    GateFailed,
    TestsFewer,
    TestsRemoved,
    TestsSkipped,
    TestsWeakened,
    TestConfig,
    ChangedCoverage,
    NewFindings,
    TestsRequired,
    MutationScore,
    Quarantined,
}

impl Rule {
    pub const ALL: [Rule; 22] = [
        Self::ForbiddenPaths,
        Self::AllowedPaths,
        Self::ForbiddenPatterns,
        Self::MaxDiffLines,
        Self::MaxDiffBytes,
        Self::CiConfig,
        Self::EnvFiles,
        Self::BinaryFiles,
        Self::SymlinkEscape,
        Self::OutOfScope,
        Self::Dependencies,
        Self::GateFailed,
        Self::TestsFewer,
        Self::TestsRemoved,
        Self::TestsSkipped,
        Self::TestsWeakened,
        Self::TestConfig,
        Self::ChangedCoverage,
        Self::NewFindings,
        Self::TestsRequired,
        Self::MutationScore,
        Self::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForbiddenPaths => "forbidden_paths",
            Self::AllowedPaths => "allowed_paths",
            Self::ForbiddenPatterns => "forbidden_patterns",
            Self::MaxDiffLines => "max_diff_lines",
            Self::MaxDiffBytes => "max_diff_bytes",
            Self::CiConfig => "ci_config",
            Self::EnvFiles => "env_files",
            Self::BinaryFiles => "binary_files",
            Self::SymlinkEscape => "symlink_escape",
            Self::OutOfScope => "out_of_scope",
            Self::Dependencies => "dependencies",
            Self::GateFailed => "gate_failed",
            Self::TestsFewer => "tests_fewer",
            Self::TestsRemoved => "tests_removed",
            Self::TestsSkipped => "tests_skipped",
            Self::TestsWeakened => "tests_weakened",
            Self::TestConfig => "test_config",
            Self::ChangedCoverage => "changed_coverage",
            Self::NewFindings => "new_findings",
            Self::TestsRequired => "tests_required",
            Self::MutationScore => "mutation_score",
            Self::Quarantined => "quarantined",
        }
    }
}

/// What a rule's finding gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleLevel {
    Deny,
    NeedsApproval,
    Off,
}

impl RuleLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::NeedsApproval => "needs_approval",
            Self::Off => "off",
        }
    }
}

/// `safety.quality`: thresholds of the quality rules (percentages 0 to 100). Other keys are kept
/// for the user's own rules (`data.abo.config.quality`, and the input's `thresholds`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Quality {
    /// The least coverage of the lines a change adds (when a gate reports coverage).
    pub changed_lines: Option<f64>,
    /// The least overall coverage.
    pub min_coverage: Option<f64>,
    /// The least mutation score (`metrics.mutation_score`).
    pub min_mutation_score: Option<f64>,
    /// A new finding at or above this severity (`note`, `warning`, `error`).
    pub finding_severity: Option<Severity>,
    /// The task types whose source changes need a test change (default `code`, `refactor`).
    pub require_tests: Option<Vec<String>>,
    /// The user's own thresholds.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// SARIF's levels, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// The verdict on a change to abo's own files; named as the verdicts are (`needs_approval`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protected {
    #[default]
    Deny,
    NeedsApproval,
}

impl Protected {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::NeedsApproval => "needs_approval",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    pub mode: Option<SandboxMode>,
    pub gate_network: Option<GateNetwork>,
    #[serde(default)]
    pub agent_hosts: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub env_pass: Vec<String>,
    /// Paths denied on top of the defaults.
    #[serde(default)]
    pub deny_read: Vec<String>,
    /// Defaults taken off the denied list, each named exactly as in [`DEFAULT_DENY_READ`].
    #[serde(default)]
    pub deny_read_except: Vec<String>,
}

/// Whether a name (of a flag, a `-c` setting or a variable) is one of a credential.
pub fn names_a_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace(['-', '.'], "_");
    [
        "api_key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "credential",
        "auth_key",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The first argument of an agent's `args:` that carries a credential (`--openai-api-key X`,
/// `--api-key=X`, `-c model_providers.x.api_key=X`), with the flag or setting that names it.
fn credential_arg(args: &[String]) -> Option<(usize, String)> {
    for (i, a) in args.iter().enumerate() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, _)) if f.starts_with('-') => (f, true),
            Some((setting, _))
                if i > 0 && matches!(args[i - 1].as_str(), "-c" | "--config" | "--set") =>
            {
                (setting, true)
            }
            _ => (a.as_str(), false),
        };
        if !names_a_credential(flag) {
            continue;
        }
        if inline {
            return Some((i, flag.to_owned()));
        }
        if flag.starts_with('-') && i + 1 < args.len() {
            return Some((i + 1, flag.to_owned()));
        }
    }
    None
}

/// The variable that holds what a credential flag would have carried.
fn key_variable(kind: AgentKind, flag: &str) -> &'static str {
    let f = flag.to_ascii_lowercase();
    if f.contains("anthropic") {
        "ANTHROPIC_API_KEY"
    } else if f.contains("openai") {
        "OPENAI_API_KEY"
    } else {
        match kind {
            AgentKind::ClaudeCode => "ANTHROPIC_API_KEY",
            AgentKind::Codex | AgentKind::Aider | AgentKind::Goose => "OPENAI_API_KEY",
        }
    }
}

/// Paths no sandboxed process reads: the usual credential stores of a machine. `sandbox.deny_read`
/// adds to them; `sandbox.deny_read_except` takes one off, by name. Every `.abo/` directory abo
/// knows of is denied too (the runtime keeps that list).
pub const DEFAULT_DENY_READ: [&str; 44] = [
    "~/.ssh",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.gnupg",
    "~/.password-store",
    "~/.git-credentials",
    "~/.config/git/credentials",
    "~/.config/gh",
    "~/.config/hub",
    "~/.config/glab-cli",
    "~/.netrc",
    "~/.docker",
    "~/.kube",
    "~/.npmrc",
    "~/.yarnrc.yml",
    "~/.pypirc",
    "~/.cargo/credentials",
    "~/.cargo/credentials.toml",
    "~/.gem/credentials",
    "~/.terraform.d",
    "~/.vault-token",
    "~/.local/share/keyrings",
    "~/.local/state/abo",
    // Agent CLIs' logins and transcripts (an agent gets copies of what it needs in its own HOME).
    "~/.claude",
    "~/.claude.json",
    "~/.codex",
    "~/.config/goose",
    "~/.local/share/goose",
    "~/.aider.conf.yml",
    // Database logins and histories, which hold typed passwords and tokens.
    "~/.pgpass",
    "~/.my.cnf",
    "~/.bash_history",
    "~/.zsh_history",
    "~/.python_history",
    "~/.psql_history",
    "~/.mysql_history",
    "~/.node_repl_history",
    "~/.local/share/fish/fish_history",
    "~/.config/op",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssh",
    "/root/.ssh",
];

/// Hosts agent CLIs reach unless `sandbox.agent_hosts` says otherwise.
pub const DEFAULT_AGENT_HOSTS: [&str; 2] = ["api.anthropic.com", "api.openai.com"];

/// Processes per attempt unless `sandbox.limits.processes` says otherwise.
pub const DEFAULT_PROCESSES: u64 = 1024;

impl Notify {
    /// The channels a run freezes.
    pub fn spec(&self) -> crate::spec::NotifySpec {
        crate::spec::NotifySpec {
            webhooks: self
                .webhooks
                .iter()
                .map(|w| crate::spec::WebhookSpec {
                    url: w.url.clone(),
                    events: w.events.clone(),
                    format: w.format.clone().unwrap_or_else(|| "json".into()),
                    secret_env: w.secret_env.clone(),
                })
                .collect(),
            email: self.email.as_ref().map(|e| crate::spec::EmailSpec {
                smtp: e.smtp.clone(),
                from: e.from.clone(),
                to: e.to.clone(),
                events: e.events.clone(),
            }),
            dashboard_url: self
                .dashboard_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned()),
        }
    }
}

impl Sandbox {
    /// The sandbox a run freezes: `mode` defaults to `required` on Linux, `best-effort` elsewhere.
    pub fn spec(&self) -> crate::spec::SandboxSpec {
        let default_mode = if cfg!(target_os = "linux") {
            SandboxMode::Required
        } else {
            SandboxMode::BestEffort
        };
        let or = |v: &Vec<String>, d: &[&str]| {
            if v.is_empty() {
                d.iter().map(|s| (*s).to_owned()).collect()
            } else {
                v.clone()
            }
        };
        let l = &self.limits;
        crate::spec::SandboxSpec {
            mode: self.mode.unwrap_or(default_mode),
            gate_network: self.gate_network == Some(GateNetwork::Allow),
            agent_hosts: or(&self.agent_hosts, &DEFAULT_AGENT_HOSTS),
            deny_read: DEFAULT_DENY_READ
                .iter()
                .filter(|d| !self.deny_read_except.iter().any(|e| e == *d))
                .map(|d| (*d).to_owned())
                .chain(self.deny_read.iter().cloned())
                .collect(),
            env_pass: self.env_pass.clone(),
            memory_bytes: l.memory.map(|b| b.0),
            processes: Some(l.processes.unwrap_or(DEFAULT_PROCESSES)),
            cpu_seconds: l.cpu_time.map(|d| d.as_millis().div_ceil(1000)),
            file_size_bytes: l.file_size.map(|b| b.0),
            open_files: l.open_files,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    Required,
    BestEffort,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateNetwork {
    None,
    Allow,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory: Option<ByteSize>,
    pub processes: Option<u64>,
    pub cpu_time: Option<Dur>,
    pub file_size: Option<ByteSize>,
    pub open_files: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landing {
    #[serde(default)]
    pub mode: LandingMode,
    #[serde(default = "default_remote")]
    pub remote: String,
    #[serde(default = "default_true")]
    pub gates_after_merge: bool,
    /// `pull-request`: where to open it (default: github).
    #[serde(default)]
    pub provider: Option<Provider>,
    /// The provider's API (default `https://api.github.com`, `https://gitlab.com/api/v4`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// `owner/name` (GitHub) or the project's path (GitLab); default: from the remote's URL.
    #[serde(default)]
    pub repo: Option<String>,
    /// The variable holding the API token (default `GITHUB_TOKEN`, `GITLAB_TOKEN`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Gates run on the whole run branch once its tasks landed; a failure is bisected to the
    /// first bad commit, which is reverted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<crate::ids::GateName>,
    /// `abo daemon` runs `verify` on the base branch on this schedule: an interval (`30m`) or a
    /// cron expression (`0 3 * * *`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_schedule: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Github,
    Gitlab,
}

impl Landing {
    pub fn provider(&self) -> Provider {
        self.provider.unwrap_or_default()
    }

    pub fn api_url(&self) -> String {
        self.api_url
            .clone()
            .unwrap_or_else(|| match self.provider() {
                Provider::Github => "https://api.github.com".into(),
                Provider::Gitlab => "https://gitlab.com/api/v4".into(),
            })
    }

    pub fn token_env(&self) -> String {
        self.token_env
            .clone()
            .unwrap_or_else(|| match self.provider() {
                Provider::Github => "GITHUB_TOKEN".into(),
                Provider::Gitlab => "GITLAB_TOKEN".into(),
            })
    }
}

fn default_remote() -> String {
    "origin".into()
}
fn default_true() -> bool {
    true
}

impl Default for Landing {
    fn default() -> Self {
        Self {
            mode: LandingMode::Branch,
            remote: default_remote(),
            gates_after_merge: true,
            provider: None,
            api_url: None,
            repo: None,
            token_env: None,
            verify: Vec::new(),
            verify_schedule: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandingMode {
    #[default]
    Branch,
    Push,
    PullRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    #[serde(default)]
    pub email: Option<Email>,
    /// `HH:MM` (in `schedule.timezone`): `abo daemon` sends the "coming home" summary of the last
    /// 24 hours then, every day, to the webhooks and the email.
    #[serde(default)]
    pub digest: Option<String>,
    /// The dashboard's public address (`https://abo.example.com`, where `abo serve` is reached):
    /// a waiting approval's notification links to its task's page there.
    #[serde(default)]
    pub dashboard_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// When attempts may start: `HH:MM-HH:MM`, in local time or `timezone`.
    #[serde(default)]
    pub windows: Vec<String>,
    /// IANA name of the zone of `windows` and `cron` (default: local).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Backlogs `abo daemon` starts on cron expressions.
    #[serde(default)]
    pub cron: Vec<CronRun>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronRun {
    /// `minute hour day-of-month month day-of-week`.
    pub at: String,
    /// A backlog path inside the repository.
    pub backlog: String,
    #[serde(default)]
    pub profile: Option<String>,
}

impl Schedule {
    /// The windows a run freezes (validated with the config).
    pub fn spec(&self) -> crate::spec::ScheduleSpec {
        crate::spec::ScheduleSpec {
            windows: self
                .windows
                .iter()
                .filter_map(|w| crate::schedule::Window::parse(w).ok())
                .collect(),
            timezone: self.timezone.clone(),
        }
    }
}

impl Config {
    /// The configuration used when a repository has no abo.yml.
    pub fn embedded_default() -> Self {
        Self {
            version: 1,
            base_branch: None,
            store: None,
            autonomy: Autonomy::default(),
            parallelism: Parallelism::default(),
            attempts: Attempts::default(),
            timeouts: Timeouts::default(),
            backends: Backends::default(),
            router: Router::default(),
            gates: Vec::new(),
            budgets: Budgets::default(),
            pricing: BTreeMap::new(),
            safety: Safety::default(),
            sandbox: Sandbox::default(),
            landing: Landing::default(),
            notify: Notify::default(),
            schedule: Schedule::default(),
            review: None,
            deploy: crate::deploy::Environments::new(),
            mcp: Mcp::default(),
            proposals: Proposals::default(),
            hedge: None,
        }
    }

    /// Parses abo.yml; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, InputError> {
        let config: Config =
            serde_yaml::from_str(text).map_err(|e| locate_backend_error(file, text, &e))?;
        config.validate(file, text)?;
        Ok(config)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), InputError> {
        let err = |path: &[PathSeg], msg: String| InputError::new(file, msg).at(locate(text, path));
        if self.version != 1 {
            return Err(err(
                &[PathSeg::key("version")],
                format!("unsupported version {}", self.version),
            )
            .hint("this abo reads `version: 1`"));
        }
        if let Some(u) = &self.notify.dashboard_url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            let host = rest.map(|r| r.split('/').next().unwrap_or(""));
            if host.is_none_or(str::is_empty)
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
                || u.contains(['?', '#'])
            {
                return Err(err(
                    &[PathSeg::key("notify"), PathSeg::key("dashboard_url")],
                    format!("`notify.dashboard_url` `{u}` is not an http(s) address"),
                )
                .hint("the address `abo serve` is reached at, e.g. `https://abo.example.com`"));
            }
        }
        if self.parallelism.max_parallel == 0 {
            return Err(err(
                &[PathSeg::key("parallelism"), PathSeg::key("max_parallel")],
                "`parallelism.max_parallel` must be at least 1".into(),
            ));
        }
        if self.attempts.max == 0 {
            return Err(err(
                &[PathSeg::key("attempts"), PathSeg::key("max")],
                "`attempts.max` must be at least 1".into(),
            ));
        }
        if let Some(d) = &self.backends.default
            && !self.backends.named.contains_key(d)
        {
            let names = self.backends.named.keys().map(String::as_str);
            let e = err(
                &[PathSeg::key("backends"), PathSeg::key("default")],
                format!("`backends.default` names unknown backend `{d}`"),
            );
            return Err(match nearest(d, names) {
                Some(n) => e.hint(format!("did you mean `{n}`?")),
                None => e,
            });
        }
        for (i, e) in self.sandbox.deny_read_except.iter().enumerate() {
            if !DEFAULT_DENY_READ.contains(&e.as_str()) {
                let e = err(
                    &[
                        PathSeg::key("sandbox"),
                        PathSeg::key("deny_read_except"),
                        PathSeg::Index(i),
                    ],
                    format!("`{e}` is not one of the paths denied by default"),
                );
                return Err(
                    match nearest(
                        self.sandbox.deny_read_except[i].as_str(),
                        DEFAULT_DENY_READ.iter().copied(),
                    ) {
                        Some(n) => e.hint(format!("did you mean `{n}`?")),
                        None => {
                            e.hint("`sandbox.deny_read_except` only takes a default off the list")
                        }
                    },
                );
            }
        }
        for (name, b) in &self.backends.named {
            let Some((kind, a)) = b.agent() else { continue };
            if let Some((i, flag)) = credential_arg(&a.args) {
                return Err(err(
                    &[
                        PathSeg::key("backends"),
                        PathSeg::key(name),
                        PathSeg::key("args"),
                        PathSeg::Index(i),
                    ],
                    format!(
                        "`{flag}` writes a credential into the config, where every run would store it"
                    ),
                )
                .hint(format!(
                    "leave it out of `args` and export {} instead: abo hands it to the agent and redacts its value",
                    key_variable(kind, &flag)
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, g) in self.gates.iter().enumerate() {
            let path = [
                PathSeg::key("gates"),
                PathSeg::Index(i),
                PathSeg::key("name"),
            ];
            if g.name.is_empty() || !seen.insert(g.name.as_str()) {
                return Err(err(
                    &path,
                    format!("duplicate or empty gate name `{}`", g.name),
                ));
            }
        }
        for (name, b) in &self.backends.named {
            if let Some((kind, a)) = b.agent()
                && kind != AgentKind::ClaudeCode
            {
                for (field, set) in [
                    ("max_turns", a.max_turns.is_some()),
                    ("permission_mode", a.permission_mode.is_some()),
                ] {
                    if set {
                        return Err(err(
                            &[
                                PathSeg::key("backends"),
                                PathSeg::key(name),
                                PathSeg::key(field),
                            ],
                            format!(
                                "`backends.{name}.{field}` applies to claude-code only, not {}",
                                kind.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        for (name, b) in &self.backends.named {
            if let Some((AgentKind::Goose, a)) = b.agent()
                && a.credentials == Some(Credentials::Proxy)
            {
                return Err(err(
                    &[
                        PathSeg::key("backends"),
                        PathSeg::key(name),
                        PathSeg::key("credentials"),
                    ],
                    format!(
                        "`backends.{name}.credentials: proxy` is not possible for goose, which reads its provider and key from its own configuration: use `env`"
                    ),
                ));
            }
        }
        for (i, name) in self.router.fallback.iter().enumerate() {
            if !self.backends.named.contains_key(name) {
                return Err(err(
                    &[
                        PathSeg::key("router"),
                        PathSeg::key("fallback"),
                        PathSeg::Index(i),
                    ],
                    format!("`router.fallback` names unknown backend `{name}`"),
                ));
            }
        }
        for (i, name) in self.landing.verify.iter().enumerate() {
            if self.gate(name.as_str()).is_none() {
                let e = err(
                    &[
                        PathSeg::key("landing"),
                        PathSeg::key("verify"),
                        PathSeg::Index(i),
                    ],
                    format!("`landing.verify` names unknown gate `{name}`"),
                );
                let names = self.gates.iter().map(|g| g.name.as_str());
                return Err(match nearest(name.as_str(), names) {
                    Some(n) => e.hint(format!("did you mean `{n}`?")),
                    None => e,
                });
            }
        }
        if let Some(r) = &self.review {
            if r.backends.is_empty() {
                return Err(err(
                    &[PathSeg::key("review"), PathSeg::key("backends")],
                    "`review.backends` names no backend".into(),
                ));
            }
            for (i, name) in r.backends.iter().enumerate() {
                let at = [
                    PathSeg::key("review"),
                    PathSeg::key("backends"),
                    PathSeg::Index(i),
                ];
                match self.backends.named.get(name) {
                    None => {
                        return Err(err(
                            &at,
                            format!("`review.backends` names unknown backend `{name}`"),
                        ));
                    }
                    // An agent CLI edits files where it runs: a reviewer must only read.
                    Some(b) if b.agent().is_some() => {
                        return Err(err(
                            &at,
                            format!(
                                "`review.backends`: `{name}` is an agent CLI; a reviewer is a model API or a command"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        self.validate_router(&err)?;
        self.validate_proposals(&err)?;
        for (i, w) in self.schedule.windows.iter().enumerate() {
            if let Err(e) = crate::schedule::Window::parse(w) {
                return Err(err(
                    &[
                        PathSeg::key("schedule"),
                        PathSeg::key("windows"),
                        PathSeg::Index(i),
                    ],
                    format!("`schedule.windows[{i}]`: {e}"),
                ));
            }
        }
        if let Some(at) = &self.landing.verify_schedule {
            let path = [PathSeg::key("landing"), PathSeg::key("verify_schedule")];
            if let Err(e) = crate::schedule::Every::parse(at) {
                return Err(err(&path, format!("`landing.verify_schedule`: {e}")));
            }
            if self.landing.verify.is_empty() {
                return Err(err(
                    &path,
                    "`landing.verify_schedule` needs gates in `landing.verify` to run".to_owned(),
                ));
            }
        }
        for (i, c) in self.schedule.cron.iter().enumerate() {
            if let Err(e) = crate::schedule::Cron::parse(&c.at) {
                return Err(err(
                    &[
                        PathSeg::key("schedule"),
                        PathSeg::key("cron"),
                        PathSeg::Index(i),
                        PathSeg::key("at"),
                    ],
                    format!("`schedule.cron[{i}].at`: {e}"),
                ));
            }
        }
        if let Some(a) = self.budgets.alert_at
            && !(a > 0.0 && a <= 1.0)
        {
            return Err(err(
                &[PathSeg::key("budgets"), PathSeg::key("alert_at")],
                format!("`budgets.alert_at` must be a fraction in (0, 1], not {a}"),
            ));
        }
        for name in self.budgets.per_backend.keys() {
            if !self.backends.named.contains_key(name) {
                return Err(err(
                    &[
                        PathSeg::key("budgets"),
                        PathSeg::key("per_backend"),
                        PathSeg::key(name),
                    ],
                    format!("`budgets.per_backend` names unknown backend `{name}`"),
                ));
            }
        }
        for name in self.parallelism.per_backend.keys() {
            if !self.backends.named.contains_key(name) {
                return Err(err(
                    &[
                        PathSeg::key("parallelism"),
                        PathSeg::key("per_backend"),
                        PathSeg::key(name),
                    ],
                    format!("`parallelism.per_backend` names unknown backend `{name}`"),
                ));
            }
        }
        Ok(())
    }

    /// `proposals.rules` (each `when:` compiles, `n` in 1..=8), `proposals.select` (known
    /// criteria, each once) and `hedge` (`after` is `p90` or a duration).
    fn validate_proposals(
        &self,
        err: &dyn Fn(&[PathSeg], String) -> InputError,
    ) -> Result<(), InputError> {
        use crate::proposal::{Criterion, MAX_PROPOSALS};
        for (i, r) in self.proposals.rules.iter().enumerate() {
            let at = |field: &str| {
                [
                    PathSeg::key("proposals"),
                    PathSeg::key("rules"),
                    PathSeg::Index(i),
                    PathSeg::key(field),
                ]
            };
            if let Err(e) = crate::route::compile(&r.when) {
                return Err(err(
                    &at("when"),
                    format!("`proposals.rules[{i}].when`: {e} in `{}`", r.when),
                ));
            }
            if r.n == 0 || r.n > MAX_PROPOSALS {
                return Err(err(
                    &at("n"),
                    format!(
                        "`proposals.rules[{i}].n` must be from 1 to {MAX_PROPOSALS}, not {}",
                        r.n
                    ),
                ));
            }
        }
        for (i, c) in self.proposals.select.iter().enumerate() {
            let at = [
                PathSeg::key("proposals"),
                PathSeg::key("select"),
                PathSeg::Index(i),
            ];
            if Criterion::parse(c).is_none() {
                let e = err(
                    &at,
                    format!(
                        "`proposals.select[{i}]`: unknown criterion `{c}` (one of: {})",
                        Criterion::ALL.join(", ")
                    ),
                );
                return Err(match nearest(c, Criterion::ALL.iter().copied()) {
                    Some(n) => e.hint(format!("did you mean `{n}`?")),
                    None => e,
                });
            }
            if self.proposals.select[..i].contains(c) {
                return Err(err(
                    &at,
                    format!("`proposals.select[{i}]`: `{c}` is listed twice"),
                ));
            }
        }
        if let Some(h) = &self.hedge
            && h.spec().is_none()
        {
            return Err(err(
                &[PathSeg::key("hedge"), PathSeg::key("after")],
                format!(
                    "`hedge.after` must be `p90` or a duration such as `10m`, not `{}`",
                    h.after
                ),
            ));
        }
        Ok(())
    }

    /// `router.rules` (each `when:` compiles, each `use:` is a backend) and `router.learn`.
    fn validate_router(
        &self,
        err: &dyn Fn(&[PathSeg], String) -> InputError,
    ) -> Result<(), InputError> {
        let unknown = |path: &[PathSeg], what: &str, name: &str| {
            let e = err(path, format!("{what} names unknown backend `{name}`"));
            match nearest(name, self.backends.named.keys().map(String::as_str)) {
                Some(n) => e.hint(format!("did you mean `{n}`?")),
                None => e,
            }
        };
        for (i, r) in self.router.rules.iter().enumerate() {
            let at = |field: &str| {
                [
                    PathSeg::key("router"),
                    PathSeg::key("rules"),
                    PathSeg::Index(i),
                    PathSeg::key(field),
                ]
            };
            if let Err(e) = crate::route::compile(&r.when) {
                return Err(err(
                    &at("when"),
                    format!("`router.rules[{i}].when`: {e} in `{}`", r.when),
                ));
            }
            if !self.backends.named.contains_key(&r.use_) {
                return Err(unknown(
                    &at("use"),
                    &format!("`router.rules[{i}].use`"),
                    &r.use_,
                ));
            }
        }
        for (kind, names) in &self.router.learn {
            let path = |j: Option<usize>| {
                let mut p = vec![
                    PathSeg::key("router"),
                    PathSeg::key("learn"),
                    PathSeg::key(kind),
                ];
                p.extend(j.map(PathSeg::Index));
                p
            };
            if crate::backlog::TaskType::parse(kind).is_none() {
                let types: Vec<&str> = crate::backlog::TaskType::ALL
                    .iter()
                    .map(|t| t.as_str())
                    .collect();
                return Err(err(
                    &path(None),
                    format!(
                        "`router.learn` names unknown task type `{kind}` (one of: {})",
                        types.join(", ")
                    ),
                ));
            }
            for (j, n) in names.iter().enumerate() {
                if !self.backends.named.contains_key(n) {
                    return Err(unknown(
                        &path(Some(j)),
                        &format!("`router.learn.{kind}`"),
                        n,
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn gate(&self, name: &str) -> Option<&Gate> {
        self.gates.iter().find(|g| g.name == name)
    }
}

/// Backend entries are parsed from an intermediate value, which loses serde_yaml's location:
/// find the entry in the text instead.
fn locate_backend_error(file: &str, text: &str, e: &serde_yaml::Error) -> InputError {
    let out = from_yaml_error(file, text, e);
    let quoted = out.message.split('`').nth(1).unwrap_or_default();
    if !quoted.starts_with("backends.") {
        return out;
    }
    let path: Vec<PathSeg> = quoted.split('.').map(PathSeg::key).collect();
    match locate(text, &path) {
        Some(pos) => out.at(Some(pos)),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full example configuration (every section, as the product documents it) parses.
    #[test]
    fn design_example_parses() {
        let text = include_str!("../tests/data/design-abo.yml");
        let c = Config::parse("abo.yml", text).unwrap();
        assert_eq!(c.parallelism.max_parallel, 4);
        assert_eq!(c.attempts.max, 3);
        assert_eq!(c.timeouts.gate.to_string(), "10m");
        assert_eq!(c.backends.default.as_deref(), Some("claude"));
        assert_eq!(
            c.backends.named["fmt"],
            BackendConfig::Command {
                run: "cargo fmt".into()
            }
        );
        assert_eq!(c.backends.named["claude"].kind(), "claude-code");
        let (kind, claude) = c.backends.named["claude"].agent().unwrap();
        assert_eq!(
            (kind, claude.max_turns, claude.model.as_deref()),
            (AgentKind::ClaudeCode, Some(40), Some("sonnet"))
        );
        let (kind, local) = c.backends.named["local"].api().unwrap();
        assert_eq!(
            (kind, local.base_url.as_deref()),
            (ApiKind::Openai, Some("http://127.0.0.1:11434/v1"))
        );
        assert_eq!(
            c.backends.named["premium"].secret_env().as_deref(),
            Some("ANTHROPIC_API_KEY")
        );
        assert_eq!(c.router.fallback, ["local"]);
        assert_eq!(c.gates[1].retries, 1);
        assert_eq!(c.sandbox.limits.memory, Some(ByteSize(4 << 30)));
        assert_eq!(c.landing.mode, LandingMode::Branch);
    }

    fn err(text: &str) -> String {
        Config::parse("abo.yml", text).unwrap_err().to_string()
    }

    #[test]
    fn proposals_and_hedge_are_checked_when_loaded() {
        let c = Config::parse(
            "abo.yml",
            "version: 1\nproposals:\n  rules: [{ when: \"risk == 'high'\", n: 3 }]\n  select: [diff, cost]\nhedge: { after: 10m }\n",
        )
        .unwrap();
        let p = c.proposals.spec();
        assert_eq!(p.rules[0].n, 3);
        assert_eq!(
            p.order(),
            [
                crate::proposal::Criterion::Diff,
                crate::proposal::Criterion::Cost
            ]
        );
        assert_eq!(
            c.hedge.and_then(|h| h.spec()),
            Some(crate::proposal::HedgeSpec {
                after: crate::proposal::HedgeAfter::Ms(600_000),
                max: 1
            })
        );
        assert_eq!(
            err("version: 1\nproposals:\n  rules:\n    - when: 'true'\n      n: 9\n"),
            "abo.yml:5:7: `proposals.rules[0].n` must be from 1 to 8, not 9"
        );
        assert_eq!(
            err("version: 1\nproposals:\n  select:\n    - diff\n    - cots\n"),
            "abo.yml:5:5: `proposals.select[1]`: unknown criterion `cots` (one of: review, findings, coverage, diff, cost) (hint: did you mean `cost`?)"
        );
        assert_eq!(
            err("version: 1\nproposals:\n  select:\n    - diff\n    - diff\n"),
            "abo.yml:5:5: `proposals.select[1]`: `diff` is listed twice"
        );
        assert_eq!(
            err("version: 1\nhedge:\n  after: p95\n"),
            "abo.yml:3:3: `hedge.after` must be `p90` or a duration such as `10m`, not `p95`"
        );
    }

    #[test]
    fn mcp_max_checks_defaults_to_five_and_is_located_when_wrong() {
        let c = Config::parse("abo.yml", "version: 1\n").unwrap();
        assert_eq!(c.mcp.max_checks, Mcp::DEFAULT_MAX_CHECKS);
        assert_eq!(Mcp::DEFAULT_MAX_CHECKS, 5);
        let c = Config::parse("abo.yml", "version: 1\nmcp: { max_checks: 0 }\n").unwrap();
        assert_eq!(c.mcp.max_checks, 0);
        assert_eq!(
            err("version: 1\nmcp:\n  max_check: 2\n"),
            "abo.yml:3:3: unknown key `mcp.max_check` (hint: did you mean `max_checks`?)"
        );
    }

    #[test]
    fn errors_name_the_place() {
        assert_eq!(
            err("version: 1\ntimeouts:\n  atempt: 5m\n"),
            "abo.yml:3:3: unknown key `timeouts.atempt` (hint: did you mean `attempt`?)"
        );
        assert_eq!(
            err("version: 1\nparalelism: {}\n"),
            "abo.yml:2:1: unknown key `paralelism` (hint: did you mean `parallelism`?)"
        );
        assert_eq!(
            err("version: 1\ntimeouts:\n  gate: 5 minutes\n"),
            "abo.yml:3:3: `timeouts.gate`: invalid duration `5 minutes`: unit must be one of ms, s, m, h, d"
        );
        assert_eq!(
            err("version: 1\nbackends:\n  fmt:\n    kind: command\n    rn: x\n"),
            "abo.yml:5:5: unknown key `backends.fmt.rn` (hint: did you mean `run`?)"
        );
        assert_eq!(
            err("version: 2\n"),
            "abo.yml:1:1: unsupported version 2 (hint: this abo reads `version: 1`)"
        );
        assert_eq!(
            err("version: 1\nbackends:\n  default: fmtt\n  fmt: { kind: command, run: x }\n"),
            "abo.yml:3:3: `backends.default` names unknown backend `fmtt` (hint: did you mean `fmt`?)"
        );
        assert_eq!(
            err("version: 1\nlanding: { mode: pull }\n")
                .split(" (hint")
                .next()
                .unwrap(),
            "abo.yml:2:18: `landing.mode`: unknown value `pull`"
        );
        assert!(err("version: [\n").starts_with("abo.yml:"));
        assert_eq!(
            err("version: 1\nbackends:\n  cx: { kind: codex, max_turns: 3 }\n"),
            "abo.yml:3:3: `backends.cx.max_turns` applies to claude-code only, not codex"
        );
        assert_eq!(
            err("version: 1\nbackends:\n  g: { kind: goose, credentials: proxy }\n"),
            "abo.yml:3:3: `backends.g.credentials: proxy` is not possible for goose, which reads its provider and key from its own configuration: use `env`"
        );
        assert_eq!(
            err("version: 1\nbackends:\n  cl:\n    kind: claude-code\n    modle: x\n"),
            "abo.yml:5:5: unknown key `backends.cl.modle` (hint: did you mean `model`?)"
        );
        assert_eq!(
            err("version: 1\nsafety:\n  protected: allow\n")
                .split(" (hint")
                .next()
                .unwrap(),
            "abo.yml:3:14: `safety.protected`: unknown value `allow`"
        );
        assert_eq!(
            err("version: 1\nrouter: { fallback: [nope] }\n"),
            "abo.yml:2:1: `router.fallback` names unknown backend `nope`"
        );
        assert_eq!(
            err("version: 1\ngates:\n  - { name: e2e, run: 'true' }\nlanding:\n  verify: [e2f]\n"),
            "abo.yml:5:3: `landing.verify` names unknown gate `e2f` (hint: did you mean `e2e`?)"
        );
    }

    #[test]
    fn router_rules_are_checked_when_loaded() {
        let cfg = |router: &str| {
            format!(
                "version: 1\nbackends:\n  local: {{ kind: openai, base_url: 'http://127.0.0.1:1/v1', model: m }}\nrouter:\n{router}"
            )
        };
        assert_eq!(
            err(&cfg(
                "  rules:\n    - when: \"tsk.type == 'docs'\"\n      use: local\n"
            )),
            "abo.yml:6:7: `router.rules[0].when`: column 1: unknown variable `tsk` (known: attempt, budget, context_tokens, risk, task) in `tsk.type == 'docs'`"
        );
        assert_eq!(
            err(&cfg(
                "  rules:\n    - when: \"budget.usd_remaining <\"\n      use: local\n"
            )),
            "abo.yml:6:7: `router.rules[0].when`: column 23: expected a value, found the end of the expression in `budget.usd_remaining <`"
        );
        assert_eq!(
            err(&cfg("  rules:\n    - when: \"true\"\n      use: lokal\n")),
            "abo.yml:7:7: `router.rules[0].use` names unknown backend `lokal` (hint: did you mean `local`?)"
        );
        assert_eq!(
            err(&cfg("  learn: { docz: [local] }\n")),
            "abo.yml:5:3: `router.learn` names unknown task type `docz` (one of: spec, code, test, docs, refactor, review, lint, perf, security, dep_update, chore)"
        );
        let ok = Config::parse(
            "abo.yml",
            &cfg(
                "  rules:\n    - { when: \"task.type == 'docs' && budget.usd_remaining < 5.0\", use: local }\n  learn: { docs: [local] }\n",
            ),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}

/// `mcp:`: the MCP server abo offers the agent inside an attempt (its `check` tool).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mcp {
    /// How many times an attempt's agent may call `check` (0: the tool is not offered).
    #[serde(default = "Mcp::default_max_checks")]
    pub max_checks: u32,
}

impl Mcp {
    pub const DEFAULT_MAX_CHECKS: u32 = 5;

    fn default_max_checks() -> u32 {
        Self::DEFAULT_MAX_CHECKS
    }
}

impl Default for Mcp {
    fn default() -> Self {
        Self {
            max_checks: Self::DEFAULT_MAX_CHECKS,
        }
    }
}
