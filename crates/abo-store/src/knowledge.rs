//! The knowledge layer's tables: what was read of each blob, which blob each path of an indexed
//! commit holds, and past changes, by repository (its root commit). Content-addressed: a blob is
//! read once, whatever commit holds it, so indexing a new base commit writes only the blobs it
//! has that no indexed commit had, and its path list. BM25's figures are computed from these rows
//! by the caller (`abo-knowledge`), the same on SQLite and PostgreSQL.

use std::collections::BTreeSet;

use sqlx::Row;
use sqlx::any::AnyRow;

use abo_core::ids::Timestamp;

use crate::batch::Arg;
use crate::{Result, Store, i64_of, u64_of};

/// What was read of one blob.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnowledgeBlob {
    pub blob: String,
    pub lang: String,
    /// Its length in terms.
    pub len: u64,
    pub terms: Vec<(String, u32)>,
    /// Definitions: name, kind, line.
    pub defs: Vec<(String, String, u32)>,
    /// References: name, how often.
    pub refs: Vec<(String, u32)>,
}

/// A past change: a commit, a landed task or a failed one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnowledgeDoc {
    pub kind: String,
    pub key: String,
    /// When it happened (ms): a query sees only changes before its own time.
    pub at: Timestamp,
    pub title: String,
    /// Its text as shown in a prompt (a task's statement and outcome; a commit's message).
    pub body: String,
    pub files: Vec<String>,
    pub len: u64,
    pub terms: Vec<(String, u32)>,
}

/// Rows a statement inserts at once (under every database's limit on parameters).
const ROWS: usize = 800;
/// Values in one `IN (...)` list.
const IN_LIST: usize = 500;

/// `($s, $s+1, ...), (...)`: `rows` tuples of `cols` placeholders from `$start`.
fn tuples(start: usize, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<String> = (0..cols)
                .map(|c| format!("${}", start + r * cols + c))
                .collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$s, $s+1, ...`: `n` placeholders from `$start`.
fn list(start: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", start + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `rows` (each `cols` values) into `table (columns)`, in chunks.
async fn insert(
    tx: &mut crate::Tx,
    head: &str,
    cols: usize,
    rows: &[Vec<Arg>],
    tail: &str,
) -> Result<()> {
    for chunk in rows.chunks(ROWS) {
        // Only placeholders are formatted into the SQL; values are bound.
        let sql = format!("{head} VALUES {} {tail}", tuples(1, chunk.len(), cols));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in chunk.iter().flatten() {
            q = bind(q, a);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

fn u32_of(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// Binds one value to a query.
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    a: &Arg,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match a {
        Arg::Int(v) => q.bind(*v),
        Arg::Real(v) => q.bind(*v),
        Arg::Text(v) => q.bind(v.clone()),
    }
}

impl Store {
    /// The rows of `{sql} IN (...)`, `values` in chunks: `sql` binds `fixed` as `$1..` and may hold
    /// `{in}` for the list; anything after it in `sql` follows the list.
    async fn rows_in(&self, sql: &str, fixed: &[Arg], values: &[String]) -> Result<Vec<AnyRow>> {
        let mut out = Vec::new();
        for chunk in values.chunks(IN_LIST) {
            // Only placeholders are formatted into the SQL; values are bound.
            let sql = sql.replace("{in}", &list(fixed.len() + 1, chunk.len()));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in fixed {
                q = bind(q, a);
            }
            for v in chunk {
                q = q.bind(v);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    /// Whether the commit's path list is indexed; marks it used at `at`.
    pub async fn knowledge_indexed(&self, repo: &str, commit: &str, at: Timestamp) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE knowledge_indexed SET used_at = $1 WHERE repo = $2 AND commit_sha = $3",
        )
        .bind(at.0)
        .bind(repo)
        .bind(commit)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The blobs among `blobs` already read.
    pub async fn knowledge_known_blobs(
        &self,
        repo: &str,
        blobs: &[String],
    ) -> Result<BTreeSet<String>> {
        let sql = "SELECT blob FROM knowledge_blobs WHERE repo = $1 AND blob IN ({in})";
        let rows = self.rows_in(sql, &[Arg::from(repo)], blobs).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records what was read of blobs. A blob another process recorded first stays as it was
    /// (the same blob reads the same).
    pub async fn knowledge_put_blobs(&self, repo: &str, blobs: &[KnowledgeBlob]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in blobs.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO knowledge_blobs (repo, blob, lang, len) VALUES {}
                 ON CONFLICT (repo, blob) DO NOTHING RETURNING blob",
                tuples(1, chunk.len(), 4)
            );
            let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for b in chunk {
                q = q.bind(repo).bind(&b.blob).bind(&b.lang).bind(i64_of(b.len));
            }
            let fresh: BTreeSet<String> = q.fetch_all(&mut *tx).await?.into_iter().collect();
            let mut terms = Vec::new();
            let mut defs = Vec::new();
            let mut refs = Vec::new();
            for b in chunk.iter().filter(|b| fresh.contains(&b.blob)) {
                for (t, tf) in &b.terms {
                    terms.push(vec![
                        Arg::from(repo),
                        Arg::from(b.blob.as_str()),
                        Arg::from(t.as_str()),
                        Arg::from(i64::from(*tf)),
                    ]);
                }
                for (name, kind, line) in &b.defs {
                    defs.push(vec![
                        Arg::from(repo),
                        Arg::from(b.blob.as_str()),
                        Arg::from(name.as_str()),
                        Arg::from(name.to_lowercase().as_str()),
                        Arg::from(kind.as_str()),
                        Arg::from(i64::from(*line)),
                    ]);
                }
                for (name, n) in &b.refs {
                    refs.push(vec![
                        Arg::from(repo),
                        Arg::from(b.blob.as_str()),
                        Arg::from(name.as_str()),
                        Arg::from(i64::from(*n)),
                    ]);
                }
            }
            insert(
                &mut tx,
                "INSERT INTO knowledge_terms (repo, blob, term, tf)",
                4,
                &terms,
                "",
            )
            .await?;
            insert(
                &mut tx,
                "INSERT INTO knowledge_defs (repo, blob, name, lname, kind, line)",
                6,
                &defs,
                "",
            )
            .await?;
            insert(
                &mut tx,
                "INSERT INTO knowledge_refs (repo, blob, name, n)",
                4,
                &refs,
                "",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records which blob each path of `commit` holds, and that the commit is indexed.
    pub async fn knowledge_put_tree(
        &self,
        repo: &str,
        commit: &str,
        files: &[(String, String)],
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done: Option<i64> = sqlx::query_scalar(
            "SELECT files FROM knowledge_indexed WHERE repo = $1 AND commit_sha = $2",
        )
        .bind(repo)
        .bind(commit)
        .fetch_optional(&mut *tx)
        .await?;
        if done.is_some() {
            return Ok(());
        }
        let rows: Vec<Vec<Arg>> = files
            .iter()
            .map(|(p, b)| {
                vec![
                    Arg::from(repo),
                    Arg::from(commit),
                    Arg::from(p.as_str()),
                    Arg::from(b.as_str()),
                ]
            })
            .collect();
        insert(
            &mut tx,
            "INSERT INTO knowledge_trees (repo, commit_sha, path, blob)",
            4,
            &rows,
            "ON CONFLICT (repo, commit_sha, path) DO NOTHING",
        )
        .await?;
        sqlx::query(
            "INSERT INTO knowledge_indexed (repo, commit_sha, files, created_at, used_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repo, commit_sha) DO NOTHING",
        )
        .bind(repo)
        .bind(commit)
        .bind(i64::try_from(files.len()).unwrap_or(i64::MAX))
        .bind(at.0)
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The paths of an indexed commit with their blobs, by path.
    pub async fn knowledge_tree(&self, repo: &str, commit: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT path, blob FROM knowledge_trees WHERE repo = $1 AND commit_sha = $2
             ORDER BY path",
        )
        .bind(repo)
        .bind(commit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The paths among `paths` that the commit holds.
    pub async fn knowledge_present(
        &self,
        repo: &str,
        commit: &str,
        paths: &[String],
    ) -> Result<BTreeSet<String>> {
        let sql = "SELECT path FROM knowledge_trees WHERE repo = $1 AND commit_sha = $2
                   AND path IN ({in})";
        let rows = self
            .rows_in(sql, &[Arg::from(repo), Arg::from(commit)], paths)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Files of the commit and their total length in terms (for BM25).
    pub async fn knowledge_file_stats(&self, repo: &str, commit: &str) -> Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(b.len), 0) AS BIGINT) FROM knowledge_trees t
             JOIN knowledge_blobs b ON b.repo = t.repo AND b.blob = t.blob
             WHERE t.repo = $1 AND t.commit_sha = $2",
        )
        .bind(repo)
        .bind(commit)
        .fetch_one(&self.pool)
        .await?;
        Ok((u64_of(r.get(0)), u64_of(r.get(1))))
    }

    /// Each (path, term, tf, length) of the commit's files holding one of `terms`; a term held
    /// by more than `max_df` files is left out (it tells files apart too little to be worth its
    /// rows), and returned apart.
    pub async fn knowledge_file_hits(
        &self,
        repo: &str,
        commit: &str,
        terms: &[String],
        max_df: u64,
    ) -> Result<(Vec<(String, String, u32, u64)>, Vec<String>)> {
        let mut out = Vec::new();
        let mut common = Vec::new();
        for t in terms {
            let rows = sqlx::query(
                "SELECT t.path, k.tf, b.len FROM knowledge_terms k
                 JOIN knowledge_trees t ON t.repo = k.repo AND t.blob = k.blob
                 JOIN knowledge_blobs b ON b.repo = k.repo AND b.blob = k.blob
                 WHERE k.repo = $1 AND k.term = $2 AND t.commit_sha = $3 LIMIT $4",
            )
            .bind(repo)
            .bind(t)
            .bind(commit)
            .bind(i64_of(max_df.saturating_add(1)))
            .fetch_all(&self.pool)
            .await?;
            if rows.len() as u64 > max_df {
                common.push(t.clone());
                continue;
            }
            out.extend(
                rows.iter()
                    .map(|r: &AnyRow| (r.get(0), t.clone(), u32_of(r.get(1)), u64_of(r.get(2)))),
            );
        }
        Ok((out, common))
    }

    /// Definitions in the commit's files whose lowercased name is one of `names`: (path, name).
    pub async fn knowledge_defs_named(
        &self,
        repo: &str,
        commit: &str,
        names: &[String],
    ) -> Result<Vec<(String, String)>> {
        self.defs_where(repo, commit, "d.lname", names)
            .await
            .map(|v| v.into_iter().map(|(p, n, _, _)| (p, n)).collect())
    }

    /// Definitions with one of `names` (exactly): (path, name, kind, line).
    pub async fn knowledge_defs_by_name(
        &self,
        repo: &str,
        commit: &str,
        names: &[String],
    ) -> Result<Vec<(String, String, String, u32)>> {
        self.defs_where(repo, commit, "d.name", names).await
    }

    /// Definitions in the files at `paths`: (path, name, kind, line).
    pub async fn knowledge_defs_in(
        &self,
        repo: &str,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<(String, String, String, u32)>> {
        self.defs_where(repo, commit, "t.path", paths).await
    }

    async fn defs_where(
        &self,
        repo: &str,
        commit: &str,
        column: &str,
        values: &[String],
    ) -> Result<Vec<(String, String, String, u32)>> {
        // `column` is one of this module's own column names.
        let sql = format!(
            "SELECT t.path, d.name, d.kind, d.line FROM knowledge_defs d
             JOIN knowledge_trees t ON t.repo = d.repo AND t.blob = d.blob
             WHERE d.repo = $1 AND t.commit_sha = $2 AND {column} IN ({{in}})
             ORDER BY t.path, d.line"
        );
        let rows = self
            .rows_in(&sql, &[Arg::from(repo), Arg::from(commit)], values)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), u32_of(r.get(3))))
            .collect())
    }

    /// References made by the files at `paths`: (path, name, count).
    pub async fn knowledge_refs_in(
        &self,
        repo: &str,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<(String, String, u32)>> {
        self.refs_where(repo, commit, "t.path", paths).await
    }

    /// References to one of `names`: (path, name, count).
    pub async fn knowledge_refs_to(
        &self,
        repo: &str,
        commit: &str,
        names: &[String],
    ) -> Result<Vec<(String, String, u32)>> {
        self.refs_where(repo, commit, "r.name", names).await
    }

    async fn refs_where(
        &self,
        repo: &str,
        commit: &str,
        column: &str,
        values: &[String],
    ) -> Result<Vec<(String, String, u32)>> {
        // `column` is one of this module's own column names.
        let sql = format!(
            "SELECT t.path, r.name, r.n FROM knowledge_refs r
             JOIN knowledge_trees t ON t.repo = r.repo AND t.blob = r.blob
             WHERE r.repo = $1 AND t.commit_sha = $2 AND {column} IN ({{in}})"
        );
        let rows = self
            .rows_in(&sql, &[Arg::from(repo), Arg::from(commit)], values)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), u32_of(r.get(2))))
            .collect())
    }

    /// The keys among `keys` of past changes of `kind` already recorded.
    pub async fn knowledge_known_docs(
        &self,
        repo: &str,
        kind: &str,
        keys: &[String],
    ) -> Result<BTreeSet<String>> {
        let sql = "SELECT key FROM knowledge_docs WHERE repo = $1 AND kind = $2 AND key IN ({in})";
        let rows = self
            .rows_in(sql, &[Arg::from(repo), Arg::from(kind)], keys)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records past changes; one recorded first stays.
    pub async fn knowledge_put_docs(&self, repo: &str, docs: &[KnowledgeDoc]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for d in docs {
            let fresh = sqlx::query(
                "INSERT INTO knowledge_docs (repo, kind, key, at, title, body, files, len)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repo, kind, key) DO NOTHING",
            )
            .bind(repo)
            .bind(&d.kind)
            .bind(&d.key)
            .bind(d.at.0)
            .bind(&d.title)
            .bind(&d.body)
            .bind(serde_json::to_string(&d.files).unwrap_or_else(|_| "[]".into()))
            .bind(i64_of(d.len))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                continue;
            }
            let rows: Vec<Vec<Arg>> = d
                .terms
                .iter()
                .map(|(t, tf)| {
                    vec![
                        Arg::from(repo),
                        Arg::from(d.kind.as_str()),
                        Arg::from(d.key.as_str()),
                        Arg::from(t.as_str()),
                        Arg::from(i64::from(*tf)),
                    ]
                })
                .collect();
            insert(
                &mut tx,
                "INSERT INTO knowledge_doc_terms (repo, kind, key, term, tf)",
                5,
                &rows,
                "",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Past changes before `before` (ms), and their total length in terms.
    pub async fn knowledge_doc_stats(&self, repo: &str, before: Timestamp) -> Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(len), 0) AS BIGINT) FROM knowledge_docs WHERE repo = $1 AND at < $2",
        )
        .bind(repo)
        .bind(before.0)
        .fetch_one(&self.pool)
        .await?;
        Ok((u64_of(r.get(0)), u64_of(r.get(1))))
    }

    /// Each (kind, key, term, tf, length) of past changes before `before` holding one of `terms`.
    pub async fn knowledge_doc_hits(
        &self,
        repo: &str,
        before: Timestamp,
        terms: &[String],
    ) -> Result<Vec<(String, String, String, u32, u64)>> {
        let sql = "SELECT d.kind, d.key, k.term, k.tf, d.len FROM knowledge_doc_terms k
                   JOIN knowledge_docs d ON d.repo = k.repo AND d.kind = k.kind AND d.key = k.key
                   WHERE k.repo = $1 AND d.at < $2 AND k.term IN ({in})";
        let rows = self
            .rows_in(sql, &[Arg::from(repo), Arg::from(before.0)], terms)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    u32_of(r.get(3)),
                    u64_of(r.get(4)),
                )
            })
            .collect())
    }

    /// Past changes by (kind, key): their time, title, body and files.
    pub async fn knowledge_docs(
        &self,
        repo: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<KnowledgeDoc>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(IN_LIST / 2) {
            let cond: Vec<String> = (0..chunk.len())
                .map(|i| format!("(kind = ${} AND key = ${})", 2 + 2 * i, 3 + 2 * i))
                .collect();
            let sql = format!(
                "SELECT kind, key, at, title, body, files, len FROM knowledge_docs
                 WHERE repo = $1 AND ({})",
                cond.join(" OR ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repo);
            for (k, key) in chunk {
                q = q.bind(k).bind(key);
            }
            out.extend(
                q.fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r: &AnyRow| KnowledgeDoc {
                        kind: r.get(0),
                        key: r.get(1),
                        at: Timestamp(r.get(2)),
                        title: r.get(3),
                        body: r.get(4),
                        files: serde_json::from_str(&r.get::<String, _>(5)).unwrap_or_default(),
                        len: u64_of(r.get(6)),
                        terms: Vec::new(),
                    }),
            );
        }
        Ok(out)
    }

    /// A position the knowledge layer keeps (how far into the event log it has read).
    pub async fn knowledge_cursor(&self, repo: &str, name: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM knowledge_cursors WHERE repo = $1 AND name = $2")
                .bind(repo)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn knowledge_set_cursor(&self, repo: &str, name: &str, value: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO knowledge_cursors (repo, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (repo, name) DO UPDATE SET value = excluded.value",
        )
        .bind(repo)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets indexed commits not used since `before`, then the blobs no indexed commit holds;
    /// returns how many commits.
    pub async fn knowledge_prune(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query(
            "DELETE FROM knowledge_trees WHERE EXISTS (SELECT 1 FROM knowledge_indexed i
               WHERE i.repo = knowledge_trees.repo AND i.commit_sha = knowledge_trees.commit_sha
                 AND i.used_at < $1)",
        )
        .bind(before.0)
        .execute(&mut *tx)
        .await?;
        let _ = gone;
        let n = sqlx::query("DELETE FROM knowledge_indexed WHERE used_at < $1")
            .bind(before.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for t in [
            "knowledge_terms",
            "knowledge_defs",
            "knowledge_refs",
            "knowledge_blobs",
        ] {
            // `t` is one of this module's table names.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {t} WHERE NOT EXISTS (SELECT 1 FROM knowledge_trees x
                   WHERE x.repo = {t}.repo AND x.blob = {t}.blob)"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}
