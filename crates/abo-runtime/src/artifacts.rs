//! Content-addressed artifacts under `.abo/artifacts/<sha256>`: logs, diffs, prompts, feedback.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use abo_core::ids::ArtifactId;

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

    pub fn put_file(&self, path: &Path) -> std::io::Result<ArtifactId> {
        self.put(&std::fs::read(path)?)
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
