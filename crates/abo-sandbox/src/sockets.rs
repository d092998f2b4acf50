//! The host's pathname UNIX sockets in every network namespace: each namespace lists its own in
//! `/proc/PID/net/unix` (a container's, a service's with a private network). Reading them all
//! means a look at every process, so the caller keeps the answer for a moment ([`Scan`]) and hands
//! it to each sandbox in its profile; the helper adds its own namespace's, read fresh.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The socket paths of a `net/unix` table.
pub(crate) fn paths(table: &str) -> impl Iterator<Item = PathBuf> + '_ {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
}

/// Every network namespace's sockets, one table per namespace.
pub fn in_every_namespace() -> Vec<PathBuf> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(ns) = std::fs::read_link(e.path().join("ns/net")) else {
            continue;
        };
        if seen.insert(ns) {
            let table = std::fs::read_to_string(e.path().join("net/unix")).unwrap_or_default();
            out.extend(paths(&table));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// [`in_every_namespace`], read again once the last answer is older than the age asked for.
#[derive(Debug, Default)]
pub struct Scan(Mutex<Option<(Instant, Vec<PathBuf>)>>);

impl Scan {
    pub fn get(&self, max_age: Duration) -> Vec<PathBuf> {
        let Ok(mut last) = self.0.lock() else {
            return in_every_namespace();
        };
        match &*last {
            Some((at, paths)) if at.elapsed() <= max_age => paths.clone(),
            _ => {
                let paths = in_every_namespace();
                *last = Some((Instant::now(), paths.clone()));
                paths
            }
        }
    }
}
