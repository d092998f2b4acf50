//! The knowledge layer through the binary: a prompt carries what the index says about its task,
//! and `abo context` shows a task's ranked files with why, similar landed tasks and failures.

use abo_test_support::TestRepo;

use crate::{abo, config, run, task};

const GATES: &str = "version: 1\nautonomy: { overrides: { merge: A2 } }\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: test, run: 'sh check.sh' }\n";

fn project() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "check.sh",
        "if grep -rl BROKEN --exclude=check.sh .; then echo 'found BROKEN'; exit 1; fi\n",
    );
    repo.write(
        "src/header.rs",
        "/// Reads a request header.\npub fn parse_header(line: &str) -> Option<(String, String)> {\n    split_pair(line)\n}\n",
    );
    repo.write(
        "src/pair.rs",
        "pub fn split_pair(line: &str) -> Option<(String, String)> { None }\n",
    );
    repo.write(
        "src/server.rs",
        "fn serve() { let h = parse_header(\"a: b\"); }\n",
    );
    repo.write("docs/guide.md", "# Guide\n\nHow to run the server.\n");
    config(&repo, GATES);
    repo
}

#[test]
fn prompts_and_abo_context_show_what_the_index_ranks_and_why() {
    let repo = project();
    let backlog = repo.write_outside(
        "backlog.yml",
        r#"
run: { title: "knowledge" }
tasks:
  - id: header-case
    title: Make parse_header accept lower-case header names
    run: 'cp "$ABO_PROMPT_FILE" prompt-copy.md'
  - id: header-trim
    title: Trim spaces around header values in parse_header
    run: 'echo BROKEN > trim.txt'
"#,
    );
    let (code, doc, stderr) = run(&repo, &backlog, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(task(&doc, "header-case")["status"], "landed", "{doc}");
    assert_eq!(task(&doc, "header-trim")["status"], "failed", "{doc}");
    // The first task's prompt, as the command got it, holds the index's briefing.
    let branch = doc["run"]["branch"].as_str().unwrap();
    let prompt = repo.git(&["show", &format!("{branch}:prompt-copy.md")]);
    for part in [
        "## What abo's index of the repository says about this task",
        "- `src/header.rs`: ",
        "defines `parse_header`, named by the task",
        "fn `parse_header` (line 2)",
        "### `src/header.rs`",
    ] {
        assert!(prompt.contains(part), "missing {part:?} in:\n{prompt}");
    }

    // A new task like both: the index ranks the header file first, and names the landed task and
    // the failed one as similar.
    let next = repo.write_outside(
        "next.yml",
        "tasks:\n  - { id: header-fold, title: Fold long header lines in parse_header, run: 'true' }\n",
    );
    let out = abo(
        &repo,
        &[
            "context",
            "header-fold",
            "--backlog",
            next.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for part in [
        "Files, best first:\n  1. src/header.rs",
        "why: defines `parse_header`, named by the task",
        "defines: fn parse_header:2",
        "Similar tasks that landed:",
        "\"Make parse_header accept lower-case header names\"",
        "Failures to avoid:",
        "\"Trim spaces around header values in parse_header\"",
        "The prompt: ",
    ] {
        assert!(
            out.stdout.contains(part),
            "missing {part:?} in:\n{}",
            out.stdout
        );
    }
    // The graph brings in what the header file uses and what uses it.
    let json = abo(
        &repo,
        &[
            "context",
            "header-fold",
            "--backlog",
            next.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files[0], "src/header.rs", "{doc}");
    assert!(
        files.contains(&"src/pair.rs") && files.contains(&"src/server.rs"),
        "{doc}"
    );
    assert!(
        doc["prompt"]["included"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "src/header.rs"),
        "{doc}"
    );
    // An unknown task id of a backlog is a located usage error.
    let bad = abo(
        &repo,
        &["context", "nope", "--backlog", next.to_str().unwrap()],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("no task `nope`"), "{}", bad.stderr);
    // `abo gc` forgets the index of commits no prompt used within its retention.
    let gc = abo(&repo, &["gc", "--older-than", "0s", "--json"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    let gc: serde_json::Value = serde_json::from_str(&gc.stdout).unwrap();
    assert!(
        gc["knowledge_commits_removed"].as_u64().unwrap() >= 1,
        "{gc}"
    );
}
