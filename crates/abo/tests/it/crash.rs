//! `kill -9` of `abo run` at any moment, then `abo resume`: every task lands exactly once, no
//! worktree is left behind, and the event log stays gap-free.

use std::path::Path;

use abo_test_support::{TestRepo, wait_for};
use pretty_assertions::assert_eq;

use crate::{abo, brief, config, events, read_run_id, s, spawn, task};

pub(crate) fn sigkill(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// Resumes and checks the run ended with every task landed exactly once and nothing left over.
pub(crate) fn resume_and_check(repo: &TestRepo, id: &str, tasks: &[&str]) {
    let out = abo(repo, &["resume", id, "--json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for t in tasks {
        assert_eq!(task(&doc, t)["status"], "landed", "{doc}");
    }
    let landed: Vec<String> = repo
        .commits(doc["run"]["base"].as_str().unwrap(), &format!("abo/{id}"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut sorted = landed.clone();
    sorted.sort();
    let mut want: Vec<String> = tasks.iter().map(|t| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(sorted, want, "one commit per task: {landed:?}");
    assert_eq!(
        repo.extra_worktrees(),
        Vec::<String>::new(),
        "no worktree left behind"
    );
    assert_eq!(repo.git(&["branch", "--list", "abo-attempt/*"]), "");
    let seqs: Vec<u64> = events(repo, id)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
}

pub(crate) fn marker_backlog(repo: &TestRepo, run_a: &str) -> std::path::PathBuf {
    repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: a, title: A, paths: [a.txt], run: '{run_a}' }}\n  - {{ id: b, title: B, paths: [b.txt], run: \"echo b > b.txt\" }}\n  - {{ id: c, title: C, deps: [a, b], run: \"echo c > c.txt\" }}\n"
        ),
    )
}

#[test]
fn killed_while_a_backend_runs() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let m = repo.outside.join("a-started");
    let runs = repo.outside.join("a-runs");
    let b = marker_backlog(
        &repo,
        &format!(
            "echo run >> {}; touch {}; sleep 2; echo a > a.txt",
            runs.display(),
            m.display()
        ),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || m.exists()));
    sigkill(&mut child);
    // The orphaned backend is still running; resume stops it before redoing the attempt.
    resume_and_check(&repo, &id, &["a", "b", "c"]);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    let retry = events(&repo, &id)
        .into_iter()
        .find(|e| e["kind"] == "task.retry" && e["task"] == "a")
        .unwrap();
    assert_eq!(
        (
            retry["data"]["cause"].as_str(),
            retry["data"]["attempt"].as_u64()
        ),
        (Some("interrupted"), Some(1))
    );
}

#[test]
fn killed_while_a_gate_runs() {
    let repo = TestRepo::new();
    let m = repo.outside.join("gate-started");
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\ngates:\n  - {{ name: slow, run: 'if [ -f a.txt ] && [ ! -f {m} ]; then touch {m}; sleep 5; fi' }}\n",
            m = m.display()
        ),
    );
    let b = marker_backlog(&repo, "echo a > a.txt");
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || m.exists()));
    sigkill(&mut child);
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

#[test]
fn killed_between_commit_and_merge() {
    let repo = TestRepo::new();
    let m = repo.outside.join("merged-gate");
    // The gate stops on a merged candidate: the attempt is committed, the run branch not moved yet.
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\ngates:\n  - {{ name: g, run: 'case \"$PWD\" in *-merged) if [ ! -f {m} ]; then touch {m}; sleep 5; fi;; esac' }}\n",
            m = m.display()
        ),
    );
    let b = marker_backlog(&repo, "sleep 0.3; echo a > a.txt");
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || m.exists()));
    sigkill(&mut child);
    let committed = repo.git(&[
        "for-each-ref",
        "--format=%(refname:short)",
        "refs/heads/abo-attempt/",
    ]);
    assert!(
        !committed.is_empty(),
        "the attempt was committed on its branch"
    );
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

#[test]
fn killed_after_the_branch_moved_but_before_the_event() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let runs = repo.outside.join("runs");
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: a, title: A, run: 'echo run >> {}; echo a > a.txt' }}\n",
            runs.display()
        ),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    // Lose every event from task.landed on, as if the process died right after `update-ref`.
    let landed_seq = events(&repo, &id)
        .iter()
        .find(|e| e["kind"] == "task.landed")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    truncate_log(&repo.path, landed_seq);
    assert_eq!(
        brief(&crate::status(&repo, Some(&id))),
        s(&[("a", "interrupted", 1)])
    );
    resume_and_check(&repo, &id, &["a"]);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "run\n",
        "the landed attempt is recognised, not redone"
    );
}

/// Deletes events from `seq` on and rebuilds the projections: what the store holds when a process
/// dies before committing those events.
pub(crate) fn truncate_log(repo: &Path, seq: i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = abo_store::Store::open("sqlite:.abo/abo.db", repo)
            .await
            .unwrap();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new().filename(repo.join(".abo/abo.db")),
            )
            .await
            .unwrap();
        sqlx::query("DELETE FROM events WHERE seq >= ?")
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        store.rebuild_projections().await.unwrap();
        store.close().await;
    });
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// The names of the processes carrying the run's marker in their environment.
fn running_for(id: &str) -> Vec<String> {
    let marker = format!("ABO_RUN_ID={id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

fn left_running(id: &str) -> usize {
    running_for(id).len()
}

/// Both sleeps of task `a` (the backend's and its background one) are running.
fn a_started(id: &str) -> bool {
    running_for(id).iter().filter(|c| *c == "sleep").count() >= 2
}

/// A backlog whose task `a` runs a minute (with a background process of its own) until the file
/// `fast` exists.
fn slow_backlog(repo: &TestRepo) -> std::path::PathBuf {
    let fast = repo.outside.join("fast");
    marker_backlog(
        repo,
        &format!(
            "if [ ! -f {fast} ]; then (sleep 60 &); sleep 60; fi; echo a > a.txt",
            fast = fast.display(),
        ),
    )
}

#[test]
fn a_signal_pauses_the_run_stops_its_processes_and_resume_finishes_it() {
    use nix::sys::signal::Signal;
    for (sandbox, sig, name) in [
        ("off", Signal::SIGINT, "SIGINT"),
        ("required", Signal::SIGTERM, "SIGTERM"),
    ] {
        let repo = TestRepo::new();
        config(
            &repo,
            &format!("version: 1\nsandbox: {{ mode: {sandbox} }}\n"),
        );
        let b = slow_backlog(&repo);
        let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
        let id = read_run_id(&mut child);
        if !wait_for(20, || a_started(&id)) {
            signal(&child, sig);
            panic!("a never started: {}", crate::finish(child).stderr);
        }
        signal(&child, sig);
        let out = crate::finish(child);
        assert_eq!(out.code, 4, "{sandbox}: {}", out.stderr);
        assert!(
            wait_for(10, || left_running(&id) == 0),
            "nothing outlives abo"
        );
        let doc = crate::status(&repo, Some(&id));
        assert_eq!(doc["run"]["status"], "paused", "{doc}");
        assert_eq!(
            doc["run"]["reason"],
            format!("stopped by a person ({name})"),
            "{doc}"
        );
        assert_eq!(
            task(&doc, "a")["status"],
            "interrupted",
            "nothing runs it: {doc}"
        );
        // The interrupted attempt runs again and every task lands once.
        std::fs::write(repo.outside.join("fast"), "").unwrap();
        resume_and_check(&repo, &id, &["a", "b", "c"]);
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: required }\n");
    let b = slow_backlog(&repo);
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || a_started(&id)));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = crate::finish(child);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        wait_for(10, || left_running(&id) == 0),
        "nothing outlives abo"
    );
    std::fs::write(repo.outside.join("fast"), "").unwrap();
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

#[test]
fn a_killed_abo_leaves_its_run_shown_interrupted() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let m = repo.outside.join("a-started");
    let b = marker_backlog(
        &repo,
        &format!("touch {}; sleep 2; echo a > a.txt", m.display()),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || m.exists()));
    sigkill(&mut child);
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(doc["run"]["status"], "interrupted", "{doc}");
    assert!(
        doc["run"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("abo resume {id}")),
        "{doc}"
    );
    assert_eq!(task(&doc, "a")["status"], "interrupted", "{doc}");
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

/// The base's last commit is one abo landed for task `a`, attempt 1, in an earlier run (its run
/// branch merged by fast-forward). This run's attempt 1 of `a` starts on it: abo commits the new
/// change as this run's, and does not take the old commit for a commit this attempt already made
/// (which is how it recovers from a stop between commit and landing).
#[test]
fn an_old_runs_commit_for_the_same_task_in_the_base_is_not_taken_for_this_runs() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    repo.write("old.txt", "old\n");
    repo.git(&["add", "old.txt"]);
    repo.git(&[
        "commit",
        "--quiet",
        "-m",
        "A",
        "-m",
        "Abo-Run: r-earlier\nAbo-Task: a\nAbo-Attempt: 1",
    ]);
    // Control: the base's commit names this attempt's task and number, all the old check read.
    let trailers = repo.git(&[
        "log",
        "-1",
        "--format=%(trailers:key=Abo-Task,valueonly)%(trailers:key=Abo-Attempt,valueonly)",
    ]);
    assert_eq!(trailers.split_whitespace().collect::<Vec<_>>(), ["a", "1"]);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo new > new.txt' }\n",
    );
    let (code, doc, stderr) = crate::run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(brief(&doc), s(&[("a", "landed", 1)]));
    let id = doc["run"]["id"].as_str().unwrap();
    let branch = format!("abo/{id}");
    assert_eq!(repo.git(&["show", &format!("{branch}:new.txt")]), "new\n");
    let run = repo.git(&[
        "log",
        "-1",
        "--format=%(trailers:key=Abo-Run,valueonly)",
        &branch,
    ]);
    assert_eq!(run.trim(), id);
}

mod campaign;
mod damage;
