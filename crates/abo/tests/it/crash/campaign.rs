//! A kill -9 campaign: runs of a small backlog killed at random moments (abo alone, or its whole
//! session: abo and every agent and gate at once), resumes killed again at random, and a last
//! resume to the end; then every run is checked for lost tasks, duplicated commits, gaps in the
//! event log, runs stuck (not finished, or owing their merge) and internal errors. All must be
//! zero. `ABO_CHAOS_TRIALS` (default 20) and `ABO_CHAOS_SEED` size a longer campaign
//! (`ops/chaos.sh`).

#![allow(
    clippy::print_stderr,
    reason = "the campaign's figures, and each failure found, are its report"
)]

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use abo_test_support::TestRepo;

use crate::{abo, abo_cmd, config, events};

/// xorshift64*: the trials' moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Default)]
struct Figures {
    trials: u32,
    kills: u32,
    lost: u32,
    duplicated: u32,
    gaps: u32,
    stuck: u32,
    internal: u32,
    /// The last event in the store at each kill: where the kills fell.
    at: std::collections::BTreeMap<String, u32>,
}

const TASKS: [&str; 3] = ["a", "b", "c"];

fn setup() -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\ngates:\n  - { name: g, run: 'true' }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, paths: [a.txt], run: 'echo a > a.txt' }\n  - { id: b, title: B, paths: [b.txt], run: 'echo b > b.txt' }\n  - { id: c, title: C, deps: [a, b], run: 'echo c > c.txt' }\n",
    );
    (repo, b)
}

/// Starts abo in a session of its own (so that the whole session can be killed at once).
fn start(repo: &TestRepo, args: &[&str]) -> std::process::Child {
    abo_cmd(repo, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Kills abo, or its whole process group, after `ms`; `false` if it ended first. Returns its
/// exit code and stderr when it ended by itself.
fn kill_after(mut child: std::process::Child, ms: u64, group: bool) -> Option<(i32, String)> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sig = nix::sys::signal::Signal::SIGKILL;
    if group {
        let _ = nix::sys::signal::killpg(pid, sig);
    } else {
        let _ = nix::sys::signal::kill(pid, sig);
    }
    let _ = child.wait();
    None
}

/// Counts where a kill fell: the last event committed before it.
fn tally(repo: &TestRepo, id: &str, f: &mut Figures) {
    let last = events(repo, id)
        .last()
        .and_then(|e| e["kind"].as_str().map(str::to_owned))
        .unwrap_or_default();
    *f.at.entry(last).or_default() += 1;
}

fn latest_run(repo: &TestRepo) -> Option<String> {
    let out = abo(repo, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    doc["run"]["id"].as_str().map(str::to_owned)
}

/// One trial: returns what it found wrong.
fn trial(rng: &mut Rng, span_ms: u64, f: &mut Figures) {
    let (repo, b) = setup();
    let group = rng.below(2) == 0;
    let at = rng.below(span_ms);
    let run = start(
        &repo,
        &["run", b.to_str().unwrap(), "--profile", "exploration"],
    );
    let ended = kill_after(run, at, group);
    if let Some((code, stderr)) = &ended
        && (*code == 3 || stderr.contains("internal error"))
    {
        f.internal += 1;
    }
    let Some(id) = latest_run(&repo) else {
        // Killed before the run was created: nothing was promised.
        f.kills += 1;
        *f.at.entry("(before run.created)".into()).or_default() += 1;
        return;
    };
    if ended.is_none() {
        f.kills += 1;
        tally(&repo, &id, f);
    }
    // Half the trials kill the resume too, at a random moment of it.
    if rng.below(2) == 0 {
        let resume = start(&repo, &["resume", &id]);
        let at = rng.below(span_ms / 2);
        let group = rng.below(2) == 0;
        match kill_after(resume, at, group) {
            Some((3, _)) => f.internal += 1,
            Some(_) => {}
            None => {
                f.kills += 1;
                tally(&repo, &id, f);
            }
        }
    }
    // Resume until the run is done (a finished run owing nothing answers 2).
    let mut done = false;
    for _ in 0..3 {
        let out = abo(&repo, &["resume", &id]);
        if out.code == 3 || out.stderr.contains("internal error") {
            f.internal += 1;
            eprintln!("internal error in {id}: {}", out.stderr);
        }
        if out.code == 0 || (out.code == 2 && out.stderr.contains("is finished")) {
            done = true;
            break;
        }
    }
    let doc = crate::status(&repo, Some(&id));
    let owed = doc["run"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("is owed"));
    let branch = format!("abo/{id}");
    let merged = repo.git(&["rev-parse", "main"]) == repo.git(&["rev-parse", &branch]);
    if !done || doc["run"]["status"] != "finished" || owed || !merged {
        f.stuck += 1;
        eprintln!("stuck: {doc}");
    }
    let landed: Vec<String> = repo
        .commits(doc["run"]["base"].as_str().unwrap(), &branch)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for t in TASKS {
        match landed.iter().filter(|l| *l == t).count() {
            0 => {
                f.lost += 1;
                eprintln!("lost {t} in {id}: {landed:?}");
            }
            1 => {}
            _ => {
                f.duplicated += 1;
                eprintln!("duplicated {t} in {id}: {landed:?}");
            }
        }
    }
    let seqs: Vec<u64> = events(&repo, &id)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
        f.gaps += 1;
    }
    let merges = events(&repo, &id)
        .iter()
        .filter(|e| e["kind"] == "run.merge")
        .count();
    if merges != 1 {
        f.duplicated += 1;
        eprintln!("{merges} run.merge events in {id}");
    }
}

#[test]
fn kill_9_at_random_moments_loses_duplicates_and_breaks_nothing() {
    let trials: u32 = std::env::var("ABO_CHAOS_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("ABO_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_ab00);
    // A clean run's length (the shorter of two: the first warms the caches): the kills fall
    // anywhere in it.
    let mut span_ms = u64::MAX;
    for _ in 0..2 {
        let (repo, b) = setup();
        let t0 = Instant::now();
        let (code, _, stderr) = crate::run(&repo, &b, &["--profile", "exploration"]);
        assert_eq!(code, 0, "{stderr}");
        span_ms = span_ms.min(t0.elapsed().as_millis() as u64);
    }
    let mut rng = Rng(seed | 1);
    let mut f = Figures::default();
    for _ in 0..trials {
        f.trials += 1;
        trial(&mut rng, span_ms, &mut f);
    }
    eprintln!("kill -9 campaign (seed {seed}, kills within {span_ms} ms): {f:?}");
    assert_eq!(
        (f.lost, f.duplicated, f.gaps, f.stuck, f.internal),
        (0, 0, 0, 0, 0),
        "{f:?}"
    );
}
