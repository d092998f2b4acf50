//! `abo daemon`: a run outside its schedule window pauses and resumes inside it; a cron entry
//! starts its backlog. abo's clock is shifted through ABO_CLOCK_OFFSET_FILE.

use std::io::{BufRead, BufReader};

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::{abo_cmd, abo_env, config};

const MINUTE: i64 = 60_000;

/// An offset that puts abo's clock at `hh:mm:ss` UTC today.
fn offset_to(hh: i64, mm: i64, ss: i64) -> i64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "the test sets abo's clock from the real one"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (hh * 60 + mm) * MINUTE + ss * 1000 - now.rem_euclid(86_400_000)
}

fn status_with(repo: &TestRepo, env: &[(&str, String)], run: &str) -> Value {
    let out = abo_env(repo, &["status", run, "--json"], env);
    serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_daemon_resumes_runs_in_their_window_and_starts_cron_backlogs() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nautonomy: { overrides: { merge: A2 } }\nschedule:\n  timezone: UTC\n  windows: ['13:00-14:00']\n  cron:\n    - { at: '5 13 * * *', backlog: nightly.yml }\n",
    );
    repo.write(
        "nightly.yml",
        "run: { title: Nightly }\ntasks:\n  - { id: nightly, title: N, run: 'echo n > nightly.txt' }\n",
    );
    repo.commit_all("nightly");
    let clock = repo.outside.join("clock");
    std::fs::write(&clock, offset_to(12, 0, 0).to_string()).unwrap();
    let env = vec![("ABO_CLOCK_OFFSET_FILE", clock.display().to_string())];
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: One, run: 'echo 1 > one.txt' }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        doc["run"]["reason"],
        "schedule: outside the windows 13:00-14:00 (12:00 now)"
    );

    let mut c = abo_cmd(
        &repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    );
    for (k, v) in &env {
        c.env(k, v);
    }
    let mut daemon = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(daemon.stdout.take().unwrap());
    let mut said = String::new();
    // Wait until it listens (its first line), then move the clock into the window.
    out.read_line(&mut said).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(status_with(&repo, &env, &run)["run"]["status"], "paused");
    std::fs::write(&clock, offset_to(13, 4, 30).to_string()).unwrap();
    let resumed = abo_test_support::wait_for(20, || {
        status_with(&repo, &env, &run)["run"]["status"] == "finished"
    });
    assert!(resumed, "{said}");
    // 13:05 passes: the nightly backlog starts, inside the window, and lands.
    std::fs::write(&clock, offset_to(13, 5, 30).to_string()).unwrap();
    let started = abo_test_support::wait_for(20, || {
        let out = abo_env(&repo, &["status", "--json"], &env);
        serde_json::from_str::<Value>(&out.stdout)
            .is_ok_and(|d| d["run"]["title"] == "Nightly" && d["run"]["status"] == "finished")
    });
    let _ = daemon.kill();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let _ = daemon.wait();
    assert!(started, "{said}{rest}");
    assert!(
        rest.contains("resuming: inside its schedule window"),
        "{rest}"
    );
    assert!(
        rest.contains("started by schedule.cron `5 13 * * *` (nightly.yml)"),
        "{rest}"
    );
}
