//! The result cache: a change that passed its gates and the policy, memoised under the base tree it
//! was made on, the task's statement, the backend (kind, model, options) and the prompt templates'
//! version. An identical attempt reuses it instead of running (and paying) the backend again; its
//! gates and the policy still run. Only agent and model backends are cached: commands are cheap
//! and may depend on more than the tree.

use std::path::Path;

use sha2::{Digest, Sha256};

use abo_core::ids::{AttemptId, CommitSha};
use abo_core::spec::{BackendSpec, TaskSpec};

use crate::backends::prompt::TEMPLATE_VERSION;
use crate::context::Ctx;

/// The file in an attempt's scratch directory that holds its cache key until it lands.
const KEY_FILE: &str = "cache-key";

/// The key of an attempt of `task` on `backend` made on `tree`.
pub fn key(tree: &str, task: &TaskSpec, backend: &BackendSpec) -> String {
    let statement = serde_json::json!({
        "templates": TEMPLATE_VERSION,
        "tree": tree,
        "type": task.kind.as_str(),
        "title": task.title,
        "description": task.description,
        "acceptance": task.acceptance,
        "paths": task.paths,
        "backend": backend,
    });
    hex::encode(Sha256::digest(statement.to_string().as_bytes()))
}

/// A hit: the cached change applied in the attempt's worktree. Returns (key, the attempt it came
/// from); `None` on a miss (or a cached diff that no longer applies), with the key remembered so
/// the attempt's change is cached if it lands.
pub async fn reuse(
    ctx: &Ctx,
    task: &TaskSpec,
    backend: &BackendSpec,
    attempt: &AttemptId,
    wt: &Path,
    scratch: &Path,
) -> Option<(String, String)> {
    let tree = ctx
        .git
        .run_in(wt, &["rev-parse", "HEAD^{tree}"])
        .await
        .ok()?;
    let key = key(tree.trim(), task, backend);
    let _ = std::fs::write(scratch.join(KEY_FILE), &key);
    let (diff, source) = ctx.store.cache_get(&key, ctx.now()).await.ok()??;
    if source == attempt.to_string() {
        return None;
    }
    // The diff itself is in the store, so every worker of a shared store can reuse it; entries of
    // older abos named an artifact instead.
    let bytes = if diff.ends_with('\n') {
        diff.into_bytes()
    } else {
        ctx.artifacts
            .get(&abo_core::ids::ArtifactId::new(&diff))
            .ok()?
    };
    let file = scratch.join("cached.diff");
    std::fs::write(&file, bytes).ok()?;
    // The worktree is as its checkout left it: nothing ran there yet (`git::fsmonitor`).
    let vouched = ctx.git.vouch(wt, &[]);
    let applied = ctx.git.apply(wt, &file, false).await;
    drop(vouched);
    applied.ok()?;
    Some((key, source))
}

/// Remembers a committed attempt's change under the key its start computed.
pub async fn record(ctx: &Ctx, attempt: &AttemptId, base: &CommitSha, commit: &CommitSha) {
    let Ok(key) = std::fs::read_to_string(ctx.scratch(attempt).join(KEY_FILE)) else {
        return;
    };
    let Ok(diff) = ctx
        .git
        .run(&["diff", "--binary", base.as_str(), commit.as_str()])
        .await
    else {
        return;
    };
    let mut diff = diff;
    if !diff.ends_with('\n') {
        diff.push('\n');
    }
    let _ = ctx
        .store
        .cache_put(key.trim(), &diff, &attempt.to_string(), ctx.now())
        .await;
}
