//! Backends: what produces an attempt's change in its worktree. Each returns one
//! normalised outcome: failure or success, usage and cost (reported or estimated), the model, the
//! final message, and the transcript and prompt as redacted artifacts.

pub mod agent;
pub mod api;
pub mod briefing;
pub mod diff;
pub mod keys;
pub mod parse;
pub mod prompt;

use std::path::Path;
use std::time::{Duration, Instant};

use abo_core::config::{AgentKind, ApiKind};
use abo_core::decide::BackendOutcome;
use abo_core::event::Usage;
use abo_core::ids::AttemptId;
use abo_core::spec::{BackendSpec, RunSettings, TaskSpec};

use crate::context::Ctx;
use crate::process::{self, Spec};
use crate::redact::Redactor;

/// Everything a backend needs for one attempt.
pub struct Job<'a> {
    pub ctx: &'a Ctx,
    pub settings: &'a RunSettings,
    pub task: &'a TaskSpec,
    pub attempt: &'a AttemptId,
    pub backend: &'a BackendSpec,
    pub worktree: &'a Path,
    pub scratch: &'a Path,
    /// ABO_* variables.
    pub env: Vec<(String, String)>,
    pub feedback: Option<String>,
    pub redactor: &'a Redactor,
    /// The attempt's reservation: the most it may spend.
    pub reserved: abo_core::budget::Reservation,
    /// What the agent's `check` tool runs (`None`: no tool offered).
    pub checker: Option<&'a dyn Checker>,
}

/// What a `check` call answers, and its record.
pub type CheckFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (abo_core::event::CheckRecord, serde_json::Value)>
            + Send
            + 'a,
    >,
>;

/// The work of the in-attempt `check` tool (the task's gates and policy on the worktree now).
pub trait Checker: Sync {
    fn check(&self, n: u32) -> CheckFuture<'_>;
}

/// A backend's outcome, plus warnings for the person watching (a model without a price).
pub struct Produced {
    pub outcome: BackendOutcome,
    pub warnings: Vec<String>,
}

/// A final message is kept this long in the event.
const MESSAGE_CHARS: usize = 2000;

fn shorten(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn failed(reason: impl Into<String>) -> Produced {
    Produced {
        outcome: BackendOutcome {
            failure: Some(reason.into()),
            ..Default::default()
        },
        warnings: Vec::new(),
    }
}

pub async fn produce(job: &Job<'_>) -> Produced {
    let started = Instant::now();
    let mut p = match job.backend {
        BackendSpec::Command { run, .. } => command(job, run).await,
        BackendSpec::Patch { diff, file, .. } => patch(job, diff, file).await,
        BackendSpec::Agent { .. } => run_agent(job).await,
        BackendSpec::Api { .. } => run_api(job).await,
    };
    p.outcome.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    p
}

/// The outcome of a backend with no usage to report (a command, a patch): failure, exit, its log.
fn logged(job: &Job<'_>, failure: Option<String>, exit: Option<i32>, log: &Path) -> Produced {
    Produced {
        outcome: BackendOutcome {
            failure,
            exit,
            log: store_redacted(job, log),
            ..Default::default()
        },
        warnings: Vec::new(),
    }
}

async fn command(job: &Job<'_>, run: &str) -> Produced {
    let log = job.scratch.join("backend.log");
    let mut env = job.env.clone();
    env.extend(prompt_files(
        job,
        &build_prompt(job, prompt::Contract::EditFiles).await,
    ));
    let mut spec = Spec::shell(run, job.worktree);
    spec.sandbox = match crate::sandbox::wrap(
        job.ctx,
        &job.settings.sandbox,
        crate::sandbox::Role::Command,
        job.worktree,
        job.scratch,
        "command",
        env.clone(),
    ) {
        Ok(sb) => sb,
        Err(e) => return failed(format!("sandbox: {e}")),
    };
    spec.env = env;
    spec.env_remove = crate::git::GIT_ENV_REMOVE
        .iter()
        .map(|v| (*v).to_owned())
        .collect();
    spec.timeout = Some(Duration::from_millis(
        job.settings.attempt_timeout_ms.max(1),
    ));
    spec.log = Some(log.clone());
    let (failure, exit) = match process::run(&spec, &job.ctx.groups).await {
        Ok(o) if o.success() => (None, o.exit),
        Ok(o) => (
            Some(format!("the command {}", o.describe(spec.timeout))),
            o.exit,
        ),
        Err(e) => (Some(format!("could not run the command: {e}")), None),
    };
    logged(job, failure, exit, &log)
}

async fn patch(job: &Job<'_>, diff: &abo_core::ids::ArtifactId, file: &str) -> Produced {
    let path = job.scratch.join("change.diff");
    if let Err(e) = job
        .ctx
        .artifacts
        .get(diff)
        .and_then(|b| std::fs::write(&path, b))
    {
        return failed(format!("could not read the patch: {e}"));
    }
    let log = job.scratch.join("backend.log");
    // The worktree is as its checkout left it: nothing ran there yet (`git::fsmonitor`).
    let vouched = job.ctx.git.vouch(job.worktree, &[]);
    let applied = job.ctx.git.apply(job.worktree, &path, false).await;
    drop(vouched);
    let (failure, exit) = match applied {
        Ok(msg) => {
            let _ = std::fs::write(&log, msg);
            (None, Some(0))
        }
        Err(msg) => {
            let _ = std::fs::write(&log, &msg);
            (
                Some(format!(
                    "the patch {file} does not apply: {}",
                    msg.lines().next().unwrap_or(&msg)
                )),
                Some(1),
            )
        }
    };
    logged(job, failure, exit, &log)
}

/// What a backend's prompt is measured with: the BPE tokenizer for agents and models, whose
/// context windows and prices count tokens; four characters a token for a command, whose prompt
/// file no model counts, so that a run without one never loads the tokenizer's tables (tens of
/// megabytes).
fn counter<'a>(backend: &BackendSpec, ctx: &'a crate::context::Ctx) -> &'a dyn prompt::Tokens {
    match backend {
        BackendSpec::Agent { .. } | BackendSpec::Api { .. } => ctx.tokenizer(),
        BackendSpec::Command { .. } | BackendSpec::Patch { .. } => &prompt::ApproxTokens,
    }
}

/// The prompt for this attempt, redacted.
async fn build_prompt(job: &Job<'_>, contract: prompt::Contract) -> prompt::Prompt {
    // The worktree's files (`git ls-files`), each path once whatever its stages.
    let mut tracked: Vec<String> = job
        .ctx
        .git
        .index_entries(job.worktree)
        .await
        .map(|entries| entries.into_iter().map(|e| e.path).collect())
        .unwrap_or_default();
    tracked.dedup();
    let mut files = prompt::relevant_files(job.task, &tracked);
    let budget = match job.backend {
        BackendSpec::Agent { context_tokens, .. } | BackendSpec::Api { context_tokens, .. } => {
            *context_tokens as usize
        }
        _ => 16_000,
    };
    let briefing = knowledge_briefing(job, &mut files, budget).await;
    let rules = crate::sandbox::confined_rules(job.ctx, &job.settings.sandbox);
    let what = prompt::For {
        task: job.task,
        attempt: job.attempt.attempt,
        feedback: job.feedback.as_deref(),
        contract,
        rules: &rules,
        briefing: &briefing,
    };
    let mut p = prompt::build(
        &what,
        job.worktree,
        &files,
        budget,
        counter(job.backend, job.ctx),
    );
    p.text = job.redactor.redact(&p.text);
    p
}

/// Files the index ranked that a prompt shows in full after those the task names or scopes.
const RANKED_FILES: usize = 5;

/// What the knowledge index says about the task at the worktree's commit, within a fifth of the
/// budget; the best files it ranked join `files`. The index failing leaves the prompt without it
/// (the attempt goes on as it would have without an index).
async fn knowledge_briefing(job: &Job<'_>, files: &mut Vec<String>, budget: usize) -> String {
    let Ok(head) = job.ctx.git.head(job.worktree).await else {
        return String::new();
    };
    let ctx = match crate::knowledge::for_task(
        &job.ctx.git,
        &job.ctx.store,
        job.redactor,
        &head,
        job.task,
        files,
        job.ctx.clock.now(),
        &job.ctx.knowledge,
    )
    .await
    {
        Ok(c) => c,
        Err(_) => return String::new(),
    };
    for r in ctx.files.iter().take(RANKED_FILES) {
        if !files.contains(&r.path) {
            files.push(r.path.clone());
        }
    }
    // Measured as the rest of the prompt is: a command's briefing never loads the tokenizer.
    briefing::render(&ctx, budget / 5, counter(job.backend, job.ctx))
}

/// Writes the prompt (and feedback) for a command or agent; returns their variables.
fn prompt_files(job: &Job<'_>, p: &prompt::Prompt) -> Vec<(String, String)> {
    let prompt_file = job.scratch.join("prompt.md");
    let _ = std::fs::write(&prompt_file, &p.text);
    let mut env = vec![(
        "ABO_PROMPT_FILE".to_owned(),
        prompt_file.to_string_lossy().into_owned(),
    )];
    if let Some(f) = &job.feedback {
        let path = job.scratch.join("feedback.md");
        let _ = std::fs::write(&path, job.redactor.redact(f));
        env.push((
            "ABO_FEEDBACK_FILE".to_owned(),
            path.to_string_lossy().into_owned(),
        ));
    }
    env
}

/// Stores a file's content, redacted, as an artifact.
fn store_redacted(job: &Job<'_>, path: &Path) -> Option<abo_core::ids::ArtifactId> {
    std::fs::metadata(path).ok()?;
    let text = job.redactor.redact(&crate::artifacts::read_log(path));
    job.ctx.artifacts.put(text.as_bytes()).ok()
}

/// USD for a usage: the tool's own figure when it reported one, else the price table's estimate,
/// else nothing (and one warning). Local model servers cost nothing.
fn price(
    job: &Job<'_>,
    model: Option<&str>,
    usage: Option<&Usage>,
    reported: Option<f64>,
    local: bool,
) -> (Option<f64>, Option<String>, Option<String>) {
    if let Some(c) = reported {
        return (Some(c), Some("reported".into()), None);
    }
    let Some(usage) = usage else {
        return (None, None, None);
    };
    match model.and_then(|m| job.settings.pricing.cost(m, usage)) {
        Some(c) => (Some(c), Some("estimated".into()), None),
        None if local => (Some(0.0), Some("estimated".into()), None),
        None => {
            let b = job.backend.name();
            let warning = match model {
                Some(m) => format!(
                    "backend `{b}`: no price for model `{m}`, so its cost is unknown (add it under `pricing:` in abo.yml)"
                ),
                None => format!(
                    "backend `{b}` reports no cost and names no model, so its cost is unknown (set its `model:`)"
                ),
            };
            (None, None, Some(warning))
        }
    }
}

async fn run_agent(job: &Job<'_>) -> Produced {
    let BackendSpec::Agent { model, .. } = job.backend else {
        return failed("not an agent backend");
    };
    let p = build_prompt(job, prompt::Contract::EditFiles).await;
    let prompt_id = job.ctx.artifacts.put(p.text.as_bytes()).ok();
    let mut env = job.env.clone();
    env.extend(prompt_files(job, &p));
    // The `check` tool: a token for this attempt alone, which its transcript and log never show.
    // aider speaks no MCP: it is offered no tool.
    let speaks_mcp = matches!(
        job.backend,
        BackendSpec::Agent { agent, .. } if *agent != AgentKind::Aider
    );
    let door = match (job.checker, &job.ctx.sandbox_helper) {
        (Some(checker), Some(abo)) if job.settings.max_checks > 0 && speaks_mcp => {
            match crate::check::token() {
                Ok(token) => Some(Door {
                    checker,
                    abo: abo.to_string_lossy().into_owned(),
                    tally: crate::check::Tally::new(job.settings.max_checks),
                    token,
                }),
                Err(e) => return failed(format!("could not make the check tool's token: {e}")),
            }
        }
        _ => None,
    };
    let place = Place {
        cwd: job.worktree,
        env,
        scratch: job.scratch,
        door: door.as_ref(),
    };
    let ran = run_agent_on(
        job.ctx,
        job.settings,
        job.backend,
        &p.text,
        place,
        job.reserved,
    )
    .await;
    let checks = door.as_ref().map(|d| d.tally.take()).unwrap_or_default();
    let with_token;
    let job_redactor = job.redactor;
    let redactor = match &door {
        Some(d) => {
            with_token = job_redactor
                .clone()
                .with(vec![(d.token.clone(), "abo check token".to_owned())]);
            &with_token
        }
        None => job_redactor,
    };
    let job = &Job {
        redactor,
        env: Vec::new(),
        feedback: None,
        ..*job
    };
    let r = &ran.report;
    let model_used = r.model.clone().or_else(|| model.clone());
    // An agent stopped before its total still used what it reported along the way.
    let usage = r
        .usage
        .or_else(|| (r.running.total() > 0).then_some(r.running));
    let (cost_usd, cost_source, warning) = price(
        job,
        model_used.as_deref(),
        usage.as_ref(),
        r.cost_usd,
        false,
    );
    let exit = ran.streamed.as_ref().and_then(|s| s.outcome.exit);
    let transient = ran.failure.is_some() && r.transient() && !ran.permanent;
    // A limit with its reset holds the backend (only when the attempt failed for it).
    let hold_until = r
        .limit
        .as_ref()
        .filter(|_| ran.failure.is_some())
        .map(|l| l.until(job.ctx.now()));
    Produced {
        outcome: BackendOutcome {
            failure: ran.failure.map(|f| job.redactor.redact(&f)),
            exit,
            usage,
            cost_usd,
            cost_source,
            log: store_redacted(job, &job.scratch.join("agent.stderr.log")),
            model: model_used,
            message: r
                .message
                .as_deref()
                .map(|m| shorten(&job.redactor.redact(m))),
            transcript: store_redacted(job, &ran.transcript),
            prompt: prompt_id,
            transient,
            permanent: ran.permanent,
            hold_until,
            checks,
            ..Default::default()
        },
        warnings: warning.into_iter().collect(),
    }
}

/// The reply's `max_tokens`: the configured one, lowered so that the prompt and the reply fit the
/// attempt's reservation (tokens, and USD at the model's price). The prompt is counted with
/// abo's tokenizer plus a tenth, since the provider's may count more.
fn output_cap(
    job: &Job<'_>,
    model: &str,
    prompt_tokens: usize,
    configured: u32,
) -> Result<u32, String> {
    let r = job.reserved;
    let prompt = u64::try_from(prompt_tokens).unwrap_or(u64::MAX);
    let prompt = prompt.saturating_add(prompt / 10);
    let mut cap = u64::from(configured);
    if let Some(t) = r.tokens {
        let left = t.saturating_sub(prompt);
        if left == 0 {
            return Err(format!(
                "budget: the prompt alone (about {prompt} tokens) takes the attempt's whole reservation of {t} tokens"
            ));
        }
        cap = cap.min(left);
    }
    if let Some(usd) = r.usd
        && let Some(p) = job.settings.pricing.lookup(model)
    {
        #[allow(clippy::cast_precision_loss)]
        let left = usd - prompt as f64 * p.input / 1e6;
        if left <= 0.0 {
            return Err(format!(
                "budget: the prompt alone (about {prompt} tokens) costs more than the attempt's reservation of ${usd:.4}"
            ));
        }
        if p.output > 0.0 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = (left / p.output * 1e6).floor() as u64;
            cap = cap.min(n.max(1));
        }
    }
    Ok(u32::try_from(cap).unwrap_or(u32::MAX))
}

/// Whether a base URL points at this machine or a private network: a local model server.
pub fn is_local(base_url: &str) -> bool {
    let rest = base_url.split("://").nth(1).unwrap_or(base_url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    if host == "localhost" || host.ends_with(".local") || host == "::1" {
        return true;
    }
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => ip.is_loopback() || ip.is_private(),
        Err(_) => false,
    }
}

/// Where an API backend's key comes from: the variable, and whether the backend needs one. A local
/// OpenAI-compatible server needs none unless `api_key_env` names one.
pub fn key_variable(api: ApiKind, base_url: &str, explicit: Option<&str>) -> (String, bool) {
    let needed = explicit.is_some() || api == ApiKind::Anthropic || !is_local(base_url);
    (
        explicit.map_or_else(|| api.default_key_env().to_owned(), str::to_owned),
        needed,
    )
}

/// The key to send, or why it is missing. A backend that needs no key is sent none, so a local
/// server never receives, say, the OpenAI key.
pub fn api_key(
    api: ApiKind,
    base_url: &str,
    explicit: Option<&str>,
) -> Result<Option<String>, String> {
    let (var, needed) = key_variable(api, base_url, explicit);
    if !needed {
        return Ok(None);
    }
    match std::env::var(&var).ok().filter(|k| !k.is_empty()) {
        Some(k) => Ok(Some(k)),
        None => Err(format!(
            "the variable {var} that holds the API key is not set"
        )),
    }
}

/// Where an agent runs: its working directory, its extra environment, its scratch directory.
struct Place<'a> {
    cwd: &'a Path,
    env: Vec<(String, String)>,
    scratch: &'a Path,
    /// The attempt's `check` tool, if offered.
    door: Option<&'a Door<'a>>,
}

/// The `check` tool of one attempt: its work, its token, its calls.
struct Door<'a> {
    checker: &'a dyn Checker,
    /// The abo binary, run by the agent CLI as the MCP server.
    abo: String,
    tally: crate::check::Tally,
    token: String,
}

impl Door<'_> {
    /// Answers the proxy's calls until the attempt ends (never returns).
    async fn serve(
        &self,
        mut calls: tokio::sync::mpsc::Receiver<crate::check::Call>,
        checking: tokio::sync::watch::Sender<bool>,
    ) {
        while let Some(call) = calls.recv().await {
            let (record, answer) = match self.tally.next() {
                Ok(n) => {
                    let _ = checking.send(true);
                    let done = self.checker.check(n).await;
                    let _ = checking.send(false);
                    done
                }
                Err(n) => crate::check::refused(n, self.tally.max),
            };
            self.tally.push(record);
            let _ = call.reply.send(answer);
        }
        std::future::pending::<()>().await;
    }
}

/// Runs an agent backend on `prompt` in `place.cwd`; the prompt file is `scratch/prompt.md`,
/// written by the caller. Past its reservation, the agent is stopped.
async fn run_agent_on(
    ctx: &Ctx,
    settings: &RunSettings,
    backend: &BackendSpec,
    prompt: &str,
    place: Place<'_>,
    reserved: abo_core::budget::Reservation,
) -> agent::Ran {
    let Place {
        cwd,
        mut env,
        scratch,
        door,
    } = place;
    let BackendSpec::Agent {
        agent,
        command,
        model,
        max_turns,
        permission_mode,
        args,
        base_url,
        ..
    } = backend
    else {
        return agent::Ran {
            report: Default::default(),
            streamed: None,
            failure: Some(format!("backend `{}` is not an agent", backend.name())),
            permanent: false,
            transcript: scratch.join("transcript.jsonl"),
        };
    };
    let prompt_file = scratch.join("prompt.md");
    // What aider writes (its analytics log, its history) goes where the sandbox lets an agent
    // write: the attempt's own temporary directory, not the worktree, not the scratch directory.
    let agent_files = scratch.join("agent.tmp");
    let _ = std::fs::create_dir_all(&agent_files);
    let analytics = agent_files.join("aider-analytics.jsonl");
    let sandboxed = settings.sandbox.mode != abo_core::config::SandboxMode::Off;
    let plan = keys::plan(backend, settings.sandbox.mode, |k| std::env::var(k).ok());
    let key_env = endpoint_key(*agent, base_url.as_deref(), &plan.env, &mut env);
    if *agent == abo_core::config::AgentKind::Aider {
        // aider wraps what it prints at 80 columns without a terminal; one line per message.
        env.push(("COLUMNS".to_owned(), "1000".to_owned()));
    }
    // Claude Code's flags depend on its version; the others' do not.
    let version = match agent {
        AgentKind::ClaudeCode => {
            agent_version(ctx, settings, command, cwd, scratch, env.clone()).await
        }
        _ => None,
    };
    let invocation = agent::Invocation {
        kind: *agent,
        command,
        model: model.as_deref(),
        max_turns: *max_turns,
        permission_mode: permission_mode.as_deref(),
        extra_args: args,
        prompt,
        prompt_file: &prompt_file,
        analytics_log: &analytics,
        max_budget_usd: reserved.usd,
        version,
        sandboxed,
        base_url: base_url.as_deref(),
        key_env: key_env.as_deref(),
        scratch: &agent_files,
        mcp: None,
    };
    if *agent == abo_core::config::AgentKind::Codex
        && let Some(mode) = agent::codex_sandbox(&invocation)
    {
        let why = if sandboxed {
            "abo's sandbox is the boundary (Codex's own needs namespaces, which abo's refuses)"
        } else {
            "sandbox.mode is off"
        };
        let _ = std::fs::write(
            scratch.join("agent.stderr.log"),
            format!("abo: codex runs with its own sandbox `-s {mode}`: {why}\n"),
        );
    }
    // In the sandbox, the agent reaches the network only through abo's egress proxy, which may
    // hold its key.
    let egress_log = scratch.join("egress.jsonl");
    let (checking_tx, checking_rx) = tokio::sync::watch::channel(false);
    let (check_door, calls) = match door {
        Some(d) => {
            let (door, calls) = crate::check::Door::new(d.token.clone());
            (Some(door), Some(calls))
        }
        None => (None, None),
    };
    // Without the sandbox, a proxy that reaches nowhere still answers the `check` tool.
    let check_only = if settings.sandbox.mode == abo_core::config::SandboxMode::Off
        && let Some(door) = &check_door
    {
        let opts = crate::egress::Options {
            hosts: Vec::new(),
            log: egress_log.clone(),
            held: Vec::new(),
            upstream_ca: Vec::new(),
            check: Some(door.clone()),
        };
        match crate::egress::start(opts).await {
            Ok(p) => Some(p),
            Err(e) => {
                return agent_failed(scratch, format!("could not start the egress proxy: {e}"));
            }
        }
    } else {
        None
    };
    let proxy = if settings.sandbox.mode == abo_core::config::SandboxMode::Off {
        None
    } else {
        let mut hosts = settings.sandbox.agent_hosts.clone();
        hosts.extend(plan.endpoint.as_ref().map(keys::Endpoint::entry));
        let opts = crate::egress::Options {
            hosts,
            log: egress_log.clone(),
            held: plan.held.clone().into_iter().collect(),
            upstream_ca: ca_files(),
            check: check_door.clone(),
        };
        match crate::egress::start(opts).await {
            Ok(p) => Some(p),
            Err(e) => {
                return agent_failed(scratch, format!("could not start the egress proxy: {e}"));
            }
        }
    };
    env.extend(plan.env.iter().cloned());
    let server = match (door, proxy.as_ref().or(check_only.as_ref())) {
        (Some(d), Some(p)) => Some(crate::check::Server {
            command: d.abo.clone(),
            env: vec![
                (crate::check::TOKEN_ENV.to_owned(), d.token.clone()),
                (
                    crate::check::PROXY_ENV.to_owned(),
                    format!("http://127.0.0.1:{}", p.port),
                ),
            ],
        }),
        _ => None,
    };
    let mcp_config = agent_files.join("abo-mcp.json");
    if let Some(s) = &server
        && let Err(e) = std::fs::write(&mcp_config, s.claude_config().to_string())
    {
        return agent_failed(
            scratch,
            format!("could not write the MCP configuration: {e}"),
        );
    }
    let invocation = agent::Invocation {
        mcp: server.as_ref().map(|s| (s, mcp_config.as_path())),
        ..invocation
    };
    let sandbox = match &proxy {
        Some(p) => {
            let url = format!("http://127.0.0.1:{}", p.port);
            for k in [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
            ] {
                env.push((k.to_owned(), url.clone()));
            }
            if let Some(ca) = &p.ca_pem {
                match trust_files(scratch, ca) {
                    Ok(vars) => env.extend(vars),
                    Err(e) => return agent_failed(scratch, format!("egress proxy CA: {e}")),
                }
            }
            let role = crate::sandbox::Role::Agent {
                kind: *agent,
                proxy_port: p.port,
                keys: plan.keys,
            };
            match crate::sandbox::wrap(
                ctx,
                &settings.sandbox,
                role,
                cwd,
                scratch,
                "agent",
                env.clone(),
            ) {
                Ok(sb) => sb.map(|mut sb| {
                    // abo's sandbox is the boundary: Claude Code, which refuses
                    // bypassPermissions as root elsewhere, may take it inside one that holds.
                    if *agent == AgentKind::ClaudeCode
                        && (sb.profile.mode == abo_sandbox::Mode::Required
                            || abo_sandbox::missing(&sb.profile).is_empty())
                    {
                        sb.env.push(("IS_SANDBOX".into(), "1".into()));
                    }
                    // Its telemetry, update checks and the like cannot leave the sandbox; asked not
                    // to try, it does not wait on them or have them refused as configuration errors.
                    if *agent == AgentKind::ClaudeCode
                        && !sb
                            .env
                            .iter()
                            .any(|(k, _)| k == "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
                    {
                        sb.env.push((
                            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                            "1".into(),
                        ));
                    }
                    sb
                }),
                Err(e) => return agent_failed(scratch, format!("sandbox: {e}")),
            }
        }
        None => None,
    };
    let limits = agent::Limits {
        sandbox,
        attempt: Duration::from_millis(settings.attempt_timeout_ms.max(1)),
        silence: Duration::from_millis(settings.silence_timeout_ms.max(1)),
        meter: (!reserved.is_empty()).then_some(agent::Meter {
            tokens: reserved.tokens,
            usd: reserved.usd,
            prices: &settings.pricing,
            model: model.as_deref(),
        }),
        refused: proxy.as_ref().map(|p| p.refused.clone()),
        checking: door.map(|_| checking_rx.clone()),
    };
    let agent = agent::run(&invocation, cwd, env, scratch, &limits, &ctx.groups);
    let ran = match (door, calls) {
        (Some(d), Some(calls)) => tokio::select! {
            ran = agent => ran,
            () = d.serve(calls, checking_tx) => unreachable!("serving checks never ends"),
        },
        _ => agent.await,
    };
    drop(proxy);
    drop(check_only);
    // The token dies with the proxy; its file goes too.
    let _ = std::fs::remove_file(&mcp_config);
    // Every connection the proxy allowed or refused goes into the agent's log.
    if let Ok(egress) = std::fs::read_to_string(&egress_log)
        && !egress.is_empty()
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(scratch.join("agent.stderr.log"))
        {
            let _ = write!(f, "\n--- abo: egress proxy ---\n{egress}");
        }
    }
    ran
}

/// The agent's version, from its `--version` (run as the agent would be: in a sandbox, here one
/// without network, when the run has one), or `None` when it prints none within a few seconds.
/// Asked once per executable file in this process, as long as it answers.
async fn agent_version(
    ctx: &Ctx,
    settings: &RunSettings,
    command: &str,
    cwd: &Path,
    scratch: &Path,
    env: Vec<(String, String)>,
) -> Option<agent::Version> {
    let key = agent::Versions::key(command);
    if let Some(v) = key.as_ref().and_then(|k| ctx.agent_versions.get(k)) {
        return v;
    }
    let v = ask_version(ctx, settings, command, cwd, scratch, env).await;
    // Only an answer is kept: a check that failed (a timeout on a busy machine) is asked again.
    if let (Some(k), Some(_)) = (key, v) {
        ctx.agent_versions.insert(k, v);
    }
    v
}

async fn ask_version(
    ctx: &Ctx,
    settings: &RunSettings,
    command: &str,
    cwd: &Path,
    scratch: &Path,
    env: Vec<(String, String)>,
) -> Option<agent::Version> {
    let mut spec = Spec::new(command, cwd).args(["--version"]);
    spec.sandbox = crate::sandbox::wrap(
        ctx,
        &settings.sandbox,
        crate::sandbox::Role::Command,
        cwd,
        scratch,
        "agent-version",
        env.clone(),
    )
    .ok()?;
    spec.env = env;
    spec.env_remove = agent::inherited_agent_vars(std::env::vars().map(|(k, _)| k));
    spec.timeout = Some(Duration::from_secs(10));
    let out = process::run(&spec, &ctx.groups).await.ok()?;
    if !out.success() {
        return None;
    }
    agent::Version::parse(String::from_utf8_lossy(&out.stdout).lines().next()?)
}

/// The variable Codex reads the key of its `base_url:` provider from: OPENAI_API_KEY, where the
/// CLI has it (the key, or the placeholder of a key the egress proxy holds, `keys::plan`); none
/// for a server that needs no key. aider (litellm) refuses to start without an OpenAI key, so
/// with none a placeholder stands in, which a local server ignores.
fn endpoint_key(
    kind: abo_core::config::AgentKind,
    base_url: Option<&str>,
    planned: &[(String, String)],
    env: &mut Vec<(String, String)>,
) -> Option<String> {
    use abo_core::config::AgentKind;
    base_url?;
    const VAR: &str = "OPENAI_API_KEY";
    let has_key =
        planned.iter().any(|(k, _)| k == VAR) || std::env::var(VAR).is_ok_and(|v| !v.is_empty());
    match kind {
        AgentKind::Codex => has_key.then(|| VAR.to_owned()),
        AgentKind::Aider => {
            if !has_key {
                env.push((VAR.to_owned(), crate::egress::PLACEHOLDER.to_owned()));
            }
            None
        }
        _ => None,
    }
}

fn agent_failed(scratch: &Path, why: String) -> agent::Ran {
    agent::Ran {
        report: Default::default(),
        streamed: None,
        failure: Some(why),
        permanent: false,
        transcript: scratch.join("transcript.jsonl"),
    }
}

/// The CA bundles the user set (the files that exist), which the egress proxy trusts upstream.
fn ca_files() -> Vec<(String, std::path::PathBuf)> {
    crate::sandbox::CA_VARS
        .iter()
        .filter_map(|v| {
            let path = std::path::PathBuf::from(std::env::var_os(v)?);
            path.is_file().then(|| ((*v).to_owned(), path))
        })
        .collect()
}

/// Writes the bundles that make an agent trust the egress proxy's CA as well as what it trusted
/// before (the user's bundles, else the system's), and returns the variables naming them: Node
/// adds `NODE_EXTRA_CA_CERTS` to its roots; Python and Codex take `SSL_CERT_FILE`,
/// `REQUESTS_CA_BUNDLE` and `CODEX_CA_CERTIFICATE` in place of theirs.
fn trust_files(scratch: &Path, ca: &str) -> std::io::Result<Vec<(String, String)>> {
    let read = |v: &str| {
        std::env::var_os(v)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let system = crate::egress::SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let base = match read("SSL_CERT_FILE") {
        s if s.is_empty() => system,
        s => s,
    };
    let mut bundle = base;
    for v in [
        "REQUESTS_CA_BUNDLE",
        "CODEX_CA_CERTIFICATE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        bundle.push('\n');
        bundle.push_str(&read(v));
    }
    bundle.push('\n');
    bundle.push_str(ca);
    let node = format!("{}\n{ca}", read("NODE_EXTRA_CA_CERTS"));
    let (bundle_path, node_path) = (
        scratch.join("egress-ca-bundle.pem"),
        scratch.join("egress-ca.pem"),
    );
    std::fs::write(&bundle_path, bundle)?;
    std::fs::write(&node_path, node)?;
    let b = bundle_path.to_string_lossy().into_owned();
    Ok(vec![
        (
            "NODE_EXTRA_CA_CERTS".into(),
            node_path.to_string_lossy().into_owned(),
        ),
        ("SSL_CERT_FILE".into(), b.clone()),
        ("REQUESTS_CA_BUNDLE".into(), b.clone()),
        ("CODEX_CA_CERTIFICATE".into(), b),
    ])
}

async fn run_api(job: &Job<'_>) -> Produced {
    let BackendSpec::Api {
        api,
        model,
        base_url,
        api_key_env,
        max_tokens,
        retries,
        ..
    } = job.backend
    else {
        return failed("not a model API backend");
    };
    let key = match api_key(*api, base_url, api_key_env.as_deref()) {
        Ok(k) => k,
        Err(e) => return failed(e),
    };
    let p = build_prompt(job, prompt::Contract::DiffOnly).await;
    let prompt_id = job.ctx.artifacts.put(p.text.as_bytes()).ok();
    let max_tokens = match output_cap(job, model, p.tokens, *max_tokens) {
        Ok(n) => n,
        Err(why) => return failed(why),
    };
    let request = api::Request {
        api: *api,
        base_url,
        model,
        key: key.as_deref(),
        max_tokens,
        system: prompt::DIFF_SYSTEM,
        prompt: &p.text,
        timeout: Duration::from_millis(job.settings.attempt_timeout_ms.max(1)),
        seed: Some(job.attempt.attempt),
    };
    let (result, failures) =
        api::call_with_retries(job.ctx.http(), &request, *retries, &*job.ctx.clock).await;
    let log_path = job.scratch.join("backend.log");
    let _ = std::fs::write(
        &log_path,
        failures
            .iter()
            .map(|f| format!("try failed: {f}\n"))
            .collect::<String>(),
    );
    let log = store_redacted(job, &log_path);
    let reply = match result {
        Ok(r) => r,
        Err(api::ApiError::Held { message, reset }) => {
            let mut p = failed(
                job.redactor
                    .redact(&format!("the model API reported a usage limit: {message}")),
            );
            p.outcome.hold_until = Some(reset.until(job.ctx.now()));
            p.outcome.prompt = prompt_id;
            p.outcome.log = log;
            return p;
        }
        Err(e) => {
            let transient = e.is_transient();
            let tries = failures.len().max(1);
            let mut p = failed(job.redactor.redact(&format!(
                "the model API failed after {tries} tr{}: {e}",
                if tries == 1 { "y" } else { "ies" }
            )));
            p.outcome.transient = transient;
            p.outcome.prompt = prompt_id;
            p.outcome.log = log;
            return p;
        }
    };
    let transcript = job
        .ctx
        .artifacts
        .put(job.redactor.redact(&reply.raw).as_bytes())
        .ok();
    let model_used = reply.model.clone().unwrap_or_else(|| model.clone());
    let (cost_usd, cost_source, warning) = price(
        job,
        Some(&model_used),
        Some(&reply.usage),
        None,
        is_local(base_url),
    );
    let rationale = reply
        .text
        .split("```")
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let mut outcome = BackendOutcome {
        exit: None,
        usage: Some(reply.usage),
        cost_usd,
        cost_source,
        log,
        model: Some(model_used),
        message: (!rationale.is_empty()).then(|| shorten(&job.redactor.redact(&rationale))),
        transcript,
        prompt: prompt_id,
        ..Default::default()
    };
    outcome.failure = apply_reply(job, &reply.text).await.err();
    Produced {
        outcome,
        warnings: warning.into_iter().collect(),
    }
}

/// Applies the diff in a model's reply to the worktree, or says why it cannot.
async fn apply_reply(job: &Job<'_>, text: &str) -> Result<(), String> {
    let diff = diff::extract(text).map_err(|e| e.to_string())?;
    let path = job.scratch.join("reply.diff");
    std::fs::write(&path, &diff).map_err(|e| format!("could not write the diff: {e}"))?;
    // First `git apply --check` (a clean apply, as the contract says), then the apply itself.
    for check in [true, false] {
        if let Err(m) = job.ctx.git.apply(job.worktree, &path, check).await {
            return Err(format!(
                "the diff does not apply: {}",
                m.lines().next().unwrap_or(&m)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A command's prompt is measured without the tokenizer; the first model's prompt loads it.
    #[tokio::test]
    async fn only_prompts_that_models_count_load_the_tokenizer() {
        use abo_core::ids::BackendName;
        use abo_core::spec::BackendSpec;
        let dir = tempfile::tempdir().unwrap();
        let store = abo_store::Store::open("sqlite:t.db", dir.path())
            .await
            .unwrap();
        let git = crate::git::Git::new(dir.path().to_owned());
        let ctx = crate::Ctx::new(
            dir.path().to_owned(),
            store,
            git,
            std::sync::Arc::new(crate::SystemClock),
        );
        let text = "fn main() { println!(\"hello, world\"); }";
        let command = BackendSpec::Command {
            name: BackendName::new("c"),
            run: "true".into(),
        };
        assert_eq!(
            super::counter(&command, &ctx).count(text),
            text.len().div_ceil(4)
        );
        assert!(!ctx.tokenizer_loaded());
        let api = BackendSpec::Api {
            name: BackendName::new("m"),
            api: abo_core::config::ApiKind::Openai,
            model: "gpt-4o".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: None,
            max_tokens: 100,
            context_tokens: 1000,
            retries: 0,
        };
        let n = super::counter(&api, &ctx).count(text);
        assert!(ctx.tokenizer_loaded());
        assert!(n > 0 && n != text.len().div_ceil(4), "{n}");
    }

    /// The whole prompt of a command attempt (its files and the knowledge index's briefing) is
    /// built without loading the tokenizer; the same prompt for a model loads it (the control).
    #[tokio::test]
    async fn a_commands_prompt_and_briefing_do_not_load_the_tokenizer() {
        use abo_core::ids::{AttemptId, BackendName, RunId, TaskId};
        use abo_core::spec::{BackendSpec, TaskSpec};
        let repo = abo_test_support::TestRepo::new();
        repo.write("src/parse.rs", "pub fn parse_input() -> u32 { 1 }\n");
        repo.write("src/lib.rs", "pub mod parse;\n");
        repo.commit_all("parser");
        let store = abo_store::Store::open("sqlite:t.db", &repo.outside)
            .await
            .unwrap();
        let git = crate::git::Git::new(repo.path.clone());
        let config = abo_core::config::Config::parse("abo.yml", "version: 1\n").unwrap();
        let settings = crate::create::settings(&config, None);
        let redactor = crate::redact::Redactor::from_process_env_using(
            &abo_policy::secrets::Scanner::default(),
            &[],
        );
        let command = BackendSpec::Command {
            name: BackendName::new("c"),
            run: "true".into(),
        };
        let api = BackendSpec::Api {
            name: BackendName::new("m"),
            api: abo_core::config::ApiKind::Openai,
            model: "gpt-4o".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: None,
            max_tokens: 100,
            context_tokens: 8000,
            retries: 0,
        };
        for (backend, loads) in [(&command, false), (&api, true)] {
            let ctx = crate::Ctx::new(
                repo.path.clone(),
                store.clone(),
                git.clone(),
                std::sync::Arc::new(crate::SystemClock),
            );
            let task = TaskSpec {
                id: TaskId::new("t"),
                title: "Fix parse_input in the parser".into(),
                kind: abo_core::backlog::TaskType::Code,
                description: String::new(),
                acceptance: vec![],
                paths: vec!["src/**".into()],
                deps: vec![],
                backend: backend.clone(),
                gates: vec![],
                labels: vec![],
                max_attempts: 1,
                priority: 0,
                skipped: None,
                needs_plan_approval: false,
                autonomy: Default::default(),
                origin: String::new(),
                budget: None,
                routed: false,
                context_tokens: 0,
            };
            let attempt = AttemptId::new(RunId::new("r"), task.id.clone(), 1);
            let job = super::Job {
                ctx: &ctx,
                settings: &settings,
                task: &task,
                attempt: &attempt,
                backend,
                worktree: &repo.path,
                scratch: &repo.outside,
                env: Vec::new(),
                feedback: None,
                redactor: &redactor,
                reserved: Default::default(),
                checker: None,
            };
            let p = super::build_prompt(&job, super::prompt::Contract::EditFiles).await;
            assert!(p.text.contains("src/parse.rs"), "{}", p.text);
            assert_eq!(ctx.tokenizer_loaded(), loads, "{backend:?}");
        }
    }

    #[test]
    fn which_backends_need_a_key() {
        use super::key_variable;
        use abo_core::config::ApiKind::{Anthropic, Openai};
        assert_eq!(
            key_variable(Anthropic, "http://127.0.0.1:9", None),
            ("ANTHROPIC_API_KEY".into(), true)
        );
        assert_eq!(
            key_variable(Openai, "https://api.openai.com/v1", None),
            ("OPENAI_API_KEY".into(), true)
        );
        assert_eq!(
            key_variable(Openai, "http://127.0.0.1:11434/v1", None),
            ("OPENAI_API_KEY".into(), false)
        );
        assert_eq!(
            key_variable(Openai, "http://127.0.0.1:11434/v1", Some("LOCAL_KEY")),
            ("LOCAL_KEY".into(), true)
        );
        // Not needed: none is read, so a local server never receives another provider's key.
        assert_eq!(
            super::api_key(Openai, "http://127.0.0.1:11434/v1", None),
            Ok(None)
        );
    }

    #[test]
    fn local_urls() {
        for (u, want) in [
            ("http://127.0.0.1:11434/v1", true),
            ("http://localhost:8080/v1", true),
            ("http://[::1]:8000/v1", true),
            ("http://192.168.1.5:1234/v1", true),
            ("http://10.0.0.2/v1", true),
            ("http://gpu.local:8000/v1", true),
            ("https://api.openai.com/v1", false),
            ("https://8.8.8.8/v1", false),
        ] {
            assert_eq!(super::is_local(u), want, "{u}");
        }
    }
}

/// A backend's answer to one question (`abo plan`).
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// `reported` by the tool, or `estimated` from the run's prices.
    pub cost_source: Option<String>,
    pub model: Option<String>,
}

/// Asks an agent or a model one question and returns its final text. An agent runs in `cwd`,
/// which the caller makes a throwaway worktree: agents may edit files.
/// A question: the system prompt and the user prompt.
pub struct Question<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
}

pub async fn ask(
    ctx: &Ctx,
    backend: &BackendSpec,
    settings: &RunSettings,
    question: &Question<'_>,
    cwd: &Path,
    scratch: &Path,
    redactor: &Redactor,
) -> Result<Answer, String> {
    let system = question.system;
    let prompt = redactor.redact(question.prompt);
    match backend {
        BackendSpec::Api {
            api,
            model,
            base_url,
            api_key_env,
            max_tokens,
            retries,
            ..
        } => {
            let key = api_key(*api, base_url, api_key_env.as_deref())?;
            let request = api::Request {
                api: *api,
                base_url,
                model,
                key: key.as_deref(),
                max_tokens: *max_tokens,
                system,
                prompt: &prompt,
                timeout: Duration::from_millis(settings.attempt_timeout_ms.max(1)),
                seed: None,
            };
            let (result, _) =
                api::call_with_retries(ctx.http(), &request, *retries, &*ctx.clock).await;
            let reply =
                result.map_err(|e| redactor.redact(&format!("the model API failed: {e}")))?;
            let model_used = reply.model.clone().unwrap_or_else(|| model.clone());
            let cost = settings
                .pricing
                .cost(&model_used, &reply.usage)
                .or_else(|| is_local(base_url).then_some(0.0));
            Ok(Answer {
                text: reply.text,
                usage: Some(reply.usage),
                cost_source: cost.map(|_| "estimated".to_owned()),
                cost_usd: cost,
                model: Some(model_used),
            })
        }
        BackendSpec::Agent { model, .. } => {
            let text = format!("{system}\n\n{prompt}");
            let prompt_file = scratch.join("prompt.md");
            std::fs::write(&prompt_file, &text)
                .map_err(|e| format!("could not write the prompt: {e}"))?;
            let place = Place {
                cwd,
                env: Vec::new(),
                scratch,
                door: None,
            };
            let ran = run_agent_on(ctx, settings, backend, &text, place, Default::default()).await;
            if let Some(f) = ran.failure {
                return Err(redactor.redact(&f));
            }
            let r = ran.report;
            let model_used = r.model.clone().or_else(|| model.clone());
            let estimated = || {
                model_used
                    .as_deref()
                    .zip(r.usage.as_ref())
                    .and_then(|(m, u)| settings.pricing.cost(m, u))
            };
            let (cost, source) = match r.cost_usd {
                Some(c) => (Some(c), Some("reported")),
                None => {
                    let c = estimated();
                    (c, c.map(|_| "estimated"))
                }
            };
            Ok(Answer {
                text: r.message.unwrap_or_default(),
                usage: r.usage,
                cost_usd: cost,
                cost_source: source.map(str::to_owned),
                model: model_used,
            })
        }
        BackendSpec::Command { name, .. } | BackendSpec::Patch { name, .. } => Err(format!(
            "backend `{name}` is a command: asking needs an agent or a model API"
        )),
    }
}
