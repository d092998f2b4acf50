//! Cgroups for an attempt's processes: a pids limit (what contains a fork bomb when abo runs as
//! root, whom RLIMIT_NPROC does not bind) and a memory limit. cgroup v2 where its controllers are
//! enabled, else the v1 `pids` and `memory` hierarchies, when abo may create groups there.

use std::path::{Path, PathBuf};

use crate::Limits;

const V2: &str = "/sys/fs/cgroup";
const V1_PIDS: &str = "/sys/fs/cgroup/pids";
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// Which cgroup hierarchy this host lets abo use, if any.
pub fn available() -> Option<&'static str> {
    let v2 =
        std::fs::read_to_string(Path::new(V2).join("cgroup.subtree_control")).unwrap_or_default();
    if v2.split_whitespace().any(|c| c == "pids") && writable(Path::new(V2)) {
        return Some("v2");
    }
    if Path::new(V1_PIDS).join("pids.max").exists() || writable(Path::new(V1_PIDS)) {
        return writable(Path::new(V1_PIDS)).then_some("v1");
    }
    None
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!("abo-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

/// Creates the groups of one sandboxed process (`name` unique per process) with `limits`
/// written. Returns the directories to join, or why none could be made.
///
/// The group itself is the probe: creating it is what [`available`] tries (with a directory it
/// removes again), so a process's sandbox costs one group, not three.
pub fn prepare(name: &str, limits: &Limits) -> Result<Vec<PathBuf>, String> {
    let name = format!("abo-{}", name.replace(['/', '.'], "-"));
    let write = |dir: &Path, file: &str, value: String| {
        std::fs::write(dir.join(file), &value)
            .map_err(|e| format!("{}: {e}", dir.join(file).display()))
    };
    let v2 =
        std::fs::read_to_string(Path::new(V2).join("cgroup.subtree_control")).unwrap_or_default();
    if v2.split_whitespace().any(|c| c == "pids") {
        let d = Path::new(V2).join(&name);
        if std::fs::create_dir_all(&d).is_ok() {
            if let Some(n) = limits.processes {
                write(&d, "pids.max", n.to_string())?;
            }
            if let Some(m) = limits.memory_bytes {
                let _ = write(&d, "memory.max", m.to_string());
            }
            return Ok(vec![d]);
        }
    }
    let d = Path::new(V1_PIDS).join(&name);
    if !Path::new(V1_PIDS).is_dir() || std::fs::create_dir_all(&d).is_err() {
        return Err("no cgroup hierarchy abo may create groups in".into());
    }
    let mut dirs = Vec::new();
    if let Some(n) = limits.processes {
        write(&d, "pids.max", n.to_string())?;
    }
    dirs.push(d);
    if let Some(m) = limits.memory_bytes {
        let d = Path::new(V1_MEMORY).join(&name);
        if std::fs::create_dir_all(&d).is_ok()
            && write(&d, "memory.limit_in_bytes", m.to_string()).is_ok()
        {
            dirs.push(d);
        }
    }
    Ok(dirs)
}

/// Removes groups once their processes are gone (a group with live processes stays).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Processes still in the groups.
pub fn members(dirs: &[PathBuf]) -> Vec<i32> {
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
