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

/// The whole `abo events --json` of the repository's store.
fn all_events(repo: &TestRepo) -> String {
    let out = abo(repo, &["events", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

#[test]
fn a_backlog_holding_a_secret_is_refused_and_nothing_of_it_is_stored() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    let key = "AKIAQWERTYUIOPASDFGH";
    let backlog = |title: &str, description: &str, run: &str| {
        format!(
            "tasks:\n  - id: a\n    title: {title}\n    description: {description}\n    run: '{run}'\n"
        )
    };
    // Control: the same backlog without the key runs, and its title and description are stored
    // (in `run.created`) and committed (in the landed commit's message).
    let b = repo.write_outside(
        "backlog.yml",
        &backlog("Deploy", "deploy with the team key", "echo a > a.txt"),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = all_events(&repo);
    assert_eq!(events.matches("\"run.created\"").count(), 1);
    assert!(events.contains("deploy with the team key"));
    let shown = b.to_str().unwrap();
    let hint =
        " (hint: put it in an environment variable the task reads, and name the variable instead)";
    for (text, want) in [
        (
            backlog("Deploy", &format!("deploy with {key}"), "echo a > a.txt"),
            format!(
                "backlog.yml:4: tasks[0].description: aws-access-key: a secret in the backlog{hint}"
            ),
        ),
        (
            backlog("Use \"AKIAQWER\" + \"TYUIOPASDFGH\"", "d", "echo a > a.txt"),
            format!("backlog.yml:3: tasks[0].title: aws-access-key: a secret in the backlog{hint}"),
        ),
        (
            backlog("Deploy", "d", &format!("echo {key} > a.txt")),
            format!("backlog.yml:5: tasks[0].run: aws-access-key: a secret in the backlog{hint}"),
        ),
    ] {
        let b = repo.write_outside("backlog.yml", &text);
        let out = abo(&repo, &["run", b.to_str().unwrap()]);
        assert_eq!(
            (
                out.code,
                out.stderr.replace(shown, "backlog.yml").trim_end()
            ),
            (2, format!("error: {want}").as_str()),
            "{text}"
        );
        assert!(!out.stderr.contains(key) && !out.stdout.contains(key));
    }
    // No run was created for them, and the key is nowhere: not in the store, not in an artifact.
    assert_eq!(all_events(&repo).matches("\"run.created\"").count(), 1);
    assert_eq!(
        abo_test_support::files_containing(&repo.path.join(".abo"), key),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        abo_test_support::files_containing(&repo.path.join(".abo"), "TYUIOPASDFGH"),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn patch_files_outside_the_repository_or_holding_a_secret_are_refused() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    let diff = "diff --git a/hello.txt b/hello.txt\nnew file mode 100644\n--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n+hello\n";
    // Beside the backlog's directory, not in it: `outside/../outside.diff`.
    let above = repo.outside.parent().unwrap().join("outside.diff");
    std::fs::write(&above, diff).unwrap();
    repo.write_outside("escape.diff", "");
    std::fs::remove_file(repo.outside.join("escape.diff")).unwrap();
    std::os::unix::fs::symlink(&above, repo.outside.join("escape.diff")).unwrap();
    repo.write_outside(
        "leak.diff",
        &diff.replace("+hello", "+aws = \"AKIAQWERTYUIOPASDFGH\""),
    );
    let outside = |p: &str| {
        format!(
            "error: backlog.yml:4:5: task `a`: patch file `{p}` is outside the repository and the backlog's directory (hint: keep the patch in the repository or beside the backlog, and give its path relative to the backlog)"
        )
    };
    let task = |p: &str| format!("tasks:\n  - id: a\n    title: A\n    patch: {p}\n");
    refused(&repo, &task("../outside.diff"), &outside("../outside.diff"));
    refused(&repo, &task("/etc/passwd"), &outside("/etc/passwd"));
    refused(
        &repo,
        &task(above.to_str().unwrap()),
        &outside(above.to_str().unwrap()),
    );
    // A symlink beside the backlog is followed: where it leads is what would be read.
    refused(&repo, &task("escape.diff"), &outside("escape.diff"));
    // Missing and outside: refused as outside, not also reported missing.
    refused(
        &repo,
        &task("../../nope/x.diff"),
        &outside("../../nope/x.diff"),
    );
    refused(
        &repo,
        &task("leak.diff"),
        "error: backlog.yml:4:5: task `a`: patch file `leak.diff`: line 6: aws-access-key: a secret in the patch (hint: abo stores a task's patch file whole: remove the secret from it)",
    );
    // Control: the same patch beside the backlog is read, stored and lands.
    repo.write_outside("inside.diff", diff);
    let b = repo.write_outside("backlog.yml", &task("inside.diff"));
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(all_events(&repo).matches("\"run.created\"").count(), 1);
}

#[test]
fn a_secret_in_abo_yml_is_refused_before_the_run_records_it() {
    let repo = TestRepo::new();
    let key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let with_gate =
        |run: &str| format!("version: 1\ngates:\n  - {{ name: deploy, run: '{run}' }}\n");
    let b = repo.write_outside(
        "backlog.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    // Control: the same gate without the key runs, and its command is recorded in `run.created`.
    config(&repo, &with_gate("echo deploying"));
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(all_events(&repo).contains("echo deploying"));
    config(
        &repo,
        &with_gate(&format!("curl -u {key}: https://api.example.invalid")),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(
        (out.code, out.stderr.trim_end()),
        (
            2,
            "error: the run would record a secret (stripe-key) at `settings.gates[0].run` of its spec: abo.yml and the backlog must hold none (name an environment variable instead)"
        )
    );
    assert_eq!(all_events(&repo).matches("\"run.created\"").count(), 1);
    assert_eq!(
        abo_test_support::files_containing(&repo.path.join(".abo"), key),
        Vec::<std::path::PathBuf>::new()
    );
}

/// A backlog directory holds what an earlier run's agent may have committed: a link in it to a
/// file outside (a key, another project's notes) is refused, located, and nothing starts. The
/// control: the same text as a regular file of the directory is read, and becomes a task.
#[test]
fn a_backlog_directorys_link_out_of_it_is_refused_and_its_target_never_read() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    let notes = repo.write_outside(
        "private/notes.yml",
        "tasks:\n  - { id: leak, title: private-note-text, run: 'echo l > l.txt' }\n",
    );
    repo.write_outside(
        "plans/a.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let plans = repo.outside.join("plans");
    std::os::unix::fs::symlink(&notes, plans.join("b.yml")).unwrap();
    // A FIFO would block the read forever: refused without opening it.
    let fifo = plans.join("c.yml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = abo(&repo, &["run", plans.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("b.yml: a link to")
            && out
                .stderr
                .contains("outside the backlog's directory; not read"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("c.yml: not a regular file; not read"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("private-note-text"), "{}", out.stderr);
    assert!(!repo.path.join(".abo").exists(), "nothing may start");
    assert_eq!(repo.git(&["branch", "--list", "abo/*"]), "");

    // The control: the same file, no longer a link, is a backlog of the directory like any other.
    std::fs::remove_file(plans.join("b.yml")).unwrap();
    std::fs::remove_file(&fifo).unwrap();
    std::fs::copy(&notes, plans.join("b.yml")).unwrap();
    let out = abo(&repo, &["run", plans.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = crate::status(&repo, None);
    assert!(
        s.to_string().contains("private-note-text"),
        "the control read the file: {s}"
    );
}

/// A link inside the directory to another of its files is followed, as a person would expect.
#[test]
fn a_backlog_directorys_link_to_its_own_file_is_read() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    repo.write_outside(
        "plans/sub/a.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let plans = repo.outside.join("plans");
    std::os::unix::fs::symlink("sub/a.yml", plans.join("a.yml")).unwrap();
    let out = abo(&repo, &["run", plans.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
