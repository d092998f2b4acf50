//! `abo report` and `abo summary`, computed from the event log alone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{EventBody, StoredEvent};
use crate::ids::{RunId, TaskId, Timestamp};

/// A figure over a set of durations: median and 90th percentile, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
}

/// The spread of durations given in milliseconds.
pub fn spread_ms(ms: Vec<i64>) -> Spread {
    spread(ms)
}

fn spread(mut ms: Vec<i64>) -> Spread {
    ms.sort_unstable();
    let pick = |q: f64| -> Option<f64> {
        if ms.is_empty() {
            return None;
        }
        let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
        Some(ms[i] as f64 / 1000.0)
    };
    Spread {
        count: ms.len(),
        p50_s: pick(0.5),
        p90_s: pick(0.9),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendFigures {
    pub attempts: u32,
    /// Attempts whose backend produced a change.
    pub produced: u32,
    /// Attempts that landed.
    pub landed: u32,
    pub success_rate: Option<f64>,
    pub cost_usd: f64,
    pub tokens: u64,
    pub latency: Spread,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub since: String,
    pub runs: usize,
    pub tasks_landed: u32,
    pub tasks_failed: u32,
    pub tasks_denied: u32,
    /// Task ready to landed.
    pub lead_time: Spread,
    /// Changes that failed among changes made: landed changes reverted by `landing.verify` (counted
    /// once some run in the period verified its branch: only then are reverts observed) and
    /// deployments rolled back among those that ended. Unknown (null) when neither was observed.
    pub change_failure_rate: Option<f64>,
    /// Changes reverted by `landing.verify` in the period.
    pub tasks_reverted: u32,
    /// From a failing `landing.verify` on a run branch to the revert that restored it.
    pub time_to_restore: Spread,
    pub attempts_per_landed_task: Option<f64>,
    /// Tasks whose first attempt passed every gate, among tasks whose first attempt reached the gates.
    pub first_attempt_gate_pass_rate: Option<f64>,
    /// Every attempt's and review's cost.
    pub cost_usd: f64,
    /// The reviews' part of `cost_usd` (`review.charged`).
    pub review_cost_usd: f64,
    pub cost_per_landed_change_usd: Option<f64>,
    pub tokens_per_landed_change: Option<f64>,
    pub backends: BTreeMap<String, BackendFigures>,
    /// Attempts that reused a cached result, among attempts of agent and model backends (those
    /// charged against the budget).
    pub cache_hit_rate: Option<f64>,
    pub approvals_waiting: usize,
    pub oldest_approval_age_s: Option<f64>,
    /// Gate runs that failed and then passed on the same tree, among gate runs that passed.
    pub flaky_rate: Option<f64>,
    /// The tests seen flaky most often in the period: (gate, test, times).
    pub flaky_tests: Vec<(String, String, u32)>,
    /// Deployments, rollbacks, their change failure rate and time to restore.
    pub deploys: crate::deploy::DeployFigures,
    /// Duplicates started by `hedge:`, how often one won, and what they cost.
    pub hedges: HedgeFigures,
}

/// `hedge:` over the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HedgeFigures {
    /// Duplicates started (`task.hedge`).
    pub started: u32,
    /// Duplicates that landed instead of the attempt they hedged.
    pub won: u32,
    /// `won` among the hedges that ended (won, lost, failed or stopped).
    pub win_rate: Option<f64>,
    /// What the duplicates were charged.
    pub cost_usd: f64,
}

pub type Key = (RunId, TaskId);

/// Figures over the events at or after `since`, as of `now`.
pub fn report(events: &[StoredEvent], since: Timestamp, now: Timestamp) -> Report {
    let mut r = Report {
        since: since.to_rfc3339(),
        ..Default::default()
    };
    let mut ready: BTreeMap<Key, i64> = BTreeMap::new();
    let mut attempts: BTreeMap<Key, u32> = BTreeMap::new();
    let mut backend_of: BTreeMap<(Key, u32), String> = BTreeMap::new();
    let mut first_gates: BTreeMap<Key, bool> = BTreeMap::new();
    let mut leads = Vec::new();
    let mut latency: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut pending: BTreeMap<String, i64> = BTreeMap::new();
    let mut runs = std::collections::BTreeSet::new();
    let mut tokens = 0u64;
    let (mut charged, mut hits) = (0u32, 0u32);
    let (mut gates_passed, mut gates_flaky) = (0u32, 0u32);
    let mut flaky: BTreeMap<(String, String), u32> = BTreeMap::new();
    // Each run branch failing its verify since then (first failure), and the restores measured.
    let mut failing: BTreeMap<(RunId, Option<String>), i64> = BTreeMap::new();
    let (mut verified, mut restores) = (false, Vec::new());
    let mut hedges: std::collections::BTreeSet<(Key, u32)> = Default::default();
    let mut hedges_ended = 0u32;
    r.deploys = crate::deploy::figures(events.iter().filter(|e| e.event.at >= since).filter_map(
        |e| match &e.event.body {
            EventBody::Deploy(d) => Some(d),
            _ => None,
        },
    ));
    for e in events.iter().filter(|e| e.event.at >= since) {
        let ev = &e.event;
        if let EventBody::Deploy(_) = ev.body {
            // A deployment is not a run (`abo deploy ENV` has its own id as the event's run).
            continue;
        }
        runs.insert(ev.run.clone());
        let key = || {
            (
                ev.run.clone(),
                ev.task.clone().unwrap_or_else(|| TaskId::new("")),
            )
        };
        match &ev.body {
            EventBody::TaskReady {} => {
                ready.entry(key()).or_insert(ev.at.0);
            }
            EventBody::TaskStarted {
                attempt, backend, ..
            } => {
                let n = attempts.entry(key()).or_default();
                *n = (*n).max(*attempt);
                backend_of.insert((key(), *attempt), backend.to_string());
                r.backends.entry(backend.to_string()).or_default().attempts += 1;
            }
            EventBody::TaskBackendFinished {
                attempt,
                ok,
                duration_ms,
                usage,
                cost_usd,
                ..
            } => {
                let b = backend_of
                    .get(&(key(), *attempt))
                    .cloned()
                    .unwrap_or_default();
                let f = r.backends.entry(b.clone()).or_default();
                f.produced += u32::from(*ok);
                f.cost_usd += cost_usd.unwrap_or(0.0);
                let t = usage.map_or(0, |u| u.total());
                f.tokens += t;
                tokens += t;
                r.cost_usd += cost_usd.unwrap_or(0.0);
                latency
                    .entry(b)
                    .or_default()
                    .push(i64::try_from(*duration_ms).unwrap_or(i64::MAX));
            }
            EventBody::ReviewCharged { usd, tokens: t, .. } => {
                r.cost_usd += usd;
                r.review_cost_usd += usd;
                tokens += t;
            }
            EventBody::TaskGate {
                attempt,
                passed,
                name,
                figures,
                ..
            } => {
                if *attempt == 1 {
                    let all = first_gates.entry(key()).or_insert(true);
                    *all &= *passed;
                }
                if *passed {
                    gates_passed += 1;
                    if let Some(tests) = figures.as_ref().and_then(|f| f.flaky.as_ref()) {
                        gates_flaky += 1;
                        for t in tests {
                            *flaky.entry((name.to_string(), t.clone())).or_default() += 1;
                        }
                    }
                }
            }
            EventBody::TaskLanded { attempt, .. } => {
                r.tasks_landed += 1;
                if let Some(t) = ready.get(&key()) {
                    leads.push(ev.at.0 - t);
                }
                if let Some(b) = backend_of.get(&(key(), *attempt)) {
                    r.backends.entry(b.clone()).or_default().landed += 1;
                }
            }
            EventBody::TaskFailed { .. } => r.tasks_failed += 1,
            // The run branch and the base branch after the merge fail and are restored apart.
            EventBody::RunVerify { passed, branch, .. } => {
                verified = true;
                let at = (ev.run.clone(), branch.clone());
                if *passed {
                    failing.remove(&at);
                } else {
                    failing.entry(at).or_insert(ev.at.0);
                }
            }
            EventBody::TaskReverted { branch, .. } => {
                r.tasks_reverted += 1;
                if let Some(since) = failing.remove(&(ev.run.clone(), branch.clone())) {
                    restores.push(ev.at.0 - since);
                }
            }
            // A scheduled verification's revert, restoring the base branch its log verifies
            // (the `task.reverted` is in the task's own run).
            EventBody::VerifyReverted { .. } => {
                let at = failing.keys().find(|(run, _)| *run == ev.run).cloned();
                if let Some(since) = at.and_then(|k| failing.remove(&k)) {
                    restores.push(ev.at.0 - since);
                }
            }
            EventBody::TaskHedge { hedge, .. } => {
                r.hedges.started += 1;
                hedges.insert((key(), *hedge));
            }
            EventBody::TaskProposal {
                outcome,
                hedge: true,
                ..
            } => {
                hedges_ended += 1;
                if *outcome == crate::proposal::ProposalOutcome::Won {
                    r.hedges.won += 1;
                }
            }
            EventBody::BudgetCharged { attempt, usd, .. } => {
                charged += 1;
                if hedges.contains(&(key(), *attempt)) {
                    r.hedges.cost_usd += usd;
                }
            }
            EventBody::CacheHit { .. } => hits += 1,
            EventBody::TaskDenied { .. } => r.tasks_denied += 1,
            EventBody::TaskApprovalRequested { approval, .. } => {
                pending.insert(approval.clone(), ev.at.0);
            }
            EventBody::TaskApproved { approval, .. } | EventBody::TaskRejected { approval, .. } => {
                pending.remove(approval);
            }
            _ => {}
        }
    }
    r.runs = runs.len();
    // Restores: a failing verify to its revert, a failing deployment check to its rollback's end.
    restores.extend(events.iter().filter(|e| e.event.at >= since).filter_map(
        |e| match &e.event.body {
            EventBody::Deploy(crate::deploy::DeployEvent::RolledBack { restore_ms, .. }) => {
                Some(i64::try_from(*restore_ms).unwrap_or(i64::MAX))
            }
            _ => None,
        },
    ));
    r.time_to_restore = spread(restores);
    let (mut failed, mut made) = (
        r.deploys.rolled_back,
        r.deploys.promoted + r.deploys.rolled_back,
    );
    if verified {
        failed += r.tasks_reverted;
        made += r.tasks_landed;
    }
    if verified || made > 0 {
        r.change_failure_rate = (made > 0).then(|| f64::from(failed) / f64::from(made));
    }
    r.lead_time = spread(leads);
    if r.tasks_landed > 0 {
        let n = f64::from(r.tasks_landed);
        let landed_attempts: u32 = events
            .iter()
            .filter(|e| e.event.at >= since && matches!(e.event.body, EventBody::TaskLanded { .. }))
            .filter_map(|e| {
                attempts.get(&(
                    e.event.run.clone(),
                    e.event.task.clone().unwrap_or_else(|| TaskId::new("")),
                ))
            })
            .sum();
        r.attempts_per_landed_task = Some(f64::from(landed_attempts) / n);
        r.cost_per_landed_change_usd = Some(r.cost_usd / n);
        r.tokens_per_landed_change = Some(tokens as f64 / n);
    }
    if !first_gates.is_empty() {
        let passed = first_gates.values().filter(|p| **p).count();
        r.first_attempt_gate_pass_rate = Some(passed as f64 / first_gates.len() as f64);
    }
    for (b, f) in &mut r.backends {
        f.success_rate = (f.attempts > 0).then(|| f64::from(f.landed) / f64::from(f.attempts));
        f.latency = spread(latency.remove(b).unwrap_or_default());
    }
    r.hedges.win_rate =
        (hedges_ended > 0).then(|| f64::from(r.hedges.won) / f64::from(hedges_ended));
    r.cache_hit_rate = (charged > 0).then(|| f64::from(hits) / f64::from(charged));
    r.flaky_rate = (gates_passed > 0).then(|| f64::from(gates_flaky) / f64::from(gates_passed));
    let mut worst: Vec<(String, String, u32)> =
        flaky.into_iter().map(|((g, t), n)| (g, t, n)).collect();
    worst.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    worst.truncate(10);
    r.flaky_tests = worst;
    r.approvals_waiting = pending.len();
    r.oldest_approval_age_s = pending.values().min().map(|t| (now.0 - t) as f64 / 1000.0);
    r
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub run: RunId,
    pub task: TaskId,
    pub title: String,
    /// The commit (landed), the question (waiting) or the reason (failed, denied).
    pub detail: String,
    /// What the task's attempts cost so far, in dollars (estimated or reported).
    pub cost_usd: f64,
    /// The attempts started so far.
    pub attempts: u32,
    /// From the task's first attempt to this item's event (0 if it never started).
    pub elapsed_ms: u64,
    /// The landed commit, in full (landed items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The approval waiting (waiting items): `abo approve ID` / `abo decide ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// A task's figures over its whole history (also before a summary's `since`): its title, what
/// its attempts cost, how many started, and when the first did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub title: String,
    pub cost_usd: f64,
    pub attempts: u32,
    pub first_start: Option<Timestamp>,
}

/// "Coming home": what landed, what waits for you (with the question), what failed and why, and
/// what it cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub since: String,
    pub landed: Vec<Item>,
    pub waiting: Vec<Item>,
    pub failed: Vec<Item>,
    /// Every attempt's and review's cost.
    pub cost_usd: f64,
    /// The reviews' part of `cost_usd`.
    pub review_cost_usd: f64,
    pub tokens: u64,
}

/// The kinds of event a summary reads at or after its `since` ([`summary_since`]).
pub const SUMMARY_KINDS: [&str; 7] = [
    "task.landed",
    "task.failed",
    "task.denied",
    "task.approval_requested",
    "task.approved",
    "task.rejected",
    "task.backend_finished",
];

/// The summary of a whole log: each task's figures folded from all of it.
pub fn summary(events: &[StoredEvent], since: Timestamp) -> Summary {
    let mut tallies: BTreeMap<Key, Tally> = BTreeMap::new();
    for e in events {
        let ev = &e.event;
        if let EventBody::RunCreated(spec) = &ev.body {
            for t in &spec.tasks {
                tallies
                    .entry((ev.run.clone(), t.id.clone()))
                    .or_default()
                    .title
                    .clone_from(&t.title);
            }
        }
        if let Some(task) = &ev.task {
            let t = tallies.entry((ev.run.clone(), task.clone())).or_default();
            match &ev.body {
                EventBody::TaskStarted { attempt, .. } => {
                    t.attempts = t.attempts.max(*attempt);
                    t.first_start.get_or_insert(ev.at);
                }
                EventBody::TaskBackendFinished { cost_usd, .. } => {
                    t.cost_usd += cost_usd.unwrap_or(0.0);
                }
                EventBody::ReviewCharged { usd, .. } => t.cost_usd += usd,
                _ => {}
            }
        }
    }
    let recent: Vec<&StoredEvent> = events.iter().filter(|e| e.event.at >= since).collect();
    summary_since(&recent, since, &tallies)
}

/// The summary from the events at or after `since` alone (those of [`SUMMARY_KINDS`] suffice;
/// others are ignored) and each task's figures looked up in `tallies` (a task missing there has
/// none): what a reader of a large store calls with the events of its window and the figures of
/// the tasks it shows, read from their projections.
pub fn summary_since(
    events: &[&StoredEvent],
    since: Timestamp,
    tallies: &BTreeMap<Key, Tally>,
) -> Summary {
    let mut s = Summary {
        since: since.to_rfc3339(),
        ..Default::default()
    };
    let mut waiting: BTreeMap<String, Item> = BTreeMap::new();
    for e in events {
        let ev = &e.event;
        if ev.at < since {
            continue;
        }
        let Some(task) = ev.task.clone() else {
            continue;
        };
        let key = (ev.run.clone(), task.clone());
        let tally = tallies.get(&key);
        let item = |detail: String| Item {
            run: ev.run.clone(),
            task: task.clone(),
            title: tally.map(|t| t.title.clone()).unwrap_or_default(),
            detail,
            cost_usd: tally.map_or(0.0, |t| t.cost_usd),
            attempts: tally.map_or(0, |t| t.attempts),
            elapsed_ms: tally
                .and_then(|t| t.first_start)
                .map_or(0, |s| u64::try_from(ev.at.0 - s.0).unwrap_or(0)),
            commit: None,
            approval: None,
        };
        match &ev.body {
            EventBody::TaskLanded { commit, .. } => s.landed.push(Item {
                commit: Some(commit.to_string()),
                ..item(commit.short().to_owned())
            }),
            EventBody::TaskFailed { reason, .. } => s.failed.push(item(reason.clone())),
            EventBody::TaskDenied { reasons, .. } => s
                .failed
                .push(item(format!("denied: {}", reasons.join("; ")))),
            EventBody::TaskApprovalRequested {
                approval,
                action,
                reasons,
                ..
            } => {
                waiting.insert(
                    approval.clone(),
                    Item {
                        approval: Some(approval.clone()),
                        ..item(format!(
                            "{} ({}): {}",
                            approval,
                            action.as_str(),
                            reasons.join("; ")
                        ))
                    },
                );
            }
            EventBody::TaskApproved { approval, .. } | EventBody::TaskRejected { approval, .. } => {
                waiting.remove(approval);
            }
            EventBody::TaskBackendFinished {
                usage, cost_usd, ..
            } => {
                s.cost_usd += cost_usd.unwrap_or(0.0);
                s.tokens += usage.map_or(0, |u| u.total());
            }
            EventBody::ReviewCharged { usd, tokens, .. } => {
                s.cost_usd += usd;
                s.review_cost_usd += usd;
                s.tokens += tokens;
            }
            _ => {}
        }
    }
    s.waiting = waiting.into_values().collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, RetryCause, Usage};
    use crate::ids::{BackendName, CommitSha};
    use crate::state::ApprovalAction;
    use crate::verdict::Verdict;
    use pretty_assertions::assert_eq;

    /// A scripted log: `a` lands on attempt 1 after 60 s, `b` fails its first gate and lands on
    /// attempt 2 after 180 s, `c` is denied, `d` waits for approval since t=100 s.
    fn log() -> Vec<StoredEvent> {
        let ev = |t: i64, task: &str, body: EventBody| Event {
            run: RunId::new("r"),
            task: Some(TaskId::new(task)),
            at: Timestamp(t * 1000),
            body,
        };
        let started = |a: u32, b: &str| EventBody::TaskStarted {
            attempt: a,
            backend: BackendName::new(b),
            worktree: String::new(),
            reserved: Default::default(),
        };
        let done = |a: u32, ok: bool, ms: u64, usd: f64, tok: u64| EventBody::TaskBackendFinished {
            attempt: a,
            ok,
            exit: Some(0),
            reason: None,
            duration_ms: ms,
            files_changed: 1,
            usage: Some(Usage {
                input_tokens: tok,
                ..Usage::default()
            }),
            cost_usd: Some(usd),
            cost_source: Some("reported".into()),
            log: None,
            model: None,
            message: None,
            transcript: None,
            prompt: None,
            transient: false,
            lines_changed: 0,
        };
        let gate = |a: u32, passed: bool| EventBody::TaskGate {
            attempt: a,
            name: crate::ids::GateName::new("test"),
            stage: crate::event::GateStage::Attempt,
            passed,
            exit: Some(0),
            timed_out: false,
            duration_ms: 1,
            runs: 1,
            log: None,
            figures: None,
        };
        let charged = |a: u32| EventBody::BudgetCharged {
            attempt: a,
            backend: BackendName::new("claude"),
            usd: 0.0,
            tokens: 0,
            reserved: Default::default(),
            source: "reported".into(),
        };
        let events = vec![
            ev(0, "a", EventBody::TaskReady {}),
            ev(0, "b", EventBody::TaskReady {}),
            ev(1, "a", started(1, "claude")),
            ev(1, "b", started(1, "claude")),
            ev(30, "a", done(1, true, 29_000, 0.5, 1000)),
            ev(31, "a", gate(1, true)),
            ev(
                60,
                "a",
                EventBody::TaskLanded {
                    attempt: 1,
                    commit: CommitSha::new("aaaaaaaaaaaa"),
                },
            ),
            ev(40, "b", done(1, true, 39_000, 0.25, 500)),
            ev(41, "b", gate(1, false)),
            ev(
                42,
                "b",
                EventBody::TaskRetry {
                    attempt: 2,
                    cause: RetryCause::Failed,
                    reason: "gate".into(),
                    log: None,
                    kept_worktree: None,
                },
            ),
            ev(43, "b", started(2, "local")),
            ev(
                44,
                "b",
                EventBody::CacheHit {
                    attempt: 2,
                    key: "k".into(),
                    source: "r0/b/1".into(),
                },
            ),
            ev(30, "a", charged(1)),
            ev(40, "b", charged(1)),
            ev(44, "b", charged(2)),
            ev(100, "b", done(2, true, 57_000, 0.0, 2000)),
            ev(101, "b", gate(2, true)),
            ev(
                180,
                "b",
                EventBody::TaskLanded {
                    attempt: 2,
                    commit: CommitSha::new("bbbbbbbbbbbb"),
                },
            ),
            ev(
                90,
                "c",
                EventBody::TaskDenied {
                    attempt: 1,
                    reasons: vec!["secret".into()],
                    kept_worktree: None,
                },
            ),
            ev(
                100,
                "d",
                EventBody::TaskApprovalRequested {
                    attempt: 1,
                    approval: "r/d/1".into(),
                    action: ApprovalAction::Merge,
                    reasons: vec!["lockfile".into()],
                },
            ),
            ev(
                100,
                "d",
                EventBody::TaskPolicy {
                    attempt: 1,
                    verdict: Verdict::NeedsApproval,
                    deny: vec![],
                    require_approval: vec![],
                    risk: "low".into(),
                    duration_us: 5,
                    input: None,
                },
            ),
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| StoredEvent {
                seq: i as u64 + 1,
                event,
            })
            .collect()
    }

    #[test]
    fn figures_from_a_scripted_log() {
        let r = report(&log(), Timestamp(0), Timestamp(400_000));
        assert_eq!(
            (r.runs, r.tasks_landed, r.tasks_failed, r.tasks_denied),
            (1, 2, 0, 1)
        );
        assert_eq!(
            r.lead_time,
            Spread {
                count: 2,
                p50_s: Some(180.0),
                p90_s: Some(180.0)
            }
        );
        assert_eq!(r.attempts_per_landed_task, Some(1.5));
        assert_eq!(r.first_attempt_gate_pass_rate, Some(0.5));
        assert_eq!(
            (
                r.cost_usd,
                r.cost_per_landed_change_usd,
                r.tokens_per_landed_change
            ),
            (0.75, Some(0.375), Some(1750.0))
        );
        let claude = &r.backends["claude"];
        assert_eq!(
            (
                claude.attempts,
                claude.produced,
                claude.landed,
                claude.success_rate
            ),
            (2, 2, 1, Some(0.5))
        );
        assert_eq!(
            claude.latency,
            Spread {
                count: 2,
                p50_s: Some(39.0),
                p90_s: Some(39.0)
            }
        );
        assert_eq!(r.backends["local"].success_rate, Some(1.0));
        assert_eq!(
            (r.approvals_waiting, r.oldest_approval_age_s),
            (1, Some(300.0))
        );
        assert_eq!(r.change_failure_rate, None);
        assert_eq!(r.time_to_restore, Spread::default());
        assert_eq!(r.cache_hit_rate, Some(1.0 / 3.0));
        // Since t=50 s: only what happened after.
        let later = report(&log(), Timestamp(50_000), Timestamp(400_000));
        assert_eq!((later.tasks_landed, later.cost_usd), (2, 0.0));
    }

    #[test]
    fn reverts_give_the_change_failure_rate_and_time_to_restore() {
        use crate::ids::CommitSha;
        let ev = |t: i64, task: Option<&str>, body: EventBody| Event {
            run: RunId::new("r"),
            task: task.map(TaskId::new),
            at: Timestamp(t * 1000),
            body,
        };
        let verify_on = |passed: bool, branch: Option<&str>| EventBody::RunVerify {
            commit: CommitSha::new("c"),
            branch: branch.map(str::to_owned),
            passed,
            failed_gate: None,
            duration_ms: 1,
            log: None,
            reason: None,
        };
        let verify = |passed: bool| verify_on(passed, None);
        let landed = |c: &str| EventBody::TaskLanded {
            attempt: 1,
            commit: CommitSha::new(c),
        };
        let events: Vec<StoredEvent> = [
            ev(1, Some("a"), landed("c1")),
            ev(2, Some("b"), landed("c2")),
            ev(10, None, verify(false)),
            ev(
                12,
                Some("a"),
                EventBody::RunBisect {
                    step: 1,
                    commit: CommitSha::new("c1"),
                    branch: None,
                    passed: true,
                    failed_gate: None,
                    duration_ms: 1,
                    log: None,
                },
            ),
            ev(
                25,
                Some("b"),
                EventBody::TaskReverted {
                    commit: CommitSha::new("c2"),
                    revert: CommitSha::new("r2"),
                    branch: None,
                    reason: "gate `e2e` failed".into(),
                    log: None,
                },
            ),
            ev(30, None, verify(true)),
            // After the merge the base branch fails on its own: restored from its own failure
            // (35), whatever the run branch does meanwhile.
            ev(35, None, verify_on(false, Some("main"))),
            ev(36, None, verify(true)),
            ev(
                37,
                Some("a"),
                EventBody::TaskReverted {
                    commit: CommitSha::new("c1"),
                    revert: CommitSha::new("r1"),
                    branch: Some("main".into()),
                    reason: "gate `e2e` failed".into(),
                    log: None,
                },
            ),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent {
            seq: i as u64 + 1,
            event,
        })
        .collect();
        let r = report(&events[..6], Timestamp(0), Timestamp(40_000));
        assert_eq!(
            (r.tasks_landed, r.tasks_reverted, r.change_failure_rate),
            (2, 1, Some(0.5))
        );
        assert_eq!(
            r.time_to_restore,
            Spread {
                count: 1,
                p50_s: Some(15.0),
                p90_s: Some(15.0)
            }
        );
        let r = report(&events, Timestamp(0), Timestamp(40_000));
        assert_eq!((r.tasks_reverted, r.time_to_restore.count), (2, 2));
        assert_eq!(
            (r.time_to_restore.p50_s, r.time_to_restore.p90_s),
            (Some(15.0), Some(15.0))
        );
        let restores = |r: &Report| r.time_to_restore.p50_s;
        assert_eq!(
            restores(&report(&events[6..], Timestamp(0), Timestamp(40_000))),
            Some(2.0)
        );
        // Without any verify, reverts are not observed: the rate is unknown, not zero.
        let r = report(&events[..2], Timestamp(0), Timestamp(40_000));
        assert_eq!(r.change_failure_rate, None);
    }

    #[test]
    fn summary_says_what_landed_waits_and_failed() {
        let s = summary(&log(), Timestamp(0));
        let brief = |items: &[Item]| {
            items
                .iter()
                .map(|i| format!("{} {}", i.task, i.detail))
                .collect::<Vec<_>>()
        };
        assert_eq!(brief(&s.landed), ["a aaaaaaaaaa", "b bbbbbbbbbb"]);
        assert_eq!(brief(&s.waiting), ["d r/d/1 (merge): lockfile"]);
        assert_eq!(brief(&s.failed), ["c denied: secret"]);
        assert_eq!((s.cost_usd, s.tokens), (0.75, 3500));
        // Each item with its task's cost, attempts and time since its first attempt.
        let figures = |items: &[Item]| {
            items
                .iter()
                .map(|i| (i.task.to_string(), i.cost_usd, i.attempts, i.elapsed_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            figures(&s.landed),
            [
                ("a".to_owned(), 0.5, 1, 59_000),
                ("b".to_owned(), 0.25, 2, 179_000)
            ]
        );
        assert_eq!(s.landed[0].commit.as_deref(), Some("aaaaaaaaaaaa"));
        assert_eq!(s.waiting[0].approval.as_deref(), Some("r/d/1"));
        // Figures count the task's history before `since` too.
        let later = summary(&log(), Timestamp(150_000));
        assert_eq!(figures(&later.landed), [("b".to_owned(), 0.25, 2, 179_000)]);
    }
}
