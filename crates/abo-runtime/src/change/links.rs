//! Symbolic links in a change, for the policy: each one's target, and whether it points out of
//! the repository (what reads through it, a gate or a later task's agent, reads outside).

use std::path::{Component, Path};

use crate::git::{Git, GitError};

use super::FileChange;

/// Sets `symlink_target` and `escapes` on the files whose new mode is a symbolic link's.
pub(super) async fn mark(git: &Git, wt: &Path, files: &mut [FileChange]) -> Result<(), GitError> {
    if files.is_empty() {
        return Ok(());
    }
    // `:OLD NEW SHA SHA STATUS\0PATH\0`, one per file.
    let out = git
        .run_in(wt, &["diff", "HEAD", "--no-renames", "--raw", "-z"])
        .await?;
    let mut fields = out.split('\0');
    while let Some(meta) = fields.next() {
        let Some(meta) = meta.strip_prefix(':') else {
            continue;
        };
        let Some(path) = fields.next() else {
            break;
        };
        if meta.split(' ').nth(1) != Some("120000") {
            continue;
        }
        let Some(f) = files.iter_mut().find(|f| f.path == path) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(wt.join(path)) {
            f.escapes = escapes(path, &target);
            f.symlink_target = Some(target.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Whether a link at `path` (relative to the repository's root) to `target` points out of it.
fn escapes(path: &str, target: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::os::unix::fs::symlink;

    use abo_policy::secrets::Scanner;
    use abo_test_support::TestRepo;
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn a_target_escapes_when_absolute_or_above_the_root() {
        let check = |path: &str, target: &str| escapes(path, Path::new(target));
        assert!(check("a", "/etc/passwd"));
        assert!(check("a", "../x"));
        assert!(check("d/a", "../../x"));
        assert!(check("d/a", "e/../../../x"));
        assert!(!check("d/a", "../x"));
        assert!(!check("a", "d/./e"));
        assert!(!check("d/a", "e/../f"));
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
