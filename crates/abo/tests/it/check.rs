//! The in-attempt `check` tool: an agent (a stand-in for Claude Code speaking MCP to the server
//! `--mcp-config` names) calls `check` mid-attempt, gets the failing gate back, fixes the file,
//! and the attempt lands; a call past `mcp.max_checks` is refused; the proxy's door refuses a
//! request without the attempt's token, or with another attempt's.

use abo_test_support::{TestRepo, files_containing};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo_env, artifact, brief, config, events, s};

const FAKE_CLAUDE: &str = include_str!("check/claude.py");

fn setup(
    sandbox: &str,
    max_checks: u32,
) -> (TestRepo, Vec<(&'static str, String)>, std::path::PathBuf) {
    let repo = TestRepo::new();
    let bin = repo.outside.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, FAKE_CLAUDE).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = repo.outside.join("agent-log");
    std::fs::create_dir_all(&log).unwrap();
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {sandbox}\nparallelism: {{ max_parallel: 1 }}\nattempts: {{ max: 1 }}\nmcp: {{ max_checks: {max_checks} }}\nbackends:\n  claude: {{ kind: claude-code }}\ngates:\n  - {{ name: answer, run: 'grep -qx fixed answer.txt || {{ echo \"answer.txt is not fixed\"; exit 1; }}' }}\n"
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        ("PATH", path),
        ("FAKE_AGENT_LOG", log.display().to_string()),
    ];
    (repo, env, log)
}

/// What the agent of `task` saw: in its log directory, or (sandboxed) in the landed change.
fn checks(repo: &TestRepo, log: &std::path::Path, branch: &str, task: &str) -> Value {
    let text = std::fs::read_to_string(log.join(format!("{task}.checks.json")))
        .unwrap_or_else(|_| repo.git(&["show", &format!("{branch}:checks-{task}.json")]));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn an_agent_checks_mid_attempt_fixes_the_failing_gate_and_lands() {
    checks_fix_and_land("{ mode: off }");
}

/// The same inside the sandbox: the agent's only way out is its egress proxy, which answers the
/// check itself; the server it starts is abo, run inside the agent's sandbox.
#[test]
fn in_the_sandbox_the_check_goes_through_the_attempts_own_proxy() {
    checks_fix_and_land("{ mode: required }");
}

fn checks_fix_and_land(sandbox: &str) {
    let (repo, env, log) = setup(sandbox, 2);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: Fix the answer, backend: claude }\n  - { id: two, title: Fix it again, backend: claude, deps: [one] }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    let doc: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        brief(&doc),
        s(&[("one", "landed", 1), ("two", "landed", 1)])
    );

    // The progress narrates each call.
    assert!(
        out.stderr
            .contains("one: attempt 1 check 1: gate_failed: gate answer failed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("one: attempt 1 check 3: refused"),
        "{}",
        out.stderr
    );
    let branch = doc["run"]["branch"].as_str().unwrap().to_owned();
    let sandboxed = !sandbox.contains("off");
    let c = checks(&repo, &log, &branch, "one");
    // The tool, as the agent lists it: one tool, no arguments to choose gates or places.
    let tools = c["tools"]["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "check");
    assert_eq!(tools[0]["inputSchema"]["properties"], serde_json::json!({}));
    // First call: the gate fails, with its output.
    let first = &c["first"]["result"]["structuredContent"];
    assert_eq!(first["verdict"], "gate_failed", "{c}");
    assert_eq!(first["gates"][0]["name"], "answer");
    assert_eq!(first["gates"][0]["passed"], false);
    assert!(
        first["gates"][0]["log_tail"]
            .as_str()
            .unwrap()
            .contains("answer.txt is not fixed")
    );
    assert_eq!(first["checks_left"], 1);
    // After the fix: what abo would decide is to land it.
    let second = &c["second"]["result"]["structuredContent"];
    assert_eq!(second["verdict"], "pass", "{c}");
    assert_eq!(second["gates"][0]["passed"], true);
    assert_eq!(second["policy"]["verdict"], "allow");
    // Past `mcp.max_checks: 2`: an MCP error that says so.
    let third = &c["third"];
    assert!(third["result"].is_null(), "{third}");
    assert!(
        third["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 times (mcp.max_checks)"),
        "{third}"
    );
    // The proxy's door: no token, a wrong one, another attempt's: refused.
    assert_eq!(c["no_token"], 403);
    assert_eq!(c["wrong_token"], 403);
    let two = checks(&repo, &log, &branch, "two");
    // With this attempt's own token (through the MCP server) it answered: the control.
    assert_eq!(
        two["second"]["result"]["structuredContent"]["verdict"],
        "pass"
    );

    // Each call is an event; the checks' gate runs are not the attempt's.
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let of = |kind: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["kind"] == kind && e["task"] == "one")
            .collect()
    };
    let calls: Vec<(u64, &str)> = of("task.check")
        .iter()
        .map(|e| {
            (
                e["data"]["n"].as_u64().unwrap(),
                e["data"]["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(calls, vec![(1, "gate_failed"), (2, "pass"), (3, "refused")]);
    assert_eq!(
        of("task.check")[0]["data"]["failed_gates"],
        serde_json::json!(["answer"])
    );
    let gates = of("task.gate");
    assert_eq!(
        gates.len(),
        1,
        "only abo's own gate run after the agent: {gates:?}"
    );
    assert_eq!(gates[0]["data"]["passed"], true);
    assert_eq!(
        repo.git(&["show", &format!("{branch}:answer.txt")]),
        "fixed\n"
    );

    if sandboxed {
        // The sandboxed agent kept no token anywhere the test could read it.
        return;
    }
    // Attempt two's proxy does not know attempt one's token.
    assert_eq!(two["previous_attempts_token"], 403);
    // The token reaches no event, artifact or file abo keeps.
    let token = std::fs::read_to_string(log.join("token")).unwrap();
    assert_eq!(token.len(), 64);
    let all = serde_json::to_string(&evs).unwrap();
    assert!(!all.contains(&token));
    let fin = of("task.backend_finished");
    assert!(!artifact(&repo, &fin[0]["data"]["transcript"]).contains(&token));
    assert_eq!(
        files_containing(&repo.path.join(".abo"), &token),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn no_check_tool_when_max_checks_is_zero() {
    let (repo, env, _log) = setup("{ mode: off }", 0);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: T, backend: claude }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    // The stand-in needs its `--mcp-config`: without the tool offered it fails.
    assert_ne!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = doc["run"]["id"].as_str().unwrap();
    assert!(events(&repo, id).iter().all(|e| e["kind"] != "task.check"));
}

/// The agent prints nothing while abo answers its `check`: a check longer than
/// `timeouts.silence` does not stop it (its silence counts afresh after).
#[test]
fn a_check_longer_than_the_silence_timeout_does_not_stop_the_agent() {
    let (repo, env, log) = setup("{ mode: off }", 2);
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1 }\ntimeouts: { silence: 2s }\nbackends:\n  claude: { kind: claude-code }\ngates:\n  - { name: answer, run: 'if grep -qx broken answer.txt; then sleep 4; fi; grep -qx fixed answer.txt' }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: T, backend: claude }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = checks(&repo, &log, "", "one");
    assert_eq!(
        c["first"]["result"]["structuredContent"]["verdict"],
        "gate_failed"
    );
}
