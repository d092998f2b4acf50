//! `abo context TASK`: what the knowledge index would put in a task's prompt, and why: its files
//! ranked with their reasons and symbols, similar landed tasks and failures to avoid, and which
//! files the prompt would show in full. TASK is a task id of `--backlog FILE`, else of the latest
//! run that holds it, else the task's text itself.

use std::path::Path;

use serde_json::json;

use abo_core::backlog::TaskType;
use abo_core::event::EventBody;
use abo_core::ids::{BackendName, TaskId};
use abo_core::spec::{BackendSpec, TaskSpec};
use abo_runtime::backends::{briefing, prompt};
use abo_runtime::knowledge;
use abo_runtime::redact::Redactor;

use crate::cli::Cli;
use crate::commands::open;
use crate::exit::{self, Usage};
use crate::load;
use crate::out::{say, say_json};

pub(crate) fn spec(
    id: &str,
    title: &str,
    description: &str,
    acceptance: Vec<String>,
    paths: Vec<String>,
) -> TaskSpec {
    TaskSpec {
        id: TaskId::new(id),
        title: title.to_owned(),
        kind: TaskType::Code,
        description: description.to_owned(),
        acceptance,
        paths,
        deps: vec![],
        backend: BackendSpec::Command {
            name: BackendName::new("context"),
            run: String::new(),
        },
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
    }
}

pub(crate) async fn context(
    cli: &Cli,
    task: &str,
    backlog: Option<&Path>,
    budget: usize,
) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, _) = load::config(&root, cli.config.as_deref())?;
    let ctx = open(&root, &config, cli.store.as_deref()).await?;
    let spec = match backlog {
        Some(b) => {
            let sources = load::backlogs(b)?;
            let plan = load::plan(&root, &sources, &config)?;
            let t = plan
                .tasks
                .iter()
                .find(|t| t.id.as_str() == task)
                .ok_or_else(|| Usage::new(format!("{}: no task `{task}`", b.display())))?;
            spec(
                t.id.as_str(),
                &t.title,
                &t.description,
                t.acceptance.clone(),
                t.paths.clone(),
            )
        }
        None => match stored_task(&ctx.store, task).await? {
            Some(t) => t,
            None => spec("task", task, "", vec![], vec![]),
        },
    };
    let head = ctx
        .git
        .rev_parse("HEAD")
        .await
        .map_err(|_| Usage::new("the repository has no commit"))?;
    let settings = abo_runtime::create::settings(&config, None);
    let redactor = Redactor::from_process_env(&settings.secret_env);
    let tracked: Vec<String> = ctx
        .git
        .run(&["ls-files", "-z"])
        .await
        .map(|s| {
            s.split('\0')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut files = prompt::relevant_files(&spec, &tracked);
    let started = std::time::Instant::now();
    let known = knowledge::for_task(
        &ctx.git,
        &ctx.store,
        &redactor,
        &head,
        &spec,
        &files,
        ctx.clock.now(),
        &ctx.knowledge,
    )
    .await?;
    let took = started.elapsed();
    for r in known.files.iter().take(5) {
        if !files.contains(&r.path) {
            files.push(r.path.clone());
        }
    }
    let brief = briefing::render(&known, budget / 5, ctx.tokenizer());
    let rules = abo_runtime::confined::Rules::default();
    let what = prompt::For {
        task: &spec,
        attempt: 1,
        feedback: None,
        contract: prompt::Contract::EditFiles,
        rules: &rules,
        briefing: &brief,
    };
    // The files as they are at HEAD's checkout: what an attempt's worktree starts from.
    let p = prompt::build(&what, &root, &files, budget, ctx.tokenizer());
    if cli.json {
        say_json!(json!({
            "task": spec.id.as_str(),
            "commit": head.as_str(),
            "files": known.files.iter().map(|r| json!({
                "path": r.path,
                "score": r.score,
                "why": r.why.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "defines": known.symbols.get(&r.path).map(|d| d.iter().map(|(n, k, l)| json!({"name": n, "kind": k, "line": l})).collect::<Vec<_>>()).unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "landed": known.landed.iter().map(|e| json!({"key": e.key, "title": e.title, "shares": e.shared})).collect::<Vec<_>>(),
            "failed": known.failed.iter().map(|e| json!({"key": e.key, "title": e.title, "shares": e.shared})).collect::<Vec<_>>(),
            "prompt": {"tokens": p.tokens, "budget": budget, "included": p.included, "omitted": p.omitted, "refused": p.refused},
            "ms": took.as_millis(),
        }));
        return Ok(exit::OK);
    }
    let short: String = head.as_str().chars().take(10).collect();
    say!(
        "Context of task `{}` at {short} ({} ms)",
        spec.id,
        took.as_millis()
    );
    say!("");
    if known.files.is_empty() {
        say!("The index ranks no file for this task.");
    } else {
        say!("Files, best first:");
        for (i, r) in known.files.iter().enumerate() {
            say!("{:>3}. {}  (score {:.2})", i + 1, r.path, r.score);
            for w in &r.why {
                say!("       why: {w}");
            }
            if let Some(defs) = known.symbols.get(&r.path) {
                let d: Vec<String> = defs
                    .iter()
                    .map(|(n, k, l)| format!("{k} {n}:{l}"))
                    .collect();
                say!("       defines: {}", d.join(", "));
            }
        }
    }
    for (head, list) in [
        ("Similar tasks that landed:", &known.landed),
        ("Failures to avoid:", &known.failed),
    ] {
        if !list.is_empty() {
            say!("");
            say!("{head}");
            for e in list {
                say!(
                    "  - {} \"{}\" (shares {})",
                    e.key,
                    e.title,
                    e.shared.join(", ")
                );
            }
        }
    }
    say!("");
    say!(
        "The prompt: {} of {budget} tokens; files in full: {}",
        p.tokens,
        if p.included.is_empty() {
            "none".to_owned()
        } else {
            p.included.join(", ")
        }
    );
    if !p.omitted.is_empty() {
        say!("  named but not shown for length: {}", p.omitted.join(", "));
    }
    Ok(exit::OK)
}

/// The task of the latest run that holds `id`.
async fn stored_task(store: &abo_store::Store, id: &str) -> anyhow::Result<Option<TaskSpec>> {
    let task = TaskId::new(id);
    let runs = store.runs_with_task(&task).await?;
    let Some(run) = runs.last() else {
        return Ok(None);
    };
    let events = store.events(Some(run), 0, 1).await?;
    Ok(events.into_iter().find_map(|e| match e.event.body {
        EventBody::RunCreated(s) => s.tasks.into_iter().find(|t| t.id == task),
        _ => None,
    }))
}
