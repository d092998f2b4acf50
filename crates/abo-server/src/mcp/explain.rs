//! `task_explain`: why a task failed, from its run's log: every reason recorded for it (failed
//! backends, retries, denials, rejections, cancellation, the final failure), the tail of the log of
//! the last gate that failed, and the policy's last findings. Reasons and logs were redacted when
//! they were recorded.

use serde_json::{Value, json};

use abo_core::event::{EventBody, StoredEvent};
use abo_core::ids::RunId;

use crate::State;
use crate::error::ApiError;

use super::tools::{run_of_task, status_doc, task_of};

/// Lines of the failing gate's log shown.
pub const LOG_TAIL: usize = 40;

pub async fn explain(st: &State, task: &str, run: Option<&str>) -> Result<Value, ApiError> {
    let row = run_of_task(st, task, run).await?;
    let id = row.id.clone();
    let doc = status_doc(st, row).await?;
    let t = task_of(&doc, task)
        .ok_or_else(|| ApiError::not_found(format!("run {id} has no task `{task}`")))?;
    let events: Vec<StoredEvent> = run_events(st, &id)
        .await?
        .into_iter()
        .filter(|e| e.event.task.as_ref().is_some_and(|t| t.as_str() == task))
        .collect();
    let mut reasons = Vec::new();
    let mut gate = Value::Null;
    let mut policy = Value::Null;
    for e in &events {
        match &e.event.body {
            EventBody::TaskBackendFinished {
                attempt,
                ok: false,
                reason,
                ..
            } => reasons.push(format!(
                "attempt {attempt}: the backend failed: {}",
                reason.as_deref().unwrap_or("no reason given")
            )),
            EventBody::TaskRetry {
                attempt, reason, ..
            } => reasons.push(format!("attempt {}: {reason}", attempt.saturating_sub(1))),
            EventBody::TaskFailed {
                attempts, reason, ..
            } => {
                reasons.push(format!("failed after {attempts} attempt(s): {reason}"));
            }
            EventBody::TaskDenied {
                attempt,
                reasons: r,
                ..
            } => reasons.extend(r.iter().map(|r| format!("attempt {attempt}: denied: {r}"))),
            EventBody::TaskRejected { reason, .. } => {
                reasons.push(format!("rejected by a person: {reason}"));
            }
            EventBody::TaskCancelled { reason, .. } => reasons.push(format!("cancelled: {reason}")),
            EventBody::TaskGate {
                attempt,
                name,
                stage,
                passed: false,
                exit,
                timed_out,
                log,
                ..
            } => {
                gate = json!({
                    "attempt": attempt,
                    "name": name.as_str(),
                    "stage": stage,
                    "exit": exit,
                    "timed_out": timed_out,
                    "log_tail": log.as_ref().map(|l| st.ctx.artifacts.tail(l, LOG_TAIL)),
                });
            }
            EventBody::TaskPolicy {
                attempt,
                verdict,
                deny,
                require_approval,
                risk,
                ..
            } => {
                policy = json!({
                    "attempt": attempt,
                    "verdict": verdict.as_str(),
                    "deny": deny,
                    "require_approval": require_approval,
                    "risk": risk,
                });
            }
            _ => {}
        }
    }
    Ok(json!({
        "run": id,
        "task": task,
        "status": t["status"],
        "attempts": t["attempts"],
        "reason": t["reason"],
        "reasons": reasons,
        "gate": gate,
        "policy": policy,
    }))
}

/// Every event of a run, in order.
pub async fn run_events(st: &State, run: &RunId) -> Result<Vec<StoredEvent>, ApiError> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = st.ctx.store.events(Some(run), after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(page);
    }
    Ok(all)
}
