//! The engine loop: decide, commit the events, then execute the effects; their results come back
//! as commands. One process executes a run at a time (a lease in the store), and any process may
//! die at any moment: `Start::Resume` recovers from the log and the repository.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use abo_core::decide::{Command, Rejected};
use abo_core::event::{EventBody, StoredEvent};
use abo_core::ids::{RunId, TaskId};
use abo_core::state::{ReplayError, RunState, RunStatus};
use abo_store::{Lease, Store, StoreError};

use crate::context::Ctx;
use crate::effects::{self, Done};
use crate::git::GitError;
use crate::process;

/// Someone watching the run: the CLI's progress display, tests.
pub trait Observer: Send {
    fn on_events(&mut self, state: &RunState, events: &[StoredEvent]);
    fn warn(&mut self, message: &str);
    /// Called about once a second while the run is in progress.
    fn tick(&mut self, _state: &RunState) {}
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// A run just created.
    New,
    /// Continue after a pause, a crash or a kill of the process, with caps raised.
    Resume(abo_core::budget::CapChange),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("run {run} is being executed by process {pid} on {host}")]
    Busy { run: RunId, host: String, pid: u32 },
    #[error(transparent)]
    Policy(#[from] abo_policy::PolicyError),
    #[error("no run {0} in the store")]
    NoRun(RunId),
    /// The run branch lost commits abo landed and cannot be restored by abo alone.
    #[error(
        "the run branch {branch} lacks the commits abo landed for {missing}, so abo moves nothing: {how}"
    )]
    RunBranchLost {
        branch: String,
        missing: String,
        how: String,
    },
}

/// How long a finished run waits for notifications still being delivered.
const NOTIFY_GRACE: Duration = Duration::from_secs(30);

/// How often the engine heartbeats its lease and looks for requests.
const TICK: Duration = Duration::from_millis(200);

/// Heartbeat the lease every this many ticks (once a second).
const HEARTBEAT_TICKS: u32 = 5;

/// How long a lease held from another host stays valid without a heartbeat.
const LEASE_TTL_MS: i64 = 30_000;

/// How often a holder renews a lease it keeps outside the engine's loop (a scheduled
/// verification's): well within [`LEASE_TTL_MS`].
pub const LEASE_BEAT: Duration = Duration::from_secs(1);

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lease's holder is still alive.
pub fn holder_alive(lease: &Lease, now: abo_core::ids::Timestamp) -> bool {
    if lease.host == hostname() {
        lease.pid != std::process::id() && process::alive(lease.pid)
    } else {
        now.0 - lease.heartbeat.0 < LEASE_TTL_MS
    }
}

/// Whether some process drives the run under this lease: this one, or a live one.
pub fn driven(lease: &Lease, now: abo_core::ids::Timestamp) -> bool {
    (lease.host == hostname() && lease.pid == std::process::id()) || holder_alive(lease, now)
}

/// Loads a run's state from its log.
pub async fn load(store: &Store, run: &RunId) -> Result<RunState, EngineError> {
    let events = store.run_events(run).await?;
    if events.is_empty() {
        return Err(EngineError::NoRun(run.clone()));
    }
    Ok(RunState::replay(run, &events)?)
}

/// A run's state for reading, without its tasks (`tasks` and `order` are empty): its spec's
/// settings, its own events applied (the clock, caps raised on resume, an owed end), and its
/// ledger from the `spend` projection and its row's totals. What `abo status`, the API and the
/// dashboard show of a run's budgets costs the same for a run of 10 tasks or 10,000; `load` is
/// for deciding.
///
/// The ledger holds what its caps need: the run's spend (its row's, every charge), each backend's,
/// open reservations, and charges by time for the day and week windows. Per-task spend is not
/// filled in: a reader wanting a task's figures reads its row.
pub async fn load_head(store: &Store, row: &abo_store::RunRow) -> Result<RunState, EngineError> {
    let spec = store
        .run_spec_head(&row.id)
        .await?
        .ok_or_else(|| EngineError::NoRun(row.id.clone()))?;
    let mut state = RunState::created(row.id.clone(), spec, row.created_at);
    for e in store.run_level_events(&row.id).await? {
        state.apply(&e.event);
        state.last_seq = e.seq;
    }
    let ledger = &mut state.ledger;
    for s in store.run_spend(&row.id).await? {
        match s.charged {
            None => {
                let held = abo_core::budget::Amount {
                    usd: s.reserved_usd,
                    tokens: s.reserved_tokens,
                };
                ledger.reserve(&s.task, s.attempt, &s.backend, held);
            }
            Some((usd, tokens, at)) => {
                let a = abo_core::budget::Amount { usd, tokens };
                ledger.by_backend.entry(s.backend).or_default().add(a);
                ledger.charges.push((at, a));
            }
        }
    }
    ledger.charges.sort_by_key(|(at, _)| *at);
    let (usd, tokens) = store.run_review_spent(&row.id).await?;
    ledger.reviews = abo_core::budget::Amount { usd, tokens };
    // Every charge, also one the projection's row of its attempt no longer holds (an interrupted
    // attempt charged, then run again under its number).
    ledger.spent = abo_core::budget::Amount {
        usd: row.spent_usd,
        tokens: row.spent_tokens,
    };
    Ok(state)
}

/// Decides a command for a run that no process is executing (`abo kill`, `abo retry` on a stopped
/// run) and commits its events. Effects are not run: there is nothing in flight to act on.
pub async fn decide_offline(ctx: &Ctx, run: &RunId, cmd: Command) -> Result<RunState, EngineError> {
    let mut state = load(&ctx.store, run).await?;
    let decision = state.decide(cmd, ctx.now())?;
    ctx.store.append(&decision.events).await?;
    if state.status.is_terminal() {
        sweep(ctx, &state).await;
    }
    Ok(state)
}

/// Executes a run until it finishes, is killed, or pauses with nothing in flight.
pub async fn drive(
    ctx: &Arc<Ctx>,
    run: &RunId,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<RunState, EngineError> {
    let mut state = load(&ctx.store, run).await?;
    let me = Lease {
        host: hostname(),
        pid: std::process::id(),
        heartbeat: ctx.now(),
    };
    let current = ctx.store.lease(run).await?;
    if let Some(l) = &current
        && holder_alive(l, ctx.now())
    {
        return Err(EngineError::Busy {
            run: run.clone(),
            host: l.host.clone(),
            pid: l.pid,
        });
    }
    if !ctx.store.take_lease(run, &me, current.as_ref()).await? {
        let l = ctx.store.lease(run).await?.unwrap_or(me.clone());
        return Err(EngineError::Busy {
            run: run.clone(),
            host: l.host,
            pid: l.pid,
        });
    }
    let result = drive_leased(ctx, &mut state, start, observer, &me).await;
    let _ = ctx.store.release_lease(run, &me).await;
    result.map(|()| state)
}

async fn drive_leased(
    ctx: &Arc<Ctx>,
    state: &mut RunState,
    start: Start,
    observer: &mut dyn Observer,
    me: &Lease,
) -> Result<(), EngineError> {
    let spec = Arc::new(state.spec.clone());
    // The policy is built once per run and shared by its attempts.
    let policy = Arc::new(effects::RunPolicy::load(&state.id, &spec)?);
    let run = state.id.clone();
    // A run that ended and owes nothing is left as it is (resuming it is refused below).
    let settled = state.status.is_terminal() && !state.closing.owes();
    if !settled {
        // What a killed git left (stale locks, interrupted worktree registrations) goes first.
        let (repaired, _) = ctx.git.repair().await;
        for r in repaired {
            observer.warn(&format!("removed {}", r.describe()));
        }
        if let Some(w) = check_run_branch(ctx, state).await? {
            observer.warn(&w);
        }
    }
    if let Some(shared) = &ctx.shared {
        // Workers start attempts from the run branch as the remote has it.
        ctx.git.push(&shared.remote, &spec.branch).await?;
    }
    let mut deliveries: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let first = match start {
        Start::New => Command::Start,
        Start::Resume(caps) => {
            // What a crashed abo left running for this run dies first, then its worktrees go.
            let killed = process::kill_leftovers(&format!("ABO_RUN_ID={run}"));
            if killed > 0 {
                observer.warn(&format!(
                    "stopped {killed} leftover process(es) of run {run}"
                ));
            }
            sweep(ctx, state).await;
            if state.closing == abo_core::state::Closing::Owed {
                // The notifications of the run's end that were not delivered go now.
                let events = ctx.store.run_events(&run).await?;
                deliveries.extend(crate::notify::dispatch_owed(
                    ctx,
                    &spec.settings.notify,
                    &spec.settings.secret_env,
                    &events,
                ));
            }
            if ctx.shared.is_some() {
                // What workers were doing for the previous control plane is lost: those attempts
                // run again, under new leases. A change waiting for (or given) approval stays in
                // its worker's worktree and lands from there.
                for t in state.tasks_in_order() {
                    if let Some(a) = t.state.in_flight()
                        && !matches!(t.state, abo_core::state::TaskState::Approved { .. })
                    {
                        let why = "the run was taken over by another control plane";
                        ctx.store
                            .release_run(&run, Some((&t.spec.id, a)), why, ctx.now())
                            .await?;
                    }
                }
            }
            Command::Resume {
                landed: recover_landed(ctx, state).await?,
                caps,
            }
        }
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut pending: VecDeque<Command> = VecDeque::from([first]);
    let mut jobs = 0usize;
    let mut ticker = tokio::time::interval(TICK);
    let mut first_command = true;
    let mut warned = std::collections::BTreeSet::new();
    let mut ticks = 0u32;
    let tz = crate::windows::zone(state.budgets.timezone.as_deref()).unwrap_or_else(|e| {
        observer.warn(&format!(
            "budgets.timezone: {e}; days and weeks count in UTC"
        ));
        jiff::tz::TimeZone::UTC
    });
    refresh(ctx, state, &tz, true, observer).await;
    if let Some(h) = &spec.settings.hedge
        && h.after == abo_core::proposal::HedgeAfter::P90
    {
        // `hedge.after: p90` reads the landed attempts' wall times once, as the run starts.
        match ctx.store.landed_durations().await {
            Ok(d) => state.landed_ms = d,
            Err(e) => observer.warn(&format!("could not read landed attempts' durations: {e}")),
        }
    }
    let mut stop = ctx.stop.subscribe();
    let mut stopping = false;
    loop {
        // Every command that is waiting is decided, and their events committed in one transaction
        // (group commit) before any effect they asked for starts.
        let mut events = Vec::new();
        let mut effects_due = Vec::new();
        while let Some(cmd) = pending.pop_front() {
            let decision = match state.decide(cmd, ctx.now()) {
                Ok(d) => d,
                Err(e) if first_command => return Err(e.into()),
                Err(e) => {
                    observer.warn(&e.to_string());
                    continue;
                }
            };
            first_command = false;
            events.extend(decision.events);
            effects_due.extend(decision.effects);
        }
        {
            let stored = ctx.store.append_as(&events, Some((&run, me))).await?;
            if !stored.is_empty() {
                observer.on_events(state, &stored);
                deliveries.extend(crate::notify::dispatch(
                    ctx,
                    &spec.settings.notify,
                    &spec.settings.secret_env,
                    &stored,
                ));
                deliveries.retain(|h| !h.is_finished());
                // What the learned router knows changes as attempts land or fail.
                let learned = stored.iter().any(|e| {
                    matches!(
                        e.event.body,
                        EventBody::TaskLanded { .. }
                            | EventBody::TaskRetry { .. }
                            | EventBody::TaskFailed { .. }
                            | EventBody::TaskDenied { .. }
                    )
                });
                if learned {
                    refresh(ctx, state, &tz, true, observer).await;
                }
            }
            if stopping {
                // The pause is committed; what was in flight is interrupted (its processes are
                // killed) and runs again on `abo resume`, as after a crash.
                ctx.groups.kill_all();
                break;
            }
            effects::not_pooled_after_a_kill(&mut effects_due);
            // Every worktree these effects give back is announced before any of them starts.
            let coming: Vec<_> = effects_due
                .iter()
                .map(|e| effects::coming_to_pool(ctx, &spec, e))
                .collect();
            for (effect, coming) in effects_due.into_iter().zip(coming) {
                jobs += 1;
                let (ctx, spec, tx) = (Arc::clone(ctx), Arc::clone(&spec), tx.clone());
                let policy = Arc::clone(&policy);
                tokio::spawn(async move {
                    let done = effects::execute(&ctx, &spec, &policy, effect).await;
                    drop(coming);
                    let _ = tx.send(done);
                });
            }
        }
        let idle = state.in_flight() == 0 && state.inflight.landing.is_empty();
        let stopped =
            state.status.is_terminal() || matches!(state.status, RunStatus::Paused { .. });
        if jobs == 0 && idle && stopped {
            break;
        }
        if jobs == 0 && idle && state.status == RunStatus::Running {
            // Nothing in flight and nothing decided: a run that cannot move is a bug, not a wait.
            observer.warn("the run has nothing in flight and nothing to start; pausing it");
            pending.push_back(Command::Pause {
                reason: "stalled: nothing can start".into(),
            });
            continue;
        }
        tokio::select! {
            Ok(()) = stop.changed(), if !stopping => {
                if let Some(why) = stop.borrow_and_update().clone() {
                    stopping = true;
                    ctx.groups.kill_all();
                    if !matches!(state.status, RunStatus::Paused { .. }) && !state.status.is_terminal() {
                        pending.push_back(Command::Pause { reason: why });
                    }
                }
            }
            done = rx.recv() => {
                // This result and every other one already waiting: decided together.
                let mut batch: Vec<Done> = done.into_iter().collect();
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                jobs = jobs.saturating_sub(batch.len().max(1));
                for done in batch {
                    for w in done.warnings {
                        // One warning of a kind per run.
                        if warned.insert(w.clone()) {
                            observer.warn(&w);
                        }
                    }
                    pending.extend(done.command);
                }
            }
            _ = ticker.tick() => {
                let now = ctx.now();
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(HEARTBEAT_TICKS) {
                    let beat = Lease { heartbeat: now, ..me.clone() };
                    if let Ok(false) = ctx.store.heartbeat(&run, &beat).await {
                        // Another process took the run over: this one stops deciding for it.
                        ctx.groups.kill_all();
                        return Err(StoreError::LeaseLost(run.clone()).into());
                    }
                }
                if ctx.store.has_requests(&run).await.unwrap_or(false) {
                    for r in ctx.store.take_requests(&run, now).await? {
                        match r.kind.as_str() {
                            "pause" => pending.push_back(Command::Pause { reason: r.arg }),
                            "kill" => pending.push_back(Command::Kill { reason: r.arg }),
                            "retry" => pending.push_back(Command::Retry { task: TaskId::new(r.arg) }),
                            "approve" | "reject" => {
                                let v: serde_json::Value = serde_json::from_str(&r.arg).unwrap_or_default();
                                let approval = v["approval"].as_str().unwrap_or_default().to_owned();
                                let reason = v["reason"].as_str().unwrap_or_default().to_owned();
                                pending.push_back(if r.kind == "approve" {
                                    Command::Approve { approval, reason }
                                } else {
                                    Command::Reject { approval, reason }
                                });
                            }
                            "answer" => {
                                let v: serde_json::Value = serde_json::from_str(&r.arg).unwrap_or_default();
                                let approval = v["approval"].as_str().unwrap_or_default().to_owned();
                                let answer = v["answer"].as_str().unwrap_or_default().to_owned();
                                pending.push_back(Command::Answer { approval, answer });
                            }
                            other => observer.warn(&format!("ignoring unknown request `{other}`")),
                        }
                    }
                }
                if state.status == RunStatus::Running {
                    refresh(ctx, state, &tz, false, observer).await;
                    pending.push_back(Command::Tick);
                }
                observer.tick(state);
            }
        }
    }
    // Notifications still being delivered get a little time before the process may exit.
    let _ = tokio::time::timeout(NOTIFY_GRACE, async {
        for h in deliveries {
            let _ = h.await;
        }
    })
    .await;
    sweep(ctx, state).await;
    Ok(())
}

/// Refreshes what the run's state takes from outside its log: other runs' spend in the budget's
/// day and week, and (with `router`) the learned router's memory.
async fn refresh(
    ctx: &Ctx,
    state: &mut RunState,
    tz: &jiff::tz::TimeZone,
    router: bool,
    observer: &mut dyn Observer,
) {
    state.outside_schedule = crate::windows::outside(&state.spec.settings.schedule, ctx.now());
    if state.budgets.windows_capped() {
        match crate::windows::load(&ctx.store, &state.id, ctx.now(), tz).await {
            Ok(w) => state.windows = w,
            Err(e) => observer.warn(&format!("could not read the budget windows: {e}")),
        }
    }
    if router
        && !state.spec.settings.router.learn.is_empty()
        && let Ok(stats) = ctx.store.router_stats().await
    {
        state.router_stats = stats;
    }
}

/// Checks the run branch against the log before anything moves it: every commit the log says
/// landed must be on it. A branch that is missing, or was reset back (it holds part of what
/// landed and nothing else), is restored to the last landed commit, which the object store still
/// holds (the run's keeper ref keeps it reachable); one that lost commits and holds others, or is
/// checked out, is refused with what is missing and how to restore it. Returns a warning for
/// the person when it restored the branch.
async fn check_run_branch(ctx: &Ctx, state: &RunState) -> Result<Option<String>, EngineError> {
    use abo_core::state::TaskState;
    let spec = &state.spec;
    let branch = &spec.branch;
    let keeper = crate::effects::keeper_ref(&state.id);
    let landed: Vec<(TaskId, abo_core::ids::CommitSha)> = state
        .tasks_in_order()
        .filter_map(|t| match &t.state {
            TaskState::Landed { commit, .. } => Some((t.spec.id.clone(), commit.clone())),
            _ => None,
        })
        .collect();
    let Some(head_now) = ctx.git.branch_head(branch).await? else {
        if landed.is_empty() {
            ctx.git.ensure_branch(branch, &spec.base).await?;
            return Ok(None);
        }
        return restore_run_branch(ctx, state, &landed, &landed, None).await;
    };
    let mut missing = Vec::new();
    for (task, commit) in &landed {
        if !ctx
            .git
            .is_ancestor(commit, &head_now)
            .await
            .unwrap_or(false)
        {
            missing.push((task.clone(), commit.clone()));
        }
    }
    if missing.is_empty() {
        if !landed.is_empty() {
            ctx.git.set_ref(&keeper, &head_now).await?;
        }
        return Ok(None);
    }
    restore_run_branch(ctx, state, &landed, &missing, Some(&head_now)).await
}

/// Restores the run branch (missing, or at `head`) to the tip of what landed, when that loses
/// nothing: see [`check_run_branch`].
async fn restore_run_branch(
    ctx: &Ctx,
    state: &RunState,
    landed: &[(TaskId, abo_core::ids::CommitSha)],
    missing: &[(TaskId, abo_core::ids::CommitSha)],
    head: Option<&abo_core::ids::CommitSha>,
) -> Result<Option<String>, EngineError> {
    let branch = &state.spec.branch;
    let run = &state.id;
    let names = |l: &[(TaskId, abo_core::ids::CommitSha)]| {
        l.iter()
            .map(|(t, c)| format!("{t} ({})", &c.as_str()[..c.as_str().len().min(12)]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lost = |how: String| EngineError::RunBranchLost {
        branch: branch.clone(),
        missing: names(missing),
        how,
    };
    // The tip: the landed commit every other one is an ancestor of (landings build on each other).
    let mut tip = None;
    for (_, c) in landed {
        if !ctx.git.has_commit(c).await? {
            return Err(lost(format!(
                "commit {c} is gone from the object store; restore {branch} from a clone that has it, then abo resume {run}"
            )));
        }
        let mut all = true;
        for (_, other) in landed {
            if !ctx.git.is_ancestor(other, c).await? {
                all = false;
                break;
            }
        }
        if all {
            tip = Some(c.clone());
        }
    }
    let Some(tip) = tip else {
        return Err(lost(format!(
            "the landed commits do not line up; set {branch} by hand (git branch -f {branch} COMMIT), then abo resume {run}"
        )));
    };
    let restore = format!("git branch -f {branch} {tip}");
    if let Some(h) = head
        && !ctx.git.is_ancestor(h, &tip).await?
    {
        return Err(lost(format!(
            "it holds commits abo did not land; keep them (git branch saved-{run} {branch}), restore it ({restore}), then abo resume {run}"
        )));
    }
    if let Some(wt) = ctx.git.checked_out_in(branch).await?.first() {
        return Err(lost(format!(
            "it is checked out in {}; switch that working tree to another branch (git -C {} switch --detach), then abo resume {run} restores it",
            wt.display(),
            wt.display()
        )));
    }
    ctx.git.restore_branch(branch, &tip, head).await?;
    ctx.git
        .set_ref(&crate::effects::keeper_ref(run), &tip)
        .await?;
    Ok(Some(format!(
        "{branch} had lost the commits abo landed for {}; restored it to {tip}",
        names(missing)
    )))
}

/// For each task that was in flight when abo stopped: its commit, if it reached the run branch.
async fn recover_landed(
    ctx: &Ctx,
    state: &RunState,
) -> Result<Vec<(TaskId, u32, abo_core::ids::CommitSha)>, GitError> {
    let mut landed = Vec::new();
    for t in state.tasks_in_order() {
        if t.state.in_flight().is_some()
            && let Some((commit, attempt)) = ctx
                .git
                .find_task_commit(&state.spec.base, &state.spec.branch, &state.id, &t.spec.id)
                .await?
        {
            landed.push((t.spec.id.clone(), attempt, commit));
        }
    }
    Ok(landed)
}

/// Removes the run's worktrees, attempt branches and scratch files, except those of failed attempts
/// (kept for inspection until `abo gc`) of attempts in flight, and of changes waiting for approval.
pub async fn sweep(ctx: &Ctx, state: &RunState) {
    let mut keep: BTreeSet<String> = state
        .tasks
        .values()
        .flat_map(|t| t.kept_worktrees.iter().cloned())
        .collect();
    for t in state.tasks.values() {
        if let Some(a) = t.state.holds_worktree() {
            keep.insert(state.attempt_id(&t.spec.id, a).worktree());
        }
    }
    let dir = ctx.run_worktrees(&state.id);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let rel = format!(
                ".abo/worktrees/{}/{}",
                state.id,
                e.file_name().to_string_lossy()
            );
            if !keep.contains(&rel) {
                let _ = ctx.git.remove_worktree(&e.path()).await;
            }
        }
    }
    let _ = ctx.git.prune_worktrees().await;
    let prefix = format!("abo-attempt/{}/", state.id);
    for b in ctx.git.branches(&prefix).await.unwrap_or_default() {
        let wt = format!(
            ".abo/worktrees/{}/{}",
            state.id,
            b.trim_start_matches(&prefix)
        );
        if !keep.contains(&wt) {
            let _ = ctx.git.delete_branch(&b).await;
        }
    }
    if state.in_flight() == 0 {
        ctx.git
            .trim_pool(&ctx.worktree_pool(), crate::git::pool::IDLE)
            .await;
        let _ = std::fs::remove_dir_all(ctx.run_scratch(&state.id));
        if keep.is_empty() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// `abo gc`: removes what a killed git left behind (stale locks, interrupted worktree
/// registrations: described in the second list), then the kept worktrees and attempt branches of
/// runs that ended before `before`.
pub async fn gc(
    ctx: &Ctx,
    before: abo_core::ids::Timestamp,
) -> Result<(Vec<RunId>, Vec<String>), EngineError> {
    let (repaired, _) = ctx.git.repair().await;
    let repaired = repaired.iter().map(|r| r.describe()).collect();
    let mut cleaned = Vec::new();
    for r in ctx.store.runs().await? {
        let ended = matches!(r.status.as_str(), "finished" | "killed");
        if !ended || r.finished_at.is_none_or(|f| f > before) {
            continue;
        }
        let dir = ctx.run_worktrees(&r.id);
        let branches = ctx.git.branches(&format!("abo-attempt/{}/", r.id)).await?;
        if !dir.exists() && branches.is_empty() {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                ctx.git.remove_worktree(&e.path()).await?;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        for b in branches {
            ctx.git.delete_branch(&b).await?;
        }
        let _ = std::fs::remove_dir_all(ctx.run_scratch(&r.id));
        cleaned.push(r.id);
    }
    ctx.git.trim_pool(&ctx.worktree_pool(), 0).await;
    ctx.git.prune_worktrees().await?;
    Ok((cleaned, repaired))
}
