//! Identifiers and small value types. Every id crossing a function boundary is a newtype.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A run's id: `YYMMDD-HHMMSS-xxxx`, short and sortable by creation time.
    RunId
);
string_id!(
    /// A task's id, unique within its run: `[a-z0-9][a-z0-9_-]*`.
    TaskId
);
string_id!(
    /// A full git object name.
    CommitSha
);
string_id!(
    /// The name of a configured backend (`claude`, `fmt`), or `command` / `patch` for inline ones.
    BackendName
);
string_id!(
    /// The name of a configured gate.
    GateName
);
string_id!(
    /// The sha256 (hex) of an artifact's content.
    ArtifactId
);

impl RunId {
    /// Builds a run id from a UTC timestamp and 16 random bits (both passed in: core has no clock).
    pub fn generate(at: Timestamp, random: u16) -> Self {
        let dt = at.to_datetime();
        Self(format!("{}-{random:04x}", dt.format("%y%m%d-%H%M%S")))
    }

    /// The run branch: `abo/<run>`.
    pub fn branch(&self) -> String {
        format!("abo/{}", self.0)
    }
}

impl TaskId {
    /// Whether `s` is a valid task id.
    pub fn is_valid(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    }
}

impl CommitSha {
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(10)]
    }
}

/// One try at a task: the run, the task and the attempt number (1, 2, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptId {
    pub run: RunId,
    pub task: TaskId,
    pub attempt: u32,
}

impl AttemptId {
    pub fn new(run: RunId, task: TaskId, attempt: u32) -> Self {
        Self { run, task, attempt }
    }

    /// The attempt's worktree, relative to the repository root.
    pub fn worktree(&self) -> String {
        format!(".abo/worktrees/{}/{}-{}", self.run, self.task, self.attempt)
    }

    /// The attempt's own branch. Not under `abo/<run>/`: a ref cannot be both a branch and a folder.
    pub fn branch(&self) -> String {
        format!("abo-attempt/{}/{}-{}", self.run, self.task, self.attempt)
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.run, self.task, self.attempt)
    }
}

/// Milliseconds since the Unix epoch, UTC. Passed in from the runtime's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// RFC 3339 with milliseconds, `Z` suffix.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Self(d.timestamp_millis()))
    }

    pub fn saturating_sub(self, other: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0 - other.0).unwrap_or(0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("invalid timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for ok in ["a", "user-model", "task_3", "9x"] {
            assert!(TaskId::is_valid(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "_a", "a b", "a/b", "é"] {
            assert!(!TaskId::is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = RunId::generate(Timestamp(1_700_000_000_000), 0xffff);
        let b = RunId::generate(Timestamp(1_700_000_001_000), 0);
        assert_eq!(a.as_str(), "231114-221320-ffff");
        assert!(a < b);
        assert_eq!(a.branch(), "abo/231114-221320-ffff");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }
}
