//! Backlogs: a YAML file, a Markdown plan, or a directory of them,
//! parsed into [`BacklogTask`]s that remember where each field was written.

mod markdown;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use markdown::parse_markdown;
pub use yaml::parse_yaml;

/// The kinds of task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    Spec,
    #[default]
    Code,
    Test,
    Docs,
    Refactor,
    Review,
    Lint,
    Perf,
    Security,
    DepUpdate,
    Chore,
}

impl TaskType {
    pub const ALL: [TaskType; 11] = [
        Self::Spec,
        Self::Code,
        Self::Test,
        Self::Docs,
        Self::Refactor,
        Self::Review,
        Self::Lint,
        Self::Perf,
        Self::Security,
        Self::DepUpdate,
        Self::Chore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::Code => "code",
            Self::Test => "test",
            Self::Docs => "docs",
            Self::Refactor => "refactor",
            Self::Review => "review",
            Self::Lint => "lint",
            Self::Perf => "perf",
            Self::Security => "security",
            Self::DepUpdate => "dep_update",
            Self::Chore => "chore",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's own budget (enforced by the budget issue; parsed and kept now).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBudget {
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
}

/// Where a backlog puts a task: Markdown sections decide whether it may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// YAML tasks, and Markdown tasks under a "Ready" heading (or in a plan without sections).
    Ready,
    /// Markdown "Pending": waits for a `plan` approval.
    Pending,
    /// Markdown "Not Ready": never run; the reason is the task's `Reason:` or the section's text.
    NotReady { reason: String },
}

/// A 1-based line and column in a backlog file.
pub type Pos = (usize, usize);

/// One task as written, with the positions of its fields for error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogTask {
    pub id: String,
    pub title: String,
    pub kind: TaskType,
    pub description: String,
    pub acceptance: Vec<String>,
    pub paths: Vec<String>,
    pub deps: Vec<String>,
    pub backend: Option<String>,
    pub run: Option<String>,
    pub patch: Option<String>,
    pub gates: Option<Vec<String>>,
    pub labels: Vec<String>,
    pub autonomy: BTreeMap<String, String>,
    pub budget: Option<TaskBudget>,
    pub max_attempts: Option<u32>,
    pub priority: i64,
    pub section: Section,
    /// The file the task was written in.
    pub file: String,
    /// Where the task starts.
    pub pos: Pos,
    /// Where its fields are: `id`, `deps`, `deps[1]`, `backend`, `patch`, `gates[0]`...
    pub field_pos: BTreeMap<String, Pos>,
}

impl BacklogTask {
    /// The position of a field, else of the task.
    pub fn pos_of(&self, field: &str) -> Pos {
        self.field_pos.get(field).copied().unwrap_or(self.pos)
    }
}

/// A parsed backlog file.
#[derive(Clone, Debug, PartialEq)]
pub struct Backlog {
    pub file: String,
    pub title: Option<String>,
    pub profile: Option<String>,
    pub tasks: Vec<BacklogTask>,
}

/// Parses one backlog file by its extension: `.md`/`.markdown` as a plan, anything else as YAML.
pub fn parse_file(file: &str, text: &str) -> Result<Backlog, crate::diag::InputErrors> {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".md") || lower.ends_with(".markdown") {
        parse_markdown(file, text)
    } else {
        parse_yaml(file, text).map_err(Into::into)
    }
}
