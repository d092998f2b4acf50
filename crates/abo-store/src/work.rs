//! Work shared with `abo worker`s: the control plane posts each attempt-scoped
//! effect as a job; a worker claims a `start` job with `FOR UPDATE SKIP LOCKED` and with it the
//! attempt's lease, whose `token` (the start job's id) fences everything after: the attempt's later
//! jobs go to the lease's holder only, and a result is accepted only while the token still holds.
//! A lease not heartbeaten in time is reaped: its open jobs are lost, and the control plane
//! re-attempts the task. `LISTEN/NOTIFY` wakes whoever waits; SQLite polls.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use abo_core::ids::{RunId, TaskId, Timestamp};

use crate::{Dialect, LEASE_LOCK, Result, Store, Tx, u64_of};

/// Channels: events appended, jobs posted, job results in.
pub const EVENTS: &str = "abo_events";
pub const JOBS: &str = "abo_jobs";
pub const RESULTS: &str = "abo_results";

/// `pg_notify($1 channel, $2 payload)`, delivered when the transaction commits.
pub(crate) const NOTIFY: &str = "SELECT 1 FROM (SELECT pg_notify($1, $2)) AS n";

/// What a job asks of the worker holding its attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Create the worktree and run the backend (claimable by any worker with a free slot).
    Start,
    /// Run one gate in the attempt's worktree.
    Gate,
    /// Evaluate the policy on the attempt's change.
    Policy,
    /// Ask the reviewer about the attempt's change, read in its worktree.
    Review,
    /// Commit the attempt and push it for the control plane to land.
    Commit,
    /// Remove (or keep) the attempt's worktree; the lease ends with it.
    Cleanup,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Gate => "gate",
            Self::Policy => "policy",
            Self::Review => "review",
            Self::Commit => "commit",
            Self::Cleanup => "cleanup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Start,
            Self::Gate,
            Self::Policy,
            Self::Review,
            Self::Commit,
            Self::Cleanup,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A job a worker claimed: what to do, for which attempt, under which fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub run: RunId,
    pub task: TaskId,
    pub attempt: u32,
    pub kind: JobKind,
    /// The effect's details (JSON, the runtime's).
    pub payload: String,
    pub token: i64,
}

/// Where a posted job stands, as its poster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Ready,
    Claimed {
        worker: String,
    },
    /// The worker's result (JSON, the runtime's).
    Done {
        worker: String,
        result: String,
    },
    /// The attempt's lease ended before the job did: why.
    Lost {
        reason: String,
    },
}

/// Who runs an attempt, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptLease {
    pub run: RunId,
    pub task: TaskId,
    pub attempt: u32,
    pub worker: String,
    pub token: i64,
    pub claimed_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A worker as it registered, with what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerRow {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub slots: u32,
    pub started_at: Timestamp,
    pub heartbeat: Timestamp,
    pub claims: u64,
    pub done: u64,
    pub refused: u64,
    pub lost: u64,
    /// Attempts it holds now.
    pub busy: u64,
}

/// Wakes on notifications (Postgres) or after a short poll (SQLite).
pub struct Listener {
    pg: Option<sqlx::postgres::PgListener>,
}

impl Listener {
    /// Waits for a notification on the channels listened to, at most `timeout`; whether one came.
    /// A notification may be missed (a lost connection): callers look again after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        match &mut self.pg {
            Some(l) => match tokio::time::timeout(timeout, l.recv()).await {
                Ok(Ok(_)) => true,
                Ok(Err(_)) => {
                    // The connection dropped; the next `recv` reconnects.
                    tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
                    false
                }
                Err(_) => false,
            },
            None => {
                tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
                false
            }
        }
    }
}

const LEASE_COLUMNS: &str = "run, task, attempt, worker, token, claimed_at, expires_at";
const JOB_COLUMNS: &str = "id, run, task, attempt, kind, payload, token";

fn lease_row(r: &AnyRow) -> AttemptLease {
    AttemptLease {
        run: RunId::new(r.get::<String, _>(0)),
        task: TaskId::new(r.get::<String, _>(1)),
        attempt: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        worker: r.get(3),
        token: r.get(4),
        claimed_at: Timestamp(r.get(5)),
        expires_at: Timestamp(r.get(6)),
    }
}

fn job_row(r: &AnyRow) -> Option<Job> {
    Some(Job {
        id: r.get(0),
        run: RunId::new(r.get::<String, _>(1)),
        task: TaskId::new(r.get::<String, _>(2)),
        attempt: u32::try_from(r.get::<i64, _>(3)).unwrap_or(0),
        kind: JobKind::parse(&r.get::<String, _>(4))?,
        payload: r.get(5),
        token: r.get::<Option<i64>, _>(6).unwrap_or(0),
    })
}

impl Store {
    /// A write transaction: SQLite's write lock at once; on Postgres row locks do the rest.
    async fn begin_write(&self) -> Result<Tx> {
        match self.dialect {
            Dialect::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Dialect::Postgres => Ok(self.pool.begin().await?),
        }
    }

    /// `FOR UPDATE SKIP LOCKED` where the database has it (SQLite serialises writers instead).
    fn skip_locked(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    async fn notify(&self, tx: &mut Tx, channel: &str, payload: &str) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(NOTIFY)
                .bind(channel)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Listens on `channels` (Postgres); on SQLite the listener polls.
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener> {
        match self.dialect {
            Dialect::Sqlite => Ok(Listener { pg: None }),
            Dialect::Postgres => {
                let mut l = sqlx::postgres::PgListener::connect(&self.connect).await?;
                l.listen_all(channels.iter().copied()).await?;
                Ok(Listener { pg: Some(l) })
            }
        }
    }

    /// Posts a job for an attempt. A start job waits for any worker; any other goes to the holder
    /// of the attempt's lease, under its token. `None`: the attempt has no lease (its worker lost
    /// it), so the job cannot run.
    pub async fn post_job(
        &self,
        run: &RunId,
        task: &TaskId,
        attempt: u32,
        kind: JobKind,
        payload: &str,
        at: Timestamp,
    ) -> Result<Option<i64>> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let holder = if kind == JobKind::Start {
            None
        } else {
            let row = sqlx::query(
                "SELECT worker, token FROM attempt_leases WHERE run = $1 AND task = $2 AND attempt = $3",
            )
            .bind(run.as_str())
            .bind(task.as_str())
            .bind(i64::from(attempt))
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => Some((r.get::<String, _>(0), r.get::<i64, _>(1))),
                None => return Ok(None),
            }
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (run, task, attempt, kind, payload, state, worker, token, created_at)
             VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8) RETURNING id",
        )
        .bind(run.as_str())
        .bind(task.as_str())
        .bind(i64::from(attempt))
        .bind(kind.as_str())
        .bind(payload)
        .bind(holder.as_ref().map(|(w, _)| w.as_str()))
        .bind(holder.as_ref().map(|(_, t)| *t))
        .bind(at.0)
        .fetch_one(&mut *tx)
        .await?;
        let to = holder.map(|(w, _)| w).unwrap_or_default();
        self.notify(&mut tx, JOBS, &to).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Claims the next job for `worker`: first one of the attempts it holds; else, when
    /// `new_attempt`, the oldest start job no other worker has, taking its attempt's lease.
    pub async fn claim_job(
        &self,
        worker: &str,
        new_attempt: bool,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Job>> {
        let mut tx = self.begin_write().await?;
        let skip = self.skip_locked();
        let returning = format!(" RETURNING {JOB_COLUMNS}");
        let mine = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = 'claimed' WHERE id = (
               SELECT id FROM jobs WHERE state = 'ready' AND worker = $1 ORDER BY id LIMIT 1{skip}
             ){returning}"
        )))
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = mine {
            tx.commit().await?;
            return Ok(job_row(&r));
        }
        if !new_attempt {
            tx.commit().await?;
            return Ok(None);
        }
        let start = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = 'claimed', worker = $1, token = id WHERE id = (
               SELECT id FROM jobs WHERE state = 'ready' AND kind = 'start' ORDER BY id LIMIT 1{skip}
             ){returning}"
        )))
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = start.as_ref().and_then(job_row) else {
            tx.commit().await?;
            return Ok(None);
        };
        let expires = now.0 + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO attempt_leases (run, task, attempt, worker, token, claimed_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run, task, attempt) DO UPDATE SET worker = excluded.worker,
               token = excluded.token, claimed_at = excluded.claimed_at,
               expires_at = excluded.expires_at",
        )
        .bind(job.run.as_str())
        .bind(job.task.as_str())
        .bind(i64::from(job.attempt))
        .bind(worker)
        .bind(job.token)
        .bind(now.0)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET claims = claims + 1 WHERE name = $1")
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Records a job's result, if `worker` still holds the attempt under the job's token; with
    /// `release`, the attempt's lease ends too. Returns false (and counts a refusal) otherwise:
    /// the lease was reaped or passed on, and this late result must not count.
    pub async fn finish_job(
        &self,
        job: &Job,
        worker: &str,
        result: &str,
        release: bool,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT token FROM attempt_leases
             WHERE run = $1 AND task = $2 AND attempt = $3 AND worker = $4",
        )
        .bind(job.run.as_str())
        .bind(job.task.as_str())
        .bind(i64::from(job.attempt))
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let accepted = held == Some(job.token)
            && sqlx::query(
                "UPDATE jobs SET state = 'done', result = $1, finished_at = $2
                 WHERE id = $3 AND state = 'claimed' AND worker = $4 AND token = $5",
            )
            .bind(result)
            .bind(now.0)
            .bind(job.id)
            .bind(worker)
            .bind(job.token)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        let counter = if accepted { "done" } else { "refused" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE workers SET {counter} = {counter} + 1 WHERE name = $1"
        )))
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        if accepted {
            if release {
                sqlx::query(
                    "DELETE FROM attempt_leases WHERE run = $1 AND task = $2 AND attempt = $3",
                )
                .bind(job.run.as_str())
                .bind(job.task.as_str())
                .bind(i64::from(job.attempt))
                .execute(&mut *tx)
                .await?;
            }
            self.notify(&mut tx, RESULTS, &job.id.to_string()).await?;
        }
        tx.commit().await?;
        Ok(accepted)
    }

    /// Where a posted job stands.
    pub async fn job_state(&self, id: i64) -> Result<Option<JobState>> {
        let row = sqlx::query("SELECT state, worker, result FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| {
            let worker = r.get::<Option<String>, _>(1).unwrap_or_default();
            let result = r.get::<Option<String>, _>(2).unwrap_or_default();
            match r.get::<String, _>(0).as_str() {
                "ready" => JobState::Ready,
                "claimed" => JobState::Claimed { worker },
                "done" => JobState::Done { worker, result },
                _ => JobState::Lost { reason: result },
            }
        }))
    }

    /// Forgets a job whose outcome its poster has taken.
    pub async fn delete_job(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND state IN ('done', 'lost')")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Registers (or re-registers) a worker.
    pub async fn register_worker(&self, w: &WorkerRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (name, host, pid, slots, started_at, heartbeat)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
               slots = excluded.slots, started_at = excluded.started_at,
               heartbeat = excluded.heartbeat",
        )
        .bind(&w.name)
        .bind(&w.host)
        .bind(i64::from(w.pid))
        .bind(i64::from(w.slots))
        .bind(w.started_at.0)
        .bind(w.heartbeat.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The worker is alive: its attempt leases are extended to `now + ttl`. Returns the leases it
    /// still holds; one it thinks it holds and is not among them was lost.
    pub async fn heartbeat_worker(
        &self,
        worker: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Vec<AttemptLease>> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        sqlx::query("UPDATE workers SET heartbeat = $1 WHERE name = $2")
            .bind(now.0)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        let expires = now.0 + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE attempt_leases SET expires_at = $1 WHERE worker = $2 RETURNING {LEASE_COLUMNS}"
        )))
        .bind(expires)
        .bind(worker)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(lease_row).collect())
    }

    /// Reclaims every attempt lease that expired before `now`: its open jobs are lost, so whoever
    /// waits on them re-attempts the task. Returns the leases reaped.
    pub async fn reap(&self, now: Timestamp) -> Result<Vec<AttemptLease>> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM attempt_leases WHERE expires_at < $1 RETURNING {LEASE_COLUMNS}"
        )))
        .bind(now.0)
        .fetch_all(&mut *tx)
        .await?;
        let reaped: Vec<AttemptLease> = rows.iter().map(lease_row).collect();
        for l in &reaped {
            let why = format!(
                "worker {} stopped heartbeating: its lease on the attempt expired",
                l.worker
            );
            lose_jobs(&mut tx, &l.run, Some((&l.task, l.attempt)), &why, now).await?;
            sqlx::query("UPDATE workers SET lost = lost + 1 WHERE name = $1")
                .bind(&l.worker)
                .execute(&mut *tx)
                .await?;
        }
        if !reaped.is_empty() {
            self.notify(&mut tx, RESULTS, "").await?;
        }
        tx.commit().await?;
        Ok(reaped)
    }

    /// Ends the attempt leases of `run` (every one, or one attempt's) and loses their open jobs
    /// (the run was killed, or a new control plane took it over): workers holding them stop at
    /// their next heartbeat.
    pub async fn release_run(
        &self,
        run: &RunId,
        attempt: Option<(&TaskId, u32)>,
        reason: &str,
        now: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let (task, n) = attempt.map_or((None, 0), |(t, a)| (Some(t.as_str()), i64::from(a)));
        let n = sqlx::query(
            "DELETE FROM attempt_leases WHERE run = $1 AND ($2 IS NULL OR (task = $3 AND attempt = $4))",
        )
        .bind(run.as_str())
        .bind(task)
        .bind(task)
        .bind(n)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        lose_jobs(&mut tx, run, attempt, reason, now).await?;
        self.notify(&mut tx, RESULTS, "").await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Attempt leases, of one run or all, oldest first.
    pub async fn attempt_leases(&self, run: Option<&RunId>) -> Result<Vec<AttemptLease>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEASE_COLUMNS} FROM attempt_leases WHERE ($1 IS NULL OR run = $2)
             ORDER BY claimed_at, run, task"
        )))
        .bind(run.map(RunId::as_str))
        .bind(run.map(RunId::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(lease_row).collect())
    }

    /// Every registered worker, by name.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query(
            "SELECT w.name, w.host, w.pid, w.slots, w.started_at, w.heartbeat, w.claims, w.done,
                    w.refused, w.lost,
                    (SELECT COUNT(*) FROM attempt_leases l WHERE l.worker = w.name)
             FROM workers w ORDER BY w.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WorkerRow {
                name: r.get(0),
                host: r.get(1),
                pid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
                slots: u32::try_from(r.get::<i64, _>(3)).unwrap_or(0),
                started_at: Timestamp(r.get(4)),
                heartbeat: Timestamp(r.get(5)),
                claims: u64_of(r.get(6)),
                done: u64_of(r.get(7)),
                refused: u64_of(r.get(8)),
                lost: u64_of(r.get(9)),
                busy: u64_of(r.get(10)),
            })
            .collect())
    }

    /// Shares an artifact (content-addressed: storing it twice is once).
    pub async fn artifact_put(&self, id: &str, data: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO artifacts (id, data) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A shared artifact's bytes.
    pub async fn artifact_get(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT data FROM artifacts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Start jobs no worker has claimed yet.
    pub async fn queued_jobs(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'ready' AND kind = 'start'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64_of(n))
    }
}

/// Marks the open jobs of a run (or of one attempt) lost, with why.
async fn lose_jobs(
    tx: &mut Tx,
    run: &RunId,
    attempt: Option<(&TaskId, u32)>,
    why: &str,
    now: Timestamp,
) -> Result<()> {
    let (task, n) = attempt.map_or((None, None), |(t, a)| (Some(t.as_str()), Some(a)));
    sqlx::query(
        "UPDATE jobs SET state = 'lost', result = $1, finished_at = $2
         WHERE run = $3 AND state IN ('ready', 'claimed')
           AND ($4 IS NULL OR (task = $5 AND attempt = $6))",
    )
    .bind(why)
    .bind(now.0)
    .bind(run.as_str())
    .bind(task)
    .bind(task)
    .bind(n.map(i64::from).unwrap_or(0))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
