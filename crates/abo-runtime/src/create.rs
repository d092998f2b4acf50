//! Creating a run: freezing a validated plan and the config into the run's spec, recorded as its
//! `run.created` event, and the run branch at the base commit.

use std::hash::{BuildHasher, RandomState};

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
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the repository has no commit to start from: commit something first")]
    NoBase,
    #[error("base branch `{0}` does not exist")]
    NoBaseBranch(String),
    #[error(
        "{origin}: task `{task}`: backend `{backend}` is of kind {kind}, which this version of abo cannot run yet"
    )]
    UnsupportedBackend {
        origin: String,
        task: String,
        backend: String,
        kind: &'static str,
    },
    #[error("{origin}: task `{task}`: could not read patch {file}: {source}")]
    Patch {
        origin: String,
        task: String,
        file: String,
        source: std::io::Error,
    },
    #[error(
        "`landing.mode: pull-request` is not supported by this version of abo (use `branch` or `push`)"
    )]
    PullRequest,
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
                | Self::UnsupportedBackend { .. }
                | Self::Patch { .. }
                | Self::PullRequest
        )
    }
}

/// Checks what the plan needs of this runtime: runnable backend kinds, readable patches.
pub fn check_runnable(plan: &Plan, config: &Config) -> Result<(), CreateError> {
    if config.landing.mode == abo_core::config::LandingMode::PullRequest {
        return Err(CreateError::PullRequest);
    }
    for t in plan
        .tasks
        .iter()
        .filter(|t| t.readiness == Readiness::Runnable)
    {
        if let BackendChoice::Named { name } = &t.backend
            && let Some(b) = config.backends.named.get(name)
            && !matches!(b, BackendConfig::Command { .. })
        {
            return Err(CreateError::UnsupportedBackend {
                origin: t.origin.clone(),
                task: t.id.to_string(),
                backend: name.clone(),
                kind: b.kind(),
            });
        }
    }
    Ok(())
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
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    for t in &plan.tasks {
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
                Some(BackendConfig::Command { run }) => BackendSpec::Command {
                    name: BackendName::new(name),
                    run: run.clone(),
                },
                // Skipped tasks may name any backend; they never run.
                _ => BackendSpec::Command {
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
                Readiness::Runnable => None,
                Readiness::Skipped { reason } => Some(reason.clone()),
            },
            origin: t.origin.clone(),
        });
    }
    let now = ctx.now();
    let random = u16::try_from(RandomState::new().hash_one(now.0) & 0xffff).unwrap_or(0);
    let id = RunId::generate(now, random);
    let spec = RunSpec {
        title: plan.title.clone(),
        profile: opts
            .profile
            .clone()
            .or_else(|| plan.profile.clone())
            .or_else(|| config.autonomy.profile.clone())
            .unwrap_or_else(|| "prod-conservative".into()),
        base,
        base_branch,
        branch: id.branch(),
        settings: RunSettings {
            max_parallel: opts
                .max_parallel
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
                })
                .collect(),
            landing: config.landing.clone(),
        },
        tasks,
    };
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
