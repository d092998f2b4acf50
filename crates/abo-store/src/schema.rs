//! Migrations, applied in order at open. They are written once, in SQLite's words, and translated
//! for PostgreSQL (`pg`). SQLite records how far a database is in `PRAGMA user_version`, Postgres in
//! `abo_schema`; either way one process migrates at a time (SQLite's write lock, a Postgres advisory
//! lock), so several processes starting at once are safe.

use sqlx::AnyPool;

use crate::{Dialect, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: the event log, its projections, leases and requests.
    "CREATE TABLE events (
        seq  INTEGER PRIMARY KEY,
        ts   INTEGER NOT NULL,
        run  TEXT NOT NULL,
        task TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_run ON events (run, seq);
    CREATE TABLE runs (
        id           TEXT PRIMARY KEY,
        title        TEXT NOT NULL,
        status       TEXT NOT NULL,
        branch       TEXT NOT NULL,
        base         TEXT NOT NULL,
        base_branch  TEXT,
        profile      TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        reason       TEXT,
        spent_usd    REAL NOT NULL DEFAULT 0,
        spent_tokens INTEGER NOT NULL DEFAULT 0,
        last_seq     INTEGER NOT NULL
    );
    CREATE TABLE tasks (
        run            TEXT NOT NULL REFERENCES runs (id),
        id             TEXT NOT NULL,
        position       INTEGER NOT NULL,
        title          TEXT NOT NULL,
        type           TEXT NOT NULL,
        status         TEXT NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        backend        TEXT,
        commit_sha     TEXT,
        reason         TEXT,
        cost_usd       REAL NOT NULL DEFAULT 0,
        tokens         INTEGER NOT NULL DEFAULT 0,
        kept_worktrees TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (run, id)
    );
    CREATE TABLE leases (
        run       TEXT PRIMARY KEY,
        host      TEXT NOT NULL,
        pid       INTEGER NOT NULL,
        heartbeat INTEGER NOT NULL
    );
    CREATE TABLE requests (
        id      INTEGER PRIMARY KEY,
        run     TEXT NOT NULL,
        kind    TEXT NOT NULL,
        arg     TEXT NOT NULL,
        created INTEGER NOT NULL,
        handled INTEGER
    );
    CREATE INDEX requests_open ON requests (run, handled);",
    // 2: approvals, projected from task.approval_requested / approved / rejected.
    "CREATE TABLE approvals (
        id         TEXT PRIMARY KEY,
        run        TEXT NOT NULL,
        task       TEXT NOT NULL,
        action     TEXT NOT NULL,
        reasons    TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status     TEXT NOT NULL,
        decided_at INTEGER,
        decision   TEXT
    );
    CREATE INDEX approvals_pending ON approvals (status, created_at);",
    // 3: budgets (each attempt's reservation and charge, alerts sent), the learned router's
    // memory (projected), and the result cache (written by the runtime, pruned by `abo gc`).
    "CREATE TABLE spend (
        run             TEXT NOT NULL,
        task            TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        backend         TEXT NOT NULL,
        reserved_usd    REAL NOT NULL DEFAULT 0,
        reserved_tokens INTEGER NOT NULL DEFAULT 0,
        charged_usd     REAL,
        charged_tokens  INTEGER,
        charged_at      INTEGER,
        PRIMARY KEY (run, task, attempt)
    );
    CREATE INDEX spend_charged ON spend (charged_at);
    CREATE TABLE alerts (
        key TEXT NOT NULL,
        run TEXT NOT NULL,
        at  INTEGER NOT NULL
    );
    CREATE INDEX alerts_at ON alerts (at);
    CREATE TABLE router_stats (
        task_type   TEXT NOT NULL,
        backend     TEXT NOT NULL,
        landed      INTEGER NOT NULL DEFAULT 0,
        failed      INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        cost_usd    REAL NOT NULL DEFAULT 0,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (task_type, backend)
    );
    CREATE TABLE cache (
        key        TEXT PRIMARY KEY,
        diff       TEXT NOT NULL,
        source     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        used_at    INTEGER NOT NULL
    );",
    // 4: API tokens (only their SHA-256 is kept).
    "CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );",
    // 5: the run's pull (merge) request.
    "ALTER TABLE runs ADD COLUMN pull_request TEXT;",
    // 6: many machines. Workers, the attempt-scoped work the control plane posts for
    // them, and who holds which attempt: the lease's `token` (the id of the job that started the
    // attempt) fences a worker that lost it.
    "CREATE TABLE workers (
        name       TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        slots      INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        heartbeat  INTEGER NOT NULL,
        claims     INTEGER NOT NULL DEFAULT 0,
        done       INTEGER NOT NULL DEFAULT 0,
        refused    INTEGER NOT NULL DEFAULT 0,
        lost       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        run         TEXT NOT NULL,
        task        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL,
        worker      TEXT,
        token       INTEGER,
        result      TEXT,
        created_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX jobs_ready ON jobs (state, kind, id);
    CREATE INDEX jobs_attempt ON jobs (run, task, attempt);
    CREATE TABLE attempt_leases (
        run        TEXT NOT NULL,
        task       TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        worker     TEXT NOT NULL,
        token      INTEGER NOT NULL,
        claimed_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (run, task, attempt)
    );
    CREATE INDEX attempt_leases_worker ON attempt_leases (worker);",
    // 7: artifacts a worker made (logs, transcripts, prompts), shared with the control plane and
    // the other workers by their content's id.
    "CREATE TABLE artifacts (
        id   TEXT PRIMARY KEY,
        data BLOB NOT NULL
    );",
    // 8: tests seen flaky (a gate failed, then passed on the same tree), from `task.gate` events.
    "CREATE TABLE flaky_tests (
        gate       TEXT NOT NULL,
        test       TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        count      INTEGER NOT NULL,
        PRIMARY KEY (gate, test)
    );",
    // 9: baselines (what a task's measuring gates measured on the tree an attempt started from),
    // written by the runtime, so that another process (a resume, a worker, another run on the same
    // tree) reads them instead of running the gates again; pruned by `abo gc`. `gate` is its name,
    // `config` the hash of its command and settings, `repo` the repository's root commit.
    "CREATE TABLE baselines (
        repo       TEXT NOT NULL,
        tree       TEXT NOT NULL,
        gate       TEXT NOT NULL,
        config     TEXT NOT NULL,
        measured   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        used_at    INTEGER NOT NULL,
        PRIMARY KEY (repo, tree, gate, config)
    );
    CREATE INDEX baselines_used ON baselines (used_at);",
    // 10: the knowledge layer, by repository (its root commit). What was read of each blob (its
    // language, length in terms, terms, definitions and references), which blob each path of an
    // indexed commit holds, and past changes (commits, landed and failed tasks) with their terms.
    // Written by the runtime as it indexes a base commit (only blobs it never read); pruned by
    // `abo gc`.
    "CREATE TABLE knowledge_blobs (
        repo TEXT NOT NULL,
        blob TEXT NOT NULL,
        lang TEXT NOT NULL,
        len  INTEGER NOT NULL,
        PRIMARY KEY (repo, blob)
    );
    CREATE TABLE knowledge_terms (
        repo TEXT NOT NULL,
        blob TEXT NOT NULL,
        term TEXT NOT NULL,
        tf   INTEGER NOT NULL,
        PRIMARY KEY (repo, term, blob)
    );
    CREATE INDEX knowledge_terms_blob ON knowledge_terms (repo, blob);
    CREATE TABLE knowledge_defs (
        repo  TEXT NOT NULL,
        blob  TEXT NOT NULL,
        name  TEXT NOT NULL,
        lname TEXT NOT NULL,
        kind  TEXT NOT NULL,
        line  INTEGER NOT NULL
    );
    CREATE INDEX knowledge_defs_blob ON knowledge_defs (repo, blob);
    CREATE INDEX knowledge_defs_name ON knowledge_defs (repo, name);
    CREATE INDEX knowledge_defs_lname ON knowledge_defs (repo, lname);
    CREATE TABLE knowledge_refs (
        repo TEXT NOT NULL,
        blob TEXT NOT NULL,
        name TEXT NOT NULL,
        n    INTEGER NOT NULL,
        PRIMARY KEY (repo, blob, name)
    );
    CREATE INDEX knowledge_refs_name ON knowledge_refs (repo, name);
    CREATE TABLE knowledge_trees (
        repo       TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        path       TEXT NOT NULL,
        blob       TEXT NOT NULL,
        PRIMARY KEY (repo, commit_sha, path)
    );
    CREATE INDEX knowledge_trees_blob ON knowledge_trees (repo, blob, commit_sha);
    CREATE TABLE knowledge_indexed (
        repo       TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        files      INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        used_at    INTEGER NOT NULL,
        PRIMARY KEY (repo, commit_sha)
    );
    CREATE TABLE knowledge_docs (
        repo  TEXT NOT NULL,
        kind  TEXT NOT NULL,
        key   TEXT NOT NULL,
        at    INTEGER NOT NULL,
        title TEXT NOT NULL,
        body  TEXT NOT NULL,
        files TEXT NOT NULL,
        len   INTEGER NOT NULL,
        PRIMARY KEY (repo, kind, key)
    );
    CREATE TABLE knowledge_doc_terms (
        repo TEXT NOT NULL,
        kind TEXT NOT NULL,
        key  TEXT NOT NULL,
        term TEXT NOT NULL,
        tf   INTEGER NOT NULL,
        PRIMARY KEY (repo, term, kind, key)
    );
    CREATE TABLE knowledge_cursors (
        repo  TEXT NOT NULL,
        name  TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (repo, name)
    );",
    // 11: events by kind and time, for the dashboard's "landed today" and "failed today" counts,
    // and a task's own events, for its page (both read without scanning a large run's log).
    "CREATE INDEX events_kind_ts ON events (kind, ts);
    CREATE INDEX events_task ON events (run, task, seq);",
    // 12: each deployment environment's lock, a lease renewed by its holder.
    "CREATE TABLE deploy_locks (
        environment TEXT PRIMARY KEY,
        deployment  TEXT NOT NULL,
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        acquired    INTEGER NOT NULL,
        expires     INTEGER NOT NULL
    );",
    // 13: each review's reservation and charge (`review.reserved`, `review.charged`), apart
    // from its attempt's, counted with `spend` against the daily and weekly caps.
    "CREATE TABLE review_spend (
        run             TEXT NOT NULL,
        task            TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        reviewer        TEXT NOT NULL,
        reserved_usd    REAL NOT NULL DEFAULT 0,
        reserved_tokens INTEGER NOT NULL DEFAULT 0,
        charged_usd     REAL,
        charged_tokens  INTEGER,
        charged_at      INTEGER,
        PRIMARY KEY (run, task, attempt)
    );
    CREATE INDEX review_spend_charged ON review_spend (charged_at);",
    // 14: a run's tasks in plan order, all or by status, for the run's page (a page of 10,000
    // tasks read without sorting them all), and a run's events of a few kinds.
    "CREATE INDEX tasks_position ON tasks (run, position);
    CREATE INDEX tasks_status ON tasks (run, status, position);
    CREATE INDEX events_run_kind ON events (run, kind, seq);",
];

/// A migration in PostgreSQL's words: 64-bit integers, doubles, bytes and serial keys.
fn pg(sql: &str) -> String {
    sql.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("REAL", "DOUBLE PRECISION")
        .replace("BLOB", "BYTEA")
}

/// The advisory lock key under which one Postgres process migrates at a time.
const MIGRATE_LOCK: i64 = 0x0ab0_0001;

pub(crate) async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let mut tx = match dialect {
        // The write lock is taken before the version is read.
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query(crate::ADVISORY_LOCK)
                .bind(MIGRATE_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS abo_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            tx
        }
    };
    let version: i64 = match dialect {
        Dialect::Sqlite => {
            sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?
        }
        Dialect::Postgres => {
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM abo_schema")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    if version > known {
        return Err(StoreError::NewerSchema {
            found: version,
            known,
        });
    }
    for (i, m) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let next = i + 1;
        match dialect {
            Dialect::Sqlite => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*m))
                    .execute(&mut *tx)
                    .await?;
                // PRAGMA takes no bound parameters; the value is an integer of our own.
                sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {next}")))
                    .execute(&mut *tx)
                    .await?;
            }
            Dialect::Postgres => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(pg(m)))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO abo_schema (version) VALUES ($1)")
                    .bind(i64::try_from(next).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
