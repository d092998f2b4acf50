//! Asking the reviewer (`review:`) for its verdict on an attempt's change. A model API gets the
//! question through `backends::ask`; a command gets it in the file `ABO_REVIEW_FILE` and runs in
//! its sandbox in a scratch directory (never the attempt's worktree: a reviewer reads, it does
//! not write), answering on stdout. The reply is parsed by `abo_core::review::parse`.

use std::time::Duration;

use abo_core::event::Usage;
use abo_core::ids::AttemptId;
use abo_core::review::{self, Review};
use abo_core::spec::{BackendSpec, RunSpec};

use super::RunPolicy;
use crate::context::Ctx;
use crate::process;
use crate::redact::Redactor;

/// What the reviewer answered: its verdict (or why there is none), its reply stored redacted,
/// and what asking it used.
pub(super) struct Reviewed {
    pub(super) outcome: Result<Review, String>,
    pub(super) log: Option<abo_core::ids::ArtifactId>,
    pub(super) usage: Option<Usage>,
    pub(super) cost_usd: Option<f64>,
    pub(super) cost_source: Option<String>,
}

/// The reviewer's verdict (or why there is none) and its reply, stored redacted.
pub(super) async fn review(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &RunPolicy,
    attempt: &AttemptId,
    reviewer: &BackendSpec,
) -> Reviewed {
    let mut done = Reviewed {
        outcome: Err("unknown task".into()),
        log: None,
        usage: None,
        cost_usd: None,
        cost_source: None,
    };
    let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
        return done;
    };
    let redactor = Redactor::from_process_env_using(&run.scanner, &spec.settings.secret_env);
    // The reviewer reads the change as it is in the attempt's worktree, all of it, or is not
    // asked: an empty question would be approved as easily as the change it leaves out.
    let diff = match crate::change::shown(&ctx.git, &ctx.worktree(attempt)).await {
        Ok(d) if !d.trim().is_empty() => d,
        Ok(_) => {
            done.outcome = Err("the change's diff is empty: the reviewer was not asked".into());
            return done;
        }
        Err(e) => {
            done.outcome = Err(redactor.redact(&format!(
                "could not read the change's diff, the reviewer was not asked: {e}"
            )));
            return done;
        }
    };
    let gates: Vec<String> = task.gates.iter().map(ToString::to_string).collect();
    let prompt = redactor.redact(&review::prompt(
        &task.title,
        &task.description,
        &gates,
        &diff,
    ));
    let scratch = ctx.scratch(attempt).join("review");
    let _ = std::fs::create_dir_all(&scratch);
    let reply = match reviewer {
        BackendSpec::Command { run: script, .. } => {
            command(ctx, spec, &scratch, script, &prompt).await
        }
        other => {
            let question = abo_runtime_question(&prompt);
            crate::backends::ask(
                ctx,
                other,
                &spec.settings,
                &question,
                &scratch,
                &scratch,
                &redactor,
            )
            .await
            .map(|a| {
                done.usage = a.usage;
                done.cost_usd = a.cost_usd;
                done.cost_source = a.cost_source;
                a.text
            })
        }
    };
    match reply {
        Ok(text) => {
            let text = redactor.redact(&text);
            done.log = ctx.artifacts.put(text.as_bytes()).ok();
            done.outcome = review::parse(&text);
        }
        Err(e) => {
            done.outcome = Err(redactor.redact(&format!("the reviewer could not be asked: {e}")));
        }
    }
    done
}

fn abo_runtime_question(prompt: &str) -> crate::backends::Question<'_> {
    crate::backends::Question {
        system: review::SYSTEM,
        prompt,
    }
}

/// A command reviewer: the question in `ABO_REVIEW_FILE`, its answer on stdout.
async fn command(
    ctx: &Ctx,
    spec: &RunSpec,
    scratch: &std::path::Path,
    script: &str,
    prompt: &str,
) -> Result<String, String> {
    let file = scratch.join("review.md");
    std::fs::write(&file, format!("{}\n\n{prompt}", review::SYSTEM))
        .map_err(|e| format!("could not write the question: {e}"))?;
    let env = vec![(
        "ABO_REVIEW_FILE".to_owned(),
        file.to_string_lossy().into_owned(),
    )];
    let mut p = process::Spec::shell(script, scratch);
    p.env = env.clone();
    p.env_remove = crate::git::GIT_ENV_REMOVE
        .iter()
        .map(|v| (*v).to_owned())
        .collect();
    p.timeout = Some(Duration::from_millis(
        spec.settings.attempt_timeout_ms.max(1),
    ));
    p.sandbox = crate::sandbox::wrap(
        ctx,
        &spec.settings.sandbox,
        crate::sandbox::Role::Gate,
        scratch,
        scratch,
        "review",
        env,
    )?;
    let out = process::run(&p, &ctx.groups)
        .await
        .map_err(|e| format!("could not run the reviewer: {e}"))?;
    if !out.success() {
        return Err(format!(
            "the reviewer {}",
            out.exit
                .map_or("was stopped".to_owned(), |c| format!("exited with {c}"))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
