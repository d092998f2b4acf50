//! Executes a deployment (abo.yml's `deploy:`): takes the environment's lock in the store, checks
//! out the landed commit in a clean worktree of its own, runs `plan`, `canary`, the SLO check over
//! the canary's window, then `promote` or `rollback`, each command in its sandbox with the network
//! the environment declares. What autonomy and policy allow comes from `abo_core::deploy::flow`;
//! every step is an event (`deploy.*`), recorded before the next step starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abo_core::autonomy::Level;
use abo_core::deploy::{
    Bound, Check, Decider, DeployEvent, DeployNetwork, Environment, Observation, Sample, Step,
    Trigger, judge, observe,
};
use abo_core::event::{Event, EventBody};
use abo_core::ids::{CommitSha, RunId, Timestamp};
use abo_core::spec::SandboxSpec;
use abo_core::verdict::Verdict;
use abo_store::DeployLock;

use crate::context::Ctx;
use crate::git::GIT_ENV_REMOVE;
use crate::process::{self, Spec};
use crate::redact::Redactor;

/// Plan output shown with an approval: its last lines, at most this many bytes.
const PLAN_EXCERPT: usize = 4000;
/// How often a waiting deployment looks at the lock and for a person's decision.
const POLL: Duration = Duration::from_millis(200);

/// One deployment to execute.
#[derive(Clone, Debug)]
pub struct Request {
    pub deployment: String,
    pub environment: String,
    pub env: Environment,
    pub commit: CommitSha,
    pub trigger: Trigger,
    /// The run the events belong to: the merged run, or the deployment's own id.
    pub run: RunId,
    /// The `deploy` level of the profile (after overrides).
    pub level: Level,
    /// The policy's verdict on the deployment and its reasons.
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub sandbox: SandboxSpec,
    /// Variables whose values are secret (API keys named in the config).
    pub secret_vars: Vec<String>,
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    RolledBack {
        reason: String,
    },
    /// Stopped before any canary ran: the plan failed, a person rejected it, or no one decided.
    Abandoned {
        reason: String,
    },
    Denied {
        reasons: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deploy {environment}: {source}")]
    Store {
        environment: String,
        source: abo_store::StoreError,
    },
    #[error("deploy {environment}: {message}")]
    Setup {
        environment: String,
        message: String,
    },
}

/// A fresh deployment id: `deploy-ENV-<ms>-<pid>`, unique per process and time.
pub fn new_id(environment: &str, now: Timestamp) -> String {
    format!("deploy-{environment}-{}-{}", now.0, std::process::id())
}

struct Deployer<'a> {
    ctx: &'a Ctx,
    req: &'a Request,
    redact: Redactor,
    started: Instant,
    wt: PathBuf,
    scratch: PathBuf,
    lost: Arc<AtomicBool>,
}

/// Executes the deployment: waits for the environment's lock (taking over from a holder whose
/// process is gone or whose lease expired), then deploys. `on_event` sees every event recorded.
pub async fn deploy(
    ctx: &Ctx,
    req: &Request,
    on_event: &mut (dyn FnMut(&EventBody) + Send),
) -> Result<Outcome, DeployError> {
    let store_err = |source| DeployError::Store {
        environment: req.environment.clone(),
        source,
    };
    let Some(flow) = abo_core::deploy::flow(req.level, req.verdict) else {
        let ev = DeployEvent::Denied {
            deployment: req.deployment.clone(),
            environment: req.environment.clone(),
            reasons: req.reasons.clone(),
        };
        record(ctx, &req.run, ev, on_event)
            .await
            .map_err(store_err)?;
        return Ok(Outcome::Denied {
            reasons: req.reasons.clone(),
        });
    };
    let (lock, previous) = take_lock(ctx, req).await.map_err(store_err)?;
    let lost = Arc::new(AtomicBool::new(false));
    let beat = tokio::spawn(heartbeat(
        ctx.store.clone(),
        Arc::clone(&ctx.clock),
        lock.clone(),
        req.env.lock_ttl.0,
        Arc::clone(&lost),
    ));
    let scratch = ctx.root.join(".abo/tmp").join(&req.deployment);
    let d = Deployer {
        ctx,
        req,
        redact: Redactor::from_process_env(&req.secret_vars),
        started: Instant::now(),
        wt: ctx.root.join(".abo/worktrees").join(&req.deployment),
        scratch,
        lost,
    };
    let result = match d.prepare().await {
        Ok(()) => match previous {
            // A deployment that lost its abo mid-way may have left its canary live.
            Some(p) => match d.roll_back_orphan(&p, on_event).await {
                Ok(()) => d.run(flow, on_event).await,
                Err(e) => Err(e),
            },
            None => d.run(flow, on_event).await,
        },
        // Nothing ran: the reason is recorded, and the lock released.
        Err(DeployError::Setup { message, .. }) => d.abandon(message, on_event).await,
        Err(e) => Err(e),
    };
    beat.abort();
    let _ = ctx.git.remove_worktree(&d.wt).await;
    let _ = std::fs::remove_dir_all(&d.scratch);
    let released = ctx
        .store
        .release_deploy_lock(&req.environment, &req.deployment)
        .await;
    let out = result?;
    released.map_err(store_err)?;
    Ok(out)
}

/// Waits until this deployment holds the environment's lock; also returns the deployment it
/// took the lock over from (its process gone, or its lease expired), if any.
async fn take_lock(
    ctx: &Ctx,
    req: &Request,
) -> Result<(DeployLock, Option<String>), abo_store::StoreError> {
    let host = crate::engine::hostname();
    loop {
        let now = ctx.now();
        let lock = DeployLock {
            environment: req.environment.clone(),
            deployment: req.deployment.clone(),
            host: host.clone(),
            pid: std::process::id(),
            acquired: now,
            expires: Timestamp(now.0 + ms(req.env.lock_ttl.0)),
        };
        let current = ctx
            .store
            .deploy_locks()
            .await?
            .into_iter()
            .find(|l| l.environment == req.environment);
        // A holder on this host whose process is gone frees its lock at once.
        let dead = current
            .as_ref()
            .filter(|l| l.host == host && !process::alive(l.pid))
            .map(|l| l.deployment.clone());
        let stale = current
            .filter(|l| l.expires <= now || Some(&l.deployment) == dead.as_ref())
            .map(|l| l.deployment);
        if ctx
            .store
            .take_deploy_lock(&lock, now, dead.as_deref())
            .await?
            .is_none()
        {
            return Ok((lock, stale));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn heartbeat(
    store: abo_store::Store,
    clock: Arc<dyn crate::context::Clock>,
    lock: DeployLock,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let until = Timestamp(clock.now().0 + ms(ttl));
        match store
            .renew_deploy_lock(&lock.environment, &lock.deployment, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A store that does not answer for a moment: the next beat tries again.
            Err(_) => {}
        }
    }
}

async fn record(
    ctx: &Ctx,
    run: &RunId,
    ev: DeployEvent,
    on_event: &mut (dyn FnMut(&EventBody) + Send),
) -> Result<(), abo_store::StoreError> {
    let body = EventBody::Deploy(ev);
    ctx.store
        .append(&[Event {
            run: run.clone(),
            task: None,
            at: ctx.now(),
            body: body.clone(),
        }])
        .await?;
    on_event(&body);
    Ok(())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn ms_u(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A command's result: whether it passed and its output (redacted).
struct Ran {
    ok: bool,
    exit: Option<i32>,
    output: String,
    describe: String,
}

impl Ran {
    /// Why a step failed: how the command ended, and the last line it printed.
    fn failure(&self, step: &str) -> String {
        let last = self
            .output
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| {
                let cut: String = l.chars().take(200).collect();
                format!(": {cut}")
            })
            .unwrap_or_default();
        format!("{step} {}{last}", self.describe)
    }
}

impl Deployer<'_> {
    fn err(&self, message: impl Into<String>) -> DeployError {
        DeployError::Setup {
            environment: self.req.environment.clone(),
            message: message.into(),
        }
    }

    async fn emit(
        &self,
        ev: DeployEvent,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<(), DeployError> {
        record(self.ctx, &self.req.run, ev, on_event)
            .await
            .map_err(|source| DeployError::Store {
                environment: self.req.environment.clone(),
                source,
            })
    }

    /// The deployment's scratch directory and its clean worktree of the commit.
    async fn prepare(&self) -> Result<(), DeployError> {
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| self.err(format!("{}: {e}", self.scratch.display())))?;
        let _ = self.ctx.git.remove_worktree(&self.wt).await;
        self.ctx
            .git
            .add_detached_worktree(&self.wt, &self.req.commit)
            .await
            .map_err(|e| self.err(format!("checking out {}: {e}", self.req.commit)))
    }

    /// Rolls back the deployment whose lock this one took over, when it started and never ended
    /// (its abo was killed or lost the store): its canary may be live. Recorded as its own
    /// `deploy.rolled_back`, in its run.
    async fn roll_back_orphan(
        &self,
        orphan: &str,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<(), DeployError> {
        let store_err = |source| DeployError::Store {
            environment: self.req.environment.clone(),
            source,
        };
        let mut run = None;
        let mut ended = false;
        let mut after = 0;
        loop {
            let page = self
                .ctx
                .store
                .events(None, after, 10_000)
                .await
                .map_err(store_err)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                let EventBody::Deploy(d) = &e.event.body else {
                    continue;
                };
                if d.deployment() != orphan {
                    continue;
                }
                match d {
                    DeployEvent::Started { .. } => run = Some(e.event.run.clone()),
                    DeployEvent::Promoted { .. }
                    | DeployEvent::RolledBack { .. }
                    | DeployEvent::Abandoned { .. }
                    | DeployEvent::Denied { .. } => ended = true,
                    _ => {}
                }
            }
        }
        let Some(run) = run.filter(|_| !ended) else {
            return Ok(());
        };
        let t = Instant::now();
        let ran = self.command("rollback", &self.req.env.rollback).await;
        let mut reason = format!(
            "its abo stopped mid-deployment; rolled back by {} before it deploys",
            self.req.deployment
        );
        if !ran.ok {
            reason.push_str(&format!("; the rollback itself {}", ran.describe));
        }
        let ev = DeployEvent::RolledBack {
            deployment: orphan.to_owned(),
            environment: self.req.environment.clone(),
            reason,
            ok: ran.ok,
            duration_ms: ms_u(t.elapsed()),
            restore_ms: ms_u(t.elapsed()),
        };
        record(self.ctx, &run, ev, on_event)
            .await
            .map_err(store_err)
    }

    async fn run(
        &self,
        flow: abo_core::deploy::Flow,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<Outcome, DeployError> {
        let req = self.req;
        self.emit(
            DeployEvent::Started {
                deployment: req.deployment.clone(),
                environment: req.environment.clone(),
                commit: req.commit.clone(),
                trigger: req.trigger,
                level: req.level.name().to_owned(),
                verdict: req.verdict,
                start: flow.start,
                promote: flow.promote,
            },
            on_event,
        )
        .await?;
        let (plan, plan_log) = match &req.env.plan {
            None => (None, None),
            Some(cmd) => {
                let ran = self.command("plan", cmd).await;
                let log = self.ctx.artifacts.put(ran.output.as_bytes()).ok();
                if !ran.ok {
                    return self.abandon(ran.failure("plan"), on_event).await;
                }
                (Some(excerpt(&ran.output)), log)
            }
        };
        if flow.start == Decider::Person {
            let mut reasons = Vec::new();
            if req.level < Level::A4 {
                reasons.push(format!(
                    "deploy is at {}: a person approves each deployment (A4 runs the canary by itself)",
                    req.level.name()
                ));
            }
            reasons.extend(req.reasons.iter().cloned());
            if let Err(why) = self
                .approval(
                    Step::Start,
                    reasons,
                    plan.clone(),
                    plan_log.clone(),
                    on_event,
                )
                .await?
            {
                return self.abandon(why, on_event).await;
            }
        }
        let canary = self.command("canary", &req.env.canary).await;
        if !canary.ok {
            let failed_at = Instant::now();
            return self
                .rollback(canary.failure("canary"), failed_at, on_event)
                .await;
        }
        if let Some((reason, failed_at)) = self.watch(on_event).await? {
            return self.rollback(reason, failed_at, on_event).await;
        }
        if flow.promote == Decider::Person {
            let reasons = vec![format!(
                "deploy is at {}: promotion needs a person (A5 promotes by itself)",
                req.level.name()
            )];
            if let Err(why) = self
                .approval(Step::Promote, reasons, plan, plan_log, on_event)
                .await?
            {
                return self.rollback(why, Instant::now(), on_event).await;
            }
        }
        let promote = self.command("promote", &req.env.promote).await;
        if !promote.ok {
            return self
                .rollback(promote.failure("promote"), Instant::now(), on_event)
                .await;
        }
        self.emit(
            DeployEvent::Promoted {
                deployment: req.deployment.clone(),
                environment: req.environment.clone(),
                duration_ms: ms_u(self.started.elapsed()),
            },
            on_event,
        )
        .await?;
        Ok(Outcome::Promoted)
    }

    async fn abandon(
        &self,
        reason: String,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<Outcome, DeployError> {
        self.emit(
            DeployEvent::Abandoned {
                deployment: self.req.deployment.clone(),
                environment: self.req.environment.clone(),
                reason: reason.clone(),
            },
            on_event,
        )
        .await?;
        Ok(Outcome::Abandoned { reason })
    }

    async fn rollback(
        &self,
        reason: String,
        failed_at: Instant,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<Outcome, DeployError> {
        let t = Instant::now();
        let ran = self.command("rollback", &self.req.env.rollback).await;
        let duration = t.elapsed();
        let restore = failed_at.elapsed();
        let reason = if ran.ok {
            reason
        } else {
            format!("{reason}; the rollback itself {}", ran.describe)
        };
        self.emit(
            DeployEvent::RolledBack {
                deployment: self.req.deployment.clone(),
                environment: self.req.environment.clone(),
                reason: reason.clone(),
                ok: ran.ok,
                duration_ms: ms_u(duration),
                restore_ms: ms_u(restore),
            },
            on_event,
        )
        .await?;
        Ok(Outcome::RolledBack { reason })
    }

    /// Samples the check over the canary's window; the reason and the moment of the first
    /// unhealthy sample, or `None` when the window held.
    async fn watch(
        &self,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<Option<(String, Instant)>, DeployError> {
        let check = &self.req.env.check;
        let window = check.window();
        let of = window.samples();
        let start = Instant::now();
        let mut seen = Vec::new();
        for i in 0..of {
            let due = start + window.every.0 * i;
            tokio::time::sleep_until(due.into()).await;
            let (sample, bound) = self.sample(check).await;
            let j = judge(&sample, bound);
            let at = Instant::now();
            seen.push(j.healthy);
            self.emit(
                DeployEvent::Checked {
                    deployment: self.req.deployment.clone(),
                    environment: self.req.environment.clone(),
                    sample: i + 1,
                    of,
                    healthy: j.healthy,
                    value: j.value,
                    detail: self.redact.redact(&j.detail),
                },
                on_event,
            )
            .await?;
            if self.lost.load(Ordering::SeqCst) {
                return Ok(Some((
                    "the environment's lock was lost (its lease expired)".into(),
                    at,
                )));
            }
            match observe(window, &seen) {
                Observation::Broken => {
                    return Ok(Some((
                        format!("check sample {}/{of}: {}", i + 1, j.detail),
                        at,
                    )));
                }
                Observation::Held => return Ok(None),
                Observation::Watching => {}
            }
        }
        Ok(None)
    }

    async fn sample(&self, check: &Check) -> (Sample, Option<Bound>) {
        match check {
            Check::Command { run, .. } => {
                let ran = self.command("check", run).await;
                (Sample::Exit(ran.exit), None)
            }
            Check::Prometheus {
                url, query, bound, ..
            } => {
                let timeout = check.window().every.0.max(Duration::from_secs(1));
                (
                    prometheus_sample(self.ctx.http(), url, query, timeout).await,
                    Some(*bound),
                )
            }
        }
    }

    /// Records the request and waits for a person's decision: `Ok(Ok(()))` approved,
    /// `Ok(Err(why))` rejected or not decided in time.
    async fn approval(
        &self,
        step: Step,
        reasons: Vec<String>,
        plan: Option<String>,
        plan_log: Option<abo_core::ids::ArtifactId>,
        on_event: &mut (dyn FnMut(&EventBody) + Send),
    ) -> Result<Result<(), String>, DeployError> {
        let after = self
            .ctx
            .store
            .last_seq()
            .await
            .map_err(|source| DeployError::Store {
                environment: self.req.environment.clone(),
                source,
            })?;
        self.emit(
            DeployEvent::ApprovalRequested {
                deployment: self.req.deployment.clone(),
                environment: self.req.environment.clone(),
                step,
                reasons: reasons.iter().map(|r| self.redact.redact(r)).collect(),
                plan,
                plan_log,
            },
            on_event,
        )
        .await?;
        let deadline = Instant::now() + self.req.env.approval_timeout.0;
        let mut seen = after;
        while Instant::now() < deadline {
            let events = self
                .ctx
                .store
                .events(Some(&self.req.run), seen, 1000)
                .await
                .map_err(|source| DeployError::Store {
                    environment: self.req.environment.clone(),
                    source,
                })?;
            for e in &events {
                seen = e.seq;
                match &e.event.body {
                    EventBody::Deploy(DeployEvent::Approved {
                        deployment,
                        step: s,
                        ..
                    }) if *deployment == self.req.deployment && *s == step => {
                        on_event(&e.event.body);
                        return Ok(Ok(()));
                    }
                    EventBody::Deploy(DeployEvent::Rejected {
                        deployment,
                        step: s,
                        reason,
                    }) if *deployment == self.req.deployment && *s == step => {
                        on_event(&e.event.body);
                        return Ok(Err(format!("rejected: {reason}")));
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Err(format!(
            "no one decided within deploy.{}.approval_timeout ({})",
            self.req.environment, self.req.env.approval_timeout
        )))
    }

    /// Runs one of the environment's commands in the deployment's worktree and sandbox.
    async fn command(&self, step: &str, script: &str) -> Ran {
        let log = self.scratch.join(format!("{step}.log"));
        let _ = std::fs::remove_file(&log);
        let extra = vec![
            ("ABO_DEPLOY_ENV".to_owned(), self.req.environment.clone()),
            ("ABO_DEPLOYMENT".to_owned(), self.req.deployment.clone()),
            ("ABO_DEPLOY_STEP".to_owned(), step.to_owned()),
            ("ABO_COMMIT".to_owned(), self.req.commit.to_string()),
            ("ABO_RUN_ID".to_owned(), self.req.run.to_string()),
        ];
        let mut spec = Spec::shell(script, &self.wt);
        spec.env = extra.clone();
        spec.env_remove = GIT_ENV_REMOVE.iter().map(|v| (*v).to_owned()).collect();
        spec.timeout = Some(self.req.env.timeout.0.max(Duration::from_millis(1)));
        spec.log = Some(log.clone());
        let sandbox = SandboxSpec {
            gate_network: self.req.env.network == DeployNetwork::Host,
            ..self.req.sandbox.clone()
        };
        match crate::sandbox::wrap(
            self.ctx,
            &sandbox,
            crate::sandbox::Role::Command,
            &self.wt,
            &self.scratch,
            step,
            extra,
        ) {
            Ok(sb) => spec.sandbox = sb,
            Err(e) => {
                return Ran {
                    ok: false,
                    exit: None,
                    output: String::new(),
                    describe: format!("could not be sandboxed: {e}"),
                };
            }
        }
        let ran = match process::run(&spec, &self.ctx.groups).await {
            Ok(o) => Ran {
                ok: o.success(),
                exit: o.exit,
                output: String::new(),
                describe: o.describe(spec.timeout),
            },
            Err(e) => Ran {
                ok: false,
                exit: None,
                output: String::new(),
                describe: format!("could not start: {e}"),
            },
        };
        let output = crate::artifacts::read_log(&log);
        Ran {
            output: self.redact.redact(&output),
            ..ran
        }
    }
}

/// The last part of a plan's output, cut at a line.
fn excerpt(text: &str) -> String {
    if text.len() <= PLAN_EXCERPT {
        return text.to_owned();
    }
    let mut start = text.len() - PLAN_EXCERPT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = text[start..].find('\n').map_or(start, |i| start + i + 1);
    format!("[...]\n{}", &text[cut..])
}

/// One instant query against the Prometheus HTTP API (`GET /api/v1/query`): the value of its
/// first series, no data, or why Prometheus could not answer.
pub async fn prometheus_sample(
    http: &reqwest::Client,
    url: &str,
    query: &str,
    timeout: Duration,
) -> Sample {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let resp = match http
        .get(&endpoint)
        .query(&[("query", query)])
        .timeout(timeout)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Sample::Unreachable(without_url(&e)),
    };
    let status = resp.status();
    let body: serde_json::Value = match resp.json().await {
        Ok(b) => b,
        Err(e) => return Sample::Unreachable(format!("HTTP {status}: {}", without_url(&e))),
    };
    if body["status"] != "success" {
        return Sample::Unreachable(format!(
            "HTTP {status}: {} {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("")
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .and_then(|r| r.first())
            .map(|s| &s["value"][1]),
        Some("scalar") => Some(&data["result"][1]),
        _ => None,
    };
    match value.and_then(|v| v.as_str()) {
        None => Sample::NoData,
        Some(v) => match v.parse::<f64>() {
            Ok(f) => Sample::Value(f),
            Err(_) => Sample::Unreachable(format!("unreadable value `{v}`")),
        },
    }
}

/// A reqwest error's text without the URL (it may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "the query");
    }
    if e.is_connect() {
        return format!("cannot connect ({s})");
    }
    if e.is_timeout() {
        return format!("timed out ({s})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_excerpts_keep_the_end() {
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(&text);
        assert!(e.starts_with("[...]\nline "));
        assert!(e.ends_with("line 1999\n"));
        assert!(e.len() <= PLAN_EXCERPT + 6);
        assert_eq!(excerpt("short\n"), "short\n");
    }

    #[test]
    fn ids_name_their_environment() {
        assert!(new_id("prod", Timestamp(5)).starts_with("deploy-prod-5-"));
    }
}
