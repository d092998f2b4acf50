//! `abo serve` and `abo token`: the control plane on this machine. The API's [`Control`] is
//! implemented here with the same code paths as the commands (`prepare_run`, `stop`,
//! `request_retry`, `request_decision`), and runs it creates or resumes are executed by this
//! process.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use abo_core::ids::{RunId, TaskId};
use abo_runtime::{Ctx, Start, engine};
use abo_server::auth::{self, Role};
use abo_server::{ApiError, BoxFut, Control, CreateRun};
use abo_store::TokenRow;

use crate::cli::{CapArgs, Cli, RunArgs, TokenCmd};
use crate::commands::{env, executing, open, prepare_run, request_decision, request_retry, stop};
use crate::exit::{self, Usage};
use crate::load;
use crate::out::{note, say, say_json};

pub(crate) struct Api {
    pub(crate) root: PathBuf,
    pub(crate) config: Option<PathBuf>,
    pub(crate) ctx: Arc<Ctx>,
    /// Where the runs it executes are narrated.
    pub(crate) lines: Lines,
}

/// Where a served run's progress lines go: stdout for `abo serve`, stderr for `abo mcp`, whose
/// stdout is the protocol's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lines {
    Stdout,
    Stderr,
}

/// A backlog path of a request (`run_start`, `backlog_validate`, whose caller may be a viewer): a
/// YAML or Markdown file, or a directory of them, inside the repository as the filesystem resolves
/// it, relative to its root, and not under `.abo/` or `.git/`. A backlog's errors quote what they
/// read, so any other file would be read out to the caller: a `.env`, a link to `~/.ssh`, abo's
/// scratch files.
fn inside_repo(root: &Path, backlog: &str) -> Result<PathBuf, ApiError> {
    let refused = || {
        ApiError::bad_request(
            "backlog: a YAML or Markdown backlog (or a directory of them) inside the repository, \
             relative to its root, not under .abo/ or .git/",
        )
    };
    let rel = Path::new(backlog);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refused());
    }
    let path = root.join(rel);
    let real = match path.canonicalize() {
        Ok(p) => p,
        // Nothing there to read: the backlog's own error says so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_err() => {
            return Ok(path);
        }
        Err(_) => return Err(refused()),
    };
    let top = root.canonicalize().map_err(ApiError::internal)?;
    let inside = real.strip_prefix(&top).map_err(|_| refused())?;
    let owned = inside
        .components()
        .any(|c| matches!(c.as_os_str().to_str(), Some(".abo" | ".git")));
    let backlog_file = matches!(
        real.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml" | "md")
    );
    if owned || (!real.is_dir() && !backlog_file) {
        return Err(refused());
    }
    Ok(path)
}

fn run_args(backlog: PathBuf, profile: Option<String>, caps: CapArgs) -> RunArgs {
    RunArgs {
        backlog,
        profile,
        max_parallel: None,
        backend: None,
        no_cache: false,
        detach: false,
        caps,
    }
}

/// An input error's lines as `abo run` prints them (without `error: `), each located, with the
/// credentials they quote redacted (an error quotes the text it could not read).
fn input_lines(e: &anyhow::Error) -> Vec<String> {
    let lines = match e.downcast_ref::<abo_core::diag::InputErrors>() {
        Some(errs) => errs.0.iter().map(ToString::to_string).collect(),
        None => vec![format!("{e:#}")],
    };
    let redactor = abo_runtime::redact::Redactor::from_process_env(&[]);
    lines.iter().map(|l| redactor.redact(l)).collect()
}

fn to_api(e: anyhow::Error) -> ApiError {
    if exit::is_input(&e) {
        ApiError::bad_request(format!("{e:#}"))
    } else {
        ApiError::internal(format!("{e:#}"))
    }
}

impl Api {
    /// Executes a run in this process until it finishes or pauses.
    pub(crate) fn drive(&self, id: RunId, start: Start) {
        let ctx = Arc::clone(&self.ctx);
        let lines = self.lines;
        let (root, config) = (self.root.clone(), self.config.clone());
        tokio::spawn(async move {
            let r = match lines {
                Lines::Stdout => engine::drive(&ctx, &id, start, &mut crate::daemon::Lines).await,
                Lines::Stderr => engine::drive(&ctx, &id, start, &mut crate::mcp::Notes).await,
            };
            // Environments that deploy after a merge into the base branch, as `abo run` does
            // (their outcome lines go to stdout, so not under `abo mcp`, whose stdout is the
            // protocol's).
            let r = match r {
                Ok(state) if lines == Lines::Stdout && exit::for_run(&state) == exit::OK => {
                    deploy_after_merge(&ctx, &root, config.as_deref(), &state).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(anyhow::Error::from(e)),
            };
            if let Err(e) = r {
                match lines {
                    Lines::Stdout => say!("{id} stopped: {e}"),
                    Lines::Stderr => note!("{id} stopped: {e}"),
                }
            }
        });
    }
}

async fn deploy_after_merge(
    ctx: &Arc<Ctx>,
    root: &std::path::Path,
    config: Option<&std::path::Path>,
    state: &abo_core::state::RunState,
) -> anyhow::Result<()> {
    let (cfg, path) = load::config(root, config)?;
    crate::deploy::after_merge(ctx, root, &cfg, path.as_deref(), state).await?;
    Ok(())
}

impl Control for Api {
    fn create_run(&self, req: CreateRun) -> BoxFut<'_, Result<RunId, ApiError>> {
        Box::pin(async move {
            let backlog = inside_repo(&self.root, &req.backlog)?;
            let (config, config_path) =
                load::config(&self.root, self.config.as_deref()).map_err(to_api)?;
            let caps = CapArgs {
                usd: req.usd,
                tokens: req.tokens,
                wall: req.wall,
            };
            let args = run_args(backlog, req.profile, caps);
            let (plan, opts) = prepare_run(
                &self.root,
                &config,
                config_path.as_deref(),
                &args.backlog,
                &args,
            )
            .map_err(to_api)?;
            let id = abo_runtime::create_run(&self.ctx, &plan, &config, &opts)
                .await
                .map_err(|e| to_api(e.into()))?;
            self.drive(id.clone(), Start::New);
            Ok(id)
        })
    }

    fn control(&self, run: RunId, what: &'static str) -> BoxFut<'_, Result<String, ApiError>> {
        Box::pin(async move {
            if what == "resume" {
                if executing(&self.ctx.store, &run, self.ctx.now())
                    .await
                    .map_err(to_api)?
                {
                    return Err(ApiError::conflict(format!(
                        "run {run} is being executed already"
                    )));
                }
                let status = engine::load(&self.ctx.store, &run)
                    .await
                    .map_err(|e| to_api(e.into()))?
                    .status;
                if status.is_terminal() {
                    return Err(ApiError::conflict(format!(
                        "run {run} is {}: it cannot be resumed",
                        status.as_str()
                    )));
                }
                self.drive(run, Start::Resume(Default::default()));
                return Ok("running".into());
            }
            stop(&self.ctx, &run, what).await.map_err(to_api)?;
            let row = self.ctx.store.run(&run).await?;
            Ok(row.map(|r| r.status).unwrap_or_default())
        })
    }

    fn retry(&self, task: TaskId, run: Option<RunId>) -> BoxFut<'_, Result<RunId, ApiError>> {
        Box::pin(async move {
            let (id, _) = request_retry(&self.ctx, task.as_str(), run.as_ref().map(RunId::as_str))
                .await
                .map_err(to_api)?;
            Ok(id)
        })
    }

    fn decide(
        &self,
        approval: String,
        approve: bool,
        reason: String,
    ) -> BoxFut<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let (a, sent) = request_decision(&self.ctx, &approval, &reason, approve)
                .await
                .map_err(to_api)?;
            // A run that paused waiting for this decision goes on, executed here.
            if !sent
                && let Ok(state) = engine::load(&self.ctx.store, &a.run).await
                && matches!(state.status, abo_core::state::RunStatus::Paused { .. })
            {
                self.drive(a.run, Start::Resume(Default::default()));
            }
            Ok(())
        })
    }

    fn answer(
        &self,
        approval: String,
        choose: Option<usize>,
        answer: Option<String>,
    ) -> BoxFut<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let (a, sent) =
                crate::answer::request_answer(&self.ctx, &approval, choose, answer.as_deref())
                    .await
                    .map_err(to_api)?;
            // A run that paused waiting for the answer goes on, executed here.
            if !sent
                && let Ok(state) = engine::load(&self.ctx.store, &a.run).await
                && matches!(state.status, abo_core::state::RunStatus::Paused { .. })
            {
                self.drive(a.run, Start::Resume(Default::default()));
            }
            Ok(())
        })
    }

    fn evaluate_policy(&self, input: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        let (config, path) = load::config(&self.root, self.config.as_deref()).map_err(to_api)?;
        let protected =
            crate::policy_cmd::protected_paths(&self.root, &config, path.as_deref(), None);
        let mut policy =
            crate::policy_cmd::load_policy(&self.root, &config, &protected).map_err(to_api)?;
        let d = policy
            .evaluate(&input)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(d.to_json())
    }

    fn diff_input(
        &self,
        diff: String,
        paths: Vec<String>,
    ) -> BoxFut<'_, Result<serde_json::Value, ApiError>> {
        Box::pin(async move {
            let (config, _) = load::config(&self.root, self.config.as_deref()).map_err(to_api)?;
            crate::policy_diff::input(&self.ctx, &self.root, &config, &diff, &paths)
                .await
                .map_err(to_api)
        })
    }

    fn validate(&self, backlog: String) -> Result<serde_json::Value, ApiError> {
        let path = inside_repo(&self.root, &backlog)?;
        let checked = load::config(&self.root, self.config.as_deref()).and_then(|(config, cp)| {
            let caps = CapArgs {
                usd: None,
                tokens: None,
                wall: None,
            };
            let args = run_args(path.clone(), None, caps);
            prepare_run(&self.root, &config, cp.as_deref(), &path, &args)
        });
        match checked {
            Ok((plan, _)) => {
                let tasks: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
                Ok(serde_json::json!({ "valid": true, "tasks": tasks, "errors": [] }))
            }
            Err(e) if exit::is_input(&e) => {
                Ok(serde_json::json!({ "valid": false, "tasks": [], "errors": input_lines(&e) }))
            }
            Err(e) => Err(to_api(e)),
        }
    }
}

fn live(tokens: &[TokenRow]) -> usize {
    tokens.iter().filter(|t| t.revoked_at.is_none()).count()
}

pub(crate) async fn serve(cli: &Cli, addr: &str) -> anyhow::Result<u8> {
    let api = api(cli).await?;
    let ctx = Arc::clone(&api.ctx);
    let server = listen(api, addr).await?;
    if ctx.shared.is_some() {
        tokio::spawn(control_plane(ctx));
    }
    tokio::select! {
        r = server => r??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(exit::OK)
}

/// The control of the repository abo was started in. On a shared (Postgres) store it is a control
/// plane: attempts run on `abo worker`s.
pub(crate) async fn api(cli: &Cli) -> anyhow::Result<Arc<Api>> {
    api_with(cli, Lines::Stdout).await
}

/// [`api`], narrating the runs it executes on `lines`.
pub(crate) async fn api_with(cli: &Cli, lines: Lines) -> anyhow::Result<Arc<Api>> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    let ctx = open(&root, &config, cli.store.as_deref()).await?;
    Ok(Arc::new(Api {
        root,
        config: cli.config.clone(),
        ctx,
        lines,
    }))
}

/// The control plane's loop: it reaps attempt leases whose worker stopped
/// heartbeating, and takes every run of the store that is waiting to start or whose executing
/// process died (its lease decides: of two control planes, one drives a run).
async fn control_plane(ctx: Arc<Ctx>) {
    let driving: Arc<std::sync::Mutex<BTreeSet<RunId>>> = Arc::default();
    let mut listener = ctx.store.listen(&[abo_store::EVENTS]).await.ok();
    say!("abo serve: control plane of {}", ctx.store.url());
    loop {
        let now = ctx.now();
        match ctx.store.reap(now).await {
            Ok(reaped) => {
                for l in reaped {
                    say!(
                        "{} reaped {}#{}: worker {} stopped heartbeating (token {})",
                        l.run,
                        l.task,
                        l.attempt,
                        l.worker,
                        l.token
                    );
                }
            }
            Err(e) => say!("warning: reaping leases: {e}"),
        }
        let pending = ctx.store.pending_approvals().await.unwrap_or_default();
        for row in ctx.store.runs().await.unwrap_or_default() {
            let decided = row
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("waiting for approval"))
                && !pending.iter().any(|a| a.run == row.id);
            let start = match row.status.as_str() {
                "planned" => Start::New,
                "running" => Start::Resume(Default::default()),
                // Every decision it waited for was taken: it goes on, as after `abo resume`.
                "paused" if decided => Start::Resume(Default::default()),
                _ => continue,
            };
            let busy = driving.lock().map(|d| d.contains(&row.id)).unwrap_or(true);
            let held = match ctx.store.lease(&row.id).await {
                Ok(Some(l)) => engine::holder_alive(&l, now),
                Ok(None) => false,
                Err(_) => true,
            };
            if busy || held {
                continue;
            }
            if let Ok(mut d) = driving.lock() {
                d.insert(row.id.clone());
            }
            let (ctx, driving, id) = (Arc::clone(&ctx), Arc::clone(&driving), row.id.clone());
            tokio::spawn(async move {
                match engine::drive(&ctx, &id, start, &mut crate::daemon::Lines).await {
                    Ok(s) => say!("{id} {}", s.status.as_str()),
                    // Another control plane took it first.
                    Err(engine::EngineError::Busy { .. }) => {}
                    Err(e) => say!("{id} stopped: {e}"),
                }
                if let Ok(mut d) = driving.lock() {
                    d.remove(&id);
                }
            });
        }
        match &mut listener {
            Some(l) => {
                l.wait(std::time::Duration::from_secs(1)).await;
            }
            None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
}

/// Binds `addr` and serves the API in the background (refusing a non-loopback address while no
/// token exists); prints where it listens.
pub(crate) async fn listen(
    api: Arc<Api>,
    addr: &str,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let ctx = Arc::clone(&api.ctx);
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| Usage::new(format!("--addr {addr}: {e}")))?;
    if !sock.ip().is_loopback() && live(&ctx.store.tokens().await?) == 0 {
        return Err(Usage::new(format!(
            "refusing to serve on {sock}, beyond this machine, without an API token"
        ))
        .hint("create one first: abo token create --role admin")
        .into());
    }
    let listener = tokio::net::TcpListener::bind(sock)
        .await
        .map_err(|e| Usage::new(format!("--addr {addr}: {e}")))?;
    let state = abo_server::State {
        ctx,
        control: api,
        sessions: auth::SessionKey::generate()?,
    };
    say!("abo serve: listening on http://{}", listener.local_addr()?);
    Ok(tokio::spawn(async move {
        axum::serve(listener, abo_server::app(state)).await
    }))
}

pub(crate) async fn token(cli: &Cli, cmd: &TokenCmd) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    let ctx = match cmd {
        TokenCmd::Create { .. } => open(&root, &config, cli.store.as_deref()).await?,
        _ => env(cli).await?.ctx,
    };
    let store = &ctx.store;
    match cmd {
        TokenCmd::Create { role, name } => {
            let role: Role = role.parse().map_err(|e: String| Usage::new(e))?;
            let (id, secret) = auth::generate()?;
            let row = TokenRow {
                id: id.clone(),
                name: name.clone().unwrap_or_else(|| format!("{role}-{id}")),
                role: role.as_str().to_owned(),
                created_at: ctx.now(),
                revoked_at: None,
            };
            store.token_create(&row, &auth::hash(&secret)).await?;
            if cli.json {
                let mut v = abo_server::shapes::token(&row);
                v["token"] = serde_json::Value::String(secret);
                say_json!(v);
            } else {
                say!("{secret}");
                say!(
                    "(token {} `{}`, role {role}: shown once, only its hash is kept)",
                    row.id,
                    row.name
                );
            }
        }
        TokenCmd::List => {
            let tokens = store.tokens().await?;
            if cli.json {
                let items: Vec<_> = tokens.iter().map(abo_server::shapes::token).collect();
                say_json!(serde_json::Value::Array(items));
            } else {
                for t in &tokens {
                    let state = t
                        .revoked_at
                        .map_or("live".to_owned(), |r| format!("revoked {}", r.to_rfc3339()));
                    say!("{}  {:<20} {:<9} {state}", t.id, t.name, t.role);
                }
            }
        }
        TokenCmd::Revoke { token } => {
            if !store.token_revoke(token, ctx.now()).await? {
                return Err(Usage::new(format!("no live token `{token}`")).into());
            }
            say!("revoked {token}");
        }
    }
    Ok(exit::OK)
}
