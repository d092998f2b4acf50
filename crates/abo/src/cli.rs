//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "abo",
    version,
    about = "abo, the Autonomous Build Operator: turns a backlog of small coding tasks into gated, landed commits"
)]
pub(crate) struct Cli {
    /// Act on the repository in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// The config file (default: abo.yml at the repository root).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The store (overrides `store:` in the config), e.g. sqlite:.abo/abo.db.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// A new token with a role; its secret is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    /// Revoke a token by id or name.
    Revoke {
        token: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A YAML backlog, a Markdown plan, or a directory of them.
    pub(crate) backlog: PathBuf,
    /// The autonomy profile.
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// Tasks run at once (overrides parallelism.max_parallel).
    #[arg(long, value_name = "N")]
    pub(crate) max_parallel: Option<usize>,
    /// Use this configured backend for every task that names none.
    #[arg(long, value_name = "NAME")]
    pub(crate) backend: Option<String>,
    /// Run every backend: reuse no cached result.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Record the run in a shared store and return: `abo serve` lands it, `abo worker`s run it.
    #[arg(long)]
    pub(crate) detach: bool,
    #[command(flatten)]
    pub(crate) caps: CapArgs,
}

/// The run's own caps.
#[derive(Debug, clap::Args)]
pub(crate) struct CapArgs {
    /// The run's spending cap in USD (replaces budgets.run_usd).
    #[arg(long, value_name = "X")]
    pub(crate) usd: Option<f64>,
    /// The run's token cap (replaces budgets.run_tokens).
    #[arg(long, value_name = "N")]
    pub(crate) tokens: Option<u64>,
    /// The run's wall time, pauses excluded (replaces timeouts.run), e.g. 2h.
    #[arg(long, value_name = "DURATION")]
    pub(crate) wall: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Write abo.yml, backlog.example.yml and .abo/ in the repository.
    Init {
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a sample repository and run a sample backlog in it, offline.
    Demo {
        /// Where to create it (default: a new temporary directory).
        dir: Option<PathBuf>,
    },
    /// Validate a backlog, create a run and execute it.
    Run(RunArgs),
    /// Continue a paused, crashed or interrupted run, optionally with raised caps.
    Resume {
        run: String,
        #[command(flatten)]
        caps: CapArgs,
    },
    /// A run (default: the latest) and its tasks.
    Status { run: Option<String> },
    /// The event log, one event a line.
    Events {
        run: Option<String>,
        /// Keep printing new events until the run ends.
        #[arg(long)]
        follow: bool,
    },
    /// Start nothing new; in-flight attempts finish. Resume with `abo resume`.
    Pause { run: String },
    /// Stop a run now: its processes are killed and nothing more lands.
    Kill { run: String },
    /// Re-queue a failed or cancelled task with fresh attempts.
    Retry {
        task: String,
        /// The run (default: the latest run with that task).
        #[arg(long)]
        run: Option<String>,
    },
    /// Deploy the base branch's head to an environment of abo.yml's `deploy:` (its canary, the
    /// SLO check, then promotion or rollback, as the `deploy` autonomy level and policy allow).
    Deploy {
        /// The environment's name.
        env: String,
        /// The autonomy profile (default: the config's).
        #[arg(long)]
        profile: Option<String>,
    },
    /// KPIs from the event log: lead time, attempts, gate pass rate, cost, per-backend figures.
    Report {
        /// How far back, e.g. 7d, 24h.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        since: String,
    },
    /// Coming home: what landed, what waits for you, what failed and why, what it cost.
    Summary {
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        since: String,
        /// Also send it to `notify:`'s webhooks and email (what `notify.digest` does daily).
        #[arg(long)]
        notify: bool,
    },
    /// Check a landed commit against its signed proof of change.
    Verify { commit: String },
    /// Approvals waiting for a decision.
    Approvals,
    /// Approve a pending approval (its id, or the id of a task with one pending).
    Approve {
        id: String,
        /// Why (required when safety.require_reason_for_access, the default).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Answer an agent's question (a `decision` approval): the next attempt gets the answer.
    Decide {
        id: String,
        /// The option to choose, by its number (as `abo approvals` lists them).
        #[arg(long, conflicts_with = "answer", required_unless_present = "answer")]
        choose: Option<usize>,
        /// An answer in your own words.
        #[arg(long)]
        answer: Option<String>,
    },
    /// Reject a pending approval: the task ends denied and its dependents are cancelled.
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Evaluate or test the policy bundle.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Check git, the store, agent CLIs and API keys (never printing their values).
    Doctor,
    /// The REST API; runs created through it are executed by this process. On a
    /// Postgres store it is the control plane: it takes every run in the store, lands it, and has
    /// `abo worker`s run its attempts.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3100")]
        addr: String,
    },
    /// Run attempts for the control plane of a shared (Postgres) store, on any machine.
    Worker {
        /// The repository: a URL (or path) to clone, or a local clone to use as it is.
        #[arg(long, value_name = "URL")]
        repo: String,
        /// Attempts at once.
        #[arg(long, value_name = "N", default_value_t = 2)]
        slots: u32,
        /// Where to clone the repository (default: ~/.cache/abo/workers/NAME).
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// The worker's name in the store (default: HOST-PID).
        #[arg(long)]
        name: Option<String>,
        /// How long an attempt lease lasts without a heartbeat.
        #[arg(long, value_name = "DURATION", default_value = "15s")]
        lease_ttl: String,
    },
    /// What the knowledge index would put in a task's prompt, and why: ranked files with their
    /// reasons and symbols, similar landed tasks, failures to avoid.
    Context {
        /// A task id (of --backlog, else of the latest run holding it), or the task's text.
        task: String,
        /// The backlog the task is in.
        #[arg(long, value_name = "FILE")]
        backlog: Option<PathBuf>,
        /// The prompt's token budget.
        #[arg(long, default_value_t = 16_000)]
        budget: usize,
    },
    /// Measure abo against its performance targets (BENCHMARKS.md).
    Bench {
        /// The short run (under two minutes on two cores).
        #[arg(long)]
        quick: bool,
        /// Measure only these figures: append, noop, dispatch, policy, reports (reading gates'
        /// reports), baseline (its cost per task), git, rss (`abo run` of commands), concurrent,
        /// scaling (tasks), scaling-files (repository size), knowledge (the index on 500 and
        /// 50,000 files), bisect (`landing.verify` healing 16 landed commits), dashboard (page
        /// weight and time of a 10-task and a 10,000-task run), deploy (a failing check to the
        /// rollback's end), proposals (three proposals of a command task against one, in
        /// parallel); comma-separated, the others are null.
        #[arg(long, value_delimiter = ',', value_parser = ["append", "noop", "dispatch", "policy", "reports", "baseline", "git", "rss", "concurrent", "scaling", "scaling-files", "knowledge", "bisect", "dashboard", "deploy", "proposals"])]
        only: Vec<String>,
        /// Where the generated repositories go (default: the system's temporary directory); the
        /// git figures measure its file system as much as abo.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// API tokens: create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Keep runs moving unattended: a run paused because a daily or weekly cap was spent resumes
    /// when the window rolls over.
    Daemon {
        /// How often to look at schedules and paused runs.
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        interval: String,
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:3100")]
        addr: String,
    },
    /// Turn a free-text ticket into a YAML backlog through a backend, for review.
    Plan {
        /// The ticket: a Markdown or text file.
        ticket: PathBuf,
        /// The backend to ask (default: backends.default).
        #[arg(long)]
        backend: Option<String>,
        /// Write the backlog here instead of printing it.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output file.
        #[arg(long)]
        force: bool,
    },
    /// Remove worktrees and attempt branches of runs that ended before the retention.
    Gc {
        /// Retention, e.g. 7d, 12h, 0s.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        older_than: String,
    },
    /// An MCP server over stdio (also served at /mcp by `abo serve`, with tokens): runs, tasks,
    /// approvals, backlogs, the policy and the summary, as tools and resources.
    Mcp,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// Evaluate the bundle on an input document.
    Eval {
        /// The input: a JSON file, or the one abo stored for an attempt (the `input` artifact of
        /// its `task.policy` event: `.abo/artifacts/ID`).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Also print the input as the policy sees it (with abo's per-file path facts).
        #[arg(long)]
        show_input: bool,
    },
    /// Run the `test_*` rules of the default bundle and of safety.policy_dir.
    Test,
}
