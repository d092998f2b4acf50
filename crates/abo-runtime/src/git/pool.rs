//! Prepared worktrees: a finished attempt's worktree is kept in a pool (a folder of abo's,
//! `.abo/worktrees/.pool/`) instead of being deleted, and the next attempt takes it and checks out
//! its start there. `git reset --hard` then writes only the files that differ from what the
//! worktree's index records, so an attempt's setup costs what its change costs, not what the
//! repository holds (a fresh checkout of 50,000 files writes 50,000 files).
//!
//! A pooled worktree held an agent's work, and anything in it may be an attack on the next
//! attempt: left files, links, nested repositories, modes, a tracked file rewritten in place with
//! its size and time kept. What the next attempt gets is what a fresh checkout would give it:
//!
//! - [`scrub`] removes everything the index does not track (ignored files too, and nested
//!   repositories), every tracked path whose type, mode or link count is not what git's checkout
//!   writes, every tracked file whose stat data are not what the index recorded, every tracked
//!   file changed after the worktree was checked out (its change time is after the [`READY`]
//!   note's: git's conversions map more than one content to one blob, so git cannot tell a
//!   rewritten file from the committed one), and the contents of nested repositories' folders.
//!   It walks without following a link. It runs when the worktree goes into the pool, under a
//!   name the pool never hands out; the worktree gets its pooled name once it is scrubbed, so a
//!   put that was cut short leaves nothing to take. Nothing writes a pooled worktree: the
//!   tracked paths the scrub did not find as the index recorded them are noted ([`SCRUBBED`]),
//!   and the next checkout vouches for all others (`git::fsmonitor`), so that git does not look
//!   at every file again.
//! - `git reset --hard` compares each remaining file with the index by its stat data. The index
//!   is git's, in the repository's git directory, which no attempt can write. A file written since
//!   the index recorded it has a later change time (set by the kernel; no process can set it
//!   back), and `HARDENING` pins the comparison (`core.checkStat=default`, `core.trustctime=true`)
//!   so that a repository's configuration cannot turn change times off. Git compares them in
//!   whole seconds: a file rewritten in the same second as the change time its stat data
//!   recorded, its size and modification time kept, is taken for unchanged unless git finds the
//!   entry racy. The stat data abo's git records before an agent starts (the checkout) and after
//!   it ended are safe from that, and those the attempt's `check` tool records while the agent
//!   runs are dropped (`change::KeptIndex`).
//! - The worktree's `.git` file is written new, and its entry in the repository keeps only what
//!   a new entry has (`commondir`, `HEAD`, `gitdir`), the index, and abo's [`READY`] note.
//!
//! A pooled worktree's entry is locked (`git worktree prune` and `remove` leave it) and detached
//! (its attempt's branch can be deleted). Taking one is a `rename` of its folder: of two attempts
//! reaching for the same one, one gets it. Whatever fails, the worktree is removed (or, when it
//! cannot be, renamed out of the pool's names, for the next trim) and the attempt gets a fresh
//! one.
//!
//! Only the caller knows when no process of the attempt can still write the folder: it recycles
//! a worktree only when the attempt's processes ran in a PID namespace of their own (they all
//! died with its init before the attempt ended), never after a kill it did not wait for.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Git, common_dir, index};

/// The reason a pooled worktree's entry is locked with: what `git worktree list` shows.
const LOCKED: &str = "abo: a prepared worktree in abo's pool\n";

/// Worktrees the pool keeps once no run is going on.
pub const IDLE: usize = 2;

/// A file abo creates in a worktree's entry once the worktree is checked out, before anything of
/// its attempt runs: its change time is when the attempt could start writing. A tracked file
/// changed later (its content, its attributes, its links: the kernel sets its change time) is
/// removed before the worktree is used again, whatever git says of it: git's clean and smudge
/// conversions (line endings, `ident`) take more than one content for the same blob.
const READY: &str = "abo-ready";

/// A file abo writes in a pooled worktree's entry when the scrub is done: the tracked paths it
/// did not find as the index recorded them, as `git::fsmonitor` claims them. Every other tracked
/// file is as the index recorded it, so the next checkout vouches for them.
const SCRUBBED: &str = "abo-scrubbed";

/// Past this age a worktree still being put in the pool was left by a put that was cut short.
const STALE_SETTLING: std::time::Duration = std::time::Duration::from_secs(600);

/// How long an attempt that found the pool empty waits for a worktree on its way in before it
/// checks out a fresh one.
const WAIT_FOR_INCOMING: std::time::Duration = std::time::Duration::from_secs(20);

/// Worktrees on their way into the pool. In a run the next attempt starts while the one before
/// is still being put in (its scrub walks the whole folder): an attempt that finds the pool empty
/// while a worktree is coming that no other attempt waits for waits for it. Putting it in reads
/// every file's stat data once; a fresh checkout writes every file, and leaves them all "racily
/// clean" for the git processes of the next second, which read every file again.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Worktrees announced ([`Coming`]) and attempts waiting for one.
    counts: std::sync::Mutex<(usize, usize)>,
    /// Woken when a worktree went in, or an announced one arrived or will not.
    changed: tokio::sync::Notify,
}

/// A worktree announced as on its way into the pool ([`Git::announce_recycled`]). Dropping it
/// says that it arrived, or will not.
#[derive(Debug)]
pub struct Coming(std::sync::Arc<Incoming>);

impl Drop for Coming {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.counts.lock() {
            c.0 = c.0.saturating_sub(1);
        }
        self.0.changed.notify_waiters();
    }
}

impl Incoming {
    /// Waits, until `deadline`, for a change to the pool when a worktree is coming that no other
    /// attempt waits for: `true` when it is worth looking again, `false` when nothing is coming
    /// for this attempt.
    async fn wait(&self, deadline: tokio::time::Instant) -> bool {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        // Registered before the counts are read: a wake between the two is not missed.
        changed.as_mut().enable();
        {
            let Ok(mut c) = self.counts.lock() else {
                return false;
            };
            if c.0 <= c.1 || tokio::time::Instant::now() >= deadline {
                return false;
            }
            c.1 += 1;
        }
        let woken = tokio::time::timeout_at(deadline, changed).await.is_ok();
        if let Ok(mut c) = self.counts.lock() {
            c.1 = c.1.saturating_sub(1);
        }
        woken
    }
}

impl Git {
    /// Announces a worktree that will be offered to the pool ([`Git::recycle_worktree`]) until
    /// the returned [`Coming`] is dropped: an attempt finding the pool empty meanwhile waits for
    /// it ([`Git::add_worktree_pooled`]). Announce before the attempts that could take it start.
    pub fn announce_recycled(&self) -> Coming {
        if let Ok(mut c) = self.incoming.counts.lock() {
            c.0 += 1;
        }
        Coming(std::sync::Arc::clone(&self.incoming))
    }

    /// Takes a pooled worktree as [`Git::take_pooled`] does, waiting for one announced as coming
    /// when the pool has none.
    pub(super) async fn take_pooled_or_incoming(
        &self,
        pool: &Path,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_INCOMING;
        loop {
            {
                let _shared = self.worktrees.read().await;
                if self.take_pooled(pool, path, branch, start).await {
                    return true;
                }
            }
            // Outside the lock: a prune waiting for it would hold up the worktree coming in.
            if !self.incoming.wait(deadline).await {
                return false;
            }
        }
    }
}

impl Git {
    /// Puts the worktree at `path` in the pool folder `pool` when it holds fewer than `cap`, else
    /// removes it as [`Git::remove_worktree`] does. The caller vouches that nothing of its attempt
    /// still runs.
    pub async fn recycle_worktree(
        &self,
        path: &Path,
        pool: &Path,
        cap: usize,
    ) -> super::Result<()> {
        if cap > pooled(pool).len() && self.writable_layout(path).is_some() {
            let _shared = self.worktrees.read().await;
            if self.put(path, pool).await.is_ok() {
                self.incoming.changed.notify_waiters();
                return Ok(());
            }
        }
        self.remove_worktree(path).await
    }

    /// Takes a pooled worktree to `path` (which must not exist) with its `HEAD` naming `branch`,
    /// and checks out `start` there as `git reset --hard` does, moving or creating the branch.
    /// `false` when the pool had none, or the one taken could not be made ready (it is gone).
    pub(super) async fn take_pooled(
        &self,
        pool: &Path,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> bool {
        let Some(common) = common_dir(&self.root) else {
            return false;
        };
        let Ok(pool) = pool.canonicalize() else {
            return false;
        };
        if let Some(parent) = path.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            return false;
        }
        let Some(name) = pooled(&pool)
            .into_iter()
            .find(|n| rename_new(&pool.join(n), path).is_ok())
        else {
            return false;
        };
        let named = pool.join(&name).join(".git");
        let Some(mut entry) = entry_naming(&common, &name, &named) else {
            discard(&pool, &name, path);
            return false;
        };
        match self.ready(&common, &mut entry, path, branch, start).await {
            Ok(()) => {
                self.mark_ready(path);
                true
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&entry);
                discard(&pool, &name, path);
                false
            }
        }
    }

    /// Notes that the registered worktree at `path` is checked out and nothing of its attempt
    /// ran yet ([`READY`]); without the note the worktree is never pooled.
    pub(super) fn mark_ready(&self, path: &Path) {
        if let Some(entry) = self.pinned_git_dir(path) {
            let file = entry.join(READY);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file);
        }
    }

    /// Removes every pooled worktree past the first `keep`.
    pub async fn trim_pool(&self, pool: &Path, keep: usize) {
        let Some(common) = common_dir(&self.root) else {
            return;
        };
        let Ok(pool) = pool.canonicalize() else {
            return;
        };
        let _shared = self.worktrees.read().await;
        // What a removal that was cut short left (its entry went first), and what a put that was
        // cut short left (a put takes seconds; one of another process may be under way).
        for e in std::fs::read_dir(&pool).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = || {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > STALE_SETTLING)
            };
            if name.ends_with(".removing") {
                let _ = std::fs::remove_dir_all(e.path());
            } else if let Some(n) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".settling"))
                && stale()
            {
                if let Some(entry) = entry_naming(&common, n, &pool.join(n).join(".git")) {
                    let _ = std::fs::remove_dir_all(entry);
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        for name in pooled(&pool).into_iter().skip(keep) {
            // Taken out first, so that no attempt takes it while it goes.
            let out = pool.join(format!(".{name}.removing"));
            if rename_new(&pool.join(&name), &out).is_err() {
                continue;
            }
            if let Some(entry) = entry_naming(&common, &name, &pool.join(&name).join(".git")) {
                let _ = std::fs::remove_dir_all(entry);
            }
            let _ = std::fs::remove_dir_all(&out);
        }
    }

    /// Moves the registered worktree at `path` into the pool, detached and scrubbed.
    async fn put(&self, path: &Path, pool: &Path) -> Result<(), String> {
        let common = common_dir(&self.root).ok_or("no git directory")?;
        let mut entry = self
            .pinned_git_dir(path)
            .ok_or("not a registered worktree")?;
        std::fs::metadata(entry.join(READY)).map_err(|e| format!("{READY}: {e}"))?;
        let commit = self.head_commit(path).await?;
        std::fs::create_dir_all(pool).map_err(|e| format!("{}: {e}", pool.display()))?;
        let pool = pool.canonicalize().map_err(|e| e.to_string())?;
        write(&entry.join("locked"), LOCKED)?;
        // Scrubbed under a name the pool never hands out, then renamed to its own: a worktree
        // under a pooled name is always scrubbed, also when abo was killed while putting it in.
        let name = (0..100)
            .map(|n| format!("w{}-{}", std::process::id(), next_number() + n))
            .find(|n| !pool.join(n).exists() && rename_new(path, &pool.join(settling(n))).is_ok())
            .ok_or("no free name in the pool")?;
        let folder = pool.join(settling(&name));
        let result = match self
            .settle(
                &common,
                &mut entry,
                &folder,
                &pool.join(&name),
                &name,
                &commit,
            )
            .await
        {
            Ok(()) => rename_new(&folder, &pool.join(&name)).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&entry);
            discard(&pool, &name, &folder);
        }
        result
    }

    /// A worktree just moved to `folder` in the pool, to be renamed `pooled` there: its entry
    /// renamed after it and naming it, detached at `commit`, the folder scrubbed, and what the
    /// scrub removed noted for its next checkout ([`SCRUBBED`]).
    async fn settle(
        &self,
        common: &Path,
        entry: &mut PathBuf,
        folder: &Path,
        pooled: &Path,
        name: &str,
        commit: &str,
    ) -> Result<(), String> {
        write(
            &entry.join("gitdir"),
            &format!("{}\n", pooled.join(".git").display()),
        )?;
        write(&entry.join("HEAD"), &format!("{commit}\n"))?;
        let renamed = common.join("worktrees").join(name);
        if rename_new(entry, &renamed).is_ok() {
            *entry = renamed;
        }
        write_dot_git(folder, entry)?;
        keep_only_a_new_entrys(entry)?;
        let entries = index::read_with_stats(&entry.join("index"), self.hash_len())
            .ok_or("the index cannot be read")?;
        let removed = scrub_blocking(folder.to_owned(), entries, ready_time(entry)?).await?;
        super::fsmonitor::write(&entry.join(SCRUBBED), &removed).map_err(|e| e.to_string())
    }

    /// A pooled worktree, now at `path`, made the worktree of `branch` at `start`.
    async fn ready(
        &self,
        common: &Path,
        entry: &mut PathBuf,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> Result<(), String> {
        let path = path.canonicalize().map_err(|e| e.to_string())?;
        write(
            &entry.join("gitdir"),
            &format!("{}\n", path.join(".git").display()),
        )?;
        // Named after its folder, as git names entries, where that name is free: the entry is
        // then found at once (`Git::pinned_git_dir`).
        if let Some(name) = path.file_name() {
            let renamed = common.join("worktrees").join(name);
            if rename_new(entry, &renamed).is_ok() {
                *entry = renamed;
            }
        }
        write_dot_git(&path, entry)?;
        write(&entry.join("HEAD"), &format!("ref: refs/heads/{branch}\n"))?;
        keep_only_a_new_entrys(entry)?;
        std::fs::remove_file(entry.join("locked")).map_err(|e| e.to_string())?;
        // What the scrub found is vouched for (`git::fsmonitor`): the checkout looks only at the
        // files it removed and at those that differ between the index and `start`. Without the
        // note (a worktree pooled by an older abo) git looks at every file.
        let scrubbed = entry.join(SCRUBBED);
        let _vouched = scrubbed
            .exists()
            .then(|| super::fsmonitor::Vouched::hold(&self.claims, entry.clone(), scrubbed));
        self.check_out(&path, start)
            .await
            .map_err(|e| e.to_string())
    }

    /// A commit to detach a pooled worktree's `HEAD` at: the one it is on, else (its branch was
    /// never written, or is gone) the repository's. Read from the refs' files when git wrote them
    /// plainly; which commit does not matter to the next checkout (it compares the index with its
    /// start), only that `HEAD` names one.
    async fn head_commit(&self, path: &Path) -> Result<String, String> {
        let repository_head = || {
            let common = common_dir(&self.root)?;
            let head = std::fs::read_to_string(common.join("HEAD")).ok()?;
            self.ref_in_files(head.trim().strip_prefix("ref: ")?)
                .flatten()
        };
        if let Some(c) = self.head_in_files(path).or_else(repository_head) {
            return Ok(c.as_str().to_owned());
        }
        for (dir, head) in [(path, "HEAD"), (self.root.as_path(), "HEAD")] {
            if let Ok(out) = self
                .run_in(
                    dir,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{head}^{{commit}}"),
                    ],
                )
                .await
            {
                let c = out.trim();
                if c.len() >= 40 && c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(c.to_owned());
                }
            }
        }
        Err("neither the worktree's HEAD nor the repository's names a commit".into())
    }
}

/// The name a worktree has in the pool while it is scrubbed.
fn settling(name: &str) -> String {
    format!(".{name}.settling")
}

/// The pool's worktrees, by name (folders abo named; anything else there is not taken).
fn pooled(pool: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(pool) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with('w') && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .collect();
    names.sort();
    names
}

/// A number for the next pooled worktree's name, distinct within this process.
fn next_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(100, std::sync::atomic::Ordering::Relaxed)
}

/// The entry under `<common>/worktrees/` whose `gitdir` names `dot_git` (as abo wrote it, not
/// resolved: the folder it names has moved): `worktrees/<name>` first, else any.
fn entry_naming(common: &Path, name: &str, dot_git: &Path) -> Option<PathBuf> {
    let admin = common.join("worktrees");
    let names = |e: &Path| {
        std::fs::read_to_string(e.join("gitdir")).is_ok_and(|g| Path::new(g.trim()) == dot_git)
    };
    let guess = admin.join(name);
    if names(&guess) {
        return Some(guess);
    }
    std::fs::read_dir(&admin)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|e| names(e))
}

/// `rename(2)` that never replaces what is at `to` (an empty folder would be replaced). Where
/// the system has no such call, nothing is renamed, and no worktree is pooled.
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE).map_err(Into::into)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (from, to);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

fn write(file: &Path, text: &str) -> Result<(), String> {
    std::fs::write(file, text).map_err(|e| format!("{}: {e}", file.display()))
}

/// The worktree's `.git` file, written new whatever stands at its name (nothing planted there is
/// followed).
pub(super) fn write_dot_git(folder: &Path, entry: &Path) -> Result<(), String> {
    let dot = folder.join(".git");
    match std::fs::symlink_metadata(&dot) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dot),
        Ok(_) => std::fs::remove_file(&dot),
        Err(_) => Ok(()),
    }
    .map_err(|e| format!("{}: {e}", dot.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dot)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("gitdir: {}\n", entry.display()).as_bytes())
        })
        .map_err(|e| format!("{}: {e}", dot.display()))
}

/// Removes from a worktree's entry what a new entry does not have (what abo's git left there:
/// `ORIG_HEAD`, logs, a lock of a killed git), keeping the index, whose stat data spare the next
/// checkout the files that did not change.
fn keep_only_a_new_entrys(entry: &Path) -> Result<(), String> {
    const KEPT: &[&str] = &[
        "commondir",
        "gitdir",
        "HEAD",
        "index",
        "locked",
        READY,
        SCRUBBED,
    ];
    for e in std::fs::read_dir(entry)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if KEPT.iter().any(|k| e.file_name() == *k) {
            continue;
        }
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        }
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// The change time of the entry's [`READY`] note, to the nanosecond.
fn ready_time(entry: &Path) -> Result<(i64, i64), String> {
    let m = std::fs::metadata(entry.join(READY)).map_err(|e| format!("{READY}: {e}"))?;
    Ok((m.ctime(), m.ctime_nsec()))
}

/// Takes a folder that could not be used out of the way: renamed to a name the pool never hands
/// out (the next [`Git::trim_pool`] removes it) when it cannot be removed now, so that it stands
/// neither in the pool nor at an attempt's path.
fn discard(pool: &Path, name: &str, folder: &Path) {
    if std::fs::remove_dir_all(folder).is_err() {
        let aside = pool.join(format!(".{name}.removing"));
        let _ = rename_new(folder, &aside);
    }
}

async fn scrub_blocking(
    folder: PathBuf,
    entries: Vec<(index::Entry, index::Stat)>,
    ready: (i64, i64),
) -> Result<Vec<Vec<u8>>, String> {
    let shown = folder.display().to_string();
    tokio::task::spawn_blocking(move || scrub(&folder, &entries, umask(), ready))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("scrubbing {shown}: {e}"))
}

/// The process's file mode creation mask, as Linux reports it (`/proc/self/status`).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Leaves in the worktree at `folder` only what its index `entries` track, as the index
/// recorded it and git's checkout writes it with the file mode creation mask `umask`: a folder
/// (mode `0777 & !umask`) for each folder on a tracked path; at each tracked path a file or link
/// whose `lstat` is what the index recorded and whose change time is before `ready` (so not
/// written since the attempt could start: whatever an attempt changed, committed or not, new
/// files it marked intent-to-add included, goes), a regular file also with one link and the mode git gives it
/// (`0666` or `0777`, as the entry says, `& !umask`); an empty folder at a nested repository's.
/// Everything else is removed (a folder with all it holds); `git reset --hard` writes again what
/// is missing. The worktree's `.git` file is left alone. Nothing is followed: each name is looked
/// at with `lstat`, and the walk keeps its own queue (no recursion to exhaust). Returns every
/// tracked path it did not find as the index recorded it (removed, or not there: deleted, or
/// under a folder removed whole): every other tracked path is as the index recorded it.
fn scrub(
    folder: &Path,
    entries: &[(index::Entry, index::Stat)],
    umask: u32,
    ready: (i64, i64),
) -> std::io::Result<Vec<Vec<u8>>> {
    let mut index = Tracked {
        files: HashMap::with_capacity(entries.len()),
        folders: HashSet::new(),
        umask,
        ready,
    };
    for (n, (e, stat)) in entries.iter().enumerate() {
        let path = e.path.as_bytes();
        // A conflicted path (stages 1 to 3) is never kept: its entries hold no file's stat.
        let mode = if e.stage == 0 { e.mode } else { 0 };
        index.files.insert(path, (mode, *stat, n));
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                index.folders.insert(&path[..i]);
            }
        }
    }
    let root = std::fs::symlink_metadata(folder)?;
    if root.mode() & 0o7777 != index.dir_mode() {
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(index.dir_mode()))?;
    }
    // Every tracked path not found as the index recorded it: removed, or never met (deleted, or
    // under a folder removed whole).
    let mut kept = vec![false; entries.len()];
    for n in walk(folder, &index)? {
        kept[n] = true;
    }
    Ok(index
        .files
        .iter()
        .filter(|(_, (_, _, n))| !kept[*n])
        .map(|(path, _)| path.to_vec())
        .collect())
}

/// What [`scrub`] keeps, from the index.
struct Tracked<'a> {
    /// Each tracked path's mode (0 for a conflicted one), stat data and number.
    files: HashMap<&'a [u8], (u32, index::Stat, usize)>,
    /// The folders on tracked paths.
    folders: HashSet<&'a [u8]>,
    umask: u32,
    ready: (i64, i64),
}

impl Tracked<'_> {
    fn dir_mode(&self) -> u32 {
        0o777 & !self.umask
    }

    /// Whether the name at `path`, whose `lstat` is `meta`, stays (see [`scrub`]).
    fn keeps(&self, path: &[u8], meta: &std::fs::Metadata, at: &Path) -> std::io::Result<bool> {
        let perm = meta.mode() & 0o7777;
        let untouched = (meta.ctime(), meta.ctime_nsec()) < self.ready;
        if self.folders.contains(path) {
            return Ok(meta.is_dir() && perm == self.dir_mode());
        }
        Ok(match self.files.get(path) {
            Some((0o100644, stat, _)) => {
                meta.is_file()
                    && meta.nlink() == 1
                    && perm == (0o666 & !self.umask)
                    && untouched
                    && stat.matches(meta)
            }
            Some((0o100755, stat, _)) => {
                meta.is_file()
                    && meta.nlink() == 1
                    && perm == self.dir_mode()
                    && untouched
                    && stat.matches(meta)
            }
            Some((0o120000, stat, _)) => meta.is_symlink() && untouched && stat.matches(meta),
            Some((0o160000, _, _)) => {
                meta.is_dir() && perm == self.dir_mode() && std::fs::read_dir(at)?.next().is_none()
            }
            _ => false,
        })
    }
}

/// Paths relative to a worktree's folder, as git names them.
type Paths = Vec<Vec<u8>>;

/// [`scrub`]'s walk: folders are taken from one queue by as many threads as the machine has
/// cores (at most four), each `lstat`-ing its folder's names. Returns the numbers of the tracked
/// paths kept. The first error ends it.
fn walk(folder: &Path, index: &Tracked<'_>) -> std::io::Result<Vec<usize>> {
    use std::sync::{Condvar, Mutex, PoisonError};
    struct Queue {
        folders: Vec<Vec<u8>>,
        busy: usize,
        failed: Option<std::io::Error>,
    }
    let queue = Mutex::new(Queue {
        folders: vec![Vec::new()],
        busy: 0,
        failed: None,
    });
    let changed = Condvar::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let worker = || {
        let mut kept = Vec::new();
        loop {
            let rel = {
                let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if q.failed.is_some() {
                        return kept;
                    }
                    if let Some(rel) = q.folders.pop() {
                        q.busy += 1;
                        break rel;
                    }
                    if q.busy == 0 {
                        return kept;
                    }
                    q = changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
            };
            // A panic is an error here, so that the others do not wait for this folder forever.
            let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                scrub_folder(folder, &rel, index)
            }))
            .unwrap_or_else(|_| Err(std::io::Error::other("the scrub panicked")));
            let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.busy -= 1;
            match found {
                Ok((inside, mut found)) => {
                    q.folders.extend(inside);
                    kept.append(&mut found);
                }
                Err(e) => {
                    q.failed.get_or_insert(e);
                }
            }
            changed.notify_all();
        }
    };
    // What a thread that panicked kept is not known: then the scrub failed.
    let kept: Option<Vec<Vec<usize>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    match (
        queue
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .failed,
        kept,
    ) {
        (Some(e), _) => Err(e),
        (None, None) => Err(std::io::Error::other("a thread of the scrub panicked")),
        (None, Some(kept)) => Ok(kept.into_iter().flatten().collect()),
    }
}

/// Scrubs the names in the folder at `rel` (relative to `folder`, `""` for the root): returns
/// the folders in it to walk next and the numbers of the tracked paths it kept.
fn scrub_folder(
    folder: &Path,
    rel: &[u8],
    index: &Tracked<'_>,
) -> std::io::Result<(Paths, Vec<usize>)> {
    use std::os::unix::ffi::OsStrExt;
    let (mut inside, mut kept) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(folder.join(std::ffi::OsStr::from_bytes(rel)))? {
        let e = e?;
        let name = e.file_name();
        if rel.is_empty() && name == ".git" {
            continue;
        }
        let mut path = rel.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        // `lstat` of the name in its folder (`DirEntry::metadata` follows no link).
        let meta = e.metadata()?;
        if !index.keeps(&path, &meta, &e.path())? {
            if meta.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        } else if let Some((_, _, n)) = index.files.get(path.as_slice()) {
            kept.push(*n);
        } else if meta.is_dir() {
            inside.push(path);
        }
    }
    Ok((inside, kept))
}

#[cfg(test)]
mod tests;
