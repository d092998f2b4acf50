//! `abo plan TICKET.md`: a ticket becomes a YAML backlog through an agent or a model, checked like
//! any backlog and written for the person to review (never run).

use std::path::Path;

use anyhow::Context;

use abo_core::config::BackendConfig;
use abo_core::ticket;
use abo_runtime::redact::Redactor;

use crate::cli::Cli;
use crate::commands::open;
use crate::exit::{self, Usage};
use crate::load;
use crate::out::{note, say_raw};

/// Files the index may give a planned task without `paths:`, at most (those scoring at least half
/// the best).
const PLANNED_PATHS: usize = 3;

pub(crate) async fn plan(
    cli: &Cli,
    ticket_path: &Path,
    backend: Option<&str>,
    output: Option<&Path>,
    force: bool,
) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    let name = backend
        .map(str::to_owned)
        .or_else(|| config.backends.default.clone())
        .ok_or_else(|| {
            Usage::new("no backend to ask")
                .hint("give --backend NAME, or set `backends.default` in abo.yml")
        })?;
    let b = config.backends.named.get(&name).ok_or_else(|| {
        Usage::new(format!("unknown backend `{name}`"))
            .hint("name one configured under `backends:` in abo.yml")
    })?;
    if matches!(b, BackendConfig::Command { .. }) {
        return Err(Usage::new(format!("backend `{name}` is a command"))
            .hint("abo plan needs an agent or a model API backend")
            .into());
    }
    abo_runtime::create::check_backend("", &name, b)?;
    if let Some(o) = output
        && o.exists()
        && !force
    {
        return Err(Usage::new(format!("{} already exists", o.display()))
            .hint("use --force to overwrite")
            .into());
    }
    let ticket_text = std::fs::read_to_string(ticket_path)
        .map_err(|e| Usage::new(format!("{}: {e}", ticket_path.display())))?;
    let ctx = open(&root, &config, cli.store.as_deref()).await?;
    let files: Vec<String> = ctx
        .git
        .run(&["ls-files"])
        .await
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    let spec = abo_runtime::create::resolve_backend(&name, b);
    let settings = abo_runtime::create::settings(&config, None);
    let redactor = Redactor::from_process_env(&settings.secret_env);

    // An agent works in a throwaway worktree of HEAD: whatever it edits is discarded.
    let tag = format!("plan-{}", std::process::id());
    let wt = root.join(".abo/worktrees").join(&tag);
    let scratch = root.join(".abo/tmp").join(&tag);
    std::fs::create_dir_all(&scratch).context("creating a scratch directory")?;
    let head = ctx
        .git
        .rev_parse("HEAD")
        .await
        .map_err(|_| Usage::new("the repository has no commit"))?;
    ctx.git.add_detached_worktree(&wt, &head).await?;
    // The index ranks the repository's files for the ticket; the model sees them with why.
    let ticket_task = crate::context_cmd::spec("ticket", &ticket_text, "", vec![], vec![]);
    let relevant: Vec<(String, String)> = abo_runtime::knowledge::for_task(
        &ctx.git,
        &ctx.store,
        &redactor,
        &head,
        &ticket_task,
        &[],
        ctx.clock.now(),
        &ctx.knowledge,
    )
    .await
    .map(|k| {
        k.files
            .iter()
            .take(15)
            .map(|r| {
                let why: Vec<String> = r.why.iter().map(ToString::to_string).collect();
                (r.path.clone(), why.join("; "))
            })
            .collect()
    })
    .unwrap_or_default();
    let prompt = ticket::prompt_with(&ticket_text, &files, &relevant);
    let question = abo_runtime::backends::Question {
        system: ticket::SYSTEM,
        prompt: &prompt,
    };
    let answer =
        abo_runtime::backends::ask(&ctx, &spec, &settings, &question, &wt, &scratch, &redactor)
            .await;

    let _ = ctx.git.remove_worktree(&wt).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            note!("error: backend `{name}` could not plan: {e}");
            return Ok(exit::TASKS_FAILED);
        }
    };
    let spent = match (answer.usage.map(|u| u.total()), answer.cost_usd) {
        (Some(t), Some(c)) => format!(" ({t} tokens, ${c:.4})"),
        (Some(t), None) => format!(" ({t} tokens, cost unknown)"),
        _ => String::new(),
    };
    // Tasks the answer left without `paths:` get the files the index ranks best for them.
    let mut suggested = std::collections::BTreeMap::new();
    for (id, statement) in ticket::unscoped(&answer.text) {
        let t = crate::context_cmd::spec("planned", &statement, "", vec![], vec![]);
        if let Ok(k) = abo_runtime::knowledge::for_task(
            &ctx.git,
            &ctx.store,
            &redactor,
            &head,
            &t,
            &[],
            ctx.clock.now(),
            &ctx.knowledge,
        )
        .await
        {
            let best = k.files.first().map_or(0.0, |r| r.score);
            let paths: Vec<String> = k
                .files
                .iter()
                .take(PLANNED_PATHS)
                .filter(|r| r.score >= best / 2.0)
                .map(|r| r.path.clone())
                .collect();
            if !paths.is_empty() {
                suggested.insert(id, paths);
            }
        }
    }
    let yaml = match ticket::backlog_with(&answer.text, &config, &suggested) {
        Ok(y) => y,
        Err(reason) => {
            note!("error: the plan from backend `{name}` was rejected: {reason}{spent}");
            return Ok(exit::TASKS_FAILED);
        }
    };
    let count = yaml.matches("\n- id: ").count() + yaml.matches("\n  - id: ").count();
    match output {
        Some(o) => {
            std::fs::write(o, &yaml).with_context(|| format!("writing {}", o.display()))?;
            note!(
                "planned {count} task(s) with `{name}`{spent}: review {} then run: abo run {}",
                o.display(),
                o.display()
            );
        }
        None => {
            say_raw!("{yaml}");
            note!("planned {count} task(s) with `{name}`{spent}");
        }
    }
    Ok(exit::OK)
}
