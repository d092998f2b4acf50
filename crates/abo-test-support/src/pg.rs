//! Throwaway PostgreSQL databases on the machine's server, made and dropped
//! with `psql`. The server is `ABO_TEST_PG` (default `postgres://root@127.0.0.1:5432`); a test
//! that needs it fails, never skips, when it is not running (`.ci/run` starts it).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server tests use, without a database name.
pub fn server() -> String {
    std::env::var("ABO_TEST_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// Runs one SQL statement as the server's admin; panics with psql's output when it fails.
pub fn admin(sql: &str) -> String {
    #[allow(clippy::disallowed_methods, reason = "test fixtures run psql directly")]
    let out = Command::new("psql")
        .args([&format!("{}/postgres", server()), "-XAtq", "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql could not run ({e}): install postgresql-client"));
    assert!(
        out.status.success(),
        "psql `{sql}` failed (is PostgreSQL running on {}? .ci/run starts it): {}",
        server(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A database of its own for one test, dropped (its connections cut) when this is dropped.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "abo_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        admin(&format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", server());
        Self { name, url }
    }

    /// Runs one SQL statement in this database; its rows, `|`-separated.
    pub fn query(&self, sql: &str) -> String {
        #[allow(clippy::disallowed_methods, reason = "test fixtures run psql directly")]
        let out = Command::new("psql")
            .args([&self.url, "-XAtq", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Cuts every connection to this database (as a network partition would).
    pub fn cut_connections(&self, application: Option<&str>) {
        let filter =
            application.map_or(String::new(), |a| format!(" AND application_name = '{a}'"));
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'{filter}",
            self.name
        ));
    }
}

impl Default for ScratchDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods, reason = "test fixtures run psql directly")]
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", server()),
                "-XAtq",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
