//! `abo worker`: claims attempt jobs from a shared store and executes them in its
//! own clone of the repository, each attempt in its worktree and sandbox, exactly as one machine
//! would. A start job takes a free slot and the attempt's lease; the attempt's later jobs come to
//! this worker only. Leases are heartbeaten; one this worker lost (reaped after a pause or a cut
//! connection, or ended by a kill) stops its attempt, and a result it sends late is refused by
//! the store under the lease's fencing token.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abo_core::decide::{Command, Effect};
use abo_core::event::GateStage;
use abo_core::ids::{AttemptId, RunId, TaskId};
use abo_core::spec::RunSpec;
use abo_store::{Job, JobKind, StoreError, WorkerRow};

use crate::context::Ctx;
use crate::effects::{self, RunPolicy};
use crate::shared::{Reply, Work, attempt_ref};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    /// Attempts at once.
    pub slots: u32,
    /// The git remote attempts start from and their commits are pushed to.
    pub remote: String,
    /// How long a lease lasts without a heartbeat.
    pub ttl: Duration,
}

/// Where the worker says what it does (claims, releases, refusals).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

type Key = (RunId, TaskId, u32);

/// An attempt this worker holds.
struct Held {
    token: i64,
    /// Jobs of the attempt still executing (aborted when the lease is lost), with whether each is
    /// still executing (a finished one is only sending its result, and is left to be refused).
    jobs: Vec<(tokio::task::JoinHandle<()>, Arc<AtomicBool>)>,
}

struct Worker {
    ctx: Arc<Ctx>,
    opts: Options,
    log: Log,
    held: Mutex<BTreeMap<Key, Held>>,
    runs: tokio::sync::Mutex<BTreeMap<RunId, Arc<(RunSpec, RunPolicy)>>>,
}

/// Works until `stop` resolves.
pub async fn work(
    ctx: Arc<Ctx>,
    opts: Options,
    log: Log,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    let now = ctx.now();
    ctx.store
        .register_worker(&WorkerRow {
            name: opts.name.clone(),
            host: crate::engine::hostname(),
            pid: std::process::id(),
            slots: opts.slots,
            started_at: now,
            heartbeat: now,
            claims: 0,
            done: 0,
            refused: 0,
            lost: 0,
            busy: 0,
        })
        .await?;
    let mut listener = ctx.store.listen(&[abo_store::JOBS]).await?;
    let w = Arc::new(Worker {
        ctx,
        opts,
        log,
        held: Mutex::default(),
        runs: tokio::sync::Mutex::default(),
    });
    (w.log)(&format!(
        "{} slot(s), store {}",
        w.opts.slots,
        w.ctx.store.url()
    ));
    tokio::pin!(stop);
    // Heartbeats have a task of their own, so that nothing the worker does delays them.
    let beat_every = w.opts.ttl / 3;
    let beats = {
        let w = Arc::clone(&w);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat_every).await;
                w.heartbeat().await;
            }
        })
    };
    loop {
        w.claim_all().await;
        tokio::select! {
            () = &mut stop => break,
            _ = listener.wait(Duration::from_secs(1)) => {}
        }
    }
    beats.abort();
    // What is still running stops; its leases expire and the control plane re-attempts it.
    let held = std::mem::take(&mut *w.held.lock().unwrap_or_else(|e| e.into_inner()));
    for (key, h) in held {
        w.stop_attempt(&key, h);
    }
    (w.log)("stopped");
    Ok(())
}

impl Worker {
    fn busy(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(usize::MAX)
    }

    async fn heartbeat(&self) {
        let now = self.ctx.now();
        let leases = match self
            .ctx
            .store
            .heartbeat_worker(&self.opts.name, now, self.opts.ttl)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                (self.log)(&format!("heartbeat failed: {e}"));
                return;
            }
        };
        let lost: Vec<(Key, Held)> = {
            let Ok(mut held) = self.held.lock() else {
                return;
            };
            let gone: Vec<Key> = held
                .iter()
                .filter(|(k, h)| {
                    !leases.iter().any(|l| {
                        l.run == k.0 && l.task == k.1 && l.attempt == k.2 && l.token == h.token
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter()
                .filter_map(|k| held.remove(&k).map(|h| (k, h)))
                .collect()
        };
        for (key, h) in lost {
            (self.log)(&format!(
                "lost the lease on {}/{}#{} (token {}): stopping it",
                key.0, key.1, key.2, h.token
            ));
            self.stop_attempt(&key, h);
        }
    }

    /// Stops an attempt's executing jobs and whatever they started.
    fn stop_attempt(&self, key: &Key, h: Held) {
        for (job, executing) in h.jobs {
            if executing.load(Ordering::SeqCst) {
                job.abort();
            }
        }
        let attempt = AttemptId::new(key.0.clone(), key.1.clone(), key.2);
        crate::process::kill_leftovers(&format!(
            "ABO_WORKTREE={}",
            self.ctx.worktree(&attempt).display()
        ));
    }

    async fn claim_all(self: &Arc<Self>) {
        loop {
            let free = self.busy() < self.opts.slots as usize;
            let job = match self
                .ctx
                .store
                .claim_job(&self.opts.name, free, self.ctx.now(), self.opts.ttl)
                .await
            {
                Ok(Some(j)) => j,
                Ok(None) => return,
                Err(e) => {
                    (self.log)(&format!("claiming failed: {e}"));
                    return;
                }
            };
            (self.log)(&format!(
                "claimed {} {}/{}#{} (job {}, token {})",
                job.kind.as_str(),
                job.run,
                job.task,
                job.attempt,
                job.id,
                job.token
            ));
            let key = (job.run.clone(), job.task.clone(), job.attempt);
            let executing = Arc::new(AtomicBool::new(true));
            let me = Arc::clone(self);
            let flag = Arc::clone(&executing);
            let kind = job.kind;
            let token = job.token;
            let handle = tokio::spawn(async move { me.execute(job, flag).await });
            if let Ok(mut held) = self.held.lock() {
                let h = held.entry(key).or_insert_with(|| Held {
                    token,
                    jobs: Vec::new(),
                });
                h.jobs.retain(|(j, _)| !j.is_finished());
                h.jobs.push((handle, executing));
                if kind == JobKind::Start {
                    h.token = token;
                }
            }
        }
    }

    async fn execute(self: Arc<Self>, job: Job, executing: Arc<AtomicBool>) {
        let reply = match self.run_of(&job.run).await {
            Ok(run) => self.reply(&run.0, &run.1, &job).await,
            Err(reason) => Reply::Failed { reason },
        };
        crate::shared::sync_artifacts(&self.ctx, &reply.artifacts(), true).await;
        executing.store(false, Ordering::SeqCst);
        let release = job.kind == JobKind::Cleanup;
        let text = serde_json::to_string(&reply).unwrap_or_default();
        let what = format!(
            "{} {}/{}#{}",
            job.kind.as_str(),
            job.run,
            job.task,
            job.attempt
        );
        // The store may be briefly out of reach: the result is sent until it is taken or refused.
        let mut tries = 0u32;
        let accepted = loop {
            match self
                .ctx
                .store
                .finish_job(&job, &self.opts.name, &text, release, self.ctx.now())
                .await
            {
                Ok(a) => break a,
                Err(e) => {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(10) {
                        (self.log)(&format!("sending the result of {what} failed: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let key = (job.run.clone(), job.task.clone(), job.attempt);
        if !accepted {
            (self.log)(&format!(
                "result of {what} refused: token {} no longer holds the attempt's lease",
                job.token
            ));
            if let Ok(mut held) = self.held.lock()
                && held.get(&key).is_some_and(|h| h.token == job.token)
            {
                held.remove(&key);
            }
            return;
        }
        if release {
            if let Ok(mut held) = self.held.lock() {
                held.remove(&key);
            }
            (self.log)(&format!(
                "released {}/{}#{}",
                job.run, job.task, job.attempt
            ));
        }
    }

    /// The run's spec and policy, read from its log once.
    async fn run_of(&self, run: &RunId) -> Result<Arc<(RunSpec, RunPolicy)>, String> {
        let mut runs = self.runs.lock().await;
        if let Some(r) = runs.get(run) {
            return Ok(Arc::clone(r));
        }
        let state = crate::engine::load(&self.ctx.store, run)
            .await
            .map_err(|e| format!("could not read run {run}: {e}"))?;
        let policy = RunPolicy::load(run, &state.spec)
            .map_err(|e| format!("could not load run {run}'s policy: {e}"))?;
        let r = Arc::new((state.spec, policy));
        runs.insert(run.clone(), Arc::clone(&r));
        Ok(r)
    }

    async fn reply(&self, spec: &RunSpec, policy: &RunPolicy, job: &Job) -> Reply {
        let ctx = &self.ctx;
        let attempt = AttemptId::new(job.run.clone(), job.task.clone(), job.attempt);
        let work: Work = match serde_json::from_str(&job.payload) {
            Ok(w) => w,
            Err(e) => {
                return Reply::Failed {
                    reason: format!("malformed job: {e}"),
                };
            }
        };
        let effect = match work {
            Work::Start {
                backend,
                feedback,
                reserved,
                base,
            } => {
                // The previous attempt's log, for its feedback, may have been made elsewhere.
                if let Some(log) = feedback.as_ref().and_then(|f| f.log.as_ref()) {
                    crate::shared::sync_artifacts(ctx, &[log], false).await;
                }
                // The run branch, as the control plane pushed it, at the head the attempt starts from.
                let refspec = format!("+refs/heads/{0}:refs/heads/{0}", spec.branch);
                if let Err(e) = ctx
                    .git
                    .run(&["fetch", "--quiet", "--no-tags", &self.opts.remote, &refspec])
                    .await
                {
                    return backend_failed(format!("could not fetch the run branch: {e}"));
                }
                let at = format!("refs/heads/{}", spec.branch);
                if let Err(e) = ctx.git.run(&["update-ref", &at, base.as_str()]).await {
                    return backend_failed(format!("the run branch lacks {base}: {e}"));
                }
                Effect::StartAttempt {
                    attempt,
                    backend,
                    feedback,
                    reserved,
                }
            }
            Work::Gate { gate } => Effect::RunGate {
                attempt,
                gate,
                stage: GateStage::Attempt,
                candidate: None,
            },
            Work::Policy => Effect::EvaluatePolicy { attempt },
            Work::Review { reviewer } => Effect::Review { attempt, reviewer },
            Work::Cleanup { keep } => Effect::Cleanup { attempt, keep },
            Work::Commit => return self.commit(spec, &attempt, job.token).await,
        };
        let done = effects::execute_here(ctx, spec, policy, effect).await;
        match done.command {
            Some(Command::BackendDone { outcome, .. }) => Reply::Backend {
                outcome,
                warnings: done.warnings,
            },
            Some(Command::GateDone { outcome, .. }) => Reply::Gate { outcome },
            Some(Command::PolicyDone { outcome, .. }) => Reply::Policy { outcome },
            Some(Command::ReviewDone {
                outcome,
                log,
                usage,
                cost_usd,
                cost_source,
                ..
            }) => Reply::Reviewed {
                outcome,
                log,
                usage,
                cost_usd,
                cost_source,
            },
            None if job.kind == JobKind::Cleanup => Reply::Cleaned,
            other => Reply::Failed {
                reason: format!("unexpected result {other:?}"),
            },
        }
    }

    /// Commits the attempt and pushes it to the ref of its fencing token.
    async fn commit(&self, spec: &RunSpec, attempt: &AttemptId, token: i64) -> Reply {
        let Some(task) = spec.tasks.iter().find(|t| t.id == attempt.task) else {
            return Reply::Failed {
                reason: "unknown task".into(),
            };
        };
        let commit = match effects::commit_attempt(&self.ctx, task, attempt).await {
            Ok(c) => c,
            Err(reason) => return Reply::Failed { reason },
        };
        let refname = attempt_ref(attempt, token);
        let push = format!("{commit}:{refname}");
        match self
            .ctx
            .git
            .run(&["push", "--quiet", "--force", &self.opts.remote, &push])
            .await
        {
            Ok(_) => Reply::Committed { commit, refname },
            Err(e) => Reply::Failed {
                reason: format!("could not push the attempt's commit: {e}"),
            },
        }
    }
}

fn backend_failed(reason: String) -> Reply {
    Reply::Backend {
        outcome: abo_core::decide::BackendOutcome {
            failure: Some(reason),
            ..Default::default()
        },
        warnings: Vec::new(),
    }
}
