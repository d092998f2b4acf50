//! `landing.verify`: the run branch verified after its tasks landed, bisected and healed.

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, artifact, brief, config, events, run, s, status};

/// Each task passes its own gate; together they break the verify suite (`e2e`).
const CONFIG: &str = "version: 1\nautonomy: { overrides: { merge: A2 } }\nattempts: { max: 2, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: unit, run: 'test -n \"$(ls)\"' }\n  - { name: e2e, run: 'if test -f a.txt && test -f b.txt; then echo \"e2e: a and b clash\"; exit 1; fi' }\nlanding:\n  verify: [e2e]\n";

const BACKLOG: &str = r#"
tasks:
  - { id: a, title: Add a, run: "echo a > a.txt", priority: 2, gates: [unit] }
  - id: b
    title: Add b
    priority: 1
    gates: [unit]
    run: |
      if [ -n "$ABO_FEEDBACK_FILE" ] && grep -q "a and b clash" "$ABO_FEEDBACK_FILE"; then echo fixed > c.txt
      else echo b > b.txt; fi
"#;

fn kinds(evs: &[Value], kind: &str) -> Vec<Value> {
    evs.iter().filter(|e| e["kind"] == kind).cloned().collect()
}

#[test]
fn two_changes_that_break_verify_together_are_bisected_to_the_second_which_is_reverted() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    let backlog = repo.write_outside("b.yml", BACKLOG);
    let (code, doc, stderr) = run(&repo, &backlog, &["--max-parallel", "1"]);
    assert_eq!(code, 1, "a reverted task did not land: {stderr}");
    assert_eq!(brief(&doc), s(&[("a", "landed", 1), ("b", "reverted", 1)]));
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let evs = events(&repo, &id);
    let verifies = kinds(&evs, "run.verify");
    assert_eq!(verifies.len(), 2, "{verifies:?}");
    assert_eq!(verifies[0]["data"]["passed"], false);
    assert_eq!(verifies[0]["data"]["failed_gate"], "e2e");
    assert!(artifact(&repo, &verifies[0]["data"]["log"]).contains("e2e: a and b clash"));
    assert_eq!(verifies[1]["data"]["passed"], true);
    // Two landed commits: one bisect step, on the first, which is good.
    let steps = kinds(&evs, "run.bisect");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (&steps[0]["task"], &steps[0]["data"]["passed"]),
        (&Value::from("a"), &Value::from(true))
    );
    let reverted = kinds(&evs, "task.reverted");
    assert_eq!(reverted.len(), 1);
    assert_eq!(reverted[0]["task"], "b");
    let bad = reverted[0]["data"]["commit"].as_str().unwrap();
    let revert = reverted[0]["data"]["revert"].as_str().unwrap();

    // The run branch: a, b, and the revert of b carrying the run's trailers; a is kept.
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["rev-parse", branch]).trim(), revert);
    let message = repo.git(&["log", "-1", "--format=%B", revert]);
    assert!(message.starts_with("Revert \"Add b\""), "{message}");
    for trailer in [
        format!("Abo-Revert-Of: {bad}"),
        format!("Abo-Run: {id}"),
        "Abo-Task: b".to_owned(),
    ] {
        assert!(
            message.lines().any(|l| l == trailer),
            "{trailer} in {message}"
        );
    }
    let files = repo.git(&["ls-tree", "--name-only", branch]);
    assert!(
        files.lines().any(|f| f == "a.txt") && !files.lines().any(|f| f == "b.txt"),
        "{files}"
    );
    // The user's checkout was not touched.
    assert!(!repo.path.join("a.txt").exists());

    // The report measures it from the events.
    let out = abo(&repo, &["report", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["tasks_reverted"], 1);
    assert_eq!(r["change_failure_rate"], 0.5);
    assert_eq!(r["time_to_restore"]["count"], 1);
    assert!(r["time_to_restore"]["p50_s"].as_f64().unwrap() >= 0.0);

    // `abo retry` gives b a fresh attempt that knows why it was reverted.
    let out = abo(&repo, &["retry", "b", "--run", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let doc = status(&repo, Some(&id));
    assert_eq!(brief(&doc), s(&[("a", "landed", 1), ("b", "landed", 2)]));
    let files = repo.git(&["ls-tree", "--name-only", branch]);
    assert!(files.lines().any(|f| f == "c.txt"), "{files}");
    let evs = events(&repo, &id);
    let last = kinds(&evs, "run.verify").pop().unwrap();
    assert_eq!(last["data"]["passed"], true);
}

/// The verify suite fails when the user's `x.txt` and a task's `b.txt` meet: each passes alone.
const BASE_CONFIG: &str = "version: 1\ngates:\n  - { name: unit, run: 'test -n \"$(ls)\"' }\n  - { name: e2e, run: 'if test -f x.txt && test -f b.txt; then echo \"e2e: x and b clash\"; exit 1; fi' }\nlanding:\n  verify: [e2e]\n";

/// A person looks at b before it lands: the run waits, which lets the base branch move.
const APPROVE_B: &str = "package abo\n\nrequire_approval contains \"b needs a person\" if {\n\tsome f in input.change.files\n\tf.path == \"b.txt\"\n}\n";

const BASE_BACKLOG: &str = r#"
tasks:
  - { id: a, title: Add a, run: "echo a > a.txt", priority: 2, gates: [unit] }
  - { id: b, title: Add b, run: "echo b > b.txt", priority: 1, gates: [unit] }
"#;

#[test]
fn after_the_merge_the_base_branch_is_verified_and_the_first_bad_commit_reverted_on_it() {
    let repo = TestRepo::new();
    repo.write(".abo/policy/team.rego", APPROVE_B);
    config(&repo, BASE_CONFIG);
    repo.git(&["branch", "work"]);
    let backlog = repo.write_outside("b.yml", BASE_BACKLOG);
    let (code, doc, stderr) = run(&repo, &backlog, &["--max-parallel", "1"]);
    assert_eq!(code, 4, "b waits for a person: {stderr}");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    // Meanwhile the user commits x.txt on main and switches to another branch: the run's end
    // makes a merge commit, whose tree no run-branch verify saw.
    repo.write("x.txt", "x\n");
    repo.commit_all("x on main");
    let before = repo.git(&["rev-parse", "main"]).trim().to_owned();
    repo.git(&["checkout", "-q", "work"]);
    let out = abo(&repo, &["approve", "b", "--reason", "looked"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = abo(&repo, &["resume", &id, "--json"]);
    assert_eq!(
        out.code, 1,
        "a reverted task did not land: {} {}",
        out.stdout, out.stderr
    );
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(brief(&doc), s(&[("a", "landed", 1), ("b", "reverted", 1)]));

    let evs = events(&repo, &id);
    let merge = kinds(&evs, "run.merge").pop().unwrap();
    assert_eq!(merge["data"]["outcome"], "merge-commit", "{merge}");
    assert_eq!(merge["data"]["onto"], before.as_str());
    let merged = merge["data"]["commit"].as_str().unwrap().to_owned();
    let on_main = |kind: &str| -> Vec<Value> {
        kinds(&evs, kind)
            .into_iter()
            .filter(|e| e["data"]["branch"] == "main")
            .collect()
    };
    // The run branch alone passed; on main the merge fails, a (as merged onto main) passes,
    // b is reverted on main and main passes again.
    assert!(
        kinds(&evs, "run.verify")
            .iter()
            .filter(|e| e["data"]["branch"].is_null())
            .all(|e| e["data"]["passed"] == true)
    );
    let verifies = on_main("run.verify");
    assert_eq!(verifies.len(), 2, "{verifies:?}");
    assert_eq!(
        (
            &verifies[0]["data"]["commit"],
            &verifies[0]["data"]["passed"]
        ),
        (&Value::from(merged.as_str()), &Value::from(false))
    );
    assert!(artifact(&repo, &verifies[0]["data"]["log"]).contains("e2e: x and b clash"));
    assert_eq!(verifies[1]["data"]["passed"], true);
    let steps = on_main("run.bisect");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (&steps[0]["task"], &steps[0]["data"]["passed"]),
        (&Value::from("a"), &Value::from(true))
    );
    let reverted = on_main("task.reverted");
    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert_eq!(reverted[0]["task"], "b");
    let bad = reverted[0]["data"]["commit"].as_str().unwrap();
    let revert = reverted[0]["data"]["revert"].as_str().unwrap();

    // main: the merge, then the revert of b on top of it (no force-push: main only moved on).
    assert_eq!(repo.git(&["rev-parse", "main"]).trim(), revert);
    assert_eq!(
        repo.git(&["rev-parse", &format!("{revert}^")]).trim(),
        merged
    );
    let message = repo.git(&["log", "-1", "--format=%B", revert]);
    assert!(message.starts_with("Revert \"Add b\""), "{message}");
    for trailer in [
        format!("Abo-Revert-Of: {bad}"),
        format!("Abo-Run: {id}"),
        "Abo-Task: b".to_owned(),
    ] {
        assert!(
            message.lines().any(|l| l == trailer),
            "{trailer} in {message}"
        );
    }
    let files = repo.git(&["ls-tree", "--name-only", "main"]);
    let has = |f: &str| files.lines().any(|l| l == f);
    assert!(has("x.txt") && has("a.txt") && !has("b.txt"), "{files}");
    // The run branch keeps b: it was reverted where it broke things, on main.
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert!(
        repo.git(&["ls-tree", "--name-only", branch])
            .lines()
            .any(|l| l == "b.txt")
    );

    // Nothing is owed any more, and the report measures it from the events.
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 2, "a settled run is not resumed: {}", out.stderr);
    let out = abo(&repo, &["report", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["tasks_reverted"], 1);
    assert_eq!(r["time_to_restore"]["count"], 1);
}

/// The verify suite fails once `b.txt` is on the branch; the run that adds it knows no verify.
const PLAIN_CONFIG: &str = "version: 1\nautonomy: { overrides: { merge: A2 } }\ngates:\n  - { name: unit, run: 'test -n \"$(ls)\"' }\n";

/// A run whose task `b` lands `b.txt` (which `SCHEDULED_CONFIG`'s e2e gate fails on) on its run
/// branch; main is left as it was (merge A2).
struct Landed {
    repo: TestRepo,
    backlog: std::path::PathBuf,
    id: String,
    run_branch: String,
}

fn landed_b() -> Landed {
    let repo = TestRepo::new();
    config(&repo, PLAIN_CONFIG);
    let backlog = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: b, title: Add b, run: \"echo b > b.txt\", gates: [unit] }\n",
    );
    let (code, doc, stderr) = run(&repo, &backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    Landed {
        id: doc["run"]["id"].as_str().unwrap().to_owned(),
        run_branch: doc["run"]["branch"].as_str().unwrap().to_owned(),
        repo,
        backlog,
    }
}

/// `abo daemon` checking the schedule every 200 ms, what it says written to the file returned
/// (read while it runs: an event is in the log a moment before the daemon says it).
fn daemon(repo: &TestRepo) -> (std::process::Child, std::path::PathBuf) {
    let said = repo.outside.join("daemon.out");
    let file = std::fs::File::create(&said).unwrap();
    let child = crate::abo_cmd(
        repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    )
    .stdout(std::process::Stdio::from(file))
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    (child, said)
}

/// Notified by default: `task.reverted` (in the task's run) and `verify.reported`.
const SCHEDULED_CONFIG: &str = "version: 1\nbase_branch: main\nnotify: { webhooks: [{ url: 'HOOK/hook' }] }\ngates:\n  - { name: unit, run: 'test -n \"$(ls)\"' }\n  - { name: e2e, run: 'if test -f b.txt; then echo \"e2e: b breaks it\"; exit 1; fi' }\nlanding:\n  verify: [e2e]\n  verify_schedule: 1s\n";

#[test]
fn the_daemon_verifies_main_on_schedule_reverts_a_bad_abo_commit_and_reports_a_persons() {
    let Landed {
        repo,
        backlog,
        id,
        run_branch,
    } = landed_b();
    // The run's end does not merge (merge A2): main is as it was.
    assert!(!repo.path.join("b.txt").exists());
    let good = repo.git(&["rev-parse", "main"]).trim().to_owned();
    // The user works on another branch; main is checked out nowhere.
    repo.git(&["checkout", "-q", "-b", "work"]);
    let hook = abo_test_support::stub::StubServer::start(
        (0..4)
            .map(|_| abo_test_support::stub::Canned::ok("{}"))
            .collect(),
    );
    config(&repo, &SCHEDULED_CONFIG.replace("HOOK", &hook.url));
    let (mut daemon, said_file) = daemon(&repo);
    let log = || events(&repo, "verify-main");
    let has = |evs: &[Value], kind: &str, n: usize| kinds(evs, kind).len() >= n;
    // The schedule's first look: main as it is verifies.
    let first = abo_test_support::wait_for(60, || has(&log(), "run.verify", 1));
    // Then main is fast-forwarded to the run's commit (abo made it), which breaks the suite.
    let bad = repo.git(&["rev-parse", &run_branch]).trim().to_owned();
    repo.git(&["update-ref", "refs/heads/main", &bad, &good]);
    // Healed once the revert verified too (the daemon then only reads until main moves again).
    let healed = first
        && abo_test_support::wait_for(90, || {
            let evs = log();
            has(&evs, "verify.reverted", 1) && has(&evs, "run.verify", 3)
        });
    // A person's commit breaks it again: reported, not reverted.
    let wt = backlog.with_file_name("person");
    let mut reported = false;
    let mut person = String::new();
    if healed {
        repo.git(&["worktree", "add", "-q", wt.to_str().unwrap(), "main"]);
        std::fs::write(wt.join("b.txt"), "mine\n").unwrap();
        abo_test_support::git_in(&wt, &["add", "-A"]);
        abo_test_support::git_in(&wt, &["commit", "-q", "-m", "a person adds b"]);
        person = abo_test_support::git_in(&wt, &["rev-parse", "HEAD"])
            .trim()
            .to_owned();
        repo.git(&["worktree", "remove", "--force", wt.to_str().unwrap()]);
        reported = abo_test_support::wait_for(90, || has(&log(), "verify.reported", 1));
    }
    // What follows the event: the daemon's line and the notification.
    let read_said = || std::fs::read_to_string(&said_file).unwrap_or_default();
    let told = abo_test_support::wait_for(30, || {
        read_said().contains("not abo's: reported") && hook.requests().len() >= 2
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let said = read_said();
    assert!(first && healed && reported && told, "daemon said: {said}");

    let evs = log();
    let scheduled = kinds(&evs, "verify.scheduled");
    assert!(scheduled.len() >= 3, "{scheduled:?}");
    assert_eq!(scheduled[0]["data"]["head"], good.as_str());
    assert_eq!(scheduled[1]["data"]["good"], good.as_str());
    assert_eq!(scheduled[1]["data"]["commits"][0]["commit"], bad.as_str());
    assert_eq!(scheduled[1]["data"]["commits"][0]["task"], "b");
    let verifies = kinds(&evs, "run.verify");
    assert_eq!(verifies[0]["data"]["passed"], true);
    assert_eq!(
        (
            &verifies[1]["data"]["commit"],
            &verifies[1]["data"]["passed"]
        ),
        (&Value::from(bad.as_str()), &Value::from(false))
    );
    let bad_log = artifact(&repo, &verifies[1]["data"]["log"]);
    assert!(bad_log.contains("e2e: b breaks it"), "{bad_log}\n{evs:#?}");
    assert_eq!(verifies[2]["data"]["passed"], true, "the revert verifies");

    // main: the bad commit, then its revert on top (moved by compare-and-swap, never forced).
    let reverted = kinds(&evs, "verify.reverted");
    let revert = reverted[0]["data"]["revert"].as_str().unwrap().to_owned();
    assert_eq!(reverted[0]["data"]["by_run"], id.as_str());
    assert_eq!(repo.git(&["rev-parse", &format!("{revert}^")]).trim(), bad);
    let message = repo.git(&["log", "-1", "--format=%B", &revert]);
    assert!(message.starts_with("Revert \"Add b\""), "{message}");
    for trailer in [
        format!("Abo-Revert-Of: {bad}"),
        format!("Abo-Run: {id}"),
        "Abo-Task: b".to_owned(),
    ] {
        assert!(
            message.lines().any(|l| l == trailer),
            "{trailer} in {message}"
        );
    }
    // The task is reverted in its own run, with the verify log as its feedback.
    assert_eq!(brief(&status(&repo, Some(&id))), s(&[("b", "reverted", 1)]));
    let own = kinds(&events(&repo, &id), "task.reverted");
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["data"]["branch"], "main");
    assert_eq!(own[0]["data"]["revert"], revert.as_str());
    assert!(artifact(&repo, &own[0]["data"]["log"]).contains("e2e: b breaks it"));

    // The person's commit: reported, main left where the person put it.
    let r = kinds(&evs, "verify.reported");
    assert_eq!(r[0]["data"]["commit"], person.as_str());
    assert_eq!(repo.git(&["rev-parse", "main"]).trim(), person);
    assert_eq!(kinds(&evs, "verify.reverted").len(), 1);
    assert!(said.contains("not abo's: reported"), "{said}");
    // A person is told of both, by default.
    let sent: Vec<String> = hook.requests().into_iter().map(|r| r.raw).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains("task.reverted"), "{sent:?}");
    assert!(
        sent[1].contains("verify.reported") && sent[1].contains(&person),
        "{sent:?}"
    );
    // `abo status` shows the base branch's last scheduled verification.
    let st = status(&repo, Some(&id));
    assert_eq!(st["base_verify"]["log"], "verify-main", "{st}");
    assert_eq!(st["base_verify"]["good"], revert.as_str());
    assert!(
        st["base_verify"]["last"]
            .as_str()
            .unwrap()
            .contains("reported, not reverted"),
        "{st}"
    );
}

/// `abo daemon` with `env` added, its output in `out` (read while it runs).
fn daemon_with(
    repo: &TestRepo,
    env: &[(&str, &str)],
    out: &std::path::Path,
) -> std::process::Child {
    let file = std::fs::File::create(out).unwrap();
    crate::abo_cmd(
        repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    )
    .envs(env.iter().copied())
    .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
    .stderr(std::process::Stdio::from(file))
    .spawn()
    .unwrap()
}

/// Under `landing.mode: pull-request` abo commits nothing to the base branch itself: the revert
/// of its bad commit is a commit on a branch of its own, pushed to the remote and offered as a
/// draft pull request (a local server answering as GitHub does). main keeps the bad commit and is
/// not taken for verified; abo stopping after opening the pull request but before recording it
/// finds that one again instead of opening a second; once the pull request is merged, the task is
/// reverted and main verified from there. (The committed revert is the test above.)
#[test]
fn under_pull_requests_the_daemon_proposes_its_revert_and_verifies_main_once_it_is_merged() {
    let Landed {
        repo,
        backlog: _,
        id,
        run_branch,
    } = landed_b();
    let bare = repo.outside.join("remote.git");
    abo_test_support::git_in(
        &repo.outside,
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    repo.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    let good = repo.git(&["rev-parse", "main"]).trim().to_owned();
    repo.git(&["checkout", "-q", "-b", "work"]);
    let hook =
        abo_test_support::stub::StubServer::start(vec![abo_test_support::stub::Canned::ok("{}")]);
    let pull = r#"{"html_url":"https://github.example/acme/app/pull/9","number":9}"#;
    let forge = abo_test_support::stub::StubServer::start(vec![
        abo_test_support::stub::Canned::status(201, pull),
        abo_test_support::stub::Canned::status(
            422,
            r#"{"message":"A pull request already exists for acme:abo-revert/x."}"#,
        ),
        abo_test_support::stub::Canned::ok(format!("[{pull}]")),
    ]);
    config(
        &repo,
        &SCHEDULED_CONFIG.replace("HOOK", &hook.url).replace(
            "landing:\n",
            &format!(
                "landing:\n  mode: pull-request\n  provider: github\n  api_url: '{}'\n  repo: acme/app\n",
                forge.url
            ),
        ),
    );
    let env = [("GITHUB_TOKEN", "t0k-secret")];
    let said = repo.outside.join("daemon.out");
    let mut daemon = daemon_with(&repo, &env, &said);
    let log = || events(&repo, "verify-main");
    let first = abo_test_support::wait_for(60, || !kinds(&log(), "run.verify").is_empty());
    let bad = repo.git(&["rev-parse", &run_branch]).trim().to_owned();
    repo.git(&["update-ref", "refs/heads/main", &bad, &good]);
    let proposed =
        first && abo_test_support::wait_for(90, || !kinds(&log(), "verify.proposed").is_empty());
    // The person is told after the event is recorded: the daemon is stopped once the hook has
    // heard of it (or after 10 s; what it heard is checked below).
    abo_test_support::wait_for(10, || {
        hook.requests()
            .iter()
            .any(|r| r.raw.contains("verify.proposed"))
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        proposed,
        "daemon said: {}",
        std::fs::read_to_string(&said).unwrap_or_default()
    );
    let evs = log();
    let p = kinds(&evs, "verify.proposed")[0]["data"].clone();
    let revert = p["revert"].as_str().unwrap().to_owned();
    let short = &bad[..10];
    assert_eq!(
        (
            &p["commit"],
            &p["revert_branch"],
            &p["on"],
            &p["url"],
            &p["number"],
            &p["by_run"],
            &p["by_task"]
        ),
        (
            &Value::from(bad.as_str()),
            &Value::from(format!("abo-revert/{short}")),
            &Value::from(bad.as_str()),
            &Value::from("https://github.example/acme/app/pull/9"),
            &Value::from(9),
            &Value::from(id.as_str()),
            &Value::from("b"),
        )
    );
    // main is where it was: nothing committed to it, and its bad head is not taken for verified.
    assert_eq!(
        repo.git(&["rev-parse", "main"]).trim(),
        bad,
        "main untouched"
    );
    assert!(kinds(&evs, "verify.reverted").is_empty());
    assert_eq!(brief(&status(&repo, Some(&id))), s(&[("b", "landed", 1)]));
    let st = status(&repo, Some(&id));
    assert_eq!(st["base_verify"]["good"], good.as_str(), "{st}");
    assert_eq!(
        st["base_verify"]["proposed"], "https://github.example/acme/app/pull/9",
        "{st}"
    );
    // The revert: a commit on main's head, as a committed revert's message, on the remote's branch.
    let pushed = abo_test_support::git_in(
        &bare,
        &["rev-parse", &format!("refs/heads/abo-revert/{short}")],
    );
    assert_eq!(pushed.trim(), revert);
    assert_eq!(repo.git(&["rev-parse", &format!("{revert}^")]).trim(), bad);
    assert_eq!(
        repo.git(&["ls-tree", "--name-only", &revert])
            .lines()
            .filter(|l| *l == "b.txt")
            .count(),
        0
    );
    let message = repo.git(&["log", "-1", "--format=%B", &revert]);
    assert!(message.starts_with("Revert \"Add b\""), "{message}");
    for trailer in [
        format!("Abo-Revert-Of: {bad}"),
        format!("Abo-Run: {id}"),
        "Abo-Task: b".to_owned(),
    ] {
        assert!(
            message.lines().any(|l| l == trailer),
            "{trailer} in {message}"
        );
    }
    // The draft pull request, through the forge's API with the token.
    let reqs = forge.requests();
    assert_eq!(reqs.len(), 1, "one pull request");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/acme/app/pulls")
    );
    assert_eq!(r.header("authorization"), Some("Bearer t0k-secret"));
    assert_eq!(r.body["head"], format!("abo-revert/{short}"));
    assert_eq!(r.body["base"], "main");
    assert_eq!(r.body["draft"], true);
    assert!(
        r.body["title"]
            .as_str()
            .unwrap()
            .starts_with("abo: Revert \"Add b\""),
        "{}",
        r.body
    );
    assert!(
        r.body["body"]
            .as_str()
            .unwrap()
            .contains(&format!("Abo-Revert-Of: {bad}")),
        "{}",
        r.body
    );
    // A person is told.
    assert!(
        hook.requests()
            .iter()
            .any(|r| r.raw.contains("verify.proposed") && r.raw.contains("pull/9")),
        "{:?}",
        hook.requests()
            .iter()
            .map(|r| r.raw.clone())
            .collect::<Vec<_>>()
    );

    // abo stopped after opening the pull request, before recording it: the next daemon finds the
    // revert it pushed and the pull request it opened (the forge answers 422 to a second).
    let seq = kinds(&evs, "verify.proposed")[0]["seq"].as_i64().unwrap();
    crate::crash::truncate_log(&repo.path, seq);
    let mut daemon = daemon_with(&repo, &env, &said);
    let again = abo_test_support::wait_for(90, || !kinds(&log(), "verify.proposed").is_empty());
    // The pull request is merged (a merge commit, as GitHub makes one).
    let mut merged = String::new();
    let mut healed = false;
    if again {
        let tree = format!("{revert}^{{tree}}");
        merged = repo
            .git(&[
                "commit-tree",
                &tree,
                "-p",
                &bad,
                "-p",
                &revert,
                "-m",
                "Merge pull request #9",
            ])
            .trim()
            .to_owned();
        repo.git(&["update-ref", "refs/heads/main", &merged, &bad]);
        healed = abo_test_support::wait_for(90, || {
            let evs = log();
            !kinds(&evs, "verify.reverted").is_empty()
                && kinds(&evs, "run.verify")
                    .iter()
                    .any(|v| v["data"]["commit"] == merged.as_str() && v["data"]["passed"] == true)
        });
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        again && healed,
        "daemon said: {}",
        std::fs::read_to_string(&said).unwrap_or_default()
    );
    let evs = log();
    let p = kinds(&evs, "verify.proposed");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0]["data"]["revert"],
        revert.as_str(),
        "the pushed revert, not a second"
    );
    assert_eq!(
        p[0]["data"]["url"],
        "https://github.example/acme/app/pull/9"
    );
    assert_eq!(
        forge
            .requests()
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect::<Vec<_>>(),
        [
            ("POST".to_owned(), "/repos/acme/app/pulls".to_owned()),
            ("POST".to_owned(), "/repos/acme/app/pulls".to_owned()),
            ("GET".to_owned(), "/repos/acme/app/pulls".to_owned()),
        ],
        "found, not opened twice"
    );
    // Merged: the task is reverted in its own run by the revert that reached main, and main's new
    // head verified from the last good one.
    let r = kinds(&evs, "verify.reverted");
    assert_eq!(
        (&r[0]["data"]["commit"], &r[0]["data"]["revert"]),
        (&Value::from(bad.as_str()), &Value::from(revert.as_str()))
    );
    let scheduled = kinds(&evs, "verify.scheduled");
    let last = scheduled.last().unwrap();
    assert_eq!(
        (&last["data"]["head"], &last["data"]["good"]),
        (&Value::from(merged.as_str()), &Value::from(good.as_str()))
    );
    assert_eq!(brief(&status(&repo, Some(&id))), s(&[("b", "reverted", 1)]));
    let st = status(&repo, Some(&id));
    assert_eq!(st["base_verify"]["good"], merged.as_str(), "{st}");
    // The change failure rate counts it, and the time to restore runs to the merge.
    let report = abo(&repo, &["report", "--json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["tasks_reverted"], 1, "{report:#}");
    assert_eq!(report["time_to_restore"]["count"], 1, "{report:#}");
}
