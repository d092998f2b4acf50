//! A batch of writes sent to the database at once: one multi-statement query on SQLite (run in
//! order on its connection's thread), one statement of data-modifying CTEs on Postgres (one
//! round-trip to the server). Each part is a statement over a `VALUES` table of its own, so the SQL
//! holds only placeholders and the number of statements does not grow with the number of rows.
//!
//! On Postgres every part sees the database as it was before the batch and the parts run in no
//! particular order, so a batch's parts must write disjoint rows, and a part that reads a table
//! another part writes must want it as it was (SQLite runs them in order: put such readers first).

use crate::{Dialect, StoreError, Tx};

/// A bound value.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Real(f64),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Self::Real(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

/// One statement: `body` reads the rows as the table `name(columns)`.
struct Part {
    name: &'static str,
    columns: &'static str,
    width: usize,
    rows: Vec<Arg>,
    body: &'static str,
}

#[derive(Default)]
pub(crate) struct Batch {
    parts: Vec<Part>,
    /// A statement without parameters run last (on Postgres, the primary query).
    last: Option<String>,
}

impl Batch {
    /// Adds a statement `body` over `rows` (each `width` values wide) seen as `name(columns)`;
    /// nothing when there are no rows.
    pub(crate) fn part(
        &mut self,
        name: &'static str,
        columns: &'static str,
        width: usize,
        rows: Vec<Arg>,
        body: &'static str,
    ) {
        debug_assert_eq!(rows.len() % width, 0);
        if !rows.is_empty() {
            self.parts.push(Part {
                name,
                columns,
                width,
                rows,
                body,
            });
        }
    }

    /// The statement run after every part (it must not need parameters).
    pub(crate) fn last(&mut self, sql: String) {
        self.last = Some(sql);
    }

    /// Sends the batch: one round-trip.
    pub(crate) async fn execute(self, tx: &mut Tx, dialect: Dialect) -> Result<(), StoreError> {
        if self.parts.is_empty() && self.last.is_none() {
            return Ok(());
        }
        let mut sql = String::new();
        let mut n = 0;
        let values = |p: &Part, n: &mut usize| {
            let mut s = format!("{}({}) AS (VALUES ", p.name, p.columns);
            for (r, _) in p.rows.chunks(p.width).enumerate() {
                s.push_str(if r == 0 { "(" } else { ", (" });
                for c in 0..p.width {
                    *n += 1;
                    s.push_str(&format!("{}${n}", if c == 0 { "" } else { ", " }));
                }
                s.push(')');
            }
            s.push(')');
            s
        };
        match dialect {
            Dialect::Sqlite => {
                for p in &self.parts {
                    sql.push_str(&format!("WITH {} {};\n", values(p, &mut n), p.body));
                }
                if let Some(last) = &self.last {
                    sql.push_str(last);
                }
            }
            Dialect::Postgres => {
                let mut ctes: Vec<String> = self.parts.iter().map(|p| values(p, &mut n)).collect();
                ctes.extend(
                    self.parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| format!("p{i} AS ({})", p.body)),
                );
                if !ctes.is_empty() {
                    sql = format!("WITH {} ", ctes.join(",\n"));
                }
                sql.push_str(self.last.as_deref().unwrap_or("SELECT 1"));
            }
        }
        // Only placeholders and this module's fixed statements are formatted into the SQL.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in self.parts.into_iter().flat_map(|p| p.rows) {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Real(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }
}
