//! `abo daemon`: keeps runs moving without a person. A run paused because a cap kept its tasks
//! from starting resumes by itself as soon as one of them fits again: when the day or week of a
//! daily or weekly cap rolls over, or other runs release what they held. Caps of the run itself
//! (`--usd`, `--tokens`, `--wall`) are raised only by a person, with `abo resume RUN --usd ...`.

use std::collections::BTreeSet;
use std::sync::Arc;

use abo_core::event::StoredEvent;
use abo_core::ids::RunId;
use abo_core::state::{RunState, RunStatus, TaskState};
use abo_runtime::{Ctx, Observer, Start, engine, windows};

use crate::cli::Cli;
use crate::commands::{env, parse_duration};
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

pub(crate) async fn daemon(cli: &Cli, interval: &str) -> anyhow::Result<u8> {
    let every = parse_duration("--interval", interval)?;
    let ctx = env(cli).await?.ctx;
    say!("abo daemon: resuming runs paused for budget when their caps allow (every {every})");
    let driving: Arc<std::sync::Mutex<BTreeSet<RunId>>> = Arc::default();
    loop {
        for row in ctx.store.runs().await? {
            let paused_for_budget = row.status == "paused"
                && row
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("budget:"));
            let busy = driving.lock().map(|d| d.contains(&row.id)).unwrap_or(true);
            if !paused_for_budget || busy || !fits_now(&ctx, &row.id).await {
                continue;
            }
            say!("{} resuming: a task fits its caps again", row.id);
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
