//! `abo deploy ENV`, the deployments after a run's merge (`when: merge`), deploy approvals
//! (`abo approve deploy-...`) and the environment locks `abo status` shows. The deployment
//! itself is `abo_runtime::deploy`; what it may do by itself, `abo_core::deploy::flow`.

use std::path::Path;

use abo_core::autonomy::{self, Action, Level};
use abo_core::config::Config;
use abo_core::deploy::{DeployEvent, Step, Trigger, When};
use abo_core::event::{Event, EventBody, StoredEvent};
use abo_core::ids::{CommitSha, RunId};
use abo_core::verdict::Verdict;
use abo_runtime::Ctx;
use abo_runtime::deploy::{Outcome, Request};

use crate::cli::Cli;
use crate::exit::{self, Usage};
use crate::out::{note, say};
use crate::{commands, load, policy_cmd};

/// `abo deploy ENV`: deploys the base branch's head to ENV now.
pub(crate) async fn deploy(cli: &Cli, name: &str, profile: Option<&str>) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, config_path) = load::config(&root, cli.config.as_deref())?;
    let env = environment(&config, name)?;
    let ctx = commands::open(&root, &config, cli.store.as_deref()).await?;
    let level = level(&config, profile)?;
    let branch = match &config.base_branch {
        Some(b) => b.clone(),
        None => ctx.git.current_branch().await?.ok_or_else(|| {
            Usage::new("deploy: HEAD is detached and abo.yml names no base_branch")
                .hint("set `base_branch:` in abo.yml")
        })?,
    };
    let commit = ctx
        .git
        .branch_head(&branch)
        .await?
        .ok_or_else(|| Usage::new(format!("deploy: no branch `{branch}`")))?;
    let id = abo_runtime::deploy::new_id(name, ctx.now());
    let run = RunId::new(id.clone());
    let outcome = execute(
        &ctx,
        &root,
        &config,
        config_path.as_deref(),
        Target {
            name,
            env,
            commit,
            branch: &branch,
            trigger: Trigger::Manual,
            run,
            deployment: id,
            level,
        },
    )
    .await?;
    Ok(exit_code(&outcome))
}

/// After a run's merge into the base branch: deploys each `when: merge` environment, in name
/// order, stopping at the first that does not promote.
pub(crate) async fn after_merge(
    ctx: &Ctx,
    root: &Path,
    config: &Config,
    config_path: Option<&Path>,
    run: &abo_core::state::RunState,
) -> anyhow::Result<Option<u8>> {
    let merged = run
        .spec
        .base_branch
        .clone()
        .zip(ctx_merge_commit(ctx, &run.id).await?);
    let Some((branch, commit)) = merged else {
        return Ok(None);
    };
    let level = run.spec.settings.autonomy.of(Action::Deploy);
    // A run deploys to each environment once: `abo resume` of a run that deployed does not again.
    let done: std::collections::BTreeSet<String> = ctx
        .store
        .run_events(&run.id)
        .await?
        .into_iter()
        .filter_map(|e| match e.event.body {
            EventBody::Deploy(DeployEvent::Started { environment, .. }) => Some(environment),
            _ => None,
        })
        .collect();
    let mut code = None;
    for (name, env) in config
        .deploy
        .iter()
        .filter(|(n, e)| e.when == When::Merge && !done.contains(*n))
    {
        note!(
            "deploying {} to {name} (after the merge into {branch})",
            &commit.as_str()[..commit.as_str().len().min(10)]
        );
        let outcome = execute(
            ctx,
            root,
            config,
            config_path,
            Target {
                name,
                env,
                commit: commit.clone(),
                branch: &branch,
                trigger: Trigger::Merge,
                run: run.id.clone(),
                deployment: abo_runtime::deploy::new_id(name, ctx.now()),
                level,
            },
        )
        .await?;
        let c = exit_code(&outcome);
        code = Some(c);
        if c != exit::OK {
            break;
        }
    }
    Ok(code)
}

/// The base branch's commit a run's merge made (or found), if it landed there.
async fn ctx_merge_commit(ctx: &Ctx, run: &RunId) -> anyhow::Result<Option<CommitSha>> {
    let events = ctx.store.run_events(run).await?;
    Ok(events.iter().rev().find_map(|e| match &e.event.body {
        EventBody::RunMerge {
            into: Some(_),
            outcome,
            commit,
            ..
        } if outcome != "skipped" => commit.clone(),
        _ => None,
    }))
}

struct Target<'a> {
    name: &'a str,
    env: &'a abo_core::deploy::Environment,
    commit: CommitSha,
    branch: &'a str,
    trigger: Trigger,
    run: RunId,
    deployment: String,
    level: Level,
}

async fn execute(
    ctx: &Ctx,
    root: &Path,
    config: &Config,
    config_path: Option<&Path>,
    t: Target<'_>,
) -> anyhow::Result<Outcome> {
    let (verdict, reasons) = policy(ctx, root, config, config_path, &t).await?;
    let req = Request {
        deployment: t.deployment.clone(),
        environment: t.name.to_owned(),
        env: t.env.clone(),
        commit: t.commit.clone(),
        trigger: t.trigger,
        run: t.run.clone(),
        level: t.level,
        verdict,
        reasons,
        sandbox: config.sandbox.spec(),
        secret_vars: abo_runtime::create::secret_env(config),
    };
    note!("deployment {} of {} to {}", t.deployment, t.branch, t.name);
    let mut show = |b: &EventBody| {
        if let EventBody::Deploy(d) = b {
            note!("  {}", describe(d));
        }
    };
    let outcome = abo_runtime::deploy::deploy(ctx, &req, &mut show).await?;
    match &outcome {
        Outcome::Promoted => say!("{}: promoted to {}", t.deployment, t.name),
        Outcome::RolledBack { reason } => {
            say!("{}: rolled back from {}: {reason}", t.deployment, t.name);
        }
        Outcome::Abandoned { reason } => say!("{}: not deployed: {reason}", t.deployment),
        Outcome::Denied { reasons } => {
            say!("{}: denied by policy: {}", t.deployment, reasons.join("; "));
        }
    }
    Ok(outcome)
}

fn exit_code(o: &Outcome) -> u8 {
    match o {
        Outcome::Promoted => exit::OK,
        _ => exit::TASKS_FAILED,
    }
}

fn environment<'a>(
    config: &'a Config,
    name: &str,
) -> anyhow::Result<&'a abo_core::deploy::Environment> {
    config.deploy.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.deploy.keys().map(String::as_str).collect();
        let e = Usage::new(format!("deploy: abo.yml has no environment `{name}`"));
        match abo_core::diag::nearest(name, known.iter().copied()) {
            Some(n) => e.hint(format!("did you mean `{n}`?")).into(),
            None if known.is_empty() => e.hint("add one under `deploy:` in abo.yml").into(),
            None => e.hint(format!("one of: {}", known.join(", "))).into(),
        }
    })
}

/// The `deploy` level of the profile named (or the config's, or the default), lowered by the
/// config's overrides.
fn level(config: &Config, explicit: Option<&str>) -> anyhow::Result<Level> {
    let name = explicit
        .map(str::to_owned)
        .or_else(|| config.autonomy.profile.clone())
        .unwrap_or_else(|| "prod-conservative".into());
    let levels = autonomy::profile(&name).ok_or_else(|| {
        Usage::new(format!(
            "unknown autonomy profile `{name}` (one of: {})",
            autonomy::PROFILES.join(", ")
        ))
    })?;
    let levels = levels
        .lowered(&config.autonomy.overrides)
        .map_err(|e| Usage::new(format!("abo.yml: autonomy.overrides: {e}")))?;
    Ok(levels.of(Action::Deploy))
}

/// The policy's verdict on the deployment: `input.action == "deploy"`, the environment, and the
/// change set since the environment's last promoted deployment.
async fn policy(
    ctx: &Ctx,
    root: &Path,
    config: &Config,
    config_path: Option<&Path>,
    t: &Target<'_>,
) -> anyhow::Result<(Verdict, Vec<String>)> {
    let protected = policy_cmd::protected_paths(root, config, config_path, None);
    let mut policy = policy_cmd::load_policy(root, config, &protected)?;
    let from = last_promoted(ctx, t.name).await?;
    let range = match &from {
        Some(c) => format!("{c}..{}", t.commit),
        None => t.commit.to_string(),
    };
    let log = ctx
        .git
        .run(&["log", "--format=%H %s", "-n", "200", &range, "--"])
        .await
        .unwrap_or_default();
    let commits: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, subject)| serde_json::json!({ "sha": sha, "subject": subject }))
        .collect();
    let files: Vec<String> = match &from {
        Some(c) => ctx
            .git
            .run(&["diff", "--name-only", c.as_str(), t.commit.as_str(), "--"])
            .await
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let input = serde_json::json!({
        "action": "deploy",
        "environment": {
            "name": t.name,
            "when": t.env.when,
            "trigger": t.trigger,
            "level": t.level.name(),
        },
        "changes": {
            "from": from,
            "to": t.commit,
            "branch": t.branch,
            "commits": commits,
            "files": files,
        },
    });
    let d = policy.evaluate(&input)?;
    Ok((d.verdict, d.reasons()))
}

/// Every event of the store, oldest first.
async fn all_events(ctx: &Ctx) -> anyhow::Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = ctx.store.events(None, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page);
    }
    Ok(out)
}

/// `abo events deploy-...`: one deployment's events (whichever run they belong to).
pub(crate) async fn events(cli: &Cli, ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let mine: Vec<StoredEvent> = all_events(ctx)
        .await?
        .into_iter()
        .filter(|e| matches!(&e.event.body, EventBody::Deploy(d) if d.deployment() == id))
        .collect();
    if mine.is_empty() {
        return Err(Usage::new(format!("no deployment `{id}` in the store")).into());
    }
    for e in &mine {
        if cli.json {
            crate::out::say_json!(e.to_json());
        } else if let EventBody::Deploy(d) = &e.event.body {
            say!(
                "{:>6}  {}  {:<22} {}",
                e.seq,
                e.event.at.to_rfc3339(),
                d.kind(),
                describe(d)
            );
        }
    }
    Ok(exit::OK)
}

/// The commit of the environment's last promoted deployment.
async fn last_promoted(ctx: &Ctx, env: &str) -> anyhow::Result<Option<CommitSha>> {
    let events = all_events(ctx).await?;
    let mut commits = std::collections::BTreeMap::new();
    let mut last = None;
    for e in &events {
        match &e.event.body {
            EventBody::Deploy(DeployEvent::Started {
                deployment,
                environment,
                commit,
                ..
            }) if environment == env => {
                commits.insert(deployment.clone(), commit.clone());
            }
            EventBody::Deploy(DeployEvent::Promoted { deployment, .. }) => {
                if let Some(c) = commits.get(deployment) {
                    last = Some(c.clone());
                }
            }
            _ => {}
        }
    }
    Ok(last)
}

/// A deployment's approval waiting for a person.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) deployment: String,
    pub(crate) environment: String,
    pub(crate) step: Step,
    pub(crate) run: RunId,
    pub(crate) reasons: Vec<String>,
    pub(crate) plan: Option<String>,
}

/// Deploy approvals requested and not decided, oldest first.
pub(crate) async fn pending(ctx: &Ctx) -> anyhow::Result<Vec<Pending>> {
    let mut out: Vec<Pending> = Vec::new();
    for e in all_events(ctx).await? {
        let EventBody::Deploy(d) = &e.event.body else {
            continue;
        };
        match d {
            DeployEvent::ApprovalRequested {
                deployment,
                environment,
                step,
                reasons,
                plan,
                ..
            } => out.push(Pending {
                deployment: deployment.clone(),
                environment: environment.clone(),
                step: *step,
                run: e.event.run.clone(),
                reasons: reasons.clone(),
                plan: plan.clone(),
            }),
            DeployEvent::Approved {
                deployment, step, ..
            }
            | DeployEvent::Rejected {
                deployment, step, ..
            } => out.retain(|p| !(p.deployment == *deployment && p.step == *step)),
            // An ended deployment waits for nothing (its abo gave up or was stopped).
            DeployEvent::Promoted { deployment, .. }
            | DeployEvent::RolledBack { deployment, .. }
            | DeployEvent::Abandoned { deployment, .. } => {
                out.retain(|p| p.deployment != *deployment);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `abo approve|reject deploy-...`: records the decision the waiting deployment reads.
pub(crate) async fn decide(ctx: &Ctx, id: &str, reason: &str, approve: bool) -> anyhow::Result<u8> {
    let Some(p) = pending(ctx).await?.into_iter().find(|p| p.deployment == id) else {
        return Err(
            Usage::new(format!("no deployment `{id}` waits for approval"))
                .hint("`abo approvals` lists them")
                .into(),
        );
    };
    let reason = if reason.is_empty() {
        if approve { "approved" } else { "rejected" }.to_owned()
    } else {
        reason.to_owned()
    };
    let body = if approve {
        DeployEvent::Approved {
            deployment: p.deployment.clone(),
            step: p.step,
            reason,
        }
    } else {
        DeployEvent::Rejected {
            deployment: p.deployment.clone(),
            step: p.step,
            reason,
        }
    };
    ctx.store
        .append(&[Event {
            run: p.run.clone(),
            task: None,
            at: ctx.now(),
            body: EventBody::Deploy(body),
        }])
        .await?;
    let step = match p.step {
        Step::Start => "start",
        Step::Promote => "promotion",
    };
    let done = if approve { "approved" } else { "rejected" };
    say!("{done} the {step} of {} to {}", p.deployment, p.environment);
    Ok(exit::OK)
}

/// The environment locks held, for `abo status`.
pub(crate) async fn lock_lines(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let now = ctx.now();
    Ok(ctx
        .store
        .deploy_locks()
        .await?
        .into_iter()
        .map(|l| {
            let state = if l.expires > now {
                "held"
            } else {
                "expired (its holder stopped; the next deployment takes it)"
            };
            format!(
                "  deploy   {} locked by {} ({} pid {}), {state}",
                l.environment, l.deployment, l.host, l.pid
            )
        })
        .collect())
}

/// The environment locks as JSON, for `abo status --json`.
pub(crate) async fn locks_json(ctx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let now = ctx.now();
    Ok(ctx
        .store
        .deploy_locks()
        .await?
        .into_iter()
        .map(|l| {
            serde_json::json!({
                "environment": l.environment,
                "deployment": l.deployment,
                "host": l.host,
                "pid": l.pid,
                "acquired": l.acquired.to_rfc3339(),
                "expires": l.expires.to_rfc3339(),
                "expired": l.expires <= now,
            })
        })
        .collect())
}

/// One line for a deploy event.
pub(crate) fn describe(d: &DeployEvent) -> String {
    match d {
        DeployEvent::Started {
            environment,
            commit,
            level,
            start,
            promote,
            ..
        } => format!(
            "deploy to {environment} started at {}, deploy {level} (start: {}, promotion: {})",
            &commit.as_str()[..commit.as_str().len().min(10)],
            decider(*start),
            decider(*promote)
        ),
        DeployEvent::ApprovalRequested {
            deployment,
            step,
            reasons,
            plan,
            ..
        } => {
            let mut s = format!(
                "{deployment} waits for approval of its {}: {} (abo approve {deployment})",
                step_name(*step),
                reasons.join("; ")
            );
            if let Some(p) = plan {
                s.push_str(&format!("\n  plan:\n{p}"));
            }
            s
        }
        DeployEvent::Approved { step, reason, .. } => {
            format!("{} approved: {reason}", step_name(*step))
        }
        DeployEvent::Rejected { step, reason, .. } => {
            format!("{} rejected: {reason}", step_name(*step))
        }
        DeployEvent::Denied { reasons, .. } => format!("denied: {}", reasons.join("; ")),
        DeployEvent::Checked {
            sample,
            of,
            healthy,
            detail,
            ..
        } => format!(
            "check {sample}/{of}: {} ({detail})",
            if *healthy { "healthy" } else { "UNHEALTHY" }
        ),
        DeployEvent::Promoted {
            environment,
            duration_ms,
            ..
        } => format!(
            "promoted to {environment} in {:.1}s",
            *duration_ms as f64 / 1000.0
        ),
        DeployEvent::RolledBack {
            environment,
            reason,
            ok,
            restore_ms,
            ..
        } => format!(
            "rolled back from {environment}{} {:.1}s after the failure: {reason}",
            if *ok { "" } else { " (the rollback FAILED)" },
            *restore_ms as f64 / 1000.0
        ),
        DeployEvent::Abandoned { reason, .. } => format!("not deployed: {reason}"),
    }
}

fn decider(d: abo_core::deploy::Decider) -> &'static str {
    match d {
        abo_core::deploy::Decider::Abo => "abo",
        abo_core::deploy::Decider::Person => "a person",
    }
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Start => "start",
        Step::Promote => "promotion",
    }
}
