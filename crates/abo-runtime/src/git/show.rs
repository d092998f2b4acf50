//! Landed commits' diffs as the proofs of change hash them, for many commits in one `git show`:
//! the landings of a batch prove their commits together (`git::batch`).

use std::collections::HashMap;

use abo_core::ids::CommitSha;

use super::{Git, GitError, MAX_STDOUT, Result};

/// The commits one `git show` reads at most: a batch's diffs are held in memory together.
const SHOW_COMMITS: usize = 64;

impl Git {
    /// What `git diff --numstat --patch --no-color --no-renames <commit>^ <commit>` prints, byte
    /// for byte (the numstat records, an empty line, the patch), read with the commits asked for
    /// meanwhile. A merge's diff is against its first parent, as `<commit>^` names it.
    pub async fn commit_diff(&self, commit: &CommitSha) -> Result<String> {
        self.diffs
            .ask(commit.clone(), async |commits| {
                self.commit_diffs(&commits).await
            })
            .await
            .unwrap_or_else(|| Err("the diff was not read".into()))
            .map_err(|message| GitError::Failed {
                args: format!("show {commit}"),
                message,
            })
    }

    /// Each commit's diff, in their order: a chunk's in one `git show`, and each alone when that
    /// fails (one too large, or not a commit) so that one commit fails only itself.
    async fn commit_diffs(
        &self,
        commits: &[CommitSha],
    ) -> Vec<std::result::Result<String, String>> {
        let mut out = Vec::with_capacity(commits.len());
        for chunk in commits.chunks(SHOW_COMMITS) {
            let mut read = self.show_diffs(chunk).await.unwrap_or_default();
            for c in chunk {
                let diff = match read.remove(c.as_str()) {
                    Some(d) => Ok(d),
                    None => self
                        .show_diffs(std::slice::from_ref(c))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|mut one| {
                            one.remove(c.as_str())
                                .ok_or_else(|| format!("git show did not show {c}"))
                        }),
                };
                out.push(diff);
            }
        }
        out
    }

    /// `git show` of `commits`, each diff after a header (`RS nonce sha LF`) whose nonce is drawn
    /// for this call: a change can hold a line that looks like a header it can know (a commit's
    /// sha), never like one it cannot, so no part of a diff moves to another commit. Keyed by
    /// full sha (git shows a commit asked for twice once).
    async fn show_diffs(&self, commits: &[CommitSha]) -> Result<HashMap<String, String>> {
        let nonce = super::nonce();
        let format = format!("--format=%x1e{nonce}%H");
        let mut args = vec![
            "show",
            "--numstat",
            "--patch",
            "--no-color",
            "--no-renames",
            "--no-notes",
            "--no-show-signature",
            "--diff-merges=first-parent",
            &format,
        ];
        args.extend(commits.iter().map(CommitSha::as_str));
        args.push("--");
        let out = self.run_in_capped(&self.root, &args, MAX_STDOUT).await?;
        let mut diffs = HashMap::new();
        for part in out.split(&format!("\u{1e}{nonce}")).skip(1) {
            let Some((sha, rest)) = part.split_once('\n') else {
                return Err(GitError::Failed {
                    args: "show".into(),
                    message: "a commit's header without its end".into(),
                });
            };
            // A diff follows its header after an empty line; an empty diff follows nothing.
            let diff = rest.strip_prefix('\n').unwrap_or(rest);
            diffs.insert(sha.to_owned(), diff.to_owned());
        }
        Ok(diffs)
    }
}
