//! Model APIs as backends, against a stub server on 127.0.0.1 speaking each provider's format.

use abo_test_support::TestRepo;
use abo_test_support::stub::{Canned, StubServer, anthropic_reply, openai_reply};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo_env, artifact, brief, config, events, s, task};

const DIFF: &str = "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n";

fn reply_with_diff() -> String {
    format!("I extended the greeting.\n\n```diff\n{DIFF}```\n")
}

fn setup(backends: &str) -> TestRepo {
    setup_with(backends, "")
}

fn setup_with(backends: &str, extra: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("greeting.txt", "hello\n");
    // A secret that must never reach the model: the key's own value, in a file in scope.
    repo.write(
        "notes.txt",
        "the key is sk-test-abcdefghijklmnopqrstuvwxyz012345\n",
    );
    config(
        &repo,
        &format!(
            "version: 1\n{extra}attempts: {{ max: 2, stop_after_consecutive_failures: 0 }}\nbackends:\n{backends}"
        ),
    );
    repo
}

fn run(repo: &TestRepo, backlog: &str, env: &[(&str, String)]) -> (i32, Value, String) {
    let b = repo.write_outside("b.yml", backlog);
    let out = abo_env(repo, &["run", b.to_str().unwrap(), "--json"], env);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    (out.code, doc, out.stderr)
}

#[test]
fn anthropic_reply_is_applied_and_priced_and_the_key_never_leaks() {
    let server = StubServer::start(vec![Canned::ok(anthropic_reply(
        &reply_with_diff(),
        2000,
        100,
    ))]);
    let repo = setup(&format!(
        "  premium: {{ kind: anthropic, model: claude-sonnet-4-5, base_url: \"{}\", api_key_env: ABO_TEST_KEY }}\n",
        server.url
    ));
    let key = "sk-test-abcdefghijklmnopqrstuvwxyz012345".to_owned();
    let (code, doc, stderr) = run(
        &repo,
        "tasks:\n  - { id: greet, title: Extend the greeting in greeting.txt, backend: premium, paths: ['*.txt'] }\n",
        &[("ABO_TEST_KEY", key.clone())],
    );
    assert_eq!(code, 0, "{stderr}");
    let t = task(&doc, "greet");
    let want = (2000.0 * 3.0 + 100.0 * 15.0) / 1e6;
    assert_eq!(
        (t["status"].as_str(), t["tokens"].as_u64()),
        (Some("landed"), Some(2100))
    );
    assert!((t["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12);
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        repo.git(&["show", &format!("{branch}:greeting.txt")]),
        "hello, world\n"
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (
            r.path.as_str(),
            r.header("x-api-key"),
            r.header("anthropic-version")
        ),
        ("/v1/messages", Some(key.as_str()), Some("2023-06-01"))
    );
    assert_eq!(r.body["model"], "claude-sonnet-4-5");
    let prompt = r.body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("### `greeting.txt`\n\n````\nhello\n````"),
        "the file in scope is in the prompt:\n{prompt}"
    );
    assert!(prompt.contains("```diff fenced block"));
    assert!(
        !prompt.contains(&key),
        "the key's value is redacted from the prompt"
    );
    assert!(prompt.contains("[REDACTED:env:ABO_TEST_KEY]"), "{prompt}");

    let id = doc["run"]["id"].as_str().unwrap();
    let e = events(&repo, id)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    assert_eq!(
        (
            e["data"]["cost_source"].as_str(),
            e["data"]["message"].as_str()
        ),
        (Some("estimated"), Some("I extended the greeting."))
    );
    assert_eq!(artifact(&repo, &e["data"]["prompt"]), prompt);
    // No trace of the key anywhere abo wrote. The worktrees abo keeps for later attempts are
    // checkouts of the repository, whose own notes.txt holds it, and nothing else of theirs does.
    let pool = repo.path.join(".abo/worktrees/.pool");
    assert_eq!(
        abo_test_support::files_containing(&repo.path.join(".abo"), &key)
            .into_iter()
            .filter(|p| !(p.starts_with(&pool) && p.ends_with("notes.txt")))
            .collect::<Vec<_>>(),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn openai_rate_limits_are_retried_honouring_retry_after() {
    let server = StubServer::start(vec![
        Canned::status(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
        )
        .header("retry-after", "1"),
        Canned::status(503, r#"{"error":{"message":"overloaded"}}"#).header("retry-after", "0"),
        Canned::ok(openai_reply(
            "qwen2.5-coder:7b",
            &reply_with_diff(),
            1000,
            50,
        )),
    ]);
    let repo = setup(&format!(
        "  local: {{ kind: openai, model: qwen2.5-coder:7b, base_url: \"{}/v1\" }}\n",
        server.url
    ));
    let started = std::time::Instant::now();
    let (code, doc, stderr) = run(
        &repo,
        "tasks:\n  - { id: greet, title: Extend greeting.txt, backend: local }\n",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        started.elapsed().as_millis() >= 1000,
        "Retry-After: 1 was honoured"
    );
    assert_eq!(server.requests().len(), 3);
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
    assert_eq!(
        server.requests()[0].header("authorization"),
        None,
        "a local server gets no key"
    );
    let t = task(&doc, "greet");
    // A local model without a price costs nothing.
    assert_eq!(
        (
            t["status"].as_str(),
            t["tokens"].as_u64(),
            t["cost_usd"].as_f64()
        ),
        (Some("landed"), Some(1050), Some(0.0))
    );
    let id = doc["run"]["id"].as_str().unwrap();
    let e = events(&repo, id)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    let log = artifact(&repo, &e["data"]["log"]);
    assert_eq!(
        log,
        "try failed: HTTP 429: Rate limit reached\ntry failed: HTTP 503: overloaded\n"
    );
}

#[test]
fn replies_without_a_usable_diff_fail_the_attempt_and_the_next_one_is_told_why() {
    let not_applying =
        "```diff\n--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-goodbye\n+farewell\n```";
    let server = StubServer::start(vec![
        Canned::ok(openai_reply("gpt-4.1", "I would rather not.", 10, 5)),
        Canned::ok(openai_reply("gpt-4.1", not_applying, 10, 5)),
        Canned::ok("<html>502 Bad Gateway</html>"),
    ]);
    // One at a time, so the stub's replies go to the attempts in order.
    let repo = setup_with(
        &format!(
            "  local: {{ kind: openai, model: gpt-4.1, base_url: \"{}/v1\" }}\n",
            server.url
        ),
        "parallelism: { max_parallel: 1 }\n",
    );
    let (code, doc, _) = run(
        &repo,
        "tasks:\n  - { id: greet, title: G, backend: local, priority: 1 }\n  - { id: again, title: A, backend: local, max_attempts: 1 }\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        brief(&doc),
        s(&[("greet", "failed", 2), ("again", "failed", 1)])
    );
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let retry = evs.iter().find(|e| e["kind"] == "task.retry").unwrap();
    assert_eq!(retry["data"]["reason"], "no diff in the reply");
    // The second attempt's prompt carried that feedback.
    let second = &server.requests()[1];
    assert!(
        second.body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Attempt 1 failed: no diff in the reply")
    );
    assert!(
        task(&doc, "greet")["reason"]
            .as_str()
            .unwrap()
            .starts_with("the diff does not apply: error: patch failed: greeting.txt:1"),
        "{doc}"
    );
    assert!(
        task(&doc, "again")["reason"]
            .as_str()
            .unwrap()
            .starts_with("the model API failed after 1 try: malformed reply: not JSON"),
        "{doc}"
    );
}

#[test]
fn plan_turns_a_ticket_into_a_checked_backlog() {
    let good = r#"{"title": "Greetings", "tasks": [
      {"id": "greet", "title": "Extend the greeting", "type": "code", "paths": ["greeting.txt"]},
      {"id": "docs", "title": "Document it", "type": "docs", "deps": ["greet"], "acceptance": ["README mentions it"]}]}"#;
    let cyclic = r#"{"tasks": [{"id": "a", "title": "A", "type": "code", "deps": ["b"]}, {"id": "b", "title": "B", "type": "code", "deps": ["a"]}]}"#;
    let server = StubServer::start(vec![
        Canned::ok(openai_reply(
            "gpt-4.1",
            &format!("```json\n{good}\n```"),
            500,
            80,
        )),
        Canned::ok(openai_reply("gpt-4.1", cyclic, 500, 80)),
    ]);
    let repo = setup(&format!(
        "  default: local\n  local: {{ kind: openai, model: gpt-4.1, base_url: \"{}/v1\" }}\n",
        server.url
    ));
    let ticket = repo.write_outside("TICKET.md", "Greet the whole world, and document it.\n");
    let out_file = repo.outside.join("planned.yml");
    let out = abo_env(
        &repo,
        &[
            "plan",
            ticket.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("planned 2 task(s) with `local` (580 tokens, $0.0016)"),
        "{}",
        out.stderr
    );
    let yaml = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        yaml.contains("- id: docs") && yaml.contains("deps:\n  - greet"),
        "{yaml}"
    );
    // The task the model left without paths gets the files the index ranks for it.
    let planned = abo_core::backlog::parse_yaml("planned.yml", &yaml).unwrap();
    let docs = planned.tasks.iter().find(|t| t.id == "docs").unwrap();
    assert_eq!(docs.paths, ["README.md"], "{yaml}");
    let prompt = server.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("Greet the whole world")
            && prompt.contains("- greeting.txt")
            && prompt.contains("\"required\": [\"title\", \"tasks\"]")
            && prompt.contains("## Files most relevant to the ticket (abo's index of the repository), and why\n\n- greeting.txt: its text matches `greet`"),
        "{prompt}"
    );

    // Not over an existing file without --force; and a cyclic answer is rejected with the reason.
    let out = abo_env(
        &repo,
        &[
            "plan",
            ticket.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = abo_env(
        &repo,
        &[
            "plan",
            ticket.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
            "--force",
        ],
        &[],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("was rejected: dependency cycle: a -> b -> a"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        yaml,
        "a rejected plan writes nothing"
    );
}
