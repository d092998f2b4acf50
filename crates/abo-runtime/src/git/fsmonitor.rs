//! abo as the fsmonitor of its own worktrees: what abo knows of a worktree's files, told to the git
//! it runs there, so that git does not look at every file again.
//!
//! Each git process that reads a worktree's files against its index (`reset`, `add`, `diff`,
//! `commit`) compares every tracked file's `lstat` with what the index recorded: on 50,000 files
//! that is most of what the process costs, and an attempt runs four of them. Git's fsmonitor
//! interface (`core.fsmonitor`, hook version 2) lets something else say which paths may have
//! changed; git then trusts the index for the entries it found unchanged before (the index's
//! `FSMN` extension keeps which) and looks only at the paths named.
//!
//! abo's git calls in its registered worktrees all name the hook ([`args`]) once the index is
//! large enough for it to pay ([`pays`]), so the extension is
//! kept (git records there which entries it found unchanged when it refreshes and writes the
//! index: a commit, `update-index --refresh`). The hook prints the file [`VAR`] names, and fails
//! when it names none: git then looks at every file, as it does without a hook. abo names a file
//! only while a [`Vouched`] is held for the worktree: abo vouches that, while it is held, every
//! tracked path the file does not list is as the index recorded it, and that nothing but the git
//! abo runs writes the worktree. Where it is made:
//!
//! - a pooled worktree's checkout (`git::pool`): the paths are what the scrub removed when the
//!   worktree went into the pool (every other tracked file was as the index recorded it, not
//!   written since the worktree was checked out, and nothing writes a pooled worktree);
//! - the `patch:` backend's `git apply`, a cached change's, and the reading of what they applied
//!   (`change::summarize_staged`): nothing but git ran in the worktree since its checkout;
//! - the commit of a change read when no process of the attempt can still run (they ran in a PID
//!   namespace) and nothing ran since the reading: the paths are the change's files, found by a
//!   diff that looked at every file (`change::Staged`).
//!
//! Without a vouch (an agent may still run, the sandbox does not end its processes) git looks at
//! everything, as before. The hook is a command line (no file to plant or replace), the variable
//! is removed from what abo's git inherits, and the file is in the worktree's entry in the
//! repository's git directory, which no attempt can write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The claim file of a vouch made in this process ([`crate::git::Git::vouch`]), in the
/// worktree's entry.
pub(super) const VOUCHED: &str = "abo-vouched";

/// The variable naming the file the hook prints.
pub(super) const VAR: &str = "ABO_FSMONITOR_CLAIM";

/// The hook's setting: git runs it with a shell (it holds spaces), its version and last token
/// after the `#`. `cat` is named by its path: the shell runs in the worktree, and a `PATH` with an
/// empty or relative entry would find a `cat` an agent left there. A missing file fails it, and
/// git looks at every file. `None` where the system has no `cat` at a known path: no hook.
fn hook() -> Option<&'static str> {
    static HOOK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HOOK.get_or_init(|| {
        ["/bin/cat", "/usr/bin/cat"]
            .into_iter()
            .find(|c| Path::new(c).is_file())
            .map(|cat| format!("core.fsmonitor={cat} -- \"${VAR}\" 2>/dev/null #"))
    })
    .as_deref()
}

/// An index this large names the hook (about 1,300 entries): below it, starting the hook's shell
/// costs more than git's looking at every file. Tests name it always.
const PAYS_FROM: u64 = 128 << 10;

/// Whether git calls in the worktree whose index is `index` name the hook: when the index is
/// large enough for it to pay ([`PAYS_FROM`]). A call that does not drops what the index kept of
/// the hook's answers, and the next one that does looks at every file.
pub(super) fn pays(index: &Path) -> bool {
    cfg!(test) || std::fs::metadata(index).is_ok_and(|m| m.len() >= PAYS_FROM)
}

/// What abo's git calls in a registered worktree get on their command line, after `HARDENING`'s
/// `core.fsmonitor=false` (nothing where there is no hook).
pub(super) fn args() -> Vec<&'static str> {
    hook().map_or_else(Vec::new, |h| {
        vec!["-c", h, "-c", "core.fsmonitorHookVersion=2"]
    })
}

/// The vouches held, by worktree entry: the file each one's hook prints.
#[derive(Debug, Default)]
pub struct Claims(Mutex<std::collections::HashMap<PathBuf, PathBuf>>);

impl Claims {
    /// The file naming what is vouched for in the worktree whose entry is `entry`, if anything is.
    pub(super) fn file(&self, entry: &Path) -> Option<PathBuf> {
        self.0.lock().ok()?.get(entry).cloned()
    }
}

/// Held while abo vouches for a worktree (see the module's documentation): dropping it ends the
/// vouch and removes its file.
#[derive(Debug)]
pub struct Vouched {
    claims: Arc<Claims>,
    entry: PathBuf,
    file: PathBuf,
}

impl Vouched {
    /// Vouches for the worktree whose entry is `entry` with the claim `file` (written by
    /// [`write`]); `None` when another vouch holds it.
    pub(super) fn hold(claims: &Arc<Claims>, entry: PathBuf, file: PathBuf) -> Option<Self> {
        let mut held = claims.0.lock().ok()?;
        if held.contains_key(&entry) {
            return None;
        }
        held.insert(entry.clone(), file.clone());
        Some(Self {
            claims: Arc::clone(claims),
            entry,
            file,
        })
    }
}

impl Drop for Vouched {
    fn drop(&mut self) {
        if let Ok(mut held) = self.claims.0.lock() {
            held.remove(&self.entry);
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Writes a claim file: a token, then each path that may have changed (relative to the
/// worktree, a folder's with a trailing `/`), each ended by a NUL, as hook version 2 answers.
/// Written whole, then renamed into place.
pub(super) fn write(file: &Path, changed: &[Vec<u8>]) -> std::io::Result<()> {
    let mut bytes = b"abo\0".to_vec();
    for p in changed {
        bytes.extend_from_slice(p);
        bytes.push(0);
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}
