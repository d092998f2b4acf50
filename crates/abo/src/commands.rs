//! The commands: each loads what it needs, acts, prints, and returns its exit code.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use abo_core::decide::Command;
use abo_core::ids::{RunId, TaskId, Timestamp};
use abo_core::plan::BackendChoice;
use abo_core::state::RunState;
use abo_core::units::Dur;
use abo_runtime::engine::{self, holder_alive};
use abo_runtime::git::Git;
use abo_runtime::{Ctx, RunOptions, Start};
use abo_store::Store;

use crate::cli::{CapArgs, Cli, RunArgs};
use crate::exit::{self, Usage};
use crate::out::{note, say, say_json, say_raw};
use crate::progress::{Progress, describe};
use crate::{load, status};

/// The repository's runtime context: its config's store, git, artifacts.
pub(crate) struct Env {
    pub(crate) ctx: Arc<Ctx>,
}

/// For commands that act on existing runs: nothing is created where no store exists yet.
pub(crate) async fn env(cli: &Cli) -> anyhow::Result<Env> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    if !load::store_exists(&root, cli.store.as_deref(), &config) {
        return Err(Usage::new("no runs yet")
            .hint("start one with `abo run BACKLOG`")
            .into());
    }
    open(&root, &config, cli.store.as_deref())
        .await
        .map(|ctx| Env { ctx })
}

pub(crate) async fn open(
    root: &Path,
    config: &abo_core::config::Config,
    store_flag: Option<&str>,
) -> anyhow::Result<Arc<Ctx>> {
    open_ctx(root, config, store_flag).await.map(Arc::new)
}

/// The context before it is shared: a control plane connects it to its workers first.
pub(crate) async fn open_ctx(
    root: &Path,
    config: &abo_core::config::Config,
    store_flag: Option<&str>,
) -> anyhow::Result<Ctx> {
    let mut git = Git::new(root.to_owned());
    git.resolve_identity().await;
    load::prepare_abo_dir(root, &git).await?;
    let store = load::store(root, store_flag, config).await?;
    let mut ctx = Ctx::new(
        root.to_owned(),
        store,
        git,
        abo_runtime::context::clock_from_env(),
    );
    // The sandbox helper is this binary, re-executed.
    ctx.sandbox_helper = std::env::current_exe().ok();
    if ctx.store.dialect() == abo_store::Dialect::Postgres {
        // On a shared store, whoever drives a run is a control plane: attempts run on workers.
        ctx.shared =
            Some(abo_runtime::shared::Shared::start(&ctx.store, &config.landing.remote).await?);
    }
    Ok(ctx)
}

pub(crate) fn parse_duration(flag: &str, value: &str) -> anyhow::Result<Dur> {
    Dur::parse(value).map_err(|e| Usage::new(format!("{flag}: {e}")).into())
}

pub(crate) async fn run(cli: &Cli, args: &RunArgs) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, config_path) = load::config(&root, cli.config.as_deref())?;
    // A relative backlog path is relative to where abo was started (or -C).
    let backlog = if args.backlog.is_absolute() {
        args.backlog.clone()
    } else {
        cli.dir.clone().unwrap_or_default().join(&args.backlog)
    };
    let (plan, opts) = prepare_run(&root, &config, config_path.as_deref(), &backlog, args)?;
    let ctx = open(&root, &config, cli.store.as_deref()).await?;
    if args.detach && ctx.store.dialect() != abo_store::Dialect::Postgres {
        return Err(Usage::new(format!(
            "--detach: the store {} is this machine's; a detached run needs a shared one",
            ctx.store.url()
        ))
        .hint("use --store postgres://... (or `store:` in abo.yml), served by `abo serve`")
        .into());
    }
    let id = abo_runtime::create_run(&ctx, &plan, &config, &opts).await?;
    if args.detach {
        // Validated and recorded: the control plane (`abo serve`) takes it from here.
        say_raw!("{id}\n");
        return Ok(exit::OK);
    }
    if cli.json {
        note!("run {id}");
    } else {
        say!("run {id}");
    }
    if ctx.shared.is_some() && !workers_alive(&ctx).await {
        note!(
            "note: no `abo worker` has been heard from on {} in the last 30 s: this run's attempts wait for one \
             (`abo worker --store {} --repo URL`), or run it with --detach for `abo serve` to drive",
            ctx.store.url(),
            ctx.store.url()
        );
    }
    drive(cli, &ctx, &id, Start::New).await
}

/// Whether some worker sent a heartbeat in the last 30 seconds.
async fn workers_alive(ctx: &Ctx) -> bool {
    let since = ctx.now().0 - 30_000;
    ctx.store
        .workers()
        .await
        .is_ok_and(|w| w.iter().any(|w| w.heartbeat.0 >= since))
}

/// Everything `abo run` checks before it records a run: flags, the backlog, the plan, backends,
/// the sandbox, autonomy, the policy. Warnings go to stderr. Nothing is created.
pub(crate) fn prepare_run(
    root: &Path,
    config: &abo_core::config::Config,
    config_path: Option<&Path>,
    backlog: &Path,
    args: &RunArgs,
) -> anyhow::Result<(abo_core::plan::Plan, RunOptions)> {
    let (profile, max_parallel) = (args.profile.clone(), args.max_parallel);
    let backend = args.backend.as_deref();
    let caps = cap_change(&args.caps)?;
    if let Some(tz) = &config.budgets.timezone {
        abo_runtime::windows::zone(Some(tz))
            .map_err(|e| Usage::new(format!("abo.yml: budgets.timezone: {e}")))?;
    }
    if max_parallel == Some(0) {
        return Err(Usage::new("--max-parallel must be at least 1").into());
    }
    if let Some(b) = backend
        && !config.backends.named.contains_key(b)
    {
        return Err(Usage::new(format!("--backend: unknown backend `{b}`"))
            .hint("name a backend configured under `backends:` in abo.yml")
            .into());
    }
    let backlogs = load::backlogs(backlog)?;
    let mut plan = load::plan(root, &backlogs, config)?;
    if let Some(b) = backend {
        for t in &mut plan.tasks {
            if matches!(t.backend, BackendChoice::Named { .. }) {
                t.backend = BackendChoice::Named { name: b.to_owned() };
                t.routed = false;
            }
        }
    }
    abo_runtime::create::check_runnable(&plan, config)?;
    match abo_runtime::sandbox::check(&config.sandbox.spec()) {
        Ok(warnings) => {
            for w in warnings {
                note!("warning: {w}");
            }
        }
        Err(missing) => {
            return Err(Usage::new(format!(
                "abo.yml: sandbox.mode is required, but this host cannot enforce: {missing}"
            ))
            .hint("fix the host, or set `sandbox: { mode: best-effort }` to run with what it has")
            .into());
        }
    }
    abo_runtime::create::resolve_autonomy(&plan, config, profile.as_deref())?;
    let policy = crate::policy_cmd::policy_spec(root, config, config_path, backlog)?;
    let opts = RunOptions {
        profile,
        max_parallel,
        policy,
        caps,
        cache: !args.no_cache,
    };
    Ok((plan, opts))
}

async fn drive(cli: &Cli, ctx: &Arc<Ctx>, id: &RunId, start: Start) -> anyhow::Result<u8> {
    let mut progress = Progress::stderr();
    let signals = tokio::spawn(stop_on_signals(Arc::clone(ctx)));
    let state = engine::drive(ctx, id, start, &mut progress).await;
    signals.abort();
    let state = state?;
    let view = status::view(ctx, Some(id.as_str())).await?;
    if cli.json {
        say_json!(status::to_json(&view));
    } else {
        say_raw!("\n{}", status::render(&view));
        say!("{}", next_steps(&state));
    }
    let code = exit::for_run(&state);
    // Environments that deploy after a merge into the base branch (`deploy.*.when: merge`).
    if code == exit::OK {
        let (config, config_path) = load::config(&ctx.root, cli.config.as_deref())?;
        if let Some(deployed) =
            crate::deploy::after_merge(ctx, &ctx.root, &config, config_path.as_deref(), &state)
                .await?
        {
            return Ok(deployed);
        }
    }
    Ok(code)
}

/// SIGINT or SIGTERM: the run pauses, everything running for it is killed, and abo exits 4
/// (resumable). A second signal ends abo at once, still killing what runs for the run first.
async fn stop_on_signals(ctx: Arc<Ctx>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        seen += 1;
        if seen == 1 {
            note!(
                "\n{name}: pausing the run and stopping what runs for it (again to exit at once)"
            );
            let _ = ctx.stop.send(Some(format!("stopped by a person ({name})")));
        } else {
            ctx.groups.kill_all();
            std::process::exit(i32::from(exit::PAUSED));
        }
    }
}

fn next_steps(state: &RunState) -> String {
    use abo_core::state::RunStatus;
    let id = &state.id;
    match &state.status {
        RunStatus::Paused { .. } => {
            format!("\nthe run is paused; continue it with: abo resume {id}")
        }
        RunStatus::Finished => format!(
            "\nlanded work is on branch {}: git log --oneline {}..{}",
            state.spec.branch,
            state.spec.base.short(),
            state.spec.branch
        ),
        _ => String::new(),
    }
}

pub(crate) async fn resume(cli: &Cli, run: &str, caps: &CapArgs) -> anyhow::Result<u8> {
    let caps = cap_change(caps)?;
    let env = env(cli).await?;
    let id = RunId::new(run);
    status::find_run(&env.ctx.store, Some(run)).await?;
    drive(cli, &env.ctx, &id, Start::Resume(caps)).await
}

/// `--usd`, `--tokens`, `--wall`, checked.
fn cap_change(c: &CapArgs) -> anyhow::Result<abo_core::budget::CapChange> {
    if let Some(u) = c.usd
        && !(u.is_finite() && u >= 0.0)
    {
        return Err(Usage::new(format!("--usd: {u} is not an amount of dollars")).into());
    }
    Ok(abo_core::budget::CapChange {
        usd: c.usd,
        tokens: c.tokens,
        wall_ms: match &c.wall {
            Some(w) => Some(parse_duration("--wall", w)?.as_millis()),
            None => None,
        },
    })
}

pub(crate) async fn status(cli: &Cli, run: Option<&str>) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    if run.is_none() && env.ctx.store.latest_run().await?.is_none() {
        // No run yet, but deployments may hold their environments' locks.
        let locks = crate::deploy::lock_lines(&env.ctx).await?;
        if cli.json {
            say_json!(serde_json::json!({
                "run": null,
                "deploy_locks": crate::deploy::locks_json(&env.ctx).await?,
            }));
        } else if locks.is_empty() {
            say!("no runs yet");
        } else {
            say_raw!("{}\n", locks.join("\n"));
        }
        return Ok(exit::OK);
    }
    let view = status::view(&env.ctx, run).await?;
    let base_verify = match &view.run.base_branch {
        Some(b) => status::base_verify(&env.ctx.store, b).await?,
        None => None,
    };
    if cli.json {
        let mut v = status::to_json(&view);
        v["deploy_locks"] = crate::deploy::locks_json(&env.ctx).await?;
        if let Some((_, j)) = &base_verify {
            v["base_verify"] = j.clone();
        }
        say_json!(v);
    } else {
        say_raw!("{}", status::render(&view));
        if let Some((line, _)) = &base_verify {
            say_raw!("{line}");
        }
        let locks = crate::deploy::lock_lines(&env.ctx).await?;
        if !locks.is_empty() {
            say_raw!("\n{}\n", locks.join("\n"));
        }
    }
    Ok(exit::OK)
}

pub(crate) async fn events(cli: &Cli, run: Option<&str>, follow: bool) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    if let Some(id) = run.filter(|r| r.starts_with("deploy-")) {
        return crate::deploy::events(cli, &env.ctx, id).await;
    }
    // The scheduled verifications of a base branch (`landing.verify_schedule`) are a log of
    // their own, no run.
    let id = match run.filter(|r| r.starts_with("verify-")) {
        Some(r) => abo_core::ids::RunId::new(r),
        None => status::find_run(&env.ctx.store, run).await?.id,
    };
    let mut after = 0;
    loop {
        let batch = env.ctx.store.events(Some(&id), after, 1000).await?;
        for e in &batch {
            if cli.json {
                say_json!(e.to_json());
            } else {
                let line = describe(e).unwrap_or_else(|| {
                    format!(
                        "{} {}",
                        e.event.body.kind(),
                        e.event.task.as_ref().map(|t| t.as_str()).unwrap_or("")
                    )
                });
                say!(
                    "{:>6}  {}  {:<22} {line}",
                    e.seq,
                    e.event.at.to_rfc3339(),
                    e.event.body.kind()
                );
            }
            after = e.seq;
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if batch.len() == 1000 {
            continue;
        }
        if !follow {
            break;
        }
        // The run has ended and no process executes it any more (its last events are written).
        let now = env.ctx.store.run(&id).await?.map(|r| r.status);
        let ended = matches!(now.as_deref(), Some("finished" | "killed"))
            && !executing(&env.ctx.store, &id, env.ctx.now()).await?;
        if ended && env.ctx.store.events(Some(&id), after, 1).await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(exit::OK)
}

/// Whether a live process is executing the run.
pub(crate) async fn executing(store: &Store, run: &RunId, now: Timestamp) -> anyhow::Result<bool> {
    Ok(store
        .lease(run)
        .await?
        .is_some_and(|l| holder_alive(&l, now)))
}

pub(crate) async fn control(cli: &Cli, run: &str, what: &str) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let row = status::find_run(&env.ctx.store, Some(run)).await?;
    say!("{}", stop(&env.ctx, &row.id, what).await?);
    Ok(exit::OK)
}

/// Pauses or kills a run: through the process executing it (waiting until it took the request
/// in), or directly when none does. Returns what happened, for people.
pub(crate) async fn stop(ctx: &Ctx, id: &RunId, what: &str) -> anyhow::Result<String> {
    let id = id.clone();
    let reason = format!("{what} requested by a person");
    if executing(&ctx.store, &id, ctx.now()).await? {
        ctx.store
            .push_request(&id, what, &reason, ctx.now())
            .await?;
        // Wait until the executing process has taken it in.
        let want = if what == "kill" { "killed" } else { "paused" };
        for _ in 0..150 {
            let s = ctx
                .store
                .run(&id)
                .await?
                .map(|r| r.status)
                .unwrap_or_default();
            if s == want || s == "finished" || s == "killed" {
                return Ok(format!("run {id} is {s}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return Ok(format!(
            "{what} requested; run {id} has not taken it in yet"
        ));
    }
    let cmd = if what == "kill" {
        Command::Kill { reason }
    } else {
        Command::Pause { reason }
    };
    if what == "kill" {
        abo_runtime::process::kill_leftovers(&format!("ABO_RUN_ID={id}"));
    }
    let state = engine::decide_offline(ctx, &id, cmd).await?;
    Ok(format!("run {id} is {}", state.status.as_str()))
}

pub(crate) async fn retry(cli: &Cli, task: &str, run: Option<&str>) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let (id, sent) = request_retry(&env.ctx, task, run).await?;
    if sent {
        say!("retry of {task} requested from the process executing run {id}");
    } else {
        say!("task {task} re-queued in run {id}; continue with: abo resume {id}");
    }
    Ok(exit::OK)
}

/// Re-queues a task (in `run`, else the latest run that has it): through the executing process
/// (`true`), or directly.
pub(crate) async fn request_retry(
    ctx: &Ctx,
    task: &str,
    run: Option<&str>,
) -> anyhow::Result<(RunId, bool)> {
    let task_id = TaskId::new(task);
    let id = match run {
        Some(r) => status::find_run(&ctx.store, Some(r)).await?.id,
        None => ctx
            .store
            .runs_with_task(&task_id)
            .await?
            .pop()
            .ok_or_else(|| Usage::new(format!("no run has a task `{task}`")))?,
    };
    if executing(&ctx.store, &id, ctx.now()).await? {
        ctx.store
            .push_request(&id, "retry", task, ctx.now())
            .await?;
        return Ok((id, true));
    }
    engine::decide_offline(ctx, &id, Command::Retry { task: task_id }).await?;
    Ok((id, false))
}

pub(crate) async fn gc(cli: &Cli, older_than: &str) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let keep = parse_duration("--older-than", older_than)?;
    let before = Timestamp(env.ctx.now().0 - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let (cleaned, repaired) = engine::gc(&env.ctx, before).await?;
    // Cached results not reused within the retention go too.
    let pruned = env.ctx.store.cache_prune(before).await?;
    // And baselines not read within it.
    let baselines = env.ctx.store.baseline_prune(before).await?;
    // And the knowledge index of commits no prompt used within it (with the blobs only they held).
    let indexed = env.ctx.store.knowledge_prune(before).await?;
    if cli.json {
        say_json!(serde_json::json!({
            "cleaned": cleaned,
            "cache_entries_removed": pruned,
            "baselines_removed": baselines,
            "knowledge_commits_removed": indexed,
            "repaired": repaired
        }));
    } else if cleaned.is_empty()
        && pruned == 0
        && baselines == 0
        && indexed == 0
        && repaired.is_empty()
    {
        say!("nothing to remove");
    } else {
        for r in &repaired {
            say!("removed {r}");
        }
        for r in cleaned {
            say!("removed worktrees and attempt branches of run {r}");
        }
        if pruned > 0 {
            say!(
                "removed {pruned} cached result(s) not reused since {}",
                before.to_rfc3339()
            );
        }
        if baselines > 0 {
            say!(
                "removed {baselines} baseline(s) not read since {}",
                before.to_rfc3339()
            );
        }
        if indexed > 0 {
            say!(
                "removed the knowledge index of {indexed} commit(s) not used since {}",
                before.to_rfc3339()
            );
        }
    }
    Ok(exit::OK)
}

pub(crate) const CONFIG_TEMPLATE: &str = include_str!("../templates/abo.yml");
pub(crate) const BACKLOG_TEMPLATE: &str = include_str!("../templates/backlog.example.yml");
/// The JSON Schemas the templates' `yaml-language-server` lines point to, written into `.abo/schema/`.
const SCHEMAS: [(&str, &str); 2] = [
    (
        "abo.schema.json",
        include_str!("../../../docs/schema/abo.schema.json"),
    ),
    (
        "backlog.schema.json",
        include_str!("../../../docs/schema/backlog.schema.json"),
    ),
];

pub(crate) async fn init(cli: &Cli, force: bool) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let files = [
        ("abo.yml", CONFIG_TEMPLATE),
        ("backlog.example.yml", BACKLOG_TEMPLATE),
    ];
    if !force {
        let existing: Vec<&str> = files
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| root.join(n).exists())
            .collect();
        if !existing.is_empty() {
            return Err(
                Usage::new(format!("{} already exist(s)", existing.join(", ")))
                    .hint("use --force to overwrite")
                    .into(),
            );
        }
    }
    for (name, text) in files {
        std::fs::write(root.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let (config, _) = load::config(&root, None)?;
    open(&root, &config, cli.store.as_deref()).await?;
    let schemas = root.join(".abo/schema");
    std::fs::create_dir_all(&schemas).with_context(|| format!("creating {}", schemas.display()))?;
    for (name, text) in SCHEMAS {
        std::fs::write(schemas.join(name), text)
            .with_context(|| format!("writing .abo/schema/{name}"))?;
    }
    abo_runtime::proof::load_or_create_key(&root.join(".abo"))
        .context("creating the proof-of-change key")?;
    say!(
        "wrote abo.yml, backlog.example.yml and .abo/ (ignored through .git/info/exclude), with the key that signs proofs of change"
    );
    say!("next: edit the gates in abo.yml, then: abo run backlog.example.yml");
    Ok(exit::OK)
}

pub(crate) async fn approvals(cli: &Cli) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let pending = env.ctx.store.pending_approvals().await?;
    let deploys = crate::deploy::pending(&env.ctx).await?;
    if cli.json {
        let mut items: Vec<serde_json::Value> = pending
            .iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id, "run": a.run, "task": a.task, "action": a.action,
                    "reasons": a.reasons, "created_at": a.created_at.to_rfc3339(),
                })
            })
            .collect();
        items.extend(deploys.iter().map(|d| {
            serde_json::json!({
                "id": d.deployment, "run": d.run, "action": "deploy", "environment": d.environment,
                "step": d.step, "reasons": d.reasons, "plan": d.plan,
            })
        }));
        say_json!(serde_json::Value::Array(items));
    } else if pending.is_empty() && deploys.is_empty() {
        say!("no approvals waiting");
    } else {
        for a in &pending {
            say!(
                "{}  {} ({})  since {} ({})",
                a.id,
                a.task,
                a.action,
                a.created_at.to_rfc3339(),
                abo_core::human::age(env.ctx.now(), a.created_at)
            );
            for r in &a.reasons {
                say!("    - {r}");
            }
        }
        for d in &deploys {
            say!(
                "{}  deploy to {} ({:?})",
                d.deployment,
                d.environment,
                d.step
            );
            for r in &d.reasons {
                say!("    - {r}");
            }
            if let Some(p) = &d.plan {
                say!("    plan:");
                for l in p.lines() {
                    say!("      {l}");
                }
            }
        }
        say!("\ndecide with: abo approve ID --reason TEXT, or abo reject ID --reason TEXT");
        if pending.iter().any(|p| p.action == "decision") {
            say!("answer an agent's question with: abo decide ID --choose N, or --answer TEXT");
        }
    }
    Ok(exit::OK)
}

/// `abo approve` / `abo reject`: by approval id, or by the id of a task with one pending.
pub(crate) async fn decide(
    cli: &Cli,
    id: &str,
    reason: Option<&str>,
    approve: bool,
) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    let reason = reason.map(str::trim).unwrap_or("");
    if reason.is_empty() && config.safety.require_reason_for_access.unwrap_or(true) {
        return Err(Usage::new("a reason is required")
            .hint("give --reason TEXT (safety.require_reason_for_access)")
            .into());
    }
    let env = env(cli).await?;
    if id.starts_with("deploy-") {
        return crate::deploy::decide(&env.ctx, id, reason, approve).await;
    }
    let (a, sent) = request_decision(&env.ctx, id, reason, approve).await?;
    let verb = if approve { "approve" } else { "reject" };
    if sent {
        say!(
            "{verb} of {} sent to the process executing run {}",
            a.id,
            a.run
        );
    } else {
        let done = if approve { "approved" } else { "rejected" };
        say!(
            "{done} {} ({}); continue the run with: abo resume {}",
            a.id,
            a.task,
            a.run
        );
    }
    Ok(exit::OK)
}

/// Decides a pending approval (by its id, or a task id with one pending): through the executing
/// process (`true`), or directly.
pub(crate) async fn request_decision(
    ctx: &Ctx,
    id: &str,
    reason: &str,
    approve: bool,
) -> anyhow::Result<(abo_store::ApprovalRow, bool)> {
    let pending = ctx.store.pending_approvals().await?;
    let matching: Vec<_> = pending
        .iter()
        .filter(|a| a.id == id || a.task.as_str() == id)
        .collect();
    let a = match matching.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(Usage::new(format!("no pending approval `{id}`"))
                .hint("`abo approvals` lists them")
                .into());
        }
        _ => {
            return Err(
                Usage::new(format!("`{id}` names several pending approvals"))
                    .hint("give the approval's id")
                    .into(),
            );
        }
    };
    let verb = if approve { "approve" } else { "reject" };
    if executing(&ctx.store, &a.run, ctx.now()).await? {
        let arg = serde_json::json!({ "approval": a.id, "reason": reason }).to_string();
        ctx.store
            .push_request(&a.run, verb, &arg, ctx.now())
            .await?;
        return Ok((a, true));
    }
    let cmd = if approve {
        Command::Approve {
            approval: a.id.clone(),
            reason: reason.to_owned(),
        }
    } else {
        Command::Reject {
            approval: a.id.clone(),
            reason: reason.to_owned(),
        }
    };
    engine::decide_offline(ctx, &a.run, cmd).await?;
    Ok((a, false))
}

pub(crate) async fn verify(cli: &Cli, commit: &str) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let v = match abo_runtime::proof::verify(&env.ctx, commit).await {
        Ok(v) => v,
        Err(e) => {
            note!("error: {e}");
            return Ok(exit::TASKS_FAILED);
        }
    };
    if cli.json {
        say_json!(
            serde_json::json!({ "commit": commit, "change_id": v.change_id, "ok": v.problems.is_empty(), "problems": v.problems })
        );
    } else if v.problems.is_empty() {
        say!(
            "ok: {commit} is change {}, signed by this repository's key, and its diff matches the proof",
            v.change_id
        );
    } else {
        for p in &v.problems {
            note!("FAILED: {p}");
        }
    }
    Ok(if v.problems.is_empty() {
        exit::OK
    } else {
        exit::TASKS_FAILED
    })
}

/// Every event of the store since a duration ago.
async fn events_since(
    cli: &Cli,
    since: &str,
) -> anyhow::Result<(Env, Vec<abo_core::event::StoredEvent>, Timestamp)> {
    let back = parse_duration("--since", since)?;
    let env = env(cli).await?;
    let from = Timestamp(env.ctx.now().0 - i64::try_from(back.as_millis()).unwrap_or(i64::MAX));
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = env.ctx.store.events(None, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(page);
    }
    Ok((env, all, from))
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{s:.1}s"),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
}

pub(crate) async fn report(cli: &Cli, since: &str) -> anyhow::Result<u8> {
    let (env, events, from) = events_since(cli, since).await?;
    let r = abo_core::report::report(&events, from, env.ctx.now());
    // The repository's record of flaky tests, whatever the period.
    let record = env.ctx.store.flaky_tests().await?;
    if cli.json {
        let mut v = serde_json::to_value(&r)?;
        v["flaky_record"] = record
            .iter()
            .take(20)
            .map(|f| {
                serde_json::json!({
                    "gate": f.gate, "test": f.test, "count": f.count,
                    "first_seen": f.first_seen.to_rfc3339(), "last_seen": f.last_seen.to_rfc3339(),
                })
            })
            .collect();
        say_json!(v);
        return Ok(exit::OK);
    }
    say!(
        "since {}: {} run(s), {} landed, {} failed, {} denied",
        r.since,
        r.runs,
        r.tasks_landed,
        r.tasks_failed,
        r.tasks_denied
    );
    say!(
        "  lead time (ready to landed)   p50 {}  p90 {}",
        secs(r.lead_time.p50_s),
        secs(r.lead_time.p90_s)
    );
    say!(
        "  attempts per landed task      {}",
        r.attempts_per_landed_task
            .map_or("-".into(), |a| format!("{a:.2}"))
    );
    say!(
        "  gates passed at attempt 1     {}",
        ratio(r.first_attempt_gate_pass_rate)
    );
    let d = &r.deploys;
    say!(
        "  deployments                   {} ({} promoted, {} rolled back)",
        d.deployments,
        d.promoted,
        d.rolled_back
    );
    say!(
        "  change failure rate           {}",
        r.change_failure_rate.map_or_else(
            || "- (no run verified its branch and no deployment ended)".to_owned(),
            |c| format!(
                "{:.0}% ({} reverted, {} deployments rolled back)",
                c * 100.0,
                r.tasks_reverted,
                d.rolled_back
            )
        )
    );
    say!(
        "  time to restore               p50 {}  p90 {} ({} restored)",
        secs(r.time_to_restore.p50_s),
        secs(r.time_to_restore.p90_s),
        r.time_to_restore.count
    );
    say!(
        "  cost                          ${:.4} (${} per landed change)",
        r.cost_usd,
        r.cost_per_landed_change_usd
            .map_or("-".into(), |c| format!("{c:.4}"))
    );
    say!("  of which reviews              ${:.4}", r.review_cost_usd);
    say!(
        "  tokens per landed change      {}",
        r.tokens_per_landed_change
            .map_or("-".into(), |t| format!("{t:.0}"))
    );
    say!(
        "  cache hit rate                {}",
        r.cache_hit_rate.map_or_else(
            || "- (no agent or model attempts)".to_owned(),
            |c| format!("{:.0}%", c * 100.0)
        )
    );
    let h = &r.hedges;
    say!(
        "  hedges                        {} started, {} won ({}), ${:.4}",
        h.started,
        h.won,
        ratio(h.win_rate),
        h.cost_usd
    );
    say!(
        "  approvals waiting             {} (oldest {})",
        r.approvals_waiting,
        secs(r.oldest_approval_age_s)
    );
    say!("  flaky gate runs               {}", ratio(r.flaky_rate));
    for f in record.iter().take(10) {
        say!(
            "    {:>3}x  {}: {} (first {}, last {})",
            f.count,
            f.gate,
            f.test,
            f.first_seen.to_rfc3339(),
            f.last_seen.to_rfc3339()
        );
    }
    if !r.backends.is_empty() {
        say!("\n  BACKEND      ATTEMPTS  LANDED  SUCCESS  COST       TOKENS     LATENCY p50");
        for (b, f) in &r.backends {
            say!(
                "  {b:<12} {:>8}  {:>6}  {:>7}  ${:<9.4} {:>9}  {}",
                f.attempts,
                f.landed,
                ratio(f.success_rate),
                f.cost_usd,
                f.tokens,
                secs(f.latency.p50_s)
            );
        }
    }
    Ok(exit::OK)
}

pub(crate) async fn summary(cli: &Cli, since: &str, notify: bool) -> anyhow::Result<u8> {
    let (env, events, from) = events_since(cli, since).await?;
    let s = abo_core::report::summary(&events, from);
    if notify {
        let (config, _) = load::config(&env.ctx.root, cli.config.as_deref())?;
        let failed = crate::digest::send(&env.ctx, &config.notify.spec(), &s).await;
        if failed > 0 {
            return Ok(exit::INTERNAL);
        }
    }
    if cli.json {
        say_json!(serde_json::to_string(&s)?);
        return Ok(exit::OK);
    }
    say!("{}", abo_core::home::text(&s, None).trim_end());
    Ok(exit::OK)
}
