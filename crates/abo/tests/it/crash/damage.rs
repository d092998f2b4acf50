//! What a crash leaves, and what a person does between the crash and `abo resume`: a run killed
//! between `run.finished` and its merge, stale git locks and interrupted worktree registrations,
//! a run branch deleted or reset, a run branch checked out.

use std::path::Path;
use std::time::{Duration, SystemTime};

use abo_test_support::{TestRepo, wait_for};
use pretty_assertions::assert_eq;

use super::{resume_and_check, sigkill, truncate_log};
use crate::{abo, brief, config, events, read_run_id, s, spawn};

/// Runs git in the repository; whether it succeeded, and its stderr.
fn git_status(repo: &TestRepo, args: &[&str]) -> (bool, String) {
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs plain git as the control"
    )]
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kinds(repo: &TestRepo, id: &str) -> Vec<String> {
    events(repo, id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn seq_of(repo: &TestRepo, id: &str, kind: &str) -> i64 {
    events(repo, id)
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))["seq"]
        .as_i64()
        .unwrap()
}

/// A run at A5 (`exploration`): its end lands the run branch into `main`.
fn finished_run(repo: &TestRepo) -> (String, String) {
    config(repo, "version: 1\nsandbox: { mode: off }\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n  - { id: b, title: B, run: 'echo b > b.txt' }\n",
    );
    let before = repo.git(&["rev-parse", "main"]);
    let (code, doc, stderr) = crate::run(repo, &b, &["--profile", "exploration"]);
    assert_eq!(code, 0, "{stderr}");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    assert_eq!(kinds(repo, &id).last().unwrap(), "run.merge");
    (id, before)
}

#[test]
fn a_kill_between_run_finished_and_the_merge_leaves_the_merge_owed_and_resume_makes_it_once() {
    let repo = TestRepo::new();
    let (id, before) = finished_run(&repo);
    let branch = format!("abo/{id}");
    // What the store and the repository hold when abo dies right after committing `run.finished`:
    // no `run.merge`, `main` not moved.
    truncate_log(&repo.path, seq_of(&repo, &id, "run.merge"));
    repo.git(&["reset", "--quiet", "--hard", before.trim()]);
    assert_eq!(kinds(&repo, &id).last().unwrap(), "run.finished");
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(doc["run"]["status"], "finished");
    let reason = doc["run"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("is owed") && reason.contains(&format!("abo resume {id}")),
        "{doc}"
    );
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        repo.git(&["rev-parse", &branch]),
        "main got the run branch"
    );
    assert_eq!(repo.read("a.txt"), "a\n");
    let k = kinds(&repo, &id);
    assert_eq!(k.iter().filter(|k| *k == "run.merge").count(), 1, "{k:?}");
    assert_eq!(k.last().unwrap(), "run.merge");
    assert!(crate::status(&repo, Some(&id))["run"]["reason"].is_null());
    // Settled: nothing more to do.
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is finished: it cannot be resumed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_kill_after_the_merge_but_before_its_event_records_the_merge_without_making_it_again() {
    let repo = TestRepo::new();
    let (id, _) = finished_run(&repo);
    let merged = repo.git(&["rev-parse", "main"]);
    truncate_log(&repo.path, seq_of(&repo, &id, "run.merge"));
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        merged,
        "main did not move again"
    );
    let merges: Vec<serde_json::Value> = events(&repo, &id)
        .into_iter()
        .filter(|e| e["kind"] == "run.merge")
        .collect();
    assert_eq!(merges.len(), 1);
    assert_eq!(
        (
            merges[0]["data"]["outcome"].as_str(),
            merges[0]["data"]["reason"].as_str()
        ),
        (
            Some("fast-forward"),
            Some("main already holds the run branch")
        )
    );
}

/// Sets a file's modification time `secs` seconds back.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "a file's age is on the file system's clock"
    )]
    let now = SystemTime::now();
    f.set_modified(now - Duration::from_secs(secs)).unwrap();
}

/// What a session killed in git leaves: a `packed-refs.lock`, and a worktree registration
/// "locked initializing" whose folder is gone (holding a branch).
fn plant_git_leftovers(repo: &TestRepo, lock_age: u64) {
    let lock = repo.path.join(".git/packed-refs.lock");
    std::fs::write(&lock, "").unwrap();
    age(&lock, lock_age);
    let ghost = repo.outside.join("ghost");
    repo.git(&[
        "worktree",
        "add",
        "--quiet",
        "--lock",
        "--reason",
        "initializing",
        "-b",
        "ghost",
        ghost.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&ghost).unwrap();
    age(&repo.path.join(".git/worktrees/ghost/locked"), 60);
}

#[test]
fn stale_git_locks_and_interrupted_registrations_are_reported_and_removed_by_gc() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let (code, _, stderr) = crate::run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    plant_git_leftovers(&repo, 60);
    // Control: the damage is real. git itself fails on the lock and keeps the registration.
    repo.git(&["branch", "doomed"]);
    let (ok, stderr) = git_status(&repo, &["branch", "-D", "doomed"]);
    assert!(
        !ok && stderr.contains("packed-refs.lock': File exists"),
        "{stderr}"
    );
    repo.git(&["worktree", "prune"]);
    assert!(repo.path.join(".git/worktrees/ghost").exists());

    let out = abo(&repo, &["doctor", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let git: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "git state")
        .map(|c| c["detail"].as_str().unwrap())
        .collect();
    assert_eq!(git.len(), 2, "{git:?}");
    assert!(
        git.iter()
            .any(|d| d.starts_with("stale git lock ") && d.contains("packed-refs.lock")),
        "{git:?}"
    );
    assert!(
        git.iter().any(
            |d| d.starts_with("broken worktree registration .git/worktrees/ghost")
                && d.contains("locked \"initializing\"")
        ),
        "{git:?}"
    );

    let out = abo(&repo, &["gc"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("removed stale git lock"),
        "{}",
        out.stdout
    );
    assert!(!repo.path.join(".git/packed-refs.lock").exists());
    assert!(!repo.path.join(".git/worktrees/ghost").exists());
    repo.git(&["branch", "-D", "doomed", "ghost"]);
    let out = abo(&repo, &["doctor", "--json"]);
    assert!(
        out.stdout
            .contains("no stale lock, no broken worktree registration"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_run_recovers_from_stale_git_state_without_using_up_attempts() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1 }\n",
    );
    // The lock is 3 s old when the run starts (a person's git could still hold it): abo's
    // first git call that meets it waits until it is stale, then removes it.
    plant_git_leftovers(&repo, 3);
    let b = super::marker_backlog(&repo, "echo a > a.txt");
    let (code, doc, stderr) = crate::run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        brief(&doc),
        s(&[("a", "landed", 1), ("b", "landed", 1), ("c", "landed", 1)])
    );
    assert!(!repo.path.join(".git/packed-refs.lock").exists());
    assert!(!repo.path.join(".git/worktrees/ghost").exists());
    assert_eq!(repo.git(&["branch", "--list", "abo-attempt/*"]), "");
}

/// A run whose task `c` waits (on `c-go`) after `a` and `b` landed: killed there.
fn killed_after_two_landed(repo: &TestRepo) -> (String, String) {
    config(repo, "version: 1\nsandbox: { mode: off }\n");
    let go = repo.outside.join("c-go");
    let started = repo.outside.join("c-started");
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: a, title: A, run: 'echo a > a.txt' }}\n  - {{ id: b, title: B, run: 'echo b > b.txt' }}\n  - {{ id: c, title: C, deps: [a, b], run: 'touch {s}; while [ ! -f {g} ]; do sleep 0.05; done; echo c > c.txt' }}\n",
            s = started.display(),
            g = go.display()
        ),
    );
    let mut child = spawn(repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(30, || started.exists()));
    sigkill(&mut child);
    std::fs::write(&go, "").unwrap();
    let base = crate::status(repo, Some(&id))["run"]["base"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, base)
}

#[test]
fn a_deleted_or_reset_run_branch_is_restored_from_the_log_before_anything_lands() {
    for damage in ["delete", "reset"] {
        let repo = TestRepo::new();
        let (id, base) = killed_after_two_landed(&repo);
        let branch = format!("abo/{id}");
        let landed = repo.git(&["rev-parse", &branch]);
        match damage {
            "delete" => repo.git(&["branch", "-D", &branch]),
            _ => repo.git(&["branch", "-f", &branch, &base]),
        };
        let out = abo(&repo, &["resume", &id]);
        assert_eq!(out.code, 0, "{damage}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("{branch} had lost the commits abo landed for a (")),
            "{damage}: {}",
            out.stderr
        );
        let tasks: Vec<String> = repo
            .commits(&base, &branch)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let mut sorted = tasks.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "{damage}: {tasks:?}");
        let (is_ancestor, _) = git_status(
            &repo,
            &["merge-base", "--is-ancestor", landed.trim(), &branch],
        );
        assert!(
            is_ancestor,
            "{damage}: the landed commits are on the branch"
        );
        // Every landed commit the log names is on the run branch.
        for e in events(&repo, &id)
            .iter()
            .filter(|e| e["kind"] == "task.landed")
        {
            let c = e["data"]["commit"].as_str().unwrap();
            let (ok, _) = git_status(&repo, &["merge-base", "--is-ancestor", c, &branch]);
            assert!(ok, "{damage}: {c} of {} is on {branch}", e["task"]);
        }
    }
}

#[test]
fn a_run_branch_that_lost_work_and_holds_other_commits_is_refused_with_how_to_restore_it() {
    let repo = TestRepo::new();
    let (id, base) = killed_after_two_landed(&repo);
    let branch = format!("abo/{id}");
    let tip = repo.git(&["rev-parse", &branch]).trim().to_owned();
    // Reset to the base, and a commit of someone else's on top.
    repo.git(&["checkout", "--quiet", "-b", "tmp", &base]);
    repo.write("other.txt", "other\n");
    repo.commit_all("someone else's");
    repo.git(&["branch", "-f", &branch, "HEAD"]);
    repo.git(&["checkout", "--quiet", "main"]);
    let damaged = repo.git(&["rev-parse", &branch]);
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the run branch {branch} lacks the commits abo landed for a ("
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("git branch -f {branch} {tip}")),
        "{}",
        out.stderr
    );
    assert_eq!(repo.git(&["rev-parse", &branch]), damaged, "nothing moved");
    // Doing what it says lets the run go on.
    repo.git(&["branch", "-f", &branch, &tip]);
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

/// Waits until `task` of run `id` has landed.
fn wait_landed(repo: &TestRepo, id: &str, task: &str) {
    assert!(
        wait_for(30, || events(repo, id)
            .iter()
            .any(|e| e["kind"] == "task.landed" && e["task"] == task)),
        "{task} landed"
    );
}

#[test]
fn a_checked_out_run_branch_is_never_moved_the_run_pauses_and_says_how_to_go_on() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let go = repo.outside.join("a-go");
    let started = repo.outside.join("a-started");
    let b = super::marker_backlog(
        &repo,
        &format!(
            "touch {s}; while [ ! -f {g} ]; do sleep 0.05; done; echo a > a.txt",
            s = started.display(),
            g = go.display()
        ),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    let branch = format!("abo/{id}");
    assert!(wait_for(30, || started.exists()));
    // `b` lands first: a land between the checkout and reading the branch would leave the
    // person's index behind the branch, which is what the test checks never happens.
    wait_landed(&repo, &id, "b");
    // The person checks the run branch out in their working tree while `a` runs.
    repo.git(&["checkout", "--quiet", &branch]);
    let head = repo.git(&["rev-parse", &branch]);
    std::fs::write(&go, "").unwrap();
    let out = crate::finish(child);
    assert_eq!(out.code, 4, "paused: {}", out.stderr);
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(doc["run"]["status"], "paused", "{doc}");
    assert_eq!(
        doc["run"]["reason"],
        format!(
            "{branch} is checked out in {}, and abo never moves a checked-out branch: switch that working tree to another branch (git -C {} switch --detach), then abo resume {id}",
            repo.path.display(),
            repo.path.display()
        )
    );
    assert_eq!(
        repo.git(&["rev-parse", &branch]),
        head,
        "the branch did not move"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "no staged deletions"
    );
    repo.git(&["checkout", "--quiet", "main"]);
    resume_and_check(&repo, &id, &["a", "b", "c"]);
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(
        brief(&doc),
        s(&[("a", "landed", 1), ("b", "landed", 1), ("c", "landed", 1)]),
        "the blocked attempt ran again under its number"
    );
}

#[test]
fn a_run_branch_reset_while_the_run_goes_on_pauses_it_and_resume_restores_what_landed() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nsandbox: { mode: off }\n");
    let go = repo.outside.join("a-go");
    let b = super::marker_backlog(
        &repo,
        &format!(
            "while [ ! -f {g} ]; do sleep 0.05; done; echo a > a.txt",
            g = go.display()
        ),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    let branch = format!("abo/{id}");
    wait_landed(&repo, &id, "b");
    let base = crate::status(&repo, Some(&id))["run"]["base"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone resets the run branch while `a` still runs: `b`'s commit is no longer on it.
    repo.git(&["branch", "-f", &branch, &base]);
    std::fs::write(&go, "").unwrap();
    let out = crate::finish(child);
    assert_eq!(out.code, 4, "paused: {}", out.stderr);
    let doc = crate::status(&repo, Some(&id));
    let reason = doc["run"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("{branch} lost commits abo landed"))
            && reason.ends_with(&format!("abo resume {id} restores it")),
        "{doc}"
    );
    assert_eq!(
        repo.git(&["rev-parse", &branch]).trim(),
        base,
        "nothing landed on it"
    );
    resume_and_check(&repo, &id, &["a", "b", "c"]);
}

/// Killed while `git worktree add` made an attempt's worktree: its registration stays "locked
/// initializing", its folder gone, holding the attempt's branch; `git worktree prune` keeps it.
/// Resumed at once (the registration seconds old), the attempt runs again under its number and
/// lands, with one attempt allowed.
#[test]
fn an_interrupted_worktree_add_does_not_fail_the_attempt_that_runs_again() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nattempts: { max: 1 }\n",
    );
    let m = repo.outside.join("a-started");
    let b = super::marker_backlog(
        &repo,
        &format!(
            "touch {}; while [ ! -f {} ]; do sleep 0.05; done; echo a > a.txt",
            m.display(),
            repo.outside.join("a-go").display()
        ),
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(30, || m.exists()));
    sigkill(&mut child);
    std::fs::write(repo.outside.join("a-go"), "").unwrap();
    // The state `worktree add` leaves when killed: a locked registration, no folder.
    let wt = repo.path.join(format!(".abo/worktrees/{id}/a-1"));
    let name = std::fs::read_dir(repo.path.join(".git/worktrees"))
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("gitdir"))
                .is_ok_and(|g| g.trim() == wt.join(".git").to_str().unwrap())
        })
        .unwrap()
        .file_name();
    let reg = repo.path.join(".git/worktrees").join(&name);
    std::fs::write(reg.join("locked"), "initializing").unwrap();
    std::fs::remove_dir_all(&wt).unwrap();
    repo.git(&["worktree", "prune"]);
    assert!(reg.exists(), "git keeps a locked registration");
    resume_and_check(&repo, &id, &["a", "b", "c"]);
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(crate::task(&doc, "a")["attempts"], 1, "{doc}");
    assert!(!reg.exists());
}

#[test]
fn the_daemon_completes_the_owed_end_of_a_finished_run_once() {
    let repo = TestRepo::new();
    let (id, before) = finished_run(&repo);
    truncate_log(&repo.path, seq_of(&repo, &id, "run.merge"));
    repo.git(&["reset", "--quiet", "--hard", before.trim()]);
    let mut daemon = crate::abo_cmd(
        &repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let done = wait_for(30, || {
        kinds(&repo, &id).last().is_some_and(|k| k == "run.merge")
    });
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(done, "daemon said: {said}");
    assert_eq!(
        said.matches(&format!(
            "{id} resuming: its end (merge, notifications) is owed"
        ))
        .count(),
        1,
        "{said}"
    );
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        repo.git(&["rev-parse", &format!("abo/{id}")])
    );
    assert_eq!(
        kinds(&repo, &id)
            .iter()
            .filter(|k| *k == "run.merge")
            .count(),
        1
    );
}
