//! What the dashboard's home page counts, each in one query over the projections (and the
//! events' `(kind, ts)` index), so that it costs the same for a run of 10 tasks or of 10,000.

use std::collections::BTreeMap;

use sqlx::Row;

use abo_core::ids::Timestamp;

use crate::{Result, Store};

/// A budget alert recorded (`budget.alert`): its cap's key, the run, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRow {
    pub key: String,
    pub run: String,
    pub at: Timestamp,
}

impl Store {
    /// Tasks of runs still going (running, paused), by status.
    pub async fn live_task_counts(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT t.status, CAST(COUNT(*) AS BIGINT) FROM tasks t JOIN runs r ON r.id = t.run
             WHERE r.status IN ('running', 'paused') GROUP BY t.status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                )
            })
            .collect())
    }

    /// How many events of each of `kinds` were appended since `since`.
    pub async fn kind_counts_since(
        &self,
        kinds: &[&str],
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for kind in kinds {
            let n: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE kind = $1 AND ts >= $2",
            )
            .bind(*kind)
            .bind(since.0)
            .fetch_one(&self.pool)
            .await?;
            out.insert((*kind).to_owned(), u64::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    /// Budget alerts since `since`, newest first.
    pub async fn alerts_list(&self, since: Timestamp) -> Result<Vec<AlertRow>> {
        let rows =
            sqlx::query("SELECT key, run, at FROM alerts WHERE at >= $1 ORDER BY at DESC LIMIT 50")
                .bind(since.0)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| AlertRow {
                key: r.get(0),
                run: r.get(1),
                at: Timestamp(r.get(2)),
            })
            .collect())
    }

    /// Events of `kinds` after `after`, of every run, in order, at most `limit`: a reader that
    /// wants a few kinds decodes only those (the other events' JSON is never parsed).
    pub async fn events_of_kinds(
        &self,
        kinds: &[&str],
        after: u64,
        limit: u32,
    ) -> Result<Vec<crate::StoredEvent>> {
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE seq > $1 AND kind IN ({}) ORDER BY seq LIMIT ${}",
            marks.join(", "),
            kinds.len() + 2
        );
        // Only placeholders are formatted in: the kinds are bound.
        let mut q =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::try_from(after).unwrap_or(i64::MAX));
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(crate::decode_event).collect()
    }

    /// One task's events, in order (its page shows these, not the run's whole log).
    pub async fn task_events(
        &self,
        run: &abo_core::ids::RunId,
        task: &abo_core::ids::TaskId,
    ) -> Result<Vec<crate::StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, ts, run, task, kind, data FROM events
             WHERE run = $1 AND task = $2 ORDER BY seq",
        )
        .bind(run.as_str())
        .bind(task.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::decode_event).collect()
    }

    /// The `data` of a run's `run.created`, as stored (its spec), for a reader that wants a few
    /// of its fields without building every task.
    pub async fn run_created_data(&self, run: &abo_core::ids::RunId) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT data FROM events WHERE run = $1 AND kind = 'run.created' ORDER BY seq LIMIT 1",
        )
        .bind(run.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Per run: its tasks and how many landed.
    pub async fn task_totals(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let rows = sqlx::query(
            "SELECT run, CAST(COUNT(*) AS BIGINT),
                    CAST(SUM(CASE WHEN status = 'landed' THEN 1 ELSE 0 END) AS BIGINT)
             FROM tasks GROUP BY run",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i: usize| u64::try_from(r.get::<i64, _>(i)).unwrap_or(0);
                (r.get::<String, _>(0), (n(1), n(2)))
            })
            .collect())
    }

    /// A run's task as projected.
    pub async fn task(
        &self,
        run: &abo_core::ids::RunId,
        task: &abo_core::ids::TaskId,
    ) -> Result<Option<crate::TaskRow>> {
        let row = sqlx::query(
            "SELECT run, id, position, title, type, status, attempts, backend, commit_sha, reason,
                    cost_usd, tokens, kept_worktrees
             FROM tasks WHERE run = $1 AND id = $2",
        )
        .bind(run.as_str())
        .bind(task.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(crate::decode_task))
    }

    /// Charged since `since` by every run, plus what running runs hold reserved.
    pub async fn spend_since(&self, since: Timestamp) -> Result<(f64, u64)> {
        // No run has an empty id: this is every run's spend.
        self.window_spend(&abo_core::ids::RunId::new(""), since)
            .await
    }
}
