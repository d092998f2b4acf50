//! The golden path: backlogs become gated commits on the run branch.

use abo_test_support::{TestRepo, wait_for};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, brief, config, events, run, s, status, task};

/// Runs stay on their run branch here (merge below A3): these tests are about the run branch.
const GATES: &str = "version: 1\nautonomy: { overrides: { merge: A2 } }\nattempts: { max: 2, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: test, run: 'sh check.sh' }\n";

/// A repository whose gate fails when any file contains the word BROKEN.
fn project() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "check.sh",
        "if grep -rl BROKEN --exclude=check.sh .; then echo 'found BROKEN'; exit 1; fi\n",
    );
    config(&repo, GATES);
    repo
}

#[test]
fn tasks_land_in_order_with_retries_failures_and_cancellations() {
    let repo = project();
    let backlog = repo.write_outside(
        "backlog.yml",
        r#"
run: { title: "golden" }
tasks:
  - { id: a, title: Add a, run: "echo a > a.txt", paths: [a.txt] }
  - { id: b, title: Add b, run: "echo b > b.txt", deps: [a], paths: [b.txt] }
  - id: flaky
    title: Fixed on the second attempt
    paths: [f.txt]
    run: |
      if [ -n "$ABO_FEEDBACK_FILE" ]; then grep -q "found BROKEN" "$ABO_FEEDBACK_FILE" && echo fixed > f.txt
      else echo BROKEN > f.txt; fi
  - { id: broken, title: Always broken, run: "echo BROKEN > x.txt", paths: [x.txt] }
  - { id: after-broken, title: Depends on broken, run: "echo y > y.txt", deps: [broken] }
  - { id: c, title: Add c, run: "echo c > c.txt", deps: [a, b, flaky] }
"#,
    );
    let (code, doc, _) = run(&repo, &backlog, &[]);
    assert_eq!(code, 1, "a failed task makes the run exit 1");
    assert_eq!(
        brief(&doc),
        s(&[
            ("a", "landed", 1),
            ("b", "landed", 1),
            ("flaky", "landed", 2),
            ("broken", "failed", 2),
            ("after-broken", "cancelled", 0),
            ("c", "landed", 1)
        ])
    );
    assert_eq!(
        task(&doc, "broken")["reason"],
        "gate `test` failed: it exited with 1 (after 2 attempts)"
    );
    assert_eq!(
        task(&doc, "after-broken")["reason"],
        "dependency `broken` failed"
    );

    // The JSON shape of `abo status --json` (stable; fields may be added).
    let run_keys: Vec<&str> = doc["run"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "title",
        "status",
        "branch",
        "base",
        "profile",
        "spent_usd",
        "spent_tokens",
        "budget_usd",
        "started_at",
        "finished_at",
        "reason",
    ] {
        assert!(run_keys.contains(&k), "run.{k} missing");
    }
    for k in [
        "id", "title", "type", "status", "attempts", "backend", "commit", "reason", "cost_usd",
        "tokens",
    ] {
        assert!(task(&doc, "a").get(k).is_some(), "task.{k} missing");
    }
    assert_eq!(
        (doc["run"]["status"].as_str(), doc["run"]["title"].as_str()),
        (Some("finished"), Some("golden"))
    );

    // One commit per landed task on the run branch, with the trailers, in dependency order.
    let id = doc["run"]["id"].as_str().unwrap();
    let branch = format!("abo/{id}");
    assert_eq!(doc["run"]["branch"], branch.as_str());
    let commits = repo.commits(doc["run"]["base"].as_str().unwrap(), &branch);
    let tasks: Vec<&str> = commits.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(tasks.len(), 4, "{commits:?}");
    for t in ["a", "b", "flaky", "c"] {
        assert_eq!(
            tasks.iter().filter(|x| **x == t).count(),
            1,
            "{t} lands exactly once: {commits:?}"
        );
    }
    assert!(tasks.iter().position(|t| *t == "a") < tasks.iter().position(|t| *t == "b"));
    assert_eq!(tasks.last(), Some(&"c"));
    let msg = repo.git(&[
        "log",
        "-1",
        "--format=%B",
        task(&doc, "flaky")["commit"].as_str().unwrap(),
    ]);
    assert!(
        msg.ends_with(&format!(
            "Abo-Run: {id}\nAbo-Task: flaky\nAbo-Attempt: 2\n\n"
        )),
        "{msg}"
    );
    assert_eq!(repo.git(&["show", &format!("{branch}:f.txt")]), "fixed\n");

    // Failed attempts keep their worktrees until `abo gc`; the others are gone.
    let kept: Vec<Value> = task(&doc, "broken")["worktrees"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        kept,
        vec![
            Value::from(format!(".abo/worktrees/{id}/broken-1")),
            Value::from(format!(".abo/worktrees/{id}/broken-2"))
        ]
    );
    let mut wts = repo.extra_worktrees();
    wts.sort();
    let want: Vec<String> = ["broken-1", "broken-2", "flaky-1"]
        .iter()
        .map(|w| {
            repo.path
                .join(format!(".abo/worktrees/{id}/{w}"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(wts, want);
    let out = abo(&repo, &["status"]);
    assert!(
        out.stdout
            .contains(&format!(".abo/worktrees/{id}/broken-2")),
        "{}",
        out.stdout
    );

    let out = abo(&repo, &["gc", "--older-than", "0s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(repo.extra_worktrees(), Vec::<String>::new());
    assert_eq!(repo.git(&["branch", "--list", "abo-attempt/*"]), "");

    // The event log: gap-free seq, and the fields every event has.
    let evs = events(&repo, id);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    for e in &evs {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["data", "kind", "run", "seq", "task", "ts"]);
    }
    let feedback_retry = evs
        .iter()
        .find(|e| e["kind"] == "task.retry" && e["task"] == "flaky")
        .unwrap();
    assert_eq!(
        feedback_retry["data"]["reason"],
        "gate `test` failed: it exited with 1"
    );
}

#[test]
fn the_users_checkout_is_never_touched_even_when_dirty() {
    let repo = project();
    repo.write("README.md", "# edited but not committed\n");
    repo.write("staged.txt", "staged\n");
    repo.git(&["add", "staged.txt"]);
    repo.write("untracked.txt", "mine\n");
    let before = repo.user_view();
    let backlog = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: readme, title: Touch the readme, run: 'echo more >> README.md' }\n  - { id: new, title: New file, run: 'echo new > staged.txt' }\n",
    );
    let (code, doc, stderr) = run(&repo, &backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(repo.user_view(), before);
    let branch = doc["run"]["branch"].as_str().unwrap();
    // The attempts started from the last commit, not from the dirty working tree.
    assert_eq!(
        repo.git(&["show", &format!("{branch}:README.md")]),
        "# test repo\nmore\n"
    );
    assert_eq!(
        repo.git(&["show", &format!("{branch}:staged.txt")]),
        "new\n"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain", "--ignored=matching", ".abo"])
            .trim(),
        "!! .abo/",
        ".abo/ is ignored"
    );
}

#[test]
fn overlapping_paths_never_run_at_once_and_priorities_order_the_queue() {
    let repo = project();
    // The tasks record their order in a file outside the repository: no sandbox here.
    config(
        &repo,
        &GATES.replace("version: 1\n", "version: 1\nsandbox: { mode: off }\n"),
    );
    let log = repo.outside.join("log");
    // Each writes inside its own scope (a change outside it would need approval).
    let step = |name: &str, file: &str| {
        format!(
            "echo start {name} >> {l}; sleep 0.3; echo end {name} >> {l}; mkdir -p $(dirname {file}); echo {name} > {file}",
            l = log.display()
        )
    };
    let backlog = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: wide, title: W, paths: ['src/**'], run: '{}' }}\n  - {{ id: narrow, title: N, paths: ['src/a.rs'], run: '{}' }}\n  - {{ id: other, title: O, paths: ['docs/**'], run: '{}' }}\n",
            step("wide", "src/wide.txt"),
            step("narrow", "src/a.rs"),
            step("other", "docs/other.txt")
        ),
    );
    let (code, _, stderr) = run(&repo, &backlog, &["--max-parallel", "3"]);
    assert_eq!(code, 0, "{stderr}");
    let lines = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = lines.lines().collect();
    let pos = |l: &str| order.iter().position(|x| *x == l).unwrap();
    // wide and narrow overlap: one ends before the other starts.
    assert!(
        pos("end wide") < pos("start narrow") || pos("end narrow") < pos("start wide"),
        "{lines}"
    );
    // other overlaps neither and runs alongside.
    assert!(
        pos("start other") < pos("end wide") && pos("start wide") < pos("end other"),
        "{lines}"
    );

    let repo = project();
    config(
        &repo,
        &GATES.replace("version: 1\n", "version: 1\nsandbox: { mode: off }\n"),
    );
    let log = repo.outside.join("log");
    let backlog = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: low, title: L, run: 'echo low >> {l}; echo > low.txt' }}\n  - {{ id: high, title: H, priority: 5, run: 'echo high >> {l}; echo > high.txt' }}\n",
            l = log.display()
        ),
    );
    let (code, _, _) = run(&repo, &backlog, &["--max-parallel", "1"]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "high\nlow\n");
}

#[test]
fn hung_gates_and_backends_fail_only_their_attempt_and_leave_nothing_running() {
    let repo = TestRepo::new();
    let pids = repo.outside.join("pids");
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\nattempts: {{ max: 1 }}\ntimeouts: {{ attempt: 1s, gate: 1s }}\ngates:\n  - {{ name: hang, run: 'if [ -f hang ]; then sleep 60 & echo $! >> {p}; echo $$ >> {p}; sleep 60; fi' }}\n",
            p = pids.display()
        ),
    );
    let backlog = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: gate-hangs, title: G, run: 'touch hang' }}\n  - {{ id: agent-hangs, title: A, run: 'sleep 60 & echo $! >> {p}; sleep 60' }}\n  - {{ id: fine, title: F, run: 'echo ok > ok.txt' }}\n",
            p = pids.display()
        ),
    );
    let started = std::time::Instant::now();
    let (code, doc, _) = run(&repo, &backlog, &[]);
    assert!(
        started.elapsed().as_secs() < 20,
        "timeouts must stop hung work"
    );
    assert_eq!(code, 1);
    assert_eq!(
        brief(&doc),
        s(&[
            ("gate-hangs", "failed", 1),
            ("agent-hangs", "failed", 1),
            ("fine", "landed", 1)
        ])
    );
    assert_eq!(
        task(&doc, "gate-hangs")["reason"],
        "gate `hang` failed: it timed out (after 1 attempt)"
    );
    assert_eq!(
        task(&doc, "agent-hangs")["reason"],
        "the command timed out after 1s (after 1 attempt)"
    );
    // The whole process group went, background children included.
    let text = std::fs::read_to_string(&pids).unwrap();
    for pid in text.lines() {
        assert!(
            wait_for(5, || !std::path::Path::new(&format!("/proc/{pid}"))
                .exists()),
            "process {pid} outlived its attempt"
        );
    }
    assert!(text.lines().count() >= 3, "{text}");
}

#[test]
fn a_merge_that_fails_the_gates_never_reaches_the_run_branch() {
    let repo = TestRepo::new();
    // Each change passes alone; together they fail.
    config(
        &repo,
        "version: 1\nattempts: { max: 2, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: exclusive, run: 'test ! -f a.txt || test ! -f b.txt' }\n",
    );
    let backlog = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'sleep 0.2; echo a > a.txt', priority: 1 }\n  - { id: b, title: B, run: 'sleep 0.4; echo b > b.txt' }\n  - { id: c, title: C, run: 'echo c > c.txt' }\n",
    );
    let (code, doc, _) = run(&repo, &backlog, &["--max-parallel", "3"]);
    assert_eq!(code, 1);
    assert_eq!(task(&doc, "b")["status"], "failed");
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    // Attempt 1 started before a landed: it passed alone and failed merged onto a.
    let retry = evs
        .iter()
        .find(|e| e["kind"] == "task.retry" && e["task"] == "b")
        .unwrap();
    assert_eq!(
        retry["data"]["reason"],
        "gate `exclusive` failed on the merged result: it exited with 1"
    );
    let branch = doc["run"]["branch"].as_str().unwrap();
    let landed: Vec<String> = repo
        .commits(doc["run"]["base"].as_str().unwrap(), branch)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(landed.len(), 2, "{landed:?}");
    assert!(!landed.contains(&"b".to_owned()));
    // The second of a and c to land was merged onto the first: its merged result was gated too.
    let merged: Vec<Value> = evs
        .into_iter()
        .filter(|e| e["kind"] == "task.gate" && e["data"]["stage"] == "merged")
        .collect();
    assert!(
        merged
            .iter()
            .any(|e| e["task"] != "b" && e["data"]["passed"] == true),
        "{merged:?}"
    );
}

#[test]
fn patch_tasks_apply_a_diff_and_push_mode_publishes_the_run_branch() {
    let repo = TestRepo::new();
    let remote = repo.outside.join("remote.git");
    abo_test_support::git_in(
        &repo.outside,
        &["init", "--quiet", "--bare", remote.to_str().unwrap()],
    );
    repo.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    config(&repo, "version: 1\nlanding: { mode: push }\n");
    repo.write_outside(
        "patches/hello.diff",
        "diff --git a/hello.txt b/hello.txt\nnew file mode 100644\n--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n+hello\n",
    );
    repo.write_outside(
        "patches/bad.diff",
        "diff --git a/nope.txt b/nope.txt\n--- a/nope.txt\n+++ b/nope.txt\n@@ -1 +1 @@\n-x\n+y\n",
    );
    let backlog = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: hello, title: Hello, patch: patches/hello.diff }\n  - { id: bad, title: Bad, patch: patches/bad.diff, max_attempts: 1 }\n",
    );
    let (code, doc, _) = run(&repo, &backlog, &[]);
    assert_eq!(code, 1);
    assert_eq!(task(&doc, "hello")["status"], "landed");
    assert_eq!(task(&doc, "hello")["backend"], "patch");
    let reason = task(&doc, "bad")["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the patch ")
            && reason.contains("does not apply: error: nope.txt: does not exist in index"),
        "{reason}"
    );
    let branch = doc["run"]["branch"].as_str().unwrap();
    let local = repo.git(&["rev-parse", branch]);
    let pushed = abo_test_support::git_in(&remote, &["rev-parse", branch]);
    assert_eq!(local, pushed);
}

#[test]
fn markdown_plans_run_ready_tasks_and_skip_the_others() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nbackends:\n  default: write\n  write: { kind: command, run: 'echo \"$ABO_TASK_ID\" > \"$ABO_TASK_ID.txt\"' }\n",
    );
    let plan = repo.write_outside(
        "PROJECT_PLAN.md",
        "# Plan\n\n### Ready for Autonomous Execution ✅\n\n→ **[task_3]** Add the model\n  - Alignment score: 95/100\n\n→ **[task_5]** Hash passwords\n  - Depends on: task_3\n\n### Pending Approval ⏳\n\n- **[task_4]** Login endpoint\n\n### Not Ready ❌\n\n- **[task_6]** Design the schema\n  - Reason: Requires user input\n",
    );
    // The "Pending" task waits for a plan approval: the run pauses (exit 4) once the rest is done.
    let (code, doc, stderr) = run(&repo, &plan, &[]);
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(
        brief(&doc),
        s(&[
            ("task_3", "landed", 1),
            ("task_5", "landed", 1),
            ("task_4", "awaiting_approval", 0),
            ("task_6", "skipped", 0)
        ])
    );
    assert_eq!(
        task(&doc, "task_6")["reason"],
        "not ready: Requires user input"
    );
    assert_eq!(doc["run"]["reason"], "waiting for approval: task_4");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let out = abo(&repo, &["approvals", "--json"]);
    let pending: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(pending[0]["id"], format!("{id}/task_4/0"));
    assert_eq!(
        (pending[0]["action"].as_str(), pending[0]["task"].as_str()),
        (Some("plan"), Some("task_4"))
    );
    let out = abo(&repo, &["approve", "task_4"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: a reason is required (hint: give --reason TEXT (safety.require_reason_for_access))"
        )
    );
    let out = abo(
        &repo,
        &["approve", "task_4", "--reason", "endpoint reviewed"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = abo(&repo, &["resume", &id, "--json"]);
    assert_eq!(out.code, 0, "skipped tasks do not count: {}", out.stderr);
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(task(&done, "task_4")["status"], "landed");
    let approved = events(&repo, &id)
        .into_iter()
        .find(|e| e["kind"] == "task.approved")
        .unwrap();
    assert_eq!(approved["data"]["reason"], "endpoint reviewed");
    let prompt_seen = repo.git(&[
        "show",
        &format!("{}:task_5.txt", doc["run"]["branch"].as_str().unwrap()),
    ]);
    assert_eq!(prompt_seen, "task_5\n");
}

#[test]
fn status_and_events_read_any_run() {
    let repo = project();
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let (_, first, _) = run(&repo, &b, &[]);
    let (_, second, _) = run(&repo, &b, &[]);
    let latest = status(&repo, None);
    assert_eq!(latest["run"]["id"], second["run"]["id"]);
    let older = status(&repo, first["run"]["id"].as_str());
    assert_eq!(older["run"]["id"], first["run"]["id"]);
    // The second run started from main too: its branch is independent of the first.
    assert_eq!(
        repo.commits("main", second["run"]["branch"].as_str().unwrap())
            .len(),
        1
    );
    let out = abo(&repo, &["events"]);
    assert!(out.stdout.contains("run.finished"), "{}", out.stdout);
    let out = abo(&repo, &["status", "nope"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: no run `nope` in the store (hint: `abo status` shows the latest run)"
        )
    );
}

#[test]
fn init_writes_its_files_once() {
    let repo = TestRepo::new();
    let out = abo(&repo, &["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(repo.path.join("abo.yml").exists() && repo.path.join("backlog.example.yml").exists());
    assert!(repo.path.join(".abo/policy").is_dir());
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "?? abo.yml\n?? backlog.example.yml\n"
    );
    let out = abo(&repo, &["init"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: abo.yml, backlog.example.yml already exist(s) (hint: use --force to overwrite)"
        )
    );
    assert_eq!(abo(&repo, &["init", "--force"]).code, 0);
    // The example runs as written (its gate is a placeholder that passes).
    let (code, doc, stderr) = run(&repo, &repo.path.join("backlog.example.yml"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        brief(&doc),
        s(&[("hello", "landed", 1), ("shout", "landed", 1)])
    );
}

#[test]
fn demo_runs_offline_and_shows_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs the binary under test"
    )]
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abo"))
        .args(["demo", dir.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        brief(&doc),
        s(&[
            ("usage-docs", "landed", 1),
            ("farewell", "landed", 1),
            ("greet-name", "landed", 2),
            ("shout", "failed", 2),
            ("shout-docs", "cancelled", 0),
            ("contributing", "landed", 1),
            ("deploy-settings", "denied", 1),
            ("lint-dependency", "awaiting_approval", 1),
            ("changelog", "landed", 1)
        ])
    );
    assert_eq!(doc["run"]["status"], "paused");
    assert_eq!(
        task(&doc, "deploy-settings")["reason"],
        "deploy/env.sh:1 adds a secret (aws-access-key)"
    );
    // The model task went through the stand-in server over real HTTP.
    assert_eq!(task(&doc, "contributing")["backend"], "model");
    assert!(task(&doc, "contributing")["tokens"].as_u64().unwrap() > 0);
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        abo_test_support::git_in(&dir, &["rev-list", "--count", &format!("main..{branch}")]).trim(),
        "5"
    );
    assert!(
        abo_test_support::git_in(&dir, &["show", &format!("{branch}:CONTRIBUTING.md")])
            .starts_with("# Contributing")
    );

    assert_eq!(
        abo_test_support::git_in(&dir, &["status", "--porcelain"]),
        ""
    );
}

#[test]
fn the_merge_action_follows_autonomy_and_never_touches_a_dirty_checkout() {
    // prod-conservative (merge A3): every change low risk (docs) and main clean: fast-forwarded.
    let repo = TestRepo::new();
    config(&repo, "version: 1\n");
    let docs = repo.write_outside("docs.yml", "tasks:\n  - { id: guide, title: G, paths: ['docs/**'], run: 'mkdir -p docs; echo guide > docs/guide.md' }\n");
    let (code, doc, stderr) = run(&repo, &docs, &[]);
    assert_eq!(code, 0, "{stderr}");
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        repo.git(&["rev-parse", branch])
    );
    assert_eq!(
        repo.read("docs/guide.md"),
        "guide\n",
        "the clean checkout was fast-forwarded"
    );
    let merge = events(&repo, doc["run"]["id"].as_str().unwrap())
        .into_iter()
        .find(|e| e["kind"] == "run.merge")
        .unwrap();
    assert_eq!(
        (
            merge["data"]["outcome"].as_str(),
            merge["data"]["into"].as_str()
        ),
        (Some("fast-forward"), Some("main"))
    );

    // The same with uncommitted changes in the checkout: nothing moves, and the command is given.
    repo.write("README.md", "# edited\n");
    let docs2 = repo.write_outside(
        "docs2.yml",
        "tasks:\n  - { id: faq, title: F, paths: ['docs/**'], run: 'echo faq > docs/faq.md' }\n",
    );
    let before = repo.user_view();
    let (code, doc, _) = run(&repo, &docs2, &[]);
    assert_eq!(code, 0);
    assert_eq!(repo.user_view(), before);
    let id = doc["run"]["id"].as_str().unwrap();
    let merge = events(&repo, id)
        .into_iter()
        .find(|e| e["kind"] == "run.merge")
        .unwrap();
    assert_eq!(merge["data"]["outcome"], "skipped");
    assert_eq!(
        merge["data"]["reason"],
        format!(
            "main is checked out with uncommitted changes, so abo moved nothing; merge it with: git merge abo/{id} (on main)"
        )
    );
    repo.git(&["checkout", "--", "README.md"]);

    // Code is medium risk: at A3 the run branch waits for review.
    let code_task = repo.write_outside("code.yml", "tasks:\n  - { id: lib, title: L, paths: ['src/**'], run: 'mkdir -p src; echo x > src/lib.rs' }\n");
    let (_, doc, _) = run(&repo, &code_task, &[]);
    let merge = events(&repo, doc["run"]["id"].as_str().unwrap())
        .into_iter()
        .find(|e| e["kind"] == "run.merge")
        .unwrap();
    assert_eq!(
        merge["data"]["reason"],
        "merge is A3 (auto low-risk) and these changes are not low risk: lib (medium)"
    );

    // exploration (A5), main moved meanwhile and not checked out: a merge commit made by abo.
    let repo = TestRepo::new();
    config(&repo, "version: 1\n");
    repo.git(&["checkout", "-q", "-b", "work"]);
    repo.git(&["checkout", "-q", "main"]);
    let slow = repo.write_outside("slow.yml", "tasks:\n  - { id: s, title: S, paths: ['src/**'], run: 'sleep 1; mkdir -p src; echo s > src/s.rs' }\n");
    let mut child = crate::spawn(
        &repo,
        &["run", slow.to_str().unwrap(), "--profile", "exploration"],
    );
    let id = crate::read_run_id(&mut child);
    // While it runs, main gets a commit and the user switches to another branch.
    repo.write("other.txt", "other\n");
    repo.commit_all("meanwhile on main");
    repo.git(&["checkout", "-q", "work"]);
    let out = crate::finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let merge = events(&repo, &id)
        .into_iter()
        .find(|e| e["kind"] == "run.merge")
        .unwrap();
    assert_eq!(merge["data"]["outcome"], "merge-commit", "{merge}");
    assert_eq!(
        repo.git(&["log", "-1", "--format=%s", "main"]).trim(),
        format!("Merge abo/{id} into main")
    );
    assert_eq!(repo.git(&["show", "main:src/s.rs"]), "s\n");
    assert_eq!(repo.git(&["show", "main:other.txt"]), "other\n");
}

#[test]
fn the_fast_forward_never_overwrites_a_file_the_checkout_does_not_track() {
    // The change un-ignores docs/private.md and writes it; the user has their own, ignored.
    let repo = TestRepo::new();
    repo.write(".gitignore", "docs/private.md\n");
    config(&repo, "version: 1\n");
    let backlog = repo.write_outside(
        "private.yml",
        "tasks:\n  - { id: private, title: P, paths: ['docs/**'], run: 'mkdir -p docs; printf \"!private.md\\n\" > docs/.gitignore; echo theirs > docs/private.md' }\n",
    );
    let merge_of = |doc: &Value| {
        let id = doc["run"]["id"].as_str().unwrap().to_owned();
        let merge = events(&repo, &id)
            .into_iter()
            .find(|e| e["kind"] == "run.merge")
            .unwrap();
        (id, merge["data"].clone())
    };

    // Attack: the user's ignored file is there. Nothing moves, and the command is given.
    repo.write("docs/private.md", "mine\n");
    let before = (repo.user_view(), repo.git(&["rev-parse", "main"]));
    let (code, doc, stderr) = run(&repo, &backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task(&doc, "private")["status"], "landed");
    let (id, merge) = merge_of(&doc);
    assert_eq!(merge["outcome"], "skipped");
    assert_eq!(
        merge["reason"],
        format!(
            "main is checked out and docs/private.md there is a file git does not track, which the fast-forward would overwrite, so abo moved nothing; merge it with: git merge abo/{id} (on main)"
        )
    );
    assert_eq!(repo.read("docs/private.md"), "mine\n");
    assert_eq!((repo.user_view(), repo.git(&["rev-parse", "main"])), before);

    // The same with an untracked file git does not ignore.
    std::fs::remove_file(repo.path.join("docs/private.md")).unwrap();
    let backlog2 = repo.write_outside(
        "draft.yml",
        "tasks:\n  - { id: draft, title: D, paths: ['docs/**'], run: 'mkdir -p docs; echo theirs > docs/draft.md' }\n",
    );
    repo.write("docs/draft.md", "my draft\n");
    let (code, doc, stderr) = run(&repo, &backlog2, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (_, merge) = merge_of(&doc);
    assert_eq!(merge["outcome"], "skipped");
    assert!(
        merge["reason"]
            .as_str()
            .unwrap()
            .contains("docs/draft.md there is a file git does not track"),
        "{merge}"
    );
    assert_eq!(repo.read("docs/draft.md"), "my draft\n");
    std::fs::remove_file(repo.path.join("docs/draft.md")).unwrap();

    // And a file of the user's where the change needs a directory.
    let backlog3 = repo.write_outside(
        "notes.yml",
        "tasks:\n  - { id: notes, title: N, paths: ['docs/**'], run: 'mkdir -p docs/notes; echo theirs > docs/notes/a.md' }\n",
    );
    repo.write("docs/notes", "my notes\n");
    let (code, doc, stderr) = run(&repo, &backlog3, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (_, merge) = merge_of(&doc);
    assert_eq!(merge["outcome"], "skipped");
    assert!(
        merge["reason"]
            .as_str()
            .unwrap()
            .contains("docs/notes there is a file git does not track"),
        "{merge}"
    );
    assert_eq!(repo.read("docs/notes"), "my notes\n");
    std::fs::remove_file(repo.path.join("docs/notes")).unwrap();

    // Control: without the user's file, the same change is fast-forwarded into the checkout.
    let (code, doc, stderr) = run(&repo, &backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (_, merge) = merge_of(&doc);
    assert_eq!(merge["outcome"], "fast-forward", "{merge}");
    assert_eq!(repo.read("docs/private.md"), "theirs\n");
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        repo.git(&["rev-parse", doc["run"]["branch"].as_str().unwrap()])
    );
}

#[test]
fn report_and_summary_come_from_the_event_log() {
    let repo = project();
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: good, title: Good, run: 'echo g > g.txt' }\n  - { id: bad, title: Bad, run: 'echo BROKEN > x.txt', max_attempts: 1 }\n",
    );
    let (code, _, _) = run(&repo, &b, &[]);
    assert_eq!(code, 1);
    let out = abo(&repo, &["report", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (
            r["runs"].as_u64(),
            r["tasks_landed"].as_u64(),
            r["tasks_failed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(r["first_attempt_gate_pass_rate"].as_f64(), Some(0.5));
    assert_eq!(r["backends"]["command"]["attempts"].as_u64(), Some(2));
    let out = abo(&repo, &["summary", "--json"]);
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["landed"][0]["title"], "Good");
    assert_eq!(
        s["failed"][0]["detail"],
        "gate `test` failed: it exited with 1 (after 1 attempt)"
    );
    let out = abo(&repo, &["summary", "--since", "1x"]);
    assert_eq!(out.code, 2);
}
