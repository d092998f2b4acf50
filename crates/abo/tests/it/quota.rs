//! Usage limits: a backend that reports one with its reset is held until then. The fallback takes
//! its work meanwhile; without one the run pauses with reason `quota` (exit 4) and `abo daemon`
//! resumes it at the reset. The fake claude's `*limited*` tasks hit the limit once, a few seconds
//! from their reset.

use std::io::BufRead;

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::{abo_cmd, abo_env, brief, config, s};

type Limited = crate::FakeAgents;

fn setup(extra_config: &str) -> Limited {
    let mut l = crate::FakeAgents::new(&format!(
        "version: 1\nsandbox: {{ mode: off }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\n{extra_config}backends:\n  claude: {{ kind: claude-code, model: sonnet }}\n  codex: {{ kind: codex, model: gpt-5-codex }}\n"
    ));
    l.env.push(("FAKE_LIMIT_RESET_SECS", "2".to_owned()));
    l
}

/// What only these tests ask of the fake agents' repository.
trait Reads {
    fn status(&self, run: &str) -> Value;
    fn events(&self, run: &str) -> Vec<Value>;
    fn calls(&self) -> String;
}

impl Reads for Limited {
    fn status(&self, run: &str) -> Value {
        let out = abo_env(&self.repo, &["status", run, "--json"], &self.env);
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    }

    fn events(&self, run: &str) -> Vec<Value> {
        let out = abo_env(&self.repo, &["events", run, "--json"], &self.env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn calls(&self) -> String {
        self.logged("calls")
    }
}

fn of_kind<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn a_limited_backend_is_held_and_the_fallback_lands_the_same_attempt() {
    let l = setup("router: { fallback: [codex] }\n");
    let (code, doc, stderr) = l.run("tasks:\n  - { id: limited-fb, title: L, backend: claude }\n");
    assert_eq!(code, 0, "{stderr}");
    // Landed by codex as attempt 1: the limit did not use up `attempts.max: 1`.
    assert_eq!(brief(&doc), s(&[("limited-fb", "landed", 1)]));
    assert_eq!(l.calls(), "claude limited-fb 1\ncodex limited-fb 1\n");
    let run = doc["run"]["id"].as_str().unwrap();
    let evs = l.events(run);
    let held = of_kind(&evs, "backend.held");
    assert_eq!(held.len(), 1, "{evs:?}");
    assert_eq!(held[0]["data"]["backend"], "claude");
    assert!(
        held[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("Claude AI usage limit reached|"),
        "{held:?}"
    );
    let retry = of_kind(&evs, "task.retry");
    assert_eq!(
        (
            retry[0]["data"]["attempt"].as_u64(),
            retry[0]["data"]["cause"].as_str()
        ),
        (Some(1), Some("quota"))
    );
    let decision = of_kind(&evs, "router.decision");
    assert!(
        decision[0]["data"]["rule"]
            .as_str()
            .unwrap()
            .starts_with("fallback: `claude` is held until "),
        "{decision:?}"
    );
    assert!(of_kind(&evs, "task.failed").is_empty());
}

#[test]
fn without_a_fallback_the_run_pauses_for_quota_and_the_daemon_resumes_it_at_the_reset() {
    let l = setup("");
    let (code, doc, stderr) = l.run("tasks:\n  - { id: limited, title: L, backend: claude }\n");
    assert_eq!(code, 4, "{stderr}");
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let reason = doc["run"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("quota: claude is held until "),
        "{reason}"
    );
    assert_eq!(brief(&doc), s(&[("limited", "ready", 1)]));

    let mut c = abo_cmd(
        &l.repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    );
    for (k, v) in &l.env {
        c.env(k, v);
    }
    let mut daemon = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(daemon.stdout.take().unwrap());
    let mut said = String::new();
    out.read_line(&mut said).unwrap();
    let finished = abo_test_support::wait_for(30, || l.status(&run)["run"]["status"] == "finished");
    let _ = daemon.kill();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let _ = daemon.wait();
    assert!(finished, "{said}{rest}");
    assert!(
        rest.contains("resuming: a held backend's limit reset"),
        "{rest}"
    );
    let doc = l.status(&run);
    assert_eq!(brief(&doc), s(&[("limited", "landed", 1)]));
    assert_eq!(l.calls(), "claude limited 1\nclaude limited 1\n");
    let evs = l.events(&run);
    let kinds: Vec<&str> = evs
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| {
            k.starts_with("backend.") || k.starts_with("run.paused") || k.starts_with("run.resumed")
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "backend.held",
            "run.paused",
            "run.resumed",
            "backend.released"
        ]
    );
    // The release came no earlier than the reset the agent named.
    let held = of_kind(&evs, "backend.held")[0];
    let released = of_kind(&evs, "backend.released")[0];
    assert!(released["ts"].as_str().unwrap() >= held["data"]["until"].as_str().unwrap());
}

#[test]
fn a_model_api_limited_for_an_hour_is_held_without_burning_retries_and_the_fallback_lands() {
    use abo_test_support::stub::{Canned, StubServer, openai_reply};
    let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
    let premium = StubServer::start(vec![
        Canned::status(429, limited)
            .header("retry-after", "3600")
            .header("anthropic-ratelimit-requests-remaining", "0"),
    ]);
    let diff = "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n";
    let local = StubServer::start(vec![Canned::ok(openai_reply(
        "qwen2.5-coder:7b",
        &format!("Extended.\n\n```diff\n{diff}```\n"),
        100,
        20,
    ))]);
    let repo = TestRepo::new();
    repo.write("greeting.txt", "hello\n");
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nrouter: {{ fallback: [local] }}\nbackends:\n  premium: {{ kind: anthropic, model: claude-sonnet-4-5, base_url: \"{}\", api_key_env: ABO_TEST_KEY, retries: 3 }}\n  local: {{ kind: openai, model: qwen2.5-coder:7b, base_url: \"{}/v1\" }}\n",
            premium.url, local.url
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: greet, title: Extend greeting.txt, backend: premium }\n",
    );
    let out = abo_env(
        &repo,
        &["run", b.to_str().unwrap(), "--json"],
        &[("ABO_TEST_KEY", "sk-test-key".to_owned())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(brief(&doc), s(&[("greet", "landed", 1)]));
    // One request: the hour-long limit was not retried three times.
    assert_eq!(premium.requests().len(), 1);
    assert_eq!(local.requests().len(), 1);
    let run = doc["run"]["id"].as_str().unwrap();
    let evs = crate::events(&repo, run);
    let held = of_kind(&evs, "backend.held");
    assert_eq!(held.len(), 1, "{evs:?}");
    assert_eq!(held[0]["data"]["backend"], "premium");
    // Held about an hour from the 429.
    let at = abo_core::ids::Timestamp::parse_rfc3339(held[0]["ts"].as_str().unwrap()).unwrap();
    let until = abo_core::ids::Timestamp::parse_rfc3339(held[0]["data"]["until"].as_str().unwrap())
        .unwrap();
    assert!((until.0 - at.0 - 3_600_000).abs() < 10_000, "{held:?}");
}
