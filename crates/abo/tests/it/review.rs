//! `review:`: a reviewer other than the change's backend answers a JSON verdict; its findings
//! feed the next attempt, and a malformed verdict is a reviewer failure, never approval.

use abo_test_support::TestRepo;
use abo_test_support::stub::{Canned, StubServer, anthropic_reply};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo_env, brief, config, events, s, task};

fn run(repo: &TestRepo, backlog: &str, env: &[(&str, String)]) -> (i32, Value, String) {
    let b = repo.write_outside("b.yml", backlog);
    let out = abo_env(repo, &["run", b.to_str().unwrap(), "--json"], env);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    (out.code, doc, out.stderr)
}

fn reviews(evs: &[Value]) -> Vec<Value> {
    evs.iter()
        .filter(|e| e["kind"] == "task.review")
        .cloned()
        .collect()
}

/// The task writes TODO until its feedback says why not; the reviewer (a command, reading the
/// question from `ABO_REVIEW_FILE`) requests changes while the diff holds a TODO.
const REVIEWER: &str = r#"if grep -q '^+TODO' "$ABO_REVIEW_FILE"; then echo '{"verdict":"request_changes","findings":[{"file":"a.txt","line":1,"severity":"high","text":"no TODO in shipped code"}]}'; else echo '{"verdict":"approve","findings":[]}'; fi"#;

#[test]
fn request_changes_feeds_the_next_attempt_whose_approval_lands() {
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbackends:\n  rev: {{ kind: command, run: '{}' }}\nreview: {{ backends: [rev], max_rounds: 1 }}\n",
            REVIEWER.replace('\'', "''")
        ),
    );
    let (code, doc, stderr) = run(
        &repo,
        r#"
tasks:
  - id: a
    title: Write a
    run: |
      if [ -n "$ABO_FEEDBACK_FILE" ] && grep -q "no TODO in shipped code" "$ABO_FEEDBACK_FILE"; then echo done > a.txt
      else echo TODO > a.txt; fi
"#,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(brief(&doc), s(&[("a", "landed", 2)]));
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let r = reviews(&evs);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        (
            &r[0]["data"]["attempt"],
            &r[0]["data"]["verdict"],
            &r[0]["data"]["reviewer"]
        ),
        (
            &Value::from(1),
            &Value::from("request_changes"),
            &Value::from("rev")
        )
    );
    assert_eq!(r[0]["data"]["findings"][0]["severity"], "high");
    assert_eq!(
        (&r[1]["data"]["attempt"], &r[1]["data"]["verdict"]),
        (&Value::from(2), &Value::from("approve"))
    );
    let retry = evs.iter().find(|e| e["kind"] == "task.retry").unwrap();
    assert_eq!(
        retry["data"]["reason"],
        "the review requested changes\n- a.txt:1 (High): no TODO in shipped code"
    );
    // The policy saw the verdict as `input.review`.
    let policy = evs.iter().find(|e| e["kind"] == "task.policy").unwrap();
    let input: Value =
        serde_json::from_str(&crate::artifact(&repo, &policy["data"]["input"])).unwrap();
    assert_eq!(input["review"]["verdict"], "approve");
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:a.txt")]), "done\n");
}

#[test]
fn a_malformed_verdict_from_a_model_is_a_reviewer_failure_and_never_approval() {
    // The reviewer is a model API (a stub speaking Anthropic's Messages format) that answers
    // prose instead of the verdict's JSON.
    let server = StubServer::start(vec![Canned::ok(anthropic_reply(
        "Looks good to me! Ship it.",
        300,
        20,
    ))]);
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbackends:\n  critic: {{ kind: anthropic, model: claude-sonnet-4-5, base_url: \"{}\", api_key_env: ABO_TEST_KEY }}\nreview: {{ backends: [critic] }}\n",
            server.url
        ),
    );
    let (code, doc, stderr) = run(
        &repo,
        "tasks:\n  - { id: a, title: Write a, run: 'echo a > a.txt' }\n",
        &[("ABO_TEST_KEY", "sk-test-0123456789abcdefghij".to_owned())],
    );
    assert_eq!(code, 4, "waits for a person: {stderr}");
    assert_eq!(task(&doc, "a")["status"], "awaiting_approval");
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let r = reviews(&evs);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["data"]["verdict"], "failed");
    assert_eq!(r[0]["data"]["reviewer"], "critic");
    assert!(
        r[0]["data"]["error"]
            .as_str()
            .unwrap()
            .starts_with("the reviewer's verdict is malformed"),
        "{r:?}"
    );
    let asked = evs
        .iter()
        .find(|e| e["kind"] == "task.approval_requested")
        .unwrap();
    assert!(
        asked["data"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "review: the reviewer gave no valid verdict, which is never approval"),
        "{asked}"
    );
    // The model was asked with the diff in the question.
    let req = &server.requests()[0];
    assert!(req.raw.contains("+a"), "{}", req.raw);
}

/// One task writing `TODO` into a.txt, reviewed by `reviewer` with no round to send findings back;
/// the task's status after the run, and its dashboard page as `abo serve` renders it.
fn reviewed_task_page(reviewer: &str) -> (String, String) {
    use crate::serve::{http, start_server, token};
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbackends:\n  rev: {{ kind: command, run: '{}' }}\nreview: {{ backends: [rev], max_rounds: 0 }}\n",
            reviewer.replace('\'', "''")
        ),
    );
    let (_, doc, stderr) = run(
        &repo,
        "tasks:\n  - { id: a, title: Write a, run: 'echo TODO > a.txt' }\n",
        &[],
    );
    let status = task(&doc, "a")["status"].as_str().unwrap().to_owned();
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let admin = token(&repo, "admin");
    let (mut server, addr) = start_server(&repo);
    let (code, page) = http(
        &addr,
        "GET",
        &format!("/runs/{id}/tasks/a"),
        Some(&admin),
        None,
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 200, "{page}\n{stderr}");
    (status, page)
}

/// A change landed with the reviewer's low-severity comments (no round left to send them back):
/// they are pinned to the lines they name in the task page's diff, escaped (a reviewer's text is a
/// model's).
#[test]
fn the_reviewers_comments_are_pinned_to_their_lines_in_the_diff() {
    let reviewer = REVIEWER
        .replace("no TODO in shipped code", "no TODO <b>here</b>")
        .replace("\"high\"", "\"low\"");
    let (status, page) = reviewed_task_page(&reviewer);
    assert_eq!(status, "landed", "{page}");
    assert!(
        page.contains(
            "<tr class=pin data-pin=\"a.txt:1\"><td colspan=3><b>review</b> Low: no TODO &lt;b&gt;here&lt;/b&gt;</td></tr>"
        ),
        "{page}"
    );
    assert!(
        page.contains("reviewed by <b>rev</b>: RequestChanges (1 finding)"),
        "{page}"
    );
}

/// A change waiting for approval is shown to the person deciding: its diff, read from the kept
/// worktree, with the reviewer's high-severity comment pinned to its line.
#[test]
fn a_change_waiting_for_approval_shows_its_diff_and_the_reviewers_comment() {
    let (status, page) = reviewed_task_page(REVIEWER);
    assert_eq!(status, "awaiting_approval", "{page}");
    assert!(page.contains("data-file=\"a.txt\""), "{page}");
    assert!(
        page.contains("<b>review</b> High: no TODO in shipped code"),
        "{page}"
    );
}

/// A model reviewer (the scripted OpenAI-compatible server, which reports 1200 input and 60
/// output tokens a reply) priced at $1000 per million input tokens: one review costs $1.20, the
/// whole run cap. The first task's review is reserved, asked and charged; the second's no longer
/// fits, so it is not asked and its change waits for a person, saying why.
#[test]
fn a_model_reviewers_spend_is_reserved_charged_shown_and_held_to_the_run_cap() {
    use abo_test_support::model_server_openai::ModelServer;
    let server = ModelServer::http();
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbudgets: {{ run_usd: 1.2 }}\npricing:\n  review-model: {{ input: 1000.0, output: 0.0 }}\nbackends:\n  critic: {{ kind: openai, model: review-model, base_url: \"{}\", api_key_env: ABO_TEST_KEY }}\nreview: {{ backends: [critic] }}\n",
            server.base_url
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: Write a, run: 'echo a > a.txt', priority: 2 }\n  - { id: b, title: Write b, run: 'echo b > b.txt', priority: 1 }\n",
    );
    let out = abo_env(
        &repo,
        &["run", b.to_str().unwrap(), "--json", "--max-parallel", "1"],
        &[("ABO_TEST_KEY", "sk-test-0123456789abcdefghij".to_owned())],
    );
    assert_eq!(out.code, 4, "both wait for a person: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let of = |kind: &str, task: &str| -> Vec<Value> {
        evs.iter()
            .filter(|e| e["kind"] == kind && e["task"] == task)
            .cloned()
            .collect()
    };

    // a: reserved (all the run cap holds) before the model was asked, then charged its usage.
    let reserved = of("review.reserved", "a");
    assert_eq!(reserved.len(), 1, "{evs:?}");
    assert_eq!(reserved[0]["data"]["reserved"]["usd"], 1.2);
    assert_eq!(reserved[0]["data"]["reviewer"], "critic");
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    let charged = of("review.charged", "a");
    assert_eq!(charged.len(), 1, "{evs:?}");
    assert!(seq(&reserved[0]) < seq(&charged[0]));
    let served = server.served();
    assert_eq!(served.replies, 1, "only a's reviewer was asked");
    assert_eq!(
        charged[0]["data"]["tokens"],
        served.input_tokens + served.output_tokens
    );
    assert_eq!(
        (&charged[0]["data"]["usd"], &charged[0]["data"]["source"]),
        (&Value::from(1.2), &Value::from("estimated"))
    );

    // b: the cap is spent, so its reviewer is not asked and the change needs a person.
    assert!(of("review.reserved", "b").is_empty());
    let review = of("task.review", "b");
    assert_eq!(review[0]["data"]["verdict"], "not_started", "{review:?}");
    let error = review[0]["data"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("not started: budget: run.usd cap $1.20 reached"),
        "{error}"
    );
    assert!(!of("budget.exhausted", "b").is_empty());
    let asked = of("task.approval_requested", "b");
    assert!(
        asked[0]["data"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r
                .as_str()
                .unwrap()
                .starts_with("review: not started, the budget cannot hold")),
        "{asked:?}"
    );
    assert_eq!(task(&doc, "b")["status"], "awaiting_approval");

    // Shown as the review's cost: in status, the report and the summary.
    let status = crate::status(&repo, Some(id));
    assert_eq!(
        (&status["run"]["review_usd"], &status["run"]["spent_usd"]),
        (&Value::from(1.2), &Value::from(1.2))
    );
    assert_eq!(task(&status, "a")["cost_usd"], 1.2);
    let out = crate::abo(&repo, &["status", id]);
    assert!(out.stdout.contains("reviews  $1.20"), "{}", out.stdout);
    let out = crate::abo(&repo, &["report", "--json"]);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (&r["review_cost_usd"], &r["cost_usd"]),
        (&Value::from(1.2), &Value::from(1.2))
    );
    let out = crate::abo(&repo, &["summary"]);
    assert!(
        out.stdout.contains("$1.20 (reviews $1.20)"),
        "{}",
        out.stdout
    );
}
