//! Git notes (the proofs of change), written in batches: landings side by side prove their commits
//! side by side, and each `git notes add` is a process that moves the notes ref (two at once fail
//! to lock it). A note asked for while another batch is being written waits for the next, and
//! each batch is one `git fast-import` commit on the notes ref that adds them all.

use abo_core::ids::CommitSha;

use super::{Git, GitError, MAX_STDOUT, Result};

/// One note to write, and where to say how it went.
struct Pending {
    notes: String,
    commit: CommitSha,
    text: String,
    done: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
}

/// The notes waiting, and the writer's turn.
#[derive(Default)]
pub(super) struct Queue {
    pending: std::sync::Mutex<Vec<Pending>>,
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("notes::Queue")
    }
}

impl Git {
    /// Sets the note of `commit` in `refs/notes/{notes}` to `text` (replacing one it had), with the
    /// other notes asked for meanwhile.
    pub async fn set_note(&self, notes: &str, commit: &CommitSha, text: &str) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.notes
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Pending {
                notes: notes.to_owned(),
                commit: commit.clone(),
                text: text.to_owned(),
                done,
            });
        {
            let _turn = self.notes.writer.lock().await;
            let batch = std::mem::take(
                &mut *self
                    .notes
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            // Empty when the writer before took this note with its own.
            if !batch.is_empty() {
                self.write_notes(batch).await;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the note was not written".into()))
            .map_err(|message| GitError::Failed {
                args: format!("notes --ref {notes} add"),
                message,
            })
    }

    async fn write_notes(&self, mut batch: Vec<Pending>) {
        while let Some(first) = batch.first() {
            let notes = first.notes.clone();
            let (these, rest): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| p.notes == notes);
            batch = rest;
            // One note alone: `git notes add` writes it in one process, where `fast-import`
            // takes two for a small batch (it starts `unpack-objects` under
            // `fastimport.unpackLimit`).
            let imported =
                these.len() > 1 && self.notes_in_one_commit(&notes, &these).await.is_ok();
            for p in these {
                let outcome = if imported {
                    Ok(())
                } else {
                    // One at a time, as `git notes` does it.
                    self.run(&[
                        "notes",
                        "--ref",
                        &notes,
                        "add",
                        "-f",
                        "-m",
                        &p.text,
                        p.commit.as_str(),
                    ])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                };
                let _ = p.done.send(outcome);
            }
        }
    }

    /// One commit on `refs/notes/{notes}` adding every note of `these`, by `git fast-import` (which
    /// keeps the notes tree's fanout), on the ref as read; another process moving it meanwhile
    /// makes the import fail (it only moves a ref forward), and it is tried again on the new one.
    async fn notes_in_one_commit(&self, notes: &str, these: &[Pending]) -> Result<()> {
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
