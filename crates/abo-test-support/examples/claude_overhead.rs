//! What abo adds to a real Claude Code run, start to exit (BENCHMARKS.md, "Claude Code overhead").
//!
//! `cargo run --release -p abo-test-support --example claude_overhead -- ABO_BINARY [RUNS]`
//!
//! Against the scripted model server over HTTPS (7 replies: the change of the real-CLI tests), it
//! times, RUNS times each (default 7), interleaved: the CLI run directly in a checkout of the
//! repository (`claude -p --output-format stream-json --verbose ...`, the arguments abo gives
//! it), and the backend of `abo run` with `sandbox.mode: off` and `required` (`duration_ms` of
//! `task.backend_finished`: prompt, version check, egress proxy, sandbox, the CLI, its
//! transcript stored), and for comparison the same backend work around a command changing one
//! file (`kind: command`, no CLI). It prints the median, minimum and maximum of each. Every run has
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a measuring harness run by hand: it spawns what it times and prints its figures"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use abo_test_support::TestRepo;
use abo_test_support::model_server::anthropic::change_script;
use abo_test_support::model_server::{ModelServer, Scheme};

fn repo(sandbox: &str) -> TestRepo {
    repo_with(sandbox, "{ kind: claude-code, model: claude-sonnet-4-5 }")
}

fn repo_with(sandbox: &str, backend: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("edit-me.txt", "old line\n");
    repo.write("delete-me.txt", "to be deleted\n");
    repo.write(
        "abo.yml",
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\nbackends:\n  claude: {backend}\n"
        ),
    );
    repo.commit_all("files");
    repo
}

struct Env {
    path: String,
    home: PathBuf,
    url: String,
    ca: String,
}

impl Env {
    fn apply(&self, c: &mut Command) {
        c.env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("ANTHROPIC_BASE_URL", &self.url)
            .env("ANTHROPIC_API_KEY", "sk-ant-api03-dummy-for-tests")
            .env("NODE_EXTRA_CA_CERTS", &self.ca)
            // Without it the CLI also calls api.anthropic.com (telemetry, feature flags), which
            // here has no route without the sandbox and is refused at once inside it: that
            // difference, not abo's, would dominate the figures.
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env_remove("TERM");
    }
}

/// Milliseconds of the CLI run directly in a fresh checkout; with `fresh_home`, in a HOME of its
/// own as in abo's sandbox (else in one kept across runs).
fn direct(env: &Env, claude: &Path, fresh_home: bool) -> (f64, f64) {
    let repo = repo("{ mode: off }");
    let home = repo.outside.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let started = Instant::now();
    let mut c = Command::new(claude);
    c.current_dir(&repo.path)
        .args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
            "--permission-prompts",
            "none",
            "--model",
            "claude-sonnet-4-5",
            "Make the scripted change.",
        ])
        .stdin(std::process::Stdio::null());
    env.apply(&mut c);
    if fresh_home {
        c.env("HOME", &home);
    }
    let out = c.output().unwrap();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!repo.path.join("delete-me.txt").exists());
    (ms, cli_duration(&String::from_utf8_lossy(&out.stdout)))
}

/// The `duration_ms` of the CLI's `result`: its own time from start to result.
fn cli_duration(stream: &str) -> f64 {
    stream
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["type"] == "result")
        .and_then(|v| v["duration_ms"].as_f64())
        .unwrap_or(f64::NAN)
}

/// Milliseconds of abo's backend (`task.backend_finished.duration_ms`), and the CLI's own
/// `duration_ms` (NaN for a command).
fn through_abo(env: &Env, abo: &Path, sandbox: &str, backend: &str) -> (f64, f64) {
    let repo = repo_with(sandbox, backend);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: scripted, title: Make the scripted change, backend: claude }\n",
    );
    let mut c = Command::new(abo);
    c.arg("-C")
        .arg(&repo.path)
        .args(["run", b.to_str().unwrap(), "--json"])
        .stdin(std::process::Stdio::null());
    env.apply(&mut c);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Command::new(abo);
    c.arg("-C").arg(&repo.path).args(["events", "--json"]);
    env.apply(&mut c);
    let events = String::from_utf8(c.output().unwrap().stdout).unwrap();
    let finished: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    let transcript = finished["data"]["transcript"]
        .as_str()
        .and_then(|id| std::fs::read_to_string(repo.path.join(".abo/artifacts").join(id)).ok())
        .unwrap_or_default();
    (
        finished["data"]["duration_ms"].as_f64().unwrap(),
        cli_duration(&transcript),
    )
}

fn stats(name: &str, mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    println!(
        "{name:<28} median {median:7.0} ms   min {:7.0}   max {:7.0}   ({} runs)",
        v[0],
        v[v.len() - 1],
        v.len()
    );
    median
}

fn main() {
    let mut args = std::env::args().skip(1);
    let abo = PathBuf::from(
        args.next()
            .expect("usage: claude_overhead ABO_BINARY [RUNS]"),
    )
    .canonicalize()
    .unwrap();
    let runs: usize = args.next().map_or(7, |n| n.parse().unwrap());
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.ci/agents/claude-code/node_modules/.bin")
        .canonicalize()
        .expect("run .ci/install-agents first");
    let claude = bin.join("claude");
    let server = ModelServer::start(Scheme::Https, change_script());
    let home = tempfile::tempdir().unwrap();
    let env = Env {
        path: format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        home: home.path().to_owned(),
        url: server.url.clone(),
        ca: server.ca_file().unwrap().display().to_string(),
    };
    let required = "{ mode: required, agent_hosts: [\"127.0.0.1\"], env_pass: [CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC] }";
    let claude_code = "{ kind: claude-code, model: claude-sonnet-4-5 }";
    // The same backend work around a command that changes one file: what abo adds to any backend.
    let command = "{ kind: command, run: \"echo x > x.txt\" }";
    let mut series: Vec<(&str, Vec<f64>)> = [
        "claude directly",
        "  its own duration_ms",
        "claude directly, fresh HOME",
        "abo backend, sandbox off",
        "  the CLI's duration_ms",
        "abo backend, sandbox required",
        "  the CLI's duration_ms",
        "command backend, sandbox off",
        "command backend, required",
    ]
    .into_iter()
    .map(|n| (n, Vec::new()))
    .collect();
    // One of each first, untimed: the page cache holds the 400 MB binary afterwards.
    direct(&env, &claude, false);
    for _ in 0..runs {
        let mut add = |i: usize, (a, b): (f64, f64)| {
            series[i].1.push(a);
            if !b.is_nan() {
                series[i + 1].1.push(b);
            }
        };
        add(0, direct(&env, &claude, false));
        add(2, (direct(&env, &claude, true).0, f64::NAN));
        add(3, through_abo(&env, &abo, "{ mode: off }", claude_code));
        add(5, through_abo(&env, &abo, required, claude_code));
        add(
            7,
            (
                through_abo(&env, &abo, "{ mode: off }", command).0,
                f64::NAN,
            ),
        );
        add(8, (through_abo(&env, &abo, required, command).0, f64::NAN));
    }
    let m: Vec<f64> = series.into_iter().map(|(n, v)| stats(n, v)).collect();
    println!(
        "abo adds (medians): {:.0} ms with the sandbox off, {:.0} ms with it required",
        m[3] - m[0],
        m[5] - m[0]
    );
}
