//! The baseline: the task's measuring gates run once on the tree the attempt started from (the run
//! branch's head then: the run's base, or where the run branch has moved since), so that the policy
//! sees before and after. Results are cached by tree and gate: a second attempt, or another task
//! started from the same tree, reuses them; a run branch that moved has a new tree, measured anew.
//!
//! Only gates whose reports or output measured something in the attempt run again: a plain gate
//! (`cargo build`) costs nothing here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use abo_core::ids::{AttemptId, CommitSha, GateName};
use abo_core::spec::{RunSpec, TaskSpec};
use abo_policy::measure::Measured;

use crate::context::Ctx;

/// Measurements by (tree, gate); each entry is filled once (its lock held while the gate runs, so
/// two attempts on one tree wait for one run).
type Cell = Arc<tokio::sync::OnceCell<Measured>>;

#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<HashMap<(String, GateName), Cell>>);

impl Cache {
    fn cell(&self, tree: &str, gate: &GateName) -> Option<Cell> {
        let mut m = self.0.lock().ok()?;
        Some(
            m.entry((tree.to_owned(), gate.clone()))
                .or_default()
                .clone(),
        )
    }
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
    let mut out = Measured::default();
    for name in task.gates.iter().filter(|g| gates.contains(g)) {
        let cell = ctx.baselines.cell(&tree, name)?;
        let m = cell
            .get_or_init(|| run(ctx, spec, task, attempt, name, &head, &tree))
            .await;
        out.merge(m.clone());
    }
    Some(out)
}

/// Runs one gate on `commit` in a detached worktree of its own and reads what it measured.
async fn run(
    ctx: &Ctx,
    spec: &RunSpec,
    task: &TaskSpec,
    attempt: &AttemptId,
    name: &GateName,
    commit: &CommitSha,
    tree: &str,
) -> Measured {
    let mut failed = Measured::default();
    let Some(gate) = spec.settings.gate(name) else {
        return failed;
    };
    let short: String = tree.chars().take(12).collect();
    let dir: PathBuf = ctx
        .root
        .join(".abo/worktrees")
        .join(format!("baseline-{short}-{name}"));
    if let Err(e) = ctx.git.add_detached_worktree(&dir, commit).await {
        failed
            .problems
            .push(format!("the baseline worktree could not be made: {e}"));
        return failed;
    }
    let scratch = ctx.scratch(attempt);
    let _ = std::fs::create_dir_all(&scratch);
    let log = scratch.join(format!("baseline-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let env = crate::effects::attempt_env(spec, task, attempt, &dir);
    let label = format!("baseline-{name}");
    let ran = crate::effects::gate_once(ctx, spec, gate, &dir, &scratch, &env, &log, &label).await;
    let text = std::fs::read(&log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let rules = crate::sandbox::confined_rules(ctx, &spec.settings.sandbox);
    let passed = ran.as_ref().is_some_and(|r| r.passed);
    let (m, _) = crate::measure::collect(&dir, &gate.reports, &rules, &text, passed);
    let _ = ctx.git.remove_worktree(&dir).await;
    m
}
