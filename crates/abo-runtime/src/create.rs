//! Creating a run: freezing a validated plan and the config into the run's spec, recorded as its
//! `run.created` event, and the run branch at the base commit.

use std::hash::{BuildHasher, RandomState};

use abo_core::autonomy::{self, Levels};
use abo_core::config::{BackendConfig, Config};
use abo_core::event::{Event, EventBody};
use abo_core::ids::{BackendName, GateName, RunId};
use abo_core::plan::{BackendChoice, Plan, Readiness};
use abo_core::spec::{BackendSpec, GateSpec, RunSettings, RunSpec, TaskSpec};

use crate::context::Ctx;

/// Overrides from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub profile: Option<String>,
    pub max_parallel: Option<usize>,
    /// The policy, validated by the caller (a policy file that does not parse is a config error).
    pub policy: abo_core::spec::PolicySpec,
    /// `--usd`, `--tokens`, `--wall`: the run's own caps, replacing abo.yml's.
    pub caps: abo_core::budget::CapChange,
    /// Whether attempts may reuse cached results (`--no-cache` turns it off).
    pub cache: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the repository has no commit to start from: commit something first")]
    NoBase,
    #[error("base branch `{0}` does not exist")]
    NoBaseBranch(String),
    #[error("{origin}backend `{backend}`: executable `{command}` not found on PATH")]
    MissingExecutable {
        origin: String,
        backend: String,
        command: String,
    },
    #[error("{origin}backend `{backend}`: the variable {var} that holds its API key is not set")]
    MissingKey {
        origin: String,
        backend: String,
        var: String,
    },
    #[error("{origin}: task `{task}`: could not read patch {file}: {source}")]
    Patch {
        origin: String,
        task: String,
        file: String,
        source: std::io::Error,
    },
    /// Checked again as the file is stored: it may have changed since the backlog was validated.
    #[error(
        "{origin}: task `{task}`: patch file {file}: line {line}: {rule}: a secret in the patch"
    )]
    PatchSecret {
        origin: String,
        task: String,
        file: String,
        line: usize,
        rule: &'static str,
    },
    /// The last check before `run.created` is recorded: every string of the spec, wherever it came
    /// from (abo.yml's gates and backends, the backlog, flags).
    #[error(
        "the run would record a secret ({rule}) at `{path}` of its spec: abo.yml and the backlog must hold none (name an environment variable instead)"
    )]
    SpecSecret { path: String, rule: &'static str },
    #[error("{0}")]
    Autonomy(String),
    #[error(
        "`landing.mode: pull-request` needs an API token in {0}, which is not set (abo.yml: landing.token_env)"
    )]
    PullRequest(String),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error(transparent)]
    Store(#[from] abo_store::StoreError),
}

impl CreateError {
    /// Whether the problem is in the user's input (exit 2) rather than in abo or its surroundings.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Self::NoBase
                | Self::NoBaseBranch(_)
                | Self::MissingExecutable { .. }
                | Self::MissingKey { .. }
                | Self::Patch { .. }
                | Self::PatchSecret { .. }
                | Self::SpecSecret { .. }
                | Self::PullRequest(_)
                | Self::Autonomy(_)
        )
    }
}

/// Checks what the plan needs of this machine: agent executables on PATH, API keys set.
pub fn check_runnable(plan: &Plan, config: &Config) -> Result<(), CreateError> {
    if config.landing.mode == abo_core::config::LandingMode::PullRequest {
        let var = config.landing.token_env();
        if std::env::var(&var).map_or(true, |v| v.is_empty()) {
            return Err(CreateError::PullRequest(var));
        }
    }
    let runnable = plan
        .tasks
        .iter()
        .filter(|t| !matches!(t.readiness, Readiness::Skipped { .. }));
    let mut used: Vec<(String, String)> = runnable
        .filter_map(|t| match &t.backend {
            BackendChoice::Named { name } => {
                Some((format!("{}: task `{}`: ", t.origin, t.id), name.clone()))
            }
            _ => None,
        })
        .collect();
    used.extend(
        config
            .router
            .fallback
            .iter()
            .map(|n| ("router.fallback: ".to_owned(), n.clone())),
    );
    for (origin, name) in used {
        let Some(b) = config.backends.named.get(&name) else {
            continue;
        };
        check_backend(&origin, &name, b)?;
    }
    Ok(())
}

pub fn check_backend(origin: &str, name: &str, b: &BackendConfig) -> Result<(), CreateError> {
    if let Some((kind, a)) = b.agent() {
        let command = a
            .command
            .clone()
            .unwrap_or_else(|| kind.default_command().to_owned());
        if crate::process::find_executable(&command).is_none() {
            return Err(CreateError::MissingExecutable {
                origin: origin.to_owned(),
                backend: name.to_owned(),
                command,
            });
        }
    }
    if let Some((kind, a)) = b.api() {
        let base = a
            .base_url
            .clone()
            .unwrap_or_else(|| kind.default_base_url().to_owned());
        if crate::backends::api_key(kind, &base, a.api_key_env.as_deref()).is_err() {
            let (var, _) = crate::backends::key_variable(kind, &base, a.api_key_env.as_deref());
            return Err(CreateError::MissingKey {
                origin: origin.to_owned(),
                backend: name.to_owned(),
                var,
            });
        }
    }
    Ok(())
}

/// A configured backend, frozen into the run's spec. Secrets are named, never copied.
pub fn resolve_backend(name: &str, b: &BackendConfig) -> BackendSpec {
    let bname = BackendName::new(name);
    if let Some((kind, a)) = b.agent() {
        return BackendSpec::Agent {
            name: bname,
            agent: kind,
            command: a
                .command
                .clone()
                .unwrap_or_else(|| kind.default_command().to_owned()),
            model: a.model.clone(),
            max_turns: a.max_turns,
            permission_mode: a.permission_mode.clone(),
            args: a.args.clone(),
            context_tokens: a.context_tokens.unwrap_or(8_000),
            base_url: a.base_url.clone(),
            api_key_env: a.api_key_env.clone(),
            credentials: a
                .credentials
                .unwrap_or_else(|| abo_core::config::Credentials::default_for(kind)),
        };
    }
    if let Some((kind, a)) = b.api() {
        return BackendSpec::Api {
            name: bname,
            api: kind,
            model: a.model.clone(),
            base_url: a
                .base_url
                .clone()
                .unwrap_or_else(|| kind.default_base_url().to_owned()),
            api_key_env: a.api_key_env.clone(),
            max_tokens: a.max_tokens.unwrap_or(8_192),
            context_tokens: a.context_tokens.unwrap_or(24_000),
            retries: a.retries.unwrap_or(3),
        };
    }
    match b {
        BackendConfig::Command { run } => BackendSpec::Command {
            name: bname,
            run: run.clone(),
        },
        // Every other kind is an agent or an API, handled above.
        _ => BackendSpec::Command {
            name: bname,
            run: String::new(),
        },
    }
}

/// The run settings abo.yml gives, frozen into a run's spec.
pub fn settings(config: &Config, max_parallel: Option<usize>) -> RunSettings {
    RunSettings {
        max_parallel: max_parallel
            .unwrap_or(config.parallelism.max_parallel)
            .max(1),
        stop_after_consecutive_failures: config.attempts.stop_after_consecutive_failures,
        attempt_timeout_ms: config.timeouts.attempt.as_millis(),
        silence_timeout_ms: config.timeouts.silence.as_millis(),
        run_timeout_ms: config.timeouts.run.as_millis(),
        gates: config
            .gates
            .iter()
            .map(|g| GateSpec {
                name: GateName::new(&g.name),
                run: g.run.clone(),
                timeout_ms: g.timeout.unwrap_or(config.timeouts.gate).as_millis(),
                retries: g.retries,
                reports: g.reports.clone(),
                quarantine: g.quarantine,
            })
            .collect(),
        landing: config.landing.clone(),
        fallback: config
            .router
            .fallback
            .iter()
            .filter_map(|n| config.backends.named.get(n).map(|b| resolve_backend(n, b)))
            .collect(),
        per_backend: config.parallelism.per_backend.clone(),
        pricing: abo_core::pricing::PriceTable::with_overrides(&config.pricing),
        secret_env: secret_env(config),
        policy: Default::default(),
        autonomy: Default::default(),
        budgets: config.budgets.spec(config.timeouts.run.as_millis()),
        router: router_spec(config),
        cache: true,
        sandbox: config.sandbox.spec(),
        notify: config.notify.spec(),
        schedule: config.schedule.spec(),
        review: config
            .review
            .as_ref()
            .map(|r| abo_core::review::ReviewSpec {
                backends: r
                    .backends
                    .iter()
                    .filter_map(|n| config.backends.named.get(n).map(|b| resolve_backend(n, b)))
                    .collect(),
                max_rounds: r.max_rounds,
            }),
        max_checks: config.mcp.max_checks,
        proposals: config.proposals.spec(),
        hedge: config
            .hedge
            .as_ref()
            .and_then(abo_core::config::Hedge::spec),
    }
}

/// The variables whose values abo redacts wherever it writes: the model APIs' keys, every key an
/// agent CLI is handed, the pull-request token, webhook signing secrets, and whatever
/// `sandbox.env_pass` hands a process under a credential's name.
pub fn secret_env(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .backends
        .named
        .values()
        .filter_map(BackendConfig::secret_env)
        .collect();
    for b in config.backends.named.values() {
        if let Some((kind, _)) = b.agent() {
            names.extend(
                crate::sandbox::agent_keys(kind)
                    .iter()
                    .map(|k| (*k).to_owned()),
            );
        }
    }
    names.push(config.landing.token_env());
    names.extend(
        config
            .notify
            .webhooks
            .iter()
            .filter_map(|w| w.secret_env.clone()),
    );
    names.extend(
        config
            .sandbox
            .env_pass
            .iter()
            .filter(|n| abo_core::config::names_a_credential(n))
            .cloned(),
    );
    names.sort();
    names.dedup();
    names
}

/// `router.rules` and `router.learn` with their backends resolved (validated with the config).
fn router_spec(config: &Config) -> abo_core::route::RouterSpec {
    let resolve = |n: &String| config.backends.named.get(n).map(|b| resolve_backend(n, b));
    abo_core::route::RouterSpec {
        rules: config
            .router
            .rules
            .iter()
            .filter_map(|r| {
                resolve(&r.use_).map(|backend| abo_core::route::RuleSpec {
                    when: r.when.clone(),
                    backend,
                })
            })
            .collect(),
        learn: config
            .router
            .learn
            .iter()
            .filter_map(|(kind, names)| {
                let kind = abo_core::backlog::TaskType::parse(kind)?;
                Some((
                    kind.as_str().to_owned(),
                    names.iter().filter_map(resolve).collect(),
                ))
            })
            .collect(),
    }
}

/// The run's profile and levels, and each task's (lowered by its own `autonomy:`).
pub fn resolve_autonomy(
    plan: &Plan,
    config: &Config,
    explicit: Option<&str>,
) -> Result<(String, Levels, Vec<Levels>), CreateError> {
    let name = explicit
        .map(str::to_owned)
        .or_else(|| plan.profile.clone())
        .or_else(|| config.autonomy.profile.clone())
        .unwrap_or_else(|| "prod-conservative".into());
    let base = autonomy::profile(&name).ok_or_else(|| {
        CreateError::Autonomy(format!(
            "unknown autonomy profile `{name}` (one of: {})",
            autonomy::PROFILES.join(", ")
        ))
    })?;
    let run = base
        .lowered(&config.autonomy.overrides)
        .map_err(|e| CreateError::Autonomy(format!("abo.yml: autonomy.overrides: {e}")))?;
    let tasks = plan
        .tasks
        .iter()
        .map(|t| {
            run.lowered(&t.autonomy).map_err(|e| {
                CreateError::Autonomy(format!("{}: task `{}`: autonomy: {e}", t.origin, t.id))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name, run, tasks))
}

/// An estimate of the tokens in the task's scope (about four bytes a token): the `context_tokens`
/// a routing rule sees. Without `paths`, the task's statement alone.
fn context_tokens(files: &[(String, u64)], t: &abo_core::plan::PlanTask) -> u64 {
    let statement =
        t.title.len() + t.description.len() + t.acceptance.iter().map(String::len).sum::<usize>();
    let mut bytes = u64::try_from(statement).unwrap_or(0);
    if !t.paths.is_empty() {
        for (f, len) in files {
            if abo_core::glob::any(&t.paths, f) {
                bytes += len;
            }
        }
    }
    bytes / 4
}

/// The repository's tracked files and their sizes (only when a routing rule may ask).
async fn tracked_files(ctx: &Ctx, config: &Config) -> Vec<(String, u64)> {
    if config.router.rules.is_empty() {
        return Vec::new();
    }
    let listing = ctx.git.run(&["ls-files", "-z"]).await.unwrap_or_default();
    listing
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let len = std::fs::metadata(ctx.root.join(f)).map_or(0, |m| m.len());
            (f.to_owned(), len)
        })
        .collect()
}

/// The first secret in any string of the spec, with its JSON path (`settings.gates[0].run`).
fn secret_in(
    scanner: &abo_policy::secrets::Scanner,
    spec: &RunSpec,
) -> Option<(String, &'static str)> {
    fn walk(
        scanner: &abo_policy::secrets::Scanner,
        v: &serde_json::Value,
        path: &mut String,
    ) -> Option<(String, &'static str)> {
        match v {
            serde_json::Value::String(s) => {
                let lines: Vec<(usize, String)> = s
                    .split('\n')
                    .enumerate()
                    .map(|(i, l)| (i + 1, l.to_owned()))
                    .collect();
                let f = scanner.scan(path, &lines).into_iter().next()?;
                Some((path.clone(), f.rule))
            }
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(scanner, item, path);
                path.truncate(len);
                found
            }),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let found = walk(scanner, item, path);
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }
    let value = serde_json::to_value(spec).ok()?;
    walk(scanner, &value, &mut String::new())
}

/// Records a new run for `plan` and creates its branch. Nothing is executed.
pub async fn create_run(
    ctx: &Ctx,
    plan: &Plan,
    config: &Config,
    opts: &RunOptions,
) -> Result<RunId, CreateError> {
    check_runnable(plan, config)?;
    let (base, base_branch) = match &config.base_branch {
        Some(b) => (
            ctx.git
                .branch_head(b)
                .await?
                .ok_or_else(|| CreateError::NoBaseBranch(b.clone()))?,
            Some(b.clone()),
        ),
        None => (
            ctx.git
                .rev_parse("HEAD")
                .await
                .map_err(|_| CreateError::NoBase)?,
            ctx.git.current_branch().await?,
        ),
    };
    let (profile, run_levels, task_levels) =
        resolve_autonomy(plan, config, opts.profile.as_deref())?;
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    let files = tracked_files(ctx, config).await;
    let scanner = abo_policy::secrets::Scanner::default();
    for (t, levels) in plan.tasks.iter().zip(task_levels) {
        let backend = match &t.backend {
            BackendChoice::Run { command } => BackendSpec::Command {
                name: BackendName::new("command"),
                run: command.clone(),
            },
            BackendChoice::Patch { file } => {
                let bytes = std::fs::read(file).map_err(|source| CreateError::Patch {
                    origin: t.origin.clone(),
                    task: t.id.to_string(),
                    file: file.clone(),
                    source,
                })?;
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<(usize, String)> = text
                    .lines()
                    .enumerate()
                    .map(|(i, l)| (i + 1, l.to_owned()))
                    .collect();
                if let Some(f) = scanner.scan(file, &lines).first() {
                    return Err(CreateError::PatchSecret {
                        origin: t.origin.clone(),
                        task: t.id.to_string(),
                        file: file.clone(),
                        line: f.line,
                        rule: f.rule,
                    });
                }
                let diff = ctx
                    .artifacts
                    .put(&bytes)
                    .map_err(|source| CreateError::Patch {
                        origin: t.origin.clone(),
                        task: t.id.to_string(),
                        file: file.clone(),
                        source,
                    })?;
                BackendSpec::Patch {
                    name: BackendName::new("patch"),
                    diff,
                    file: file.clone(),
                }
            }
            BackendChoice::Named { name } => match config.backends.named.get(name) {
                Some(b) => resolve_backend(name, b),
                // Plan::build refused unknown names; a skipped task may name none that exists.
                None => BackendSpec::Command {
                    name: BackendName::new(name),
                    run: String::new(),
                },
            },
        };
        tasks.push(TaskSpec {
            id: t.id.clone(),
            title: t.title.clone(),
            kind: t.kind,
            description: t.description.clone(),
            acceptance: t.acceptance.clone(),
            paths: t.paths.clone(),
            deps: t.deps.clone(),
            backend,
            gates: t.gates.clone(),
            labels: t.labels.clone(),
            max_attempts: t.max_attempts,
            priority: t.priority,
            skipped: match &t.readiness {
                Readiness::Skipped { reason } => Some(reason.clone()),
                Readiness::Runnable | Readiness::NeedsPlanApproval => None,
            },
            needs_plan_approval: t.readiness == Readiness::NeedsPlanApproval,
            autonomy: levels,
            origin: t.origin.clone(),
            budget: t.budget,
            routed: t.routed,
            context_tokens: context_tokens(&files, t),
        });
    }
    let now = ctx.now();
    let random = u16::try_from(RandomState::new().hash_one(now.0) & 0xffff).unwrap_or(0);
    let id = RunId::generate(now, random);
    let spec = RunSpec {
        title: plan.title.clone(),
        profile,
        base,
        base_branch,
        branch: id.branch(),
        settings: {
            let mut s = settings(config, opts.max_parallel);
            s.policy = opts.policy.clone();
            s.autonomy = run_levels;
            s.cache = opts.cache;
            opts.caps.apply(&mut s.budgets);
            s
        },
        tasks,
    };

    if let Some((path, rule)) = secret_in(&scanner, &spec) {
        return Err(CreateError::SpecSecret { path, rule });
    }
    let created = Event {
        run: id.clone(),
        task: None,
        at: now,
        body: EventBody::RunCreated(Box::new(spec.clone())),
    };
    ctx.store.append(&[created]).await?;
    ctx.git.ensure_branch(&spec.branch, &spec.base).await?;
    Ok(id)
}
