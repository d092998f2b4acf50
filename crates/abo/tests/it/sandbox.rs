//! The sandbox: each denial proven by an action that succeeds with `sandbox.mode: off` and fails
//! under `required`, and ordinary work that still runs inside.

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::{abo_env, artifact, config, events};

/// Runs one task whose gate is `gate` under `sandbox:` (YAML flow mapping); returns the task's
/// status and the gate's log.
fn gate_under(sandbox: &str, gate: &str, env: &[(&str, String)]) -> (String, String, TestRepo) {
    let repo = TestRepo::new();
    let gate = gate.replace("{OUT}", &repo.outside.display().to_string());
    let sandbox = sandbox.replace("{OUT}", &repo.outside.display().to_string());
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - name: probe\n    run: |\n{}\n",
            gate.lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: t, title: T, run: 'echo change > change.txt' }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let log = events(&repo, &run)
        .into_iter()
        .find(|e| e["kind"] == "task.gate")
        .map(|e| artifact(&repo, &e["data"]["log"]))
        .unwrap_or_default();
    let status = doc["tasks"][0]["status"].as_str().unwrap().to_owned();
    (status, log, repo)
}

/// The action works without the sandbox and is refused inside it; returns the refused log.
fn denied(sandbox: &str, action: &str, env: &[(&str, String)]) -> String {
    let (status, log, _) = gate_under("{ mode: off }", action, env);
    assert_eq!(status, "landed", "without the sandbox it works: {log}");
    let (status, log, _) = gate_under(sandbox, action, env);
    assert_eq!(status, "failed", "inside the sandbox it is refused: {log}");
    log
}

const REQUIRED: &str = "{ mode: required }";

#[test]
fn writing_outside_the_worktree_is_refused() {
    let log = denied(REQUIRED, "echo x > {OUT}/written", &[]);
    assert!(log.contains("Permission denied"), "{log}");
}

#[test]
fn the_git_metadata_is_read_only_and_commits_inside_fail() {
    let log = denied(
        REQUIRED,
        "echo x > \"$(git rev-parse --git-common-dir)/abo-evil\"",
        &[],
    );
    assert!(log.contains("Permission denied"), "{log}");
    denied(
        REQUIRED,
        "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m evil",
        &[],
    );
    // The worktree's .git file cannot be pointed elsewhere (without the sandbox, the write
    // succeeds and breaks the worktree abo commits from).
    let tamper = "echo 'gitdir: /tmp' > .git && echo tampered";
    let (_, log, _) = gate_under("{ mode: off }", tamper, &[]);
    assert!(log.contains("tampered"), "{log}");
    let (status, log, _) = gate_under(REQUIRED, tamper, &[]);
    assert_eq!(status, "failed");
    assert!(log.contains("Read-only file system"), "{log}");
}

#[test]
fn denied_paths_cannot_be_read() {
    // A file planted under a denied path: readable without the sandbox, refused with it.
    let planted = |sandbox: &str| {
        let repo = TestRepo::new();
        let out_dir = repo.outside.display().to_string();
        std::fs::create_dir_all(repo.outside.join("secret")).unwrap();
        std::fs::write(repo.outside.join("secret/key"), "PLANTED").unwrap();
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {}\ngates:\n  - {{ name: probe, run: 'cat {out_dir}/secret/key' }}\n",
                sandbox.replace("{OUT}", &out_dir)
            ),
        );
        let b = repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: t, title: T, run: 'echo change > change.txt' }\n",
        );
        let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &[]);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        doc["tasks"][0]["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(planted("{ mode: off }"), "landed");
    assert_eq!(
        planted("{ mode: required, deny_read: ['{OUT}/secret'] }"),
        "failed"
    );
}

#[test]
fn gates_reach_no_host_loopback_service() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let log = denied(
        REQUIRED,
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
        ),
        &[],
    );
    assert!(log.contains("ConnectionRefusedError"), "{log}");
    // `gate_network: allow` gives it back.
    let (status, log, _) = gate_under(
        "{ mode: required, gate_network: allow }",
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
        ),
        &[],
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn a_fork_bomb_and_a_memory_hog_hit_their_limits() {
    let fork = "python3 -c '\nimport os, time\nfor i in range(300):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n'";
    let started = std::time::Instant::now();
    let log = denied("{ mode: required, limits: { processes: 64 } }", fork, &[]);
    assert!(
        log.contains("Resource temporarily unavailable") || log.contains("BlockingIOError"),
        "{log}"
    );
    // Nothing it started outlives the gate.
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    let hog = "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'";
    let log = denied("{ mode: required, limits: { memory: 256MiB } }", hog, &[]);
    assert!(log.contains("MemoryError"), "{log}");
}

#[test]
fn system_calls_no_build_needs_are_refused() {
    // seccomp: no new namespaces (nor ptrace, mount, bpf, keyctl, module loading...).
    let log = denied(REQUIRED, "unshare -U true", &[]);
    assert!(log.contains("Operation not permitted"), "{log}");
}

#[test]
fn gates_see_no_secret_from_the_environment() {
    let env = [("ABO_TEST_SECRET", "s3cr3t-value-123".to_owned())];
    let log = denied(
        REQUIRED,
        "test -n \"$ABO_TEST_SECRET\" && echo \"saw $ABO_TEST_SECRET\"",
        &env,
    );
    assert!(!log.contains("s3cr3t-value-123"), "{log}");
    // Variables named in env_pass do get through.
    let (status, log, _) = gate_under(
        "{ mode: required, env_pass: [ABO_TEST_SECRET] }",
        "test -n \"$ABO_TEST_SECRET\"",
        &env,
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn ordinary_work_runs_inside_rust_python_and_git() {
    let work = "set -e\npython3 -c 'print(sum(range(10)))'\ngit status --short\ngit diff --stat HEAD\nc=\"$TMPDIR/crate\"\nmkdir -p \"$c/src\"\nprintf '[package]\\nname = \"probe\"\\nversion = \"0.1.0\"\\nedition = \"2021\"\\n' > \"$c/Cargo.toml\"\nprintf '#[test]\\nfn adds() { assert_eq!(1 + 1, 2); }\\n' > \"$c/src/lib.rs\"\ncd \"$c\" && cargo test --offline -q 2>&1";
    let home = std::env::var("HOME").unwrap_or_default();
    let env = [
        (
            "CARGO_HOME",
            std::env::var("CARGO_HOME").unwrap_or(format!("{home}/.cargo")),
        ),
        (
            "RUSTUP_HOME",
            std::env::var("RUSTUP_HOME").unwrap_or(format!("{home}/.rustup")),
        ),
    ];
    let (status, log, _) = gate_under(
        "{ mode: required, env_pass: [CARGO_HOME, RUSTUP_HOME] }",
        work,
        &env,
    );
    assert_eq!(status, "landed", "{log}");
    assert!(log.contains("45"), "{log}");
    assert!(log.contains("change.txt"), "git status: {log}");
    assert!(
        log.contains("1 passed") || log.contains("test result: ok"),
        "{log}"
    );
}

#[test]
fn agents_reach_only_allowlisted_hosts_through_the_egress_proxy() {
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\nautonomy: { overrides: { merge: A2 } }\nsandbox: { mode: required, agent_hosts: [localhost, 169.254.169.254] }\nbackends:\n  claude: { kind: claude-code }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: netprobe, title: Probe, backend: claude }\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path), ("PROBE_PORT", port.to_string())];
    // PROBE_PORT is not passed to agents unless named: env_pass adds it.
    let yml = std::fs::read_to_string(repo.path.join("abo.yml"))
        .unwrap()
        .replace("agent_hosts:", "env_pass: [PROBE_PORT], agent_hosts:");
    config(&repo, &yml);
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(doc["tasks"][0]["status"], "landed", "{}", out.stderr);
    let branch = doc["run"]["branch"].as_str().unwrap();
    let seen = repo.git(&["show", &format!("{branch}:claude-netprobe.txt")]);
    assert!(seen.contains("direct: refused PermissionError"), "{seen}");
    assert!(seen.contains("proxy: set"), "{seen}");
    assert!(
        seen.contains("via proxy: HTTP/1.1 200 Connection Established"),
        "{seen}"
    );
    assert!(
        seen.contains("metadata via proxy: HTTP/1.1 403 Forbidden"),
        "{seen}"
    );
    // Each connection is in the agent's log.
    let run = doc["run"]["id"].as_str().unwrap();
    let finished = events(&repo, run)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    let log = artifact(&repo, &finished["data"]["log"]);
    assert!(log.contains("--- abo: egress proxy ---"), "{log}");
    assert!(log.contains("a cloud metadata address"), "{log}");
}
