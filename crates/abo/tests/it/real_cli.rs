//! What the tests of the real agent CLIs share: the CLIs pinned in `ops/agents.lock`, installed by
//! `.ci/install-agents` (a missing one fails the test, loudly), a repository holding what the
//! scripted model server edits, and abo run on it.

use std::path::PathBuf;

use abo_test_support::TestRepo;
use abo_test_support::model_server_openai::{CREATED, EDITED, SEED};
use serde_json::Value;

use crate::{abo_env, config, events};

const LOCK: &str = include_str!("../../../../ops/agents.lock");

/// The version `ops/agents.lock` pins for `name`.
pub(crate) fn pinned(name: &str) -> String {
    LOCK.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&name))
        .and_then(|w| w.get(2).map(|v| (*v).to_owned()))
        .unwrap_or_else(|| panic!("ops/agents.lock pins no `{name}`"))
}

/// The directory of the pinned CLI's executable.
pub(crate) fn bin_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("ABO_AGENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/abo-agents")
        });
    let version = pinned(name);
    let dir = root.join(format!("{name}-{version}/bin"));
    assert!(
        dir.join(name).is_file(),
        "{name} {version} is not installed in {}: run .ci/install-agents",
        dir.display()
    );
    dir
}

pub(crate) struct Real {
    pub repo: TestRepo,
    pub env: Vec<(&'static str, String)>,
}

/// How abo is set up around the CLI.
pub(crate) struct Setup<'a> {
    /// `kind: codex` or `kind: aider`.
    pub kind: &'a str,
    pub model: &'a str,
    /// `required` or `off`.
    pub sandbox: &'a str,
    pub base_url: &'a str,
    /// `sandbox.agent_hosts`.
    pub hosts: &'a str,
    /// The test CA, for https.
    pub ca: Option<&'a std::path::Path>,
}

pub(crate) fn setup(s: &Setup<'_>) -> Real {
    let repo = TestRepo::new();
    for (f, content) in SEED {
        repo.write(f, content);
    }
    repo.commit_all("what the script edits");
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\nsandbox: {{ mode: {}, agent_hosts: [{}], env_pass: [CODEX_CA_CERTIFICATE, SSL_CERT_FILE] }}\nbackends:\n  agent: {{ kind: {}, model: {}, base_url: \"{}\" }}\n",
            s.sandbox, s.hosts, s.kind, s.model, s.base_url
        ),
    );
    let home = repo.outside.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir(s.kind).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = vec![
        ("PATH", path),
        // Whatever the CLI writes in HOME (sandbox off) stays in the test's own.
        ("HOME", home.display().to_string()),
        ("OPENAI_API_KEY", "test-key".to_owned()),
    ];
    if let Some(ca) = s.ca {
        env.push(("CODEX_CA_CERTIFICATE", ca.display().to_string()));
        env.push(("SSL_CERT_FILE", ca.display().to_string()));
    }
    Real { repo, env }
}

impl Real {
    /// Runs the one scripted task; returns abo's exit code, the status document and stderr.
    pub(crate) fn run(&self) -> (i32, Value, String) {
        let b = self.repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: scripted, title: \"Create a file, edit one, delete one and run a command\", backend: agent }\n",
        );
        let out = abo_env(
            &self.repo,
            &["run", b.to_str().unwrap(), "--json"],
            &self.env,
        );
        let doc = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
        (out.code, doc, out.stderr)
    }

    /// The `task.backend_finished` event of the run.
    /// Runs the task against a failing provider: the run exits 1 and the task fails with nothing
    /// landed. Returns its reason, whether abo took it as transient, and the backend's event.
    pub(crate) fn failing(&self) -> (String, bool, Value) {
        let (code, doc, stderr) = self.run();
        assert_eq!(code, 1, "{stderr}");
        let t = &doc["tasks"][0];
        assert_eq!(t["status"], "failed", "{doc}");
        assert_eq!(self.landed(&doc, "created.txt"), None);
        let e = self.finished(&doc);
        let transient = e["data"]["transient"].as_bool().unwrap_or(false);
        (t["reason"].as_str().unwrap().to_owned(), transient, e)
    }

    pub(crate) fn finished(&self, doc: &Value) -> Value {
        let run = doc["run"]["id"].as_str().unwrap();
        events(&self.repo, run)
            .into_iter()
            .find(|e| e["kind"] == "task.backend_finished")
            .unwrap()
    }

    /// A file on the run's branch, if it is there.
    pub(crate) fn landed(&self, doc: &Value, file: &str) -> Option<String> {
        let branch = doc["run"]["branch"].as_str().unwrap();
        #[allow(
            clippy::disallowed_methods,
            reason = "the test reads the repository abo wrote"
        )]
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo.path)
            .args(["show", &format!("{branch}:{file}")])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The created and the edited file landed, and nothing of the CLI's own.
    pub(crate) fn assert_created_and_edited(&self, doc: &Value) {
        assert_eq!(
            self.landed(doc, CREATED.0).as_deref(),
            Some(CREATED.1),
            "{doc}"
        );
        assert_eq!(self.landed(doc, "edit.txt").as_deref(), Some(EDITED));
        let branch = doc["run"]["branch"].as_str().unwrap();
        let files = self.repo.git(&["ls-tree", "-r", "--name-only", branch]);
        assert!(
            !files.contains(".aider") && !files.contains(".codex"),
            "{files}"
        );
        assert_eq!(
            self.repo
                .git(&["diff", "--name-only", "main", branch, "--", ".gitignore"])
                .trim(),
            ""
        );
    }
}
