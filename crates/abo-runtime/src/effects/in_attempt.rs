//! The `check` tool's work (see [`crate::check`]): the task's gates and the policy on the
//! attempt's worktree as it is now, each gate in the attempt's gate sandbox. Its gate runs have
//! their own logs and scratch directory (`check-N`), and are kept neither as the attempt's gate
//! results nor as its measures or baseline: the verdict is still abo's own run after the agent.

use std::time::Instant;

use abo_core::event::{CheckOutcome, CheckRecord};
use abo_core::spec::{RunSpec, TaskSpec};
use abo_core::verdict::Verdict;

use super::RunPolicy;
use super::{attempt_env, evaluate_policy, gate_once, ms};
use crate::backends::{CheckFuture, Checker};
use crate::change;
use crate::context::Ctx;
use crate::redact::Redactor;

/// The last characters of a gate's log the agent is shown.
const LOG_TAIL: usize = 4000;

pub(super) struct InAttempt<'a> {
    pub ctx: &'a Ctx,
    pub spec: &'a RunSpec,
    pub run: &'a RunPolicy,
    pub task: &'a TaskSpec,
    pub attempt: &'a abo_core::ids::AttemptId,
}

impl Checker for InAttempt<'_> {
    fn check(&self, n: u32) -> CheckFuture<'_> {
        Box::pin(self.now(n))
    }
}

fn tail(text: &str) -> String {
    let skip = text.chars().count().saturating_sub(LOG_TAIL);
    text.chars().skip(skip).collect()
}

impl InAttempt<'_> {
    async fn now(&self, n: u32) -> (CheckRecord, serde_json::Value) {
        let (ctx, spec, task, attempt) = (self.ctx, self.spec, self.task, self.attempt);
        let started = Instant::now();
        let wt = ctx.worktree(attempt);
        let scratch = ctx.scratch(attempt).join(format!("check-{n}"));
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = std::fs::create_dir_all(&scratch);
        // The agent runs on while this check reads its change: see `KeptIndex`.
        let kept = change::KeptIndex::keep(&ctx.git, &wt);
        let env = attempt_env(spec, task, attempt, &wt);
        let mut redactor =
            Redactor::from_process_env_using(&self.run.scanner, &spec.settings.secret_env);
        if let Ok(c) = change::summarize(&ctx.git, &wt, &self.run.scanner).await {
            redactor = redactor.with(c.secret_values());
        }
        let mut gates = Vec::new();
        let mut failed_gates = Vec::new();
        for name in &task.gates {
            let Some(gate) = spec.settings.gate(name) else {
                continue;
            };
            let log = scratch.join(format!("gate-{name}.log"));
            crate::measure::clear(&ctx.git, &wt, &gate.reports).await;
            let label = format!("check-{n}-{name}");
            let ran = gate_once(ctx, spec, gate, &wt, &scratch, &env, &log, &label).await;
            // Its reports are no part of the change.
            crate::measure::clear(&ctx.git, &wt, &gate.reports).await;
            let text = crate::artifacts::read_log(&log);
            let passed = ran.as_ref().is_some_and(|r| r.passed);
            if !passed {
                failed_gates.push(name.clone());
            }
            gates.push(serde_json::json!({
                "name": name,
                "passed": passed,
                "exit": ran.as_ref().and_then(|r| r.exit),
                "timed_out": ran.as_ref().is_some_and(|r| r.timed_out),
                "log_tail": redactor.redact(&tail(&text)),
            }));
        }
        let policy = evaluate_policy(ctx, spec, self.run, attempt).await;
        // What was read for this check is not the attempt's change after the agent.
        ctx.changes.take(attempt);
        drop(kept);
        let outcome = if !failed_gates.is_empty() {
            CheckOutcome::GateFailed
        } else {
            match policy.verdict {
                Verdict::Allow => CheckOutcome::Pass,
                Verdict::NeedsApproval => CheckOutcome::NeedsApproval,
                Verdict::Deny => CheckOutcome::Deny,
            }
        };
        let record = CheckRecord {
            n,
            outcome,
            failed_gates,
            deny: policy.deny.clone(),
            require_approval: policy.require_approval.clone(),
            duration_ms: ms(started.elapsed()),
        };
        let answer = serde_json::json!({
            "check": n,
            "checks_left": spec.settings.max_checks.saturating_sub(n),
            "verdict": outcome.as_str(),
            "gates": gates,
            "policy": {
                "verdict": policy.verdict,
                "deny": policy.deny,
                "require_approval": policy.require_approval,
                "risk": policy.risk,
                "error": policy.error,
            },
            "note": "abo runs the gates and the policy again after you finish; that run decides",
        });
        (record, answer)
    }
}
