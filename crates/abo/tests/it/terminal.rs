//! What a change or an agent says reaches the terminal as text, never as control sequences: file
//! names holding a title, a colour, a clipboard write (OSC 52), a C1 CSI and a bidi override, an
//! agent's error with escapes in it. abo's plain output shows them escaped; its JSON carries them
//! as they are (JSON escapes), which shows they did reach abo.

use std::os::unix::fs::PermissionsExt;

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{Out, abo, abo_env, config};

/// The two file names, as the task's shell writes them and as abo shows them.
const TITLE: (&str, &str) = (
    "a\u{1b}]0;TITLE-PWNED\u{7}\u{1b}[31mred.md",
    r"a\x1b]0;TITLE-PWNED\x07\x1b[31mred.md",
);
const CLIPBOARD: (&str, &str) = (
    "b\u{1b}]52;c;UFdORUQ=\u{7}\u{202e}x\u{9b}.md",
    r"b\x1b]52;c;UFdORUQ=\x07\u{202e}x\u{9b}.md",
);
/// What the agent's `is_error` result says, as abo shows it.
const AGENT: &str = r"\x1b]52;c;QUdFTlQ=\x07\x1b]0;AGENT-PWNED\x07 boom";

/// No byte of `text` would drive a terminal: no C0 but newline and tab, no DEL, C1 or bidi.
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect();
    assert_eq!(bad, Vec::<char>::new(), "{what}: {text}");
}

fn plain(what: &str, out: &Out) -> String {
    assert_inert(&format!("{what} stdout"), &out.stdout);
    assert_inert(&format!("{what} stderr"), &out.stderr);
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn control_characters_from_a_change_or_an_agent_reach_the_terminal_escaped() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\nbackends:\n  claude: { kind: claude-code, model: sonnet, max_turns: 5 }\n",
    );
    // An agent that exits 0 with an error inside, escapes in its text.
    let bin = repo.outside.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\ncat > /dev/null\necho '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"\\u001b]52;c;QUdFTlQ=\\u0007\\u001b]0;AGENT-PWNED\\u0007 boom\",\"total_cost_usd\":0}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = [(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )];
    let backlog = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: names, title: N, paths: ['docs/**'], run: 'touch \"$(printf ''a\\033]0;TITLE-PWNED\\007\\033[31mred.md'')\" \"$(printf ''b\\033]52;c;UFdORUQ=\\007\\342\\200\\256x\\302\\233.md'')\"' }\n  - { id: agent, title: A, backend: claude }\n",
    );

    let run = abo_env(&repo, &["run", backlog.to_str().unwrap()], &env);
    assert_eq!(run.code, 4, "paused for approval: {}", run.stderr);
    let run = plain("abo run", &run);
    let status = abo(&repo, &["status"]);
    let status = plain("abo status", &status);
    let events = abo(&repo, &["events"]);
    let events = plain("abo events", &events);
    let approvals = abo(&repo, &["approvals"]);
    let approvals = plain("abo approvals", &approvals);
    for (what, text) in [
        ("abo run", &run),
        ("abo status", &status),
        ("abo events", &events),
        ("abo approvals", &approvals),
    ] {
        for shown in [TITLE.1, CLIPBOARD.1] {
            assert!(text.contains(shown), "{what} shows {shown}: {text}");
        }
    }
    for (what, text) in [
        ("abo run", &run),
        ("abo status", &status),
        ("abo events", &events),
    ] {
        assert!(text.contains(AGENT), "{what} shows {AGENT}: {text}");
    }
    // The error reporter: a run id with a title sequence in it.
    let err = abo(&repo, &["events", "zz\u{1b}]0;T\u{7}"]);
    assert_eq!(err.code, 2);
    assert!(
        plain("an error", &err).contains(r"no run `zz\x1b]0;T\x07`"),
        "{}",
        err.stderr
    );

    // Control: the JSON holds the names and the agent's text as they are, JSON-escaped, so they
    // did reach abo; each line still parses.
    let json = abo(&repo, &["events", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert_inert("abo events --json", &json.stdout);
    let events: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let policy = events.iter().find(|e| e["kind"] == "task.policy").unwrap();
    assert_eq!(
        policy["data"]["require_approval"],
        serde_json::json!([
            format!("{} is outside the task's paths", TITLE.0),
            format!("{} is outside the task's paths", CLIPBOARD.0),
        ])
    );
    let failed = events.iter().find(|e| e["kind"] == "task.failed").unwrap();
    assert!(
        failed["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("\u{1b}]52;c;QUdFTlQ=\u{7}\u{1b}]0;AGENT-PWNED\u{7} boom"),
        "{failed}"
    );
    let status = abo(&repo, &["status", "--json"]);
    assert_inert("abo status --json", &status.stdout);
    let doc: Value = serde_json::from_str(&status.stdout).unwrap();
    let names = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "names")
        .unwrap();
    assert!(
        names["reason"].as_str().unwrap().contains(CLIPBOARD.0),
        "{names}"
    );
}
