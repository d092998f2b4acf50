//! The policy on a diff (MCP's `policy_evaluate` with `diff`): the diff is applied to the files of
//! a scratch worktree of HEAD under `.abo/worktrees/` (no index, no git object written), read as
//! an attempt's change is (`change::summarize`, with its secrets scan), and made into the input an
//! attempt's policy gets, for a task with the `paths` given. The worktree is removed after.

use std::path::Path;

use anyhow::Context;

use abo_core::config::Config;
use abo_runtime::Ctx;
use abo_runtime::redact::Redactor;

use crate::exit::Usage;

/// The policy input for `diff` as a change to `HEAD` by a task scoped to `paths`.
pub(crate) async fn input(
    ctx: &Ctx,
    root: &Path,
    config: &Config,
    diff: &str,
    paths: &[String],
) -> anyhow::Result<serde_json::Value> {
    if diff.trim().is_empty() {
        return Err(Usage::new("diff: empty").into());
    }
    let head = ctx.git.rev_parse("HEAD").await.context("HEAD")?;
    let scratch = tempfile::Builder::new()
        .prefix("policy-")
        .tempdir_in(root.join(".abo/worktrees"))
        .context("a scratch directory under .abo/worktrees")?;
    let wt = scratch.path().join("wt");
    let patch = scratch.path().join("change.diff");
    std::fs::write(&patch, diff).context("writing the diff")?;
    ctx.git.add_detached_worktree(&wt, &head).await?;
    let read = async {
        ctx.git
            .apply_files(&wt, &patch)
            .await
            .map_err(|e| Usage::new(format!("diff: does not apply to HEAD: {e}")))?;
        let scanner = abo_policy::secrets::Scanner::default();
        let change = abo_runtime::change::summarize(&ctx.git, &wt, &scanner).await?;
        let secret_env = abo_runtime::create::secret_env(config);
        let redactor =
            Redactor::from_process_env_using(&scanner, &secret_env).with(change.secret_values());
        let profile = config.autonomy.profile.as_deref().unwrap_or("default");
        anyhow::Ok(change.merge_input(
            serde_json::json!({
                "id": "diff", "type": "code", "title": "a diff given to policy_evaluate",
                "labels": [], "paths": paths,
            }),
            profile,
            serde_json::json!([]),
            0.0,
            |t| redactor.redact(t),
        ))
    }
    .await;
    let removed = ctx.git.remove_worktree(&wt).await;
    let input = read?;
    removed?;
    Ok(input)
}
