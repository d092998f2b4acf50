//! The reference of `abo.yml` and of the YAML backlog: every key with its type, default, an
//! example and what it does, in one table each. `docs/configuration.md` and the JSON Schemas in
//! `docs/schema/` are generated from these tables, and the tests check the tables against the
//! parsers themselves (every key the parser accepts is documented, every documented key is
//! accepted, every example parses), so the documents cannot drift from the code.

use serde_json::{Map, Value, json};

/// A key's type, as the reference shows it and as its schema says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Num,
    Bool,
    /// `90s`, `30m`, `2h`, `1d`.
    Dur,
    /// `512MiB`, `2GiB`.
    Size,
    Strs,
    /// A map of names to strings.
    StrMap,
    /// A string or a list of strings.
    StrOrStrs,
    Enum(&'static [&'static str]),
    /// An object whose keys are the entries under `path.`.
    Object,
    /// A list of objects whose keys are the entries under `path[].`.
    Objects,
    /// A map of names to objects whose keys are the entries under `path.<...>.`.
    Named,
    /// A map of names to values of this type's entry `path.<...>`.
    NamedValues,
}

impl Ty {
    pub fn show(self) -> String {
        match self {
            Ty::Str => "string".into(),
            Ty::Int => "integer".into(),
            Ty::Num => "number".into(),
            Ty::Bool => "boolean".into(),
            Ty::Dur => "duration (`90s`, `30m`, `2h`)".into(),
            Ty::Size => "size (`512MiB`, `2GiB`)".into(),
            Ty::Strs => "list of strings".into(),
            Ty::StrMap => "map of strings".into(),
            Ty::StrOrStrs => "string or list of strings".into(),
            Ty::Enum(v) => format!(
                "one of {}",
                v.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ty::Object => "object".into(),
            Ty::Objects => "list of objects".into(),
            Ty::Named | Ty::NamedValues => "map by name".into(),
        }
    }
}

/// One key: its dotted path (`gates[].name`, `backends.<name>.model`), type, default, an example
/// value (YAML, as written after the key) and what it does.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub path: &'static str,
    pub ty: Ty,
    pub default: &'static str,
    pub example: &'static str,
    pub doc: &'static str,
}

const fn k(
    path: &'static str,
    ty: Ty,
    default: &'static str,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        path,
        ty,
        default,
        example,
        doc,
    }
}

const TASK_TYPES: &[&str] = &[
    "spec",
    "code",
    "test",
    "docs",
    "refactor",
    "review",
    "lint",
    "perf",
    "security",
    "dep_update",
    "chore",
];

/// Every key of `abo.yml`, in the order the reference shows them.
pub const CONFIG: &[Key] = &[
    k(
        "version",
        Ty::Int,
        "required",
        "1",
        "The file's format version; `1`.",
    ),
    k(
        "base_branch",
        Ty::Str,
        "the branch checked out when the run starts",
        "main",
        "The branch runs start from and land into (with `landing.mode: push` or when the checkout is clean).",
    ),
    k(
        "store",
        Ty::Str,
        "`sqlite:.abo/abo.db`",
        "postgres://abo@db.internal/abo",
        "Where the event log lives: `sqlite:PATH` (relative to the repository) or a `postgres://` URL for many machines. `--store` overrides it.",
    ),
    k(
        "autonomy",
        Ty::Object,
        "",
        "",
        "How far abo goes without a person, per action class.",
    ),
    k(
        "autonomy.profile",
        Ty::Str,
        "`prod-conservative`",
        "staging-aggressive",
        "A named profile of levels: `manual` (A0 everywhere), `assisted` (A1, deploys A0), `prod-conservative` (A2, merges A3), `staging-aggressive` (A4), `exploration` (A5).",
    ),
    k(
        "autonomy.overrides",
        Ty::StrMap,
        "none",
        "{ merge: A3 }",
        "A level (A0 to A5) per action class (`plan`, `fetch`, `generate`, `execute`, `merge`, `deploy`), on top of the profile.",
    ),
    k(
        "parallelism",
        Ty::Object,
        "",
        "",
        "How many attempts run at once.",
    ),
    k(
        "parallelism.max_parallel",
        Ty::Int,
        "4",
        "8",
        "Attempts running at once, in all.",
    ),
    k(
        "parallelism.per_backend",
        Ty::NamedValues,
        "none",
        "{ claude: 2 }",
        "Attempts running at once on one backend.",
    ),
    k(
        "parallelism.per_backend.<name>",
        Ty::Int,
        "",
        "2",
        "The backend's limit.",
    ),
    k("attempts", Ty::Object, "", "", "Retries of a task."),
    k(
        "attempts.max",
        Ty::Int,
        "3",
        "2",
        "Attempts of a task before it fails; each later attempt gets the previous one's failure as feedback.",
    ),
    k(
        "attempts.stop_after_consecutive_failures",
        Ty::Int,
        "3",
        "0",
        "Pause the run after this many tasks fail in a row (0: never).",
    ),
    k("timeouts", Ty::Object, "", "", "Time limits."),
    k(
        "timeouts.attempt",
        Ty::Dur,
        "`30m`",
        "45m",
        "An attempt's backend, from start to end.",
    ),
    k(
        "timeouts.silence",
        Ty::Dur,
        "`5m`",
        "10m",
        "How long an agent may print nothing before it is stopped.",
    ),
    k(
        "timeouts.gate",
        Ty::Dur,
        "`10m`",
        "15m",
        "A gate's default timeout (a gate's own `timeout` wins).",
    ),
    k(
        "timeouts.run",
        Ty::Dur,
        "`8h`",
        "12h",
        "The run's wall time, pauses excluded (the `run.wall` cap).",
    ),
    k(
        "backends",
        Ty::Object,
        "",
        "",
        "What produces changes: agent CLIs, model APIs, shell commands.",
    ),
    k(
        "backends.default",
        Ty::Str,
        "the only backend, else `claude`",
        "claude",
        "The backend of tasks that name none (and that no router rule picks).",
    ),
    k(
        "backends.<name>",
        Ty::Object,
        "",
        "",
        "A named backend; `kind` says which.",
    ),
    k(
        "backends.<name>.kind",
        Ty::Enum(&[
            "claude-code",
            "codex",
            "aider",
            "goose",
            "anthropic",
            "openai",
            "command",
        ]),
        "required",
        "claude-code",
        "An agent CLI (`claude-code`, `codex`, `aider`, `goose`), a model API called by abo (`anthropic`, `openai` or any OpenAI-compatible server), or a shell `command`.",
    ),
    k(
        "backends.<name>.command",
        Ty::Str,
        "the tool's usual name on PATH",
        "/opt/claude/bin/claude",
        "Agents: the executable.",
    ),
    k(
        "backends.<name>.model",
        Ty::Str,
        "the tool's default (required for APIs)",
        "sonnet",
        "Agents and APIs: the model.",
    ),
    k(
        "backends.<name>.max_turns",
        Ty::Int,
        "none",
        "40",
        "claude-code: `--max-turns`.",
    ),
    k(
        "backends.<name>.permission_mode",
        Ty::Str,
        "`acceptEdits`",
        "acceptEdits",
        "claude-code: `--permission-mode`.",
    ),
    k(
        "backends.<name>.args",
        Ty::Strs,
        "none",
        "[--verbose]",
        "Agents: extra arguments, appended as written (a credential here is refused: keep keys in the environment).",
    ),
    k(
        "backends.<name>.context_tokens",
        Ty::Int,
        "the backend's default",
        "8000",
        "Agents and APIs: tokens of repository files put in the prompt.",
    ),
    k(
        "backends.<name>.base_url",
        Ty::Str,
        "the provider's",
        "http://127.0.0.1:11434/v1",
        "Agents and APIs: the endpoint (a gateway, a local model server); for agents its host is added to `sandbox.agent_hosts`.",
    ),
    k(
        "backends.<name>.api_key_env",
        Ty::Str,
        "the tool's usual variable (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`)",
        "MY_GATEWAY_KEY",
        "Agents and APIs: the variable holding the key. Its value is never recorded or printed.",
    ),
    k(
        "backends.<name>.credentials",
        Ty::Enum(&["proxy", "env"]),
        "`proxy` (goose: `env`)",
        "proxy",
        "Agents: where the key is kept: in abo's egress proxy, which adds it to the CLI's requests (the CLI never sees it), or in the CLI's environment.",
    ),
    k(
        "backends.<name>.max_tokens",
        Ty::Int,
        "the provider's",
        "8192",
        "APIs: the reply's token limit.",
    ),
    k(
        "backends.<name>.retries",
        Ty::Int,
        "3",
        "5",
        "APIs: tries of a request that failed transiently (429, 5xx, timeouts) before the attempt fails.",
    ),
    k(
        "backends.<name>.run",
        Ty::Str,
        "required for `command`",
        "cargo fmt",
        "command: the shell command run in the attempt's worktree (its environment: `ABO_TASK_ID`, `ABO_PROMPT_FILE`, ...).",
    ),
    k("router", Ty::Object, "", "", "Which backend a task gets."),
    k(
        "router.rules",
        Ty::Objects,
        "none",
        "",
        "Rules tried in order; the first whose `when` holds and whose backend is healthy wins.",
    ),
    k(
        "router.rules[].when",
        Ty::Str,
        "required",
        "\"task.type == 'docs'\"",
        "A CEL expression over `task` (`type`, `labels`, `paths`, `context_tokens`) and `budget` (`usd_remaining`, `tokens_remaining`).",
    ),
    k(
        "router.rules[].use",
        Ty::Str,
        "required",
        "local",
        "The backend's name.",
    ),
    k(
        "router.fallback",
        Ty::Strs,
        "none",
        "[local]",
        "Backends to fall back to, in order, when the chosen one's circuit is open or it is held by a usage limit.",
    ),
    k(
        "router.learn",
        Ty::NamedValues,
        "none",
        "{ code: [claude, codex] }",
        "Per task type, the backends a learned router chooses among (Thompson sampling over what landed).",
    ),
    k(
        "router.learn.<type>",
        Ty::Strs,
        "",
        "[claude, codex]",
        "The backends for that task type.",
    ),
    k(
        "gates",
        Ty::Objects,
        "none",
        "",
        "Commands that must pass on every attempt's worktree (and on the merged tree).",
    ),
    k(
        "gates[].name",
        Ty::Str,
        "required",
        "test",
        "The gate's name, as tasks (`gates:`) and the policy refer to it.",
    ),
    k(
        "gates[].run",
        Ty::Str,
        "required",
        "cargo test",
        "The shell command; exit 0 passes.",
    ),
    k(
        "gates[].timeout",
        Ty::Dur,
        "`timeouts.gate`",
        "15m",
        "Its time limit.",
    ),
    k(
        "gates[].retries",
        Ty::Int,
        "0",
        "1",
        "Extra runs of a failing gate before it counts as failed (flaky suites).",
    ),
    k(
        "gates[].reports",
        Ty::Object,
        "none",
        "",
        "The reports the gate leaves in the worktree (paths or globs), read into the policy's input.",
    ),
    k(
        "gates[].reports.junit",
        Ty::StrOrStrs,
        "none",
        "target/nextest/junit.xml",
        "JUnit XML.",
    ),
    k(
        "gates[].reports.coverage",
        Ty::StrOrStrs,
        "none",
        "lcov.info",
        "LCOV or Cobertura XML.",
    ),
    k(
        "gates[].reports.sarif",
        Ty::StrOrStrs,
        "none",
        "semgrep.sarif",
        "SARIF 2.1 findings.",
    ),
    k(
        "gates[].reports.metrics",
        Ty::StrOrStrs,
        "none",
        "mutants.out/outcomes.json",
        "A JSON object of figures, or cargo-mutants' outcomes.",
    ),
    k(
        "gates[].quarantine",
        Ty::Bool,
        "false",
        "true",
        "A failure whose every failed test is known flaky is retried and reported instead of failing the change.",
    ),
    k(
        "budgets",
        Ty::Object,
        "",
        "",
        "Hard caps on money, tokens and time; reserved before work starts.",
    ),
    k(
        "budgets.run_usd",
        Ty::Num,
        "none",
        "100",
        "The run's dollars.",
    ),
    k(
        "budgets.run_tokens",
        Ty::Int,
        "none",
        "2000000",
        "The run's tokens.",
    ),
    k(
        "budgets.task_usd",
        Ty::Num,
        "none",
        "5",
        "Each task's dollars, reserved before it starts (a task's own `budget:` wins).",
    ),
    k(
        "budgets.task_tokens",
        Ty::Int,
        "none",
        "200000",
        "Each task's tokens.",
    ),
    k(
        "budgets.daily_usd",
        Ty::Num,
        "none",
        "50",
        "Dollars per day, every run of the store together (the dashboard's \"today\" bar).",
    ),
    k(
        "budgets.daily_tokens",
        Ty::Int,
        "none",
        "5000000",
        "Tokens per day.",
    ),
    k(
        "budgets.weekly_usd",
        Ty::Num,
        "none",
        "200",
        "Dollars per week (Monday to Monday).",
    ),
    k(
        "budgets.weekly_tokens",
        Ty::Int,
        "none",
        "20000000",
        "Tokens per week.",
    ),
    k(
        "budgets.per_backend",
        Ty::Named,
        "none",
        "",
        "Caps per backend, within a run.",
    ),
    k(
        "budgets.per_backend.<name>.usd",
        Ty::Num,
        "none",
        "20",
        "The backend's dollars.",
    ),
    k(
        "budgets.per_backend.<name>.tokens",
        Ty::Int,
        "none",
        "500000",
        "The backend's tokens.",
    ),
    k(
        "budgets.alert_at",
        Ty::Num,
        "0.8",
        "0.9",
        "The share of a cap at which `budget.alert` is sent (once per cap, per day or week).",
    ),
    k(
        "budgets.timezone",
        Ty::Str,
        "the machine's",
        "Europe/Paris",
        "The IANA zone whose days and weeks the daily and weekly caps count.",
    ),
    k(
        "pricing",
        Ty::Named,
        "the built-in table",
        "",
        "USD per million tokens by model, over the built-in table.",
    ),
    k(
        "pricing.<model>.input",
        Ty::Num,
        "required",
        "3.0",
        "Input tokens.",
    ),
    k(
        "pricing.<model>.output",
        Ty::Num,
        "required",
        "15.0",
        "Output tokens.",
    ),
    k(
        "pricing.<model>.cache_read",
        Ty::Num,
        "the input price",
        "0.3",
        "Cache reads.",
    ),
    k(
        "pricing.<model>.cache_write",
        Ty::Num,
        "the input price",
        "3.75",
        "Cache writes.",
    ),
    k(
        "safety",
        Ty::Object,
        "",
        "",
        "What the default policy bundle enforces (see docs/policy.md).",
    ),
    k(
        "safety.policy_dir",
        Ty::Str,
        "`.abo/policy`",
        "policy",
        "Your own Rego files, evaluated with the default bundle.",
    ),
    k(
        "safety.allowed_paths",
        Ty::Strs,
        "everything",
        "[src/**, tests/**]",
        "Globs a change may touch; anything else asks for approval.",
    ),
    k(
        "safety.forbidden_paths",
        Ty::Strs,
        "none",
        "[secrets/**]",
        "Globs a change may not touch: denied.",
    ),
    k(
        "safety.forbidden_patterns",
        Ty::Strs,
        "none",
        "[\"eval\\\\(\"]",
        "Regular expressions an added line may not match: denied.",
    ),
    k(
        "safety.max_diff_lines",
        Ty::Int,
        "none",
        "800",
        "The most lines a change may add and remove.",
    ),
    k(
        "safety.max_diff_bytes",
        Ty::Int,
        "1048576",
        "2097152",
        "The most bytes a change may add (0: no bound).",
    ),
    k(
        "safety.require_reason_for_access",
        Ty::Bool,
        "true",
        "true",
        "Approvals and rejections need a reason.",
    ),
    k(
        "safety.protected",
        Ty::Enum(&["deny", "needs_approval"]),
        "`deny`",
        "needs_approval",
        "A change to abo's own files (this configuration, the policy, the run's backlog, `.abo/`).",
    ),
    k(
        "safety.rules",
        Ty::StrMap,
        "each rule's own level",
        "{ dependencies: deny, binary_files: off }",
        "The level of each default rule (`forbidden_paths`, `allowed_paths`, `forbidden_patterns`, `max_diff_lines`, `max_diff_bytes`, `ci_config`, `env_files`, `binary_files`, `symlink_escape`, `out_of_scope`, `dependencies`, `gate_failed`, `tests_fewer`, ...; see docs/policy.md): `deny`, `needs_approval` or `off`.",
    ),
    k(
        "safety.quality",
        Ty::Object,
        "none",
        "",
        "Thresholds of the quality rules; other keys are your own thresholds, given to your rules.",
    ),
    k(
        "safety.quality.changed_lines",
        Ty::Num,
        "none",
        "80",
        "The least coverage of the lines a change adds, in percent.",
    ),
    k(
        "safety.quality.min_coverage",
        Ty::Num,
        "none",
        "70",
        "The least overall coverage, in percent.",
    ),
    k(
        "safety.quality.min_mutation_score",
        Ty::Num,
        "none",
        "60",
        "The least mutation score.",
    ),
    k(
        "safety.quality.finding_severity",
        Ty::Enum(&["note", "warning", "error"]),
        "none",
        "warning",
        "A new finding at or above this severity needs approval.",
    ),
    k(
        "safety.quality.require_tests",
        Ty::Strs,
        "`[code, refactor]`",
        "[code]",
        "Task types whose source changes need a test change.",
    ),
    k(
        "sandbox",
        Ty::Object,
        "",
        "",
        "What every process of an attempt may read, write and reach (see docs/sandbox.md).",
    ),
    k(
        "sandbox.mode",
        Ty::Enum(&["required", "best-effort", "off"]),
        "`required` on Linux",
        "best-effort",
        "`required` refuses to run where a layer is missing; `best-effort` runs with what the kernel has; `off` runs unconfined.",
    ),
    k(
        "sandbox.gate_network",
        Ty::Enum(&["none", "allow"]),
        "`none`",
        "allow",
        "Whether gates reach the network.",
    ),
    k(
        "sandbox.agent_hosts",
        Ty::Strs,
        "`[api.anthropic.com, api.openai.com]`",
        "[api.anthropic.com, gateway.internal:8443]",
        "The hosts agents reach, through abo's egress proxy.",
    ),
    k("sandbox.limits", Ty::Object, "", "", "Per-process limits."),
    k("sandbox.limits.memory", Ty::Size, "none", "4GiB", "Memory."),
    k(
        "sandbox.limits.processes",
        Ty::Int,
        "1024",
        "512",
        "Processes.",
    ),
    k(
        "sandbox.limits.cpu_time",
        Ty::Dur,
        "none",
        "30m",
        "CPU time.",
    ),
    k(
        "sandbox.limits.file_size",
        Ty::Size,
        "none",
        "1GiB",
        "The largest file written.",
    ),
    k(
        "sandbox.limits.open_files",
        Ty::Int,
        "none",
        "4096",
        "Open files.",
    ),
    k(
        "sandbox.env_pass",
        Ty::Strs,
        "none",
        "[CARGO_HOME, RUSTUP_HOME]",
        "Variables of abo's environment passed to gates and commands (agents' keys are handled by `credentials`).",
    ),
    k(
        "sandbox.deny_read",
        Ty::Strs,
        "none",
        "[~/work/secrets]",
        "Paths no sandboxed process reads, on top of the defaults (SSH, cloud and agent logins, histories).",
    ),
    k(
        "sandbox.deny_read_except",
        Ty::Strs,
        "none",
        "[~/.npmrc]",
        "Defaults taken off the denied list, each named exactly as listed.",
    ),
    k("landing", Ty::Object, "", "", "Where what passed goes."),
    k(
        "landing.mode",
        Ty::Enum(&["branch", "push", "pull-request"]),
        "`branch`",
        "pull-request",
        "Keep the run branch `abo/<run>` local, push it, or push it and open a draft pull (merge) request.",
    ),
    k(
        "landing.remote",
        Ty::Str,
        "`origin`",
        "origin",
        "The remote pushed to.",
    ),
    k(
        "landing.gates_after_merge",
        Ty::Bool,
        "true",
        "false",
        "Run the gates again on the merged tree before the run branch moves; such a task lands alone. Tasks that pass while others land, without gates on their merged tree, land together: each one commit on the run branch in the order they passed, the branch moved once.",
    ),
    k(
        "landing.provider",
        Ty::Enum(&["github", "gitlab"]),
        "`github`",
        "gitlab",
        "Where pull requests are opened.",
    ),
    k(
        "landing.api_url",
        Ty::Str,
        "the provider's",
        "https://gitlab.example.com/api/v4",
        "The provider's API.",
    ),
    k(
        "landing.repo",
        Ty::Str,
        "from the remote's URL",
        "acme/widgets",
        "`owner/name`.",
    ),
    k(
        "landing.token_env",
        Ty::Str,
        "`GITHUB_TOKEN` or `GITLAB_TOKEN`",
        "ABO_GITHUB_TOKEN",
        "The variable holding the provider's token.",
    ),
    k(
        "landing.verify",
        Ty::Strs,
        "none",
        "[e2e]",
        "Gates run on the whole run branch once its tasks landed; a failure is bisected to the first bad commit, which is reverted (its task becomes `reverted`).",
    ),
    k(
        "landing.verify_schedule",
        Ty::Str,
        "none",
        "30m",
        "`abo daemon` runs `landing.verify` on the base branch's head on this schedule (an interval like `30m`, or a cron expression like `0 3 * * *`): a failure is bisected back to the last head that verified, and the first bad commit reverted on the base branch when abo made it (reported, never reverted, when a person did); under `landing.mode: pull-request` the revert is pushed to a branch of its own, `abo-revert/<short sha>`, and proposed as a draft pull request.",
    ),
    k(
        "review",
        Ty::Object,
        "none",
        "",
        "A reviewer for every change whose gates passed: its JSON verdict is the policy's `input.review`.",
    ),
    k(
        "review.backends",
        Ty::Strs,
        "",
        "[critic, local]",
        "Model APIs or commands, in order: the first that is not the change's own backend reviews it.",
    ),
    k(
        "review.max_rounds",
        Ty::Int,
        "1",
        "2",
        "How many times a `request_changes` verdict's findings go back to a next attempt; after that a high-severity finding needs approval.",
    ),
    k(
        "proposals",
        Ty::Object,
        "none",
        "",
        "Tasks that get several candidates at once, each in its own worktree and sandbox, on distinct backends where the router has them (`router.learn` for the task's type, `router.rules`, `router.fallback`; else the same backend again under another attempt number). Every candidate goes through its gates, the review and the policy; the best that passed lands, the others are recorded with their scores (`task.proposal`), charged and cleaned up. Each candidate counts as an attempt against `attempts.max`.",
    ),
    k(
        "proposals.rules",
        Ty::Objects,
        "none",
        "",
        "Tried in order: the first whose `when` holds gives the task its number of proposals.",
    ),
    k(
        "proposals.rules[].when",
        Ty::Str,
        "required",
        "\"risk == 'high'\"",
        "A CEL expression over the router's variables: `task` (`id`, `type`, `labels`, `paths`...), `risk` (the policy's risk class of the task's last change), `budget`, `attempt`.",
    ),
    k(
        "proposals.rules[].n",
        Ty::Int,
        "required",
        "3",
        "How many candidates start together (1 to 8). Each reserves the task's cap before any starts; the run, day, week and backend caps hold them all, and a candidate that does not fit is not started.",
    ),
    k(
        "proposals.select",
        Ty::Strs,
        "`[review, findings, coverage, diff, cost]`",
        "[diff, cost]",
        "The selection order: `review` (approve, then no review, then request_changes, then failed), `findings` (fewer reported by the gates), `coverage` (higher, as the gates report it), `diff` (fewer changed lines), `cost` (lower); ties go to the earlier attempt.",
    ),
    k(
        "hedge",
        Ty::Object,
        "none",
        "",
        "A duplicate of an attempt that runs long, on another backend (the router's fallback or candidates for the task's type; else the same one): the first to pass lands, the other is stopped (its processes killed), charged and cleaned up.",
    ),
    k(
        "hedge.after",
        Ty::Str,
        "required",
        "p90",
        "`p90` (the 90th percentile of the wall time, started to landed, of the task type's landed attempts in the store, read when the run starts; no history: no hedge) or a duration (`10m`).",
    ),
    k(
        "hedge.max",
        Ty::Int,
        "1",
        "1",
        "Duplicates per attempt at most.",
    ),
    k(
        "deploy",
        Ty::Object,
        "none",
        "",
        "Environments the landed base branch is deployed to (`abo deploy ENV`, or after a run's merge).",
    ),
    k(
        "deploy.<name>",
        Ty::Object,
        "",
        "",
        "One environment: its commands run in a clean worktree of the landed commit, each in a gate's sandbox; one deployment at a time holds it.",
    ),
    k(
        "deploy.<name>.when",
        Ty::Enum(&["manual", "merge"]),
        "`manual`",
        "merge",
        "`merge`: after a run's merge into the base branch; `manual`: only on `abo deploy ENV`.",
    ),
    k(
        "deploy.<name>.network",
        Ty::Enum(&["none", "host"]),
        "`none`",
        "host",
        "The network the environment's commands get.",
    ),
    k(
        "deploy.<name>.plan",
        Ty::Str,
        "none",
        "terraform plan -no-color",
        "Run first; its output is shown with the approval of the deployment's start.",
    ),
    k(
        "deploy.<name>.canary",
        Ty::Str,
        "",
        "./ops/deploy canary",
        "Starts the canary.",
    ),
    k(
        "deploy.<name>.check",
        Ty::Str,
        "",
        "./healthy.sh",
        "The SLO check over the canary's window: a command (exit 0 = healthy; or `{ run, for, every }`) or `{ prometheus: { url, query, max | min, for, every } }`, an instant query sampled at the window's start and every `every`; one unhealthy or unanswered sample rolls back.",
    ),
    k(
        "deploy.<name>.promote",
        Ty::Str,
        "",
        "./ops/deploy promote",
        "Promotes the canary once the window held (by itself at A5, after approval at A4 and below).",
    ),
    k(
        "deploy.<name>.rollback",
        Ty::Str,
        "",
        "./ops/deploy rollback",
        "Undoes the canary: after an unhealthy check, a failed command or a rejected promotion.",
    ),
    k(
        "deploy.<name>.timeout",
        Ty::Dur,
        "`10m`",
        "5m",
        "Each command's time limit.",
    ),
    k(
        "deploy.<name>.lock_ttl",
        Ty::Dur,
        "`30s`",
        "1m",
        "The environment lock's lease, renewed every third of it; a crashed holder's lock frees when it expires.",
    ),
    k(
        "deploy.<name>.approval_timeout",
        Ty::Dur,
        "`1h`",
        "30m",
        "How long a deployment waits for a person; then it gives up (a waiting canary is rolled back).",
    ),
    k(
        "mcp",
        Ty::Object,
        "",
        "",
        "The MCP server abo offers an agent inside its attempt.",
    ),
    k(
        "mcp.max_checks",
        Ty::Int,
        "5",
        "3",
        "How many times an attempt's agent may call its `check` tool (the task's gates and the policy on the worktree as it is); 0 offers no tool.",
    ),
    k("notify", Ty::Object, "", "", "Who hears about runs."),
    k(
        "notify.webhooks",
        Ty::Objects,
        "none",
        "",
        "Webhooks, signed with HMAC-SHA256 when a secret is set, retried.",
    ),
    k(
        "notify.webhooks[].url",
        Ty::Str,
        "required",
        "https://hooks.slack.com/services/T/B/X",
        "Where to POST.",
    ),
    k(
        "notify.webhooks[].events",
        Ty::Strs,
        "every notified kind",
        "[run.finished, task.approval_requested, budget.alert]",
        "The event kinds sent.",
    ),
    k(
        "notify.webhooks[].format",
        Ty::Enum(&["json", "slack"]),
        "`json`",
        "slack",
        "The event as JSON, or Slack's `{\"text\": ...}`.",
    ),
    k(
        "notify.webhooks[].secret_env",
        Ty::Str,
        "none",
        "ABO_WEBHOOK_SECRET",
        "The variable holding the signing secret (`X-Abo-Signature`).",
    ),
    k("notify.email", Ty::Object, "none", "", "Email over SMTP."),
    k(
        "notify.email.smtp",
        Ty::Str,
        "required",
        "smtp://mail.internal:25",
        "The SMTP server.",
    ),
    k(
        "notify.email.from",
        Ty::Str,
        "required",
        "abo@example.com",
        "The sender.",
    ),
    k(
        "notify.email.to",
        Ty::Strs,
        "required",
        "[me@example.com]",
        "The recipients.",
    ),
    k(
        "notify.email.events",
        Ty::Strs,
        "every notified kind",
        "[run.finished]",
        "The event kinds sent.",
    ),
    k(
        "notify.digest",
        Ty::Str,
        "none",
        "\"07:30\"",
        "A time of day (`HH:MM`, in `schedule.timezone`): `abo daemon` sends the summary of the last 24 hours then, to the webhooks (`{\"text\": ...}` for Slack-compatible ones) and the email; `abo summary --notify` sends it now.",
    ),
    k(
        "notify.dashboard_url",
        Ty::Str,
        "none",
        "https://abo.example.com",
        "The dashboard's public address (where `abo serve` is reached): a waiting approval's notification links to its task's page there, and an agent's question to each of its options (the page asks to confirm; a link changes nothing).",
    ),
    k(
        "schedule",
        Ty::Object,
        "",
        "",
        "When runs may work, and backlogs run by `abo daemon`.",
    ),
    k(
        "schedule.windows",
        Ty::Strs,
        "always",
        "[\"22:00-07:00\"]",
        "Local time windows; outside them a run starts nothing and pauses.",
    ),
    k(
        "schedule.timezone",
        Ty::Str,
        "the machine's",
        "Europe/Paris",
        "The zone of the windows and cron expressions.",
    ),
    k(
        "schedule.cron",
        Ty::Objects,
        "none",
        "",
        "Backlogs `abo daemon` runs on a schedule.",
    ),
    k(
        "schedule.cron[].at",
        Ty::Str,
        "required",
        "\"0 2 * * *\"",
        "A cron expression (minute hour day month weekday).",
    ),
    k(
        "schedule.cron[].backlog",
        Ty::Str,
        "required",
        "nightly.yml",
        "The backlog, relative to the repository.",
    ),
    k(
        "schedule.cron[].profile",
        Ty::Str,
        "the configuration's",
        "staging-aggressive",
        "The autonomy profile of those runs.",
    ),
];

/// Every key of the YAML backlog.
pub const BACKLOG: &[Key] = &[
    k("run", Ty::Object, "none", "", "The run's header."),
    k(
        "run.title",
        Ty::Str,
        "the backlog's path",
        "Nightly cleanup",
        "The run's title.",
    ),
    k(
        "run.profile",
        Ty::Str,
        "the configuration's",
        "staging-aggressive",
        "The autonomy profile (`--profile` wins).",
    ),
    k(
        "tasks",
        Ty::Objects,
        "required",
        "",
        "The tasks; their `deps` make the graph.",
    ),
    k(
        "tasks[].id",
        Ty::Str,
        "required",
        "add-login",
        "Unique in the backlog: letters, digits, `-`, `_`.",
    ),
    k(
        "tasks[].title",
        Ty::Str,
        "required",
        "Add the login form",
        "One line.",
    ),
    k(
        "tasks[].type",
        Ty::Enum(TASK_TYPES),
        "`code`",
        "docs",
        "The kind of task (routing, policy and the learned router use it).",
    ),
    k(
        "tasks[].description",
        Ty::Str,
        "empty",
        "\"Use the existing session store.\"",
        "What to do, for the agent's prompt.",
    ),
    k(
        "tasks[].acceptance",
        Ty::Strs,
        "none",
        "[\"the form posts to /login\"]",
        "What done means, for the prompt.",
    ),
    k(
        "tasks[].paths",
        Ty::Strs,
        "anywhere",
        "[src/login/**]",
        "The globs the task may change; tasks whose paths overlap never run together; a change outside asks for approval.",
    ),
    k(
        "tasks[].deps",
        Ty::Strs,
        "none",
        "[add-session]",
        "Tasks that must land first.",
    ),
    k(
        "tasks[].backend",
        Ty::Str,
        "the router's choice",
        "claude",
        "The backend, by name.",
    ),
    k(
        "tasks[].run",
        Ty::Str,
        "none",
        "\"cargo fmt\"",
        "A shell command as the task's backend (a `command` backend of its own).",
    ),
    k(
        "tasks[].patch",
        Ty::Str,
        "none",
        "patches/fix.diff",
        "A patch file applied as the task's change.",
    ),
    k(
        "tasks[].gates",
        Ty::Strs,
        "every gate",
        "[fmt, test]",
        "The gates this task runs, by name.",
    ),
    k(
        "tasks[].labels",
        Ty::Strs,
        "none",
        "[frontend]",
        "Labels, for router rules and policy.",
    ),
    k(
        "tasks[].autonomy",
        Ty::StrMap,
        "none",
        "{ merge: A2 }",
        "Levels for this task, lowering the run's (never raising them).",
    ),
    k(
        "tasks[].budget",
        Ty::Object,
        "`budgets.task_*`",
        "",
        "The task's own caps.",
    ),
    k("tasks[].budget.usd", Ty::Num, "none", "2.5", "Dollars."),
    k(
        "tasks[].budget.tokens",
        Ty::Int,
        "none",
        "100000",
        "Tokens.",
    ),
    k(
        "tasks[].max_attempts",
        Ty::Int,
        "`attempts.max`",
        "1",
        "Attempts of this task.",
    ),
    k(
        "tasks[].priority",
        Ty::Int,
        "0",
        "10",
        "Higher starts first among ready tasks.",
    ),
];

const AUTONOMY_NOTE: &str = "Autonomy levels: `A0` manual, `A1` assisted, `A2` guarded (a person approves), `A3` automatic when the risk is low, `A4` automatic with a canary, `A5` autonomous.";

/// The keys directly under `parent` (`""`: the top level).
pub fn children<'a>(keys: &'a [Key], parent: &str) -> Vec<&'a Key> {
    keys.iter()
        .filter(|k| {
            let rest = if parent.is_empty() {
                Some(k.path)
            } else {
                k.path
                    .strip_prefix(parent)
                    .and_then(|r| r.strip_prefix('.'))
            };
            rest.is_some_and(|r| !r.is_empty() && !r.contains('.') && !r.contains("[]"))
                || (!parent.is_empty()
                    && k.path
                        .strip_prefix(parent)
                        .and_then(|r| r.strip_prefix("[]."))
                        .is_some_and(|r| !r.contains('.')))
        })
        .collect()
}

/// The last segment of a path: `name` of `gates[].name`.
pub fn leaf(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.trim_end_matches("[]")
}

fn schema_of(keys: &[Key], key: &Key) -> Value {
    let mut s = match key.ty {
        Ty::Str => json!({ "type": "string" }),
        Ty::Int => json!({ "type": "integer" }),
        Ty::Num => json!({ "type": "number" }),
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::Dur => json!({ "type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$" }),
        Ty::Size => json!({ "type": ["string", "integer"] }),
        Ty::Strs => json!({ "type": "array", "items": { "type": "string" } }),
        Ty::StrMap => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        Ty::StrOrStrs => json!({ "anyOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" } }
        ] }),
        Ty::Enum(v) => json!({ "enum": v }),
        Ty::Object => object(keys, key.path),
        Ty::Objects => {
            json!({ "type": "array", "items": object(keys, &format!("{}[]", key.path)) })
        }
        Ty::Named => {
            let named = keys
                .iter()
                .find(|x| {
                    x.path.starts_with(key.path) && x.path[key.path.len()..].starts_with(".<")
                })
                .map(|x| {
                    let seg = x.path[key.path.len() + 1..].split('.').next().unwrap_or("");
                    format!("{}.{seg}", key.path)
                });
            match named {
                Some(p) if keys.iter().any(|x| x.path == p) => {
                    let inner = keys.iter().find(|x| x.path == p).copied();
                    let mut o = object(keys, &p);
                    if let (Some(inner), Some(obj)) = (inner, o.as_object_mut()) {
                        obj.insert("description".into(), Value::String(inner.doc.into()));
                    }
                    json!({ "type": "object", "additionalProperties": o })
                }
                Some(p) => json!({ "type": "object", "additionalProperties": object(keys, &p) }),
                None => json!({ "type": "object" }),
            }
        }
        Ty::NamedValues => {
            let inner = keys.iter().find(|x| {
                x.path.starts_with(key.path) && x.path[key.path.len()..].starts_with(".<")
            });
            let v = inner.map_or(json!({}), |i| schema_of(keys, i));
            json!({ "type": "object", "additionalProperties": v })
        }
    };
    if let Some(o) = s.as_object_mut() {
        o.insert("description".into(), Value::String(key.doc.into()));
        if !key.example.is_empty()
            && let Ok(v) = serde_yaml::from_str::<serde_json::Value>(key.example)
        {
            o.insert("examples".into(), Value::Array(vec![v]));
        }
    }
    s
}

fn object(keys: &[Key], path: &str) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    let mut named = Value::Bool(path == "safety.quality");
    for c in children(keys, path) {
        if leaf(c.path).starts_with('<') {
            named = schema_of(keys, c);
            continue;
        }
        props.insert(leaf(c.path).to_owned(), schema_of(keys, c));
        if c.default == "required" {
            required.push(Value::String(leaf(c.path).to_owned()));
        }
    }
    // Named entries (`backends.<name>`) are the object's other keys; the user's own quality
    // thresholds are open; everything else is strict, as the parser is.
    let mut o = json!({ "type": "object", "properties": props, "additionalProperties": named });
    if !required.is_empty()
        && let Some(m) = o.as_object_mut()
    {
        m.insert("required".into(), Value::Array(required));
    }
    o
}

/// A JSON Schema (draft 2020-12) of a file described by `keys`.
pub fn schema(keys: &[Key], id: &str, title: &str) -> Value {
    let mut s = object(keys, "");
    if let Some(m) = s.as_object_mut() {
        m.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        m.insert("$id".into(), id.into());
        m.insert("title".into(), title.into());
    }
    s
}

/// The configuration reference as Markdown.
pub fn markdown() -> String {
    let mut o = String::from(
        "# Configuration reference: `abo.yml`\n\n\
         Generated from the configuration types (`abo-core::reference`, checked against the parser by its tests; regenerate with `UPDATE_DOCS=1 cargo test -p abo-core reference`).\n\
         Editors complete and check `abo.yml` with `docs/schema/abo.schema.json`: `abo init` writes the `# yaml-language-server: $schema=...` line that points to it.\n\n\
         Every key is optional unless its default says *required*. An unknown key is an error naming the nearest known one; durations are written `90s`, `30m`, `2h`, `1d`; sizes `512MiB`, `2GiB`.\n\n",
    );
    o.push_str(AUTONOMY_NOTE);
    o.push_str("\n\n");
    let mut section = "";
    for key in CONFIG {
        let top = key.path.split(['.', '[']).next().unwrap_or(key.path);
        if top != section {
            section = top;
            o.push_str(&format!("## `{top}`\n\n| key | type | default | example | what it does |\n| --- | --- | --- | --- | --- |\n"));
        }
        o.push_str(&row(key));
    }
    o.push_str("\n# The YAML backlog\n\nChecked by `docs/schema/backlog.schema.json`; see docs/backlog.md for the Markdown plan.\n\n| key | type | default | example | what it does |\n| --- | --- | --- | --- | --- |\n");
    for key in BACKLOG {
        o.push_str(&row(key));
    }
    o
}

fn row(key: &Key) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let example = if key.example.is_empty() {
        String::new()
    } else {
        format!("`{}`", cell(key.example))
    };
    format!(
        "| `{}` | {} | {} | {} | {} |\n",
        key.path,
        cell(&key.ty.show()),
        cell(key.default),
        example,
        cell(key.doc)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The fields the parser expects where `doc` puts an unknown key `zzz_unknown`, from serde's
    /// own error ("expected one of `a`, `b`").
    fn expected(parse: impl Fn(&str) -> String, doc: &str) -> BTreeSet<String> {
        let err = parse(doc);
        // abo's own wording (the backlog's): "(hint: known keys: a, b)".
        if let Some((_, known)) = err.split_once("known keys: ") {
            return known
                .trim_end_matches(')')
                .split(", ")
                .map(|s| s.trim().to_owned())
                .collect();
        }
        let after = err
            .split_once("expected")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no list of fields in: {err}"));
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn config_err(doc: &str) -> String {
        serde_yaml::from_str::<crate::config::Config>(doc)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    fn backlog_err(doc: &str) -> String {
        crate::backlog::parse_yaml("b.yml", doc)
            .unwrap_err()
            .to_string()
    }

    fn documented(keys: &[Key], parent: &str) -> BTreeSet<String> {
        children(keys, parent)
            .iter()
            .map(|k| leaf(k.path).to_owned())
            .collect()
    }

    #[test]
    fn every_key_the_config_parser_accepts_is_documented_and_no_other() {
        let z = "zzz_unknown: 1";
        let sections: &[(&str, String)] = &[
            ("", format!("version: 1\n{z}\n")),
            ("autonomy", format!("version: 1\nautonomy: {{ {z} }}\n")),
            (
                "parallelism",
                format!("version: 1\nparallelism: {{ {z} }}\n"),
            ),
            ("attempts", format!("version: 1\nattempts: {{ {z} }}\n")),
            ("timeouts", format!("version: 1\ntimeouts: {{ {z} }}\n")),
            ("router", format!("version: 1\nrouter: {{ {z} }}\n")),
            (
                "router.rules",
                format!("version: 1\nrouter: {{ rules: [{{ when: 'true', use: x, {z} }}] }}\n"),
            ),
            (
                "gates",
                format!("version: 1\ngates: [{{ name: a, run: b, {z} }}]\n"),
            ),
            (
                "gates[].reports",
                format!("version: 1\ngates: [{{ name: a, run: b, reports: {{ {z} }} }}]\n"),
            ),
            ("budgets", format!("version: 1\nbudgets: {{ {z} }}\n")),
            ("safety", format!("version: 1\nsafety: {{ {z} }}\n")),
            ("sandbox", format!("version: 1\nsandbox: {{ {z} }}\n")),
            (
                "sandbox.limits",
                format!("version: 1\nsandbox: {{ limits: {{ {z} }} }}\n"),
            ),
            ("landing", format!("version: 1\nlanding: {{ {z} }}\n")),
            ("mcp", format!("version: 1\nmcp: {{ {z} }}\n")),
            (
                "deploy.<name>",
                format!(
                    "version: 1\ndeploy: {{ x: {{ canary: a, check: b, promote: c, rollback: d, {z} }} }}\n"
                ),
            ),
            ("notify", format!("version: 1\nnotify: {{ {z} }}\n")),
            (
                "notify.webhooks",
                format!("version: 1\nnotify: {{ webhooks: [{{ url: u, {z} }}] }}\n"),
            ),
            (
                "notify.email",
                format!("version: 1\nnotify: {{ email: {{ smtp: s, from: f, to: [t], {z} }} }}\n"),
            ),
            ("proposals", format!("version: 1\nproposals: {{ {z} }}\n")),
            (
                "proposals.rules",
                format!("version: 1\nproposals: {{ rules: [{{ when: 'true', n: 2, {z} }}] }}\n"),
            ),
            (
                "hedge",
                format!("version: 1\nhedge: {{ after: p90, {z} }}\n"),
            ),
            ("schedule", format!("version: 1\nschedule: {{ {z} }}\n")),
            (
                "schedule.cron",
                format!("version: 1\nschedule: {{ cron: [{{ at: x, backlog: y, {z} }}] }}\n"),
            ),
            (
                "pricing.<model>",
                format!("version: 1\npricing: {{ m: {{ input: 1, output: 1, {z} }} }}\n"),
            ),
            (
                "budgets.per_backend.<name>",
                format!("version: 1\nbudgets: {{ per_backend: {{ b: {{ {z} }} }} }}\n"),
            ),
        ];
        for (parent, doc) in sections {
            assert_eq!(
                documented(CONFIG, parent),
                expected(config_err, doc),
                "the keys under `{parent}`"
            );
        }
        // A backend's keys: every kind's fields, and `kind`.
        let mut backend = BTreeSet::from(["kind".to_owned()]);
        for kind in [
            "kind: claude-code",
            "kind: anthropic, model: m",
            "kind: command, run: r",
        ] {
            backend.extend(expected(
                config_err,
                &format!("version: 1\nbackends: {{ x: {{ {kind}, {z} }} }}\n"),
            ));
        }
        assert_eq!(documented(CONFIG, "backends.<name>"), backend);
    }

    #[test]
    fn every_key_the_backlog_parser_accepts_is_documented_and_no_other() {
        let z = "zzz_unknown: 1";
        for (parent, doc) in [
            ("", format!("tasks: []\n{z}\n")),
            ("run", format!("run: {{ {z} }}\ntasks: []\n")),
            ("tasks", format!("tasks: [{{ id: a, title: A, {z} }}]\n")),
            (
                "tasks[].budget",
                format!("tasks: [{{ id: a, title: A, budget: {{ {z} }} }}]\n"),
            ),
        ] {
            assert_eq!(
                documented(BACKLOG, parent),
                expected(backlog_err, &doc),
                "the keys under `{parent}`"
            );
        }
    }

    /// A document with `key` set to its example, nested as its path says.
    fn with_example(key: &Key) -> serde_yaml::Value {
        let mut value: serde_yaml::Value = serde_yaml::from_str(key.example).unwrap();
        let segs: Vec<&str> = key.path.split('.').collect();
        for seg in segs.iter().rev() {
            let (name, list) = match seg.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (*seg, false),
            };
            let name = match name {
                "<type>" => "code",
                n if n.starts_with('<') => "x",
                n => n,
            };
            let mut m = serde_yaml::Mapping::new();
            let inner = if list {
                serde_yaml::Value::Sequence(vec![value])
            } else {
                value
            };
            m.insert(name.into(), inner);
            value = serde_yaml::Value::Mapping(m);
        }
        value
    }

    /// What a key needs beside it to parse (a gate's `run`, a backend's `kind`...).
    fn complete(path: &str, doc: &mut serde_yaml::Value) {
        let fill = |doc: &mut serde_yaml::Value, at: &[&str], with: &str| {
            let mut v = &mut *doc;
            for seg in at {
                v = match v {
                    serde_yaml::Value::Mapping(m) => m
                        .entry((*seg).into())
                        .or_insert(serde_yaml::Value::Mapping(serde_yaml::Mapping::new())),
                    serde_yaml::Value::Sequence(s) => &mut s[0],
                    _ => return,
                };
                if let serde_yaml::Value::Sequence(s) = v {
                    v = &mut s[0];
                }
            }
            if let (serde_yaml::Value::Mapping(m), Ok(serde_yaml::Value::Mapping(add))) =
                (v, serde_yaml::from_str::<serde_yaml::Value>(with))
            {
                for (k, val) in add {
                    m.entry(k).or_insert(val);
                }
            }
        };
        if let serde_yaml::Value::Mapping(m) = doc {
            m.entry("version".into()).or_insert(1.into());
        }
        let kind = match leaf(path) {
            "max_tokens" | "retries" => "{ kind: anthropic, model: m }",
            "run" => "{ kind: command }",
            "model" | "context_tokens" | "base_url" | "api_key_env" => "{ kind: openai, model: m }",
            _ => "{ kind: claude-code }",
        };
        let pairs: &[(&str, &[&str], &str)] = &[
            ("backends.<name>.", &["backends", "x"], kind),
            (
                "router.rules[].",
                &["router", "rules"],
                "{ when: 'true', use: x }",
            ),
            ("gates[].", &["gates"], "{ name: a, run: b }"),
            (
                "proposals.rules[].",
                &["proposals", "rules"],
                "{ when: 'true', n: 2 }",
            ),
            ("hedge.", &["hedge"], "{ after: p90 }"),
            (
                "pricing.<model>.",
                &["pricing", "x"],
                "{ input: 1, output: 1 }",
            ),
            (
                "notify.webhooks[].",
                &["notify", "webhooks"],
                "{ url: 'http://127.0.0.1/' }",
            ),
            (
                "notify.email.",
                &["notify", "email"],
                "{ smtp: 'smtp://127.0.0.1:25', from: a@b, to: [c@d] }",
            ),
            (
                "schedule.cron[].",
                &["schedule", "cron"],
                "{ at: '0 2 * * *', backlog: b.yml }",
            ),
        ];
        for (prefix, at, with) in pairs {
            if path.starts_with(prefix) {
                fill(doc, at, with);
            }
        }
        // Names the example refers to exist.
        if path.starts_with("backends.")
            || path.starts_with("router.")
            || path.starts_with("parallelism.per_backend")
            || path.starts_with("budgets.per_backend")
        {
            fill(
                doc,
                &["backends"],
                "{ x: { kind: command, run: 'true' }, local: { kind: command, run: 'true' }, claude: { kind: command, run: 'true' }, codex: { kind: command, run: 'true' } }",
            );
        }
        if path.starts_with("review") {
            fill(
                doc,
                &["backends"],
                "{ critic: { kind: command, run: 'true' }, local: { kind: command, run: 'true' } }",
            );
            fill(doc, &["review"], "{ backends: [critic] }");
        }
        if path.starts_with("deploy.<name>.") {
            fill(
                doc,
                &["deploy", "x"],
                "{ canary: a, check: b, promote: c, rollback: d }",
            );
        }
        if path == "landing.verify" || path == "landing.verify_schedule" {
            fill(doc, &[], "{ gates: [{ name: e2e, run: 'true' }] }");
            if path == "landing.verify_schedule" {
                fill(doc, &["landing"], "{ verify: [e2e] }");
            }
        }
        if path == "backends.<name>.kind" {
            fill(doc, &["backends", "x"], "{ model: m }");
        }
    }

    #[test]
    fn every_example_of_the_config_reference_parses() {
        for key in CONFIG.iter().filter(|k| !k.example.is_empty()) {
            let mut doc = with_example(key);
            complete(key.path, &mut doc);
            let text = serde_yaml::to_string(&doc).unwrap();
            if let Err(e) = crate::config::Config::parse("abo.yml", &text) {
                panic!("the example of `{}`:\n{text}\n{e}", key.path);
            }
        }
    }

    #[test]
    fn every_example_of_the_backlog_reference_parses() {
        for key in BACKLOG.iter().filter(|k| !k.example.is_empty()) {
            let mut doc = with_example(key);
            if key.path.starts_with("tasks[].")
                && let serde_yaml::Value::Mapping(m) = &mut doc
                && let Some(serde_yaml::Value::Sequence(s)) = m.get_mut("tasks")
                && let Some(serde_yaml::Value::Mapping(t)) = s.first_mut()
            {
                t.entry("id".into()).or_insert("a".into());
                t.entry("title".into()).or_insert("A".into());
            }
            if let serde_yaml::Value::Mapping(m) = &mut doc {
                m.entry("tasks".into())
                    .or_insert(serde_yaml::Value::Sequence(vec![]));
            }
            let text = serde_yaml::to_string(&doc).unwrap();
            if let Err(e) = crate::backlog::parse_yaml("b.yml", &text) {
                panic!("the example of `{}`:\n{text}\n{e}", key.path);
            }
        }
    }

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/");

    #[test]
    fn the_committed_reference_and_schemas_match_the_code() {
        let files = [
            ("configuration.md", markdown()),
            (
                "schema/abo.schema.json",
                serde_json::to_string_pretty(&schema(CONFIG, "abo.schema.json", "abo.yml"))
                    .unwrap()
                    + "\n",
            ),
            (
                "schema/backlog.schema.json",
                serde_json::to_string_pretty(&schema(
                    BACKLOG,
                    "backlog.schema.json",
                    "abo backlog (YAML)",
                ))
                .unwrap()
                    + "\n",
            ),
        ];
        for (name, generated) in files {
            let path = format!("{ROOT}{name}");
            if std::env::var_os("UPDATE_DOCS").is_some() {
                std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
                std::fs::write(&path, &generated).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "docs/{name} drifted from the code: regenerate with UPDATE_DOCS=1 cargo test -p abo-core reference"
            );
        }
    }

    #[test]
    fn the_schema_is_as_strict_as_the_parser() {
        let s = schema(CONFIG, "abo.schema.json", "abo.yml");
        assert_eq!(s["required"], json!(["version"]));
        assert_eq!(s["additionalProperties"], json!(false));
        assert_eq!(
            s["properties"]["gates"]["items"]["required"],
            json!(["name", "run"])
        );
        assert_eq!(
            s["properties"]["budgets"]["properties"]["daily_usd"]["type"],
            "number"
        );
        assert_eq!(
            s["properties"]["backends"]["properties"]["<name>"],
            Value::Null,
            "named maps are additionalProperties, not a literal key"
        );
        assert!(
            s["properties"]["backends"]["additionalProperties"]["properties"]["kind"]["enum"]
                .is_array()
        );
        let b = schema(BACKLOG, "backlog.schema.json", "abo backlog (YAML)");
        assert_eq!(b["required"], json!(["tasks"]));
        assert_eq!(
            b["properties"]["tasks"]["items"]["required"],
            json!(["id", "title"])
        );
    }
}
