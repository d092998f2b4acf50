//! abo's store: the append-only event log and its projections (runs, tasks), run leases, control
//! requests, and the work shared with `abo worker`s. SQLite (WAL) on one machine, PostgreSQL when
//! many share it; the same SQL serves both through sqlx's `Any` driver, with the few
//! differences (locking, migrations) in [`Dialect`]. The only crate that speaks SQL.
//!
//! Every append is one transaction: the events get gap-free, strictly increasing `seq` numbers and
//! the projections are updated by [`project::Fold`], the same fold [`Store::rebuild_projections`]
//! replays the whole log through.

mod batch;
mod deploy_lock;
mod glance;
mod knowledge;
mod pages;
mod project;
mod schema;
mod work;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use abo_core::event::{Event, EventBody, StoredEvent};
use abo_core::ids::{GateName, RunId, TaskId, Timestamp};

use batch::{Arg, Batch};
use project::Fold;

pub use deploy_lock::DeployLock;
pub use glance::AlertRow;
pub use knowledge::{KnowledgeBlob, KnowledgeDoc};
pub use pages::SpendRow;
pub use work::{AttemptLease, EVENTS, JOBS, Job, JobKind, JobState, Listener, RESULTS, WorkerRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("unsupported store `{0}`: this abo reads `sqlite:PATH` and `postgres://...`")]
    Unsupported(String),
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: event {seq} ({kind}) has malformed data: {source}")]
    Corrupt {
        seq: u64,
        kind: String,
        source: serde_json::Error,
    },
    #[error(
        "store: the database was written by a newer abo (schema {found}, this abo knows {known})"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("run {0}: this process no longer holds the run's lease (another one took it over)")]
    LeaseLost(RunId),
}

impl StoreError {
    /// Whether trying again may succeed (the database was busy, locked or unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => {
                let m = e.message();
                m.contains("locked") || m.contains("busy")
            }
            Self::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                true
            }
            _ => false,
        }
    }
}

/// Which SQL database the store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Takes a Postgres transaction-scoped advisory lock (`$1`: its key), serialising writers that
/// must not interleave, as SQLite's `BEGIN IMMEDIATE` does.
pub(crate) const ADVISORY_LOCK: &str = "SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l";

/// Events per batch: their rows and the rows they touch stay within every database's limit on
/// parameters (at most 6 + 10 + 8 + 11 an event, under SQLite's 32,766).
const APPEND_CHUNK: usize = 500;

/// Advisory lock keys: appends (gap-free `seq`), run leases.
const APPEND_LOCK: i64 = 0x0ab0_0002;
const LEASE_LOCK: i64 = 0x0ab0_0003;

macro_rules! run_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, title, status, branch, base, base_branch, profile, created_at, started_at,
                    finished_at, reason, spent_usd, spent_tokens, last_seq, pull_request FROM runs ",
            $rest
        )
    };
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;
pub(crate) type Tx = Transaction<'static, Any>;

/// A store URL with any password replaced, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

pub(crate) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The store: one event log shared by every run of a repository.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// The URL it was opened with (its password redacted).
    url: String,
    /// The URL to connect with (for listeners).
    connect: String,
}

/// A run as projected from its events.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: RunId,
    pub title: String,
    pub status: String,
    pub branch: String,
    pub base: String,
    pub base_branch: Option<String>,
    pub profile: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub reason: Option<String>,
    pub spent_usd: f64,
    pub spent_tokens: u64,
    pub last_seq: u64,
    /// The pull (merge) request the run branch was offered as.
    pub pull_request: Option<String>,
}

/// A task as projected from its events.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub run: RunId,
    pub id: TaskId,
    pub position: i64,
    pub title: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub backend: Option<String>,
    pub commit: Option<String>,
    pub reason: Option<String>,
    pub cost_usd: f64,
    pub tokens: u64,
    pub kept_worktrees: Vec<String>,
}

/// A decision waiting for a person (or taken).
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRow {
    pub id: String,
    pub run: RunId,
    pub task: TaskId,
    pub action: String,
    pub reasons: Vec<String>,
    pub created_at: Timestamp,
    pub status: String,
}

/// A test seen flaky: its gate failed, then passed on the same tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakyTest {
    pub gate: String,
    pub test: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
}

/// What a baseline's measurements are valid for: one gate, as configured, on one tree of one
/// repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BaselineKey {
    /// The repository's root commit (the same in every clone of it).
    pub repo: String,
    /// The tree's id.
    pub tree: String,
    pub gate: GateName,
    /// A hash of the gate's command and settings.
    pub config: String,
}

/// An API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

fn token_row(r: &AnyRow) -> TokenRow {
    TokenRow {
        id: r.get(0),
        name: r.get(1),
        role: r.get(2),
        created_at: Timestamp(r.get(3)),
        revoked_at: r.get::<Option<i64>, _>(4).map(Timestamp),
    }
}

/// Who is executing a run, and when it last said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub host: String,
    pub pid: u32,
    pub heartbeat: Timestamp,
}

/// A request from another process to the one executing a run (`abo pause`, `abo kill`, `abo retry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub run: RunId,
    pub kind: String,
    pub arg: String,
}

impl Store {
    /// Opens (creating if needed) the store at `url`: `sqlite:PATH` (PATH relative to `base_dir`)
    /// or `postgres://USER@HOST:PORT/DB`; migrations are applied first.
    pub async fn open(url: &str, base_dir: &Path) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let open_err = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let (dialect, connect, pool) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let full = base_dir.join(path);
            if let Some(dir) = full.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let encoded = full
                .to_string_lossy()
                .replace('%', "%25")
                .replace('?', "%3F")
                .replace('#', "%23");
            let connect = format!("sqlite://{encoded}?mode=rwc");
            let pool = AnyPoolOptions::new()
                .max_connections(4)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // NORMAL in WAL mode survives any process crash; only a power loss may
                        // drop the last commits.
                        // Statement journals (made for each write in a transaction) stay in
                        // memory: as files, creating them dominated an append's time.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;
                             PRAGMA temp_store = MEMORY;",
                        )
                        .execute(conn)
                        .await?;
                        Ok(())
                    })
                })
                .connect(&connect)
                .await
                .map_err(open_err)?;
            (Dialect::Sqlite, connect, pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(open_err)?;
            (Dialect::Postgres, url.to_owned(), pool)
        } else {
            return Err(StoreError::Unsupported(shown));
        };
        schema::migrate(&pool, dialect).await?;
        Ok(Self {
            pool,
            dialect,
            url: shown,
            connect,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL the store was opened with, its password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A write transaction that no other writer holding `key` interleaves with.
    pub(crate) async fn begin_locked(&self, key: i64) -> Result<Tx> {
        match self.dialect {
            Dialect::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query(ADVISORY_LOCK)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Appends events in one transaction, updating the projections; returns them with their `seq`.
    pub async fn append(&self, events: &[Event]) -> Result<Vec<StoredEvent>> {
        self.append_as(events, None).await
    }

    /// Appends events as the holder of a run's lease: when `holder` no longer holds it (another
    /// process took the run over), nothing is appended and the error says so.
    pub async fn append_as(
        &self,
        events: &[Event],
        holder: Option<(&RunId, &Lease)>,
    ) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_locked(APPEND_LOCK).await?;
        // One read: the last seq and, for a holder, whether it still holds the run's lease.
        let (last, held): (i64, i64) = match holder {
            Some((run, lease)) => {
                sqlx::query_as(
                    "SELECT COALESCE(MAX(seq), 0),
                        (SELECT COUNT(*) FROM leases WHERE run = $1 AND host = $2 AND pid = $3)
                 FROM events",
                )
                .bind(run.as_str())
                .bind(&lease.host)
                .bind(i64::from(lease.pid))
                .fetch_one(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_as("SELECT COALESCE(MAX(seq), 0), 1 FROM events")
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        if let (Some((run, _)), 0) = (holder, held) {
            return Err(StoreError::LeaseLost(run.clone()));
        }
        let out: Vec<StoredEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| StoredEvent {
                seq: u64_of(last) + i as u64 + 1,
                event: e.clone(),
            })
            .collect();
        // Each chunk's events and their folded projections go in one batch: one round-trip.
        let chunks = out.chunks(APPEND_CHUNK);
        let n = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            let mut batch = Batch::default();
            batch.part(
                "ev",
                "seq, ts, run, task, kind, data",
                6,
                chunk
                    .iter()
                    .flat_map(|e| {
                        [
                            Arg::from(i64_of(e.seq)),
                            e.event.at.0.into(),
                            e.event.run.as_str().into(),
                            e.event.task.as_ref().map(TaskId::as_str).into(),
                            e.event.body.kind().into(),
                            e.event.body.data().to_string().into(),
                        ]
                    })
                    .collect(),
                "INSERT INTO events (seq, ts, run, task, kind, data)
                 SELECT seq, ts, run, task, kind, data FROM ev",
            );
            let mut fold = Fold::new(self.dialect);
            for e in chunk {
                fold.add(&mut tx, e).await?;
            }
            fold.write(&mut batch);
            if self.dialect == Dialect::Postgres && i + 1 == n {
                // Watchers (the dashboard, `abo status --follow`, other control planes) wake on
                // commit. Only a number is formatted into the statement.
                let seq = out.last().map_or(0, |e| i64_of(e.seq));
                batch.last(format!(
                    "SELECT 1 FROM (SELECT pg_notify('{}', '{seq}')) AS n",
                    work::EVENTS
                ));
            }
            batch.execute(&mut tx, self.dialect).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Events after `after`, optionally of one run, in order, at most `limit`.
    pub async fn events(
        &self,
        run: Option<&RunId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE seq > $1 AND ($2 IS NULL OR run = $3) ORDER BY seq LIMIT $4",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(run.map(RunId::as_str))
        .bind(run.map(RunId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    /// Every event of one run, in order.
    pub async fn run_events(&self, run: &RunId) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.events(Some(run), after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page);
        }
        Ok(out)
    }

    /// The highest `seq` in the store (0 when empty).
    pub async fn last_seq(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn runs(&self) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(run_select!("ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(decode_run).collect())
    }

    pub async fn run(&self, id: &RunId) -> Result<Option<RunRow>> {
        let row = sqlx::query(run_select!("WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(decode_run))
    }

    /// The most recently created run.
    pub async fn latest_run(&self) -> Result<Option<RunRow>> {
        Ok(self.runs().await?.into_iter().next_back())
    }

    pub async fn tasks(&self, run: &RunId) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(
            "SELECT run, id, position, title, type, status, attempts, backend, commit_sha, reason,
                    cost_usd, tokens, kept_worktrees
             FROM tasks WHERE run = $1 ORDER BY position",
        )
        .bind(run.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode_task).collect())
    }

    /// Runs that contain a task with this id, most recent last.
    pub async fn runs_with_task(&self, task: &TaskId) -> Result<Vec<RunId>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT run FROM tasks WHERE id = $1 ORDER BY run")
                .bind(task.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(RunId::new).collect())
    }

    /// Approvals waiting for a decision, oldest first.
    pub async fn pending_approvals(&self) -> Result<Vec<ApprovalRow>> {
        let rows = sqlx::query(
            "SELECT id, run, task, action, reasons, created_at, status FROM approvals
             WHERE status = 'pending' ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ApprovalRow {
                id: r.get(0),
                run: RunId::new(r.get::<String, _>(1)),
                task: TaskId::new(r.get::<String, _>(2)),
                action: r.get(3),
                reasons: serde_json::from_str(&r.get::<String, _>(4)).unwrap_or_default(),
                created_at: Timestamp(r.get(5)),
                status: r.get(6),
            })
            .collect())
    }

    /// Drops the projections and rebuilds them from the event log.
    pub async fn rebuild_projections(&self) -> Result<()> {
        let mut tx = self.begin_locked(APPEND_LOCK).await?;
        sqlx::query("DELETE FROM tasks").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM approvals")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM runs").execute(&mut *tx).await?;
        for t in [
            "spend",
            "review_spend",
            "alerts",
            "router_stats",
            "flaky_tests",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}")))
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query("SELECT seq, ts, run, task, kind, data FROM events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        let replayed = rows.iter().map(decode_event).collect::<Result<Vec<_>>>()?;
        for chunk in replayed.chunks(APPEND_CHUNK) {
            let mut fold = Fold::new(self.dialect);
            for e in chunk {
                fold.add(&mut tx, e).await?;
            }
            let mut batch = Batch::default();
            fold.write(&mut batch);
            batch.execute(&mut tx, self.dialect).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The projections as text, one row a line, for comparing a rebuild with the live tables.
    pub async fn dump_projections(&self) -> Result<String> {
        let mut out = String::new();
        for r in self.runs().await? {
            out.push_str(&format!("{r:?}\n"));
            for t in self.tasks(&r.id).await? {
                out.push_str(&format!("  {t:?}\n"));
            }
        }
        for a in self.pending_approvals().await? {
            out.push_str(&format!("{a:?}\n"));
        }
        out.push_str(&format!("{:?}\n", self.router_stats().await?));
        for f in self.flaky_tests().await? {
            out.push_str(&format!("{f:?}\n"));
        }
        let spend = sqlx::query("SELECT run, task, attempt, backend, reserved_usd, reserved_tokens, charged_usd, charged_tokens, charged_at FROM spend ORDER BY run, task, attempt")
            .fetch_all(&self.pool)
            .await?;
        let reviews = sqlx::query("SELECT run, task, attempt, reviewer, reserved_usd, reserved_tokens, charged_usd, charged_tokens, charged_at FROM review_spend ORDER BY run, task, attempt")
            .fetch_all(&self.pool)
            .await?;
        for r in reviews {
            out.push_str(&format!(
                "review_spend {} {} {} {} {} {} {:?} {:?} {:?}\n",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<String, _>(3),
                r.get::<f64, _>(4),
                r.get::<i64, _>(5),
                r.get::<Option<f64>, _>(6),
                r.get::<Option<i64>, _>(7),
                r.get::<Option<i64>, _>(8),
            ));
        }
        for r in spend {
            out.push_str(&format!(
                "spend {} {} {} {} {} {} {:?} {:?} {:?}\n",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<String, _>(3),
                r.get::<f64, _>(4),
                r.get::<i64, _>(5),
                r.get::<Option<f64>, _>(6),
                r.get::<Option<i64>, _>(7),
                r.get::<Option<i64>, _>(8),
            ));
        }
        Ok(out)
    }

    /// What runs other than `except` charged since `since`, plus what running ones hold reserved:
    /// the share of a daily or weekly cap this run cannot use.
    pub async fn window_spend(&self, except: &RunId, since: Timestamp) -> Result<(f64, u64)> {
        // Attempts' spend and reviews' spend, each table alike.
        let mut total = (0.0, 0);
        for table in ["spend", "review_spend"] {
            // `table` is one of the two names above, never input.
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT
               COALESCE((SELECT SUM(charged_usd) FROM {table} WHERE run != $1 AND charged_at >= $2), 0.0)
             + COALESCE((SELECT SUM(s.reserved_usd) FROM {table} s JOIN runs r ON r.id = s.run
                         WHERE s.run != $1 AND s.charged_at IS NULL AND r.status = 'running'), 0.0),
               CAST(COALESCE((SELECT SUM(charged_tokens) FROM {table} WHERE run != $1 AND charged_at >= $2), 0)
             + COALESCE((SELECT SUM(s.reserved_tokens) FROM {table} s JOIN runs r ON r.id = s.run
                         WHERE s.run != $1 AND s.charged_at IS NULL AND r.status = 'running'), 0) AS BIGINT)"
            )))
            .bind(except.as_str())
            .bind(since.0)
            .fetch_one(&self.pool)
            .await?;
            total.0 += row.get::<f64, _>(0);
            total.1 += u64::try_from(row.get::<i64, _>(1)).unwrap_or(0);
        }
        Ok(total)
    }

    /// The keys of budget alerts sent since `since`, by any run.
    pub async fn alerts_since(&self, since: Timestamp) -> Result<BTreeSet<String>> {
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM alerts WHERE at >= $1")
            .bind(since.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// The learned router's memory: every (task type, backend) arm.
    pub async fn router_stats(&self) -> Result<abo_core::route::Stats> {
        let rows = sqlx::query(
            "SELECT task_type, backend, landed, failed, attempts, cost_usd, duration_ms FROM router_stats",
        )
        .fetch_all(&self.pool)
        .await?;
        let n = |r: &AnyRow, i: usize| u64::try_from(r.get::<i64, _>(i)).unwrap_or(0);
        Ok(rows
            .iter()
            .map(|r| {
                let arm = abo_core::route::Arm {
                    landed: n(r, 2),
                    failed: n(r, 3),
                    attempts: n(r, 4),
                    cost_usd: r.get(5),
                    duration_ms: n(r, 6),
                };
                ((r.get(0), r.get(1)), arm)
            })
            .collect())
    }

    /// The wall time (ms, `task.started` to `task.landed`) of every landed attempt in the store,
    /// by task type: what `hedge.after: p90` is computed from.
    pub async fn landed_durations(&self) -> Result<BTreeMap<String, Vec<u64>>> {
        let rows = sqlx::query(
            "SELECT e.seq, e.ts, e.run, e.task, e.kind, e.data, t.type FROM events e
             JOIN tasks t ON t.run = e.run AND t.id = e.task
             WHERE e.kind IN ('task.started', 'task.landed') ORDER BY e.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut started: BTreeMap<(String, String, u32), i64> = BTreeMap::new();
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for r in &rows {
            let e = decode_event(r)?;
            let kind: String = r.get(6);
            let Some(task) = &e.event.task else { continue };
            let key = |attempt: u32| (e.event.run.to_string(), task.to_string(), attempt);
            match &e.event.body {
                EventBody::TaskStarted { attempt, .. } => {
                    started.insert(key(*attempt), e.event.at.0);
                }
                EventBody::TaskLanded { attempt, .. } => {
                    if let Some(at) = started.get(&key(*attempt)) {
                        let ms = u64::try_from(e.event.at.0 - at).unwrap_or(0);
                        out.entry(kind).or_default().push(ms);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The tests seen flaky, most often first (then most recently seen).
    pub async fn flaky_tests(&self) -> Result<Vec<FlakyTest>> {
        let rows = sqlx::query(
            "SELECT gate, test, first_seen, last_seen, count FROM flaky_tests
             ORDER BY count DESC, last_seen DESC, gate, test",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| FlakyTest {
                gate: r.get(0),
                test: r.get(1),
                first_seen: Timestamp(r.get(2)),
                last_seen: Timestamp(r.get(3)),
                count: u64::try_from(r.get::<i64, _>(4)).unwrap_or(0),
            })
            .collect())
    }

    /// A cached attempt result: the diff's artifact and the attempt it came from.
    pub async fn cache_get(&self, key: &str, at: Timestamp) -> Result<Option<(String, String)>> {
        let row =
            sqlx::query("UPDATE cache SET used_at = $1 WHERE key = $2 RETURNING diff, source")
                .bind(at.0)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub async fn cache_put(
        &self,
        key: &str,
        diff: &str,
        source: &str,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO cache (key, diff, source, created_at, used_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET diff = excluded.diff, source = excluded.source,
               created_at = excluded.created_at, used_at = excluded.used_at",
        )
        .bind(key)
        .bind(diff)
        .bind(source)
        .bind(at.0)
        .bind(at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A baseline's measurements (JSON, as the runtime wrote them), if its gate ran on that tree;
    /// `at` marks it used.
    pub async fn baseline(&self, key: &BaselineKey, at: Timestamp) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE baselines SET used_at = $1
             WHERE repo = $2 AND tree = $3 AND gate = $4 AND config = $5
             RETURNING measured",
        )
        .bind(at.0)
        .bind(&key.repo)
        .bind(&key.tree)
        .bind(key.gate.as_str())
        .bind(&key.config)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a baseline's measurements. The first one recorded stays: two processes that
    /// measured one key at once measured the same tree with the same gate.
    pub async fn put_baseline(
        &self,
        key: &BaselineKey,
        measured: &str,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO baselines (repo, tree, gate, config, measured, created_at, used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (repo, tree, gate, config) DO NOTHING",
        )
        .bind(&key.repo)
        .bind(&key.tree)
        .bind(key.gate.as_str())
        .bind(&key.config)
        .bind(measured)
        .bind(at.0)
        .bind(at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes baselines not used since `before`; returns how many.
    pub async fn baseline_prune(&self, before: Timestamp) -> Result<u64> {
        let r = sqlx::query("DELETE FROM baselines WHERE used_at < $1")
            .bind(before.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes cache entries not used since `before`; returns how many.
    pub async fn cache_prune(&self, before: Timestamp) -> Result<u64> {
        let r = sqlx::query("DELETE FROM cache WHERE used_at < $1")
            .bind(before.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Records an API token by the SHA-256 of its secret (the secret itself is never stored).
    pub async fn token_create(&self, t: &TokenRow, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(hash)
        .bind(t.created_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(token_row).collect())
    }

    /// The live (not revoked) token with this hash.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at FROM tokens WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(token_row))
    }

    /// Revokes a token by id or name; whether one was live.
    pub async fn token_revoke(&self, id_or_name: &str, at: Timestamp) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(id_or_name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Who holds the run's lease, if anyone.
    pub async fn lease(&self, run: &RunId) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT host, pid, heartbeat FROM leases WHERE run = $1")
            .bind(run.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Lease {
            host: r.get(0),
            pid: u32::try_from(r.get::<i64, _>(1)).unwrap_or(0),
            heartbeat: Timestamp(r.get(2)),
        }))
    }

    /// Takes the run's lease for `owner` if it is free or still held by `expected` (a holder the
    /// caller found dead). Returns false when someone else holds it.
    pub async fn take_lease(
        &self,
        run: &RunId,
        owner: &Lease,
        expected: Option<&Lease>,
    ) -> Result<bool> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let current = sqlx::query("SELECT host, pid FROM leases WHERE run = $1")
            .bind(run.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)));
        let free = match (&current, expected) {
            (None, _) => true,
            (Some((h, p)), Some(e)) => *h == e.host && *p == i64::from(e.pid),
            (Some((h, p)), None) => *h == owner.host && *p == i64::from(owner.pid),
        };
        if free {
            sqlx::query(
                "INSERT INTO leases (run, host, pid, heartbeat) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (run) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                   heartbeat = excluded.heartbeat",
            )
            .bind(run.as_str())
            .bind(&owner.host)
            .bind(i64::from(owner.pid))
            .bind(owner.heartbeat.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(free)
    }

    /// Heartbeats the run's lease; whether `owner` still holds it.
    pub async fn heartbeat(&self, run: &RunId, owner: &Lease) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE leases SET heartbeat = $1 WHERE run = $2 AND host = $3 AND pid = $4",
        )
        .bind(owner.heartbeat.0)
        .bind(run.as_str())
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn release_lease(&self, run: &RunId, owner: &Lease) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE run = $1 AND host = $2 AND pid = $3")
            .bind(run.as_str())
            .bind(&owner.host)
            .bind(i64::from(owner.pid))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Leaves a request for the process executing `run`.
    pub async fn push_request(
        &self,
        run: &RunId,
        kind: &str,
        arg: &str,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query("INSERT INTO requests (run, kind, arg, created) VALUES ($1, $2, $3, $4)")
            .bind(run.as_str())
            .bind(kind)
            .bind(arg)
            .bind(at.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the run's unhandled requests, oldest first, marking them handled.
    pub async fn take_requests(&self, run: &RunId, at: Timestamp) -> Result<Vec<Request>> {
        let mut tx = self.begin_locked(LEASE_LOCK).await?;
        let rows = sqlx::query(
            "SELECT id, run, kind, arg FROM requests WHERE run = $1 AND handled IS NULL ORDER BY id",
        )
        .bind(run.as_str())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE requests SET handled = $1 WHERE run = $2 AND handled IS NULL")
            .bind(at.0)
            .bind(run.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| Request {
                id: r.get(0),
                run: RunId::new(r.get::<String, _>(1)),
                kind: r.get(2),
                arg: r.get(3),
            })
            .collect())
    }

    /// Whether the run has requests not yet handled (cheap: polled by the engine).
    pub async fn has_requests(&self, run: &RunId) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE run = $1 AND handled IS NULL")
                .bind(run.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn decode_run(r: &AnyRow) -> RunRow {
    RunRow {
        id: RunId::new(r.get::<String, _>(0)),
        title: r.get(1),
        status: r.get(2),
        branch: r.get(3),
        base: r.get(4),
        base_branch: r.get(5),
        profile: r.get(6),
        created_at: Timestamp(r.get(7)),
        started_at: r.get::<Option<i64>, _>(8).map(Timestamp),
        finished_at: r.get::<Option<i64>, _>(9).map(Timestamp),
        reason: r.get(10),
        spent_usd: r.get(11),
        spent_tokens: u64::try_from(r.get::<i64, _>(12)).unwrap_or(0),
        last_seq: u64::try_from(r.get::<i64, _>(13)).unwrap_or(0),
        pull_request: r.get(14),
    }
}

fn decode_task(r: &AnyRow) -> TaskRow {
    let kept: String = r.get(12);
    TaskRow {
        run: RunId::new(r.get::<String, _>(0)),
        id: TaskId::new(r.get::<String, _>(1)),
        position: r.get(2),
        title: r.get(3),
        kind: r.get(4),
        status: r.get(5),
        attempts: u32::try_from(r.get::<i64, _>(6)).unwrap_or(0),
        backend: r.get(7),
        commit: r.get(8),
        reason: r.get(9),
        cost_usd: r.get(10),
        tokens: u64::try_from(r.get::<i64, _>(11)).unwrap_or(0),
        kept_worktrees: serde_json::from_str(&kept).unwrap_or_default(),
    }
}

fn decode_event(r: &AnyRow) -> Result<StoredEvent> {
    let seq = u64::try_from(r.get::<i64, _>(0)).unwrap_or(0);
    let kind: String = r.get(4);
    let data: String = r.get(5);
    let value: serde_json::Value =
        serde_json::from_str(&data).map_err(|source| StoreError::Corrupt {
            seq,
            kind: kind.clone(),
            source,
        })?;
    let body = EventBody::from_parts(&kind, value).map_err(|source| StoreError::Corrupt {
        seq,
        kind,
        source,
    })?;
    Ok(StoredEvent {
        seq,
        event: Event {
            at: Timestamp(r.get(1)),
            run: RunId::new(r.get::<String, _>(2)),
            task: r.get::<Option<String>, _>(3).map(TaskId::new),
            body,
        },
    })
}
