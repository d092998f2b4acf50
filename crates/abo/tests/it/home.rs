//! The dashboard as a person uses it, in a real headless Chromium against `abo serve`, at desktop
//! and 390-px phone widths (see `tests/browser/home.mjs`): the home page's counts and cost bars
//! against the daily cap with its alert, an approval decided in place, the live transcript of a
//! stub agent appearing line by line while it streams, Pause all pausing every run and Kill all
//! killing them, each page without horizontal scrolling on a phone. Screenshots of each page are
//! saved under the test's temporary target directory (printed).

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::browser::browser_deps;
use crate::config;
use crate::serve::{http, start_server, token};

/// A Claude Code stand-in speaking its `stream-json`: two lines, then waits for `GO`, one more
/// line, waits for `GO2` (the paths are put in when the script is written), then its change and its result (60 cents).
const STUB_AGENT: &str = r#"#!/bin/sh
[ "$1" = "--version" ] && { echo "claude 9.9.9 (stub)"; exit 0; }
echo '{"type":"system","subtype":"init","model":"claude-stub"}'
for a; do prompt="$a"; done
if [ "$ABO_TASK_ID" = ask ]; then
  if [ "$ABO_ATTEMPT" = 1 ]; then
    echo '{"type":"assistant","message":{"content":[{"type":"tool_use","id":"q1","name":"AskUserQuestion","input":{"questions":[{"question":"Which roles first?","options":[{"label":"Admin"},{"label":"Viewer"}]}]}}]}}'
    echo '{"type":"result","subtype":"success","is_error":false,"result":"I need to know which roles come first.","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":5}}'
    exit 0
  fi
  printf '%s
' "$prompt" > ask.txt
  echo '{"type":"result","subtype":"success","is_error":false,"result":"Wrote ask.txt.","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":5}}'
  exit 0
fi
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Reading the repository."},{"type":"tool_use","name":"Bash","input":{"command":"ls -la"}}]}}'
while [ ! -e "$STUB_GO" ]; do sleep 0.1; done
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Writing live.txt now."}]}}'
while [ ! -e "$STUB_GO2" ]; do sleep 0.1; done
echo live > live.txt
echo '{"type":"result","subtype":"success","is_error":false,"result":"Wrote live.txt.","total_cost_usd":0.6,"usage":{"input_tokens":1000,"output_tokens":200}}'
"#;

fn create(addr: &str, admin: &str, backlog: &str) -> String {
    let (s, created) = http(
        addr,
        "POST",
        "/v1/runs",
        Some(admin),
        Some(serde_json::json!({ "backlog": backlog })),
    );
    assert_eq!(s, 201, "{created}");
    serde_json::from_str::<Value>(&created).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn at_a_glance_live_tail_approval_in_place_and_pause_all_in_a_browser() {
    let (dir, chromium) = browser_deps();
    let repo = TestRepo::new();
    let go = repo.outside.join("go");
    let go2 = repo.outside.join("go2");
    let stub = repo.outside.join("stub-claude");
    let script = STUB_AGENT
        .replace("$STUB_GO2", &go2.display().to_string())
        .replace("$STUB_GO", &go.display().to_string());
    std::fs::write(&stub, script).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbudgets: {{ daily_usd: 2.0, weekly_usd: 4.0, task_usd: 0.5, alert_at: 0.25 }}\nbackends:\n  stub: {{ kind: claude-code, command: {} }}\n",
            stub.display()
        ),
    );
    repo.write(
        "agent.yml",
        "tasks:\n  - { id: live, title: Live, paths: [live.txt], backend: stub }\n  - { id: ask, title: Ask, paths: [ask.txt], backend: stub }\n  - { id: manifest, title: Manifest, paths: [package.json], run: 'echo {} > package.json' }\n",
    );
    let never = repo.outside.join("never");
    for name in ["wait-a", "wait-b"] {
        repo.write(
            &format!("{name}.yml"),
            &format!(
                "tasks:\n  - {{ id: {name}, title: Wait, paths: [{name}.txt], run: 'while [ ! -e {} ]; do sleep 0.2; done' }}\n",
                never.display()
            ),
        );
    }
    repo.commit_all("backlogs");
    let admin = token(&repo, "admin");
    let (mut server, addr) = start_server(&repo);
    let url = format!("http://{addr}");
    let agent = create(&addr, &admin, "agent.yml");
    let wait_a = create(&addr, &admin, "wait-a.yml");
    let wait_b = create(&addr, &admin, "wait-b.yml");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "the test drives the browser script"
    )]
    let out = std::process::Command::new("node")
        .arg("home.mjs")
        .current_dir(dir)
        .env("ABO_URL", &url)
        .env("ABO_ADMIN", &admin)
        .env("ABO_RUN", &agent)
        .env("ABO_WAIT_A", &wait_a)
        .env("ABO_WAIT_B", &wait_b)
        .env("ABO_GO", &go)
        .env("ABO_GO2", &go2)
        .env("ABO_SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("home: ok"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("screenshots in {}", shots.display());
    for page in [
        "home-desktop",
        "task-live-desktop",
        "home-phone",
        "task-phone",
        "summary-phone",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "{page}.png in {}",
            shots.display()
        );
    }
    // What the browser did reached the log: the approval decided from the home page, both
    // waiting runs paused by Pause all, then killed by Kill all.
    let doc = crate::status(&repo, Some(&agent));
    for t in 0..3 {
        assert_eq!(doc["tasks"][t]["status"], "landed", "{doc}");
    }
    // The agent's question, answered from the home page, reached its next attempt's prompt; the
    // attempt that asked did not count against the task's attempts.
    assert_eq!(doc["tasks"][1]["attempts"], 2, "{doc}");
    let asked = repo.git(&["show", &format!("abo/{agent}:ask.txt")]);
    assert!(
        asked.contains("Which roles first? Answer: Viewer"),
        "the second attempt's prompt: {asked}"
    );
    let events = crate::abo(&repo, &["events", &agent, "--json"]).stdout;
    assert!(events.contains("\"task.question\""), "{events}");
    for run in [&wait_a, &wait_b] {
        let doc = crate::status(&repo, Some(run));
        assert_eq!(doc["run"]["status"], "killed", "{doc}");
    }
    let out = crate::abo(&repo, &["events", &wait_a, "--json"]);
    assert!(out.stdout.contains("\"run.paused\""), "{}", out.stdout);
}
