//! What a run's page, its API and the summary read instead of a run's whole log: the head of its
//! spec (no tasks), its run-level events, its spend rows, a page of its tasks, the count of its
//! tasks by status, and events of a few kinds since a time. Each costs what the page shows, not
//! what the run holds (indexes `tasks_position`, `tasks_status`, `events_task`, `events_kind_ts`).

use std::collections::BTreeMap;

use sqlx::Row;

use abo_core::event::StoredEvent;
use abo_core::ids::{BackendName, RunId, TaskId, Timestamp};
use abo_core::spec::RunSpec;

use crate::{Result, Store, StoreError, TaskRow, decode_event, decode_task};

/// One attempt's row of the `spend` projection.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendRow {
    pub task: TaskId,
    pub attempt: u32,
    pub backend: BackendName,
    pub reserved_usd: f64,
    pub reserved_tokens: u64,
    /// The charge and when it was made; `None` while the reservation is open.
    pub charged: Option<(f64, u64, Timestamp)>,
}

/// The kinds of event that change a run's own state (its clock, caps and end), never a task's.
const RUN_LEVEL: &str =
    "'run.started', 'run.paused', 'run.resumed', 'run.finished', 'run.merge', 'run.killed'";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// The run's spec without its tasks (`tasks` is empty), from its `run.created`.
    pub async fn run_spec_head(&self, run: &RunId) -> Result<Option<RunSpec>> {
        let row = sqlx::query(
            "SELECT seq, data FROM events WHERE run = $1 AND kind = 'run.created' ORDER BY seq LIMIT 1",
        )
        .bind(run.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let data: String = row.get(1);
        let head = RunSpec::head_from_json(&data).map_err(|source| StoreError::Corrupt {
            seq: count(row.get(0)),
            kind: "run.created".into(),
            source,
        })?;
        Ok(Some(head))
    }

    /// The run's own events (started, paused, resumed, finished, merge, killed), in order.
    pub async fn run_level_events(&self, run: &RunId) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE run = $1 AND task IS NULL AND kind IN ({RUN_LEVEL}) ORDER BY seq"
        )))
        .bind(run.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    /// The run's attempts' reservations and charges.
    pub async fn run_spend(&self, run: &RunId) -> Result<Vec<SpendRow>> {
        let rows = sqlx::query(
            "SELECT task, attempt, backend, reserved_usd, reserved_tokens, charged_usd,
                    charged_tokens, charged_at
             FROM spend WHERE run = $1 ORDER BY task, attempt",
        )
        .bind(run.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let charged_at: Option<i64> = r.get(7);
                SpendRow {
                    task: TaskId::new(r.get::<String, _>(0)),
                    attempt: u32::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                    backend: BackendName::new(r.get::<String, _>(2)),
                    reserved_usd: r.get(3),
                    reserved_tokens: count(r.get(4)),
                    charged: charged_at.map(|at| {
                        (
                            r.get::<Option<f64>, _>(5).unwrap_or(0.0),
                            count(r.get::<Option<i64>, _>(6).unwrap_or(0)),
                            Timestamp(at),
                        )
                    }),
                }
            })
            .collect())
    }

    /// A page of the run's tasks in plan order: those with one of `statuses` (all when empty),
    /// skipping `offset`, at most `limit`.
    pub async fn tasks_page(
        &self,
        run: &RunId,
        statuses: &[&str],
        offset: u64,
        limit: u64,
    ) -> Result<Vec<TaskRow>> {
        // The statuses are bound, never spliced: `$2` .. `$n`.
        let filter = if statuses.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..statuses.len()).map(|i| format!("${}", i + 2)).collect();
            format!(" AND status IN ({})", marks.join(", "))
        };
        let n = statuses.len();
        let sql = format!(
            "SELECT run, id, position, title, type, status, attempts, backend, commit_sha, reason,
                    cost_usd, tokens, kept_worktrees
             FROM tasks WHERE run = $1{filter} ORDER BY position LIMIT ${} OFFSET ${}",
            n + 2,
            n + 3
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run.as_str());
        for s in statuses {
            q = q.bind(*s);
        }
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(decode_task).collect())
    }

    /// How many of the run's tasks are in each status.
    pub async fn task_status_counts(&self, run: &RunId) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT status, CAST(COUNT(*) AS BIGINT) FROM tasks WHERE run = $1 GROUP BY status",
        )
        .bind(run.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), count(r.get(1))))
            .collect())
    }

    /// Events of these kinds at or after `since`, of every run, in order.
    pub async fn events_since(&self, kinds: &[&str], since: Timestamp) -> Result<Vec<StoredEvent>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE ts >= $1 AND kind IN ({}) ORDER BY seq",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since.0);
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    /// When the task's first attempt started, if one did.
    pub async fn first_started(&self, run: &RunId, task: &TaskId) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(ts) FROM events WHERE run = $1 AND task = $2 AND kind = 'task.started'",
        )
        .bind(run.as_str())
        .bind(task.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(at.map(Timestamp))
    }

    /// The run's events of these kinds (each task's `task.proposal`, say), in order: index
    /// `events_run_kind`, never the run's whole log.
    pub async fn run_events_of(&self, run: &RunId, kinds: &[&str]) -> Result<Vec<StoredEvent>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE run = $1 AND kind IN ({}) ORDER BY seq",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run.as_str());
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    /// What the run's reviews were charged (`review_spend`): dollars and tokens.
    pub async fn run_review_spent(&self, run: &RunId) -> Result<(f64, u64)> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(charged_usd), 0.0),
                    CAST(COALESCE(SUM(charged_tokens), 0) AS BIGINT)
             FROM review_spend WHERE run = $1",
        )
        .bind(run.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((r.get::<f64, _>(0), crate::u64_of(r.get(1))))
    }
}
