//! Symbolic links in a change, for the policy: each one's target, and whether it points out of
//! the repository (what reads through it, a gate or a later task's agent, reads outside).

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::git::{Git, GitError};

use super::FileChange;

/// Sets `symlink_target` and `escapes` on the files whose new mode is a symbolic link's. A link
/// escapes when it resolves out of the repository, or when a link already in the repository now
/// resolves out of it through this one (`k -> d/../../x` was inside while `d` was a directory or
/// absent; the change makes `d -> ../sub`, inside by itself).
///
/// `links` are the paths whose new mode is a link's, as the change's diff reported them.
pub(super) async fn mark(
    git: &Git,
    wt: &Path,
    files: &mut [FileChange],
    links: &[String],
) -> Result<(), GitError> {
    for path in links {
        let Some(f) = files.iter_mut().find(|f| f.path == *path) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(wt.join(path)) {
            f.escapes = escapes(wt, path, &target);
            f.symlink_target = Some(target.to_string_lossy().into_owned());
        }
    }
    if files.iter().all(|f| f.symlink_target.is_none()) {
        return Ok(());
    }
    // The links the change leaves alone: `MODE SHA STAGE\tPATH\0`, one per index entry.
    for entry in git.index_entries(wt).await? {
        let path = entry.path.as_str();
        if !entry.is_symlink() || files.iter().any(|f| f.path == path) {
            continue;
        }
        let Ok(target) = std::fs::read_link(wt.join(path)) else {
            continue;
        };
        let r = resolve(wt, path, &target);
        if !r.escapes {
            continue;
        }
        for f in files.iter_mut() {
            if f.symlink_target.is_some() && r.through.iter().any(|t| t == Path::new(&f.path)) {
                f.escapes = true;
            }
        }
    }
    Ok(())
}

/// The links a resolution follows before it calls the chain a loop (Linux's limit).
const MAX_HOPS: usize = 40;

/// One step of a path being resolved.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(p: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    p.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Step::Root),
        Component::ParentDir => Some(Step::Up),
        Component::CurDir => None,
        Component::Normal(n) => Some(Step::Name(n.to_owned())),
    })
}

/// Whether the link at `path` (relative to the repository's root `root`) to `target` resolves
/// out of the repository, as a checkout resolves it: component by component, following every
/// link on the way that the worktree holds (the change's own and those already there), at most
/// [`MAX_HOPS`] of them. It escapes when the resolution goes above the root, reaches an absolute
/// path, or loops. A text-only check misses `a -> r/..` with `r -> .`: each looks harmless alone.
fn escapes(root: &Path, path: &str, target: &Path) -> bool {
    resolve(root, path, target).escapes
}

/// A link's resolution: whether it escapes, and the links it went through (relative to the root).
struct Resolved {
    escapes: bool,
    through: Vec<PathBuf>,
}

/// See [`escapes`].
fn resolve(root: &Path, path: &str, target: &Path) -> Resolved {
    let mut through = Vec::new();
    let escaped = |through| Resolved {
        escapes: true,
        through,
    };
    let parent = Path::new(path).parent().unwrap_or(Path::new(""));
    // What is left to resolve, the next step last.
    let mut todo: Vec<Step> = steps(parent).chain(steps(target)).rev().collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    while let Some(step) = todo.pop() {
        match step {
            Step::Root => return escaped(through),
            Step::Up => {
                if !at.pop() {
                    return escaped(through);
                }
            }
            Step::Name(name) => {
                at.push(name);
                let here = root.join(&at);
                if !std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
                    continue;
                }
                hops += 1;
                through.push(at.clone());
                let Ok(next) = std::fs::read_link(&here) else {
                    return escaped(through);
                };
                if hops > MAX_HOPS {
                    return escaped(through);
                }
                // The link's own target, from the directory it is in.
                at.pop();
                todo.extend(steps(&next).rev());
            }
        }
    }
    Resolved {
        escapes: false,
        through,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::os::unix::fs::symlink;

    use abo_policy::secrets::Scanner;
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    use super::*;

    /// The check this module had before: the target's text alone. The control of the tests.
    fn textual(path: &str, target: &Path) -> bool {
        let mut depth = Path::new(path).components().count().saturating_sub(1);
        for c in target.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => return true,
                },
                Component::RootDir | Component::Prefix(_) => return true,
            }
        }
        false
    }

    #[test]
    fn a_target_escapes_when_absolute_or_above_the_root() {
        let repo = TestRepo::new();
        let check = |path: &str, target: &str| escapes(&repo.path, path, Path::new(target));
        assert!(check("a", "/etc/passwd"));
        assert!(check("a", "../x"));
        assert!(check("d/a", "../../x"));
        assert!(check("d/a", "e/../../../x"));
        assert!(!check("d/a", "../x"));
        assert!(!check("a", "d/./e"));
        assert!(!check("d/a", "e/../f"));
    }

    const DEEP: &str = concat!(
        "b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/",
        "b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/x"
    );
    const FINE: &str = concat!(
        "b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/",
        "b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/b0/x"
    );

    type Links = &'static [(&'static str, &'static str)];

    /// (what, links committed before (an empty target: a plain file), links the change adds,
    /// each new link's verdict resolved, and the textual check's verdict on it).
    type Chain = (&'static str, Links, Links, &'static [bool], &'static [bool]);

    const CHAINS: &[Chain] = &[
        (
            "the red team's chain: each `..` looks harmless alone",
            &[],
            &[
                ("docs/r", "."),
                ("docs/a", "r/.."),
                ("docs/b", "a/.."),
                ("docs/c", "b/.."),
                ("docs/d", "c/.."),
                ("docs/key.md", "d/tmp/red/home/.ssh/id_rsa"),
            ],
            // Sorted by path: a, b, c, d, key.md, r.
            &[false, true, true, true, true, false],
            &[false, false, false, false, false, false],
        ),
        (
            "through a link already in the repository",
            &[("up", "..")],
            &[("docs/x", "../up/secret")],
            &[true],
            &[false],
        ),
        (
            "through an existing link to an absolute path",
            &[("sys", "/etc")],
            &[("docs/pw", "../sys/passwd")],
            &[true],
            &[false],
        ),
        (
            "a loop",
            &[],
            &[("docs/p", "q"), ("docs/q", "p"), ("docs/s", "s")],
            &[true, true, true],
            &[false, false, false],
        ),
        (
            "more links than a checkout follows (41 hops; 39 are followed)",
            &[],
            &[("l/b0", "."), ("l/deep", DEEP), ("l/fine", FINE)],
            &[false, true, false],
            &[false, false, false],
        ),
        (
            "a link already there escapes through the change's (`d` was a directory)",
            &[("docs/d/keep.md", ""), ("docs/k", "d/../../x")],
            &[("docs/d", "../sub")],
            &[true],
            &[false],
        ),
        (
            "a link already there escapes through the change's (`d` was absent)",
            &[("docs/k", "d/../../x")],
            &[("docs/d", "..")],
            &[true],
            &[false],
        ),
        (
            "the control: chains that stay inside",
            &[("docs/x.md", "")],
            &[
                ("docs/same", "x.md"),
                ("docs/r", "."),
                ("docs/via", "r/r/../x.md"),
            ],
            &[false, false, false],
            &[false, false, false],
        ),
    ];

    #[tokio::test]
    async fn a_link_escapes_as_a_checkout_resolves_it() {
        for (what, base, change, resolved, text) in CHAINS {
            let repo = TestRepo::new();
            repo.write("README.md", "r\n");
            for (path, target) in *base {
                if target.is_empty() {
                    repo.write(path, "x\n");
                } else {
                    link(&repo, path, target);
                }
            }
            repo.commit_all("base");
            for (path, target) in *change {
                link(&repo, path, target);
            }
            let change = crate::change::summarize(
                &Git::new(repo.path.clone()),
                &repo.path,
                &Scanner::default(),
            )
            .await
            .unwrap();
            let links: Vec<&crate::change::FileChange> = change
                .files
                .iter()
                .filter(|f| f.symlink_target.is_some())
                .collect();
            let got: Vec<(&str, bool)> =
                links.iter().map(|f| (f.path.as_str(), f.escapes)).collect();
            let want: Vec<(&str, bool)> = links
                .iter()
                .map(|f| f.path.as_str())
                .zip(resolved.iter().copied())
                .collect();
            assert_eq!(got, want, "{what}");
            // The control: the textual check's verdict on the same links.
            let old: Vec<bool> = links
                .iter()
                .map(|f| textual(&f.path, Path::new(f.symlink_target.as_deref().unwrap())))
                .collect();
            assert_eq!(old, *text, "{what}: the textual check");
        }
    }

    fn link(repo: &TestRepo, path: &str, target: &str) {
        let at = repo.path.join(path);
        // A directory the link replaces.
        if at.is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        }
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(target, at).unwrap();
    }

    #[tokio::test]
    async fn the_change_carries_each_links_target_and_whether_it_escapes() {
        let repo = TestRepo::new();
        repo.write("docs/x.md", "x\n");
        repo.commit_all("base");
        symlink("/proc/self/environ", repo.path.join("env.txt")).unwrap();
        symlink("../../outside", repo.path.join("docs/up")).unwrap();
        symlink("x.md", repo.path.join("docs/same")).unwrap();
        let change = crate::change::summarize(
            &Git::new(repo.path.clone()),
            &repo.path,
            &Scanner::default(),
        )
        .await
        .unwrap();
        let links: Vec<_> = change
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.symlink_target.as_deref(), f.escapes))
            .collect();
        assert_eq!(
            links,
            [
                ("docs/same", Some("x.md"), false),
                ("docs/up", Some("../../outside"), true),
                ("env.txt", Some("/proc/self/environ"), true),
            ]
        );
        let json = change.to_json(str::to_owned);
        assert_eq!(json["files"][2]["escapes"], true);
        assert_eq!(json["files"][2]["symlink_target"], "/proc/self/environ");
    }
}
