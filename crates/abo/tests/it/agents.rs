//! Agent CLIs as backends, against fake scripts that print each tool's documented output.

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo_env, artifact, brief, config, events, s, task};

type Agents = crate::FakeAgents;

fn setup(extra_config: &str) -> Agents {
    let mut a = crate::FakeAgents::new(&format!(
        "version: 1\nsandbox: {{ mode: off }}\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\n{extra_config}backends:\n  claude: {{ kind: claude-code, model: sonnet, max_turns: 5 }}\n  codex: {{ kind: codex, model: gpt-5-codex }}\n  aider: {{ kind: aider, model: gpt-4.1 }}\n  goose: {{ kind: goose }}\n"
    ));
    // An enclosing agent session's variables: the agents abo starts must not see them.
    a.env.push(("CLAUDECODE", "1".to_owned()));
    a.env.push(("CLAUDE_CODE_ENTRYPOINT", "cli".to_owned()));
    a
}

fn finished_event(repo: &TestRepo, id: &str, task: &str) -> Value {
    events(repo, id)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished" && e["task"] == task)
        .unwrap()
}

#[test]
fn each_agent_lands_its_change_with_honest_usage_and_cost() {
    let a = setup("");
    let (code, doc, stderr) = a.run(
        "tasks:\n  - { id: by-claude, title: C, backend: claude }\n  - { id: by-codex, title: X, backend: codex }\n  - { id: by-aider, title: A, backend: aider }\n  - { id: by-goose, title: G, backend: goose }\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        brief(&doc),
        s(&[
            ("by-claude", "landed", 1),
            ("by-codex", "landed", 1),
            ("by-aider", "landed", 1),
            ("by-goose", "landed", 1)
        ])
    );
    let id = doc["run"]["id"].as_str().unwrap();

    // Claude Code: modelUsage counted, its total_cost_usd reported.
    let t = task(&doc, "by-claude");
    assert_eq!(
        (
            t["tokens"].as_u64(),
            t["cost_usd"].as_f64(),
            t["backend"].as_str()
        ),
        (Some(12 + 300 + 15000 + 900), Some(0.0421), Some("claude"))
    );
    let e = finished_event(&a.repo, id, "by-claude");
    assert_eq!(e["data"]["cost_source"], "reported");
    assert_eq!(e["data"]["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(e["data"]["message"], "Added the file the task asked for.");
    assert!(artifact(&a.repo, &e["data"]["transcript"]).contains(r#""type":"result""#));
    let prompt = artifact(&a.repo, &e["data"]["prompt"]);
    assert!(
        prompt.contains("# Task `by-claude`: C") && prompt.contains("Do not commit"),
        "{prompt}"
    );
    let args = a.logged("claude-by-claude-1.args");
    // abo's in-attempt MCP server (its `check` tool), allowed ahead.
    assert!(
        args.starts_with("-p\n--output-format\nstream-json\n--verbose\n--mcp-config\n"),
        "{args}"
    );
    assert!(args.contains("/agent.tmp/abo-mcp.json\n--allowedTools\nmcp__abo__check\n--permission-mode\nacceptEdits\n--permission-prompts\nnone\n--max-turns\n5\n--model\nsonnet\n# Task `by-claude`"), "{args}");
    let env = a.logged("claude-by-claude-1.env");
    assert!(
        !env.contains("CLAUDECODE=") && !env.contains("CLAUDE_CODE_ENTRYPOINT="),
        "agent variables removed: {env}"
    );
    assert!(env.contains(&format!("ABO_RUN_ID={id}")));
    assert_eq!(
        a.logged("claude-by-claude-1.stdin").trim(),
        "/dev/null",
        "stdin is closed"
    );

    // Codex: cached input is part of input and output includes reasoning; USD estimated from prices.
    let t = task(&doc, "by-codex");
    assert_eq!(t["tokens"].as_u64(), Some(24763 + 122));
    let e = finished_event(&a.repo, id, "by-codex");
    assert_eq!(e["data"]["cost_source"], "estimated");
    let want = (315.0 * 1.25 + 24448.0 * 0.125 + 122.0 * 10.0) / 1e6;
    assert!((t["cost_usd"].as_f64().unwrap() - want).abs() < 1e-9, "{t}");

    // aider: its analytics log; the cost it computed is reported.
    let t = task(&doc, "by-aider");
    assert_eq!(
        (t["tokens"].as_u64(), t["cost_usd"].as_f64()),
        (Some(4350), Some(0.0096))
    );
    assert_eq!(
        finished_event(&a.repo, id, "by-aider")["data"]["model"],
        "gpt-4.1"
    );

    // goose: a total only, and no cost: null, with one warning.
    let t = task(&doc, "by-goose");
    assert_eq!(
        (t["tokens"].as_u64(), t["cost_usd"].as_f64()),
        (Some(4210), Some(0.0))
    );
    let e = finished_event(&a.repo, id, "by-goose");
    assert_eq!(
        (
            e["data"]["cost_usd"].clone(),
            e["data"]["usage"]["unsplit_tokens"].as_u64()
        ),
        (Value::Null, Some(4210))
    );
    assert_eq!(
        stderr
            .matches("backend `goose` reports no cost and names no model, so its cost is unknown")
            .count(),
        1,
        "{stderr}"
    );
    // The files the agents wrote landed.
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        a.repo
            .git(&["show", &format!("{branch}:codex-by-codex.txt")]),
        "edited by codex for by-codex\n"
    );
}

#[test]
fn agents_that_misbehave_fail_their_attempt_with_the_reason() {
    let a = setup("timeouts: { silence: 1s, attempt: 20s }\n");
    let started = std::time::Instant::now();
    let (code, doc, _) = a.run(
        "tasks:\n  - { id: claude-error, title: E, backend: claude }\n  - { id: claude-silent, title: S, backend: claude }\n  - { id: claude-garbage, title: G, backend: claude }\n  - { id: claude-crash, title: C, backend: claude }\n  - { id: codex-error, title: F, backend: codex }\n  - { id: claude-hang, title: H, backend: claude }\n",
    );
    assert!(
        started.elapsed().as_secs() < 25,
        "the watchdog stops silent and hanging agents"
    );
    assert_eq!(code, 1);
    let reason = |id: &str| {
        task(&doc, id)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        reason("claude-error"),
        "claude-code reported an error: error_max_turns (after 1 attempt)"
    );
    assert_eq!(
        reason("claude-silent"),
        "claude-code printed nothing for 1s (timeouts.silence) (after 1 attempt)"
    );
    assert_eq!(
        reason("claude-garbage"),
        "claude-code exited with 0 without printing a result (after 1 attempt)"
    );
    assert_eq!(
        reason("claude-crash"),
        "claude-code exited with 3 without printing a result: claude: segmentation fault (after 1 attempt)"
    );
    assert_eq!(
        reason("codex-error"),
        "codex reported an error: model refused the request (after 1 attempt)"
    );
    // Hanging after its result: stopped, and the result kept.
    assert_eq!(task(&doc, "claude-hang")["status"], "landed");
    assert_eq!(task(&doc, "claude-hang")["cost_usd"].as_f64(), Some(0.0421));
    // A failed attempt is still charged what it cost.
    assert_eq!(task(&doc, "claude-error")["cost_usd"].as_f64(), Some(0.5));
}

#[test]
fn an_agent_failing_transiently_opens_its_circuit_and_the_fallback_takes_over() {
    let a = setup("router: { fallback: [codex] }\n");
    let (code, doc, stderr) = a.run(
        "tasks:\n  - { id: overloaded-1, title: A, backend: claude, max_attempts: 4, priority: 3 }\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let t = task(&doc, "overloaded-1");
    assert_eq!(
        (
            t["status"].as_str(),
            t["attempts"].as_u64(),
            t["backend"].as_str()
        ),
        (Some("landed"), Some(4), Some("codex"))
    );
    let id = doc["run"]["id"].as_str().unwrap();
    let decisions: Vec<Value> = events(&a.repo, id)
        .into_iter()
        .filter(|e| e["kind"] == "router.decision")
        .collect();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(
        decisions[0]["data"],
        serde_json::json!({"attempt": 4, "backend": "codex", "rule": "fallback: the circuit of `claude` is open"})
    );
}

#[test]
fn doctor_reports_agents_keys_and_backends_that_cannot_run() {
    let a = setup("");
    let out = abo_env(&a.repo, &["doctor"], &a.env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("agent claude-code")
                && l.contains("ok")
                && l.contains("claude 9.9.9 (fake)")),
        "{}",
        out.stdout
    );
    // The versions abo's tests run for real (ops/agents.lock) are named.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("agent codex") && l.contains("abo is certified with 0.")),
        "{}",
        out.stdout
    );

    let repo = &a.repo;
    crate::config(
        repo,
        "version: 1\nbackends:\n  broken: { kind: codex, command: abo-no-such-codex }\n  premium: { kind: anthropic, model: claude-opus-4-1, api_key_env: ABO_DOCTOR_KEY }\n",
    );
    let mut env = a.env.clone();
    env.push((
        "ABO_DOCTOR_KEY",
        "sk-ant-doctor-secret-value-0123456789".to_owned(),
    ));
    let out = abo_env(repo, &["doctor", "--json"], &env);
    assert_eq!(
        out.code, 1,
        "a configured backend that cannot run fails the check"
    );
    assert!(
        !out.stdout.contains("sk-ant-doctor"),
        "key values are never printed"
    );
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let check = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        (
            check("agent codex (backend broken)")["ok"].as_bool(),
            check("key ABO_DOCTOR_KEY")["detail"].as_str()
        ),
        (Some(false), Some("set"))
    );
    assert_eq!(check("key OPENAI_API_KEY")["absent"], true);
    // What this host's kernel enforces of the sandbox.
    assert_eq!(check("sandbox: landlock")["ok"], true, "{doc}");
    assert!(
        check("sandbox: landlock")["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("ABI v")),
        "{doc}"
    );
    assert_eq!(check("sandbox: seccomp")["ok"], true);
}

#[test]
fn plan_through_an_agent_rejects_an_answer_without_json() {
    let a = setup("");
    let ticket = a.repo.write_outside("TICKET.md", "Add user accounts.\n");
    let out = abo_env(
        &a.repo,
        &["plan", ticket.to_str().unwrap(), "--backend", "claude"],
        &a.env,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: the plan from backend `claude` was rejected: the answer holds no JSON object"
        ),
        "{}",
        out.stderr
    );
    // The agent worked in a throwaway worktree; the user's tree is as it was.
    assert_eq!(a.repo.git(&["status", "--porcelain"]), "");
    assert_eq!(a.repo.extra_worktrees(), Vec::<String>::new());
}

#[test]
fn every_key_handed_to_an_agent_is_redacted_by_value() {
    // Values no credential pattern knows: only their values identify them.
    let key = "plain-key-value-no-pattern-48151623";
    let login = "plain-login-token-no-pattern-42";
    let mut a = setup("");
    a.env.push(("ANTHROPIC_API_KEY", key.to_owned()));
    a.env.push(("CLAUDE_CODE_OAUTH_TOKEN", login.to_owned()));
    let (code, doc, stderr) =
        a.run("tasks:\n  - { id: echokey, title: Echo its keys, backend: claude }\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task(&doc, "echokey")["status"], "landed", "{doc}");
    // The agent had the key and printed it (into its transcript and its stderr)...
    let env = a.logged("claude-echokey-1.env");
    assert!(env.contains(key), "{env}");
    // ...and neither reached the store, an artifact, or abo's output.
    for v in [key, login] {
        let found = abo_test_support::files_containing(&a.repo.path.join(".abo"), v);
        assert!(found.is_empty(), "{v} in {found:?}");
        assert!(!doc.to_string().contains(v) && !stderr.contains(v));
    }
    let id = doc["run"]["id"].as_str().unwrap();
    let finished = finished_event(&a.repo, id, "echokey");
    let transcript = artifact(&a.repo, &finished["data"]["transcript"]);
    assert!(
        transcript.contains("[REDACTED:env:ANTHROPIC_API_KEY]"),
        "{transcript}"
    );
}

#[test]
fn a_key_written_into_an_agents_args_is_refused_where_it_stands() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nbackends:\n  aider:\n    kind: aider\n    args: [--model, gpt-4.1, --openai-api-key, sk-not-a-real-key-at-all-0000]\n",
    );
    let b = repo.write_outside("b.yml", "tasks:\n  - { id: t, title: T, backend: aider }\n");
    let out = crate::abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("abo.yml:5:"), "{}", out.stderr);
    assert!(out.stderr.contains("`--openai-api-key`"), "{}", out.stderr);
    assert!(
        out.stderr.contains("export OPENAI_API_KEY"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("sk-not-a-real-key"), "{}", out.stderr);
    // Nothing was started, so nothing stored it.
    assert!(
        abo_test_support::files_containing(&repo.path, "sk-not-a-real-key")
            .iter()
            .all(|p| p.ends_with("abo.yml"))
    );
}

#[test]
fn an_agent_writing_its_own_key_into_the_change_is_denied_whatever_the_encoding() {
    // The key has no credential's shape: the policy knows it only by its value.
    let key = "plain-key-value-no-pattern-48151623";
    let mut a = setup("");
    a.env.push(("ANTHROPIC_API_KEY", key.to_owned()));
    let (code, doc, stderr) =
        a.run("tasks:\n  - { id: leakkey, title: Leak the key, backend: claude }\n");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(task(&doc, "leakkey")["status"], "denied", "{doc}");
    assert_eq!(
        task(&doc, "leakkey")["reason"],
        "claude-leakkey.txt:1 adds a secret (known-secret)"
    );
    // Neither the key nor its encoding is stored anywhere, nor on any branch.
    use std::io::Write;
    let b64 = {
        #[allow(
            clippy::disallowed_methods,
            reason = "the test encodes as the agent did"
        )]
        let mut c = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
    };
    for v in [key, b64.as_str()] {
        assert!(abo_test_support::files_containing(&a.repo.path.join(".abo"), v).is_empty());
        assert!(a.repo.git(&["log", "--all", "-p"]).find(v).is_none());
    }
}
