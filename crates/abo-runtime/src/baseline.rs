//! The baseline: the task's measuring gates run once on the tree the attempt started from (the run
//! branch's head then: the run's base, or where the run branch has moved since), so that the policy
//! sees before and after. Results are kept by repository, tree and gate (its command and settings):
//! in memory, and in the store, so that a second attempt, another task or run started from the
//! same tree, a resumed abo or another worker of a shared store reuses them; a run branch that
//! moved has a new tree, and a gate configured differently a new key, measured anew.
//!
//! Only gates whose reports or output measured something in the attempt run again: a plain gate
//! (`cargo build`) costs nothing here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use abo_core::ids::{AttemptId, CommitSha, GateName};
use abo_core::spec::{GateSpec, RunSpec, TaskSpec};
use abo_policy::measure::Measured;
use abo_store::BaselineKey;

use crate::context::Ctx;

/// Measurements by key; each entry is filled once per process (its lock held while the store is
/// read and the gate runs, so two attempts on one tree wait for one run).
type Cell = Arc<tokio::sync::OnceCell<Measured>>;

#[derive(Debug, Default)]
pub struct Cache {
    cells: std::sync::Mutex<HashMap<BaselineKey, Cell>>,
    /// The repository's name in keys, once found: finding it walks the history.
    repo: std::sync::Mutex<Option<String>>,
}

impl Cache {
    fn cell(&self, key: &BaselineKey) -> Option<Cell> {
        let mut m = self.cells.lock().ok()?;
        Some(m.entry(key.clone()).or_default().clone())
    }
}

/// The repository, as every clone of it names it: the least of the root commits `head` descends
/// from.
async fn repo(ctx: &Ctx, wt: &std::path::Path, head: &CommitSha) -> Option<String> {
    if let Some(r) = ctx.baselines.repo.lock().ok()?.clone() {
        return Some(r);
    }
    let roots = ctx
        .git
        .run_in(wt, &["rev-list", "--max-parents=0", head.as_str()])
        .await
        .ok()?;
    let r = roots.lines().map(str::trim).min()?.to_owned();
    *ctx.baselines.repo.lock().ok()? = Some(r.clone());
    Some(r)
}

/// The hash of what a gate runs and how: its command, timeout, retries, reports and quarantine.
fn config(gate: &GateSpec) -> String {
    let text = serde_json::to_string(gate).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The baseline of an attempt: its measuring gates on the tree it started from, merged. `None`
/// when no gate measured anything, or the tree could not be read.
pub async fn measured(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
) -> Option<Measured> {
    let wt = ctx.worktree(attempt);
    let gates: Vec<GateName> = ctx.measures.measuring(attempt);
    if gates.is_empty() {
        return None;
    }
    // The attempt's worktree is not committed yet: HEAD is the commit it started from.
    let head = ctx.git.run_in(&wt, &["rev-parse", "HEAD"]).await.ok()?;
    let head = CommitSha::new(head.trim());
    let tree = ctx
        .git
        .run_in(&wt, &["rev-parse", &format!("{}^{{tree}}", head.as_str())])
        .await
        .ok()?;
    let tree = tree.trim().to_owned();
    let repo = repo(ctx, &wt, &head).await?;
    let mut out = Measured::default();
    for name in task.gates.iter().filter(|g| gates.contains(g)) {
        let Some(gate) = spec.settings.gate(name) else {
            continue;
        };
        let key = BaselineKey {
            repo: repo.clone(),
            tree: tree.clone(),
            gate: name.clone(),
            config: config(gate),
        };
        let cell = ctx.baselines.cell(&key)?;
        let m = cell
            .get_or_init(|| stored_or_run(ctx, spec, task, attempt, &key, gate, &head))
            .await;
        out.merge(m.clone());
    }
    Some(out)
}

/// The baseline of `key` from the store, or measured now and recorded there.
async fn stored_or_run(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    key: &BaselineKey,
    gate: &GateSpec,
    head: &CommitSha,
) -> Measured {
    // An entry that does not read (written by another abo's measurements) is measured anew.
    if let Ok(Some(text)) = ctx.store.baseline(key, ctx.now()).await
        && let Ok(m) = serde_json::from_str::<Measured>(&text)
    {
        return m;
    }
    let (m, measured) = run(ctx, spec, task, attempt, gate, head, &key.tree).await;
    // Only a gate that ran to its end measured the tree: a worktree or sandbox that could not be
    // made, or a timeout, may go differently next time.
    if measured && let Ok(text) = serde_json::to_string(&m) {
        let _ = ctx.store.put_baseline(key, &text, ctx.now()).await;
    }
    m
}

/// Runs one gate on `commit` in a detached worktree of its own and reads what it measured; true
/// when the gate ran to its end (passed or failed, not timed out).
async fn run(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    gate: &GateSpec,
    commit: &CommitSha,
    tree: &str,
) -> (Measured, bool) {
    let mut failed = Measured::default();
    let name = &gate.name;
    let short: String = tree.chars().take(12).collect();
    let dir: PathBuf = ctx
        .root
        .join(".abo/worktrees")
        .join(format!("baseline-{short}-{name}"));
    if let Err(e) = ctx.git.add_detached_worktree(&dir, commit).await {
        failed
            .problems
            .push(format!("the baseline worktree could not be made: {e}"));
        return (failed, false);
    }
    let scratch = ctx.scratch(attempt);
    let _ = std::fs::create_dir_all(&scratch);
    let log = scratch.join(format!("baseline-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let env = crate::effects::attempt_env(spec, task, attempt, &dir);
    let label = format!("baseline-{name}");
    let ran = crate::effects::gate_once(ctx, spec, gate, &dir, &scratch, &env, &log, &label).await;
    let text = crate::artifacts::read_log(&log);
    let rules = crate::sandbox::confined_rules(ctx, &spec.settings.sandbox);
    let passed = ran.as_ref().is_some_and(|r| r.passed);
    let (m, _) = crate::measure::collect(&dir, &gate.reports, &rules, &text, passed);
    let _ = ctx.git.remove_worktree(&dir).await;
    (m, ran.is_some_and(|r| !r.timed_out))
}
