//! A decision from a notification: an agent's question (Claude Code's `AskUserQuestion`, from a
//! stand-in) reaches a JSON webhook, a Slack-compatible one and an email with the question, its
//! options and the links to its task's page on the dashboard (`notify.dashboard_url`); a person
//! follows the link to option 2 in headless Chromium, logs in, confirms, and the next attempt's
//! prompt carries the answer.

use abo_test_support::TestRepo;
use abo_test_support::smtp::SmtpSink;
use abo_test_support::stub::{Canned, StubServer};
use serde_json::Value;

use crate::browser::browser_deps;
use crate::config;
use crate::serve::{http, start_server, token};

/// A Claude Code stand-in: its first attempt asks which roles come first (two options); the next
/// writes its prompt to ask.txt.
const ASKS: &str = r#"#!/bin/sh
[ "$1" = "--version" ] && { echo "claude 9.9.9 (stub)"; exit 0; }
echo '{"type":"system","subtype":"init","model":"claude-stub"}'
for a; do prompt="$a"; done
if [ "$ABO_ATTEMPT" = 1 ]; then
  echo '{"type":"assistant","message":{"content":[{"type":"tool_use","id":"q1","name":"AskUserQuestion","input":{"questions":[{"question":"Which roles first?","options":[{"label":"Admin"},{"label":"Viewer"}]}]}}]}}'
  echo '{"type":"result","subtype":"success","is_error":false,"result":"I need to know which roles come first.","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":5}}'
  exit 0
fi
printf '%s\n' "$prompt" > ask.txt
echo '{"type":"result","subtype":"success","is_error":false,"result":"Wrote ask.txt.","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":5}}'
"#;

/// Polls `check` until it holds (the run works in the server's process).
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_notifications_link_decides_an_agents_question_in_a_browser() {
    let (dir, chromium) = browser_deps();
    let json_hook = StubServer::start(vec![Canned::ok("{}")]);
    let slack_hook = StubServer::start(vec![Canned::ok("ok")]);
    let sink = SmtpSink::start();
    let repo = TestRepo::new();
    let stub = repo.outside.join("stub-claude");
    std::fs::write(&stub, ASKS).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    repo.write(
        "ask.yml",
        "tasks:\n  - { id: ask, title: Ask, paths: [ask.txt], backend: stub }\n",
    );
    config(&repo, "version: 1\n");
    let admin = token(&repo, "admin");
    let approver = token(&repo, "approver");
    let (mut server, addr) = start_server(&repo);
    // The dashboard's address is the server's: the configuration a run freezes when created.
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbackends:\n  stub: {{ kind: claude-code, command: {stub} }}\nnotify:\n  dashboard_url: 'http://{addr}/'\n  webhooks:\n    - {{ url: '{j}/hook', events: [task.approval_requested] }}\n    - {{ url: '{s}/slack', format: slack, events: [task.approval_requested] }}\n  email: {{ smtp: '{m}', from: abo@example.test, to: [me@example.test], events: [task.approval_requested] }}\n",
            stub = stub.display(),
            j = json_hook.url,
            s = slack_hook.url,
            m = sink.addr,
        ),
    );
    let (s, created) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(serde_json::json!({ "backlog": "ask.yml" })),
    );
    assert_eq!(s, 201, "{created}");
    let run = serde_json::from_str::<Value>(&created).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until("the three notifications", || {
        !json_hook.requests().is_empty()
            && !slack_hook.requests().is_empty()
            && !sink.mails().is_empty()
    });
    let page = format!("http://{addr}/runs/{run}/tasks/ask");
    let choose2 = format!("{page}?choose=2#decide");
    // The JSON webhook: the event, the page, and the decision with each option's link.
    let body = &json_hook.requests()[0].body;
    assert_eq!(body["kind"], "task.approval_requested", "{body}");
    assert_eq!(body["url"], page.as_str(), "{body}");
    let d = &body["decision"];
    assert_eq!(d["question"], "Which roles first?", "{body}");
    assert_eq!(d["options"][0]["text"], "Admin", "{body}");
    assert_eq!(d["options"][1]["url"], choose2.as_str(), "{body}");
    // Slack's text shows the options, each with its link.
    let text = slack_hook.requests()[0].body["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("\n> Which roles first?"), "{text}");
    assert!(
        text.contains(&format!("\n1. Admin <{page}?choose=1#decide|choose 1>")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n2. Viewer <{choose2}|choose 2>")),
        "{text}"
    );
    // The email, too.
    let mail = &sink.mails()[0].data;
    assert!(
        mail.contains("The agent asks: Which roles first?"),
        "{mail}"
    );
    assert!(mail.contains(&format!("choose it: {choose2}")), "{mail}");

    #[allow(
        clippy::disallowed_methods,
        reason = "the test drives the browser script"
    )]
    let out = std::process::Command::new("node")
        .arg("decision.mjs")
        .current_dir(dir)
        .env("ABO_URL", format!("http://{addr}"))
        .env("ABO_LINK", &choose2)
        .env("ABO_TOKEN", &approver)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let finished = || {
        let (_, doc) = http(&addr, "GET", &format!("/v1/runs/{run}"), Some(&admin), None);
        serde_json::from_str::<Value>(&doc).unwrap()["run"]["status"] == "finished"
    };
    if out.status.success() {
        until("the run's end", finished);
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success() && said.contains("decision: ok"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asked = repo.git(&["show", &format!("abo/{run}:ask.txt")]);
    assert!(
        asked.contains("Which roles first? Answer: Viewer"),
        "the second attempt's prompt: {asked}"
    );
}
