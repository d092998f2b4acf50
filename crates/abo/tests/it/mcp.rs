//! abo's MCP server through a real MCP client, the official Python SDK (installed by ops/test.sh
//! in `.ci/agents/mcp-python`; a missing one fails the test): over stdio (`abo mcp`) and over
//! streamable HTTP (`/mcp` under `abo serve`) with tokens and their roles. The client lists the
//! tools, reads a run and its resources, explains a failed task, validates a bad backlog (the same
//! located errors as `abo run`) and decides an approval.

use std::path::PathBuf;
use std::process::Stdio;

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::serve::{http, start_server, token};
use crate::{abo, config, run};

/// The Python interpreter of the pinned MCP SDK.
fn python() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/agents/mcp-python/bin/python");
    assert!(
        p.exists(),
        "the MCP client (Python SDK) is not installed at {}: run ops/test.sh",
        p.display()
    );
    p
}

/// Runs the client script with `steps`; its results, one per step.
fn client(args: &[&str], steps: &Value) -> Vec<Value> {
    use std::io::Write;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    #[allow(clippy::disallowed_methods, reason = "the test runs the MCP client")]
    let mut child = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(steps.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

const TOOLS: &[&str] = &[
    "approval_decide",
    "approvals_list",
    "backlog_validate",
    "policy_evaluate",
    "run_kill",
    "run_pause",
    "run_resume",
    "run_show",
    "run_start",
    "runs_list",
    "summary",
    "task_explain",
    "task_retry",
    "task_show",
    "tasks_list",
];

/// A repository with a paused run: `ok` landed, `scoped` waits for approval (it wrote outside its
/// paths), `broken` failed its gate. Also `bad.yml`, a backlog with a misspelt field. Returns the
/// run's id and the errors `abo run bad.yml` prints, without their `error: `.
fn paused_run() -> (TestRepo, String, Vec<String>) {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\ngates:\n  - { name: test, run: 'if [ -f broken.txt ]; then echo \"FAILED: test_broken (expected 2, got 3)\"; exit 1; fi' }\n",
    );
    repo.write(
        "bad.yml",
        "tasks:\n  - id: x\n    title: X\n    run: 'true'\n    depz: [y]\n",
    );
    repo.commit_all("bad backlog");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: ok, title: OK, run: 'echo ok > ok.txt' }\n  - { id: scoped, title: S, paths: ['src/**'], run: 'mkdir -p src; echo a > src/a.txt; echo b > README.md' }\n  - { id: broken, title: B, run: 'echo x > broken.txt' }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 4, "paused on the approval: {stderr}");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let out = abo(&repo, &["run", "bad.yml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors: Vec<String> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(str::to_owned)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("bad.yml:5:") && e.contains("depz")),
        "{errors:?}"
    );
    (repo, id, errors)
}

fn call(name: &str, args: Value) -> Value {
    json!({ "op": "call", "name": name, "args": args })
}

fn structured(r: &Value) -> &Value {
    assert_eq!(r["is_error"], false, "{r}");
    &r["structured"]
}

/// A diff that adds `docs/x.md`.
const NEW_DOC: &str = "diff --git a/docs/x.md b/docs/x.md\nnew file mode 100644\n--- /dev/null\n+++ b/docs/x.md\n@@ -0,0 +1 @@\n+written by the diff given to policy_evaluate\n";

/// Whether the repository holds a blob of `content`.
fn has_blob(repo: &TestRepo, content: &str) -> bool {
    let f = repo.write_outside("blob.txt", content);
    let sha = repo.git(&["hash-object", &f.display().to_string()]);
    #[allow(clippy::disallowed_methods, reason = "the test asks git")]
    let st = std::process::Command::new("git")
        .args(["cat-file", "-e", sha.trim()])
        .current_dir(&repo.path)
        .status()
        .unwrap();
    st.success()
}

#[test]
fn over_stdio_a_client_lists_tools_reads_a_run_validates_a_backlog_and_decides_an_approval() {
    let (repo, id, cli_errors) = paused_run();
    let repo_dir = repo.path.display().to_string();
    let steps = json!([
        { "op": "tools" },
        call("runs_list", json!({})),
        call("run_show", json!({ "run": id })),
        { "op": "resources" },
        { "op": "read", "uri": format!("abo://runs/{id}/summary") },
        { "op": "read", "uri": format!("abo://runs/{id}/events") },
        call("task_explain", json!({ "task": "broken" })),
        call("backlog_validate", json!({ "backlog": "bad.yml" })),
        call("approvals_list", json!({})),
        call("approval_decide", json!({ "approval": "scoped", "decision": "approve", "reason": " " })),
        call("approval_decide", json!({ "approval": "scoped", "decision": "approve", "reason": "README edit is fine" })),
        call("approvals_list", json!({})),
        call("run_show", json!({ "run": "nope" })),
        call("runs_list", json!({ "all": true })),
        call("policy_evaluate", json!({ "diff": NEW_DOC, "paths": ["src/**"] })),
        call("policy_evaluate", json!({ "diff": NEW_DOC })),
        call("policy_evaluate", json!({ "diff": "--- a/nope.txt\n+++ b/nope.txt\n@@ -1 +1 @@\n-a\n+b\n" })),
    ]);
    let r = client(
        &["stdio", env!("CARGO_BIN_EXE_abo"), "-C", &repo_dir, "mcp"],
        &steps,
    );

    let tools = r[0]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS);
    for t in tools {
        assert_eq!(t["input"]["type"], "object", "{t}");
        assert_eq!(t["output"]["type"], "object", "{t}");
    }
    let decide = tools
        .iter()
        .find(|t| t["name"] == "approval_decide")
        .unwrap();
    assert_eq!(
        decide["input"]["required"],
        json!(["approval", "decision", "reason"])
    );

    assert_eq!(structured(&r[1])["runs"][0]["id"], id.as_str());
    let doc = structured(&r[2]);
    let statuses: Vec<(String, String)> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("ok", "landed"),
            ("scoped", "awaiting_approval"),
            ("broken", "failed")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    assert_eq!(
        r[3]["resources"],
        json!([
            format!("abo://runs/{id}/summary"),
            format!("abo://runs/{id}/events")
        ])
    );
    assert_eq!(r[4]["mime"], "application/json");
    let summary: Value = serde_json::from_str(r[4]["text"].as_str().unwrap()).unwrap();
    assert_eq!(summary["run"]["id"], id.as_str());
    assert_eq!(r[5]["mime"], "application/x-ndjson");
    let first: Value =
        serde_json::from_str(r[5]["text"].as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "run.created");

    let why = structured(&r[6]);
    assert_eq!(why["status"], "failed");
    assert_eq!(why["gate"]["name"], "test");
    assert!(
        why["gate"]["log_tail"]
            .as_str()
            .unwrap()
            .contains("FAILED: test_broken (expected 2, got 3)"),
        "{why}"
    );
    assert!(
        why["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("failed after 1 attempt(s)")),
        "{why}"
    );

    assert_eq!(
        structured(&r[7]),
        &json!({ "valid": false, "tasks": [], "errors": cli_errors })
    );

    let pending = &structured(&r[8])["approvals"];
    assert_eq!(pending[0]["id"], format!("{id}/scoped/1"));
    assert_eq!(
        (r[9]["is_error"].clone(), r[9]["text"].clone()),
        (json!(true), json!("a reason is required"))
    );
    assert_eq!(
        structured(&r[10]),
        &json!({ "approval": "scoped", "decision": "approved" })
    );
    assert_eq!(structured(&r[11])["approvals"], json!([]));
    assert_eq!(
        (r[12]["is_error"].clone(), r[12]["text"].clone()),
        (json!(true), json!("no run `nope`"))
    );
    assert_eq!(
        r[13]["code"], -32602,
        "arguments outside the schema: {}",
        r[13]
    );
    assert!(
        r[13]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `all`"),
        "{}",
        r[13]
    );

    // The policy on a diff: outside the task's paths it asks a person; unscoped it allows; a
    // diff that does not apply says why.
    let scoped = structured(&r[14]);
    assert_eq!(scoped["verdict"], "needs_approval", "{scoped}");
    assert_eq!(
        scoped["require_approval"],
        json!(["docs/x.md is outside the task's paths"])
    );
    assert_eq!(structured(&r[15])["verdict"], "allow", "{}", r[15]);
    assert_eq!(r[16]["is_error"], true, "{}", r[16]);
    assert!(
        r[16]["text"]
            .as_str()
            .unwrap()
            .starts_with("diff: does not apply to HEAD: "),
        "{}",
        r[16]
    );
    // Nothing of the diffs stays: no scratch worktree, no object.
    assert!(
        repo.extra_worktrees()
            .iter()
            .all(|w| !w.contains("policy-")),
        "{:?}",
        repo.extra_worktrees()
    );
    assert!(
        !has_blob(&repo, "written by the diff given to policy_evaluate\n"),
        "a blob of the diff was written"
    );
}

#[test]
fn over_http_each_tool_needs_a_token_with_its_role() {
    let (repo, id, cli_errors) = paused_run();
    let viewer = token(&repo, "viewer");
    let approver = token(&repo, "approver");
    let (mut server, addr) = start_server(&repo);
    let url = format!("http://{addr}/mcp");

    // Without a token, nothing: not even the handshake.
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" } } });
    let (status, body) = http(&addr, "POST", "/mcp", None, Some(init.clone()));
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(&addr, "POST", "/mcp", Some("abo_nope_nope"), Some(init));
    assert_eq!(status, 401);

    let r = client(
        &["http", &url, &viewer],
        &json!([
            { "op": "tools" },
            call("run_show", json!({ "run": id })),
            call("backlog_validate", json!({ "backlog": "bad.yml" })),
            call("approval_decide", json!({ "approval": "scoped", "decision": "approve", "reason": "fine" })),
            call("run_pause", json!({ "run": id })),
            { "op": "read", "uri": format!("abo://runs/{id}/summary") },
        ]),
    );
    assert_eq!(r[0]["tools"].as_array().unwrap().len(), TOOLS.len());
    assert_eq!(structured(&r[1])["run"]["status"], "paused");
    assert_eq!(structured(&r[2])["errors"], json!(cli_errors));
    assert_eq!(
        (r[3]["is_error"].clone(), r[3]["text"].clone()),
        (
            json!(true),
            json!("this needs the approver role; the token is viewer")
        )
    );
    assert_eq!(
        r[4]["text"],
        "this needs the admin role; the token is viewer"
    );
    let summary: Value = serde_json::from_str(r[5]["text"].as_str().unwrap()).unwrap();
    assert_eq!(summary["run"]["id"], id.as_str());

    let r = client(
        &["http", &url, &approver],
        &json!([
            call(
                "approval_decide",
                json!({ "approval": "scoped", "decision": "reject", "reason": "not what was asked" })
            ),
            call("approvals_list", json!({})),
        ]),
    );
    assert_eq!(
        structured(&r[0]),
        &json!({ "approval": "scoped", "decision": "rejected" })
    );
    assert_eq!(structured(&r[1])["approvals"], json!([]));
    server.kill().unwrap();
    server.wait().unwrap();
    let t = crate::task(&crate::status(&repo, Some(&id)), "scoped").clone();
    assert_eq!(t["reason"], "rejected by a person: not what was asked");
}

/// The attack: a viewer asks `backlog_validate` for files that are no backlog, whose errors would
/// quote them: the repository's `.env`, a `.yml` link to a file outside the repository, abo's own
/// `.abo/` and git's `.git/config`. Each is refused; a real backlog is checked, and a YAML file
/// that quotes a key in its error has the key redacted. The control: `abo run` on the `.env` (the
/// person at the machine may read it) prints its secrets in the error.
#[test]
fn a_viewer_cannot_read_files_through_backlog_validate() {
    const KEY: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD";
    const PASSWORD: &str = "hunter2-db-password";
    let repo = TestRepo::new();
    config(&repo, "version: 1\n");
    repo.write(
        ".env",
        &format!("OPENAI_API_KEY={KEY}\nDB_PASSWORD={PASSWORD}\n"),
    );
    repo.write("key.yml", &format!("OPENAI_API_KEY={KEY}\n"));
    repo.write("ok.yml", "tasks:\n  - { id: a, title: A, run: 'true' }\n");
    let secret = repo.write_outside("secret.yml", &format!("password {PASSWORD}\n"));
    std::os::unix::fs::symlink(&secret, repo.path.join("outside.yml")).unwrap();
    std::fs::create_dir_all(repo.path.join(".abo/tmp")).unwrap();
    std::fs::write(repo.path.join(".abo/tmp/t.yml"), format!("{PASSWORD}\n")).unwrap();
    let viewer = token(&repo, "viewer");
    let (mut server, addr) = start_server(&repo);
    let url = format!("http://{addr}/mcp");
    let names = [
        ".env",
        "outside.yml",
        ".abo/tmp/t.yml",
        ".git/config",
        "./../x.yml",
        "ok.yml",
        "key.yml",
    ];
    let steps: Vec<Value> = names
        .iter()
        .map(|n| call("backlog_validate", json!({ "backlog": n })))
        .collect();
    let r = client(&["http", &url, &viewer], &json!(steps));
    server.kill().unwrap();
    server.wait().unwrap();
    for (name, got) in names.iter().zip(&r).take(5) {
        assert_eq!(got["is_error"], true, "{name}: {got}");
        assert!(
            got["text"]
                .as_str()
                .unwrap()
                .contains("not under .abo/ or .git/"),
            "{name}: {got}"
        );
    }
    assert_eq!(structured(&r[5])["valid"], true, "{}", r[5]);
    let errors = structured(&r[6])["errors"].to_string();
    assert!(errors.contains("key.yml:1:1"), "{errors}");
    let all = serde_json::to_string(&r).unwrap();
    for s in [KEY, PASSWORD] {
        assert!(!all.contains(s), "{s} in {all}");
    }

    // Control: the backlog reader quotes what it could not read.
    let env_file = repo.path.join(".env");
    let out = abo(&repo, &["run", env_file.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains(PASSWORD), "{}", out.stderr);
}
