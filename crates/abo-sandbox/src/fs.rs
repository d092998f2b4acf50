//! Landlock: what the sandboxed process may read, write and connect to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

use crate::{Mode, Network, Profile};

/// The newest ABI abo knows; the kernel's may be older (best effort) or must match (required).
const ABI_USED: ABI = ABI::V6;

/// The devices a sandboxed process may read: `/dev/pts` is a new devpts instance in its mount
/// namespace, so it holds only terminals the sandbox opened itself.
const DEVICES: [&str; 9] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
];

/// Directories to grant read access to so that everything is readable except `deny`: the
/// filesystem root, split around each denied path (its siblings at every level are granted, the
/// path itself is not). Paths that do not exist deny nothing.
///
/// A denied path inside another is already unreadable: the outer one is split first, whatever
/// the order asked, so that denying `/dev/shm/x` and `/dev` does not grant `/dev`'s other entries
/// (the whole disk, to root). A sibling that is a symbolic link is not granted: a rule is on what
/// a path resolves to, so a link next to a denied path (`ln -s .ssh keys`, committed to a
/// repository) would grant the denied path itself, and a link to a pipe (`/dev/stdin`) is refused
/// by Landlock outright.
pub(crate) fn readable_roots(deny: &[PathBuf]) -> Vec<PathBuf> {
    let mut deny: Vec<PathBuf> = deny.iter().filter_map(|d| d.canonicalize().ok()).collect();
    deny.sort_by_key(|d| d.components().count());
    let mut roots: BTreeSet<PathBuf> = BTreeSet::from([PathBuf::from("/")]);
    for d in deny {
        let Some(root) = roots.iter().find(|r| d.starts_with(r)).cloned() else {
            continue; // already unreadable
        };
        roots.remove(&root);
        let mut cur = root.clone();
        let rest = d
            .strip_prefix(&root)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for comp in rest.components() {
            let next = cur.join(comp);
            if let Ok(entries) = std::fs::read_dir(&cur) {
                for e in entries.flatten() {
                    let p = e.path();
                    let link = e.file_type().is_ok_and(|t| t.is_symlink());
                    if p != next && !link {
                        roots.insert(p);
                    }
                }
            }
            cur = next;
        }
    }
    roots.into_iter().collect()
}

/// Applies the profile's filesystem and network rules to this process and its future children.
/// Returns a warning when best effort left something unenforced.
pub(crate) fn restrict(p: &Profile) -> Result<Option<String>, String> {
    let level = match p.mode {
        Mode::Required => CompatLevel::HardRequirement,
        Mode::BestEffort => CompatLevel::BestEffort,
    };
    let abi = ABI_USED;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(all)
        .map_err(|e| e.to_string())?
        // Signals to processes outside the sandbox, and abstract UNIX sockets bound outside it
        // (the host's, for agents, which keep its network namespace), are refused.
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(|e| e.to_string())?;
    if matches!(p.network, Network::Proxy { .. }) {
        // Connections only to the proxy's port, and no listening socket at all: nothing outside
        // can connect in.
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    // Devices are not readable as a whole (as root, `/dev/vda` is the whole disk, denied files
    // and all): only these are.
    let mut deny = p.deny_read.clone();
    deny.push(PathBuf::from("/dev"));
    let readable = readable_roots(&deny);
    created = created
        .add_rules(path_beneath_rules(&readable, read))
        .and_then(|r| r.add_rules(path_beneath_rules(&p.allow_read, read)))
        // Directories stay listable everywhere (`ls ~` works with `~/.ssh` denied): the names in
        // a denied directory can be listed, nothing in it can be read.
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::ReadDir)))
        // The sandbox's own terminals (a devpts of its own) and the harmless devices.
        .and_then(|r| r.add_rules(path_beneath_rules(DEVICES, read | AccessFs::IoctlDev)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                // Not /dev/tty: a sandboxed process has no terminal (and could type into abo's).
                ["/dev/null", "/dev/zero", "/dev/full", "/dev/ptmx"],
                AccessFs::from_file(abi),
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(&p.write, all)))
        .map_err(|e| e.to_string())?;
    if let Network::Proxy { port } = p.network {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| e.to_string())?;
    }
    let status = created.restrict_self().map_err(|e| e.to_string())?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => None,
        RulesetStatus::PartiallyEnforced => {
            Some("Landlock is only partly enforced on this kernel (an older ABI)".into())
        }
        RulesetStatus::NotEnforced => Some("Landlock is not enforced on this kernel".into()),
    })
}

/// The kernel's Landlock ABI version, or why there is none.
pub(crate) fn abi_version() -> Result<i32, String> {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or an error); it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        i32::try_from(v).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_denied_paths_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for d in [
            "home/.ssh",
            "home/.config/gcloud",
            "home/.config/other",
            "home/code",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let roots = readable_roots(&[
            base.join("home/.ssh"),
            base.join("home/.config/gcloud"),
            base.join("does-not-exist"),
        ]);
        let has = |p: &str| roots.contains(&base.join(p));
        assert!(has("home/code") && has("home/.config/other"));
        assert!(!has("home/.ssh") && !has("home/.config/gcloud"));
        assert!(!roots.iter().any(|r| base.join("home/.ssh").starts_with(r)));
        assert!(roots.contains(&PathBuf::from("/usr")));
    }

    /// Denying a path inside a denied directory, listed first (a repository's `.abo/` under
    /// `/dev/shm`, before `/dev`), granted the denied directory's other entries.
    #[test]
    fn a_denied_path_inside_a_denied_directory_grants_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for d in ["dev/shm/repo/.abo", "dev/disk", "other"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let inner = base.join("dev/shm/repo/.abo");
        let outer = base.join("dev");
        // What is granted under `base` (the rest of the machine changes as other tests run).
        let under = |deny: &[PathBuf]| -> Vec<PathBuf> {
            let roots = readable_roots(deny);
            roots.into_iter().filter(|r| r.starts_with(&base)).collect()
        };
        let roots = under(&[inner.clone(), outer.clone()]);
        assert!(roots.iter().all(|r| !r.starts_with(&outer)), "{roots:?}");
        assert_eq!(roots, vec![base.join("other")]);
        // The same list the other way round grants the same.
        assert_eq!(under(&[outer, inner]), roots);
    }

    /// A link beside a denied path would grant what it points to: the denied path itself.
    #[test]
    fn a_link_beside_a_denied_path_is_not_granted() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("home/.ssh")).unwrap();
        std::fs::create_dir_all(base.join("home/code")).unwrap();
        std::os::unix::fs::symlink(".ssh", base.join("home/keys")).unwrap();
        let roots = readable_roots(&[base.join("home/.ssh")]);
        assert!(roots.contains(&base.join("home/code")));
        assert!(!roots.contains(&base.join("home/keys")), "{roots:?}");
    }
}
