//! abo through its real binary, on real temporary git repositories.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod agents;
mod apis;
mod bench;
mod browser;
mod budget;
mod check;
mod control;
mod crash;
mod deploy;
mod docs;
mod errors;
mod golden;
mod heal;
mod home;
mod hostile;
mod knowledge;
mod mcp;
mod notify;
mod notify_decide;
mod policy;

mod pr;
mod proposals;
mod quota;
mod real_aider;
mod real_claude;
mod real_cli;
mod real_codex;
mod review;
mod sandbox;
mod schedule;
mod self_contained;
mod serve;
mod shared;
mod terminal;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use abo_test_support::TestRepo;
use serde_json::Value;

pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) fn abo_cmd(repo: &TestRepo, args: &[&str]) -> Command {
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs the binary under test"
    )]
    let mut c = Command::new(env!("CARGO_BIN_EXE_abo"));
    c.arg("-C")
        .arg(&repo.path)
        .args(args)
        .env_remove("TERM")
        .stdin(Stdio::null());
    c
}

/// Runs abo to its end.
pub(crate) fn abo(repo: &TestRepo, args: &[&str]) -> Out {
    let out = abo_cmd(repo, args).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs abo to its end with extra environment variables (set on the child only).
pub(crate) fn abo_env(repo: &TestRepo, args: &[&str], env: &[(&str, String)]) -> Out {
    let mut c = abo_cmd(repo, args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The content of an artifact by id.
pub(crate) fn artifact(repo: &TestRepo, id: &serde_json::Value) -> String {
    std::fs::read_to_string(repo.path.join(".abo/artifacts").join(id.as_str().unwrap())).unwrap()
}

/// Starts abo in the background.
pub(crate) fn spawn(repo: &TestRepo, args: &[&str]) -> Child {
    abo_cmd(repo, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub(crate) fn finish(child: Child) -> Out {
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run id `abo run` prints on its first line.
pub(crate) fn read_run_id(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().strip_prefix("run ").unwrap().to_owned()
}

/// Writes abo.yml and commits it.
pub(crate) fn config(repo: &TestRepo, yaml: &str) {
    repo.write("abo.yml", yaml);
    repo.commit_all("abo config");
}

pub(crate) fn status(repo: &TestRepo, run: Option<&str>) -> Value {
    let mut args = vec!["status", "--json"];
    args.extend(run);
    let out = abo(repo, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Runs a backlog with `--json`; returns the exit code and the final status document.
pub(crate) fn run(repo: &TestRepo, backlog: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["run", backlog.to_str().unwrap(), "--json"];
    args.extend(extra);
    let out = abo(repo, &args);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
    (out.code, doc, out.stderr)
}

/// (id, status, attempts) of each task.
pub(crate) fn brief(doc: &Value) -> Vec<(String, String, u64)> {
    doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
                t["attempts"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn task<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
}

pub(crate) fn s(v: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    v.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), *c))
        .collect()
}

/// Every event of the store, as JSON lines.
pub(crate) fn events(repo: &TestRepo, run: &str) -> Vec<Value> {
    let out = abo(repo, &["events", run, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A repository whose abo.yml is `config`, with the fake agent CLIs first on PATH and their log
/// directory in `FAKE_AGENT_LOG`.
pub(crate) struct FakeAgents {
    pub(crate) repo: TestRepo,
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) log: std::path::PathBuf,
}

impl FakeAgents {
    pub(crate) fn new(config_yaml: &str) -> Self {
        let repo = TestRepo::new();
        let bin = abo_test_support::agents::install(&repo.outside);
        let log = repo.outside.join("agent-log");
        std::fs::create_dir_all(&log).unwrap();
        config(&repo, config_yaml);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env = vec![
            ("PATH", path),
            ("FAKE_AGENT_LOG", log.display().to_string()),
        ];
        Self { repo, env, log }
    }

    /// `abo run BACKLOG --json`: the exit code, the final status document and stderr.
    pub(crate) fn run(&self, backlog: &str) -> (i32, Value, String) {
        let b = self.repo.write_outside("b.yml", backlog);
        let out = abo_env(
            &self.repo,
            &["run", b.to_str().unwrap(), "--json"],
            &self.env,
        );
        let doc = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
        (out.code, doc, out.stderr)
    }

    /// A file the fake agents wrote into their log directory (empty when absent).
    pub(crate) fn logged(&self, name: &str) -> String {
        std::fs::read_to_string(self.log.join(name)).unwrap_or_default()
    }
}
