//! `abo worker`: runs attempts for the control plane of a shared store, on any
//! machine, in its own clone of the repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use abo_runtime::git::Git;
use abo_runtime::{Ctx, worker};

use crate::cli::Cli;
use crate::commands::parse_duration;
use crate::exit::{self, Usage};
use crate::load;
use crate::out::note;

pub(crate) async fn worker(
    cli: &Cli,
    repo: &str,
    slots: u32,
    workdir: Option<&Path>,
    name: Option<&str>,
    lease_ttl: &str,
) -> anyhow::Result<u8> {
    let Some(url) = cli.store.as_deref() else {
        return Err(Usage::new("abo worker needs the shared store: --store postgres://...").into());
    };
    if slots == 0 {
        return Err(Usage::new("--slots must be at least 1").into());
    }
    let ttl = parse_duration("--lease-ttl", lease_ttl)?.0;
    if ttl < std::time::Duration::from_secs(1) {
        return Err(Usage::new("--lease-ttl must be at least 1s").into());
    }
    let name = name.map_or_else(
        || format!("{}-{}", abo_runtime::engine::hostname(), std::process::id()),
        str::to_owned,
    );
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Usage::new(format!("--name `{name}`: no spaces or control characters")).into());
    }
    let root = checkout(repo, workdir, &name).await?;
    let mut git = Git::new(root.clone());
    git.resolve_identity().await;
    load::prepare_abo_dir(&root, &git).await?;
    let store = abo_store::Store::open(url, &root).await?;
    if store.dialect() != abo_store::Dialect::Postgres {
        return Err(Usage::new(format!(
            "--store {}: workers share a Postgres store with the control plane",
            store.url()
        ))
        .into());
    }
    let mut ctx = Ctx::new(root, store, git, abo_runtime::context::clock_from_env());
    ctx.sandbox_helper = std::env::current_exe().ok();
    let opts = worker::Options {
        name: name.clone(),
        slots,
        remote: "origin".into(),
        ttl,
    };
    let log: worker::Log = Arc::new(move |line: &str| note!("abo worker {name}: {line}"));
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async {
                match &mut term {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    worker::work(Arc::new(ctx), opts, log, stop).await?;
    Ok(exit::OK)
}

/// The worker's repository: `repo` itself when it is a clone with an `origin`, else a clone of it
/// in `workdir` (made once, fetched from then on).
async fn checkout(repo: &str, workdir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let local = Path::new(repo);
    if local.join(".git").exists() {
        let git = Git::new(local.to_owned());
        if git.run(&["remote", "get-url", "origin"]).await.is_err() {
            return Err(Usage::new(format!(
                "--repo {repo}: this clone has no `origin` remote to fetch runs from and push attempts to"
            ))
            .into());
        }
        return Ok(local.canonicalize()?);
    }
    let dir = match workdir {
        Some(d) => d.to_owned(),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .ok_or_else(|| Usage::new("--workdir is needed: HOME is not set"))?;
            home.join(".cache/abo/workers").join(name)
        }
    };
    if dir.join(".git").exists() {
        return Ok(dir.canonicalize()?);
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let here = Git::new(dir.parent().unwrap_or(Path::new(".")).to_owned());
    let target = dir.to_string_lossy();
    here.run(&["clone", "--quiet", "--no-checkout", repo, &target])
        .await
        .map_err(|e| Usage::new(format!("--repo {repo}: could not clone it: {e}")))?;
    Ok(dir.canonicalize()?)
}
