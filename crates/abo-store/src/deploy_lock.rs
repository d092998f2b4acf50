//! Each deployment environment's lock: one deployment per environment at a time, across runs,
//! processes and machines. A lease: its holder renews `expires` while it deploys; a holder that
//! crashed stops renewing, and its lock is free once `expires` passes (or at once, when the caller
//! found the holder's process dead on this host).

use sqlx::Row;
use sqlx::any::AnyRow;

use abo_core::ids::Timestamp;

use crate::{Result, Store};

/// Serialises takers of deploy locks on Postgres, as `BEGIN IMMEDIATE` does on SQLite.
const DEPLOY_LOCK: i64 = 0x0ab0_0d01;

/// Who holds an environment's lock, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployLock {
    pub environment: String,
    pub deployment: String,
    pub host: String,
    pub pid: u32,
    pub acquired: Timestamp,
    pub expires: Timestamp,
}

fn decode(r: &AnyRow) -> DeployLock {
    DeployLock {
        environment: r.get(0),
        deployment: r.get(1),
        host: r.get(2),
        pid: u32::try_from(r.get::<i64, _>(3)).unwrap_or(0),
        acquired: Timestamp(r.get(4)),
        expires: Timestamp(r.get(5)),
    }
}

const SELECT: &str =
    "SELECT environment, deployment, host, pid, acquired, expires FROM deploy_locks";

impl Store {
    /// Takes `lock.environment`'s lock for `lock` when it is free, expired at `now`, already this
    /// deployment's, or held by `dead` (a deployment whose process the caller found gone). Returns
    /// the holder when someone else holds it.
    pub async fn take_deploy_lock(
        &self,
        lock: &DeployLock,
        now: Timestamp,
        dead: Option<&str>,
    ) -> Result<Option<DeployLock>> {
        let mut tx = self.begin_locked(DEPLOY_LOCK).await?;
        let current = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE environment = $1"
        )))
        .bind(&lock.environment)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| decode(&r));
        if let Some(c) = &current
            && c.expires > now
            && c.deployment != lock.deployment
            && Some(c.deployment.as_str()) != dead
        {
            tx.commit().await?;
            return Ok(current);
        }
        sqlx::query(
            "INSERT INTO deploy_locks (environment, deployment, host, pid, acquired, expires)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (environment) DO UPDATE SET deployment = excluded.deployment,
               host = excluded.host, pid = excluded.pid, acquired = excluded.acquired,
               expires = excluded.expires",
        )
        .bind(&lock.environment)
        .bind(&lock.deployment)
        .bind(&lock.host)
        .bind(i64::from(lock.pid))
        .bind(lock.acquired.0)
        .bind(lock.expires.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Moves the lock's expiry on; whether `deployment` still holds it.
    pub async fn renew_deploy_lock(
        &self,
        environment: &str,
        deployment: &str,
        expires: Timestamp,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE deploy_locks SET expires = $1 WHERE environment = $2 AND deployment = $3",
        )
        .bind(expires.0)
        .bind(environment)
        .bind(deployment)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Releases the lock if `deployment` holds it.
    pub async fn release_deploy_lock(&self, environment: &str, deployment: &str) -> Result<()> {
        sqlx::query("DELETE FROM deploy_locks WHERE environment = $1 AND deployment = $2")
            .bind(environment)
            .bind(deployment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every lock held (expired ones included: their holder may be deploying still, or dead).
    pub async fn deploy_locks(&self) -> Result<Vec<DeployLock>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} ORDER BY environment"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode).collect())
    }
}
