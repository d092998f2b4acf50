//! `abo daemon`: `abo serve` plus what keeps runs moving without a person.
//! - Backlogs of `schedule.cron` start on their cron expressions.
//! - A run paused outside its `schedule.windows` resumes inside the next one.
//! - A run paused because a cap kept its tasks from starting resumes as soon as one fits again:
//!   when the day or week of a daily or weekly cap rolls over, or other runs release what they
//!   held. Caps of the run itself (`--usd`, `--tokens`, `--wall`) are raised only by a person.
//! - A run paused because a backend is held by a usage limit (reason `quota`) resumes at the
//!   limit's reset.
//!
//! - `landing.verify_schedule`: `landing.verify` runs on the base branch's head on its interval or
//!   cron expression (and at start when one was left in progress), bisected and healed there
//!   (`abo_runtime::verify_schedule`).
//! - A finished run whose end is still owed (abo stopped between `run.finished` and `run.merge`:
//!   the merge, the pull request, the notifications) is resumed to complete it, once.
//!
//! Runs it starts or resumes are executed by this process.

use std::collections::BTreeSet;
use std::sync::Arc;

use abo_core::event::StoredEvent;
use abo_core::ids::RunId;
use abo_core::schedule::{Cron, Every};
use abo_core::state::{RunState, RunStatus, TaskState};
use abo_runtime::verify_schedule::Outcome;
use abo_runtime::{Ctx, Observer, Start, engine, windows};

use crate::cli::Cli;
use crate::commands::parse_duration;
use crate::exit;
use crate::out::say;
use crate::progress::describe;

/// Prints a driven run's events, one line each, prefixed with the run.
pub(crate) struct Lines;

impl Observer for Lines {
    fn on_events(&mut self, _: &RunState, events: &[StoredEvent]) {
        for e in events {
            if let Some(line) = describe(e) {
                say!("{} {line}", e.event.run);
            }
        }
    }

    fn warn(&mut self, message: &str) {
        say!("warning: {message}");
    }
}

pub(crate) async fn daemon(cli: &Cli, interval: &str, addr: &str) -> anyhow::Result<u8> {
    let every = parse_duration("--interval", interval)?;
    let api = crate::serve::api(cli).await?;
    let (config, _) = crate::load::config(&api.root, cli.config.as_deref())?;
    let tz = windows::zone(config.schedule.timezone.as_deref())
        .map_err(|e| crate::exit::Usage::new(format!("abo.yml: schedule.timezone: {e}")))?;
    let crons: Vec<(Cron, abo_core::config::CronRun)> = config
        .schedule
        .cron
        .iter()
        .filter_map(|c| Cron::parse(&c.at).ok().map(|p| (p, c.clone())))
        .collect();
    let digest = match &config.notify.digest {
        Some(at) => Some(crate::digest::cron(at)?),
        None => None,
    };
    let notify = config.notify.spec();
    let verify_every = match &config.landing.verify_schedule {
        Some(at) => Some(abo_core::schedule::Every::parse(at).map_err(|e| {
            crate::exit::Usage::new(format!("abo.yml: landing.verify_schedule: {e}"))
        })?),
        None => None,
    };
    let verify_branch = match &config.base_branch {
        Some(b) => Some(b.clone()),
        None => api.ctx.git.current_branch().await?,
    };
    let _server = crate::serve::listen(Arc::clone(&api), addr).await?;
    let ctx = Arc::clone(&api.ctx);
    say!(
        "abo daemon: {} scheduled backlog(s); resuming runs paused for budget, quota or schedule (every {every})",
        crons.len()
    );
    let driving: Arc<std::sync::Mutex<BTreeSet<RunId>>> = Arc::default();
    let mut last = ctx.now();
    // Finished runs that owe nothing: looked at once.
    let mut settled: BTreeSet<RunId> = BTreeSet::new();
    let verifying = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut verified_at: Option<abo_core::ids::Timestamp> = None;
    loop {
        let now = ctx.now();
        // The base branch's scheduled verification, one at a time.
        if let (Some(every), Some(branch)) = (&verify_every, &verify_branch)
            && !verifying.load(std::sync::atomic::Ordering::SeqCst)
        {
            let due = match every {
                Every::Interval(ms) => verified_at.is_none_or(|at| now.0 - at.0 >= *ms as i64),
                Every::Cron(cron) => {
                    windows::fired(cron, last, now, &tz)
                        || (verified_at.is_none()
                            && abo_runtime::verify_schedule::in_progress(&ctx, branch).await)
                }
            };
            if due {
                verified_at = Some(now);
                verifying.store(true, std::sync::atomic::Ordering::SeqCst);
                let (ctx, config, branch, flag) = (
                    Arc::clone(&ctx),
                    config.clone(),
                    branch.clone(),
                    Arc::clone(&verifying),
                );
                tokio::spawn(async move {
                    match abo_runtime::verify_schedule::verify_base(&ctx, &config, &branch).await {
                        Ok(Outcome::Idle) => {}
                        Ok(o) => say!("landing.verify_schedule on {branch}: {}", outcome(&o)),
                        Err(e) => say!("landing.verify_schedule on {branch}: {e}"),
                    }
                    flag.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
        }
        // Each minute since the last look whose cron matches starts its backlog once.
        for (cron, entry) in &crons {
            if windows::fired(cron, last, now, &tz) {
                match start(&api, entry).await {
                    Ok(id) => say!(
                        "{id} started by schedule.cron `{}` ({})",
                        entry.at,
                        entry.backlog
                    ),
                    Err(e) => say!("schedule.cron `{}` ({}): {e:#}", entry.at, entry.backlog),
                }
            }
        }
        // The daily digest, at `notify.digest`: the last 24 hours.
        if let Some(cron) = &digest
            && windows::fired(cron, last, now, &tz)
        {
            let events = abo_server::metrics::all_events(&ctx.store).await?;
            let s = abo_core::report::summary(
                &events,
                abo_core::ids::Timestamp(now.0 - 24 * 3600 * 1000),
            );
            crate::digest::send(&ctx, &notify, &s).await;
        }
        last = now;
        for row in ctx.store.runs().await? {
            let reason = row.reason.as_deref().unwrap_or("");
            let busy = driving.lock().map(|d| d.contains(&row.id)).unwrap_or(true);
            if busy || (row.status == "finished" && settled.contains(&row.id)) {
                continue;
            }
            let why = if row.status == "finished" {
                match owes_its_end(&ctx, &row.id).await {
                    Some(true) => "its end (merge, notifications) is owed",
                    Some(false) => {
                        settled.insert(row.id.clone());
                        continue;
                    }
                    None => continue,
                }
            } else if row.status != "paused" {
                continue;
            } else if reason.starts_with("budget:") && fits_now(&ctx, &row.id).await {
                "a task fits its caps again"
            } else if reason.starts_with("schedule:") && in_window(&ctx, &row.id).await {
                "inside its schedule window"
            } else if reason.starts_with("quota:") && hold_ended(&ctx, &row.id).await {
                "a held backend's limit reset"
            } else {
                continue;
            };
            say!("{} resuming: {why}", row.id);
            if let Ok(mut d) = driving.lock() {
                d.insert(row.id.clone());
            }
            let (ctx, driving, id) = (Arc::clone(&ctx), Arc::clone(&driving), row.id.clone());
            tokio::spawn(async move {
                match engine::drive(&ctx, &id, Start::Resume(Default::default()), &mut Lines).await
                {
                    Ok(s) => say!("{id} {}", s.status.as_str()),
                    Err(e) => say!("{id} could not be resumed: {e}"),
                }
                if let Ok(mut d) = driving.lock() {
                    d.remove(&id);
                }
            });
        }
        tokio::select! {
            () = tokio::time::sleep(every.0) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(exit::OK)
}

/// One line for how a scheduled verification of the base branch ended.
fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Idle => "nothing new".to_owned(),
        Outcome::Passed { head } => format!("{head} passed"),
        Outcome::Reverted { commit, revert } => format!("{commit} reverted by {revert}"),
        Outcome::Proposed {
            commit,
            revert,
            url,
        } => format!("{commit} is the first bad commit: its revert {revert} is proposed, {url}"),
        Outcome::Reported { commit, reason } => {
            format!("{commit} is the first bad commit, not abo's: reported ({reason})")
        }
        Outcome::Broken { reason } => format!("still failing: {reason}"),
    }
}

/// Whether a finished run still owes its end and no live process drives it (`None`: someone
/// does, or its log could not be read).
async fn owes_its_end(ctx: &Ctx, run: &RunId) -> Option<bool> {
    let state = engine::load(&ctx.store, run).await.ok()?;
    if !state.closing.owes() {
        return Some(false);
    }
    let lease = ctx.store.lease(run).await.ok()?;
    if lease.is_some_and(|l| engine::driven(&l, ctx.now())) {
        return None;
    }
    Some(true)
}

/// Starts a scheduled backlog, executed by this process.
async fn start(
    api: &crate::serve::Api,
    entry: &abo_core::config::CronRun,
) -> anyhow::Result<RunId> {
    use abo_server::Control;
    let req = abo_server::CreateRun {
        backlog: entry.backlog.clone(),
        profile: entry.profile.clone(),
        ..Default::default()
    };
    api.create_run(req)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// Whether a run paused outside its windows is inside one now.
async fn in_window(ctx: &Ctx, run: &RunId) -> bool {
    engine::load(&ctx.store, run)
        .await
        .is_ok_and(|s| windows::outside(&s.spec.settings.schedule, ctx.now()).is_none())
}

/// Whether a backend that held a paused run reached its reset.
async fn hold_ended(ctx: &Ctx, run: &RunId) -> bool {
    engine::load(&ctx.store, run)
        .await
        .is_ok_and(|s| !s.holds_ended(ctx.now()).is_empty())
}

/// Whether a ready task of a paused run could reserve its budget now.
async fn fits_now(ctx: &Ctx, run: &RunId) -> bool {
    let Ok(mut state) = engine::load(&ctx.store, run).await else {
        return false;
    };
    if !matches!(state.status, RunStatus::Paused { .. }) {
        return false;
    }
    if state.budgets.windows_capped() {
        let Ok(tz) = windows::zone(state.budgets.timezone.as_deref()) else {
            return false;
        };
        match windows::load(&ctx.store, run, ctx.now(), &tz).await {
            Ok(w) => state.windows = w,
            Err(_) => return false,
        }
    }
    let s = &state;
    if s.budgets
        .wall_ms
        .is_some_and(|w| s.ledger.ran(ctx.now()) >= w)
    {
        return false; // the run's own wall time: only a person raises it
    }
    s.tasks_in_order()
        .filter(|t| t.state == TaskState::Ready)
        .any(|t| {
            let cap = t.spec.budget.unwrap_or(s.budgets.task);
            !t.spec.backend.priced()
                || s.ledger
                    .reservation(
                        &s.budgets,
                        &t.spec.id,
                        cap,
                        t.spec.backend.name(),
                        &s.windows,
                    )
                    .is_ok()
        })
}
