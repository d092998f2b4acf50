//! The real Codex CLI (`codex exec --json`, the version pinned in ops/agents.lock) run by abo on a
//! real repository against the scripted Responses API server: in abo's sandbox and without it,
//! over https and http, and with the provider down, rate-limited and out of quota.

use abo_test_support::model_server_openai::{
    ASKED, COMMAND_OUTPUT, FINAL, Failure, ModelServer, Script, down_url,
};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::artifact;
use crate::real_cli::{Real, Setup, setup};

const MODEL: &str = "gpt-5.5";

fn codex(sandbox: &str, base_url: &str, hosts: &str, ca: Option<&std::path::Path>) -> Real {
    setup(&Setup {
        kind: "codex",
        model: MODEL,
        sandbox,
        base_url,
        hosts,
        ca,
    })
}

/// The scripted change landed whole, the command ran in the worktree and its output reached the
/// model, and the tokens abo counted are those Codex reported and the server served.
fn assert_scripted_change(r: &Real, server: &ModelServer, doc: &Value, stderr: &str) {
    let t = &doc["tasks"][0];
    assert_eq!(t["status"], "landed", "{}: {stderr}", t["reason"]);
    r.assert_created_and_edited(doc);
    assert_eq!(r.landed(doc, "doomed.txt"), None, "deleted");
    assert_eq!(
        r.landed(doc, "ran.txt").as_deref(),
        Some(&*format!("{COMMAND_OUTPUT}\n"))
    );
    let e = r.finished(doc);
    let message = e["data"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(FINAL) && message.contains(COMMAND_OUTPUT),
        "{message}"
    );
    // Three replies: the patch, the command, the final message.
    let served = server.served();
    assert_eq!(served.replies, 3);
    assert_eq!(
        t["tokens"].as_u64(),
        Some(served.input_tokens + served.output_tokens)
    );
    let usage = &e["data"]["usage"];
    assert_eq!(
        (
            usage["input_tokens"].as_u64(),
            usage["cache_read_tokens"].as_u64(),
            usage["output_tokens"].as_u64()
        ),
        (
            Some(served.input_tokens - served.cached_tokens),
            Some(served.cached_tokens),
            Some(served.output_tokens)
        )
    );
    // ... which is what Codex itself reported at the end.
    let transcript = artifact(&r.repo, &e["data"]["transcript"]);
    let last: Value = transcript
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "turn.completed")
        .unwrap();
    assert_eq!(
        (
            last["usage"]["input_tokens"].as_u64(),
            last["usage"]["cached_input_tokens"].as_u64(),
            last["usage"]["output_tokens"].as_u64()
        ),
        (
            Some(served.input_tokens),
            Some(served.cached_tokens),
            Some(served.output_tokens)
        )
    );
    // The key reached the provider, through the sandbox if there is one.
    for req in server.model_requests() {
        assert_eq!(req.header("authorization"), Some("Bearer test-key"));
        assert_eq!(req.body["model"], MODEL);
    }
}

#[test]
fn codex_in_the_sandbox_over_https_lands_the_scripted_change() {
    let server = ModelServer::https();
    let r = codex(
        "required",
        &server.base_url,
        "localhost",
        server.ca_file.as_deref(),
    );
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
    // Codex's own sandbox is off inside abo's, and the attempt's log says so; every connection
    // went through abo's egress proxy.
    let log = artifact(&r.repo, &r.finished(&doc)["data"]["log"]);
    assert!(
        log.contains("abo: codex runs with its own sandbox `-s danger-full-access`: abo's sandbox is the boundary"),
        "{log}"
    );
    assert!(log.contains("--- abo: egress proxy ---"), "{log}");
    // Its CODEX_HOME (the attempt's own HOME) was writable: it kept its state there.
    for refused in ["Permission denied", "Read-only file system"] {
        assert!(!log.contains(refused), "{log}");
    }
    assert!(
        log.contains(&format!(
            r#"{{"host":"localhost","port":{},"allowed":true"#,
            server.port
        )),
        "{log}"
    );
}

#[test]
fn codex_without_the_sandbox_over_http_keeps_its_own() {
    let server = ModelServer::http();
    let r = codex("off", &server.base_url, "localhost", None);
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
    let log = artifact(&r.repo, &r.finished(&doc)["data"]["log"]);
    assert!(
        log.contains(
            "abo: codex runs with its own sandbox `-s workspace-write`: sandbox.mode is off"
        ),
        "{log}"
    );
}

/// Waits on the egress proxy forwarding plain-HTTP requests to a loopback host named by address
/// (`agent_hosts: ["127.0.0.1:PORT"]`).
#[test]
fn codex_in_the_sandbox_over_http_through_the_proxy() {
    let server = ModelServer::http();
    let r = codex(
        "required",
        &server.base_url,
        &format!("\"127.0.0.1:{}\"", server.port),
        None,
    );
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
}

fn failing(r: &Real) -> (String, bool) {
    let (reason, transient, _) = r.failing();
    (reason, transient)
}

#[test]
fn codex_against_a_provider_that_is_down_fails_transiently() {
    let r = codex("off", &down_url(), "localhost", None);
    let (reason, transient) = failing(&r);
    assert!(
        reason.contains("the model provider is unreachable: Connection failed"),
        "{reason}"
    );
    assert!(transient, "{reason}");
}

#[test]
fn codex_rate_limited_fails_transiently_naming_the_429() {
    let server = ModelServer::https();
    server.fail(Failure::RateLimited);
    let r = codex(
        "required",
        &server.base_url,
        "localhost",
        server.ca_file.as_deref(),
    );
    let (reason, transient) = failing(&r);
    assert!(reason.contains("429 Too Many Requests"), "{reason}");
    assert!(transient, "{reason}");
    // Codex retried, honouring retry-after, before it gave up.
    assert!(server.model_requests().len() > 1);
}

#[test]
fn codex_out_of_quota_fails_for_good() {
    let server = ModelServer::http();
    server.fail(Failure::UsageLimit);
    let r = codex("off", &server.base_url, "localhost", None);
    let (reason, transient) = failing(&r);
    assert!(reason.contains("Quota exceeded"), "{reason}");
    assert!(!transient, "{reason}");
}

/// The model calls Codex's `request_user_input` instead of working. What `codex exec` does with
/// it is the CLI's: it answers the call itself (the tool needs a person at a terminal) and the
/// model then asks in its final reply. abo turns that reply into a `decision` waiting for a
/// person; an answer given with `abo decide` reaches the next attempt's prompt on `abo resume`.
#[test]
fn codex_asking_the_user_ends_as_a_decision_whose_answer_reaches_the_next_attempt() {
    let server = ModelServer::http();
    server.script(Script::Ask);
    let r = codex("off", &server.base_url, "localhost", None);
    let (_, doc, stderr) = r.run();
    let t = &doc["tasks"][0];
    let transcript = artifact(&r.repo, &r.finished(&doc)["data"]["transcript"]);
    assert_eq!(
        t["status"], "awaiting_approval",
        "{}: {stderr}\n{transcript}",
        t["reason"]
    );
    // What the CLI sent back for the call, as the model received it.
    let back: Vec<String> = server
        .model_requests()
        .iter()
        .flat_map(|q| q.body["input"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"] == "function_call_output")
        .map(|i| i["output"].to_string())
        .collect();
    assert!(
        back.iter().any(|o| o.contains("request_user_input")),
        "{back:?}"
    );
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let asked = crate::events(&r.repo, &run)
        .into_iter()
        .find(|e| e["kind"] == "task.question")
        .unwrap_or_else(|| panic!("no task.question:\n{transcript}"));
    assert_eq!(asked["data"]["question"], ASKED, "{asked}");
    let decided = crate::abo_env(
        &r.repo,
        &[
            "decide",
            "scripted",
            "--answer",
            "Start with the Viewer role",
        ],
        &r.env,
    );
    assert_eq!(decided.code, 0, "{}", decided.stderr);
    server.script(Script::Change);
    let before = server.model_requests().len();
    let resumed = crate::abo_env(&r.repo, &["resume", &run, "--json"], &r.env);
    let next = server.model_requests();
    let first = next
        .get(before)
        .unwrap_or_else(|| panic!("the next attempt asked nothing: {}", resumed.stderr));
    let prompt = first.body["input"].to_string();
    assert!(prompt.contains("Start with the Viewer role"), "{prompt}");
}
