//! Git notes (the proofs of change), written in batches (`git::batch`): each batch is one `git
//! fast-import` commit on the notes ref that adds them all.

use abo_core::ids::CommitSha;

use super::{Git, GitError, MAX_STDOUT, Result};

/// One note to write.
pub(super) struct Note {
    notes: String,
    commit: CommitSha,
    text: String,
}

impl Git {
    /// Sets the note of `commit` in `refs/notes/{notes}` to `text` (replacing one it had), with the
    /// other notes asked for meanwhile.
    pub async fn set_note(&self, notes: &str, commit: &CommitSha, text: &str) -> Result<()> {
        let note = Note {
            notes: notes.to_owned(),
            commit: commit.clone(),
            text: text.to_owned(),
        };
        self.notes
            .ask(note, async |batch| self.write_notes(batch).await)
            .await
            .unwrap_or_else(|| Err("the note was not written".into()))
            .map_err(|message| GitError::Failed {
                args: format!("notes --ref {notes} add"),
                message,
            })
    }

    /// How writing each note of `batch` went, in its order.
    async fn write_notes(&self, batch: Vec<Note>) -> Vec<std::result::Result<(), String>> {
        let mut outcomes: Vec<Option<std::result::Result<(), String>>> =
            batch.iter().map(|_| None).collect();
        let mut refs: Vec<&str> = batch.iter().map(|n| n.notes.as_str()).collect();
        refs.sort_unstable();
        refs.dedup();
        for notes in refs {
            let these: Vec<(usize, &Note)> = batch
                .iter()
                .enumerate()
                .filter(|(_, n)| n.notes == notes)
                .collect();
            // One note alone: `git notes add` writes it in one process, where `fast-import`
            // takes two for a small batch (it starts `unpack-objects` under
            // `fastimport.unpackLimit`).
            let notes_of: Vec<&Note> = these.iter().map(|(_, n)| *n).collect();
            let imported =
                these.len() > 1 && self.notes_in_one_commit(notes, &notes_of).await.is_ok();
            for (i, n) in these {
                outcomes[i] = Some(if imported {
                    Ok(())
                } else {
                    // One at a time, as `git notes` does it.
                    self.run(&[
                        "notes",
                        "--ref",
                        notes,
                        "add",
                        "-f",
                        "-m",
                        &n.text,
                        n.commit.as_str(),
                    ])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err("the note was not written".into())))
            .collect()
    }

    /// One commit on `refs/notes/{notes}` adding every note of `these`, by `git fast-import` (which
    /// keeps the notes tree's fanout), on the ref as read; another process moving it meanwhile
    /// makes the import fail (it only moves a ref forward), and it is tried again on the new one.
    async fn notes_in_one_commit(&self, notes: &str, these: &[&Note]) -> Result<()> {
        let refname = format!("refs/notes/{notes}");
        let ident = self.committer_ident().await?;
        let mut last = None;
        for _ in 0..5 {
            let at = match self.ref_in_files(&refname) {
                Some(at) => at,
                None => self.ref_head(&refname).await?,
            };
            let mut stream = Vec::new();
            let message = "Notes added by 'git notes add'\n";
            stream.extend_from_slice(
                format!(
                    "commit {refname}\ncommitter {ident}\ndata {}\n{message}",
                    message.len()
                )
                .as_bytes(),
            );
            if let Some(at) = &at {
                stream.extend_from_slice(format!("from {at}\n").as_bytes());
            }
            for p in these {
                // As `git notes add -m` writes it: trailing whitespace cleaned, one newline.
                let text = format!("{}\n", p.text.trim_end());
                stream.extend_from_slice(
                    format!("N inline {}\ndata {}\n", p.commit, text.len()).as_bytes(),
                );
                stream.extend_from_slice(text.as_bytes());
            }
            stream.extend_from_slice(b"\ndone\n");
            let args = ["fast-import", "--quiet", "--done"];
            let root = self.root.clone();
            let out = self
                .raw_capped(&root, &args, &[], Some(&stream), MAX_STDOUT)
                .await?;
            if out.exit == Some(0) {
                return Ok(());
            }
            last = Some(self.failed(&args, &out));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| GitError::Failed {
            args: "fast-import".into(),
            message: "the notes were not written".into(),
        }))
    }
}
