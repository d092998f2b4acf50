//! The real Claude Code CLI, at the version `ops/agents.lock` pins (`.ci/install-agents` puts it
//! in `.ci/agents/claude-code`), run by abo on a temporary repository against the scripted model
//! server of `abo_test_support::model_server::anthropic`, with and without the sandbox, over HTTP
//! and HTTPS, and with the provider failing.

use std::path::PathBuf;

use abo_core::config::AgentKind;
use abo_test_support::TestRepo;
use abo_test_support::model_server::anthropic::{self, Conversation, Fault, Script};
use abo_test_support::model_server::{self, ModelServer, Scheme};
use serde_json::Value;

use crate::{abo_env, artifact, config, events};

/// The directory holding the pinned `claude`; fails the test, loudly, when it is not installed.
fn claude_bin() -> PathBuf {
    let (package, version) = abo_runtime::backends::agent::certified(AgentKind::ClaudeCode)
        .expect("ops/agents.lock pins claude-code");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.ci/agents/claude-code/node_modules/.bin")
        .canonicalize()
        .unwrap_or_else(|e| {
            panic!("{package}@{version} is not installed ({e}): run .ci/install-agents")
        });
    #[allow(
        clippy::disallowed_methods,
        reason = "the test checks the CLI it is about to give abo"
    )]
    let out = std::process::Command::new(dir.join("claude"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}/claude: {e}: run .ci/install-agents", dir.display()));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(version),
        "{}/claude --version says {said:?}, not the pinned {version}: run .ci/install-agents",
        dir.display()
    );
    dir
}

/// A repository with the files the scripted change edits and deletes, and abo.yml.
fn repo(sandbox: &str, extra: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("edit-me.txt", "old line\n");
    repo.write("delete-me.txt", "to be deleted\n");
    repo.commit_all("files for the scripted change");
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\nbackends:\n  claude: {{ kind: claude-code, model: claude-sonnet-4-5{extra} }}\n"
        ),
    );
    repo
}

/// What the sandbox lets through in these tests: the local server (through the proxy) and the
/// CLI's retry setting.
const REQUIRED: &str =
    "{ mode: required, agent_hosts: [\"127.0.0.1\"], env_pass: [CLAUDE_CODE_MAX_RETRIES] }";
const OFF: &str = "{ mode: off }";

struct Ran {
    code: i32,
    doc: Value,
    stderr: String,
    /// The task's `task.backend_finished` event.
    finished: Value,
}

/// `abo run` of one claude-code task with the CLI pointed at `base_url`. The CLI's HOME is a
/// fresh one (nothing of this machine's own login is seeded), and it is given a dummy API key
/// unless `env` brings another login.
fn run(repo: &TestRepo, base_url: &str, env: &[(&str, String)]) -> Ran {
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: scripted, title: Make the scripted change, backend: claude }\n",
    );
    let home = repo.outside.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = format!(
        "{}:{}",
        claude_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut all: Vec<(&str, String)> = vec![
        ("PATH", path),
        ("HOME", home.display().to_string()),
        ("ANTHROPIC_BASE_URL", base_url.to_owned()),
    ];
    if !env.iter().any(|(k, _)| *k == "CLAUDE_CODE_OAUTH_TOKEN") {
        all.push(("ANTHROPIC_API_KEY", "sk-ant-api03-dummy-for-tests".into()));
    }
    all.extend(env.iter().cloned());
    let out = abo_env(repo, &["run", b.to_str().unwrap(), "--json"], &all);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let finished = events(repo, &run)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap_or_else(|| panic!("no task.backend_finished: {}", out.stderr));
    Ran {
        code: out.code,
        doc,
        stderr: out.stderr,
        finished,
    }
}

/// The CLI's own `result` line, from the attempt's transcript.
fn cli_result(repo: &TestRepo, ran: &Ran) -> Value {
    let transcript = artifact(repo, &ran.finished["data"]["transcript"]);
    transcript
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("the CLI printed no result: {transcript}"))
}

/// The tool calls and results of a transcript, one a line.
fn tool_calls(transcript: &str) -> String {
    transcript
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "assistant" || v["type"] == "user")
        .flat_map(|v| {
            v["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The scripted change landed as scripted, every tool result came back to the server, and what
/// abo charged is what the CLI reported (and what the server counted).
fn assert_landed(repo: &TestRepo, server: &ModelServer, script: &Script, ran: &Ran) {
    let task = &ran.doc["tasks"][0];
    let log = ran.finished["data"]["log"]
        .as_str()
        .map(|_| artifact(repo, &ran.finished["data"]["log"]))
        .unwrap_or_default();
    assert_eq!(
        (ran.code, task["status"].as_str()),
        (0, Some("landed")),
        "reason {}\n{}\nagent log:\n{log}",
        task["reason"],
        ran.stderr
    );
    let branch = ran.doc["run"]["branch"].as_str().unwrap();
    let files = repo.git(&["ls-tree", "--name-only", branch]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [
            "README.md",
            "abo.yml",
            "created.txt",
            "edit-me.txt",
            "ran.txt"
        ],
        "the CLI's tool calls and results:\n{}",
        tool_calls(&artifact(repo, &ran.finished["data"]["transcript"]))
    );
    let show = |f: &str| repo.git(&["show", &format!("{branch}:{f}")]);
    assert_eq!(show("created.txt"), "written by the scripted model\n");
    assert_eq!(show("edit-me.txt"), "new line\n");
    assert_eq!(show("ran.txt"), "ran by bash\n");

    // All the CLI asks of its provider: `HEAD /api/hello` at start, then messages.
    let asked: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked
            .iter()
            .all(|a| a == "HEAD /api/hello" || a == "POST /v1/messages"),
        "{asked:?}"
    );
    // One request a turn; the last holds the result of every tool call, none an error.
    let messages: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/messages")
        .collect();
    let turns = script.turns.len();
    assert_eq!(messages.len(), turns, "one request a scripted turn");
    assert!(messages.iter().all(|r| r.body["stream"] == true));
    assert_eq!(
        messages[0].header("x-api-key"),
        Some("sk-ant-api03-dummy-for-tests")
    );
    let conv = Conversation::read(&messages[turns - 1].body);
    assert_eq!(conv.turns_taken, turns - 1);
    assert_eq!(conv.results.len(), turns - 1, "{:?}", conv.results);
    assert!(conv.errors.is_empty(), "tool calls failed: {:?}", conv);
    let bash = conv.results.get("toolu_abo_05_00").map(String::as_str);
    // (The CLI appends its own reminders to a result.)
    assert!(
        bash.is_some_and(|b| b.starts_with("ran by bash\n")),
        "{bash:?}"
    );

    // Tokens and cost: the CLI's result, as abo read it, and as the server sent it.
    let result = cli_result(repo, ran);
    let sent = script.usage_of(turns as u64);
    let cli = &result["usage"];
    for (field, want) in [
        ("input_tokens", sent.input),
        ("output_tokens", sent.output),
        ("cache_read_input_tokens", sent.cache_read),
        ("cache_creation_input_tokens", sent.cache_write),
    ] {
        assert_eq!(
            cli[field].as_u64(),
            Some(want),
            "the CLI's result.usage.{field}"
        );
    }
    let usage = &ran.finished["data"]["usage"];
    assert_eq!(
        [
            &usage["input_tokens"],
            &usage["output_tokens"],
            &usage["cache_read_tokens"],
            &usage["cache_write_tokens"]
        ]
        .map(Value::as_u64),
        [sent.input, sent.output, sent.cache_read, sent.cache_write].map(Some),
        "abo's usage from the CLI's result.modelUsage: {usage}"
    );
    assert_eq!(task["tokens"].as_u64(), Some(sent.total()));
    let cost = result["total_cost_usd"]
        .as_f64()
        .expect("the CLI's result.total_cost_usd");
    assert!(cost > 0.0, "{result}");
    assert_eq!(task["cost_usd"].as_f64(), Some(cost));
    assert_eq!(ran.finished["data"]["cost_source"], "reported");
    assert_eq!(
        ran.finished["data"]["message"],
        "Created, edited and deleted the files as asked."
    );
}

#[test]
fn lands_a_change_without_the_sandbox_over_http() {
    let repo = repo(OFF, "");
    let server = ModelServer::start(Scheme::Http, anthropic::change_script());
    let ran = run(&repo, &server.url, &[]);
    assert_landed(&repo, &server, &anthropic::change_script(), &ran);
    // The CLI's first request, before any message.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "HEAD" && r.path == "/api/hello")
    );
}

#[test]
fn lands_a_change_without_the_sandbox_over_https() {
    let repo = repo(OFF, "");
    let server = ModelServer::start(Scheme::Https, anthropic::change_script());
    let ca = server.ca_file().unwrap().display().to_string();
    let ran = run(&repo, &server.url, &[("NODE_EXTRA_CA_CERTS", ca)]);
    assert_landed(&repo, &server, &anthropic::change_script(), &ran);
}

#[test]
fn lands_a_change_in_the_sandbox_over_https_through_the_egress_proxy() {
    // bypassPermissions, which the CLI refuses to root outside a sandbox: abo's sandbox holds,
    // so abo says so (IS_SANDBOX=1).
    let repo = repo(REQUIRED, ", permission_mode: bypassPermissions");
    let server = ModelServer::start(Scheme::Https, anthropic::change_script());
    let ca = server.ca_file().unwrap().display().to_string();
    let ran = run(&repo, &server.url, &[("NODE_EXTRA_CA_CERTS", ca)]);
    assert_landed(&repo, &server, &anthropic::change_script(), &ran);
    let log = artifact(&repo, &ran.finished["data"]["log"]);
    let tunnel = format!(
        r#"{{"host":"127.0.0.1","port":{},"allowed":true"#,
        server.port
    );
    assert!(log.contains(&tunnel), "{log}");
}

/// bypassPermissions without abo's sandbox: as root, the CLI refuses it (it is no sandbox's
/// boundary then), and says why; as anyone else, the change lands.
#[test]
fn bypass_permissions_without_the_sandbox_is_the_clis_own_call() {
    use std::os::unix::fs::MetadataExt;
    let repo = repo(OFF, ", permission_mode: bypassPermissions");
    let server = ModelServer::start(Scheme::Http, anthropic::change_script());
    let ran = run(&repo, &server.url, &[]);
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        let reason = ran.doc["tasks"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("claude-code exited with 1 without printing a result: ")
                && reason.contains("cannot be used with root/sudo privileges"),
            "{reason}"
        );
    } else {
        assert_landed(&repo, &server, &anthropic::change_script(), &ran);
    }
}

/// Needs the egress proxy to forward plain-HTTP requests (absolute-form `POST http://...`): today
/// it answers them 405, and the CLI fails with `API Error: 405 status code (no body)`.
#[test]
fn lands_a_change_in_the_sandbox_over_http() {
    let repo = repo(REQUIRED, "");
    let server = ModelServer::start(Scheme::Http, anthropic::change_script());
    let ran = run(&repo, &server.url, &[]);
    assert_landed(&repo, &server, &anthropic::change_script(), &ran);
}

/// The provider down, rate-limited or overloaded: the attempt fails with the CLI's own account
/// of it. `CLAUDE_CODE_MAX_RETRIES`, the user's own setting, reaches the CLI (one retry).
#[test]
fn provider_failures_fail_the_attempt_with_the_providers_reason() {
    let retries = [("CLAUDE_CODE_MAX_RETRIES", "1".to_owned())];
    for (fault, want) in [
        (
            None,
            [
                "connection_failed: API Error: Connection refused",
                "(ECONNREFUSED)",
            ],
        ),
        (
            Some(Fault::RateLimited {
                retry_after_secs: 1,
            }),
            [
                "API Error: Request rejected (429)",
                "exceed the rate limit for your organization of 50 requests per minute (HTTP 429 rate_limit_error)",
            ],
        ),
        (
            Some(Fault::Overloaded),
            ["API Error: 529 Overloaded", "(HTTP 529 overloaded_error)"],
        ),
    ] {
        let repo = repo(OFF, "");
        let server = fault
            .clone()
            .map(|f| ModelServer::start(Scheme::Http, anthropic::change_script().failing(f)));
        let url = server
            .as_ref()
            .map_or_else(model_server::refused_url, |s| s.url.clone());
        let ran = run(&repo, &url, &retries);
        let task = &ran.doc["tasks"][0];
        assert_eq!(ran.code, 1, "{fault:?}: {}", ran.stderr);
        assert_eq!(task["status"], "failed");
        let reason = task["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("claude-code reported an error: ")
                && want.iter().all(|w| reason.contains(w)),
            "{fault:?}: {reason}"
        );
        // The provider's failure, not the change's: it counts against the backend's circuit.
        assert_eq!(ran.finished["data"]["transient"], true, "{reason}");
        if let Some(s) = &server {
            let tries = s
                .requests()
                .iter()
                .filter(|r| r.path == "/v1/messages")
                .count();
            assert_eq!(tries, 2, "{fault:?}: one try and one retry");
        }
        if let Some(Fault::RateLimited { .. }) = fault {
            // The CLI waited as retry-after said.
            let transcript = artifact(&repo, &ran.finished["data"]["transcript"]);
            let waited = transcript
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["subtype"] == "api_retry")
                .and_then(|v| v["retry_delay_ms"].as_u64());
            assert!(waited.is_some_and(|ms| ms >= 1000), "{transcript}");
        }
    }
}

/// A subscription's usage limit, in the sandbox: the subscription's login
/// (`CLAUDE_CODE_OAUTH_TOKEN`) reaches the CLI, and the reason carries the CLI's words and the
/// time the limit resets.
#[test]
fn a_usage_limit_holds_the_backend_until_its_reset() {
    let repo = repo(REQUIRED, "");
    let resets_at = 2_000_000_000;
    let server = ModelServer::start(
        Scheme::Https,
        anthropic::change_script().failing(Fault::UsageLimit { resets_at }),
    );
    let ca = server.ca_file().unwrap().display().to_string();
    let ran = run(
        &repo,
        &server.url,
        &[
            ("NODE_EXTRA_CA_CERTS", ca),
            (
                "CLAUDE_CODE_OAUTH_TOKEN",
                "sk-ant-oat01-dummy-for-tests".into(),
            ),
        ],
    );
    // Nothing else may run the task: the run pauses until the reset the CLI reported (2,000,000,000
    // Unix seconds), and the attempt is not used up.
    assert_eq!(ran.code, 4, "{}", ran.doc);
    let reason = ran.doc["run"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("quota: claude is held until 2033-05-18T03:33:20"),
        "{reason}"
    );
    assert_ne!(ran.doc["tasks"][0]["status"], "failed", "{}", ran.doc);
    let first = &server.requests()[0];
    let sent: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!sent.is_empty(), "{first:?}");
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer sk-ant-oat01-dummy-for-tests")
    );
}

/// The real CLI calls abo's in-attempt `check` tool (the MCP server abo names in
/// `--mcp-config`): the first call, on a broken file, returns the failing gate with its output;
/// after the fix, the second says abo would land it, and it lands.
#[test]
fn calls_the_check_tool_mid_attempt_and_lands_after_the_fix() {
    use abo_test_support::model_server::anthropic::Block;
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\nautonomy: { overrides: { merge: A2 } }\nsandbox: { mode: off }\nbackends:\n  claude: { kind: claude-code, model: claude-sonnet-4-5 }\ngates:\n  - { name: answer, run: 'grep -qx fixed answer.txt || { echo \"answer.txt is not fixed\"; exit 1; }' }\n",
    );
    let write = |text: &str| {
        vec![Block::tool(
            "Write",
            serde_json::json!({"file_path": "{cwd}/answer.txt", "content": text}),
        )]
    };
    let check = || vec![Block::tool("mcp__abo__check", serde_json::json!({}))];
    let script = || {
        Script::in_worktree(vec![
            write("broken\n"),
            check(),
            write("fixed\n"),
            check(),
            vec![Block::Text("Fixed the answer after abo's check.".into())],
        ])
    };
    let server = ModelServer::start(Scheme::Http, script());
    let ran = run(&repo, &server.url, &[]);
    let task = &ran.doc["tasks"][0];
    assert_eq!(
        (ran.code, task["status"].as_str()),
        (0, Some("landed")),
        "{}\n{}",
        task["reason"],
        tool_calls(&artifact(&repo, &ran.finished["data"]["transcript"]))
    );
    let messages: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/messages")
        .collect();
    let conv = Conversation::read(&messages.last().unwrap().body);
    let first = &conv.results["toolu_abo_02_00"];
    assert!(
        first.contains("gate_failed") && first.contains("answer.txt is not fixed"),
        "{first}"
    );
    let second = &conv.results["toolu_abo_04_00"];
    assert!(second.contains(r#""verdict":"pass""#), "{second}");
    let run_id = ran.doc["run"]["id"].as_str().unwrap();
    let outcomes: Vec<String> = events(&repo, run_id)
        .iter()
        .filter(|e| e["kind"] == "task.check")
        .map(|e| e["data"]["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["gate_failed", "pass"]);
}

/// The real CLI's `AskUserQuestion`: the model asks which roles come first (two options) instead
/// of working. abo reads the call from the CLI's stream, the task waits as a `decision` with the
/// question and both options; `abo decide` picks the second, and on `abo resume` the next
/// attempt's prompt (as the model server received it) carries the answer.
#[test]
fn an_ask_user_question_becomes_a_decision_and_its_answer_reaches_the_next_attempt() {
    use abo_test_support::model_server::anthropic::Block;
    let repo = repo(OFF, "");
    let ask = Script::in_worktree(vec![
        vec![Block::tool(
            "AskUserQuestion",
            serde_json::json!({"questions": [{
                "question": "Which roles first?",
                "header": "Roles",
                "multiSelect": false,
                "options": [
                    {"label": "Admin", "description": "every permission"},
                    {"label": "Viewer", "description": "read only"}
                ]
            }]}),
        )],
        vec![Block::Text("I need to know which roles come first.".into())],
    ]);
    let server = ModelServer::start(Scheme::Http, ask);
    let ran = run(&repo, &server.url, &[]);
    let task = &ran.doc["tasks"][0];
    let transcript = artifact(&repo, &ran.finished["data"]["transcript"]);
    assert_eq!(
        task["status"],
        "awaiting_approval",
        "{}\n{}\n{}",
        task["reason"],
        ran.stderr,
        tool_calls(&transcript)
    );
    let run_id = ran.doc["run"]["id"].as_str().unwrap().to_owned();
    let asked = events(&repo, &run_id)
        .into_iter()
        .find(|e| e["kind"] == "task.question")
        .unwrap_or_else(|| panic!("no task.question:\n{}", tool_calls(&transcript)));
    assert_eq!(asked["data"]["question"], "Which roles first?", "{asked}");
    assert_eq!(
        asked["data"]["options"],
        serde_json::json!(["Admin", "Viewer"]),
        "{asked}"
    );
    let decided = crate::abo(&repo, &["decide", "scripted", "--choose", "2"]);
    assert_eq!(decided.code, 0, "{}", decided.stderr);
    // The next attempt works against a server whose script writes the file.
    let work = ModelServer::start(Scheme::Http, anthropic::change_script());
    let home = repo.outside.join("home");
    let path = format!(
        "{}:{}",
        claude_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let resumed = abo_env(
        &repo,
        &["resume", &run_id, "--json"],
        &[
            ("PATH", path),
            ("HOME", home.display().to_string()),
            ("ANTHROPIC_BASE_URL", work.url.clone()),
            ("ANTHROPIC_API_KEY", "sk-ant-api03-dummy-for-tests".into()),
        ],
    );
    let first = work
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/messages")
        .unwrap_or_else(|| panic!("the next attempt asked nothing: {}", resumed.stderr));
    let prompt = first.body["messages"][0].to_string();
    assert!(
        prompt.contains("Which roles first?") && prompt.contains("Viewer"),
        "{prompt}"
    );
}
