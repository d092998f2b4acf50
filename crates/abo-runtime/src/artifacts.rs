//! Content-addressed artifacts under `.abo/artifacts/<sha256>`: logs, diffs, prompts, feedback;
//! and [`read_log`], the one way a log or transcript a process wrote is read back.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use abo_core::ids::ArtifactId;

/// The most of a log kept: a gate or an agent may print without end, and what it printed is read
/// into memory, redacted and stored. Past it, the log's first [`LOG_HEAD`] bytes and its last ones
/// are kept (the end holds the failure), with the cut said between them.
pub const MAX_LOG: u64 = 16 << 20;
/// The start of a cut log that is kept.
pub const LOG_HEAD: u64 = 1 << 20;

/// A log or transcript a process wrote, as text, at most about [`MAX_LOG`] bytes of it; a missing
/// one is empty. The file is read by position, never whole.
pub fn read_log(path: &Path) -> String {
    read_log_bounded(path, MAX_LOG, LOG_HEAD).unwrap_or_default()
}

fn read_log_bounded(path: &Path, max: u64, head: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::new();
    if len <= max {
        // A file still growing is read up to the bound only.
        (&mut f).take(max).read_to_end(&mut bytes)?;
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    (&mut f).take(head).read_to_end(&mut bytes)?;
    let tail = max - head;
    f.seek(SeekFrom::Start(len - tail))?;
    let mut end = Vec::new();
    f.take(tail).read_to_end(&mut end)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    text.push_str(&format!(
        "\n[abo: {} bytes of this log cut here; it had {len}]\n",
        len - head - tail
    ));
    text.push_str(&String::from_utf8_lossy(&end));
    Ok(text)
}

#[derive(Clone, Debug)]
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self, id: &ArtifactId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Stores bytes and returns their id; storing the same bytes twice is one file.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<ArtifactId> {
        let id = ArtifactId::new(hex::encode(Sha256::digest(bytes)));
        let path = self.path(&id);
        if !path.exists() {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(format!(".{}.{}", id, std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(id)
    }

    /// Stores a log a process wrote, bounded as [`read_log`] reads it.
    pub fn put_file(&self, path: &Path) -> std::io::Result<ArtifactId> {
        std::fs::metadata(path)?;
        self.put(read_log(path).as_bytes())
    }

    pub fn get(&self, id: &ArtifactId) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(id))
    }

    /// The last `lines` lines of an artifact, as text.
    pub fn tail(&self, id: &ArtifactId, lines: usize) -> String {
        let bytes = self.get(id).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_the_bound_keeps_its_start_and_end_and_says_what_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut text = String::from("START\n");
        text.push_str(&"x".repeat(1000));
        text.push_str("\nEND\n");
        std::fs::write(&p, &text).unwrap();
        let got = read_log_bounded(&p, 100, 10).unwrap();
        assert!(got.starts_with("START\nxxxx"), "{got}");
        assert!(got.ends_with("x\nEND\n"), "{got}");
        assert!(
            got.contains("[abo: 911 bytes of this log cut here; it had 1011]"),
            "{got}"
        );
        assert!(got.len() < 200, "{}", got.len());
        // Under the bound, the log is read as it is; a missing one is empty.
        assert_eq!(read_log_bounded(&p, 2000, 10).unwrap(), text);
        assert_eq!(read_log(&dir.path().join("none")), "");
    }
}
