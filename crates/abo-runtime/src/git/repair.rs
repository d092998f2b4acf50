//! Git's own interrupted state, left by a git that was killed (with abo, or with the whole
//! session): lock files (`packed-refs.lock`, `refs/heads/….lock`, `index.lock`, `HEAD.lock`,
//! `config.lock`) whose writer is gone, and worktree registrations (`.git/worktrees/<name>`) whose
//! folder is gone, which `git worktree prune` keeps when `git worktree add` died while it was
//! "locked initializing".
//!
//! Whether a lock's writer can still be alive: every git abo runs holds the repository's lock
//! ([`RepoLock`], `flock(2)` on `<git dir>/abo.flock`) shared; repairing holds it exclusive, so
//! while it repairs no git of any abo runs on the repository. A person (or an editor) may run git
//! too: a lock is removed only once it is older than [`STALE`], and a lock younger than that is
//! waited for (its git ends, or it ages) before it is judged.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

/// A lock file or an interrupted registration younger than this may belong to a live git that is
/// not abo's (a person's): it is left alone.
pub const STALE: Duration = Duration::from_secs(5);

/// How long abo waits for the exclusive repository lock (other abo processes' git calls, each
/// short) before it gives up repairing for now.
const EXCLUSIVE_WAIT: Duration = Duration::from_secs(10);

/// Something git left behind that stops later git calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// A lock file; `age` since it was last written.
    Lock { path: PathBuf, age: Duration },
    /// A worktree registration whose folder is gone; `locked` is its lock's reason (git writes
    /// `initializing` while `worktree add` runs).
    Worktree {
        name: String,
        folder: Option<PathBuf>,
        locked: Option<String>,
        age: Duration,
        /// Its folder was one of abo's (under `.abo/`): only abo's own git made it, so with the
        /// repository held exclusive its writer is gone whatever its age.
        abo_own: bool,
    },
}

impl Leftover {
    pub fn age(&self) -> Duration {
        match self {
            Self::Lock { age, .. } | Self::Worktree { age, .. } => *age,
        }
    }

    /// Whether abo may remove it (the caller holding the repository exclusive): a lock old
    /// enough; a registration not locked by a person, old enough or abo's own.
    pub fn removable(&self) -> bool {
        match self {
            Self::Lock { age, .. } => *age >= STALE,
            Self::Worktree {
                locked,
                age,
                abo_own,
                ..
            } => {
                locked.as_deref().is_none_or(|r| r == "initializing") && (*abo_own || *age >= STALE)
            }
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Lock { path, age } => {
                format!("stale git lock {} ({}s old)", path.display(), age.as_secs())
            }
            Self::Worktree {
                name,
                folder,
                locked,
                ..
            } => format!(
                "broken worktree registration .git/worktrees/{name}{}{}: its folder is gone",
                folder
                    .as_ref()
                    .map(|f| format!(" (for {})", f.display()))
                    .unwrap_or_default(),
                locked
                    .as_ref()
                    .map(|r| format!(", locked \"{r}\""))
                    .unwrap_or_default(),
            ),
        }
    }
}

/// The repository's lock for abo's own git calls: shared by each call, exclusive while repairing.
/// In-process, a reader-writer lock does the same for this process's calls (one open file
/// description per holder, so `flock` alone would let a repair in this process wait on itself).
#[derive(Clone, Debug, Default)]
pub(crate) struct RepoLock {
    path: Option<PathBuf>,
    here: Arc<tokio::sync::RwLock<()>>,
}

/// A held lock: dropping it releases it.
pub(crate) struct Held<G> {
    _here: G,
    _file: Option<Flock<File>>,
}

impl RepoLock {
    pub(crate) fn new(common_dir: Option<&Path>) -> Self {
        Self {
            path: common_dir.map(|d| d.join("abo.flock")),
            here: Arc::default(),
        }
    }

    fn open(&self) -> Option<File> {
        let path = self.path.as_ref()?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ok()
    }

    /// Held by every git call abo makes. A repair holds it exclusive for milliseconds; past
    /// [`EXCLUSIVE_WAIT`] the call goes on without it (it only makes a repair wait less).
    pub(crate) async fn shared(&self) -> Held<tokio::sync::RwLockReadGuard<'_, ()>> {
        let here = self.here.read().await;
        let file = self
            .take(FlockArg::LockSharedNonblock, EXCLUSIVE_WAIT)
            .await;
        Held {
            _here: here,
            _file: file,
        }
    }

    /// Held while repairing: no git of any abo runs on the repository. `None` if another abo
    /// keeps it busy past [`EXCLUSIVE_WAIT`].
    pub(crate) async fn exclusive(&self) -> Option<Held<tokio::sync::RwLockWriteGuard<'_, ()>>> {
        let here = self.here.write().await;
        if self.path.is_none() {
            return Some(Held {
                _here: here,
                _file: None,
            });
        }
        let file = self
            .take(FlockArg::LockExclusiveNonblock, EXCLUSIVE_WAIT)
            .await?;
        Some(Held {
            _here: here,
            _file: Some(file),
        })
    }

    async fn take(&self, how: FlockArg, wait: Duration) -> Option<Flock<File>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let file = self.open()?;
            match Flock::lock(file, how) {
                Ok(held) => return Some(held),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return None,
            }
        }
    }
}

/// How long ago `path` was last written.
fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    #[allow(
        clippy::disallowed_methods,
        reason = "a file's age is measured on the file system's clock, not the run's"
    )]
    let now = SystemTime::now();
    Some(now.duration_since(modified).unwrap_or_default())
}

/// The lock files under the common git directory `common`: its own, its refs', and those of
/// registrations whose folder is gone. A live worktree's own locks (an agent's git may hold
/// them) are not abo's to judge.
fn locks(common: &Path, broken: &[String], out: &mut Vec<Leftover>) {
    let mut dirs = vec![common.to_owned(), common.join("refs"), common.join("logs")];
    dirs.extend(broken.iter().map(|n| common.join("worktrees").join(n)));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                // Only refs and logs are walked deep: objects hold no locks worth a walk.
                if dir != common && seen.insert(path.clone()) {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "lock")
                && let Some(age) = age(&path)
            {
                out.push(Leftover::Lock { path, age });
            }
        }
    }
}

/// Registrations under `<common>/worktrees/` whose folder is gone; `abo_dir` is the repository's
/// `.abo/`.
fn broken_worktrees(common: &Path, abo_dir: &Path) -> Vec<Leftover> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(common.join("worktrees")) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let named = std::fs::read_to_string(dir.join("gitdir"))
            .ok()
            .map(|s| PathBuf::from(s.trim()));
        let present = named.as_ref().is_some_and(|dotgit| dotgit.exists());
        if present {
            continue;
        }
        let locked = std::fs::read_to_string(dir.join("locked"))
            .ok()
            .map(|s| s.trim().to_owned());
        let age = age(&dir.join("locked"))
            .or_else(|| age(&dir))
            .unwrap_or_default();
        let folder = named.and_then(|p| p.parent().map(Path::to_owned));
        out.push(Leftover::Worktree {
            name: e.file_name().to_string_lossy().into_owned(),
            abo_own: folder.as_ref().is_some_and(|f| f.starts_with(abo_dir)),
            folder,
            locked,
            age,
        });
    }
    out
}

/// What git left behind in the repository whose common git directory is `common` (and whose
/// abo directory is `abo_dir`).
pub fn inspect(common: &Path, abo_dir: &Path) -> Vec<Leftover> {
    let mut out = broken_worktrees(common, abo_dir);
    let broken: Vec<String> = out
        .iter()
        .filter_map(|l| match l {
            Leftover::Worktree { name, .. } => Some(name.clone()),
            Leftover::Lock { .. } => None,
        })
        .collect();
    locks(common, &broken, &mut out);
    out
}

/// Removes what [`Leftover::removable`] allows (the caller holds the exclusive lock): a stale lock
/// file, or an interrupted registration's `locked` file (`git worktree prune` then forgets it).
/// Returns what it removed.
pub(crate) fn remove(common: &Path, found: Vec<Leftover>) -> Vec<Leftover> {
    let mut removed = Vec::new();
    for l in found {
        if !l.removable() {
            continue;
        }
        let ok = match &l {
            Leftover::Lock { path, .. } => std::fs::remove_file(path).is_ok(),
            Leftover::Worktree { name, locked, .. } => {
                let dir = common.join("worktrees").join(name);
                locked.is_none() || std::fs::remove_file(dir.join("locked")).is_ok()
            }
        };
        if ok {
            removed.push(l);
        }
    }
    removed
}

/// The lock file a failed git call names (`Unable to create '/…/packed-refs.lock': File exists`).
pub(crate) fn lock_in_message(stderr: &str) -> Option<PathBuf> {
    let start = stderr.find("Unable to create '")? + "Unable to create '".len();
    let rest = &stderr[start..];
    let end = rest.find("': File exists")?;
    let path = &rest[..end];
    path.ends_with(".lock").then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_a_failed_call_names() {
        let msg = "error: cannot lock ref 'refs/heads/x': Unable to create '/r/.git/refs/heads/x.lock': File exists.\n\nAnother git process seems to be running";
        assert_eq!(
            lock_in_message(msg),
            Some(PathBuf::from("/r/.git/refs/heads/x.lock"))
        );
        assert_eq!(
            lock_in_message("fatal: Unable to create '/r/.git/packed-refs.lock': File exists."),
            Some(PathBuf::from("/r/.git/packed-refs.lock"))
        );
        assert_eq!(lock_in_message("fatal: not a git repository"), None);
    }

    #[test]
    fn only_old_locks_and_registrations_abo_may_judge_are_removable() {
        let lock = |s| Leftover::Lock {
            path: "/r/.git/index.lock".into(),
            age: Duration::from_secs(s),
        };
        assert!(lock(60).removable());
        assert!(!lock(1).removable(), "a person's git may hold it");
        let wt = |locked: Option<&str>, age: u64, abo_own: bool| Leftover::Worktree {
            name: "w".into(),
            folder: None,
            locked: locked.map(str::to_owned),
            age: Duration::from_secs(age),
            abo_own,
        };
        assert!(wt(Some("initializing"), 60, false).removable());
        assert!(wt(None, 60, false).removable());
        assert!(
            !wt(Some("initializing"), 1, false).removable(),
            "a person's git may be adding it"
        );
        assert!(
            wt(Some("initializing"), 1, true).removable(),
            "only abo adds under .abo/"
        );
        assert!(
            !wt(Some("on a USB disk"), 60, true).removable(),
            "a person locked it"
        );
    }
}
