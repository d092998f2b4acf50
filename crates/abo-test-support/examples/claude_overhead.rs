//! What abo adds to a real Claude Code run, start to exit (BENCHMARKS.md, "Claude Code overhead").
//!
//! `cargo run --release -p abo-test-support --example claude_overhead -- ABO_BINARY [RUNS]`
//!
//! Against the scripted model server over HTTPS (7 replies: the change of the real-CLI tests), it
//! times, RUNS times each (default 7), interleaved: the CLI run directly in a checkout of the
//! repository (`claude -p --output-format stream-json --verbose ...`, the arguments abo gives
//! it), and the backend of `abo run` with `sandbox.mode: off` and `required` (`duration_ms` of
//! `task.backend_finished`: prompt, version check, egress proxy, sandbox, the CLI, its
//! transcript stored). It prints the median, minimum and maximum of each. Every run has
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
    let repo = TestRepo::new();
    repo.write("edit-me.txt", "old line\n");
    repo.write("delete-me.txt", "to be deleted\n");
    repo.write(
        "abo.yml",
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\nbackends:\n  claude: {{ kind: claude-code, model: claude-sonnet-4-5 }}\n"
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

/// Milliseconds of the CLI run directly in a fresh checkout.
fn direct(env: &Env, claude: &Path) -> f64 {
    let repo = repo("{ mode: off }");
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
    let out = c.output().unwrap();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!repo.path.join("delete-me.txt").exists());
    ms
}

/// Milliseconds of abo's backend (`task.backend_finished.duration_ms`).
fn through_abo(env: &Env, abo: &Path, sandbox: &str) -> f64 {
    let repo = repo(sandbox);
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
    finished["data"]["duration_ms"].as_f64().unwrap()
}

fn stats(name: &str, mut v: Vec<f64>) -> f64 {
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
    let (mut d, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    // One of each first, untimed: the page cache holds the 400 MB binary afterwards.
    direct(&env, &claude);
    for _ in 0..runs {
        d.push(direct(&env, &claude));
        off.push(through_abo(&env, &abo, "{ mode: off }"));
        on.push(through_abo(&env, &abo, required));
    }
    let base = stats("claude directly", d);
    let off = stats("abo backend, sandbox off", off);
    let on = stats("abo backend, sandbox required", on);
    println!(
        "abo adds (medians): {:.0} ms with the sandbox off, {:.0} ms with it required",
        off - base,
        on - base
    );
}
