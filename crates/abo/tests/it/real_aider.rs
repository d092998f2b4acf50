//! The real aider (the version pinned in ops/agents.lock) run by abo on a real repository against
//! the scripted Chat Completions server: in abo's sandbox and without it, over https and http,
//! and with the provider down, rate-limited and out of quota. aider edits in its text formats
//! (SEARCH/REPLACE blocks here) and runs no shell command unattended, so its script creates and
//! edits a file.

use abo_test_support::model_server_openai::{Failure, ModelServer, down_url};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::artifact;
use crate::real_cli::{Real, Setup, setup};

fn aider(sandbox: &str, base_url: &str, hosts: &str, ca: Option<&std::path::Path>) -> Real {
    setup(&Setup {
        kind: "aider",
        model: "openai/gpt-4.1",
        sandbox,
        base_url,
        hosts,
        ca,
    })
}

/// The file was created (whole: aider could not `git add` it, so it no longer tries) and the other
/// edited, with nothing of aider's own in the change; the tokens are those aider reported.
fn assert_scripted_change(r: &Real, server: &ModelServer, doc: &Value, stderr: &str) {
    let t = &doc["tasks"][0];
    assert_eq!(t["status"], "landed", "{}: {stderr}", t["reason"]);
    r.assert_created_and_edited(doc);
    assert_eq!(r.landed(doc, "doomed.txt").as_deref(), Some("bye\n"));
    let requests = server.model_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].header("authorization"), Some("Bearer test-key"));
    assert_eq!(requests[0].body["stream"], true);
    // aider counts tokens itself (litellm asks for no usage in a stream): abo takes its
    // analytics, which its `Tokens:` line rounds.
    let e = r.finished(doc);
    let usage = &e["data"]["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(t["tokens"].as_u64(), Some(input + output));
    assert!(input > 1000 && output > 10, "{usage}");
    let transcript = artifact(&r.repo, &e["data"]["transcript"]);
    let line = transcript
        .lines()
        .find(|l| l.starts_with("Tokens: "))
        .unwrap_or_else(|| panic!("{transcript}"));
    assert!(
        line.contains(&format!(" {output} received")),
        "{line} vs {usage}"
    );
    #[allow(clippy::cast_precision_loss)]
    let k = format!("{:.1}k sent", input as f64 / 1000.0);
    assert!(line.contains(&k), "{line} vs {usage}");
    // The exact figures came from aider's analytics log, written where the sandbox lets it write.
    let log = artifact(&r.repo, &e["data"]["log"]);
    assert!(
        log.contains("abo: aider's analytics log has 1 message_send events"),
        "{log}"
    );
}

#[test]
fn aider_in_the_sandbox_over_https_lands_the_scripted_change() {
    let server = ModelServer::https();
    let r = aider(
        "required",
        &server.base_url,
        "localhost",
        server.ca_file.as_deref(),
    );
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn aider_without_the_sandbox_over_http_lands_the_scripted_change() {
    let server = ModelServer::http();
    let r = aider("off", &server.base_url, "localhost", None);
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
}

/// Waits on the egress proxy forwarding plain-HTTP requests to a loopback host named by address
/// (`agent_hosts: ["127.0.0.1:PORT"]`).
#[test]
fn aider_in_the_sandbox_over_http_through_the_proxy() {
    let server = ModelServer::http();
    let r = aider(
        "required",
        &server.base_url,
        &format!("\"127.0.0.1:{}\"", server.port),
        None,
    );
    let (code, doc, stderr) = r.run();
    assert_scripted_change(&r, &server, &doc, &stderr);
    assert_eq!(code, 0, "{stderr}");
}

/// aider retries a failing provider for about a minute and then exits 0 all the same: abo fails
/// the attempt. Returns its reason and whether it was taken as transient.
fn failing(r: &Real) -> (String, bool) {
    let (reason, transient, event) = r.failing();
    assert_eq!(event["data"]["exit"], 0, "aider exited 0");
    (reason, transient)
}

#[test]
fn aider_against_a_provider_that_is_down_fails_transiently() {
    let r = aider("off", &down_url(), "localhost", None);
    let (reason, transient) = failing(&r);
    assert!(
        reason.contains("aider got no reply from the model: litellm.")
            && reason.contains("Connection error"),
        "{reason}"
    );
    assert!(transient, "{reason}");
}

#[test]
fn aider_rate_limited_fails_transiently_naming_the_rate_limit() {
    let server = ModelServer::https();
    server.fail(Failure::RateLimited);
    let r = aider(
        "required",
        &server.base_url,
        "localhost",
        server.ca_file.as_deref(),
    );
    let (reason, transient) = failing(&r);
    assert!(
        reason.contains("litellm.RateLimitError") && reason.contains("Rate limit reached"),
        "{reason}"
    );
    assert!(transient, "{reason}");
    assert!(server.model_requests().len() > 1, "aider retried");
}

#[test]
fn aider_out_of_quota_fails_for_good() {
    let server = ModelServer::http();
    server.fail(Failure::UsageLimit);
    let r = aider("off", &server.base_url, "localhost", None);
    let (reason, transient) = failing(&r);
    assert!(reason.contains("exceeded your current quota"), "{reason}");
    assert!(!transient, "{reason}");
}
