//! Controlling runs from another process: pause, kill, retry, resume; stopping after failures.

use abo_test_support::{TestRepo, wait_for};
use pretty_assertions::assert_eq;

use crate::{abo, brief, config, finish, read_run_id, run, s, spawn, status, task};

#[test]
fn stop_after_consecutive_failures_pauses_and_resume_continues() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1, stop_after_consecutive_failures: 2 }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: f1, title: F1, run: 'exit 3', priority: 9 }\n  - { id: f2, title: F2, run: 'exit 4', priority: 8 }\n  - { id: ok, title: OK, run: 'echo ok > ok.txt' }\n",
    );
    let (code, doc, _) = run(&repo, &b, &["--max-parallel", "1"]);
    assert_eq!(code, 4, "paused and resumable");
    assert_eq!(doc["run"]["status"], "paused");
    assert_eq!(
        doc["run"]["reason"],
        "2 tasks failed in a row (attempts.stop_after_consecutive_failures: 2)"
    );
    assert_eq!(
        brief(&doc),
        s(&[("f1", "failed", 1), ("f2", "failed", 1), ("ok", "ready", 0)])
    );
    assert_eq!(
        task(&doc, "f1")["reason"],
        "the command exited with 3 (after 1 attempt)"
    );

    let id = doc["run"]["id"].as_str().unwrap();
    let out = abo(&repo, &["resume", id, "--json"]);
    assert_eq!(out.code, 1, "finished with failures: {}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(task(&doc, "ok")["status"], "landed");
    let out = abo(&repo, &["resume", id]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            format!("error: run {id} is finished: it cannot be resumed").as_str()
        )
    );
}

#[test]
fn retry_requeues_a_failed_task_and_its_cancelled_dependents() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1 }\n",
    );
    let flag = repo.outside.join("fixed");
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: needs-fix, title: N, run: 'test -f {} && echo ok > n.txt' }}\n  - {{ id: after, title: A, deps: [needs-fix], run: 'echo a > a.txt' }}\n",
            flag.display()
        ),
    );
    let (code, doc, _) = run(&repo, &b, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        brief(&doc),
        s(&[("needs-fix", "failed", 1), ("after", "cancelled", 0)])
    );
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    std::fs::write(&flag, "").unwrap();
    let out = abo(&repo, &["retry", "needs-fix"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("task needs-fix re-queued in run {id}; continue with: abo resume {id}")
    );
    assert_eq!(status(&repo, Some(&id))["run"]["status"], "paused");
    let out = abo(&repo, &["resume", &id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        brief(&doc),
        s(&[("needs-fix", "landed", 2), ("after", "landed", 1)])
    );
    let out = abo(&repo, &["retry", "needs-fix"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: task `needs-fix` is landed: only failed, denied, cancelled or reverted tasks can be retried"
        )
    );
}

#[test]
fn pause_from_another_process_lets_in_flight_work_finish() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let started = repo.outside.join("started");
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: slow, title: S, run: 'touch {}; sleep 1; echo s > s.txt' }}\n  - {{ id: next, title: N, deps: [slow], run: 'echo n > n.txt' }}\n",
            started.display()
        ),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || started.exists()));
    let out = abo(&repo, &["pause", &id]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, format!("run {id} is paused").as_str()),
        "{}",
        out.stderr
    );
    let out = finish(child);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let doc = status(&repo, Some(&id));
    assert_eq!(
        brief(&doc),
        s(&[("slow", "landed", 1), ("next", "ready", 0)])
    );
    assert_eq!(doc["run"]["reason"], "pause requested by a person");
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn kill_stops_everything_now_and_lands_nothing_more() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let pid_file = repo.outside.join("pid");
    let b = repo.write_outside(
        "b.yml",
        &format!("tasks:\n  - {{ id: forever, title: F, run: 'echo $$ > {}; sleep 60' }}\n  - {{ id: other, title: O, deps: [forever], run: 'true' }}\n", pid_file.display()),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || std::fs::read_to_string(&pid_file)
        .is_ok_and(|p| p.ends_with('\n'))));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let out = abo(&repo, &["kill", &id]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, format!("run {id} is killed").as_str()),
        "{}",
        out.stderr
    );
    let out = finish(child);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        wait_for(5, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()),
        "the attempt's process was killed"
    );
    let doc = status(&repo, Some(&id));
    assert_eq!(doc["run"]["status"], "killed");
    assert_eq!(
        brief(&doc),
        s(&[("forever", "cancelled", 1), ("other", "cancelled", 0)])
    );
    assert_eq!(repo.extra_worktrees(), Vec::<String>::new());
    let out = abo(&repo, &["kill", &id]);
    assert_eq!(out.code, 2);
}

#[test]
fn events_follow_streams_until_the_run_ends() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'sleep 0.5; echo a > a.txt' }\n",
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    let out = abo(&repo, &["events", &id, "--follow", "--json"]);
    assert_eq!(out.code, 0);
    let kinds: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run.created"));
    assert_eq!(&kinds[kinds.len() - 2..], ["run.finished", "run.merge"]);
    assert_eq!(finish(child).code, 0);
}
