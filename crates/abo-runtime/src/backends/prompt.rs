//! The prompt an agent or model gets: the task, its acceptance and scope, the content of the
//! relevant files within a token budget, the previous attempt's feedback, and the contract.

use std::path::Path;

use abo_core::glob;
use abo_core::spec::TaskSpec;

use crate::confined;

/// What the backend must hand back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    /// An agent edits files in its working directory; abo commits.
    EditFiles,
    /// A model replies with a unified diff, which abo applies.
    DiffOnly,
}

/// The version of the prompt templates: part of the result cache's key, so changing how prompts
/// are written never reuses results of the old ones. Bump it with any change to this module's text.
pub const TEMPLATE_VERSION: u32 = 3;

pub const DIFF_SYSTEM: &str = "You are a careful senior software engineer. You change code by replying with a single unified diff, as `git diff` prints it, and nothing else is applied.";

/// Counts tokens. A real BPE tokenizer in production; tests may count otherwise.
pub trait Tokens {
    fn count(&self, text: &str) -> usize;
}

/// About four characters a token: used only if the BPE tables cannot be loaded.
pub struct ApproxTokens;

impl Tokens for ApproxTokens {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

impl Tokens for tiktoken_rs::CoreBPE {
    fn count(&self, text: &str) -> usize {
        self.encode_ordinary(text).len()
    }
}

/// Files over this size are never put in a prompt.
const MAX_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Default, PartialEq)]
pub struct Prompt {
    pub text: String,
    /// Files whose content is in the prompt.
    pub included: Vec<String>,
    /// Relevant files left out for the budget (or size).
    pub omitted: Vec<String>,
    /// Relevant files abo does not read for an agent: symbolic links, what its sandbox denies,
    /// anything but a regular file (see `confined`).
    pub refused: Vec<String>,
    pub tokens: usize,
}

/// The files relevant to a task: those its title, description or acceptance name, then those in
/// its scope, in that order, among `tracked` (the worktree's files).
pub fn relevant_files(task: &TaskSpec, tracked: &[String]) -> Vec<String> {
    let text = format!(
        "{}\n{}\n{}",
        task.title,
        task.description,
        task.acceptance.join("\n")
    );
    let named = tracked.iter().filter(|f| {
        text.match_indices(f.as_str()).any(|(i, _)| {
            let before = text[..i].chars().last();
            let after = text[i + f.len()..].chars().next();
            let edge = |c: Option<char>| {
                c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '/' || c == '.'))
            };
            edge(before)
                && (edge(after)
                    || after == Some('.')
                        && text[i + f.len() + 1..].starts_with(|c: char| c.is_whitespace()))
        })
    });
    let mut out: Vec<String> = named.cloned().collect();
    for f in tracked {
        if glob::any(&task.paths, f) && !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

/// What a prompt is for.
pub struct For<'a> {
    pub task: &'a TaskSpec,
    pub attempt: u32,
    pub feedback: Option<&'a str>,
    pub contract: Contract,
    /// What the worktree's files are read under: the agent's own sandbox rules.
    pub rules: &'a confined::Rules,
    /// What the knowledge index says about the task (`backends::briefing`), or nothing.
    pub briefing: &'a str,
}

pub fn build(
    what: &For<'_>,
    worktree: &Path,
    files: &[String],
    budget: usize,
    tokens: &dyn Tokens,
) -> Prompt {
    let For {
        task,
        attempt,
        feedback,
        contract,
        rules,
        briefing,
    } = *what;
    let mut p = format!(
        "# Task `{}`: {}\n\nType: {}. Attempt {attempt}.\n",
        task.id, task.title, task.kind
    );
    if !task.description.trim().is_empty() {
        p.push_str(&format!("\n{}\n", task.description.trim_end()));
    }
    if !task.acceptance.is_empty() {
        p.push_str("\n## Acceptance\n\n");
        for a in &task.acceptance {
            p.push_str(&format!("- {a}\n"));
        }
    }
    if !task.paths.is_empty() {
        p.push_str("\n## Scope\n\nChange only files matching these paths (relative to the repository root):\n\n");
        for a in &task.paths {
            p.push_str(&format!("- `{a}`\n"));
        }
    }
    p.push_str("\n## Constraints\n\n");
    p.push_str(
        "- Keep the change small and focused on this task; do not reformat unrelated code.\n",
    );
    p.push_str(
        "- Do not commit, push or create branches: abo commits the change after its own checks.\n",
    );
    p.push_str("- Never write secrets (keys, tokens, passwords) into files.\n");
    if let Some(f) = feedback {
        p.push_str(&format!(
            "\n## The previous attempt failed\n\n{}\n",
            f.trim_end()
        ));
    }
    p.push_str(briefing);
    let contract_text = match contract {
        Contract::EditFiles => "\n## How to answer\n\nEdit the files in your working directory; it is the repository's root. When you are done, say in one paragraph what you changed and why.\n".to_owned(),
        Contract::DiffOnly => "\n## How to answer\n\nReply with exactly one unified diff in a ```diff fenced block, as `git diff` prints it: `--- a/PATH` and `+++ b/PATH` headers (`/dev/null` for new or deleted files), then `@@` hunks with three lines of context. Paths are relative to the repository root. Before the block, one short paragraph may say what you changed and why; nothing else in the reply is applied.\n".to_owned(),
    };
    let mut used = tokens.count(&p) + tokens.count(&contract_text);
    let mut included = Vec::new();
    let mut omitted = Vec::new();
    let mut refused = Vec::new();
    let mut section = String::new();
    for f in files {
        // Read as the agent could: no symbolic link followed, nothing denied to its sandbox.
        let content = match confined::read(worktree, f, rules, MAX_FILE_BYTES) {
            Ok(b) => String::from_utf8(b).ok(),
            Err(
                confined::Refused::TooLarge { .. }
                | confined::Refused::Missing { .. }
                | confined::Refused::Io { .. },
            ) => None,
            Err(_) => {
                refused.push(f.clone());
                continue;
            }
        };
        let Some(content) = content else {
            omitted.push(f.clone());
            continue;
        };
        let block = format!(
            "\n### `{f}`\n\n````\n{}{}````\n",
            content,
            if content.ends_with('\n') || content.is_empty() {
                ""
            } else {
                "\n"
            }
        );
        let cost = tokens.count(&block);
        if used + cost > budget {
            omitted.push(f.clone());
            continue;
        }
        used += cost;
        section.push_str(&block);
        included.push(f.clone());
    }
    if !section.is_empty() {
        p.push_str("\n## Relevant files (current content)\n");
        p.push_str(&section);
    }
    if !omitted.is_empty() {
        p.push_str(&format!(
            "\nAlso relevant, not shown for length: {}.\n",
            omitted
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !refused.is_empty() {
        p.push_str(&format!(
            "\nNot shown: {} (abo follows no symbolic link and reads no file your sandbox denies).\n",
            refused
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    p.push_str(&contract_text);
    let tokens_total = tokens.count(&p);
    Prompt {
        text: p,
        included,
        omitted,
        refused,
        tokens: tokens_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abo_core::backlog::TaskType;
    use abo_core::ids::{BackendName, TaskId};
    use abo_core::spec::BackendSpec;

    struct Words;
    impl Tokens for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    fn task() -> TaskSpec {
        TaskSpec {
            id: TaskId::new("t"),
            title: "Fix the parser in src/parse.rs".into(),
            kind: TaskType::Code,
            description: "See also README.md.".into(),
            acceptance: vec!["tests pass".into()],
            paths: vec!["src/**".into()],
            deps: vec![],
            backend: BackendSpec::Command {
                name: BackendName::new("c"),
                run: String::new(),
            },
            gates: vec![],
            labels: vec![],
            max_attempts: 1,
            priority: 0,
            skipped: None,
            needs_plan_approval: false,
            autonomy: Default::default(),
            origin: String::new(),
            budget: None,
            routed: false,
            context_tokens: 0,
        }
    }

    #[test]
    fn picks_named_then_scoped_files_within_the_budget() {
        let tracked: Vec<String> = [
            "README.md",
            "src/parse.rs",
            "src/big.rs",
            "src/lib.rs",
            "docs/x.md",
            "src/parse.rs.orig",
        ]
        .map(String::from)
        .to_vec();
        let files = relevant_files(&task(), &tracked);
        assert_eq!(
            files,
            [
                "README.md",
                "src/parse.rs",
                "src/big.rs",
                "src/lib.rs",
                "src/parse.rs.orig"
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("README.md"), "read me\n").unwrap();
        std::fs::write(dir.path().join("src/parse.rs"), "fn parse() {}\n").unwrap();
        std::fs::write(dir.path().join("src/big.rs"), "word ".repeat(500)).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "mod parse;\n").unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("src/env.rs")).unwrap();
        let t = task();
        let rules = confined::Rules::default();
        let what = For {
            task: &t,
            attempt: 2,
            feedback: Some("gate `test` failed"),
            contract: Contract::DiffOnly,
            rules: &rules,
            briefing: "\n## What abo's index of the repository says about this task\n\n- `src/parse.rs`: the task names it.\n",
        };
        let mut files = files[..4].to_vec();
        files.push("src/env.rs".into());
        let p = build(&what, dir.path(), &files, 300, &Words);

        assert_eq!(p.included, ["README.md", "src/parse.rs", "src/lib.rs"]);
        assert_eq!(p.omitted, ["src/big.rs"]);
        assert_eq!(p.refused, ["src/env.rs"]);
        assert!(!p.text.contains("PATH="), "{}", p.text);
        assert!(p.tokens <= 300, "{}", p.tokens);
        for part in [
            "# Task `t`: Fix the parser",
            "Attempt 2",
            "- `src/**`",
            "## The previous attempt failed\n\ngate `test` failed",
            "### `src/parse.rs`\n\n````\nfn parse() {}\n````",
            "not shown for length: `src/big.rs`",
            "Not shown: `src/env.rs` (abo follows no symbolic link",
            "```diff fenced block",
            "- `src/parse.rs`: the task names it.",
        ] {
            assert!(p.text.contains(part), "missing {part:?} in:\n{}", p.text);
        }
    }
}
