//! Bad input: exit 2, a located `error:` line, and nothing started (no run, no event, no branch).

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;

use crate::{abo, config};

const CONFIG: &str = "version: 1\nbackends:\n  fmt: { kind: command, run: 'true' }\ngates:\n  - { name: test, run: 'true' }\n";

fn refused(repo: &TestRepo, backlog: &str, want: &str) {
    let b = repo.write_outside("backlog.yml", backlog);
    let out = abo(repo, &["run", b.to_str().unwrap()]);
    let shown = b.to_str().unwrap();
    assert_eq!(
        (
            out.code,
            out.stderr.replace(shown, "backlog.yml").trim_end()
        ),
        (2, want),
        "{backlog}"
    );
    assert_eq!(out.stdout, "");
    assert!(
        !repo.path.join(".abo").exists(),
        "nothing may be created for an invalid backlog"
    );
    assert_eq!(repo.git(&["branch", "--list", "abo/*"]), "");
}

#[test]
fn every_backlog_error_of_design_4_2() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: 'x\n",
        "error: backlog.yml:4:1: found unexpected end of stream, while scanning a quoted scalar",
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    titel: A\n",
        "error: backlog.yml:3:5: unknown key `tasks[0].titel` (hint: did you mean `title`?)",
    );
    refused(
        &repo,
        "tasks:\n  - { id: a, title: A, run: x }\n  - { id: a, title: B, run: x }\n",
        "error: backlog.yml:3:3: task `a`: duplicate id (hint: first defined at backlog.yml:2:3)",
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    run: x\n    deps: [nope]\n",
        "error: backlog.yml:5:5: task `a`: unknown dependency `nope`",
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    run: x\n    deps: [b]\n  - id: b\n    title: B\n    run: x\n    deps: [a]\n",
        "error: backlog.yml:5:5: dependency cycle: a -> b -> a",
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    patch: missing.diff\n",
        &format!(
            "error: backlog.yml:4:5: task `a`: patch file `missing.diff` does not exist (hint: a patch path is relative to the backlog's directory: {})",
            repo.outside.join("missing.diff").display()
        ),
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    backend: fnt\n",
        "error: backlog.yml:4:5: task `a`: unknown backend `fnt` (hint: did you mean `fmt`?)",
    );
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    run: x\n    gates: [tests]\n",
        "error: backlog.yml:5:5: task `a`: unknown gate `tests` (hint: did you mean `test`?)",
    );
    // Several problems are all reported.
    refused(
        &repo,
        "tasks:\n  - id: a\n    title: A\n    run: x\n    deps: [q]\n  - id: b\n    title: B\n    backend: zzz\n",
        "error: backlog.yml:5:5: task `a`: unknown dependency `q`\nerror: backlog.yml:8:5: task `b`: unknown backend `zzz` (hint: configured: fmt)",
    );
}

#[test]
fn config_errors_and_usage() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\ntimeouts:\n  atempt: 5m\n");
    let b = repo.write_outside(
        "backlog.yml",
        "tasks:\n  - { id: a, title: A, run: 'true' }\n",
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    let shown = out.stderr.replace(&format!("{}/", repo.path.display()), "");
    assert_eq!(
        (out.code, shown.trim()),
        (
            2,
            "error: abo.yml:3:3: unknown key `timeouts.atempt` (hint: did you mean `attempt`?)"
        )
    );

    // An agent whose executable is missing, or an API whose key is not set, is refused before
    // anything starts, naming the task and the backend.
    config(
        &repo,
        "version: 1\nbackends:\n  claude: { kind: claude-code, command: abo-no-such-claude }\n  premium: { kind: anthropic, model: claude-opus-4-1, api_key_env: ABO_TEST_UNSET_KEY }\n",
    );
    let b = repo.write_outside(
        "backlog.yml",
        "tasks:\n  - { id: a, title: A, backend: claude }\n",
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("backlog.yml:2:3: task `a`: backend `claude`: executable `abo-no-such-claude` not found on PATH"),
        "{}",
        out.stderr
    );
    assert!(!repo.path.join(".abo").exists());
    let b = repo.write_outside(
        "backlog.yml",
        "tasks:\n  - { id: a, title: A, backend: premium }\n",
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("task `a`: backend `premium`: the variable ABO_TEST_UNSET_KEY that holds its API key is not set"),
        "{}",
        out.stderr
    );

    let out = abo(&repo, &["run", "/nonexistent/backlog.yml"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (2, "error: /nonexistent/backlog.yml: no such file")
    );
    let out = abo(&repo, &["status"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: no runs yet (hint: start one with `abo run BACKLOG`)"
        )
    );
    assert!(!repo.path.join(".abo").exists(), "reading creates nothing");
    let out = abo(&repo, &["resume", "nope"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: no runs yet (hint: start one with `abo run BACKLOG`)"
        )
    );
    let out = abo(&repo, &["frobnicate"]);
    assert_eq!(out.code, 2);

    let not_git = tempfile::tempdir().unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs the binary under test"
    )]
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abo"))
        .arg("-C")
        .arg(not_git.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a git repository"));
}

#[test]
fn markdown_plan_errors_are_located_too() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nbackends:\n  default: fmt\n  fmt: { kind: command, run: 'true' }\n",
    );
    let b = repo.write_outside(
        "PLAN.md",
        "# Plan\n\n### Ready\n\n→ **[a]** Do A\n  - Depends on: b\n",
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    let shown = b.to_str().unwrap();
    assert_eq!(
        (out.code, out.stderr.replace(shown, "PLAN.md").trim()),
        (2, "error: PLAN.md:6:5: task `a`: unknown dependency `b`")
    );
}

#[test]
fn autonomy_errors_start_nothing() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'true', autonomy: { merge: A5 } }\n",
    );
    let out = abo(&repo, &["run", b.to_str().unwrap(), "--profile", "yolo"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: unknown autonomy profile `yolo` (one of: manual, assisted, prod-conservative, staging-aggressive, exploration)"
        )
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("task `a`: autonomy: `merge: A5` raises merge above the profile's A3 (auto low-risk): choose a higher profile with --profile"),
        "{}",
        out.stderr
    );
    assert_eq!(
        repo.git(&["branch", "--list", "abo/*"]),
        "",
        "nothing started"
    );
    assert!(!repo.path.join(".abo").exists(), "nothing created");
}
